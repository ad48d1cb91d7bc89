//! The real binary's `admin` client where the gateway's own admin server is not needed: an
//! unreachable address, the help, usage errors caught before anything is sent, and
//! grpc.health.v1 against tonic-health's server (plain, behind a token check, and with mutual
//! TLS); and `hash-token`, which makes a token's configuration entry. The calls against a
//! running gateway are tested with the server.

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
