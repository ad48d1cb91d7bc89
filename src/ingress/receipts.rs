//! Back offices' receipts, carried back to the platform that sent the submission: taken
//! from each destination's receipt queue, checked against where the submission actually
//! went, recorded, and turned into a status event on the origin platform's broker. And the
//! watch for submissions that get no answer in time.
//!
//! A back office can answer only what was delivered to it: a receipt for another
//! authority's submission is refused exactly like one for an unknown id, so that it learns
//! nothing (it gets no reply either way); operators see the difference in the dead letter.
//!
//! Architecture invariant: a receipt leaves its queue in exactly one of three ways: its
//! answer recorded and the status event confirmed (then acked), refused into the dead-letter
//! exchange with a reason (confirmed, then acked), or left on the queue (nacked) when the
//! store or a broker does not answer. Receipts of one queue are processed one at a time, so
//! two answers for one submission cannot race. While the store's health says it does not
//! answer, no receipt is taken.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::amqp::Role;
use crate::amqp::link::Link;
use crate::config::ReceiptSettings;
use crate::envelope::{self, Encoding};
use crate::model::BrokerIndex;
use crate::outcome::{Reason, Rejection};
use crate::pipeline::settle::{self, Disposition, SETTLE_TIMEOUT};
use crate::pipeline::{Pipeline, now_timestamp};
use crate::store::{Answer, Fate, Store, StoreError, TraceEvent};
use crate::wire::v1 as wire;

const PREFETCH: u16 = 32;
/// Overdue submissions reported per check at most; the next check takes the rest.
const OVERDUE_BATCH: u32 = 500;

/// How long an instance's claim on overdue submissions keeps the others off them: far
/// longer than publishing one batch of status events takes, short enough that a platform
/// hears about them soon when the claiming instance died meanwhile.
const OVERDUE_CLAIM_LEASE: Duration = Duration::from_secs(5 * 60);

/// Why a receipt was not processed now.
#[derive(Debug, thiserror::Error)]
enum ReceiptError {
    /// The back office may answer before the gateway's record of the delivery is
    /// committed (milliseconds after the confirm): a first unknown is given one more try.
    #[error("receipt for {0} came before the delivery was recorded, or is unknown")]
    NotYetRecorded(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("broker: {0}")]
    Broker(#[from] crate::amqp::DeliveryError),
}

/// Keeps one receipt consumer per destination that names a receipt queue, following the
/// directory as operators change it: a destination added through the admin API starts
/// taking receipts at once, one deleted or moved stops (its current receipt finishes
/// first). Each broker gets a consuming connection of its own for receipts. Until `stop`.
pub async fn supervise(gateway: Arc<Pipeline>, store: Store, stop: CancellationToken) {
    struct Running {
        broker: BrokerIndex,
        queue: String,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }
    let mut changes = gateway.watch_directory();
    let mut links: HashMap<BrokerIndex, Arc<Link>> = HashMap::new();
    let mut running: HashMap<String, Running> = HashMap::new();
    loop {
        let snapshot = gateway.snapshot();
        let wanted: HashMap<&str, (BrokerIndex, &str)> = snapshot
            .destinations
            .iter()
            .filter_map(|d| {
                let queue = d.receipt_queue.as_deref()?;
                Some((d.id.as_str(), (d.broker, queue)))
            })
            .collect();
        running.retain(|id, r| {
            let keep = wanted.get(id.as_str()) == Some(&(r.broker, r.queue.as_str()));
            if !keep {
                r.stop.cancel();
            }
            keep
        });
        for (id, (broker, queue)) in wanted {
            if running.contains_key(id) {
                continue;
            }
            let link = links
                .entry(broker)
                .or_insert_with(|| {
                    let config = gateway.config();
                    Link::start(config.broker(broker).clone(), Role::Consume, stop.clone())
                })
                .clone();
            let own_stop = stop.child_token();
            let task = tokio::spawn(consume(
                gateway.clone(),
                store.clone(),
                link,
                id.to_owned(),
                queue.to_owned(),
                own_stop.clone(),
            ));
            running.insert(
                id.to_owned(),
                Running {
                    broker,
                    queue: queue.to_owned(),
                    stop: own_stop,
                    task,
                },
            );
        }
        tokio::select! {
            () = stop.cancelled() => break,
            changed = changes.changed() => if changed.is_err() { break },
        }
    }
    for (_, r) in running {
        r.stop.cancel();
        let _ = r.task.await;
    }
    for link in links.values() {
        let _ = tokio::time::timeout(SETTLE_TIMEOUT, link.close()).await;
    }
}

/// Consumes one destination's receipt queue until `stop`, resubscribing after losses.
pub async fn consume(
    gateway: Arc<Pipeline>,
    store: Store,
    link: Arc<Link>,
    destination: String,
    queue: String,
    stop: CancellationToken,
) {
    let tag = format!("ozg-gateway receipts {destination}");
    // The back office's queue: checked, never invented (like a platform's ingress).
    let check = |channel: lapin::Channel| {
        let queue = queue.clone();
        async move {
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map(|_| ())
        }
    };
    let take = |consumer| take_receipts(consumer, &gateway, &store, &destination, &stop);
    link.keep_consuming(&queue, &tag, PREFETCH, &stop, check, take)
        .await;
}

/// Processes receipts one at a time until `stop` (`None`) or the consumer ends (why).
async fn take_receipts(
    mut consumer: lapin::Consumer,
    gateway: &Pipeline,
    store: &Store,
    destination: &str,
    stop: &CancellationToken,
) -> Option<String> {
    loop {
        let next = tokio::select! {
            biased;
            () = stop.cancelled() => return None,
            // A receipt needs the delivery record, to read and then to update: while the
            // store does not answer, receipts wait on their queue like submissions.
            next = async {
                gateway.store_health().wait_up().await;
                consumer.next().await
            } => next,
        };
        match next {
            Some(Ok(delivery)) => {
                let settle = handle(gateway, store, destination, &delivery).await;
                finish(gateway, destination, &delivery, settle).await;
            }
            Some(Err(e)) => return Some(e.to_string()),
            None => return Some("the broker cancelled the consumer".to_owned()),
        }
    }
}

async fn finish(
    gateway: &Pipeline,
    destination: &str,
    delivery: &Delivery,
    settle: Result<(), ReceiptError>,
) {
    let disposition = match settle {
        Ok(()) => Disposition::Ack,
        Err(why) => {
            gateway.metrics().receipt(destination, "requeued", "");
            tracing::warn!(error = %why, "receipt left on its queue for another try");
            Disposition::Requeue
        }
    };
    if let Err(e) = settle::one(delivery, disposition).await {
        tracing::warn!(error = %e, ?disposition,
            "receipt not settled; the broker redelivers it when the channel closes");
    }
}

/// The answer a receipt gives, as stored and as the status word.
fn answer_of(kind: wire::ReceiptKind) -> Option<(&'static str, wire::Status)> {
    match kind {
        wire::ReceiptKind::Accepted => Some(("accepted", wire::Status::Accepted)),
        wire::ReceiptKind::Rejected => Some(("rejected", wire::Status::Rejected)),
        wire::ReceiptKind::ForwardedOnward => {
            Some(("forwarded-onward", wire::Status::ForwardedOnward))
        }
        wire::ReceiptKind::Unspecified => None,
    }
}

/// Decodes and checks a receipt on its own, before anything is looked up.
fn read(
    delivery: &Delivery,
) -> Result<(wire::Receipt, Uuid, &'static str, wire::Status), Rejection> {
    let invalid = |field: Option<&str>, detail: String| Rejection {
        reason: Reason::ReceiptInvalid,
        field: field.map(str::to_owned),
        detail,
    };
    let content_type = delivery.properties.content_type();
    let encoding = Encoding::from_content_type(content_type.as_ref().map(|c| c.as_str()))
        .map_err(|e| invalid(None, e.to_string()))?;
    let receipt: wire::Receipt = envelope::decode_message(encoding, &delivery.data)
        .map_err(|e| invalid(e.field().as_deref(), e.to_string()))?;
    let id = Uuid::parse_str(receipt.submission_id.trim()).map_err(|_| {
        invalid(
            Some("submission_id"),
            "submission_id: is not a UUID".to_owned(),
        )
    })?;
    let kind = wire::ReceiptKind::try_from(receipt.kind).unwrap_or(wire::ReceiptKind::Unspecified);
    let (answer, status) = answer_of(kind).ok_or_else(|| {
        invalid(
            Some("kind"),
            "kind: must be ACCEPTED, REJECTED or FORWARDED_ONWARD".to_owned(),
        )
    })?;
    if kind == wire::ReceiptKind::Rejected && receipt.problems.is_empty() {
        return Err(invalid(
            Some("problems"),
            "problems: a rejection must say why (at least one problem)".to_owned(),
        ));
    }
    Ok((receipt, id, answer, status))
}

/// Tells a repeated receipt (same answer) from a different one.
fn digest(answer: &str, receipt: &wire::Receipt) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(answer.as_bytes());
    for p in &receipt.problems {
        hash.update(prost::Message::encode_to_vec(p));
    }
    hash.update(receipt.note.as_bytes());
    hash.finalize().into()
}

/// The same event id for the same transition, so that a platform recognises an event sent
/// twice (the gateway stopped between the event's confirm and recording the answer).
fn event_id(submission: Uuid, answer: &str) -> Uuid {
    let hash = Sha256::digest(format!("{submission}:{answer}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

async fn handle(
    gateway: &Pipeline,
    store: &Store,
    destination: &str,
    delivery: &Delivery,
) -> Result<(), ReceiptError> {
    let refused = async |rejection: Rejection, submission: &str, fate: Option<Fate>| {
        refuse(
            gateway,
            delivery,
            &rejection,
            submission,
            destination,
            fate.as_ref(),
        )
        .await
    };
    let (receipt, id, answer, status) = match read(delivery) {
        Ok(read) => read,
        Err(rejection) => {
            let submission = delivery
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            return refused(rejection, &submission, None).await;
        }
    };
    let submission = id.to_string();
    let fate = store.fate(id).await?;
    let digest = digest(answer, &receipt);
    let fate = match judge(
        fate,
        delivery.redelivered,
        answer,
        &digest,
        (&submission, destination),
    ) {
        Judged::NotYetRecorded => return Err(ReceiptError::NotYetRecorded(submission)),
        Judged::Refused(rejection, fate) => return refused(rejection, &submission, fate).await,
        Judged::Repeated => {
            gateway.metrics().receipt(destination, "repeated", "");
            tracing::info!(submission_id = %submission, destination = %destination, answer,
                "receipt repeated; the platform was told already");
            return Ok(());
        }
        Judged::New(fate) => fate,
    };
    carry(
        gateway,
        store,
        destination,
        delivery,
        (receipt, id, answer, status),
        fate,
    )
    .await
}

/// What a receipt's answer means against the submission's delivery record.
enum Judged {
    /// No record yet, on a first delivery of the receipt: one more try.
    NotYetRecorded,
    /// Refused, with the record when there is one (for the submission's trace).
    Refused(Rejection, Option<Fate>),
    /// The same answer as before: the platform was told already.
    Repeated,
    /// A new, legal answer.
    New(Fate),
}

/// A back office can answer only what was delivered to it, once per answer, and only in
/// a legal order. The back office may answer before the gateway's record of the delivery
/// is committed (milliseconds after the confirm): a first unknown is given one more try.
fn judge(
    fate: Option<Fate>,
    redelivered: bool,
    answer: &str,
    digest: &[u8; 32],
    (submission, destination): (&str, &str),
) -> Judged {
    let fate = match fate {
        None if !redelivered => return Judged::NotYetRecorded,
        None => {
            let rejection =
                not_delivered_here(Reason::ReceiptUnknownSubmission, submission, destination);
            return Judged::Refused(rejection, None);
        }
        Some(f) if f.destination != destination => {
            let rejection =
                not_delivered_here(Reason::ReceiptWrongDestination, submission, destination);
            return Judged::Refused(rejection, Some(f));
        }
        Some(f) => f,
    };
    if fate.answer.as_deref() == Some(answer) && fate.answer_digest.as_deref() == Some(&digest[..])
    {
        return Judged::Repeated;
    }
    let allowed = match fate.answer.as_deref() {
        None => true,
        // An authority that passed the submission on may still report the final answer.
        Some("forwarded-onward") => answer != "forwarded-onward",
        Some(_) => false,
    };
    if allowed {
        return Judged::New(fate);
    }
    let rejection = Rejection {
        reason: Reason::ReceiptIllegalTransition,
        field: Some("kind".to_owned()),
        detail: format!(
            "submission {submission} was answered {} before; {answer} now contradicts it",
            fate.answer.as_deref().unwrap_or("")
        ),
    };
    Judged::Refused(rejection, Some(fate))
}

/// Tells the platform a receipt's answer and records it. Told first, recorded second:
/// should the gateway stop in between, the receipt comes again and the platform gets the
/// event twice, with the same event id, rather than never.
async fn carry(
    gateway: &Pipeline,
    store: &Store,
    destination: &str,
    delivery: &Delivery,
    (receipt, id, answer, status): (wire::Receipt, Uuid, &'static str, wire::Status),
    fate: Fate,
) -> Result<(), ReceiptError> {
    let submission = id.to_string();
    let digest = digest(answer, &receipt);
    let snapshot = gateway.snapshot();
    let event = wire::StatusEvent {
        event_id: event_id(id, answer).to_string(),
        submission_id: submission.clone(),
        status: status as i32,
        destination_id: destination.to_owned(),
        destination_name: snapshot
            .destination(destination)
            .map(|d| d.name.clone())
            .unwrap_or_default(),
        time: Some(now_timestamp()),
        problem: receipt.problems.first().cloned(),
        platform_id: fate.platform.clone(),
        case_id: String::new(),
        problems: receipt.problems.clone(),
        note: receipt.note.clone(),
    };
    gateway
        .publish_status(delivery.properties.headers().as_ref(), &event)
        .await?;
    let recorded = store
        .record_answer(&Answer {
            submission_id: id,
            destination: destination.to_owned(),
            answer: answer.to_owned(),
            digest,
        })
        .await?;
    if !recorded {
        tracing::warn!(submission_id = %submission, destination = %destination,
            "answer not recorded: the submission's record changed meanwhile");
    }
    gateway.metrics().receipt(destination, answer, "");
    tracing::info!(submission_id = %submission, platform = %fate.platform,
        destination = %destination, answer, "receipt carried to the platform");
    gateway
        .activity()
        .trace(TraceEvent {
            submission_id: submission,
            at: SystemTime::now(),
            event: answer.to_owned(),
            platform: fate.platform,
            destination: destination.to_owned(),
            detail: receipt
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.title, p.detail))
                .chain((!receipt.note.is_empty()).then(|| receipt.note.clone()))
                .collect::<Vec<_>>()
                .join("; "),
        })
        .await;
    Ok(())
}

/// An unknown id and another authority's submission get the same words, so a back office
/// learns nothing from them; the reason code tells operators which it was.
fn not_delivered_here(reason: Reason, submission: &str, destination: &str) -> Rejection {
    Rejection {
        reason,
        field: Some("submission_id".to_owned()),
        detail: format!("no submission {submission} was delivered to {destination}"),
    }
}

/// Dead-letters a refused receipt for operators (nothing goes back to the back office)
/// and notes it in the submission's trace when the submission is known.
async fn refuse(
    gateway: &Pipeline,
    delivery: &Delivery,
    rejection: &Rejection,
    submission: &str,
    destination: &str,
    fate: Option<&Fate>,
) -> Result<(), ReceiptError> {
    gateway
        .dead_letter_receipt(delivery, rejection, submission, destination)
        .await?;
    gateway
        .metrics()
        .receipt(destination, "refused", rejection.reason.code());
    tracing::warn!(submission_id = %submission, destination = %destination,
        reason = rejection.reason.code(), detail = %rejection.detail, "receipt refused");
    if let Some(fate) = fate {
        gateway
            .activity()
            .trace(TraceEvent {
                submission_id: submission.to_owned(),
                at: SystemTime::now(),
                event: "receipt-refused".to_owned(),
                platform: fate.platform.clone(),
                destination: destination.to_owned(),
                detail: format!("{}: {}", rejection.reason.code(), rejection.detail),
            })
            .await;
    }
    Ok(())
}

/// Every `check_interval`, tells platforms about delivered submissions that got no answer
/// within `overdue_after` (once each), until `stop`.
pub async fn report_overdue(
    gateway: Arc<Pipeline>,
    store: Store,
    settings: ReceiptSettings,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(settings.check_interval) => {}
        }
        if let Err(e) = report_once(&gateway, &store, settings.overdue_after).await {
            tracing::warn!(error = %e, "cannot check for overdue submissions");
        }
    }
}

/// One round of [`report_overdue`]; returns how many were reported.
async fn report_once(
    gateway: &Pipeline,
    store: &Store,
    overdue_after: Duration,
) -> Result<usize, StoreError> {
    let cutoff = SystemTime::now()
        .checked_sub(overdue_after)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    // Claimed, not just listed: instances sharing the store each report their own share,
    // so that a platform hears "overdue" once per submission.
    let overdue = store
        .claim_overdue(cutoff, OVERDUE_CLAIM_LEASE, OVERDUE_BATCH)
        .await?;
    let mut reported = Vec::with_capacity(overdue.len());
    let mut unsent = Vec::new();
    for fate in &overdue {
        let submission = fate.submission_id.to_string();
        let waited = humantime::format_duration(Duration::from_secs(
            SystemTime::now()
                .duration_since(fate.delivered_at)
                .unwrap_or_default()
                .as_secs(),
        ));
        let event = wire::StatusEvent {
            event_id: event_id(fate.submission_id, "overdue").to_string(),
            submission_id: submission.clone(),
            status: wire::Status::Overdue as i32,
            destination_id: fate.destination.clone(),
            destination_name: gateway
                .snapshot()
                .destination(&fate.destination)
                .map(|d| d.name.clone())
                .unwrap_or_default(),
            time: Some(now_timestamp()),
            platform_id: fate.platform.clone(),
            note: format!("no answer from {} after {waited}", fate.destination),
            ..wire::StatusEvent::default()
        };
        match gateway.publish_status(None, &event).await {
            Ok(()) => {
                reported.push(fate.submission_id);
                gateway.metrics().overdue(&fate.platform, &fate.destination);
                gateway
                    .activity()
                    .trace(TraceEvent {
                        submission_id: submission,
                        at: SystemTime::now(),
                        event: "overdue".to_owned(),
                        platform: fate.platform.clone(),
                        destination: fate.destination.clone(),
                        detail: event.note.clone(),
                    })
                    .await;
            }
            // Reported at the next check.
            Err(e) => {
                unsent.push(fate.submission_id);
                tracing::warn!(submission_id = %submission, error = %e,
                    "overdue event not delivered to the platform");
            }
        }
    }
    store.mark_overdue_reported(&reported).await?;
    store.release_overdue_claims(&unsent).await?;
    if !reported.is_empty() {
        tracing::warn!(
            n = reported.len(),
            "submissions overdue: no answer from their back office"
        );
    }
    Ok(reported.len())
}
