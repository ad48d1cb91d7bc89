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

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Store, TraceEvent};

/// Channel capacity in batches: one being written, one filling and slack for bursts.
const QUEUED_BATCHES: usize = 4;

/// Batches trace events for the store; see the module documentation. Share it behind an
/// `Arc`; [`flush`](Self::flush) writes what is queued without taking it back, so whoever
/// stops the gateway need not be the last holder.
#[derive(Debug)]
pub struct EventRecorder {
    queue: mpsc::Sender<Queued>,
}

/// What the batch task takes from the queue: an event, or a request to say once everything
/// queued before it has been written.
#[derive(Debug)]
enum Queued {
    Event(TraceEvent),
    Flush(oneshot::Sender<()>),
}

impl EventRecorder {
    /// Starts the batch task on the current tokio runtime. A `max_batch` of 0 is taken as
    /// 1; a `max_delay` of zero batches only what is already queued.
    pub fn start(store: Store, max_batch: usize, max_delay: Duration) -> EventRecorder {
        let max_batch = max_batch.max(1);
        let (queue, rx) = mpsc::channel(max_batch.saturating_mul(QUEUED_BATCHES));
        tokio::spawn(run(store, rx, max_batch, max_delay));
        EventRecorder { queue }
    }

    /// Queues `event`; waits while the queue is full. Does not wait for the write.
    pub async fn record(&self, event: TraceEvent) {
        if self.queue.send(Queued::Event(event)).await.is_err() {
            // Only if the task has died: it ends when the last recorder is dropped.
            tracing::debug!("trace event recorder has stopped; event dropped");
        }
    }

    /// Writes every event queued so far and waits for that write (one batch, without the
    /// batching delay). Called on shutdown, before the store closes: other holders of the
    /// recorder (status pages, background tasks) may outlive that moment, the events must
    /// not.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Queued::Flush(done)).await.is_err() || written.await.is_err() {
            tracing::error!("trace event recorder task ended abnormally; queued events lost");
        }
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Queued>, max_batch: usize, max_delay: Duration) {
    while let Some(batch) = next_batch(&mut rx, max_batch, max_delay).await {
        let mut events = Vec::with_capacity(batch.len());
        let mut flushes = Vec::new();
        for queued in batch {
            match queued {
                Queued::Event(event) => events.push(event),
                Queued::Flush(done) => flushes.push(done),
            }
        }
        if let Err(error) = store.record_events(&events).await {
            // Dropped, not retried: see the module documentation.
            tracing::warn!(%error, events = events.len(), "trace events not written, dropped");
        }
        for done in flushes {
            // Nobody waiting any more is no reason to stop writing.
            let _ = done.send(());
        }
    }
}

/// The next batch: waits for a first item, then gathers more until `max_batch`, `max_delay`
/// after the first, or a flush request. `None` once the channel is closed and drained; a
/// closed channel also ends the wait early.
async fn next_batch(
    rx: &mut mpsc::Receiver<Queued>,
    max_batch: usize,
    max_delay: Duration,
) -> Option<Vec<Queued>> {
    let first = rx.recv().await?;
    let deadline = Instant::now() + max_delay;
    let mut batch = Vec::with_capacity(max_batch);
    batch.push(first);
    while batch.len() < max_batch && !matches!(batch.last(), Some(Queued::Flush(_))) {
        let room = max_batch - batch.len();
        let before = batch.len();
        // `timeout_at` polls the receive before the clock, so a zero delay still takes
        // whatever is already queued.
        match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if batch[before..]
            .iter()
            .any(|q| matches!(q, Queued::Flush(_)))
        {
            break;
        }
    }
    Some(batch)
}
