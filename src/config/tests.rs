use std::path::Path;
use std::time::Duration;

use super::*;
use crate::model::{Land, quoted};

const VALID: &str = r#"
[gateway]
dead_letter_broker = "he"

[brokers.he]
url = "amqp://guest:secret@127.0.0.1:5672/ozg-he"

[[platforms]]
id = "civento-he"
land = "HE"
broker = "he"
ingress_queue = "ozg.he.submissions"
status_exchange = "ozg.he.status"

[[destinations]]
id = "he-darmstadt"
name = "Wissenschaftsstadt Darmstadt"
kind = "kreisfreie-stadt"
land = "06"
broker = "he"
exchange = "ozg.backoffice"
routing_key = "he-darmstadt"

[[routes]]
service = "*"
region = "06411"
destination = "he-darmstadt"
"#;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(text, "test.toml", Path::new("."))
}

#[test]
fn a_valid_file_gives_defaults_and_hides_the_password() {
    let config = parse(VALID).unwrap();
    assert_eq!(config.platforms[0].land.code(), 6);
    assert_eq!(config.platforms[0].prefetch, 256);
    assert_eq!(config.gateway.in_flight_bytes, 16 * 1024 * 1024);
    assert_eq!(config.platforms[0].status_routing_key, "civento-he");
    assert_eq!(
        config.gateway.dead_letter_exchange,
        DEFAULT_DEAD_LETTER_EXCHANGE
    );
    assert_eq!(
        config.brokers[0].display,
        "amqp://guest@127.0.0.1:5672/ozg-he"
    );
    assert!(!format!("{config:?}").contains("secret"));
}

#[test]
fn every_error_is_listed_with_file_and_key() {
    let text = VALID
        .replace("land = \"HE\"", "land = \"XX\"")
        .replace("region = \"06411\"", "region = \"0641\"")
        .replace(
            "destination = \"he-darmstadt\"",
            "destination = \"nowhere\"",
        )
        + r#"
[[routes]]
service = "12345"
region = "06411"
destination = "he-darmstadt"

[[routes]]
service = "99115005104000"
region = "064119999999"
destination = "he-darmstadt"

[[routes]]
service = "*"
region = "06411"
destination = "he-darmstadt"

[[routes]]
service = "*"
region = "06411"
destination = "he-darmstadt"
"#;
    let errors = parse(&text).unwrap_err().to_string();
    for expected in [
        "test.toml: platforms[0].land: \"XX\" is not a Land code",
        "test.toml: routes[0].region: \"0641\" has 4 characters, expected 2, 3, 5, 9 or 12 digits",
        "test.toml: routes[0].destination: unknown destination \"nowhere\"",
        "test.toml: routes[1].service: \"12345\" has 5 characters, expected 14 digits",
        "test.toml: routes[2].region: 064119999999 is not a Gemeinde in the municipality directory",
        "test.toml: routes[4]: a second route for service * and region 06411 (the first is routes[3])",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
    assert!(
        errors.starts_with("invalid configuration: 6 errors"),
        "{errors}"
    );
}

#[test]
fn the_directory_is_polled_every_two_seconds_unless_configured() {
    assert_eq!(
        parse(VALID).unwrap().store.directory_poll,
        DEFAULT_DIRECTORY_POLL
    );
    let polled = |every: &str| parse(&format!("{VALID}\n[store]\ndirectory_poll = \"{every}\"\n"));
    assert_eq!(
        polled("500ms").unwrap().store.directory_poll,
        Duration::from_millis(500)
    );
    let errors = polled("10ms").unwrap_err().to_string();
    assert!(
        errors.contains("test.toml: store.directory_poll: must be at least 100ms"),
        "{errors}"
    );
}

#[test]
fn routes_to_a_destination_left_out_for_its_broker_add_no_error() {
    let text = VALID.replace(
        "url = \"amqp://guest:secret@127.0.0.1:5672/ozg-he\"",
        "url = \"amqp://gw@127.0.0.1:5672/ozg-he\"\npassword_file = \"/nonexistent/pw\"",
    );
    let errors = parse(&text).unwrap_err().to_string();
    assert!(
        errors.starts_with("invalid configuration: 1 error")
            && errors.contains("brokers.he.password_file: cannot read /nonexistent/pw"),
        "{errors}"
    );
}

#[test]
fn missing_keys_and_unknown_references() {
    let text = r#"
[gateway]
dead_letter_broker = "nope"
[brokers.a]
url = "http://[::1"
[[platforms]]
id = "p"
[[destinations]]
id = "d"
kind = "castle"
"#;
    let errors = parse(text).unwrap_err().to_string();
    for expected in [
        "brokers.a.url: is not a valid AMQP URI",
        "gateway.dead_letter_broker: unknown broker \"nope\"",
        "platforms[0].land: is missing",
        "platforms[0].broker: is missing",
        "platforms[0].ingress_queue: is missing",
        "platforms[0].status_exchange: is missing",
        "destinations[0].name: is missing",
        "destinations[0].kind: unknown kind \"castle\"",
        "destinations[0].routing_key: is missing",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
}

#[test]
fn syntax_errors_name_the_line_and_unknown_keys_are_refused() {
    let errors = parse("[gateway\n").unwrap_err().to_string();
    assert!(
        errors.contains("test.toml: TOML parse error at line 1"),
        "{errors}"
    );
    let errors = parse(
        &VALID
            .replace("prefetch", "x")
            .replace("[gateway]", "[gateway]\ndead_leter_broker = 1"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("unknown field `dead_leter_broker`"),
        "{errors}"
    );
}

#[test]
fn every_problem_at_once_also_at_the_format_level() {
    let text = "routes = [5, { service = \"*\", region = \"0641\", destination = \"he-darmstadt\", colour = \"red\" }, { service = \"*\", region = \"06411\", destination = \"he-darmstadt\" }]\n".to_owned()
        + &VALID
        .replace(
            "dead_letter_broker = \"he\"",
            "dead_letter_broker = \"he\"\nconfirm_timout = \"5s\"\nshutdown_grace = \"30 parsecs\"\nmax_message_bytes = \"big\"",
        )
        .replace("land = \"HE\"", "land = \"XX\"\nprefetch = \"many\"")
        .replace("kind = \"kreisfreie-stadt\"", "kind = 5")
        .replace(
            "[[routes]]\nservice = \"*\"\nregion = \"06411\"\ndestination = \"he-darmstadt\"\n",
            "",
        )
        + "[retry]\ndelays = [\"1s\", \"soon\", \"5s\", 7, \"later\"]\n[telemetery]\nlog_level = \"debug\"\n[brokers.th]\nurl = 5\n";
    let errors = parse(&text).unwrap_err().to_string();
    println!("{errors}");
    let lines: Vec<&str> = errors.lines().skip(1).map(str::trim).collect();
    let expected = [
        "test.toml: brokers.th.url: invalid type: an integer, expected a string",
        "test.toml: destinations[0].kind: invalid type: integer `5`, expected a string",
        "test.toml: gateway.confirm_timout: unknown field `confirm_timout`, expected one of",
        "test.toml: gateway.max_message_bytes: invalid type: string \"big\", expected a whole number",
        "test.toml: gateway.shutdown_grace: ",
        "test.toml: platforms[0].prefetch: invalid type: string \"many\", expected a whole number",
        "test.toml: retry.delays[1]: ",
        "test.toml: retry.delays[3]: invalid type: integer `7`",
        "test.toml: retry.delays[4]: ",
        "test.toml: routes[0]: invalid type: integer `5`, expected a table",
        "test.toml: routes[1].colour: unknown field `colour`",
        "test.toml: telemetery: unknown field `telemetery`",
        // And what validation finds besides, with the numbering of the file.
        "test.toml: platforms[0].land: \"XX\" is not a Land code",
        "test.toml: routes[1].region: \"0641\" has 4 characters",
    ];
    for want in expected {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in:\n{errors}"
        );
    }
    assert_eq!(lines.len(), expected.len(), "{errors}");
    assert!(
        !errors.contains("is missing"),
        "consequences are not reported: {errors}"
    );
    assert!(!errors.contains("secret"), "{errors}");
}

#[test]
fn a_console_needs_admin_tokens_and_is_warned_about_off_loopback() {
    let admin = "[admin]\naddress = \"127.0.0.1:0\"\n[[admin.tokens]]\nname = \"ops\"\n\
                 sha256 = \"0e0f32b32f222d209c23da5994f02cd3caf03a883ad8c0f491339d3f058bf34a\"\n\
                 roles = [\"operator\"]\n";
    let config = parse(&format!(
        "{VALID}\n{admin}\n[console]\naddress = \"127.0.0.1:8080\"\n"
    ))
    .unwrap();
    assert_eq!(
        config.console.map(|c| c.address.port()),
        Some(8080),
        "{:?}",
        config.warnings
    );
    assert!(parse(VALID).unwrap().console.is_none());
    let errors = parse(&format!(
        "{VALID}\n[console]\naddress = \"127.0.0.1:8080\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("test.toml: console: operators log in with an admin token"),
        "{errors}"
    );
    let errors = parse(&format!(
        "{VALID}\n{admin}\n[console]\naddress = \"localhost\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("console.address: \"localhost\" is not an address"),
        "{errors}"
    );
    let open = parse(&format!(
        "{VALID}\n{admin}\n[console]\naddress = \"0.0.0.0:8080\"\n"
    ))
    .unwrap();
    assert!(
        open.warnings
            .iter()
            .any(|w| w.contains("console.address: 0.0.0.0:8080 is reachable")),
        "{:?}",
        open.warnings
    );
}

#[test]
fn an_admin_api_for_other_machines_without_tls_is_warned_about() {
    for (address, warned) in [
        ("127.0.0.1:0", false),
        ("[::1]:50051", false),
        ("0.0.0.0:50051", true),
        ("[::]:50051", true),
        ("10.1.2.3:50051", true),
    ] {
        let config = parse(&format!("{VALID}\n[admin]\naddress = \"{address}\"\n")).unwrap();
        let warning = config.warnings.iter().find(|w| w.contains("admin.address"));
        assert_eq!(
            warning.is_some(),
            warned,
            "{address}: {:?}",
            config.warnings
        );
        if let Some(warning) = warning {
            assert!(
                warning.starts_with(&format!(
                    "test.toml: admin.address: {address} is reachable from other machines, without TLS"
                )),
                "{warning}"
            );
        }
    }
}

#[test]
fn destinations_are_refused_with_bad_ids_long_names_and_the_gateways_own_targets() {
    let long_name = "x".repeat(1 << 20);
    let long_key = "k".repeat(256);
    // (what replaces a line of the destination, the error expected)
    let cases: Vec<(&str, String, String)> = vec![
        (
            "id = \"he-darmstadt\"",
            "id = \"he\\u0007x\"".into(),
            "destinations[0].id: contains a control character (U+0007) at byte 2".into(),
        ),
        (
            "id = \"he-darmstadt\"",
            "id = \"he darmstadt\"".into(),
            "destinations[0].id: \"he darmstadt\" is not an id: letters, digits, '-', '_', '.' and ':' only, not ' '".into(),
        ),
        (
            "id = \"he-darmstadt\"",
            format!("id = \"{}\"", "d".repeat(129)),
            "destinations[0].id: has 129 characters, at most 128 are allowed (\"dddddddddddddddddddddddddddddddddddddddd\"…)".into(),
        ),
        (
            "name = \"Wissenschaftsstadt Darmstadt\"",
            format!("name = \"{long_name}\""),
            format!("destinations[0].name: has 1048576 characters, at most 300 are allowed (\"{}\"…)", "x".repeat(40)),
        ),
        (
            "name = \"Wissenschaftsstadt Darmstadt\"",
            "name = \"Darmstadt\\nBürgeramt\"".into(),
            "destinations[0].name: contains a control character (U+000A) at byte 9".into(),
        ),
        (
            "routing_key = \"he-darmstadt\"",
            format!("routing_key = \"{long_key}\""),
            "destinations[0].routing_key: has 256 characters, at most 255 are allowed".into(),
        ),
        (
            "exchange = \"ozg.backoffice\"",
            "exchange = \"ozg.gateway.retry\"".into(),
            "destinations[0].exchange: \"ozg.gateway.retry\" is the gateway's own (names starting with ozg.gateway. are): a destination cannot use it".into(),
        ),
        (
            "exchange = \"ozg.backoffice\"\nrouting_key = \"he-darmstadt\"",
            "exchange = \"\"\nrouting_key = \"ozg.gateway.replay\"".into(),
            "destinations[0].routing_key: \"ozg.gateway.replay\" is the gateway's own queue (names starting with ozg.gateway. are): a destination cannot use it".into(),
        ),
        (
            "exchange = \"ozg.backoffice\"\nrouting_key = \"he-darmstadt\"",
            "exchange = \"\"\nrouting_key = \"ozg.he.submissions\"".into(),
            "destinations[0].routing_key: \"ozg.he.submissions\" is the ingress queue of platform \"civento-he\": a destination cannot use it".into(),
        ),
        (
            "routing_key = \"he-darmstadt\"",
            "routing_key = \"he-darmstadt\"\nreceipt_queue = \"ozg.gateway.dead-letters\"".into(),
            "destinations[0].receipt_queue: \"ozg.gateway.dead-letters\" is the gateway's own queue (names starting with ozg.gateway. are): a destination cannot use it".into(),
        ),
        (
            "exchange = \"ozg.backoffice\"\nrouting_key = \"he-darmstadt\"",
            "exchange = \"\"\nrouting_key = \"bo.darmstadt\"\nreceipt_queue = \"bo.darmstadt\"".into(),
            "destinations[0].receipt_queue: \"bo.darmstadt\" is the queue this destination's submissions are delivered to: a destination cannot use it".into(),
        ),
        (
            "exchange = \"ozg.backoffice\"",
            "exchange = \"dead\"".into(),
            "destinations[0].exchange: \"dead\" is the gateway's dead-letter exchange: a destination cannot use it".into(),
        ),
    ];
    for (line, replacement, expected) in cases {
        assert!(VALID.contains(line), "{line}");
        let text = VALID.replace(line, &replacement).replace(
            "dead_letter_broker = \"he\"",
            "dead_letter_broker = \"he\"\ndead_letter_exchange = \"dead\"",
        );
        let errors = parse(&text).unwrap_err().to_string();
        assert!(
            errors.contains(&expected),
            "missing {expected:?} in:\n{}",
            quoted(&errors)
        );
        assert!(
            errors.len() < 2_000,
            "nothing long is echoed: {}",
            errors.len()
        );
    }
    // A back office queue on another broker may have any name but the namespace's.
    let valid = VALID.replace(
        "exchange = \"ozg.backoffice\"\nrouting_key = \"he-darmstadt\"",
        "exchange = \"\"\nrouting_key = \"ozg.gateway-de.darmstadt\"",
    );
    parse(&valid).unwrap();
}

#[test]
fn a_missing_directory_file_is_reported() {
    let text = VALID
        .replace(
            "[gateway]",
            "[gateway]\ndirectory = \"/nonexistent/gv.csv\"",
        )
        .replace("land = \"HE\"", "land = \"XX\"")
        .replace("region = \"06411\"", "region = \"069\"");
    let errors = parse(&text).unwrap_err().to_string();
    assert!(
        errors.contains("gateway.directory: /nonexistent/gv.csv: cannot read"),
        "{errors}"
    );
    // The rest is still checked; regions only for their form, the directory unknown.
    assert!(errors.contains("platforms[0].land: \"XX\""), "{errors}");
    assert!(
        errors.starts_with("invalid configuration: 2 errors"),
        "{errors}"
    );
}

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

/// A second Land's platform and destination beside VALID's Hessen, and a token with
/// the given scope keys.
fn with_token_scope(keys: &str, roles: &str) -> String {
    format!(
        "{VALID}
[[platforms]]
id = \"civento-th\"
land = \"TH\"
broker = \"he\"
ingress_queue = \"ozg.th.submissions\"
status_exchange = \"ozg.th.status\"

[[destinations]]
id = \"th-erfurt\"
name = \"Erfurt\"
kind = \"kreisfreie-stadt\"
land = \"16\"
broker = \"he\"
exchange = \"ozg.backoffice\"
routing_key = \"th-erfurt\"

[admin]
address = \"127.0.0.1:0\"
[[admin.tokens]]
name = \"ops\"
sha256 = \"{}\"
roles = [{roles}]
{keys}
",
        "0".repeat(64)
    )
}

#[test]
fn token_scopes_are_read_and_checked() {
    let he = Land::from_code(6).unwrap();
    let th = Land::from_code(16).unwrap();
    let scope = |laender: Option<Vec<Land>>, destinations: Option<&[&str]>| Scope {
        laender,
        destinations: destinations.map(|d| d.iter().map(|s| (*s).to_owned()).collect()),
    };
    // (scope keys, the scope, or the start of the error after "test.toml: ")
    let cases: Vec<(&str, Result<Scope, &str>)> = vec![
        ("", Ok(Scope::ALL)),
        ("laender = [\"*\"]", Ok(Scope::ALL)),
        ("laender = [\"HE\"]", Ok(scope(Some(vec![he]), None))),
        (
            "laender = [\"16\", \"he\", \"06\"]",
            Ok(scope(Some(vec![he, th]), None)),
        ),
        (
            "laender = [\"HE\"]\ndestinations = [\"he-darmstadt\"]",
            Ok(scope(Some(vec![he]), Some(&["he-darmstadt"]))),
        ),
        (
            "destinations = [\"th-erfurt\", \"he-darmstadt\"]",
            Ok(scope(None, Some(&["he-darmstadt", "th-erfurt"]))),
        ),
        (
            "laender = [\"HX\"]",
            Err("admin.tokens[0].laender: \"HX\" is not a Land code (01 … 16, or SH, HH"),
        ),
        (
            "laender = [\"17\"]",
            Err("admin.tokens[0].laender: \"17\" is not a Land code"),
        ),
        (
            "laender = []",
            Err("admin.tokens[0].laender: is empty: name the Länder"),
        ),
        (
            "laender = [\"*\", \"HE\"]",
            Err("admin.tokens[0].laender: \"*\" (every Land) stands alone"),
        ),
        (
            "destinations = []",
            Err("admin.tokens[0].destinations: is empty"),
        ),
        (
            "destinations = [\"he darmstadt\"]",
            Err("admin.tokens[0].destinations: \"he darmstadt\" is not an id"),
        ),
        (
            "laender = [\"HE\"]\ndestinations = [\"th-erfurt\"]",
            Err(
                "admin.tokens[0].destinations: destination \"th-erfurt\" is of Land 16 TH, which is not among laender",
            ),
        ),
    ];
    for (keys, want) in cases {
        let got = parse(&with_token_scope(keys, "\"operator\""));
        match (got, want) {
            (Ok(config), Ok(want)) => {
                let tokens = config.admin.unwrap().tokens;
                assert_eq!(tokens[0].scope, want, "{keys}");
            }
            (Err(errors), Err(start)) => {
                let text = errors.to_string();
                assert!(
                    text.contains(&format!("test.toml: {start}")),
                    "{keys}: missing {start:?} in\n{text}"
                );
            }
            (got, want) => panic!("{keys}: got {got:?}, wanted {want:?}"),
        }
    }
}

#[test]
fn an_operator_token_for_every_land_is_warned_about_only_when_it_is_not_said() {
    let warned = |keys: &str, roles: &str| {
        parse(&with_token_scope(keys, roles))
            .unwrap()
            .warnings
            .iter()
            .any(|w| w.contains("admin.tokens[0].laender: is not set"))
    };
    assert!(warned("", "\"operator\""));
    assert!(!warned("laender = [\"*\"]", "\"operator\""));
    assert!(!warned("laender = [\"HE\"]", "\"operator\""));
    // A viewer changes nothing; one Land's gateway has nothing to divide.
    assert!(!warned("", "\"viewer\""));
    let one_land = format!(
        "{VALID}\n[admin]\naddress = \"127.0.0.1:0\"\n[[admin.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nroles = [\"operator\"]\n",
        "0".repeat(64)
    );
    assert!(
        !parse(&one_land)
            .unwrap()
            .warnings
            .iter()
            .any(|w| w.contains("laender")),
    );
    // A destination not in the file may be one created through the admin API later.
    let later = parse(&with_token_scope(
        "laender = [\"HE\"]\ndestinations = [\"he-later\"]",
        "\"operator\"",
    ))
    .unwrap();
    assert!(
        later.warnings.iter().any(|w| w.contains(
            "destinations: destination \"he-later\" is not in this file: it counts once it is created"
        )),
        "{:?}",
        later.warnings
    );
}

#[test]
fn a_scope_says_what_it_covers() {
    let he = Land::from_code(6).unwrap();
    let th = Land::from_code(16).unwrap();
    let cases = [
        (Scope::ALL, "every Land"),
        (
            Scope {
                laender: Some(vec![he]),
                destinations: None,
            },
            "Land 06 HE",
        ),
        (
            Scope {
                laender: Some(vec![he, th]),
                destinations: None,
            },
            "Länder 06 HE, 16 TH",
        ),
        (
            Scope {
                laender: Some(vec![he]),
                destinations: Some(vec!["he-a".into(), "he-b".into()]),
            },
            "Land 06 HE; destinations he-a, he-b",
        ),
        (
            Scope {
                laender: None,
                destinations: Some(vec!["he-a".into()]),
            },
            "destination he-a",
        ),
    ];
    for (scope, text) in cases {
        assert_eq!(scope.to_string(), text);
    }
}

#[test]
fn the_in_flight_budget_must_hold_a_few_messages() {
    let with = |value: &str| {
        VALID.replacen(
            "[gateway]\n",
            &format!("[gateway]\nin_flight_bytes = {value}\n"),
            1,
        )
    };
    assert_eq!(
        parse(&with("1048576")).unwrap().gateway.in_flight_bytes,
        1024 * 1024
    );
    let errors = parse(&with("1000")).unwrap_err().to_string();
    assert!(
        errors.contains("gateway.in_flight_bytes: 1000 is out of range"),
        "{errors}"
    );
}
