//! Test harness: a real RabbitMQ (127.0.0.1:5672, management API on 15672), vhosts of our
//! own per test so that tests run in parallel without seeing each other, and the real
//! gateway started in-process through `ozg_gateway::run`.
//!
//! No broker, no test: every helper panics with a clear message when the broker does not
//! answer (deploy/local/test.sh starts one).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod health;
pub mod node;
pub mod pki;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use ozg_gateway::Config;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::sample::{self, SampleSpec};
use ozg_gateway::topology::{backoffice_queue, status_queue};
use ozg_gateway::wire::v1 as wire;
use sqlx::Executor;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672";
pub const MANAGEMENT: &str = "http://127.0.0.1:15672/api";
pub const AUTH: &str = "Basic Z3Vlc3Q6Z3Vlc3Q="; // guest:guest
/// The gateway's dead-letter queue (on the `dead_letter_broker`).
pub const DEAD_LETTERS: &str = "ozg.gateway.dead-letters";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A set of vhosts that exist for one test and are deleted when it ends.
pub struct Vhosts {
    pub names: HashMap<String, String>,
}

impl Vhosts {
    /// Creates one vhost per label, named uniquely for this test run.
    pub fn create(test: &str, labels: &[&str]) -> Vhosts {
        let run = format!(
            "{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            test
        );
        let mut names = HashMap::new();
        for label in labels {
            let name = format!("ozgtest-{run}-{label}");
            management("PUT", &format!("/vhosts/{name}"), Some("{}"));
            management(
                "PUT",
                &format!("/permissions/{name}/guest"),
                Some(r#"{"configure":".*","write":".*","read":".*"}"#),
            );
            names.insert((*label).to_owned(), name);
        }
        Vhosts { names }
    }

    pub fn name(&self, label: &str) -> &str {
        &self.names[label]
    }

    pub fn url(&self, label: &str) -> String {
        format!("{AMQP}/{}", self.name(label))
    }

    /// Messages ready in a queue, as the broker counts them (a passive declare: nothing is
    /// consumed or reordered).
    pub async fn queue_depth(&self, label: &str, queue: &str) -> u32 {
        let connection = connect(&self.url(label)).await;
        let depth = message_count(&connection, queue).await;
        let _ = connection.close(200, "done".into()).await;
        depth
    }
}

impl Drop for Vhosts {
    fn drop(&mut self) {
        // Concurrently: deleting a vhost takes a few hundred ms, and some tests have 17.
        std::thread::scope(|scope| {
            for name in self.names.values() {
                scope.spawn(move || {
                    let _ = ureq::delete(format!("{MANAGEMENT}/vhosts/{name}"))
                        .header("Authorization", AUTH)
                        .call();
                });
            }
        });
    }
}

fn management(method: &str, path: &str, body: Option<&str>) {
    let url = format!("{MANAGEMENT}{path}");
    let result = match method {
        "PUT" => ureq::put(&url)
            .header("Authorization", AUTH)
            .header("Content-Type", "application/json")
            .send(body.unwrap_or("{}")),
        other => panic!("unsupported method {other}"),
    };
    if let Err(e) = result {
        panic!(
            "RabbitMQ management API {method} {url} failed: {e}\n\
             The tests need a real RabbitMQ with the management plugin on 127.0.0.1 \
             (run deploy/local/test.sh, which starts one)."
        );
    }
}

/// Messages ready in `queue`, by a passive declare on a channel of its own (nothing is
/// consumed or reordered).
pub async fn message_count(connection: &Connection, queue: &str) -> u32 {
    let channel = connection.create_channel().await.unwrap();
    let q = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("queue {queue}: {e}"));
    let _ = channel.close(200, "counted".into()).await;
    q.message_count()
}

pub async fn connect(url: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e} (is RabbitMQ running?)"))
}

/// A channel in confirm mode, for publishing as a platform would.
pub async fn confirm_channel(connection: &Connection) -> Channel {
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    channel
}

pub async fn publish(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    content_type: Option<&str>,
    message_id: Option<&str>,
    headers: Option<FieldTable>,
) {
    let mut properties = BasicProperties::default().with_delivery_mode(2);
    if let Some(ct) = content_type {
        properties = properties.with_content_type(ct.into());
    }
    if let Some(id) = message_id {
        properties = properties.with_message_id(id.into());
    }
    if let Some(h) = headers {
        properties = properties.with_headers(h);
    }
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        confirm.is_ack(),
        "broker did not confirm the test's publish"
    );
}

/// A message taken off a queue by a test.
#[derive(Debug, Clone)]
pub struct Received {
    pub properties: BasicProperties,
    pub body: Vec<u8>,
    pub redelivered: bool,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        ozg_gateway::amqp::header_text(self.properties.headers().as_ref(), name)
    }
    pub fn message_id(&self) -> Option<String> {
        self.properties.message_id().as_ref().map(|s| s.to_string())
    }
    pub fn header_value(&self, name: &str) -> Option<AMQPValue> {
        self.properties
            .headers()
            .as_ref()?
            .inner()
            .get(name)
            .cloned()
    }
}

/// Takes up to `n` messages off `queue`, waiting at most `timeout` for them all.
pub async fn take(channel: &Channel, queue: &str, n: usize, timeout: Duration) -> Vec<Received> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        match channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .unwrap_or_else(|e| panic!("basic_get {queue}: {e}"))
        {
            Some(m) => {
                let d = m.delivery;
                d.acker.ack(BasicAckOptions::default()).await.unwrap();
                out.push(Received {
                    properties: d.properties,
                    body: d.data,
                    redelivered: d.redelivered,
                });
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    out
}

/// Takes whatever arrives on `queue` until nothing came for `quiet`.
pub async fn drain(channel: &Channel, queue: &str, quiet: Duration) -> Vec<Received> {
    let mut out = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        let got = take(channel, queue, usize::MAX, Duration::from_millis(100)).await;
        if !got.is_empty() {
            last = Instant::now();
            out.extend(got);
        }
    }
    out
}

/// The gateway running in-process, stopped (gracefully) when `stop` is called.
pub struct RunningGateway {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), ozg_gateway::RunError>>,
}

impl RunningGateway {
    pub fn start(config: Config) -> RunningGateway {
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(ozg_gateway::run(config, async {
            let _ = stopped.await;
        }));
        RunningGateway {
            stop: Some(stop),
            handle,
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(60), &mut self.handle)
            .await
            .expect("gateway did not stop within 60 s")
            .expect("gateway task panicked");
        result.expect("gateway ended with an error");
    }

    pub fn is_running(&self) -> bool {
        !self.handle.is_finished()
    }
}

/// The gateway in-process, its admin address learned from `run_reporting`.
pub struct Admin {
    pub address: std::net::SocketAddr,
    /// The web console's address, when the configuration has `[console]`.
    pub console: Option<std::net::SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), ozg_gateway::RunError>>,
}

/// `OZG_TEST_LOG=<filter>` (e.g. `info` or `ozg_gateway=debug`) prints an in-process
/// gateway's log on stderr, for diagnosing a failing test with `-- --nocapture`.
pub fn log_if_asked() {
    if let Ok(filter) = std::env::var("OZG_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

impl Admin {
    pub async fn start(config: ozg_gateway::Config) -> Admin {
        declare(&config).await;
        Admin::launch(config).await
    }

    /// Starts the gateway on a topology the test declared itself.
    pub async fn launch(config: ozg_gateway::Config) -> Admin {
        log_if_asked();
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let handle = tokio::spawn(ozg_gateway::app::run_reporting(
            config,
            async {
                let _ = stopped.await;
            },
            move |ready| {
                let _ = ready_tx.send(ready);
            },
        ));
        let ready = tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .expect("gateway did not start in time")
            .expect("gateway ended before it was ready");
        Admin {
            address: ready.admin_address.expect("admin API configured"),
            console: ready.console_address,
            stop: Some(stop),
            handle,
        }
    }

    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.address))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), &mut self.handle)
            .await
            .expect("gateway did not stop within 60 s")
            .expect("gateway task panicked")
            .expect("gateway ended with an error");
    }
}

/// Parses a test configuration. Without a `[store]` section of its own, the test gets an
/// SQLite store in a fresh temporary directory, so that tests never share deduplication
/// state.
pub fn parse_config(text: &str) -> Config {
    let text = if text.contains("[store]") {
        text.to_owned()
    } else {
        format!(
            "{text}\n[store]\nurl = \"sqlite://{}\"\n",
            temp_store_path()
        )
    };
    Config::parse(&text, "test.toml", Path::new(".")).unwrap_or_else(|e| panic!("{e}"))
}

/// A path for an SQLite store that no other test uses.
pub fn temp_store_path() -> String {
    let dir = std::env::temp_dir().join(format!(
        "ozgtest-store-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    dir.join("dedup.db").display().to_string()
}

/// Deletes an exchange on the broker at `url`, as a back office's operator might.
pub async fn delete_exchange(url: &str, exchange: &str) {
    let connection = connect(url).await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .exchange_delete(
            exchange.into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("deleting exchange {exchange}: {e}"));
    let _ = connection.close(200, "done".into()).await;
}

pub async fn declare(config: &Config) {
    ozg_gateway::amqp::declare::declare(config).await.unwrap();
}

/// Declares the topology of `config`, then starts the gateway on it.
pub async fn start_gateway(config: Config) -> RunningGateway {
    declare(&config).await;
    RunningGateway::start(config)
}

// ---- test configurations ------------------------------------------------------------------

/// Which table `TestConfig::line` adds to.
#[derive(Clone, Copy)]
enum Table {
    Gateway,
    Store,
    Retry,
    Telemetry,
    Platform,
    Destination,
    Route,
}

/// A test configuration, written as TOML: a `[gateway]` whose dead letters go to the broker
/// `gw`, one broker per vhost of the test (`[brokers.<label>]`, named by its label), and the
/// platforms, destinations and routes added, each array in the order added.
pub struct TestConfig {
    gateway: Vec<String>,
    store: Vec<String>,
    retry: Vec<String>,
    telemetry: Vec<String>,
    brokers: Vec<(String, String)>,
    platforms: Vec<Vec<String>>,
    destinations: Vec<Vec<String>>,
    routes: Vec<Vec<String>>,
    extra: Vec<String>,
    last: Table,
}

impl TestConfig {
    pub fn new(vhosts: &Vhosts) -> TestConfig {
        let mut labels: Vec<&String> = vhosts.names.keys().collect();
        labels.sort();
        TestConfig {
            // Dead letters stay on the queue, where these tests count them; the admin tests
            // turn the intake on with `dead_letters_into_store`.
            gateway: vec![
                r#"dead_letter_broker = "gw""#.to_owned(),
                "store_dead_letters = false".to_owned(),
            ],
            store: Vec::new(),
            retry: Vec::new(),
            telemetry: Vec::new(),
            brokers: labels
                .into_iter()
                .map(|label| (label.clone(), vhosts.url(label)))
                .collect(),
            platforms: Vec::new(),
            destinations: Vec::new(),
            routes: Vec::new(),
            extra: Vec::new(),
            last: Table::Gateway,
        }
    }

    /// The gateway takes its dead-letter queue into the store (the default outside tests).
    pub fn dead_letters_into_store(mut self) -> Self {
        self.gateway
            .retain(|line| !line.starts_with("store_dead_letters"));
        self
    }

    /// Raw TOML appended after everything else, e.g. an `[admin]` table.
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push(toml.to_owned());
        self
    }

    /// A line of the `[gateway]` table, e.g. `confirm_timeout = "5s"`.
    pub fn gateway(mut self, line: &str) -> Self {
        self.gateway.push(line.to_owned());
        self.last = Table::Gateway;
        self
    }

    /// A line of the `[retry]` table, e.g. `max_attempts = 1`.
    pub fn retry(mut self, line: &str) -> Self {
        self.retry.push(line.to_owned());
        self.last = Table::Retry;
        self
    }

    /// A line of the `[telemetry]` table, e.g. `metrics_address = "127.0.0.1:9464"`.
    pub fn telemetry(mut self, line: &str) -> Self {
        self.telemetry.push(line.to_owned());
        self.last = Table::Telemetry;
        self
    }

    /// A `[store]` at `url` (without one, `parse_config` gives the test an SQLite store of
    /// its own).
    pub fn store(mut self, url: &str) -> Self {
        self.store = vec![format!("url = \"{url}\"")];
        self.last = Table::Store;
        self
    }

    /// A platform on the broker `broker`, ingress queue `submissions`, status exchange
    /// `status`, and the default prefetch unless one is given.
    pub fn platform(mut self, id: &str, land: &str, broker: &str, prefetch: Option<u16>) -> Self {
        let mut lines = vec![
            format!("id = \"{id}\""),
            format!("land = \"{land}\""),
            format!("broker = \"{broker}\""),
            "ingress_queue = \"submissions\"".to_owned(),
            "status_exchange = \"status\"".to_owned(),
        ];
        lines.extend(prefetch.map(|p| format!("prefetch = {p}")));
        self.platforms.push(lines);
        self.last = Table::Platform;
        self
    }

    /// A city (`kreisfreie-stadt`) on the broker `broker`, reached through the exchange
    /// `backoffice` with its id as the routing key.
    pub fn destination(self, id: &str, land: &str, broker: &str, name: &str) -> Self {
        self.destination_with(id, land, broker, name, "kreisfreie-stadt", "backoffice")
    }

    /// A destination of any kind behind any exchange, with its id as the routing key.
    pub fn destination_with(
        mut self,
        id: &str,
        land: &str,
        broker: &str,
        name: &str,
        kind: &str,
        exchange: &str,
    ) -> Self {
        self.destinations.push(vec![
            format!("id = \"{id}\""),
            format!("name = \"{name}\""),
            format!("kind = \"{kind}\""),
            format!("land = \"{land}\""),
            format!("broker = \"{broker}\""),
            format!("exchange = \"{exchange}\""),
            format!("routing_key = \"{id}\""),
        ]);
        self.last = Table::Destination;
        self
    }

    /// Two destinations on the broker `he` for every service: `healthy` (Darmstadt, 06411,
    /// exchange `backoffice`) and `ghost` (Kassel, 06611, exchange `ghost-exchange`, which
    /// tests delete with [`delete_exchange`] to make its deliveries fail).
    pub fn healthy_and_ghost(self) -> Self {
        self.destination("healthy", "06", "he", "Darmstadt")
            .destination_with(
                "ghost",
                "06",
                "he",
                "Kassel",
                "kreisfreie-stadt",
                "ghost-exchange",
            )
            .route("*", "06411", "healthy")
            .route("*", "06611", "ghost")
    }

    pub fn route(mut self, service: &str, region: &str, destination: &str) -> Self {
        self.routes.push(vec![
            format!("service = \"{service}\""),
            format!("region = \"{region}\""),
            format!("destination = \"{destination}\""),
        ]);
        self.last = Table::Route;
        self
    }

    /// One more line for the table added last, e.g. `status_format = "protobuf"` after a
    /// platform or `dedup_window = "7d"` after the store.
    pub fn line(mut self, line: &str) -> Self {
        let table = match self.last {
            Table::Gateway => &mut self.gateway,
            Table::Store => &mut self.store,
            Table::Retry => &mut self.retry,
            Table::Telemetry => &mut self.telemetry,
            Table::Platform => self.platforms.last_mut().unwrap(),
            Table::Destination => self.destinations.last_mut().unwrap(),
            Table::Route => self.routes.last_mut().unwrap(),
        };
        table.push(line.to_owned());
        self
    }

    pub fn text(&self) -> String {
        let mut text = format!("[gateway]\n{}\n", self.gateway.join("\n"));
        if !self.store.is_empty() {
            text += &format!("\n[store]\n{}\n", self.store.join("\n"));
        }
        if !self.retry.is_empty() {
            text += &format!("\n[retry]\n{}\n", self.retry.join("\n"));
        }
        if !self.telemetry.is_empty() {
            text += &format!("\n[telemetry]\n{}\n", self.telemetry.join("\n"));
        }
        for (label, url) in &self.brokers {
            text += &format!("\n[brokers.{label}]\nurl = \"{url}\"\n");
        }
        for (array, tables) in [
            ("platforms", &self.platforms),
            ("destinations", &self.destinations),
            ("routes", &self.routes),
        ] {
            for lines in tables {
                text += &format!("\n[[{array}]]\n{}\n", lines.join("\n"));
            }
        }
        for toml in &self.extra {
            text += &format!("\n{toml}\n");
        }
        text
    }

    /// The configuration, through `parse_config`.
    pub fn build(&self) -> Config {
        parse_config(&self.text())
    }
}

// ---- submissions ----------------------------------------------------------------------------

/// A valid sample submission from `platform` (of Land `land`) for `service` in `region`, of
/// about `size` bytes.
pub fn sample_submission(
    platform: &str,
    land: &str,
    service: &str,
    region: &str,
    size: usize,
) -> wire::Submission {
    sample::submission(&SampleSpec {
        platform_id: platform,
        land,
        service_key: service,
        region,
        size,
    })
}

/// The submission most tests send: from `civento-he` (Land 06) for the test service
/// 99115005104000 in `region`, of about 512 bytes.
pub fn he_submission(region: &str) -> wire::Submission {
    sample_submission("civento-he", "06", "99115005104000", region, 512)
}

/// Publishes an encoded submission to the ingress queue `submissions` as a platform would,
/// with the encoding's content type and no message id.
pub async fn submit_encoded(channel: &Channel, body: &[u8], encoding: Encoding) {
    publish(
        channel,
        "submissions",
        body,
        Some(encoding.content_type()),
        None,
        None,
    )
    .await;
}

/// Encodes a submission and publishes it as `submit_encoded` does.
pub async fn submit(channel: &Channel, submission: &wire::Submission, encoding: Encoding) {
    submit_encoded(channel, &sample::encode(submission, encoding), encoding).await;
}

/// `take` from the back-office queue of `destination`.
pub async fn take_backoffice(
    channel: &Channel,
    destination: &str,
    n: usize,
    timeout: Duration,
) -> Vec<Received> {
    take(channel, &backoffice_queue(destination), n, timeout).await
}

/// `take` from the status queue of `platform`.
pub async fn take_status(
    channel: &Channel,
    platform: &str,
    n: usize,
    timeout: Duration,
) -> Vec<Received> {
    take(channel, &status_queue(platform), n, timeout).await
}

/// `take` from the dead-letter queue.
pub async fn take_dead_letters(channel: &Channel, n: usize, timeout: Duration) -> Vec<Received> {
    take(channel, DEAD_LETTERS, n, timeout).await
}

/// `drain` the back-office queue of `destination`.
pub async fn drain_backoffice(
    channel: &Channel,
    destination: &str,
    quiet: Duration,
) -> Vec<Received> {
    drain(channel, &backoffice_queue(destination), quiet).await
}

/// `drain` the dead-letter queue.
pub async fn drain_dead_letters(channel: &Channel, quiet: Duration) -> Vec<Received> {
    drain(channel, DEAD_LETTERS, quiet).await
}

// ---- the real binary -------------------------------------------------------------------------

/// The gateway binary as a child process, logging to a file, killed if the test ends early.
pub struct GatewayProcess {
    child: std::process::Child,
}

impl GatewayProcess {
    /// `ozg-gateway run --config CONFIG`, its log appended to `log`.
    pub fn spawn(config: &Path, log: &Path) -> GatewayProcess {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_ozg-gateway"))
            .args(["run", "--config", config.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        GatewayProcess { child }
    }

    /// The process id, for reading /proc.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`"-TERM"`, `"-KILL"`).
    pub fn signal(&self, sig: &str) {
        signal(&self.child, sig);
    }

    /// The exit status, if the process ends within `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM and a clean exit (within 20 s); the log's tail if not.
    pub async fn stop(mut self, log: &Path) {
        self.signal("-TERM");
        let status = self.wait(Duration::from_secs(20)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "gateway exit {status:?} after SIGTERM: {}",
            log_tail(log)
        );
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last 30 lines of a log file.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for a listener the gateway opens).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real binary running `config` with JSON logs at `OZG_LOG` (its default when `None`),
/// and the thread that reads its stderr all the time, so that a full pipe never blocks it;
/// the thread returns every line once the process has ended.
pub fn run_with_json_logs(
    config: &std::path::Path,
    log: Option<&str>,
) -> (std::process::Child, std::thread::JoinHandle<Vec<String>>) {
    use std::io::BufRead;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ozg-gateway"));
    command
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--log-format",
            "json",
        ])
        .env_remove("OZG_LOG")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(log) = log {
        command.env("OZG_LOG", log);
    }
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    (child, reader)
}

/// Sends a signal (`"-TERM"`, `"-KILL"`) to a child process.
pub fn signal(child: &std::process::Child, sig: &str) {
    let sent = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {sig} {} failed", child.id());
}

/// Waits up to `within` for a child to exit.
pub fn wait_exit(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// SIGTERM, then the exit status; panics if the gateway does not stop within `within`.
pub fn terminate(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    signal(child, "-TERM");
    wait_exit(child, within)
        .unwrap_or_else(|| panic!("gateway did not stop on SIGTERM within {within:?}"))
}

// ---- PostgreSQL ---------------------------------------------------------------------------

/// The test database: `OZG_TEST_POSTGRES_URL`, or the one deploy/local/postgres.sh creates.
pub fn postgres_url() -> String {
    std::env::var("OZG_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://ozg:ozg@127.0.0.1:5432/ozg_test".to_owned())
}

/// A connection to the test database, or a failure that says how to get one: the tests that
/// need PostgreSQL are never skipped.
pub async fn postgres_admin() -> sqlx::PgConnection {
    use sqlx::Connection;
    let url = postgres_url();
    match sqlx::PgConnection::connect(&url).await {
        Ok(conn) => conn,
        Err(e) => panic!(
            "\n\nPostgreSQL does not answer at {}: {e}\n\
             The tests run against a real PostgreSQL (deploy/local/postgres.sh, which \
             deploy/local/test.sh runs, starts one), or point OZG_TEST_POSTGRES_URL at one. \
             These tests are never skipped.\n",
            ozg_gateway::store::redact_url(&url)
        ),
    }
}

/// `url` with `schema` as the search path of its connections.
pub fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

/// A schema of its own in the test database ([`postgres_url`]), dropped by `drop`.
pub struct PgSchema {
    admin: sqlx::PgConnection,
    pub name: String,
    /// The database URL with the schema as its search path.
    pub url: String,
}

impl PgSchema {
    pub async fn create(test: &str) -> PgSchema {
        let name = format!("ozgtest_{test}_{}", std::process::id());
        let mut admin = postgres_admin().await;
        admin
            .execute(format!("DROP SCHEMA IF EXISTS {name} CASCADE").as_str())
            .await
            .unwrap();
        admin
            .execute(format!("CREATE SCHEMA {name}").as_str())
            .await
            .unwrap();
        let url = with_search_path(&postgres_url(), &name);
        PgSchema { admin, name, url }
    }

    pub async fn drop(mut self) {
        self.admin
            .execute(format!("DROP SCHEMA {} CASCADE", self.name).as_str())
            .await
            .unwrap();
        let _ = sqlx::Connection::close(self.admin).await;
    }
}
