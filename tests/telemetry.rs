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
        let s = sample_submission("civento-he", "06", "99115005104000", "064110000000", 512);
        submit(&channel, &s, Encoding::Protobuf).await;
    }
    for _ in 0..2 {
        let s = sample_submission("civento-he", "06", "12345678901234", "064110000000", 512);
        submit(&channel, &s, Encoding::Json).await;
    }
    let s = sample_submission("civento-he", "06", "99115005104000", "091620000000", 512);
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
        r#"ozg_consumer_up{ingress="civento-he"} 1"#,
        r#"ozg_consumer_up{ingress="retry"} 1"#,
        r#"ozg_broker_connected{broker="he",role="consume"} 1"#,
        r#"ozg_broker_connected{broker="gw",role="publish"} 1"#,
        "ozg_retry_backlog 0",
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
        let s = sample_submission("civento-he", "06", "99115005104000", "064110000000", 512);
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
