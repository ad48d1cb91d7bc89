//! Health a supervisor can act on. One Land's broker is a RabbitMQ node of the test's own,
//! killed with SIGKILL: `/ready` stays 200 and lists that Land's ingress and links down
//! while the other Land's submissions keep arriving; with every ingress down it is 503;
//! `/live` stays 200 throughout (runtime, store and the gateway's own broker work). The
//! real binary tells a NOTIFY_SOCKET the test listens on READY=1, WATCHDOG=1,
//! RELOADING=1 … READY=1 on SIGHUP and STOPPING=1 on SIGTERM.
//!
//! Node port: 5750 (tests/common/node.rs). Run under `flock /tmp/ozg-nodes.lock`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::health::{self, get, link};
use common::node::Node;
use common::*;
use ozg_gateway::envelope::Encoding;
use serde_json::Value;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const PORT: u16 = 5750;

fn ingress<'a>(ready: &'a Value, platform: &str) -> &'a Value {
    ready["ingresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["platform"] == platform)
        .unwrap_or_else(|| panic!("no ingress {platform} in {ready}"))
}

/// Polls `/ready` until `until` holds or 30 s passed.
async fn ready_until(port: u16, what: &str, until: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
    health::until(port, "/ready", what, until).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_land_s_broker_down_leaves_the_gateway_ready_for_the_others() {
    let node = Node::start("ozgtest-health", PORT, &[]);
    let v = Vhosts::create("health", &["gw", "he"]);
    let port = free_port();
    let config = TestConfig::new(&v)
        .telemetry(&format!("metrics_address = \"127.0.0.1:{port}\""))
        .platform("civento-he", "06", "he", None)
        .platform("civento-th", "16", "th", None)
        .destination("darmstadt", "06", "he", "Darmstadt")
        .route("*", "06", "darmstadt")
        .extra(&format!("[brokers.th]\nurl = \"{}\"", node.url("/")))
        .extra(&format!(
            "[admin]\naddress = \"127.0.0.1:0\"\n[[admin.tokens]]\nname = \"unused\"\nsha256 = \"{}\"\nroles = [\"viewer\"]",
            "0".repeat(64)
        ))
        .build();
    let gateway = Admin::start(config).await;
    let grpc = gateway.channel().await;
    let consuming = |p: &str, body: &Value| ingress(body, p)["state"] == "consuming";
    let (status, body) = ready_until(port, "both Länder consuming", |_, b| {
        consuming("civento-he", b) && consuming("civento-th", b)
    })
    .await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["ready"], true);
    assert_eq!(body["store"]["state"], "up");
    grpc_until(&grpc, "", ServingStatus::Serving).await;

    // Thüringen's broker dies.
    tokio::task::block_in_place(|| node.kill());
    let (status, body) = ready_until(port, "Thüringen down", |_, b| {
        !consuming("civento-th", b) && link(b, "th", "consume")["state"] != "connected"
    })
    .await;
    println!("/ready with Thüringen's broker killed: {status} {body}");
    assert_eq!(
        status, 200,
        "one Land down is no reason to restart: {body:#}"
    );
    assert_eq!(body["ready"], true);
    let th = ingress(&body, "civento-th");
    assert_eq!(th["state"], "connecting", "{th}");
    assert_eq!(th["land"], "16");
    assert_eq!(th["broker"], "th");
    assert_eq!(link(&body, "th", "publish")["state"], "connecting");
    assert!(
        link(&body, "th", "consume")["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "the link says why: {body:#}"
    );
    assert_eq!(ingress(&body, "civento-he")["state"], "consuming");
    assert_eq!(body["reason"], "1 of 2 ingresses consuming");
    let (live, live_body) = tokio::task::block_in_place(|| get(port, "/live"));
    assert_eq!(live, 200, "{live_body:#}");
    assert_eq!(live_body["live"], true);
    // grpc.health.v1 says the same: the gateway serves; Thüringen's names do not.
    // (It follows within a heartbeat.)
    grpc_until(&grpc, "ingress/civento-th", ServingStatus::NotServing).await;
    for (service, want) in [
        ("", ServingStatus::Serving),
        ("ingress/civento-he", ServingStatus::Serving),
        ("ingress/civento-th", ServingStatus::NotServing),
        ("broker/th/consume", ServingStatus::NotServing),
        ("store", ServingStatus::Serving),
    ] {
        // Each name follows within a heartbeat of its own part's change: a link can be
        // seen down a heartbeat after its ingress.
        grpc_until(&grpc, service, want).await;
    }

    // Hessen keeps flowing meanwhile.
    let he = connect(&v.url("he")).await;
    let channel = confirm_channel(&he).await;
    let mut sent = Vec::new();
    for _ in 0..20 {
        let s = he_submission("064110000000");
        submit(&channel, &s, Encoding::Protobuf).await;
        sent.push(s.submission_id);
    }
    let read = he.create_channel().await.unwrap();
    let arrived = take_backoffice(&read, "darmstadt", sent.len(), Duration::from_secs(20)).await;
    println!(
        "while Thüringen was down: {} of {} Hessian submissions delivered",
        arrived.len(),
        sent.len()
    );
    assert_eq!(arrived.len(), sent.len());

    // Hessen's queue goes too: no ingress consumes any more.
    delete_queue(v.name("he"), "submissions");
    let (status, body) = ready_until(port, "no ingress consuming", |s, _| s == 503).await;
    println!("/ready with every ingress down: {status} {body}");
    grpc_until(&grpc, "", ServingStatus::NotServing).await;
    assert_eq!(body["ready"], false);
    assert_eq!(
        body["reason"],
        "no ingress consuming (2 connecting, 0 paused)"
    );
    let (live, live_body) = tokio::task::block_in_place(|| get(port, "/live"));
    assert_eq!(
        live, 200,
        "the process still works; a restart would not bring the queues back: {live_body:#}"
    );

    // Both come back, and so does readiness.
    put_queue(v.name("he"), "submissions");
    tokio::task::block_in_place(|| node.boot());
    let (status, _) = ready_until(port, "both Länder consuming again", |_, b| {
        consuming("civento-he", b) && consuming("civento-th", b)
    })
    .await;
    assert_eq!(status, 200);
    gateway.stop().await;
}

async fn grpc_health(channel: &tonic::transport::Channel, service: &str) -> ServingStatus {
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap_or_else(|e| panic!("health of {service:?}: {e}"))
        .into_inner()
        .status;
    ServingStatus::try_from(status).unwrap()
}

/// Waits (at most 5 s) for grpc.health.v1 to say `want` for `service`.
async fn grpc_until(channel: &tonic::transport::Channel, service: &str, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = grpc_health(channel, service).await;
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "health of {service:?} is {status:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn delete_queue(vhost: &str, queue: &str) {
    ureq::delete(format!("{MANAGEMENT}/queues/{vhost}/{queue}"))
        .header("Authorization", AUTH)
        .call()
        .unwrap();
}

fn put_queue(vhost: &str, queue: &str) {
    ureq::put(format!("{MANAGEMENT}/queues/{vhost}/{queue}"))
        .header("Authorization", AUTH)
        .header("Content-Type", "application/json")
        .send(r#"{"durable":true}"#)
        .unwrap();
}

/// Everything a NOTIFY_SOCKET hears, one datagram per entry.
struct Notifications {
    socket: std::os::unix::net::UnixDatagram,
    heard: Vec<String>,
}

impl Notifications {
    fn bind(path: &std::path::Path) -> Notifications {
        let socket = std::os::unix::net::UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Notifications {
            socket,
            heard: Vec::new(),
        }
    }

    /// Reads datagrams until one contains `line` (as a line of its own), at most `within`.
    fn wait_for(&mut self, line: &str, within: Duration) {
        let deadline = Instant::now() + within;
        let mut buffer = [0u8; 4096];
        loop {
            if self.heard.iter().any(|d| d.lines().any(|l| l == line)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {line} within {within:?}; heard {:?}",
                self.heard
            );
            if let Ok(n) = self.socket.recv(&mut buffer) {
                self.heard
                    .push(String::from_utf8_lossy(&buffer[..n]).into_owned());
            }
        }
    }

    /// Forgets what was heard so far.
    fn clear(&mut self) {
        self.heard.clear();
    }
}

#[test]
fn the_binary_tells_systemd_ready_reloading_stopping_and_pings_the_watchdog() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let v = Vhosts::create("notify", &["gw", "he"]);
    let dir = tempfile::tempdir().unwrap();
    let text = TestConfig::new(&v)
        .gateway(&format!(
            "data_dir = \"{}\"",
            dir.path().join("data").display()
        ))
        .platform("civento-he", "06", "he", None)
        .destination("darmstadt", "06", "he", "Darmstadt")
        .route("*", "06", "darmstadt")
        .text();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, &text).unwrap();
    runtime.block_on(declare(&parse_config(&text)));
    let socket = dir.path().join("notify.sock");
    let mut notifications = Notifications::bind(&socket);
    let mut gateway = std::process::Command::new(env!("CARGO_BIN_EXE_ozg-gateway"))
        .args(["run", "--config", path.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &socket)
        // Ping every 0.5 s.
        .env("WATCHDOG_USEC", "1000000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    notifications.wait_for("READY=1", Duration::from_secs(30));
    println!("READY=1 after {:?}", started.elapsed());
    notifications.wait_for("WATCHDOG=1", Duration::from_secs(5));
    notifications.clear();
    notifications.wait_for("WATCHDOG=1", Duration::from_secs(5));

    notifications.clear();
    signal(&gateway, "-HUP");
    notifications.wait_for("RELOADING=1", Duration::from_secs(10));
    let reloading = notifications
        .heard
        .iter()
        .find(|d| d.lines().any(|l| l == "RELOADING=1"))
        .unwrap()
        .clone();
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "RELOADING=1 comes with MONOTONIC_USEC: {reloading:?}"
    );
    notifications.wait_for("READY=1", Duration::from_secs(10));

    notifications.clear();
    signal(&gateway, "-TERM");
    notifications.wait_for("STOPPING=1", Duration::from_secs(10));
    let status = wait_exit(&mut gateway, Duration::from_secs(30)).expect("stopped");
    assert!(status.success(), "{status:?}");
    println!("heard while stopping: {:?}", notifications.heard);
}
