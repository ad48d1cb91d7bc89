//! The deduplication store against real databases: every test below runs twice, against
//! SQLite in a temporary directory and against PostgreSQL in a schema of its own.
//!
//! PostgreSQL is expected at `postgres://ozg:ozg@127.0.0.1:5432/ozg_test` (deploy/local/postgres.sh creates it), or at
//! `OZG_TEST_POSTGRES_URL`. No server, no pass: the PostgreSQL tests fail with a message
//! that says so rather than being skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use ozg_gateway::store::{
    self, DEFAULT_WINDOW, Deduplicator, DeliveryRecord, Fingerprint, Seen, Store, StoreError,
    fingerprint,
};
use sqlx::{Connection, Executor, PgConnection, Row};
use uuid::Uuid;

const POSTGRES: &str = "postgres://ozg:ozg@127.0.0.1:5432/ozg_test";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Guards against a hang, not a performance claim: generous on a loaded 2-core machine.
const HANG: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Harness

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Where one test's store lives; the harness removes it when the test ends.
#[derive(Clone, Debug)]
struct Db {
    backend: Backend,
    url: String,
    /// PostgreSQL only: the schema the URL's search_path points at.
    schema: Option<String>,
}

impl Db {
    async fn open(&self) -> Store {
        let store = store::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {:?} store: {e}", self.backend));
        let kind = match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        };
        assert_eq!(store.kind(), kind);
        store
    }
}

fn postgres_url() -> String {
    std::env::var("OZG_TEST_POSTGRES_URL").unwrap_or_else(|_| POSTGRES.to_owned())
}

async fn postgres_admin() -> PgConnection {
    let url = postgres_url();
    match PgConnection::connect(&url).await {
        Ok(conn) => conn,
        Err(e) => panic!(
            "\n\nPostgreSQL does not answer at {}: {e}\n\
             The store tests run against a real PostgreSQL (trust auth, database `test`); \
             start one (e.g. `service postgresql start`) or point OZG_TEST_POSTGRES_URL at \
             one. These tests are never skipped.\n",
            store::redact_url(&url)
        ),
    }
}

static SCHEMAS: AtomicUsize = AtomicUsize::new(0);

/// Runs `test` against a fresh store of `backend` and removes the store afterwards, also
/// when the test panics.
async fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()>,
{
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            // A directory that does not exist yet: open must create it.
            let url = format!("sqlite://{}/nested/dir/dedup.db", dir.path().display());
            test(Db {
                backend,
                url,
                schema: None,
            })
            .await;
            drop(dir);
        }
        Backend::Postgres => {
            let schema = format!(
                "ozgtest_{}_{}",
                std::process::id(),
                SCHEMAS.fetch_add(1, Ordering::SeqCst)
            );
            let mut admin = postgres_admin().await;
            admin
                .execute(format!("CREATE SCHEMA {schema}").as_str())
                .await
                .unwrap();
            let base = postgres_url();
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
            let outcome = AssertUnwindSafe(test(Db {
                backend,
                url,
                schema: Some(schema.clone()),
            }))
            .catch_unwind()
            .await;
            admin
                .execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
                .await
                .unwrap();
            let _ = admin.close().await;
            if let Err(panic) = outcome {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// Declares each test once per backend: `sqlite::NAME` and `postgres::NAME`.
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::run(super::Backend::Sqlite, super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::run(super::Backend::Postgres, super::$name).await;
                }
            )*
        }
    };
}

store_tests!(
    new_id_is_new,
    recorded_id_is_delivered_with_its_destination,
    same_id_other_fingerprint_is_a_conflict,
    record_older_than_the_window_is_new,
    later_record_overwrites,
    purge_removes_old_rows_and_counts_them,
    batch_check_answers_in_order,
    reopening_keeps_the_records,
    deduplicator_handles_many_concurrent_checks_and_records,
    deduplicator_check_sees_a_pending_record,
    deduplicator_shutdown_flushes_queued_records,
);

// ---------------------------------------------------------------------------------------
// Helpers

/// Now, cut to whole microseconds: what the stores keep.
fn now() -> SystemTime {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros();
    UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap())
}

fn rec(id: Uuid, body: &str, destination: &str, delivered_at: SystemTime) -> DeliveryRecord {
    DeliveryRecord {
        submission_id: id,
        fingerprint: fingerprint(body.as_bytes()),
        destination: destination.to_owned(),
        delivered_at,
    }
}

fn delivered(destination: &str, delivered_at: SystemTime) -> Seen {
    Seen::Delivered {
        destination: destination.to_owned(),
        delivered_at,
    }
}

async fn check_one(store: &Store, id: Uuid, fp: Fingerprint) -> Seen {
    let mut seen = store.check(&[(id, fp)], DEFAULT_WINDOW).await.unwrap();
    assert_eq!(seen.len(), 1);
    seen.remove(0)
}

// ---------------------------------------------------------------------------------------
// Store

async fn new_id_is_new(db: Db) {
    let store = db.open().await;
    assert_eq!(
        check_one(&store, Uuid::new_v4(), fingerprint(b"x")).await,
        Seen::New
    );
    assert_eq!(store.check(&[], DEFAULT_WINDOW).await.unwrap(), []);
    store.close().await;
}

async fn recorded_id_is_delivered_with_its_destination(db: Db) {
    let store = db.open().await;
    let id = Uuid::new_v4();
    let at = now();
    // Quotes, backslash and umlauts: destinations travel through SQL parameters (and JSON
    // for SQLite) and must come back unchanged.
    let destination = "bauamt-\"münchen\"\\süd";
    let record = rec(id, "antrag", destination, at);
    store.record(std::slice::from_ref(&record)).await.unwrap();

    assert_eq!(
        check_one(&store, id, record.fingerprint).await,
        delivered(destination, at)
    );
    store.close().await;
}

async fn same_id_other_fingerprint_is_a_conflict(db: Db) {
    let store = db.open().await;
    let id = Uuid::new_v4();
    let at = now();
    store
        .record(&[rec(id, "antrag", "bauamt", at)])
        .await
        .unwrap();

    assert_eq!(
        check_one(&store, id, fingerprint(b"anderer antrag")).await,
        Seen::Conflict {
            destination: "bauamt".into(),
            delivered_at: at,
        }
    );
    store.close().await;
}

async fn record_older_than_the_window_is_new(db: Db) {
    let store = db.open().await;
    let id = Uuid::new_v4();
    let at = now() - 8 * DAY;
    let record = rec(id, "antrag", "bauamt", at);
    store.record(std::slice::from_ref(&record)).await.unwrap();

    let fp = record.fingerprint;
    assert_eq!(
        store.check(&[(id, fp)], 7 * DAY).await.unwrap(),
        [Seen::New]
    );
    // Out of the window, not gone: a wider window still finds it, conflict included.
    assert_eq!(
        store.check(&[(id, fp)], 9 * DAY).await.unwrap(),
        [delivered("bauamt", at)]
    );
    assert_eq!(
        store
            .check(&[(id, fingerprint(b"other"))], 7 * DAY)
            .await
            .unwrap(),
        [Seen::New]
    );
    store.close().await;
}

async fn later_record_overwrites(db: Db) {
    let store = db.open().await;
    let id = Uuid::new_v4();
    let first = now() - DAY;
    let second = now();
    store
        .record(&[rec(id, "v1", "bauamt", first)])
        .await
        .unwrap();
    store
        .record(&[rec(id, "v2", "ordnungsamt", second)])
        .await
        .unwrap();
    assert_eq!(
        check_one(&store, id, fingerprint(b"v2")).await,
        delivered("ordnungsamt", second)
    );

    // Within one batch the last record for an id wins, too.
    let other = Uuid::new_v4();
    store
        .record(&[
            rec(other, "a", "eins", first),
            rec(id, "v3", "standesamt", second),
            rec(other, "b", "zwei", second),
        ])
        .await
        .unwrap();
    assert_eq!(
        store
            .check(
                &[(other, fingerprint(b"b")), (id, fingerprint(b"v3"))],
                DEFAULT_WINDOW
            )
            .await
            .unwrap(),
        [delivered("zwei", second), delivered("standesamt", second)]
    );
    store.close().await;
}

async fn purge_removes_old_rows_and_counts_them(db: Db) {
    let store = db.open().await;
    let old: Vec<DeliveryRecord> = (0..3)
        .map(|i| rec(Uuid::new_v4(), "alt", "bauamt", now() - (10 + i) * DAY))
        .collect();
    let recent: Vec<DeliveryRecord> = (0..2)
        .map(|i| rec(Uuid::new_v4(), "neu", "bauamt", now() - i * DAY))
        .collect();
    store.record(&old).await.unwrap();
    store.record(&recent).await.unwrap();

    assert_eq!(store.purge(SystemTime::now() - 7 * DAY).await.unwrap(), 3);
    assert_eq!(store.purge(SystemTime::now() - 7 * DAY).await.unwrap(), 0);

    // A window wide enough to see the purged rows, had they survived.
    let all: Vec<(Uuid, Fingerprint)> = old
        .iter()
        .chain(&recent)
        .map(|r| (r.submission_id, r.fingerprint))
        .collect();
    let seen = store.check(&all, 365 * DAY).await.unwrap();
    let expected: Vec<Seen> = old
        .iter()
        .map(|_| Seen::New)
        .chain(
            recent
                .iter()
                .map(|r| delivered(&r.destination, r.delivered_at)),
        )
        .collect();
    assert_eq!(seen, expected);
    store.close().await;
}

async fn batch_check_answers_in_order(db: Db) {
    let store = db.open().await;
    let at = now();
    let ids: Vec<Uuid> = (0..600).map(|_| Uuid::new_v4()).collect();
    // Every second id delivered, to a destination named after its position.
    let records: Vec<DeliveryRecord> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(i, id)| rec(*id, &format!("body {i}"), &format!("dest-{i}"), at))
        .collect();
    store.record(&records).await.unwrap();

    // Asked in reverse, every fourth delivered one with another body, and one id twice.
    let mut ask: Vec<(Uuid, Fingerprint)> = ids
        .iter()
        .enumerate()
        .rev()
        .map(|(i, id)| {
            let body = if i % 4 == 2 {
                "changed".to_owned()
            } else {
                format!("body {i}")
            };
            (*id, fingerprint(body.as_bytes()))
        })
        .collect();
    ask.push((ids[0], fingerprint(b"body 0")));

    let seen = store.check(&ask, DEFAULT_WINDOW).await.unwrap();
    assert_eq!(seen.len(), ask.len());
    for (pos, i) in (0..ids.len()).rev().enumerate() {
        let want = match (i % 2, i % 4) {
            (1, _) => Seen::New,
            (_, 2) => Seen::Conflict {
                destination: format!("dest-{i}"),
                delivered_at: at,
            },
            _ => delivered(&format!("dest-{i}"), at),
        };
        assert_eq!(seen[pos], want, "id #{i} asked at position {pos}");
    }
    assert_eq!(seen[ask.len() - 1], delivered("dest-0", at));
    store.close().await;
}

async fn reopening_keeps_the_records(db: Db) {
    let at = now();
    let direct = rec(Uuid::new_v4(), "direkt", "bauamt", at);
    let batched = rec(Uuid::new_v4(), "gebündelt", "ordnungsamt", at);

    let store = db.open().await;
    store.record(std::slice::from_ref(&direct)).await.unwrap();
    let dedup = Deduplicator::start(store.clone(), DEFAULT_WINDOW, 256, Duration::from_millis(2));
    dedup.record(batched.clone()).await.unwrap();
    dedup.shutdown().await;
    store.close().await;

    // Opening again also runs the migrations again, which must find nothing to do.
    let store = db.open().await;
    let seen = store
        .check(
            &[
                (direct.submission_id, direct.fingerprint),
                (batched.submission_id, batched.fingerprint),
            ],
            DEFAULT_WINDOW,
        )
        .await
        .unwrap();
    assert_eq!(
        seen,
        [delivered("bauamt", at), delivered("ordnungsamt", at)]
    );
    store.close().await;
}

// ---------------------------------------------------------------------------------------
// Deduplicator

async fn deduplicator_handles_many_concurrent_checks_and_records(db: Db) {
    const N: usize = 1_000;
    let store = db.open().await;
    let dedup = Arc::new(Deduplicator::start(
        store.clone(),
        DEFAULT_WINDOW,
        256,
        Duration::from_millis(2),
    ));
    let at = now();
    let records: Vec<DeliveryRecord> = (0..N)
        .map(|i| {
            rec(
                Uuid::new_v4(),
                &format!("body {i}"),
                &format!("dest-{i}"),
                at,
            )
        })
        .collect();

    let tasks: Vec<_> = records
        .iter()
        .cloned()
        .map(|record| {
            let dedup = Arc::clone(&dedup);
            tokio::spawn(async move {
                let (id, fp) = (record.submission_id, record.fingerprint);
                assert_eq!(dedup.check(id, fp).await.unwrap(), Seen::New);
                let destination = record.destination.clone();
                dedup.record(record).await.unwrap();
                // Committed now; the redelivery's check must see it.
                assert_eq!(
                    dedup.check(id, fp).await.unwrap(),
                    delivered(&destination, at)
                );
            })
        })
        .collect();
    tokio::time::timeout(HANG, futures_util::future::try_join_all(tasks))
        .await
        .expect("1,000 checks and records did not finish")
        .unwrap();

    // All in the store itself, asked in one call.
    let ask: Vec<(Uuid, Fingerprint)> = records
        .iter()
        .map(|r| (r.submission_id, r.fingerprint))
        .collect();
    let seen = store.check(&ask, DEFAULT_WINDOW).await.unwrap();
    let expected: Vec<Seen> = records
        .iter()
        .map(|r| delivered(&r.destination, at))
        .collect();
    assert_eq!(seen, expected);

    Arc::try_unwrap(dedup)
        .expect("every task has ended")
        .shutdown()
        .await;
    store.close().await;
}

async fn deduplicator_check_sees_a_pending_record(db: Db) {
    let store = db.open().await;
    // A batch is written when it holds two requests or after a minute: the first record
    // stays pending for as long as this test needs. (So would a check that misses the
    // pending records: this test asks only about the pending one.)
    let dedup = Deduplicator::start(store.clone(), DEFAULT_WINDOW, 2, Duration::from_secs(60));
    let at = now();
    let first = rec(Uuid::new_v4(), "antrag", "bauamt", at);
    let (id, fp) = (first.submission_id, first.fingerprint);

    let second = rec(Uuid::new_v4(), "zweiter", "ordnungsamt", at);

    // The pinned record future borrows `dedup`; its block ends before the shutdown.
    let (a, b) = {
        let mut pending = pin!(dedup.record(first));
        assert!(
            futures_util::poll!(&mut pending).is_pending(),
            "record resolved before its batch was written"
        );
        // Not in the store yet, so the answers below can only come from the pending record.
        assert_eq!(check_one(&store, id, fp).await, Seen::New);

        let redelivery = tokio::time::timeout(HANG, dedup.check(id, fp)).await;
        assert_eq!(redelivery.unwrap().unwrap(), delivered("bauamt", at));
        let republished = tokio::time::timeout(HANG, dedup.check(id, fingerprint(b"other"))).await;
        assert_eq!(
            republished.unwrap().unwrap(),
            Seen::Conflict {
                destination: "bauamt".into(),
                delivered_at: at,
            }
        );

        // A second record fills the batch; both are written and both callers hear so.
        tokio::time::timeout(HANG, async {
            tokio::join!(pending, dedup.record(second.clone()))
        })
        .await
        .expect("a full batch was not written")
    };
    a.unwrap();
    b.unwrap();
    assert_eq!(
        store
            .check(
                &[(id, fp), (second.submission_id, second.fingerprint)],
                DEFAULT_WINDOW
            )
            .await
            .unwrap(),
        [delivered("bauamt", at), delivered("ordnungsamt", at)]
    );
    dedup.shutdown().await;
    store.close().await;
}

async fn deduplicator_shutdown_flushes_queued_records(db: Db) {
    let store = db.open().await;
    // Nothing would be written for an hour but for the shutdown.
    let dedup = Deduplicator::start(
        store.clone(),
        DEFAULT_WINDOW,
        10_000,
        Duration::from_secs(3600),
    );
    let at = now();
    let records: Vec<DeliveryRecord> = (0..50)
        .map(|i| rec(Uuid::new_v4(), &format!("body {i}"), "bauamt", at))
        .collect();
    for record in &records {
        // Queued, and then the caller stops waiting: the record must be written anyway.
        assert!(dedup.record(record.clone()).now_or_never().is_none());
    }
    let ask: Vec<(Uuid, Fingerprint)> = records
        .iter()
        .map(|r| (r.submission_id, r.fingerprint))
        .collect();
    assert!(
        store
            .check(&ask, DEFAULT_WINDOW)
            .await
            .unwrap()
            .iter()
            .all(|seen| *seen == Seen::New)
    );

    tokio::time::timeout(HANG, dedup.shutdown())
        .await
        .expect("shutdown sat out the batch delay instead of flushing");

    let seen = store.check(&ask, DEFAULT_WINDOW).await.unwrap();
    assert!(seen.iter().all(|seen| *seen == delivered("bauamt", at)));
    store.close().await;
}

// ---------------------------------------------------------------------------------------
// One backend only

#[tokio::test]
async fn sqlite_store_uses_wal_in_a_created_directory() {
    run(Backend::Sqlite, |db: Db| async move {
        let store = db.open().await;
        store.close().await;
        let path = db.url.trim_start_matches("sqlite://").to_owned();
        assert!(std::path::Path::new(&path).is_file(), "{path} not created");
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let _ = conn.close().await;
    })
    .await;
}

#[tokio::test]
async fn postgres_store_lives_in_the_search_path_schema() {
    run(Backend::Postgres, |db: Db| async move {
        let store = db.open().await;
        store.close().await;
        let schema = db.schema.clone().unwrap();
        let mut admin = postgres_admin().await;
        let row = sqlx::query(
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema = $1 AND table_name = 'delivered_submissions'",
        )
        .bind(&schema)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert_eq!(row.get::<i64, _>(0), 1, "table not in schema {schema}");
        let _ = admin.close().await;
    })
    .await;
}

#[tokio::test]
async fn postgres_missing_schema_fails_to_open() {
    let url = format!(
        "{}{}options=-csearch_path%3Dozgtest_does_not_exist",
        postgres_url(),
        if postgres_url().contains('?') {
            '&'
        } else {
            '?'
        }
    );
    // Make sure the server is there, so that the failure below is the schema's.
    let _ = postgres_admin().await.close().await;
    let error = store::open(&url).await.unwrap_err();
    assert!(matches!(error, StoreError::Migrate { .. }), "{error:?}");
}
