//! Deduplication end to end, with the embedded SQLite store and with PostgreSQL: a
//! submission id delivered once is not delivered again when it comes back (redelivered or
//! republished, in either encoding, across a restart); the same id with other content is
//! dead-lettered as a conflict.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::sample::{self, SampleSpec};
use ozg_gateway::topology::{backoffice_queue, status_queue};
use sqlx::Executor;

fn config(v: &Vhosts, store_url: &str) -> String {
    format!(
        r#"
[gateway]
dead_letter_broker = "gw"
confirm_timeout = "5s"
[store]
url = "{store_url}"
dedup_window = "7d"
[brokers.gw]
url = "{gw}"
[brokers.he]
url = "{he}"
[[platforms]]
id = "civento-he"
land = "06"
broker = "he"
ingress_queue = "submissions"
status_exchange = "status"
[[destinations]]
id = "he-darmstadt"
name = "Darmstadt"
kind = "kreisfreie-stadt"
land = "06"
broker = "he"
exchange = "backoffice"
routing_key = "he-darmstadt"
[[routes]]
service = "*"
region = "06"
destination = "he-darmstadt"
"#,
        gw = v.url("gw"),
        he = v.url("he")
    )
}

async fn redelivered_and_republished_submissions_are_delivered_once(store_url: &str, label: &str) {
    let v = Vhosts::create(label, &["gw", "he"]);
    let config = parse_config(&config(&v, store_url));
    declare(&config).await;
    let he = connect(&v.url("he")).await;
    let channel = confirm_channel(&he).await;
    let read = he.create_channel().await.unwrap();
    let gw = connect(&v.url("gw")).await;
    let gw_read = gw.create_channel().await.unwrap();
    let spec = SampleSpec {
        platform_id: "civento-he",
        land: "06",
        service_key: "99115005104000",
        region: "064110000000",
        size: 1024,
    };
    let s = sample::submission(&spec);
    let proto = sample::encode(&s, Encoding::Protobuf);
    let json = sample::encode(&s, Encoding::Json);

    let gateway = RunningGateway::start(config.clone());
    publish(
        &channel,
        "submissions",
        &proto,
        Some("application/x-protobuf"),
        None,
        None,
    )
    .await;
    let first = take(
        &read,
        &backoffice_queue("he-darmstadt"),
        1,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(first.len(), 1);
    // The platform republishes it, once as it was and once in the other encoding.
    publish(
        &channel,
        "submissions",
        &proto,
        Some("application/x-protobuf"),
        None,
        None,
    )
    .await;
    publish(
        &channel,
        "submissions",
        &json,
        Some("application/json"),
        None,
        None,
    )
    .await;
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

    let dead = take(
        &gw_read,
        "ozg.gateway.dead-letters",
        1,
        Duration::from_secs(20),
    )
    .await;
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
    let events = take(
        &read,
        &status_queue("civento-he"),
        4,
        Duration::from_secs(20),
    )
    .await;
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
    publish(
        &channel,
        "submissions",
        &proto,
        Some("application/x-protobuf"),
        None,
        None,
    )
    .await;
    let events = take(
        &read,
        &status_queue("civento-he"),
        1,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(events.len(), 1, "the republished submission was handled");
    gateway.stop().await;

    let again = take(
        &read,
        &backoffice_queue("he-darmstadt"),
        1,
        Duration::from_millis(500),
    )
    .await;
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
    let base = std::env::var("OZG_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://ozg:ozg@127.0.0.1:5432/ozg_test".to_owned());
    let schema = format!("ozgtest_dedup_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&base).await.unwrap_or_else(|e| {
        panic!("PostgreSQL does not answer at {base}: {e} (deploy/local/test.sh starts it)")
    });
    admin
        .execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
        .await
        .unwrap();
    admin
        .execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .unwrap();
    let url = format!("{base}?options=-csearch_path%3D{schema}");
    redelivered_and_republished_submissions_are_delivered_once(&url, "dedup-pg").await;
    admin
        .execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
        .await
        .unwrap();
}
