//! The `ozg-gateway` command: run the gateway, check a configuration, explain a route, and
//! small helpers for local set-ups (declare the topology, submit samples, read queues), and
//! `admin`, the client of a running gateway's admin API. This file parses and dispatches;
//! every command's code is under `cli/`.

mod cli;

/// mimalloc rather than glibc's allocator: the message path allocates and frees message-sized
/// buffers all the time, and glibc's consolidation of freed chunks was a tenth of the
/// gateway's CPU per message (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use ozg_gateway::config::TelemetrySettings;

use cli::args::{Cli, Command, LogFormat};
use cli::{check, gateway, local, topology};

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

async fn dispatch(command: Command, log_format: Option<LogFormat>, verbose: u8) -> ExitCode {
    // A client reports on stdout and in one line on stderr; it needs no log subscriber.
    let one_off = match command {
        Command::Admin(args) => return cli::admin::run(*args).await,
        Command::HashToken { file, token } => {
            return cli::hash_token::run(file.as_deref(), token.is_some());
        }
        Command::Completions { shell } => return cli::docs::completions(Cli::command(), shell),
        Command::Man { command, dir } => {
            return cli::docs::man(Cli::command(), &command, dir.as_deref());
        }
        Command::Probe { what, address } => return gateway::probe(what, &address).await,
        Command::Run { config } => {
            return exit_code(gateway::run(config, log_format).await);
        }
        one_off => one_off,
    };
    let settings = TelemetrySettings {
        log_level: cli::one_off_log_level(verbose),
        ..TelemetrySettings::default()
    };
    let _telemetry = match cli::init_telemetry(settings, log_format) {
        Ok(guard) => guard,
        Err(code) => return code,
    };
    exit_code(one_off_command(one_off).await)
}

/// The commands that log only warnings unless asked for more.
async fn one_off_command(command: Command) -> Result<(), ExitCode> {
    match command {
        Command::Run { .. }
        | Command::Admin(_)
        | Command::HashToken { .. }
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Probe { .. } => Ok(()),
        Command::CheckConfig { config, file } => check::check_config(config, file),
        Command::Resolve {
            config,
            service,
            region,
        } => check::resolve(&config, &service, &region),
        Command::DeclareTopology { config } => topology::declare(&config).await,
        Command::Definitions { config, brokers } => topology::definitions(&config, &brokers),
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
            local::submit(
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
        } => local::receive(&config, &queue, count, wait).await,
        Command::Answer {
            config,
            destination,
            submission_id,
            answer: kind,
            json,
        } => local::answer(&config, &destination, &submission_id, kind, json).await,
    }
}

fn exit_code(result: Result<(), ExitCode>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
