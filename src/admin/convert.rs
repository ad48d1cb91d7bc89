//! Between the admin API's generated types and the gateway's own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::Status;

use crate::config::{Destination, DestinationSpec, RouteSpec};
use crate::live::{EntrySource, Problem};
use crate::store::{StoreError, StoredDestination, StoredRoute};
use crate::wire::admin as pb;

pub fn timestamp(time: SystemTime) -> pbjson_types::Timestamp {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

pub fn time(ts: Option<&pbjson_types::Timestamp>) -> Option<SystemTime> {
    let ts = ts?;
    let seconds = u64::try_from(ts.seconds).ok()?;
    let nanos = u32::try_from(ts.nanos).unwrap_or(0);
    UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

pub fn source(source: EntrySource) -> i32 {
    match source {
        EntrySource::Config => pb::Source::Config as i32,
        EntrySource::Store => pb::Source::Store as i32,
    }
}

pub fn destination(d: &Destination, broker: &str, source: EntrySource) -> pb::Destination {
    pb::Destination {
        id: d.id.clone(),
        name: d.name.clone(),
        kind: d.kind.as_str().to_owned(),
        land: d.land.to_string(),
        broker: broker.to_owned(),
        exchange: d.exchange.clone(),
        routing_key: d.routing_key.clone(),
        source: self::source(source),
        receipt_queue: d.receipt_queue.clone().unwrap_or_default(),
    }
}

pub fn destination_spec(d: &StoredDestination) -> DestinationSpec {
    DestinationSpec {
        id: d.id.clone(),
        name: d.name.clone(),
        kind: d.kind.clone(),
        land: d.land.clone(),
        broker: d.broker.clone(),
        exchange: d.exchange.clone(),
        routing_key: d.routing_key.clone(),
        receipt_queue: d.receipt_queue.clone(),
    }
}

pub fn destination_from_request(d: &pb::Destination) -> DestinationSpec {
    DestinationSpec {
        id: d.id.trim().to_owned(),
        name: d.name.trim().to_owned(),
        kind: d.kind.trim().to_owned(),
        land: d.land.trim().to_owned(),
        broker: d.broker.trim().to_owned(),
        exchange: d.exchange.clone(),
        routing_key: d.routing_key.clone(),
        receipt_queue: d.receipt_queue.trim().to_owned(),
    }
}

pub fn stored_destination(d: &DestinationSpec) -> StoredDestination {
    StoredDestination {
        id: d.id.clone(),
        name: d.name.clone(),
        kind: d.kind.clone(),
        land: d.land.clone(),
        broker: d.broker.clone(),
        exchange: d.exchange.clone(),
        routing_key: d.routing_key.clone(),
        receipt_queue: d.receipt_queue.clone(),
    }
}

pub fn route_spec(r: &StoredRoute) -> RouteSpec {
    RouteSpec {
        service: r.service.clone(),
        region: r.region.clone(),
        destination: r.destination.clone(),
    }
}

/// The problems reported under `key` (the entry of the request) as one INVALID_ARGUMENT:
/// the same messages the configuration file would get.
pub fn invalid(key: &str, problems: &[Problem]) -> Option<Status> {
    let prefix = format!("{key}.");
    let mine: Vec<String> = problems
        .iter()
        .filter(|(k, _)| k == key || k.starts_with(&prefix))
        .map(|(k, m)| format!("{k}: {m}"))
        .collect();
    if mine.is_empty() {
        None
    } else {
        Some(Status::invalid_argument(mine.join("; ")))
    }
}

/// A store failure for the client: NOT_FOUND as it is; otherwise the database's own text
/// goes to the log only (it can name tables, statements, even a value of the request).
/// UNAVAILABLE, which clients retry, only when the store cannot be reached; INTERNAL for
/// the rest, which a retry would not mend.
pub fn store_error(e: StoreError) -> Status {
    match e {
        StoreError::NotFound { what } => Status::not_found(what),
        other => {
            tracing::error!(error = %other, "admin API: store failed");
            if other.is_outage() {
                Status::unavailable(
                    "the store cannot be reached now; try again later (the gateway's log says why)",
                )
            } else {
                Status::internal("the store failed (the gateway's log says why)")
            }
        }
    }
}

pub fn json<T: serde::Serialize>(value: &T) -> Option<String> {
    serde_json::to_string(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn store_errors_reach_clients_without_the_databases_text() {
        let query = |source: sqlx::Error| StoreError::Query {
            operation: "list dead letters",
            source: Arc::new(source),
        };
        let cases = [
            (
                query(sqlx::Error::Protocol("connection reset by peer".into())),
                tonic::Code::Unavailable,
            ),
            (query(sqlx::Error::PoolTimedOut), tonic::Code::Unavailable),
            (
                query(sqlx::Error::ColumnNotFound("secret_column".into())),
                tonic::Code::Internal,
            ),
            (
                StoreError::Corrupt {
                    detail: "row 7: secret_column".into(),
                },
                tonic::Code::Internal,
            ),
            (
                StoreError::NotFound {
                    what: "destination he-x".into(),
                },
                tonic::Code::NotFound,
            ),
        ];
        for (error, code) in cases {
            let shown = error.to_string();
            let status = store_error(error);
            assert_eq!(status.code(), code, "{shown}");
            for word in ["secret_column", "connection reset", "list dead letters"] {
                assert!(!status.message().contains(word), "{shown}: {status:?}");
            }
        }
    }
}
