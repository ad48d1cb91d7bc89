//! The pieces of `deploy/bench/run.sh`'s load, shared by the `bench_load` example (the CLI)
//! and `tests/bench_harness.rs` (which runs them at tiny scale so that the harness cannot rot).
//!
//! - [`bench_config`]: the benchmark's configuration, made from deploy/config/example.toml:
//!   its 16 platforms, brokers moved to vhosts of the run's own, and one destination per
//!   Kreis and kreisfreie Stadt of the directory (about 400) with a `*` route each, beside
//!   the example's own destinations and routes.
//! - [`Mix`]: what a run publishes: submissions from the 16 platforms (uniformly), regions
//!   drawn from the directory's Gemeinden weighted by population, services from those the
//!   configuration names; each with the destination the configuration routes it to.
//! - [`fill`]: N submissions as fast as the broker takes them (persistent, confirms
//!   pipelined), into the platforms' ingress queues or one plain queue (for the shovel).
//! - [`paced`]: publishing at a fixed rate while consuming every back-office queue, for the
//!   end-to-end latency, with the counts that make a broken run visible.
//! - [`verify`], [`count`], [`purge`]: what arrived where, exactly.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};
use ozg_gateway::Config;
use ozg_gateway::amqp::{self, Role};
use ozg_gateway::config::DEFAULT_CONFIRM_TIMEOUT;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::model::DestinationIndex;
use ozg_gateway::model::{Ars, Level, ServiceKey, ServiceSelector};
use ozg_gateway::municipalities::UnitKind;
use ozg_gateway::routing::table::RoutingTable;
use ozg_gateway::sample::{self, SampleSpec};
use ozg_gateway::topology::{Declarations, Queue, backoffice_queue, status_queue};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Config(String),
    #[error("{what}: {source}")]
    Amqp { what: String, source: lapin::Error },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
}

fn amqp_error(what: impl Into<String>) -> impl FnOnce(lapin::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Amqp { what, source }
}

// ---------------------------------------------------------------- configuration

pub struct ConfigOptions<'a> {
    /// `amqp://user:password@host:port`, without a vhost.
    pub amqp: &'a str,
    /// Broker `X` of the example moves to vhost `<prefix>-X`.
    pub vhost_prefix: &'a str,
    pub data_dir: &'a str,
    /// None: the default (SQLite in `data_dir`).
    pub store_url: Option<&'a str>,
    /// Every platform's prefetch; None keeps the example's.
    pub prefetch: Option<u16>,
}

pub struct BenchConfig {
    pub text: String,
    /// The vhosts the configuration names, to be created before use.
    pub vhosts: Vec<String>,
    /// The destinations generated (one per Kreis and kreisfreie Stadt).
    pub kreis_destinations: usize,
}

/// The benchmark's configuration from the example's text (`base` resolves its relative
/// paths). No admin API, no console and no metrics port (so that several instances can run
/// side by side), dead letters left on their queue (so that a run can count them), every
/// broker on a vhost of the run's own. The result is validated as the gateway would.
pub fn bench_config(
    example: &str,
    base: &Path,
    opts: &ConfigOptions<'_>,
) -> Result<BenchConfig, BenchError> {
    let parsed = Config::parse(example, "example configuration", base)
        .map_err(|e| BenchError::Config(e.to_string()))?;
    let mut table: toml::Table =
        toml::from_str(example).map_err(|e| BenchError::Config(e.to_string()))?;
    table.remove("admin");
    table.remove("console");
    if let Some(toml::Value::Table(telemetry)) = table.get_mut("telemetry") {
        telemetry.remove("metrics_address");
        telemetry.remove("otlp_endpoint");
    }
    let gateway = table_entry(&mut table, "gateway")?;
    gateway.insert("data_dir".into(), opts.data_dir.into());
    gateway.insert("store_dead_letters".into(), false.into());
    if let Some(url) = opts.store_url {
        table_entry(&mut table, "store")?.insert("url".into(), url.into());
    }
    let mut vhosts = Vec::new();
    for (name, broker) in table_entry(&mut table, "brokers")?.iter_mut() {
        let vhost = format!("{}-{name}", opts.vhost_prefix);
        let toml::Value::Table(broker) = broker else {
            return Err(BenchError::Config(format!("brokers.{name} is not a table")));
        };
        broker.insert("url".into(), format!("{}/{vhost}", opts.amqp).into());
        vhosts.push(vhost);
    }
    if let Some(prefetch) = opts.prefetch {
        for platform in array_entry(&mut table, "platforms")? {
            if let toml::Value::Table(platform) = platform {
                platform.insert("prefetch".into(), i64::from(prefetch).into());
            }
        }
    }

    // A Kreis's back office is on its Land's broker: the broker of that Land's platform.
    let land_broker: HashMap<String, String> = parsed
        .platforms
        .iter()
        .map(|p| (p.land.to_string(), parsed.broker(p.broker).name.clone()))
        .collect();
    let mut kreise: Vec<_> = parsed
        .municipalities
        .units()
        .filter(|u| matches!(u.kind, UnitKind::Kreis { .. }))
        .collect();
    kreise.sort_by_key(|u| u.prefix);
    let taken: std::collections::HashSet<_> = parsed
        .routes
        .iter()
        .map(|r| (r.service, r.region))
        .collect();
    let mut destinations = Vec::new();
    let mut routes = Vec::new();
    for unit in kreise {
        if taken.contains(&(ServiceSelector::Any, unit.prefix)) {
            continue;
        }
        let land = unit.prefix.to_string()[..2].to_owned();
        let Some(broker) = land_broker.get(&land) else {
            return Err(BenchError::Config(format!(
                "no platform for Land {land} in the example: its Kreise need a broker"
            )));
        };
        let id = format!("kreis-{}", unit.prefix);
        let kind = match unit.kind {
            UnitKind::Kreis { kreisfrei: true } => "kreisfreie-stadt",
            _ => "kreis",
        };
        let mut d = toml::Table::new();
        d.insert("id".into(), id.clone().into());
        d.insert("name".into(), unit.name.clone().into());
        d.insert("kind".into(), kind.into());
        d.insert("land".into(), land.into());
        d.insert("broker".into(), broker.clone().into());
        d.insert("exchange".into(), "ozg.backoffice".into());
        d.insert("routing_key".into(), id.clone().into());
        destinations.push(toml::Value::Table(d));
        let mut r = toml::Table::new();
        r.insert("service".into(), "*".into());
        r.insert("region".into(), unit.prefix.to_string().into());
        r.insert("destination".into(), id.into());
        routes.push(toml::Value::Table(r));
    }
    let kreis_destinations = destinations.len();
    array_entry(&mut table, "destinations")?.extend(destinations);
    array_entry(&mut table, "routes")?.extend(routes);

    let text = format!(
        "# Generated by examples/bench_load (deploy/bench/run.sh) from the example \
         configuration: do not edit.\n{}",
        toml::to_string(&table).map_err(|e| BenchError::Config(e.to_string()))?
    );
    Config::parse(&text, "benchmark configuration", base)
        .map_err(|e| BenchError::Config(e.to_string()))?;
    Ok(BenchConfig {
        text,
        vhosts,
        kreis_destinations,
    })
}

fn table_entry<'t>(
    table: &'t mut toml::Table,
    key: &str,
) -> Result<&'t mut toml::Table, BenchError> {
    match table
        .entry(key)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
    {
        toml::Value::Table(t) => Ok(t),
        _ => Err(BenchError::Config(format!("{key} is not a table"))),
    }
}

fn array_entry<'t>(
    table: &'t mut toml::Table,
    key: &str,
) -> Result<&'t mut Vec<toml::Value>, BenchError> {
    match table
        .entry(key)
        .or_insert_with(|| toml::Value::Array(Vec::new()))
    {
        toml::Value::Array(a) => Ok(a),
        _ => Err(BenchError::Config(format!(
            "{key} is not an array of tables"
        ))),
    }
}

// ---------------------------------------------------------------- what is published

/// One submission, ready to publish.
pub struct Prepared {
    pub id: String,
    /// Index into the configuration's platforms.
    pub platform: usize,
    /// The Gemeinde it is for (tests/bench_harness.rs checks the draw).
    #[allow(dead_code)]
    pub region: Ars,
    pub body: Vec<u8>,
    /// Where the configuration routes it; None: nowhere (it would be dead-lettered).
    pub destination: Option<DestinationIndex>,
}

/// Draws submissions as a run publishes them; owns what it needs, so that it can make them
/// on a thread of its own while the publisher publishes.
pub struct Mix {
    platforms: Vec<(String, String)>,
    /// Cumulative population, and the Gemeinde.
    gemeinden: Vec<(u64, Ars)>,
    services: Vec<ServiceKey>,
    table: RoutingTable,
    rng: StdRng,
    size: usize,
}

impl Mix {
    pub fn new(config: &Config, size: usize, seed: u64) -> Result<Mix, BenchError> {
        let mut gemeinden = Vec::new();
        let mut total = 0u64;
        let mut units: Vec<_> = config
            .municipalities
            .units()
            .filter(|u| u.prefix.level() == Level::Gemeinde && u.population > 0)
            .collect();
        // HashMap order differs between runs; the draw must not.
        units.sort_by_key(|u| u.prefix);
        for unit in units {
            if let Some(ars) = unit.prefix.as_ars() {
                total += unit.population;
                gemeinden.push((total, ars));
            }
        }
        if gemeinden.is_empty() {
            return Err(BenchError::Config(
                "the directory has no Gemeinde with inhabitants".into(),
            ));
        }
        let mut services: Vec<ServiceKey> = config
            .routes
            .iter()
            .filter_map(|r| match r.service {
                ServiceSelector::Exact(key) => Some(key),
                ServiceSelector::Any => None,
            })
            .chain(config.services.iter().map(|s| s.key))
            .collect();
        services.sort();
        services.dedup();
        if services.is_empty() {
            // Registration of residence, the commonest service.
            services.push(
                "99115005104000"
                    .parse()
                    .map_err(|e| BenchError::Config(format!("service key: {e}")))?,
            );
        }
        if config.platforms.is_empty() {
            return Err(BenchError::Config(
                "the configuration has no platforms".into(),
            ));
        }
        Ok(Mix {
            platforms: config
                .platforms
                .iter()
                .map(|p| (p.id.clone(), p.land.to_string()))
                .collect(),
            gemeinden,
            services,
            table: RoutingTable::new(config.routes.clone()),
            rng: StdRng::seed_from_u64(seed),
            size,
        })
    }

    pub fn next(&mut self) -> Prepared {
        let platform = self.rng.random_range(0..self.platforms.len());
        let total = self.gemeinden.last().map_or(1, |(c, _)| *c);
        let draw = self.rng.random_range(0..total);
        let i = self.gemeinden.partition_point(|(c, _)| *c <= draw);
        let ars = self.gemeinden[i.min(self.gemeinden.len() - 1)].1;
        let service = self.services[self.rng.random_range(0..self.services.len())];
        let (platform_id, land) = &self.platforms[platform];
        let submission = sample::submission(&SampleSpec {
            platform_id,
            land,
            service_key: &service.to_string(),
            region: &ars.to_string(),
            size: self.size,
        });
        Prepared {
            body: sample::encode(&submission, Encoding::Protobuf),
            id: submission.submission_id,
            platform,
            region: ars,
            destination: self.table.resolve(service, ars).map(|r| r.destination),
        }
    }

    /// `n` submissions made on a thread of their own, a few ahead of the publisher.
    pub fn spawn(mut self, n: u64) -> tokio::sync::mpsc::Receiver<Prepared> {
        let ahead = (1 << 22) / self.size.max(1024);
        let (tx, rx) = tokio::sync::mpsc::channel(ahead.clamp(4, 1024));
        tokio::task::spawn_blocking(move || {
            for _ in 0..n {
                if tx.blocking_send(self.next()).is_err() {
                    return;
                }
            }
        });
        rx
    }
}

fn properties(id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_message_id(id.into())
        .with_content_type(Encoding::Protobuf.content_type().into())
        .with_delivery_mode(2)
}

/// The queue a destination's back office reads in the local topology.
pub fn destination_queue(config: &Config, index: DestinationIndex) -> String {
    let d = &config.destinations[index];
    if d.exchange.is_empty() {
        d.routing_key.clone()
    } else {
        backoffice_queue(&d.id)
    }
}

/// The vhost an AMQP URI (or a broker's `display`) names (`/` when it names none).
pub fn vhost(uri: &str) -> String {
    let rest = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let path = rest.split_once('/').map_or("", |(_, path)| path);
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.is_empty() {
        "/".to_owned()
    } else {
        path.replace("%2F", "/").replace("%2f", "/")
    }
}

/// Confirm-mode channels by broker index, each on a publishing connection of its own,
/// opened on first use.
struct Publishers<'c> {
    config: &'c Config,
    open: HashMap<usize, (Connection, Channel)>,
}

impl<'c> Publishers<'c> {
    /// Opens the channels of `brokers` at once (a connection takes a round trip or three).
    async fn new(
        config: &'c Config,
        brokers: impl IntoIterator<Item = usize>,
    ) -> Result<Publishers<'c>, BenchError> {
        let mut wanted: Vec<usize> = brokers.into_iter().collect();
        wanted.sort_unstable();
        wanted.dedup();
        let opened = futures_util::future::try_join_all(
            wanted
                .into_iter()
                .map(async |b| Ok::<_, BenchError>((b, confirming(config, b).await?))),
        )
        .await?;
        Ok(Publishers {
            config,
            open: opened.into_iter().collect(),
        })
    }

    async fn channel(&mut self, broker: usize) -> Result<Channel, BenchError> {
        if let Some((_, channel)) = self.open.get(&broker) {
            return Ok(channel.clone());
        }
        let (connection, channel) = confirming(self.config, broker).await?;
        self.open.insert(broker, (connection, channel.clone()));
        Ok(channel)
    }

    async fn close(self) {
        close_all(self.open.into_values().map(|(c, _)| c).collect()).await;
    }
}

/// A publishing connection to `broker` and a confirm-mode channel on it.
async fn confirming(config: &Config, broker: usize) -> Result<(Connection, Channel), BenchError> {
    let (connection, channel) = open(config, broker, Role::Publish).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(amqp_error(format!(
            "broker {}: confirm.select",
            config.broker(broker).name
        )))?;
    Ok((connection, channel))
}

async fn confirmed(confirm: PublisherConfirm) -> Result<(), BenchError> {
    match confirm.await.map_err(amqp_error("publisher confirm"))? {
        Confirmation::Ack(None) => Ok(()),
        other => Err(BenchError::Refused(format!(
            "the broker did not confirm a publish: {other:?}"
        ))),
    }
}

// ---------------------------------------------------------------- fill

pub enum FillTarget {
    /// Each submission into its platform's ingress queue, on the platform's broker.
    Platforms,
    /// Every submission into this (durable, declared if missing) queue on this broker.
    Queue { broker: usize, queue: String },
}

pub struct FillReport {
    pub published: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Destination id → submissions routed there (by the configuration's routes).
    pub expected: BTreeMap<String, u64>,
    /// Submissions no route takes (they would be dead-lettered).
    pub unrouted: u64,
    /// Platform id → submissions published from it.
    pub per_platform: BTreeMap<String, u64>,
}

impl FillReport {
    pub fn msgs_per_s(&self) -> f64 {
        self.published as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Publishes `n` submissions as fast as the broker confirms them, at most `window`
/// unconfirmed at a time (the shovel's default prefetch is 1,000).
pub async fn fill(
    config: &Config,
    mix: Mix,
    n: u64,
    window: usize,
    target: &FillTarget,
) -> Result<FillReport, BenchError> {
    let brokers: Vec<usize> = match target {
        FillTarget::Platforms => config.platforms.iter().map(|p| p.broker).collect(),
        FillTarget::Queue { broker, .. } => vec![*broker],
    };
    let mut connections = Publishers::new(config, brokers).await?;
    if let FillTarget::Queue { broker, queue } = target {
        let channel = connections.channel(*broker).await?;
        // The shovel's plain queue, beside the gateway's topology rather than part of it.
        let plain = Declarations {
            queues: vec![Queue::classic(queue)],
            ..Declarations::default()
        };
        plain
            .declare(&channel)
            .await
            .map_err(|e| BenchError::Amqp {
                what: e.what,
                source: e.source,
            })?;
    }
    let mut report = FillReport {
        published: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        expected: BTreeMap::new(),
        unrouted: 0,
        per_platform: BTreeMap::new(),
    };
    let mut made = mix.spawn(n);
    let mut pending = VecDeque::with_capacity(window);
    let start = Instant::now();
    while let Some(p) = made.recv().await {
        let (broker, queue) = match target {
            FillTarget::Platforms => {
                let platform = &config.platforms[p.platform];
                (platform.broker, platform.ingress_queue.as_str())
            }
            FillTarget::Queue { broker, queue } => (*broker, queue.as_str()),
        };
        let channel = connections.channel(broker).await?;
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &p.body,
                properties(&p.id),
            )
            .await
            .map_err(amqp_error(format!("publish to {queue}")))?;
        pending.push_back(confirm);
        if pending.len() >= window.max(1) {
            if let Some(oldest) = pending.pop_front() {
                confirmed(oldest).await?;
            }
        }
        report.published += 1;
        report.bytes += p.body.len() as u64;
        *report
            .per_platform
            .entry(config.platforms[p.platform].id.clone())
            .or_default() += 1;
        match p.destination {
            Some(d) => {
                *report
                    .expected
                    .entry(config.destinations[d].id.clone())
                    .or_default() += 1
            }
            None => report.unrouted += 1,
        }
    }
    for confirm in pending {
        confirmed(confirm).await?;
    }
    report.elapsed = start.elapsed();
    connections.close().await;
    if report.published != n {
        return Err(BenchError::Refused(format!(
            "made only {} of {n} submissions",
            report.published
        )));
    }
    Ok(report)
}

/// `destination count` lines, as `verify` reads them.
pub fn write_expected(expected: &BTreeMap<String, u64>) -> String {
    expected.iter().map(|(d, n)| format!("{d} {n}\n")).collect()
}

pub fn read_expected(text: &str) -> Result<BTreeMap<String, u64>, BenchError> {
    let mut expected = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let mut parts = line.split_whitespace();
        match (
            parts.next(),
            parts.next().map(str::parse::<u64>),
            parts.next(),
        ) {
            (None, ..) => {}
            (Some(d), Some(Ok(n)), None) => {
                *expected.entry(d.to_owned()).or_default() += n;
            }
            _ => {
                return Err(BenchError::Config(format!(
                    "expected counts, line {}: not `DESTINATION COUNT`: {line:?}",
                    i + 1
                )));
            }
        }
    }
    Ok(expected)
}

// ---------------------------------------------------------------- counting

/// Opens a connection and a channel to one of the configuration's brokers.
async fn open(
    config: &Config,
    broker: usize,
    role: Role,
) -> Result<(Connection, Channel), BenchError> {
    let b = config.broker(broker);
    let connection = amqp::connect_any(b, role)
        .await
        .map_err(|e| BenchError::Refused(e.to_string()))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(amqp_error(format!("broker {}: channel", b.name)))?;
    Ok((connection, channel))
}

/// Runs `work` on every item, the items of each broker one after the other on one channel,
/// the brokers concurrently (the benchmark has 17: one at a time would be 17 times the round
/// trips). Results come in the items' order; the connections are returned open.
async fn on_each_broker<T, R>(
    config: &Config,
    role: Role,
    items: Vec<(usize, T)>,
    work: impl AsyncFn(&Connection, &mut Channel, T) -> Result<R, BenchError>,
) -> Result<(Vec<R>, Vec<Connection>), BenchError> {
    let n = items.len();
    let mut groups: BTreeMap<usize, Vec<(usize, T)>> = BTreeMap::new();
    for (i, (broker, item)) in items.into_iter().enumerate() {
        groups.entry(broker).or_default().push((i, item));
    }
    let work = &work;
    let done = futures_util::future::try_join_all(groups.into_iter().map(
        async |(broker, items)| -> Result<_, BenchError> {
            let (connection, mut channel) = open(config, broker, role).await?;
            let mut results = Vec::with_capacity(items.len());
            for (i, item) in items {
                results.push((i, work(&connection, &mut channel, item).await?));
            }
            Ok((connection, results))
        },
    ))
    .await?;
    let mut ordered: Vec<Option<R>> = (0..n).map(|_| None).collect();
    let mut connections = Vec::new();
    for (connection, results) in done {
        connections.push(connection);
        for (i, r) in results {
            ordered[i] = Some(r);
        }
    }
    Ok((ordered.into_iter().flatten().collect(), connections))
}

/// Closes every connection, each bounded: lapin's close has been seen never to resolve
/// after the broker had already dropped the connection, which hung a whole run.
async fn close_all(connections: Vec<Connection>) {
    futures_util::future::join_all(connections.iter().map(|c| amqp::close(c, "bench done"))).await;
}

/// Messages ready in a queue, as the broker counts them (passive declare: nothing moves).
/// None when the queue does not exist.
async fn ready(connection: &Connection, channel: &mut Channel, queue: &str) -> Option<u32> {
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    match declared {
        Ok(q) => Some(q.message_count()),
        Err(_) => {
            // A 404 closes the channel: the next question needs a new one.
            if let Ok(fresh) = connection.create_channel().await {
                *channel = fresh;
            }
            None
        }
    }
}

/// Messages ready in each queue (broker index, name); None for a queue that does not exist.
async fn ready_counts(
    config: &Config,
    queues: Vec<(usize, String)>,
) -> Result<Vec<Option<u32>>, BenchError> {
    let (counts, connections) = on_each_broker(
        config,
        Role::Consume,
        queues,
        async |connection: &Connection, channel: &mut Channel, queue: String| {
            Ok(ready(connection, channel, &queue).await)
        },
    )
    .await?;
    close_all(connections).await;
    Ok(counts)
}

/// Messages ready in `queues` on one of the configuration's brokers, together; an error names a missing queue.
pub async fn count(config: &Config, broker: usize, queues: &[String]) -> Result<u64, BenchError> {
    let counts = ready_counts(config, queues.iter().map(|q| (broker, q.clone())).collect()).await?;
    let mut total = 0u64;
    for (queue, n) in queues.iter().zip(counts) {
        let n = n.ok_or_else(|| {
            BenchError::Refused(format!(
                "broker {}: no queue {queue}",
                config.broker(broker).name
            ))
        })?;
        total += u64::from(n);
    }
    Ok(total)
}

pub struct Verification {
    pub arrived: u64,
    /// Human-readable, one per destination (or queue) that is not as expected.
    pub problems: Vec<String>,
}

/// Compares every destination's back-office queue with what the fill expected there, and
/// checks that nothing was dead-lettered and no platform queue still holds anything.
pub async fn verify(
    config: &Config,
    expected: &BTreeMap<String, u64>,
) -> Result<Verification, BenchError> {
    let mut v = Verification {
        arrived: 0,
        problems: Vec::new(),
    };
    for id in expected.keys() {
        if config.destination_index(id).is_none() {
            v.problems.push(format!(
                "{id}: expected, but not a destination of the configuration"
            ));
        }
    }
    // (broker, queue, who, expected count, counts as arrived)
    let mut checks: Vec<(usize, String, String, u64, bool)> = Vec::new();
    for (i, d) in config.destinations.iter().enumerate() {
        let want = expected.get(&d.id).copied().unwrap_or(0);
        checks.push((
            d.broker,
            destination_queue(config, i),
            d.id.clone(),
            want,
            true,
        ));
    }
    let g = &config.gateway;
    checks.push((
        g.dead_letter_broker,
        g.dead_letter_queue.clone(),
        "dead letters".into(),
        0,
        false,
    ));
    for p in &config.platforms {
        checks.push((p.broker, p.ingress_queue.clone(), p.id.clone(), 0, false));
    }
    let counts = ready_counts(
        config,
        checks.iter().map(|(b, q, ..)| (*b, q.clone())).collect(),
    )
    .await?;
    for ((_, queue, who, want, arrival), got) in checks.into_iter().zip(counts) {
        match got {
            None => v.problems.push(format!("{who}: no queue {queue}")),
            Some(got) => {
                let got = u64::from(got);
                if arrival {
                    v.arrived += got;
                }
                if got != want {
                    v.problems
                        .push(format!("{who}: {got} in {queue}, expected {want}"));
                }
            }
        }
    }
    Ok(v)
}

/// Empties every back-office queue, platform status queue, ingress queue and the
/// dead-letter queue of the configuration, so that a run starts from nothing.
pub async fn purge(config: &Config) -> Result<u64, BenchError> {
    let mut queues: Vec<(usize, String)> = (0..config.destinations.len())
        .map(|i| (config.destinations[i].broker, destination_queue(config, i)))
        .collect();
    for p in &config.platforms {
        queues.push((p.broker, p.ingress_queue.clone()));
        queues.push((p.broker, status_queue(&p.id)));
    }
    let g = &config.gateway;
    queues.push((g.dead_letter_broker, g.dead_letter_queue.clone()));
    let (purged, connections) = on_each_broker(
        config,
        Role::Consume,
        queues,
        async |_: &Connection, channel: &mut Channel, queue: String| {
            channel
                .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
                .await
                .map_err(amqp_error(format!("purge {queue}")))
        },
    )
    .await?;
    close_all(connections).await;
    Ok(purged.into_iter().map(u64::from).sum())
}

// ---------------------------------------------------------------- paced

pub struct PacedOptions {
    /// Submissions per second.
    pub rate: f64,
    pub count: u64,
    /// How long to wait, after the last publish, for what has not arrived yet.
    pub grace: Duration,
    pub window: usize,
}

#[derive(Debug, Default)]
pub struct PacedReport {
    pub published: u64,
    pub confirmed: u64,
    pub arrived: u64,
    pub missing: u64,
    pub duplicated: u64,
    /// Arrived at another destination than the configuration routes it to.
    pub misrouted: u64,
    /// Arrived, but not published by this run (left over, or someone else's).
    pub unexpected: u64,
    /// Published submissions no route takes: a run must not publish any.
    pub unrouted: u64,
    pub target_rate: f64,
    pub achieved_rate: f64,
    /// Publish → arrival, sorted.
    pub latencies: Vec<Duration>,
}

impl PacedReport {
    /// The `q` quantile (0 < q ≤ 1) of the latencies, nearest rank.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (q * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    /// What makes the run invalid; empty when every submission arrived once, where it
    /// should.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |n: u64, what: &str| {
            if n > 0 {
                problems.push(format!("{n} {what}"));
            }
        };
        check(
            self.published - self.confirmed,
            "published but not confirmed",
        );
        check(self.missing, "missing (published, never arrived)");
        check(self.duplicated, "arrived more than once");
        check(self.misrouted, "arrived at the wrong destination");
        check(self.unexpected, "arrived that this run did not publish");
        check(self.unrouted, "published without a route");
        if self.published == 0 {
            problems.push("nothing published".into());
        }
        problems
    }

    /// `key=value` lines.
    pub fn lines(&self) -> String {
        let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
        format!(
            "latency_rate_target={:.0}\nlatency_rate_achieved={:.0}\nlatency_published={}\n\
             latency_arrived={}\nlatency_missing={}\nlatency_duplicated={}\n\
             latency_misrouted={}\nlatency_unexpected={}\nlatency_p50_ms={}\n\
             latency_p99_ms={}\nlatency_p999_ms={}\nlatency_max_ms={}\n",
            self.target_rate,
            self.achieved_rate,
            self.published,
            self.arrived,
            self.missing,
            self.duplicated,
            self.misrouted,
            self.unexpected,
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99)),
            ms(self.quantile(0.999)),
            ms(self.latencies.last().copied().unwrap_or_default()),
        )
    }
}

#[derive(Default)]
struct Arrivals {
    /// Submission id → publish instant, expected destination, arrived yet.
    sent: HashMap<String, (Instant, Option<DestinationIndex>, bool)>,
    arrived: u64,
    duplicated: u64,
    misrouted: u64,
    unexpected: u64,
    latencies: Vec<Duration>,
}

/// Publishes `count` submissions at `rate` per second across the platforms while consuming
/// every destination's back-office queue (emptied first), and measures publish → arrival
/// per submission id (the gateway sets the AMQP message_id to it) on one clock.
pub async fn paced(
    config: &Config,
    mix: Mix,
    opts: &PacedOptions,
) -> Result<PacedReport, BenchError> {
    let state = Arc::new(Mutex::new(Arrivals::default()));
    let queues: Vec<(usize, (usize, String))> = (0..config.destinations.len())
        .map(|i| {
            (
                config.destinations[i].broker,
                (i, destination_queue(config, i)),
            )
        })
        .collect();
    let (consumers, consuming) = on_each_broker(
        config,
        Role::Consume,
        queues,
        async |_: &Connection, channel: &mut Channel, (i, queue): (usize, String)| {
            channel
                .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
                .await
                .map_err(amqp_error(format!("purge {queue}")))?;
            let consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    format!("bench-{i}").into(),
                    BasicConsumeOptions {
                        no_ack: true,
                        ..BasicConsumeOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(amqp_error(format!("consume {queue}")))?;
            Ok((i, consumer))
        },
    )
    .await?;
    let mut tasks = Vec::new();
    for (i, mut consumer) in consumers {
        let state = state.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let now = Instant::now();
                let id = delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default();
                let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                match s.sent.get_mut(&id) {
                    Some((at, expected, seen)) => {
                        if *seen {
                            s.duplicated += 1;
                            continue;
                        }
                        *seen = true;
                        let (latency, right) = (now - *at, *expected == Some(i));
                        s.arrived += 1;
                        s.latencies.push(latency);
                        if !right {
                            s.misrouted += 1;
                        }
                    }
                    None => s.unexpected += 1,
                }
            }
        }));
    }

    let mut publishers = Publishers::new(config, config.platforms.iter().map(|p| p.broker)).await?;
    let window = Arc::new(tokio::sync::Semaphore::new(opts.window.max(1)));
    let confirmed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (confirm_tx, mut confirm_rx) = tokio::sync::mpsc::unbounded_channel::<(
        PublisherConfirm,
        tokio::sync::OwnedSemaphorePermit,
    )>();
    let mut confirming = {
        let confirmed = confirmed.clone();
        tokio::spawn(async move {
            while let Some((confirm, permit)) = confirm_rx.recv().await {
                if confirmed_ok(confirm).await {
                    confirmed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                drop(permit);
            }
        })
    };
    let mut report = PacedReport {
        target_rate: opts.rate,
        ..PacedReport::default()
    };
    let mut made = mix.spawn(opts.count);
    let interval = Duration::from_secs_f64(1.0 / opts.rate.max(1e-3));
    let start = Instant::now();
    let mut last = start;
    while let Some(p) = made.recv().await {
        let due = start + interval.mul_f64(report.published as f64);
        tokio::time::sleep_until(due.into()).await;
        let platform = &config.platforms[p.platform];
        let channel = publishers.channel(platform.broker).await?;
        let permit = window
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| BenchError::Refused("publish window closed".into()))?;
        if p.destination.is_none() {
            report.unrouted += 1;
        }
        let now = Instant::now();
        state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sent
            .insert(p.id.clone(), (now, p.destination, false));
        let confirm = channel
            .basic_publish(
                "".into(),
                platform.ingress_queue.as_str().into(),
                BasicPublishOptions::default(),
                &p.body,
                properties(&p.id),
            )
            .await
            .map_err(amqp_error(format!("publish to {}", platform.ingress_queue)))?;
        let _ = confirm_tx.send((confirm, permit));
        report.published += 1;
        last = now;
    }
    drop(confirm_tx);
    // Confirms have hung in lapin before: those still outstanding after this long count as
    // not confirmed, so that the run reports instead of waiting for ever.
    if tokio::time::timeout(DEFAULT_CONFIRM_TIMEOUT, &mut confirming)
        .await
        .is_err()
    {
        confirming.abort();
    }
    report.confirmed = confirmed.load(std::sync::atomic::Ordering::Relaxed);
    let span = last.duration_since(start).as_secs_f64();
    report.achieved_rate = if report.published > 1 && span > 0.0 {
        (report.published - 1) as f64 / span
    } else {
        report.published as f64
    };

    let deadline = Instant::now() + opts.grace;
    loop {
        let arrived = state.lock().unwrap_or_else(|e| e.into_inner()).arrived;
        if arrived >= report.published || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A duplicate comes soon after the original, if at all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    close_all(consuming).await;
    publishers.close().await;
    for task in tasks {
        task.abort();
    }
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    report.arrived = s.arrived;
    report.missing = report.published.saturating_sub(s.arrived);
    report.duplicated = s.duplicated;
    report.misrouted = s.misrouted;
    report.unexpected = s.unexpected;
    report.latencies = std::mem::take(&mut s.latencies);
    report.latencies.sort_unstable();
    Ok(report)
}

async fn confirmed_ok(confirm: PublisherConfirm) -> bool {
    matches!(confirm.await, Ok(Confirmation::Ack(None)))
}
