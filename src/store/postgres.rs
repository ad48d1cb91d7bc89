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
use sqlx::{Connection, PgConnection, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::admin::{
    self, AuditEntry, Condition, DeadLetter, DeadLetterMessage, DeadLetterState, DirectoryChange,
    NewAudit, NewDeadLetter, StoredDirectory, TraceEvent,
};
use super::fates::{Answer, Fate, Unanswered};
use super::instances::{self, Instance};
use super::rows::Columns;
use super::{DeliveryRecord, StoreError, Visible, from_micros, redact_url, to_micros};

const MIGRATIONS: &[(i64, &str, &str)] = super::common::migrations!("postgres");

/// Two batch tasks (checks, records), and two for the short rest: trace events, purges, the
/// heartbeat, the directory poll, admin calls.
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
                (extract(epoch FROM delivered_at) * 1000000)::int8, platform, \
                (extract(epoch FROM received_at) * 1000000)::int8 \
         FROM delivered_submissions \
         WHERE submission_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .map_err(StoreError::query("check"))?;

    rows.iter().map(delivery_record).collect()
}

pub(super) async fn upsert(pool: &PgPool, records: &[&DeliveryRecord]) -> Result<(), StoreError> {
    let ids: Vec<Uuid> = records.iter().map(|r| r.submission_id).collect();
    let fingerprints: Vec<Vec<u8>> = records.iter().map(|r| r.fingerprint.to_vec()).collect();
    let destinations: Vec<&str> = records.iter().map(|r| r.destination.as_str()).collect();
    let micros: Vec<i64> = records.iter().map(|r| to_micros(r.delivered_at)).collect();
    let platforms: Vec<&str> = records.iter().map(|r| r.platform.as_str()).collect();
    let received: Vec<Option<i64>> = records
        .iter()
        .map(|r| r.received_at.map(to_micros))
        .collect();

    sqlx::query(
        "INSERT INTO delivered_submissions \
             (submission_id, fingerprint, destination, delivered_at, platform, received_at) \
         SELECT id, fp, dest, timestamptz 'epoch' + us * interval '1 microsecond', pf, \
                timestamptz 'epoch' + rec * interval '1 microsecond' \
         FROM unnest($1::uuid[], $2::bytea[], $3::text[], $4::int8[], $5::text[], $6::int8[]) \
             AS batch(id, fp, dest, us, pf, rec) \
         ON CONFLICT (submission_id) DO UPDATE SET \
             fingerprint = excluded.fingerprint, \
             destination = excluded.destination, \
             delivered_at = excluded.delivered_at, \
             platform = excluded.platform, \
             received_at = excluded.received_at, \
             answer = NULL, answer_digest = NULL, answered_at = NULL, \
             overdue_reported_at = NULL",
    )
    .bind(ids)
    .bind(fingerprints)
    .bind(destinations)
    .bind(micros)
    .bind(platforms)
    .bind(received)
    .execute(pool)
    .await
    .map_err(StoreError::query("record"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Receipts (see fates.rs)

const FATE_COLUMNS: &str = "submission_id, platform, destination, \
     (extract(epoch FROM delivered_at) * 1000000)::int8, answer, answer_digest, \
     (extract(epoch FROM answered_at) * 1000000)::int8, \
     (extract(epoch FROM overdue_reported_at) * 1000000)::int8";

/// How `claim_overdue` takes its rows: `SKIP LOCKED`, so that instances checking at the same
/// moment take disjoint rows instead of waiting for each other.
const CLAIM_ROWS: &str = " FOR UPDATE SKIP LOCKED";

// ---------------------------------------------------------------------------------------
// Admin API (see admin.rs). Times are selected as microseconds (int8) and UUIDs as text, so
// that admin.rs's `Columns` reads rows of both backends.

/// Around a bound time, microseconds since the epoch: the timestamptz it stands for.
const TIME: [&str; 2] = ["timestamptz 'epoch' + ", " * interval '1 microsecond'"];

/// Around a timestamptz column: its microseconds since the epoch, as int8.
const MICROS_OF: [&str; 2] = ["(extract(epoch FROM ", ") * 1000000)::int8"];

/// After a column, around a bound list ([`text_list`], [`db_uuids`]): the column is one of it.
const AMONG: [&str; 2] = [" = ANY(", ")"];

/// Around a column and a bound prefix: the column starts with it. starts_with is
/// case-sensitive and knows no wildcards, unlike LIKE.
const STARTS_WITH: [&str; 3] = ["starts_with(", ", ", ")"];

/// Around the bound lands and destinations: an audit entry concerns one of them (or all).
const CONCERNS: [&str; 3] = [
    "(concerns_lands = '*' OR EXISTS (SELECT 1 FROM unnest(",
    "::text[]) AS l(v) WHERE strpos(concerns_lands, ' ' || l.v || ' ') > 0) \
     OR EXISTS (SELECT 1 FROM unnest(",
    "::text[]) AS d(v) WHERE strpos(concerns_destinations, ' ' || d.v || ' ') > 0))",
];

/// Texts bound as a text array.
fn text_list(items: &[String]) -> Vec<String> {
    items.to_vec()
}

/// One text field of every row, for binding as a `text[]` to `unnest`.
fn column<T>(rows: &[T], field: fn(&T) -> &String) -> Vec<&str> {
    rows.iter().map(|row| field(row).as_str()).collect()
}

pub(super) async fn insert_dead_letters(
    pool: &PgPool,
    letters: &[NewDeadLetter],
    stored_at: i64,
) -> Result<(), StoreError> {
    let ids: Vec<Uuid> = letters.iter().map(|l| l.record.id).collect();
    let at: Vec<i64> = letters
        .iter()
        .map(|l| to_micros(l.record.dead_lettered_at))
        .collect();
    let sizes: Vec<i64> = letters
        .iter()
        .map(|l| i64::try_from(l.body.len()).unwrap_or(i64::MAX))
        .collect();
    let bodies: Vec<&[u8]> = letters.iter().map(|l| l.body.as_slice()).collect();

    sqlx::query(
        "INSERT INTO dead_letters (id, submission_id, platform, reason, field, detail, \
             service, ars, destination, dead_lettered_at, content_type, message_id, headers, \
             body_bytes, stored_at, body) \
         SELECT id, sub, platform, reason, field, detail, service, ars, destination, \
             timestamptz 'epoch' + at * interval '1 microsecond', content_type, message_id, \
             headers, size, timestamptz 'epoch' + $15 * interval '1 microsecond', body \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::text[], $9::text[], $10::int8[], $11::text[], $12::text[], \
             $13::text[], $14::int8[], $16::bytea[]) \
             AS batch(id, sub, platform, reason, field, detail, service, ars, destination, \
                 at, content_type, message_id, headers, size, body) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(ids)
    .bind(column(letters, |l| &l.record.submission_id))
    .bind(column(letters, |l| &l.record.platform))
    .bind(column(letters, |l| &l.record.reason))
    .bind(column(letters, |l| &l.record.field))
    .bind(column(letters, |l| &l.record.detail))
    .bind(column(letters, |l| &l.record.service))
    .bind(column(letters, |l| &l.record.ars))
    .bind(column(letters, |l| &l.record.destination))
    .bind(at)
    .bind(column(letters, |l| &l.record.content_type))
    .bind(column(letters, |l| &l.record.message_id))
    .bind(column(letters, |l| &l.record.headers))
    .bind(sizes)
    .bind(stored_at)
    .bind(bodies)
    .execute(pool)
    .await
    .map_err(StoreError::query("insert dead letters"))?;
    Ok(())
}

const DEAD_LETTER_COLUMNS: &str = "id::text, submission_id, platform, reason, field, detail, \
     service, ars, destination, (extract(epoch FROM dead_lettered_at) * 1000000)::int8, \
     content_type, message_id, headers, body_bytes, \
     (extract(epoch FROM stored_at) * 1000000)::int8, state, \
     (extract(epoch FROM state_changed_at) * 1000000)::int8, state_changed_by, replays::int8";

pub(super) async fn record_events(pool: &PgPool, events: &[TraceEvent]) -> Result<(), StoreError> {
    let at: Vec<i64> = events.iter().map(|e| to_micros(e.at)).collect();
    // Ordered by position so that seq follows the order given.
    sqlx::query(
        "INSERT INTO trace_events (submission_id, at, event, platform, destination, detail) \
         SELECT sub, timestamptz 'epoch' + us * interval '1 microsecond', event, platform, \
             destination, detail \
         FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[]) \
             WITH ORDINALITY AS batch(sub, us, event, platform, destination, detail, pos) \
         ORDER BY pos",
    )
    .bind(column(events, |e| &e.submission_id))
    .bind(at)
    .bind(column(events, |e| &e.event))
    .bind(column(events, |e| &e.platform))
    .bind(column(events, |e| &e.destination))
    .bind(column(events, |e| &e.detail))
    .execute(pool)
    .await
    .map_err(StoreError::query("record events"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// What the shared queries (`common::queries!`) need that differs on PostgreSQL

super::common::queries!(PgPool, Postgres, sqlx::postgres::PgRow, PgConnection);

/// Times are timestamptz columns, exchanged as microseconds since the epoch.
const INSERT_AUDIT: &str = "INSERT INTO audit_log (at, actor, actor_scope, action, object, \
     before_json, after_json, concerns_lands, concerns_destinations) \
     VALUES (timestamptz 'epoch' + $1 * interval '1 microsecond', \
     $2, $3, $4, $5, $6, $7, $8, $9)";
const SELECT_AUDIT: &str = "SELECT id, (extract(epoch FROM at) * 1000000)::int8, actor, \
     actor_scope, action, object, before_json, after_json FROM audit_log";
const SELECT_TRACE: &str = "SELECT submission_id, (extract(epoch FROM at) * 1000000)::int8, \
     event, platform, destination, detail \
     FROM trace_events WHERE submission_id = $1 ORDER BY at, seq";

/// UUIDs are uuid columns.
fn db_uuid(id: Uuid) -> Uuid {
    id
}

/// One snapshot for every statement of the transaction.
async fn begin_snapshot(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
}

/// UUIDs bound as a uuid array.
fn db_uuids(ids: &[Uuid]) -> &[Uuid] {
    ids
}

/// A uuid column.
fn row_uuid(row: &sqlx::postgres::PgRow, i: usize, op: &'static str) -> Result<Uuid, StoreError> {
    row.try_get(i).map_err(StoreError::query(op))
}

/// The version row's lock, taken by the bump, orders concurrent changes from several
/// instances; each sees its own new version.
async fn begin_write(pool: &PgPool) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin().await
}
