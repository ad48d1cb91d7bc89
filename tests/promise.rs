//! The delivery promise under faults a platform, a broker and an operator really cause,
//! each reproduced from outside with a real broker and counted the way a user would:
//! published, delivered, dead-lettered, lost, duplicated.
//!
//! - A long destination outage (its exchange deleted: thousands of failed publishes, each
//!   channel closed by the broker) followed by the exchange's return: the retry backlog
//!   drains by itself, exactly once, while the other destination on the same broker
//!   connection and the platform's status events keep flowing.
//! - SIGTERM to the real binary in the middle of a backlog, then a restart: no submission
//!   settled twice (delivery, dead letter, status event), none lost.
//! - Messages whose headers do not fit a frame, mixed into a platform's queue: the good
//!   ones delivered, each bad one dead-lettered once with its reason, the consuming
//!   connection never dropped, another Land unaffected.
//! - Without OTLP and without a platform's traceparent, every message about one submission
//!   (delivery, status event, dead letter, retry) carries the same trace id.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::sample;
use ozg_gateway::topology::status_queue;

const MELDE: &str = "99115005104000";
const PROTOBUF: &str = "application/x-protobuf";

/// A valid submission of civento-he for `region`: (id, protobuf body).
fn submission(region: &str) -> (String, Vec<u8>) {
    let s = sample_submission("civento-he", "06", MELDE, region, 512);
    (
        s.submission_id.clone(),
        sample::encode(&s, Encoding::Protobuf),
    )
}

/// Every value of `ozg_messages_total` with these label values, summed.
fn messages_total(metrics: &str, destination: &str, outcome: &str) -> u64 {
    let metrics = ureq::get(format!("http://{metrics}/metrics"))
        .call()
        .expect("GET /metrics")
        .body_mut()
        .read_to_string()
        .unwrap();
    metrics
        .lines()
        .filter(|l| l.starts_with("ozg_messages_total{"))
        .filter(|l| l.contains(&format!("destination=\"{destination}\"")))
        .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

/// The gateway's connections to `vhost` as the broker lists them: (client-given name, the
/// broker's name for it, which tells a reconnected connection by its new client port).
fn gateway_connections(vhost: &str) -> Vec<(String, String)> {
    let body = ureq::get(format!(
        "{MANAGEMENT}/vhosts/{vhost}/connections?columns=user_provided_name,name"
    ))
    .header("Authorization", AUTH)
    .call()
    .expect("GET /api/vhosts/…/connections")
    .body_mut()
    .read_to_string()
    .unwrap();
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let mut connections: Vec<(String, String)> = list
        .iter()
        .filter_map(|c| {
            let given = c["user_provided_name"].as_str()?;
            let name = c["name"].as_str()?;
            given
                .starts_with("ozg-gateway")
                .then(|| (given.to_owned(), name.to_owned()))
        })
        .collect();
    connections.sort();
    connections
}

/// The gateway's connections to `vhost` once the broker lists exactly these roles (the
/// management API lists a new connection a moment after it opens), or whatever it lists
/// after ten seconds.
async fn gateway_connections_with_roles(vhost: &str, roles: &[&str]) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let vhost_owned = vhost.to_owned();
        let connections = tokio::task::spawn_blocking(move || gateway_connections(&vhost_owned))
            .await
            .unwrap();
        let listed: Vec<&str> = connections
            .iter()
            .map(|(given, _)| given.as_str())
            .collect();
        if listed == roles || Instant::now() > deadline {
            return connections;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Counts by id: how often each was seen.
fn counts<'a>(ids: impl Iterator<Item = &'a str>) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for id in ids {
        *seen.entry(id.to_owned()).or_default() += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_destination_outage_drains_by_itself_once_the_exchange_is_back() {
    // Every failed publish is a channel the broker closes (404), and the gateway's channel
    // numbers run out after about twice as many such closes as the connection has numbers.
    // RabbitMQ offers 2047; the URL asks for 512, so that the thousands of failures of this
    // outage go round the numbers four times (as a longer one would with 2047) in seconds.
    const CHANNEL_MAX: u32 = 512;
    const FAILURES: u64 = 2_000;
    const WAITING: usize = 200;
    let started = Instant::now();
    let v = Vhosts::create("outage", &["gw", "he"]);
    let metrics = format!("127.0.0.1:{}", free_port());
    // Platform, both destinations and so the status events share one broker: one
    // publishing connection.
    let text = TestConfig::new(&v)
        .gateway(r#"confirm_timeout = "5s""#)
        .retry(r#"delays = ["10ms"]"#)
        .retry("max_attempts = 1000000")
        .telemetry(&format!("metrics_address = \"{metrics}\""))
        .platform("civento-he", "06", "he", Some(256))
        .healthy_and_ghost()
        .text();
    let he_url = v.url("he");
    let config = parse_config(&text.replace(
        &format!("\"{he_url}\""),
        &format!("\"{he_url}?channel_max={CHANNEL_MAX}\""),
    ));
    declare(&config).await;
    delete_exchange(&v.url("he"), "ghost-exchange").await;
    let he = connect(&v.url("he")).await;
    let gateway = RunningGateway::start(config.clone());

    let channel = confirm_channel(&he).await;
    let mut waiting = Vec::new();
    for _ in 0..WAITING {
        let (id, body) = submission("066110000000");
        publish(&channel, "submissions", &body, Some(PROTOBUF), None, None).await;
        waiting.push(id);
    }

    // Throughout the outage the healthy destination gets a submission every 20 ms; each
    // must arrive promptly.
    let outage_over = Arc::new(AtomicBool::new(false));
    let trickle = {
        let url = v.url("he");
        let outage_over = outage_over.clone();
        tokio::spawn(async move {
            let connection = connect(&url).await;
            let channel = confirm_channel(&connection).await;
            let read = connection.create_channel().await.unwrap();
            let mut sent = Vec::new();
            let mut slowest = Duration::ZERO;
            while !outage_over.load(Ordering::Relaxed) {
                let (id, body) = submission("064110000000");
                let at = Instant::now();
                publish(&channel, "submissions", &body, Some(PROTOBUF), None, None).await;
                let got = take_backoffice(&read, "healthy", 1, Duration::from_secs(10)).await;
                assert_eq!(
                    got.first().and_then(|m| m.message_id()).as_deref(),
                    Some(id.as_str()),
                    "a submission for the healthy destination did not arrive within 10 s \
                     during the other destination's outage ({} sent before it)",
                    sent.len()
                );
                slowest = slowest.max(at.elapsed());
                sent.push(id);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = connection.close(200, "done".into()).await;
            (sent, slowest)
        })
    };

    let deadline = Instant::now() + Duration::from_secs(40);
    let failures = loop {
        let failures = messages_total(&metrics, "ghost", "retrying");
        if failures >= FAILURES {
            break failures;
        }
        assert!(
            Instant::now() < deadline,
            "only {failures} failed deliveries to the missing exchange in 40 s"
        );
        assert!(!trickle.is_finished(), "{:?}", trickle.await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let outage = started.elapsed();
    outage_over.store(true, Ordering::Relaxed);
    let (healthy, slowest) = trickle.await.unwrap();

    // The exchange comes back: the waiting submissions arrive by themselves.
    declare(&config).await;
    let recreated = Instant::now();
    let read = he.create_channel().await.unwrap();
    let arrived = take_backoffice(&read, "ghost", WAITING, Duration::from_secs(15)).await;
    let drained_in = recreated.elapsed();
    let mut arrived: Vec<String> = arrived.iter().filter_map(|m| m.message_id()).collect();
    arrived.extend(
        drain_backoffice(&read, "ghost", Duration::from_millis(500))
            .await
            .iter()
            .filter_map(|m| m.message_id()),
    );
    let gw = connect(&v.url("gw")).await;
    let gw_read = gw.create_channel().await.unwrap();
    let dead = drain_dead_letters(&gw_read, Duration::from_millis(300)).await;
    let events = drain(
        &read,
        &status_queue("civento-he"),
        Duration::from_millis(500),
    )
    .await;
    let healthy_again = drain_backoffice(&read, "healthy", Duration::from_millis(100)).await;
    // Connections replaced on the way are closed once their last publish is done: the
    // broker shows the gateway's consuming and publishing connection on this vhost, no more.
    let connections = gateway_connections_with_roles(
        v.name("he"),
        &["ozg-gateway consume he", "ozg-gateway publish he"],
    )
    .await;
    gateway.stop().await;

    let delivered = counts(arrived.iter().map(String::as_str));
    let lost: Vec<&String> = waiting
        .iter()
        .filter(|id| !delivered.contains_key(*id))
        .collect();
    let duplicated: usize = delivered.values().map(|n| n - 1).sum::<usize>() + healthy_again.len();
    println!(
        "outage: {failures} failed deliveries in {outage:?}; healthy destination meanwhile: {} \
         delivered, slowest {slowest:?}; exchange back: {} of {WAITING} drained in {drained_in:?}",
        healthy.len(),
        delivered.len(),
    );
    println!(
        "outage: published={} delivered={} dead-lettered={} lost={} duplicated={}",
        WAITING + healthy.len(),
        delivered.len() + healthy.len(),
        dead.len(),
        lost.len(),
        duplicated
    );
    println!("outage: the gateway's connections to the broker afterwards: {connections:?}");
    assert!(lost.is_empty(), "not drained: {} of {WAITING}", lost.len());
    assert_eq!(duplicated, 0);
    assert!(dead.is_empty(), "dead-lettered: {}", dead.len());
    assert!(!healthy.is_empty());

    // The platform heard `forwarded` once for every submission, the retried ones included.
    let forwarded: Vec<String> = events
        .iter()
        .filter(|e| e.header("x-ozg-status").as_deref() == Some("forwarded"))
        .filter_map(|e| e.header("x-ozg-submission-id"))
        .collect();
    let forwarded = counts(forwarded.iter().map(String::as_str));
    assert_eq!(connections.len(), 2, "{connections:?}");
    let expected: HashSet<&String> = waiting.iter().chain(&healthy).collect();
    assert_eq!(
        events.len(),
        expected.len(),
        "one status event per submission"
    );
    for id in expected {
        assert_eq!(forwarded.get(id.as_str()), Some(&1), "forwarded once: {id}");
    }
}

/// What came out of the gateway for a set of submissions, counted by submission id.
#[derive(Debug, Default)]
struct Tally {
    delivered: HashMap<String, usize>,
    dead: HashMap<String, usize>,
    /// Status events by submission id, and by status word.
    events: HashMap<String, usize>,
    statuses: HashMap<String, usize>,
}

impl Tally {
    /// Takes everything off the back-office queue of `destination` (vhost `to`), the
    /// dead-letter queue (vhost `gw`) and the status queue of `platform` (vhost `from`).
    async fn collect(v: &Vhosts, from: &str, platform: &str, to: &str, destination: &str) -> Tally {
        let quiet = Duration::from_millis(500);
        let to = connect(&v.url(to)).await;
        let gw = connect(&v.url("gw")).await;
        let from = connect(&v.url(from)).await;
        let delivered =
            drain_backoffice(&to.create_channel().await.unwrap(), destination, quiet).await;
        let dead = drain_dead_letters(&gw.create_channel().await.unwrap(), quiet).await;
        let events = drain(
            &from.create_channel().await.unwrap(),
            &status_queue(platform),
            quiet,
        )
        .await;
        for c in [to, gw, from] {
            let _ = c.close(200, "counted".into()).await;
        }
        let id = |m: &Received| m.header("x-ozg-submission-id").or_else(|| m.message_id());
        let mut tally = Tally::default();
        for (messages, counts) in [
            (&delivered, &mut tally.delivered),
            (&dead, &mut tally.dead),
            (&events, &mut tally.events),
        ] {
            for m in messages {
                *counts.entry(id(m).unwrap_or_default()).or_default() += 1;
            }
        }
        for e in &events {
            *tally
                .statuses
                .entry(e.header("x-ozg-status").unwrap_or_default())
                .or_default() += 1;
        }
        tally
    }

    /// Checks that every good submission was delivered once, every bad one dead-lettered
    /// once, and each heard about once; prints the tally.
    fn check(&self, what: &str, good: &[String], bad: &[String]) {
        let published = good.len() + bad.len();
        let lost = good
            .iter()
            .filter(|id| !self.delivered.contains_key(*id))
            .count()
            + bad.iter().filter(|id| !self.dead.contains_key(*id)).count();
        let twice = |counts: &HashMap<String, usize>| -> usize {
            counts.values().map(|n| n.saturating_sub(1)).sum()
        };
        println!(
            "{what}: published={published} delivered={} dead-lettered={} lost={lost} \
             duplicated={} (back office {}, dead letters {}, status events {}; events {:?})",
            self.delivered.len(),
            self.dead.len(),
            twice(&self.delivered) + twice(&self.dead) + twice(&self.events),
            twice(&self.delivered),
            twice(&self.dead),
            twice(&self.events),
            self.statuses,
        );
        assert_eq!(lost, 0, "{what}: lost");
        let strangers = self
            .delivered
            .keys()
            .chain(self.dead.keys())
            .chain(self.events.keys())
            .filter(|id| !good.contains(id) && !bad.contains(id))
            .count();
        assert_eq!(
            strangers, 0,
            "{what}: messages about submissions nobody published"
        );
        assert_eq!(twice(&self.delivered), 0, "{what}: back-office duplicates");
        assert_eq!(twice(&self.dead), 0, "{what}: dead-lettered twice");
        assert_eq!(twice(&self.events), 0, "{what}: a second status event");
        assert!(
            bad.iter().all(|id| !self.delivered.contains_key(id)),
            "{what}: bad delivered"
        );
        assert!(
            good.iter().all(|id| !self.dead.contains_key(id)),
            "{what}: good dead-lettered"
        );
        assert_eq!(
            self.events.len(),
            published,
            "{what}: one status event each"
        );
    }
}

/// Waits until the back office and the dead-letter queue hold `n` messages between them.
async fn wait_settled(v: &Vhosts, to: &str, destination: &str, n: u32, timeout: Duration) -> u32 {
    let deadline = Instant::now() + timeout;
    loop {
        let settled = v
            .queue_depth(to, &ozg_gateway::topology::backoffice_queue(destination))
            .await
            + v.queue_depth("gw", DEAD_LETTERS).await;
        if settled >= n || Instant::now() > deadline {
            return settled;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_mid_drain_then_restart_settles_nothing_twice() {
    const BACKLOG: usize = 4_000;
    let started = Instant::now();
    let v = Vhosts::create("term", &["gw", "th", "he"]);
    let dir = tempfile::tempdir().unwrap();
    let text = TestConfig::new(&v)
        .gateway(r#"confirm_timeout = "5s""#)
        .gateway(r#"shutdown_grace = "10s""#)
        .store(&format!(
            "sqlite://{}",
            dir.path().join("store.db").display()
        ))
        .platform("civento-th", "16", "th", None)
        .destination("he-darmstadt", "06", "he", "Darmstadt")
        .route("*", "06411", "he-darmstadt")
        .text();
    declare(&parse_config(&text)).await;
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("gateway.log");

    // The backlog: every tenth submission has a service key that is not a LeiKa key.
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    {
        let th = connect(&v.url("th")).await;
        let channel = confirm_channel(&th).await;
        for i in 0..BACKLOG {
            let service = if i % 10 == 9 { "12345678901234" } else { MELDE };
            let s = sample_submission("civento-th", "16", service, "064110000000", 512);
            publish(
                &channel,
                "submissions",
                &sample::encode(&s, Encoding::Protobuf),
                Some(PROTOBUF),
                Some(&s.submission_id),
                None,
            )
            .await;
            if i % 10 == 9 { &mut bad } else { &mut good }.push(s.submission_id);
        }
        let _ = th.close(200, "done".into()).await;
    }

    let mut gateway = GatewayProcess::spawn(&config, &log);
    let before = wait_settled(&v, "he", "he-darmstadt", 1_000, Duration::from_secs(30)).await;
    assert!(
        before >= 1_000,
        "only {before} settled in 30 s: {}",
        log_tail(&log)
    );
    gateway.signal("-TERM");
    let stopping = Instant::now();
    let status = gateway.wait(Duration::from_secs(15)).await;
    let took = stopping.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?} after SIGTERM: {}",
        log_tail(&log)
    );
    let at_stop = wait_settled(&v, "he", "he-darmstadt", u32::MAX, Duration::ZERO).await;
    println!("SIGTERM after {before} settled: exit after {took:?}, {at_stop} settled by then");
    assert!(
        (at_stop as usize) < BACKLOG,
        "the backlog was drained before SIGTERM took effect: nothing tested"
    );

    let restarted = GatewayProcess::spawn(&config, &log);
    let after = wait_settled(
        &v,
        "he",
        "he-darmstadt",
        BACKLOG as u32,
        Duration::from_secs(40),
    )
    .await;
    // Anything settled twice would come after the rest.
    tokio::time::sleep(Duration::from_millis(500)).await;
    restarted.stop(&log).await;
    println!("restarted: {after} settled ({:?})", started.elapsed());
    let tally = Tally::collect(&v, "th", "civento-th", "he", "he-darmstadt").await;
    tally.check("sigterm + restart", &good, &bad);
    assert_eq!(tally.statuses.get("rejected"), Some(&bad.len()));
}

/// Publishes to `queue` through the management API, which has no frame size: this is how a
/// message whose headers no AMQP frame of the broker can hold gets into a queue (besides
/// other protocols and the broker's own dead-lettering). `body` is UTF-8 (JSON).
fn publish_over_http(
    vhost: &str,
    queue: &str,
    body: &str,
    message_id: &str,
    headers: &serde_json::Value,
) {
    let request = serde_json::json!({
        "properties": {
            "delivery_mode": 2,
            "content_type": "application/json",
            "message_id": message_id,
            "headers": headers,
        },
        "routing_key": queue,
        "payload": body,
        "payload_encoding": "string",
    });
    let vhost = vhost.replace('/', "%2F");
    let answer = ureq::post(format!(
        "{MANAGEMENT}/exchanges/{vhost}/amq.default/publish"
    ))
    .header("Authorization", AUTH)
    .header("Content-Type", "application/json")
    .send(request.to_string())
    .expect("POST …/publish")
    .body_mut()
    .read_to_string()
    .unwrap();
    assert!(answer.contains("\"routed\":true"), "{answer}");
}

/// Headers of `n` entries of `value_len` bytes each, as the management API takes them.
fn json_headers(n: usize, value_len: usize) -> serde_json::Value {
    let value = "v".repeat(value_len);
    serde_json::Value::Object(
        (0..n)
            .map(|i| (format!("h{i:04}"), serde_json::Value::String(value.clone())))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_whose_headers_do_not_fit_a_frame_never_stop_a_queue() {
    let started = Instant::now();
    let v = Vhosts::create("frames", &["gw", "th", "by", "he"]);
    let config = TestConfig::new(&v)
        .gateway(r#"confirm_timeout = "5s""#)
        .platform("civento-th", "16", "th", Some(64))
        .platform("civento-by", "09", "by", Some(64))
        .destination("he-darmstadt", "06", "he", "Darmstadt")
        .route("*", "06411", "he-darmstadt")
        .build();
    let gateway = start_gateway(config).await;

    // Thüringen's queue: good submissions, among them some with one 9 KB header or 2,500
    // small ones (more than 8 KiB frames hold); some whose headers (200 KB) no frame of the
    // broker holds; and invalid ones with a 9 KB header, whose dead letter cannot keep them.
    let th = v.name("th").to_owned();
    let submissions = tokio::task::spawn_blocking(move || {
        let (mut good, mut beyond, mut invalid) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..360 {
            let service = if i % 36 == 35 {
                "12345678901234"
            } else {
                MELDE
            };
            let s = sample_submission("civento-th", "16", service, "064110000000", 512);
            let body = String::from_utf8(sample::encode(&s, Encoding::Json)).unwrap();
            let headers = match i % 36 {
                0..=1 => json_headers(1, 9_000),
                2..=3 => json_headers(2_500, 1),
                4 => json_headers(20, 10_000),
                35 => json_headers(1, 9_000),
                _ => json_headers(2, 16),
            };
            publish_over_http(&th, "submissions", &body, &s.submission_id, &headers);
            match i % 36 {
                4 => beyond.push(s.submission_id),
                35 => invalid.push(s.submission_id),
                _ => good.push(s.submission_id),
            }
        }
        (good, beyond, invalid)
    });
    // Bavaria's platform meanwhile.
    let mut bavarian = Vec::new();
    {
        let by = connect(&v.url("by")).await;
        let channel = confirm_channel(&by).await;
        for _ in 0..300 {
            let s = sample_submission("civento-by", "09", MELDE, "064110000000", 512);
            submit(&channel, &s, Encoding::Protobuf).await;
            bavarian.push(s.submission_id);
        }
        let _ = by.close(200, "done".into()).await;
    }
    let (good, beyond, invalid) = submissions.await.unwrap();
    let th_roles = ["ozg-gateway consume th", "ozg-gateway publish th"];
    let th_connections = gateway_connections_with_roles(v.name("th"), &th_roles).await;

    let expected = (good.len() + bavarian.len() + beyond.len() + invalid.len()) as u32;
    let settled = wait_settled(&v, "he", "he-darmstadt", expected, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let th_connections_after = gateway_connections_with_roles(v.name("th"), &th_roles).await;
    let ingress_left = v.queue_depth("th", "submissions").await;

    // Every message taken by id: delivered, dead-lettered with its reason, events per platform.
    let he = connect(&v.url("he")).await;
    let gw = connect(&v.url("gw")).await;
    let delivered = drain_backoffice(
        &he.create_channel().await.unwrap(),
        "he-darmstadt",
        Duration::from_millis(300),
    )
    .await;
    let dead = drain_dead_letters(
        &gw.create_channel().await.unwrap(),
        Duration::from_millis(300),
    )
    .await;
    gateway.stop().await;
    let delivered_ids = counts(
        delivered
            .iter()
            .filter_map(|m| m.message_id())
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    );
    let dead_ids: Vec<String> = dead
        .iter()
        .filter_map(|m| m.header("x-ozg-submission-id"))
        .collect();
    let dead_counts = counts(dead_ids.iter().map(String::as_str));
    let published = good.len() + bavarian.len() + beyond.len() + invalid.len();
    let lost = good
        .iter()
        .chain(&bavarian)
        .filter(|id| !delivered_ids.contains_key(*id))
        .count()
        + beyond
            .iter()
            .chain(&invalid)
            .filter(|id| !dead_counts.contains_key(*id))
            .count();
    let duplicated: usize = delivered_ids
        .values()
        .chain(dead_counts.values())
        .map(|n| n - 1)
        .sum();
    println!(
        "frames: published={published} delivered={} dead-lettered={} lost={lost} duplicated={duplicated} \
         (settled {settled} in {:?}; Thüringen's gateway connections before {:?}, after {:?})",
        delivered_ids.len(),
        dead_counts.len(),
        started.elapsed(),
        th_connections,
        th_connections_after,
    );
    assert_eq!(lost, 0);
    assert_eq!(duplicated, 0);
    assert_eq!(ingress_left, 0, "Thüringen's queue is drained");
    assert_eq!(delivered_ids.len(), good.len() + bavarian.len());
    // The consuming connection was never dropped: the same one, all along.
    let listed: Vec<&str> = th_connections
        .iter()
        .map(|(given, _)| given.as_str())
        .collect();
    assert_eq!(
        listed, th_roles,
        "the broker lists the gateway's connections"
    );
    assert_eq!(th_connections, th_connections_after);
    for m in &dead {
        let id = m.header("x-ozg-submission-id").unwrap();
        let reason = m.header("x-ozg-reason").unwrap();
        let detail = m.header("x-ozg-detail").unwrap();
        assert!(
            m.header("h0000").is_none(),
            "a dead letter with the message's own big headers"
        );
        assert!(
            m.header("x-ozg-headers-left-out").is_none(),
            "the guard's marker"
        );
        if beyond.contains(&id) {
            assert_eq!(reason, "headers-too-large", "{detail}");
            assert!(detail.contains("do not fit the frame size"), "{detail}");
            assert_eq!(
                m.header("x-ozg-origin-platform").as_deref(),
                Some("civento-th")
            );
        } else {
            assert!(
                invalid.contains(&id),
                "{id} dead-lettered: {reason} {detail}"
            );
            assert_eq!(reason, "invalid-service-key");
            assert!(
                detail.contains("are left out of this dead letter"),
                "{detail}"
            );
        }
    }
}

/// The trace id of a message's W3C `traceparent`.
fn trace_id(m: &Received) -> String {
    let traceparent = m
        .header("traceparent")
        .unwrap_or_else(|| panic!("no traceparent on {:?}", m.properties.headers()));
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {traceparent:?}");
    assert_ne!(parts[1], "0".repeat(32));
    parts[1].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_about_one_submission_carries_its_trace_id() {
    // No OpenTelemetry layer in this test binary (no OTLP), and the platform sends no
    // traceparent: the gateway starts each submission's trace itself.
    let v = Vhosts::create("traces", &["gw", "he"]);
    let config = TestConfig::new(&v)
        .gateway(r#"confirm_timeout = "5s""#)
        .retry(r#"delays = ["1s"]"#)
        .retry("max_attempts = 2")
        .platform("civento-he", "06", "he", None)
        .healthy_and_ghost()
        .build();
    declare(&config).await;
    delete_exchange(&v.url("he"), "ghost-exchange").await;
    let gateway = RunningGateway::start(config);
    let he = connect(&v.url("he")).await;
    let channel = confirm_channel(&he).await;
    let delivered = sample_submission("civento-he", "06", MELDE, "064110000000", 512);
    let invalid = sample_submission("civento-he", "06", "12345678901234", "064110000000", 512);
    let retried = sample_submission("civento-he", "06", MELDE, "066110000000", 512);
    for s in [&delivered, &invalid, &retried] {
        submit(&channel, s, Encoding::Protobuf).await;
    }

    let read = he.create_channel().await.unwrap();
    let gw = connect(&v.url("gw")).await;
    let gw_read = gw.create_channel().await.unwrap();
    // The retry waits a second in its delay queue: look at it there and put it back.
    let waiting = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = gw_read
                .basic_get(
                    "ozg.gateway.retry.wait-1000ms".into(),
                    lapin::options::BasicGetOptions::default(),
                )
                .await
                .unwrap();
            if let Some(m) = got {
                let delivery = m.delivery;
                let seen = Received {
                    properties: delivery.properties.clone(),
                    body: delivery.data.clone(),
                    redelivered: delivery.redelivered,
                };
                delivery
                    .acker
                    .nack(lapin::options::BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                break seen;
            }
            assert!(Instant::now() < deadline, "no retry in its delay queue");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let backoffice = take_backoffice(&read, "healthy", 1, Duration::from_secs(10)).await;
    let dead = take_dead_letters(&gw_read, 2, Duration::from_secs(15)).await;
    let events = take_status(&read, "civento-he", 3, Duration::from_secs(10)).await;
    gateway.stop().await;

    assert_eq!(backoffice.len(), 1);
    assert_eq!(dead.len(), 2);
    assert_eq!(events.len(), 3);
    let event = |id: &str| {
        events
            .iter()
            .find(|e| e.header("x-ozg-submission-id").as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no status event for {id}"))
    };
    let dead_letter = |id: &str| {
        dead.iter()
            .find(|m| m.header("x-ozg-submission-id").as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no dead letter for {id}"))
    };
    let delivered_trace = trace_id(&backoffice[0]);
    assert_eq!(
        trace_id(event(&delivered.submission_id)),
        delivered_trace,
        "delivery and forwarded event"
    );
    let invalid_trace = trace_id(dead_letter(&invalid.submission_id));
    assert_eq!(
        trace_id(event(&invalid.submission_id)),
        invalid_trace,
        "dead letter and rejected event"
    );
    let retried_trace = trace_id(&waiting);
    assert_eq!(
        waiting.header("x-ozg-submission-id").as_deref(),
        Some(retried.submission_id.as_str())
    );
    assert_eq!(
        trace_id(dead_letter(&retried.submission_id)),
        retried_trace,
        "retry and the dead letter after the last attempt"
    );
    assert_eq!(
        trace_id(event(&retried.submission_id)),
        retried_trace,
        "retry and rejected event"
    );
    let distinct: HashSet<&String> = [&delivered_trace, &invalid_trace, &retried_trace].into();
    assert_eq!(distinct.len(), 3, "one trace per submission");
    println!(
        "traces: delivered {delivered_trace}, dead-lettered {invalid_trace}, retried then dead-lettered {retried_trace}"
    );
}
