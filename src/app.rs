//! Start-up, the consumer loops and shutdown: the only code that knows the whole graph.
//!
//! `run(config, shutdown)` takes the stop signal as a parameter, so tests run the real
//! gateway in-process and stop it at will; the binary passes SIGTERM/SIGINT.
//!
//! Every broker connection is a supervised [`Link`]: consumers and publishers ask it for the
//! current connection, so after a drop or a broker restart they resubscribe and reopen their
//! channels by themselves, while platforms on other brokers keep flowing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::activity::Activity;
use crate::admin;
use crate::amqp::link::Link;
use crate::amqp::{OwnedTopology, Publisher, Role};
use crate::backlog;
use crate::config::Config;
use crate::health::Health;
use crate::ingress::{self, Ingress, dead_letters, receipts};
use crate::model::BrokerIndex;
use crate::pipeline::{Pipeline, Publishers, Source};
use crate::store::{self, Deduplicator, EventRecorder, Store, StoreError};
use crate::telemetry::{self, LinkLabels, Metrics};
use crate::topology;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("store {url}: {source}")]
    Store { url: String, source: StoreError },
    #[error("admin API: {0}")]
    Admin(#[from] crate::admin::AdminError),
    #[error("web console: {0}")]
    Console(#[from] crate::console::ConsoleError),
    #[error("a consumer task failed: {0}")]
    Task(String),
}

/// Checks of a batch wait at most this long for more requests to share the query.
const DEDUP_MAX_DELAY: Duration = Duration::from_millis(2);
const DEDUP_MAX_BATCH: usize = 256;
/// How often rows older than their retention are removed.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);
/// Trace events are written in groups, like deduplication records.
const TRACE_MAX_BATCH: usize = 512;
const TRACE_MAX_DELAY: Duration = Duration::from_millis(50);

/// One supervised connection per broker and role, created for the brokers in use.
struct Links {
    consume: HashMap<BrokerIndex, Arc<Link>>,
    publish: HashMap<BrokerIndex, Arc<Link>>,
}

impl Links {
    fn start(config: &Config, stop: &CancellationToken) -> Links {
        let mut consume = HashMap::new();
        // The gateway's broker is consumed too: the retry queue lives there. Receipts have
        // connections of their own (`receipts::supervise`).
        let consuming = config
            .platforms
            .iter()
            .map(|p| p.broker)
            .chain([config.gateway.dead_letter_broker]);
        for b in consuming {
            consume.entry(b).or_insert_with(|| {
                Link::start(config.broker(b).clone(), Role::Consume, stop.clone())
            });
        }
        let mut publish = HashMap::new();
        // Every configured broker, not only those in use now: an operator may add a
        // destination on any of them through the admin API.
        for b in 0..config.brokers.len() {
            publish.entry(b).or_insert_with(|| {
                Link::start(config.broker(b).clone(), Role::Publish, stop.clone())
            });
        }
        Links { consume, publish }
    }

    /// Keeps `ozg_broker_connected` and `ozg_broker_blocked` in step with every link's
    /// state.
    fn watch(&self, metrics: &Arc<Metrics>, stop: &CancellationToken) {
        let roles = [("consume", &self.consume), ("publish", &self.publish)];
        for (role, links) in roles {
            for link in links.values() {
                let labels = LinkLabels {
                    broker: link.broker().to_owned(),
                    role: role.to_owned(),
                };
                // Handles of their own: the family's guard must not be held across awaits.
                let connected = metrics.broker_connected.get_or_create(&labels).clone();
                let blocked = metrics.broker_blocked.get_or_create(&labels).clone();
                let mut states = link.watch_state();
                let stop = stop.clone();
                tokio::spawn(async move {
                    loop {
                        let (up, held) = {
                            let state = states.borrow_and_update();
                            (state.is_connected(), state.blocked().is_some())
                        };
                        connected.set(i64::from(up));
                        blocked.set(i64::from(held));
                        tokio::select! {
                            () = stop.cancelled() => return,
                            changed = states.changed() => if changed.is_err() { return },
                        }
                    }
                });
            }
        }
    }

    /// Every link's name, role and state, for health and the admin overview.
    fn states(&self) -> Vec<admin::LinkView> {
        let roles = [("consume", &self.consume), ("publish", &self.publish)];
        let mut views: Vec<admin::LinkView> = roles
            .into_iter()
            .flat_map(|(role, links)| {
                links.values().map(move |link| admin::LinkView {
                    broker: link.broker().to_owned(),
                    role,
                    state: link.watch_state(),
                })
            })
            .collect();
        views.sort_by(|a, b| (&a.broker, a.role).cmp(&(&b.broker, b.role)));
        views
    }

    async fn close(&self) {
        let closing = self
            .consume
            .values()
            .chain(self.publish.values())
            .map(|link| link.close());
        futures_util::future::join_all(closing).await;
    }
}

/// What a started gateway tells its caller.
#[derive(Clone)]
pub struct Ready {
    /// The admin API's address (the port chosen when the configuration said 0).
    pub admin_address: Option<std::net::SocketAddr>,
    /// Where `/metrics`, `/live` and `/ready` are served, if they are.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// The web console's address, if it is served.
    pub console_address: Option<std::net::SocketAddr>,
    /// Liveness and readiness, for a supervisor's watchdog.
    pub health: Arc<Health>,
}

/// A configuration file read again (SIGHUP): [`run_controlled`] applies what can change
/// without a restart and answers on `done` once it is in use.
pub struct Reload {
    pub config: Config,
    pub done: tokio::sync::oneshot::Sender<()>,
}

/// Runs the gateway until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    run_reporting(config, shutdown, |_| {}).await
}

/// [`run`], calling `ready` once everything is started (tests learn the admin port so).
pub async fn run_reporting(
    config: Config,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(Ready),
) -> Result<(), RunError> {
    let (_keep, reloads) = tokio::sync::mpsc::channel(1);
    run_controlled(config, shutdown, reloads, ready).await
}

/// [`run_reporting`], applying each configuration received on `reloads` as a reload of
/// the configuration file ([`reload`]).
pub async fn run_controlled(
    config: Config,
    shutdown: impl Future<Output = ()>,
    mut reloads: tokio::sync::mpsc::Receiver<Reload>,
    ready: impl FnOnce(Ready),
) -> Result<(), RunError> {
    let core = Core::start(Arc::new(config)).await?;
    let metrics_address = core.serve_metrics().await;
    let consumers = Consumers::start(&core);
    let operators = Operators::start(&core).await?;
    tracing::info!(
        platforms = core.config.platforms.len(),
        destinations = core.pipeline.snapshot().destinations.len(),
        routes = core.pipeline.snapshot().table.routes().len(),
        admin = %operators
            .admin_server
            .as_ref()
            .map_or_else(|| "off".to_owned(), |a| a.address.to_string()),
        metrics = %metrics_address.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        console = %operators
            .console_address
            .map_or_else(|| "off".to_owned(), |a| a.to_string()),
        "ozg-gateway ready"
    );
    ready(Ready {
        admin_address: operators.admin_server.as_ref().map(|a| a.address),
        metrics_address,
        console_address: operators.console_address,
        health: core.health.clone(),
    });

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(Reload { config: new, done }) = reloads.recv() => {
                reload(&core.pipeline, new);
                let _ = done.send(());
            }
        }
    }
    tracing::info!("shutdown: stopping consumers, finishing in-flight submissions");
    let result = consumers.stop(core.config.gateway.shutdown_grace).await;
    core.stop(operators).await;
    result
}

/// What lives as long as the gateway: the store and its writers, the broker links, the
/// pipeline, metrics and health.
struct Core {
    config: Arc<Config>,
    store: Store,
    dedup: Arc<Deduplicator>,
    purge: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
    activity: Arc<Activity>,
    /// Stops the links and the background tasks; cancelled after the consumers are done.
    stop_links: CancellationToken,
    links: Links,
    pipeline: Arc<Pipeline>,
    health: Arc<Health>,
}

impl Core {
    async fn start(config: Arc<Config>) -> Result<Core, RunError> {
        let store = open_store(&config).await?;
        tracing::info!(store = %config.store.display, kind = store.kind(), "store opened");
        let dedup = Arc::new(Deduplicator::start(
            store.clone(),
            config.store.dedup_window,
            DEDUP_MAX_BATCH,
            DEDUP_MAX_DELAY,
        ));
        let snapshot = crate::routing::live::load(&config, &store).await;
        let purge = tokio::spawn(purge_periodically(
            store.clone(),
            config.store.clone(),
            config.receipts.retention,
        ));
        let metrics = Metrics::new();
        let activity = Arc::new(Activity::new(
            &config,
            Some(EventRecorder::start(
                store.clone(),
                TRACE_MAX_BATCH,
                TRACE_MAX_DELAY,
            )),
        ));
        let stop_links = CancellationToken::new();
        tokio::spawn(activity.clone().tick_rates(stop_links.clone()));
        let links = Links::start(&config, &stop_links);
        links.watch(&metrics, &stop_links);
        let pipeline = Arc::new(Pipeline::new(
            config.clone(),
            snapshot,
            publishers(&config, &links),
            dedup.clone(),
            metrics.clone(),
            activity.clone(),
        ));
        metrics.follow_store(pipeline.store_health(), &stop_links);
        backlog::watch(
            &config,
            &links.consume,
            &store,
            &activity,
            &metrics,
            &stop_links,
        );
        let health = Health::new(
            &config,
            links.states(),
            activity.clone(),
            pipeline.store_health().clone(),
        );
        health.beat(&stop_links);
        Ok(Core {
            config,
            store,
            dedup,
            purge,
            metrics,
            activity,
            stop_links,
            links,
            pipeline,
            health,
        })
    }

    /// `/metrics`, `/live` and `/ready`, if the configuration asks for them.
    async fn serve_metrics(&self) -> Option<std::net::SocketAddr> {
        let address = self.config.telemetry.metrics_address?;
        match telemetry::serve_http(
            self.metrics.clone(),
            self.health.clone(),
            address,
            self.stop_links.clone(),
        )
        .await
        {
            Ok(bound) => Some(bound),
            Err(e) => {
                // Metrics are for operators; not having them is no reason to stop
                // moving submissions.
                tracing::error!(address = %address, error = %e,
                    "cannot serve /metrics, /live and /ready");
                None
            }
        }
    }

    /// After the consumers: closes the connections, which hands anything unacked back to
    /// the brokers, and lets the store's writers finish.
    async fn stop(self, operators: Operators) {
        self.stop_links.cancel();
        if let Some(server) = operators.admin_server {
            server.stopped().await;
        }
        self.links.close().await;
        self.purge.abort();
        // The last heartbeat keeps this instance's final counters in the listing.
        if let Err(e) = operators.beat.await {
            tracing::warn!(error = %e, "instance heartbeat task failed");
        }
        drop(self.pipeline);
        if let Ok(dedup) = Arc::try_unwrap(self.dedup) {
            dedup.shutdown().await;
        }
        // Not `Arc::try_unwrap`: status pages and background tasks may still hold the
        // activity, and the trace events queued until now must reach the store before it
        // closes.
        self.activity.flush().await;
        self.store.close().await;
        tracing::info!("ozg-gateway stopped");
    }
}

/// The pipeline's publishers: status events to each platform's broker, dead letters,
/// retries and replays to the gateway's own.
fn publishers(config: &Config, links: &Links) -> Publishers {
    let g = &config.gateway;
    let gateway_link = || links.publish[&g.dead_letter_broker].clone();
    Publishers {
        links: links.publish.clone(),
        status: config
            .platforms
            .iter()
            .map(|p| Publisher::new(links.publish[&p.broker].clone(), g.confirm_timeout))
            .collect(),
        dead_letter: Publisher::owning(
            gateway_link(),
            g.confirm_timeout,
            OwnedTopology::DeadLetter {
                exchange: g.dead_letter_exchange.clone(),
                queue: g.dead_letter_queue.clone(),
            },
        ),
        retry: Publisher::owning(
            gateway_link(),
            g.confirm_timeout,
            OwnedTopology::Retry {
                delays: config.retry.delays.clone(),
            },
        ),
        replay: Publisher::owning(gateway_link(), g.confirm_timeout, OwnedTopology::Replay),
    }
}

/// Every consumer of the gateway: the platforms' queues, retries and replays, dead-letter
/// intake, receipts and the overdue watch.
struct Consumers {
    stop: CancellationToken,
    in_flight: TaskTracker,
    tasks: tokio::task::JoinSet<()>,
}

impl Consumers {
    fn start(core: &Core) -> Consumers {
        let (config, g) = (&core.config, &core.config.gateway);
        let stop = CancellationToken::new();
        let in_flight = TaskTracker::new();
        let mut tasks = tokio::task::JoinSet::new();
        for (ingress, broker) in ingresses(config) {
            tasks.spawn(ingress::consume(
                core.pipeline.clone(),
                core.metrics.clone(),
                ingress,
                core.links.consume[&broker].clone(),
                in_flight.clone(),
                stop.clone(),
            ));
        }
        if g.store_dead_letters {
            tasks.spawn(dead_letters::take_into_store(
                core.links.consume[&g.dead_letter_broker].clone(),
                OwnedTopology::DeadLetter {
                    exchange: g.dead_letter_exchange.clone(),
                    queue: g.dead_letter_queue.clone(),
                },
                g.dead_letter_queue.clone(),
                core.store.clone(),
                stop.clone(),
            ));
        }
        tasks.spawn(receipts::supervise(
            core.pipeline.clone(),
            core.store.clone(),
            stop.clone(),
        ));
        tasks.spawn(receipts::report_overdue(
            core.pipeline.clone(),
            core.store.clone(),
            config.receipts.clone(),
            stop.clone(),
        ));
        Consumers {
            stop,
            in_flight,
            tasks,
        }
    }

    /// Stops taking new work and lets in-flight submissions finish, for at most `grace`.
    async fn stop(mut self, grace: Duration) -> Result<(), RunError> {
        self.stop.cancel();
        let mut result = Ok(());
        while let Some(ended) = self.tasks.join_next().await {
            if let Err(e) = ended {
                result = Err(RunError::Task(e.to_string()));
            }
        }
        self.in_flight.close();
        if tokio::time::timeout(grace, self.in_flight.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace = ?grace,
                in_flight = self.in_flight.len(),
                "shutdown grace period over; unfinished submissions stay unacked and will be redelivered"
            );
        }
        result
    }
}

/// The queues the pipeline consumes, with the broker of each: every platform's ingress
/// queue, and the gateway's own retry and replay queues.
fn ingresses(config: &Config) -> Vec<(Ingress, BrokerIndex)> {
    // Every consumer here, platforms and the retry and replay queues, gets an equal share.
    let window_bytes = config.gateway.in_flight_bytes / (config.platforms.len() + 2);
    let platforms = config.platforms.iter().enumerate().map(|(index, p)| {
        let ingress = Ingress {
            source: Source::Platform(index),
            name: p.id.clone(),
            queue: p.ingress_queue.clone(),
            prefetch: p.prefetch,
            window_bytes,
            owned: None,
        };
        (ingress, p.broker)
    });
    let retries = Ingress {
        source: Source::Retry,
        name: "retry".to_owned(),
        queue: topology::RETRY_READY_QUEUE.to_owned(),
        prefetch: config.retry.prefetch,
        window_bytes,
        owned: Some(OwnedTopology::Retry {
            delays: config.retry.delays.clone(),
        }),
    };
    let replays = Ingress {
        source: Source::Replay,
        name: "replay".to_owned(),
        queue: topology::REPLAY_QUEUE.to_owned(),
        prefetch: config.retry.prefetch,
        window_bytes,
        owned: Some(OwnedTopology::Replay),
    };
    let broker = config.gateway.dead_letter_broker;
    platforms
        .chain([(retries, broker), (replays, broker)])
        .collect()
}

/// What operators use: the instance heartbeat and directory polling, the admin API and the
/// web console.
struct Operators {
    admin_server: Option<admin::Running>,
    console_address: Option<std::net::SocketAddr>,
    beat: tokio::task::JoinHandle<()>,
    /// Held, like the servers' own handles, until the gateway has stopped.
    _service: Arc<admin::service::Service>,
}

impl Operators {
    async fn start(core: &Core) -> Result<Operators, RunError> {
        let config = &core.config;
        let identity = crate::instances::Identity::new(core.activity.started);
        let beat = tokio::spawn(crate::instances::beat(
            identity.clone(),
            core.pipeline.clone(),
            core.store.clone(),
            core.stop_links.clone(),
        ));
        tokio::spawn(crate::instances::follow_directory(
            core.pipeline.clone(),
            core.store.clone(),
            config.store.directory_poll,
            core.stop_links.clone(),
        ));
        let grpc_health = admin::Health::start(&core.health, &core.stop_links);
        // One service for the gRPC API and the console: directory changes from both are made
        // one at a time, and both decide access alike.
        let service = Arc::new(admin::service::Service::new(
            config.clone(),
            core.pipeline.clone(),
            core.store.clone(),
            core.links.states(),
            identity.id.clone(),
        ));
        let admin_server = match &config.admin {
            Some(settings) => Some(
                admin::serve(
                    settings,
                    admin::State::new(service.clone(), config, core.stop_links.clone()),
                    grpc_health,
                    core.stop_links.clone(),
                )
                .await?,
            ),
            None => None,
        };
        let console_address = match (&config.console, &config.admin) {
            (Some(settings), Some(admin)) => Some(
                crate::console::serve(
                    settings,
                    service.clone(),
                    admin.tokens.clone(),
                    core.stop_links.clone(),
                )
                .await?,
            ),
            _ => None,
        };
        Ok(Operators {
            admin_server,
            console_address,
            beat,
            _service: service,
        })
    }
}

/// Applies a configuration file read again: its routing directory (destinations, routes,
/// services) is put in use like a change through the admin API, with the entries stored
/// through the API; what only a restart changes is logged, not applied. A destination on a
/// broker the gateway does not run with makes the whole reload refused: nothing changes.
pub fn reload(pipeline: &Pipeline, new: Config) {
    let running = pipeline.config();
    let merged = match running.with_directory_of(&new) {
        Ok(merged) => merged,
        Err(problems) => {
            for problem in &problems {
                tracing::error!(problem = %problem, "configuration not reloaded");
            }
            tracing::error!(
                problems = problems.len(),
                "configuration not reloaded: nothing changed"
            );
            return;
        }
    };
    for section in running.restart_only_changes(&new) {
        tracing::warn!(
            section,
            "configuration reloaded: this section changed in the file and takes effect only after a restart; not applied"
        );
    }
    let before = pipeline.snapshot();
    let left_out = pipeline.reload_file(merged);
    for (key, message) in left_out {
        tracing::error!(entry = %key, problem = %message,
            "stored routing directory entry left out");
    }
    let after = pipeline.snapshot();
    let changes = crate::routing::live::changes(&before, &after);
    tracing::info!(
        destinations = after.destinations.len(),
        routes = after.table.routes().len(),
        services = after.services.len(),
        changes = %changes,
        "configuration reloaded: routing directory in use"
    );
}

/// Opens the store on a blocking thread: sqlx's migration future cannot be proven `Send`
/// (a known limitation around `Acquire`), and `run` must stay `Send` so that callers can
/// spawn it.
async fn open_store(config: &Config) -> Result<Store, RunError> {
    let url = config.store.url.clone();
    let runtime = tokio::runtime::Handle::current();
    let opened = tokio::task::spawn_blocking(move || runtime.block_on(store::open(&url)))
        .await
        .map_err(|e| RunError::Task(e.to_string()))?;
    opened.map_err(|source| RunError::Store {
        url: config.store.display.clone(),
        source,
    })
}

/// Removes what is older than its retention: deduplication records, submission traces,
/// and dead letters an operator has replayed or discarded (their bodies are personal data).
async fn purge_periodically(
    store: Store,
    settings: crate::config::StoreSettings,
    receipt_retention: Duration,
) {
    let cutoff = |age: Duration| {
        SystemTime::now()
            .checked_sub(age)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    };
    loop {
        let report = |what: &str, result: Result<u64, StoreError>| match result {
            Ok(n) if n > 0 => tracing::info!(removed = n, what, "expired rows removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, what, "cannot remove expired rows"),
        };
        // A delivery record also says where the submission went and what its back office
        // answered: it is kept for the longer of the two.
        report(
            "delivery records",
            store
                .purge(cutoff(settings.dedup_window.max(receipt_retention)))
                .await,
        );
        report(
            "submission trace events",
            store.purge_events(cutoff(settings.trace_retention)).await,
        );
        report(
            "settled dead letters",
            store
                .purge_dead_letters(cutoff(settings.dead_letter_retention))
                .await,
        );
        report(
            "instances no longer running",
            store
                .purge_instances(cutoff(crate::instances::LISTED_FOR))
                .await,
        );
        tokio::time::sleep(PURGE_INTERVAL).await;
    }
}
