//! What waits, for the metrics and the admin overview: the depth of every queue the gateway
//! consumes or owns, the dead letters pending in the store, and each destination's retry
//! backlog. Brokers and the store are asked every `telemetry.backlog_interval` here, never on
//! a scrape or an overview: a scrape reads gauges only and an overview the ingress queues'
//! last figures ([`Activity`]), so any number of Prometheus servers (or a person reloading a
//! dashboard) costs the brokers and the store nothing.
//!
//! Queue depths come from a passive `queue.declare`, which RabbitMQ answers with the count
//! of *ready* messages (and consumers), with no permission needed and nothing consumed or
//! reordered. Unacked messages are not in that answer; the gateway's own share is
//! `ozg_in_flight`, and the broker-wide count (every instance, other consumers) is
//! RabbitMQ's own `rabbitmq_queue_messages_unacked` (rabbitmq_prometheus). The management
//! API would give both, but it is another port, another credential and often not open to
//! the gateway on a Land's broker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

use crate::activity::{Activity, QueueDepth};
use crate::amqp::CLOSE_TIMEOUT;
use crate::amqp::link::Link;
use crate::config::Config;
use crate::model::BrokerIndex;
use crate::outcome::Reason;
use crate::store::{DeadLetterFilter, DeadLetterState, Store};
use crate::telemetry::{DestinationLabels, Metrics, QueueLabels, ReasonLabels};
use crate::topology;

/// A queue whose depth is reported.
#[derive(Debug, Clone)]
struct Watched {
    broker: BrokerIndex,
    queue: String,
    /// Empty for the gateway's own queues.
    platform: String,
}

/// The queues of `config`: every platform's ingress queue, and the gateway's own (dead
/// letters, retry delay queues and the ready queue, replays).
fn watched(config: &Config) -> Vec<Watched> {
    let own = config.gateway.dead_letter_broker;
    let platforms = config.platforms.iter().map(|p| Watched {
        broker: p.broker,
        queue: p.ingress_queue.clone(),
        platform: p.id.clone(),
    });
    let gateway_queues = [
        config.gateway.dead_letter_queue.clone(),
        topology::RETRY_READY_QUEUE.to_owned(),
        topology::REPLAY_QUEUE.to_owned(),
    ]
    .into_iter()
    .chain(
        config
            .retry
            .delays
            .iter()
            .map(|d| topology::retry_wait_queue(*d)),
    )
    .map(|queue| Watched {
        broker: own,
        queue,
        platform: String::new(),
    });
    platforms.chain(gateway_queues).collect()
}

/// Keeps the backlog gauges current until `stop`.
pub fn watch(
    config: &Arc<Config>,
    links: &HashMap<BrokerIndex, Arc<Link>>,
    store: &Store,
    activity: &Arc<Activity>,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
) {
    tokio::spawn(poll_queues(
        config.clone(),
        links.clone(),
        activity.clone(),
        metrics.clone(),
        stop.clone(),
    ));
    if config.gateway.store_dead_letters {
        tokio::spawn(poll_dead_letters(
            store.clone(),
            metrics.clone(),
            config.telemetry.backlog_interval,
            stop.clone(),
        ));
    }
    tokio::spawn(poll_retries(
        activity.clone(),
        metrics.clone(),
        config.telemetry.backlog_interval,
        stop.clone(),
    ));
}

async fn poll_queues(
    config: Arc<Config>,
    links: HashMap<BrokerIndex, Arc<Link>>,
    activity: Arc<Activity>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let queues = watched(&config);
    let mut by_broker: HashMap<BrokerIndex, Vec<&Watched>> = HashMap::new();
    for w in &queues {
        by_broker.entry(w.broker).or_default().push(w);
    }
    loop {
        for (broker, queues) in &by_broker {
            let Some(connection) = links.get(broker).and_then(|l| l.current()) else {
                continue;
            };
            let name = &config.broker(*broker).name;
            depths(&connection, name, queues, &activity, &metrics).await;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(config.telemetry.backlog_interval) => {}
        }
    }
}

/// Asks one broker for its queues' depths on a channel of their own. A queue that does not
/// exist closes the channel (404): the next queue gets a fresh one, and the missing one
/// keeps no stale figure. A broker that cannot be reached keeps the last figures, which
/// the overview shows with the time they were counted.
async fn depths(
    connection: &lapin::Connection,
    broker: &str,
    queues: &[&Watched],
    activity: &Activity,
    metrics: &Metrics,
) {
    let mut channel: Option<lapin::Channel> = None;
    for w in queues {
        let labels = QueueLabels {
            broker: broker.to_owned(),
            queue: w.queue.clone(),
            platform: w.platform.clone(),
        };
        if channel.as_ref().is_none_or(|c| !c.status().connected()) {
            channel = match tokio::time::timeout(CLOSE_TIMEOUT, connection.create_channel()).await {
                Ok(Ok(c)) => Some(c),
                _ => return,
            };
        }
        let Some(c) = &channel else { return };
        let declared = c.queue_declare(
            w.queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        );
        let ingress = activity.platform_by_id(&w.platform);
        match tokio::time::timeout(CLOSE_TIMEOUT, declared).await {
            Ok(Ok(q)) => {
                metrics
                    .queue_ready
                    .get_or_create(&labels)
                    .set(i64::from(q.message_count()));
                if let Some(platform) = ingress {
                    platform.set_queue(Some(QueueDepth {
                        ready: u64::from(q.message_count()),
                        consumers: q.consumer_count(),
                        counted_at: std::time::SystemTime::now(),
                    }));
                }
            }
            _ => {
                metrics.queue_ready.remove(&labels);
                if let Some(platform) = ingress {
                    platform.set_queue(None);
                }
            }
        }
    }
    if let Some(c) = channel
        && c.status().connected()
    {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, c.close(200, "counted".into())).await;
    }
}

async fn poll_dead_letters(
    store: Store,
    metrics: Arc<Metrics>,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        for reason in Reason::ALL {
            let filter = DeadLetterFilter {
                reason: Some(reason.code().to_owned()),
                state: Some(DeadLetterState::Pending),
                ..DeadLetterFilter::default()
            };
            // A store that does not answer leaves the last figures; `ozg_store_up` says why.
            if let Ok(n) = store.count_dead_letters(&filter).await {
                metrics
                    .dead_letters_pending
                    .get_or_create(&ReasonLabels {
                        reason: reason.code().to_owned(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Copies each destination's retry backlog from the pipeline's counters.
async fn poll_retries(
    activity: Arc<Activity>,
    metrics: Arc<Metrics>,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        for (destination, d) in activity.destinations() {
            let waiting = d.retrying.load(std::sync::atomic::Ordering::Relaxed);
            metrics
                .retry_backlog
                .get_or_create(&DestinationLabels { destination })
                .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ingress_queue_and_every_queue_of_the_gateway_is_watched() {
        let config = Config::parse(
            r#"
[gateway]
dead_letter_broker = "gw"
[retry]
delays = ["1s", "30s"]
[brokers.gw]
url = "amqp://guest:guest@127.0.0.1:5672/gw"
[brokers.he]
url = "amqp://guest:guest@127.0.0.1:5672/he"
[[platforms]]
id = "civento-he"
land = "06"
broker = "he"
ingress_queue = "ozg.submissions"
status_exchange = "ozg.status"
"#,
            "test.toml",
            std::path::Path::new("."),
        )
        .unwrap();
        let got: Vec<(usize, String, String)> = watched(&config)
            .into_iter()
            .map(|w| (w.broker, w.queue, w.platform))
            .collect();
        let gw = config.gateway.dead_letter_broker;
        let he = config.platforms[0].broker;
        let own = |queue: &str| (gw, queue.to_owned(), String::new());
        assert_eq!(
            got,
            vec![
                (he, "ozg.submissions".to_owned(), "civento-he".to_owned()),
                own("ozg.gateway.dead-letters"),
                own("ozg.gateway.retry.ready"),
                own("ozg.gateway.replay"),
                own(&topology::retry_wait_queue(Duration::from_secs(1))),
                own(&topology::retry_wait_queue(Duration::from_secs(30))),
            ]
        );
    }
}
