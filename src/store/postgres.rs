//! PostgreSQL backend, for gateways that run more than one instance against one store.
//!
//! Batches travel as arrays (`= ANY($1)`, `unnest`): one statement text for every batch
//! size, so the prepared statement is reused, and no limit on bound parameters.
//!
//! Times are bound as microseconds since the epoch and converted in SQL, so that the column
//! is a real `timestamptz` for operators without pulling a date-time crate into sqlx.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection, Row};
use uuid::Uuid;

use super::{DeliveryRecord, StoreError, from_micros, redact_url, to_micros};

const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "delivered submissions",
    include_str!("migrations/postgres/0001_delivered_submissions.sql"),
)];

/// Two batch tasks (checks, records), a purge, and one spare.
const MAX_CONNECTIONS: u32 = 4;

/// How long a query waits for a pooled connection (and so, while the server is down, how
/// long before a batch fails instead of hanging).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn open(url: &str) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url).map_err(|source| StoreError::BadUrl {
        url: redact_url(url),
        reason: source.to_string(),
    })?;
    let open_error = |source: sqlx::Error| StoreError::Open {
        url: redact_url(url),
        source: Arc::new(source),
    };

    // One plain connection first, not the pool: the pool retries a refused connection until
    // its acquire timeout and then reports only "timed out", where an operator starting the
    // gateway wants "connection refused" or "password authentication failed" at once.
    let mut conn = PgConnection::connect_with(&options)
        .await
        .map_err(open_error)?;
    let migrator = super::migrator(url, MIGRATIONS).await?;
    let migrated = migrator.run(&mut conn).await;
    // Closing is a courtesy to the server; the outcome that matters is the migration's.
    let _ = conn.close().await;
    migrated.map_err(|source| StoreError::Migrate {
        url: redact_url(url),
        source: Arc::new(source),
    })?;

    Ok(PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(options))
}

pub(super) async fn fetch(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<DeliveryRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT submission_id, fingerprint, destination, \
                (extract(epoch FROM delivered_at) * 1000000)::int8 \
         FROM delivered_submissions \
         WHERE submission_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .map_err(StoreError::query("check"))?;

    rows.iter()
        .map(|row| {
            let submission_id: Uuid = row.try_get(0).map_err(StoreError::query("check"))?;
            let fingerprint: Vec<u8> = row.try_get(1).map_err(StoreError::query("check"))?;
            Ok(DeliveryRecord {
                submission_id,
                fingerprint: super::fingerprint_from_bytes(&fingerprint, &submission_id)?,
                destination: row.try_get(2).map_err(StoreError::query("check"))?,
                delivered_at: from_micros(row.try_get(3).map_err(StoreError::query("check"))?),
            })
        })
        .collect()
}

pub(super) async fn upsert(pool: &PgPool, records: &[&DeliveryRecord]) -> Result<(), StoreError> {
    let ids: Vec<Uuid> = records.iter().map(|r| r.submission_id).collect();
    let fingerprints: Vec<Vec<u8>> = records.iter().map(|r| r.fingerprint.to_vec()).collect();
    let destinations: Vec<&str> = records.iter().map(|r| r.destination.as_str()).collect();
    let micros: Vec<i64> = records.iter().map(|r| to_micros(r.delivered_at)).collect();

    sqlx::query(
        "INSERT INTO delivered_submissions (submission_id, fingerprint, destination, delivered_at) \
         SELECT id, fp, dest, timestamptz 'epoch' + us * interval '1 microsecond' \
         FROM unnest($1::uuid[], $2::bytea[], $3::text[], $4::int8[]) AS batch(id, fp, dest, us) \
         ON CONFLICT (submission_id) DO UPDATE SET \
             fingerprint = excluded.fingerprint, \
             destination = excluded.destination, \
             delivered_at = excluded.delivered_at",
    )
    .bind(ids)
    .bind(fingerprints)
    .bind(destinations)
    .bind(micros)
    .execute(pool)
    .await
    .map_err(StoreError::query("record"))?;
    Ok(())
}

pub(super) async fn purge(pool: &PgPool, cutoff_micros: i64) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM delivered_submissions \
         WHERE delivered_at < timestamptz 'epoch' + $1 * interval '1 microsecond'",
    )
    .bind(cutoff_micros)
    .execute(pool)
    .await
    .map_err(StoreError::query("purge"))?;
    Ok(done.rows_affected())
}
