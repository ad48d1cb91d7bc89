#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Several gateway instances (the real binary) on one PostgreSQL store, consuming the same
//! platform queue as competing consumers: one SIGKILLed under load loses nothing and its share
//! is taken over; a route changed through one instance's admin API is used by all; a
//! republished submission is delivered once whichever instance takes it; a platform hears
//! "overdue" once per submission although every instance looks for overdue ones; and every
//! instance's admin API lists all of them.
//!
//! PostgreSQL is expected at `postgres://ozg:ozg@127.0.0.1:5432/ozg_test` (deploy/local/postgres.sh
//! creates it) or at `OZG_TEST_POSTGRES_URL`; each test works in a schema of its own.

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ozg_gateway::admin::auth::hash_token;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::sample;
use ozg_gateway::topology::backoffice_queue;
use ozg_gateway::wire::admin as pb;
use pb::directory_service_client::DirectoryServiceClient;
use pb::stats_service_client::StatsServiceClient;

const BIN: &str = env!("CARGO_BIN_EXE_ozg-gateway");
const MELDE: &str = "99115005104000";
const TOKEN: &str = "instances-test-token-0123456789";
const DARMSTADT: &str = "he-darmstadt";
const PREFETCH: u16 = 20;
const HANG: Duration = Duration::from_secs(60);

/// Hessen's platform and Darmstadt's back office on one vhost, the gateway's own queues on
/// `gw`, the store in `schema`; `[admin]` and `[store]` are added per instance.
fn config(v: &Vhosts, extra: &str) -> TestConfig {
    TestConfig::new(v)
        .gateway(r#"confirm_timeout = "5s""#)
        .gateway(r#"shutdown_grace = "5s""#)
        .platform("civento-he", "06", "he", Some(PREFETCH))
        .destination(DARMSTADT, "06", "he", "Darmstadt")
        .route("*", "06411", DARMSTADT)
        .extra(extra)
}

/// One gateway process with its admin API on a port of its own.
struct Instance {
    child: Child,
    admin: String,
    log: PathBuf,
}

impl Instance {
    fn spawn(dir: &Path, n: usize, base: &TestConfig, schema: &PgSchema) -> Instance {
        let port = free_port();
        let text = format!(
            "{}\n[store]\nurl = \"{}\"\ndirectory_poll = \"500ms\"\n\n[admin]\naddress = \"127.0.0.1:{port}\"\n\n\
             [[admin.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nroles = [\"operator\"]\n",
            base.text(),
            schema.url,
            hex::encode(hash_token(TOKEN))
        );
        let path = dir.join(format!("instance-{n}.toml"));
        std::fs::write(&path, text).unwrap();
        let log = dir.join(format!("instance-{n}.log"));
        let child = Command::new(BIN)
            .args(["run", "--config", path.to_str().unwrap()])
            .env("RUST_LOG", "ozg_gateway=info")
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Instance {
            child,
            admin: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    async fn channel(&self) -> tonic::transport::Channel {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match tonic::transport::Endpoint::from_shared(self.admin.clone())
                .unwrap()
                .connect()
                .await
            {
                Ok(channel) => return channel,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "admin API at {} does not answer: {e}\n{}",
                    self.admin,
                    self.log_text()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn overview(&self) -> pb::Overview {
        StatsServiceClient::new(self.channel().await)
            .get_overview(op(pb::GetOverviewRequest::default()))
            .await
            .unwrap()
            .into_inner()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        signal(&self.child, "-KILL");
        wait_exit(&mut self.child, Duration::from_secs(10)).expect("SIGKILL ends it");
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn op<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    request
}

/// Waits until `instance`'s overview lists `running` running instances (and `gone` gone
/// ones), and returns it.
async fn wait_listed(instance: &Instance, running: usize, gone: usize) -> pb::Overview {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let overview = instance.overview().await;
        let alive = overview.instances.iter().filter(|i| i.alive).count();
        if alive == running && overview.instances.len() - alive == gone {
            return overview;
        }
        assert!(
            Instant::now() < deadline,
            "expected {running} running and {gone} gone instances, listed: {:#?}",
            overview.instances
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Consumers on the platform's queue as the broker counts them.
fn consumers(v: &Vhosts) -> u64 {
    let body = ureq::get(format!(
        "{MANAGEMENT}/queues/{}/submissions",
        urlencode(v.name("he"))
    ))
    .header("Authorization", AUTH)
    .call()
    .unwrap()
    .body_mut()
    .read_to_string()
    .unwrap();
    let queue: serde_json::Value = serde_json::from_str(&body).unwrap();
    queue["consumers"].as_u64().unwrap_or(0)
}

fn urlencode(vhost: &str) -> String {
    vhost.replace('/', "%2F")
}

async fn wait_consumers(v: &Vhosts, n: u64, instances: &[Instance]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumers(v) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} instances consume; logs:\n{}",
            consumers(v),
            instances
                .iter()
                .map(Instance::log_text)
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A submission for Darmstadt: (id, protobuf body).
fn submission(region: &str) -> (String, Vec<u8>) {
    let s = sample_submission("civento-he", "06", MELDE, region, 512);
    (
        s.submission_id.clone(),
        sample::encode(&s, Encoding::Protobuf),
    )
}

/// Publishes the bodies from a task, confirmed, message id = submission id.
fn publish_in_background(
    v: &Vhosts,
    messages: Vec<(String, Vec<u8>)>,
) -> tokio::task::JoinHandle<()> {
    let url = v.url("he");
    tokio::spawn(async move {
        let connection = connect(&url).await;
        let channel = confirm_channel(&connection).await;
        for (id, body) in &messages {
            publish(
                &channel,
                "submissions",
                body,
                Some("application/x-protobuf"),
                Some(id),
                None,
            )
            .await;
        }
        let _ = connection.close(200, "done".into()).await;
    })
}

/// Copies per submission id at the back-office queue of `destination`, taken until
/// `distinct` ids arrived and nothing more came for `quiet`, or `HANG` passed.
async fn arrivals(
    channel: &lapin::Channel,
    destination: &str,
    distinct: usize,
    quiet: Duration,
) -> HashMap<String, usize> {
    let mut copies: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + HANG;
    while copies.len() < distinct && Instant::now() < deadline {
        for m in take_backoffice(channel, destination, 1000, Duration::from_secs(2)).await {
            *copies.entry(m.message_id().unwrap()).or_default() += 1;
        }
    }
    for m in drain_backoffice(channel, destination, quiet).await {
        *copies.entry(m.message_id().unwrap()).or_default() += 1;
    }
    copies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_the_queue_and_one_killed_loses_nothing() {
    const SUBMISSIONS: usize = 3000;
    const KILL_AFTER: u32 = 1000;
    let v = Vhosts::create("instances-kill", &["gw", "he"]);
    let schema = PgSchema::create("instances_kill").await;
    let base = config(&v, "");
    declare(&base.build()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut instances: Vec<Instance> = (0..3)
        .map(|n| Instance::spawn(dir.path(), n, &base, &schema))
        .collect();
    wait_consumers(&v, 3, &instances).await;
    // Each instance lists all three, itself marked as the one answering.
    for (n, instance) in instances.iter().enumerate() {
        let overview = wait_listed(instance, 3, 0).await;
        assert_eq!(
            overview.instances.iter().filter(|i| i.current).count(),
            1,
            "instance {n}: {:#?}",
            overview.instances
        );
        assert!(
            overview
                .instances
                .iter()
                .all(|i| !i.host.is_empty() && i.pid > 0)
        );
    }

    let messages: Vec<(String, Vec<u8>)> = (0..SUBMISSIONS)
        .map(|_| submission("064110000000"))
        .collect();
    let ids: Vec<String> = messages.iter().map(|(id, _)| id.clone()).collect();
    let publisher = publish_in_background(&v, messages);
    // Kill one while the queue is busy: it holds up to PREFETCH unacked submissions.
    let deadline = Instant::now() + HANG;
    while v.queue_depth("he", &backoffice_queue(DARMSTADT)).await < KILL_AFTER {
        assert!(Instant::now() < deadline, "deliveries do not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It had a share before it dies (its own live counters say so).
    let deadline = Instant::now() + HANG;
    while instances[1].overview().await.platforms[0].forwarded == 0 {
        assert!(Instant::now() < deadline, "instance 1 forwards nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed_pid = instances[1].child.id();
    instances[1].kill();
    // What had arrived by the kill bounds what the killed instance forwarded.
    let before_kill = u64::from(v.queue_depth("he", &backoffice_queue(DARMSTADT)).await);
    publisher.await.unwrap();

    let connection = connect(&v.url("he")).await;
    let channel = connection.create_channel().await.unwrap();
    let copies = arrivals(&channel, DARMSTADT, SUBMISSIONS, Duration::from_secs(3)).await;
    let gw = connect(&v.url("gw")).await;
    let dead = drain_dead_letters(
        &gw.create_channel().await.unwrap(),
        Duration::from_millis(500),
    )
    .await;
    let lost: Vec<&String> = ids.iter().filter(|id| !copies.contains_key(*id)).collect();
    let duplicated: usize = copies.values().map(|n| n - 1).sum();
    println!(
        "published {SUBMISSIONS}, arrived {} distinct, {duplicated} duplicates, {} dead letters, {} lost",
        copies.len(),
        dead.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "lost {} submissions, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(dead.is_empty(), "{} dead letters", dead.len());
    assert!(
        copies.keys().all(|id| ids.contains(id)),
        "something arrived that was not published"
    );
    // Only what the killed instance had taken and not yet acked can go out twice.
    assert!(
        duplicated <= usize::from(PREFETCH),
        "{duplicated} duplicates, more than the killed instance's prefetch of {PREFETCH}"
    );

    // The survivors list the killed one as gone, with its share before the kill; theirs
    // covers the rest.
    let overview = wait_listed(&instances[0], 2, 1).await;
    let gone = overview.instances.iter().find(|i| !i.alive).unwrap();
    assert_eq!(gone.pid, killed_pid);
    let survivors: Vec<&pb::Instance> = overview.instances.iter().filter(|i| i.alive).collect();
    // Heartbeats every 5 s: wait for the survivors' last counts.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let overview = instances[2].overview().await;
    let forwarded: u64 = overview
        .instances
        .iter()
        .filter(|i| i.alive)
        .map(|i| i.forwarded)
        .sum();
    println!("arrived by the kill: {before_kill}; survivors forwarded {forwarded}");
    assert!(survivors.len() == 2 && survivors.iter().all(|i| i.pid != killed_pid));
    assert!(
        forwarded >= SUBMISSIONS as u64 - before_kill,
        "the survivors forwarded {forwarded}, not the {} left after the kill: {:#?}",
        SUBMISSIONS as u64 - before_kill,
        overview.instances
    );
    drop(instances);
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_instance_is_used_by_all_and_each_submission_goes_out_once() {
    let v = Vhosts::create("instances-route", &["gw", "he"]);
    let schema = PgSchema::create("instances_route").await;
    // Overdue after a second, looked for every 200 ms by each instance.
    let base = config(
        &v,
        "[receipts]\noverdue_after = \"1s\"\ncheck_interval = \"200ms\"\n",
    )
    .destination("he-kassel", "06", "he", "Kassel");
    declare(&base.build()).await;
    let dir = tempfile::tempdir().unwrap();
    let instances: Vec<Instance> = (0..2)
        .map(|n| Instance::spawn(dir.path(), n, &base, &schema))
        .collect();
    wait_consumers(&v, 2, &instances).await;

    // Kassel (06611) has no route: a submission for it would be dead-lettered. Instance 0
    // gets one; instance 1 uses it within its poll interval.
    let changed = Instant::now();
    DirectoryServiceClient::new(instances[0].channel().await)
        .create_route(op(pb::CreateRouteRequest {
            route: Some(pb::Route {
                service: MELDE.to_owned(),
                region: "06611".to_owned(),
                destination: "he-kassel".to_owned(),
                ..pb::Route::default()
            }),
            ..pb::CreateRouteRequest::default()
        }))
        .await
        .unwrap();
    let mut other = DirectoryServiceClient::new(instances[1].channel().await);
    loop {
        let resolved = other
            .resolve(op(pb::ResolveRequest {
                service: MELDE.into(),
                region: "066110000000".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        if resolved.destination.as_ref().map(|d| d.id.as_str()) == Some("he-kassel") {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(5),
            "instance 1 does not use the route created through instance 0: {resolved:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "route in use on the other instance after {:?}",
        changed.elapsed()
    );
    // The listing shows each instance's directory version as of its last heartbeat.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let overview = wait_listed(&instances[1], 2, 0).await;
        if overview.instances.iter().all(|i| i.directory_version == 1) {
            break;
        }
        assert!(Instant::now() < deadline, "{:#?}", overview.instances);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Submissions for Kassel, taken by whichever instance: all arrive there. Then each is
    // published again: the shared store knows it went out, so none arrives twice.
    let messages: Vec<(String, Vec<u8>)> = (0..40).map(|_| submission("066110000000")).collect();
    publish_in_background(&v, messages.clone()).await.unwrap();
    let connection = connect(&v.url("he")).await;
    let channel = connection.create_channel().await.unwrap();
    let first = arrivals(
        &channel,
        "he-kassel",
        messages.len(),
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(
        first.len(),
        messages.len(),
        "not all arrived at Kassel: {first:?}"
    );
    assert!(first.values().all(|&n| n == 1), "{first:?}");
    publish_in_background(&v, messages.clone()).await.unwrap();
    // Both instances are still consuming, so both took some of the copies.
    let again = drain_backoffice(&channel, "he-kassel", Duration::from_secs(2)).await;
    assert!(
        again.is_empty(),
        "{} republished submissions went out again",
        again.len()
    );
    let deadline = Instant::now() + HANG;
    while v.queue_depth("he", "submissions").await > 0 {
        assert!(
            Instant::now() < deadline,
            "the republished copies stay on the queue"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // No back office answers: each submission is reported overdue to the platform exactly
    // once, although both instances look every 200 ms.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let statuses = drain(
        &channel,
        &ozg_gateway::topology::status_queue("civento-he"),
        Duration::from_secs(2),
    )
    .await;
    let mut overdue: HashMap<String, usize> = HashMap::new();
    for m in &statuses {
        if m.header("x-ozg-status").as_deref() == Some("overdue") {
            let event: ozg_gateway::wire::v1::StatusEvent =
                serde_json::from_slice(&m.body).unwrap();
            *overdue.entry(event.submission_id).or_default() += 1;
        }
    }
    assert_eq!(overdue.len(), messages.len(), "overdue events: {overdue:?}");
    assert!(
        overdue.values().all(|&n| n == 1),
        "reported more than once: {overdue:?}"
    );
    drop(instances);
    schema.drop().await;
}
