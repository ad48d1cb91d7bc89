//! Back offices' receipts across Land borders: a platform in Hessen (its own vhost, as its
//! own broker), the back offices of Erfurt and Jena in Thüringen (another), the gateway's
//! own. Receipts travel back to the platform as status events; refused ones go to the
//! dead-letter queue for operators and tell nobody anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::store::Store;
use ozg_gateway::wire::admin as pb;
use ozg_gateway::wire::v1 as wire;

const MELDE: &str = "99115005104000";
const ERFURT: &str = "160510000000";
const JENA: &str = "160530000000";
const HANG: Duration = Duration::from_secs(30);
const TOKEN: &str = "viewer-token-for-receipts";
const OPERATOR: &str = "operator-token-for-receipts";

struct Setup {
    v: Vhosts,
    store_url: String,
}

fn setup(test: &str) -> Setup {
    Setup {
        v: Vhosts::create(test, &["he", "th", "gw"]),
        store_url: format!("sqlite://{}", temp_store_path()),
    }
}

impl Setup {
    /// Confirm channels on the platform's broker (he) and the back offices' (th).
    async fn channels(&self) -> (lapin::Channel, lapin::Channel) {
        let he = confirm_channel(&connect(&self.v.url("he")).await).await;
        let th = confirm_channel(&connect(&self.v.url("th")).await).await;
        (he, th)
    }
}

fn config(s: &Setup, receipts: &str) -> ozg_gateway::Config {
    let token = |name: &str, secret: &str, role: &str| {
        format!(
            "[[admin.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nroles = [\"{role}\"]\n",
            hex::encode(ozg_gateway::admin::auth::hash_token(secret))
        )
    };
    let admin = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n{}{}",
        token("viewer", TOKEN, "viewer"),
        token("ops", OPERATOR, "operator")
    );
    TestConfig::new(&s.v)
        .gateway(r#"confirm_timeout = "5s""#)
        .store(&s.store_url)
        .platform("civento-he", "06", "he", None)
        .destination("th-erfurt", "16", "th", "Stadt Erfurt, Bürgeramt")
        .line(r#"receipt_queue = "receipts-erfurt""#)
        .destination("th-jena", "16", "th", "Stadt Jena, Bürgeramt")
        .line(r#"receipt_queue = "receipts-jena""#)
        .route(MELDE, "16051", "th-erfurt")
        .route(MELDE, "16053", "th-jena")
        .extra(&format!("{receipts}\n{admin}"))
        .build()
}

fn receipt(id: &str, kind: wire::ReceiptKind, problems: Vec<wire::Problem>) -> wire::Receipt {
    wire::Receipt {
        receipt_id: uuid::Uuid::new_v4().to_string(),
        submission_id: id.to_owned(),
        kind: kind as i32,
        problems,
        note: String::new(),
        time: None,
    }
}

/// An acceptance of submission `id`.
fn acceptance(id: &str) -> wire::Receipt {
    receipt(id, wire::ReceiptKind::Accepted, vec![])
}

/// A rejection of submission `id` with one problem, titled `title`.
fn rejected(id: &str, title: &str) -> wire::Receipt {
    let problem = wire::Problem {
        title: title.into(),
        ..wire::Problem::default()
    };
    receipt(id, wire::ReceiptKind::Rejected, vec![problem])
}

/// Publishes a receipt to a back office's receipt queue, as the back office would.
async fn answer(th: &lapin::Channel, queue: &str, r: &wire::Receipt, encoding: Encoding) {
    let body = match encoding {
        Encoding::Protobuf => prost::Message::encode_to_vec(r),
        Encoding::Json => serde_json::to_vec(r).unwrap(),
    };
    publish(th, queue, &body, Some(encoding.content_type()), None, None).await;
}

/// Submits for `region` from Hessen's platform and takes it off the back office's queue;
/// returns the submission id after the platform heard `forwarded`.
async fn deliver(
    he: &lapin::Channel,
    th: &lapin::Channel,
    region: &str,
    destination: &str,
) -> String {
    let s = sample_submission("civento-he", "06", MELDE, region, 1024);
    submit(he, &s, Encoding::Protobuf).await;
    let arrived = take_backoffice(th, destination, 1, HANG).await;
    assert_eq!(arrived.len(), 1, "not delivered to {destination}");
    let status = take_status(he, "civento-he", 1, HANG).await;
    assert_eq!(
        status[0].header("x-ozg-status").as_deref(),
        Some("forwarded")
    );
    s.submission_id
}

fn event(m: &Received) -> wire::StatusEvent {
    serde_json::from_slice(&m.body).unwrap()
}

/// Status events reaching the platform within `quiet` of each other.
async fn statuses(he: &lapin::Channel, quiet: Duration) -> Vec<wire::StatusEvent> {
    drain(
        he,
        &ozg_gateway::topology::status_queue("civento-he"),
        quiet,
    )
    .await
    .iter()
    .map(event)
    .collect()
}

async fn trace_events(store: &Store, id: &str, last: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let events: Vec<String> = store
            .trace(id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
        if events.last().map(String::as_str) == Some(last) {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "trace so far: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_and_rejected_receipts_travel_back_across_brokers() {
    let s = setup("receipts-roundtrip");
    let gw = Admin::start(config(&s, "")).await;
    let (he, th) = s.channels().await;

    // Accepted, as protobuf.
    let accepted = deliver(&he, &th, ERFURT, "th-erfurt").await;
    answer(
        &th,
        "receipts-erfurt",
        &acceptance(&accepted),
        Encoding::Protobuf,
    )
    .await;
    let got = take_status(&he, "civento-he", 1, HANG).await;
    assert_eq!(got.len(), 1, "no event for the accepted receipt");
    assert_eq!(got[0].header("x-ozg-status").as_deref(), Some("accepted"));
    let e = event(&got[0]);
    assert_eq!(e.status, wire::Status::Accepted as i32);
    assert_eq!(e.submission_id, accepted);
    assert_eq!(
        (e.destination_id.as_str(), e.platform_id.as_str()),
        ("th-erfurt", "civento-he")
    );
    assert_eq!(e.destination_name, "Stadt Erfurt, Bürgeramt");

    // Rejected with problems, as JSON: the platform gets them as they were sent.
    let rejected = deliver(&he, &th, JENA, "th-jena").await;
    let problems = vec![
        wire::Problem {
            r#type: "urn:jena:problem:missing-document".into(),
            title: "Unterlage fehlt".into(),
            detail: "Mietvertrag nicht beigefügt".into(),
            instance: format!("urn:uuid:{rejected}"),
            ..wire::Problem::default()
        },
        wire::Problem {
            r#type: "urn:jena:problem:fee".into(),
            title: "Gebühr offen".into(),
            detail: "Gebühr nicht bezahlt".into(),
            ..wire::Problem::default()
        },
    ];
    answer(
        &th,
        "receipts-jena",
        &receipt(&rejected, wire::ReceiptKind::Rejected, problems.clone()),
        Encoding::Json,
    )
    .await;
    let got = take_status(&he, "civento-he", 1, HANG).await;
    let e = event(&got[0]);
    assert_eq!(got[0].header("x-ozg-status").as_deref(), Some("rejected"));
    assert_eq!(e.status, wire::Status::Rejected as i32);
    assert_eq!(e.problems, problems);
    assert_eq!(e.problem.as_ref(), problems.first());
    assert_eq!(e.destination_id, "th-jena");

    // The store keeps each submission's life; the trace shows it. Read once the gateway
    // has stopped: an SQLite store belongs to one gateway at a time.
    gw.stop().await;
    let store = ozg_gateway::store::open(&s.store_url).await.unwrap();
    assert_eq!(
        trace_events(&store, &accepted, "accepted").await,
        ["received", "forwarded", "accepted"]
    );
    assert_eq!(
        trace_events(&store, &rejected, "rejected").await,
        ["received", "forwarded", "rejected"]
    );
    let fate = store
        .fate(rejected.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fate.answer.as_deref(), Some("rejected"));
    assert!(
        drain_dead_letters(
            &connect(&s.v.url("gw"))
                .await
                .create_channel()
                .await
                .unwrap(),
            Duration::from_millis(300)
        )
        .await
        .is_empty()
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_from_the_wrong_destination_unknown_or_contradicting_are_refused_and_repeats_give_one_event()
 {
    let s = setup("receipts-refused");
    let gw = Admin::start(config(&s, "")).await;
    let (he, th) = s.channels().await;
    let gw_channel = connect(&s.v.url("gw"))
        .await
        .create_channel()
        .await
        .unwrap();

    let id = deliver(&he, &th, ERFURT, "th-erfurt").await;

    // Jena answers for Erfurt's submission: refused; the platform hears nothing.
    answer(
        &th,
        "receipts-jena",
        &rejected(&id, "nicht zuständig"),
        Encoding::Protobuf,
    )
    .await;
    let dead = take_dead_letters(&gw_channel, 1, HANG).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].header("x-ozg-reason").as_deref(),
        Some("receipt-wrong-destination")
    );
    assert_eq!(
        dead[0].header("x-ozg-destination").as_deref(),
        Some("th-jena")
    );
    // The words say nothing about where the submission did go.
    let detail = dead[0].header("x-ozg-detail").unwrap();
    assert!(!detail.contains("erfurt"), "{detail}");
    // An unknown id: refused the same way, after one more try (the delivery record may
    // have been on its way).
    let unknown = uuid::Uuid::new_v4().to_string();
    answer(
        &th,
        "receipts-jena",
        &acceptance(&unknown),
        Encoding::Protobuf,
    )
    .await;
    let dead = take_dead_letters(&gw_channel, 1, HANG).await;
    assert_eq!(
        dead[0].header("x-ozg-reason").as_deref(),
        Some("receipt-unknown-submission")
    );
    assert_eq!(
        dead[0].header("x-ozg-submission-id").as_deref(),
        Some(unknown.as_str())
    );
    // Not a receipt at all.
    publish(
        &th,
        "receipts-erfurt",
        b"{not json",
        Some("application/json"),
        None,
        None,
    )
    .await;
    let dead = take_dead_letters(&gw_channel, 1, HANG).await;
    assert_eq!(
        dead[0].header("x-ozg-reason").as_deref(),
        Some("receipt-invalid")
    );
    // A JSON receipt with a field the contract does not have (a misspelt `note`): refused
    // by the field's name, as submissions are, and not taken as the answer it looks like.
    let misspelt = format!(
        r#"{{"submissionId":"{id}","kind":"RECEIPT_KIND_ACCEPTED","nots":"an Amt 2 weitergeleitet"}}"#
    );
    publish(
        &th,
        "receipts-erfurt",
        misspelt.as_bytes(),
        Some("application/json"),
        None,
        None,
    )
    .await;
    let dead = take_dead_letters(&gw_channel, 1, HANG).await;
    assert_eq!(
        dead[0].header("x-ozg-reason").as_deref(),
        Some("receipt-invalid")
    );
    assert_eq!(dead[0].header("x-ozg-field").as_deref(), Some("nots"));
    let detail = dead[0].header("x-ozg-detail").unwrap();
    assert!(
        detail.starts_with("not a JSON ozg.gateway.v1.Receipt: nots: unknown field"),
        "{detail}"
    );
    assert!(!detail.contains("weitergeleitet"), "{detail}");
    assert!(statuses(&he, Duration::from_millis(500)).await.is_empty());

    // Erfurt accepts, twice: one event.
    let accept = acceptance(&id);
    answer(&th, "receipts-erfurt", &accept, Encoding::Protobuf).await;
    answer(&th, "receipts-erfurt", &accept, Encoding::Json).await;
    let events = statuses(&he, Duration::from_millis(1500)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].status, wire::Status::Accepted as i32);
    // Rejected after accepted contradicts it: refused, no event.
    answer(
        &th,
        "receipts-erfurt",
        &rejected(&id, "doch nicht"),
        Encoding::Protobuf,
    )
    .await;
    let dead = take_dead_letters(&gw_channel, 1, HANG).await;
    assert_eq!(
        dead[0].header("x-ozg-reason").as_deref(),
        Some("receipt-illegal-transition")
    );
    assert!(statuses(&he, Duration::from_millis(500)).await.is_empty());
    // Read once the gateway has stopped: an SQLite store belongs to one gateway at a time.
    gw.stop().await;
    let store = ozg_gateway::store::open(&s.store_url).await.unwrap();
    let fate = store.fate(id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(fate.answer.as_deref(), Some("accepted"));
    store.close().await;
    println!(
        "receipts: wrong-destination, unknown, invalid and contradicting refused; duplicate gave {} event",
        events.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_without_answer_is_reported_overdue_once_and_listed_for_operators() {
    let s = setup("receipts-overdue");
    // Controlled time: overdue after one second, looked for every 100 ms.
    let gw = Admin::start(config(
        &s,
        "[receipts]\noverdue_after = \"1s\"\ncheck_interval = \"100ms\"\n",
    ))
    .await;
    let (he, th) = s.channels().await;

    let silent = deliver(&he, &th, ERFURT, "th-erfurt").await;
    let answered = deliver(&he, &th, JENA, "th-jena").await;
    answer(
        &th,
        "receipts-jena",
        &acceptance(&answered),
        Encoding::Protobuf,
    )
    .await;
    let first = take_status(&he, "civento-he", 1, HANG).await;
    assert_eq!(event(&first[0]).status, wire::Status::Accepted as i32);

    let overdue = take_status(&he, "civento-he", 1, HANG).await;
    assert_eq!(overdue.len(), 1, "no overdue event");
    assert_eq!(
        overdue[0].header("x-ozg-status").as_deref(),
        Some("overdue")
    );
    let e = event(&overdue[0]);
    assert_eq!(
        (e.submission_id.as_str(), e.destination_id.as_str()),
        (silent.as_str(), "th-erfurt")
    );
    // Reported once, not at every check.
    assert!(statuses(&he, Duration::from_millis(1000)).await.is_empty());

    let channel = gw.channel().await;
    let mut request = tonic::Request::new(pb::ListOverdueRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let listed = pb::operations_service_client::OperationsServiceClient::new(channel)
        .list_overdue(request)
        .await
        .unwrap()
        .into_inner()
        .submissions;
    let ids: Vec<&str> = listed.iter().map(|s| s.submission_id.as_str()).collect();
    assert_eq!(ids, [silent.as_str()]);
    assert!(listed[0].reported_at.is_some());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_added_through_the_admin_api_takes_receipts_at_once() {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let s = setup("receipts-live");
    let gw = Admin::start(config(&s, "")).await;
    let (he, th) = s.channels().await;
    // Gera's back office sets up its queues, as a back office would.
    for queue in ["backoffice.th-gera", "receipts-gera"] {
        th.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    th.queue_bind(
        "backoffice.th-gera".into(),
        "backoffice".into(),
        "th-gera".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    fn op<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {OPERATOR}").parse().unwrap(),
        );
        request
    }
    let mut directory =
        pb::directory_service_client::DirectoryServiceClient::new(gw.channel().await);
    directory
        .create_destination(op(pb::CreateDestinationRequest {
            destination: Some(pb::Destination {
                id: "th-gera".into(),
                name: "Stadt Gera, Bürgerservice".into(),
                kind: "kreisfreie-stadt".into(),
                land: "16".into(),
                broker: "th".into(),
                exchange: "backoffice".into(),
                routing_key: "th-gera".into(),
                receipt_queue: "receipts-gera".into(),
                ..pb::Destination::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap();
    let request = op(pb::CreateRouteRequest {
        route: Some(pb::Route {
            service: MELDE.into(),
            region: "16052".into(),
            destination: "th-gera".into(),
            ..pb::Route::default()
        }),
        ..Default::default()
    });
    directory.create_route(request).await.unwrap();

    let id = deliver(&he, &th, "160520000000", "th-gera").await;
    answer(&th, "receipts-gera", &acceptance(&id), Encoding::Protobuf).await;
    let got = take_status(&he, "civento-he", 1, HANG).await;
    assert_eq!(
        got.len(),
        1,
        "no event for the receipt of the new destination"
    );
    let e = event(&got[0]);
    assert_eq!(
        (e.status, e.destination_id.as_str()),
        (wire::Status::Accepted as i32, "th-gera")
    );
    gw.stop().await;
}
