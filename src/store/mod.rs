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

/// `function(pool, args…)` of the backend module that `store`'s pool belongs to, awaited:
/// the one place that dispatches a call to the SQLite or the PostgreSQL code.
macro_rules! on_backend {
    ($store:expr, $function:ident($($arg:expr),* $(,)?)) => {
        match &$store.backend {
            Backend::Sqlite(pool) => sqlite::$function(pool, $($arg),*).await,
            Backend::Postgres(pool) => postgres::$function(pool, $($arg),*).await,
        }
    };
}

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
mod rows;
mod sqlite;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use uuid::Uuid;

pub use admin::{
    AuditEntry, AuditFilter, AuditRecord, AuditVisible, Concerns, DeadLetter, DeadLetterFilter,
    DeadLetterGroup, DeadLetterMessage, DeadLetterRecord, DeadLetterState, DirectoryChange,
    NewAudit, NewDeadLetter, StoredDirectory, TraceEvent, UnknownDeadLetterState, Visible,
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
        let rows = on_backend!(self, fetch(&distinct));
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
        let written = on_backend!(self, upsert(&records));
        self.kept(written)
    }

    /// Deletes the records delivered before `older_than`; returns how many.
    pub async fn purge(&self, older_than: SystemTime) -> Result<u64, StoreError> {
        let cutoff = to_micros(older_than);
        on_backend!(self, purge(cutoff))
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

/// The admin API's part of the store; see admin.rs for the types. Times are taken from the
/// gateway's clock (`SystemTime::now()`), not the database's.
impl Store {
    /// Everything the directory tables hold, sorted (destinations by id, routes by
    /// (service, region), services by key, in byte order), with the directory version, all
    /// read from one snapshot.
    pub async fn load_directory(&self) -> Result<StoredDirectory, StoreError> {
        let directory = on_backend!(self, load_directory())?;
        Ok(directory.sorted())
    }

    /// The directory version: raised by every applied change, so that other instances
    /// sharing a PostgreSQL store can poll it to notice changes. 0 before the first.
    pub async fn directory_version(&self) -> Result<i64, StoreError> {
        on_backend!(self, directory_version())
    }

    /// Applies `change`, raises the version and writes `audit`, in one transaction; returns
    /// the new version. Put inserts or replaces. Deleting an entry that is not there fails
    /// with [`StoreError::NotFound`], and then nothing is written: no version bump, no audit
    /// row (the caller can audit the failed attempt with [`audit`](Self::audit)).
    pub async fn apply_directory_change(
        &self,
        change: DirectoryChange,
        audit: NewAudit,
    ) -> Result<i64, StoreError> {
        let at = to_micros(SystemTime::now());
        let applied = on_backend!(self, apply_directory_change(&change, &audit, at));
        self.kept(applied)
    }

    /// Writes an audit row on its own (payload access, replay, discard, pause/resume).
    pub async fn audit(&self, entry: NewAudit) -> Result<(), StoreError> {
        let at = to_micros(SystemTime::now());
        on_backend!(self, audit(&entry, at))
    }

    /// Audit rows matching `filter`, newest (highest id) first, at most `limit`; for the
    /// next page pass the last id of this one as `before_id` (rows with a lower id).
    pub async fn list_audit(
        &self,
        filter: &AuditFilter,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let conditions = filter.conditions(before_id);
        on_backend!(self, list_audit(&conditions, limit))
    }

    /// Stores dead letters taken off the dead-letter queue, all or none. A letter whose id
    /// is already stored is skipped, not an error: the queue may deliver one again.
    pub async fn insert_dead_letters(&self, letters: &[NewDeadLetter]) -> Result<(), StoreError> {
        if letters.is_empty() {
            return Ok(());
        }
        let stored_at = to_micros(SystemTime::now());
        // Acked off the queue after this: an SQLite file deleted meanwhile would take the
        // letters with it.
        let stored = on_backend!(self, insert_dead_letters(letters, stored_at));
        self.kept(stored)
    }

    /// Dead letters matching `filter`, oldest first by `(dead_lettered_at, id)`, at most
    /// `limit`, without their bodies. For the next page pass the `(dead_lettered_at, id)`
    /// of this page's last row as `after`.
    pub async fn list_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        after: Option<(SystemTime, Uuid)>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let conditions = filter.conditions(after);
        on_backend!(self, list_dead_letters(&conditions, limit))
    }

    /// How many dead letters match `filter`.
    pub async fn count_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64, StoreError> {
        let conditions = filter.conditions(None);
        let count = on_backend!(self, count_dead_letters(&conditions))?;
        u64::try_from(count).map_err(|_| StoreError::Corrupt {
            detail: format!("dead letter count {count} is negative"),
        })
    }

    /// How many dead letters match `filter`, per value of `group`, most first (then by
    /// value, byte order).
    pub async fn count_dead_letters_by(
        &self,
        filter: &DeadLetterFilter,
        group: DeadLetterGroup,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let conditions = filter.conditions(None);
        let column = group.column();
        let mut counts = on_backend!(self, count_dead_letters_by(&conditions, column))?;
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(counts)
    }

    /// One dead letter without its body; `None` if there is none with `id` that `visible`
    /// lets through (the same answer either way, so that a caller cannot tell).
    pub async fn get_dead_letter(
        &self,
        id: Uuid,
        visible: &Visible,
    ) -> Result<Option<DeadLetter>, StoreError> {
        let mut conditions = vec![admin::Condition::DeadLetterId(id)];
        conditions.extend(visible.condition());
        let mut found = on_backend!(self, list_dead_letters(&conditions, 1))?;
        Ok(found.pop())
    }

    /// The stored body and the AMQP properties needed to publish the letter again. The body
    /// is personal data: audit the access, never log it.
    pub async fn dead_letter_message(
        &self,
        id: Uuid,
    ) -> Result<Option<DeadLetterMessage>, StoreError> {
        on_backend!(self, dead_letter_message(id))
    }

    /// Moves the `Pending` letters among `ids` to `state`: sets `state_changed_at` to now
    /// and `state_changed_by` to `actor`, and counts a replay for `Replayed`. Returns how
    /// many letters changed. Letters that are not pending are left alone (a replayed or
    /// discarded letter is not replayed or discarded again), and so are unknown ids; a
    /// target of `Pending` changes nothing and returns 0. One statement, so two callers
    /// racing for a letter cannot both move it: the one whose count includes it won, which
    /// makes this usable as a claim before publishing the letter again.
    pub async fn set_dead_letter_state(
        &self,
        ids: &[Uuid],
        state: DeadLetterState,
        actor: &str,
    ) -> Result<u64, StoreError> {
        if ids.is_empty() || state == DeadLetterState::Pending {
            return Ok(0);
        }
        let at = to_micros(SystemTime::now());
        let changed = on_backend!(self, set_dead_letter_state(ids, state, actor, at));
        self.kept(changed)
    }

    /// Deletes the letters that left `Pending` before `older_than` (their bodies hold
    /// personal data); returns how many. Pending letters are kept however old.
    pub async fn purge_dead_letters(&self, older_than: SystemTime) -> Result<u64, StoreError> {
        let cutoff = to_micros(older_than);
        on_backend!(self, purge_dead_letters(cutoff))
    }

    /// Writes trace events in one statement. The hot path goes through [`EventRecorder`].
    pub async fn record_events(&self, events: &[TraceEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        on_backend!(self, record_events(events))
    }

    /// A submission's events in the order they happened: by time, then in the order they
    /// were recorded. The "received" and "forwarded" events of a delivery whose trace is
    /// kept on its record ([`DeliveryRecord::received_at`]) come from that record.
    pub async fn trace(&self, submission_id: &str) -> Result<Vec<TraceEvent>, StoreError> {
        let events = on_backend!(self, trace(submission_id))?;
        let Ok(id) = Uuid::parse_str(submission_id) else {
            return Ok(events);
        };
        let records = on_backend!(self, fetch(&[id]))?;
        let mut merged: Vec<TraceEvent> = Vec::with_capacity(events.len() + 2);
        for record in records {
            let Some(received_at) = record.received_at else {
                continue;
            };
            merged.push(TraceEvent {
                submission_id: submission_id.to_owned(),
                at: received_at,
                event: "received".to_owned(),
                platform: record.platform.clone(),
                destination: String::new(),
                detail: String::new(),
            });
            merged.push(TraceEvent {
                submission_id: submission_id.to_owned(),
                at: record.delivered_at,
                event: "forwarded".to_owned(),
                platform: record.platform,
                destination: record.destination,
                detail: String::new(),
            });
        }
        if merged.is_empty() {
            return Ok(events);
        }
        merged.extend(events);
        // Stable: at the same instant the record's events stay before the later rows.
        merged.sort_by_key(|event| event.at);
        Ok(merged)
    }

    /// Deletes the events that happened before `older_than`; returns how many.
    pub async fn purge_events(&self, older_than: SystemTime) -> Result<u64, StoreError> {
        let cutoff = to_micros(older_than);
        on_backend!(self, purge_events(cutoff))
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
