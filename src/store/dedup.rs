//! The batching front of the store that the message path uses.
//!
//! Each consumer asks about one submission at a time; the store answers hundreds in one
//! query as cheaply as one. So requests go through bounded channels to two background
//! tasks, one for checks and one for records, each of which gathers up to `max_batch`
//! requests (waiting at most `max_delay` after the first), runs one store call, and answers
//! every request through its oneshot. A record is answered only after its batch is
//! committed, so the caller can ack the source message after that. Checks and records run
//! side by side; batches of one kind run one after the other, which keeps records in call
//! order and lets the next batch fill while one is in flight.
//!
//! A redelivery can race the write of the original's record: the broker hands out the
//! message again while the batch holding the record has not been committed. To see those,
//! every record is entered in an in-memory map before it is queued and leaves it only after
//! its batch has been written (or has failed, which the caller is told). Checks look at the
//! map before asking the store and again after, and the map wins because it holds the
//! latest record for an id. The first look makes a record visible the moment `record` was
//! called; the second covers a record made while the query ran. Looking at the map before
//! the query is what makes removing an entry right after its commit safe: an entry the
//! first look misses was committed before the query started, so the query sees it.
//!
//! Memory stays bounded: the channels are bounded, and the map holds only records that are
//! queued or in the batch being written, so at most the record channel's capacity plus one
//! batch.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use super::{DeliveryRecord, Fingerprint, Seen, Store, StoreError, classify, cutoff};

/// Channel capacity in batches: enough for one batch in flight, one filling and some slack
/// for bursts, without letting a stalled store pile up unbounded work.
const QUEUED_BATCHES: usize = 4;

/// Batches checks and records for the hot path; see the module documentation.
pub struct Deduplicator {
    window: Duration,
    checks: mpsc::Sender<CheckRequest>,
    records: mpsc::Sender<RecordRequest>,
    pending: Arc<Pending>,
    check_task: JoinHandle<()>,
    record_task: JoinHandle<()>,
}

impl fmt::Debug for Deduplicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deduplicator")
            .field("window", &self.window)
            .field("pending_records", &self.pending.lock().entries.len())
            .finish_non_exhaustive()
    }
}

struct CheckRequest {
    id: Uuid,
    fingerprint: Fingerprint,
    reply: oneshot::Sender<Result<Seen, StoreError>>,
}

struct RecordRequest {
    record: DeliveryRecord,
    /// Which map entry this request put there, so that its commit removes that entry and
    /// not a later record's for the same id.
    seq: u64,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

impl Deduplicator {
    /// Starts the two batch tasks on the current tokio runtime. `window` is how long a
    /// delivered id counts as seen (see [`super::DEFAULT_WINDOW`]); a `max_batch` of 0 is
    /// taken as 1; a `max_delay` of zero batches only what is already queued.
    pub fn start(
        store: Store,
        window: Duration,
        max_batch: usize,
        max_delay: Duration,
    ) -> Deduplicator {
        let max_batch = max_batch.max(1);
        let capacity = max_batch.saturating_mul(QUEUED_BATCHES);
        let (checks, check_rx) = mpsc::channel(capacity);
        let (records, record_rx) = mpsc::channel(capacity);
        let pending = Arc::new(Pending::default());
        let batching = Batching {
            max_batch,
            max_delay,
        };
        let check_task = tokio::spawn(run_checks(
            store.clone(),
            window,
            Arc::clone(&pending),
            check_rx,
            batching,
        ));
        let record_task = tokio::spawn(run_records(
            store,
            Arc::clone(&pending),
            record_rx,
            batching,
        ));
        Deduplicator {
            window,
            checks,
            records,
            pending,
            check_task,
            record_task,
        }
    }

    /// What the store (including records not yet committed) knows about `id`.
    pub async fn check(&self, id: Uuid, fingerprint: Fingerprint) -> Result<Seen, StoreError> {
        // A record still on its way to the store answers without a query.
        if let Some(seen) = self.pending.lookup(&id, &fingerprint, cutoff(self.window)) {
            return Ok(seen);
        }
        let (reply, answer) = oneshot::channel();
        self.checks
            .send(CheckRequest {
                id,
                fingerprint,
                reply,
            })
            .await
            .map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    /// Records a delivery; resolves once the batch holding it is committed. The record is
    /// visible to [`check`](Self::check) from the moment this is called. Dropping the
    /// future does not withdraw the record once it has been queued.
    pub async fn record(&self, record: DeliveryRecord) -> Result<(), StoreError> {
        let permit = self
            .records
            .reserve()
            .await
            .map_err(|_| StoreError::Stopped)?;
        // Entered only with a slot in hand, so that the map never holds more than the
        // channel can; no await between here and the send, so a dropped future cannot leave
        // an entry behind that no batch will remove.
        let seq = self.pending.insert(&record);
        let (reply, answer) = oneshot::channel();
        permit.send(RecordRequest { record, seq, reply });
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    /// Stops taking requests, writes every queued record, and waits for both tasks.
    pub async fn shutdown(self) {
        let Deduplicator {
            checks,
            records,
            check_task,
            record_task,
            ..
        } = self;
        // The tasks drain their channels once every sender is gone; `record` and `check`
        // borrow `self`, so no caller can still be sending.
        drop(checks);
        drop(records);
        for (task, name) in [(check_task, "check"), (record_task, "record")] {
            if let Err(error) = task.await {
                tracing::error!(%error, "deduplicator {name} task ended abnormally");
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Batching {
    max_batch: usize,
    max_delay: Duration,
}

impl Batching {
    /// The next batch: waits for a first request, then gathers more until `max_batch` or
    /// `max_delay` after the first. `None` once the channel is closed and drained; a closed
    /// channel also ends the wait early, so that shutdown does not sit out the delay.
    async fn next<T>(&self, rx: &mut mpsc::Receiver<T>) -> Option<Vec<T>> {
        let first = rx.recv().await?;
        let deadline = Instant::now() + self.max_delay;
        let mut batch = Vec::with_capacity(self.max_batch);
        batch.push(first);
        while batch.len() < self.max_batch {
            let room = self.max_batch - batch.len();
            // `timeout_at` polls the receive before the clock, so a zero delay still takes
            // whatever is already queued.
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        Some(batch)
    }
}

async fn run_checks(
    store: Store,
    window: Duration,
    pending: Arc<Pending>,
    mut rx: mpsc::Receiver<CheckRequest>,
    batching: Batching,
) {
    while let Some(batch) = batching.next(&mut rx).await {
        let before: Vec<Option<Seen>> = {
            let cutoff = cutoff(window);
            let map = pending.lock();
            batch
                .iter()
                .map(|req| lookup(&map, &req.id, &req.fingerprint, cutoff))
                .collect()
        };
        let ask: Vec<(Uuid, Fingerprint)> = batch
            .iter()
            .zip(&before)
            .filter(|(_, before)| before.is_none())
            .map(|(req, _)| (req.id, req.fingerprint))
            .collect();
        let stored = store.check(&ask, window).await;

        let cutoff = cutoff(window);
        let after: Vec<Option<Seen>> = {
            let map = pending.lock();
            batch
                .iter()
                .map(|req| lookup(&map, &req.id, &req.fingerprint, cutoff))
                .collect()
        };
        let mut stored = stored.map(Vec::into_iter);
        for ((req, before), after) in batch.into_iter().zip(before).zip(after) {
            // Only requests without a first-look answer were asked, in batch order; their
            // answer is taken off the store's list even when the second look wins, or every
            // later answer would belong to the wrong request.
            let from_store = before.is_none().then(|| match &mut stored {
                Ok(seen) => seen.next().ok_or(StoreError::Corrupt {
                    detail: "store answered fewer checks than were asked".into(),
                }),
                Err(error) => Err(error.clone()),
            });
            let answer = match (after, before, from_store) {
                (Some(seen), _, _) | (None, Some(seen), _) => Ok(seen),
                (None, None, Some(answer)) => answer,
                (None, None, None) => Err(StoreError::Corrupt {
                    detail: "a check was neither answered nor asked".into(),
                }),
            };
            // The caller may have given up waiting; nothing to do then.
            let _ = req.reply.send(answer);
        }
    }
}

async fn run_records(
    store: Store,
    pending: Arc<Pending>,
    mut rx: mpsc::Receiver<RecordRequest>,
    batching: Batching,
) {
    while let Some(batch) = batching.next(&mut rx).await {
        let mut records = Vec::with_capacity(batch.len());
        let mut done = Vec::with_capacity(batch.len());
        for req in batch {
            done.push((req.record.submission_id, req.seq, req.reply));
            records.push(req.record);
        }
        let result = store.record(&records).await;
        if let Err(error) = &result {
            tracing::warn!(%error, records = records.len(), "deduplication records not written");
        }
        // Out of the map only now: committed, a check's query finds them; failed, the
        // callers hear so and have not acked, so the broker will hand the messages out again.
        {
            let mut map = pending.lock();
            for (id, seq, _) in &done {
                if map.entries.get(id).is_some_and(|entry| entry.seq == *seq) {
                    map.entries.remove(id);
                }
            }
        }
        for (_, _, reply) in done {
            let _ = reply.send(result.clone());
        }
    }
}

/// Records entered by [`Deduplicator::record`] and not yet written.
#[derive(Default)]
struct Pending {
    map: Mutex<PendingMap>,
}

#[derive(Default)]
struct PendingMap {
    next_seq: u64,
    entries: HashMap<Uuid, PendingEntry>,
}

struct PendingEntry {
    seq: u64,
    record: DeliveryRecord,
}

impl Pending {
    fn lock(&self) -> MutexGuard<'_, PendingMap> {
        // Nothing panics while holding the lock, and the map stays consistent at every
        // step anyway, so a poisoned lock is still usable.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, record: &DeliveryRecord) -> u64 {
        let mut map = self.lock();
        let seq = map.next_seq;
        map.next_seq += 1;
        map.entries.insert(
            record.submission_id,
            PendingEntry {
                seq,
                record: record.clone(),
            },
        );
        seq
    }

    fn lookup(
        &self,
        id: &Uuid,
        fingerprint: &Fingerprint,
        cutoff: Option<SystemTime>,
    ) -> Option<Seen> {
        lookup(&self.lock(), id, fingerprint, cutoff)
    }
}

fn lookup(
    map: &PendingMap,
    id: &Uuid,
    fingerprint: &Fingerprint,
    cutoff: Option<SystemTime>,
) -> Option<Seen> {
    map.entries
        .get(id)
        .map(|entry| classify(fingerprint, &entry.record, cutoff))
}
