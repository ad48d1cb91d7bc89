//! The command line: every command and flag, as clap reads them; `main` parses and
//! dispatches, the commands' code lives beside this file.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "ozg-gateway", version, about, long_version = LONG_VERSION)]
pub struct Cli {
    /// Log format on stderr (default: `telemetry.log_format` of the configuration, or text).
    #[arg(long, global = true, value_enum, env = "OZG_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// More log lines from one-off commands (submit, receive, answer, …): -v info, -vv
    /// debug. They log warnings and errors only by default; OZG_LOG overrides either.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\nGemeindeverzeichnis: © Statistisches Bundesamt (Destatis), dl-de/by-2-0"
);

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
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
    #[command(after_help = super::admin::EXIT_CODES_HELP)]
    Admin(Box<super::admin::AdminArgs>),
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
pub enum Probe {
    /// The process works: runtime, store, the gateway's own broker.
    Live,
    /// It moves submissions: at least one ingress consumes, or all are paused on purpose.
    Ready,
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct AnswerKind {
    /// The authority took the submission up.
    #[arg(long)]
    pub accept: bool,
    /// The authority refuses it; "TITLE: DETAIL", repeatable, one problem each.
    #[arg(long, value_name = "TITLE: DETAIL")]
    pub reject: Vec<String>,
    /// The authority passed it on; a short note, e.g. to whom.
    #[arg(long, value_name = "NOTE")]
    pub forward: Option<String>,
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct ReceiveFrom {
    /// A destination's back-office queue.
    #[arg(long)]
    pub destination: Option<String>,
    /// A platform's status queue.
    #[arg(long)]
    pub status: Option<String>,
    /// The gateway's dead-letter queue.
    #[arg(long)]
    pub dead_letters: bool,
}
