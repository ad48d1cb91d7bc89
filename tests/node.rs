//! A destination's broker is another RabbitMQ node (another Land's broker, on its own
//! port) that is killed with SIGKILL under load and restarted: its submissions wait in the
//! retry queues and then arrive; submissions for the other destination never stop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::node::Node;
use common::*;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::sample::{self, SampleSpec};
use ozg_gateway::topology::backoffice_queue;

const PORT: u16 = 5673;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_destination_broker_delays_only_its_submissions() {
    let node = Node::start("ozgtest-node", PORT, &[]);
    let v = Vhosts::create("node", &["gw", "he"]);
    let text = format!(
        r#"
[gateway]
dead_letter_broker = "gw"
store_dead_letters = false
confirm_timeout = "3s"
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
name = "Erfurt (other broker)"
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
    );
    let config = parse_config(&text);
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
    publish_batch(200, &mut ids).await;
    // The gateway runs on this runtime: blocking calls move off its workers.
    tokio::task::block_in_place(|| node.kill());
    let killed = Instant::now();
    // Submissions published while the other broker is down.
    publish_batch(200, &mut ids).await;
    let healthy: HashSet<&String> = ids
        .iter()
        .filter(|(_, to)| **to == "healthy")
        .map(|(id, _)| id)
        .collect();
    let arrived = take(
        &read,
        &backoffice_queue("healthy"),
        healthy.len(),
        Duration::from_secs(30),
    )
    .await;
    println!(
        "while the other broker was down: {} of {} healthy submissions arrived within {:?}",
        arrived.len(),
        healthy.len(),
        killed.elapsed()
    );
    assert_eq!(
        arrived.len(),
        healthy.len(),
        "the other destination never stops"
    );

    tokio::task::block_in_place(|| node.boot());
    let restarted = Instant::now();
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
            Duration::from_secs(2),
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
        "published={} delivered={} dead-lettered={dead} lost={lost} duplicated={duplicated} (other broker back {:?} after restart)",
        ids.len(),
        counts.len(),
        restarted.elapsed()
    );
    assert_eq!(lost, 0);
    assert_eq!(dead, 0);
    // Only submissions in flight to the killed node can come twice: it may have stored one
    // whose confirm never reached the gateway.
    assert!(
        duplicated <= 50,
        "duplicates beyond what was in flight: {duplicated}"
    );
    gateway.stop().await;
}
