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

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Store, TraceEvent};

/// Channel capacity in batches: one being written, one filling and slack for bursts.
const QUEUED_BATCHES: usize = 4;

/// Batches trace events for the store; see the module documentation. Share it behind an
/// `Arc`; [`shutdown`](Self::shutdown) works through any of the shares.
#[derive(Debug)]
pub struct EventRecorder {
    events: mpsc::Sender<TraceEvent>,
    /// Tells the task to write what is queued and end. A shutdown cannot wait for every
    /// sender to be dropped instead: whoever shares the recorder (the activity, held by
    /// tasks that end on their own time) would decide whether the last events are written
    /// before the store closes.
    closing: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl EventRecorder {
    /// Starts the batch task on the current tokio runtime. A `max_batch` of 0 is taken as
    /// 1; a `max_delay` of zero batches only what is already queued.
    pub fn start(store: Store, max_batch: usize, max_delay: Duration) -> EventRecorder {
        let max_batch = max_batch.max(1);
        let (events, rx) = mpsc::channel(max_batch.saturating_mul(QUEUED_BATCHES));
        let closing = CancellationToken::new();
        let batching = Batching {
            max_batch,
            max_delay,
        };
        let task = tokio::spawn(run(store, rx, batching, closing.clone()));
        EventRecorder {
            events,
            closing,
            task: Mutex::new(Some(task)),
        }
    }

    /// Queues `event`; waits while the queue is full. Does not wait for the write.
    pub async fn record(&self, event: TraceEvent) {
        if self.events.send(event).await.is_err() {
            // Only after shutdown, or if the task has died.
            tracing::debug!("trace event recorder has stopped; event dropped");
        }
    }

    /// Stops taking events, writes every one queued before, and waits for the task. Events
    /// recorded afterwards are dropped.
    pub async fn shutdown(&self) {
        self.closing.cancel();
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task
            && let Err(error) = task.await
        {
            tracing::error!(%error, "trace event recorder task ended abnormally");
        }
    }
}

async fn run(
    store: Store,
    mut rx: mpsc::Receiver<TraceEvent>,
    batching: Batching,
    closing: CancellationToken,
) {
    let mut batch = Vec::with_capacity(batching.max_batch);
    loop {
        let open = batching.fill(&mut rx, &mut batch, &closing).await;
        if !batch.is_empty() {
            if let Err(error) = store.record_events(&batch).await {
                // Dropped, not retried: see the module documentation.
                tracing::warn!(%error, events = batch.len(), "trace events not written, dropped");
            }
            batch.clear();
        }
        if !open {
            break;
        }
    }
}

#[derive(Clone, Copy)]
struct Batching {
    max_batch: usize,
    max_delay: Duration,
}

impl Batching {
    /// Fills `batch`: waits for a first event, then gathers more until `max_batch` or
    /// `max_delay` after the first. `false` once the channel is closed and drained: every
    /// sender gone, or `closing`, which closes it, so that the events queued before are
    /// taken at once and shutdown does not sit out the delay.
    async fn fill(
        &self,
        rx: &mut mpsc::Receiver<TraceEvent>,
        batch: &mut Vec<TraceEvent>,
        closing: &CancellationToken,
    ) -> bool {
        let mut deadline: Option<Instant> = None;
        while batch.len() < self.max_batch {
            let room = self.max_batch - batch.len();
            // Each branch is cancel-safe: what `recv_many` took is in `batch` already.
            // Biased: the queue is looked at before the clock, so that a zero delay still
            // takes whatever is already queued.
            let taken = tokio::select! {
                biased;
                taken = rx.recv_many(batch, room) => taken,
                () = closing.cancelled(), if !rx.is_closed() => {
                    rx.close();
                    continue;
                }
                () = sleep_until(deadline), if deadline.is_some() => return true,
            };
            if taken == 0 {
                return false;
            }
            deadline.get_or_insert_with(|| Instant::now() + self.max_delay);
        }
        true
    }
}

/// Sleeps until `deadline`; never for `None` (the branch is disabled then).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;

    #[tokio::test]
    async fn shutdown_through_one_share_writes_what_was_queued() {
        let store = crate::store::open("sqlite::memory:").await.unwrap();
        // Nothing would be written for an hour but for the shutdown.
        let recorder = Arc::new(EventRecorder::start(
            store.clone(),
            100,
            Duration::from_secs(3600),
        ));
        let other_share = Arc::clone(&recorder);
        for event in ["received", "forwarded", "accepted"] {
            recorder
                .record(TraceEvent {
                    submission_id: "sub".into(),
                    at: SystemTime::now(),
                    event: event.into(),
                    platform: "he".into(),
                    destination: "bauamt".into(),
                    detail: String::new(),
                })
                .await;
        }
        tokio::time::timeout(Duration::from_secs(10), recorder.shutdown())
            .await
            .unwrap();
        let events: Vec<String> = store
            .trace("sub")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(events, ["received", "forwarded", "accepted"]);
        drop(other_share);
        store.close().await;
    }
}
