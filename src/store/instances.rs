//! The gateway instances sharing this store: each writes a heartbeat row with its counters,
//! so that any instance's admin API shows all of them, and one that stopped beating (killed,
//! host lost) shows as gone.

use std::time::SystemTime;

use sqlx::Row;

use super::{Backend, Store, StoreError, from_micros, to_micros};

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

const UPSERT_SQLITE: &str = "INSERT INTO gateway_instances \
     (id, host, pid, version, started_at, seen_at, directory_version, \
      consumed, forwarded, rejected, in_flight) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
     ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, \
         directory_version = excluded.directory_version, consumed = excluded.consumed, \
         forwarded = excluded.forwarded, rejected = excluded.rejected, \
         in_flight = excluded.in_flight";

const UPSERT_POSTGRES: &str = "INSERT INTO gateway_instances \
     (id, host, pid, version, started_at, seen_at, directory_version, \
      consumed, forwarded, rejected, in_flight) \
     VALUES ($1, $2, $3, $4, timestamptz 'epoch' + $5 * interval '1 microsecond', \
             timestamptz 'epoch' + $6 * interval '1 microsecond', $7, $8, $9, $10, $11) \
     ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, \
         directory_version = excluded.directory_version, consumed = excluded.consumed, \
         forwarded = excluded.forwarded, rejected = excluded.rejected, \
         in_flight = excluded.in_flight";

const SELECT_SQLITE: &str = "SELECT id, host, pid, version, started_at, seen_at, \
     directory_version, consumed, forwarded, rejected, in_flight \
     FROM gateway_instances WHERE seen_at >= ?1 ORDER BY started_at, id";

const SELECT_POSTGRES: &str = "SELECT id, host, pid, version, \
     (extract(epoch FROM started_at) * 1000000)::int8, \
     (extract(epoch FROM seen_at) * 1000000)::int8, \
     directory_version, consumed, forwarded, rejected, in_flight \
     FROM gateway_instances \
     WHERE seen_at >= timestamptz 'epoch' + $1 * interval '1 microsecond' \
     ORDER BY started_at, id";

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn instance<R>(row: &R) -> Result<Instance, StoreError>
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
        const OP: &str = "write heartbeat";
        let pid = i64::from(instance.pid);
        let started = to_micros(instance.started_at);
        let seen = to_micros(instance.seen_at);
        macro_rules! upsert {
            ($sql:expr, $pool:expr) => {
                sqlx::query($sql)
                    .bind(&instance.id)
                    .bind(&instance.host)
                    .bind(pid)
                    .bind(&instance.version)
                    .bind(started)
                    .bind(seen)
                    .bind(instance.directory_version)
                    .bind(count(instance.consumed))
                    .bind(count(instance.forwarded))
                    .bind(count(instance.rejected))
                    .bind(count(instance.in_flight))
                    .execute($pool)
                    .await
                    .map_err(StoreError::query(OP))
            };
        }
        match &self.backend {
            Backend::Sqlite(pool) => {
                upsert!(UPSERT_SQLITE, pool)?;
            }
            Backend::Postgres(pool) => {
                upsert!(UPSERT_POSTGRES, pool)?;
            }
        }
        Ok(())
    }

    /// The instances seen since `since`, longest-running first.
    pub async fn instances(&self, since: SystemTime) -> Result<Vec<Instance>, StoreError> {
        const OP: &str = "list instances";
        let since = to_micros(since);
        macro_rules! list {
            ($sql:expr, $pool:expr) => {
                sqlx::query($sql)
                    .bind(since)
                    .fetch_all($pool)
                    .await
                    .map_err(StoreError::query(OP))?
                    .iter()
                    .map(instance)
                    .collect()
            };
        }
        match &self.backend {
            Backend::Sqlite(pool) => list!(SELECT_SQLITE, pool),
            Backend::Postgres(pool) => list!(SELECT_POSTGRES, pool),
        }
    }

    /// Forgets instances not seen since `older_than`.
    pub async fn purge_instances(&self, older_than: SystemTime) -> Result<u64, StoreError> {
        const OP: &str = "purge instances";
        let cutoff = to_micros(older_than);
        macro_rules! purge {
            ($sql:expr, $pool:expr) => {
                sqlx::query($sql)
                    .bind(cutoff)
                    .execute($pool)
                    .await
                    .map_err(StoreError::query(OP))?
                    .rows_affected()
            };
        }
        Ok(match &self.backend {
            Backend::Sqlite(pool) => {
                purge!("DELETE FROM gateway_instances WHERE seen_at < ?1", pool)
            }
            Backend::Postgres(pool) => purge!(
                "DELETE FROM gateway_instances \
                 WHERE seen_at < timestamptz 'epoch' + $1 * interval '1 microsecond'",
                pool
            ),
        })
    }
}
