#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The store failing under the real gateway binary, as a platform, a disk and an operator
//! cause it: SQLite on a filesystem that really fills (a small tmpfs of the test's own) and
//! is freed again, a PostgreSQL role of the test's own disabled with its backends
//! terminated, the SQLite file deleted under the running gateway, a second gateway started
//! on the same SQLite store. Each test counts by submission id what reached the back office
//! and the store and prints a tally (`published= delivered= dead-lettered= lost=
//! duplicated=`).
//!
//! Needs root (mount, and `runuser -u postgres psql` for the role), a RabbitMQ with the
//! management plugin and a PostgreSQL on 127.0.0.1; each missing piece fails the test with
//! what is missing.

mod common;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ozg_gateway::admin::auth::hash_token;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::sample;
use ozg_gateway::topology::backoffice_queue;
use ozg_gateway::wire::admin as pb;
use pb::dead_letter_service_client::DeadLetterServiceClient;
use pb::directory_service_client::DirectoryServiceClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const BIN: &str = env!("CARGO_BIN_EXE_ozg-gateway");
const MELDE: &str = "99115005104000";
const PLATFORM: &str = "civento-th";
const DESTINATION: &str = "he-darmstadt";
const OPERATOR: &str = "store-faults-operator-token";
/// Long enough for anything the gateway does here; a test that waits this long has failed.
const HANG: Duration = Duration::from_secs(30);

// ---- a filesystem that fills --------------------------------------------------------------

/// A tmpfs of `size` mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
    filler: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount: {e}"));
        assert!(
            out.status.success(),
            "mount -t tmpfs {} failed (this test needs root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
            filler: dir.join("filler"),
        }
    }

    /// Writes a file until the filesystem is full.
    fn fill(&self) {
        use std::io::Write;
        let mut file = File::create(&self.filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling {}: {e}", self.filler.display()),
            }
        }
        // Whatever small rest a partial write left.
        while file.write(&[0u8]).is_ok_and(|n| n == 1) {}
    }

    fn free(&self) {
        std::fs::remove_file(&self.filler).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a gateway a failed test left running must not keep the mount.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

// ---- a PostgreSQL role of the test's own --------------------------------------------------

/// `sql` run by the `postgres` superuser over the local socket (peer or trust).
fn psql(sql: &str) -> String {
    let out = Command::new("runuser")
        .args([
            "-u", "postgres", "--", "psql", "-d", "ozg_test", "-qtAX", "-v",
        ])
        .arg("ON_ERROR_STOP=1")
        .arg("-c")
        .arg(sql)
        .output()
        .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
    assert!(
        out.status.success(),
        "psql {sql:?} failed (a PostgreSQL on this machine, deploy/local/postgres.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A login role and a schema it owns, both dropped (with the role's sessions) on drop.
struct PgRole {
    role: String,
    schema: String,
    url: String,
}

impl PgRole {
    fn create(test: &str) -> PgRole {
        let role = format!("ozgtest_{test}_{}", std::process::id());
        let schema = role.clone();
        psql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        psql(&format!("DROP ROLE IF EXISTS {role}"));
        psql(&format!("CREATE ROLE {role} LOGIN PASSWORD 'pw'"));
        psql(&format!("CREATE SCHEMA {schema} AUTHORIZATION {role}"));
        let url = format!(
            "postgres://{role}:pw@127.0.0.1:5432/ozg_test?options=-csearch_path%3D{schema}"
        );
        PgRole { role, schema, url }
    }

    /// As an operator or a platform's identity management would: no more logins, and
    /// this role's sessions (only these) ended.
    fn disable(&self) {
        psql(&format!("ALTER ROLE {} NOLOGIN", self.role));
        psql(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '{}'",
            self.role
        ));
    }

    fn enable(&self) {
        psql(&format!("ALTER ROLE {} LOGIN", self.role));
    }
}

impl Drop for PgRole {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            psql(&format!("ALTER ROLE {} NOLOGIN", self.role));
            psql(&format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '{}'",
                self.role
            ));
            psql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
            psql(&format!("DROP ROLE IF EXISTS {}", self.role));
        });
    }
}

// ---- the gateway binary -------------------------------------------------------------------

/// One test's world: its vhosts, a configuration file, the gateway's log.
struct World {
    v: Vhosts,
    dir: tempfile::TempDir,
    admin: SocketAddr,
    metrics: SocketAddr,
}

impl World {
    /// Thüringen's platform (prefetch `prefetch`) sends to Darmstadt; the store at `store`.
    fn new(test: &str, prefetch: u16, store: impl FnOnce(&Path) -> String) -> World {
        let v = Vhosts::create(test, &["gw", "th", "he"]);
        let dir = tempfile::tempdir().unwrap();
        let url = store(dir.path());
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let text = TestConfig::new(&v)
            .gateway(r#"confirm_timeout = "5s""#)
            .gateway(r#"shutdown_grace = "5s""#)
            .dead_letters_into_store()
            .store(&url)
            .telemetry(&format!("metrics_address = \"{metrics}\""))
            .platform(PLATFORM, "16", "th", Some(prefetch))
            .destination(DESTINATION, "06", "he", "Darmstadt")
            .route("*", "06411", DESTINATION)
            .extra(&format!(
                "[admin]\naddress = \"{admin}\"\n\n[[admin.tokens]]\nname = \"ops\"\n\
                 sha256 = \"{}\"\nroles = [\"operator\"]\n",
                hex::encode(hash_token(OPERATOR))
            ))
            .text();
        std::fs::write(dir.path().join("gateway.toml"), text).unwrap();
        World {
            v,
            dir,
            admin,
            metrics,
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("gateway.toml")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    async fn declare(&self) {
        declare(&parse_config(
            &std::fs::read_to_string(self.config()).unwrap(),
        ))
        .await;
    }

    /// Starts the binary and waits until it is SERVING.
    async fn start(&self) -> Gateway {
        let gateway = self.spawn(&self.config());
        assert!(
            gateway.wait_health("", ServingStatus::Serving).await,
            "gateway not SERVING within {HANG:?}: {}",
            tail(&self.log())
        );
        gateway
    }

    fn spawn(&self, config: &Path) -> Gateway {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Gateway {
            child,
            admin: self.admin,
            metrics: self.metrics,
        }
    }

    /// Messages ready on the platform's queue (unacked ones are not counted).
    async fn ingress_ready(&self) -> u32 {
        self.v.queue_depth("th", "submissions").await
    }

    async fn backoffice_depth(&self) -> u32 {
        self.v
            .queue_depth("he", &backoffice_queue(DESTINATION))
            .await
    }

    /// Waits until `done` holds for the back office's depth; the depth reached.
    async fn wait_backoffice(&self, what: &str, done: impl Fn(u32) -> bool) -> u32 {
        let deadline = Instant::now() + HANG;
        loop {
            let depth = self.backoffice_depth().await;
            if done(depth) {
                return depth;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: back office holds {depth} after {HANG:?}: {}",
                tail(&self.log())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Once the platform's queue is empty (or after 10 s) and a second more has passed,
    /// what [`take_delivered`](Self::take_delivered) takes.
    async fn take_delivered_once_drained(&self) -> HashMap<String, usize> {
        let wait = Instant::now() + Duration::from_secs(10);
        while self.ingress_ready().await > 0 && Instant::now() < wait {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.take_delivered().await
    }

    /// Everything on the back-office queue, counted by message id (= submission id).
    async fn take_delivered(&self) -> HashMap<String, usize> {
        let he = connect(&self.v.url("he")).await;
        let channel = he.create_channel().await.unwrap();
        let mut counts = HashMap::new();
        for m in drain_backoffice(&channel, DESTINATION, Duration::from_millis(500)).await {
            *counts
                .entry(m.message_id().unwrap_or_default())
                .or_default() += 1;
        }
        let _ = he.close(200, "counted".into()).await;
        counts
    }
}

/// The last lines of a gateway log, for failure messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

/// The gateway binary as a child process, killed if the test ends early.
struct Gateway {
    child: Child,
    admin: SocketAddr,
    metrics: SocketAddr,
}

impl Gateway {
    async fn grpc(&self) -> Option<tonic::transport::Channel> {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.admin))
            .unwrap()
            .connect()
            .await
            .ok()
    }

    /// The health of `service`, or `None` when it cannot be asked or is unknown.
    async fn health(&self, service: &str) -> Option<ServingStatus> {
        let mut client = HealthClient::new(self.grpc().await?);
        let status = client
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .ok()?
            .into_inner()
            .status;
        ServingStatus::try_from(status).ok()
    }

    /// Whether `service` reached `want` within [`HANG`].
    async fn wait_health(&self, service: &str, want: ServingStatus) -> bool {
        let deadline = Instant::now() + HANG;
        while Instant::now() < deadline {
            if self.health(service).await == Some(want) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Waits until this process has settled (recorded and acked, or handed back) every
    /// submission it took: `ozg_in_flight` is 0 for every platform.
    async fn wait_settled(&self) {
        let deadline = Instant::now() + HANG;
        loop {
            let in_flight = self.metric(&format!("ozg_in_flight{{platform=\"{PLATFORM}\"}}"));
            if in_flight == Some(0.0) {
                return;
            }
            assert!(Instant::now() < deadline, "still in flight: {in_flight:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A metric's value on `/metrics`.
    fn metric(&self, name: &str) -> Option<f64> {
        let body = ureq::get(format!("http://{}/metrics", self.metrics))
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()?;
        body.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// `ozg-gateway admin overview` as an operator sees it.
    fn overview(&self) -> String {
        let out = Command::new(BIN)
            .args(["admin", "--address", &format!("http://{}", self.admin)])
            .arg("overview")
            .env("OZG_ADMIN_TOKEN", OPERATOR)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    async fn wait(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// SIGTERM; the exit status (panics if it does not stop within 20 s).
    async fn terminate(mut self) -> ExitStatus {
        signal(&self.child, "-TERM");
        self.wait(Duration::from_secs(20))
            .await
            .expect("gateway did not stop within 20 s of SIGTERM")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- submissions and the tally ------------------------------------------------------------

/// A valid submission: (id, protobuf body).
fn good() -> (String, Vec<u8>) {
    let s = sample_submission(PLATFORM, "16", MELDE, "064110000000", 512);
    (
        s.submission_id.clone(),
        sample::encode(&s, Encoding::Protobuf),
    )
}

/// A submission the gateway dead-letters (`invalid-service-key`): (id, body).
fn invalid() -> (String, Vec<u8>) {
    let s = sample_submission(PLATFORM, "16", "12345678901234", "064110000000", 512);
    (
        s.submission_id.clone(),
        sample::encode(&s, Encoding::Protobuf),
    )
}

/// `message` with the operator's token.
fn authorized<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {OPERATOR}").parse().unwrap(),
    );
    request
}

/// The dead letters in the store once there are `want` (or after `within`).
async fn stored_dead_letters(
    gateway: &Gateway,
    want: usize,
    within: Duration,
) -> Vec<pb::DeadLetter> {
    let mut client = DeadLetterServiceClient::new(gateway.grpc().await.unwrap());
    let deadline = Instant::now() + within;
    loop {
        let stored: Vec<pb::DeadLetter> = client
            .list_dead_letters(authorized(pb::ListDeadLettersRequest::default()))
            .await
            .map(|r| r.into_inner().dead_letters)
            .unwrap_or_default();
        if stored.len() >= want || Instant::now() > deadline {
            return stored;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A platform publishing to its queue with confirms.
struct Platform {
    connection: lapin::Connection,
    channel: lapin::Channel,
}

impl Platform {
    async fn connect(world: &World) -> Platform {
        let connection = connect(&world.v.url("th")).await;
        let channel = confirm_channel(&connection).await;
        Platform {
            connection,
            channel,
        }
    }

    async fn publish(&self, messages: &[(String, Vec<u8>)]) {
        for (_, body) in messages {
            submit_encoded(&self.channel, body, Encoding::Protobuf).await;
        }
    }

    /// `n` new valid submissions, published; returned for republishing.
    async fn publish_new(&self, n: usize) -> Vec<(String, Vec<u8>)> {
        let messages: Vec<_> = (0..n).map(|_| good()).collect();
        self.publish(&messages).await;
        messages
    }

    async fn close(self) {
        let _ = self.connection.close(200, "done".into()).await;
    }
}

/// What the back office received of what was published.
struct Tally {
    published: usize,
    delivered: usize,
    lost: Vec<String>,
    duplicated: Vec<String>,
}

impl Tally {
    fn count(published: &[&(String, Vec<u8>)], delivered: &HashMap<String, usize>) -> Tally {
        let ids: HashSet<&String> = published.iter().map(|(id, _)| id).collect();
        let strangers: Vec<_> = delivered.keys().filter(|id| !ids.contains(id)).collect();
        assert!(strangers.is_empty(), "nobody published {strangers:?}");
        Tally {
            published: published.len(),
            delivered: ids.iter().filter(|id| delivered.contains_key(**id)).count(),
            lost: ids
                .iter()
                .filter(|id| !delivered.contains_key(**id))
                .map(|id| (*id).clone())
                .collect(),
            duplicated: delivered
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(id, _)| id.clone())
                .collect(),
        }
    }

    /// Nothing lost, and nothing delivered twice but what `allowed` (submissions whose
    /// deliveries were held when the gateway stopped) may repeat.
    fn assert_none_lost_and_duplicates_only_of(&self, allowed: &[(String, Vec<u8>)], log: &Path) {
        assert!(self.lost.is_empty(), "lost: {:?}", self.lost);
        let allowed: HashSet<&String> = allowed.iter().map(|(id, _)| id).collect();
        let unexpected: Vec<_> = self
            .duplicated
            .iter()
            .filter(|id| !allowed.contains(id))
            .collect();
        assert!(
            unexpected.is_empty(),
            "{} submissions reached the back office twice: acked without a record: {}",
            unexpected.len(),
            tail(log)
        );
    }

    fn line(&self, dead_lettered: usize) -> String {
        format!(
            "published={} delivered={} dead-lettered={dead_lettered} lost={} duplicated={}",
            self.published,
            self.delivered,
            self.lost.len(),
            self.duplicated.len()
        )
    }
}

// ---- the tests ----------------------------------------------------------------------------

/// SQLite on a disk that fills: the gateway delivers what it had taken, holds those
/// deliveries unacked (their records cannot be written), takes nothing more and says so;
/// once the disk is freed the records are written, the held deliveries acked, and the
/// rest delivered, without a restart. The disk fills once more and SIGTERM comes before it
/// is freed: every submission of that round is back on the queue, and after a restart only
/// those delivered while held reach the back office a second time (the duplicate the
/// README names). A republish of everything else, to the restarted gateway, reaches the
/// back office not once more: each was recorded before it was acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_full_disk_holds_acks_until_the_records_are_written() {
    const PREFETCH: u16 = 20;
    let started = Instant::now();
    let mut disk = None;
    let world = World::new("store-full", PREFETCH, |dir| {
        let data = dir.join("data");
        disk = Some(Tmpfs::mount(&data, "4m"));
        format!("sqlite://{}/gw.db", data.display())
    });
    let disk = disk.unwrap();
    world.declare().await;
    let gateway = world.start().await;
    let platform = Platform::connect(&world).await;

    let before = platform.publish_new(20).await;
    world
        .wait_backoffice("before the disk filled", |d| d >= 20)
        .await;
    // Recorded before the disk fills: a record still being written then would fail and
    // take the store down before any of the next submissions is taken, and the test is
    // about those.
    gateway.wait_settled().await;

    disk.fill();
    let during = platform.publish_new(100).await;
    let store_down = gateway
        .wait_health("store", ServingStatus::NotServing)
        .await;
    let overall_down = gateway.health("").await == Some(ServingStatus::NotServing);
    let metric_down = gateway.metric("ozg_store_up");
    let overview_down = gateway.overview();
    // Time for anything the gateway would still take and deliver.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = world.backoffice_depth().await - 20;
    let ready_while_full = world.ingress_ready().await;

    disk.free();
    world
        .wait_backoffice("after the disk was freed", |d| d >= 120)
        .await;
    let store_up = gateway.wait_health("store", ServingStatus::Serving).await;
    let metric_up = gateway.metric("ozg_store_up");
    gateway.wait_settled().await;

    disk.fill();
    let stopped_during = platform.publish_new(30).await;
    let down_again = gateway
        .wait_health("store", ServingStatus::NotServing)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = gateway.terminate().await;
    let held_at_stop = world.backoffice_depth().await - 120;
    let returned = world.ingress_ready().await;
    disk.free();

    // Everything recorded once more, to a gateway that knows it only from its store.
    let gateway = world.start().await;
    platform.publish(&before).await;
    platform.publish(&during).await;
    let delivered = world.take_delivered_once_drained().await;
    let published: Vec<_> = before
        .iter()
        .chain(&during)
        .chain(&stopped_during)
        .collect();
    let tally = Tally::count(&published, &delivered);
    println!(
        "full SQLite disk twice, freed once without and once after a restart: {} \
         (republished={}; first time: delivered and held={held}, left on the queue={ready_while_full}; \
         second time: delivered and held at SIGTERM={held_at_stop}, back on the queue={returned} of 30) ({:?})",
        tally.line(0),
        before.len() + during.len(),
        started.elapsed()
    );
    gateway.terminate().await;
    platform.close().await;

    tally.assert_none_lost_and_duplicates_only_of(&stopped_during, &world.log());
    assert_eq!(
        returned, 30,
        "after SIGTERM on the full disk only {returned} of 30 were back on the queue: the \
         others were acked without their record"
    );
    assert_eq!(
        tally.duplicated.len(),
        usize::try_from(held_at_stop).unwrap(),
        "the second time, exactly the deliveries held at SIGTERM come again"
    );
    assert!(status.success(), "gateway exited {status:?} after SIGTERM");
    assert!(
        store_down && down_again,
        "health `store` never said NOT_SERVING"
    );
    assert!(
        overall_down,
        "overall health still SERVING with the store down"
    );
    assert_eq!(
        metric_down,
        Some(0.0),
        "ozg_store_up while the disk was full"
    );
    assert!(
        overview_down.contains("NOT ANSWERING")
            && overview_down.contains("delivery records cannot be written")
            && overview_down.contains("full"),
        "overview while the disk was full:\n{overview_down}"
    );
    for (what, n) in [("the first time", held), ("the second time", held_at_stop)] {
        assert!(
            (1..=u32::from(PREFETCH)).contains(&n),
            "{what} the disk was full, the gateway delivered {n}: it must deliver what it \
             had taken (held for the record) and nothing beyond its prefetch of {PREFETCH}"
        );
    }
    assert!(
        ready_while_full >= 100 - u32::from(PREFETCH),
        "while full, only {ready_while_full} of 100 waited on the queue"
    );
    assert!(store_up, "health `store` did not come back to SERVING");
    assert_eq!(
        metric_up,
        Some(1.0),
        "ozg_store_up after the disk was freed"
    );
}

/// SQLite on a disk that fills: dead-letter intake and admin writes fail cleanly while it
/// is full (letters held on the queue, UNAVAILABLE for the operator) and work again once
/// it is freed, without a restart: a transaction that failed on the full disk must not
/// leave the store's connection unusable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_full_disk_then_dead_letters_and_admin_writes_recover() {
    let started = Instant::now();
    let mut disk = None;
    let world = World::new("store-full-admin", 50, |dir| {
        let data = dir.join("data");
        disk = Some(Tmpfs::mount(&data, "4m"));
        format!("sqlite://{}/gw.db", data.display())
    });
    let disk = disk.unwrap();
    world.declare().await;
    let gateway = world.start().await;
    let mut directory = DirectoryServiceClient::new(gateway.grpc().await.unwrap());
    let platform = Platform::connect(&world).await;
    let op = |route: pb::Route| {
        authorized(pb::CreateRouteRequest {
            route: Some(route),
            ..Default::default()
        })
    };
    let route = |region: &str| pb::Route {
        service: MELDE.to_owned(),
        region: region.to_owned(),
        destination: DESTINATION.to_owned(),
        ..pb::Route::default()
    };

    disk.fill();
    let bad: Vec<_> = (0..5).map(|_| invalid()).collect();
    platform.publish(&bad).await;
    let refused = directory.create_route(op(route("06412"))).await;
    // The intake tries (and fails) on the full disk meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;

    disk.free();
    let stored = stored_dead_letters(&gateway, bad.len(), HANG).await;
    let accepted = directory.create_route(op(route("06413"))).await;
    let stored_ids: HashSet<&str> = stored.iter().map(|l| l.submission_id.as_str()).collect();
    let lost: Vec<_> = bad
        .iter()
        .filter(|(id, _)| !stored_ids.contains(id.as_str()))
        .collect();
    println!(
        "full SQLite disk, freed: published={} dead-lettered={} stored={} lost={} \
         duplicated={} ({:?})",
        bad.len(),
        bad.len(),
        stored.len(),
        lost.len(),
        stored.len().saturating_sub(stored_ids.len()),
        started.elapsed()
    );
    let status = gateway.terminate().await;
    platform.close().await;

    assert!(
        lost.is_empty(),
        "{} dead letters never reached the store after the disk was freed: {}",
        lost.len(),
        tail(&world.log())
    );
    assert_eq!(stored.len(), stored_ids.len(), "a dead letter stored twice");
    assert!(
        stored.iter().all(|l| l.reason == "invalid-service-key"),
        "{stored:?}"
    );
    let refused = refused.expect_err("a route was stored on a full disk");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("store") && !refused.message().contains("disk"),
        "the reason names the store, and the database's own text stays in the log: {}",
        refused.message()
    );
    accepted.unwrap_or_else(|e| panic!("admin write after the disk was freed: {e:?}"));
    assert!(status.success(), "gateway exited {status:?}");
}

/// A PostgreSQL store whose role is disabled and whose sessions are terminated in the
/// middle of a stream: deliveries whose records cannot be written are held unacked, the
/// gateway takes nothing more and says so, and when the role may log in again everything
/// is recorded, acked and delivered once, without a restart. Then once more, and SIGTERM
/// during the outage: every submission of that round not recorded is back on the queue
/// (none acked unrecorded); after a restart with the role enabled, only those delivered
/// during the outage may reach the back office a second time (the duplicate the README
/// names), and a republish of the first round reaches it not once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_role_disabled_holds_acks_and_sigterm_returns_them() {
    let started = Instant::now();
    let pg = PgRole::create("storefault");
    let url = pg.url.clone();
    let world = World::new("store-pg", 20, |_| url);
    world.declare().await;
    let gateway = world.start().await;
    let platform = Platform::connect(&world).await;

    let first: Vec<_> = (0..100).map(|_| good()).collect();
    let streaming = stream(&world, first.clone());
    tokio::time::sleep(Duration::from_millis(80)).await;
    pg.disable();
    streaming.await.unwrap();
    let first_down = gateway
        .wait_health("store", ServingStatus::NotServing)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered_during_first = world.backoffice_depth().await;
    pg.enable();
    world
        .wait_backoffice("after the role was enabled", |d| d >= 100)
        .await;
    let first_up = gateway.wait_health("store", ServingStatus::Serving).await;

    let second: Vec<_> = (0..40).map(|_| good()).collect();
    let streaming = stream(&world, second.clone());
    tokio::time::sleep(Duration::from_millis(30)).await;
    pg.disable();
    streaming.await.unwrap();
    let second_down = gateway
        .wait_health("store", ServingStatus::NotServing)
        .await;
    let status = gateway.terminate().await;
    let delivered_before_stop = world.backoffice_depth().await - 100;
    let returned = world.ingress_ready().await;
    let recorded = recorded(&pg, &second);

    pg.enable();
    let gateway = world.start().await;
    platform.publish(&first).await;
    let delivered = world.take_delivered_once_drained().await;
    let published: Vec<_> = first.iter().chain(&second).collect();
    let tally = Tally::count(&published, &delivered);
    println!(
        "PostgreSQL role disabled twice, SIGTERM during the second: {} (first round \
         republished={}, at the back office when the store came back={delivered_during_first}; \
         second round delivered={delivered_before_stop}, recorded={recorded}, back on the \
         queue after SIGTERM={returned}) ({:?})",
        tally.line(0),
        first.len(),
        started.elapsed()
    );
    gateway.terminate().await;
    platform.close().await;

    tally.assert_none_lost_and_duplicates_only_of(&second, &world.log());
    // Acked ones left the queue; each must have its record.
    let acked = second.len() - usize::try_from(returned).unwrap();
    assert!(
        acked <= recorded,
        "after SIGTERM during the outage {acked} of the second round were acked, but only \
         {recorded} recorded"
    );
    assert!(
        tally.duplicated.len() <= usize::try_from(delivered_before_stop).unwrap(),
        "more duplicates than deliveries made when the gateway stopped"
    );
    assert!(status.success(), "gateway exited {status:?} after SIGTERM");
    assert!(
        first_down && second_down,
        "health `store` never said NOT_SERVING"
    );
    assert!(
        first_up,
        "health `store` did not come back without a restart"
    );
}

/// Publishes `messages` from a connection of its own, one every 2 ms, so that a fault
/// injected meanwhile meets submissions at every stage.
fn stream(world: &World, messages: Vec<(String, Vec<u8>)>) -> tokio::task::JoinHandle<()> {
    let url = world.v.url("th");
    tokio::spawn(async move {
        let connection = connect(&url).await;
        let channel = confirm_channel(&connection).await;
        for (_, body) in &messages {
            submit_encoded(&channel, body, Encoding::Protobuf).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let _ = connection.close(200, "done".into()).await;
    })
}

/// How many of `messages` have a delivery record in `pg`'s schema.
fn recorded(pg: &PgRole, messages: &[(String, Vec<u8>)]) -> usize {
    let ids: Vec<String> = messages.iter().map(|(id, _)| format!("'{id}'")).collect();
    psql(&format!(
        "SELECT count(*) FROM {}.delivered_submissions WHERE submission_id IN ({})",
        pg.schema,
        ids.join(", ")
    ))
    .trim()
    .parse()
    .unwrap()
}

/// The SQLite file deleted under the running gateway: it says so (health, log) within
/// seconds and takes nothing more, rather than recording into a file nobody will see
/// again. After a restart on a fresh file every submission published meanwhile is
/// delivered, and every one dead-lettered meanwhile is in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_deleted_while_running_stops_taking_submissions() {
    let started = Instant::now();
    let world = World::new("store-deleted", 50, |dir| {
        format!("sqlite://{}/data/gw.db", dir.display())
    });
    world.declare().await;
    let gateway = world.start().await;
    let platform = Platform::connect(&world).await;
    let before = platform.publish_new(10).await;
    world
        .wait_backoffice("before the deletion", |d| d >= 10)
        .await;
    // Settled before the file goes: one delivered but still unacked then would come again
    // after the restart, to a store that no longer knows it.
    gateway.wait_settled().await;

    let data = world.dir.path().join("data");
    for name in ["gw.db", "gw.db-wal", "gw.db-shm"] {
        let _ = std::fs::remove_file(data.join(name));
    }
    let noticed = gateway
        .wait_health("store", ServingStatus::NotServing)
        .await;
    let during = platform.publish_new(30).await;
    let bad: Vec<_> = (0..3).map(|_| invalid()).collect();
    platform.publish(&bad).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delivered_while_gone = world.backoffice_depth().await - 10;
    let status = gateway.terminate().await;
    let returned = world.ingress_ready().await;
    let logged = std::fs::read_to_string(world.log())
        .unwrap_or_default()
        .contains("was deleted while the gateway runs");

    let gateway = world.start().await;
    world
        .wait_backoffice("after the restart", |d| d >= 40)
        .await;
    let stored: HashSet<String> = stored_dead_letters(&gateway, bad.len(), Duration::from_secs(10))
        .await
        .into_iter()
        .map(|l| l.submission_id)
        .collect();
    let delivered = world.take_delivered().await;
    let published: Vec<_> = before.iter().chain(&during).collect();
    let tally = Tally::count(&published, &delivered);
    let letters_lost: Vec<_> = bad.iter().filter(|(id, _)| !stored.contains(id)).collect();
    println!(
        "SQLite file deleted while running, restart: {} dead letters published={} stored={} \
         lost={} (while the file was gone: delivered={delivered_while_gone}, back on the \
         queue after SIGTERM={returned} of 33) ({:?})",
        tally.line(bad.len()),
        bad.len(),
        bad.len() - letters_lost.len(),
        letters_lost.len(),
        started.elapsed()
    );
    gateway.terminate().await;
    platform.close().await;

    assert!(tally.lost.is_empty(), "lost: {:?}", tally.lost);
    assert!(tally.duplicated.is_empty(), "{:?}", tally.duplicated);
    assert!(
        letters_lost.is_empty(),
        "{} dead letters were acked into the deleted file and are gone",
        letters_lost.len()
    );
    assert!(
        noticed,
        "health `store` never said NOT_SERVING after the deletion"
    );
    assert!(logged, "no error in the log: {}", tail(&world.log()));
    // The 30 valid ones go back to the queue; the 3 invalid ones may be dead-lettered while
    // the subscription winds down (the dead-letter queue keeps them until the store is
    // back, and every one of them is stored in the end: asserted above).
    assert_eq!(
        delivered_while_gone, 0,
        "the gateway delivered submissions while its file was gone"
    );
    assert!(
        (30..=33).contains(&returned),
        "only {returned} of the 30 valid submissions were back on the queue after SIGTERM"
    );
    assert!(status.success(), "gateway exited {status:?}");
}

/// A second gateway on the same SQLite store is refused at start with exit 1 and the
/// first one's pid; the first keeps delivering.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_gateway_on_one_sqlite_store_is_refused() {
    let world = World::new("store-locked", 50, |dir| {
        format!("sqlite://{}/data/gw.db", dir.display())
    });
    world.declare().await;
    let first = world.start().await;
    // The same store; its own admin and metrics ports, so that nothing else conflicts.
    let text = std::fs::read_to_string(world.config())
        .unwrap()
        .replace(
            &world.admin.to_string(),
            &format!("127.0.0.1:{}", free_port()),
        )
        .replace(
            &world.metrics.to_string(),
            &format!("127.0.0.1:{}", free_port()),
        );
    let second_config = world.dir.path().join("second.toml");
    std::fs::write(&second_config, text).unwrap();
    let second_log = world.dir.path().join("second.log");
    let mut second = Command::new(BIN)
        .args(["run", "--config", second_config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(File::create(&second_log).unwrap())
        .spawn()
        .unwrap();
    let exited = wait_exit(&mut second, Duration::from_secs(15));
    if exited.is_none() {
        let _ = second.kill();
        let _ = second.wait();
    }
    let message = std::fs::read_to_string(&second_log).unwrap_or_default();

    let platform = Platform::connect(&world).await;
    let sent = platform.publish_new(5).await;
    world
        .wait_backoffice("from the first gateway", |d| d >= 5)
        .await;
    let delivered = world.take_delivered().await;
    let tally = Tally::count(&sent.iter().collect::<Vec<_>>(), &delivered);
    println!(
        "second gateway on one SQLite store: exit {exited:?}; first gateway: {}",
        tally.line(0)
    );
    let pid = first.child.id();
    let status = first.terminate().await;
    platform.close().await;

    assert_eq!(
        exited.and_then(|s| s.code()),
        Some(1),
        "the second gateway was not refused: {message}"
    );
    assert!(
        message.contains(&format!("in use by another process (pid {pid})")),
        "{message}"
    );
    assert!(message.contains("gw.db"), "{message}");
    assert!(tally.lost.is_empty() && tally.duplicated.is_empty());
    assert!(status.success(), "first gateway exited {status:?}");
}
