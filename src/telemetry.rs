//! Observability: tracing with OpenTelemetry (OTLP export, off by default), W3C trace context
//! carried in AMQP headers, Prometheus metrics, and structured logs.
//!
//! Architecture invariant: nothing here blocks the message path. Spans go to a batch
//! processor that drops when its queue is full (a collector that is down costs nothing but
//! the spans); metrics are atomic counters read by the HTTP endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    SpanContext, TraceContextExt, TraceFlags, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, Sampler, SdkTracerProvider};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::amqp::header_text;
use crate::config::{LogFormat, OtlpProtocol, TelemetrySettings};
use crate::outcome::Ending;

mod process;
use process::ProcessCollector;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP exporter for {endpoint}: {detail}")]
    Exporter { endpoint: String, detail: String },
    #[error("log filter {filter:?}: {detail}")]
    Filter { filter: String, detail: String },
    #[error("a global subscriber is already installed: {0}")]
    Subscriber(String),
}

/// Keeps the tracer provider (when traces are exported) and the log writer's thread alive;
/// flushes both and shuts them down when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    /// Dropped after the provider: the log lines still buffered are written out.
    _log_writer: tracing_appender::non_blocking::WorkerGuard,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = &self.provider {
            let _ = provider.shutdown();
        }
    }
}

/// Log lines queued for the writer thread before a new one waits for room (lines are never
/// dropped). About five seconds of the busiest drain's lines; the queue's slots are
/// allocated and touched up front, so tracing-appender's default of 128,000 lines would
/// hold 4 MiB resident for nothing, and let a stalled log sink pile up tens of MiB of lines.
const LOG_BUFFER_LINES: usize = 16_384;

/// Installs the global subscriber: the log layer (text or JSON on stderr) and, when traces
/// are exported, the OpenTelemetry layer.
///
/// Log lines go to stderr through a buffer written by a thread of its own, so that a
/// submission's task never waits on a slow terminal, pipe or journal. The buffer is not
/// lossy: when it is full (16,384 lines), logging waits rather than drops lines.
///
/// Without an OTLP endpoint there is no OpenTelemetry layer and the log layer takes events
/// only, so the per-submission spans are disabled at their call sites and cost nothing;
/// trace context is still continued into what the gateway publishes ([`inject`] makes the
/// child context itself). Measured in docs/performance.md: the spans and their formatting
/// were a third of the gateway's CPU per message when nothing was exported.
pub fn init(settings: &TelemetrySettings) -> Result<TelemetryGuard, TelemetryError> {
    let provider = match settings.otlp_endpoint {
        Some(_) => Some(tracer_provider(settings)?),
        None => None,
    };
    set_new_trace_sampling(settings.sampling_ratio);
    let filter = match std::env::var("OZG_LOG").or_else(|_| std::env::var("RUST_LOG")) {
        Ok(from_env) => from_env,
        Err(_) => settings.log_level.clone(),
    };
    let (writer, log_writer) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .lossy(false)
        .thread_name("ozg-gateway-log")
        .finish(std::io::stderr());
    let log = LogOutput {
        format: settings.log_format,
        // Colour codes only for a person at a terminal: into a file or journal they are
        // noise, and writing them was a tenth of a log line's cost.
        ansi: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    subscriber(&filter, provider.as_ref(), log, writer)?
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    Ok(TelemetryGuard {
        provider,
        _log_writer: log_writer,
    })
}

/// How log lines are written.
#[derive(Debug, Clone, Copy)]
struct LogOutput {
    format: LogFormat,
    ansi: bool,
}

/// The subscriber [`init`] installs: log lines (events only) through `filter`, and spans
/// through `filter` to the OpenTelemetry layer when `provider` exports them. Without a
/// provider no layer wants spans, so every span's call site is disabled: not created, its
/// fields not evaluated, not entered on each poll.
fn subscriber<W>(
    filter: &str,
    provider: Option<&SdkTracerProvider>,
    log: LogOutput,
    writer: W,
) -> Result<Box<dyn tracing::Subscriber + Send + Sync>, TelemetryError>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::FilterExt as _;
    let env_filter = || {
        tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| TelemetryError::Filter {
            filter: filter.to_owned(),
            detail: e.to_string(),
        })
    };
    type Boxed = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;
    // Log lines carry their own fields (submission id, platform, destination); the spans'
    // fields are for traces, and formatting them for the log layer on every span would be
    // paid per submission.
    let log_filter =
        tracing_subscriber::filter::filter_fn(|metadata| metadata.is_event()).and(env_filter()?);
    let mut layers: Vec<Boxed> = vec![match log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(log.ansi)
            .with_filter(log_filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(writer)
            .with_filter(log_filter)
            .boxed(),
    }];
    // Pushed rather than added as an `Option` layer: an absent `Option` layer counts as
    // wanting every span, which would enable them all.
    if let Some(p) = provider {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("ozg-gateway"))
                .with_filter(env_filter()?)
                .boxed(),
        );
    }
    Ok(Box::new(tracing_subscriber::registry().with(layers)))
}

/// The tracer provider: OTLP batch export when an endpoint is configured, none otherwise.
fn tracer_provider(settings: &TelemetrySettings) -> Result<SdkTracerProvider, TelemetryError> {
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
        settings.sampling_ratio,
    )));
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("ozg-gateway")
        .build();
    let builder = SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_resource(resource);
    let Some(endpoint) = &settings.otlp_endpoint else {
        return Ok(builder.build());
    };
    let failed = |e: opentelemetry_otlp::ExporterBuildError| TelemetryError::Exporter {
        endpoint: endpoint.clone(),
        detail: e.to_string(),
    };
    let exporter = match settings.otlp_protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(failed)?,
        // The HTTP exporter takes the endpoint as the full URL of the traces resource.
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(if endpoint.ends_with("/v1/traces") {
                endpoint.clone()
            } else {
                format!("{}/v1/traces", endpoint.trim_end_matches('/'))
            })
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(failed)?,
    };
    // The batch processor exports on its own thread and drops spans when its queue is
    // full: a collector that is down never slows a submission.
    Ok(builder.with_batch_exporter(exporter).build())
}

// ---------------------------------------------------------------------------------------
// W3C trace context in AMQP headers.

struct HeaderExtractor<'a>(&'a FieldTable);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        // Values sent as bytes have no &str to lend; they are handled in `extract`.
        match self.0.inner().get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str()),
            _ => None,
        }
    }
    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut FieldTable);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // W3C: an empty tracestate is the same as none; the back office gets no empty header.
        if key == TRACESTATE && value.is_empty() {
            return;
        }
        self.0.insert(
            ShortString::from(key),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
}

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The trace context a platform sent, whether as strings or byte arrays; empty if none.
pub fn extract(headers: Option<&FieldTable>) -> opentelemetry::Context {
    let Some(headers) = headers else {
        return opentelemetry::Context::new();
    };
    let mut normalised = FieldTable::default();
    for name in [TRACEPARENT, TRACESTATE] {
        if let Some(text) = header_text(Some(headers), name) {
            normalised.insert(name.into(), AMQPValue::LongString(text.into()));
        }
    }
    TraceContextPropagator::new().extract(&HeaderExtractor(&normalised))
}

/// The trace context every message the gateway sends about one submission carries (its
/// delivery, status events, dead letter, retries), as `traceparent` (and `tracestate`)
/// headers: `span`'s when an OpenTelemetry layer records it (its parent is the platform's
/// context, or it started the trace); else the platform's when it sent a valid one; else a
/// new trace started here, marked sampled by `telemetry.sampling_ratio`. Without it, each
/// message would start a trace of its own, and a back office and a platform could not
/// correlate what they got.
pub fn submission_trace(span: &tracing::Span, incoming: Option<&FieldTable>) -> FieldTable {
    let propagator = TraceContextPropagator::new();
    let mut trace = FieldTable::default();
    if !span.is_disabled() {
        let context = span.context();
        if context.span().span_context().is_valid() {
            propagator.inject_context(&context, &mut HeaderInjector(&mut trace));
            return trace;
        }
    }
    let platform = extract(incoming);
    let context = if platform.span().span_context().is_valid() {
        platform
    } else {
        opentelemetry::Context::new().with_remote_span_context(new_trace())
    };
    propagator.inject_context(&context, &mut HeaderInjector(&mut trace));
    trace
}

/// Whether `headers` carry a valid W3C trace context.
pub fn has_trace(headers: &FieldTable) -> bool {
    extract(Some(headers)).span().span_context().is_valid()
}

/// A new trace's root context, marked sampled by `telemetry.sampling_ratio`.
fn new_trace() -> SpanContext {
    let ids = RandomIdGenerator::default();
    let sampled = rand::random::<f64>() < new_trace_sampling();
    SpanContext::new(
        ids.new_trace_id(),
        ids.new_span_id(),
        if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        },
        false,
        TraceState::default(),
    )
}

/// Writes the trace context of `span` into `out`. When `span` is not recorded by an
/// OpenTelemetry layer (nothing is exported, or the gateway is used as a library without
/// one), a child of the platform's context in `incoming` is written instead: the same trace
/// id and flags with a new span id, or a new trace when the platform sent none. Either way
/// the destination continues the platform's trace.
pub fn inject(span: &tracing::Span, incoming: Option<&FieldTable>, out: &mut FieldTable) {
    let propagator = TraceContextPropagator::new();
    if !span.is_disabled() {
        let context = span.context();
        if context.span().span_context().is_valid() {
            propagator.inject_context(&context, &mut HeaderInjector(out));
            return;
        }
    }
    let parent = extract(incoming);
    let parent = parent.span().span_context().clone();
    let ids = RandomIdGenerator::default();
    let child = if parent.is_valid() {
        SpanContext::new(
            parent.trace_id(),
            ids.new_span_id(),
            parent.trace_flags(),
            false,
            parent.trace_state().clone(),
        )
    } else {
        new_trace()
    };
    let context = opentelemetry::Context::new().with_remote_span_context(child);
    propagator.inject_context(&context, &mut HeaderInjector(out));
}

/// Share of new traces marked sampled when the gateway starts one without an
/// OpenTelemetry layer (`telemetry.sampling_ratio`), as bits of an `f64`.
static NEW_TRACE_SAMPLING: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0x3FF0_0000_0000_0000); // 1.0

fn set_new_trace_sampling(ratio: f64) {
    NEW_TRACE_SAMPLING.store(
        ratio.clamp(0.0, 1.0).to_bits(),
        std::sync::atomic::Ordering::Relaxed,
    );
}

fn new_trace_sampling() -> f64 {
    f64::from_bits(NEW_TRACE_SAMPLING.load(std::sync::atomic::Ordering::Relaxed))
}

// ---------------------------------------------------------------------------------------
// Metrics.

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub platform: String,
    pub destination: String,
    pub outcome: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlatformLabels {
    pub platform: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    pub destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabels {
    pub broker: String,
    pub role: String,
}

/// A consumer of the gateway: `consumer` is `ingress` (with its `platform`), `retry` or
/// `replay` (the gateway's own queues; `platform` empty).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    pub consumer: String,
    pub platform: String,
}

/// A retry or replay whose platform is no longer configured.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OrphanLabels {
    /// retry or replay.
    pub source: String,
    pub outcome: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiptLabels {
    pub destination: String,
    /// accepted, rejected, forwarded-onward (carried to the platform), repeated (told
    /// before), refused (dead-lettered, with `reason`), requeued (left for another try).
    pub outcome: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OverdueLabels {
    pub platform: String,
    pub destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub platform: String,
    pub status: String,
}

/// A queue whose depth the gateway asks its broker for; `platform` is empty for the
/// gateway's own queues.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub broker: String,
    pub queue: String,
    pub platform: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
    rustc: String,
}

/// Every metric the gateway exposes; names are documented in README.md.
pub struct Metrics {
    registry: Registry,
    pub messages: Family<OutcomeLabels, Counter>,
    pub orphaned: Family<OrphanLabels, Counter>,
    pub processing_seconds: Family<PlatformLabels, Histogram>,
    pub confirm_seconds: Family<DestinationLabels, Histogram>,
    pub in_flight: Family<PlatformLabels, Gauge>,
    pub retry_backlog: Family<DestinationLabels, Gauge>,
    pub broker_connected: Family<LinkLabels, Gauge>,
    pub broker_blocked: Family<LinkLabels, Gauge>,
    pub consumer_up: Family<ConsumerLabels, Gauge>,
    pub store_up: Gauge,
    pub dead_letters_pending: Family<ReasonLabels, Gauge>,
    pub queue_ready: Family<QueueLabels, Gauge>,
    pub receipts: Family<ReceiptLabels, Counter>,
    pub overdue: Family<OverdueLabels, Counter>,
    pub status_events_failed: Family<StatusLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The gateway's version, the commit it was built from (when the build knew it) and the
/// compiler (build.rs).
const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("OZG_GIT_COMMIT");
pub const RUSTC: &str = env!("OZG_RUSTC_VERSION");

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut metrics = Metrics {
            registry: Registry::default(),
            messages: Family::<OutcomeLabels, Counter>::default(),
            orphaned: Family::<OrphanLabels, Counter>::default(),
            processing_seconds: Family::<PlatformLabels, Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            ),
            confirm_seconds: Family::<DestinationLabels, Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            ),
            in_flight: Family::<PlatformLabels, Gauge>::default(),
            retry_backlog: Family::<DestinationLabels, Gauge>::default(),
            broker_connected: Family::<LinkLabels, Gauge>::default(),
            broker_blocked: Family::<LinkLabels, Gauge>::default(),
            consumer_up: Family::<ConsumerLabels, Gauge>::default(),
            store_up: Gauge::default(),
            dead_letters_pending: Family::<ReasonLabels, Gauge>::default(),
            queue_ready: Family::<QueueLabels, Gauge>::default(),
            receipts: Family::<ReceiptLabels, Counter>::default(),
            overdue: Family::<OverdueLabels, Counter>::default(),
            status_events_failed: Family::<StatusLabels, Counter>::default(),
        };
        let mut root = Registry::default();
        // Process metrics under their conventional names (no prefix), so that dashboards
        // made for any Prometheus client's process metrics work.
        root.register_collector(Box::new(ProcessCollector::new()));
        let registry = root.sub_registry_with_prefix("ozg");
        registry.register(
            "build",
            "The gateway's version, the commit it was built from (unknown when the build did not know it) and the compiler",
            Info::new(BuildLabels {
                version: VERSION.to_owned(),
                commit: COMMIT.to_owned(),
                rustc: RUSTC.to_owned(),
            }),
        );
        metrics.register_message_path(registry);
        metrics.register_state(registry);
        metrics.register_receipts(registry);
        metrics.registry = root;
        Arc::new(metrics)
    }

    /// The message path: outcomes, latencies, what is in flight or waiting to be retried.
    fn register_message_path(&self, registry: &mut Registry) {
        registry.register("messages", "Submissions taken off a queue, by platform, destination, outcome (delivered, duplicate, dead-lettered, retrying, requeued) and reason", self.messages.clone());
        registry.register("orphaned", "Retries and replays of a platform that is no longer configured (dead-lettered as delivery-failed), by source (retry, replay), outcome and reason", self.orphaned.clone());
        registry.register("processing_seconds", "Time from taking a submission off a queue to settling it (ack after the destination's confirm)", self.processing_seconds.clone());
        registry.register(
            "confirm_seconds",
            "Time from publishing to a destination to its broker's confirm",
            self.confirm_seconds.clone(),
        );
        registry.register("in_flight", "Submissions this process took off a platform's queue and has not settled yet (its unacked share of the queue)", self.in_flight.clone());
        registry.register("retry_backlog", "Submissions for a destination that this process put into the retry delay queues and that have not come back yet", self.retry_backlog.clone());
    }

    /// The state of links, consumers, the store and the queues.
    fn register_state(&self, registry: &mut Registry) {
        registry.register(
            "broker_connected",
            "1 while the connection to a broker (role consume or publish) is up, else 0",
            self.broker_connected.clone(),
        );
        registry.register(
            "broker_blocked",
            "1 while a broker blocks the connection (role consume or publish) for a memory or disk alarm: publishes to it fail at once and are retried, else 0",
            self.broker_blocked.clone(),
        );
        registry.register("consumer_up", "1 while a consumer is subscribed, else 0: consumer ingress (a platform's queue, by platform), retry or replay (the gateway's own queues)", self.consumer_up.clone());
        registry.register("store_up", "1 while the store answers (delivery records written, deduplication checks answered, the SQLite file the one opened), else 0: no queue is consumed meanwhile", self.store_up.clone());
        registry.register("dead_letters_pending", "Dead letters in the store waiting for an operator (neither replayed nor discarded), by reason; read from the store periodically, the same for every instance sharing it", self.dead_letters_pending.clone());
        registry.register("queue_ready_messages", "Messages ready (not yet delivered to a consumer) in a queue the gateway consumes or owns, as its broker counts them; asked periodically by a passive declare", self.queue_ready.clone());
    }

    /// Back offices' receipts and what was reported to platforms.
    fn register_receipts(&self, registry: &mut Registry) {
        registry.register("receipts", "Back offices' receipts taken off their queues, by destination, outcome (accepted, rejected, forwarded-onward, repeated, refused, requeued) and reason (for refused)", self.receipts.clone());
        registry.register("overdue", "Delivered submissions reported to their platform as overdue (no answer from the back office in time), by platform and destination", self.overdue.clone());
        registry.register("status_events_failed", "Status events that could not be delivered to their platform's status exchange, by platform and status", self.status_events_failed.clone());
    }

    /// Keeps `ozg_store_up` in step with `store` until `stop`.
    pub fn follow_store(
        &self,
        store: &crate::store::StoreHealth,
        stop: &tokio_util::sync::CancellationToken,
    ) {
        let gauge = self.store_up.clone();
        let mut status = store.watch();
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                gauge.set(i64::from(status.borrow_and_update().is_up()));
                tokio::select! {
                    () = stop.cancelled() => return,
                    changed = status.changed() => if changed.is_err() { return },
                }
            }
        });
    }

    pub fn outcome(&self, platform: &str, destination: &str, outcome: Ending, reason: &str) {
        self.messages
            .get_or_create(&OutcomeLabels {
                platform: platform.to_owned(),
                destination: destination.to_owned(),
                outcome: outcome.as_str().to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// An outcome of a retry or replay whose platform is no longer configured.
    pub fn orphan(&self, source: &str, outcome: Ending, reason: &str) {
        self.orphaned
            .get_or_create(&OrphanLabels {
                source: source.to_owned(),
                outcome: outcome.as_str().to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn receipt(&self, destination: &str, outcome: &str, reason: &str) {
        self.receipts
            .get_or_create(&ReceiptLabels {
                destination: destination.to_owned(),
                outcome: outcome.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn overdue(&self, platform: &str, destination: &str) {
        self.overdue
            .get_or_create(&OverdueLabels {
                platform: platform.to_owned(),
                destination: destination.to_owned(),
            })
            .inc();
    }

    pub fn status_event_failed(&self, platform: &str, status: &str) {
        self.status_events_failed
            .get_or_create(&StatusLabels {
                platform: platform.to_owned(),
                status: status.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/metrics`, `/live` and `/ready` on `address` until `stop` fires.
pub async fn serve_http(
    metrics: Arc<Metrics>,
    health: Arc<crate::health::Health>,
    address: SocketAddr,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<SocketAddr> {
    use axum::http::StatusCode;
    use axum::http::header::CONTENT_TYPE;
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let json = |ok: bool, body: String| {
        let status = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, [(CONTENT_TYPE, "application/json")], body)
    };
    let live = health.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
        .route(
            "/live",
            axum::routing::get(move || {
                let report = live.liveness();
                let body = serde_json::to_string(&report).unwrap_or_default();
                async move { json(report.live, body) }
            }),
        )
        .route(
            "/ready",
            axum::routing::get(move || {
                let report = health.readiness();
                let body = serde_json::to_string(&report).unwrap_or_default();
                async move { json(report.ready, body) }
            }),
        );
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "metrics and health endpoint stopped");
        }
    });
    tracing::info!(address = %bound, "serving /metrics, /live and /ready");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a log layer wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Lines {
        type Writer = Lines;
        fn make_writer(&'w self) -> Lines {
            self.clone()
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    const TEXT: LogOutput = LogOutput {
        format: LogFormat::Text,
        ansi: false,
    };

    /// A call site's metadata, as the subscriber in use is asked about it when the call
    /// site is first reached (tests run side by side, each with subscribers of its own, so
    /// a call site's cached interest is theirs together).
    fn call_site(span: bool) -> &'static tracing::Metadata<'static> {
        tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
            if span {
                tracing::info_span!("process", ozg.platform = "civento-he").metadata()
            } else {
                tracing::Span::none().metadata()
            }
        })
        .unwrap_or_else(|| panic!("no metadata"))
    }

    #[test]
    fn without_an_exporter_span_call_sites_are_disabled_and_events_still_logged() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let lines = Lines::default();
            let log = LogOutput {
                format,
                ansi: false,
            };
            let subscriber = subscriber("info", None, log, lines.clone()).unwrap();
            let interest = subscriber.register_callsite(call_site(true));
            assert!(
                interest.is_never(),
                "{format:?}: span call site {interest:?}"
            );
            tracing::subscriber::with_default(subscriber, || {
                tracing::info!(submission_id = "4f1c", "forwarded");
                tracing::debug!("below the level");
            });
            let text = lines.text();
            assert_eq!(text.lines().count(), 1, "{format:?}: {text}");
            assert!(
                text.contains("forwarded") && text.contains("4f1c"),
                "{text}"
            );
        }
    }

    #[test]
    fn with_an_exporter_spans_at_the_level_are_exported() {
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let lines = Lines::default();
        let subscriber = subscriber("info", Some(&provider), TEXT, lines.clone()).unwrap();
        let interest = subscriber.register_callsite(call_site(true));
        assert!(!interest.is_never(), "span call site {interest:?}");
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("process");
            assert!(!span.is_disabled());
            span.in_scope(|| tracing::info!("forwarded"));
            drop(span);
            assert!(tracing::debug_span!("below the level").is_disabled());
        });
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        assert_eq!(names, ["process"]);
        assert_eq!(lines.text().lines().count(), 1, "{}", lines.text());
    }

    #[test]
    fn a_bad_filter_is_an_error_naming_it() {
        let Err(e) = subscriber("info,[", None, TEXT, Lines::default()) else {
            panic!("accepted a bad filter");
        };
        assert!(e.to_string().contains("info,["), "{e}");
    }

    #[test]
    fn trace_context_is_read_from_strings_and_bytes() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for value in [
            AMQPValue::LongString(traceparent.into()),
            AMQPValue::ByteArray(traceparent.as_bytes().to_vec().into()),
        ] {
            let mut headers = FieldTable::default();
            headers.insert(TRACEPARENT.into(), value);
            let cx = extract(Some(&headers));
            let span = cx.span();
            let sc = span.span_context();
            assert!(sc.is_valid());
            assert_eq!(
                sc.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            assert!(sc.is_remote());
        }
        assert!(!extract(None).span().span_context().is_valid());
    }

    #[test]
    fn a_submission_keeps_the_platform_s_trace_or_gets_one_of_its_own() {
        let span = tracing::Span::none();
        let mut platform = FieldTable::default();
        platform.insert(
            TRACEPARENT.into(),
            AMQPValue::LongString("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        );
        let mut garbage = FieldTable::default();
        garbage.insert(TRACEPARENT.into(), AMQPValue::LongString("00-xyz".into()));
        for (incoming, platform_trace) in [
            (Some(&platform), Some("4bf92f3577b34da6a3ce929d0e0e4736")),
            (Some(&garbage), None),
            (None, None),
        ] {
            let trace = submission_trace(&span, incoming);
            assert!(has_trace(&trace));
            let id = extract(Some(&trace))
                .span()
                .span_context()
                .trace_id()
                .to_string();
            match platform_trace {
                Some(expected) => assert_eq!(id, expected),
                None => assert_ne!(id, "0".repeat(32)),
            }
            // What the gateway sends continues that trace.
            let mut out = FieldTable::default();
            inject(&span, Some(&trace), &mut out);
            let sent = extract(Some(&out))
                .span()
                .span_context()
                .trace_id()
                .to_string();
            assert_eq!(sent, id);
        }
        assert!(!has_trace(&garbage));
    }

    #[test]
    fn metrics_are_exposed_in_the_text_format() {
        let m = Metrics::new();
        m.outcome("civento-he", "he-darmstadt", Ending::Delivered, "");
        m.outcome("civento-he", "he-darmstadt", Ending::Delivered, "");
        let text = m.encode();
        assert!(
            text.contains(r#"ozg_messages_total{platform="civento-he",destination="he-darmstadt",outcome="delivered",reason=""} 2"#),
            "{text}"
        );
    }
}
