//! The batching front of the submission trace that the message path uses.
//!
//! Every submission produces a few trace events; one INSERT each would cost the hot path a
//! store round trip per event. So [`EventRecorder::record`] only queues the event on a
//! bounded channel, and a background task gathers up to `max_batch` events (waiting at most
//! `max_delay` after the first) and writes them with one [`Store::record_events`] call, in
//! the style of the [`Deduplicator`](super::Deduplicator).
//!
//! The trace is a diagnostic. A batch the store refuses is logged and dropped, and nobody
//! waits for its write: losing trace events must never hold up or fail a delivery. What a
//! full channel does is make `record` wait (back-pressure, so memory stays bounded and
//! nothing is dropped silently while the store merely lags).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Store, TraceEvent};

/// Channel capacity in batches: one being written, one filling and slack for bursts.
const QUEUED_BATCHES: usize = 4;

/// Batches trace events for the store; see the module documentation. Share it behind an
/// `Arc`; [`shutdown`](Self::shutdown) takes it back.
#[derive(Debug)]
pub struct EventRecorder {
    events: mpsc::Sender<TraceEvent>,
    task: JoinHandle<()>,
}

impl EventRecorder {
    /// Starts the batch task on the current tokio runtime. A `max_batch` of 0 is taken as
    /// 1; a `max_delay` of zero batches only what is already queued.
    pub fn start(store: Store, max_batch: usize, max_delay: Duration) -> EventRecorder {
        let max_batch = max_batch.max(1);
        let (events, rx) = mpsc::channel(max_batch.saturating_mul(QUEUED_BATCHES));
        let task = tokio::spawn(run(store, rx, max_batch, max_delay));
        EventRecorder { events, task }
    }

    /// Queues `event`; waits while the queue is full. Does not wait for the write.
    pub async fn record(&self, event: TraceEvent) {
        if self.events.send(event).await.is_err() {
            // Only if the task has died (it ends only after shutdown, which takes `self`).
            tracing::debug!("trace event recorder has stopped; event dropped");
        }
    }

    /// Stops taking events, writes every queued one, and waits for the task.
    pub async fn shutdown(self) {
        let EventRecorder { events, task } = self;
        // The task drains the channel once every sender is gone; `record` borrows `self`,
        // so no caller can still be sending.
        drop(events);
        if let Err(error) = task.await {
            tracing::error!(%error, "trace event recorder task ended abnormally");
        }
    }
}

async fn run(
    store: Store,
    mut rx: mpsc::Receiver<TraceEvent>,
    max_batch: usize,
    max_delay: Duration,
) {
    while let Some(batch) = next_batch(&mut rx, max_batch, max_delay).await {
        if let Err(error) = store.record_events(&batch).await {
            // Dropped, not retried: see the module documentation.
            tracing::warn!(%error, events = batch.len(), "trace events not written, dropped");
        }
    }
}

/// The next batch: waits for a first item, then gathers more until `max_batch` or
/// `max_delay` after the first. `None` once the channel is closed and drained; a closed
/// channel also ends the wait early, so that shutdown does not sit out the delay.
///
/// The same as the deduplicator's `Batching::next`, which is private to dedup.rs.
pub(super) async fn next_batch<T>(
    rx: &mut mpsc::Receiver<T>,
    max_batch: usize,
    max_delay: Duration,
) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    let deadline = Instant::now() + max_delay;
    let mut batch = Vec::with_capacity(max_batch);
    batch.push(first);
    while batch.len() < max_batch {
        let room = max_batch - batch.len();
        // `timeout_at` polls the receive before the clock, so a zero delay still takes
        // whatever is already queued.
        match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Some(batch)
}
