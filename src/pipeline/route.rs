//! Route: the destination of an accepted submission, on the directory it started with. No
//! I/O.

use super::Replay;
use crate::envelope::Envelope;
use crate::model::DestinationIndex;
use crate::outcome::{Reason, Rejection};
use crate::routing::live::Snapshot;

/// The index of the destination in `snapshot`: the one an operator named for a replay, or
/// the jurisdiction walk's answer for the service and region.
pub(super) fn route(
    snapshot: &Snapshot,
    envelope: &Envelope,
    replay: Option<&Replay>,
) -> Result<DestinationIndex, Rejection> {
    let span = tracing::info_span!(
        "route",
        ozg.service = %envelope.service,
        ozg.ars = %envelope.ars,
        ozg.destination = tracing::field::Empty,
    )
    .entered();
    let found = match replay.and_then(|r| r.destination.as_deref()) {
        Some(id) => snapshot.destination_index(id).ok_or_else(|| Rejection {
            reason: Reason::NoRoute,
            field: None,
            detail: format!("the destination {id:?} named for this replay is not in the directory"),
        }),
        None => snapshot
            .table
            .resolve(envelope.service, envelope.ars)
            .map(|f| f.destination)
            .ok_or_else(|| Rejection::no_route(envelope.service, envelope.ars)),
    };
    if let Ok(i) = found {
        span.record("ozg.destination", snapshot.destinations[i].id.as_str());
    }
    found
}
