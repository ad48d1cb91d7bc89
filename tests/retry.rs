//! Retries without head-of-line blocking: a delivery that fails waits in a delay queue on
//! the gateway's broker while the platform's other submissions keep moving, is tried again,
//! and is dead-lettered with `delivery-failed`, the attempt count and the last error when
//! the attempts are used up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::topology::{backoffice_queue, status_queue};

/// Platform civento-he; destination `healthy` and `ghost` (whose exchange the tests delete).
fn config(v: &Vhosts, retry: &[&str]) -> ozg_gateway::Config {
    let mut c = TestConfig::new(v).gateway(r#"confirm_timeout = "5s""#);
    for line in retry {
        c = c.retry(line);
    }
    c.platform("civento-he", "06", "he", Some(50))
        .healthy_and_ghost()
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_exchange_is_retried_until_it_exists_while_others_keep_flowing() {
    let v = Vhosts::create("retry", &["gw", "he"]);
    let config = config(
        &v,
        &[
            r#"delays = ["200ms", "500ms", "1s"]"#,
            "max_attempts = 1000",
        ],
    );
    declare(&config).await;
    delete_exchange(&v.url("he"), "ghost-exchange").await;
    let he = connect(&v.url("he")).await;

    let gateway = RunningGateway::start(config.clone());
    let channel = confirm_channel(&he).await;
    let (mut healthy, mut ghost) = (HashSet::new(), HashSet::new());
    for i in 0..300 {
        let s = he_submission(if i % 2 == 0 {
            "066110000000"
        } else {
            "064110000000"
        });
        submit(&channel, &s, Encoding::Protobuf).await;
        if i % 2 == 0 {
            ghost.insert(s.submission_id)
        } else {
            healthy.insert(s.submission_id)
        };
    }

    // While the ghost destination fails and its submissions wait for their retries, every
    // submission for the healthy destination arrives.
    let read = he.create_channel().await.unwrap();
    let started = Instant::now();
    let arrived = take(
        &read,
        &backoffice_queue("healthy"),
        healthy.len(),
        Duration::from_secs(30),
    )
    .await;
    let arrived: HashSet<String> = arrived.iter().map(|m| m.message_id().unwrap()).collect();
    println!(
        "healthy destination: {} of {} arrived in {:?} while the other one failed",
        arrived.len(),
        healthy.len(),
        started.elapsed()
    );
    assert_eq!(arrived, healthy);
    assert_eq!(
        v.queue_depth("he", "submissions").await,
        0,
        "the platform queue is not blocked"
    );

    // The exchange comes back; the waiting submissions arrive after their retry.
    tokio::time::sleep(Duration::from_secs(2)).await;
    declare(&config).await;
    let recreated = Instant::now();
    let late = take(
        &read,
        &backoffice_queue("ghost"),
        ghost.len(),
        Duration::from_secs(30),
    )
    .await;
    let late_ids: Vec<String> = late.iter().map(|m| m.message_id().unwrap()).collect();
    let distinct: HashSet<String> = late_ids.iter().cloned().collect();
    println!(
        "recovered destination: {} of {} arrived {:?} after the exchange was recreated",
        distinct.len(),
        ghost.len(),
        recreated.elapsed()
    );
    let extra = drain(
        &read,
        &backoffice_queue("ghost"),
        Duration::from_millis(1500),
    )
    .await;
    let dead = v.queue_depth("gw", "ozg.gateway.dead-letters").await;
    let published = healthy.len() + ghost.len();
    let delivered = arrived.len() + distinct.len();
    let lost = ghost.difference(&distinct).count() + healthy.difference(&arrived).count();
    let duplicated = late_ids.len() - distinct.len() + extra.len();
    println!(
        "published={published} delivered={delivered} dead-lettered={dead} lost={lost} duplicated={duplicated}"
    );
    assert_eq!(lost, 0);
    assert_eq!(distinct, ghost);
    assert_eq!(duplicated, 0, "each retried submission arrives once");
    assert_eq!(dead, 0);
    assert_eq!(v.queue_depth("gw", "ozg.gateway.retry.ready").await, 0);
    // The platform hears `forwarded` once per submission, including the retried ones.
    let events = take(
        &read,
        &status_queue("civento-he"),
        300,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(events.len(), 300);
    assert!(
        events
            .iter()
            .all(|e| e.header("x-ozg-status").as_deref() == Some("forwarded"))
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_give_up_after_max_attempts_with_the_count_and_last_error() {
    let v = Vhosts::create("giveup", &["gw", "he"]);
    let config = config(&v, &[r#"delays = ["100ms"]"#, "max_attempts = 3"]);
    declare(&config).await;
    delete_exchange(&v.url("he"), "ghost-exchange").await;
    let he = connect(&v.url("he")).await;
    let gateway = RunningGateway::start(config);

    let channel = confirm_channel(&he).await;
    let s = he_submission("066110000000");
    submit(&channel, &s, Encoding::Json).await;

    let gw = connect(&v.url("gw")).await;
    let gw_read = gw.create_channel().await.unwrap();
    let dead = take(
        &gw_read,
        "ozg.gateway.dead-letters",
        1,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(dead.len(), 1);
    let m = &dead[0];
    assert_eq!(
        m.header("x-ozg-submission-id").as_deref(),
        Some(s.submission_id.as_str())
    );
    assert_eq!(m.header("x-ozg-reason").as_deref(), Some("delivery-failed"));
    let detail = m.header("x-ozg-detail").unwrap();
    assert!(detail.starts_with("gave up after 3 attempts"), "{detail}");
    assert!(
        detail.contains("NOT_FOUND"),
        "the last error is named: {detail}"
    );
    assert!(
        m.header_value("x-death").is_none(),
        "broker bookkeeping headers are dropped"
    );
    let read = he.create_channel().await.unwrap();
    let events = take(
        &read,
        &status_queue("civento-he"),
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        events[0].header("x-ozg-status").as_deref(),
        Some("rejected")
    );
    assert!(
        take(
            &read,
            &status_queue("civento-he"),
            1,
            Duration::from_millis(500)
        )
        .await
        .is_empty()
    );
    gateway.stop().await;
}
