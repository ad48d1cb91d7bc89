//! Soak: submissions flow for a while through the real binary while random faults hit it —
//! all of its broker connections closed, a destination exchange deleted and recreated, the
//! gateway killed with SIGKILL or stopped with SIGTERM and restarted. At the end every
//! submission is counted as delivered, dead-lettered, lost or duplicated.
//!
//! Short in the normal test run (`OZG_SOAK_SECONDS`, default 20); longer on demand with
//! `deploy/local/soak.sh [SECONDS]`. `OZG_SOAK_SEED` repeats a run's sequence of faults.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::topology::backoffice_queue;

const BIN: &str = env!("CARGO_BIN_EXE_ozg-gateway");
const PREFETCH: usize = 50;

/// A small deterministic generator, so that a seed repeats a run.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn spawn_gateway(config: &str) -> Child {
    Command::new(BIN)
        .args(["run", "--config", config])
        .env("OZG_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Closes every connection the gateway holds on this test's vhosts, through the management
/// API (as `rabbitmqctl close_connection` would).
fn close_gateway_connections(v: &Vhosts) -> usize {
    let auth = "Basic Z3Vlc3Q6Z3Vlc3Q=";
    let Ok(response) = ureq::get("http://127.0.0.1:15672/api/connections")
        .header("Authorization", auth)
        .call()
    else {
        panic!("management API not reachable");
    };
    let body = response.into_body().read_to_string().unwrap();
    let connections: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let ours: Vec<&str> = v.names.values().map(String::as_str).collect();
    let mut closed = 0;
    for c in &connections {
        let name = c["name"].as_str().unwrap_or_default();
        let given = c["client_properties"]["connection_name"]
            .as_str()
            .unwrap_or_default();
        let vhost = c["vhost"].as_str().unwrap_or_default();
        if given.starts_with("ozg-gateway") && ours.contains(&vhost) {
            let encoded: String = name
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            if ureq::delete(format!("http://127.0.0.1:15672/api/connections/{encoded}"))
                .header("Authorization", auth)
                .call()
                .is_ok()
            {
                closed += 1;
            }
        }
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_random_faults_loses_nothing() {
    let seconds: u64 = std::env::var("OZG_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("OZG_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("soak: {seconds} s, seed {seed} (OZG_SOAK_SEED={seed} repeats the faults)");
    let mut rng = Lcg(seed);

    let v = Vhosts::create("soak", &["gw", "he", "th"]);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[gateway]
dead_letter_broker = "gw"
store_dead_letters = false
confirm_timeout = "3s"
shutdown_grace = "10s"
data_dir = "{data}"
[retry]
delays = ["200ms", "1s"]
max_attempts = 10000
[brokers.gw]
url = "{gw}"
[brokers.he]
url = "{he}"
[brokers.th]
url = "{th}"
[[platforms]]
id = "civento-he"
land = "06"
broker = "he"
ingress_queue = "submissions"
status_exchange = "status"
prefetch = {PREFETCH}
[[platforms]]
id = "civento-th"
land = "16"
broker = "th"
ingress_queue = "submissions"
status_exchange = "status"
prefetch = {PREFETCH}
[[destinations]]
id = "he-darmstadt"
name = "Darmstadt"
kind = "kreisfreie-stadt"
land = "06"
broker = "he"
exchange = "backoffice"
routing_key = "he-darmstadt"
[[destinations]]
id = "th-erfurt"
name = "Erfurt"
kind = "kreisfreie-stadt"
land = "16"
broker = "th"
exchange = "backoffice"
routing_key = "th-erfurt"
[[routes]]
service = "*"
region = "06411"
destination = "he-darmstadt"
[[routes]]
service = "*"
region = "16051"
destination = "th-erfurt"
"#,
        data = dir.path().join("data").display(),
        gw = v.url("gw"),
        he = v.url("he"),
        th = v.url("th"),
    );
    let path = dir.path().join("soak.toml");
    std::fs::write(&path, &text).unwrap();
    let config_path = path.to_str().unwrap().to_owned();
    let config = ozg_gateway::Config::load(&path).unwrap();
    declare(&config).await;
    let mut gateway = spawn_gateway(&config_path);

    // Publisher: both platforms, both destinations, about 200 submissions a second.
    let published: Arc<Mutex<HashMap<String, &'static str>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let publisher = {
        let published = published.clone();
        let stop = stop.clone();
        let (he_url, th_url) = (v.url("he"), v.url("th"));
        tokio::spawn(async move {
            let he = connect(&he_url).await;
            let th = connect(&th_url).await;
            let (he_ch, th_ch) = (confirm_channel(&he).await, confirm_channel(&th).await);
            let mut i = 0u64;
            while !stop.is_cancelled() {
                let (platform, land, channel) = if i % 2 == 0 {
                    ("civento-he", "06", &he_ch)
                } else {
                    ("civento-th", "16", &th_ch)
                };
                let (region, to) = if i % 3 == 0 {
                    ("160510000000", "th-erfurt")
                } else {
                    ("064110000000", "he-darmstadt")
                };
                let s = sample_submission(platform, land, "99115005104000", region, 1024);
                submit(channel, &s, Encoding::Protobuf).await;
                published.lock().unwrap().insert(s.submission_id, to);
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let started = Instant::now();
    let mut faults: HashMap<&str, usize> = HashMap::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(1500 + rng.next(2500))).await;
        match rng.next(4) {
            0 => {
                close_gateway_connections(&v);
                *faults.entry("connections closed").or_default() += 1;
            }
            1 => {
                let th = connect(&v.url("th")).await;
                let ch = th.create_channel().await.unwrap();
                ch.exchange_delete("backoffice".into(), Default::default())
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(1500)).await;
                declare(&config).await;
                *faults.entry("exchange deleted and recreated").or_default() += 1;
            }
            2 => {
                signal(&gateway, "-KILL");
                wait_exit(&mut gateway, Duration::from_secs(10)).expect("SIGKILL ends the gateway");
                gateway = spawn_gateway(&config_path);
                *faults.entry("SIGKILL and restart").or_default() += 1;
            }
            _ => {
                signal(&gateway, "-TERM");
                let status = wait_exit(&mut gateway, Duration::from_secs(20))
                    .expect("SIGTERM ends the gateway");
                assert!(status.success(), "exit after SIGTERM: {status:?}");
                gateway = spawn_gateway(&config_path);
                *faults.entry("SIGTERM and restart").or_default() += 1;
            }
        }
    }
    stop.cancel();
    publisher.await.unwrap();
    let published = published.lock().unwrap().clone();

    // Drain: everything published must come out somewhere.
    let mut counts: HashMap<String, usize> = HashMap::new();
    let (he, th, gw) = (
        connect(&v.url("he")).await,
        connect(&v.url("th")).await,
        connect(&v.url("gw")).await,
    );
    let (he_r, th_r, gw_r) = (
        he.create_channel().await.unwrap(),
        th.create_channel().await.unwrap(),
        gw.create_channel().await.unwrap(),
    );
    // What reached the two back offices, waiting `quiet` for more at Darmstadt's.
    let delivered = async |quiet: Duration| {
        let mut got = drain(&he_r, &backoffice_queue("he-darmstadt"), quiet).await;
        let erfurt = backoffice_queue("th-erfurt");
        got.extend(drain(&th_r, &erfurt, Duration::from_millis(300)).await);
        got
    };
    let mut dead_lettered = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        for m in delivered(Duration::from_millis(300)).await {
            *counts.entry(m.message_id().unwrap()).or_default() += 1;
        }
        let dead = drain(
            &gw_r,
            "ozg.gateway.dead-letters",
            Duration::from_millis(100),
        )
        .await;
        dead_lettered += dead.len();
        for m in dead {
            *counts
                .entry(m.header("x-ozg-submission-id").unwrap_or_default())
                .or_default() += 1;
        }
        if published.keys().all(|id| counts.contains_key(id)) || Instant::now() > deadline {
            break;
        }
    }
    // Late duplicates would show up now.
    for m in delivered(Duration::from_secs(2)).await {
        *counts.entry(m.message_id().unwrap()).or_default() += 1;
    }
    signal(&gateway, "-TERM");
    let status = wait_exit(&mut gateway, Duration::from_secs(20));

    let lost = published
        .keys()
        .filter(|id| !counts.contains_key(*id))
        .count();
    let duplicated: usize = counts.values().map(|c| c.saturating_sub(1)).sum();
    let unexpected = counts
        .keys()
        .filter(|id| !published.contains_key(*id))
        .count();
    let crashes = faults.get("SIGKILL and restart").copied().unwrap_or(0)
        + faults.get("connections closed").copied().unwrap_or(0);
    println!("soak faults: {faults:?}");
    println!(
        "soak: published={} delivered={} dead-lettered={dead_lettered} lost={lost} duplicated={duplicated} unexpected={unexpected} in {:?}",
        published.len(),
        counts.len() - dead_lettered.min(counts.len()),
        started.elapsed()
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "the gateway stops cleanly at the end"
    );
    assert_eq!(lost, 0);
    assert_eq!(unexpected, 0);
    assert_eq!(
        dead_lettered, 0,
        "no good submission is dead-lettered by a fault"
    );
    // Duplicates come only from submissions in flight when the gateway was killed or its
    // connections were cut.
    assert!(
        duplicated <= 2 * PREFETCH * crashes,
        "duplicates beyond what was in flight: {duplicated}"
    );
}
