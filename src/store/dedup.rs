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
//! A record that cannot be written is not given up: the caller acks its source message
//! only after the record is committed, and a destination that has the submission must not
//! get it again. So a failed batch stays in the map (checks keep seeing it) and is written
//! again, after a pause that grows to [`MAX_RETRY_DELAY`], until the store takes it; the
//! store's health says records are failing meanwhile, which stops the consumers from taking
//! more. A failed check is answered with the error (the caller hands its message back) and
//! the check task probes the store until a check succeeds again. A batch is given up only
//! when nobody waits for it any more (the gateway stopped): its messages were never acked.
//!
//! Memory stays bounded: the channels are bounded, and the map holds only records that are
//! queued or in the batch being written, so at most the record channel's capacity plus one
//! batch; the broker's prefetch bounds the messages waiting behind them.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use super::health::{Part, StoreHealth};
use super::{DeliveryRecord, Fingerprint, Seen, Store, StoreError, classify, cutoff};

/// Channel capacity in batches: enough for one batch in flight, one filling and some slack
/// for bursts, without letting a stalled store pile up unbounded work.
const QUEUED_BATCHES: usize = 4;

/// The first pause after a store call failed; it doubles with every further failure up to
/// [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
/// The longest pause between two tries of a failing store: how long the gateway may take
/// to notice that the store answers again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// The pause before try number `failures + 1`.
fn retry_delay(failures: u32) -> Duration {
    FIRST_RETRY_DELAY
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX_RETRY_DELAY)
}

/// Batches checks and records for the hot path; see the module documentation.
pub struct Deduplicator {
    window: Duration,
    health: StoreHealth,
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

/// Where a record's caller hears that it was written.
type RecordReply = oneshot::Sender<Result<(), StoreError>>;

struct RecordRequest {
    record: DeliveryRecord,
    /// Which map entry this request put there, so that its commit removes that entry and
    /// not a later record's for the same id.
    seq: u64,
    reply: RecordReply,
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
        let health = store.health().clone();
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
            health,
            checks,
            records,
            pending,
            check_task,
            record_task,
        }
    }

    /// Whether the store answers: the consumers take nothing while it does not.
    pub fn health(&self) -> &StoreHealth {
        &self.health
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

    /// Records a delivery; resolves once the batch holding it is committed, however long
    /// the store takes to answer again (see the module documentation). The record is
    /// visible to [`check`](Self::check) from the moment this is called. Dropping the
    /// future does not withdraw the record once it has been queued. An error means the
    /// deduplicator stopped before the record could be written.
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
        Some(self.gather(first, rx).await)
    }

    /// A batch starting with `first`, gathered as [`next`](Self::next) does.
    async fn gather<T>(&self, first: T, rx: &mut mpsc::Receiver<T>) -> Vec<T> {
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
        batch
    }
}

async fn run_checks(
    store: Store,
    window: Duration,
    pending: Arc<Pending>,
    mut rx: mpsc::Receiver<CheckRequest>,
    batching: Batching,
) {
    let health = store.health().clone();
    let mut failures = 0u32;
    loop {
        let first = if failures == 0 {
            rx.recv().await
        } else {
            // Checks have been failing: nothing may come (the consumers wait for the store),
            // so the store is asked on its own now and then until it answers.
            tokio::select! {
                first = rx.recv() => first,
                () = tokio::time::sleep(retry_delay(failures)) => {
                    let probe = store.check(&[(Uuid::nil(), [0; 32])], window).await;
                    count_check(&health, &mut failures, &probe);
                    continue;
                }
            }
        };
        let Some(first) = first else { break };
        let batch = batching.gather(first, &mut rx).await;
        let before = look(&pending, &batch, window);
        let ask: Vec<(Uuid, Fingerprint)> = batch
            .iter()
            .zip(&before)
            .filter(|(_, before)| before.is_none())
            .map(|(req, _)| (req.id, req.fingerprint))
            .collect();
        let stored = store.check(&ask, window).await;
        // An empty `ask` ran no query and says nothing about the store.
        if !ask.is_empty() {
            count_check(&health, &mut failures, &stored);
        }
        let after = look(&pending, &batch, window);
        reply(batch, before, after, stored);
    }
}

/// A check's success or failure, into the run of failures and the store's health.
fn count_check<T>(health: &StoreHealth, failures: &mut u32, result: &Result<T, StoreError>) {
    match result {
        Ok(_) => {
            *failures = 0;
            health.answering(Part::Checks);
        }
        Err(error) => {
            *failures = failures.saturating_add(1);
            health.failing(Part::Checks, error);
        }
    }
}

/// What the in-flight records say about each request of `batch`, if anything.
fn look(pending: &Pending, batch: &[CheckRequest], window: Duration) -> Vec<Option<Seen>> {
    let cutoff = cutoff(window);
    let map = pending.lock();
    batch
        .iter()
        .map(|req| lookup(&map, &req.id, &req.fingerprint, cutoff))
        .collect()
}

/// Answers each request of `batch`: the in-flight records' second look first, then their
/// first, then the store's answer.
fn reply(
    batch: Vec<CheckRequest>,
    before: Vec<Option<Seen>>,
    after: Vec<Option<Seen>>,
    stored: Result<Vec<Seen>, StoreError>,
) {
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
        let result = write_until_taken(&store, &records, &done).await;
        // Out of the map only now: committed, a check's query finds them; given up, nobody
        // waits for them and their messages were never acked, so the broker hands them out
        // again.
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

/// Writes `records` until the store takes them, or until none of their callers (`done`)
/// waits any more.
async fn write_until_taken(
    store: &Store,
    records: &[DeliveryRecord],
    done: &[(Uuid, u64, RecordReply)],
) -> Result<(), StoreError> {
    let health = store.health();
    let mut failures = 0u32;
    loop {
        match store.record(records).await {
            Ok(()) => {
                health.answering(Part::Records);
                return Ok(());
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                health.failing(Part::Records, &error);
                if done.iter().all(|(_, _, reply)| reply.is_closed()) {
                    tracing::warn!(%error, records = records.len(),
                        "deduplication records given up: nobody waits for them, their messages were not acked");
                    return Err(error);
                }
                tracing::debug!(%error, records = records.len(), failures,
                    "deduplication records not written; trying again");
                tokio::time::sleep(retry_delay(failures)).await;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_up_to_the_cap() {
        let delays: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY_DELAY);
    }
}
