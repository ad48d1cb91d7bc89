//! Admin scopes against the real gateway: Hessen, Thüringen and Bayern share one gateway,
//! and a token sees and changes only its scope's part.
//!
//! The access matrix: roles (viewer, operator, payload) × scopes (every Land, Hessen,
//! Hessen and Thüringen, Hessen's destination he-a only) × every RPC, against a store
//! holding dead letters, traces and overdue deliveries from and to several Länder. Each
//! cell asserts the exact status and the exact set of ids it returns. Among them: a replay
//! by id of another Land's dead letter, a bulk discard by a filter that matches other
//! Länder's letters too (after dry runs and a wrong confirmed count, which count the
//! scope's letters only and touch none), grouped counts and replay outcomes within the
//! scope, and route changes for a region of a neighbouring Land. A second
//! test follows a live tail per scope while submissions of every Land pass.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use common::*;
use ozg_gateway::admin::auth::hash_token;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::sample;
use ozg_gateway::store::{
    self, DeadLetterRecord, DeliveryRecord, NewDeadLetter, Store, TraceEvent,
};
use ozg_gateway::wire::admin as pb;
use pb::dead_letter_service_client::DeadLetterServiceClient;
use pb::directory_service_client::DirectoryServiceClient;
use pb::operations_service_client::OperationsServiceClient;
use pb::stats_service_client::StatsServiceClient;
use tonic::Code;
use tonic::transport::Channel as GrpcChannel;
use uuid::Uuid;

const MELDE: &str = "99115005104000";
const DARMSTADT: &str = "064110000000";
const ERFURT: &str = "160510000000";
const MUENCHEN: &str = "091620000000";
/// Offenbach am Main: no route, so a submission for it is dead-lettered.
const OFFENBACH: &str = "064130000000";
const HANG: Duration = Duration::from_secs(30);

const ROLES: [&str; 3] = ["viewer", "operator", "payload"];
/// The scopes, in the order of every expectation below: every Land, Hessen, Hessen and
/// Thüringen, Hessen's destination he-a only.
const SCOPES: [(&str, &str); 4] = [
    ("all", "laender = [\"*\"]"),
    ("he", "laender = [\"HE\"]"),
    ("he-th", "laender = [\"06\", \"TH\"]"),
    ("he-a", "laender = [\"HE\"]\ndestinations = [\"he-a\"]"),
];
/// What each scope is called in the API's answers.
const SCOPE_TEXT: [&str; 4] = [
    "every Land",
    "Land 06 HE",
    "Länder 06 HE, 16 TH",
    "Land 06 HE; destination he-a",
];
/// Submissions in the store: (label, origin platform, destination; '' when none was
/// found), and whether each scope takes it in: by its platform's Land or its
/// destination's.
const SUBMISSIONS: [(&str, &str, &str, [bool; 4]); 10] = [
    ("he→he-a", "civento-he", "he-a", [true, true, true, true]),
    ("he→th-a", "civento-he", "th-a", [true, true, true, false]),
    ("th→he-a", "civento-th", "he-a", [true, true, true, true]),
    ("th→th-a", "civento-th", "th-a", [true, false, true, false]),
    ("th→none", "civento-th", "", [true, false, true, false]),
    ("he→none", "civento-he", "", [true, true, true, false]),
    ("th→by-a", "civento-th", "by-a", [true, false, true, false]),
    ("th→he-b", "civento-th", "he-b", [true, true, true, false]),
    ("by→by-a", "civento-by", "by-a", [true, false, false, false]),
    ("by→he-a", "civento-by", "he-a", [true, true, true, true]),
];

fn secret(name: &str) -> String {
    format!("secret-of-{name}-0123456789")
}

/// Every role in every scope, and `setup` (an operator for every Land) that prepares and
/// checks what the cells do.
fn admin_toml() -> String {
    let mut toml = "[admin]\naddress = \"127.0.0.1:0\"\n".to_owned();
    let mut token = |name: &str, roles: &str, scope: &str| {
        toml += &format!(
            "\n[[admin.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nroles = [{roles}]\n{scope}\n",
            hex::encode(hash_token(&secret(name)))
        );
    };
    token("setup", "\"operator\", \"payload\"", "laender = [\"*\"]");
    for role in ROLES {
        for (scope, keys) in SCOPES {
            token(&format!("{role}-{scope}"), &format!("\"{role}\""), keys);
        }
    }
    toml
}

/// Three Länder's platforms, each on a broker of its own, and their back offices.
/// `store` is the store's URL.
fn config(v: &Vhosts, store: &str) -> TestConfig {
    TestConfig::new(v)
        .gateway(r#"confirm_timeout = "5s""#)
        .store(store)
        .platform("civento-he", "06", "he", None)
        .platform("civento-th", "16", "th", None)
        .platform("civento-by", "09", "by", None)
        .destination("he-a", "06", "he", "Bürgeramt A")
        .destination("he-b", "06", "he", "Bürgeramt B")
        .destination("th-a", "16", "th", "Stadtverwaltung Erfurt")
        .destination("by-a", "09", "by", "Landeshauptstadt München")
        .route(MELDE, "06411", "he-a")
        .route(MELDE, "16051", "th-a")
        .route(MELDE, "09162", "by-a")
        .dead_letters_into_store()
        .extra("[receipts]\noverdue_after = \"1h\"\n")
        .extra(&admin_toml())
}

fn as_token<T>(name: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", secret(name)).parse().unwrap(),
    );
    request
}

/// A request of the `setup` token, an operator for every Land.
fn setup<T>(message: T) -> tonic::Request<T> {
    as_token("setup", message)
}

/// A dead letter of `platform` for `destination`, with a real submission for `region` as
/// its body, so that a replay of it is delivered.
fn dead_letter(platform: &str, destination: &str, reason: &str) -> NewDeadLetter {
    let (land, region) = match platform {
        "civento-he" => ("06", DARMSTADT),
        "civento-th" => ("16", ERFURT),
        _ => ("09", MUENCHEN),
    };
    let submission = sample_submission(platform, land, MELDE, region, 256);
    NewDeadLetter {
        record: DeadLetterRecord {
            id: Uuid::new_v4(),
            submission_id: submission.submission_id.clone(),
            platform: platform.to_owned(),
            reason: reason.to_owned(),
            field: String::new(),
            detail: format!("for {destination}"),
            service: MELDE.to_owned(),
            ars: region.to_owned(),
            destination: destination.to_owned(),
            dead_lettered_at: SystemTime::now(),
            content_type: Encoding::Protobuf.content_type().to_owned(),
            message_id: submission.submission_id.clone(),
            headers: "{}".to_owned(),
        },
        body: sample::encode(&submission, Encoding::Protobuf),
    }
}

/// One letter per submission of [`SUBMISSIONS`], with `reason`, stored; their ids in the
/// same order.
async fn store_letters(store: &Store, reason: &str) -> Vec<NewDeadLetter> {
    let letters: Vec<NewDeadLetter> = SUBMISSIONS
        .iter()
        .map(|(_, platform, destination, _)| dead_letter(platform, destination, reason))
        .collect();
    store.insert_dead_letters(&letters).await.unwrap();
    letters
}

/// The ids of `items` that scope `s` takes in, as a sorted set.
fn in_scope<T: Clone + Ord>(items: &[T], s: usize) -> BTreeSet<T> {
    items
        .iter()
        .zip(SUBMISSIONS)
        .filter(|(_, (_, _, _, seen))| seen[s])
        .map(|(item, _)| item.clone())
        .collect()
}

/// What a cell got: the code, and the ids it returned (empty for a refusal).
type Got = (Code, BTreeSet<String>);

fn got<T>(
    result: Result<tonic::Response<T>, tonic::Status>,
    ids: impl Fn(T) -> Vec<String>,
) -> Got {
    match result {
        Ok(response) => (Code::Ok, ids(response.into_inner()).into_iter().collect()),
        Err(status) => (status.code(), BTreeSet::new()),
    }
}

fn set<I: IntoIterator<Item = S>, S: ToString>(ids: I) -> BTreeSet<String> {
    ids.into_iter().map(|s| s.to_string()).collect()
}

/// The cells of the matrix, checked and counted; every mismatch is listed at the end.
#[derive(Default)]
struct Matrix {
    cells: usize,
    wrong: Vec<String>,
}

impl Matrix {
    fn check(&mut self, cell: &str, got: Got, want: Got) {
        self.cells += 1;
        if got != want {
            self.wrong
                .push(format!("{cell}: got {got:?}\n    wanted {want:?}"));
        }
    }

    fn done(self, what: &str) {
        println!("{what}: {} cells", self.cells);
        assert!(
            self.wrong.is_empty(),
            "{} of {} cells wrong:\n{}",
            self.wrong.len(),
            self.cells,
            self.wrong.join("\n")
        );
    }
}

/// `want` when the role may make the call and the scope allows it, else the refusal.
fn expect(allowed_role: bool, in_scope: bool, refused: Code, ids: BTreeSet<String>) -> Got {
    match (allowed_role, in_scope) {
        (false, _) => (Code::PermissionDenied, BTreeSet::new()),
        (true, true) => (Code::Ok, ids),
        (true, false) => (refused, BTreeSet::new()),
    }
}

struct Clients {
    stats: StatsServiceClient<GrpcChannel>,
    directory: DirectoryServiceClient<GrpcChannel>,
    dead: DeadLetterServiceClient<GrpcChannel>,
    operations: OperationsServiceClient<GrpcChannel>,
}

impl Clients {
    fn new(channel: &GrpcChannel) -> Clients {
        Clients {
            stats: StatsServiceClient::new(channel.clone()),
            directory: DirectoryServiceClient::new(channel.clone()),
            dead: DeadLetterServiceClient::new(channel.clone()),
            operations: OperationsServiceClient::new(channel.clone()),
        }
    }
}

fn destination(id: &str, land: &str, broker: &str) -> pb::Destination {
    pb::Destination {
        id: id.to_owned(),
        name: format!("Behörde {id}"),
        kind: "gemeinde".to_owned(),
        land: land.to_owned(),
        broker: broker.to_owned(),
        exchange: "backoffice".to_owned(),
        routing_key: id.to_owned(),
        ..pb::Destination::default()
    }
}

fn route(service: &str, region: &str, destination: &str) -> pb::Route {
    pb::Route {
        service: service.to_owned(),
        region: region.to_owned(),
        destination: destination.to_owned(),
        ..pb::Route::default()
    }
}

/// The setup token's changes before the matrix, and what each scope sees of them in the
/// audit log: (object, seen by all, he, he-th, he-a). Newest last.
async fn audited_changes(c: &mut Clients, store: &Store) -> Vec<(String, [bool; 4])> {
    let mut seen = Vec::new();
    for (id, land, broker, scopes) in [
        ("he-x", "06", "he", [true, true, true, false]),
        ("th-x", "16", "th", [true, false, true, false]),
    ] {
        c.directory
            .create_destination(setup(pb::CreateDestinationRequest {
                destination: Some(destination(id, land, broker)),
                expected_directory_version: 0,
            }))
            .await
            .unwrap();
        seen.push((format!("destination {id}"), scopes));
    }
    for (region, to, scopes) in [
        ("06412", "he-x", [true, true, true, false]),
        ("16052", "th-x", [true, false, true, false]),
    ] {
        c.directory
            .create_route(setup(pb::CreateRouteRequest {
                route: Some(route("99000000000001", region, to)),
                expected_directory_version: 0,
            }))
            .await
            .unwrap();
        seen.push((format!("route 99000000000001 {region}"), scopes));
    }
    // The catalogue is everyone's.
    c.directory
        .put_service(setup(pb::PutServiceRequest {
            service: Some(pb::Service {
                key: "99000000000001".into(),
                name: "Probe".into(),
                ..pb::Service::default()
            }),
            expected_directory_version: 0,
        }))
        .await
        .unwrap();
    seen.push(("service 99000000000001".into(), [true; 4]));
    for paused in [true, false] {
        let platform_id = "civento-th".to_owned();
        if paused {
            c.operations
                .pause_ingress(setup(pb::PauseIngressRequest { platform_id }))
                .await
                .unwrap();
        } else {
            c.operations
                .resume_ingress(setup(pb::ResumeIngressRequest { platform_id }))
                .await
                .unwrap();
        }
        seen.push(("ingress civento-th".into(), [true, false, true, false]));
    }
    // A letter from Thüringen for Hessen's he-a, discarded.
    let letter = dead_letter("civento-th", "he-a", "audit-probe");
    store
        .insert_dead_letters(std::slice::from_ref(&letter))
        .await
        .unwrap();
    c.dead
        .discard_dead_letters(setup(pb::DiscardDeadLettersRequest {
            ids: vec![letter.record.id.to_string()],
            ..Default::default()
        }))
        .await
        .unwrap();
    seen.push(("1 dead letter(s)".into(), [true; 4]));
    // A Hessen operator's route: the log records its scope.
    c.directory
        .create_route(as_token(
            "operator-he",
            pb::CreateRouteRequest {
                route: Some(route("99000000000002", "06411", "he-a")),
                expected_directory_version: 0,
            },
        ))
        .await
        .unwrap();
    seen.push(("route 99000000000002 06411".into(), [true; 4]));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_matrix_of_roles_scopes_and_calls() {
    let v = Vhosts::create("scopes", &["he", "th", "by", "gw"]);
    // PostgreSQL: the test writes letters into the store while the gateway runs, and an
    // SQLite store belongs to one user at a time.
    let schema = PgSchema::create("scopes").await;
    let store = store::open(&schema.url).await.unwrap();

    // In the store before the gateway starts: one dead letter, one trace and (where a
    // destination was found) one overdue delivery per submission of SUBMISSIONS.
    let letters = store_letters(&store, "fixed").await;
    let letter_ids: Vec<String> = letters.iter().map(|l| l.record.id.to_string()).collect();
    let trace_ids: Vec<String> = SUBMISSIONS
        .iter()
        .map(|(label, ..)| format!("trace {label}"))
        .collect();
    let hour = Duration::from_secs(3600);
    let mut events = Vec::new();
    for ((_, platform, destination, _), id) in SUBMISSIONS.iter().zip(&trace_ids) {
        for (event, to) in [("received", ""), ("forwarded", *destination)] {
            events.push(TraceEvent {
                submission_id: id.clone(),
                at: SystemTime::now() - hour,
                event: event.to_owned(),
                platform: (*platform).to_owned(),
                destination: to.to_owned(),
                detail: String::new(),
            });
        }
    }
    store.record_events(&events).await.unwrap();
    let overdue_ids: Vec<String> = SUBMISSIONS
        .iter()
        .map(|_| Uuid::new_v4().to_string())
        .collect();
    let records: Vec<DeliveryRecord> = SUBMISSIONS
        .iter()
        .zip(&overdue_ids)
        .filter(|((_, _, destination, _), _)| !destination.is_empty())
        .map(|((_, platform, destination, _), id)| DeliveryRecord {
            submission_id: id.parse().unwrap(),
            fingerprint: store::fingerprint(id.as_bytes()),
            destination: (*destination).to_owned(),
            delivered_at: SystemTime::now() - 2 * hour,
            platform: (*platform).to_owned(),
            received_at: None,
        })
        .collect();
    store.record(&records).await.unwrap();
    // Deliveries without a destination have no record.
    let overdue_ids: Vec<String> = SUBMISSIONS
        .iter()
        .zip(overdue_ids)
        .map(|((_, _, destination, _), id)| {
            if destination.is_empty() {
                String::new()
            } else {
                id
            }
        })
        .collect();

    let gw = Admin::start(config(&v, &schema.url).build()).await;
    let channel = gw.channel().await;
    let mut c = Clients::new(&channel);
    let audit = audited_changes(&mut c, &store).await;

    let mut m = Matrix::default();
    let every_destination = set(["by-a", "he-a", "he-b", "he-x", "th-a", "th-x"]);
    let every_route = {
        let routes = c
            .directory
            .list_routes(as_token("setup", pb::ListRoutesRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .routes;
        set(routes.iter().map(|r| format!("{} {}", r.service, r.region)))
    };
    assert_eq!(every_route.len(), 6, "{every_route:?}");

    // Reads.
    for role in ROLES {
        let reads = role != "payload";
        for (s, (scope, _)) in SCOPES.iter().enumerate() {
            let token = format!("{role}-{scope}");
            let cell = |rpc: &str| format!("{token} {rpc}");

            // The audit log: the rows about the scope, newest first (checked as a list).
            let result = c
                .directory
                .list_audit(as_token(&token, pb::ListAuditRequest::default()))
                .await;
            let want_rows: Vec<String> = audit
                .iter()
                .rev()
                .filter(|(_, seen)| seen[s])
                .map(|(object, _)| object.clone())
                .collect();
            match result {
                Ok(response) => {
                    let response = response.into_inner();
                    let rows: Vec<String> =
                        response.entries.iter().map(|e| e.object.clone()).collect();
                    m.check(
                        &cell("ListAudit"),
                        (Code::Ok, set(&rows)),
                        expect(reads, true, Code::Ok, set(&want_rows)),
                    );
                    if rows != want_rows {
                        m.wrong.push(format!("{token} ListAudit order: {rows:?}"));
                    }
                    assert_eq!(response.scope, SCOPE_TEXT[s]);
                    for e in &response.entries {
                        let actor_scope = if e.actor == "operator-he" {
                            "Land 06 HE"
                        } else {
                            "every Land"
                        };
                        assert_eq!(e.actor_scope, actor_scope, "{e:?}");
                    }
                }
                Err(status) => m.check(
                    &cell("ListAudit"),
                    (status.code(), BTreeSet::new()),
                    expect(reads, true, Code::Ok, BTreeSet::new()),
                ),
            }

            // The overview: its platforms and destinations, and the pending letters it
            // counts (the fixed ones).
            let result = c
                .stats
                .get_overview(as_token(&token, pb::GetOverviewRequest::default()))
                .await;
            let platforms = [
                ("civento-he", [true, true, true, false]),
                ("civento-th", [true, false, true, false]),
                ("civento-by", [true, false, false, false]),
            ];
            let destinations = [
                ("he-a", [true, true, true, true]),
                ("he-b", [true, true, true, false]),
                ("he-x", [true, true, true, false]),
                ("th-a", [true, false, true, false]),
                ("th-x", [true, false, true, false]),
                ("by-a", [true, false, false, false]),
            ];
            let mut want = set(platforms
                .iter()
                .filter(|(_, v)| v[s])
                .map(|(p, _)| format!("platform {p}")));
            want.extend(
                destinations
                    .iter()
                    .filter(|(_, v)| v[s])
                    .map(|(d, _)| format!("destination {d}")),
            );
            want.insert(format!("pending {}", in_scope(&letter_ids, s).len()));
            want.insert(format!("overall rates {}", s == 0));
            want.insert(format!("scope {}", SCOPE_TEXT[s]));
            m.check(
                &cell("GetOverview"),
                got(result, |o| {
                    let mut ids: Vec<String> = o
                        .platforms
                        .iter()
                        .map(|p| format!("platform {}", p.platform_id))
                        .collect();
                    ids.extend(
                        o.destinations
                            .iter()
                            .map(|d| format!("destination {}", d.destination_id)),
                    );
                    ids.push(format!("pending {}", o.dead_letters_pending));
                    ids.push(format!("overall rates {}", o.consumed.is_some()));
                    ids.push(format!("scope {}", o.scope));
                    ids
                }),
                expect(reads, true, Code::Ok, want),
            );

            // The directory and Resolve: the same for every scope.
            let result = c
                .directory
                .list_destinations(as_token(&token, pb::ListDestinationsRequest {}))
                .await;
            m.check(
                &cell("ListDestinations"),
                got(result, |r| {
                    r.destinations.into_iter().map(|d| d.id).collect()
                }),
                expect(reads, true, Code::Ok, every_destination.clone()),
            );
            let result = c
                .directory
                .get_destination(as_token(
                    &token,
                    pb::GetDestinationRequest { id: "th-x".into() },
                ))
                .await;
            m.check(
                &cell("GetDestination th-x"),
                got(result, |d| vec![d.id]),
                expect(reads, true, Code::Ok, set(["th-x"])),
            );
            let result = c
                .directory
                .list_routes(as_token(&token, pb::ListRoutesRequest::default()))
                .await;
            m.check(
                &cell("ListRoutes"),
                got(result, |r| {
                    r.routes
                        .into_iter()
                        .map(|r| format!("{} {}", r.service, r.region))
                        .collect()
                }),
                expect(reads, true, Code::Ok, every_route.clone()),
            );
            let result = c
                .directory
                .get_route(as_token(
                    &token,
                    pb::GetRouteRequest {
                        service: MELDE.into(),
                        region: "16051".into(),
                    },
                ))
                .await;
            m.check(
                &cell("GetRoute TH"),
                got(result, |r| vec![r.destination]),
                expect(reads, true, Code::Ok, set(["th-a"])),
            );
            let result = c
                .directory
                .list_services(as_token(&token, pb::ListServicesRequest {}))
                .await;
            m.check(
                &cell("ListServices"),
                got(result, |r| r.services.into_iter().map(|s| s.key).collect()),
                expect(reads, true, Code::Ok, set(["99000000000001"])),
            );
            let result = c
                .directory
                .resolve(as_token(
                    &token,
                    pb::ResolveRequest {
                        service: MELDE.into(),
                        region: ERFURT.into(),
                    },
                ))
                .await;
            m.check(
                &cell("Resolve Erfurt"),
                got(result, |r| {
                    r.destination.into_iter().map(|d| d.id).collect()
                }),
                expect(reads, true, Code::Ok, set(["th-a"])),
            );

            // Dead letters: the list is the scope's, with its total; one outside it does
            // not exist.
            let result = c
                .dead
                .list_dead_letters(as_token(
                    &token,
                    pb::ListDeadLettersRequest {
                        filter: Some(pb::DeadLetterFilter {
                            reason: "fixed".into(),
                            ..Default::default()
                        }),
                        page_size: 3,
                        ..Default::default()
                    },
                ))
                .await;
            // A page of three is the scope's oldest three, and the total is the scope's.
            let scoped = in_scope(&letter_ids, s);
            let mut oldest: Vec<(SystemTime, String)> = letters
                .iter()
                .filter(|l| scoped.contains(&l.record.id.to_string()))
                .map(|l| (l.record.dead_lettered_at, l.record.id.to_string()))
                .collect();
            oldest.sort();
            let mut want = set(oldest.into_iter().take(3).map(|(_, id)| id));
            want.insert(format!("total {}", scoped.len()));
            m.check(
                &cell("ListDeadLetters page 1"),
                got(result, |r| {
                    let mut ids: Vec<String> = r.dead_letters.into_iter().map(|d| d.id).collect();
                    ids.push(format!("total {}", r.total));
                    ids
                }),
                expect(reads, true, Code::Ok, want),
            );
            // Grouped counts: the scope's letters only.
            let result = c
                .dead
                .summarize_dead_letters(as_token(
                    &token,
                    pb::SummarizeDeadLettersRequest {
                        filter: Some(pb::DeadLetterFilter {
                            reason: "fixed".into(),
                            ..Default::default()
                        }),
                    },
                ))
                .await;
            let mut by: std::collections::BTreeMap<String, u64> = Default::default();
            for (_, platform, destination, seen) in SUBMISSIONS {
                if seen[s] {
                    *by.entry(format!("platform {platform}")).or_default() += 1;
                    *by.entry(format!("destination {destination}")).or_default() += 1;
                    *by.entry("reason fixed".into()).or_default() += 1;
                }
            }
            let mut want: BTreeSet<String> = by.iter().map(|(k, n)| format!("{k} {n}")).collect();
            want.insert(format!("total {}", scoped.len()));
            want.insert(format!("scope {}", SCOPE_TEXT[s]));
            m.check(
                &cell("SummarizeDeadLetters"),
                got(result, |r| {
                    let mut ids = vec![format!("total {}", r.total), format!("scope {}", r.scope)];
                    for (group, counts) in [
                        ("reason", &r.by_reason),
                        ("platform", &r.by_platform),
                        ("destination", &r.by_destination),
                    ] {
                        ids.extend(
                            counts
                                .iter()
                                .map(|c| format!("{group} {} {}", c.key, c.count)),
                        );
                    }
                    ids
                }),
                expect(reads, true, Code::Ok, want),
            );
            for (i, (label, ..)) in SUBMISSIONS.iter().enumerate() {
                let seen = SUBMISSIONS[i].3[s];
                let id = &letter_ids[i];
                let result = c
                    .dead
                    .get_replay_outcomes(as_token(
                        &token,
                        pb::GetReplayOutcomesRequest {
                            ids: vec![id.clone()],
                        },
                    ))
                    .await;
                m.check(
                    &cell(&format!("GetReplayOutcomes {label}")),
                    got(result, |r| {
                        r.outcomes
                            .into_iter()
                            .map(|o| format!("{} {}", o.id, o.outcome))
                            .collect()
                    }),
                    expect(
                        reads,
                        seen,
                        Code::NotFound,
                        set([format!(
                            "{id} {}",
                            pb::ReplayOutcomeKind::NotReplayed as i32
                        )]),
                    ),
                );
                let result = c
                    .dead
                    .get_dead_letter(as_token(
                        &token,
                        pb::GetDeadLetterRequest { id: id.clone() },
                    ))
                    .await;
                m.check(
                    &cell(&format!("GetDeadLetter {label}")),
                    got(result, |d| vec![d.id]),
                    expect(reads, seen, Code::NotFound, set([id])),
                );
                let result = c
                    .dead
                    .get_dead_letter_payload(as_token(
                        &token,
                        pb::GetDeadLetterPayloadRequest {
                            id: id.clone(),
                            justification: "matrix".into(),
                        },
                    ))
                    .await;
                let body_ok = result
                    .as_ref()
                    .map(|r| r.get_ref().body == letters[i].body)
                    .unwrap_or(true);
                assert!(
                    body_ok,
                    "{token}: payload of {label} is not the stored body"
                );
                m.check(
                    &cell(&format!("GetDeadLetterPayload {label}")),
                    got(result, |p| vec![p.id]),
                    expect(role == "payload", seen, Code::NotFound, set([id])),
                );

                let trace = &trace_ids[i];
                let result = c
                    .operations
                    .get_submission_trace(as_token(
                        &token,
                        pb::GetSubmissionTraceRequest {
                            submission_id: trace.clone(),
                        },
                    ))
                    .await;
                m.check(
                    &cell(&format!("GetSubmissionTrace {label}")),
                    got(result, |t| vec![t.submission_id]),
                    expect(reads, seen, Code::NotFound, set([trace])),
                );
            }
            let result = c
                .operations
                .list_overdue(as_token(&token, pb::ListOverdueRequest::default()))
                .await;
            let want: BTreeSet<String> = in_scope(&overdue_ids, s)
                .into_iter()
                .filter(|id| !id.is_empty())
                .collect();
            m.check(
                &cell("ListOverdue"),
                got(result, |r| {
                    r.submissions.into_iter().map(|s| s.submission_id).collect()
                }),
                expect(reads, true, Code::Ok, want),
            );
            // The live tail opens for readers; what it shows is the second test's.
            let result = c
                .operations
                .watch_events(as_token(&token, pb::WatchEventsRequest::default()))
                .await;
            m.check(
                &cell("WatchEvents"),
                got(result, |_| vec![]),
                expect(reads, true, Code::Ok, BTreeSet::new()),
            );
        }
    }

    // Changes. Each cell works on entries and letters of its own, prepared by `setup`.
    let mut k = 0;
    for role in ROLES {
        let changes = role == "operator";
        for (s, (scope, _)) in SCOPES.iter().enumerate() {
            k += 1;
            let token = format!("{role}-{scope}");
            let cell = |rpc: &str| format!("{token} {rpc}");
            let [all, he, he_th] = [s == 0, s == 1, s == 2];

            // Destinations: one of Hessen, one of Thüringen.
            for (id, land, broker, allowed) in [
                (format!("he-new-{k}"), "06", "he", all || he || he_th),
                (format!("th-new-{k}"), "16", "th", all || he_th),
            ] {
                let result = c
                    .directory
                    .create_destination(as_token(
                        &token,
                        pb::CreateDestinationRequest {
                            destination: Some(destination(&id, land, broker)),
                            expected_directory_version: 0,
                        },
                    ))
                    .await;
                m.check(
                    &cell(&format!("CreateDestination {land}")),
                    got(result, |d| vec![d.id]),
                    expect(changes, allowed, Code::PermissionDenied, set([&id])),
                );
            }
            for (id, land, broker, allowed) in [
                ("he-x", "06", "he", all || he || he_th),
                ("th-x", "16", "th", all || he_th),
            ] {
                let result = c
                    .directory
                    .update_destination(as_token(
                        &token,
                        pb::UpdateDestinationRequest {
                            destination: Some(destination(id, land, broker)),
                            expected_directory_version: 0,
                        },
                    ))
                    .await;
                m.check(
                    &cell(&format!("UpdateDestination {id}")),
                    got(result, |d| vec![d.id]),
                    expect(changes, allowed, Code::PermissionDenied, set([id])),
                );
            }
            // Moving Hessen's he-x to Thüringen takes a scope of both.
            let result = c
                .directory
                .update_destination(as_token(
                    &token,
                    pb::UpdateDestinationRequest {
                        destination: Some(destination("he-x", "16", "he")),
                        expected_directory_version: 0,
                    },
                ))
                .await;
            let moved = result.is_ok();
            m.check(
                &cell("UpdateDestination he-x to TH"),
                got(result, |d| vec![d.id]),
                expect(changes, all || he_th, Code::PermissionDenied, set(["he-x"])),
            );
            if moved {
                c.directory
                    .update_destination(setup(pb::UpdateDestinationRequest {
                        destination: Some(destination("he-x", "06", "he")),
                        expected_directory_version: 0,
                    }))
                    .await
                    .unwrap();
            }
            let doomed = format!("he-del-{k}");
            c.directory
                .create_destination(setup(pb::CreateDestinationRequest {
                    destination: Some(destination(&doomed, "06", "he")),
                    expected_directory_version: 0,
                }))
                .await
                .unwrap();
            let result = c
                .directory
                .delete_destination(as_token(
                    &token,
                    pb::DeleteDestinationRequest {
                        id: doomed.clone(),
                        expected_directory_version: 0,
                    },
                ))
                .await;
            m.check(
                &cell("DeleteDestination HE"),
                got(result, |_| vec![]),
                expect(
                    changes,
                    all || he || he_th,
                    Code::PermissionDenied,
                    BTreeSet::new(),
                ),
            );

            // Routes: Hessen's region, and the neighbouring Thüringen's.
            for (service, region, to, allowed) in [
                (format!("990100000{k:05}"), "06411", "he-a", true),
                (format!("990200000{k:05}"), "16051", "th-a", all || he_th),
            ] {
                let result = c
                    .directory
                    .create_route(as_token(
                        &token,
                        pb::CreateRouteRequest {
                            route: Some(route(&service, region, to)),
                            expected_directory_version: 0,
                        },
                    ))
                    .await;
                m.check(
                    &cell(&format!("CreateRoute {region}")),
                    got(result, |r| vec![r.region]),
                    expect(changes, allowed, Code::PermissionDenied, set([region])),
                );
            }
            for (region, to, allowed) in [
                ("06412", "he-x", all || he || he_th),
                ("16052", "th-x", all || he_th),
            ] {
                let result = c
                    .directory
                    .update_route(as_token(
                        &token,
                        pb::UpdateRouteRequest {
                            route: Some(route("99000000000001", region, to)),
                            expected_directory_version: 0,
                        },
                    ))
                    .await;
                m.check(
                    &cell(&format!("UpdateRoute {region}")),
                    got(result, |r| vec![r.region]),
                    expect(changes, allowed, Code::PermissionDenied, set([region])),
                );
            }
            // Pointing Thüringen's Gera route at Hessen's he-a: the region decides.
            let result = c
                .directory
                .update_route(as_token(
                    &token,
                    pb::UpdateRouteRequest {
                        route: Some(route("99000000000001", "16052", "he-a")),
                        expected_directory_version: 0,
                    },
                ))
                .await;
            let pointed = result.is_ok();
            m.check(
                &cell("UpdateRoute 16052 to he-a"),
                got(result, |r| vec![r.destination]),
                expect(changes, all || he_th, Code::PermissionDenied, set(["he-a"])),
            );
            if pointed {
                c.directory
                    .update_route(setup(pb::UpdateRouteRequest {
                        route: Some(route("99000000000001", "16052", "th-x")),
                        expected_directory_version: 0,
                    }))
                    .await
                    .unwrap();
            }
            let doomed = format!("990300000{k:05}");
            c.directory
                .create_route(setup(pb::CreateRouteRequest {
                    route: Some(route(&doomed, "06411", "he-a")),
                    expected_directory_version: 0,
                }))
                .await
                .unwrap();
            let result = c
                .directory
                .delete_route(as_token(
                    &token,
                    pb::DeleteRouteRequest {
                        service: doomed.clone(),
                        region: "06411".into(),
                        expected_directory_version: 0,
                    },
                ))
                .await;
            m.check(
                &cell("DeleteRoute 06411 to he-a"),
                got(result, |_| vec![]),
                expect(changes, true, Code::PermissionDenied, BTreeSet::new()),
            );

            // The catalogue: every Land's.
            let key = format!("990400000{k:05}");
            let result = c
                .directory
                .put_service(as_token(
                    &token,
                    pb::PutServiceRequest {
                        service: Some(pb::Service {
                            key: key.clone(),
                            name: "Probe".into(),
                            ..Default::default()
                        }),
                        expected_directory_version: 0,
                    },
                ))
                .await;
            m.check(
                &cell("PutService"),
                got(result, |s| vec![s.key]),
                expect(changes, all, Code::PermissionDenied, set([&key])),
            );
            let key = format!("990500000{k:05}");
            c.directory
                .put_service(setup(pb::PutServiceRequest {
                    service: Some(pb::Service {
                        key: key.clone(),
                        name: "Probe".into(),
                        ..Default::default()
                    }),
                    expected_directory_version: 0,
                }))
                .await
                .unwrap();
            let result = c
                .directory
                .delete_service(as_token(
                    &token,
                    pb::DeleteServiceRequest {
                        key,
                        expected_directory_version: 0,
                    },
                ))
                .await;
            m.check(
                &cell("DeleteService"),
                got(result, |_| vec![]),
                expect(changes, all, Code::PermissionDenied, BTreeSet::new()),
            );

            // Ingress: Thüringen's and Hessen's platform.
            let result = c
                .operations
                .pause_ingress(as_token(
                    &token,
                    pb::PauseIngressRequest {
                        platform_id: "civento-th".into(),
                    },
                ))
                .await;
            m.check(
                &cell("PauseIngress civento-th"),
                got(result, |i| vec![i.platform_id]),
                expect(
                    changes,
                    all || he_th,
                    Code::PermissionDenied,
                    set(["civento-th"]),
                ),
            );
            c.operations
                .resume_ingress(setup(pb::ResumeIngressRequest {
                    platform_id: "civento-th".into(),
                }))
                .await
                .unwrap();
            let result = c
                .operations
                .resume_ingress(as_token(
                    &token,
                    pb::ResumeIngressRequest {
                        platform_id: "civento-he".into(),
                    },
                ))
                .await;
            m.check(
                &cell("ResumeIngress civento-he"),
                got(result, |i| vec![i.platform_id]),
                expect(
                    changes,
                    all || he || he_th,
                    Code::PermissionDenied,
                    set(["civento-he"]),
                ),
            );

            // Replays by id: another Land's letter (Thüringen's, for Thüringen), and one
            // of Hessen's own.
            let theirs = dead_letter("civento-th", "th-a", &format!("replay-{k}"));
            let ours = dead_letter("civento-he", "he-a", &format!("replay-{k}"));
            store
                .insert_dead_letters(&[theirs.clone(), ours.clone()])
                .await
                .unwrap();
            for (label, letter, allowed) in [
                ("another Land's", &theirs, all || he_th),
                ("its own", &ours, true),
            ] {
                let result = c
                    .dead
                    .replay_dead_letters(as_token(
                        &token,
                        pb::ReplayDeadLettersRequest {
                            ids: vec![letter.record.id.to_string()],
                            ..Default::default()
                        },
                    ))
                    .await;
                m.check(
                    &cell(&format!("ReplayDeadLetters {label}")),
                    got(result, |r| vec![format!("replayed {}", r.replayed)]),
                    expect(changes, allowed, Code::NotFound, set(["replayed 1"])),
                );
            }
            // Replaying to another Land's destination by hand.
            let result = c
                .dead
                .replay_dead_letters(as_token(
                    &token,
                    pb::ReplayDeadLettersRequest {
                        filter: Some(pb::DeadLetterFilter {
                            reason: format!("replay-{k}"),
                            ..Default::default()
                        }),
                        destination: "by-a".into(),
                        ..Default::default()
                    },
                ))
                .await;
            m.check(
                &cell("ReplayDeadLetters to by-a"),
                got(result, |r| vec![format!("replayed {}", r.replayed)]),
                expect(changes, all, Code::PermissionDenied, set(["replayed 0"])),
            );

            // A bulk discard by a filter that matches every Land's letters: only the
            // scope's are discarded, and the answer says which scope.
            let reason = format!("discard-{k}");
            let fresh = store_letters(&store, &reason).await;
            let fresh_ids: Vec<String> = fresh.iter().map(|l| l.record.id.to_string()).collect();
            let scoped = in_scope(&fresh_ids, s);
            // First a dry run of the replay and of the discard, and a discard confirmed
            // with a count one too high: the scope's letters are counted, none is touched.
            let filter = Some(pb::DeadLetterFilter {
                reason: reason.clone(),
                ..Default::default()
            });
            let result = c
                .dead
                .replay_dead_letters(as_token(
                    &token,
                    pb::ReplayDeadLettersRequest {
                        filter: filter.clone(),
                        dry_run: true,
                        ..Default::default()
                    },
                ))
                .await;
            m.check(
                &cell("ReplayDeadLetters dry run by filter"),
                got(result, |r| {
                    r.ids
                        .into_iter()
                        .chain([format!("dry run {}", r.dry_run)])
                        .collect()
                }),
                expect(changes, true, Code::Ok, {
                    let mut want = scoped.clone();
                    want.insert("dry run true".into());
                    want
                }),
            );
            let result = c
                .dead
                .discard_dead_letters(as_token(
                    &token,
                    pb::DiscardDeadLettersRequest {
                        filter: filter.clone(),
                        dry_run: true,
                        ..Default::default()
                    },
                ))
                .await;
            m.check(
                &cell("DiscardDeadLetters dry run by filter"),
                got(result, |r| {
                    r.ids
                        .into_iter()
                        .chain([format!("would discard {}", r.discarded)])
                        .collect()
                }),
                expect(changes, true, Code::Ok, {
                    let mut want = scoped.clone();
                    want.insert(format!("would discard {}", scoped.len()));
                    want
                }),
            );
            let result = c
                .dead
                .discard_dead_letters(as_token(
                    &token,
                    pb::DiscardDeadLettersRequest {
                        filter: filter.clone(),
                        expected_count: Some(scoped.len() as u32 + 1),
                        ..Default::default()
                    },
                ))
                .await;
            m.check(
                &cell("DiscardDeadLetters by filter, a wrong count"),
                got(result, |r| vec![format!("discarded {}", r.discarded)]),
                expect(changes, false, Code::FailedPrecondition, BTreeSet::new()),
            );
            let pending = c
                .dead
                .list_dead_letters(setup(pb::ListDeadLettersRequest {
                    filter: filter.clone(),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner()
                .total;
            m.check(
                &cell("dry runs and a wrong count touched nothing"),
                (Code::Ok, set([format!("pending {pending}")])),
                (Code::Ok, set([format!("pending {}", fresh_ids.len())])),
            );
            let result = c
                .dead
                .discard_dead_letters(as_token(
                    &token,
                    pb::DiscardDeadLettersRequest {
                        filter,
                        // What the dry run said, confirmed.
                        expected_count: Some(scoped.len() as u32),
                        ..Default::default()
                    },
                ))
                .await;
            let answer = got(result, |r| {
                vec![
                    format!("discarded {}", r.discarded),
                    format!("scope {}", r.scope),
                ]
            });
            m.check(
                &cell("DiscardDeadLetters by filter"),
                answer,
                expect(
                    changes,
                    true,
                    Code::Ok,
                    set([
                        format!("discarded {}", scoped.len()),
                        format!("scope {}", SCOPE_TEXT[s]),
                    ]),
                ),
            );
            let discarded: BTreeSet<String> = c
                .dead
                .list_dead_letters(setup(pb::ListDeadLettersRequest {
                    filter: Some(pb::DeadLetterFilter {
                        reason,
                        state: pb::DeadLetterState::Discarded as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner()
                .dead_letters
                .into_iter()
                .map(|d| d.id)
                .collect();
            m.check(
                &cell("DiscardDeadLetters by filter: what was discarded"),
                (Code::Ok, discarded),
                (Code::Ok, if changes { scoped } else { BTreeSet::new() }),
            );
        }
    }
    // A destination's Land is the directory's at the time of the call: Thüringen's letter
    // for a Hessen destination that does not exist yet is Hessen's once it does.
    let later = dead_letter("civento-th", "he-later", "later");
    store
        .insert_dead_letters(std::slice::from_ref(&later))
        .await
        .unwrap();
    let get = |c: &mut Clients| {
        let request = as_token(
            "viewer-he",
            pb::GetDeadLetterRequest {
                id: later.record.id.to_string(),
            },
        );
        let mut dead = c.dead.clone();
        async move {
            dead.get_dead_letter(request)
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        }
    };
    m.check(
        "viewer-he GetDeadLetter th→he-later before he-later exists",
        (get(&mut c).await.err().unwrap_or(Code::Ok), BTreeSet::new()),
        (Code::NotFound, BTreeSet::new()),
    );
    c.directory
        .create_destination(setup(pb::CreateDestinationRequest {
            destination: Some(destination("he-later", "06", "he")),
            expected_directory_version: 0,
        }))
        .await
        .unwrap();
    m.check(
        "viewer-he GetDeadLetter th→he-later once he-later exists",
        (get(&mut c).await.err().unwrap_or(Code::Ok), BTreeSet::new()),
        (Code::Ok, BTreeSet::new()),
    );
    m.done("access matrix (3 roles × 4 scopes × every RPC)");
    store.close().await;
    gw.stop().await;
    schema.drop().await;
}

/// Watches the live tail with each scope while submissions from and to every Land pass:
/// each watcher gets exactly its scope's events, nothing of another Land's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_tail_shows_only_the_scope_s_events() {
    let v = Vhosts::create("scopes-tail", &["he", "th", "by", "gw"]);
    let gw = Admin::start(config(&v, &format!("sqlite://{}", temp_store_path())).build()).await;
    let channel = gw.channel().await;
    let mut operations = OperationsServiceClient::new(channel.clone());

    let mut tails = Vec::new();
    for (scope, _) in SCOPES {
        let stream = operations
            .watch_events(as_token(
                &format!("viewer-{scope}"),
                pb::WatchEventsRequest::default(),
            ))
            .await
            .unwrap()
            .into_inner();
        tails.push(stream);
    }
    // (platform, its Land, region, in scope for all, he, he-th, he-a)
    let sent = [
        ("civento-he", "06", DARMSTADT, [true, true, true, true]),
        ("civento-he", "06", ERFURT, [true, true, true, false]),
        ("civento-th", "16", DARMSTADT, [true, true, true, true]),
        ("civento-th", "16", ERFURT, [true, false, true, false]),
        ("civento-th", "16", OFFENBACH, [true, false, true, false]),
        ("civento-th", "16", MUENCHEN, [true, false, true, false]),
        ("civento-by", "09", MUENCHEN, [true, false, false, false]),
        ("civento-by", "09", DARMSTADT, [true, true, true, true]),
        ("civento-he", "06", OFFENBACH, [true, true, true, false]),
    ];
    let mut connections = Vec::new();
    let mut channels = std::collections::HashMap::new();
    for label in ["he", "th", "by"] {
        let connection = connect(&v.url(label)).await;
        channels.insert(label, confirm_channel(&connection).await);
        connections.push(connection);
    }
    let mut ids = Vec::new();
    for round in 0..3 {
        for (platform, land, region, _) in sent {
            let s = sample_submission(platform, land, MELDE, region, 256);
            let broker = &platform["civento-".len()..];
            submit(&channels[broker], &s, Encoding::Protobuf).await;
            ids.push((s.submission_id, round));
        }
    }
    for (s, tail) in tails.iter_mut().enumerate() {
        let want: BTreeSet<String> = ids
            .iter()
            .zip(sent.iter().cycle())
            .filter(|(_, (.., seen))| seen[s])
            .map(|((id, _), _)| id.clone())
            .collect();
        let mut seen = BTreeSet::new();
        let mut foreign = Vec::new();
        let deadline = tokio::time::Instant::now() + HANG;
        // Until every expected event came, and then a while longer for any stray one.
        let mut quiet_until = None;
        loop {
            let wait = match quiet_until {
                Some(until) => until,
                None => deadline,
            };
            match tokio::time::timeout_at(wait, tail.message()).await {
                Ok(Ok(Some(event))) => {
                    assert!(!event.lagged, "watcher {} lagged", SCOPES[s].0);
                    if want.contains(&event.submission_id) {
                        seen.insert(event.submission_id);
                    } else {
                        foreign.push(format!(
                            "{} {} → {}",
                            event.submission_id, event.platform, event.destination
                        ));
                    }
                }
                Ok(other) => panic!("the tail of {} ended: {other:?}", SCOPES[s].0),
                Err(_) => break,
            }
            if seen == want && quiet_until.is_none() {
                quiet_until = Some(tokio::time::Instant::now() + Duration::from_millis(500));
            }
        }
        println!(
            "live tail of {}: {} of {} events, {} foreign",
            SCOPES[s].0,
            seen.len(),
            want.len(),
            foreign.len()
        );
        assert_eq!(seen, want, "watcher {}", SCOPES[s].0);
        assert!(
            foreign.is_empty(),
            "watcher {} saw other Länder's events: {foreign:?}",
            SCOPES[s].0
        );
    }
    gw.stop().await;
}
