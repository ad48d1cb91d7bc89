//! Deduplication end to end, with the embedded SQLite store and with PostgreSQL: a
//! submission id delivered once is not delivered again when it comes back (redelivered or
//! republished, in either encoding, across a restart); the same id with other content is
//! dead-lettered as a conflict.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use ozg_gateway::Config;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::sample;

fn config(v: &Vhosts, store_url: &str) -> Config {
    TestConfig::new(v)
        .gateway(r#"confirm_timeout = "5s""#)
        .store(store_url)
        .line(r#"dedup_window = "7d""#)
        .platform("civento-he", "06", "he", None)
        .destination("he-darmstadt", "06", "he", "Darmstadt")
        .route("*", "06", "he-darmstadt")
        .build()
}

async fn redelivered_and_republished_submissions_are_delivered_once(store_url: &str, label: &str) {
    let v = Vhosts::create(label, &["gw", "he"]);
    let config = config(&v, store_url);
    declare(&config).await;
    let he = connect(&v.url("he")).await;
    let channel = confirm_channel(&he).await;
    let read = he.create_channel().await.unwrap();
    let gw = connect(&v.url("gw")).await;
    let gw_read = gw.create_channel().await.unwrap();
    let s = sample_submission("civento-he", "06", "99115005104000", "064110000000", 1024);
    let proto = sample::encode(&s, Encoding::Protobuf);
    let json = sample::encode(&s, Encoding::Json);

    let gateway = RunningGateway::start(config.clone());
    submit_encoded(&channel, &proto, Encoding::Protobuf).await;
    let first = take_backoffice(&read, "he-darmstadt", 1, Duration::from_secs(20)).await;
    assert_eq!(first.len(), 1);
    // The platform republishes it, once as it was and once in the other encoding.
    submit_encoded(&channel, &proto, Encoding::Protobuf).await;
    submit_encoded(&channel, &json, Encoding::Json).await;
    // The same id with other content (another region): a conflict, not a delivery.
    let mut other = s.clone();
    other.region = "066110000000".into();
    publish(
        &channel,
        "submissions",
        &sample::encode(&other, Encoding::Json),
        Some("application/json"),
        Some("conflicting"),
        None,
    )
    .await;

    let dead = take_dead_letters(&gw_read, 1, Duration::from_secs(20)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id().as_deref(), Some("conflicting"));
    assert_eq!(dead[0].header("x-ozg-reason").as_deref(), Some("conflict"));
    assert_eq!(
        dead[0].header("x-ozg-field").as_deref(),
        Some("submission_id")
    );
    assert!(
        dead[0]
            .header("x-ozg-detail")
            .unwrap()
            .contains("delivered to he-darmstadt")
    );
    // Each of the four got a status event: three `forwarded` (the platform may have missed
    // the first), one `rejected`.
    let events = take_status(&read, "civento-he", 4, Duration::from_secs(20)).await;
    let words: Vec<String> = events
        .iter()
        .map(|e| e.header("x-ozg-status").unwrap())
        .collect();
    assert_eq!(
        words.iter().filter(|w| *w == "forwarded").count(),
        3,
        "{words:?}"
    );
    assert_eq!(
        words.iter().filter(|w| *w == "rejected").count(),
        1,
        "{words:?}"
    );
    gateway.stop().await;

    // After a restart on the same store, the id is still known.
    let gateway = RunningGateway::start(config);
    submit_encoded(&channel, &proto, Encoding::Protobuf).await;
    let events = take_status(&read, "civento-he", 1, Duration::from_secs(20)).await;
    assert_eq!(events.len(), 1, "the republished submission was handled");
    gateway.stop().await;

    let again = take_backoffice(&read, "he-darmstadt", 1, Duration::from_millis(500)).await;
    println!(
        "{label}: delivered=1 duplicates at the back office={}",
        again.len()
    );
    assert!(again.is_empty(), "a submission id is delivered once");
    assert_eq!(v.queue_depth("he", "submissions").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_delivers_each_submission_once() {
    let path = temp_store_path();
    redelivered_and_republished_submissions_are_delivered_once(
        &format!("sqlite://{path}"),
        "dedup-sqlite",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_delivers_each_submission_once() {
    let schema = PgSchema::create("dedup").await;
    redelivered_and_republished_submissions_are_delivered_once(&schema.url, "dedup-pg").await;
    schema.drop().await;
}

/// The same submission published several times back to back: the copies are taken off the
/// queue while the first is still waiting for its confirm, before it is recorded. Exactly
/// one reaches the back office.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_in_flight_at_the_same_time_are_delivered_once() {
    let v = Vhosts::create("dedup-race", &["gw", "he"]);
    let config = config(&v, &format!("sqlite://{}", temp_store_path()));
    declare(&config).await;
    let he = connect(&v.url("he")).await;
    let channel = confirm_channel(&he).await;
    let read = he.create_channel().await.unwrap();
    let mut ids = Vec::new();
    // Published before the gateway starts, so that all copies are handed out at once.
    for _ in 0..20 {
        let s = sample_submission("civento-he", "06", "99115005104000", "064110000000", 1024);
        let body = sample::encode(&s, Encoding::Protobuf);
        for _ in 0..5 {
            submit_encoded(&channel, &body, Encoding::Protobuf).await;
        }
        ids.push(s.submission_id);
    }
    let gateway = RunningGateway::start(config);
    let events = take_status(&read, "civento-he", 100, Duration::from_secs(30)).await;
    assert_eq!(events.len(), 100, "every copy is answered");
    let delivered = drain_backoffice(&read, "he-darmstadt", Duration::from_secs(2)).await;
    let mut got: Vec<String> = delivered.iter().map(|m| m.message_id().unwrap()).collect();
    got.sort();
    ids.sort();
    println!(
        "published=100 (20 ids × 5) delivered={} duplicated={}",
        got.len(),
        got.len().saturating_sub(ids.len())
    );
    assert_eq!(got, ids, "each id exactly once");
    gateway.stop().await;
}
