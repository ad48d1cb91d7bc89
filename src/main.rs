//! The `ozg-gateway` command: run the gateway, check a configuration, explain a route, and
//! small helpers for local set-ups (declare the topology, submit samples, read queues), and
//! `admin`, the client of a running gateway's admin API.

mod cli;

/// mimalloc rather than glibc's allocator: the message path allocates and frees message-sized
/// buffers all the time, and glibc's consolidation of freed chunks was a tenth of the
/// gateway's CPU per message (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, FieldTable};
use ozg_gateway::amqp::{self, Publisher, Role};
use ozg_gateway::config::{self as settings, TelemetrySettings};
use ozg_gateway::config::{Config, EXIT_INVALID_CONFIG};
use ozg_gateway::envelope::Encoding;
use ozg_gateway::link::{Link, LinkState};
use ozg_gateway::model::{Ags, Ars, ServiceKey};
use ozg_gateway::routing::table::RoutingTable;
use ozg_gateway::telemetry::{self, TelemetryGuard};
use ozg_gateway::wire::v1 as wire;
use ozg_gateway::{sample, topology};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "ozg-gateway", version, about, long_version = LONG_VERSION)]
struct Cli {
    /// Log format on stderr (default: `telemetry.log_format` of the configuration, or text).
    #[arg(long, global = true, value_enum, env = "OZG_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// More log lines from one-off commands (submit, receive, answer, …): -v info, -vv
    /// debug. They log warnings and errors only by default; OZG_LOG overrides either.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\nGemeindeverzeichnis: © Statistisches Bundesamt (Destatis), dl-de/by-2-0"
);

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (stops on SIGTERM or SIGINT after finishing in-flight submissions;
    /// SIGHUP reads the configuration file again and applies its routing directory).
    Run {
        #[arg(long, short, env = "OZG_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file and list every problem; exit 64 if invalid.
    CheckConfig {
        #[arg(long, short, env = "OZG_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// The file, given without --config (as older scripts do).
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Explain where a submission would go, step by step, without sending anything.
    Resolve {
        #[arg(long, short, env = "OZG_CONFIG")]
        config: PathBuf,
        /// LeiKa Leistungsschlüssel (14 digits, 99…).
        service: String,
        /// ARS (12 digits) or AGS (8 digits).
        region: String,
    },
    /// Declare the local topology for a configuration: ingress queues, status exchanges and
    /// queues, destination exchanges with back-office queues and receipt queues, and the
    /// gateway's own dead-letter, retry and replay topology.
    DeclareTopology {
        #[arg(long, short, env = "OZG_CONFIG")]
        config: PathBuf,
    },
    /// Print the configuration's whole topology as a RabbitMQ definitions file (vhosts,
    /// permissions, policies, exchanges, queues, bindings) for `rabbitmqctl
    /// import_definitions` or `load_definitions`.
    Definitions {
        #[arg(long, short, env = "OZG_CONFIG")]
        config: PathBuf,
        /// Only this broker's part (repeatable), e.g. for one Land's broker.
        #[arg(long = "broker", value_name = "NAME")]
        brokers: Vec<String>,
    },
    /// Publish sample submissions to a platform's ingress queue, as the platform would.
    Submit {
        #[arg(long, short, env = "OZG_CONFIG")]
        config: PathBuf,
        /// Platform id from the configuration.
        #[arg(long)]
        platform: String,
        /// LeiKa key of the service.
        #[arg(long, default_value = "99115005104000")]
        service: String,
        /// ARS or AGS of the region.
        #[arg(long, default_value = "064110000000")]
        region: String,
        /// Publish as JSON (canonical proto3 mapping) instead of protobuf.
        #[arg(long)]
        json: bool,
        /// How many submissions.
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Approximate size of each submission in bytes.
        #[arg(long, default_value_t = 4096)]
        size: usize,
        /// Publish this file's bytes as they are instead of a sample (for trying bad input).
        #[arg(long, conflicts_with_all = ["json", "count"])]
        raw: Option<PathBuf>,
        /// Content type for --raw.
        #[arg(long, requires = "raw", default_value = "application/json")]
        content_type: String,
    },
    /// Print the SHA-256 that `[[admin.tokens]]` expects (`sha256`, or the content of a
    /// `sha256_file`) for an admin token read from --file or standard input, never from the
    /// command line.
    HashToken {
        /// A file holding the token (one trailing newline is ignored); without it, standard
        /// input.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Refused without being repeated: every user can see a process's arguments.
        #[arg(hide = true, value_name = "TOKEN")]
        token: Option<String>,
    },
    /// Operate a running gateway through its admin API (gRPC): overview, routing directory,
    /// dead letters, ingress, traces, live events.
    #[command(after_help = cli::EXIT_CODES_HELP)]
    Admin(Box<cli::AdminArgs>),
    /// Publish a back office's receipt for a submission, as the back office would (to the
    /// destination's `receipt_queue`).
    Answer {
        #[arg(long, short, env = "OZG_CONFIG")]
        config: PathBuf,
        /// Destination id from the configuration (it needs a receipt_queue).
        #[arg(long)]
        destination: String,
        /// The submission answered.
        submission_id: String,
        #[command(flatten)]
        answer: AnswerKind,
        /// Publish as JSON (canonical proto3 mapping) instead of protobuf.
        #[arg(long)]
        json: bool,
    },
    /// Ask a running gateway whether it lives or is ready (`/live`, `/ready` on its
    /// `telemetry.metrics_address`), for container health checks: prints the answer, exit 0
    /// when it is yes, 1 when no, 5 when nothing answers.
    Probe {
        #[arg(value_enum)]
        what: Probe,
        /// The gateway's `telemetry.metrics_address`.
        #[arg(long, env = "OZG_PROBE_ADDRESS", default_value = "127.0.0.1:9464")]
        address: String,
    },
    /// Print a shell completion script, e.g. `ozg-gateway completions bash >
    /// /etc/bash_completion.d/ozg-gateway`, or `source <(ozg-gateway completions zsh)`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) of the program or of one COMMAND (`ozg-gateway man admin
    /// dead-letters | man -l -`), or with --dir write a page for every command there.
    Man {
        /// A command and its subcommands, e.g. `admin overview`.
        #[arg(value_name = "COMMAND")]
        command: Vec<String>,
        /// Write every command's page into this folder (ozg-gateway.1,
        /// ozg-gateway-admin.1, …) instead of one page to stdout.
        #[arg(long, value_name = "DIR", conflicts_with = "command")]
        dir: Option<PathBuf>,
    },
    /// Take messages off a local queue and print their metadata (never their content).
    Receive {
        #[arg(long, short, env = "OZG_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        queue: ReceiveFrom,
        /// Stop after this many messages.
        #[arg(long, default_value_t = 10)]
        count: usize,
        /// Stop when no message came for this long.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Probe {
    /// The process works: runtime, store, the gateway's own broker.
    Live,
    /// It moves submissions: at least one ingress consumes, or all are paused on purpose.
    Ready,
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct AnswerKind {
    /// The authority took the submission up.
    #[arg(long)]
    accept: bool,
    /// The authority refuses it; "TITLE: DETAIL", repeatable, one problem each.
    #[arg(long, value_name = "TITLE: DETAIL")]
    reject: Vec<String>,
    /// The authority passed it on; a short note, e.g. to whom.
    #[arg(long, value_name = "NOTE")]
    forward: Option<String>,
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct ReceiveFrom {
    /// A destination's back-office queue.
    #[arg(long)]
    destination: Option<String>,
    /// A platform's status queue.
    #[arg(long)]
    status: Option<String>,
    /// The gateway's dead-letter queue.
    #[arg(long)]
    dead_letters: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ozg-gateway: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(dispatch(cli.command, cli.log_format, cli.verbose))
}

/// Logging (and tracing, for `run`) as configured, the command line's format winning.
fn init_telemetry(
    mut settings: TelemetrySettings,
    format: Option<LogFormat>,
) -> Result<TelemetryGuard, ExitCode> {
    if let Some(format) = format {
        settings.log_format = match format {
            LogFormat::Text => settings::LogFormat::Text,
            LogFormat::Json => settings::LogFormat::Json,
        };
    }
    telemetry::init(&settings).map_err(fail)
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        eprint!("{errors}");
        ExitCode::from(EXIT_INVALID_CONFIG)
    })
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("ozg-gateway: {message}");
    ExitCode::FAILURE
}

/// The log filter of a one-off command: its own output is on stdout, so its log says only
/// what went wrong unless asked for more.
fn one_off_log_level(verbose: u8) -> String {
    match verbose {
        0 => "warn,lapin=off",
        1 => "info,lapin=off",
        _ => "debug",
    }
    .to_owned()
}

async fn dispatch(command: Command, log_format: Option<LogFormat>, verbose: u8) -> ExitCode {
    // A client reports on stdout and in one line on stderr; it needs no log subscriber.
    if let Command::Admin(args) = command {
        return cli::run(*args).await;
    }
    if let Command::HashToken { file, token } = &command {
        return cli::hash_token::run(file.as_deref(), token.is_some());
    }
    if let Command::Completions { shell } = command {
        return cli::docs::completions(Cli::command(), shell);
    }
    if let Command::Man { command, dir } = &command {
        return cli::docs::man(Cli::command(), command, dir.as_deref());
    }
    if let Command::Probe { what, address } = command {
        return probe(what, &address).await;
    }
    if let Command::Run { config } = command {
        return match run(config, log_format).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(code) => code,
        };
    }
    let settings = TelemetrySettings {
        log_level: one_off_log_level(verbose),
        ..TelemetrySettings::default()
    };
    let _telemetry = match init_telemetry(settings, log_format) {
        Ok(guard) => guard,
        Err(code) => return code,
    };
    let result = match command {
        Command::Run { .. }
        | Command::Admin(_)
        | Command::HashToken { .. }
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Probe { .. } => Ok(()),
        Command::CheckConfig { config, file } => check_config_file(config, file).and_then(|file| {
            let c = load(&file)?;
            for warning in &c.warnings {
                eprintln!("warning: {warning}");
            }
            println!(
                "{}: valid ({} brokers, {} platforms, {} destinations, {} routes)",
                file.display(),
                c.brokers.len(),
                c.platforms.len(),
                c.destinations.len(),
                c.routes.len()
            );
            Ok(())
        }),
        Command::Resolve {
            config,
            service,
            region,
        } => resolve(&config, &service, &region),
        Command::DeclareTopology { config } => match load(&config) {
            Ok(c) => topology::declare(&c).await.map_err(fail).map(|()| {
                println!("{}: topology declared", config.display());
            }),
            Err(code) => Err(code),
        },
        Command::Definitions { config, brokers } => load(&config).and_then(|c| {
            let text = topology::definitions::definitions(&c, &brokers)
                .map_err(fail)?
                .to_json()
                .map_err(fail)?;
            print!("{text}");
            Ok(())
        }),
        Command::Submit {
            config,
            platform,
            service,
            region,
            json,
            count,
            size,
            raw,
            content_type,
        } => {
            submit(
                &config,
                &platform,
                &service,
                &region,
                json,
                count,
                size,
                raw,
                &content_type,
            )
            .await
        }
        Command::Receive {
            config,
            queue,
            count,
            wait,
        } => receive(&config, &queue, count, wait).await,
        Command::Answer {
            config,
            destination,
            submission_id,
            answer: kind,
            json,
        } => answer(&config, &destination, &submission_id, kind, json).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// The file `check-config` checks: `--config FILE` (or `OZG_CONFIG`) like every command,
/// or a plain `FILE` as older scripts give it, which wins over `OZG_CONFIG`.
fn check_config_file(config: Option<PathBuf>, file: Option<PathBuf>) -> Result<PathBuf, ExitCode> {
    let from_env = std::env::var_os("OZG_CONFIG").map(PathBuf::from);
    match (config, file) {
        (Some(config), Some(file)) if config != file && Some(&config) != from_env.as_ref() => {
            eprintln!(
                "ozg-gateway check-config: two files given ({} and {}): give one, as --config FILE",
                config.display(),
                file.display()
            );
            Err(ExitCode::from(2))
        }
        (_, Some(file)) | (Some(file), None) => Ok(file),
        (None, None) => {
            eprintln!(
                "ozg-gateway check-config: which file? Give --config FILE (or set OZG_CONFIG)"
            );
            Err(ExitCode::from(2))
        }
    }
}

/// Runs the gateway: SIGTERM or SIGINT stop it, SIGHUP reloads the configuration file.
/// Under systemd (`Type=notify`) it says READY=1 once started, RELOADING=1 … READY=1
/// around a reload, STOPPING=1 on a stop signal, and pings the watchdog while its runtime
/// works; without `NOTIFY_SOCKET` these do nothing.
async fn run(path: PathBuf, log_format: Option<LogFormat>) -> Result<(), ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    let config = load(&path)?;
    let _telemetry = init_telemetry(config.telemetry.clone(), log_format)?;
    for warning in &config.warnings {
        tracing::warn!(warning = %warning, "configuration");
    }
    let (reload_tx, reloads) = tokio::sync::mpsc::channel(1);
    match signal(SignalKind::hangup()) {
        Ok(hangups) => {
            tokio::spawn(reload_on_hangup(path.clone(), hangups, reload_tx));
        }
        Err(e) => tracing::error!(error = %e, "cannot listen for SIGHUP; reloading is off"),
    }
    let shutdown = async {
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; stop with SIGINT");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        notify(&[sd_notify::NotifyState::Stopping]);
    };
    let started = |ready: ozg_gateway::app::Ready| {
        notify(&[sd_notify::NotifyState::Ready]);
        if let Some(timeout) = sd_notify::watchdog_enabled() {
            tokio::spawn(watchdog(ready.health, timeout));
        }
    };
    ozg_gateway::app::run_controlled(config, shutdown, reloads, started)
        .await
        .map_err(fail)
}

/// `probe`: one GET of `/live` or `/ready`, bounded to 5 s.
async fn probe(what: Probe, address: &str) -> ExitCode {
    let path = match what {
        Probe::Live => "live",
        Probe::Ready => "ready",
    };
    let url = format!("http://{address}/{path}");
    let asked = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent.get(&url).call().map_err(|e| format!("{url}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("{url}: {e}"))?;
        Ok::<_, String>((status, body))
    })
    .await;
    match asked {
        Ok(Ok((status, body))) => {
            println!("{body}");
            if status == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok(Err(e)) => {
            eprintln!("ozg-gateway probe: {e}");
            ExitCode::from(5)
        }
        Err(e) => fail(e),
    }
}

/// Tells systemd (`NOTIFY_SOCKET`) about the service's state; nothing without it.
fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// Pings systemd's watchdog twice per `timeout`, but only while the gateway's runtime runs
/// its tasks in time: a gateway that hangs is restarted, one that merely waits for a broker
/// is not.
async fn watchdog(health: std::sync::Arc<ozg_gateway::health::Health>, timeout: Duration) {
    let mut stalled = false;
    loop {
        tokio::time::sleep(timeout / 2).await;
        if health.runtime_works() {
            notify(&[sd_notify::NotifyState::Watchdog]);
            stalled = false;
        } else if !stalled {
            stalled = true;
            tracing::error!("runtime stalled: the watchdog is not pinged");
        }
    }
}

/// Reads the configuration file again at every SIGHUP. An invalid file changes nothing and
/// every problem is logged; a valid one goes to the running gateway, which applies what can
/// change without a restart (`app::reload`).
async fn reload_on_hangup(
    path: PathBuf,
    mut hangups: tokio::signal::unix::Signal,
    reloads: tokio::sync::mpsc::Sender<ozg_gateway::app::Reload>,
) {
    while hangups.recv().await.is_some() {
        tracing::info!(file = %path.display(), "SIGHUP received: reading the configuration again");
        let reloading = sd_notify::NotifyState::monotonic_usec_now()
            .map(|now| vec![sd_notify::NotifyState::Reloading, now])
            .unwrap_or_else(|_| vec![sd_notify::NotifyState::Reloading]);
        notify(&reloading);
        match Config::load(&path) {
            Err(errors) => {
                for problem in &errors.0 {
                    tracing::error!(problem = %problem, "configuration not reloaded");
                }
                tracing::error!(
                    problems = errors.0.len(),
                    "configuration not reloaded: the file is invalid; nothing changed"
                );
            }
            Ok(config) => {
                for warning in &config.warnings {
                    tracing::warn!(warning = %warning, "configuration");
                }
                let (done, applied) = tokio::sync::oneshot::channel();
                let reload = ozg_gateway::app::Reload { config, done };
                if reloads.send(reload).await.is_err() {
                    return;
                }
                let _ = applied.await;
            }
        }
        notify(&[sd_notify::NotifyState::Ready]);
    }
}

fn resolve(path: &std::path::Path, service: &str, region: &str) -> Result<(), ExitCode> {
    let config = load(path)?;
    let service: ServiceKey = service.parse().map_err(|e| fail(format!("service {e}")))?;
    let ars: Ars = if region.len() == 8 {
        let ags: Ags = region.parse().map_err(|e| fail(format!("region {e}")))?;
        config
            .municipalities
            .ars_for_ags(ags)
            .ok_or_else(|| fail(format!("AGS {ags} is not in the municipality directory")))?
    } else {
        region.parse().map_err(|e| fail(format!("region {e}")))?
    };
    let Some(gemeinde) = config.municipalities.gemeinde(ars) else {
        return Err(fail(format!(
            "ARS {ars} is not in the municipality directory"
        )));
    };
    println!("service {service}, region {ars} ({})", gemeinde.name);
    let table = RoutingTable::new(config.routes.clone());
    let explanation = table.explain(service, ars, &config.municipalities);
    for step in &explanation.steps {
        let unit = step
            .unit_name
            .as_deref()
            .unwrap_or("(no unit at this level)");
        let level = step.region.level().name();
        match step.matched {
            Some(m) => println!(
                "  {:<14} {:<12} {level:<16} {unit}  → route matched: {}",
                step.service.to_string(),
                step.region.to_string(),
                config.destinations[m.destination].id
            ),
            None => println!(
                "  {:<14} {:<12} {level:<16} {unit}  – no route",
                step.service.to_string(),
                step.region.to_string()
            ),
        }
    }
    match explanation.resolution {
        Some(m) => {
            let d = &config.destinations[m.destination];
            println!("→ {} ({}, {})", d.id, d.name, d.kind.as_str());
            Ok(())
        }
        None => {
            println!("→ no route: a submission would be dead-lettered with reason no-route");
            Err(ExitCode::from(2))
        }
    }
}

/// A publisher on `broker` for the local helpers, which fail fast on a broker that does
/// not answer rather than reconnect forever. Cancel the token and close the link when done.
async fn helper_publisher(
    config: &Config,
    broker: usize,
) -> Result<(Publisher, std::sync::Arc<Link>, CancellationToken), ExitCode> {
    let broker = config.broker(broker);
    let stop = CancellationToken::new();
    let link = Link::start(broker.clone(), Role::Publish, stop.clone());
    let connected = tokio::time::timeout(Duration::from_secs(10), link.connected(&stop)).await;
    if !matches!(connected, Ok(Some(_))) {
        stop.cancel();
        return Err(fail(match link.state() {
            LinkState::Connecting {
                last_error: Some(e),
                ..
            } => e,
            _ => format!("broker {} did not answer within 10 s", broker.name),
        }));
    }
    Ok((
        Publisher::new(link.clone(), Duration::from_secs(10)),
        link,
        stop,
    ))
}

async fn answer(
    path: &std::path::Path,
    destination_id: &str,
    submission_id: &str,
    kind: AnswerKind,
    json: bool,
) -> Result<(), ExitCode> {
    let config = load(path)?;
    let d = config
        .destinations
        .iter()
        .find(|d| d.id == destination_id)
        .ok_or_else(|| {
            fail(format!(
                "no destination {destination_id:?} in {}",
                path.display()
            ))
        })?;
    let queue = d.receipt_queue.as_deref().ok_or_else(|| {
        fail(format!(
            "destination {destination_id:?} has no receipt_queue"
        ))
    })?;
    let problem = |text: &String| {
        let (title, detail) = text.split_once(':').unwrap_or((text.as_str(), ""));
        wire::Problem {
            title: title.trim().to_owned(),
            detail: detail.trim().to_owned(),
            instance: format!("urn:uuid:{submission_id}"),
            ..wire::Problem::default()
        }
    };
    let (receipt_kind, word) = if kind.accept {
        (wire::ReceiptKind::Accepted, "accepted")
    } else if kind.forward.is_some() {
        (wire::ReceiptKind::ForwardedOnward, "forwarded onward")
    } else {
        (wire::ReceiptKind::Rejected, "rejected")
    };
    let receipt = wire::Receipt {
        receipt_id: uuid::Uuid::new_v4().to_string(),
        submission_id: submission_id.to_owned(),
        kind: receipt_kind as i32,
        problems: kind.reject.iter().map(problem).collect(),
        note: kind.forward.unwrap_or_default(),
        time: None,
    };
    let (body, content_type) = if json {
        let body = serde_json::to_vec(&receipt).map_err(fail)?;
        (body, Encoding::Json.content_type())
    } else {
        (
            prost::Message::encode_to_vec(&receipt),
            Encoding::Protobuf.content_type(),
        )
    };
    let (publisher, link, stop) = helper_publisher(&config, d.broker).await?;
    let properties = BasicProperties::default()
        .with_message_id(receipt.receipt_id.as_str().into())
        .with_content_type(content_type.into());
    let published = publisher.publish("", queue, &body, properties).await;
    stop.cancel();
    link.close().await;
    published.map_err(fail)?;
    println!("answered {submission_id} as {destination_id}: {word} (to {queue})");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn submit(
    path: &std::path::Path,
    platform_id: &str,
    service: &str,
    region: &str,
    json: bool,
    count: usize,
    size: usize,
    raw: Option<PathBuf>,
    content_type: &str,
) -> Result<(), ExitCode> {
    let config = load(path)?;
    let platform = config
        .platform(platform_id)
        .ok_or_else(|| fail(format!("no platform {platform_id:?} in {}", path.display())))?;
    let (publisher, link, stop) = helper_publisher(&config, platform.broker).await?;
    let messages: Vec<(String, Vec<u8>, String)> = match raw {
        Some(file) => {
            let body =
                std::fs::read(&file).map_err(|e| fail(format!("{}: {e}", file.display())))?;
            vec![(
                uuid::Uuid::new_v4().to_string(),
                body,
                content_type.to_owned(),
            )]
        }
        None => {
            let encoding = if json {
                Encoding::Json
            } else {
                Encoding::Protobuf
            };
            let land = platform.land.to_string();
            (0..count)
                .map(|_| {
                    let s = sample::submission(&sample::SampleSpec {
                        platform_id,
                        land: &land,
                        service_key: service,
                        region,
                        size,
                    });
                    let body = sample::encode(&s, encoding);
                    (s.submission_id, body, encoding.content_type().to_owned())
                })
                .collect()
        }
    };
    for (id, body, content_type) in messages {
        let properties = BasicProperties::default()
            .with_message_id(id.as_str().into())
            .with_content_type(content_type.into());
        publisher
            .publish("", &platform.ingress_queue, &body, properties)
            .await
            .map_err(fail)?;
        println!(
            "submitted {id} to {} ({} bytes)",
            platform.ingress_queue,
            body.len()
        );
    }
    stop.cancel();
    link.close().await;
    Ok(())
}

async fn receive(
    path: &std::path::Path,
    from: &ReceiveFrom,
    count: usize,
    wait: Duration,
) -> Result<(), ExitCode> {
    let config = load(path)?;
    let (broker, queue, kind) = if let Some(id) = &from.destination {
        let d = config
            .destination_index(id)
            .map(|i| &config.destinations[i])
            .ok_or_else(|| fail(format!("no destination {id:?}")))?;
        let queue = if d.exchange.is_empty() {
            d.routing_key.clone()
        } else {
            topology::backoffice_queue(&d.id)
        };
        (d.broker, queue, "submission")
    } else if let Some(id) = &from.status {
        let p = config
            .platform(id)
            .ok_or_else(|| fail(format!("no platform {id:?}")))?;
        (p.broker, topology::status_queue(&p.id), "status")
    } else {
        (
            config.gateway.dead_letter_broker,
            config.gateway.dead_letter_queue.clone(),
            "dead-letter",
        )
    };
    let connection = amqp::connect_any(config.broker(broker), Role::Consume)
        .await
        .map_err(fail)?;
    let channel = connection.create_channel().await.map_err(fail)?;
    let mut received = 0;
    let mut idle_since = tokio::time::Instant::now();
    while received < count && idle_since.elapsed() < wait {
        let got = channel
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
            .map_err(fail)?;
        let Some(message) = got else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        idle_since = tokio::time::Instant::now();
        received += 1;
        let delivery = message.delivery;
        println!("{}", describe(kind, &delivery.properties, &delivery.data));
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(fail)?;
    }
    if received == 0 {
        println!("{queue}: no message within {wait:?}");
    }
    ozg_gateway::amqp::close(&connection, "done").await;
    Ok(())
}

/// One line of metadata. Submissions and dead letters show headers and size only; status
/// events carry no personal data and are shown whole.
fn describe(kind: &str, properties: &BasicProperties, body: &[u8]) -> String {
    let mut fields = serde_json::Map::new();
    fields.insert("kind".into(), kind.into());
    if let Some(id) = properties.message_id() {
        fields.insert("message_id".into(), id.as_str().into());
    }
    if let Some(ct) = properties.content_type() {
        fields.insert("content_type".into(), ct.as_str().into());
    }
    fields.insert("bytes".into(), body.len().into());
    if let Some(headers) = properties.headers() {
        fields.insert("headers".into(), headers_json(headers));
    }
    if kind == "status" {
        let event = if properties
            .content_type()
            .as_ref()
            .is_some_and(|c| c.as_str().contains("json"))
        {
            serde_json::from_slice::<wire::StatusEvent>(body).ok()
        } else {
            <wire::StatusEvent as prost::Message>::decode(body).ok()
        };
        if let Some(event) = event.and_then(|e| serde_json::to_value(e).ok()) {
            fields.insert("event".into(), event);
        }
    }
    serde_json::Value::Object(fields).to_string()
}

fn headers_json(headers: &FieldTable) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (key, value) in headers.inner() {
        map.insert(key.as_str().to_owned(), amqp_json(value));
    }
    serde_json::Value::Object(map)
}

/// A header's value as JSON: numbers as numbers, arrays and tables (RabbitMQ's `x-death`)
/// as arrays and objects, rather than Rust's debug notation.
fn amqp_json(value: &AMQPValue) -> serde_json::Value {
    use serde_json::Value;
    match value {
        AMQPValue::Boolean(b) => (*b).into(),
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::Float(f) => f64::from(*f).into(),
        AMQPValue::Double(d) => (*d).into(),
        AMQPValue::DecimalValue(d) => (f64::from(d.value) / 10f64.powi(i32::from(d.scale))).into(),
        AMQPValue::ShortString(s) => s.as_str().into(),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into(),
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(amqp_json).collect())
        }
        AMQPValue::Timestamp(t) => (*t).into(),
        AMQPValue::FieldTable(table) => headers_json(table),
        AMQPValue::ByteArray(bytes) => hex::encode(bytes.as_slice()).into(),
        AMQPValue::Void => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_as_json_values() {
        let mut death = FieldTable::default();
        death.insert("count".into(), AMQPValue::LongLongInt(2));
        death.insert(
            "queue".into(),
            AMQPValue::LongString("ozg.submissions".into()),
        );
        let cases = [
            (AMQPValue::Boolean(true), "true"),
            (AMQPValue::ShortShortInt(-3), "-3"),
            (AMQPValue::LongUInt(7), "7"),
            (AMQPValue::LongLongInt(-9), "-9"),
            (AMQPValue::Double(0.5), "0.5"),
            (
                AMQPValue::DecimalValue(lapin::types::DecimalValue {
                    scale: 2,
                    value: 1250,
                }),
                "12.5",
            ),
            (AMQPValue::ShortString("he".into()), "\"he\""),
            (AMQPValue::Timestamp(1_750_000_000), "1750000000"),
            (
                AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
                r#"[{"count":2,"queue":"ozg.submissions"}]"#,
            ),
            (AMQPValue::ByteArray(vec![0xca, 0xfe].into()), "\"cafe\""),
            (AMQPValue::Void, "null"),
        ];
        for (value, json) in cases {
            assert_eq!(amqp_json(&value).to_string(), json, "{value:?}");
        }
    }
}
