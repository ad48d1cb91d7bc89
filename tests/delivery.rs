//! Failed deliveries: a destination whose exchange is missing (the broker closes the channel
//! with 404) and one whose exchange routes nowhere (the broker returns the message). Both
//! are failed deliveries, dead-lettered with `delivery-failed`, while submissions for a
//! healthy destination, published in between, keep arriving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use ozg_gateway::envelope::Encoding;
use ozg_gateway::sample::{self, SampleSpec};
use ozg_gateway::topology::backoffice_queue;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_does_not_disturb_the_others() {
    let v = Vhosts::create("deliv", &["gw", "he"]);
    let text = format!(
        r#"
[gateway]
dead_letter_broker = "gw"
confirm_timeout = "5s"
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
prefetch = 32

[[destinations]]
id = "healthy"
name = "Darmstadt"
kind = "kreisfreie-stadt"
land = "06"
broker = "he"
exchange = "backoffice"
routing_key = "healthy"

[[destinations]]
id = "ghost"
name = "Kassel (exchange missing)"
kind = "kreisfreie-stadt"
land = "06"
broker = "he"
exchange = "ghost-exchange"
routing_key = "ghost"

[[destinations]]
id = "unbound"
name = "Wiesbaden (nothing bound)"
kind = "kreisfreie-stadt"
land = "06"
broker = "he"
exchange = "backoffice"
routing_key = "unbound"

[[routes]]
service = "*"
region = "06411"
destination = "healthy"
[[routes]]
service = "*"
region = "06611"
destination = "ghost"
[[routes]]
service = "*"
region = "06414"
destination = "unbound"
"#,
        gw = v.url("gw"),
        he = v.url("he")
    );
    let config = parse_config(&text);
    declare(&config).await;
    let he = connect(&v.url("he")).await;
    let admin = he.create_channel().await.unwrap();
    admin
        .exchange_delete("ghost-exchange".into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
    admin
        .queue_delete(
            backoffice_queue("unbound").as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .unwrap();

    let gateway = RunningGateway::start(config);
    let channel = confirm_channel(&he).await;
    let mut healthy = Vec::new();
    let mut failing = Vec::new();
    for i in 0..60 {
        let region = match i % 3 {
            0 => "066110000000", // Kassel → ghost
            1 => "064140000000", // Wiesbaden → unbound
            _ => "064110000000", // Darmstadt → healthy
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
        if i % 3 == 2 {
            healthy.push(s.submission_id)
        } else {
            failing.push((s.submission_id, i % 3))
        }
    }

    let read = he.create_channel().await.unwrap();
    let arrived = take(
        &read,
        &backoffice_queue("healthy"),
        healthy.len(),
        Duration::from_secs(30),
    )
    .await;
    let mut arrived: Vec<String> = arrived.iter().map(|m| m.message_id().unwrap()).collect();
    arrived.sort();
    healthy.sort();
    assert_eq!(
        arrived, healthy,
        "every submission for the healthy destination arrives"
    );

    let gw = connect(&v.url("gw")).await;
    let gw_read = gw.create_channel().await.unwrap();
    let dead = take(
        &gw_read,
        "ozg.gateway.dead-letters",
        failing.len(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(dead.len(), failing.len());
    for m in dead {
        let id = m.header("x-ozg-submission-id").unwrap();
        let (_, kind) = failing
            .iter()
            .find(|(f, _)| *f == id)
            .expect("a failing submission");
        assert_eq!(m.header("x-ozg-reason").as_deref(), Some("delivery-failed"));
        let detail = m.header("x-ozg-detail").unwrap();
        match kind {
            0 => assert!(
                detail.contains("NOT_FOUND") || detail.contains("404"),
                "{detail}"
            ),
            _ => assert!(
                detail.contains("NO_ROUTE") && detail.contains("312"),
                "{detail}"
            ),
        }
    }
    assert!(gateway.is_running());
    gateway.stop().await;
}
