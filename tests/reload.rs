//! SIGHUP reloads the configuration file into the running binary: a route changed in the
//! file sends the next submission to the new destination; what only a restart changes is
//! logged and not applied; an invalid file changes nothing and every problem is logged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use ozg_gateway::envelope::Encoding;
use serde_json::Value;

/// Reads the binary's JSON log lines as they come, so that a test can wait for one.
struct Log {
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<Value>,
}

impl Log {
    fn follow(child: &mut std::process::Child) -> Log {
        use std::io::BufRead;
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Log {
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (at most 20 s) for a line whose message is `message`; returns every line seen
    /// since the last call, that one included.
    fn wait_for(&mut self, message: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut since = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line {message:?}; saw {:#?}", self.seen));
            let value: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
            self.seen.push(value.clone());
            since.push(value.clone());
            if value["message"] == message {
                return since;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_puts_a_changed_route_in_use_and_an_invalid_file_changes_nothing() {
    let v = Vhosts::create("reload", &["gw", "he"]);
    let dir = tempfile::tempdir().unwrap();
    let config = |route_to: &str, retry: &str| {
        TestConfig::new(&v)
            .gateway(&format!(
                "data_dir = \"{}\"",
                dir.path().join("data").display()
            ))
            .retry(retry)
            .platform("civento-he", "06", "he", None)
            .destination("darmstadt", "06", "he", "Darmstadt")
            .destination("kassel", "06", "he", "Kassel")
            .route("*", "06411", route_to)
            .text()
    };
    let path = dir.path().join("gateway.toml");
    let first = config("darmstadt", "max_attempts = 10");
    std::fs::write(&path, &first).unwrap();
    // Both back offices' queues exist from the start.
    declare(&parse_config(&first)).await;
    let mut gateway = std::process::Command::new(env!("CARGO_BIN_EXE_ozg-gateway"))
        .args([
            "run",
            "--config",
            path.to_str().unwrap(),
            "--log-format",
            "json",
        ])
        .env_remove("OZG_LOG")
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = Log::follow(&mut gateway);
    log.wait_for("ozg-gateway ready");

    let he = connect(&v.url("he")).await;
    let channel = confirm_channel(&he).await;
    let read = he.create_channel().await.unwrap();
    let send_one = async || {
        let s = he_submission("064110000000");
        submit(&channel, &s, Encoding::Protobuf).await;
        s.submission_id
    };
    let arrives_at = async |destination: &str, id: &str| {
        let got = take_backoffice(&read, destination, 1, Duration::from_secs(20)).await;
        assert_eq!(got.len(), 1, "nothing arrived at {destination}");
        assert_eq!(got[0].message_id().as_deref(), Some(id));
    };
    let id = send_one().await;
    arrives_at("darmstadt", &id).await;

    // The route now points at Kassel, and a restart-only setting changed too.
    std::fs::write(&path, config("kassel", "max_attempts = 3")).unwrap();
    signal(&gateway, "-HUP");
    let lines = log.wait_for("configuration reloaded: routing directory in use");
    let reloaded = lines.last().unwrap();
    println!("reload: {reloaded}");
    assert_eq!(
        reloaded["changes"],
        "destinations +0 -0 ~0, routes +0 -0 ~1, services +0 -0 ~0"
    );
    let restart_only: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("takes effect only after a restart"))
        })
        .collect();
    assert_eq!(restart_only.len(), 1, "{lines:#?}");
    assert_eq!(restart_only[0]["section"], "retry");
    let id = send_one().await;
    arrives_at("kassel", &id).await;

    // An invalid file: two problems, both logged; the directory in use stays.
    let invalid = config("nowhere", "max_attempts = 0");
    std::fs::write(&path, &invalid).unwrap();
    signal(&gateway, "-HUP");
    let lines = log.wait_for("configuration not reloaded: the file is invalid; nothing changed");
    let problems: Vec<&str> = lines
        .iter()
        .filter(|l| l["message"] == "configuration not reloaded")
        .map(|l| l["problem"].as_str().unwrap())
        .collect();
    println!("problems logged: {problems:#?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("routes[0].destination") && p.contains("nowhere")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("retry.max_attempts")),
        "{problems:?}"
    );
    assert_eq!(
        lines.last().unwrap()["problems"].as_u64(),
        Some(problems.len() as u64)
    );
    let id = send_one().await;
    arrives_at("kassel", &id).await;

    let status = terminate(&mut gateway, Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
}
