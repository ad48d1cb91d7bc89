//! The real binary: configuration checks and exit codes, the resolver's explanation, and the
//! README's walkthrough (run, submit, receive, SIGTERM) against a real broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_ozg-gateway");

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/config/example.toml")
        .display()
        .to_string()
}

#[test]
fn the_example_configuration_is_valid() {
    let out = Command::new(BIN)
        .args(["check-config", &example()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("valid (17 brokers, 16 platforms"),
        "{stdout}"
    );
}

#[test]
fn invalid_configuration_lists_every_error_and_exits_64_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(example())
        .unwrap()
        .replace("destination = \"th-jena\"", "destination = \"th-jenna\"")
        .replace("region = \"16051\"", "region = \"1605\"")
        // A broker nobody can reach: the exit must come from validation, not a timeout.
        .replace(
            "127.0.0.1:5672/ozg-gateway",
            "10.255.255.1:5672/ozg-gateway",
        );
    std::fs::write(&path, text).unwrap();
    for args in [
        vec!["check-config", path.to_str().unwrap()],
        vec!["run", "--config", path.to_str().unwrap()],
    ] {
        let started = Instant::now();
        let out = Command::new(BIN).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(
            stderr.contains("invalid configuration: 4 errors"),
            "{stderr}"
        );
        assert!(
            stderr.contains("bad.toml: routes[30].destination: unknown destination \"th-jenna\""),
            "{stderr}"
        );
        assert!(
            stderr.contains("bad.toml: routes[26].region: \"1605\" has 4 characters"),
            "{stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "validation connects to nothing"
        );
    }
    let missing = Command::new(BIN)
        .args(["check-config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.toml: cannot read"));
}

/// `check-config` takes `--config`/`OZG_CONFIG` like every command (and the file alone, as
/// older scripts give it), and lists format-level problems (unknown keys, bad durations,
/// wrong types) together with the rest, each as `file: key: what is wrong`.
#[test]
fn check_config_lists_format_and_semantic_problems_at_once_in_every_form() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(example())
        .unwrap()
        .replacen(
            "[gateway]\n",
            "[gateway]\nconfirm_timout = \"5s\"\nstatus_every = 3\n",
            1,
        )
        .replacen(
            "shutdown_grace = \"30s\"",
            "shutdown_grace = \"half a minute\"",
            1,
        )
        .replacen("prefetch = 256", "prefetch = \"many\"", 1)
        .replace("destination = \"th-jena\"", "destination = \"th-jenna\"")
        .replace("region = \"16051\"", "region = \"1605\"")
        // A broker nobody can reach: the exit must come from validation, not a timeout.
        .replace(
            "127.0.0.1:5672/ozg-gateway",
            "10.255.255.1:5672/ozg-gateway",
        );
    std::fs::write(&path, text).unwrap();
    let file = path.to_str().unwrap();
    let expected = [
        "bad.toml: gateway.confirm_timout: unknown field `confirm_timout`, expected one of",
        "bad.toml: gateway.shutdown_grace: invalid value: string \"half a minute\", expected a duration",
        "bad.toml: gateway.status_every: unknown field `status_every`",
        "bad.toml: platforms[0].prefetch: invalid type: string \"many\", expected a whole number",
        "bad.toml: routes[21].destination: unknown destination \"th-jenna\"",
        "bad.toml: routes[26].region: \"1605\" has 4 characters",
        "bad.toml: routes[29].region: \"1605\" has 4 characters",
        "bad.toml: routes[30].destination: unknown destination \"th-jenna\"",
    ];
    let forms: [(&[&str], Option<&str>); 5] = [
        (&["check-config", "--config", file], None),
        (&["check-config", "-c", file], None),
        (&["check-config", file], None),
        (&["check-config"], Some(file)),
        // The file given wins over OZG_CONFIG, as --config does for the other commands.
        (&["check-config", file], Some("/nonexistent/other.toml")),
    ];
    for (args, env) in forms
        .iter()
        .copied()
        .chain([(["run", "--config", file].as_slice(), None)])
    {
        let mut command = Command::new(BIN);
        command.args(args).env_remove("OZG_CONFIG");
        if let Some(env) = env {
            command.env("OZG_CONFIG", env);
        }
        let started = Instant::now();
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?} {env:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().skip(1).map(str::trim).collect();
        for want in expected {
            assert!(
                lines.iter().any(|l| l.contains(want)),
                "{args:?} {env:?}: missing {want:?} in\n{stderr}"
            );
        }
        assert!(
            stderr.starts_with(&format!(
                "invalid configuration: {} errors\n",
                expected.len()
            )),
            "{args:?} {env:?}: {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "validation connects to nothing"
        );
    }

    // Usage mistakes: exit 2, saying what to give.
    for args in [
        vec!["check-config"],
        vec!["check-config", "--config", file, "/etc/other.toml"],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .env_remove("OZG_CONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("--config FILE"), "{args:?}: {stderr}");
    }

    // A TOML syntax error is one error, with its line and column.
    std::fs::write(
        &path,
        "[gateway]\ndead_letter_broker = \"gateway\"\nconfirm_timeout = 15s\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config", file])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.starts_with("invalid configuration: 1 error\n")
            && stderr.contains("bad.toml: TOML parse error at line 3, column 19"),
        "{stderr}"
    );
}

/// An admin API that other machines can reach without TLS is allowed (a container needs
/// 0.0.0.0) but warned about, by check-config and at start.
#[test]
fn an_admin_api_on_every_interface_without_tls_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.toml");
    let text = with_data_dir(
        &keep_only_lands(&std::fs::read_to_string(example()).unwrap(), &["he"])
            .replace("127.0.0.1:50051", "0.0.0.0:0")
            .replace("127.0.0.1:8080", "127.0.0.1:0"),
        dir.path(),
    );
    std::fs::write(&path, text).unwrap();
    let file = path.to_str().unwrap();
    let warning = "admin.address: 0.0.0.0:0 is reachable from other machines, without TLS";

    let out = Command::new(BIN)
        .args(["check-config", "--config", file])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("warning: {file}: {warning}")),
        "{stderr}"
    );

    let mut gateway = Command::new(BIN)
        .args(["run", "--config", file, "--log-format", "json"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = gateway.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let warned = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) if line.contains(warning) => break Some(line),
            Ok(line) => seen.push(line),
            Err(_) => break None,
        }
    };
    terminate(&mut gateway, Duration::from_secs(30));
    let line = warned.unwrap_or_else(|| panic!("no warning at start in:\n{}", seen.join("\n")));
    assert!(line.contains("\"level\":\"WARN\""), "{line}");
}

#[test]
fn resolve_explains_the_walk() {
    let out = Command::new(BIN)
        .args([
            "resolve",
            "--config",
            &example(),
            "99115005104000",
            "06431001",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "service 99115005104000, region 064310001001 (Abtsteinach)"
    );
    assert!(
        lines[1].contains("064310001001") && lines[1].ends_with("– no route"),
        "{stdout}"
    );
    assert!(
        lines[2].contains("064310001 ") && lines[2].ends_with("– no route"),
        "{stdout}"
    );
    assert!(
        lines[3].contains("06431") && lines[3].contains("route matched: he-kreis-bergstrasse"),
        "{stdout}"
    );
    assert_eq!(
        lines[4],
        "→ he-kreis-bergstrasse (Kreis Bergstraße, Fachbereich Ordnung, kreis)"
    );

    let none = Command::new(BIN)
        .args(["resolve", "--config", &example(), "99115005104000", "999"])
        .output()
        .unwrap();
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("region \"999\" has 3 characters"));
}

/// The README's walkthrough, step by step, with the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_run_submit_receive_and_stop_with_sigterm() {
    let v = Vhosts::create("walk", &["gw", "he", "th"]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("walk.toml");
    let text = std::fs::read_to_string(example())
        .unwrap()
        .replace(
            "127.0.0.1:5672/ozg-gateway\"",
            &format!("127.0.0.1:5672/{}\"", v.name("gw")),
        )
        .replace(
            "127.0.0.1:5672/ozg-he\"",
            &format!("127.0.0.1:5672/{}\"", v.name("he")),
        )
        .replace(
            "127.0.0.1:5672/ozg-th\"",
            &format!("127.0.0.1:5672/{}\"", v.name("th")),
        );
    // Only the brokers of this test exist: keep Hessen's and Thüringen's platforms.
    // A free port for the admin API: the example's 50051 may be taken on a test machine.
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // The console's port too, for the same reason.
    let text = text
        .replace("127.0.0.1:50051", &admin.to_string())
        .replace("127.0.0.1:8080", "127.0.0.1:0");
    let config_text = with_data_dir(&keep_only_lands(&text, &["he", "th"]), dir.path());
    std::fs::write(&config, config_text).unwrap();
    let config = config.to_str().unwrap();

    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["declare-topology", "--config", config]);
    let mut gateway = Command::new(BIN)
        .args(["run", "--config", config])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // A Thüringen platform submits for Darmstadt (Hessen); it arrives at Darmstadt.
    let submitted = run(&[
        "submit",
        "--config",
        config,
        "--platform",
        "civento-th",
        "--region",
        "064110000000",
    ]);
    let id = submitted.split_whitespace().nth(1).unwrap().to_owned();
    let received = run(&[
        "receive",
        "--config",
        config,
        "--destination",
        "he-darmstadt",
        "--count",
        "1",
        "--wait",
        "20s",
    ]);
    assert!(
        received.contains(&format!("\"message_id\":\"{id}\"")),
        "{received}"
    );
    assert!(
        received.contains("\"x-ozg-destination\":\"he-darmstadt\""),
        "{received}"
    );
    // The next status event for the platform in Thüringen, as `receive` prints it.
    let next_status = || {
        run(&[
            "receive",
            "--config",
            config,
            "--status",
            "civento-th",
            "--count",
            "1",
            "--wait",
            "10s",
        ])
    };
    let status = next_status();
    assert!(
        status.contains("STATUS_FORWARDED") && status.contains(&id),
        "{status}"
    );

    // Darmstadt's back office accepts; the platform in Thüringen hears it.
    let answered = run(&[
        "answer",
        "--config",
        config,
        "--destination",
        "he-darmstadt",
        &id,
        "--accept",
    ]);
    assert!(answered.contains("accepted"), "{answered}");
    let status = next_status();
    assert!(
        status.contains("STATUS_ACCEPTED") && status.contains(&id),
        "{status}"
    );

    // A rejection and why: a service key that is not a LeiKa key.
    let bad = run(&[
        "submit",
        "--config",
        config,
        "--platform",
        "civento-th",
        "--service",
        "12345678901234",
        "--json",
    ]);
    let bad_id = bad.split_whitespace().nth(1).unwrap().to_owned();
    // The gateway takes its dead letters into the store; operators read them over the
    // admin API with the local operator token of the example configuration.
    let address = format!("http://{admin}");
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), "local-operator-token\n").unwrap();
    let token_path = token_file.path().display().to_string();
    let admin_cli = |args: &[&str]| {
        let mut all = vec![
            "admin",
            "--address",
            address.as_str(),
            "--token-file",
            token_path.as_str(),
            "--json",
        ];
        all.extend_from_slice(args);
        run(&all)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let dead = loop {
        let listed = admin_cli(&["dead-letters", "list", "--reason", "invalid-service-key"]);
        if listed.contains(&bad_id) || std::time::Instant::now() > deadline {
            break listed;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(dead.contains(&bad_id), "{dead}");
    assert!(dead.contains("\"field\":\"service.key\""), "{dead}");
    assert!(dead.contains("must start with 99"), "{dead}");

    // SIGTERM: a clean stop with exit code 0.
    let status = terminate(&mut gateway, Duration::from_secs(30));
    let mut stderr = String::new();
    std::io::Read::read_to_string(gateway.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(
        stderr.contains("ozg-gateway ready") && stderr.contains("SIGTERM received"),
        "{stderr}"
    );
}

/// The configuration with its store in `dir`, so that tests share no state.
fn with_data_dir(text: &str, dir: &Path) -> String {
    text.replacen(
        "[gateway]\n",
        &format!("[gateway]\ndata_dir = \"{}\"\n", dir.join("data").display()),
        1,
    )
}

/// Cuts the example down to the given Länder's brokers, platforms, destinations and routes.
fn keep_only_lands(text: &str, keep: &[&str]) -> String {
    let blocks: Vec<&str> = text.split("\n\n").collect();
    let wanted = |block: &str| {
        let broker_line = block
            .lines()
            .find(|l| l.starts_with("broker = ") || l.starts_with("[brokers."));
        let destination_line = block.lines().find(|l| l.starts_with("destination = "));
        if let Some(line) = destination_line {
            return keep.iter().any(|k| line.contains(&format!("\"{k}-")));
        }
        match broker_line {
            Some(line) => {
                line.contains("gateway")
                    || keep.iter().any(|k| {
                        line.contains(&format!("\"{k}\""))
                            || line.contains(&format!("[brokers.{k}]"))
                    })
            }
            None => true,
        }
    };
    blocks
        .into_iter()
        .filter(|b| wanted(b))
        .collect::<Vec<_>>()
        .join("\n\n")
}
