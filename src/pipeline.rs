//! One submission's way: size check → decode → validate → resolve → deliver → settle.
//!
//! Architecture invariant: [`Gateway::settle`] is the only code that acks, nacks or
//! dead-letters a delivery taken off a platform queue. Every delivery ends in exactly one
//! of: delivered (confirmed by the destination's broker, recorded, then acked),
//! dead-lettered with a reason (confirmed by the dead-letter exchange, then acked), or left
//! on the queue for redelivery (nacked with requeue, or never acked because the channel
//! went away).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable};
use uuid::Uuid;

use crate::activity::Activity;
use crate::activity::DestinationActivity;
use crate::amqp;
use crate::amqp::guard::{self, DROPPED_HEADERS};
use crate::amqp::{
    DeliveryError, Publisher, REPLAY_QUEUE, RETRY_READY_QUEUE, header_string, header_text,
    retry_wait_queue,
};
use crate::config::Config;
use crate::envelope::{self, DecodeError, Encoding, Envelope};
use crate::link::Link;
use crate::model::{BrokerIndex, Destination, StatusFormat};
use crate::outcome::{Outcome, Reason, Rejection};
use crate::routing::live::Snapshot;
use crate::store::{self, Deduplicator, DeliveryRecord, Fingerprint, Seen, TraceEvent};
use crate::telemetry::{self, DestinationLabels, Metrics, OutcomeLabels, PlatformLabels};
use crate::wire::v1 as wire;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge, histogram::Histogram};
use std::sync::OnceLock;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// AMQP headers the gateway sets. Back offices and operators may rely on these names.
pub mod headers {
    pub const ORIGIN_PLATFORM: &str = "x-ozg-origin-platform";
    pub const ORIGIN_LAND: &str = "x-ozg-origin-land";
    pub const SERVICE_KEY: &str = "x-ozg-service-key";
    pub const ARS: &str = "x-ozg-ars";
    pub const DESTINATION: &str = "x-ozg-destination";
    pub const SUBMISSION_ID: &str = "x-ozg-submission-id";
    pub const REASON: &str = "x-ozg-reason";
    pub const DETAIL: &str = "x-ozg-detail";
    pub const FIELD: &str = "x-ozg-field";
    pub const SOURCE_QUEUE: &str = "x-ozg-source-queue";
    pub const DEAD_LETTERED_AT: &str = "x-ozg-dead-lettered-at";
    pub const STATUS: &str = "x-ozg-status";
    /// On retries: failed delivery attempts so far, the first failure, the last error.
    pub const ATTEMPTS_FAILED: &str = "x-ozg-attempts-failed";
    pub const FIRST_FAILURE_AT: &str = "x-ozg-first-failure-at";
    pub const LAST_ERROR: &str = "x-ozg-last-error";
    /// On replays: the dead letter replayed, and the destination an operator named.
    pub const REPLAY_OF: &str = "x-ozg-replay-of";
    pub const REPLAY_DESTINATION: &str = "x-ozg-replay-destination";
    /// The id the dead letter keeps in the store; a redelivery of it is stored once.
    pub const DEAD_LETTER_ID: &str = "x-ozg-dead-letter-id";
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
}

/// How long to wait before handing a delivery back to the broker when it could not even be
/// dead-lettered (dead-letter broker unreachable): keeps a failing path from spinning.
const REQUEUE_DELAY: Duration = Duration::from_secs(1);

/// The routing directory in use and one [`Outlet`] per destination in it.
pub struct Live {
    pub snapshot: Arc<Snapshot>,
    /// Same index as `snapshot.destinations`.
    outlets: Vec<Arc<Outlet>>,
}

/// A destination's publisher with its metric and activity handles, looked up once per
/// directory rather than (with a label string built each time) once per submission.
struct Outlet {
    publisher: Publisher,
    confirm_seconds: Histogram,
    activity: Arc<DestinationActivity>,
    /// `ozg_messages_total{outcome="delivered"}` by origin platform (same index as
    /// `config.platforms`), created on first use.
    delivered: Vec<OnceLock<Counter>>,
}

/// What [`Live::new`] builds outlets from.
struct OutletParts<'a> {
    links: &'a HashMap<BrokerIndex, Arc<Link>>,
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
                        publisher: Publisher::new(
                            parts.links[&d.broker].clone(),
                            parts.confirm_timeout,
                        ),
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
pub struct Gateway {
    config: Arc<Config>,
    /// Swapped whole when an operator changes the directory; a submission keeps the one it
    /// started with until it is settled.
    live: ArcSwap<Live>,
    /// Told of every `install`, for those that follow the directory (receipt consumers).
    directory_changes: tokio::sync::watch::Sender<()>,
    /// Publishing links of every configured broker, for destinations added at run time.
    publish_links: HashMap<BrokerIndex, Arc<Link>>,
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
    /// Held by [`Gateway::install_newer`] and [`Gateway::reload_file`] from their checks to
    /// the swap.
    installing: std::sync::Mutex<()>,
    /// The configuration whose file entries (destinations, routes, services) the directory
    /// is built on: `config`, or the last configuration file reloaded (SIGHUP).
    directory_config: ArcSwap<Config>,
    /// Same index as `config.platforms`.
    platform_handles: Vec<PlatformHandles>,
}

/// One outcome as `Gateway::record_outcome` notes it.
struct Noted<'a> {
    platform: Option<usize>,
    platform_id: &'a str,
    submission_id: &'a str,
    destination: &'a str,
    outcome: &'a str,
    reason: &'a str,
    error: &'a str,
    /// For a platform no longer configured: `retry` or `replay`.
    source: &'a str,
}

/// Takes a submission id out of `Gateway::delivering` when its processing ends, whatever
/// the way out.
struct DeliveringGuard<'a> {
    set: &'a std::sync::Mutex<std::collections::HashSet<Uuid>>,
    id: Uuid,
}

impl Drop for DeliveringGuard<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
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

/// The publishing parts a [`Gateway`] is made of, built by [`crate::app`].
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

/// How often delivery of this submission failed before, read from the headers the gateway
/// set when it scheduled the retry (never from a platform's own headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attempts {
    pub failed: u32,
    /// Unix seconds of the first failure.
    pub first_failure: Option<u64>,
}

impl Gateway {
    pub fn new(
        config: Arc<Config>,
        snapshot: Snapshot,
        publishers: Publishers,
        dedup: Arc<Deduplicator>,
        metrics: Arc<Metrics>,
        activity: Arc<Activity>,
    ) -> Gateway {
        let live = Live::new(
            snapshot,
            None,
            &OutletParts {
                links: &publishers.links,
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
        Gateway {
            platform_handles,
            directory_config: ArcSwap::new(config.clone()),
            config,
            live: ArcSwap::from_pointee(live),
            directory_changes: tokio::sync::watch::Sender::new(()),
            publish_links: publishers.links,
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

    /// Puts a new routing directory in use. Destinations that stay keep their publisher
    /// (and its open channel); submissions in flight finish on the directory they started
    /// with.
    pub fn install(&self, snapshot: Snapshot) {
        let live = Live::new(
            snapshot,
            Some(&self.live.load()),
            &OutletParts {
                links: &self.publish_links,
                confirm_timeout: self.config.gateway.confirm_timeout,
                metrics: &self.metrics,
                activity: &self.activity,
                platforms: self.config.platforms.len(),
            },
        );
        self.live.store(Arc::new(live));
        self.directory_changes.send_replace(());
    }

    /// [`install`](Self::install) unless the directory in use is at `snapshot`'s version or
    /// a later one; returns whether it was installed. The admin API and the poll for other
    /// instances' changes both install: without this, a poll that read the store just
    /// before a local change could put the older directory back.
    ///
    /// After a reload of the configuration file, a snapshot built on the file entries of
    /// before (a change through the admin API that raced the reload) is built again on the
    /// reloaded ones: a reload is never undone by a change that did not know of it.
    pub fn install_newer(&self, snapshot: Snapshot) -> bool {
        let _one_at_a_time = self
            .installing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if snapshot.version <= self.snapshot().version {
            return false;
        }
        let directory_config = self.directory_config.load_full();
        if Arc::ptr_eq(&directory_config, &self.config) {
            self.install(snapshot);
        } else {
            let (snapshot, problems) = snapshot.rebuild(&directory_config);
            for (key, message) in problems {
                tracing::error!(entry = %key, problem = %message,
                    "stored routing directory entry left out");
            }
            self.install(snapshot);
        }
        true
    }

    /// The configuration the routing directory's file entries come from: the one the
    /// gateway started with, or the configuration file reloaded last. Build directories
    /// to install on this one.
    pub fn directory_config(&self) -> Arc<Config> {
        self.directory_config.load_full()
    }

    /// Puts the file entries of `config` in use, with the stored entries of the directory
    /// in use: a reloaded configuration file's destinations, routes and services. Returns
    /// the stored entries that no longer fit and were left out.
    pub fn reload_file(&self, config: Config) -> Vec<crate::routing::live::Problem> {
        let _one_at_a_time = self
            .installing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let config = Arc::new(config);
        let (snapshot, problems) = self.snapshot().rebuild(&config);
        self.directory_config.store(config);
        self.install(snapshot);
        problems
    }

    /// Changes with every directory put in use.
    pub fn watch_directory(&self) -> tokio::sync::watch::Receiver<()> {
        self.directory_changes.subscribe()
    }

    /// Sends a stored dead letter through the normal path again: to the replay queue, from
    /// which the gateway takes it like a platform's submission (validation, routing afresh
    /// or to `destination`, deduplication). Confirmed by the broker before it returns.
    pub async fn replay(
        &self,
        dead_letter_id: &str,
        platform: &str,
        message: &store::DeadLetterMessage,
        destination: Option<&str>,
    ) -> Result<(), DeliveryError> {
        let mut headers: FieldTable = FieldTable::default();
        if let Ok(serde_json::Value::Object(stored)) =
            serde_json::from_str::<serde_json::Value>(&message.headers)
        {
            for (name, value) in stored {
                // The gateway's own headers describe the dead-lettering, not the submission.
                if name.starts_with("x-ozg-") || name.starts_with("x-death") {
                    continue;
                }
                if let serde_json::Value::String(text) = value {
                    headers.insert(name.as_str().into(), header_string(text));
                }
            }
        }
        headers.insert(headers::ORIGIN_PLATFORM.into(), header_string(platform));
        headers.insert(headers::REPLAY_OF.into(), header_string(dead_letter_id));
        if let Some(destination) = destination {
            headers.insert(
                headers::REPLAY_DESTINATION.into(),
                header_string(destination),
            );
        }
        let mut properties = BasicProperties::default().with_headers(headers);
        if !message.content_type.is_empty() {
            properties = properties.with_content_type(message.content_type.as_str().into());
        }
        if !message.message_id.is_empty() {
            properties = properties.with_message_id(message.message_id.as_str().into());
        }
        self.replay
            .publish_fitted("", REPLAY_QUEUE, &message.body, |frame_max| {
                fitted(&properties, frame_max)
            })
            .await
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
        send_dispositions(settled, turn).await;
    }

    /// Takes one delivery through handling and settling; what is to be sent to the broker
    /// for it comes back.
    async fn process(&self, source: Source, delivery: Delivery) -> Settled {
        let received_at = SystemTime::now();
        let headers = delivery.properties.headers().as_ref();
        let (platform, attempts, replay) = match source {
            Source::Platform(i) => (Some(i), Attempts::default(), None),
            Source::Retry | Source::Replay => {
                let name = header_text(headers, headers::ORIGIN_PLATFORM).unwrap_or_default();
                let platform = self.config.platforms.iter().position(|p| p.id == name);
                if source == Source::Retry {
                    let attempts = Attempts {
                        failed: header_text(headers, headers::ATTEMPTS_FAILED)
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(1),
                        first_failure: header_timestamp(headers, headers::FIRST_FAILURE_AT),
                    };
                    (platform, attempts, None)
                } else {
                    let replay = Replay {
                        of: header_text(headers, headers::REPLAY_OF).unwrap_or_default(),
                        destination: header_text(headers, headers::REPLAY_DESTINATION)
                            .filter(|d| !d.is_empty()),
                    };
                    (platform, Attempts::default(), Some(replay))
                }
            }
        };
        let queue = match source {
            Source::Platform(i) => self.config.platforms[i].ingress_queue.as_str(),
            Source::Retry => RETRY_READY_QUEUE,
            Source::Replay => REPLAY_QUEUE,
        };
        let platform_id = platform.map_or("?", |i| self.config.platforms[i].id.as_str());
        // Span names and attributes follow OpenTelemetry's messaging conventions.
        let span = tracing::info_span!(
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
        );
        // A platform's trace is continued; without one a new trace starts here.
        if !span.is_disabled() {
            let _ = span.set_parent(telemetry::extract(headers));
        }
        let trace = telemetry::submission_trace(&span, headers);
        let started = Instant::now();
        // A retry or replay of a platform no longer configured has no platform to count
        // under; its outcome is counted as orphaned (`record_outcome`).
        let handles = platform.map(|i| &self.platform_handles[i]);
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
        let arrival = Arrival {
            platform,
            trace,
            attempts,
            replay,
            received_at,
        };
        let settled = self
            .process_in(&live, arrival, delivery)
            .instrument(span)
            .await;
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

    async fn process_in(&self, live: &Live, arrival: Arrival, delivery: Delivery) -> Settled {
        let headers = delivery.properties.headers().as_ref();
        let outcome = match arrival.platform {
            Some(p) => self.handle(live, p, &arrival, &delivery).await,
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
        let (disposition, submission_id) = self.settle(live, &arrival, &delivery, outcome).await;
        Settled {
            delivery,
            disposition,
            submission_id,
        }
    }

    async fn handle(
        &self,
        live: &Live,
        platform: usize,
        arrival: &Arrival,
        delivery: &Delivery,
    ) -> Outcome {
        let attempts = arrival.attempts;
        let (envelope, encoding, fingerprint) = match self.accept(platform, delivery) {
            Ok(found) => found,
            Err((rejection, submission_id)) => {
                return Outcome::Rejected {
                    rejection,
                    envelope: None,
                    submission_id,
                    destination: None,
                };
            }
        };
        let submission_id = envelope.submission_id.to_string();
        tracing::Span::current().record("messaging.message.id", submission_id.as_str());
        let claimed = self
            .delivering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(envelope.submission_id);
        if !claimed {
            return Outcome::Requeue {
                submission_id,
                error: "the same submission id is being delivered right now".to_owned(),
            };
        }
        let _delivering = DeliveringGuard {
            set: &self.delivering,
            id: envelope.submission_id,
        };
        // Consumers take nothing while the store fails, but a subscription that winds down
        // (stop, pause, lost channel) processes what the broker had already sent: nothing is
        // delivered that could not be recorded, or that would be checked against a file
        // nobody will see again.
        if !self.store_health().is_up() {
            return Outcome::Requeue {
                submission_id,
                error: format!(
                    "the store does not answer: {}",
                    self.store_health().status().problem()
                ),
            };
        }
        match self.dedup.check(envelope.submission_id, fingerprint).await {
            Ok(Seen::New) => {}
            Ok(Seen::Delivered { destination, .. }) => {
                return Outcome::Duplicate {
                    envelope,
                    destination,
                };
            }
            Ok(Seen::Conflict {
                destination,
                delivered_at,
            }) => {
                return Outcome::Rejected {
                    rejection: Rejection::conflict(&destination, delivered_at),
                    submission_id: Some(submission_id),
                    envelope: Some(envelope),
                    destination: Some(destination),
                };
            }
            Err(e) => {
                return Outcome::Requeue {
                    submission_id,
                    error: e.to_string(),
                };
            }
        }
        let snapshot = &live.snapshot;
        let destination = {
            let route = tracing::info_span!(
                "route",
                ozg.service = %envelope.service,
                ozg.ars = %envelope.ars,
                ozg.destination = tracing::field::Empty,
            )
            .entered();
            let named = arrival
                .replay
                .as_ref()
                .and_then(|r| r.destination.as_deref());
            let found = match named {
                // An operator named the destination of this replay.
                Some(id) => snapshot.destination_index(id).ok_or_else(|| Rejection {
                    reason: Reason::NoRoute,
                    field: None,
                    detail: format!(
                        "the destination {id:?} named for this replay is not in the directory"
                    ),
                }),
                None => snapshot
                    .table
                    .resolve(envelope.service, envelope.ars)
                    .map(|f| f.destination)
                    .ok_or_else(|| Rejection::no_route(envelope.service, envelope.ars)),
            };
            if let Ok(i) = found {
                route.record("ozg.destination", snapshot.destinations[i].id.as_str());
            }
            found
        };
        let destination = match destination {
            Ok(i) => i,
            Err(rejection) => {
                return Outcome::Rejected {
                    rejection,
                    submission_id: Some(submission_id),
                    envelope: Some(envelope),
                    destination: None,
                };
            }
        };
        let d = &snapshot.destinations[destination];
        if let Err(e) = self
            .deliver(
                platform,
                &arrival.trace,
                delivery,
                (&envelope, encoding),
                d,
                &live.outlets[destination],
            )
            .await
        {
            let failed = attempts.failed + 1;
            let now = unix_seconds();
            let first_failure = attempts.first_failure.unwrap_or(now);
            let age = Duration::from_secs(now.saturating_sub(first_failure));
            let retry = &self.config.retry;
            if failed >= retry.max_attempts || age >= retry.max_age {
                return Outcome::Rejected {
                    rejection: Rejection::gave_up(&e, failed, age),
                    submission_id: Some(submission_id),
                    envelope: Some(envelope),
                    destination: Some(d.id.clone()),
                };
            }
            return Outcome::Retry {
                submission_id,
                destination: d.id.clone(),
                attempts: Attempts {
                    failed,
                    first_failure: Some(first_failure),
                },
                error: e.to_string(),
            };
        }
        let record = DeliveryRecord {
            submission_id: envelope.submission_id,
            fingerprint,
            destination: d.id.clone(),
            delivered_at: SystemTime::now(),
            platform: self.config.platforms[platform].id.clone(),
            received_at: arrival.trace_on_record().then_some(arrival.received_at),
        };
        // No ack without the record: a redelivery or republish of an acked submission is
        // recognised only through it. `record` waits while the store fails (the delivery is
        // held, unacked; the consumers take nothing more meanwhile) and errs only when the
        // gateway stops first: then the submission goes back to its queue unrecorded, and
        // the next start delivers it again.
        if let Err(e) = self.dedup.record(record).await {
            tracing::error!(submission_id = %submission_id, destination = %d.id, error = %e,
                "delivered, but the delivery could not be recorded; not acked, so it will be delivered again");
            return Outcome::Requeue {
                submission_id,
                error: format!("delivered to {}, but not recorded: {e}", d.id),
            };
        }
        Outcome::Delivered {
            envelope,
            destination,
        }
    }

    /// The checks that need no I/O: size, content type, decoding, validation. A rejection
    /// comes with the submission id when the envelope decoded and carried a valid one.
    fn accept(
        &self,
        platform: usize,
        delivery: &Delivery,
    ) -> Result<(Envelope, Encoding, Fingerprint), (Rejection, Option<String>)> {
        let limit = self.config.gateway.max_message_bytes;
        let content_type = delivery.properties.content_type();
        let encoding = Encoding::from_content_type(content_type.as_ref().map(|c| c.as_str()));
        if let Some(left_out) = header_text(delivery.properties.headers().as_ref(), DROPPED_HEADERS)
            .and_then(|value| guard::left_out(&value))
        {
            // The submission id, when the body says it, lets the platform tell which one.
            let id = encoding
                .as_ref()
                .ok()
                .filter(|_| delivery.data.len() <= limit)
                .and_then(|encoding| envelope::decode(*encoding, &delivery.data).ok())
                .and_then(|submission| Uuid::parse_str(&submission.submission_id).ok())
                .map(|id| id.to_string());
            let broker = self.config.broker(self.config.platforms[platform].broker);
            return Err((Rejection::headers_too_large(left_out, &broker.name), id));
        }
        if delivery.data.len() > limit {
            let e = DecodeError::Oversized {
                size: delivery.data.len(),
                limit,
            };
            return Err((e.into(), None));
        }
        let encoding = encoding.map_err(|e| (e.into(), None))?;
        let submission =
            envelope::decode(encoding, &delivery.data).map_err(|e| (e.into(), None))?;
        let envelope = envelope::validate(
            &submission,
            &self.config.platforms[platform],
            &self.config.municipalities,
            self.config.gateway.verify_attachment_hashes,
        )
        .map_err(|e| {
            let id = Uuid::parse_str(&submission.submission_id)
                .ok()
                .map(|u| u.to_string());
            (e.into(), id)
        })?;
        // Over the canonical protobuf encoding, so that a republish of the same submission
        // in the other encoding is recognised as the same content.
        let fingerprint = store::fingerprint(&prost::Message::encode_to_vec(&submission));
        Ok((envelope, encoding, fingerprint))
    }

    async fn deliver(
        &self,
        platform: usize,
        trace: &FieldTable,
        delivery: &Delivery,
        (envelope, encoding): (&Envelope, Encoding),
        d: &Destination,
        outlet: &Outlet,
    ) -> Result<(), DeliveryError> {
        let p = &self.config.platforms[platform];
        let mut headers = FieldTable::default();
        headers.insert(
            headers::ORIGIN_PLATFORM.into(),
            header_string(p.id.as_str()),
        );
        headers.insert(
            headers::ORIGIN_LAND.into(),
            header_string(envelope.origin_land.to_string()),
        );
        headers.insert(
            headers::SERVICE_KEY.into(),
            header_string(envelope.service.to_string()),
        );
        headers.insert(headers::ARS.into(), header_string(envelope.ars.to_string()));
        headers.insert(headers::DESTINATION.into(), header_string(d.id.as_str()));
        let id = envelope.submission_id.to_string();
        let span = tracing::info_span!(
            "publish",
            otel.name = %format!("publish {}", if d.exchange.is_empty() { "(default)" } else { d.exchange.as_str() }),
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "rabbitmq",
            messaging.operation.type = "publish",
            messaging.destination.name = %d.exchange,
            messaging.rabbitmq.destination.routing_key = %d.routing_key,
            messaging.message.id = %id,
            ozg.destination = %d.id,
            error.type = tracing::field::Empty,
        );
        let started = Instant::now();
        let published = async {
            // The destination continues the trace from the gateway's publish span.
            telemetry::inject(&tracing::Span::current(), Some(trace), &mut headers);
            let properties = BasicProperties::default()
                .with_message_id(id.as_str().into())
                .with_content_type(encoding.content_type().into())
                .with_type("ozg.gateway.v1.Submission".into())
                .with_app_id("ozg-gateway".into())
                .with_timestamp(unix_seconds())
                .with_headers(headers);
            // The body goes on unchanged: the gateway never re-encodes what the platform
            // signed or encrypted.
            let result = outlet
                .publisher
                .publish_fitted(&d.exchange, &d.routing_key, &delivery.data, |frame_max| {
                    fitted(&properties, frame_max)
                })
                .await;
            if let Err(e) = &result {
                let span = tracing::Span::current();
                span.record("otel.status_code", "error");
                span.record("error.type", e.kind());
            }
            result
        }
        .instrument(span)
        .await;
        if published.is_ok() {
            outlet
                .confirm_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        published
    }

    /// [`record_outcome`](Self::record_outcome) for "delivered", through the outlet's
    /// handles: no label strings built, no map looked up.
    fn record_delivered(
        &self,
        live: &Live,
        platform: Option<usize>,
        source: &str,
        destination: usize,
        submission_id: &str,
    ) {
        let outlet = &live.outlets[destination];
        let d = &live.snapshot.destinations[destination];
        match platform {
            Some(i) => {
                outlet.delivered[i]
                    .get_or_init(|| {
                        self.metrics
                            .messages
                            .get_or_create(&OutcomeLabels {
                                platform: self.config.platforms[i].id.clone(),
                                destination: d.id.clone(),
                                outcome: "delivered".to_owned(),
                                reason: String::new(),
                            })
                            .clone()
                    })
                    .inc();
            }
            None => self.metrics.orphan(source, "delivered", ""),
        }
        self.activity
            .delivered(platform, submission_id, &d.id, &outlet.activity);
        tracing::Span::current().record("ozg.outcome", "delivered");
    }

    /// Counts the outcome, notes it on the submission's span and tells the live watchers.
    fn record_outcome(&self, o: Noted<'_>) {
        match o.platform {
            Some(_) => self
                .metrics
                .outcome(o.platform_id, o.destination, o.outcome, o.reason),
            None => self.metrics.orphan(o.source, o.outcome, o.reason),
        }
        self.activity.outcome(
            o.platform,
            o.submission_id,
            o.destination,
            o.outcome,
            o.reason,
            o.error,
        );
        let span = tracing::Span::current();
        span.record("ozg.outcome", o.outcome);
        if !o.reason.is_empty() {
            span.record("ozg.reason", o.reason);
        }
        if matches!(o.outcome, "dead-lettered" | "retrying" | "requeued") {
            span.record("otel.status_code", "error");
            span.record(
                "error.type",
                if o.reason.is_empty() {
                    o.outcome
                } else {
                    o.reason
                },
            );
        }
    }

    /// Adds "received" and the outcome to the submission's trace.
    async fn trace(
        &self,
        arrival: &Arrival,
        submission_id: &str,
        event: &str,
        destination: &str,
        detail: String,
    ) {
        let platform = arrival
            .platform
            .map(|i| self.config.platforms[i].id.clone())
            .unwrap_or_default();
        let received = match &arrival.replay {
            Some(replay) => format!("replay of dead letter {}", replay.of),
            None if arrival.attempts.failed > 0 => {
                format!("retry, attempt {}", arrival.attempts.failed + 1)
            }
            None => String::new(),
        };
        self.activity
            .trace(TraceEvent {
                submission_id: submission_id.to_owned(),
                at: arrival.received_at,
                event: "received".to_owned(),
                platform: platform.clone(),
                destination: String::new(),
                detail: received,
            })
            .await;
        self.activity
            .trace(TraceEvent {
                submission_id: submission_id.to_owned(),
                at: SystemTime::now(),
                event: event.to_owned(),
                platform,
                destination: destination.to_owned(),
                detail,
            })
            .await;
    }

    /// The one place that decides ack, dead-letter or redelivery. What it decides is sent to
    /// the broker by [`send_dispositions`], in delivery order, once the batch is settled.
    async fn settle(
        &self,
        live: &Live,
        arrival: &Arrival,
        delivery: &Delivery,
        outcome: Outcome,
    ) -> (Disposition, String) {
        let platform = arrival.platform;
        let platform_id = platform.map_or("?", |i| self.config.platforms[i].id.as_str());
        let source = if arrival.replay.is_some() {
            "replay"
        } else {
            "retry"
        };
        let noted = |submission_id, destination, outcome, reason, error| Noted {
            platform,
            platform_id,
            submission_id,
            destination,
            outcome,
            reason,
            error,
            source,
        };
        match outcome {
            Outcome::Delivered {
                envelope,
                destination,
            } => {
                let d = &live.snapshot.destinations[destination];
                let submission_id = envelope.submission_id.to_string();
                self.record_delivered(live, platform, source, destination, &submission_id);
                tracing::info!(
                    submission_id = %submission_id,
                    platform = %platform_id,
                    destination = %d.id,
                    service = %envelope.service,
                    ars = %envelope.ars,
                    outcome = "delivered",
                    "submission forwarded"
                );
                // The common case keeps its trace on the delivery record (one row for the
                // whole way); retries and replays tell their story in events.
                if !arrival.trace_on_record() {
                    self.trace(arrival, &submission_id, "forwarded", &d.id, String::new())
                        .await;
                }
                let event = self.status_event(
                    platform,
                    Some(&envelope),
                    submission_id.clone(),
                    wire::Status::Forwarded,
                    Some(d),
                    None,
                );
                if let Some(event) = event {
                    self.send_status(&arrival.trace, event).await;
                }
                (Disposition::Ack, submission_id)
            }
            Outcome::Duplicate {
                envelope,
                destination,
            } => {
                let submission_id = envelope.submission_id.to_string();
                self.record_outcome(noted(&submission_id, &destination, "duplicate", "", ""));
                tracing::info!(
                    submission_id = %submission_id,
                    platform = %platform_id,
                    destination = %destination,
                    outcome = "duplicate",
                    "submission already delivered; not delivered again"
                );
                self.trace(
                    arrival,
                    &submission_id,
                    "duplicate",
                    &destination,
                    "delivered before; not delivered again".to_owned(),
                )
                .await;
                // The platform may have missed the first event (the gateway stopped between
                // delivery and ack): tell it again; events carry the submission id.
                let event = self.status_event(
                    platform,
                    Some(&envelope),
                    submission_id.clone(),
                    wire::Status::Forwarded,
                    live.snapshot.destination(&destination),
                    None,
                );
                if let Some(event) = event {
                    self.send_status(&arrival.trace, event).await;
                }
                (Disposition::Ack, submission_id)
            }
            Outcome::Retry {
                submission_id,
                destination,
                attempts,
                error,
            } => match self
                .schedule_retry(
                    arrival,
                    &destination,
                    delivery,
                    &submission_id,
                    attempts,
                    &error,
                )
                .await
            {
                Ok(delay) => {
                    self.record_outcome(noted(
                        &submission_id,
                        &destination,
                        "retrying",
                        "delivery-failed",
                        &error,
                    ));
                    tracing::warn!(submission_id = %submission_id, platform = %platform_id,
                        destination = %destination, attempt = attempts.failed, retry_in = ?delay,
                        error = %error, outcome = "retrying", "delivery failed; retrying later");
                    self.trace(
                        arrival,
                        &submission_id,
                        "retrying",
                        &destination,
                        format!(
                            "attempt {} failed ({error}); next in {}",
                            attempts.failed,
                            humantime::format_duration(delay)
                        ),
                    )
                    .await;
                    (Disposition::Ack, submission_id)
                }
                Err(e) => {
                    self.record_outcome(noted(
                        &submission_id,
                        &destination,
                        "requeued",
                        "delivery-failed",
                        &error,
                    ));
                    tracing::error!(submission_id = %submission_id, platform = %platform_id,
                        error = %e, outcome = "requeued",
                        "cannot schedule the retry; leaving the submission on its queue for redelivery");
                    (Disposition::Requeue, submission_id)
                }
            },
            Outcome::Requeue {
                submission_id,
                error,
            } => {
                self.record_outcome(noted(&submission_id, "", "requeued", "", &error));
                tracing::warn!(submission_id = %submission_id, platform = %platform_id, error = %error,
                    outcome = "requeued", "cannot finish now; leaving the submission on its queue for redelivery");
                (Disposition::Requeue, submission_id)
            }
            Outcome::Rejected {
                rejection,
                envelope,
                submission_id,
                destination,
            } => {
                let submission_id = submission_id
                    .or_else(|| {
                        delivery
                            .properties
                            .message_id()
                            .as_ref()
                            .map(|m| m.to_string())
                    })
                    .unwrap_or_default();
                tracing::Span::current().record("messaging.message.id", submission_id.as_str());
                let destination = destination.unwrap_or_default();
                let reason = rejection.reason.code();
                match self
                    .dead_letter(
                        Some(arrival),
                        delivery,
                        &rejection,
                        &submission_id,
                        envelope.as_ref(),
                        &destination,
                    )
                    .await
                {
                    Ok(()) => {
                        self.record_outcome(noted(
                            &submission_id,
                            &destination,
                            "dead-lettered",
                            reason,
                            &rejection.detail,
                        ));
                        tracing::warn!(
                            submission_id = %submission_id,
                            platform = %platform_id,
                            reason = reason,
                            field = rejection.field.as_deref().unwrap_or(""),
                            detail = %rejection.detail,
                            outcome = "dead-lettered",
                            "submission rejected"
                        );
                        self.trace(
                            arrival,
                            &submission_id,
                            "dead-lettered",
                            &destination,
                            format!("{reason}: {}", rejection.detail),
                        )
                        .await;
                        let event = self.status_event(
                            platform,
                            envelope.as_ref(),
                            submission_id.clone(),
                            wire::Status::Rejected,
                            None,
                            Some(&rejection),
                        );
                        if let Some(event) = event {
                            self.send_status(&arrival.trace, event).await;
                        }
                        (Disposition::Ack, submission_id)
                    }
                    Err(e) => {
                        self.record_outcome(noted(
                            &submission_id,
                            &destination,
                            "requeued",
                            reason,
                            &e.to_string(),
                        ));
                        tracing::error!(
                            submission_id = %submission_id,
                            platform = %platform_id,
                            reason = reason,
                            error = %e,
                            outcome = "requeued",
                            "cannot dead-letter; leaving the submission on its queue for redelivery"
                        );
                        (Disposition::Requeue, submission_id)
                    }
                }
            }
        }
    }

    /// Sends the submission to the delay queue for its attempt; it comes back through the
    /// retry queue when the delay is over. Returns the delay.
    async fn schedule_retry(
        &self,
        arrival: &Arrival,
        destination: &str,
        delivery: &Delivery,
        submission_id: &str,
        attempts: Attempts,
        error: &str,
    ) -> Result<Duration, DeliveryError> {
        let delay = self.config.retry.delay(attempts.failed);
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        strip_broker_headers(&mut headers);
        carry_trace(&mut headers, &arrival.trace);
        let platform_id = arrival
            .platform
            .map_or("?", |i| self.config.platforms[i].id.as_str());
        headers.insert(headers::ORIGIN_PLATFORM.into(), header_string(platform_id));
        headers.insert(headers::SUBMISSION_ID.into(), header_string(submission_id));
        headers.insert(
            headers::ATTEMPTS_FAILED.into(),
            header_string(attempts.failed.to_string()),
        );
        headers.insert(
            headers::FIRST_FAILURE_AT.into(),
            AMQPValue::Timestamp(attempts.first_failure.unwrap_or_else(unix_seconds)),
        );
        headers.insert(headers::LAST_ERROR.into(), header_string(error));
        // Only for counting retries per destination: the retry is routed afresh.
        headers.insert(headers::DESTINATION.into(), header_string(destination));
        let properties = delivery.properties.clone().with_headers(headers);
        self.retry
            .publish_fitted("", &retry_wait_queue(delay), &delivery.data, |frame_max| {
                fitted(&properties, frame_max)
            })
            .await
            .map(|()| delay)
    }

    /// Dead-letters what was taken off a queue: a platform's submission (`arrival`), or a
    /// back office's receipt (`None`).
    async fn dead_letter(
        &self,
        arrival: Option<&Arrival>,
        delivery: &Delivery,
        rejection: &Rejection,
        submission_id: &str,
        envelope: Option<&Envelope>,
        destination: &str,
    ) -> Result<(), DeliveryError> {
        // Keep the platform's own headers (trace context included) so that a replay sends
        // what was received, and add why it ended here.
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        strip_broker_headers(&mut headers);
        if let Some(arrival) = arrival {
            carry_trace(&mut headers, &arrival.trace);
        }
        let platform = arrival.and_then(|a| a.platform);
        // The guard's marker: the detail of a `headers-too-large` rejection says it.
        drop_headers(&mut headers, &[DROPPED_HEADERS]);
        headers.insert(
            headers::REASON.into(),
            header_string(rejection.reason.code()),
        );
        headers.insert(
            headers::DETAIL.into(),
            header_string(rejection.detail.as_str()),
        );
        if let Some(field) = &rejection.field {
            headers.insert(headers::FIELD.into(), header_string(field.as_str()));
        }
        if let Some(p) = platform.map(|i| &self.config.platforms[i]) {
            headers.insert(
                headers::ORIGIN_PLATFORM.into(),
                header_string(p.id.as_str()),
            );
            headers.insert(
                headers::ORIGIN_LAND.into(),
                header_string(p.land.to_string()),
            );
            headers.insert(
                headers::SOURCE_QUEUE.into(),
                header_string(p.ingress_queue.as_str()),
            );
        }
        headers.insert(headers::SUBMISSION_ID.into(), header_string(submission_id));
        // What operators filter dead letters by, when the submission got that far. A
        // platform's own values under these names are not the gateway's findings.
        drop_headers(
            &mut headers,
            &[headers::SERVICE_KEY, headers::ARS, headers::DESTINATION],
        );
        if let Some(envelope) = envelope {
            headers.insert(
                headers::SERVICE_KEY.into(),
                header_string(envelope.service.to_string()),
            );
            headers.insert(headers::ARS.into(), header_string(envelope.ars.to_string()));
        }
        if !destination.is_empty() {
            headers.insert(headers::DESTINATION.into(), header_string(destination));
        }
        headers.insert(
            headers::DEAD_LETTER_ID.into(),
            header_string(Uuid::new_v4().to_string()),
        );
        headers.insert(
            headers::DEAD_LETTERED_AT.into(),
            AMQPValue::Timestamp(unix_seconds()),
        );
        let mut properties = delivery.properties.clone().with_headers(headers);
        if properties.message_id().is_none() && !submission_id.is_empty() {
            properties = properties.with_message_id(submission_id.into());
        }
        let detail = rejection.detail.as_str();
        self.dead_letter
            .publish_fitted(
                &self.config.gateway.dead_letter_exchange,
                rejection.reason.code(),
                &delivery.data,
                |frame_max| {
                    let (fitted, left_out) = amqp::fit(&properties, frame_max, own_header);
                    let Some(bytes) = left_out else {
                        return fitted;
                    };
                    // Said where operators look: the detail.
                    let mut headers = fitted.headers().clone().unwrap_or_default();
                    headers.insert(
                        headers::DETAIL.into(),
                        header_string(format!(
                            "{detail}; the message's own headers ({bytes} bytes) are left out of this dead letter: with them it did not fit the dead-letter broker's frame size ({frame_max} bytes)"
                        )),
                    );
                    fitted.with_headers(headers)
                },
            )
            .await
    }

    fn status_event(
        &self,
        platform: Option<usize>,
        envelope: Option<&Envelope>,
        submission_id: String,
        status: wire::Status,
        destination: Option<&Destination>,
        rejection: Option<&Rejection>,
    ) -> Option<wire::StatusEvent> {
        let platform = &self.config.platforms[platform?];
        Some(wire::StatusEvent {
            event_id: Uuid::new_v4().to_string(),
            problem: rejection.map(|r| wire::Problem {
                r#type: r.reason.type_uri(),
                title: r.reason.title().to_owned(),
                detail: r.detail.clone(),
                instance: if submission_id.is_empty() {
                    String::new()
                } else {
                    format!("urn:uuid:{submission_id}")
                },
                field: r.field.clone().unwrap_or_default(),
                reason: r.reason.code().to_owned(),
            }),
            submission_id,
            status: status as i32,
            destination_id: destination.map(|d| d.id.clone()).unwrap_or_default(),
            destination_name: destination.map(|d| d.name.clone()).unwrap_or_default(),
            time: Some(now_timestamp()),
            platform_id: platform.id.clone(),
            case_id: envelope.and_then(|e| e.case_id.clone()).unwrap_or_default(),
            problems: Vec::new(),
            note: String::new(),
        })
    }

    /// Status events are sent with a confirm but do not hold the submission back: the
    /// submission's own fate is already decided when they are sent.
    async fn send_status(&self, trace: &FieldTable, event: wire::StatusEvent) {
        if let Err(e) = self.publish_status(Some(trace), &event).await {
            tracing::warn!(
                submission_id = %event.submission_id,
                platform = %event.platform_id,
                status = status_word(event.status),
                error = %e,
                "status event not delivered to the platform"
            );
        }
    }

    /// Publishes a status event to its platform's status exchange (confirmed), continuing
    /// the trace of `incoming`. A platform no longer configured is nobody to tell: `Ok`.
    pub async fn publish_status(
        &self,
        incoming: Option<&FieldTable>,
        event: &wire::StatusEvent,
    ) -> Result<(), DeliveryError> {
        let Some(platform) = self
            .config
            .platforms
            .iter()
            .position(|p| p.id == event.platform_id)
        else {
            return Ok(());
        };
        let p = &self.config.platforms[platform];
        let (body, content_type) = match p.status_format {
            // Serialising a generated message to JSON does not fail in practice; were it
            // to, protobuf still says it.
            StatusFormat::Json => match serde_json::to_vec(event) {
                Ok(body) => (body, "application/json"),
                Err(_) => (
                    prost::Message::encode_to_vec(event),
                    "application/x-protobuf",
                ),
            },
            StatusFormat::Protobuf => (
                prost::Message::encode_to_vec(event),
                "application/x-protobuf",
            ),
        };
        let mut headers = FieldTable::default();
        headers.insert(
            headers::STATUS.into(),
            header_string(status_word(event.status)),
        );
        headers.insert(
            headers::SUBMISSION_ID.into(),
            header_string(event.submission_id.as_str()),
        );
        telemetry::inject(&tracing::Span::current(), incoming, &mut headers);
        let properties = BasicProperties::default()
            .with_message_id(event.event_id.as_str().into())
            .with_content_type(content_type.into())
            .with_type("ozg.gateway.v1.StatusEvent".into())
            .with_app_id("ozg-gateway".into())
            .with_timestamp(unix_seconds())
            .with_headers(headers);
        let published = self.status[platform]
            .publish_fitted(
                &p.status_exchange,
                &p.status_routing_key,
                &body,
                |frame_max| fitted(&properties, frame_max),
            )
            .await;
        if published.is_err() {
            self.metrics
                .status_event_failed(&p.id, status_word(event.status));
        }
        published
    }

    /// Sends a back office's refused receipt to the dead-letter exchange, for operators.
    pub async fn dead_letter_receipt(
        &self,
        delivery: &Delivery,
        rejection: &Rejection,
        submission_id: &str,
        destination: &str,
    ) -> Result<(), DeliveryError> {
        self.dead_letter(None, delivery, rejection, submission_id, None, destination)
            .await
    }
}

/// The status as the `x-ozg-status` header word.
pub fn status_word(status: i32) -> &'static str {
    match wire::Status::try_from(status) {
        Ok(wire::Status::Forwarded) => "forwarded",
        Ok(wire::Status::Rejected) => "rejected",
        Ok(wire::Status::Accepted) => "accepted",
        Ok(wire::Status::Overdue) => "overdue",
        Ok(wire::Status::ForwardedOnward) => "forwarded-onward",
        Ok(wire::Status::Unspecified) | Err(_) => "unspecified",
    }
}

/// What [`Gateway::settle`] decided for one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Delivered, dead-lettered or handed to the retry queue, each confirmed: ack.
    Ack,
    /// Not finished: nack with requeue, after [`REQUEUE_DELAY`].
    Requeue,
}

/// One delivery with what is to be sent to the broker for it.
pub struct Settled {
    delivery: Delivery,
    disposition: Disposition,
    /// For the log when the broker cannot be told.
    submission_id: String,
}

/// A batch's place in its subscription's order of acknowledgements. One `ack` with
/// `multiple` settles every delivery up to its tag on the channel, so a batch may send it
/// only after every earlier batch of the same channel has sent its own; each batch waits
/// for the one before and then lets the next go.
pub struct AckTurn {
    after: Option<tokio::sync::oneshot::Receiver<()>>,
    done: tokio::sync::oneshot::Sender<()>,
    /// Cleared when a nack could not be sent: a later `multiple` ack would then ack the
    /// delivery that was meant to go back to the queue, so the subscription acks one by one
    /// from then on.
    multiple_ok: Arc<std::sync::atomic::AtomicBool>,
}

/// Hands out the [`AckTurn`]s of one subscription (one consumer channel), in the order its
/// batches were taken off the queue.
pub struct AckOrder {
    last: Option<tokio::sync::oneshot::Receiver<()>>,
    multiple_ok: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for AckOrder {
    fn default() -> AckOrder {
        AckOrder {
            last: None,
            multiple_ok: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }
}

impl AckOrder {
    /// The turn of the next batch.
    pub fn next_turn(&mut self) -> AckTurn {
        let (done, next) = tokio::sync::oneshot::channel();
        AckTurn {
            after: self.last.replace(next),
            done,
            multiple_ok: self.multiple_ok.clone(),
        }
    }
}

/// Acks and nacks are bounded too: on a connection that is going away they may never be
/// answered, and a delivery whose ack is lost is redelivered by the broker anyway.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends a settled batch's dispositions to the broker, in its turn: nacks (with requeue,
/// after [`REQUEUE_DELAY`], so that a path that keeps failing does not spin) one by one,
/// then one ack with `multiple` for the highest delivery tag to ack, which covers every
/// other delivery of the batch to ack and nothing later.
async fn send_dispositions(settled: Vec<Settled>, turn: AckTurn) {
    use std::sync::atomic::Ordering;
    let requeue = settled
        .iter()
        .any(|s| s.disposition == Disposition::Requeue);
    if requeue {
        // Before waiting for the turn: the batches after this one sleep at the same time.
        tokio::time::sleep(REQUEUE_DELAY).await;
    }
    if let Some(previous) = turn.after {
        // An error means the previous batch ended without settling (its task panicked or
        // was aborted): its deliveries may still be unacked on the channel, and a
        // `multiple` ack from here would ack them unprocessed. One by one from now on.
        if previous.await.is_err() {
            turn.multiple_ok.store(false, Ordering::Relaxed);
        }
    }
    for s in settled
        .iter()
        .filter(|s| s.disposition == Disposition::Requeue)
    {
        if !nack(s).await {
            turn.multiple_ok.store(false, Ordering::Relaxed);
        }
    }
    let to_ack = settled.iter().filter(|s| s.disposition == Disposition::Ack);
    if turn.multiple_ok.load(Ordering::Relaxed) {
        if let Some(last) = to_ack.max_by_key(|s| s.delivery.delivery_tag) {
            ack(last, true).await;
        }
    } else {
        for s in to_ack {
            ack(s, false).await;
        }
    }
    let _ = turn.done.send(());
}

async fn ack(settled: &Settled, multiple: bool) {
    let submission_id = &settled.submission_id;
    let options = BasicAckOptions { multiple };
    match tokio::time::timeout(SETTLE_TIMEOUT, settled.delivery.acker.ack(options)).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => tracing::warn!(
            submission_id = %submission_id,
            "ack not sent: the consumer channel closed meanwhile; the broker will redeliver"
        ),
        Ok(Err(e)) => tracing::warn!(
            submission_id = %submission_id,
            error = %e,
            "ack failed; the broker will redeliver"
        ),
        Err(_) => tracing::warn!(
            submission_id = %submission_id,
            "ack not answered in time; the broker will redeliver if it was lost"
        ),
    }
}

/// Hands a delivery back to the broker; whether the nack went out.
async fn nack(settled: &Settled) -> bool {
    let submission_id = &settled.submission_id;
    let options = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    match tokio::time::timeout(SETTLE_TIMEOUT, settled.delivery.acker.nack(options)).await {
        Ok(Ok(sent)) => sent,
        Ok(Err(e)) => {
            tracing::warn!(submission_id = %submission_id, error = %e,
                "nack failed; the broker redelivers the submission when the channel closes");
            false
        }
        Err(_) => {
            tracing::warn!(submission_id = %submission_id,
                "nack not answered in time; the broker redelivers the submission when the channel closes");
            false
        }
    }
}

/// Gives `headers` the submission's trace when the platform sent none (or an invalid one),
/// so that a retry continues it and a dead letter shows it.
fn carry_trace(headers: &mut FieldTable, trace: &FieldTable) {
    if telemetry::has_trace(headers) {
        return;
    }
    drop_headers(headers, &[headers::TRACEPARENT, headers::TRACESTATE]);
    for (name, value) in trace.inner() {
        headers.insert(name.clone(), value.clone());
    }
}

/// The headers the gateway keeps when a message's own headers would not fit the frame size
/// of the broker it goes to: its own, and the trace context.
fn own_header(name: &str) -> bool {
    name.starts_with("x-ozg-") || name == headers::TRACEPARENT
}

/// `properties` fitted to `frame_max`, keeping only [`own_header`]s if need be.
fn fitted(properties: &BasicProperties, frame_max: u32) -> BasicProperties {
    amqp::fit(properties, frame_max, own_header).0
}

/// Headers the broker adds when it dead-letters (the delay queues do): dropped before the
/// gateway republishes, so that they do not pile up over many retries.
fn strip_broker_headers(headers: &mut FieldTable) {
    let mut kept = FieldTable::default();
    for (key, value) in headers.inner() {
        let k = key.as_str();
        if k != "x-death" && !k.starts_with("x-first-death") && !k.starts_with("x-last-death") {
            kept.insert(key.clone(), value.clone());
        }
    }
    *headers = kept;
}

fn drop_headers(headers: &mut FieldTable, names: &[&str]) {
    let mut kept = FieldTable::default();
    for (key, value) in headers.inner() {
        if !names.contains(&key.as_str()) {
            kept.insert(key.clone(), value.clone());
        }
    }
    *headers = kept;
}

fn header_timestamp(headers: Option<&FieldTable>, name: &str) -> Option<u64> {
    match headers?.inner().get(name)? {
        AMQPValue::Timestamp(t) => Some(*t),
        _ => None,
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn now_timestamp() -> pbjson_types::Timestamp {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(now.subsec_nanos()).unwrap_or(0),
    }
}
