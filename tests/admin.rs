//! The admin API end to end: the real gateway in-process with its admin port on 127.0.0.1:0,
//! a real RabbitMQ, and the generated gRPC clients (plus the standard health and reflection
//! clients), as an operator's tooling would call it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::pki::Pki;
use common::*;
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use ozg_gateway::admin::auth::hash_token;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::sample;
use ozg_gateway::wire::admin as pb;
use pb::dead_letter_service_client::DeadLetterServiceClient;
use pb::directory_service_client::DirectoryServiceClient;
use pb::operations_service_client::OperationsServiceClient;
use pb::stats_service_client::StatsServiceClient;
use tonic::Code;
use tonic::transport::Channel as GrpcChannel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const MELDE: &str = "99115005104000";
const VIEWER: &str = "viewer-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";
const AUDITOR: &str = "payload-token-0123456789";
/// The payload role alone: payloads, nothing else.
const PAYLOAD_ONLY: &str = "payload-only-token-0123456789";
/// Darmstadt (kreisfreie Stadt, Kreis 06411) and Kassel (Kreis 06611).
const DARMSTADT: &str = "064110000000";
const KASSEL: &str = "066110000000";
const HANG: Duration = Duration::from_secs(30);

fn admin_toml() -> String {
    let token = |name: &str, secret: &str, roles: &str| {
        format!(
            "[[admin.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nroles = [{roles}]\n",
            hex::encode(hash_token(secret))
        )
    };
    format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n{}\n{}\n{}\n{}",
        token("watcher", VIEWER, "\"viewer\""),
        token("ops", OPERATOR, "\"operator\""),
        token("auditor", AUDITOR, "\"viewer\", \"payload\""),
        token("courier", PAYLOAD_ONLY, "\"payload\"")
    )
}

/// One Land (Hessen) with its platform and two back offices; no routes unless given.
fn config(v: &Vhosts, routes: &[(&str, &str, &str)]) -> TestConfig {
    let mut c = TestConfig::new(v)
        .gateway(r#"confirm_timeout = "5s""#)
        .platform("civento-he", "06", "he", Some(50))
        .destination("he-a", "06", "he", "Bürgeramt A")
        .destination("he-b", "06", "he", "Bürgeramt B");
    for (service, region, destination) in routes {
        c = c.route(service, region, destination);
    }
    c.dead_letters_into_store().extra(&admin_toml())
}

fn with_token<T>(token: Option<&str>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

fn op<T>(message: T) -> tonic::Request<T> {
    with_token(Some(OPERATOR), message)
}

async fn wait_health(channel: &GrpcChannel, service: &str, want: ServingStatus) {
    let mut health = HealthClient::new(channel.clone());
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .map(|r| r.into_inner().status)
            .map_err(|e| e.code());
        if status == Ok(want as i32) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health of {service:?} is {status:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
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

async fn submit_for(channel: &lapin::Channel, region: &str) -> String {
    let s = sample_submission("civento-he", "06", MELDE, region, 1024);
    submit(channel, &s, Encoding::Protobuf).await;
    s.submission_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_the_access_matrix() {
    let v = Vhosts::create("admin-access", &["he", "gw"]);
    let gw = Admin::start(config(&v, &[]).build()).await;
    let channel = gw.channel().await;

    // Health needs no token; the gateway is SERVING once its consumers are up.
    wait_health(&channel, "", ServingStatus::Serving).await;
    wait_health(&channel, "ingress/civento-he", ServingStatus::Serving).await;
    wait_health(&channel, "broker/he/publish", ServingStatus::Serving).await;

    // Reflection (v1 and v1alpha) lists the services without proto files.
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(channel.clone());
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let response = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection answer {response:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for wanted in [
            "ozg.gateway.admin.v1.StatsService",
            "ozg.gateway.admin.v1.DirectoryService",
            "ozg.gateway.admin.v1.DeadLetterService",
            "ozg.gateway.admin.v1.OperationsService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                names.iter().any(|n| n == wanted),
                "{wanted} not in {names:?}"
            );
        }
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as Alpha;
        let mut alpha = Alpha::new(channel.clone());
        let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::ListServices(
                    String::new(),
                ),
            ),
        };
        let mut stream = alpha
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        assert!(stream.message().await.unwrap().is_some());
    }

    // The matrix: (token, call) → code.
    let mut stats = StatsServiceClient::new(channel.clone());
    let mut directory = DirectoryServiceClient::new(channel.clone());
    let mut operations = OperationsServiceClient::new(channel.clone());
    let mut dead = DeadLetterServiceClient::new(channel.clone());
    for (token, want_read, want_change, want_payload) in [
        (
            None,
            Code::Unauthenticated,
            Code::Unauthenticated,
            Code::Unauthenticated,
        ),
        (
            Some("not-a-token"),
            Code::Unauthenticated,
            Code::Unauthenticated,
            Code::Unauthenticated,
        ),
        (
            Some(VIEWER),
            Code::Ok,
            Code::PermissionDenied,
            Code::PermissionDenied,
        ),
        (
            Some(AUDITOR),
            Code::Ok,
            Code::PermissionDenied,
            Code::NotFound,
        ),
        // Roles do not imply each other: the payload role reads payloads only.
        (
            Some(PAYLOAD_ONLY),
            Code::PermissionDenied,
            Code::PermissionDenied,
            Code::NotFound,
        ),
        (Some(OPERATOR), Code::Ok, Code::Ok, Code::PermissionDenied),
    ] {
        let code = |r: Result<_, tonic::Status>| r.map_or_else(|s| s.code(), |_: ()| Code::Ok);
        let read = code(
            stats
                .get_overview(with_token(token, pb::GetOverviewRequest::default()))
                .await
                .map(|_| ()),
        );
        assert_eq!(read, want_read, "overview with {token:?}");
        let read = code(
            directory
                .list_routes(with_token(token, pb::ListRoutesRequest::default()))
                .await
                .map(|_| ()),
        );
        assert_eq!(read, want_read, "list routes with {token:?}");
        let change = code(
            operations
                .resume_ingress(with_token(
                    token,
                    pb::ResumeIngressRequest {
                        platform_id: "civento-he".into(),
                    },
                ))
                .await
                .map(|_| ()),
        );
        assert_eq!(change, want_change, "resume with {token:?}");
        let change = code(
            directory
                .put_service(with_token(
                    token,
                    pb::PutServiceRequest {
                        service: Some(pb::Service {
                            key: MELDE.into(),
                            name: "Anmeldung einer Wohnung".into(),
                            ..pb::Service::default()
                        }),
                        ..Default::default()
                    },
                ))
                .await
                .map(|_| ()),
        );
        assert_eq!(change, want_change, "put service with {token:?}");
        // The payload right is checked before the id is looked up: an auditor gets as far
        // as NOT_FOUND for an id that does not exist.
        let payload = code(
            dead.get_dead_letter_payload(with_token(
                token,
                pb::GetDeadLetterPayloadRequest {
                    id: uuid::Uuid::new_v4().to_string(),
                    justification: "test".into(),
                },
            ))
            .await
            .map(|_| ()),
        );
        assert_eq!(payload, want_payload, "payload with {token:?}");
    }

    // The one change that went through is audited with the token's name.
    let audit = directory
        .list_audit(op(pb::ListAuditRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let actions: Vec<(String, String)> = audit
        .entries
        .iter()
        .map(|e| (e.actor.clone(), e.action.clone()))
        .collect();
    assert_eq!(actions, [("ops".to_owned(), "service.create".to_owned())]);
    // Nothing secret in what the API shows: no token, no broker password.
    let overview = stats
        .get_overview(op(pb::GetOverviewRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let shown = format!("{overview:?} {audit:?}");
    for secret in [VIEWER, OPERATOR, AUDITOR, PAYLOAD_ONLY, "guest:guest"] {
        assert!(!shown.contains(secret), "{secret} shown");
    }
    gw.stop().await;
}

/// Binds `backoffice.<id>` to the `backoffice` exchange, as a back office added at run time
/// would have done for itself.
async fn declare_backoffice(v: &Vhosts, label: &str, id: &str) {
    let connection = connect(&v.url(label)).await;
    let channel = connection.create_channel().await.unwrap();
    let queue = ozg_gateway::topology::backoffice_queue(id);
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            "backoffice".into(),
            id.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
}

/// A back office for Kassel, created through the API as a store entry, and the route of
/// MELDE in Kassel to it.
async fn add_kassel(v: &Vhosts, directory: &mut DirectoryServiceClient<GrpcChannel>) {
    declare_backoffice(v, "he", "he-kassel").await;
    let created = directory
        .create_destination(op(pb::CreateDestinationRequest {
            destination: Some(pb::Destination {
                id: "he-kassel".into(),
                name: "Stadt Kassel, Bürgerbüro".into(),
                kind: "kreisfreie-stadt".into(),
                land: "06".into(),
                broker: "he".into(),
                exchange: "backoffice".into(),
                routing_key: "he-kassel".into(),
                ..pb::Destination::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.source, pb::Source::Store as i32);
    directory
        .create_route(op(pb::CreateRouteRequest {
            route: Some(route(MELDE, "06611", "he-kassel")),
            ..Default::default()
        }))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_without_route_is_replayed_after_the_route_is_added_and_arrives() {
    let v = Vhosts::create("admin-replay", &["he", "gw"]);
    let gw = Admin::start(config(&v, &[("*", "06411", "he-a")]).build()).await;
    let channel = gw.channel().await;
    let mut directory = DirectoryServiceClient::new(channel.clone());
    let mut dead = DeadLetterServiceClient::new(channel.clone());
    let mut operations = OperationsServiceClient::new(channel.clone());
    let he = connect(&v.url("he")).await;
    let he = confirm_channel(&he).await;

    // Kassel has no route yet: the submission is dead-lettered and taken into the store.
    let s = sample_submission("civento-he", "06", MELDE, KASSEL, 1024);
    let body = sample::encode(&s, Encoding::Protobuf);
    submit_encoded(&he, &body, Encoding::Protobuf).await;
    let no_route = pb::DeadLetterFilter {
        reason: "no-route".into(),
        ..pb::DeadLetterFilter::default()
    };
    let deadline = tokio::time::Instant::now() + HANG;
    let letter = loop {
        let list = dead
            .list_dead_letters(with_token(
                Some(VIEWER),
                pb::ListDeadLettersRequest {
                    filter: Some(no_route.clone()),
                    ..pb::ListDeadLettersRequest::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        if let Some(first) = list.dead_letters.first() {
            assert_eq!(list.total, 1);
            break first.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter in the store"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(letter.submission_id, s.submission_id);
    assert_eq!(letter.platform, "civento-he");
    assert_eq!(letter.service, MELDE);
    assert_eq!(letter.ars, KASSEL);
    assert_eq!(letter.body_bytes, body.len() as u64);
    assert_eq!(letter.state, pb::DeadLetterState::Pending as i32);
    // Listing took nothing off any queue: the dead-letter queue is empty, the letter is in
    // the store, and listing again shows it again.
    assert_eq!(v.queue_depth("gw", DEAD_LETTERS).await, 0);

    // Filters that do not match show nothing.
    for filter in [
        pb::DeadLetterFilter {
            platform: "civento-th".into(),
            ..pb::DeadLetterFilter::default()
        },
        pb::DeadLetterFilter {
            service: "99008001011001".into(),
            ..pb::DeadLetterFilter::default()
        },
        pb::DeadLetterFilter {
            state: pb::DeadLetterState::Replayed as i32,
            ..pb::DeadLetterFilter::default()
        },
    ] {
        let list = dead
            .list_dead_letters(op(pb::ListDeadLettersRequest {
                filter: Some(filter.clone()),
                ..pb::ListDeadLettersRequest::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.total, 0, "{filter:?}");
    }

    // Payload: only with the payload role and a justification; the access is audited.
    let denied = dead
        .get_dead_letter_payload(op(pb::GetDeadLetterPayloadRequest {
            id: letter.id.clone(),
            justification: "check".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let unjustified = dead
        .get_dead_letter_payload(with_token(
            Some(AUDITOR),
            pb::GetDeadLetterPayloadRequest {
                id: letter.id.clone(),
                justification: " ".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(unjustified.code(), Code::InvalidArgument);
    let payload = dead
        .get_dead_letter_payload(with_token(
            Some(AUDITOR),
            pb::GetDeadLetterPayloadRequest {
                id: letter.id.clone(),
                justification: "ticket 4711: citizen asks".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(payload.body, body);

    // The operator adds a back office for Kassel and a route to it, then replays.
    add_kassel(&v, &mut directory).await;
    let replayed = dead
        .replay_dead_letters(op(pb::ReplayDeadLettersRequest {
            ids: vec![letter.id.clone()],
            ..pb::ReplayDeadLettersRequest::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.replayed, 1);
    let arrived = take_backoffice(&he, "he-kassel", 1, HANG).await;
    assert_eq!(arrived.len(), 1, "replayed submission did not arrive");
    assert_eq!(arrived[0].body, body, "the body travels unchanged");
    assert_eq!(
        arrived[0].message_id().as_deref(),
        Some(s.submission_id.as_str())
    );
    assert_eq!(
        arrived[0].header("x-ozg-destination").as_deref(),
        Some("he-kassel")
    );
    // The platform hears `rejected` first, then `forwarded` after the replay.
    let statuses = take_status(&he, "civento-he", 2, HANG).await;
    let words: Vec<String> = statuses
        .iter()
        .map(|m| m.header("x-ozg-status").unwrap_or_default())
        .collect();
    assert_eq!(words, ["rejected", "forwarded"]);

    // Selecting everything must be said; a filter acts on pending letters only.
    for (request, wanted) in [
        (pb::DiscardDeadLettersRequest::default(), "or all"),
        (
            pb::DiscardDeadLettersRequest {
                filter: Some(pb::DeadLetterFilter::default()),
                ..Default::default()
            },
            "or all",
        ),
        (
            pb::DiscardDeadLettersRequest {
                filter: Some(pb::DeadLetterFilter {
                    state: pb::DeadLetterState::Replayed as i32,
                    ..pb::DeadLetterFilter::default()
                }),
                ..Default::default()
            },
            "only pending",
        ),
    ] {
        let status = dead.discard_dead_letters(op(request)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains(wanted), "{}", status.message());
    }

    // A second replay of the same letter is refused (it is no longer pending).
    let again = dead
        .replay_dead_letters(op(pb::ReplayDeadLettersRequest {
            ids: vec![letter.id.clone()],
            ..pb::ReplayDeadLettersRequest::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.replayed, again.skipped.len()), (0, 1));
    let shown = dead
        .get_dead_letter(op(pb::GetDeadLetterRequest {
            id: letter.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.state, pb::DeadLetterState::Replayed as i32);
    assert_eq!((shown.replays, shown.state_changed_by.as_str()), (1, "ops"));

    // The trace tells the whole story.
    let deadline = tokio::time::Instant::now() + HANG;
    let events = loop {
        let trace = operations
            .get_submission_trace(with_token(
                Some(VIEWER),
                pb::GetSubmissionTraceRequest {
                    submission_id: s.submission_id.clone(),
                },
            ))
            .await;
        let events: Vec<String> = trace
            .map(|t| t.into_inner().events.into_iter().map(|e| e.event).collect())
            .unwrap_or_default();
        if events.last().map(String::as_str) == Some("forwarded") {
            break events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "trace so far: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        events,
        [
            "received",
            "dead-lettered",
            "replayed",
            "received",
            "forwarded"
        ]
    );

    // Who did what, newest first.
    let audit = directory
        .list_audit(with_token(Some(VIEWER), pb::ListAuditRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let actions: Vec<&str> = audit.entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "dead-letter.replay",
            "route.create",
            "destination.create",
            "dead-letter.payload"
        ]
    );
    assert!(
        audit.entries[3].after.contains("ticket 4711"),
        "{:?}",
        audit.entries[3]
    );
    assert_eq!(audit.entries[3].actor, "auditor");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_changed_live_applies_to_the_next_message_and_survives_a_restart() {
    let v = Vhosts::create("admin-live", &["he", "gw"]);
    let config = config(&v, &[]);
    let store = temp_store_path();
    let config = config.store(&format!("sqlite://{store}"));
    let gw = Admin::start(config.build()).await;
    let channel = gw.channel().await;
    let mut directory = DirectoryServiceClient::new(channel.clone());
    let mut operations = OperationsServiceClient::new(channel.clone());
    let he = connect(&v.url("he")).await;
    let he = confirm_channel(&he).await;

    // The same validation as the configuration file, with the same messages.
    for (bad, code, message) in [
        (
            route(MELDE, "06999", "he-a"),
            Code::InvalidArgument,
            "route.region: 06999 is not a Kreis in the municipality directory",
        ),
        (
            route("12345678901234", "06411", "he-a"),
            Code::InvalidArgument,
            "route.service: ",
        ),
        (
            route(MELDE, "06411", "he-nowhere"),
            Code::InvalidArgument,
            "route.destination: unknown destination \"he-nowhere\"",
        ),
    ] {
        let status = directory
            .create_route(op(pb::CreateRouteRequest {
                route: Some(bad),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code);
        assert!(status.message().contains(message), "{}", status.message());
    }

    let mut events = operations
        .watch_events(with_token(
            Some(VIEWER),
            pb::WatchEventsRequest {
                platform: "civento-he".into(),
                destination: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();

    directory
        .create_route(op(pb::CreateRouteRequest {
            route: Some(route(MELDE, "06411", "he-a")),
            ..Default::default()
        }))
        .await
        .unwrap();
    let first = submit_for(&he, DARMSTADT).await;
    let at_a = take_backoffice(&he, "he-a", 1, HANG).await;
    assert_eq!(at_a[0].message_id().as_deref(), Some(first.as_str()));

    // Resolve is a dry run: it explains, and sends nothing.
    let explained = directory
        .resolve(with_token(
            Some(VIEWER),
            pb::ResolveRequest {
                service: MELDE.into(),
                region: "06411000".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(explained.ars, DARMSTADT);
    assert_eq!(
        explained.destination.as_ref().map(|d| d.id.as_str()),
        Some("he-a")
    );
    assert_eq!(
        explained.matched_rule,
        format!("service {MELDE} region 06411")
    );
    let levels: Vec<(&str, bool)> = explained
        .steps
        .iter()
        .map(|s| (s.level.as_str(), s.matched))
        .collect();
    assert_eq!(
        levels,
        [
            ("Gemeinde", false),
            ("Gemeindeverband", false),
            ("Kreis", true)
        ]
    );

    directory
        .update_route(op(pb::UpdateRouteRequest {
            route: Some(route(MELDE, "06411", "he-b")),
            ..Default::default()
        }))
        .await
        .unwrap();
    // Optimistic concurrency: a change made against an older version is refused.
    let version = StatsServiceClient::new(channel.clone())
        .get_overview(op(pb::GetOverviewRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .directory_version;
    let stale = directory
        .update_route(op(pb::UpdateRouteRequest {
            route: Some(route(MELDE, "06411", "he-a")),
            expected_directory_version: version - 1,
        }))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    let second = submit_for(&he, DARMSTADT).await;
    let at_b = take_backoffice(&he, "he-b", 1, HANG).await;
    assert_eq!(at_b[0].message_id().as_deref(), Some(second.as_str()));
    assert!(
        drain_backoffice(&he, "he-a", Duration::from_millis(500))
            .await
            .is_empty()
    );

    // The live tail saw both, with their destinations.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(HANG, events.message())
            .await
            .expect("no routing event")
            .unwrap()
            .expect("stream ended");
        seen.push((event.submission_id, event.destination, event.outcome));
    }
    assert_eq!(
        seen,
        [
            (first.clone(), "he-a".to_owned(), "delivered".to_owned()),
            (second.clone(), "he-b".to_owned(), "delivered".to_owned())
        ]
    );
    gw.stop().await;

    // The route lives in the store: after a restart it is there, and it routes.
    let gw = Admin::start(config.build()).await;
    let channel = gw.channel().await;
    let mut directory = DirectoryServiceClient::new(channel.clone());
    let routes = directory
        .list_routes(with_token(Some(VIEWER), pb::ListRoutesRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .routes;
    assert_eq!(routes.len(), 1);
    assert_eq!(
        (
            routes[0].destination.as_str(),
            routes[0].source,
            routes[0].region_name.as_str()
        ),
        (
            "he-b",
            pb::Source::Store as i32,
            "Darmstadt, Wissenschaftsstadt"
        )
    );
    let third = submit_for(&he, DARMSTADT).await;
    let at_b = take_backoffice(&he, "he-b", 1, HANG).await;
    assert_eq!(at_b[0].message_id().as_deref(), Some(third.as_str()));
    // A route of the configuration file cannot be changed through the API; a missing one
    // is NOT_FOUND.
    let status = directory
        .delete_route(op(pb::DeleteRouteRequest {
            service: MELDE.into(),
            region: "06611".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = directory
        .delete_destination(op(pb::DeleteDestinationRequest {
            id: "he-b".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_consumption_and_resume_continues_with_nothing_lost() {
    let v = Vhosts::create("admin-pause", &["he", "gw"]);
    let gw = Admin::start(config(&v, &[(MELDE, "06411", "he-a")]).build()).await;
    let channel = gw.channel().await;
    let mut operations = OperationsServiceClient::new(channel.clone());
    let mut stats = StatsServiceClient::new(channel.clone());
    let he = connect(&v.url("he")).await;
    let he = confirm_channel(&he).await;
    wait_health(&channel, "ingress/civento-he", ServingStatus::Serving).await;

    let mut published = Vec::new();
    for _ in 0..50 {
        published.push(submit_for(&he, DARMSTADT).await);
    }
    let mut arrived = take_backoffice(&he, "he-a", 50, HANG).await;

    let state = operations
        .pause_ingress(op(pb::PauseIngressRequest {
            platform_id: "civento-he".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(state.paused);
    wait_health(&channel, "ingress/civento-he", ServingStatus::NotServing).await;
    // Every ingress paused on purpose: the gateway is still ready (README, "Health").
    wait_health(&channel, "", ServingStatus::Serving).await;
    for _ in 0..100 {
        published.push(submit_for(&he, DARMSTADT).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        v.queue_depth("he", "submissions").await,
        100,
        "consumed while paused"
    );
    let overview = stats
        .get_overview(with_token(Some(VIEWER), pb::GetOverviewRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(overview.platforms[0].consumer_state, "paused");

    operations
        .resume_ingress(op(pb::ResumeIngressRequest {
            platform_id: "civento-he".into(),
        }))
        .await
        .unwrap();
    wait_health(&channel, "", ServingStatus::Serving).await;
    arrived.extend(take_backoffice(&he, "he-a", 100, HANG).await);
    arrived.extend(drain_backoffice(&he, "he-a", Duration::from_millis(500)).await);
    let mut got: Vec<String> = arrived.iter().filter_map(|m| m.message_id()).collect();
    got.sort();
    let mut want = published.clone();
    want.sort();
    println!(
        "pause/resume: published={} delivered={} lost={} duplicated={}",
        published.len(),
        got.len(),
        want.iter().filter(|id| !got.contains(id)).count(),
        got.len() - {
            let mut unique = got.clone();
            unique.dedup();
            unique.len()
        }
    );
    assert_eq!(got, want, "lost or duplicated across pause and resume");

    let overview = stats
        .get_overview(with_token(Some(VIEWER), pb::GetOverviewRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let p = &overview.platforms[0];
    assert_eq!(
        (p.consumed, p.forwarded, p.rejected, p.in_flight),
        (150, 150, 0, 0)
    );
    assert_eq!(p.consumer_state, "consuming");
    let a = overview
        .destinations
        .iter()
        .find(|d| d.destination_id == "he-a")
        .unwrap();
    assert_eq!((a.delivered, a.failed), (150, 0));
    assert_eq!(overview.store, "sqlite");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates_refuses_unverified_peers() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    ozg_gateway::admin::install_crypto_provider();
    let v = Vhosts::create("admin-tls", &["he", "gw"]);
    let dir = tempfile::tempdir().unwrap();
    let servers = Pki::new();
    let clients = Pki::new();
    let (cert, key) = servers.issue(&["localhost"]);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let tls = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\nclient_ca = \"{}\"\n",
        write("admin.crt", &cert),
        write("admin.key", &key),
        write("clients.crt", &clients.ca)
    );
    let admin = admin_toml().replacen(
        "address = \"127.0.0.1:0\"\n",
        &format!("address = \"127.0.0.1:0\"\n{tls}"),
        1,
    );
    let config = TestConfig::new(&v)
        .platform("civento-he", "06", "he", None)
        .extra(&admin)
        .build();
    let gw = Admin::start(config).await;
    let url = format!("https://{}", gw.address);
    let overview = |tls: Option<ClientTlsConfig>| {
        let url = url.clone();
        async move {
            let mut endpoint = Endpoint::from_shared(url).unwrap();
            if let Some(tls) = tls {
                endpoint = endpoint.tls_config(tls).unwrap();
            }
            let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
            StatsServiceClient::new(channel)
                .get_overview(with_token(Some(VIEWER), pb::GetOverviewRequest::default()))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    };
    let (client_cert, client_key) = clients.issue(&["operator-alice"]);
    let trusted = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&servers.ca))
        .domain_name("localhost");
    // Server verified, client certificate presented: the call goes through.
    overview(Some(
        trusted
            .clone()
            .identity(Identity::from_pem(&client_cert, &client_key)),
    ))
    .await
    .expect("mutual TLS call");
    // No client certificate: refused.
    assert!(overview(Some(trusted.clone())).await.is_err());
    // A client certificate from another CA: refused.
    let (stranger_cert, stranger_key) = Pki::new().issue(&["stranger"]);
    assert!(
        overview(Some(
            trusted.identity(Identity::from_pem(&stranger_cert, &stranger_key))
        ))
        .await
        .is_err()
    );
    // The client does not trust a server certificate from another CA.
    let wrong_ca = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(Pki::new().ca))
        .domain_name("localhost")
        .identity(Identity::from_pem(&client_cert, &client_key));
    assert!(overview(Some(wrong_ca)).await.is_err());
    gw.stop().await;
}

/// Admin calls answer in about a millisecond over loopback: without TCP_NODELAY on the
/// server's connections, Nagle's algorithm and delayed ACKs held each answer ~40 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_answer_in_milliseconds_over_loopback() {
    let v = Vhosts::create("admin-latency", &["he", "gw"]);
    let gw = Admin::start(config(&v, &[("*", "06411", "he-a")]).build()).await;
    let channel = gw.channel().await;
    let mut stats = StatsServiceClient::new(channel.clone());
    let mut directory = DirectoryServiceClient::new(channel);
    let mut took = Vec::new();
    for i in 0..50 {
        let started = std::time::Instant::now();
        if i % 2 == 0 {
            stats
                .get_overview(op(pb::GetOverviewRequest::default()))
                .await
                .unwrap();
        } else {
            directory
                .list_routes(op(pb::ListRoutesRequest::default()))
                .await
                .unwrap();
        }
        took.push(started.elapsed());
    }
    took.sort();
    let median = took[took.len() / 2];
    println!(
        "admin calls over loopback: median {median:?}, slowest {:?}",
        took[took.len() - 1]
    );
    assert!(median < Duration::from_millis(15), "median {median:?}");
    gw.stop().await;
}

/// Bad input is INVALID_ARGUMENT naming the field, with at most a short escaped prefix of
/// what was sent; nothing of it reaches the store or the directory. Destinations are held
/// to the configuration file's rules: an id of letters and digits, a bounded name, and no
/// target that is the gateway's own or a platform's ingress (each would loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_by_field_and_never_echoed_at_length() {
    let v = Vhosts::create("admin-input", &["he", "gw"]);
    let gw = Admin::start(config(&v, &[]).build()).await;
    let channel = gw.channel().await;
    let mut directory = DirectoryServiceClient::new(channel.clone());
    let mut dead = DeadLetterServiceClient::new(channel.clone());
    let mut operations = OperationsServiceClient::new(channel);

    let huge = "x".repeat(100 * 1024);
    let destination = |change: &dyn Fn(&mut pb::Destination)| {
        let mut d = pb::Destination {
            id: "he-neu".into(),
            name: "Bürgeramt Neustadt".into(),
            kind: "gemeinde".into(),
            land: "06".into(),
            broker: "he".into(),
            exchange: "backoffice".into(),
            routing_key: "he-neu".into(),
            ..pb::Destination::default()
        };
        change(&mut d);
        op(pb::CreateDestinationRequest {
            destination: Some(d),
            expected_directory_version: 0,
        })
    };
    let mut results: Vec<(&str, Result<(), tonic::Status>, &str)> = vec![
        (
            "a dead letter id of 100 KB",
            dead.get_dead_letter(op(pb::GetDeadLetterRequest { id: huge.clone() }))
                .await
                .map(|_| ()),
            "id: has 102400 characters, at most 128 are allowed (\"xxxxxxxx",
        ),
        (
            "a NUL byte in a filter",
            dead.list_dead_letters(op(pb::ListDeadLettersRequest {
                filter: Some(pb::DeadLetterFilter {
                    platform: "civento\0he".into(),
                    ..pb::DeadLetterFilter::default()
                }),
                ..pb::ListDeadLettersRequest::default()
            }))
            .await
            .map(|_| ()),
            "filter.platform: contains a control character (U+0000) at byte 7",
        ),
        (
            "a destination id of 100 KB",
            directory
                .get_destination(op(pb::GetDestinationRequest { id: huge.clone() }))
                .await
                .map(|_| ()),
            "id: has 102400 characters",
        ),
        (
            "a trace of a 100 KB id",
            operations
                .get_submission_trace(op(pb::GetSubmissionTraceRequest {
                    submission_id: huge.clone(),
                }))
                .await
                .map(|_| ()),
            "submission_id: has 102400 characters",
        ),
    ];
    type Change = fn(&mut pb::Destination);
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "a control character in the id",
            |d| d.id = "he\u{7}neu".into(),
            "destination.id: contains a control character (U+0007) at byte 2",
        ),
        (
            "a space in the id",
            |d| d.id = "he neu".into(),
            "destination.id: \"he neu\" is not an id",
        ),
        (
            "a name of 1 MB",
            |d| d.name = "n".repeat(1 << 20),
            "destination.name: has 1048576 characters, at most 300 are allowed",
        ),
        (
            "the replay queue as target",
            |d| {
                d.exchange = String::new();
                d.routing_key = "ozg.gateway.replay".into();
            },
            "destination.routing_key: \"ozg.gateway.replay\" is the gateway's own queue",
        ),
        (
            "the retry exchange as target",
            |d| d.exchange = "ozg.gateway.retry".into(),
            "destination.exchange: \"ozg.gateway.retry\" is the gateway's own",
        ),
        (
            "the dead-letter queue as receipt queue",
            |d| d.receipt_queue = "ozg.gateway.dead-letters".into(),
            "destination.receipt_queue: \"ozg.gateway.dead-letters\" is the gateway's own queue",
        ),
        (
            "the platform's ingress queue as target",
            |d| {
                d.exchange = String::new();
                d.routing_key = "submissions".into();
            },
            "destination.routing_key: \"submissions\" is the ingress queue of platform \"civento-he\"",
        ),
    ];
    for (label, change, expected) in &cases {
        results.push((
            label,
            directory
                .create_destination(destination(change))
                .await
                .map(|_| ()),
            expected,
        ));
    }
    for (label, result, expected) in results {
        let status = result.expect_err(label);
        assert_eq!(status.code(), Code::InvalidArgument, "{label}: {status:?}");
        assert!(
            status.message().starts_with(expected),
            "{label}: {}",
            status.message()
        );
        assert!(
            status.message().len() < 300,
            "{label}: {} bytes echoed",
            status.message().len()
        );
    }

    // Nothing of it was taken: the directory is the file's, the audit log empty; a good
    // destination still goes through.
    let listed = directory
        .list_destinations(op(pb::ListDestinationsRequest {}))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed.destinations.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["he-a", "he-b"]);
    directory
        .create_destination(destination(&|_| {}))
        .await
        .unwrap();
    let audit = directory
        .list_audit(op(pb::ListAuditRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(audit.entries.len(), 1, "{audit:?}");
    gw.stop().await;
}

/// A dead letter of civento-he for `destination`, stored directly, an hour old, with a
/// submission for Darmstadt as its body.
fn stored_letter(reason: &str, destination: &str) -> ozg_gateway::store::NewDeadLetter {
    let s = sample_submission("civento-he", "06", MELDE, DARMSTADT, 256);
    ozg_gateway::store::NewDeadLetter {
        record: ozg_gateway::store::DeadLetterRecord {
            id: uuid::Uuid::new_v4(),
            submission_id: s.submission_id.clone(),
            platform: "civento-he".into(),
            reason: reason.into(),
            field: String::new(),
            detail: "stored by the test".into(),
            service: MELDE.into(),
            ars: DARMSTADT.into(),
            destination: destination.into(),
            dead_lettered_at: std::time::SystemTime::now() - Duration::from_secs(3600),
            content_type: Encoding::Protobuf.content_type().into(),
            message_id: s.submission_id.clone(),
            headers: "{}".into(),
        },
        body: sample::encode(&s, Encoding::Protobuf),
    }
}

fn counts(list: &[pb::DeadLetterCount]) -> Vec<(String, u64)> {
    list.iter().map(|c| (c.key.clone(), c.count)).collect()
}

fn reason(reason: &str) -> Option<pb::DeadLetterFilter> {
    Some(pb::DeadLetterFilter {
        reason: reason.into(),
        ..pb::DeadLetterFilter::default()
    })
}

/// Dead-letter triage as an operator does it: counts by reason, platform and destination;
/// a dry run that touches nothing; a confirmed count that no longer holds is refused and
/// touches nothing; a replay whose outcomes say which letters arrived and which were
/// dead-lettered again, and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triage_counts_dry_runs_confirms_and_follows_what_replays_became() {
    let v = Vhosts::create("admin-triage", &["he", "gw"]);
    let schema = PgSchema::create("admin_triage").await;
    let store = ozg_gateway::store::open(&schema.url).await.unwrap();
    // An hour old: three that failed at he-a, two with a bad service key.
    let old: Vec<_> = (0..3)
        .map(|_| stored_letter("delivery-failed", "he-a"))
        .chain((0..2).map(|_| stored_letter("invalid-service-key", "")))
        .collect();
    store.insert_dead_letters(&old).await.unwrap();
    let gw = Admin::start(
        config(&v, &[("*", "06411", "he-a")])
            .store(&schema.url)
            .build(),
    )
    .await;
    let channel = gw.channel().await;
    let mut directory = DirectoryServiceClient::new(channel.clone());
    let mut dead = DeadLetterServiceClient::new(channel.clone());
    let he = connect(&v.url("he")).await;
    let he = confirm_channel(&he).await;

    // Now: two for Kassel and one for Offenbach, neither with a route.
    const OFFENBACH: &str = "064130000000";
    let mut kassel = vec![submit_for(&he, KASSEL).await, submit_for(&he, KASSEL).await];
    let offenbach = submit_for(&he, OFFENBACH).await;
    let deadline = tokio::time::Instant::now() + HANG;
    let fresh = loop {
        let list = dead
            .list_dead_letters(op(pb::ListDeadLettersRequest {
                filter: reason("no-route"),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        if list.total == 3 {
            break list.dead_letters;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of 3 no-route letters stored",
            list.total
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Counts, for a viewer: every pending letter, then a reason, then a time range.
    let reader = dead.clone();
    let summary = |filter: Option<pb::DeadLetterFilter>| {
        let mut dead = reader.clone();
        async move {
            dead.summarize_dead_letters(with_token(
                Some(VIEWER),
                pb::SummarizeDeadLettersRequest { filter },
            ))
            .await
            .unwrap()
            .into_inner()
        }
    };
    let all = summary(None).await;
    println!("summary: {all:?}");
    assert_eq!(all.total, 8);
    assert_eq!(
        counts(&all.by_reason),
        [
            ("delivery-failed".into(), 3),
            ("no-route".into(), 3),
            ("invalid-service-key".into(), 2)
        ]
    );
    assert_eq!(counts(&all.by_platform), [("civento-he".into(), 8)]);
    assert_eq!(
        counts(&all.by_destination),
        [(String::new(), 5), ("he-a".into(), 3)]
    );
    assert_eq!(all.scope, "every Land");
    let no_route = summary(reason("no-route")).await;
    assert_eq!(no_route.total, 3);
    assert_eq!(counts(&no_route.by_destination), [(String::new(), 3)]);
    let half_hour_ago = std::time::SystemTime::now() - Duration::from_secs(1800);
    let older = summary(Some(pb::DeadLetterFilter {
        until: Some(pbjson_types::Timestamp {
            seconds: half_hour_ago
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64,
            nanos: 0,
        }),
        ..Default::default()
    }))
    .await;
    assert_eq!(
        (older.total, counts(&older.by_reason)),
        (
            5,
            vec![
                ("delivery-failed".into(), 3),
                ("invalid-service-key".into(), 2)
            ]
        )
    );
    let none = summary(Some(pb::DeadLetterFilter {
        platform: "civento-th".into(),
        ..Default::default()
    }))
    .await;
    assert_eq!((none.total, none.by_reason.len()), (0, 0));

    // A dry run of a discard: the two bad service keys, and nothing changes.
    let bad_key: BTreeSet<String> = old[3..].iter().map(|l| l.record.id.to_string()).collect();
    let dry = dead
        .discard_dead_letters(op(pb::DiscardDeadLettersRequest {
            filter: reason("invalid-service-key"),
            dry_run: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(dry.dry_run);
    assert_eq!((dry.discarded, dry.matched), (2, 2));
    assert_eq!(dry.ids.iter().cloned().collect::<BTreeSet<_>>(), bad_key);
    // A count that is not the selection's is refused, naming the actual one.
    let refused = dead
        .discard_dead_letters(op(pb::DiscardDeadLettersRequest {
            filter: reason("invalid-service-key"),
            expected_count: Some(3),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("holds 2") && refused.message().contains("not the 3"),
        "{}",
        refused.message()
    );
    assert_eq!(
        summary(None).await.total,
        8,
        "the dry run or refusal touched letters"
    );
    let discarded = dead
        .discard_dead_letters(op(pb::DiscardDeadLettersRequest {
            filter: reason("invalid-service-key"),
            expected_count: Some(2),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((discarded.discarded, discarded.dry_run), (2, false));
    assert_eq!(summary(None).await.total, 6);

    // A dry run of the replay: the three no-route letters; nothing is sent.
    let no_route_ids: BTreeSet<String> = fresh.iter().map(|d| d.id.clone()).collect();
    let dry = dead
        .replay_dead_letters(op(pb::ReplayDeadLettersRequest {
            filter: reason("no-route"),
            dry_run: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((dry.replayed, dry.matched, dry.dry_run), (3, 3, true));
    assert_eq!(
        dry.ids.iter().cloned().collect::<BTreeSet<_>>(),
        no_route_ids
    );

    // Kassel gets its back office and route; Offenbach still has none.
    add_kassel(&v, &mut directory).await;
    // The operator confirmed two, but three match: refused, nothing replayed.
    let refused = dead
        .replay_dead_letters(op(pb::ReplayDeadLettersRequest {
            filter: reason("no-route"),
            expected_count: Some(2),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("holds 3"),
        "{}",
        refused.message()
    );
    assert_eq!(summary(reason("no-route")).await.total, 3);
    assert_eq!(
        drain_backoffice(&he, "he-kassel", Duration::from_millis(500))
            .await
            .len(),
        0,
        "a refused replay sent something"
    );
    let replayed = dead
        .replay_dead_letters(op(pb::ReplayDeadLettersRequest {
            filter: reason("no-route"),
            expected_count: Some(3),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((replayed.replayed, replayed.dry_run), (3, false));
    assert_eq!(
        replayed.ids.iter().cloned().collect::<BTreeSet<_>>(),
        no_route_ids
    );

    // What became of each: Kassel's delivered to he-kassel, Offenbach's dead-lettered
    // again as no-route, as a new letter. A letter never replayed and a discarded one say
    // so. Asked by a viewer, as a console would.
    let mut asked = replayed.ids.clone();
    asked.push(old[0].record.id.to_string());
    asked.push(old[3].record.id.to_string());
    let deadline = tokio::time::Instant::now() + HANG;
    let outcomes = loop {
        let outcomes = dead
            .get_replay_outcomes(with_token(
                Some(VIEWER),
                pb::GetReplayOutcomesRequest { ids: asked.clone() },
            ))
            .await
            .unwrap()
            .into_inner()
            .outcomes;
        let done = outcomes.iter().all(|o| o.settled)
            && outcomes.iter().all(|o| {
                o.outcome != pb::ReplayOutcomeKind::DeadLettered as i32
                    || !o.dead_letter_id.is_empty()
            });
        if done {
            break outcomes;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replays not settled: {outcomes:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("outcomes: {outcomes:?}");
    let ids: Vec<&str> = outcomes.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids, asked.iter().map(String::as_str).collect::<Vec<_>>());
    let mut delivered = Vec::new();
    let mut again = Vec::new();
    for o in &outcomes[..3] {
        assert_eq!(o.replayed_by, "ops");
        assert!(o.replayed_at.is_some());
        match pb::ReplayOutcomeKind::try_from(o.outcome) {
            Ok(pb::ReplayOutcomeKind::Delivered) => {
                assert_eq!(o.destination, "he-kassel");
                delivered.push(o.submission_id.clone());
            }
            Ok(pb::ReplayOutcomeKind::DeadLettered) => {
                assert_eq!(o.reason, "no-route");
                again.push((o.submission_id.clone(), o.dead_letter_id.clone()));
            }
            other => panic!("unexpected outcome {other:?}: {o:?}"),
        }
    }
    delivered.sort();
    kassel.sort();
    assert_eq!(delivered, kassel);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, offenbach);
    let new_letter = dead
        .get_dead_letter(op(pb::GetDeadLetterRequest {
            id: again[0].1.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (new_letter.reason.as_str(), new_letter.state),
        ("no-route", pb::DeadLetterState::Pending as i32)
    );
    assert_eq!(
        outcomes[3].outcome,
        pb::ReplayOutcomeKind::NotReplayed as i32
    );
    assert_eq!(outcomes[4].outcome, pb::ReplayOutcomeKind::Discarded as i32);
    let arrived = take_backoffice(&he, "he-kassel", 2, HANG).await;
    println!(
        "published 3, delivered {} to he-kassel, dead-lettered again {}",
        arrived.len(),
        again.len()
    );
    assert_eq!(arrived.len(), 2);
    // One id the caller cannot find makes the whole answer NOT_FOUND.
    let unknown = dead
        .get_replay_outcomes(op(pb::GetReplayOutcomesRequest {
            ids: vec![replayed.ids[0].clone(), uuid::Uuid::new_v4().to_string()],
        }))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    gw.stop().await;
    store.close().await;
    schema.drop().await;
}
