//! Takes the gateway's dead-letter queue into the store, where operators list, read,
//! replay and discard dead letters through the admin API without touching the queue (a
//! broker queue can only be browsed by taking messages off it, which reorders it).
//!
//! Architecture invariant: a dead letter is acked off the queue only after the store has
//! committed it (to the SQLite file the next start opens). A store that fails leaves the
//! batch unacked: it is held and written again after a pause that grows while the store
//! keeps failing (no spin, no redelivery of the same bodies), and handed back to the queue
//! when the gateway stops first. The prefetch bounds what is held.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::amqp::link::Link;
use crate::amqp::{OwnedTopology, header_text, value_text};
use crate::pipeline::headers;
use crate::pipeline::settle;
use crate::store::{DeadLetterRecord, NewDeadLetter, Store};

/// Dead letters written to the store in one statement at most.
const BATCH: usize = 128;
/// How long a batch waits for more dead letters to share the statement.
const BATCH_DELAY: Duration = Duration::from_millis(50);
const PREFETCH: u16 = 256;
/// Pause before writing a batch again after the store failed; it doubles with every
/// further failure up to [`MAX_STORE_RETRY_DELAY`].
const STORE_RETRY_DELAY: Duration = Duration::from_millis(200);
const MAX_STORE_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Consumes `queue` on the gateway's broker until `stop`, resubscribing after losses.
pub async fn take_into_store(
    link: Arc<Link>,
    topology: OwnedTopology,
    queue: String,
    store: Store,
    stop: CancellationToken,
) {
    link.keep_consuming(
        &queue,
        "ozg-gateway dead-letter intake",
        PREFETCH,
        &stop,
        |channel| {
            let topology = topology.clone();
            async move { topology.declare(&channel).await }
        },
        |consumer| intake(consumer, &store, &stop),
    )
    .await;
}

/// Returns `None` when told to stop, or why the consumer ended.
async fn intake(
    mut consumer: lapin::Consumer,
    store: &Store,
    stop: &CancellationToken,
) -> Option<String> {
    loop {
        let first = tokio::select! {
            biased;
            () = stop.cancelled() => return None,
            next = consumer.next() => next,
        };
        let mut batch = match first {
            Some(Ok(delivery)) => vec![delivery],
            Some(Err(e)) => return Some(e.to_string()),
            None => return Some("the broker cancelled the consumer".to_owned()),
        };
        let deadline = tokio::time::Instant::now() + BATCH_DELAY;
        let mut ended = None;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Err(_) => break,
                Ok(Some(Ok(delivery))) => batch.push(delivery),
                Ok(Some(Err(e))) => {
                    ended = Some(e.to_string());
                    break;
                }
                Ok(None) => {
                    ended = Some("the broker cancelled the consumer".to_owned());
                    break;
                }
            }
        }
        let letters: Vec<NewDeadLetter> = batch.iter().map(to_new_dead_letter).collect();
        if !store_held(store, &letters, stop).await {
            // Stopping: back to the queue now rather than when the channel closes.
            for delivery in &batch {
                if let Err(e) = settle::requeue_now(&delivery.acker).await {
                    tracing::debug!(error = %e, "dead letter not handed back; the channel's close does");
                }
            }
            return None;
        }
        tracing::debug!(n = batch.len(), "dead letters stored");
        // One ack for the batch: every earlier delivery on this channel is in it or already
        // settled. A lost ack redelivers the letters; their ids make the second insert a
        // no-op.
        if let Some(last) = batch.last()
            && let Err(e) = settle::ack(&last.acker, true).await
        {
            tracing::warn!(error = %e, n = batch.len(),
                "dead letters stored but not acked; the broker redelivers them and the store keeps one of each");
        }
        if ended.is_some() {
            return ended;
        }
    }
}

/// Writes `letters` until the store takes them (true) or `stop` fires first (false).
async fn store_held(store: &Store, letters: &[NewDeadLetter], stop: &CancellationToken) -> bool {
    let mut failures = 0u32;
    loop {
        match store.insert_dead_letters(letters).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(n = letters.len(), failures, "dead letters stored again");
                }
                return true;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::error!(error = %e, n = letters.len(),
                        "cannot store dead letters; holding them unacked and trying again");
                } else {
                    tracing::debug!(error = %e, n = letters.len(), failures,
                        "dead letters still not stored");
                }
                let pause = STORE_RETRY_DELAY
                    .saturating_mul(1 << (failures - 1).min(16))
                    .min(MAX_STORE_RETRY_DELAY);
                tokio::select! {
                    () = stop.cancelled() => return false,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// The store's row for a dead-lettered message: the gateway's headers say why, the body
/// is kept as it came (for replay).
fn to_new_dead_letter(delivery: &Delivery) -> NewDeadLetter {
    let h = delivery.properties.headers().as_ref();
    let text = |name: &str| header_text(h, name).unwrap_or_default();
    // The gateway names every dead letter it publishes; one published by someone else gets
    // an id here (a redelivery of it would then be stored twice, which is visible, not lost).
    let id = header_text(h, headers::DEAD_LETTER_ID)
        .and_then(|id| Uuid::parse_str(&id).ok())
        .unwrap_or_else(Uuid::new_v4);
    let dead_lettered_at = match h.and_then(|h| h.inner().get(headers::DEAD_LETTERED_AT)) {
        Some(AMQPValue::Timestamp(t)) => SystemTime::UNIX_EPOCH + Duration::from_secs(*t),
        _ => SystemTime::now(),
    };
    NewDeadLetter {
        record: DeadLetterRecord {
            id,
            submission_id: text(headers::SUBMISSION_ID),
            platform: text(headers::ORIGIN_PLATFORM),
            reason: text(headers::REASON),
            field: text(headers::FIELD),
            detail: text(headers::DETAIL),
            service: text(headers::SERVICE_KEY),
            ars: text(headers::ARS),
            destination: text(headers::DESTINATION),
            dead_lettered_at,
            content_type: delivery
                .properties
                .content_type()
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default(),
            message_id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
            headers: headers_json(h),
        },
        body: delivery.data.clone(),
    }
}

/// Text-valued headers as a JSON object; other values (numbers, timestamps, tables) are
/// the broker's or the gateway's bookkeeping and are left out.
fn headers_json(headers: Option<&FieldTable>) -> String {
    let mut map = serde_json::Map::new();
    if let Some(headers) = headers {
        for (name, value) in headers.inner() {
            if let Some(text) = value_text(value) {
                map.insert(name.to_string(), serde_json::Value::String(text));
            }
        }
    }
    serde_json::Value::Object(map).to_string()
}
