//! The in-flight window: with a small `gateway.in_flight_bytes`, a backlog of large
//! submissions is delivered whole, each once, while the gateway (the real binary) asks the
//! broker for no more than its share holds and its memory stays far below the backlog.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use ozg_gateway::envelope::Encoding;

const SERVICE: &str = "99115005104000";
const BODY: usize = 256 * 1024;
const BACKLOG: usize = 200;

/// A kB figure of /proc/PID/status (`VmRSS`, `VmHWM`), in bytes.
fn memory(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        * 1024
}

/// The management API's JSON at `path`.
fn management_get(path: &str) -> serde_json::Value {
    let body = ureq::get(format!("{MANAGEMENT}{path}"))
        .header("Authorization", AUTH)
        .call()
        .unwrap_or_else(|e| panic!("RabbitMQ management API {path}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&body).unwrap()
}

/// The prefetch of each consumer of `queue` on `vhost`, as the broker lists them.
fn consumer_prefetches(vhost: &str, queue: &str) -> Vec<u64> {
    management_get(&format!("/consumers/{vhost}"))
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["queue"]["name"] == queue)
        .map(|c| c["prefetch_count"].as_u64().unwrap_or(u64::MAX))
        .collect()
}

/// Waits until `queue` on `vhost` has a consumer.
async fn wait_for_consumer(vhost: &str, queue: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let vh = vhost.to_owned();
        let q = queue.to_owned();
        let listed = tokio::task::spawn_blocking(move || consumer_prefetches(&vh, &q))
            .await
            .unwrap();
        if !listed.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no consumer on {queue} after 30 s: {}",
            log_tail(log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_large_submissions_stays_within_the_in_flight_budget() {
    let v = Vhosts::create("window", &["gw", "he"]);
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/data/gw.db", dir.path().display());
    // 1 MiB for three consumers (the platform, retries, replays): a third of a MiB each,
    // one 256 KiB submission at a time; the platform's own prefetch is the default 256.
    let text = TestConfig::new(&v)
        .gateway("in_flight_bytes = 1048576")
        .store(&store)
        .platform("civento-he", "06", "he", None)
        .destination("darmstadt", "06", "he", "Darmstadt")
        .route("*", "06411", "darmstadt")
        .text();
    declare(&parse_config(&text)).await;
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("gateway.log");
    let he = v.name("he").to_owned();

    // What the gateway takes with nothing to do.
    let idle = GatewayProcess::spawn(&config, &log);
    wait_for_consumer(&he, "submissions", &log).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = memory(idle.id(), "VmRSS");
    idle.stop(&log).await;

    // A backlog of 50 MiB, waiting before the gateway starts.
    let connection = connect(&v.url("he")).await;
    let channel = confirm_channel(&connection).await;
    let mut published = Vec::new();
    for _ in 0..BACKLOG {
        let s = sample_submission("civento-he", "06", SERVICE, "064110000000", BODY);
        submit(&channel, &s, Encoding::Protobuf).await;
        published.push(s.submission_id);
    }

    let gateway = GatewayProcess::spawn(&config, &log);
    let pid = gateway.id();
    // The broker's view of the window while the backlog drains: the prefetch of every
    // consumer of the platform's queue, and the unacked messages it counts.
    let watching = Arc::new(AtomicBool::new(true));
    let most_prefetch = Arc::new(AtomicU64::new(0));
    let most_unacked = Arc::new(AtomicU64::new(0));
    let watcher = std::thread::spawn({
        let (watching, most_prefetch, most_unacked) = (
            watching.clone(),
            most_prefetch.clone(),
            most_unacked.clone(),
        );
        let he = he.clone();
        move || {
            while watching.load(Ordering::Relaxed) {
                for prefetch in consumer_prefetches(&he, "submissions") {
                    most_prefetch.fetch_max(prefetch, Ordering::Relaxed);
                }
                let queue = management_get(&format!("/queues/{he}/submissions"));
                let unacked = queue["messages_unacknowledged"].as_u64().unwrap_or(0);
                most_unacked.fetch_max(unacked, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });

    let read = connection.create_channel().await.unwrap();
    let mut delivered = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while delivered.len() < BACKLOG && Instant::now() < deadline {
        delivered
            .extend(take_backoffice(&read, "darmstadt", BACKLOG, Duration::from_secs(1)).await);
    }
    let peak_rss = memory(pid, "VmHWM");
    let last_prefetch = tokio::task::spawn_blocking({
        let he = he.clone();
        move || consumer_prefetches(&he, "submissions")
    })
    .await
    .unwrap();
    watching.store(false, Ordering::Relaxed);
    watcher.join().unwrap();
    // Nothing more arrives: no duplicates after the last one.
    delivered.extend(take_backoffice(&read, "darmstadt", 1, Duration::from_secs(1)).await);
    let left = message_count(&connection, "submissions").await;
    let gw = connect(&v.url("gw")).await;
    let dead = take_dead_letters(
        &gw.create_channel().await.unwrap(),
        1,
        Duration::from_millis(500),
    )
    .await;
    gateway.stop(&log).await;

    let mut arrived: HashMap<String, usize> = HashMap::new();
    for m in &delivered {
        *arrived.entry(m.message_id().unwrap()).or_default() += 1;
    }
    let lost = published
        .iter()
        .filter(|id| !arrived.contains_key(*id))
        .count();
    let duplicated: usize = arrived.values().map(|n| n - 1).sum();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "window: published={BACKLOG} × {BODY} B delivered={} lost={lost} duplicated={duplicated} \
         idle_rss={:.1} MiB peak_rss={:.1} MiB most_prefetch={} last_prefetch={last_prefetch:?} \
         most_unacked={}",
        delivered.len(),
        mib(idle_rss),
        mib(peak_rss),
        most_prefetch.load(Ordering::Relaxed),
        most_unacked.load(Ordering::Relaxed),
    );
    assert_eq!(lost, 0, "{}", log_tail(&log));
    assert_eq!(duplicated, 0);
    assert_eq!(left, 0, "the platform's queue is drained");
    assert!(
        dead.is_empty(),
        "dead letters: {:?}",
        dead[0].header("x-ozg-reason")
    );
    // The first subscription, before any body was seen, takes a few; then one at a time.
    assert!(
        most_prefetch.load(Ordering::Relaxed) <= 8,
        "the broker was asked for {} at once",
        most_prefetch.load(Ordering::Relaxed)
    );
    assert_eq!(
        last_prefetch,
        vec![1],
        "one 256 KiB submission fills the share"
    );
    assert!(
        most_unacked.load(Ordering::Relaxed) <= 9,
        "the broker counted {} unacked",
        most_unacked.load(Ordering::Relaxed)
    );
    // Taking the whole backlog (or the 256 of the prefetch) would hold 50 MiB of bodies.
    assert!(
        peak_rss < idle_rss + 24 * 1024 * 1024,
        "peak RSS {:.1} MiB against {:.1} MiB idle",
        mib(peak_rss),
        mib(idle_rss)
    );
}
