//! A batch of deliveries' way through the stages, each in its own module:
//! `accept` (size, content type, decode, validate, fingerprint), `route` (the
//! destination, no I/O), `record` (deduplication check, and the record of a confirmed
//! delivery), `deliver` (publish with a confirm), `report` (status events, counters,
//! traces) and `ack` (the one decision per delivery), sent to the broker through
//! [`settle`], which every consumer of the gateway settles through.
//!
//! Architecture invariant: `Pipeline::settle` is the only code that decides ack, requeue,
//! retry or dead-letter for a delivery taken off a platform queue. Every delivery ends in
//! exactly one of: delivered (confirmed by the destination's broker, recorded, then
//! acked), dead-lettered with a reason (confirmed by the dead-letter exchange, then acked),
//! scheduled for retry (confirmed by the delay queue, then acked), or left on the queue for
//! redelivery (nacked with requeue, or never acked because the channel went away).

mod accept;
mod ack;
mod deliver;
mod directory;
pub mod headers;
mod record;
mod report;
mod route;
pub mod settle;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use lapin::message::Delivery;
use lapin::types::FieldTable;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge, histogram::Histogram};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use crate::activity::{Activity, DestinationActivity};
use crate::amqp::link::Link;
use crate::amqp::{Publisher, header_text};
use crate::config::Config;
use crate::model::BrokerIndex;
use crate::outcome::{Attempts, Outcome, Reason, Rejection};
use crate::routing::live::Snapshot;
use crate::store::{self, Deduplicator};
use crate::telemetry::{self, DestinationLabels, Metrics, PlatformLabels};
use crate::topology::{REPLAY_QUEUE, RETRY_READY_QUEUE};

pub use headers::now_timestamp;
pub use report::status_word;
pub use settle::{AckOrder, AckTurn, Disposition, Settled};

/// The routing directory in use and one `Outlet` per destination in it.
pub struct Live {
    pub snapshot: Arc<Snapshot>,
    /// Same index as `snapshot.destinations`.
    outlets: Vec<Arc<Outlet>>,
}

/// A destination's publishers with its metric and activity handles, looked up once per
/// directory rather than (with a label string built each time) once per submission.
struct Outlet {
    /// The confirm channel every destination on the broker shares, while the exchange is
    /// there.
    shared: Arc<Publisher>,
    /// A publisher of its own, while the exchange is missing: its publishes then fail
    /// without closing the channel the other destinations share.
    own: Publisher,
    /// Set when the exchange was found missing (a passive check when a directory was
    /// installed, or a publish the broker refused for it); cleared by a publish confirmed
    /// through `own` or a check that finds the exchange.
    missing: AtomicBool,
    confirm_seconds: Histogram,
    activity: Arc<DestinationActivity>,
    /// `ozg_messages_total{outcome="delivered"}` by origin platform (same index as
    /// `config.platforms`), created on first use.
    delivered: Vec<OnceLock<Counter>>,
}

/// What [`Live::new`] builds outlets from.
struct OutletParts<'a> {
    links: &'a HashMap<BrokerIndex, Arc<Link>>,
    /// The shared confirm channel of each broker's publishing link.
    shared: &'a HashMap<BrokerIndex, Arc<Publisher>>,
    confirm_timeout: Duration,
    metrics: &'a Metrics,
    activity: &'a Activity,
    platforms: usize,
}

impl Live {
    /// One outlet per destination of `snapshot`; those `current` has for the same
    /// destination on the same broker are kept, with their open channels.
    fn new(snapshot: Snapshot, current: Option<&Live>, parts: &OutletParts<'_>) -> Live {
        let outlets = snapshot
            .destinations
            .iter()
            .map(|d| {
                let kept = current.and_then(|c| {
                    c.snapshot
                        .destination_index(&d.id)
                        .filter(|&i| c.snapshot.destinations[i].broker == d.broker)
                        .and_then(|i| c.outlets.get(i).cloned())
                });
                kept.unwrap_or_else(|| {
                    Arc::new(Outlet {
                        // Every configured broker has a publishing link (`app::Links`).
                        shared: parts.shared[&d.broker].clone(),
                        own: Publisher::new(parts.links[&d.broker].clone(), parts.confirm_timeout),
                        missing: AtomicBool::new(false),
                        confirm_seconds: parts
                            .metrics
                            .confirm_seconds
                            .get_or_create(&DestinationLabels {
                                destination: d.id.clone(),
                            })
                            .clone(),
                        activity: parts.activity.destination(&d.id),
                        delivered: (0..parts.platforms).map(|_| OnceLock::new()).collect(),
                    })
                })
            })
            .collect();
        Live {
            snapshot: Arc::new(snapshot),
            outlets,
        }
    }
}

/// A platform's metric handles.
struct PlatformHandles {
    in_flight: Gauge,
    processing_seconds: Histogram,
}

/// Everything the message path needs, shared by all platform consumers.
pub struct Pipeline {
    config: Arc<Config>,
    /// Swapped whole when an operator changes the directory; a submission keeps the one it
    /// started with until it is settled.
    live: ArcSwap<Live>,
    /// Told of every `install`, for those that follow the directory (receipt consumers).
    directory_changes: tokio::sync::watch::Sender<()>,
    /// Publishing links of every configured broker, for destinations added at run time.
    publish_links: HashMap<BrokerIndex, Arc<Link>>,
    /// One shared confirm channel per publishing link, for every destination on it.
    shared: HashMap<BrokerIndex, Arc<Publisher>>,
    /// One per platform, same index as `config.platforms`.
    status: Vec<Publisher>,
    dead_letter: Publisher,
    /// Publishes to the delay queues on the gateway's broker.
    retry: Publisher,
    /// Publishes replayed dead letters to the replay queue on the gateway's broker.
    replay: Publisher,
    dedup: Arc<Deduplicator>,
    metrics: Arc<Metrics>,
    activity: Arc<Activity>,
    /// Submission ids being delivered right now. The same id taken off a queue again in the
    /// meantime (the platform republished it, or the broker redelivered it) must not pass
    /// the deduplication check before the first delivery is confirmed and recorded.
    delivering: std::sync::Mutex<std::collections::HashSet<Uuid>>,
    /// Held by [`Pipeline::install_newer`] and [`Pipeline::reload_file`] from their checks to
    /// the swap.
    installing: std::sync::Mutex<()>,
    /// The configuration whose file entries (destinations, routes, services) the directory
    /// is built on: `config`, or the last configuration file reloaded (SIGHUP).
    directory_config: ArcSwap<Config>,
    /// Same index as `config.platforms`.
    platform_handles: Vec<PlatformHandles>,
}

/// Where a delivery was taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A platform's ingress queue (index into `config.platforms`).
    Platform(usize),
    /// The gateway's retry queue: a submission whose delivery failed before.
    Retry,
    /// The gateway's replay queue: a dead letter an operator sent through again.
    Replay,
}

/// What the gateway's own headers say about a replayed dead letter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Replay {
    of: String,
    destination: Option<String>,
}

/// The publishing parts a [`Pipeline`] is made of, built by [`crate::app`].
pub struct Publishers {
    /// Publishing link of every configured broker.
    pub links: HashMap<BrokerIndex, Arc<Link>>,
    /// One per platform, same index as `config.platforms`.
    pub status: Vec<Publisher>,
    pub dead_letter: Publisher,
    pub retry: Publisher,
    pub replay: Publisher,
}

/// Where a delivery came from and what the gateway's own headers said about it.
struct Arrival {
    platform: Option<usize>,
    /// The trace every message about this submission carries (`telemetry::submission_trace`).
    trace: FieldTable,
    attempts: Attempts,
    replay: Option<Replay>,
    received_at: SystemTime,
}

impl Arrival {
    /// Whether a delivery of this arrival keeps its trace ("received", "forwarded") on its
    /// delivery record: a platform's submission on its first attempt.
    fn trace_on_record(&self) -> bool {
        self.replay.is_none() && self.attempts.failed == 0
    }
}

impl Pipeline {
    pub fn new(
        config: Arc<Config>,
        snapshot: Snapshot,
        publishers: Publishers,
        dedup: Arc<Deduplicator>,
        metrics: Arc<Metrics>,
        activity: Arc<Activity>,
    ) -> Pipeline {
        let shared: HashMap<BrokerIndex, Arc<Publisher>> = publishers
            .links
            .iter()
            .map(|(&broker, link)| {
                let publisher = Publisher::shared(link.clone(), config.gateway.confirm_timeout);
                (broker, Arc::new(publisher))
            })
            .collect();
        let live = Live::new(
            snapshot,
            None,
            &OutletParts {
                links: &publishers.links,
                shared: &shared,
                confirm_timeout: config.gateway.confirm_timeout,
                metrics: &metrics,
                activity: &activity,
                platforms: config.platforms.len(),
            },
        );
        let platform_handles = config
            .platforms
            .iter()
            .map(|p| p.id.as_str())
            .map(|id| {
                let labels = PlatformLabels {
                    platform: id.to_owned(),
                };
                PlatformHandles {
                    in_flight: metrics.in_flight.get_or_create(&labels).clone(),
                    processing_seconds: metrics.processing_seconds.get_or_create(&labels).clone(),
                }
            })
            .collect();
        let live = Arc::new(live);
        directory::check_exchanges(&live, &publishers.links, config.gateway.confirm_timeout);
        Pipeline {
            platform_handles,
            directory_config: ArcSwap::new(config.clone()),
            config,
            live: ArcSwap::new(live),
            directory_changes: tokio::sync::watch::Sender::new(()),
            publish_links: publishers.links,
            shared,
            status: publishers.status,
            dead_letter: publishers.dead_letter,
            retry: publishers.retry,
            replay: publishers.replay,
            dedup,
            metrics,
            activity,
            delivering: std::sync::Mutex::default(),
            installing: std::sync::Mutex::default(),
        }
    }

    /// The routing directory in use.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.load().snapshot.clone()
    }

    /// Whether the store answers deduplication: consumers wait for it before taking more.
    pub fn store_health(&self) -> &store::StoreHealth {
        self.dedup.health()
    }

    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Takes deliveries taken off one subscription, in delivery order, to their end: each is
    /// processed (the items of a batch side by side, so that their publishes, confirms and
    /// store requests share round trips) and settled, and then the batch's acks and nacks
    /// go to the broker in `turn`, after every earlier batch of the subscription.
    pub async fn process_batch(&self, source: Source, deliveries: Vec<Delivery>, turn: AckTurn) {
        let settled: Vec<Settled> = if deliveries.len() == 1 {
            let mut one = Vec::with_capacity(1);
            for delivery in deliveries {
                one.push(self.process(source, delivery).await);
            }
            one
        } else {
            futures_util::future::join_all(
                deliveries
                    .into_iter()
                    .map(|delivery| self.process(source, delivery)),
            )
            .await
        };
        settle::batch(settled, turn).await;
    }

    /// Takes one delivery through handling and settling; what is to be sent to the broker
    /// for it comes back.
    async fn process(&self, source: Source, delivery: Delivery) -> Settled {
        let mut arrival = self.arrival(source, &delivery);
        let headers = delivery.properties.headers().as_ref();
        let queue = match source {
            Source::Platform(i) => self.config.platforms[i].ingress_queue.as_str(),
            Source::Retry => RETRY_READY_QUEUE,
            Source::Replay => REPLAY_QUEUE,
        };
        let platform_id = arrival
            .platform
            .map_or("?", |i| self.config.platforms[i].id.as_str());
        let span = process_span(queue, &delivery, platform_id, arrival.attempts);
        // A platform's trace is continued; without one a new trace starts here.
        if !span.is_disabled() {
            let _ = span.set_parent(telemetry::extract(headers));
        }
        arrival.trace = telemetry::submission_trace(&span, headers);
        let started = Instant::now();
        // A retry or replay of a platform no longer configured has no platform to count
        // under; its outcome is counted as orphaned (`note`).
        let handles = arrival.platform.map(|i| &self.platform_handles[i]);
        match source {
            Source::Platform(i) => {
                self.platform_handles[i].in_flight.inc();
                self.activity.consumed(i);
            }
            Source::Retry => {
                self.activity.retry_returned(
                    &header_text(headers, headers::DESTINATION).unwrap_or_default(),
                );
            }
            Source::Replay => {}
        }
        // Held until settled: an operator's change to the directory meanwhile does not move
        // this submission's destination under it.
        let live = self.live.load_full();
        // The delivery stays here, lent to the stages: handed down by value, it would take
        // its size twice in the state of every submission in flight.
        let (disposition, submission_id) = self
            .process_in(&live, &arrival, &delivery)
            .instrument(span)
            .await;
        let settled = Settled {
            delivery,
            disposition,
            submission_id,
        };
        if let Some(handles) = handles {
            handles
                .processing_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        if let Source::Platform(i) = source {
            self.platform_handles[i].in_flight.dec();
            self.activity.settled(i);
        }
        settled
    }

    async fn process_in(
        &self,
        live: &Live,
        arrival: &Arrival,
        delivery: &Delivery,
    ) -> (Disposition, String) {
        let headers = delivery.properties.headers().as_ref();
        let outcome = match arrival.platform {
            Some(p) => self.handle(live, p, arrival, delivery).await,
            // A retry or replay for a platform that is no longer configured: nobody to
            // tell, nothing to validate against; an operator has to look at it.
            None => Outcome::Rejected {
                rejection: Rejection {
                    reason: Reason::DeliveryFailed,
                    field: None,
                    detail: "retried or replayed submission names a platform that is no longer configured"
                        .to_owned(),
                },
                envelope: None,
                submission_id: header_text(headers, headers::SUBMISSION_ID),
                destination: None,
            },
        };
        self.settle(live, arrival, delivery, outcome).await
    }

    /// Accept, deduplicate, route, deliver, record: the stages up to the outcome that
    /// [`settle`](Self::settle) decides on.
    async fn handle(
        &self,
        live: &Live,
        platform: usize,
        arrival: &Arrival,
        delivery: &Delivery,
    ) -> Outcome {
        let accepted = match self.accept(platform, delivery) {
            Ok(accepted) => accepted,
            Err(not) => {
                return Outcome::Rejected {
                    rejection: not.rejection,
                    envelope: None,
                    submission_id: not.submission_id,
                    destination: None,
                };
            }
        };
        let id = accepted.envelope.submission_id;
        let submission_id = id.to_string();
        tracing::Span::current().record("messaging.message.id", submission_id.as_str());
        let Some(_delivering) = self.claim(id) else {
            return Outcome::Requeue {
                submission_id,
                error: "the same submission id is being delivered right now".to_owned(),
            };
        };
        let accepted = match self.check(accepted).await {
            Ok(accepted) => accepted,
            Err(outcome) => return outcome,
        };
        let snapshot = &live.snapshot;
        let replay = arrival.replay.as_ref();
        let destination = match route::route(snapshot, &accepted.envelope, replay) {
            Ok(i) => i,
            Err(rejection) => {
                return Outcome::Rejected {
                    rejection,
                    submission_id: Some(submission_id),
                    envelope: Some(accepted.envelope),
                    destination: None,
                };
            }
        };
        let d = &snapshot.destinations[destination];
        let outlet = &live.outlets[destination];
        let message = (&accepted.envelope, accepted.encoding);
        let delivered = self
            .deliver(platform, &arrival.trace, delivery, message, (d, outlet))
            .await;
        if let Err(e) = delivered {
            return self.after_failure(arrival.attempts, &e, accepted.envelope, &d.id);
        }
        self.record(platform, arrival, accepted, (destination, d))
            .await
    }
}

/// The span of one delivery's processing, after OpenTelemetry's messaging conventions.
fn process_span(
    queue: &str,
    delivery: &Delivery,
    platform_id: &str,
    attempts: Attempts,
) -> tracing::Span {
    tracing::info_span!(
        "process",
        otel.name = %format!("process {queue}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.destination.name = %queue,
        messaging.rabbitmq.destination.routing_key = %delivery.routing_key,
        messaging.message.id = tracing::field::Empty,
        messaging.message.body.size = delivery.data.len(),
        ozg.platform = %platform_id,
        ozg.attempt = attempts.failed + 1,
        ozg.outcome = tracing::field::Empty,
        ozg.reason = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// Bytes of the state one submission in flight keeps: its delivery and the future of its
/// processing, which the consumers' windows count besides the body.
#[cfg(test)]
pub(crate) fn state_per_submission() -> usize {
    fn size<F>(_: fn(&'static Pipeline, Delivery) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    size(|p: &'static Pipeline, d: Delivery| p.process(Source::Retry, d))
        + std::mem::size_of::<Delivery>()
}
