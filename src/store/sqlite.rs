//! SQLite backend: one file next to the gateway, nothing to run.
//!
//! The message path's batches (checks, records) are bound as parameters, padded to a few
//! fixed sizes ([`MAX_BATCH_ROWS`]), so that every batch runs one of a handful of prepared
//! statements; the admin API's batches travel as one JSON array bound to one parameter and
//! unpacked with `json_each`, one statement text for every size.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::admin::{
    self, AuditEntry, Condition, DeadLetter, DeadLetterMessage, DeadLetterState, DirectoryChange,
    NewAudit, NewDeadLetter, StoredDirectory, TraceEvent,
};
use super::fates::{Answer, Fate, Unanswered};
use super::file::{self, DatabaseFile};
use super::instances::{self, Instance};
use super::rows::Columns;
use super::{DeliveryRecord, StoreError, Visible, from_micros, redact_url, to_micros};

const MIGRATIONS: &[(i64, &str, &str)] = super::common::migrations!("sqlite");

/// One writer at a time is all SQLite allows; WAL lets the readers (checks) run beside it.
const MAX_CONNECTIONS: u32 = 1;

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) async fn open(url: &str) -> Result<(SqlitePool, Option<DatabaseFile>), StoreError> {
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
    let lock = if in_memory {
        None
    } else {
        create_parent_dir(url, options.get_filename())?;
        // Before the database is opened: a second gateway must not even run migrations.
        Some(file::Lock::acquire(options.get_filename())?)
    };

    let mut pool = SqlitePoolOptions::new().max_connections(MAX_CONNECTIONS);
    if in_memory {
        // An in-memory database lives as long as one connection to it does.
        pool = pool
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    } else {
        pool = pool.after_release(|conn, _| Box::pin(discard_if_in_transaction(conn)));
    }
    let pool = pool
        .connect_with(options.clone())
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
    let file = match lock {
        Some(lock) => match DatabaseFile::new(options.get_filename(), lock) {
            Ok(file) => Some(file),
            Err(e) => {
                pool.close().await;
                return Err(e);
            }
        },
        None => None,
    };
    Ok((pool, file))
}

/// The pool's check on every connection it gets back: one still inside a transaction is
/// closed (`Ok(false)`), so that the next query gets a fresh connection.
///
/// A transaction whose COMMIT failed (SQLITE_FULL, SQLITE_IOERR) may have been rolled back
/// by SQLite already; the ROLLBACK that sqlx sends when the transaction is dropped then
/// fails too, and sqlx still counts the connection as inside a transaction. With one
/// connection in the pool, every later `BEGIN` on it would fail ("begin_with at non-zero
/// transaction depth") until a restart. Checking here covers every transaction the store
/// runs, however it ended.
async fn discard_if_in_transaction(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    // A dropped transaction's ROLLBACK is queued on the connection's worker, not done yet:
    // the ping comes back after it.
    conn.ping().await?;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    tracing::warn!(
        "SQLite connection still inside a transaction that failed; closed, the next query opens a fresh one"
    );
    Ok(false)
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

/// The most rows one statement of a batch carries. A batch is bound as it comes up to the
/// next power of two (at most this), the rest of the list NULL: a batch of any size is one
/// of a handful of statement texts, which sqlx's statement cache (100 per connection) keeps
/// prepared, where one text per size (up to 256 for checks and as many for records) would
/// push each other out and be compiled again and again.
const MAX_BATCH_ROWS: usize = 256;

/// How many rows the statement for `rows` rows binds.
fn padded(rows: usize) -> usize {
    rows.next_power_of_two().min(MAX_BATCH_ROWS)
}

pub(super) async fn fetch(
    pool: &SqlitePool,
    ids: &[Uuid],
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let mut records = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_BATCH_ROWS) {
        records.extend(fetch_chunk(pool, chunk).await?);
    }
    Ok(records)
}

async fn fetch_chunk(pool: &SqlitePool, ids: &[Uuid]) -> Result<Vec<DeliveryRecord>, StoreError> {
    // Bound parameters, not a JSON array: unpacking JSON in SQLite cost more than the
    // lookups themselves (docs/performance.md). NULL in the padding matches no row.
    let mut query = QueryBuilder::<Sqlite>::new(
        "SELECT submission_id, fingerprint, destination, delivered_at, platform, received_at \
         FROM delivered_submissions WHERE submission_id IN (",
    );
    let mut list = query.separated(", ");
    for i in 0..padded(ids.len()) {
        list.push_bind(ids.get(i).map(|id| id.hyphenated().to_string()));
    }
    query.push(")");
    let rows = query
        .build()
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("check"))?;
    rows.iter().map(delivery_record).collect()
}

/// `ids` as a JSON array of hyphenated lower-case strings, for `json_each`.
fn uuid_json(ids: &[Uuid]) -> String {
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
    json
}

/// Writes `records` in one transaction: one statement for up to [`MAX_BATCH_ROWS`].
pub(super) async fn upsert(
    pool: &SqlitePool,
    records: &[&DeliveryRecord],
) -> Result<(), StoreError> {
    if records.len() <= MAX_BATCH_ROWS {
        return upsert_chunk(pool, records).await;
    }
    let mut tx = begin_write(pool)
        .await
        .map_err(StoreError::query("record"))?;
    for chunk in records.chunks(MAX_BATCH_ROWS) {
        upsert_chunk(&mut *tx, chunk).await?;
    }
    tx.commit().await.map_err(StoreError::query("record"))
}

async fn upsert_chunk<'c>(
    conn: impl sqlx::SqliteExecutor<'c>,
    records: &[&DeliveryRecord],
) -> Result<(), StoreError> {
    // The padding rows are all NULL and filtered out before they reach the table. (The
    // WHERE is also what SQLite needs to read ON CONFLICT after INSERT … SELECT.)
    let mut query = QueryBuilder::<Sqlite>::new(
        "INSERT INTO delivered_submissions \
             (submission_id, fingerprint, destination, delivered_at, platform, received_at) \
         SELECT column1, column2, column3, column4, column5, column6 FROM (",
    );
    let rows = (0..padded(records.len())).map(|i| records.get(i));
    query.push_values(rows, |mut row, r| {
        row.push_bind(r.map(|r| r.submission_id.hyphenated().to_string()))
            .push_bind(r.map(|r| r.fingerprint.to_vec()))
            .push_bind(r.map(|r| r.destination.as_str()))
            .push_bind(r.map(|r| to_micros(r.delivered_at)))
            .push_bind(r.map(|r| r.platform.as_str()))
            .push_bind(r.and_then(|r| r.received_at.map(to_micros)));
    });
    query.push(
        ") WHERE column1 IS NOT NULL \
         ON CONFLICT (submission_id) DO UPDATE SET \
             fingerprint = excluded.fingerprint, \
             destination = excluded.destination, \
             delivered_at = excluded.delivered_at, \
             platform = excluded.platform, \
             received_at = excluded.received_at, \
             answer = NULL, answer_digest = NULL, answered_at = NULL, \
             overdue_reported_at = NULL",
    );
    query
        .build()
        .execute(conn)
        .await
        .map_err(StoreError::query("record"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Receipts (see fates.rs)

const FATE_COLUMNS: &str = "submission_id, platform, destination, delivered_at, answer, \
     answer_digest, answered_at, overdue_reported_at";

/// How `claim_overdue` takes its rows: as they are, since one statement writes at a time, so
/// two gateways on one file cannot both claim a row.
const CLAIM_ROWS: &str = "";

/// Texts bound as one JSON array of strings, for `json_each`.
fn text_list(items: &[String]) -> String {
    serde_json::Value::from(items.to_vec()).to_string()
}

// ---------------------------------------------------------------------------------------
// Admin API (see admin.rs)

/// Around a bound time, microseconds since the epoch: INTEGER columns take it as it is.
const TIME: [&str; 2] = ["", ""];

/// Around a time column: its microseconds since the epoch, which INTEGER columns hold as
/// they are.
const MICROS_OF: [&str; 2] = ["", ""];

/// After a column, around a bound list ([`text_list`], [`db_uuids`]): the column is one of it.
const AMONG: [&str; 2] = [" IN (SELECT value FROM json_each(", "))"];

/// Around a column and a bound prefix: the column starts with it. instr is case-sensitive
/// and knows no wildcards, unlike LIKE.
const STARTS_WITH: [&str; 3] = ["instr(", ", ", ") = 1"];

/// Around the bound lands and destinations: an audit entry concerns one of them (or all).
const CONCERNS: [&str; 3] = [
    "(concerns_lands = '*' OR EXISTS (SELECT 1 FROM json_each(",
    ") WHERE instr(concerns_lands, ' ' || value || ' ') > 0) \
     OR EXISTS (SELECT 1 FROM json_each(",
    ") WHERE instr(concerns_destinations, ' ' || value || ' ') > 0))",
];

pub(super) async fn insert_dead_letters(
    pool: &SqlitePool,
    letters: &[NewDeadLetter],
    stored_at: i64,
) -> Result<(), StoreError> {
    const OP: &str = "insert dead letters";
    // One statement per row in one transaction, not a JSON batch: bodies may be megabytes,
    // and as blobs they are bound as they are instead of doubled into hex inside JSON. In
    // process, a prepared statement per row costs little.
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::query(OP))?;
    for letter in letters {
        let record = &letter.record;
        sqlx::query(
            "INSERT INTO dead_letters (id, submission_id, platform, reason, field, detail, \
                 service, ars, destination, dead_lettered_at, content_type, message_id, \
                 headers, body_bytes, stored_at, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(record.id.hyphenated().to_string())
        .bind(&record.submission_id)
        .bind(&record.platform)
        .bind(&record.reason)
        .bind(&record.field)
        .bind(&record.detail)
        .bind(&record.service)
        .bind(&record.ars)
        .bind(&record.destination)
        .bind(to_micros(record.dead_lettered_at))
        .bind(&record.content_type)
        .bind(&record.message_id)
        .bind(&record.headers)
        .bind(i64::try_from(letter.body.len()).unwrap_or(i64::MAX))
        .bind(stored_at)
        .bind(&letter.body)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
    }
    tx.commit().await.map_err(StoreError::query(OP))?;
    Ok(())
}

const DEAD_LETTER_COLUMNS: &str = "id, submission_id, platform, reason, field, detail, \
     service, ars, destination, dead_lettered_at, content_type, message_id, headers, \
     body_bytes, stored_at, state, state_changed_at, state_changed_by, replays";

pub(super) async fn record_events(
    pool: &SqlitePool,
    events: &[TraceEvent],
) -> Result<(), StoreError> {
    // [[submission_id, micros, event, platform, destination, detail], ...]; ordered by the
    // array index so that seq follows the order given.
    let json = serde_json::Value::Array(
        events
            .iter()
            .map(|e| {
                serde_json::json!([
                    e.submission_id,
                    to_micros(e.at),
                    e.event,
                    e.platform,
                    e.destination,
                    e.detail,
                ])
            })
            .collect(),
    )
    .to_string();
    sqlx::query(
        "INSERT INTO trace_events (submission_id, at, event, platform, destination, detail) \
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5 \
         FROM json_each($1) ORDER BY key",
    )
    .bind(json)
    .execute(pool)
    .await
    .map_err(StoreError::query("record events"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// What the shared queries (`common::queries!`) need that differs on SQLite

super::common::queries!(
    SqlitePool,
    Sqlite,
    sqlx::sqlite::SqliteRow,
    sqlx::SqliteConnection
);

/// Times are microseconds since the epoch in INTEGER columns.
const INSERT_AUDIT: &str = "INSERT INTO audit_log (at, actor, actor_scope, action, object, \
     before_json, after_json, concerns_lands, concerns_destinations) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const SELECT_AUDIT: &str =
    "SELECT id, at, actor, actor_scope, action, object, before_json, after_json FROM audit_log";
const SELECT_TRACE: &str = "SELECT submission_id, at, event, platform, destination, detail \
     FROM trace_events WHERE submission_id = $1 ORDER BY at, seq";

/// UUIDs are TEXT in their hyphenated form.
fn db_uuid(id: Uuid) -> String {
    id.hyphenated().to_string()
}

/// One read transaction: WAL gives it one snapshot.
async fn begin_snapshot(
    pool: &SqlitePool,
) -> Result<sqlx::Transaction<'static, Sqlite>, sqlx::Error> {
    pool.begin().await
}

/// UUIDs bound as one JSON array of their text.
fn db_uuids(ids: &[Uuid]) -> String {
    uuid_json(ids)
}

/// A UUID column, TEXT here.
fn row_uuid(row: &sqlx::sqlite::SqliteRow, i: usize, op: &'static str) -> Result<Uuid, StoreError> {
    let id: String = row.try_get(i).map_err(StoreError::query(op))?;
    Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt {
        detail: format!("submission id {id:?}: {e}"),
    })
}

/// IMMEDIATE: take the write lock at the start (waiting up to the busy timeout), rather
/// than failing on the upgrade from reader to writer halfway through.
async fn begin_write(pool: &SqlitePool) -> Result<sqlx::Transaction<'static, Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}
