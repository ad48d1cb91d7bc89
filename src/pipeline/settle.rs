//! The one way any consumer of the gateway settles what it took off a queue: platform
//! queues, the retry and replay queues, the dead-letter intake and back offices' receipt
//! queues all ack and nack through here, with the same bounds.
//!
//! A batch of a platform consumer acks in its [`AckTurn`]: after every earlier batch of the
//! same channel has sent its own, nacks one by one, then one ack with `multiple` for the
//! highest tag it acks, which covers exactly the batch's own acked deliveries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};

/// Acks and nacks are bounded: on a connection that is going away they may never be
/// answered, and a delivery whose ack is lost is redelivered by the broker anyway.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a delivery waits before it is handed back to its queue: keeps a path that
/// keeps failing (store, dead-letter broker) from spinning.
const REQUEUE_DELAY: Duration = Duration::from_secs(1);

/// What is sent to the broker for one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Finished (delivered, dead-lettered, scheduled for retry, stored, answered), each
    /// confirmed or committed: ack.
    Ack,
    /// Not finished: nack with requeue, after `REQUEUE_DELAY`.
    Requeue,
}

/// Why an ack or nack did not reach the broker.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("the consumer channel closed meanwhile")]
    ChannelClosed,
    #[error("{0}")]
    Failed(#[from] lapin::Error),
    #[error("not answered within {SETTLE_TIMEOUT:?}")]
    TimedOut,
}

/// Acks `acker`'s delivery (and with `multiple` every earlier one on its channel).
pub async fn ack(acker: &Acker, multiple: bool) -> Result<(), SettleError> {
    let ack = acker.ack(BasicAckOptions { multiple });
    sent(tokio::time::timeout(SETTLE_TIMEOUT, ack).await)
}

/// Hands `acker`'s delivery back to its queue at once.
pub async fn requeue_now(acker: &Acker) -> Result<(), SettleError> {
    let nack = acker.nack(BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    });
    sent(tokio::time::timeout(SETTLE_TIMEOUT, nack).await)
}

fn sent(
    answer: Result<lapin::Result<bool>, tokio::time::error::Elapsed>,
) -> Result<(), SettleError> {
    match answer {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(SettleError::ChannelClosed),
        Ok(Err(e)) => Err(SettleError::Failed(e)),
        Err(_) => Err(SettleError::TimedOut),
    }
}

/// Settles one delivery by itself: an ack, or a nack with requeue after `REQUEUE_DELAY`.
/// For consumers that take one delivery at a time (receipts).
pub async fn one(delivery: &Delivery, disposition: Disposition) -> Result<(), SettleError> {
    match disposition {
        Disposition::Ack => ack(&delivery.acker, false).await,
        Disposition::Requeue => {
            tokio::time::sleep(REQUEUE_DELAY).await;
            requeue_now(&delivery.acker).await
        }
    }
}

/// One delivery of a batch with what is to be sent to the broker for it.
pub struct Settled {
    pub delivery: Delivery,
    pub disposition: Disposition,
    /// For the log when the broker cannot be told.
    pub submission_id: String,
}

/// A batch's place in its subscription's order of acknowledgements. One `ack` with
/// `multiple` settles every delivery up to its tag on the channel, so a batch may send it
/// only after every earlier batch of the same channel has sent its own; each batch waits
/// for the one before and then lets the next go.
pub struct AckTurn {
    after: Option<tokio::sync::oneshot::Receiver<()>>,
    done: tokio::sync::oneshot::Sender<()>,
    /// Cleared when a nack could not be sent: a later `multiple` ack would then ack the
    /// delivery that was meant to go back to the queue, so the subscription acks one by one
    /// from then on.
    multiple_ok: Arc<AtomicBool>,
}

/// Hands out the [`AckTurn`]s of one subscription (one consumer channel), in the order its
/// batches were taken off the queue.
pub struct AckOrder {
    last: Option<tokio::sync::oneshot::Receiver<()>>,
    multiple_ok: Arc<AtomicBool>,
}

impl Default for AckOrder {
    fn default() -> AckOrder {
        AckOrder {
            last: None,
            multiple_ok: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl AckOrder {
    /// The turn of the next batch.
    pub fn next_turn(&mut self) -> AckTurn {
        let (done, next) = tokio::sync::oneshot::channel();
        AckTurn {
            after: self.last.replace(next),
            done,
            multiple_ok: self.multiple_ok.clone(),
        }
    }
}

/// Sends a settled batch's dispositions to the broker, in its turn: nacks (with requeue,
/// after `REQUEUE_DELAY`, so that a path that keeps failing does not spin) one by one,
/// then one ack with `multiple` for the highest delivery tag to ack, which covers every
/// other delivery of the batch to ack and nothing later.
pub async fn batch(settled: Vec<Settled>, turn: AckTurn) {
    let requeue = settled
        .iter()
        .any(|s| s.disposition == Disposition::Requeue);
    if requeue {
        // Before waiting for the turn: the batches after this one sleep at the same time.
        tokio::time::sleep(REQUEUE_DELAY).await;
    }
    if let Some(previous) = turn.after {
        // An error means the previous batch ended without settling (its task panicked or
        // was aborted): its deliveries may still be unacked on the channel, and a
        // `multiple` ack from here would ack them unprocessed. One by one from now on.
        if previous.await.is_err() {
            turn.multiple_ok.store(false, Ordering::Relaxed);
        }
    }
    for s in settled
        .iter()
        .filter(|s| s.disposition == Disposition::Requeue)
    {
        if let Err(e) = requeue_now(&s.delivery.acker).await {
            tracing::warn!(submission_id = %s.submission_id, error = %e,
                "nack not sent; the broker redelivers the submission when the channel closes");
            turn.multiple_ok.store(false, Ordering::Relaxed);
        }
    }
    let to_ack = settled.iter().filter(|s| s.disposition == Disposition::Ack);
    if turn.multiple_ok.load(Ordering::Relaxed) {
        if let Some(last) = to_ack.max_by_key(|s| s.delivery.delivery_tag) {
            ack_logged(last, true).await;
        }
    } else {
        for s in to_ack {
            ack_logged(s, false).await;
        }
    }
    let _ = turn.done.send(());
}

async fn ack_logged(settled: &Settled, multiple: bool) {
    if let Err(e) = ack(&settled.delivery.acker, multiple).await {
        tracing::warn!(submission_id = %settled.submission_id, error = %e,
            "ack not sent; the broker will redeliver if it was lost");
    }
}
