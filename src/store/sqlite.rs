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

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::admin::{
    self, AuditEntry, Columns, Condition, DeadLetter, DeadLetterMessage, DeadLetterState,
    DirectoryChange, NewAudit, NewDeadLetter, StoredDirectory, TraceEvent,
};
use super::fates::{Answer, Fate, Unanswered};
use super::file::{self, DatabaseFile};
use super::{DeliveryRecord, StoreError, Visible, from_micros, redact_url, to_micros};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "delivered submissions",
        include_str!("migrations/sqlite/0001_delivered_submissions.sql"),
    ),
    (2, "admin", include_str!("migrations/sqlite/0002_admin.sql")),
    (
        3,
        "receipts",
        include_str!("migrations/sqlite/0003_receipts.sql"),
    ),
    (
        4,
        "receipt queues",
        include_str!("migrations/sqlite/0004_receipt_queues.sql"),
    ),
    (
        5,
        "trace on the delivery record",
        include_str!("migrations/sqlite/0005_trace_on_record.sql"),
    ),
    (
        6,
        "instances",
        include_str!("migrations/sqlite/0006_instances.sql"),
    ),
    (
        7,
        "scopes",
        include_str!("migrations/sqlite/0007_scopes.sql"),
    ),
];

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

pub(super) async fn fetch(
    pool: &SqlitePool,
    ids: &[Uuid],
) -> Result<Vec<DeliveryRecord>, StoreError> {
    // Bound parameters, not a JSON array: unpacking JSON in SQLite cost more than the
    // lookups themselves (docs/performance.md). One statement text per batch size, which
    // sqlx's statement cache keeps.
    let mut query = QueryBuilder::<Sqlite>::new(
        "SELECT submission_id, fingerprint, destination, delivered_at, platform, received_at \
         FROM delivered_submissions WHERE submission_id IN (",
    );
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(id.hyphenated().to_string());
    }
    query.push(")");
    let rows = query
        .build()
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
            let received_at: Option<i64> = row.try_get(5).map_err(StoreError::query("check"))?;
            Ok(DeliveryRecord {
                submission_id,
                fingerprint: super::fingerprint_from_bytes(&fingerprint, &submission_id)?,
                destination: row.try_get(2).map_err(StoreError::query("check"))?,
                delivered_at: from_micros(row.try_get(3).map_err(StoreError::query("check"))?),
                platform: row.try_get(4).map_err(StoreError::query("check"))?,
                received_at: received_at.map(from_micros),
            })
        })
        .collect()
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

pub(super) async fn upsert(
    pool: &SqlitePool,
    records: &[&DeliveryRecord],
) -> Result<(), StoreError> {
    let mut query = QueryBuilder::<Sqlite>::new(
        "INSERT INTO delivered_submissions \
             (submission_id, fingerprint, destination, delivered_at, platform, received_at) ",
    );
    query.push_values(records, |mut row, r| {
        row.push_bind(r.submission_id.hyphenated().to_string())
            .push_bind(r.fingerprint.to_vec())
            .push_bind(r.destination.as_str())
            .push_bind(to_micros(r.delivered_at))
            .push_bind(r.platform.as_str())
            .push_bind(r.received_at.map(to_micros));
    });
    query.push(
        " ON CONFLICT (submission_id) DO UPDATE SET \
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

// ---------------------------------------------------------------------------------------
// Receipts (see fates.rs)

const FATE_COLUMNS: &str = "submission_id, platform, destination, delivered_at, answer, \
     answer_digest, answered_at, overdue_reported_at";

fn fates(rows: &[sqlx::sqlite::SqliteRow], op: &'static str) -> Result<Vec<Fate>, StoreError> {
    rows.iter()
        .map(|row| {
            let id: String = row.try_get(0).map_err(StoreError::query(op))?;
            Ok(Fate {
                submission_id: Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt {
                    detail: format!("submission id {id:?}: {e}"),
                })?,
                platform: row.try_get(1).map_err(StoreError::query(op))?,
                destination: row.try_get(2).map_err(StoreError::query(op))?,
                delivered_at: from_micros(row.try_get(3).map_err(StoreError::query(op))?),
                answer: row.try_get(4).map_err(StoreError::query(op))?,
                answer_digest: row.try_get(5).map_err(StoreError::query(op))?,
                answered_at: row
                    .try_get::<Option<i64>, _>(6)
                    .map_err(StoreError::query(op))?
                    .map(from_micros),
                overdue_reported_at: row
                    .try_get::<Option<i64>, _>(7)
                    .map_err(StoreError::query(op))?
                    .map(from_micros),
            })
        })
        .collect()
}

pub(super) async fn fate(pool: &SqlitePool, id: Uuid) -> Result<Option<Fate>, StoreError> {
    const OP: &str = "read submission fate";
    let rows = sqlx::query(&format!(
        "SELECT {FATE_COLUMNS} FROM delivered_submissions WHERE submission_id = ?1"
    ))
    .bind(id.hyphenated().to_string())
    .fetch_all(pool)
    .await
    .map_err(StoreError::query(OP))?;
    Ok(fates(&rows, OP)?.pop())
}

pub(super) async fn record_answer(
    pool: &SqlitePool,
    answer: &Answer,
    at: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE delivered_submissions \
         SET answer = ?1, answer_digest = ?2, answered_at = ?3 \
         WHERE submission_id = ?4 AND destination = ?5 \
           AND (answer IS NULL OR answer = 'forwarded-onward')",
    )
    .bind(&answer.answer)
    .bind(answer.digest.as_slice())
    .bind(at)
    .bind(answer.submission_id.hyphenated().to_string())
    .bind(&answer.destination)
    .execute(pool)
    .await
    .map_err(StoreError::query("record answer"))?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn unanswered(
    pool: &SqlitePool,
    query: &Unanswered<'_>,
) -> Result<Vec<Fate>, StoreError> {
    const OP: &str = "list unanswered submissions";
    let (all, platforms, destinations) = match query.visible {
        Visible::All => (true, "[]".to_owned(), "[]".to_owned()),
        Visible::Only {
            platforms,
            destinations,
        } => (false, json_texts(platforms), json_texts(destinations)),
    };
    let rows = sqlx::query(&format!(
        "SELECT {FATE_COLUMNS} FROM delivered_submissions \
         WHERE answer IS NULL AND delivered_at < ?1 \
           AND (?2 = 0 OR overdue_reported_at IS NULL) \
           AND (?4 OR platform IN (SELECT value FROM json_each(?5)) \
                OR destination IN (SELECT value FROM json_each(?6))) \
         ORDER BY delivered_at, submission_id LIMIT ?3"
    ))
    .bind(query.delivered_before)
    .bind(i64::from(query.unreported_only))
    .bind(i64::from(query.limit))
    .bind(all)
    .bind(platforms)
    .bind(destinations)
    .fetch_all(pool)
    .await
    .map_err(StoreError::query(OP))?;
    fates(&rows, OP)
}

/// `items` as a JSON array of strings, for `json_each`.
fn json_texts(items: &[String]) -> String {
    serde_json::Value::from(items.to_vec()).to_string()
}

pub(super) async fn mark_overdue_reported(
    pool: &SqlitePool,
    ids: &[Uuid],
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE delivered_submissions SET overdue_reported_at = ?1 \
         WHERE submission_id IN (SELECT value FROM json_each(?2))",
    )
    .bind(at)
    .bind(uuid_json(ids))
    .execute(pool)
    .await
    .map_err(StoreError::query("mark overdue"))?;
    Ok(())
}

/// Claims up to `limit` overdue, unreported submissions whose claim (if any) is older than
/// `stale_before`; one statement, so two gateways on one file cannot both claim a row.
pub(super) async fn claim_overdue(
    pool: &SqlitePool,
    delivered_before: i64,
    stale_before: i64,
    at: i64,
    limit: u32,
) -> Result<Vec<Fate>, StoreError> {
    const OP: &str = "claim overdue submissions";
    let rows = sqlx::query(&format!(
        "UPDATE delivered_submissions SET overdue_claimed_at = ?3 \
         WHERE submission_id IN ( \
             SELECT submission_id FROM delivered_submissions \
             WHERE answer IS NULL AND overdue_reported_at IS NULL AND delivered_at < ?1 \
               AND (overdue_claimed_at IS NULL OR overdue_claimed_at < ?2) \
             ORDER BY delivered_at, submission_id LIMIT ?4) \
         RETURNING {FATE_COLUMNS}"
    ))
    .bind(delivered_before)
    .bind(stale_before)
    .bind(at)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(StoreError::query(OP))?;
    fates(&rows, OP)
}

pub(super) async fn release_overdue_claims(
    pool: &SqlitePool,
    ids: &[Uuid],
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE delivered_submissions SET overdue_claimed_at = NULL \
         WHERE submission_id IN (SELECT value FROM json_each(?1)) \
           AND overdue_reported_at IS NULL",
    )
    .bind(uuid_json(ids))
    .execute(pool)
    .await
    .map_err(StoreError::query("release overdue claims"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Admin API (see admin.rs)

pub(super) async fn load_directory(pool: &SqlitePool) -> Result<StoredDirectory, StoreError> {
    const OP: &str = "load directory";
    // One read transaction: WAL gives it one snapshot, so the lists and the version agree.
    let mut tx = pool.begin().await.map_err(StoreError::query(OP))?;
    let destinations = sqlx::query(admin::SELECT_DESTINATIONS)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
    let routes = sqlx::query(admin::SELECT_ROUTES)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
    let services = sqlx::query(admin::SELECT_SERVICES)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
    let version = sqlx::query(admin::SELECT_VERSION)
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
    tx.commit().await.map_err(StoreError::query(OP))?;
    Ok(StoredDirectory {
        destinations: admin::read_all(&destinations, OP, Columns::destination)?,
        routes: admin::read_all(&routes, OP, Columns::route)?,
        services: admin::read_all(&services, OP, Columns::service)?,
        version: Columns::new(&version, OP).int()?,
    })
}

pub(super) async fn directory_version(pool: &SqlitePool) -> Result<i64, StoreError> {
    let row = sqlx::query(admin::SELECT_VERSION)
        .fetch_one(pool)
        .await
        .map_err(StoreError::query("directory version"))?;
    Columns::new(&row, "directory version").int()
}

pub(super) async fn apply_directory_change(
    pool: &SqlitePool,
    change: &DirectoryChange,
    audit: &NewAudit,
    at: i64,
) -> Result<i64, StoreError> {
    const OP: &str = "apply directory change";
    // IMMEDIATE: take the write lock at the start (waiting up to the busy timeout), rather
    // than failing on the upgrade from reader to writer halfway through.
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::query(OP))?;
    let (sql, params) = change.statement();
    let mut query = sqlx::query(sql);
    for param in params {
        query = query.bind(param);
    }
    let done = query
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
    if done.rows_affected() == 0 {
        // Dropping the transaction rolls it back: no version bump, no audit row.
        return Err(change.not_found());
    }
    let version = sqlx::query(admin::BUMP_VERSION)
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
    let version = Columns::new(&version, OP).int()?;
    insert_audit(&mut tx, audit, at, OP).await?;
    tx.commit().await.map_err(StoreError::query(OP))?;
    Ok(version)
}

pub(super) async fn audit(pool: &SqlitePool, entry: &NewAudit, at: i64) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await.map_err(StoreError::query("audit"))?;
    insert_audit(&mut conn, entry, at, "audit").await
}

async fn insert_audit(
    conn: &mut sqlx::SqliteConnection,
    entry: &NewAudit,
    at: i64,
    operation: &'static str,
) -> Result<(), StoreError> {
    let (lands, destinations) = entry.concerns.columns();
    sqlx::query(
        "INSERT INTO audit_log (at, actor, actor_scope, action, object, before_json, \
             after_json, concerns_lands, concerns_destinations) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(at)
    .bind(&entry.actor)
    .bind(&entry.actor_scope)
    .bind(&entry.action)
    .bind(&entry.object)
    .bind(&entry.before)
    .bind(&entry.after)
    .bind(lands)
    .bind(destinations)
    .execute(conn)
    .await
    .map_err(StoreError::query(operation))?;
    Ok(())
}

pub(super) async fn list_audit(
    pool: &SqlitePool,
    conditions: &[Condition],
    limit: u32,
) -> Result<Vec<AuditEntry>, StoreError> {
    const OP: &str = "list audit";
    let rows = select(
        pool,
        "SELECT id, at, actor, actor_scope, action, object, before_json, after_json \
         FROM audit_log",
        conditions,
        " ORDER BY id DESC",
        Some(limit),
        OP,
    )
    .await?;
    admin::read_all(&rows, OP, Columns::audit_entry)
}

/// Appends ` WHERE a AND b …` for `conditions` (nothing for none).
fn push_where(query: &mut QueryBuilder<'_, Sqlite>, conditions: &[Condition]) {
    for (i, condition) in conditions.iter().enumerate() {
        query.push(if i == 0 { " WHERE " } else { " AND " });
        match condition {
            Condition::Equals(column, value) => {
                query.push(format_args!("{column} = "));
                query.push_bind(value.clone());
            }
            Condition::StartsWith(column, value) => {
                // instr is case-sensitive and knows no wildcards, unlike LIKE.
                query.push(format_args!("instr({column}, "));
                query.push_bind(value.clone());
                query.push(") = 1");
            }
            Condition::NotBefore(column, micros) => {
                query.push(format_args!("{column} >= "));
                query.push_bind(*micros);
            }
            Condition::Before(column, micros) => {
                query.push(format_args!("{column} < "));
                query.push_bind(*micros);
            }
            Condition::IdBelow(id) => {
                query.push("id < ");
                query.push_bind(*id);
            }
            Condition::DeadLetterAfter(micros, id) => {
                query.push("(dead_lettered_at, id) > (");
                query.push_bind(*micros);
                query.push(", ");
                query.push_bind(id.hyphenated().to_string());
                query.push(")");
            }
            Condition::DeadLetterId(id) => {
                query.push("id = ");
                query.push_bind(id.hyphenated().to_string());
            }
            Condition::Subjects {
                platforms,
                destinations,
            } => {
                query.push("(platform IN (SELECT value FROM json_each(");
                query.push_bind(json_texts(platforms));
                query.push(")) OR destination IN (SELECT value FROM json_each(");
                query.push_bind(json_texts(destinations));
                query.push(")))");
            }
            Condition::Concerns {
                lands,
                destinations,
            } => {
                query.push("(concerns_lands = '*' OR EXISTS (SELECT 1 FROM json_each(");
                query.push_bind(json_texts(lands));
                query.push(
                    ") WHERE instr(concerns_lands, ' ' || value || ' ') > 0) \
                     OR EXISTS (SELECT 1 FROM json_each(",
                );
                query.push_bind(json_texts(destinations));
                query.push(") WHERE instr(concerns_destinations, ' ' || value || ' ') > 0))");
            }
        }
    }
}

/// `head` (a SELECT … FROM), ` WHERE` `conditions`, `tail` (an ORDER BY) and a LIMIT.
async fn select(
    pool: &SqlitePool,
    head: &str,
    conditions: &[Condition],
    tail: &str,
    limit: Option<u32>,
    operation: &'static str,
) -> Result<Vec<sqlx::sqlite::SqliteRow>, StoreError> {
    let mut query = QueryBuilder::new(head);
    push_where(&mut query, conditions);
    query.push(tail);
    if let Some(limit) = limit {
        query.push(" LIMIT ");
        query.push_bind(i64::from(limit));
    }
    query
        .build()
        .fetch_all(pool)
        .await
        .map_err(StoreError::query(operation))
}

/// The `columns` of dead letter `id`, read with `read`.
async fn dead_letter_by_id<T>(
    pool: &SqlitePool,
    columns: &str,
    id: Uuid,
    operation: &'static str,
    read: for<'r> fn(Columns<'r, sqlx::sqlite::SqliteRow>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let row = sqlx::query(&format!("SELECT {columns} FROM dead_letters WHERE id = $1"))
        .bind(id.hyphenated().to_string())
        .fetch_optional(pool)
        .await
        .map_err(StoreError::query(operation))?;
    row.as_ref()
        .map(|row| read(Columns::new(row, operation)))
        .transpose()
}

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
        sqlx::query(
            "INSERT INTO dead_letters (id, submission_id, platform, reason, field, detail, \
                 service, ars, destination, dead_lettered_at, content_type, message_id, \
                 headers, body_bytes, stored_at, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(letter.id.hyphenated().to_string())
        .bind(&letter.submission_id)
        .bind(&letter.platform)
        .bind(&letter.reason)
        .bind(&letter.field)
        .bind(&letter.detail)
        .bind(&letter.service)
        .bind(&letter.ars)
        .bind(&letter.destination)
        .bind(to_micros(letter.dead_lettered_at))
        .bind(&letter.content_type)
        .bind(&letter.message_id)
        .bind(&letter.headers)
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

pub(super) async fn list_dead_letters(
    pool: &SqlitePool,
    conditions: &[Condition],
    limit: u32,
) -> Result<Vec<DeadLetter>, StoreError> {
    const OP: &str = "list dead letters";
    let head = format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters");
    let order = " ORDER BY dead_lettered_at, id";
    let rows = select(pool, &head, conditions, order, Some(limit), OP).await?;
    admin::read_all(&rows, OP, Columns::dead_letter)
}

pub(super) async fn count_dead_letters(
    pool: &SqlitePool,
    conditions: &[Condition],
) -> Result<i64, StoreError> {
    const OP: &str = "count dead letters";
    let head = "SELECT count(*) FROM dead_letters";
    let rows = select(pool, head, conditions, "", None, OP).await?;
    match rows.first() {
        Some(row) => Columns::new(row, OP).int(),
        None => Err(StoreError::Corrupt {
            detail: "count returned no row".into(),
        }),
    }
}

/// `(key, count)` of the letters matching `conditions`, grouped by `column`.
pub(super) async fn count_dead_letters_by(
    pool: &SqlitePool,
    conditions: &[Condition],
    column: &'static str,
) -> Result<Vec<(String, u64)>, StoreError> {
    const OP: &str = "count dead letters by group";
    let head = format!("SELECT {column}, count(*) FROM dead_letters");
    let tail = format!(" GROUP BY {column}");
    let rows = select(pool, &head, conditions, &tail, None, OP).await?;
    admin::read_all(&rows, OP, Columns::group_count)
}

pub(super) async fn dead_letter_message(
    pool: &SqlitePool,
    id: Uuid,
) -> Result<Option<DeadLetterMessage>, StoreError> {
    let columns = "body, content_type, message_id, headers, platform";
    let op = "read dead letter message";
    dead_letter_by_id(pool, columns, id, op, |row| row.dead_letter_message()).await
}

pub(super) async fn set_dead_letter_state(
    pool: &SqlitePool,
    ids: &[Uuid],
    state: DeadLetterState,
    actor: &str,
    at: i64,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE dead_letters SET state = $1, state_changed_at = $2, state_changed_by = $3, \
             replays = replays + $4 \
         WHERE state = 'pending' AND id IN (SELECT value FROM json_each($5))",
    )
    .bind(state.as_str())
    .bind(at)
    .bind(actor)
    .bind(i64::from(state == DeadLetterState::Replayed))
    .bind(uuid_json(ids))
    .execute(pool)
    .await
    .map_err(StoreError::query("set dead letter state"))?;
    Ok(done.rows_affected())
}

pub(super) async fn purge_dead_letters(
    pool: &SqlitePool,
    cutoff_micros: i64,
) -> Result<u64, StoreError> {
    let done =
        sqlx::query("DELETE FROM dead_letters WHERE state <> 'pending' AND state_changed_at < $1")
            .bind(cutoff_micros)
            .execute(pool)
            .await
            .map_err(StoreError::query("purge dead letters"))?;
    Ok(done.rows_affected())
}

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

pub(super) async fn trace(
    pool: &SqlitePool,
    submission_id: &str,
) -> Result<Vec<TraceEvent>, StoreError> {
    const OP: &str = "trace";
    let rows = sqlx::query(
        "SELECT submission_id, at, event, platform, destination, detail FROM trace_events \
         WHERE submission_id = $1 ORDER BY at, seq",
    )
    .bind(submission_id)
    .fetch_all(pool)
    .await
    .map_err(StoreError::query(OP))?;
    admin::read_all(&rows, OP, Columns::trace_event)
}

pub(super) async fn purge_events(pool: &SqlitePool, cutoff_micros: i64) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM trace_events WHERE at < $1")
        .bind(cutoff_micros)
        .execute(pool)
        .await
        .map_err(StoreError::query("purge events"))?;
    Ok(done.rows_affected())
}
