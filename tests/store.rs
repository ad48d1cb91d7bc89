//! The deduplication store against real databases: every test below runs twice, against
//! SQLite in a temporary directory and against PostgreSQL in a schema of its own.
//!
//! PostgreSQL is expected at `postgres://ozg:ozg@127.0.0.1:5432/ozg_test` (deploy/local/postgres.sh creates it), or at
//! `OZG_TEST_POSTGRES_URL`. No server, no pass: the PostgreSQL tests fail with a message
//! that says so rather than being skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use ozg_gateway::model::{DestinationSpec, RouteSpec, ServiceSpec};
use ozg_gateway::store::{
    self, AuditEntry, AuditFilter, AuditRecord, AuditVisible, Concerns, DEFAULT_WINDOW, DeadLetter,
    DeadLetterFilter, DeadLetterRecord, DeadLetterState, Deduplicator, DeliveryRecord,
    DirectoryChange, EventRecorder, Fingerprint, NewAudit, NewDeadLetter, Seen, Store, StoreError,
    TraceEvent, Visible, fingerprint,
};
use sqlx::{Connection, Row};
use uuid::Uuid;

use common::{PgSchema, postgres_admin, postgres_url, with_search_path};

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
            let schema =
                PgSchema::create(&format!("store{}", SCHEMAS.fetch_add(1, Ordering::SeqCst))).await;
            let outcome = AssertUnwindSafe(test(Db {
                backend,
                url: schema.url.clone(),
                schema: Some(schema.name.clone()),
            }))
            .catch_unwind()
            .await;
            schema.drop().await;
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
    answers_are_recorded_only_from_the_destination_and_only_once,
    unanswered_lists_overdue_and_marks_them_reported,
    overdue_claims_are_disjoint_until_released_or_stale,
    heartbeats_list_every_instance_with_its_latest_counts,
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
    directory_changes_round_trip_with_version_and_audit,
    failed_directory_change_writes_nothing,
    audit_list_filters_and_pages,
    dead_letters_insert_get_and_message,
    dead_letters_list_filters_and_count,
    dead_letters_paging_returns_every_row_once_in_order,
    dead_letter_state_changes_only_pending_letters,
    dead_letter_purge_keeps_pending_and_recent,
    scoped_dead_letters_page_count_and_get_only_what_is_visible,
    scoped_overdue_lists_only_what_is_visible,
    scoped_audit_lists_rows_about_the_scope_and_everyone,
    trace_events_come_back_in_order,
    a_first_delivery_s_trace_comes_from_its_record,
    event_recorder_flushes_on_shutdown,
    event_recorder_batches_many_concurrent_records,
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
        platform: "civento-he".to_owned(),
        received_at: None,
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
// Admin API: directory and audit

fn destination(id: &str, name: &str) -> DestinationSpec {
    DestinationSpec {
        id: id.to_owned(),
        name: name.to_owned(),
        kind: "amqp".to_owned(),
        land: "by".to_owned(),
        broker: "behoerden".to_owned(),
        exchange: format!("ex.{id}"),
        routing_key: format!("rk.\"{id}\"\\ü"),
        receipt_queue: format!("receipts.{id}"),
    }
}

fn route(service: &str, region: &str, destination: &str) -> RouteSpec {
    RouteSpec {
        service: service.to_owned(),
        region: region.to_owned(),
        destination: destination.to_owned(),
    }
}

fn audit(actor: &str, action: &str, object: &str) -> NewAudit {
    NewAudit {
        record: AuditRecord {
            actor: actor.to_owned(),
            actor_scope: "every Land".to_owned(),
            action: action.to_owned(),
            object: object.to_owned(),
            before: None,
            after: Some(format!("{{\"object\":\"{object}\"}}")),
        },
        concerns: Concerns::default(),
    }
}

async fn all_audit(store: &Store) -> Vec<AuditEntry> {
    store
        .list_audit(&AuditFilter::default(), None, 1000)
        .await
        .unwrap()
}

async fn directory_changes_round_trip_with_version_and_audit(db: Db) {
    let store = db.open().await;
    let empty = store.load_directory().await.unwrap();
    assert_eq!(empty, store::StoredDirectory::default());
    assert_eq!(store.directory_version().await.unwrap(), 0);

    let before = now();
    let changes = [
        DirectoryChange::PutDestination(destination("ordnungsamt", "Ordnungsamt")),
        DirectoryChange::PutDestination(destination("bauamt", "Bauamt")),
        DirectoryChange::PutRoute(route("99000001", "09162", "bauamt")),
        DirectoryChange::PutRoute(route("99000001", "09", "ordnungsamt")),
        DirectoryChange::PutRoute(route("10000000", "09162", "bauamt")),
        DirectoryChange::PutService(ServiceSpec {
            key: "99000001".into(),
            name: "Baugenehmigung".into(),
        }),
        // Put of an existing key replaces it.
        DirectoryChange::PutDestination(destination("bauamt", "Bauamt München")),
    ];
    for (i, change) in changes.iter().enumerate() {
        let version = store
            .apply_directory_change(
                change.clone(),
                audit("alice", "directory.put", &format!("#{i}")),
            )
            .await
            .unwrap();
        assert_eq!(version, i64::try_from(i).unwrap() + 1);
    }
    assert_eq!(store.directory_version().await.unwrap(), 7);

    let directory = store.load_directory().await.unwrap();
    assert_eq!(
        directory,
        store::StoredDirectory {
            destinations: vec![
                destination("bauamt", "Bauamt München"),
                destination("ordnungsamt", "Ordnungsamt"),
            ],
            routes: vec![
                route("10000000", "09162", "bauamt"),
                route("99000001", "09", "ordnungsamt"),
                route("99000001", "09162", "bauamt"),
            ],
            services: vec![ServiceSpec {
                key: "99000001".into(),
                name: "Baugenehmigung".into(),
            }],
            version: 7,
        }
    );

    for change in [
        DirectoryChange::DeleteRoute {
            service: "99000001".into(),
            region: "09".into(),
        },
        DirectoryChange::DeleteDestination {
            id: "ordnungsamt".into(),
        },
        DirectoryChange::DeleteService {
            key: "99000001".into(),
        },
    ] {
        store
            .apply_directory_change(change, audit("bob", "directory.delete", "x"))
            .await
            .unwrap();
    }
    let directory = store.load_directory().await.unwrap();
    assert_eq!(
        directory.destinations,
        [destination("bauamt", "Bauamt München")]
    );
    assert_eq!(
        directory.routes,
        [
            route("10000000", "09162", "bauamt"),
            route("99000001", "09162", "bauamt")
        ]
    );
    assert_eq!(directory.services, []);
    assert_eq!(directory.version, 10);

    // One audit row per change, newest first, with the store's time.
    let rows = all_audit(&store).await;
    assert_eq!(rows.len(), 10);
    let objects: Vec<&str> = rows.iter().map(|r| r.record.object.as_str()).collect();
    assert_eq!(objects[3..], ["#6", "#5", "#4", "#3", "#2", "#1", "#0"]);
    assert!(rows.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(rows[0].record.actor, "bob");
    assert_eq!(rows[9].record.after.as_deref(), Some("{\"object\":\"#0\"}"));
    assert_eq!(rows[9].record.before, None);
    assert!(
        rows.iter()
            .all(|r| r.at >= before && r.at <= SystemTime::now())
    );

    // The directory survives reopening.
    store.close().await;
    let store = db.open().await;
    assert_eq!(store.load_directory().await.unwrap(), directory);
    store.close().await;
}

async fn failed_directory_change_writes_nothing(db: Db) {
    let store = db.open().await;
    store
        .apply_directory_change(
            DirectoryChange::PutRoute(route("99000001", "09162", "bauamt")),
            audit("alice", "directory.put_route", "route"),
        )
        .await
        .unwrap();

    for change in [
        DirectoryChange::DeleteDestination { id: "fehlt".into() },
        DirectoryChange::DeleteRoute {
            service: "99000001".into(),
            region: "09".into(),
        },
        DirectoryChange::DeleteService {
            key: "fehlt".into(),
        },
    ] {
        let error = store
            .apply_directory_change(change.clone(), audit("mallory", "directory.delete", "x"))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, StoreError::NotFound { what } if what.contains("fehlt") || what.contains("\"09\"")),
            "{change:?}: {error:?}"
        );
    }
    // No version bump and no audit row for any of the failed deletes.
    assert_eq!(store.directory_version().await.unwrap(), 1);
    let rows = all_audit(&store).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].record.actor, "alice");
    assert_eq!(
        store.load_directory().await.unwrap().routes,
        [route("99000001", "09162", "bauamt")]
    );

    // A standalone audit row neither needs nor raises the version.
    store
        .audit(audit("mallory", "dead_letter.read", "dl/1"))
        .await
        .unwrap();
    assert_eq!(store.directory_version().await.unwrap(), 1);
    assert_eq!(all_audit(&store).await.len(), 2);
    store.close().await;
}

async fn audit_list_filters_and_pages(db: Db) {
    let store = db.open().await;
    let actors = ["alice", "bob", "carol"];
    let actions = [
        "directory.put_route",
        "directory.delete_route",
        "dead_letter.replay",
    ];
    for i in 0..30 {
        store
            .audit(audit(
                actors[i % 3],
                actions[i % 3],
                &format!("obj/{}/{i}", i % 2),
            ))
            .await
            .unwrap();
    }
    let middle = now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    for i in 30..35 {
        store
            .audit(audit(
                "dave",
                "Directory.put_route",
                &format!("obj/{}/{i}", i % 2),
            ))
            .await
            .unwrap();
    }
    let list = |filter: AuditFilter| {
        let store = store.clone();
        async move {
            store
                .list_audit(&filter, None, 1000)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.record.object)
                .collect::<Vec<String>>()
        }
    };
    let objects = |range: std::ops::Range<usize>, keep: fn(usize) -> bool| -> Vec<String> {
        range
            .rev()
            .filter(|i| keep(*i))
            .map(|i| format!("obj/{}/{i}", i % 2))
            .collect()
    };

    assert_eq!(
        list(AuditFilter {
            actor: Some("bob".into()),
            ..AuditFilter::default()
        })
        .await,
        objects(0..30, |i| i % 3 == 1)
    );
    // Prefixes are case-sensitive and take no wildcards.
    assert_eq!(
        list(AuditFilter {
            action_prefix: Some("directory.".into()),
            ..AuditFilter::default()
        })
        .await,
        objects(0..30, |i| i % 3 != 2)
    );
    assert_eq!(
        list(AuditFilter {
            action_prefix: Some("directory%".into()),
            ..AuditFilter::default()
        })
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        list(AuditFilter {
            action_prefix: Some("dead_letter".into()),
            object_prefix: Some("obj/1/".into()),
            ..AuditFilter::default()
        })
        .await,
        objects(0..30, |i| i % 3 == 2 && i % 2 == 1)
    );
    assert_eq!(
        list(AuditFilter {
            since: Some(middle),
            ..AuditFilter::default()
        })
        .await,
        objects(30..35, |_| true)
    );
    assert_eq!(
        list(AuditFilter {
            until: Some(middle),
            actor: Some("alice".into()),
            ..AuditFilter::default()
        })
        .await,
        objects(0..30, |i| i % 3 == 0)
    );

    // Pages of 4: every row once, newest first.
    let mut seen = Vec::new();
    let mut before_id = None;
    loop {
        let page = store
            .list_audit(&AuditFilter::default(), before_id, 4)
            .await
            .unwrap();
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        before_id = Some(last.id);
        seen.extend(page.into_iter().map(|e| e.record.object));
    }
    assert_eq!(seen, objects(0..35, |_| true));
    assert_eq!(
        store
            .list_audit(&AuditFilter::default(), None, 0)
            .await
            .unwrap(),
        []
    );
    store.close().await;
}

// ---------------------------------------------------------------------------------------
// Admin API: dead letters

fn letter(i: usize, at: SystemTime) -> NewDeadLetter {
    NewDeadLetter {
        record: DeadLetterRecord {
            id: Uuid::new_v4(),
            submission_id: format!("sub-{i}"),
            platform: ["by", "nw"][i % 2].to_owned(),
            reason: ["no-route", "invalid", "destination-unavailable"][i % 3].to_owned(),
            field: "routing.ars".to_owned(),
            detail: format!("detail {i}"),
            service: ["99000001", "10000000"][i % 2].to_owned(),
            ars: "091620000000".to_owned(),
            destination: ["bauamt", "ordnungsamt", ""][i % 3].to_owned(),
            dead_lettered_at: at,
            content_type: "application/json".to_owned(),
            message_id: format!("msg-{i}"),
            headers: format!("{{\"x-ozg-reason\":\"r{i}\"}}"),
        },
        // Every byte value, and an empty body for one letter.
        body: if i == 0 {
            Vec::new()
        } else {
            (0..=255u8).cycle().take(i * 100).collect()
        },
    }
}

/// What the store should give back for `new` while it is pending.
fn stored(new: &NewDeadLetter, stored_at: SystemTime) -> DeadLetter {
    DeadLetter {
        record: new.record.clone(),
        body_bytes: u64::try_from(new.body.len()).unwrap(),
        stored_at,
        state: DeadLetterState::Pending,
        state_changed_at: None,
        state_changed_by: String::new(),
        replays: 0,
    }
}

/// `n` letters a second apart, oldest first, stored.
async fn insert_letters(store: &Store, n: usize) -> Vec<NewDeadLetter> {
    let start = now() - DAY;
    let letters: Vec<NewDeadLetter> = (0..n)
        .map(|i| letter(i, start + Duration::from_secs(u64::try_from(i).unwrap())))
        .collect();
    store.insert_dead_letters(&letters).await.unwrap();
    letters
}

fn ids(letters: &[DeadLetter]) -> Vec<Uuid> {
    letters.iter().map(|l| l.record.id).collect()
}

fn only(platforms: &[&str], destinations: &[&str]) -> Visible {
    Visible::Only {
        platforms: platforms.iter().map(|p| (*p).to_owned()).collect(),
        destinations: destinations.iter().map(|d| (*d).to_owned()).collect(),
    }
}

/// A scope is part of the query: a page holds `limit` visible letters (not `limit` letters
/// filtered down afterwards), the count counts visible ones, and a letter that is not
/// visible is not there at all.
async fn scoped_dead_letters_page_count_and_get_only_what_is_visible(db: Db) {
    let store = db.open().await;
    // Platforms by, nw alternate; destinations bauamt, ordnungsamt, '' rotate.
    let letters = insert_letters(&store, 30).await;
    type Case = (&'static str, Visible, fn(usize) -> bool);
    let cases: [Case; 6] = [
        ("everything", Visible::All, |_| true),
        ("platform by", only(&["by"], &[]), |i| i % 2 == 0),
        (
            "destination ordnungsamt",
            only(&[], &["ordnungsamt"]),
            |i| i % 3 == 1,
        ),
        (
            "platform by or destination ordnungsamt",
            only(&["by"], &["ordnungsamt"]),
            |i| i % 2 == 0 || i % 3 == 1,
        ),
        ("nothing named", only(&[], &[]), |_| false),
        (
            "names that match no row",
            only(&["civento-th"], &["th-erfurt"]),
            |_| false,
        ),
    ];
    for (label, visible, keep) in cases {
        let want: Vec<Uuid> = letters
            .iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, l)| l.record.id)
            .collect();
        let filter = DeadLetterFilter {
            visible: visible.clone(),
            ..DeadLetterFilter::default()
        };
        // Pages of 4 give every visible letter once, in order, and full pages while
        // there are more.
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.list_dead_letters(&filter, after, 4).await.unwrap();
            if seen.len() + 4 <= want.len() {
                assert_eq!(page.len(), 4, "{label}: a short page before the end");
            }
            let Some(last) = page.last() else { break };
            after = Some((last.record.dead_lettered_at, last.record.id));
            seen.extend(ids(&page));
        }
        assert_eq!(seen, want, "{label}");
        assert_eq!(
            store.count_dead_letters(&filter).await.unwrap(),
            u64::try_from(want.len()).unwrap(),
            "{label}"
        );
        for letter in &letters {
            let got = store
                .get_dead_letter(letter.record.id, &visible)
                .await
                .unwrap();
            assert_eq!(
                got.map(|l| l.record.id),
                want.contains(&letter.record.id).then_some(letter.record.id),
                "{label}"
            );
        }
    }
    // With the other filters: both apply.
    let filter = DeadLetterFilter {
        reason: Some("no-route".into()),
        visible: only(&["by"], &[]),
        ..DeadLetterFilter::default()
    };
    let want: Vec<Uuid> = letters
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 6 == 0)
        .map(|(_, l)| l.record.id)
        .collect();
    assert_eq!(
        ids(&store.list_dead_letters(&filter, None, 100).await.unwrap()),
        want
    );
    store.close().await;
}

async fn dead_letters_insert_get_and_message(db: Db) {
    let store = db.open().await;
    let before = now();
    let letters = insert_letters(&store, 5).await;
    let after = SystemTime::now();

    for new in &letters {
        let got = store
            .get_dead_letter(new.record.id, &Visible::All)
            .await
            .unwrap()
            .unwrap();
        assert!(got.stored_at >= before && got.stored_at <= after);
        assert_eq!(got, stored(new, got.stored_at));
        let message = store
            .dead_letter_message(new.record.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(message.body, new.body);
        assert_eq!(message.content_type, new.record.content_type);
        assert_eq!(message.message_id, new.record.message_id);
        assert_eq!(message.headers, new.record.headers);
        assert_eq!(message.platform, new.record.platform);
    }
    assert_eq!(
        store
            .get_dead_letter(Uuid::new_v4(), &Visible::All)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.dead_letter_message(Uuid::new_v4()).await.unwrap(),
        None
    );

    // Redelivered by the queue: the same id again, with other content, and one new letter
    // next to it in the batch. The stored one stays as it was; the new one goes in.
    let mut again = letters[2].clone();
    again.record.detail = "changed".into();
    again.body = b"changed".to_vec();
    let fresh = letter(7, now());
    store
        .insert_dead_letters(&[again.clone(), fresh.clone(), again])
        .await
        .unwrap();
    let got = store
        .get_dead_letter(letters[2].record.id, &Visible::All)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.record.detail, "detail 2");
    assert_eq!(
        store
            .dead_letter_message(letters[2].record.id)
            .await
            .unwrap()
            .unwrap()
            .body,
        letters[2].body
    );
    assert_eq!(
        store
            .count_dead_letters(&DeadLetterFilter::default())
            .await
            .unwrap(),
        6
    );
    assert_eq!(
        store
            .get_dead_letter(fresh.record.id, &Visible::All)
            .await
            .unwrap()
            .unwrap()
            .record
            .message_id,
        "msg-7"
    );
    store.close().await;
}

async fn dead_letters_list_filters_and_count(db: Db) {
    let store = db.open().await;
    let letters = insert_letters(&store, 12).await;
    let list = |filter: DeadLetterFilter| {
        let store = store.clone();
        async move {
            let listed = store.list_dead_letters(&filter, None, 100).await.unwrap();
            let count = store.count_dead_letters(&filter).await.unwrap();
            assert_eq!(count, u64::try_from(listed.len()).unwrap(), "{filter:?}");
            ids(&listed)
        }
    };
    let expect = |keep: &dyn Fn(usize) -> bool| -> Vec<Uuid> {
        letters
            .iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, l)| l.record.id)
            .collect()
    };

    assert_eq!(list(DeadLetterFilter::default()).await, expect(&|_| true));
    assert_eq!(
        list(DeadLetterFilter {
            platform: Some("nw".into()),
            ..DeadLetterFilter::default()
        })
        .await,
        expect(&|i| i % 2 == 1)
    );
    assert_eq!(
        list(DeadLetterFilter {
            reason: Some("invalid".into()),
            ..DeadLetterFilter::default()
        })
        .await,
        expect(&|i| i % 3 == 1)
    );
    assert_eq!(
        list(DeadLetterFilter {
            service: Some("99000001".into()),
            destination: Some("bauamt".into()),
            ..DeadLetterFilter::default()
        })
        .await,
        expect(&|i| i % 2 == 0 && i % 3 == 0)
    );
    assert_eq!(
        list(DeadLetterFilter {
            submission_id: Some("sub-7".into()),
            ..DeadLetterFilter::default()
        })
        .await,
        expect(&|i| i == 7)
    );
    // since inclusive, until exclusive.
    assert_eq!(
        list(DeadLetterFilter {
            since: Some(letters[3].record.dead_lettered_at),
            until: Some(letters[8].record.dead_lettered_at),
            ..DeadLetterFilter::default()
        })
        .await,
        expect(&|i| (3..8).contains(&i))
    );
    assert_eq!(
        list(DeadLetterFilter {
            platform: Some("nirgendwo".into()),
            ..DeadLetterFilter::default()
        })
        .await,
        Vec::<Uuid>::new()
    );

    store
        .set_dead_letter_state(
            &[letters[1].record.id, letters[4].record.id],
            DeadLetterState::Discarded,
            "ops",
        )
        .await
        .unwrap();
    assert_eq!(
        list(DeadLetterFilter {
            state: Some(DeadLetterState::Discarded),
            ..DeadLetterFilter::default()
        })
        .await,
        expect(&|i| i == 1 || i == 4)
    );
    assert_eq!(
        list(DeadLetterFilter {
            state: Some(DeadLetterState::Pending),
            platform: Some("by".into()),
            ..DeadLetterFilter::default()
        })
        .await,
        expect(&|i| i % 2 == 0 && i != 4)
    );
    store.close().await;
}

async fn dead_letters_paging_returns_every_row_once_in_order(db: Db) {
    let store = db.open().await;
    // Groups of letters with the same time, so that the id has to break ties.
    let start = now() - DAY;
    let letters: Vec<NewDeadLetter> = (0..53)
        .map(|i| {
            letter(
                i,
                start + Duration::from_millis(u64::try_from(i / 4).unwrap()),
            )
        })
        .collect();
    // Inserted in two batches out of order.
    store.insert_dead_letters(&letters[20..]).await.unwrap();
    store.insert_dead_letters(&letters[..20]).await.unwrap();
    let mut want: Vec<(SystemTime, Uuid)> = letters
        .iter()
        .map(|l| (l.record.dead_lettered_at, l.record.id))
        .collect();
    want.sort();

    for page_size in [1, 5, 7, 100] {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list_dead_letters(&DeadLetterFilter::default(), after, page_size)
                .await
                .unwrap();
            assert!(page.len() <= usize::try_from(page_size).unwrap());
            let Some(last) = page.last() else { break };
            after = Some((last.record.dead_lettered_at, last.record.id));
            seen.extend(
                page.iter()
                    .map(|l| (l.record.dead_lettered_at, l.record.id)),
            );
        }
        assert_eq!(seen, want, "page size {page_size}");
    }

    // Paging with a filter: only the matching rows, still each once.
    let filter = DeadLetterFilter {
        platform: Some("by".into()),
        ..DeadLetterFilter::default()
    };
    let mut seen = Vec::new();
    let mut after = None;
    while let Some(last) = {
        let page = store.list_dead_letters(&filter, after, 3).await.unwrap();
        seen.extend(ids(&page));
        page.last()
            .map(|l| (l.record.dead_lettered_at, l.record.id))
    } {
        after = Some(last);
    }
    let by: Vec<Uuid> = want
        .iter()
        .filter(|(_, id)| {
            letters
                .iter()
                .any(|l| l.record.id == *id && l.record.platform == "by")
        })
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(seen, by);
    store.close().await;
}

async fn dead_letter_state_changes_only_pending_letters(db: Db) {
    let store = db.open().await;
    let letters = insert_letters(&store, 6).await;
    let id = |i: usize| letters[i].record.id;
    let before = now();

    // Two of three pending, plus an unknown id.
    assert_eq!(
        store
            .set_dead_letter_state(
                &[id(0), id(1), Uuid::new_v4()],
                DeadLetterState::Replayed,
                "alice"
            )
            .await
            .unwrap(),
        2
    );
    // Replayed ones are not replayed or discarded again; the third pending one is discarded.
    assert_eq!(
        store
            .set_dead_letter_state(&[id(0), id(1), id(2)], DeadLetterState::Discarded, "bob")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .set_dead_letter_state(&[id(0), id(2)], DeadLetterState::Replayed, "bob")
            .await
            .unwrap(),
        0
    );
    // Back to pending is no change at all; nor is an empty list.
    assert_eq!(
        store
            .set_dead_letter_state(&[id(0), id(3)], DeadLetterState::Pending, "bob")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .set_dead_letter_state(&[], DeadLetterState::Discarded, "bob")
            .await
            .unwrap(),
        0
    );

    let get = |i: usize| {
        let store = store.clone();
        let id = id(i);
        async move {
            store
                .get_dead_letter(id, &Visible::All)
                .await
                .unwrap()
                .unwrap()
        }
    };
    let replayed = get(0).await;
    assert_eq!(replayed.state, DeadLetterState::Replayed);
    assert_eq!(replayed.replays, 1);
    assert_eq!(replayed.state_changed_by, "alice");
    let changed_at = replayed.state_changed_at.unwrap();
    assert!(changed_at >= before && changed_at <= SystemTime::now());

    let discarded = get(2).await;
    assert_eq!(discarded.state, DeadLetterState::Discarded);
    assert_eq!(discarded.replays, 0);
    assert_eq!(discarded.state_changed_by, "bob");
    assert!(discarded.state_changed_at.is_some());

    let pending = get(3).await;
    assert_eq!(pending, stored(&letters[3], pending.stored_at));

    let count = |state| {
        let store = store.clone();
        async move {
            store
                .count_dead_letters(&DeadLetterFilter {
                    state: Some(state),
                    ..DeadLetterFilter::default()
                })
                .await
                .unwrap()
        }
    };
    assert_eq!(count(DeadLetterState::Pending).await, 3);
    assert_eq!(count(DeadLetterState::Replayed).await, 2);
    assert_eq!(count(DeadLetterState::Discarded).await, 1);
    store.close().await;
}

async fn dead_letter_purge_keeps_pending_and_recent(db: Db) {
    let store = db.open().await;
    let letters = insert_letters(&store, 4).await;
    store
        .set_dead_letter_state(&[letters[0].record.id], DeadLetterState::Replayed, "ops")
        .await
        .unwrap();
    store
        .set_dead_letter_state(&[letters[1].record.id], DeadLetterState::Discarded, "ops")
        .await
        .unwrap();

    // Both changed just now: a cutoff in the past keeps them.
    assert_eq!(
        store
            .purge_dead_letters(SystemTime::now() - DAY)
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = SystemTime::now();
    store
        .set_dead_letter_state(&[letters[2].record.id], DeadLetterState::Discarded, "ops")
        .await
        .unwrap();
    // The two changed before the cutoff go; the one changed after it and the pending one,
    // dead-lettered a day ago, stay.
    assert_eq!(store.purge_dead_letters(cutoff).await.unwrap(), 2);
    assert_eq!(store.purge_dead_letters(cutoff).await.unwrap(), 0);
    let left = store
        .list_dead_letters(&DeadLetterFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(ids(&left), [letters[2].record.id, letters[3].record.id]);
    assert_eq!(
        store
            .dead_letter_message(letters[0].record.id)
            .await
            .unwrap(),
        None
    );
    store.close().await;
}

// ---------------------------------------------------------------------------------------
// Admin API: trace

fn event(submission_id: &str, at: SystemTime, event: &str, detail: &str) -> TraceEvent {
    TraceEvent {
        submission_id: submission_id.to_owned(),
        at,
        event: event.to_owned(),
        platform: "by".to_owned(),
        destination: "bauamt".to_owned(),
        detail: detail.to_owned(),
    }
}

async fn trace_events_come_back_in_order(db: Db) {
    let store = db.open().await;
    let t = now() - DAY;
    let ms = Duration::from_millis(1);
    // Out of time order across calls, two with the same time (insertion order decides),
    // and another submission's events in between.
    store
        .record_events(&[
            event("a", t + 2 * ms, "forwarded", "2"),
            event("b", t, "received", "b"),
            event("a", t, "received", "0"),
        ])
        .await
        .unwrap();
    store
        .record_events(&[
            event("a", t + ms, "retrying", "1a"),
            event("a", t + ms, "retrying", "1b \"quoted\" ü"),
        ])
        .await
        .unwrap();
    store.record_events(&[]).await.unwrap();

    let details: Vec<String> = store
        .trace("a")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.detail)
        .collect();
    assert_eq!(details, ["0", "1a", "1b \"quoted\" ü", "2"]);
    assert_eq!(
        store.trace("a").await.unwrap()[3],
        event("a", t + 2 * ms, "forwarded", "2")
    );
    assert_eq!(
        store.trace("b").await.unwrap(),
        [event("b", t, "received", "b")]
    );
    assert_eq!(store.trace("c").await.unwrap(), []);

    // Purge by age: everything before t + 1ms.
    assert_eq!(store.purge_events(t + ms).await.unwrap(), 2);
    assert_eq!(store.trace("b").await.unwrap(), []);
    assert_eq!(store.trace("a").await.unwrap().len(), 3);
    store.close().await;
}

/// The common case writes no trace events: "received" and "forwarded" come from the delivery
/// record, merged in time order with events written later (a duplicate, a receipt).
async fn a_first_delivery_s_trace_comes_from_its_record(db: Db) {
    let store = db.open().await;
    let t = now() - DAY;
    let ms = Duration::from_millis(1);
    let traced = Uuid::new_v4();
    let untraced = Uuid::new_v4();
    store
        .record(&[
            DeliveryRecord {
                received_at: Some(t),
                ..rec(traced, "x", "bauamt", t + 3 * ms)
            },
            rec(untraced, "y", "bauamt", t),
        ])
        .await
        .unwrap();
    store
        .record_events(&[
            event(&traced.to_string(), t + 5 * ms, "duplicate", "again"),
            event(&untraced.to_string(), t + ms, "forwarded", "from an event"),
        ])
        .await
        .unwrap();
    let trace = store.trace(&traced.to_string()).await.unwrap();
    let seen: Vec<(&str, &str, &str, SystemTime)> = trace
        .iter()
        .map(|e| {
            (
                e.event.as_str(),
                e.platform.as_str(),
                e.destination.as_str(),
                e.at,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("received", "civento-he", "", t),
            ("forwarded", "civento-he", "bauamt", t + 3 * ms),
            ("duplicate", "by", "bauamt", t + 5 * ms),
        ]
    );
    // A record without received_at (a retry's or replay's delivery) adds nothing: its
    // events are in the event table.
    let other: Vec<String> = store
        .trace(&untraced.to_string())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.detail)
        .collect();
    assert_eq!(other, ["from an event"]);
    // Purging the delivery records takes the trace kept on them along.
    store.purge(t + DAY).await.unwrap();
    assert_eq!(store.trace(&traced.to_string()).await.unwrap().len(), 1);
    store.close().await;
}

fn answer(id: Uuid, destination: &str, answer: &str) -> store::Answer {
    store::Answer {
        submission_id: id,
        destination: destination.to_owned(),
        answer: answer.to_owned(),
        digest: fingerprint(answer.as_bytes()),
    }
}

async fn answers_are_recorded_only_from_the_destination_and_only_once(db: Db) {
    let store = db.open().await;
    let id = Uuid::new_v4();
    assert_eq!(store.fate(id).await.unwrap(), None);
    store
        .record(&[rec(id, "body", "th-erfurt", now())])
        .await
        .unwrap();
    let fate = store.fate(id).await.unwrap().unwrap();
    assert_eq!(
        (
            fate.platform.as_str(),
            fate.destination.as_str(),
            fate.answer
        ),
        ("civento-he", "th-erfurt", None)
    );
    // Another destination cannot answer.
    assert!(
        !store
            .record_answer(&answer(id, "th-jena", "accepted"))
            .await
            .unwrap()
    );
    // Forwarded onward, then a final answer; after that, nothing more.
    for (a, recorded) in [
        ("forwarded-onward", true),
        ("accepted", true),
        ("rejected", false),
        ("accepted", false),
    ] {
        assert_eq!(
            store
                .record_answer(&answer(id, "th-erfurt", a))
                .await
                .unwrap(),
            recorded,
            "{a}"
        );
    }
    let fate = store.fate(id).await.unwrap().unwrap();
    assert_eq!(fate.answer.as_deref(), Some("accepted"));
    assert_eq!(
        fate.answer_digest.as_deref(),
        Some(&fingerprint(b"accepted")[..])
    );
    assert!(fate.answered_at.is_some());
    // A delivery recorded again (after the window) starts without an answer.
    store
        .record(&[rec(id, "body", "th-erfurt", now())])
        .await
        .unwrap();
    assert_eq!(store.fate(id).await.unwrap().unwrap().answer, None);
}

async fn unanswered_lists_overdue_and_marks_them_reported(db: Db) {
    let store = db.open().await;
    let old = Uuid::new_v4();
    let older = Uuid::new_v4();
    let answered = Uuid::new_v4();
    let fresh = Uuid::new_v4();
    let hour = Duration::from_secs(3600);
    store
        .record(&[
            rec(old, "a", "d", now() - hour),
            rec(older, "b", "d", now() - 2 * hour),
            rec(answered, "c", "d", now() - hour),
            rec(fresh, "e", "d", now()),
        ])
        .await
        .unwrap();
    assert!(
        store
            .record_answer(&answer(answered, "d", "accepted"))
            .await
            .unwrap()
    );
    let cutoff = now() - hour / 2;
    let ids = |fates: Vec<store::Fate>| {
        fates
            .into_iter()
            .map(|f| f.submission_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store
            .unanswered(cutoff, true, &Visible::All, 10)
            .await
            .unwrap()),
        [older, old]
    );
    assert_eq!(
        ids(store
            .unanswered(cutoff, true, &Visible::All, 1)
            .await
            .unwrap()),
        [older]
    );
    store.mark_overdue_reported(&[older]).await.unwrap();
    assert_eq!(
        ids(store
            .unanswered(cutoff, true, &Visible::All, 10)
            .await
            .unwrap()),
        [old]
    );
    let all = store
        .unanswered(cutoff, false, &Visible::All, 10)
        .await
        .unwrap();
    assert_eq!(ids(all.clone()), [older, old]);
    assert!(all[0].overdue_reported_at.is_some());
    assert!(all[1].overdue_reported_at.is_none());
}

async fn scoped_overdue_lists_only_what_is_visible(db: Db) {
    let store = db.open().await;
    let hour = Duration::from_secs(3600);
    // (platform, destination) of each delivery, oldest first.
    let deliveries = [
        ("civento-he", "he-a"),
        ("civento-th", "th-a"),
        ("civento-th", "he-a"),
        ("civento-he", "th-a"),
        ("civento-by", "by-a"),
    ];
    let ids: Vec<Uuid> = deliveries.iter().map(|_| Uuid::new_v4()).collect();
    let records: Vec<DeliveryRecord> = deliveries
        .iter()
        .zip(&ids)
        .enumerate()
        .map(|(i, ((platform, destination), id))| DeliveryRecord {
            platform: (*platform).to_owned(),
            ..rec(
                *id,
                "body",
                destination,
                now() - hour * u32::try_from(10 - i).unwrap(),
            )
        })
        .collect();
    store.record(&records).await.unwrap();
    let cutoff = now() - hour / 2;
    let cases: [(&str, Visible, &[usize]); 5] = [
        ("everything", Visible::All, &[0, 1, 2, 3, 4]),
        (
            "Hessen: its platform, its destination",
            only(&["civento-he"], &["he-a"]),
            &[0, 2, 3],
        ),
        ("a back office", only(&[], &["th-a"]), &[1, 3]),
        ("a platform", only(&["civento-by"], &[]), &[4]),
        ("nothing", only(&[], &[]), &[]),
    ];
    for (label, visible, want) in cases {
        let got: Vec<Uuid> = store
            .unanswered(cutoff, false, &visible, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.submission_id)
            .collect();
        let want: Vec<Uuid> = want.iter().map(|i| ids[*i]).collect();
        assert_eq!(got, want, "{label}");
    }
    // The limit counts visible rows.
    let first: Vec<Uuid> = store
        .unanswered(cutoff, false, &only(&[], &["th-a"]), 1)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.submission_id)
        .collect();
    assert_eq!(first, [ids[1]]);
    store.close().await;
}

async fn scoped_audit_lists_rows_about_the_scope_and_everyone(db: Db) {
    let store = db.open().await;
    let concerns = |lands: &[&str], destinations: &[&str]| Concerns {
        everyone: false,
        lands: lands.iter().map(|l| (*l).to_owned()).collect(),
        destinations: destinations.iter().map(|d| (*d).to_owned()).collect(),
    };
    // Written in this order; listed newest first.
    let rows = [
        ("he-route", concerns(&["06"], &["he-a"])),
        ("th-route", concerns(&["16"], &["th-a"])),
        ("th-to-he", concerns(&["06", "16"], &["he-a"])),
        (
            "service",
            Concerns {
                everyone: true,
                ..Concerns::default()
            },
        ),
        ("old", Concerns::default()),
        ("he-pause", concerns(&["06"], &[])),
        // A destination id that another one's contains: matched whole, never in part.
        ("he-ab", concerns(&["06"], &["he-ab"])),
    ];
    for (object, concerns) in &rows {
        store
            .audit({
                let mut entry = audit("ops", "test", object);
                entry.concerns = concerns.clone();
                entry.record.actor_scope = format!("scope of {object}");
                entry
            })
            .await
            .unwrap();
    }
    let cases: [(&str, AuditVisible, &[&str]); 6] = [
        (
            "every Land",
            AuditVisible::All,
            &[
                "he-ab", "he-pause", "old", "service", "th-to-he", "th-route", "he-route",
            ],
        ),
        (
            "Hessen",
            AuditVisible::Only {
                lands: vec!["06".into()],
                destinations: vec!["he-a".into(), "he-ab".into()],
            },
            &["he-ab", "he-pause", "service", "th-to-he", "he-route"],
        ),
        (
            "Thüringen",
            AuditVisible::Only {
                lands: vec!["16".into()],
                destinations: vec!["th-a".into()],
            },
            &["service", "th-to-he", "th-route"],
        ),
        (
            "destination he-a only",
            AuditVisible::Only {
                lands: vec![],
                destinations: vec!["he-a".into()],
            },
            &["service", "th-to-he", "he-route"],
        ),
        (
            "Land 6 without its leading zero matches nothing of 06",
            AuditVisible::Only {
                lands: vec!["6".into()],
                destinations: vec!["he".into()],
            },
            &["service"],
        ),
        (
            "nothing named",
            AuditVisible::Only {
                lands: vec![],
                destinations: vec![],
            },
            &["service"],
        ),
    ];
    for (label, visible, want) in cases {
        let filter = AuditFilter {
            visible,
            ..AuditFilter::default()
        };
        // Pages of 2: a page holds two visible rows.
        let mut seen = Vec::new();
        let mut before_id = None;
        loop {
            let page = store.list_audit(&filter, before_id, 2).await.unwrap();
            if seen.len() + 2 <= want.len() {
                assert_eq!(page.len(), 2, "{label}: a short page before the end");
            }
            let Some(last) = page.last() else { break };
            before_id = Some(last.id);
            for entry in page {
                let record = entry.record;
                assert_eq!(record.actor_scope, format!("scope of {}", record.object));
                seen.push(record.object);
            }
        }
        assert_eq!(seen, want, "{label}");
    }
    store.close().await;
}

/// Two instances claiming at once get disjoint sets; a released claim, or one older than the
/// lease (its instance died before reporting), is taken again; a reported one never.
async fn overdue_claims_are_disjoint_until_released_or_stale(db: Db) {
    let store = db.open().await;
    let hour = Duration::from_secs(3600);
    let ids: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let records: Vec<DeliveryRecord> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| rec(*id, &i.to_string(), "d", now() - hour))
        .collect();
    store.record(&records).await.unwrap();
    let cutoff = now() - hour / 2;
    let claimed = |fates: Vec<store::Fate>| {
        let mut ids: Vec<Uuid> = fates.into_iter().map(|f| f.submission_id).collect();
        ids.sort();
        ids
    };
    let lease = Duration::from_secs(300);
    let (a, b) = tokio::join!(
        store.claim_overdue(cutoff, lease, 4),
        store.claim_overdue(cutoff, lease, 4)
    );
    let (a, b) = (claimed(a.unwrap()), claimed(b.unwrap()));
    assert_eq!(a.len() + b.len(), 6, "{a:?} {b:?}");
    assert!(
        a.iter().all(|id| !b.contains(id)),
        "claimed twice: {a:?} {b:?}"
    );
    assert!(claimed(store.claim_overdue(cutoff, lease, 10).await.unwrap()).is_empty());

    store.mark_overdue_reported(&a).await.unwrap();
    store.release_overdue_claims(&b).await.unwrap();
    assert_eq!(
        claimed(store.claim_overdue(cutoff, lease, 10).await.unwrap()),
        b,
        "released claims are taken again, reported ones not"
    );
    // Claims older than the lease count as abandoned.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        claimed(
            store
                .claim_overdue(cutoff, Duration::from_millis(10), 10)
                .await
                .unwrap()
        ),
        b
    );
}

async fn heartbeats_list_every_instance_with_its_latest_counts(db: Db) {
    let store = db.open().await;
    let started_at = now() - Duration::from_secs(60);
    let beat = |id: &str, seen_at: SystemTime, consumed: u64| store::Instance {
        id: id.to_owned(),
        host: "gw-host".to_owned(),
        pid: 4711,
        version: "0.1.0".to_owned(),
        started_at,
        seen_at,
        directory_version: 3,
        consumed,
        forwarded: consumed,
        rejected: 1,
        in_flight: 2,
    };
    let long_ago = now() - Duration::from_secs(7200);
    store.heartbeat(&beat("a", now(), 10)).await.unwrap();
    store.heartbeat(&beat("b", long_ago, 5)).await.unwrap();
    let latest = beat("a", now(), 25);
    store.heartbeat(&latest).await.unwrap();
    let listed = store
        .instances(now() - Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(listed, [latest]);
    assert_eq!(
        store
            .purge_instances(now() - Duration::from_secs(3600))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.instances(UNIX_EPOCH).await.unwrap().len(), 1);
}

async fn event_recorder_flushes_on_shutdown(db: Db) {
    let store = db.open().await;
    // Nothing would be written for an hour but for the shutdown.
    let recorder = EventRecorder::start(store.clone(), 10_000, Duration::from_secs(3600));
    let at = now();
    for i in 0..50 {
        recorder
            .record(event("sub", at, "received", &i.to_string()))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.trace("sub").await.unwrap(), []);
    tokio::time::timeout(HANG, recorder.flush())
        .await
        .expect("the flush sat out the batch delay instead of writing");
    let details: Vec<String> = store
        .trace("sub")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.detail)
        .collect();
    let want: Vec<String> = (0..50).map(|i: i32| i.to_string()).collect();
    assert_eq!(details, want);
    store.close().await;
}

async fn event_recorder_batches_many_concurrent_records(db: Db) {
    const TASKS: usize = 20;
    const EACH: usize = 50;
    let store = db.open().await;
    // A small batch and channel, so that senders also wait for room (back-pressure).
    let recorder = Arc::new(EventRecorder::start(
        store.clone(),
        16,
        Duration::from_millis(2),
    ));
    let at = now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let recorder = Arc::clone(&recorder);
            tokio::spawn(async move {
                for i in 0..EACH {
                    recorder
                        .record(event(
                            &format!("sub-{task}"),
                            at,
                            "received",
                            &i.to_string(),
                        ))
                        .await;
                }
            })
        })
        .collect();
    tokio::time::timeout(HANG, futures_util::future::try_join_all(tasks))
        .await
        .expect("1,000 records did not finish")
        .unwrap();
    tokio::time::timeout(HANG, recorder.flush())
        .await
        .expect("the flush hung");

    // Every event there, each submission's in the order its task sent them.
    let want: Vec<String> = (0..EACH).map(|i| i.to_string()).collect();
    for task in 0..TASKS {
        let details: Vec<String> = store
            .trace(&format!("sub-{task}"))
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.detail)
            .collect();
        assert_eq!(details, want, "sub-{task}");
    }
    assert_eq!(store.purge_events(SystemTime::now()).await.unwrap(), 1000);
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
    let url = with_search_path(&postgres_url(), "ozgtest_does_not_exist");
    // Make sure the server is there, so that the failure below is the schema's.
    let _ = postgres_admin().await.close().await;
    let error = store::open(&url).await.unwrap_err();
    assert!(matches!(error, StoreError::Migrate { .. }), "{error:?}");
}
