//! The real binary's `admin` client: where the gateway's own admin server is not needed, an
//! unreachable address, the help, usage errors caught before anything is sent (an unknown
//! reason code among them), and grpc.health.v1 against tonic-health's server (plain, behind a
//! token check, and with mutual TLS); against a running gateway, the overview an operator
//! reads (queue depths, zeros kept in JSON, filters within a token's scope, tables fitted to
//! the terminal), a dead letter shown, and dead-letter triage (summary, dry run,
//! confirmation, each replay's outcome). Beside it `hash-token`, which makes a token's
//! configuration entry, and the completion scripts and manual pages made from the command
//! line's definitions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::pki::Pki;
use common::{signal, wait_exit};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};
use tonic_health::ServingStatus;

const BIN: &str = env!("CARGO_BIN_EXE_ozg-gateway");
const TOKEN: &str = "tok-7Hq2-never-shown";

fn admin(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("admin")
        .args(args)
        .env_remove("OZG_ADMIN_ADDRESS")
        .env("OZG_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap()
}

#[test]
fn an_unreachable_admin_api_exits_5_with_one_clear_line_and_no_token() {
    for args in [
        vec!["--address", "http://127.0.0.1:1", "overview"],
        vec!["--address", "http://127.0.0.1:1", "health"],
    ] {
        let started = Instant::now();
        let out = admin(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("admin: UNAVAILABLE: admin API at http://127.0.0.1:1: "),
            "{stderr}"
        );
        assert!(stderr.contains("refused"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!stderr.contains(TOKEN), "{stderr}");
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{args:?}");
    }
}

#[test]
fn help_lists_every_command_and_the_exit_codes_but_not_the_token() {
    let out = admin(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    for command in [
        "health",
        "overview",
        "destinations",
        "routes",
        "services",
        "audit",
        "resolve",
        "dead-letters",
        "ingress",
        "trace",
        "watch",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "{command} missing from\n{help}"
        );
    }
    for code in [
        "0  ok",
        "2  usage",
        "3  UNAUTHENTICATED",
        "4  NOT_FOUND",
        "5  the admin API is unreachable",
    ] {
        assert!(help.contains(code), "{code} missing from\n{help}");
    }
    assert!(!help.contains(TOKEN), "{help}");
    // The token comes from a file or the environment; no flag takes it.
    assert!(help.contains("--token-file <FILE>"), "{help}");
    assert!(!help.contains("--token <"), "{help}");

    let nested = [
        (
            "destinations",
            &["list", "get", "create", "update", "delete"][..],
        ),
        ("routes", &["list", "get", "create", "update", "delete"]),
        ("services", &["list", "put", "delete"]),
        (
            "dead-letters",
            &["list", "get", "payload", "replay", "discard"],
        ),
        ("ingress", &["pause", "resume"]),
    ];
    for (group, commands) in nested {
        let out = admin(&[group, "--help"]);
        let help = String::from_utf8_lossy(&out.stdout);
        for command in commands {
            assert!(
                help.lines().any(|l| l.trim_start().starts_with(command)),
                "{group} {command} missing from\n{help}"
            );
        }
    }
}

/// `hash-token` with `args`, the token (if any) on standard input.
fn hash_token(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .arg("hash-token")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn hash_token_prints_what_the_configuration_expects_and_never_the_token() {
    let token = "q7Z9-vX2k-Lm4P-r8Tn-Wc3Y-h6Jd-0aBe";
    let expected = format!(
        "{}\n",
        hex::encode(ozg_gateway::admin::auth::hash_token(token))
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("he-ops.token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let file = file.display().to_string();
    // (label, arguments, standard input, exit code, stdout, start of stderr)
    type Case<'a> = (&'a str, Vec<&'a str>, String, i32, String, &'a str);
    let cases: Vec<Case> = vec![
        ("stdin", vec![], token.to_owned(), 0, expected.clone(), ""),
        (
            "stdin with a newline",
            vec![],
            format!("{token}\n"),
            0,
            expected.clone(),
            "",
        ),
        (
            "a file",
            vec!["--file", &file],
            String::new(),
            0,
            expected.clone(),
            "",
        ),
        (
            // The known SHA-256 of "abc": the same as `printf %s abc | sha256sum`.
            "a short token",
            vec![],
            "abc".to_owned(),
            0,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n".to_owned(),
            "hash-token: warning: the token has 3 characters",
        ),
        (
            "on the command line",
            vec![token],
            String::new(),
            2,
            String::new(),
            "hash-token: a token on the command line is not accepted",
        ),
        (
            "nothing",
            vec![],
            String::new(),
            1,
            String::new(),
            "hash-token: the token is empty",
        ),
        (
            "a blank inside",
            vec![],
            "half a token".to_owned(),
            1,
            String::new(),
            "hash-token: the token's character 5 is not printable ASCII",
        ),
        (
            "a missing file",
            vec!["--file", "/nonexistent/he-ops.token"],
            String::new(),
            1,
            String::new(),
            "hash-token: cannot read /nonexistent/he-ops.token",
        ),
    ];
    for (label, args, stdin, code, stdout, stderr) in cases {
        let out = hash_token(&args, stdin.as_bytes());
        let (got_out, got_err) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(code), "{label}: {got_err}");
        assert_eq!(got_out, stdout, "{label}");
        assert!(got_err.starts_with(stderr), "{label}: {got_err}");
        assert!(
            !got_err.contains(token) && !got_err.contains("half a"),
            "{label}: {got_err}"
        );
    }
}

#[test]
fn emptying_every_dead_letter_takes_all_and_is_refused_before_connecting() {
    for action in ["replay", "discard"] {
        // Port 1: had it tried to connect, the exit would be 5.
        let out = admin(&["--address", "http://127.0.0.1:1", "dead-letters", action]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{action}: {stderr}");
        assert!(stderr.contains("add --all"), "{stderr}");
    }
}

#[test]
fn a_payload_is_never_dumped_to_a_terminal() {
    // `script` gives the child a terminal for stdout; without it the check cannot be seen.
    let Ok(script) = Command::new("script").arg("--version").output() else {
        eprintln!("skipped: no `script` to provide a terminal");
        return;
    };
    if !script.status.success() {
        eprintln!("skipped: `script` is not util-linux's");
        return;
    }
    // A token on the command line is refused (every user sees a process's arguments),
    // before anything is sent, without repeating it.
    let out = admin(&[
        "--address",
        "http://127.0.0.1:1",
        "--token",
        TOKEN,
        "dead-letters",
        "list",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("admin: --token is not accepted"),
        "{stderr}"
    );
    assert!(stderr.contains("--token-file"), "{stderr}");
    assert!(!stderr.contains(TOKEN), "{stderr}");
    let line = format!(
        "{BIN} admin --address http://127.0.0.1:1 dead-letters payload x --justification t"
    );
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("OZG_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("not writing a payload to a terminal"),
        "{shown}"
    );
}

const NOT_SERVING: &str = "ozg.gateway.admin.v1.DirectoryService";

/// tonic-health's server, refusing calls without `authorization: Bearer TOKEN`.
async fn health_server(tls: Option<ServerTlsConfig>) -> SocketAddr {
    // tonic's server takes rustls' process-wide provider, and two are compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(NOT_SERVING, ServingStatus::NotServing)
        .await;
    let check = |request: Request<()>| {
        let expected = format!("Bearer {TOKEN}");
        match request.metadata().get("authorization") {
            Some(value) if value.to_str().ok() == Some(expected.as_str()) => Ok(request),
            _ => Err(Status::unauthenticated("no or an unknown token")),
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mut server = Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls).unwrap();
    }
    let router = server.add_service(tonic::service::interceptor::InterceptedService::new(
        service, check,
    ));
    tokio::spawn(async move {
        // Kept alive by the test's runtime; it ends with it.
        let _ = router
            .serve_with_incoming(TcpIncoming::from(listener))
            .await;
    });
    address
}

async fn admin_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        admin(&args)
    })
    .await
    .unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_carry_the_token_and_map_every_answer_to_an_exit_code() {
    let address = format!("http://{}", health_server(None).await);
    let dir = tempfile::tempdir().unwrap();
    let token_file = |name: &str, content: &str| {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path.display().to_string()
    };
    // A file wins over OZG_ADMIN_TOKEN; one trailing newline is not part of the token.
    let right = token_file("right", &format!("{TOKEN}\n"));
    let wrong = token_file("wrong", "wrong-token");
    let empty = token_file("empty", "");
    // (arguments, exit code, stdout, start of stderr)
    let cases: &[(&[&str], i32, &str, &str)] = &[
        (&["health"], 0, "SERVING\n", ""),
        (&["health", "--json"], 0, "{\"status\":\"SERVING\"}\n", ""),
        (&["health", NOT_SERVING], 1, "NOT_SERVING\n", ""),
        (&["health", "no.such.Service"], 4, "", "admin: NOT_FOUND: "),
        (&["--token-file", &right, "health"], 0, "SERVING\n", ""),
        (
            &["--token-file", &wrong, "health"],
            3,
            "",
            "admin: UNAUTHENTICATED: no or an unknown token",
        ),
        (
            &["--token-file", &empty, "health"],
            2,
            "",
            "admin: --token-file: ",
        ),
    ];
    for (args, code, stdout, stderr) in cases {
        let mut line = strings(&["--address", &address]);
        line.extend(strings(args));
        let out = admin_async(line).await;
        let (out_text, err_text) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {err_text}");
        assert_eq!(out_text, *stdout, "{args:?}");
        assert!(err_text.starts_with(stderr), "{args:?}: {err_text}");
        assert!(!err_text.contains("wrong-token"), "{err_text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_watch_prints_changes_until_ctrl_c() {
    let address = format!("http://{}", health_server(None).await);
    let mut child = Command::new(BIN)
        .args([
            "admin",
            "--address",
            &address,
            "--json",
            "health",
            "--watch",
        ])
        .env("OZG_ADMIN_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let stdout = child.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout).read_line(&mut first).unwrap();
        first
    })
    .await
    .unwrap();
    assert_eq!(first, "{\"status\":\"SERVING\"}\n");
    signal(&child, "-INT");
    let status = wait_exit(&mut child, Duration::from_secs(5)).expect("stops on Ctrl-C");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn https_verifies_the_server_against_the_ca_and_presents_the_client_certificate() {
    let ca = Pki::new();
    let (server_cert, server_key) = ca.issue(&["localhost"]);
    let (client_cert, client_key) = ca.issue(&["operator"]);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let ca_file = write("ca.pem", &ca.ca);
    let cert_file = write("client.pem", &client_cert);
    let key_file = write("client.key", &client_key);
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&server_cert, &server_key))
        .client_ca_root(Certificate::from_pem(&ca.ca));
    let port = health_server(Some(tls)).await.port();
    let address = format!("https://localhost:{port}");

    let health = |ca: &str, client_certificate: bool| {
        let mut args = strings(&["--address", &address, "--ca-cert", ca]);
        if client_certificate {
            args.extend(strings(&[
                "--client-cert",
                &cert_file,
                "--client-key",
                &key_file,
            ]));
        }
        args.push("health".into());
        admin_async(args)
    };

    let mutual = health(&ca_file, true).await;
    assert_eq!(
        (
            mutual.status.code(),
            String::from_utf8_lossy(&mutual.stdout).as_ref()
        ),
        (Some(0), "SERVING\n"),
        "{}",
        String::from_utf8_lossy(&mutual.stderr)
    );

    // The server asks for a client certificate: without one the handshake fails.
    let without = health(&ca_file, false).await;
    let stderr = String::from_utf8_lossy(&without.stderr);
    assert_eq!(without.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.starts_with("admin: UNAVAILABLE: admin API at https://"),
        "{stderr}"
    );

    // A CA that did not sign the server's certificate.
    let untrusted = health(&write("other.pem", &Pki::new().ca), true).await;
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(untrusted.status.code(), Some(5), "{stderr}");
    assert!(!stderr.contains(TOKEN), "{stderr}");
}

/// `ozg-gateway ARGS` with `env`; stdout, stderr and the exit code.
fn gateway(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("OZG_ADMIN_ADDRESS")
        .env_remove("COLUMNS")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn completions_for_each_shell_know_the_commands_and_the_reason_codes() {
    for (shell, marker) in [
        ("bash", "complete -F _ozg__gateway"),
        ("zsh", "#compdef ozg-gateway"),
        ("fish", "complete -c ozg-gateway"),
    ] {
        let (code, script, stderr) = gateway(&["completions", shell], &[]);
        assert_eq!(code, 0, "{shell}: {stderr}");
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        for word in [
            "admin",
            "overview",
            "dead-letters",
            "hash-token",
            "completions",
        ] {
            assert!(script.contains(word), "{shell}: {word} missing");
        }
        // clap_complete's fish scripts stop two commands deep (`admin dead-letters`), so
        // the reason codes of `admin dead-letters list` are in bash's and zsh's only.
        if shell != "fish" {
            assert!(script.contains("delivery-failed"), "{shell}");
        }
        // The hidden trap for a token on the command line is never suggested.
        assert!(
            !script.contains("--token ")
                && !script.contains("--token)")
                && !script.contains("'--token=")
                && !script.contains("-l token "),
            "{shell} offers --token"
        );
    }
    // What a user gets at the prompt: bash completes `ozg-gateway admin dead-l<TAB>` and
    // `… --reason no-<TAB>` from the script.
    let complete = |words: &str| {
        let line = format!(
            "source <({BIN} completions bash)\n\
             COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n\
             _ozg__gateway ozg-gateway \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
             echo \"${{COMPREPLY[@]}}\""
        );
        let out = Command::new("bash").args(["-c", &line]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(complete("ozg-gateway admin dead-l"), "dead-letters");
    assert_eq!(complete("ozg-gateway admin --tok"), "--token-file");
    assert_eq!(complete("ozg-gateway admin dead-letters s"), "show summary");
    assert_eq!(
        complete("ozg-gateway admin dead-letters list --reason no-"),
        "no-route"
    );
    let (code, _, stderr) = gateway(&["completions", "tcsh"], &[]);
    assert_eq!(code, 2, "{stderr}");
}

/// groff's complaints about `page` (none for a valid manual page), with every warning on.
fn groff_warnings(page: &[u8]) -> String {
    use std::io::Write;
    let mut groff = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("groff is needed to check manual pages (deploy/local/test.sh installs it)");
    groff.stdin.take().unwrap().write_all(page).unwrap();
    let out = groff.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn manual_pages_are_valid_roff_for_the_program_and_every_command() {
    let (code, page, stderr) = gateway(&["man"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let th = page.lines().find(|l| l.starts_with(".TH ")).unwrap();
    // Title, section, date, source, manual: all five, the date not empty.
    assert!(
        th.starts_with(".TH ozg-gateway 1 ")
            && th.ends_with(" \"ozg-gateway 0.1.0\" \"ozg-gateway manual\""),
        "{th}"
    );
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH SUBCOMMANDS"] {
        assert!(page.contains(section), "{section} missing");
    }
    for command in ["admin", "completions", "man", "hash-token", "check-config"] {
        assert!(page.contains(&command.replace('-', "\\-")), "{command}");
    }
    assert!(page.is_ascii(), "non-ASCII text would need preconv");
    assert_eq!(groff_warnings(page.as_bytes()), "");

    let (code, page, _) = gateway(&["man", "admin", "dead-letters", "list"], &[]);
    assert_eq!(code, 0);
    assert!(page.contains(".TH ozg-gateway-admin-dead-letters-list 1 "));
    assert!(
        page.contains("delivery\\-failed"),
        "reason codes in the page"
    );
    assert_eq!(groff_warnings(page.as_bytes()), "");

    let (code, _, stderr) = gateway(&["man", "admin", "nonsense"], &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("ozg-gateway admin has no command \"nonsense\" (it has: health, overview"),
        "{stderr}"
    );

    // One page per command, as `man` finds them in a MANPATH folder.
    let dir = tempfile::tempdir().unwrap();
    let (code, listed, stderr) = gateway(&["man", "--dir", &dir.path().display().to_string()], &[]);
    assert_eq!(code, 0, "{stderr}");
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(listed.lines().count(), files.len());
    for expected in [
        "ozg-gateway.1",
        "ozg-gateway-run.1",
        "ozg-gateway-admin.1",
        "ozg-gateway-admin-overview.1",
        "ozg-gateway-admin-dead-letters-get.1",
        "ozg-gateway-admin-ingress-pause.1",
        "ozg-gateway-completions.1",
    ] {
        assert!(
            files.iter().any(|f| f == expected),
            "{expected} in {files:?}"
        );
    }
    // The hidden and the generated `help` commands get no page.
    assert!(!files.iter().any(|f| f.contains("help")), "{files:?}");
    for file in &files {
        let page = std::fs::read(dir.path().join(file)).unwrap();
        assert_eq!(groff_warnings(&page), "", "{file}");
    }
}

#[test]
fn an_unknown_reason_is_refused_with_the_valid_codes() {
    for action in ["list", "replay", "discard"] {
        let (code, stdout, stderr) = gateway(
            &[
                "admin",
                "--address",
                "http://127.0.0.1:1",
                "dead-letters",
                action,
                "--reason",
                "no_route",
            ],
            &[],
        );
        assert_eq!(code, 2, "{action}: {stderr}");
        assert!(stdout.is_empty());
        assert!(
            stderr.contains("invalid value 'no_route' for '--reason <REASON>'"),
            "{stderr}"
        );
        for reason in ozg_gateway::outcome::Reason::ALL {
            assert!(
                stderr.contains(reason.code()),
                "{action}: {}",
                reason.code()
            );
        }
    }
    // The help names the codes too, with what each means.
    let (code, help, _) = gateway(&["admin", "dead-letters", "list", "--help"], &[]);
    assert_eq!(code, 0);
    assert!(help.contains("- no-route:"), "{help}");
    assert!(
        help.contains("- delivery-failed:            Delivery to the responsible authority failed"),
        "{help}"
    );
    assert!(!help.contains("invalid-envelope"), "no such code");
}

// ---- against a running gateway -----------------------------------------------------------------

const VIEWER: &str = "cli-viewer-token-0123456789";
const HE_VIEWER: &str = "cli-he-viewer-token-0123456789";
const OPERATOR: &str = "cli-operator-token-0123456789";
const MELDE: &str = "99115005104000";
/// Offenbach am Main: no route, so a submission for it is dead-lettered (no-route).
const OFFENBACH: &str = "064130000000";

/// Hessen and Thüringen, each with its platform and back offices, and three tokens: a
/// viewer and an operator for every Land, a viewer for Hessen.
fn two_laender(v: &common::Vhosts) -> common::TestConfig {
    use ozg_gateway::admin::auth::hash_token;
    let token = |name: &str, secret: &str, roles: &str, laender: &str| {
        format!(
            "[[admin.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nroles = [{roles}]\nlaender = [{laender}]\n",
            hex::encode(hash_token(secret))
        )
    };
    common::TestConfig::new(v)
        .gateway(r#"confirm_timeout = "5s""#)
        .telemetry(r#"backlog_interval = "200ms""#)
        .platform("civento-he", "06", "he", None)
        .platform("civento-th", "16", "th", None)
        .destination(
            "he-darmstadt",
            "06",
            "he",
            "Wissenschaftsstadt Darmstadt, Bürgeramt",
        )
        .destination("he-kassel", "06", "he", "Stadt Kassel, Bürgerbüro Mitte")
        .destination(
            "th-erfurt",
            "16",
            "th",
            "Landeshauptstadt Erfurt, Bürgerservice",
        )
        .route(MELDE, "06411", "he-darmstadt")
        .dead_letters_into_store()
        .extra(&format!(
            "[admin]\naddress = \"127.0.0.1:0\"\n\n{}\n{}\n{}",
            token("viewer", VIEWER, "\"viewer\"", "\"*\""),
            token("he-viewer", HE_VIEWER, "\"viewer\"", "\"HE\""),
            token("ops", OPERATOR, "\"operator\"", "\"*\""),
        ))
}

/// `ozg-gateway admin --address ADDRESS ARGS` with `token`, off the test's runtime.
async fn admin_at(
    address: SocketAddr,
    token: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> (i32, String, String) {
    let address = format!("http://{address}");
    let mut line = strings(&["admin", "--address", &address]);
    line.extend(strings(args));
    let mut env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.push(("OZG_ADMIN_TOKEN".into(), token.to_owned()));
    let shown = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = line.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        gateway(&args, &env)
    })
    .await
    .unwrap();
    assert!(
        !shown.1.contains("Some(") && !shown.2.contains("Some("),
        "{args:?}: {shown:?}"
    );
    shown
}

/// The `--json` overview for `token` and the filter `args`.
async fn overview_json(address: SocketAddr, token: &str, args: &[&str]) -> serde_json::Value {
    let mut line = vec!["--json", "overview"];
    line.extend_from_slice(args);
    let (code, stdout, stderr) = admin_at(address, token, &[], &line).await;
    assert_eq!(code, 0, "{args:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap()
}

/// The ids in `overview[list][*][key]`.
fn ids(overview: &serde_json::Value, list: &str, key: &str) -> Vec<String> {
    overview[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[key].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_queue_depths_keeps_zeros_filters_rows_and_fits_the_terminal() {
    use ozg_gateway::envelope::Encoding;
    let v = common::Vhosts::create("cli-overview", &["he", "th", "gw"]);
    let gw = common::Admin::start(two_laender(&v).build()).await;
    let address = gw.address;

    // Thüringen's ingress paused, then three submissions wait in its queue; one from
    // Hessen finds no route and becomes a dead letter.
    let (code, _, stderr) =
        admin_at(address, OPERATOR, &[], &["ingress", "pause", "civento-th"]).await;
    assert_eq!(code, 0, "{stderr}");
    let th = common::connect(&v.url("th")).await;
    let th_channel = common::confirm_channel(&th).await;
    for _ in 0..3 {
        let s = common::sample_submission("civento-th", "16", MELDE, "160510000000", 512);
        common::submit(&th_channel, &s, Encoding::Protobuf).await;
    }
    let he = common::connect(&v.url("he")).await;
    let he_channel = common::confirm_channel(&he).await;
    let lost = common::sample_submission("civento-he", "06", MELDE, OFFENBACH, 512);
    common::submit(&he_channel, &lost, Encoding::Protobuf).await;

    // The depth comes from the periodic passive declare (every 200 ms here); the letter
    // from the store.
    let deadline = Instant::now() + Duration::from_secs(20);
    let overview = loop {
        let o = overview_json(address, VIEWER, &[]).await;
        let th_row = o["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["platformId"] == "civento-th")
            .cloned()
            .unwrap();
        if (th_row["queueReady"] == "3" && o["deadLettersPending"] == "1")
            || Instant::now() > deadline
        {
            break o;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let platform = |id: &str| {
        overview["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["platformId"] == id)
            .cloned()
            .unwrap()
    };
    let (he_row, th_row) = (platform("civento-he"), platform("civento-th"));
    assert_eq!(th_row["queueReady"], "3", "{overview}");
    assert_eq!(th_row["queueConsumers"], 0, "paused: {th_row}");
    assert_eq!(th_row["ingressQueue"], "submissions");
    assert_eq!(th_row["consumerState"], "paused");
    assert!(th_row["queueCountedAt"].is_string(), "{th_row}");
    assert_eq!(he_row["queueReady"], "0", "{he_row}");
    assert_eq!(he_row["queueConsumers"], 1, "{he_row}");
    assert_eq!(he_row["consumed"], "1", "{he_row}");
    assert_eq!(overview["deadLettersPending"], "1", "{overview}");
    // Zeros and empty values are there, not left out: a script reads every key.
    assert_eq!(th_row["consumed"], "0", "{th_row}");
    assert_eq!(th_row["inFlight"], "0", "{th_row}");
    let kassel = overview["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destinationId"] == "he-kassel")
        .cloned()
        .unwrap();
    for (key, zero) in [
        ("delivered", "\"0\""),
        ("failed", "\"0\""),
        ("retrying", "\"0\""),
        ("lastError", "\"\""),
    ] {
        assert_eq!(kassel[key].to_string(), zero, "{key} in {kassel}");
    }
    let (_, raw, _) = admin_at(address, VIEWER, &[], &["--json", "overview"]).await;
    assert!(raw.contains(r#""consumed":"0""#), "{raw}");
    assert!(raw.contains(r#""retrying":"0""#), "{raw}");

    // Filters: only the rows asked for, within the token's scope.
    let every_destination = ["he-darmstadt", "he-kassel", "th-erfurt"];
    // (token, filter, platforms, destinations, brokers, pending dead letters)
    type Case<'a> = (
        &'a str,
        &'a [&'a str],
        &'a [&'a str],
        &'a [&'a str],
        &'a [&'a str],
        &'a str,
    );
    let cases: &[Case] = &[
        (
            VIEWER,
            &[],
            &["civento-he", "civento-th"],
            &every_destination,
            &["gw", "he", "th"],
            "1",
        ),
        (
            VIEWER,
            &["--land", "HE"],
            &["civento-he"],
            &["he-darmstadt", "he-kassel"],
            &["he"],
            "1",
        ),
        (
            VIEWER,
            &["--land", "16"],
            &["civento-th"],
            &["th-erfurt"],
            &["th"],
            "0",
        ),
        (VIEWER, &["--land", "09"], &[], &[], &[], "0"),
        (
            VIEWER,
            &["--platform", "civento-th"],
            &["civento-th"],
            &[],
            &["th"],
            "0",
        ),
        (
            VIEWER,
            &["--platform", "civento-he"],
            &["civento-he"],
            &[],
            &["he"],
            "1",
        ),
        (
            VIEWER,
            &["--destination", "th-erfurt"],
            &[],
            &["th-erfurt"],
            &["th"],
            "0",
        ),
        (
            VIEWER,
            &["--platform", "civento-th", "--destination", "he-kassel"],
            &["civento-th"],
            &["he-kassel"],
            &["he", "th"],
            "0",
        ),
        (
            VIEWER,
            &[
                "--land",
                "TH",
                "--destination",
                "he-kassel",
                "--destination",
                "th-erfurt",
            ],
            &[],
            &["th-erfurt"],
            &["th"],
            "0",
        ),
        // Hessen's viewer: its own rows only, whatever it asks for.
        (
            HE_VIEWER,
            &[],
            &["civento-he"],
            &["he-darmstadt", "he-kassel"],
            &["gw", "he", "th"],
            "1",
        ),
        (HE_VIEWER, &["--land", "TH"], &[], &[], &[], "0"),
        (
            HE_VIEWER,
            &["--destination", "he-kassel"],
            &[],
            &["he-kassel"],
            &["he"],
            "0",
        ),
    ];
    for (token, filter, platforms, destinations, brokers, pending) in cases {
        let o = overview_json(address, token, filter).await;
        let mut links = ids(&o, "brokers", "broker");
        links.sort();
        links.dedup();
        assert_eq!(
            (
                ids(&o, "platforms", "platformId"),
                ids(&o, "destinations", "destinationId"),
                links,
                o["deadLettersPending"].as_str().unwrap(),
            ),
            (
                strings(platforms),
                strings(destinations),
                strings(brokers),
                *pending
            ),
            "{filter:?} as {}",
            if *token == VIEWER {
                "viewer"
            } else {
                "he-viewer"
            }
        );
    }
    // A platform or destination the token cannot see is NOT_FOUND, exactly as one that
    // does not exist; a Land that is none is a bad argument.
    for (token, filter, code, message) in [
        (
            HE_VIEWER,
            &["--platform", "civento-th"][..],
            4,
            "admin: NOT_FOUND: no platform \"civento-th\" within the token's scope (Land 06 HE)",
        ),
        (
            HE_VIEWER,
            &["--platform", "civento-xx"],
            4,
            "admin: NOT_FOUND: no platform \"civento-xx\" within the token's scope (Land 06 HE)",
        ),
        (
            HE_VIEWER,
            &["--destination", "th-erfurt"],
            4,
            "admin: NOT_FOUND: no destination \"th-erfurt\" within the token's scope (Land 06 HE)",
        ),
        (
            VIEWER,
            &["--destination", "he-nowhere"],
            4,
            "admin: NOT_FOUND: no destination \"he-nowhere\"",
        ),
        (
            VIEWER,
            &["--land", "17"],
            1,
            "admin: INVALID_ARGUMENT: laender[0]: ",
        ),
    ] {
        let mut line = vec!["overview"];
        line.extend_from_slice(filter);
        let (got, stdout, stderr) = admin_at(address, token, &[], &line).await;
        assert_eq!(got, code, "{filter:?}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.starts_with(message), "{filter:?}: {stderr}");
    }

    // Tables for a person. Into a pipe, one line per row for grep and awk.
    let (code, table, stderr) = admin_at(address, VIEWER, &[], &["overview"]).await;
    assert_eq!(code, 0, "{stderr}");
    let queue_line = table
        .lines()
        .find(|l| l.starts_with("civento-th") && l.contains("submissions"))
        .unwrap_or_else(|| panic!("no queue row for civento-th in\n{table}"));
    let cells: Vec<&str> = queue_line.split_whitespace().collect();
    assert_eq!(
        cells[..5],
        ["civento-th", "submissions", "3", "0", "0"],
        "{queue_line}"
    );
    // Within 60 columns when the terminal (COLUMNS) has 60: cells wrap, ids stay whole.
    let (code, table, stderr) =
        admin_at(address, VIEWER, &[("COLUMNS", "60")], &["overview"]).await;
    assert_eq!(code, 0, "{stderr}");
    for line in table.lines() {
        assert!(line.chars().count() <= 60, "{line:?} in\n{table}");
    }
    for id in [
        "civento-he",
        "civento-th",
        "he-darmstadt",
        "he-kassel",
        "th-erfurt",
    ] {
        assert!(table.lines().any(|l| l.starts_with(id)), "{id} in\n{table}");
    }
    let (code, table, _) = admin_at(
        address,
        VIEWER,
        &[("COLUMNS", "60")],
        &["destinations", "list"],
    )
    .await;
    assert_eq!(code, 0);
    for line in table.lines() {
        assert!(line.chars().count() <= 60, "{line:?} in\n{table}");
    }
    for id in every_destination {
        assert!(table.lines().any(|l| l.starts_with(id)), "{id} in\n{table}");
    }
    // Into a pipe without COLUMNS, one line per row for grep and awk.
    let (_, table, _) = admin_at(address, VIEWER, &[], &["destinations", "list"]).await;
    assert_eq!(
        table.lines().count(),
        1 + every_destination.len(),
        "{table}"
    );

    // `dead-letters show` is `get`.
    let (_, listed, _) = admin_at(address, VIEWER, &[], &["--json", "dead-letters", "list"]).await;
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let letter = listed["deadLetters"][0]["id"].as_str().unwrap().to_owned();
    let (code, shown, stderr) =
        admin_at(address, VIEWER, &[], &["dead-letters", "show", &letter]).await;
    assert_eq!(code, 0, "{stderr}");
    let field = |name: &str| {
        shown
            .lines()
            .find_map(|l| l.strip_prefix(name).filter(|rest| rest.starts_with(' ')))
            .map(str::trim)
            .unwrap_or_default()
    };
    assert_eq!(field("submission"), lost.submission_id, "{shown}");
    assert_eq!(field("reason"), "no-route", "{shown}");
    let (_, got, _) = admin_at(address, VIEWER, &[], &["dead-letters", "get", &letter]).await;
    assert_eq!(got, shown);

    let _ = th.close(200, "done".into()).await;
    let _ = he.close(200, "done".into()).await;
    gw.stop().await;
}

/// The rows of a `--json` outcomes answer: (submission id, outcome, destination, reason).
fn outcome_rows(json: &serde_json::Value) -> Vec<(String, String, String, String)> {
    json["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let text = |k: &str| o[k].as_str().unwrap_or_default().to_owned();
            (
                text("submissionId"),
                text("outcome"),
                text("destination"),
                text("reason"),
            )
        })
        .collect()
}

/// Dead-letter triage as an operator types it: the summary (table and JSON, within a
/// scope), a dry run that sends nothing, a bulk replay that wants its count confirmed and
/// refuses a count that no longer holds, and the replay's outcomes per letter: delivered
/// once the route exists, dead-lettered again (no-route) where it still does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_triage_summary_dry_run_confirmation_and_outcomes() {
    use ozg_gateway::envelope::Encoding;
    const KASSEL: &str = "066110000000";
    let v = common::Vhosts::create("cli-triage", &["he", "th", "gw"]);
    let gw = common::Admin::start(two_laender(&v).build()).await;
    let address = gw.address;
    let he = common::connect(&v.url("he")).await;
    let he_channel = common::confirm_channel(&he).await;
    let th = common::connect(&v.url("th")).await;
    let th_channel = common::confirm_channel(&th).await;
    // No route for any of them: two for Kassel, one for Offenbach, one from Thüringen.
    let mut kassel = Vec::new();
    for region in [KASSEL, KASSEL, OFFENBACH] {
        let s = common::sample_submission("civento-he", "06", MELDE, region, 512);
        common::submit(&he_channel, &s, Encoding::Protobuf).await;
        if region == KASSEL {
            kassel.push(s.submission_id);
        }
    }
    let s = common::sample_submission("civento-th", "16", MELDE, "160510000000", 512);
    common::submit(&th_channel, &s, Encoding::Protobuf).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    let summary = loop {
        let (code, stdout, stderr) =
            admin_at(address, VIEWER, &[], &["--json", "dead-letters", "summary"]).await;
        assert_eq!(code, 0, "{stderr}");
        let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        if summary["total"] == "4" {
            break summary;
        }
        assert!(Instant::now() < deadline, "dead letters so far: {summary}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        summary["byPlatform"],
        serde_json::json!([
            {"key": "civento-he", "count": "3"},
            {"key": "civento-th", "count": "1"}
        ])
    );
    assert_eq!(
        summary["byReason"],
        serde_json::json!([{"key": "no-route", "count": "4"}])
    );
    let (code, table, _) = admin_at(address, VIEWER, &[], &["dead-letters", "summary"]).await;
    assert_eq!(code, 0);
    println!("{table}");
    assert!(
        table.starts_with("4 dead letter(s) (scope: every Land)"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().eq(["no-route", "4"])),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.split_whitespace().eq(["-", "4"])),
        "no destination shown as -: {table}"
    );
    // Hessen's viewer counts Hessen's letters only.
    let (code, stdout, _) = admin_at(
        address,
        HE_VIEWER,
        &[],
        &["--json", "dead-letters", "summary"],
    )
    .await;
    assert_eq!(code, 0);
    let scoped: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (scoped["total"].as_str(), scoped["scope"].as_str()),
        (Some("3"), Some("Land 06 HE"))
    );

    let select = ["--reason", "no-route", "--platform", "civento-he"];
    let with = |head: &[&'static str], tail: &[&'static str]| -> Vec<&'static str> {
        head.iter().chain(&select).chain(tail).copied().collect()
    };
    // The dry run counts and shows the ids; nothing is sent.
    let (code, stdout, stderr) = admin_at(
        address,
        OPERATOR,
        &[],
        &with(&["dead-letters", "replay"], &["--dry-run"]),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    println!("{stdout}");
    assert!(
        stdout.starts_with("would replay 3 (scope: every Land)"),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("  ")).count(),
        3,
        "{stdout}"
    );
    // Without a terminal and without a confirmation: refused, naming the count.
    let (code, _, stderr) = admin_at(
        address,
        OPERATOR,
        &[],
        &with(&["dead-letters", "replay"], &[]),
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--expect 3"), "{stderr}");

    // Kassel gets its route; the operator confirms a count that is not the selection's.
    let (code, _, stderr) = admin_at(
        address,
        OPERATOR,
        &[],
        &["routes", "create", MELDE, "06611", "he-kassel"],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = admin_at(
        address,
        OPERATOR,
        &[],
        &with(&["dead-letters", "replay"], &["--expect", "2"]),
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("FAILED_PRECONDITION") && stderr.contains("holds 3"),
        "{stderr}"
    );
    let (_, stdout, _) =
        admin_at(address, VIEWER, &[], &["--json", "dead-letters", "summary"]).await;
    assert!(stdout.contains("\"total\":\"4\""), "touched: {stdout}");

    // Confirmed right, and waited for: each letter's outcome.
    let (code, stdout, stderr) = admin_at(
        address,
        OPERATOR,
        &[],
        &with(
            &["--json", "dead-letters", "replay"],
            &["--expect", "3", "--wait", "30s"],
        ),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let mut documents = stdout.lines();
    let replayed: serde_json::Value = serde_json::from_str(documents.next().unwrap()).unwrap();
    assert_eq!(replayed["replayed"], 3, "{replayed}");
    let outcomes: serde_json::Value = serde_json::from_str(documents.next().unwrap()).unwrap();
    let mut rows = outcome_rows(&outcomes);
    rows.sort();
    println!("outcomes: {rows:?}");
    let mut delivered: Vec<String> = rows
        .iter()
        .filter(|r| r.1 == "REPLAY_OUTCOME_KIND_DELIVERED" && r.2 == "he-kassel")
        .map(|r| r.0.clone())
        .collect();
    delivered.sort();
    kassel.sort();
    assert_eq!(delivered, kassel, "{rows:?}");
    assert_eq!(
        rows.iter()
            .filter(|r| r.1 == "REPLAY_OUTCOME_KIND_DEAD_LETTERED" && r.3 == "no-route")
            .count(),
        1,
        "{rows:?}"
    );
    let arrived =
        common::take_backoffice(&he_channel, "he-kassel", 2, Duration::from_secs(30)).await;
    println!(
        "replayed 3: delivered {}, dead-lettered again 1",
        arrived.len()
    );
    assert_eq!(arrived.len(), 2);

    // Later, as a table, by id.
    let ids: Vec<String> = replayed["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    let mut line = vec!["dead-letters", "outcomes"];
    line.extend(ids.iter().map(String::as_str));
    let (code, table, stderr) = admin_at(address, VIEWER, &[], &line).await;
    assert_eq!(code, 0, "{stderr}");
    println!("{table}");
    assert_eq!(table.matches("delivered").count(), 2, "{table}");
    assert!(
        table.contains("dead-lettered") && table.contains("no-route"),
        "{table}"
    );
    assert!(
        stderr.contains("2 delivered") && stderr.contains("0 not settled"),
        "{stderr}"
    );

    // A discard confirmed with --yes: Thüringen's letter.
    let (code, stdout, stderr) = admin_at(
        address,
        OPERATOR,
        &[],
        &[
            "dead-letters",
            "discard",
            "--platform",
            "civento-th",
            "--yes",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("discarded 1"), "{stdout}");
    gw.stop().await;
}
