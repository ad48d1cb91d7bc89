//! Report: what became of a submission, told to its platform (status events), to metrics,
//! to the live tail and to its trace.

use std::time::SystemTime;

use lapin::BasicProperties;
use lapin::types::FieldTable;
use uuid::Uuid;

use super::headers::{self, fitted, now_timestamp, unix_seconds};
use super::{Arrival, Live, Pipeline};
use crate::amqp::{DeliveryError, header_string};
use crate::envelope::Envelope;
use crate::model::{Destination, DestinationIndex, StatusFormat};
use crate::outcome::{Ending, Rejection};
use crate::store::TraceEvent;
use crate::telemetry::{self, OutcomeLabels};
use crate::wire::v1 as wire;

/// One outcome as [`Pipeline::note`] counts it.
pub(super) struct Noted<'a> {
    pub submission_id: &'a str,
    pub destination: &'a str,
    pub ending: Ending,
    pub reason: &'a str,
    pub error: &'a str,
}

/// Where a delivery came from, as its outcome is counted.
#[derive(Clone, Copy)]
pub(super) struct Counted<'a> {
    pub platform: Option<usize>,
    pub platform_id: &'a str,
    /// For a platform no longer configured: `retry` or `replay`.
    pub source: &'static str,
}

impl<'a> Counted<'a> {
    pub fn of(gateway: &'a Pipeline, arrival: &Arrival) -> Counted<'a> {
        Counted {
            platform: arrival.platform,
            platform_id: arrival
                .platform
                .map_or("?", |i| gateway.config.platforms[i].id.as_str()),
            source: if arrival.replay.is_some() {
                "replay"
            } else {
                "retry"
            },
        }
    }
}

impl Pipeline {
    /// Counts "delivered" through the outlet's handles: no label strings built, no map
    /// looked up.
    pub(super) fn note_delivered(
        &self,
        live: &Live,
        counted: Counted<'_>,
        destination: DestinationIndex,
        submission_id: &str,
    ) {
        let outlet = &live.outlets[destination];
        let d = &live.snapshot.destinations[destination];
        match counted.platform {
            Some(i) => {
                outlet.delivered[i]
                    .get_or_init(|| {
                        self.metrics
                            .messages
                            .get_or_create(&OutcomeLabels {
                                platform: self.config.platforms[i].id.clone(),
                                destination: d.id.clone(),
                                outcome: Ending::Delivered.as_str().to_owned(),
                                reason: String::new(),
                            })
                            .clone()
                    })
                    .inc();
            }
            None => self.metrics.orphan(counted.source, Ending::Delivered, ""),
        }
        self.activity
            .delivered(counted.platform, submission_id, &d.id, &outlet.activity);
        tracing::Span::current().record("ozg.outcome", Ending::Delivered.as_str());
    }

    /// Counts the outcome, notes it on the submission's span and tells the live watchers.
    pub(super) fn note(&self, counted: Counted<'_>, o: Noted<'_>) {
        match counted.platform {
            Some(_) => {
                self.metrics
                    .outcome(counted.platform_id, o.destination, o.ending, o.reason);
            }
            None => self.metrics.orphan(counted.source, o.ending, o.reason),
        }
        self.activity.outcome(
            counted.platform,
            o.submission_id,
            o.destination,
            o.ending,
            o.reason,
            o.error,
        );
        let span = tracing::Span::current();
        span.record("ozg.outcome", o.ending.as_str());
        if !o.reason.is_empty() {
            span.record("ozg.reason", o.reason);
        }
        if o.ending.is_error() {
            span.record("otel.status_code", "error");
            let kind = if o.reason.is_empty() {
                o.ending.as_str()
            } else {
                o.reason
            };
            span.record("error.type", kind);
        }
    }

    /// Adds "received" and the outcome to the submission's trace.
    pub(super) async fn trace(
        &self,
        arrival: &Arrival,
        submission_id: &str,
        (event, destination): (Ending, &str),
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
        let event = match event {
            Ending::Delivered => "forwarded",
            other => other.as_str(),
        };
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

    /// The status event for a platform's submission; `None` for a platform no longer
    /// configured (nobody to tell).
    pub(super) fn status_event(
        &self,
        platform: Option<usize>,
        envelope: Option<&Envelope>,
        (submission_id, status): (String, wire::Status),
        destination: Option<&Destination>,
        rejection: Option<&Rejection>,
    ) -> Option<Box<wire::StatusEvent>> {
        let platform = &self.config.platforms[platform?];
        // Boxed: the event (about a KiB) is held while its publish awaits the confirm, and
        // inline it would widen the state of every submission in flight by that much.
        Some(Box::new(wire::StatusEvent {
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
        }))
    }

    /// Status events are sent with a confirm but do not hold the submission back: the
    /// submission's own fate is already decided when they are sent.
    pub(super) async fn send_status(
        &self,
        trace: &FieldTable,
        event: Option<Box<wire::StatusEvent>>,
    ) {
        let Some(event) = event else {
            return;
        };
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
        let (body, content_type) = status_body(p.status_format, event);
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
}

/// The event in the platform's format, with its content type.
fn status_body(format: StatusFormat, event: &wire::StatusEvent) -> (Vec<u8>, &'static str) {
    match format {
        // Serialising a generated message to JSON does not fail in practice; were it to,
        // protobuf still says it.
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
