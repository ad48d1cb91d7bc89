//! The gateway's broker connections as RabbitMQ sees them: the frame size it asks for by
//! default (32 KiB for consuming, room for the headers of any ordinary message in lapin's
//! per-connection rings of 1 MiB; 8 KiB for publishing, which keeps those rings smaller
//! still) and a URL's own
//! `frame_max` taking precedence.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

/// frame_max of each of the gateway's connections to `vhost`, by connection name, once the
/// broker lists `expected` of them.
fn gateway_connections(vhost: &str, expected: usize) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = ureq::get(format!("{MANAGEMENT}/vhosts/{vhost}/connections"))
            .header("Authorization", AUTH)
            .call()
            .unwrap_or_else(|e| panic!("RabbitMQ management API on 127.0.0.1:15672: {e}"))
            .body_mut()
            .read_to_string()
            .unwrap();
        let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
        let found: BTreeMap<String, u64> = listed
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| {
                let name = c["client_properties"]["connection_name"].as_str()?;
                name.starts_with("ozg-gateway ")
                    .then(|| (name.to_owned(), c["frame_max"].as_u64().unwrap_or(0)))
            })
            .collect();
        if found.len() >= expected {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "the broker lists {} gateway connections on {vhost}, expected {expected}: {found:?}",
            found.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_use_the_default_frames_unless_the_url_says_otherwise() {
    let v = Vhosts::create("frames", &["gw", "he"]);
    let config = TestConfig::new(&v)
        .platform("civento-he", "06", "he", None)
        .destination("darmstadt", "06", "he", "Darmstadt")
        .route("*", "06", "darmstadt");
    let gw_url = v.url("gw");
    let text = config.text().replace(
        &format!("url = \"{gw_url}\""),
        &format!("url = \"{gw_url}?frame_max=65536\""),
    );
    assert!(text.contains("frame_max=65536"), "{text}");
    let config = parse_config(&text);
    declare(&config).await;
    let gateway = RunningGateway::start(config);

    // The platform's broker, consumed and published to: the gateway's defaults.
    let he = tokio::task::spawn_blocking({
        let vhost = v.name("he").to_owned();
        move || gateway_connections(&vhost, 2)
    })
    .await
    .unwrap();
    assert_eq!(
        he.get("ozg-gateway consume he"),
        Some(&32_768),
        "consuming: 32 KiB frames: {he:?}"
    );
    assert_eq!(
        he.get("ozg-gateway publish he"),
        Some(&8192),
        "publishing: small frames: {he:?}"
    );
    // The gateway's own broker (retries, replays, dead letters): the URL's frame_max.
    let gw = tokio::task::spawn_blocking({
        let vhost = v.name("gw").to_owned();
        move || gateway_connections(&vhost, 1)
    })
    .await
    .unwrap();
    for (name, frame_max) in &gw {
        assert_eq!(*frame_max, 65536, "{name}: the URL's frame_max");
    }

    // 8 KiB frames still carry a submission many frames long, both ways.
    let connection = connect(&v.url("he")).await;
    let channel = confirm_channel(&connection).await;
    let s = sample_submission(
        "civento-he",
        "06",
        "99115005104000",
        "064110000000",
        300_000,
    );
    submit(&channel, &s, ozg_gateway::envelope::Encoding::Protobuf).await;
    let read = connection.create_channel().await.unwrap();
    let got = take_backoffice(&read, "darmstadt", 1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message_id(), Some(s.submission_id.clone()));
    assert!(gateway.is_running());
    gateway.stop().await;
}
