//! Failed deliveries: a destination whose exchange is missing (the broker closes the channel
//! with 404) and one whose exchange routes nowhere (the broker returns the message). Both
//! are failed deliveries — with retries switched off (`max_attempts = 1`) dead-lettered at
//! once with `delivery-failed` — while submissions for a healthy destination, published in
//! between, keep arriving. Retries themselves: tests/retry.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use lapin::options::QueueDeleteOptions;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::topology::backoffice_queue;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_does_not_disturb_the_others() {
    let v = Vhosts::create("deliv", &["gw", "he"]);
    let config = TestConfig::new(&v)
        .gateway(r#"confirm_timeout = "5s""#)
        .retry("max_attempts = 1")
        .platform("civento-he", "06", "he", Some(32))
        .destination("healthy", "06", "he", "Darmstadt")
        .destination_with(
            "ghost",
            "06",
            "he",
            "Kassel (exchange missing)",
            "kreisfreie-stadt",
            "ghost-exchange",
        )
        .destination("unbound", "06", "he", "Wiesbaden (nothing bound)")
        .route("*", "06411", "healthy")
        .route("*", "06611", "ghost")
        .route("*", "06414", "unbound")
        .build();
    declare(&config).await;
    delete_exchange(&v.url("he"), "ghost-exchange").await;
    let he = connect(&v.url("he")).await;
    let admin = he.create_channel().await.unwrap();
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
    for i in 0..240 {
        let region = match i % 3 {
            0 => "066110000000", // Kassel → ghost
            1 => "064140000000", // Wiesbaden → unbound
            _ => "064110000000", // Darmstadt → healthy
        };
        let s = he_submission(region);
        submit(&channel, &s, Encoding::Protobuf).await;
        if i % 3 == 2 {
            healthy.push(s.submission_id)
        } else {
            failing.push((s.submission_id, i % 3))
        }
    }

    let read = he.create_channel().await.unwrap();
    let arrived = take_backoffice(&read, "healthy", healthy.len(), Duration::from_secs(30)).await;
    let mut arrived: Vec<String> = arrived.iter().map(|m| m.message_id().unwrap()).collect();
    arrived.sort();
    healthy.sort();
    assert_eq!(
        arrived, healthy,
        "every submission for the healthy destination arrives"
    );

    let gw = connect(&v.url("gw")).await;
    let gw_read = gw.create_channel().await.unwrap();
    let dead = take_dead_letters(&gw_read, failing.len(), Duration::from_secs(60)).await;
    assert_eq!(dead.len(), failing.len());
    for m in dead {
        let id = m.header("x-ozg-submission-id").unwrap();
        let (_, kind) = failing.iter().find(|(f, _)| *f == id).unwrap_or_else(|| {
            panic!(
                "a failing submission: {:?} {:?}",
                m.header("x-ozg-destination"),
                m.header("x-ozg-detail")
            )
        });
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
