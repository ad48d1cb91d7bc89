//! Deduplication store: which submission ids went out, where to, and when.
//!
//! A submission that was delivered once must not be delivered again within the window
//! (default 7 days) when the broker redelivers it (the ack was lost) or the platform
//! republishes it. Same id and same body fingerprint within the window is a duplicate
//! ([`Seen::Delivered`]); same id with a different fingerprint is a [`Seen::Conflict`]: the
//! platform reused an id for other content, which an operator has to look at.
//!
//! Two backends behind one [`Store`]: SQLite (embedded, the default: one file, nothing to
//! run) and PostgreSQL (for gateways that run more than one instance). [`Store`] is an enum
//! over the two rather than a trait object: the set of backends is closed and small, static
//! dispatch needs no `async-trait` crate and no boxed futures on the hot path, and adding a
//! backend means one more match arm in each of four methods, which the compiler points out.
//!
//! The hot path does not call [`Store`] directly but goes through [`Deduplicator`], which
//! batches checks and records so that one query serves hundreds of messages.
//!
//! Queries are built with `sqlx::query` at run time, never with the `query!` macros: those
//! need a live database (or prepared offline data) at compile time. Migrations are embedded
//! in the binary and run at [`open`].

mod admin;
mod common;
mod dedup;
mod error;
mod events;
mod fates;
mod file;
mod health;
mod instances;
mod postgres;
mod sqlite;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use uuid::Uuid;

pub use admin::{
    AuditEntry, AuditFilter, AuditVisible, Concerns, DeadLetter, DeadLetterFilter, DeadLetterGroup,
    DeadLetterMessage, DeadLetterState, DirectoryChange, NewAudit, NewDeadLetter, StoredDirectory,
    TraceEvent, UnknownDeadLetterState, Visible,
};
pub use dedup::Deduplicator;
pub use error::StoreError;
pub use events::EventRecorder;
pub use fates::{Answer, Fate};
pub use health::{StoreHealth, StoreStatus};
pub use instances::Instance;

/// How long a delivered submission id is remembered unless configured otherwise.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// SHA-256 of a message body: tells a redelivery (same content) from an id reused for other
/// content.
pub type Fingerprint = [u8; 32];

/// The fingerprint of a message body.
pub fn fingerprint(body: &[u8]) -> Fingerprint {
    Sha256::digest(body).into()
}

/// What the store knows about a submission id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Not delivered within the window (or never).
    New,
    /// Delivered within the window with the same fingerprint: a duplicate.
    Delivered {
        destination: String,
        delivered_at: SystemTime,
    },
    /// Delivered within the window with a different fingerprint: the id was reused.
    Conflict {
        destination: String,
        delivered_at: SystemTime,
    },
}

/// One submission that went out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub submission_id: Uuid,
    pub fingerprint: Fingerprint,
    pub destination: String,
    pub delivered_at: SystemTime,
    /// The origin platform: receipts are reported back to it.
    pub platform: String,
    /// When the submission was taken off its platform's queue, if this delivery's trace
    /// ("received", "forwarded") is kept on the record instead of as trace events: the
    /// first delivery from a platform, the common case, then costs the store one row.
    pub received_at: Option<SystemTime>,
}

/// A connection pool to one of the backends. Cheap to clone: clones share the pool, the
/// health and the SQLite file's lock.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    health: StoreHealth,
    /// An SQLite store in a file: its lock and identity.
    file: Option<Arc<file::DatabaseFile>>,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Opens the store at `url` and brings its schema up to date.
///
/// - `sqlite:///abs/path.db`, `sqlite://relative.db`: the file and its parent directory are
///   created if missing; WAL journal, `synchronous=NORMAL`. The file is locked for this
///   process ([`StoreError::Locked`] names the process holding it) until [`Store::close`],
///   and watched for being deleted or replaced.
/// - `postgres://…`, `postgresql://…`: the table goes into the first schema of the
///   connection's search_path, which the URL can set with `options=-csearch_path%3D<schema>`.
///   That schema must exist. Give the gateway a schema (or database) of its own: sqlx keeps
///   its migration bookkeeping in an unqualified `_sqlx_migrations` table.
pub async fn open(url: &str) -> Result<Store, StoreError> {
    let health = StoreHealth::default();
    let (backend, file) = if url.starts_with("sqlite:") {
        let (pool, file) = sqlite::open(url).await?;
        let file = file.map(Arc::new);
        if let Some(file) = &file {
            file::DatabaseFile::watch(Arc::downgrade(file), health.clone());
        }
        (Backend::Sqlite(pool), file)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        (Backend::Postgres(postgres::open(url).await?), None)
    } else {
        return Err(StoreError::BadUrl {
            url: redact_url(url),
            reason: "unknown scheme; expected sqlite:, postgres:// or postgresql://".into(),
        });
    };
    Ok(Store {
        backend,
        health,
        file,
    })
}

impl Store {
    /// What each `(id, fingerprint)` pair is, in the order given, with one query.
    pub async fn check(
        &self,
        ids: &[(Uuid, Fingerprint)],
        window: Duration,
    ) -> Result<Vec<Seen>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let cutoff = cutoff(window);
        let mut distinct: Vec<Uuid> = ids.iter().map(|(id, _)| *id).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let rows = match &self.backend {
            Backend::Sqlite(pool) => sqlite::fetch(pool, &distinct).await,
            Backend::Postgres(pool) => postgres::fetch(pool, &distinct).await,
        };
        let mut rows = self.failed_why(rows)?;
        rows.sort_unstable_by_key(|row| row.submission_id);
        Ok(ids
            .iter()
            .map(
                |(id, fp)| match rows.binary_search_by_key(id, |row| row.submission_id) {
                    Ok(i) => classify(fp, &rows[i], cutoff),
                    Err(_) => Seen::New,
                },
            )
            .collect())
    }

    /// Writes `records` in one statement; a record for an id already stored replaces it,
    /// and of several records for one id in `records` the last one wins. Succeeds only
    /// when the records are in the store the next start opens: written to an SQLite file
    /// that was deleted or replaced meanwhile is an error.
    pub async fn record(&self, records: &[DeliveryRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let records = last_per_id(records);
        let written = match &self.backend {
            Backend::Sqlite(pool) => sqlite::upsert(pool, &records).await,
            Backend::Postgres(pool) => postgres::upsert(pool, &records).await,
        };
        self.kept(written)
    }

    /// Deletes the records delivered before `older_than`; returns how many.
    pub async fn purge(&self, older_than: SystemTime) -> Result<u64, StoreError> {
        let cutoff = to_micros(older_than);
        match &self.backend {
            Backend::Sqlite(pool) => sqlite::purge(pool, cutoff).await,
            Backend::Postgres(pool) => postgres::purge(pool, cutoff).await,
        }
    }

    /// Whether the store answers the message path; shared by every clone.
    pub fn health(&self) -> &StoreHealth {
        &self.health
    }

    /// A write's result, made an error when the SQLite file that took it is no longer
    /// the one its path names: what it holds would be lost at the next start.
    fn kept<T>(&self, written: Result<T, StoreError>) -> Result<T, StoreError> {
        let Some(file) = &self.file else {
            return written;
        };
        let verified = file.verify(&self.health);
        let value = written?;
        verified.map(|()| value)
    }

    /// A failed operation's result, with the SQLite file's identity checked: a deleted
    /// database directory is a likelier cause of an error than of anything else.
    fn failed_why<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if result.is_err()
            && let Some(file) = &self.file
        {
            let _ = file.verify(&self.health);
        }
        result
    }

    /// "sqlite" or "postgres", for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Closes the pool, waiting for checked-out connections to come back, and releases
    /// the SQLite file's lock. Every clone of this store is closed with it.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(pool) => pool.close().await,
            Backend::Postgres(pool) => pool.close().await,
        }
        if let Some(file) = &self.file {
            file.release();
        }
    }
}

/// What `fp` is against the stored `row`, given the window's `cutoff`.
fn classify(fp: &Fingerprint, row: &DeliveryRecord, cutoff: Option<SystemTime>) -> Seen {
    // A record from the future (clock step on another instance) counts as within the window.
    if cutoff.is_some_and(|cutoff| row.delivered_at < cutoff) {
        return Seen::New;
    }
    let destination = row.destination.clone();
    let delivered_at = row.delivered_at;
    if row.fingerprint == *fp {
        Seen::Delivered {
            destination,
            delivered_at,
        }
    } else {
        Seen::Conflict {
            destination,
            delivered_at,
        }
    }
}

/// Oldest delivery time still within `window`; `None` when the window reaches back past
/// what `SystemTime` can represent, i.e. everything is within it.
fn cutoff(window: Duration) -> Option<SystemTime> {
    SystemTime::now().checked_sub(window)
}

/// Keeps the last record per id, in first-seen order. PostgreSQL refuses an upsert that
/// touches one row twice in a statement, so both backends get a batch without repeats.
fn last_per_id(records: &[DeliveryRecord]) -> Vec<&DeliveryRecord> {
    let mut index: std::collections::HashMap<Uuid, usize> =
        std::collections::HashMap::with_capacity(records.len());
    let mut out: Vec<&DeliveryRecord> = Vec::with_capacity(records.len());
    for record in records {
        match index.get(&record.submission_id) {
            Some(&i) => out[i] = record,
            None => {
                index.insert(record.submission_id, out.len());
                out.push(record);
            }
        }
    }
    out
}

/// Microseconds since the Unix epoch, the stores' time unit (SQLite has no timestamp
/// type; PostgreSQL's timestamptz has microsecond resolution). Saturates far outside any
/// real delivery time.
fn to_micros(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |us| -us),
    }
}

fn from_micros(micros: i64) -> SystemTime {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    let time = if micros >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    };
    time.unwrap_or(UNIX_EPOCH)
}

fn fingerprint_from_bytes(bytes: &[u8], id: &Uuid) -> Result<Fingerprint, StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt {
        detail: format!(
            "submission {id}: fingerprint has {} bytes, expected 32",
            bytes.len()
        ),
    })
}

/// Migrations compiled into the binary, so that a deployment is one file.
#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        let migrations = self
            .0
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into(),
                    false,
                )
            })
            .collect();
        Box::pin(std::future::ready(Ok(migrations)))
    }
}

async fn migrator(
    url: &str,
    migrations: &'static [(i64, &'static str, &'static str)],
) -> Result<Migrator, StoreError> {
    Migrator::new(Embedded(migrations))
        .await
        .map_err(|source| StoreError::Migrate {
            url: redact_url(url),
            source: Arc::new(source),
        })
}

/// `url` with the password (in the user info or a `password=` parameter) replaced by
/// `***`, for error messages and logs. Errs on the side of hiding too much.
pub fn redact_url(url: &str) -> String {
    let mut out = match url.split_once("://") {
        // The last '@' ends the user info; taking the last also covers an unencoded '@',
        // '/' or '?' in the password, which would otherwise leak.
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
                None => url.to_owned(),
            },
            None => url.to_owned(),
        },
        None => url.to_owned(),
    };
    const KEY: &str = "password=";
    let mut from = 0;
    while let Some(found) = out[from..].to_ascii_lowercase().find(KEY) {
        let start = from + found + KEY.len();
        let end = out[start..]
            .find(['&', '#'])
            .map_or(out.len(), |len| start + len);
        out.replace_range(start..end, "***");
        from = start + 3;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_user_info_and_parameters() {
        for (url, want) in [
            (
                "postgres://gw:s3cret@db:5432/ozg",
                "postgres://gw:***@db:5432/ozg",
            ),
            ("postgres://gw:se/cr?et@db/ozg", "postgres://gw:***@db/ozg"),
            ("postgres://gw@db/ozg", "postgres://gw@db/ozg"),
            (
                "postgresql://db/ozg?user=gw&PASSWORD=s3cret&sslmode=disable",
                "postgresql://db/ozg?user=gw&PASSWORD=***&sslmode=disable",
            ),
            (
                "postgres://db/ozg?password=a&password=b",
                "postgres://db/ozg?password=***&password=***",
            ),
            (
                "sqlite:///var/lib/ozg/dedup.db",
                "sqlite:///var/lib/ozg/dedup.db",
            ),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn micros_round_trip() {
        let now = SystemTime::now();
        let micros = to_micros(now);
        let back = from_micros(micros);
        let diff = now.duration_since(back).unwrap_or_default();
        assert!(diff < Duration::from_micros(1));
        assert_eq!(to_micros(UNIX_EPOCH - Duration::from_secs(1)), -1_000_000);
        assert_eq!(from_micros(-1_000_000), UNIX_EPOCH - Duration::from_secs(1));
    }

    #[test]
    fn last_record_per_id_wins() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let rec = |id, destination: &str| DeliveryRecord {
            submission_id: id,
            fingerprint: fingerprint(destination.as_bytes()),
            destination: destination.into(),
            delivered_at: UNIX_EPOCH,
            platform: "p".into(),
            received_at: None,
        };
        let records = [rec(a, "one"), rec(b, "two"), rec(a, "three")];
        let kept: Vec<&str> = last_per_id(&records)
            .iter()
            .map(|r| r.destination.as_str())
            .collect();
        assert_eq!(kept, ["three", "two"]);
    }

    #[test]
    fn fingerprint_is_sha256() {
        assert_eq!(
            hex::encode(fingerprint(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[tokio::test]
    async fn unknown_scheme_is_a_bad_url_without_the_password() {
        let Err(error) = open("mysql://gw:s3cret@db/ozg").await else {
            panic!("mysql URL accepted");
        };
        assert!(matches!(error, StoreError::BadUrl { .. }), "{error:?}");
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }

    #[tokio::test]
    async fn connect_error_does_not_show_the_password() {
        // Port 1 on loopback refuses at once: no server needed for this test.
        let Err(error) = open("postgres://gw:s3cret@127.0.0.1:1/ozg").await else {
            panic!("connected to port 1");
        };
        let mut text = format!("{error} {error:?}");
        let mut source = std::error::Error::source(&error);
        while let Some(inner) = source {
            text.push_str(&format!(" {inner} {inner:?}"));
            source = inner.source();
        }
        assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
        assert!(!text.contains("s3cret"), "{text}");
    }
}
