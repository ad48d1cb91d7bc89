//! Deliver: publishing with a confirm, to the destination's exchange, and to the gateway's
//! own broker (delay queues for retries, the dead-letter exchange, the replay queue).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};
use tracing::Instrument;
use uuid::Uuid;

use super::headers::{
    self, carry_trace, drop_headers, fitted, own_header, strip_broker_headers, unix_seconds,
};
use super::{Arrival, Attempts, Outlet, Pipeline};
use crate::amqp::guard::DROPPED_HEADERS;
use crate::amqp::{self, DeliveryError, header_string};
use crate::envelope::{Encoding, Envelope};
use crate::model::Destination;
use crate::outcome::{Outcome, Rejection};
use crate::store;
use crate::telemetry;
use crate::topology::{REPLAY_QUEUE, retry_wait_queue};

impl Pipeline {
    /// Publishes the submission's body, unchanged, to its destination and waits for the
    /// confirm.
    pub(super) async fn deliver(
        &self,
        platform: usize,
        trace: &FieldTable,
        delivery: &Delivery,
        (envelope, encoding): (&Envelope, Encoding),
        (d, outlet): (&Destination, &Outlet),
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
        let span = publish_span(d, &id);
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
            let missing = outlet.missing.load(Ordering::Acquire);
            let publisher = if missing {
                &outlet.own
            } else {
                &*outlet.shared
            };
            let result = publisher
                .publish_fitted(&d.exchange, &d.routing_key, &delivery.data, |frame_max| {
                    fitted(&properties, frame_max)
                })
                .await;
            match &result {
                Ok(()) if missing => outlet.found(d),
                Err(DeliveryError::Channel { detail, .. })
                    if amqp::names_exchange(detail, &d.exchange) =>
                {
                    outlet.lost(d, "publish");
                }
                _ => {}
            }
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

    /// A failed delivery is tried again later, until the retries are used up (attempts or
    /// age): then it is dead-lettered.
    pub(super) fn after_failure(
        &self,
        attempts: Attempts,
        error: &DeliveryError,
        envelope: Envelope,
        destination: &str,
    ) -> Outcome {
        let failed = attempts.failed + 1;
        let now = unix_seconds();
        let first_failure = attempts.first_failure.unwrap_or(now);
        let age = Duration::from_secs(now.saturating_sub(first_failure));
        let retry = &self.config.retry;
        let submission_id = envelope.submission_id.to_string();
        if failed >= retry.max_attempts || age >= retry.max_age {
            return Outcome::Rejected {
                rejection: Rejection::gave_up(error, failed, age),
                submission_id: Some(submission_id),
                envelope: Some(envelope),
                destination: Some(destination.to_owned()),
            };
        }
        Outcome::Retry {
            submission_id,
            destination: destination.to_owned(),
            attempts: Attempts {
                failed,
                first_failure: Some(first_failure),
            },
            error: error.to_string(),
        }
    }

    /// Sends the submission to the delay queue for its attempt; it comes back through the
    /// retry queue when the delay is over. Returns the delay.
    pub(super) async fn schedule_retry(
        &self,
        arrival: &Arrival,
        delivery: &Delivery,
        (submission_id, destination): (&str, &str),
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
    pub(super) async fn dead_letter(
        &self,
        arrival: Option<&Arrival>,
        delivery: &Delivery,
        rejection: &Rejection,
        (submission_id, destination): (&str, &str),
        envelope: Option<&Envelope>,
    ) -> Result<(), DeliveryError> {
        let headers = self.dead_letter_headers(arrival, delivery, rejection, submission_id);
        let headers = with_findings(headers, envelope, destination);
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

    /// The message's own headers (trace context included, so that a replay sends what was
    /// received) with why it ended here and where it came from.
    fn dead_letter_headers(
        &self,
        arrival: Option<&Arrival>,
        delivery: &Delivery,
        rejection: &Rejection,
        submission_id: &str,
    ) -> FieldTable {
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
        headers
    }

    /// Sends a back office's refused receipt to the dead-letter exchange, for operators.
    pub async fn dead_letter_receipt(
        &self,
        delivery: &Delivery,
        rejection: &Rejection,
        submission_id: &str,
        destination: &str,
    ) -> Result<(), DeliveryError> {
        self.dead_letter(
            None,
            delivery,
            rejection,
            (submission_id, destination),
            None,
        )
        .await
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
}

/// What operators filter dead letters by, when the submission got that far. A platform's
/// own values under these names are not the gateway's findings. The dead letter's own id
/// and time go in last.
fn with_findings(
    mut headers: FieldTable,
    envelope: Option<&Envelope>,
    destination: &str,
) -> FieldTable {
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
    headers
}

/// The publish span, after OpenTelemetry's messaging conventions.
fn publish_span(d: &Destination, id: &str) -> tracing::Span {
    tracing::info_span!(
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
    )
}
