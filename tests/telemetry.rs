//! Observability with the real OpenTelemetry SDK (in-memory exporter) and a real scrape of
//! the metrics endpoint: the spans of one submission exist, nest and carry the messaging
//! attributes; the platform's trace is continued into the delivered message and the status
//! event; the metrics count exactly what the test sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use ozg_gateway::envelope::Encoding;
use ozg_gateway::sample;
use ozg_gateway::wire::v1 as wire;
use tracing_subscriber::layer::SubscriberExt;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// One global subscriber for this test binary, exporting into memory.
fn exporter() -> &'static (InMemorySpanExporter, SdkTracerProvider) {
    static EXPORTER: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::set_global_default(subscriber).unwrap();
        (exporter, provider)
    })
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// (trace id, parent span id) of a W3C traceparent header value.
fn parse_traceparent(value: &str) -> (String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {value:?}");
    assert_eq!(parts[0], "00");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_s_spans_nest_and_continue_the_platform_s_trace() {
    let (exporter, provider) = exporter();
    let v = Vhosts::create("spans", &["gw", "he"]);
    let config = TestConfig::new(&v)
        .platform("civento-he", "06", "he", None)
        .destination("healthy", "06", "he", "Darmstadt")
        .route("*", "06", "healthy")
        .build();
    let gateway = start_gateway(config).await;
    let he = connect(&v.url("he")).await;
    let channel = confirm_channel(&he).await;

    let traced = sample_submission("civento-he", "06", "99115005104000", "064110000000", 1024);
    let mut headers = FieldTable::default();
    // As bytes, as some clients send it.
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    headers.insert(
        "traceparent".into(),
        AMQPValue::ByteArray(traceparent.as_bytes().to_vec().into()),
    );
    publish(
        &channel,
        "submissions",
        &sample::encode(&traced, Encoding::Protobuf),
        Some("application/x-protobuf"),
        None,
        Some(headers),
    )
    .await;
    let untraced = sample_submission("civento-he", "06", "99115005104000", "064110000000", 1024);
    submit(&channel, &untraced, Encoding::Json).await;

    let read = he.create_channel().await.unwrap();
    let delivered = take_backoffice(&read, "healthy", 2, Duration::from_secs(20)).await;
    assert_eq!(delivered.len(), 2);
    let events = take_status(&read, "civento-he", 2, Duration::from_secs(20)).await;
    gateway.stop().await;
    provider.force_flush().unwrap();

    let by_id = |id: &str| {
        delivered
            .iter()
            .find(|m| m.message_id().as_deref() == Some(id))
            .unwrap()
    };
    let (trace, publish_parent) =
        parse_traceparent(&by_id(&traced.submission_id).header("traceparent").unwrap());
    assert_eq!(
        trace, TRACE_ID,
        "the delivered message continues the platform's trace"
    );
    let (other_trace, _) = parse_traceparent(
        &by_id(&untraced.submission_id)
            .header("traceparent")
            .unwrap(),
    );
    assert_ne!(
        other_trace, TRACE_ID,
        "a submission without context starts a new trace"
    );
    assert_ne!(other_trace, "0".repeat(32));
    let event = events
        .iter()
        .find(|e| e.header("x-ozg-submission-id").as_deref() == Some(traced.submission_id.as_str()))
        .unwrap();
    assert_eq!(
        parse_traceparent(&event.header("traceparent").unwrap()).0,
        TRACE_ID,
        "status events carry the trace too"
    );

    let spans = exporter.get_finished_spans().unwrap();
    let in_trace: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_context.trace_id().to_string() == TRACE_ID)
        .collect();
    let process = in_trace
        .iter()
        .find(|s| s.name == "process submissions")
        .expect("a process span");
    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_eq!(
        process.parent_span_id.to_string(),
        PARENT_ID,
        "child of the platform's span"
    );
    assert_eq!(
        attribute(process, "messaging.system").as_deref(),
        Some("rabbitmq")
    );
    assert_eq!(
        attribute(process, "messaging.operation.type").as_deref(),
        Some("process")
    );
    assert_eq!(
        attribute(process, "messaging.destination.name").as_deref(),
        Some("submissions")
    );
    assert_eq!(
        attribute(process, "messaging.message.id").as_deref(),
        Some(traced.submission_id.as_str())
    );
    assert_eq!(
        attribute(process, "ozg.outcome").as_deref(),
        Some("delivered")
    );
    let route = in_trace
        .iter()
        .find(|s| s.name == "route")
        .expect("a route span");
    assert_eq!(route.parent_span_id, process.span_context.span_id());
    assert_eq!(
        attribute(route, "ozg.destination").as_deref(),
        Some("healthy")
    );
    let publish = in_trace
        .iter()
        .find(|s| s.name == "publish backoffice")
        .expect("a publish span");
    assert_eq!(publish.span_kind, SpanKind::Producer);
    assert_eq!(publish.parent_span_id, process.span_context.span_id());
    assert_eq!(
        attribute(publish, "messaging.rabbitmq.destination.routing_key").as_deref(),
        Some("healthy")
    );
    assert_eq!(
        attribute(publish, "messaging.destination.name").as_deref(),
        Some("backoffice")
    );
    assert_eq!(
        publish.span_context.span_id().to_string(),
        publish_parent,
        "the back office's parent is the gateway's publish span"
    );
    println!(
        "spans in the platform's trace: {:?}",
        in_trace
            .iter()
            .map(|s| s.name.to_string())
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_counts_what_was_sent() {
    let port = free_port();
    let v = Vhosts::create("metrics", &["gw", "he"]);
    let config = TestConfig::new(&v)
        .telemetry(&format!("metrics_address = \"127.0.0.1:{port}\""))
        .platform("civento-he", "06", "he", None)
        .destination("healthy", "06", "he", "Darmstadt")
        .route("*", "06411", "healthy")
        .build();
    let gateway = start_gateway(config).await;
    let he = connect(&v.url("he")).await;
    let channel = confirm_channel(&he).await;
    for _ in 0..5 {
        let s = he_submission("064110000000");
        submit(&channel, &s, Encoding::Protobuf).await;
    }
    for _ in 0..2 {
        let s = sample_submission("civento-he", "06", "12345678901234", "064110000000", 512);
        submit(&channel, &s, Encoding::Json).await;
    }
    let s = he_submission("091620000000");
    submit(&channel, &s, Encoding::Json).await;
    let read = he.create_channel().await.unwrap();
    assert_eq!(
        take_status(&read, "civento-he", 8, Duration::from_secs(20))
            .await
            .len(),
        8
    );

    let expected = [
        r#"ozg_messages_total{platform="civento-he",destination="healthy",outcome="delivered",reason=""} 5"#,
        r#"ozg_messages_total{platform="civento-he",destination="",outcome="dead-lettered",reason="invalid-service-key"} 2"#,
        r#"ozg_messages_total{platform="civento-he",destination="",outcome="dead-lettered",reason="no-route"} 1"#,
        r#"ozg_processing_seconds_count{platform="civento-he"} 8"#,
        r#"ozg_confirm_seconds_count{destination="healthy"} 5"#,
        r#"ozg_in_flight{platform="civento-he"} 0"#,
        r#"ozg_consumer_up{consumer="ingress",platform="civento-he"} 1"#,
        r#"ozg_consumer_up{consumer="retry",platform=""} 1"#,
        r#"ozg_broker_connected{broker="he",role="consume"} 1"#,
        r#"ozg_broker_connected{broker="gw",role="publish"} 1"#,
        r#"ozg_broker_blocked{broker="gw",role="publish"} 0"#,
    ];
    // Gauges settle a moment after the last status event (the ack comes after it; the
    // retry consumer subscribes after declaring its queues): scrape until they agree.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let missing = loop {
        let text = ureq::get(format!("http://127.0.0.1:{port}/metrics"))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        let missing: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|e| !text.contains(e))
            .collect();
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break (missing, text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        missing.0.is_empty(),
        "missing {:?} in\n{}",
        missing.0,
        missing.1
    );
    gateway.stop().await;
}

/// OTLP export to a collector that is down: submissions flow as before, and the gateway
/// still stops promptly on SIGTERM (the exporter's flush is bounded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_does_not_hold_submissions_back() {
    let v = Vhosts::create("otlpdown", &["gw", "he"]);
    let dir = tempfile::tempdir().unwrap();
    let text = TestConfig::new(&v)
        .gateway(&format!(
            "data_dir = \"{}\"",
            dir.path().join("data").display()
        ))
        .telemetry(r#"otlp_endpoint = "http://127.0.0.1:9""#)
        .platform("civento-he", "06", "he", None)
        .destination("healthy", "06", "he", "Darmstadt")
        .route("*", "06", "healthy")
        .text();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, &text).unwrap();
    declare(&parse_config(&text)).await;
    let mut gateway = std::process::Command::new(env!("CARGO_BIN_EXE_ozg-gateway"))
        .args(["run", "--config", path.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let he = connect(&v.url("he")).await;
    let channel = confirm_channel(&he).await;
    for _ in 0..200 {
        let s = he_submission("064110000000");
        submit(&channel, &s, Encoding::Protobuf).await;
    }
    let read = he.create_channel().await.unwrap();
    let started = std::time::Instant::now();
    let delivered = take_backoffice(&read, "healthy", 200, Duration::from_secs(30)).await;
    println!(
        "200 submissions with the collector down: {} delivered in {:?}",
        delivered.len(),
        started.elapsed()
    );
    assert_eq!(delivered.len(), 200);

    let stopping = std::time::Instant::now();
    let status = terminate(&mut gateway, Duration::from_secs(20));
    println!("stopped {:?} after SIGTERM", stopping.elapsed());
    assert!(status.success());
}

/// One sample of the exposition: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    value: f64,
}

/// The samples and the families (`# TYPE` lines) of a scrape.
fn parse_exposition(text: &str) -> (Vec<Sample>, Vec<(String, String)>) {
    let mut samples = Vec::new();
    let mut families = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.push((name.to_owned(), kind.to_owned()));
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once("=\"").unwrap();
                (k.to_owned(), v.trim_end_matches('"').to_owned())
            })
            .collect();
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value: value.parse().unwrap(),
        });
    }
    (samples, families)
}

/// A run through every path the metrics count, then one scrape: every family the gateway
/// registers is there, each with the labels it should have and a value that fits what the
/// test did; no label holds a placeholder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_family_is_exported_after_a_run_through_every_path() {
    let port = free_port();
    let v = Vhosts::create("families", &["gw", "he", "th"]);
    let config = TestConfig::new(&v)
        .dead_letters_into_store()
        .telemetry(&format!("metrics_address = \"127.0.0.1:{port}\""))
        .telemetry(r#"backlog_interval = "500ms""#)
        .retry(r#"delays = ["200ms"]"#)
        .retry("max_attempts = 2")
        .platform("civento-he", "06", "he", None)
        .platform("civento-th", "16", "th", None)
        .destination("healthy", "06", "he", "Darmstadt")
        .line(r#"receipt_queue = "receipts.healthy""#)
        .destination_with("missing", "06", "he", "Kassel", "kreis", "gone")
        .route("*", "06411", "healthy")
        .route("*", "16", "healthy")
        .route("99008001011001", "06411", "missing")
        .extra("[receipts]\noverdue_after = \"1s\"\ncheck_interval = \"1s\"")
        .build();
    declare(&config).await;
    // What fails: the exchange of the destination "missing", Thüringen's status exchange.
    management_delete(&format!("/exchanges/{}/gone", v.name("he")));
    management_delete(&format!("/exchanges/{}/status", v.name("th")));
    let gateway = RunningGateway::start(config);
    let he = connect(&v.url("he")).await;
    let he_channel = confirm_channel(&he).await;
    let th = connect(&v.url("th")).await;
    let th_channel = confirm_channel(&th).await;
    let read = he.create_channel().await.unwrap();

    // Delivered, then the same again: a duplicate.
    let delivered = he_submission("064110000000");
    submit(&he_channel, &delivered, Encoding::Protobuf).await;
    assert_eq!(
        take_backoffice(&read, "healthy", 1, Duration::from_secs(20))
            .await
            .len(),
        1
    );
    submit(&he_channel, &delivered, Encoding::Protobuf).await;
    // Delivered and never answered: overdue after a second.
    let unanswered = he_submission("064110000000");
    submit(&he_channel, &unanswered, Encoding::Protobuf).await;
    // Dead-lettered: not a LeiKa key.
    let bad = sample_submission("civento-he", "06", "12345678901234", "064110000000", 512);
    submit(&he_channel, &bad, Encoding::Json).await;
    // Retrying, then given up (delivery-failed): its exchange is gone.
    let failing = sample_submission("civento-he", "06", "99008001011001", "064110000000", 512);
    submit(&he_channel, &failing, Encoding::Protobuf).await;
    // Delivered from Thüringen, whose status event cannot be sent.
    let from_th = sample_submission("civento-th", "16", "99115005104000", "160510000000", 512);
    submit(&th_channel, &from_th, Encoding::Protobuf).await;
    assert_eq!(
        take_backoffice(&read, "healthy", 2, Duration::from_secs(20))
            .await
            .len(),
        2
    );
    // Receipts: one accepted, one for a submission nobody delivered (requeued once, then
    // refused).
    let receipt = |id: &str| wire::Receipt {
        receipt_id: uuid::Uuid::new_v4().to_string(),
        submission_id: id.to_owned(),
        kind: wire::ReceiptKind::Accepted as i32,
        problems: Vec::new(),
        note: String::new(),
        time: None,
    };
    for r in [
        receipt(&delivered.submission_id),
        receipt(&uuid::Uuid::new_v4().to_string()),
    ] {
        publish(
            &he_channel,
            "receipts.healthy",
            &prost::Message::encode_to_vec(&r),
            Some(Encoding::Protobuf.content_type()),
            None,
            None,
        )
        .await;
    }

    let want = |text: &str| -> Vec<String> {
        let (samples, _) = parse_exposition(text);
        let find = |name: &str, labels: &[(&str, &str)]| {
            samples
                .iter()
                .filter(|s| s.name == name)
                .find(|s| {
                    labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
                })
                .map(|s| s.value)
        };
        let mut missing = Vec::new();
        let mut check = |name: &str, labels: &[(&str, &str)], ok: &dyn Fn(f64) -> bool| {
            if !find(name, labels).is_some_and(ok) {
                missing.push(format!("{name}{labels:?} = {:?}", find(name, labels)));
            }
        };
        let one = |v: f64| v == 1.0;
        let zero = |v: f64| v == 0.0;
        let some = |v: f64| v >= 1.0;
        let positive = |v: f64| v > 0.0;
        let m = "ozg_messages_total";
        let he = ("platform", "civento-he");
        check(
            m,
            &[
                he,
                ("destination", "healthy"),
                ("outcome", "delivered"),
                ("reason", ""),
            ],
            &|v| v == 2.0,
        );
        check(
            m,
            &[("platform", "civento-th"), ("outcome", "delivered")],
            &one,
        );
        check(
            m,
            &[he, ("destination", "healthy"), ("outcome", "duplicate")],
            &one,
        );
        check(
            m,
            &[
                he,
                ("outcome", "dead-lettered"),
                ("reason", "invalid-service-key"),
            ],
            &one,
        );
        check(
            m,
            &[
                he,
                ("destination", "missing"),
                ("outcome", "retrying"),
                ("reason", "delivery-failed"),
            ],
            &one,
        );
        check(
            m,
            &[
                he,
                ("destination", "missing"),
                ("outcome", "dead-lettered"),
                ("reason", "delivery-failed"),
            ],
            &one,
        );
        check("ozg_processing_seconds_count", &[he], &some);
        check(
            "ozg_confirm_seconds_count",
            &[("destination", "healthy")],
            &some,
        );
        check("ozg_in_flight", &[he], &zero);
        check("ozg_retry_backlog", &[("destination", "missing")], &zero);
        check(
            "ozg_broker_connected",
            &[("broker", "th"), ("role", "publish")],
            &one,
        );
        // Set to 1 under a broker's alarm: tests/node.rs.
        check(
            "ozg_broker_blocked",
            &[("broker", "th"), ("role", "publish")],
            &zero,
        );
        check("ozg_consumer_up", &[("consumer", "ingress"), he], &one);
        check(
            "ozg_consumer_up",
            &[("consumer", "retry"), ("platform", "")],
            &one,
        );
        check(
            "ozg_consumer_up",
            &[("consumer", "replay"), ("platform", "")],
            &one,
        );
        check("ozg_store_up", &[], &one);
        check(
            "ozg_dead_letters_pending",
            &[("reason", "invalid-service-key")],
            &one,
        );
        check(
            "ozg_dead_letters_pending",
            &[("reason", "delivery-failed")],
            &one,
        );
        check(
            "ozg_dead_letters_pending",
            &[("reason", "receipt-unknown-submission")],
            &one,
        );
        check("ozg_dead_letters_pending", &[("reason", "no-route")], &zero);
        check(
            "ozg_queue_ready_messages",
            &[("broker", "he"), ("queue", "submissions"), he],
            &zero,
        );
        check(
            "ozg_queue_ready_messages",
            &[
                ("broker", "gw"),
                ("queue", "ozg.gateway.dead-letters"),
                ("platform", ""),
            ],
            &zero,
        );
        check(
            "ozg_queue_ready_messages",
            &[("broker", "gw"), ("queue", "ozg.gateway.retry.ready")],
            &zero,
        );
        check(
            "ozg_receipts_total",
            &[
                ("destination", "healthy"),
                ("outcome", "accepted"),
                ("reason", ""),
            ],
            &one,
        );
        check(
            "ozg_receipts_total",
            &[("destination", "healthy"), ("outcome", "requeued")],
            &one,
        );
        check(
            "ozg_receipts_total",
            &[
                ("destination", "healthy"),
                ("outcome", "refused"),
                ("reason", "receipt-unknown-submission"),
            ],
            &one,
        );
        check("ozg_overdue_total", &[he, ("destination", "healthy")], &one);
        check(
            "ozg_status_events_failed_total",
            &[("platform", "civento-th"), ("status", "forwarded")],
            &one,
        );
        check(
            "ozg_status_events_failed_total",
            &[("platform", "civento-th"), ("status", "overdue")],
            &some,
        );
        check(
            "ozg_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            &one,
        );
        check("process_cpu_seconds_total", &[], &positive);
        check("process_resident_memory_bytes", &[], &|v| v > 1e6);
        check("process_virtual_memory_bytes", &[], &positive);
        check("process_open_fds", &[], &positive);
        check("process_max_fds", &[], &positive);
        check("process_threads", &[], &positive);
        check("process_start_time_seconds", &[], &|v| v > 1.7e9);
        missing
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = ureq::get(format!("http://127.0.0.1:{port}/metrics"))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        let missing = want(&text);
        if missing.is_empty() {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "missing or wrong:\n{}\nin\n{text}",
            missing.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    gateway.stop().await;

    let (samples, families) = parse_exposition(&text);
    // Every family the gateway exports is one this test looked for (a new family gets its
    // check here). `ozg_orphaned` counts retries and replays of a platform removed from
    // the configuration; a family without samples is not printed at all.
    let checked = [
        "ozg_build",
        "ozg_messages",
        "ozg_processing_seconds",
        "ozg_confirm_seconds",
        "ozg_in_flight",
        "ozg_retry_backlog",
        "ozg_broker_connected",
        "ozg_broker_blocked",
        "ozg_consumer_up",
        "ozg_store_up",
        "ozg_dead_letters_pending",
        "ozg_queue_ready_messages",
        "ozg_receipts",
        "ozg_overdue",
        "ozg_status_events_failed",
        "process_start_time_seconds",
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_threads",
        "process_open_fds",
        "process_max_fds",
    ];
    let registered: Vec<&str> = families.iter().map(|(n, _)| n.as_str()).collect();
    let mut sorted_checked = checked.to_vec();
    sorted_checked.sort_unstable();
    let mut sorted_registered = registered.clone();
    sorted_registered.sort_unstable();
    assert_eq!(
        sorted_registered, sorted_checked,
        "families exported vs checked"
    );
    // Sane labels: no placeholder, the platform label named so everywhere, platforms
    // configured ones (or empty for the gateway's own consumers).
    for s in &samples {
        for (key, value) in &s.labels {
            assert_ne!(value, "?", "placeholder in {s:?}");
            assert_ne!(key, "ingress", "{s:?}: the platform label is `platform`");
            if key == "platform" {
                assert!(
                    ["civento-he", "civento-th", ""].contains(&value.as_str()),
                    "{s:?}"
                );
            }
        }
    }
    println!(
        "{} families, {} samples; e.g. {:?}",
        families.len(),
        samples.len(),
        samples
            .iter()
            .filter(|s| s.name == "ozg_build_info" || s.name == "ozg_dead_letters_pending")
            .map(|s| format!("{}{:?} {}", s.name, s.labels, s.value))
            .collect::<Vec<_>>()
    );
}

fn management_delete(path: &str) {
    ureq::delete(format!("{MANAGEMENT}{path}"))
        .header("Authorization", AUTH)
        .call()
        .unwrap_or_else(|e| panic!("DELETE {path}: {e}"));
}
