//! Broker URLs, passwords, TLS files, store passwords and admin token files: the cases that
//! read files of their own.

use super::*;

/// Files the secret and TLS cases refer to, in a folder of their own (the `base`).
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = ca();
        let other = ca_pair();
        let (cert, key) = issue(&ca, "gw");
        let (_, stray_key) = issue(&ca, "stray");
        let token_hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"tok"));
        for (name, content, mode) in [
            ("ca.pem", ca.pem(), 0o644),
            ("other-ca.pem", other.pem(), 0o644),
            ("client.pem", cert, 0o644),
            ("client-key.pem", key.clone(), 0o600),
            ("stray-key.pem", stray_key, 0o600),
            ("open-key.pem", key, 0o644),
            ("not-pem.txt", "hello".to_owned(), 0o644),
            ("pw", "s3cret-pw\n".to_owned(), 0o400),
            ("pw-open", "s3cret-pw".to_owned(), 0o644),
            ("empty", String::new(), 0o600),
            ("token.sha256", format!("{token_hash}\n"), 0o400),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        Files { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// VALID with its broker replaced by `broker` (TOML from `[brokers.he]` on) and
    /// `extra` appended; `{dir}` in either stands for the folder.
    fn parse(&self, broker: &str, extra: &str) -> Result<Config, ConfigErrors> {
        let dir = self.dir.path().display().to_string();
        let text = VALID.replace(
            "[brokers.he]\nurl = \"amqp://guest:secret@127.0.0.1:5672/ozg-he\"\n",
            &format!("{}\n", broker.replace("{dir}", &dir)),
        ) + &extra.replace("{dir}", &dir);
        Config::parse(&text, "test.toml", self.dir.path())
    }
}

fn ca_pair() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

fn ca() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    ca_pair()
}

fn issue(ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .signed_by(&key, ca)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

const TLS: &str = "[brokers.he]\nurl = \"amqps://gw@rabbit-he.example:5671/ozg-he\"\npassword_file = \"pw\"\n[brokers.he.tls]\nca_file = \"ca.pem\"\n";

#[test]
fn broker_keys_are_validated_with_specific_messages() {
    let files = Files::new();
    let dir = files.path("");
    let dir = dir.trim_end_matches('/');
    // (broker TOML, errors expected: each a substring of one line)
    let cases: &[(&str, &[&str])] = &[
        (
            "[brokers.he]\nurl = \"amqp://gw:inline@h:5672/v\"\npassword_file = \"pw\"",
            &[
                "test.toml: brokers.he.url: has a password, and brokers.he.password_file gives one too: leave it out of the URL",
            ],
        ),
        (
            "[brokers.he]\nurl = \"amqp://gw@h:5672/v\"\npassword_file = \"missing\"",
            &[
                "brokers.he.password_file: cannot read {dir}/missing: No such file or directory (os error 2)",
            ],
        ),
        (
            "[brokers.he]\nurl = \"amqp://gw@h:5672/v\"\npassword_file = \"empty\"",
            &["brokers.he.password_file: {dir}/empty is empty"],
        ),
        (
            "[brokers.he]\nurl = \"amqp://gw@h:5672/v\"\npassword_file = \"pw\"\npassword_env = \"X\"",
            &["brokers.he.password_env: and brokers.he.password_file are both set: give one"],
        ),
        (
            "[brokers.he]\nurl = \"amqp://gw@h:5672/v\"\npassword_env = \"OZG_TEST_NEVER_SET_PW\"",
            &["brokers.he.password_env: environment variable OZG_TEST_NEVER_SET_PW is not set"],
        ),
        (
            "[brokers.he]\nurl = \"amqp://gw@h:5672/v\"\npassword_env = \"not-a-name\"",
            &["brokers.he.password_env: \"not-a-name\" is not an environment variable name"],
        ),
        (
            "[brokers.he]\nurl = \"amqp://h/v\"\nurls = [\"amqp://h/v\"]",
            &["brokers.he: has url and urls: give one"],
        ),
        ("[brokers.he]\nurls = []", &["brokers.he.urls: is empty"]),
        ("[brokers.he]", &["brokers.he.url: is missing (or urls = ["]),
        (
            "[brokers.he]\nurls = [\"amqp://n1:5672/v\", \"amqp://n2:5672/w\"]",
            &[
                "brokers.he.urls[1]: amqp://guest@n2:5672/w differs from amqp://guest@n1:5672/v in scheme, user or vhost",
            ],
        ),
        (
            "[brokers.he]\nurls = [\"amqp://n1:5672/v\", \"amqps://n2:5671/v\"]",
            &["brokers.he.urls[1]: amqps://guest@n2:5671/v differs"],
        ),
        (
            "[brokers.he]\nurls = [\"amqp://n1:5672/v\", \"amqp://n1:5672/v\"]",
            &["brokers.he.urls[1]: node n1:5672 is listed twice"],
        ),
        (
            "[brokers.he]\nurls = [\"amqp://n1:5672/v\", \"http://[::1\"]",
            &["brokers.he.urls[1]: is not a valid AMQP URI"],
        ),
        (
            "[brokers.he]\nurl = \"amqps://gw@h:5671/v\"",
            &[
                "brokers.he.tls.ca_file: is missing: amqps:// needs the CA that signed the broker's certificate",
            ],
        ),
        (
            "[brokers.he]\nurl = \"amqp://gw@h:5672/v\"\n[brokers.he.tls]\nca_file = \"ca.pem\"",
            &[
                "brokers.he.tls: is set, but the broker's URL is amqp:// (plain): use amqps:// for TLS",
            ],
        ),
        (
            &TLS.replace("ca.pem", "nope.pem"),
            &[
                "brokers.he.tls.ca_file: cannot read {dir}/nope.pem: No such file or directory (os error 2)",
            ],
        ),
        (
            &TLS.replace("ca.pem", "not-pem.txt"),
            &["brokers.he.tls.ca_file: {dir}/not-pem.txt holds no PEM certificate"],
        ),
        (
            &TLS.replace("ca_file = \"ca.pem\"", "server_name = \"x\""),
            &["brokers.he.tls.ca_file: is missing (the CA that signed the broker's certificate)"],
        ),
        (
            &format!("{TLS}client_cert_file = \"client.pem\""),
            &["brokers.he.tls.client_key_file: is missing (client_cert_file is set)"],
        ),
        (
            &format!("{TLS}client_key_file = \"client-key.pem\""),
            &["brokers.he.tls.client_cert_file: is missing (client_key_file is set)"],
        ),
        (
            &format!("{TLS}client_cert_file = \"client.pem\"\nclient_key_file = \"stray-key.pem\""),
            &[
                "brokers.he.tls.client_key_file: {dir}/stray-key.pem does not go with {dir}/client.pem",
            ],
        ),
        (
            &format!("{TLS}client_cert_file = \"client.pem\"\nclient_key_file = \"not-pem.txt\""),
            &["brokers.he.tls.client_key_file: {dir}/not-pem.txt holds no usable PEM private key"],
        ),
        (
            &format!(
                "{TLS}client_cert_file = \"missing.pem\"\nclient_key_file = \"client-key.pem\""
            ),
            &["brokers.he.tls.client_cert_file: cannot read {dir}/missing.pem"],
        ),
        (
            &format!("{TLS}server_name = \"not a name!\""),
            &["brokers.he.tls.server_name: \"not a name!\" is not a DNS name or IP address"],
        ),
        // There is no switch to turn verification off.
        (&format!("{TLS}verify = false"), &["unknown field `verify`"]),
    ];
    for (broker, expected) in cases {
        let errors = match files.parse(broker, "") {
            Ok(_) => panic!("accepted:\n{broker}"),
            Err(e) => e.to_string(),
        };
        for part in *expected {
            let part = part.replace("{dir}", dir);
            assert!(
                errors.contains(&part),
                "{broker}\nmissing {part:?} in:\n{errors}"
            );
        }
        assert!(!errors.contains("s3cret-pw"), "{errors}");
    }
}

#[test]
fn valid_broker_keys_give_nodes_tls_and_warnings() {
    let files = Files::new();
    let dir = files.path("");
    let dir = dir.trim_end_matches('/');
    // (broker TOML, display, node addresses, TLS?, warnings expected)
    type Case<'a> = (&'a str, &'a str, &'a [&'a str], bool, &'a [&'a str]);
    let cases: &[Case] = &[
        (
            "[brokers.he]\nurl = \"amqp://gw@h:5672/ozg-he\"\npassword_file = \"pw\"",
            "amqp://gw@h:5672/ozg-he",
            &["h:5672"],
            false,
            &[],
        ),
        (
            "[brokers.he]\nurl = \"amqp://gw:inline@h:5672/ozg-he\"",
            "amqp://gw@h:5672/ozg-he",
            &["h:5672"],
            false,
            &[
                "test.toml: brokers.he.url: holds the password; prefer password_file or password_env",
            ],
        ),
        (
            "[brokers.he]\nurl = \"amqp://guest:guest@h:5672/ozg-he\"",
            "amqp://guest@h:5672/ozg-he",
            &["h:5672"],
            false,
            &[],
        ),
        (
            "[brokers.he]\nurl = \"amqp://gw@h/ozg-he\"\npassword_file = \"pw-open\"",
            "amqp://gw@h:5672/ozg-he",
            &["h:5672"],
            false,
            &[
                "test.toml: brokers.he.password_file: {dir}/pw-open is readable by every user (mode 0644); make it 0400 or 0600",
            ],
        ),
        (
            "[brokers.he]\nurls = [\"amqps://gw@n1:5671/ozg-he\", \"amqps://gw@n2/ozg-he\", \"amqps://gw@n3:5699/ozg-he\"]\npassword_env = \"PATH\"\n[brokers.he.tls]\nca_file = \"ca.pem\"",
            "amqps://gw@n1:5671,n2:5671,n3:5699/ozg-he",
            &["n1:5671", "n2:5671", "n3:5699"],
            true,
            &[],
        ),
        (
            &format!(
                "{TLS}client_cert_file = \"client.pem\"\nclient_key_file = \"client-key.pem\"\nserver_name = \"rabbit.example\""
            ),
            "amqps://gw@rabbit-he.example:5671/ozg-he",
            &["rabbit-he.example:5671"],
            true,
            &[],
        ),
        (
            &format!(
                "{TLS}client_cert_file = \"{{dir}}/client.pem\"\nclient_key_file = \"open-key.pem\""
            ),
            "amqps://gw@rabbit-he.example:5671/ozg-he",
            &["rabbit-he.example:5671"],
            true,
            &["brokers.he.tls.client_key_file: {dir}/open-key.pem is readable by every user"],
        ),
    ];
    for (broker, display, addresses, tls, warnings) in cases {
        let config = files
            .parse(broker, "")
            .unwrap_or_else(|e| panic!("{broker}\n{e}"));
        let b = &config.brokers[0];
        assert_eq!(b.display, *display, "{broker}");
        let got: Vec<&str> = b.nodes.iter().map(|n| n.address.as_str()).collect();
        assert_eq!(got, *addresses, "{broker}");
        assert_eq!(b.tls.is_some(), *tls, "{broker}");
        let expected: Vec<String> = warnings.iter().map(|w| w.replace("{dir}", dir)).collect();
        for w in &expected {
            assert!(
                config.warnings.iter().any(|got| got.contains(w.as_str())),
                "{broker}\nmissing warning {w:?} in {:?}",
                config.warnings
            );
        }
        assert_eq!(
            config.warnings.len(),
            expected.len(),
            "{:?}",
            config.warnings
        );
        let debug = format!("{config:?}");
        for secret in ["s3cret-pw", "inline"] {
            assert!(!debug.contains(secret), "Debug shows {secret}: {debug}");
            assert!(!b.display.contains(secret));
        }
    }
    // The password reaches the connection, and only that.
    let config = files.parse(TLS, "").unwrap();
    assert_eq!(
        config.brokers[0].nodes[0].uri().authority.userinfo.password,
        "s3cret-pw"
    );
    assert_eq!(
        config.brokers[0].tls.as_ref().unwrap().ca_file,
        files.dir.path().join("ca.pem"),
        "relative to the configuration's folder"
    );
    let from_env = files
        .parse(
            "[brokers.he]\nurl = \"amqp://gw@h/v\"\npassword_env = \"PATH\"",
            "",
        )
        .unwrap();
    assert_eq!(
        from_env.brokers[0].nodes[0]
            .uri()
            .authority
            .userinfo
            .password,
        std::env::var("PATH").unwrap()
    );
}

#[test]
fn store_passwords_and_admin_token_files() {
    let files = Files::new();
    let dir = files.path("");
    let dir = dir.trim_end_matches('/');
    let broker = "[brokers.he]\nurl = \"amqp://gw@h/v\"\npassword_file = \"pw\"";
    let admin = |token: &str| {
        format!(
            "\n[admin]\naddress = \"127.0.0.1:0\"\n[[admin.tokens]]\nname = \"ops\"\nroles = [\"viewer\"]\n{token}\n"
        )
    };
    // (extra TOML, Ok(check) or Err(expected error))
    let errors: &[(&str, &str)] = &[
        (
            "[store]\nurl = \"sqlite://x.db\"\npassword_file = \"pw\"",
            "store.password_file: needs a postgres:// store.url",
        ),
        (
            "[store]\nurl = \"postgres://ozg:inline@db/ozg\"\npassword_file = \"pw\"",
            "store.url: has a password, and store.password_file gives one too",
        ),
        (
            "[store]\nurl = \"postgres://ozg@db/ozg\"\npassword_env = \"OZG_TEST_NEVER_SET_PW\"",
            "store.password_env: environment variable OZG_TEST_NEVER_SET_PW is not set",
        ),
        (
            "[store]\nurl = \"postgres://ozg@db/ozg\"\npassword_file = \"pw\"\npassword_env = \"PATH\"",
            "store.password_env: and store.password_file are both set",
        ),
        (
            "[store]\nurl = \"postgres://ozg@db/ozg\"\npassword_file = \"empty\"",
            "store.password_file: {dir}/empty is empty",
        ),
    ];
    for (extra, expected) in errors {
        let text = files.parse(broker, extra).unwrap_err().to_string();
        let expected = expected.replace("{dir}", dir);
        assert!(
            text.contains(&expected),
            "{extra}\nmissing {expected:?} in\n{text}"
        );
        assert!(
            !text.contains("s3cret-pw") && !text.contains("inline"),
            "{text}"
        );
    }
    for (token, expected) in [
        (
            "sha256_file = \"missing\"",
            "admin.tokens[0].sha256_file: cannot read {dir}/missing",
        ),
        (
            "sha256_file = \"pw\"",
            "admin.tokens[0].sha256_file: must hold the SHA-256 of the token as 64 hex digits",
        ),
        (
            "sha256 = \"abc\"",
            "admin.tokens[0].sha256: must be the SHA-256 of the token as 64 hex digits",
        ),
        (
            "sha256_file = \"token.sha256\"\nsha256 = \"00\"",
            "admin.tokens[0].sha256_file: and sha256 are both set: give one",
        ),
        ("", "admin.tokens[0].sha256: is missing (or sha256_file)"),
    ] {
        let text = files.parse(broker, &admin(token)).unwrap_err().to_string();
        let expected = expected.replace("{dir}", dir);
        assert!(
            text.contains(&expected),
            "{token}\nmissing {expected:?} in\n{text}"
        );
        assert!(!text.contains("s3cret-pw"), "{text}");
    }

    let config = files
        .parse(
            broker,
            "[store]\nurl = \"postgres://ozg@db:5432/ozg?options=-csearch_path%3Dgw\"\npassword_file = \"pw\"",
        )
        .unwrap();
    assert_eq!(
        config.store.url,
        "postgres://ozg:s3cret-pw@db:5432/ozg?options=-csearch_path%3Dgw"
    );
    assert!(
        !config.store.display.contains("s3cret"),
        "{}",
        config.store.display
    );
    assert!(!format!("{config:?}").contains("s3cret"));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    let inline = files
        .parse(broker, "[store]\nurl = \"postgres://ozg:inline@db/ozg\"")
        .unwrap();
    assert_eq!(
        inline.warnings,
        [
            "test.toml: store.url: holds the password; prefer store.password_file or store.password_env (the URL then has none)"
        ]
    );

    let config = files
        .parse(broker, &admin("sha256_file = \"token.sha256\""))
        .unwrap();
    let token = &config.admin.unwrap().tokens[0];
    assert_eq!(
        token.sha256.to_vec(),
        <sha2::Sha256 as sha2::Digest>::digest(b"tok").to_vec()
    );
}
