//! The AMQP headers the gateway sets, and how it builds and trims header tables.

use std::time::SystemTime;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};

use crate::amqp;
use crate::telemetry;

/// Header names the gateway sets. Back offices and operators may rely on these names.
pub const ORIGIN_PLATFORM: &str = "x-ozg-origin-platform";
pub const ORIGIN_LAND: &str = "x-ozg-origin-land";
pub const SERVICE_KEY: &str = "x-ozg-service-key";
pub const ARS: &str = "x-ozg-ars";
pub const DESTINATION: &str = "x-ozg-destination";
pub const SUBMISSION_ID: &str = "x-ozg-submission-id";
pub const REASON: &str = "x-ozg-reason";
pub const DETAIL: &str = "x-ozg-detail";
pub const FIELD: &str = "x-ozg-field";
pub const SOURCE_QUEUE: &str = "x-ozg-source-queue";
pub const DEAD_LETTERED_AT: &str = "x-ozg-dead-lettered-at";
pub const STATUS: &str = "x-ozg-status";
/// On retries: failed delivery attempts so far, the first failure, the last error.
pub const ATTEMPTS_FAILED: &str = "x-ozg-attempts-failed";
pub const FIRST_FAILURE_AT: &str = "x-ozg-first-failure-at";
pub const LAST_ERROR: &str = "x-ozg-last-error";
/// On replays: the dead letter replayed, and the destination an operator named.
pub const REPLAY_OF: &str = "x-ozg-replay-of";
pub const REPLAY_DESTINATION: &str = "x-ozg-replay-destination";
/// The id the dead letter keeps in the store; a redelivery of it is stored once.
pub const DEAD_LETTER_ID: &str = "x-ozg-dead-letter-id";
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Gives `headers` the submission's trace when the platform sent none (or an invalid one),
/// so that a retry continues it and a dead letter shows it.
pub(super) fn carry_trace(headers: &mut FieldTable, trace: &FieldTable) {
    if telemetry::has_trace(headers) {
        return;
    }
    drop_headers(headers, &[TRACEPARENT, TRACESTATE]);
    for (name, value) in trace.inner() {
        headers.insert(name.clone(), value.clone());
    }
}

/// The headers the gateway keeps when a message's own headers would not fit the frame size
/// of the broker it goes to: its own, and the trace context.
pub(super) fn own_header(name: &str) -> bool {
    name.starts_with("x-ozg-") || name == TRACEPARENT
}

/// `properties` fitted to `frame_max`, keeping only [`own_header`]s if need be.
pub(super) fn fitted(properties: &BasicProperties, frame_max: u32) -> BasicProperties {
    amqp::fit(properties, frame_max, own_header).0
}

/// Headers the broker adds when it dead-letters (the delay queues do): dropped before the
/// gateway republishes, so that they do not pile up over many retries.
pub(super) fn strip_broker_headers(headers: &mut FieldTable) {
    let mut kept = FieldTable::default();
    for (key, value) in headers.inner() {
        let k = key.as_str();
        if k != "x-death" && !k.starts_with("x-first-death") && !k.starts_with("x-last-death") {
            kept.insert(key.clone(), value.clone());
        }
    }
    *headers = kept;
}

pub(super) fn drop_headers(headers: &mut FieldTable, names: &[&str]) {
    let mut kept = FieldTable::default();
    for (key, value) in headers.inner() {
        if !names.contains(&key.as_str()) {
            kept.insert(key.clone(), value.clone());
        }
    }
    *headers = kept;
}

pub(super) fn header_timestamp(headers: Option<&FieldTable>, name: &str) -> Option<u64> {
    match headers?.inner().get(name)? {
        AMQPValue::Timestamp(t) => Some(*t),
        _ => None,
    }
}

pub(super) fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn now_timestamp() -> pbjson_types::Timestamp {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(now.subsec_nanos()).unwrap_or(0),
    }
}
