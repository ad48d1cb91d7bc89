//! Ack: the one place that decides, from a delivery's [`Outcome`], whether it is acked
//! (delivered, a duplicate, dead-lettered or scheduled for retry, each confirmed first) or
//! handed back to its queue. The platform's status event and the counters go with the
//! decision; what is decided is sent to the broker by [`settle::batch`](super::settle::batch).

use lapin::message::Delivery;

use super::report::{Counted, Noted};
use super::settle::Disposition;
use super::{Arrival, Attempts, Live, Pipeline};
use crate::envelope::Envelope;
use crate::model::DestinationIndex;
use crate::outcome::{Ending, Outcome, Rejection};
use crate::wire::v1 as wire;

impl Pipeline {
    /// The one place that decides ack, dead-letter, retry or redelivery.
    pub(super) async fn settle(
        &self,
        live: &Live,
        arrival: &Arrival,
        delivery: &Delivery,
        outcome: Outcome,
    ) -> (Disposition, String) {
        let counted = Counted::of(self, arrival);
        match outcome {
            Outcome::Delivered {
                envelope,
                destination,
            } => {
                self.settle_delivered(live, arrival, counted, envelope, destination)
                    .await
            }
            Outcome::Duplicate {
                envelope,
                destination,
            } => {
                self.settle_duplicate(live, arrival, counted, envelope, &destination)
                    .await
            }
            Outcome::Retry {
                submission_id,
                destination,
                attempts,
                error,
            } => {
                let failed = Failed {
                    submission_id,
                    destination,
                    attempts,
                    error,
                };
                self.settle_retry(arrival, counted, delivery, failed).await
            }
            Outcome::Requeue {
                submission_id,
                error,
            } => self.settle_requeue(counted, submission_id, &error),
            Outcome::Rejected {
                rejection,
                envelope,
                submission_id,
                destination,
            } => {
                // A submission that could not be read is known by its message id, if any.
                let submission_id = submission_id
                    .or_else(|| {
                        delivery
                            .properties
                            .message_id()
                            .as_ref()
                            .map(|m| m.to_string())
                    })
                    .unwrap_or_default();
                let rejected = Rejected {
                    rejection,
                    envelope,
                    submission_id,
                    destination: destination.unwrap_or_default(),
                };
                self.settle_rejected(arrival, counted, delivery, rejected)
                    .await
            }
        }
    }

    /// Cannot finish now: back to the queue for redelivery.
    fn settle_requeue(
        &self,
        counted: Counted<'_>,
        submission_id: String,
        error: &str,
    ) -> (Disposition, String) {
        self.note(
            counted,
            Noted {
                submission_id: &submission_id,
                destination: "",
                ending: Ending::Requeued,
                reason: "",
                error,
            },
        );
        tracing::warn!(submission_id = %submission_id, platform = %counted.platform_id, error = %error,
            outcome = "requeued", "cannot finish now; leaving the submission on its queue for redelivery");
        (Disposition::Requeue, submission_id)
    }

    async fn settle_delivered(
        &self,
        live: &Live,
        arrival: &Arrival,
        counted: Counted<'_>,
        envelope: Envelope,
        destination: DestinationIndex,
    ) -> (Disposition, String) {
        let d = &live.snapshot.destinations[destination];
        let submission_id = envelope.submission_id.to_string();
        self.note_delivered(live, counted, destination, &submission_id);
        tracing::info!(
            submission_id = %submission_id,
            platform = %counted.platform_id,
            destination = %d.id,
            service = %envelope.service,
            ars = %envelope.ars,
            outcome = "delivered",
            "submission forwarded"
        );
        // The common case keeps its trace on the delivery record (one row for the whole
        // way); retries and replays tell their story in events.
        if !arrival.trace_on_record() {
            self.trace(
                arrival,
                &submission_id,
                (Ending::Delivered, &d.id),
                String::new(),
            )
            .await;
        }
        let event = self.status_event(
            counted.platform,
            Some(&envelope),
            (submission_id.clone(), wire::Status::Forwarded),
            Some(d),
            None,
        );
        self.send_status(&arrival.trace, event).await;
        (Disposition::Ack, submission_id)
    }

    async fn settle_duplicate(
        &self,
        live: &Live,
        arrival: &Arrival,
        counted: Counted<'_>,
        envelope: Envelope,
        destination: &str,
    ) -> (Disposition, String) {
        let submission_id = envelope.submission_id.to_string();
        self.note(
            counted,
            Noted {
                submission_id: &submission_id,
                destination,
                ending: Ending::Duplicate,
                reason: "",
                error: "",
            },
        );
        tracing::info!(
            submission_id = %submission_id,
            platform = %counted.platform_id,
            destination = %destination,
            outcome = "duplicate",
            "submission already delivered; not delivered again"
        );
        self.trace(
            arrival,
            &submission_id,
            (Ending::Duplicate, destination),
            "delivered before; not delivered again".to_owned(),
        )
        .await;
        // The platform may have missed the first event (the gateway stopped between
        // delivery and ack): tell it again; events carry the submission id.
        let event = self.status_event(
            counted.platform,
            Some(&envelope),
            (submission_id.clone(), wire::Status::Forwarded),
            live.snapshot.destination(destination),
            None,
        );
        self.send_status(&arrival.trace, event).await;
        (Disposition::Ack, submission_id)
    }

    async fn settle_retry(
        &self,
        arrival: &Arrival,
        counted: Counted<'_>,
        delivery: &Delivery,
        f: Failed,
    ) -> (Disposition, String) {
        let ids = (f.submission_id.as_str(), f.destination.as_str());
        let scheduled = self
            .schedule_retry(arrival, delivery, ids, f.attempts, &f.error)
            .await;
        let ending = match scheduled {
            Ok(_) => Ending::Retrying,
            Err(_) => Ending::Requeued,
        };
        self.note(
            counted,
            Noted {
                submission_id: &f.submission_id,
                destination: &f.destination,
                ending,
                reason: "delivery-failed",
                error: &f.error,
            },
        );
        match scheduled {
            Ok(delay) => {
                tracing::warn!(submission_id = %f.submission_id, platform = %counted.platform_id,
                    destination = %f.destination, attempt = f.attempts.failed, retry_in = ?delay,
                    error = %f.error, outcome = "retrying", "delivery failed; retrying later");
                let detail = format!(
                    "attempt {} failed ({}); next in {}",
                    f.attempts.failed,
                    f.error,
                    humantime::format_duration(delay)
                );
                self.trace(
                    arrival,
                    &f.submission_id,
                    (Ending::Retrying, &f.destination),
                    detail,
                )
                .await;
                (Disposition::Ack, f.submission_id)
            }
            Err(e) => {
                tracing::error!(submission_id = %f.submission_id, platform = %counted.platform_id,
                    error = %e, outcome = "requeued",
                    "cannot schedule the retry; leaving the submission on its queue for redelivery");
                (Disposition::Requeue, f.submission_id)
            }
        }
    }

    async fn settle_rejected(
        &self,
        arrival: &Arrival,
        counted: Counted<'_>,
        delivery: &Delivery,
        r: Rejected,
    ) -> (Disposition, String) {
        tracing::Span::current().record("messaging.message.id", r.submission_id.as_str());
        let reason = r.rejection.reason.code();
        let ids = (r.submission_id.as_str(), r.destination.as_str());
        let dead_lettered = self
            .dead_letter(
                Some(arrival),
                delivery,
                &r.rejection,
                ids,
                r.envelope.as_ref(),
            )
            .await;
        if let Err(e) = dead_lettered {
            let error = e.to_string();
            self.note(
                counted,
                Noted {
                    submission_id: &r.submission_id,
                    destination: &r.destination,
                    ending: Ending::Requeued,
                    reason,
                    error: &error,
                },
            );
            tracing::error!(submission_id = %r.submission_id, platform = %counted.platform_id,
                reason = reason, error = %e, outcome = "requeued",
                "cannot dead-letter; leaving the submission on its queue for redelivery");
            return (Disposition::Requeue, r.submission_id);
        }
        self.note(
            counted,
            Noted {
                submission_id: &r.submission_id,
                destination: &r.destination,
                ending: Ending::DeadLettered,
                reason,
                error: &r.rejection.detail,
            },
        );
        tracing::warn!(submission_id = %r.submission_id, platform = %counted.platform_id,
            reason = reason, field = r.rejection.field.as_deref().unwrap_or(""),
            detail = %r.rejection.detail, outcome = "dead-lettered", "submission rejected");
        let detail = format!("{reason}: {}", r.rejection.detail);
        self.trace(
            arrival,
            &r.submission_id,
            (Ending::DeadLettered, &r.destination),
            detail,
        )
        .await;
        let event = self.status_event(
            counted.platform,
            r.envelope.as_ref(),
            (r.submission_id.clone(), wire::Status::Rejected),
            None,
            Some(&r.rejection),
        );
        self.send_status(&arrival.trace, event).await;
        (Disposition::Ack, r.submission_id)
    }
}

/// A delivery that failed and is to be retried.
struct Failed {
    submission_id: String,
    destination: String,
    attempts: Attempts,
    error: String,
}

/// A submission to dead-letter.
struct Rejected {
    rejection: Rejection,
    envelope: Option<Envelope>,
    submission_id: String,
    destination: String,
}
