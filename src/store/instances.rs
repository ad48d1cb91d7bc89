//! The gateway instances sharing this store: each writes a heartbeat row with its counters,
//! so that any instance's admin API shows all of them, and one that stopped beating (killed,
//! host lost) shows as gone.

use std::time::SystemTime;

use sqlx::Row;

use super::{Backend, Store, StoreError, from_micros, postgres, sqlite, to_micros};

/// One instance as its last heartbeat left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Random per process start: a restarted instance is a new one.
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub started_at: SystemTime,
    pub seen_at: SystemTime,
    pub directory_version: i64,
    /// Counters since the instance started, over all its platforms.
    pub consumed: u64,
    pub forwarded: u64,
    pub rejected: u64,
    pub in_flight: u64,
}

/// A counter as the int8 columns keep it.
pub(super) fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A row of `gateway_instances`, in the order of its columns.
pub(super) fn instance<R>(row: &R) -> Result<Instance, StoreError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    const OP: &str = "list instances";
    let number =
        |i: usize| -> Result<i64, StoreError> { row.try_get(i).map_err(StoreError::query(OP)) };
    let unsigned = |i: usize| -> Result<u64, StoreError> {
        let n = number(i)?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt {
            detail: format!("gateway_instances: column {i} holds {n}"),
        })
    };
    Ok(Instance {
        id: row.try_get(0).map_err(StoreError::query(OP))?,
        host: row.try_get(1).map_err(StoreError::query(OP))?,
        pid: u32::try_from(unsigned(2)?).unwrap_or(u32::MAX),
        version: row.try_get(3).map_err(StoreError::query(OP))?,
        started_at: from_micros(number(4)?),
        seen_at: from_micros(number(5)?),
        directory_version: number(6)?,
        consumed: unsigned(7)?,
        forwarded: unsigned(8)?,
        rejected: unsigned(9)?,
        in_flight: unsigned(10)?,
    })
}

impl Store {
    /// Writes `instance`'s heartbeat: its row is created on the first, and its time seen
    /// and counters replaced on every later one.
    pub async fn heartbeat(&self, instance: &Instance) -> Result<(), StoreError> {
        on_backend!(self, heartbeat(instance))
    }

    /// The instances seen since `since`, longest-running first.
    pub async fn instances(&self, since: SystemTime) -> Result<Vec<Instance>, StoreError> {
        on_backend!(self, instances(to_micros(since)))
    }

    /// Forgets instances not seen since `older_than`.
    pub async fn purge_instances(&self, older_than: SystemTime) -> Result<u64, StoreError> {
        on_backend!(self, purge_instances(to_micros(older_than)))
    }
}
