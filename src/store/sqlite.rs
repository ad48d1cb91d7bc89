//! SQLite backend: one file next to the gateway, nothing to run.
//!
//! Batches travel as one JSON array bound to one parameter and unpacked with `json_each`:
//! one statement text for every batch size, so sqlx's prepared-statement cache serves every
//! call, there is no limit on the number of bound variables, and the whole batch crosses to
//! sqlx's SQLite worker thread once instead of once per row.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use uuid::Uuid;

use super::{DeliveryRecord, StoreError, from_micros, redact_url, to_micros};

const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "delivered submissions",
    include_str!("migrations/sqlite/0001_delivered_submissions.sql"),
)];

/// One writer at a time is all SQLite allows; WAL lets the readers (checks) run beside it.
const MAX_CONNECTIONS: u32 = 4;

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) async fn open(url: &str) -> Result<SqlitePool, StoreError> {
    let bad_url = |source: sqlx::Error| StoreError::BadUrl {
        url: redact_url(url),
        reason: source.to_string(),
    };
    let options = SqliteConnectOptions::from_str(url)
        .map_err(bad_url)?
        .create_if_missing(true)
        // WAL: checks read while a batch is being written. NORMAL: a commit is safe against
        // a crash of the gateway; power loss may take the last commits, which costs at worst
        // a duplicate delivery, never a lost submission.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT);

    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    if !in_memory {
        create_parent_dir(url, options.get_filename())?;
    }

    let mut pool = SqlitePoolOptions::new().max_connections(MAX_CONNECTIONS);
    if in_memory {
        // An in-memory database lives as long as one connection to it does.
        pool = pool
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    }
    let pool = pool
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Open {
            url: redact_url(url),
            source: Arc::new(source),
        })?;

    let migrator = super::migrator(url, MIGRATIONS).await?;
    if let Err(source) = migrator.run(&pool).await {
        pool.close().await;
        return Err(StoreError::Migrate {
            url: redact_url(url),
            source: Arc::new(source),
        });
    }
    Ok(pool)
}

fn create_parent_dir(url: &str, file: &Path) -> Result<(), StoreError> {
    let Some(dir) = file.parent().filter(|dir| !dir.as_os_str().is_empty()) else {
        return Ok(());
    };
    std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
        url: redact_url(url),
        path: dir.to_path_buf(),
        source: Arc::new(source),
    })
}

pub(super) async fn fetch(
    pool: &SqlitePool,
    ids: &[Uuid],
) -> Result<Vec<DeliveryRecord>, StoreError> {
    // Hyphenated UUIDs need no JSON escaping.
    let mut json = String::with_capacity(2 + ids.len() * 39);
    json.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push('"');
        json.push_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        json.push('"');
    }
    json.push(']');

    let rows = sqlx::query(
        "SELECT submission_id, fingerprint, destination, delivered_at \
         FROM delivered_submissions \
         WHERE submission_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(json)
    .fetch_all(pool)
    .await
    .map_err(StoreError::query("check"))?;

    rows.iter()
        .map(|row| {
            let id: String = row.try_get(0).map_err(StoreError::query("check"))?;
            let submission_id = Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt {
                detail: format!("submission id {id:?}: {e}"),
            })?;
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

pub(super) async fn upsert(
    pool: &SqlitePool,
    records: &[&DeliveryRecord],
) -> Result<(), StoreError> {
    // [[id, fingerprint as hex, destination, micros], ...]. Built as a `Value`, whose
    // Display cannot fail, rather than serialised from a struct, which could.
    let json = serde_json::Value::Array(
        records
            .iter()
            .map(|r| {
                serde_json::json!([
                    r.submission_id.hyphenated().to_string(),
                    hex::encode(r.fingerprint),
                    r.destination,
                    to_micros(r.delivered_at),
                ])
            })
            .collect(),
    )
    .to_string();

    // `WHERE true` resolves SQLite's parsing ambiguity between a join's ON and the upsert's
    // ON CONFLICT after INSERT … SELECT.
    sqlx::query(
        "INSERT INTO delivered_submissions (submission_id, fingerprint, destination, delivered_at) \
         SELECT value ->> 0, unhex(value ->> 1), value ->> 2, value ->> 3 \
         FROM json_each(?1) WHERE true \
         ON CONFLICT (submission_id) DO UPDATE SET \
             fingerprint = excluded.fingerprint, \
             destination = excluded.destination, \
             delivered_at = excluded.delivered_at",
    )
    .bind(json)
    .execute(pool)
    .await
    .map_err(StoreError::query("record"))?;
    Ok(())
}

pub(super) async fn purge(pool: &SqlitePool, cutoff_micros: i64) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM delivered_submissions WHERE delivered_at < ?1")
        .bind(cutoff_micros)
        .execute(pool)
        .await
        .map_err(StoreError::query("purge"))?;
    Ok(done.rows_affected())
}
