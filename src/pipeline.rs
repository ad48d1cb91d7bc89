//! One submission's way: size check → decode → validate → resolve → deliver → settle.
//!
//! Architecture invariant: [`Gateway::settle`] is the only code that acks, nacks or
//! dead-letters a delivery taken off a platform queue. Every delivery ends in exactly one
//! of: delivered (confirmed by the destination's broker, then acked), dead-lettered with a
//! reason (confirmed by the dead-letter exchange, then acked), or left on the queue for
//! redelivery (nacked with requeue, or never acked because the channel went away).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable};
use uuid::Uuid;

use crate::amqp::{
    DeliveryError, Publisher, RETRY_READY_QUEUE, header_string, header_text, retry_wait_queue,
};
use crate::config::{Config, DestinationIndex, StatusFormat};
use crate::envelope::{self, DecodeError, Encoding, Envelope};
use crate::outcome::{Outcome, Reason, Rejection};
use crate::route::RoutingTable;
use crate::store::{self, Deduplicator, DeliveryRecord, Fingerprint, Seen};
use crate::telemetry::{self, DestinationLabels, Metrics, PlatformLabels};
use crate::wire::v1 as wire;
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
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
}

/// How long to wait before handing a delivery back to the broker when it could not even be
/// dead-lettered (dead-letter broker unreachable): keeps a failing path from spinning.
const REQUEUE_DELAY: Duration = Duration::from_secs(1);

/// Everything the message path needs, shared by all platform consumers.
pub struct Gateway {
    config: Arc<Config>,
    table: RoutingTable,
    /// One per destination, same index as `config.destinations`.
    destinations: Vec<Publisher>,
    /// One per platform, same index as `config.platforms`.
    status: Vec<Publisher>,
    dead_letter: Publisher,
    /// Publishes to the delay queues on the gateway's broker.
    retry: Publisher,
    dedup: Arc<Deduplicator>,
    metrics: Arc<Metrics>,
    /// Submission ids being delivered right now. The same id taken off a queue again in the
    /// meantime (the platform republished it, or the broker redelivered it) must not pass
    /// the deduplication check before the first delivery is confirmed and recorded.
    delivering: std::sync::Mutex<std::collections::HashSet<Uuid>>,
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
        destinations: Vec<Publisher>,
        status: Vec<Publisher>,
        dead_letter: Publisher,
        retry: Publisher,
        dedup: Arc<Deduplicator>,
        metrics: Arc<Metrics>,
    ) -> Gateway {
        let table = RoutingTable::new(config.routes.clone());
        Gateway {
            config,
            table,
            destinations,
            status,
            dead_letter,
            retry,
            dedup,
            metrics,
            delivering: std::sync::Mutex::default(),
        }
    }

    /// Takes one delivery to its end.
    pub async fn process(&self, source: Source, delivery: Delivery) {
        let headers = delivery.properties.headers().as_ref();
        let (platform, attempts) = match source {
            Source::Platform(i) => (Some(i), Attempts::default()),
            Source::Retry => {
                let name = header_text(headers, headers::ORIGIN_PLATFORM).unwrap_or_default();
                let attempts = Attempts {
                    failed: header_text(headers, headers::ATTEMPTS_FAILED)
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1),
                    first_failure: header_timestamp(headers, headers::FIRST_FAILURE_AT),
                };
                (
                    self.config.platforms.iter().position(|p| p.id == name),
                    attempts,
                )
            }
        };
        let queue = match source {
            Source::Platform(i) => self.config.platforms[i].ingress_queue.as_str(),
            Source::Retry => RETRY_READY_QUEUE,
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
        let _ = span.set_parent(telemetry::extract(headers));
        let started = Instant::now();
        let platform_labels = PlatformLabels {
            platform: platform_id.to_owned(),
        };
        match source {
            Source::Platform(_) => {
                self.metrics.in_flight.get_or_create(&platform_labels).inc();
            }
            Source::Retry => {
                self.metrics.retry_backlog.dec();
            }
        }
        self.process_in(platform, attempts, delivery)
            .instrument(span)
            .await;
        self.metrics
            .processing_seconds
            .get_or_create(&platform_labels)
            .observe(started.elapsed().as_secs_f64());
        if let Source::Platform(_) = source {
            self.metrics.in_flight.get_or_create(&platform_labels).dec();
        }
    }

    async fn process_in(&self, platform: Option<usize>, attempts: Attempts, delivery: Delivery) {
        let headers = delivery.properties.headers().as_ref();
        let outcome = match platform {
            Some(p) => self.handle(p, attempts, &delivery).await,
            // A retry for a platform that is no longer configured: nobody to tell, nothing
            // to validate against; an operator has to look at it.
            None => Outcome::Rejected {
                rejection: Rejection {
                    reason: Reason::DeliveryFailed,
                    field: None,
                    detail: "retried submission names a platform that is no longer configured"
                        .to_owned(),
                },
                envelope: None,
                submission_id: header_text(headers, headers::SUBMISSION_ID),
            },
        };
        self.settle(platform, delivery, outcome).await;
    }

    async fn handle(&self, platform: usize, attempts: Attempts, delivery: &Delivery) -> Outcome {
        let (envelope, encoding, fingerprint) = match self.accept(platform, delivery) {
            Ok(found) => found,
            Err((rejection, submission_id)) => {
                return Outcome::Rejected {
                    rejection,
                    envelope: None,
                    submission_id,
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
                };
            }
            Err(e) => {
                return Outcome::Requeue {
                    submission_id,
                    error: e.to_string(),
                };
            }
        }
        let found = {
            let route = tracing::info_span!(
                "route",
                ozg.service = %envelope.service,
                ozg.ars = %envelope.ars,
                ozg.destination = tracing::field::Empty,
            )
            .entered();
            let found = self.table.resolve(envelope.service, envelope.ars);
            if let Some(f) = found {
                route.record(
                    "ozg.destination",
                    self.config.destinations[f.destination].id.as_str(),
                );
            }
            found
        };
        let Some(found) = found else {
            return Outcome::Rejected {
                rejection: Rejection::no_route(envelope.service, envelope.ars),
                submission_id: Some(submission_id),
                envelope: Some(envelope),
            };
        };
        if let Err(e) = self
            .deliver(platform, delivery, &envelope, encoding, found.destination)
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
                };
            }
            return Outcome::Retry {
                submission_id,
                destination: self.config.destinations[found.destination].id.clone(),
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
            destination: self.config.destinations[found.destination].id.clone(),
            delivered_at: SystemTime::now(),
        };
        // The destination has it; a record that cannot be written only weakens
        // deduplication of a later redelivery, so it is logged, not held against the
        // submission.
        if let Err(e) = self.dedup.record(record).await {
            tracing::error!(submission_id = %submission_id, error = %e,
                "delivered, but the delivery could not be recorded for deduplication");
        }
        Outcome::Delivered {
            envelope,
            destination: found.destination,
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
        if delivery.data.len() > limit {
            let e = DecodeError::Oversized {
                size: delivery.data.len(),
                limit,
            };
            return Err((e.into(), None));
        }
        let content_type = delivery.properties.content_type();
        let encoding = Encoding::from_content_type(content_type.as_ref().map(|c| c.as_str()))
            .map_err(|e| (e.into(), None))?;
        let submission =
            envelope::decode(encoding, &delivery.data).map_err(|e| (e.into(), None))?;
        let envelope = envelope::validate(
            &submission,
            &self.config.platforms[platform],
            &self.config.directory,
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
        delivery: &Delivery,
        envelope: &Envelope,
        encoding: Encoding,
        destination: DestinationIndex,
    ) -> Result<(), DeliveryError> {
        let p = &self.config.platforms[platform];
        let d = &self.config.destinations[destination];
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
            telemetry::inject(
                &tracing::Span::current(),
                delivery.properties.headers().as_ref(),
                &mut headers,
            );
            let properties = BasicProperties::default()
                .with_message_id(id.as_str().into())
                .with_content_type(encoding.content_type().into())
                .with_type("ozg.gateway.v1.Submission".into())
                .with_app_id("ozg-gateway".into())
                .with_timestamp(unix_seconds())
                .with_headers(headers);
            // The body goes on unchanged: the gateway never re-encodes what the platform
            // signed or encrypted.
            let result = self.destinations[destination]
                .publish(&d.exchange, &d.routing_key, &delivery.data, properties)
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
            self.metrics
                .confirm_seconds
                .get_or_create(&DestinationLabels {
                    destination: d.id.clone(),
                })
                .observe(started.elapsed().as_secs_f64());
        }
        published
    }

    /// Counts the outcome and notes it on the submission's span.
    fn record_outcome(&self, platform: &str, destination: &str, outcome: &str, reason: &str) {
        self.metrics.outcome(platform, destination, outcome, reason);
        let span = tracing::Span::current();
        span.record("ozg.outcome", outcome);
        if !reason.is_empty() {
            span.record("ozg.reason", reason);
        }
        if matches!(outcome, "dead-lettered" | "retrying" | "requeued") {
            span.record("otel.status_code", "error");
            span.record(
                "error.type",
                if reason.is_empty() { outcome } else { reason },
            );
        }
    }

    /// The one place that decides ack, dead-letter or redelivery.
    async fn settle(&self, platform: Option<usize>, delivery: Delivery, outcome: Outcome) {
        let platform_id = platform.map_or("?", |i| self.config.platforms[i].id.as_str());
        match outcome {
            Outcome::Delivered {
                envelope,
                destination,
            } => {
                let d = &self.config.destinations[destination];
                self.record_outcome(platform_id, &d.id, "delivered", "");
                tracing::info!(
                    submission_id = %envelope.submission_id,
                    platform = %platform_id,
                    destination = %d.id,
                    service = %envelope.service,
                    ars = %envelope.ars,
                    outcome = "delivered",
                    "submission forwarded"
                );
                let event = self.status_event(
                    platform,
                    Some(&envelope),
                    envelope.submission_id.to_string(),
                    wire::Status::Forwarded,
                    Some(destination),
                    None,
                );
                if let Some(event) = event {
                    self.send_status(&delivery, event).await;
                }
                ack(&delivery, &envelope.submission_id.to_string()).await;
            }
            Outcome::Duplicate {
                envelope,
                destination,
            } => {
                self.record_outcome(platform_id, &destination, "duplicate", "");
                tracing::info!(
                    submission_id = %envelope.submission_id,
                    platform = %platform_id,
                    destination = %destination,
                    outcome = "duplicate",
                    "submission already delivered; not delivered again"
                );
                // The platform may have missed the first event (the gateway stopped between
                // delivery and ack): tell it again; events carry the submission id.
                let index = self.config.destination_index(&destination);
                let event = self.status_event(
                    platform,
                    Some(&envelope),
                    envelope.submission_id.to_string(),
                    wire::Status::Forwarded,
                    index,
                    None,
                );
                if let Some(event) = event {
                    self.send_status(&delivery, event).await;
                }
                ack(&delivery, &envelope.submission_id.to_string()).await;
            }
            Outcome::Retry {
                submission_id,
                destination,
                attempts,
                error,
            } => match self
                .schedule_retry(platform_id, &delivery, &submission_id, attempts, &error)
                .await
            {
                Ok(delay) => {
                    self.record_outcome(platform_id, &destination, "retrying", "delivery-failed");
                    self.metrics.retry_backlog.inc();
                    tracing::warn!(submission_id = %submission_id, platform = %platform_id,
                        destination = %destination, attempt = attempts.failed, retry_in = ?delay,
                        error = %error, outcome = "retrying", "delivery failed; retrying later");
                    ack(&delivery, &submission_id).await;
                }
                Err(e) => {
                    self.record_outcome(platform_id, &destination, "requeued", "delivery-failed");
                    tracing::error!(submission_id = %submission_id, platform = %platform_id,
                        error = %e, outcome = "requeued",
                        "cannot schedule the retry; leaving the submission on its queue for redelivery");
                    requeue(&delivery, &submission_id).await;
                }
            },
            Outcome::Requeue {
                submission_id,
                error,
            } => {
                self.record_outcome(platform_id, "", "requeued", "");
                tracing::warn!(submission_id = %submission_id, platform = %platform_id, error = %error,
                    outcome = "requeued", "cannot finish now; leaving the submission on its queue for redelivery");
                requeue(&delivery, &submission_id).await;
            }
            Outcome::Rejected {
                rejection,
                envelope,
                submission_id,
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
                match self
                    .dead_letter(platform, &delivery, &rejection, &submission_id)
                    .await
                {
                    Ok(()) => {
                        self.record_outcome(
                            platform_id,
                            "",
                            "dead-lettered",
                            rejection.reason.code(),
                        );
                        tracing::warn!(
                            submission_id = %submission_id,
                            platform = %platform_id,
                            reason = rejection.reason.code(),
                            field = rejection.field.as_deref().unwrap_or(""),
                            detail = %rejection.detail,
                            outcome = "dead-lettered",
                            "submission rejected"
                        );
                        let event = self.status_event(
                            platform,
                            envelope.as_ref(),
                            submission_id.clone(),
                            wire::Status::Rejected,
                            None,
                            Some(&rejection),
                        );
                        if let Some(event) = event {
                            self.send_status(&delivery, event).await;
                        }
                        ack(&delivery, &submission_id).await;
                    }
                    Err(e) => {
                        self.record_outcome(platform_id, "", "requeued", rejection.reason.code());
                        tracing::error!(
                            submission_id = %submission_id,
                            platform = %platform_id,
                            reason = rejection.reason.code(),
                            error = %e,
                            outcome = "requeued",
                            "cannot dead-letter; leaving the submission on its queue for redelivery"
                        );
                        requeue(&delivery, &submission_id).await;
                    }
                }
            }
        }
    }

    /// Sends the submission to the delay queue for its attempt; it comes back through the
    /// retry queue when the delay is over. Returns the delay.
    async fn schedule_retry(
        &self,
        platform_id: &str,
        delivery: &Delivery,
        submission_id: &str,
        attempts: Attempts,
        error: &str,
    ) -> Result<Duration, DeliveryError> {
        let delay = self.config.retry.delay(attempts.failed);
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        strip_broker_headers(&mut headers);
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
        let properties = delivery.properties.clone().with_headers(headers);
        self.retry
            .publish("", &retry_wait_queue(delay), &delivery.data, properties)
            .await
            .map(|()| delay)
    }

    async fn dead_letter(
        &self,
        platform: Option<usize>,
        delivery: &Delivery,
        rejection: &Rejection,
        submission_id: &str,
    ) -> Result<(), DeliveryError> {
        // Keep the platform's own headers (trace context included) so that a replay sends
        // what was received, and add why it ended here.
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        strip_broker_headers(&mut headers);
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
        headers.insert(
            headers::DEAD_LETTERED_AT.into(),
            AMQPValue::Timestamp(unix_seconds()),
        );
        let mut properties = delivery.properties.clone().with_headers(headers);
        if properties.message_id().is_none() && !submission_id.is_empty() {
            properties = properties.with_message_id(submission_id.into());
        }
        self.dead_letter
            .publish(
                &self.config.gateway.dead_letter_exchange,
                rejection.reason.code(),
                &delivery.data,
                properties,
            )
            .await
    }

    fn status_event(
        &self,
        platform: Option<usize>,
        envelope: Option<&Envelope>,
        submission_id: String,
        status: wire::Status,
        destination: Option<DestinationIndex>,
        rejection: Option<&Rejection>,
    ) -> Option<wire::StatusEvent> {
        let platform = &self.config.platforms[platform?];
        let destination = destination.map(|i| &self.config.destinations[i]);
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
        })
    }

    /// Status events are sent with a confirm but do not hold the submission back: the
    /// submission's own fate is already decided when they are sent.
    async fn send_status(&self, delivery: &Delivery, event: wire::StatusEvent) {
        let Some(platform) = self
            .config
            .platforms
            .iter()
            .position(|p| p.id == event.platform_id)
        else {
            return;
        };
        let p = &self.config.platforms[platform];
        let (body, content_type) = match p.status_format {
            StatusFormat::Json => match serde_json::to_vec(&event) {
                Ok(body) => (body, "application/json"),
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode status event");
                    return;
                }
            },
            StatusFormat::Protobuf => (
                prost::Message::encode_to_vec(&event),
                "application/x-protobuf",
            ),
        };
        let word = match wire::Status::try_from(event.status) {
            Ok(wire::Status::Forwarded) => "forwarded",
            Ok(wire::Status::Rejected) => "rejected",
            _ => "unspecified",
        };
        let mut headers = FieldTable::default();
        headers.insert(headers::STATUS.into(), header_string(word));
        headers.insert(
            headers::SUBMISSION_ID.into(),
            header_string(event.submission_id.as_str()),
        );
        telemetry::inject(
            &tracing::Span::current(),
            delivery.properties.headers().as_ref(),
            &mut headers,
        );
        let properties = BasicProperties::default()
            .with_message_id(event.event_id.as_str().into())
            .with_content_type(content_type.into())
            .with_type("ozg.gateway.v1.StatusEvent".into())
            .with_app_id("ozg-gateway".into())
            .with_timestamp(unix_seconds())
            .with_headers(headers);
        if let Err(e) = self.status[platform]
            .publish(&p.status_exchange, &p.status_routing_key, &body, properties)
            .await
        {
            tracing::warn!(
                submission_id = %event.submission_id,
                platform = %p.id,
                status = word,
                error = %e,
                "status event not delivered to the platform"
            );
        }
    }
}

/// Acks and nacks are bounded too: on a connection that is going away they may never be
/// answered, and a delivery whose ack is lost is redelivered by the broker anyway.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

async fn ack(delivery: &Delivery, submission_id: &str) {
    match tokio::time::timeout(
        SETTLE_TIMEOUT,
        delivery.acker.ack(BasicAckOptions::default()),
    )
    .await
    {
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

/// Hands a delivery back to the broker after a pause, so that a path that keeps failing
/// (store or dead-letter broker down) does not spin.
async fn requeue(delivery: &Delivery, submission_id: &str) {
    tokio::time::sleep(REQUEUE_DELAY).await;
    let options = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    match tokio::time::timeout(SETTLE_TIMEOUT, delivery.acker.nack(options)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(submission_id = %submission_id, error = %e,
            "nack failed; the broker redelivers the submission when the channel closes"),
        Err(_) => tracing::warn!(submission_id = %submission_id,
            "nack not answered in time; the broker redelivers the submission when the channel closes"),
    }
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

fn now_timestamp() -> pbjson_types::Timestamp {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(now.subsec_nanos()).unwrap_or(0),
    }
}
