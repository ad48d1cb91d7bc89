//! One confirm channel per broker connection: several destinations on the same broker
//! publish on one shared channel, and when the broker closes it because one destination's
//! exchange was deleted mid-batch, the other destinations' submissions in flight on it are
//! published again on a fresh channel. Counted from outside, as a user would: what the
//! platform published, what each back office's queue received, duplicates, losses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::topology::{backoffice_queue, status_queue};

/// Destination id, its city and the ARS submissions for it carry. `ghost` is behind the
/// exchange `ghost-exchange`, which the test deletes; `wiesbaden` behind an exchange of its
/// own; the others behind `backoffice`.
const DESTINATIONS: [(&str, &str, &str); 5] = [
    ("healthy", "Darmstadt", "064110000000"),
    ("frankfurt", "Frankfurt am Main", "064120000000"),
    ("offenbach", "Offenbach am Main", "064130000000"),
    ("wiesbaden", "Wiesbaden", "064140000000"),
    ("ghost", "Kassel", "066110000000"),
];

const PER_DESTINATION: usize = 120;
const PREFETCH: u16 = 100;

fn config(v: &Vhosts, metrics_port: u16) -> ozg_gateway::Config {
    TestConfig::new(v)
        .telemetry(&format!("metrics_address = \"127.0.0.1:{metrics_port}\""))
        .gateway(r#"confirm_timeout = "5s""#)
        .retry(r#"delays = ["200ms", "500ms", "1s"]"#)
        .retry("max_attempts = 1000")
        .platform("civento-he", "06", "he", Some(PREFETCH))
        .healthy_and_ghost()
        .destination("frankfurt", "06", "he", "Frankfurt am Main")
        .route("*", "06412", "frankfurt")
        .destination("offenbach", "06", "he", "Offenbach am Main")
        .route("*", "06413", "offenbach")
        .destination_with(
            "wiesbaden",
            "06",
            "he",
            "Wiesbaden",
            "kreisfreie-stadt",
            "wiesbaden-exchange",
        )
        .route("*", "06414", "wiesbaden")
        .build()
}

/// How many of `destination`'s submissions the gateway counted with `outcome`, as its
/// /metrics say (`ozg_messages_total`, summed over platforms and reasons).
fn counted(metrics: &str, destination: &str, outcome: &str) -> f64 {
    let (d, o) = (
        format!("destination=\"{destination}\""),
        format!("outcome=\"{outcome}\""),
    );
    metrics
        .lines()
        .filter(|l| l.starts_with("ozg_messages_total{") && l.contains(&d) && l.contains(&o))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What one back office's queue received: distinct ids and how many arrived twice or more.
struct Received {
    distinct: HashSet<String>,
    duplicated: usize,
}

async fn receive(read: &lapin::Channel, destination: &str, n: usize) -> Received {
    let mut got = take(
        read,
        &backoffice_queue(destination),
        n,
        Duration::from_secs(60),
    )
    .await;
    got.extend(
        drain(
            read,
            &backoffice_queue(destination),
            Duration::from_millis(1500),
        )
        .await,
    );
    let ids: Vec<String> = got.iter().map(|m| m.message_id().unwrap()).collect();
    let distinct: HashSet<String> = ids.iter().cloned().collect();
    Received {
        duplicated: ids.len() - distinct.len(),
        distinct,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_deleted_mid_batch_on_a_shared_channel_costs_the_others_nothing() {
    let v = Vhosts::create("shared-confirms", &["gw", "he"]);
    let port = free_port();
    let config = config(&v, port);
    let gateway = start_gateway(config.clone()).await;
    let he = connect(&v.url("he")).await;

    // The platform publishes submissions for all five destinations, interleaved, while the
    // ghost's exchange is deleted under the running gateway.
    let url = v.url("he");
    let publishing = tokio::spawn(async move {
        let he = connect(&url).await;
        let channel = confirm_channel(&he).await;
        let mut published: HashMap<&'static str, HashSet<String>> = HashMap::new();
        for i in 0..PER_DESTINATION * DESTINATIONS.len() {
            let (id, _, region) = DESTINATIONS[i % DESTINATIONS.len()];
            let s = he_submission(region);
            submit(&channel, &s, Encoding::Protobuf).await;
            published.entry(id).or_default().insert(s.submission_id);
            if i % 25 == 24 {
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }
        published
    });
    let started = Instant::now();
    while v.queue_depth("he", &backoffice_queue("ghost")).await < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "nothing reached the ghost"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    delete_exchange(&v.url("he"), "ghost-exchange").await;
    let published = publishing.await.unwrap();
    let deleted_after = v.queue_depth("he", &backoffice_queue("ghost")).await;

    // Every other destination receives each of its submissions while the ghost fails.
    let read = he.create_channel().await.unwrap();
    let mut lost = 0;
    let mut duplicated = 0;
    let mut delivered = 0;
    for (id, _, _) in DESTINATIONS.iter().filter(|(id, ..)| *id != "ghost") {
        let sent = &published[id];
        let got = receive(&read, id, sent.len()).await;
        println!(
            "{id}: published={} delivered={} duplicated={} lost={}",
            sent.len(),
            got.distinct.len(),
            got.duplicated,
            sent.difference(&got.distinct).count()
        );
        assert!(
            got.distinct.is_subset(sent),
            "{id} received what it was not sent"
        );
        lost += sent.difference(&got.distinct).count();
        duplicated += got.duplicated;
        delivered += got.distinct.len();
    }
    assert_eq!(lost, 0, "a healthy destination lost submissions");
    assert_eq!(
        v.queue_depth("he", "submissions").await,
        0,
        "the platform queue is not blocked by the ghost"
    );

    // The ghost's exchange comes back: its submissions arrive after their retries.
    declare(&config).await;
    let ghost = &published["ghost"];
    let got = receive(&read, "ghost", ghost.len()).await;
    println!(
        "ghost: published={} delivered={} duplicated={} lost={} ({deleted_after} had arrived \
         when its exchange was deleted)",
        ghost.len(),
        got.distinct.len(),
        got.duplicated,
        ghost.difference(&got.distinct).count()
    );
    assert!(got.distinct.is_subset(ghost));
    lost += ghost.difference(&got.distinct).count();
    duplicated += got.duplicated;
    delivered += got.distinct.len();
    let dead = v.queue_depth("gw", "ozg.gateway.dead-letters").await;
    let total = PER_DESTINATION * DESTINATIONS.len();
    println!(
        "published={total} delivered={delivered} dead-lettered={dead} duplicated={duplicated} lost={lost}"
    );
    assert_eq!(lost, 0);
    assert_eq!(delivered, total);
    assert_eq!(dead, 0, "nothing is dead-lettered while retries are left");
    // Only submissions in flight when a channel closed may go out twice: at most one
    // prefetch window per close (the deletion, and the ghost's own refusal).
    assert!(
        duplicated <= 2 * usize::from(PREFETCH),
        "{duplicated} duplicates: more than were in flight"
    );
    assert_eq!(v.queue_depth("gw", "ozg.gateway.retry.ready").await, 0);

    // The platform hears `forwarded` once for each submission.
    let events = take(
        &read,
        &status_queue("civento-he"),
        total,
        Duration::from_secs(20),
    )
    .await;
    let forwarded: HashSet<String> = events
        .iter()
        .filter(|e| e.header("x-ozg-status").as_deref() == Some("forwarded"))
        .filter_map(|e| e.header("x-ozg-submission-id"))
        .collect();
    assert_eq!(forwarded.len(), total);

    // Only the ghost's submissions went the retry way; the others' were each delivered on
    // their first attempt, those in flight on the closed channel published again at once.
    let metrics = ureq::get(format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    for (id, _, _) in DESTINATIONS {
        let (retried, delivered) = (
            counted(&metrics, id, "retrying"),
            counted(&metrics, id, "delivered"),
        );
        println!("{id}: retrying={retried} delivered={delivered}");
        if id == "ghost" {
            assert!(retried >= 1.0, "the ghost's submissions were retried");
        } else {
            assert_eq!(retried, 0.0, "{id}'s submissions were retried");
        }
        assert!(
            delivered >= PER_DESTINATION as f64,
            "{id}: {delivered} delivered"
        );
    }
    gateway.stop().await;
}
