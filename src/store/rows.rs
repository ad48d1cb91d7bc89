//! Reading the rows of either backend: both select times as microseconds (int8), UUIDs
//! as text and counts as int8, so that one reader, [`Columns`], serves both.

use std::time::SystemTime;

use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

use super::admin::{AuditEntry, DeadLetter, DeadLetterMessage, TraceEvent, UnknownDeadLetterState};
use super::{StoreError, from_micros};
use crate::model::{DestinationSpec, RouteSpec, ServiceSpec};

/// Reads one row's columns in order. Both backends select times as microseconds (int8),
/// UUIDs as text and counts as int8, so that one reader serves either.
pub(super) struct Columns<'r, R> {
    row: &'r R,
    next: usize,
    operation: &'static str,
}

impl<'r, R> Columns<'r, R>
where
    R: Row,
    usize: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    pub(super) fn new(row: &'r R, operation: &'static str) -> Self {
        Columns {
            row,
            next: 0,
            operation,
        }
    }

    fn get<T: Decode<'r, R::Database> + Type<R::Database>>(&mut self) -> Result<T, StoreError> {
        let value = self
            .row
            .try_get(self.next)
            .map_err(StoreError::query(self.operation));
        self.next += 1;
        value
    }

    fn text(&mut self) -> Result<String, StoreError> {
        self.get()
    }

    fn time(&mut self) -> Result<SystemTime, StoreError> {
        self.get::<i64>().map(from_micros)
    }

    fn number<T: TryFrom<i64>>(&mut self, what: &str) -> Result<T, StoreError> {
        let value: i64 = self.get()?;
        T::try_from(value).map_err(|_| StoreError::Corrupt {
            detail: format!("{what} {value} out of range"),
        })
    }

    pub(super) fn int(mut self) -> Result<i64, StoreError> {
        self.get()
    }

    pub(super) fn destination(mut self) -> Result<DestinationSpec, StoreError> {
        Ok(DestinationSpec {
            id: self.text()?,
            name: self.text()?,
            kind: self.text()?,
            land: self.text()?,
            broker: self.text()?,
            exchange: self.text()?,
            routing_key: self.text()?,
            receipt_queue: self.text()?,
        })
    }

    pub(super) fn route(mut self) -> Result<RouteSpec, StoreError> {
        Ok(RouteSpec {
            service: self.text()?,
            region: self.text()?,
            destination: self.text()?,
        })
    }

    pub(super) fn service(mut self) -> Result<ServiceSpec, StoreError> {
        Ok(ServiceSpec {
            key: self.text()?,
            name: self.text()?,
        })
    }

    /// `id, at, actor, actor_scope, action, object, before_json, after_json`.
    pub(super) fn audit_entry(mut self) -> Result<AuditEntry, StoreError> {
        Ok(AuditEntry {
            id: self.get()?,
            at: self.time()?,
            actor: self.text()?,
            actor_scope: self.text()?,
            action: self.text()?,
            object: self.text()?,
            before: self.get()?,
            after: self.get()?,
        })
    }

    /// The columns in the order of the table (see the migration), body left out.
    pub(super) fn dead_letter(mut self) -> Result<DeadLetter, StoreError> {
        let id: String = self.text()?;
        let id = Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt {
            detail: format!("dead letter id {id:?}: {e}"),
        })?;
        Ok(DeadLetter {
            id,
            submission_id: self.text()?,
            platform: self.text()?,
            reason: self.text()?,
            field: self.text()?,
            detail: self.text()?,
            service: self.text()?,
            ars: self.text()?,
            destination: self.text()?,
            dead_lettered_at: self.time()?,
            content_type: self.text()?,
            message_id: self.text()?,
            headers: self.text()?,
            body_bytes: self.number("body_bytes")?,
            stored_at: self.time()?,
            state: {
                let state = self.text()?;
                state
                    .parse()
                    .map_err(|e: UnknownDeadLetterState| StoreError::Corrupt {
                        detail: format!("dead letter {id}: {e}"),
                    })?
            },
            state_changed_at: self.get::<Option<i64>>()?.map(from_micros),
            state_changed_by: self.text()?,
            replays: self.number("replays")?,
        })
    }

    /// `key, count(*)` of a grouped count.
    pub(super) fn group_count(mut self) -> Result<(String, u64), StoreError> {
        Ok((self.text()?, self.number("count")?))
    }

    /// `body, content_type, message_id, headers, platform`.
    pub(super) fn dead_letter_message(mut self) -> Result<DeadLetterMessage, StoreError> {
        Ok(DeadLetterMessage {
            body: self.get()?,
            content_type: self.text()?,
            message_id: self.text()?,
            headers: self.text()?,
            platform: self.text()?,
        })
    }

    /// `submission_id, at, event, platform, destination, detail`.
    pub(super) fn trace_event(mut self) -> Result<TraceEvent, StoreError> {
        Ok(TraceEvent {
            submission_id: self.text()?,
            at: self.time()?,
            event: self.text()?,
            platform: self.text()?,
            destination: self.text()?,
            detail: self.text()?,
        })
    }
}

/// Decodes every row with `read`, e.g. `Columns::route`.
pub(super) fn read_all<'r, R, T>(
    rows: &'r [R],
    operation: &'static str,
    read: fn(Columns<'r, R>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    rows.iter()
        .map(|row| read(Columns::new(row, operation)))
        .collect()
}
