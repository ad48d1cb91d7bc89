//! Deduplicate and record: whether a submission was delivered before (checked against the
//! store's delivery records, and against the ids being delivered right now), and the record
//! of a confirmed delivery, written before its ack.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::SystemTime;

use uuid::Uuid;

use super::accept::Accepted;
use super::{Arrival, Pipeline};
use crate::model::{Destination, DestinationIndex};
use crate::outcome::{Outcome, Rejection};
use crate::store::{DeliveryRecord, Seen};

/// Takes a submission id out of `Pipeline::delivering` when its processing ends, whatever
/// the way out.
pub(super) struct DeliveringGuard<'a> {
    set: &'a Mutex<HashSet<Uuid>>,
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

impl Pipeline {
    /// Marks `id` as being delivered, or `None` when it is already: the same id taken off a
    /// queue again meanwhile must not pass the check before the first delivery is
    /// confirmed and recorded.
    pub(super) fn claim(&self, id: Uuid) -> Option<DeliveringGuard<'_>> {
        let claimed = self
            .delivering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id);
        // Built only for a claim that succeeded: its drop releases the id.
        claimed.then(|| DeliveringGuard {
            set: &self.delivering,
            id,
        })
    }

    /// `Ok` with the submission when it was not delivered before; otherwise how it ends.
    pub(super) async fn check(&self, accepted: Accepted) -> Result<Accepted, Outcome> {
        let submission_id = accepted.envelope.submission_id.to_string();
        // Consumers take nothing while the store fails, but a subscription that winds down
        // (stop, pause, lost channel) processes what the broker had already sent: nothing is
        // delivered that could not be recorded, or that would be checked against a file
        // nobody will see again.
        if !self.store_health().is_up() {
            return Err(Outcome::Requeue {
                submission_id,
                error: format!(
                    "the store does not answer: {}",
                    self.store_health().status().problem()
                ),
            });
        }
        let id = accepted.envelope.submission_id;
        match self.dedup.check(id, accepted.fingerprint).await {
            Ok(Seen::New) => Ok(accepted),
            Ok(Seen::Delivered { destination, .. }) => Err(Outcome::Duplicate {
                envelope: accepted.envelope,
                destination,
            }),
            Ok(Seen::Conflict {
                destination,
                delivered_at,
            }) => Err(Outcome::Rejected {
                rejection: Rejection::conflict(&destination, delivered_at),
                submission_id: Some(submission_id),
                envelope: Some(accepted.envelope),
                destination: Some(destination),
            }),
            Err(e) => Err(Outcome::Requeue {
                submission_id,
                error: e.to_string(),
            }),
        }
    }

    /// Records a confirmed delivery. No ack without the record: a redelivery or republish
    /// of an acked submission is recognised only through it. `record` waits while the
    /// store fails (the delivery is held, unacked; the consumers take nothing more
    /// meanwhile) and errs only when the gateway stops first: then the submission goes
    /// back to its queue unrecorded, and the next start delivers it again.
    pub(super) async fn record(
        &self,
        platform: usize,
        arrival: &Arrival,
        accepted: Accepted,
        (destination, d): (DestinationIndex, &Destination),
    ) -> Outcome {
        let envelope = accepted.envelope;
        let record = DeliveryRecord {
            submission_id: envelope.submission_id,
            fingerprint: accepted.fingerprint,
            destination: d.id.clone(),
            delivered_at: SystemTime::now(),
            platform: self.config.platforms[platform].id.clone(),
            received_at: arrival.trace_on_record().then_some(arrival.received_at),
        };
        if let Err(e) = self.dedup.record(record).await {
            let submission_id = envelope.submission_id.to_string();
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
}
