#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Faults under load against a real RabbitMQ: the gateway's connections closed by the broker,
//! the process killed (SIGKILL) or stopped (SIGTERM) mid-stream and restarted, poison messages
//! mixed with good ones. Every test counts by message id (= submission id) at the back-office
//! queue and the dead-letter queue, prints a tally and asserts that nothing is lost.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::sample;
use ozg_gateway::topology::backoffice_queue;

const MELDE: &str = "99115005104000";
const PROTOBUF: &str = "application/x-protobuf";
const DESTINATION: &str = "he-darmstadt";
const PREFETCH: u16 = 50;

/// Thüringen's platform (vhost `th`) submits for Darmstadt (vhost `he`); dead letters on `gw`.
fn config(v: &Vhosts) -> TestConfig {
    TestConfig::new(v)
        .gateway(r#"confirm_timeout = "5s""#)
        .gateway(r#"shutdown_grace = "10s""#)
        .gateway("max_message_bytes = 65536")
        .platform("civento-th", "16", "th", Some(PREFETCH))
        .destination(DESTINATION, "06", "he", "Darmstadt")
        .route("*", "06411", DESTINATION)
}

/// A good submission: (id, protobuf body).
fn good() -> (String, Vec<u8>) {
    let s = sample_submission("civento-th", "16", MELDE, "064110000000", 512);
    (
        s.submission_id.clone(),
        sample::encode(&s, Encoding::Protobuf),
    )
}

/// (id, body, content type) of poison message number `i`, of four kinds in turn.
fn poison(i: usize) -> (String, Vec<u8>, Option<&'static str>) {
    let (id, body) = good();
    match i % 4 {
        0 => (id, b"\xff\xff\xff\xff\x0fgarbage".to_vec(), Some(PROTOBUF)),
        1 => (id, body, Some("text/plain")),
        2 => {
            let mut s =
                sample_submission("civento-th", "16", "12345678901234", "064110000000", 512);
            s.submission_id = id.clone();
            (id, sample::encode(&s, Encoding::Protobuf), Some(PROTOBUF))
        }
        _ => {
            let mut s = sample_submission("civento-th", "16", MELDE, "0641100000", 512);
            s.submission_id = id.clone();
            (
                id,
                sample::encode(&s, Encoding::Json),
                Some("application/json"),
            )
        }
    }
}

type Message = (String, Vec<u8>, Option<&'static str>);

/// Publishes the messages to Thüringen's ingress queue from a task, as the platform would
/// (persistent, confirmed, message id = submission id).
fn publish_in_background(v: &Vhosts, messages: Vec<Message>) -> tokio::task::JoinHandle<()> {
    let url = v.url("th");
    tokio::spawn(async move {
        let connection = connect(&url).await;
        let channel = confirm_channel(&connection).await;
        for (id, body, content_type) in &messages {
            publish(&channel, "submissions", body, *content_type, Some(id), None).await;
        }
        let _ = connection.close(200, "done".into()).await;
    })
}

fn goods(n: usize) -> Vec<Message> {
    (0..n)
        .map(|_| {
            let (id, body) = good();
            (id, body, Some(PROTOBUF))
        })
        .collect()
}

/// Waits until the back-office queue holds at least `n` messages.
async fn wait_for_arrivals(v: &Vhosts, n: u32, timeout: Duration) -> u32 {
    let deadline = Instant::now() + timeout;
    loop {
        let depth = v.queue_depth("he", &backoffice_queue(DESTINATION)).await;
        if depth >= n {
            return depth;
        }
        assert!(
            Instant::now() < deadline,
            "only {depth} of {n} submissions arrived within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Debug, Default)]
struct Tally {
    published: usize,
    delivered: HashMap<String, usize>,
    dead: HashMap<String, usize>,
    lost: Vec<String>,
    duplicated: usize,
    /// Dead letters by `x-ozg-reason`.
    reasons: HashMap<String, usize>,
}

impl Tally {
    fn line(&self) -> String {
        format!(
            "published={} delivered={} dead-lettered={} lost={} duplicated={}",
            self.published,
            self.delivered.len(),
            self.dead.len(),
            self.lost.len(),
            self.duplicated
        )
    }

    /// Submissions that reached the back office and were also dead-lettered (the platform
    /// got both a `forwarded` and a `rejected` event for them).
    fn delivered_and_dead(&self) -> usize {
        self.dead
            .keys()
            .filter(|id| self.delivered.contains_key(*id))
            .count()
    }
}

/// Takes everything off the back-office and dead-letter queues until every published id is
/// accounted for and nothing more came for `quiet` (or `timeout` passed), and counts.
async fn collect(v: &Vhosts, published: &[String], quiet: Duration, timeout: Duration) -> Tally {
    let he = connect(&v.url("he")).await;
    let he_read = he.create_channel().await.unwrap();
    let gw = connect(&v.url("gw")).await;
    let gw_read = gw.create_channel().await.unwrap();
    let wanted: HashSet<&String> = published.iter().collect();
    let mut tally = Tally {
        published: published.len(),
        ..Tally::default()
    };
    let started = Instant::now();
    let mut last_new = Instant::now();
    loop {
        let delivered = take_backoffice(
            &he_read,
            DESTINATION,
            usize::MAX,
            Duration::from_millis(150),
        )
        .await;
        let dead = take_dead_letters(&gw_read, usize::MAX, Duration::from_millis(150)).await;
        for m in &dead {
            let reason = m.header("x-ozg-reason").unwrap_or_default();
            *tally.reasons.entry(reason).or_default() += 1;
        }
        if !delivered.is_empty() || !dead.is_empty() {
            last_new = Instant::now();
        }
        for (messages, counts) in [(delivered, &mut tally.delivered), (dead, &mut tally.dead)] {
            for m in messages {
                let id = m
                    .message_id()
                    .or_else(|| m.header("x-ozg-submission-id"))
                    .unwrap_or_else(|| "<no id>".to_owned());
                *counts.entry(id).or_default() += 1;
            }
        }
        let accounted = wanted
            .iter()
            .all(|id| tally.delivered.contains_key(*id) || tally.dead.contains_key(*id));
        if (accounted && last_new.elapsed() >= quiet) || started.elapsed() > timeout {
            break;
        }
    }
    let _ = he.close(200, "done".into()).await;
    let _ = gw.close(200, "done".into()).await;
    tally.lost = published
        .iter()
        .filter(|id| !tally.delivered.contains_key(*id) && !tally.dead.contains_key(*id))
        .cloned()
        .collect();
    let mut all: HashMap<&String, usize> = HashMap::new();
    for (id, n) in tally.delivered.iter().chain(tally.dead.iter()) {
        *all.entry(id).or_default() += n;
    }
    tally.duplicated = all.values().map(|n| n - 1).sum();
    let strangers: Vec<_> = all.keys().filter(|id| !wanted.contains(**id)).collect();
    assert!(
        strangers.is_empty(),
        "messages nobody published: {strangers:?}"
    );
    tally
}

fn ids(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|(id, _, _)| id.clone()).collect()
}

// ---- the broker's management API -------------------------------------------------------

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Closes every gateway connection (client-provided name "ozg-gateway …") on this test's
/// vhosts, as an operator or a broker failover would; returns how many were closed.
fn close_gateway_connections(vhosts: &[String]) -> usize {
    let ours: HashSet<&str> = vhosts.iter().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = ureq::get(format!(
            "{MANAGEMENT}/connections?columns=name,vhost,user_provided_name"
        ))
        .header("Authorization", AUTH)
        .call()
        .expect("GET /api/connections")
        .body_mut()
        .read_to_string()
        .unwrap();
        let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        let targets: Vec<String> = list
            .iter()
            .filter(|c| {
                c["vhost"].as_str().is_some_and(|vh| ours.contains(vh))
                    && c["user_provided_name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("ozg-gateway"))
            })
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect();
        // consume th, publish th, publish he, publish gw
        if targets.len() >= 4 || (Instant::now() > deadline && !targets.is_empty()) {
            for name in &targets {
                let _ = ureq::delete(format!("{MANAGEMENT}/connections/{}", percent_encode(name)))
                    .header("Authorization", AUTH)
                    .header("X-Reason", "fault test: connection closed")
                    .call();
            }
            return targets.len();
        }
        assert!(
            Instant::now() < deadline,
            "no gateway connection on this test's vhosts: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A test of the binary under load: its vhosts, its configuration file and log, and 2000
/// good submissions being published in the background.
struct BinaryUnderLoad {
    started: Instant,
    v: Vhosts,
    _dir: tempfile::TempDir,
    config: PathBuf,
    log: PathBuf,
    published: Vec<String>,
    publisher: tokio::task::JoinHandle<()>,
}

impl BinaryUnderLoad {
    /// Declares the topology, starts the binary, publishes in the background and waits until
    /// 300 submissions have arrived (returned: the gateway and the back-office depth).
    async fn start(test: &str) -> (BinaryUnderLoad, GatewayProcess, u32) {
        let started = Instant::now();
        let v = Vhosts::create(test, &["gw", "th", "he"]);
        let dir = tempfile::tempdir().unwrap();
        // A store of its own: tests run side by side, and an SQLite store takes one gateway.
        let store = format!("sqlite://{}/data/gw.db", dir.path().display());
        let text = config(&v).store(&store).text();
        declare(&parse_config(&text)).await;
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, text).unwrap();
        let log = dir.path().join("gateway.log");
        let gateway = GatewayProcess::spawn(&config, &log);

        let messages = goods(2000);
        let published = ids(&messages);
        let publisher = publish_in_background(&v, messages);
        let depth = wait_for_arrivals(&v, 300, Duration::from_secs(30)).await;
        let load = BinaryUnderLoad {
            started,
            v,
            _dir: dir,
            config,
            log,
            published,
            publisher,
        };
        (load, gateway, depth)
    }

    /// Once the publisher is done, starts the binary again, counts until every published id
    /// is accounted for, prints the tally, stops the binary cleanly and asserts that nothing
    /// was lost.
    async fn restart_and_collect(self, what: &str) -> Tally {
        self.publisher.await.unwrap();
        let restarted = GatewayProcess::spawn(&self.config, &self.log);
        let tally = collect(
            &self.v,
            &self.published,
            Duration::from_secs(2),
            Duration::from_secs(40),
        )
        .await;
        println!("{what}: {} ({:?})", tally.line(), self.started.elapsed());
        restarted.stop(&self.log).await;
        assert!(
            tally.lost.is_empty(),
            "lost: {:?}\n{}",
            &tally.lost[..tally.lost.len().min(10)],
            log_tail(&self.log)
        );
        tally
    }
}

// ---- the tests --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_all_gateway_connections_under_load_loses_nothing() {
    let started = Instant::now();
    let v = Vhosts::create("close", &["gw", "th", "he"]);
    let gateway = start_gateway(config(&v).build()).await;

    let messages = goods(2000);
    let published = ids(&messages);
    let publisher = publish_in_background(&v, messages);

    let mut closes = 0;
    for arrived in [300, 900] {
        let depth = wait_for_arrivals(&v, arrived, Duration::from_secs(30)).await;
        let vhosts: Vec<String> = v.names.values().cloned().collect();
        let closed = tokio::task::spawn_blocking(move || close_gateway_connections(&vhosts))
            .await
            .unwrap();
        println!("closed {closed} gateway connections after {depth} arrivals");
        closes += 1;
    }
    publisher.await.unwrap();

    let tally = collect(
        &v,
        &published,
        Duration::from_secs(2),
        Duration::from_secs(40),
    )
    .await;
    println!(
        "closing connections: {} ({:?})",
        tally.line(),
        started.elapsed()
    );
    println!(
        "closing connections: dead-letter reasons {:?}, delivered and also dead-lettered: {}",
        tally.reasons,
        tally.delivered_and_dead()
    );
    // A connection blip is not a reason to give up on a submission: it goes back to its
    // queue and is delivered after the reconnect, never dead-lettered.
    assert_eq!(
        tally.delivered_and_dead(),
        0,
        "a good submission was dead-lettered during a reconnect: {:?}",
        tally.reasons
    );
    assert!(
        gateway.is_running(),
        "the gateway stopped after its connections were closed"
    );
    gateway.stop().await;
    assert!(
        tally.lost.is_empty(),
        "lost: {:?}",
        &tally.lost[..tally.lost.len().min(10)]
    );
    assert!(
        tally.duplicated <= usize::from(PREFETCH) * closes,
        "{} duplicates for {closes} closes with prefetch {PREFETCH}",
        tally.duplicated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_then_restart_drains_everything() {
    let (load, gateway, depth) = BinaryUnderLoad::start("kill").await;
    gateway.signal("-KILL");
    drop(gateway);
    println!("SIGKILL after {depth} arrivals");

    let tally = load.restart_and_collect("sigkill + restart").await;
    assert!(
        tally.duplicated <= usize::from(PREFETCH),
        "{} duplicates after one SIGKILL with prefetch {PREFETCH}",
        tally.duplicated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_drains_cleanly_without_duplicates() {
    let (load, mut gateway, depth) = BinaryUnderLoad::start("term").await;
    gateway.signal("-TERM");
    let stopping = Instant::now();
    // Grace period 10 s (configuration), plus start-up slack.
    let status = gateway.wait(Duration::from_secs(15)).await;
    println!(
        "SIGTERM after {depth} arrivals: exit {status:?} after {:?}",
        stopping.elapsed()
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "gateway exit {status:?} after SIGTERM: {}",
        log_tail(&load.log)
    );
    drop(gateway);

    let tally = load.restart_and_collect("sigterm + restart").await;
    assert_eq!(tally.duplicated, 0, "a clean stop duplicates nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_messages_mixed_with_good_ones() {
    let started = Instant::now();
    let v = Vhosts::create("poison", &["gw", "th", "he"]);
    let gateway = start_gateway(config(&v).build()).await;

    let mut messages = goods(1000);
    let good_ids: HashSet<String> = ids(&messages).into_iter().collect();
    let mut poison_ids = HashSet::new();
    for i in 0..100 {
        let p = poison(i);
        poison_ids.insert(p.0.clone());
        // One poison message after every tenth good one.
        messages.insert(i * 11 + 5, p);
    }
    let published = ids(&messages);
    publish_in_background(&v, messages).await.unwrap();

    // Everything settled, then a quiet period: the dead-letter queue must hold exactly 100
    // (nothing dead-lettered twice, no redelivery loop).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dead = v.queue_depth("gw", DEAD_LETTERS).await;
        let delivered = v.queue_depth("he", &backoffice_queue(DESTINATION)).await;
        if dead >= 100 && delivered >= 1000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "settled only {delivered} delivered, {dead} dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dead_depth = v.queue_depth("gw", DEAD_LETTERS).await;
    let ingress_depth = v.queue_depth("th", "submissions").await;

    let tally = collect(
        &v,
        &published,
        Duration::from_millis(500),
        Duration::from_secs(20),
    )
    .await;
    println!(
        "poison: {} dead-letter queue after quiet period={dead_depth} ({:?})",
        tally.line(),
        started.elapsed()
    );
    assert!(gateway.is_running());
    gateway.stop().await;
    assert!(tally.lost.is_empty(), "lost: {:?}", tally.lost);
    assert_eq!(dead_depth, 100, "dead-letter queue after a quiet period");
    assert_eq!(ingress_depth, 0, "ingress queue after a quiet period");
    for id in &good_ids {
        assert_eq!(
            tally.delivered.get(id),
            Some(&1),
            "good {id} delivered once"
        );
        assert!(!tally.dead.contains_key(id), "good {id} dead-lettered");
    }
    for id in &poison_ids {
        assert_eq!(
            tally.dead.get(id),
            Some(&1),
            "poison {id} dead-lettered once"
        );
        assert!(!tally.delivered.contains_key(id), "poison {id} delivered");
    }
    assert_eq!(tally.duplicated, 0);
}
