//! A destination's broker raises a resource alarm (its disk is "full": the free-disk limit
//! is set above what the disk has), so RabbitMQ blocks every connection that publishes to
//! it. Submissions for that broker must neither be lost nor pile up as duplicates, the
//! other destination keeps flowing, and once the alarm clears everything arrives.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::node::Node;
use common::*;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::sample::{self, SampleSpec};
use ozg_gateway::topology::backoffice_queue;

const PORT: u16 = 5800;

fn config_text(v: &Vhosts, node: &Node) -> String {
    format!(
        r#"
[gateway]
dead_letter_broker = "gw"
store_dead_letters = false
confirm_timeout = "2s"
[retry]
delays = ["500ms", "1s"]
max_attempts = 1000
[brokers.gw]
url = "{gw}"
[brokers.he]
url = "{he}"
[brokers.land2]
url = "{land2}"
[[platforms]]
id = "civento-he"
land = "06"
broker = "he"
ingress_queue = "submissions"
status_exchange = "status"
prefetch = 50
[[destinations]]
id = "healthy"
name = "Darmstadt"
kind = "kreisfreie-stadt"
land = "06"
broker = "he"
exchange = "backoffice"
routing_key = "healthy"
[[destinations]]
id = "erfurt"
name = "Erfurt (broker with a disk alarm)"
kind = "kreisfreie-stadt"
land = "16"
broker = "land2"
exchange = "backoffice"
routing_key = "erfurt"
[[routes]]
service = "*"
region = "06411"
destination = "healthy"
[[routes]]
service = "*"
region = "16051"
destination = "erfurt"
"#,
        gw = v.url("gw"),
        he = v.url("he"),
        land2 = node.url("/")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_broker_out_of_disk_blocks_only_its_submissions_and_loses_none() {
    let node = Node::start("ozgtest-alarm", PORT, &[]);
    let v = Vhosts::create("alarm", &["gw", "he"]);
    let config = parse_config(&config_text(&v, &node));
    declare(&config).await;
    let gateway = RunningGateway::start(config);

    let he = connect(&v.url("he")).await;
    let channel = confirm_channel(&he).await;
    let read = he.create_channel().await.unwrap();
    let mut ids: HashMap<String, &str> = HashMap::new();
    let publish_batch = async |n: usize, ids: &mut HashMap<String, &str>| {
        for i in 0..n {
            let (region, to) = if i % 2 == 0 {
                ("160510000000", "erfurt")
            } else {
                ("064110000000", "healthy")
            };
            let s = sample::submission(&SampleSpec {
                platform_id: "civento-he",
                land: "06",
                service_key: "99115005104000",
                region,
                size: 512,
            });
            publish(
                &channel,
                "submissions",
                &sample::encode(&s, Encoding::Protobuf),
                Some("application/x-protobuf"),
                None,
                None,
            )
            .await;
            ids.insert(s.submission_id, to);
        }
    };
    publish_batch(100, &mut ids).await;
    // The disk alarm: every publishing connection of that node is blocked from now on.
    tokio::task::block_in_place(|| node.ctl(&["set_disk_free_limit", "100000GB"]));
    let raised = Instant::now();
    publish_batch(200, &mut ids).await;

    let healthy = ids.values().filter(|to| **to == "healthy").count();
    let arrived = take(
        &read,
        &backoffice_queue("healthy"),
        healthy,
        Duration::from_secs(30),
    )
    .await;
    println!(
        "during the alarm: {} of {healthy} submissions for the healthy destination arrived within {:?}",
        arrived.len(),
        raised.elapsed()
    );
    assert_eq!(arrived.len(), healthy, "the other destination never stops");

    // Longer than several confirm timeouts and retry rounds: the blocked broker's
    // submissions wait, they are neither dropped nor dead-lettered.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let dead_during = v.queue_depth("gw", "ozg.gateway.dead-letters").await;
    assert_eq!(
        dead_during, 0,
        "a full disk at a back office is an outage, not bad input"
    );

    tokio::task::block_in_place(|| node.ctl(&["set_disk_free_limit", "50MB"]));
    let cleared = Instant::now();
    let remote = connect(&node.url("/")).await;
    let remote_read = remote.create_channel().await.unwrap();
    let expected_remote = ids.values().filter(|to| **to == "erfurt").count();
    let mut got = take(
        &remote_read,
        &backoffice_queue("erfurt"),
        expected_remote,
        Duration::from_secs(60),
    )
    .await;
    got.extend(
        drain(
            &remote_read,
            &backoffice_queue("erfurt"),
            Duration::from_secs(3),
        )
        .await,
    );
    let mut counts: HashMap<String, usize> = HashMap::new();
    for m in got.iter().chain(arrived.iter()) {
        *counts.entry(m.message_id().unwrap()).or_default() += 1;
    }
    let lost = ids.keys().filter(|id| !counts.contains_key(*id)).count();
    let duplicated: usize = counts.values().map(|c| c - 1).sum();
    let dead = v.queue_depth("gw", "ozg.gateway.dead-letters").await;
    println!(
        "published={} delivered={} dead-lettered={dead} lost={lost} duplicated={duplicated} (all in {:?} after the alarm cleared)",
        ids.len(),
        counts.len(),
        cleared.elapsed()
    );
    assert_eq!(lost, 0);
    assert_eq!(dead, 0);
    // A blocked broker still stores what was written to it before the block took hold,
    // once it unblocks; a copy whose confirm timed out meanwhile was sent again. Only those
    // in flight (at most a prefetch window) can come twice; back offices drop them by id.
    assert!(
        duplicated <= 50,
        "duplicates beyond what was in flight: {duplicated}"
    );
    gateway.stop().await;
}
