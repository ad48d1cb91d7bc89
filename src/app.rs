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

use futures_util::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::amqp::{self, OwnedTopology, Publisher, Role};
use crate::config::{BrokerIndex, Config};
use crate::link::{self, Link, LinkState};
use crate::pipeline::{Gateway, Source};
use crate::store::{self, Deduplicator, Store, StoreError};
use crate::telemetry::{self, IngressLabels, LinkLabels, Metrics};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("store {url}: {source}")]
    Store { url: String, source: StoreError },
    #[error("a consumer task failed: {0}")]
    Task(String),
}

/// Checks of a batch wait at most this long for more requests to share the query.
const DEDUP_MAX_DELAY: Duration = Duration::from_millis(2);
const DEDUP_MAX_BATCH: usize = 256;
/// Bound on each step of closing down that waits for the broker.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often delivered ids older than the deduplication window are removed.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// One supervised connection per broker and role, created for the brokers in use.
struct Links {
    consume: HashMap<BrokerIndex, Arc<Link>>,
    publish: HashMap<BrokerIndex, Arc<Link>>,
}

impl Links {
    fn start(config: &Config, stop: &CancellationToken) -> Links {
        let mut consume = HashMap::new();
        // The gateway's broker is consumed too: the retry queue lives there.
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
        let publishing = config
            .destinations
            .iter()
            .map(|d| d.broker)
            .chain(config.platforms.iter().map(|p| p.broker))
            .chain([config.gateway.dead_letter_broker]);
        for b in publishing {
            publish.entry(b).or_insert_with(|| {
                Link::start(config.broker(b).clone(), Role::Publish, stop.clone())
            });
        }
        Links { consume, publish }
    }

    /// Keeps `ozg_broker_connected` in step with every link's state.
    fn watch(&self, metrics: &Arc<Metrics>, stop: &CancellationToken) {
        let roles = [("consume", &self.consume), ("publish", &self.publish)];
        for (role, links) in roles {
            for link in links.values() {
                // A handle of its own: the family's guard must not be held across awaits.
                let gauge = metrics
                    .broker_connected
                    .get_or_create(&LinkLabels {
                        broker: link.broker().to_owned(),
                        role: role.to_owned(),
                    })
                    .clone();
                let mut states = link.watch_state();
                let stop = stop.clone();
                tokio::spawn(async move {
                    loop {
                        let up = matches!(*states.borrow_and_update(), LinkState::Connected);
                        gauge.set(i64::from(up));
                        tokio::select! {
                            () = stop.cancelled() => return,
                            changed = states.changed() => if changed.is_err() { return },
                        }
                    }
                });
            }
        }
    }

    async fn close(&self) {
        let closing = self
            .consume
            .values()
            .chain(self.publish.values())
            .map(|link| tokio::time::timeout(CLOSE_TIMEOUT, link.close()));
        futures_util::future::join_all(closing).await;
    }
}

/// Runs the gateway until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let config = Arc::new(config);
    let g = &config.gateway;
    let store = open_store(&config).await?;
    tracing::info!(store = %config.store.display, kind = store.kind(), "store opened");
    let dedup = Arc::new(Deduplicator::start(
        store.clone(),
        config.store.dedup_window,
        DEDUP_MAX_BATCH,
        DEDUP_MAX_DELAY,
    ));
    let purge = tokio::spawn(purge_periodically(store.clone(), config.store.dedup_window));
    let metrics = Metrics::new();
    let stop_links = CancellationToken::new();
    if let Some(address) = config.telemetry.metrics_address
        && let Err(e) = telemetry::serve_metrics(metrics.clone(), address, stop_links.clone()).await
    {
        // Metrics are for operators; not having them is no reason to stop moving
        // submissions.
        tracing::error!(address = %address, error = %e, "cannot serve metrics");
    }
    let links = Links::start(&config, &stop_links);
    links.watch(&metrics, &stop_links);
    // Every broker in use has a publishing link (see `Links::start`).
    let publisher =
        |broker: BrokerIndex| Publisher::new(links.publish[&broker].clone(), g.confirm_timeout);
    let gateway = Arc::new(Gateway::new(
        config.clone(),
        config
            .destinations
            .iter()
            .map(|d| publisher(d.broker))
            .collect(),
        config
            .platforms
            .iter()
            .map(|p| publisher(p.broker))
            .collect(),
        Publisher::owning(
            links.publish[&g.dead_letter_broker].clone(),
            g.confirm_timeout,
            OwnedTopology::DeadLetter {
                exchange: g.dead_letter_exchange.clone(),
                queue: g.dead_letter_queue.clone(),
            },
        ),
        Publisher::owning(
            links.publish[&g.dead_letter_broker].clone(),
            g.confirm_timeout,
            OwnedTopology::Retry {
                delays: config.retry.delays.clone(),
            },
        ),
        dedup.clone(),
        metrics.clone(),
    ));

    let stop_consuming = CancellationToken::new();
    let in_flight = TaskTracker::new();
    let mut consumers = tokio::task::JoinSet::new();
    let platforms = config.platforms.iter().enumerate().map(|(index, p)| {
        let ingress = Ingress {
            source: Source::Platform(index),
            name: p.id.clone(),
            queue: p.ingress_queue.clone(),
            prefetch: p.prefetch,
            owned: None,
        };
        (ingress, p.broker)
    });
    let retries = Ingress {
        source: Source::Retry,
        name: "retry".to_owned(),
        queue: amqp::RETRY_READY_QUEUE.to_owned(),
        prefetch: config.retry.prefetch,
        owned: Some(OwnedTopology::Retry {
            delays: config.retry.delays.clone(),
        }),
    };
    for (ingress, broker) in platforms.chain([(retries, g.dead_letter_broker)]) {
        consumers.spawn(consume(
            gateway.clone(),
            metrics.clone(),
            ingress,
            links.consume[&broker].clone(),
            in_flight.clone(),
            stop_consuming.clone(),
        ));
    }
    tracing::info!(
        platforms = config.platforms.len(),
        destinations = config.destinations.len(),
        routes = config.routes.len(),
        "ozg-gateway ready"
    );

    shutdown.await;
    tracing::info!("shutdown: stopping consumers, finishing in-flight submissions");

    // Stop taking new work; let in-flight submissions finish (bounded); then close the
    // connections, which hands anything unacked back to the brokers.
    stop_consuming.cancel();
    let mut result = Ok(());
    while let Some(ended) = consumers.join_next().await {
        if let Err(e) = ended {
            result = Err(RunError::Task(e.to_string()));
        }
    }
    in_flight.close();
    if tokio::time::timeout(g.shutdown_grace, in_flight.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?g.shutdown_grace,
            in_flight = in_flight.len(),
            "shutdown grace period over; unfinished submissions stay unacked and will be redelivered"
        );
    }
    stop_links.cancel();
    links.close().await;
    purge.abort();
    drop(gateway);
    if let Ok(dedup) = Arc::try_unwrap(dedup) {
        dedup.shutdown().await;
    }
    store.close().await;
    tracing::info!("ozg-gateway stopped");
    result
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

async fn purge_periodically(store: Store, window: Duration) {
    loop {
        let cutoff = SystemTime::now()
            .checked_sub(window)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        match store.purge(cutoff).await {
            Ok(n) if n > 0 => tracing::info!(removed = n, "expired deduplication records removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot remove expired deduplication records"),
        }
        tokio::time::sleep(PURGE_INTERVAL).await;
    }
}

/// A queue the gateway consumes: a platform's ingress queue, or its own retry queue.
#[derive(Clone)]
struct Ingress {
    source: Source,
    /// For logs: the platform id, or "retry".
    name: String,
    queue: String,
    prefetch: u16,
    /// The gateway's own queues are declared before subscribing; platforms' queues are only
    /// checked (passively): a missing one is an error the operator must see, not a queue
    /// the gateway silently invents.
    owned: Option<OwnedTopology>,
}

/// Keeps one consumer subscribed: waits for its broker link, subscribes, pumps deliveries
/// into the pipeline, and after a lost channel or connection starts over.
async fn consume(
    gateway: Arc<Gateway>,
    metrics: Arc<Metrics>,
    ingress: Ingress,
    link: Arc<Link>,
    in_flight: TaskTracker,
    stop: CancellationToken,
) {
    let up = metrics
        .consumer_up
        .get_or_create(&IngressLabels {
            ingress: ingress.name.clone(),
        })
        .clone();
    let mut attempt = 0u32;
    loop {
        up.set(0);
        let Some(connection) = link.connected(&stop).await else {
            return;
        };
        match subscribe(&connection, &ingress).await {
            Ok((channel, consumer)) => {
                attempt = 0;
                up.set(1);
                tracing::info!(ingress = %ingress.name, queue = %ingress.queue,
                    prefetch = ingress.prefetch, "consuming");
                let tag = consumer.tag();
                let lost = pump(&gateway, ingress.source, consumer, &in_flight, &stop).await;
                match lost {
                    None => {
                        // Bounded: on a broken connection the cancel may never be answered.
                        let cancel = channel.basic_cancel(tag, BasicCancelOptions::default());
                        let _ = tokio::time::timeout(CLOSE_TIMEOUT, cancel).await;
                        return;
                    }
                    Some(reason) => {
                        tracing::warn!(ingress = %ingress.name, error = %reason,
                            "consumer lost; resubscribing");
                    }
                }
            }
            Err(e) => {
                tracing::error!(ingress = %ingress.name, queue = %ingress.queue,
                    broker = %link.broker(), error = %e, "cannot subscribe; retrying");
            }
        }
        attempt = attempt.saturating_add(1);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(link::backoff(attempt)) => {}
        }
    }
}

async fn subscribe(
    connection: &Connection,
    ingress: &Ingress,
) -> Result<(Channel, Consumer), lapin::Error> {
    let channel = connection.create_channel().await?;
    match &ingress.owned {
        Some(owned) => owned.declare(&channel).await?,
        None => {
            channel
                .queue_declare(
                    ingress.queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
        }
    }
    channel
        .basic_qos(ingress.prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            ingress.queue.as_str().into(),
            format!("ozg-gateway {}", ingress.name).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer))
}

/// Hands each delivery to the pipeline; returns `None` when told to stop, or why the
/// consumer ended.
async fn pump(
    gateway: &Arc<Gateway>,
    source: Source,
    mut consumer: Consumer,
    in_flight: &TaskTracker,
    stop: &CancellationToken,
) -> Option<String> {
    loop {
        let next = tokio::select! {
            biased;
            () = stop.cancelled() => return None,
            next = consumer.next() => next,
        };
        match next {
            Some(Ok(delivery)) => {
                let gateway = gateway.clone();
                in_flight.spawn(async move { gateway.process(source, delivery).await });
            }
            Some(Err(e)) => return Some(e.to_string()),
            None => return Some("the broker cancelled the consumer".to_owned()),
        }
    }
}
