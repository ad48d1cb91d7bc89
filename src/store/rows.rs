//! Reading the rows of either backend: both select times as microseconds (int8), UUIDs
//! as text and counts as int8, so that one reader, [`Columns`], serves both.

use std::time::SystemTime;

use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

use super::admin::{
    AuditEntry, AuditRecord, DeadLetter, DeadLetterMessage, DeadLetterRecord, TraceEvent,
    UnknownDeadLetterState,
};
use super::{StoreError, from_micros};
use crate::model::{DestinationSpec, RouteSpec, ServiceSpec};

/// `Type { field, other: read, … }` filled from the next columns, one a field, in the
/// order the fields are written (the order of the SELECT): a field named alone is text,
/// `field: read` takes what `read` reads.
macro_rules! in_order {
    ($columns:ident, $type:ident { $($field:ident $(: $read:expr)?),* $(,)? }) => {
        $type { $($field: in_order!(@read $columns $(, $read)?)),* }
    };
    (@read $columns:ident) => {
        $columns.text()?
    };
    (@read $columns:ident, $read:expr) => {
        $read
    };
}

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

    /// Decodes every row with `read`, e.g. `Columns::route`.
    pub(super) fn read_all<T>(
        rows: &'r [R],
        operation: &'static str,
        read: fn(Columns<'r, R>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        rows.iter()
            .map(|row| read(Columns::new(row, operation)))
            .collect()
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
        Ok(in_order!(
            self,
            DestinationSpec {
                id,
                name,
                kind,
                land,
                broker,
                exchange,
                routing_key,
                receipt_queue
            }
        ))
    }

    pub(super) fn route(mut self) -> Result<RouteSpec, StoreError> {
        Ok(in_order!(
            self,
            RouteSpec {
                service,
                region,
                destination
            }
        ))
    }

    pub(super) fn service(mut self) -> Result<ServiceSpec, StoreError> {
        Ok(in_order!(self, ServiceSpec { key, name }))
    }

    /// `id, at, actor, actor_scope, action, object, before_json, after_json`.
    pub(super) fn audit_entry(mut self) -> Result<AuditEntry, StoreError> {
        Ok(in_order!(
            self,
            AuditEntry {
                id: self.get()?,
                at: self.time()?,
                record: in_order!(
                    self,
                    AuditRecord {
                        actor,
                        actor_scope,
                        action,
                        object,
                        before: self.get()?,
                        after: self.get()?,
                    }
                ),
            }
        ))
    }

    /// The columns in the order of the table (see the migration), body left out.
    pub(super) fn dead_letter(mut self) -> Result<DeadLetter, StoreError> {
        let id: String = self.text()?;
        let letter_id = Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt {
            detail: format!("dead letter id {id:?}: {e}"),
        })?;
        let state = |text: String| {
            text.parse()
                .map_err(|e: UnknownDeadLetterState| StoreError::Corrupt {
                    detail: format!("dead letter {letter_id}: {e}"),
                })
        };
        Ok(in_order!(
            self,
            DeadLetter {
                record: in_order!(
                    self,
                    DeadLetterRecord {
                        id: letter_id,
                        submission_id,
                        platform,
                        reason,
                        field,
                        detail,
                        service,
                        ars,
                        destination,
                        dead_lettered_at: self.time()?,
                        content_type,
                        message_id,
                        headers,
                    }
                ),
                body_bytes: self.number("body_bytes")?,
                stored_at: self.time()?,
                state: state(self.text()?)?,
                state_changed_at: self.get::<Option<i64>>()?.map(from_micros),
                state_changed_by,
                replays: self.number("replays")?,
            }
        ))
    }

    /// `key, count(*)` of a grouped count.
    pub(super) fn group_count(mut self) -> Result<(String, u64), StoreError> {
        Ok((self.text()?, self.number("count")?))
    }

    /// `body, content_type, message_id, headers, platform`.
    pub(super) fn dead_letter_message(mut self) -> Result<DeadLetterMessage, StoreError> {
        Ok(in_order!(
            self,
            DeadLetterMessage {
                body: self.get()?,
                content_type,
                message_id,
                headers,
                platform
            }
        ))
    }

    /// `submission_id, at, event, platform, destination, detail`.
    pub(super) fn trace_event(mut self) -> Result<TraceEvent, StoreError> {
        Ok(in_order!(
            self,
            TraceEvent {
                submission_id,
                at: self.time()?,
                event,
                platform,
                destination,
                detail
            }
        ))
    }
}
