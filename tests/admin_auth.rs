//! Guessing admin tokens against the real binary: every failure is logged with the
//! client's address and never the token (one line per address per 10 s, counting the
//! failures in between), failures from one address are answered no faster than 40 a second
//! after a burst of 10, and the right token afterwards is answered at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use ozg_gateway::admin::auth::hash_token;
use ozg_gateway::wire::admin as pb;
use pb::stats_service_client::StatsServiceClient;
use serde_json::Value;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const VIEWER: &str = "the-right-viewer-token-4711";
const GUESSES: usize = 200;

fn with_token<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessed_tokens_are_logged_and_slowed_down_and_the_right_one_is_not() {
    let v = Vhosts::create("admin-guess", &["gw", "he"]);
    let dir = tempfile::tempdir().unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let config = TestConfig::new(&v)
        .gateway(&format!(
            "data_dir = \"{}\"",
            dir.path().join("data").display()
        ))
        .platform("civento-he", "06", "he", None)
        .destination("he-a", "06", "he", "Bürgeramt A")
        .extra(&format!(
            "[admin]\naddress = \"{address}\"\n[[admin.tokens]]\nname = \"watcher\"\nsha256 = \"{}\"\nroles = [\"viewer\"]\n",
            hex::encode(hash_token(VIEWER))
        ));
    let path = dir.path().join("guess.toml");
    std::fs::write(&path, config.text()).unwrap();
    declare(&config.build()).await;

    let (mut gateway, reader) = run_with_json_logs(&path, None);

    // Health needs no token: it says when the admin API is up.
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let channel = loop {
        if let Ok(channel) = endpoint.connect().await
            && HealthClient::new(channel.clone())
                .check(HealthCheckRequest::default())
                .await
                .is_ok()
        {
            break channel;
        }
        assert!(Instant::now() < deadline, "the admin API did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stats = StatsServiceClient::new(channel);

    let started = Instant::now();
    for i in 0..GUESSES {
        let status = stats
            .get_overview(with_token(
                &format!("guess-{i:04}"),
                pb::GetOverviewRequest::default(),
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    let guessing = started.elapsed();
    let started = Instant::now();
    stats
        .get_overview(with_token(VIEWER, pb::GetOverviewRequest::default()))
        .await
        .unwrap();
    let right = started.elapsed();
    println!(
        "{GUESSES} wrong tokens took {guessing:?} ({:.0}/s); the right one then {right:?}",
        GUESSES as f64 / guessing.as_secs_f64()
    );

    let status = terminate(&mut gateway, Duration::from_secs(30));
    let lines = reader.join().unwrap();
    assert!(status.success(), "exit {status:?}");

    // 190 answers at least 25 ms apart after a burst of 10: 4.75 s, not 60 ms.
    assert!(guessing >= Duration::from_secs(4), "{guessing:?}");
    assert!(right < Duration::from_millis(200), "{right:?}");

    let failures: Vec<Value> = lines
        .iter()
        .filter(|l| l.contains("authentication failed"))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    println!("{} log lines for {GUESSES} failures", failures.len());
    assert!(
        (1..=2).contains(&failures.len()),
        "one line per address per 10 s: {failures:?}"
    );
    let first = &failures[0];
    assert_eq!(first["reason"], "unknown bearer token", "{first}");
    assert_eq!(first["failures"], 1, "{first}");
    assert!(
        first["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{first}"
    );
    assert_eq!(first["level"], "WARN");
    for line in &lines {
        assert!(
            !line.contains("guess-") && !line.contains(VIEWER),
            "a token in the log: {line}"
        );
    }
}
