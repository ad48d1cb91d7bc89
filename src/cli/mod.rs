//! The `ozg-gateway` command's code, one module per command or group: `args` (what clap
//! reads), `gateway` (`run`, `probe`), `check` (`check-config`, `resolve`), `topology`
//! (`declare-topology`, `definitions`), `local` (`submit`, `receive`, `answer`: helpers for
//! local set-ups), `admin` (the admin API's client), `hash_token`, `docs` (completions and
//! manual pages).

pub mod admin;
pub mod args;
pub mod check;
pub mod docs;
pub mod gateway;
pub mod hash_token;
pub mod local;
pub mod topology;

use std::process::ExitCode;

use ozg_gateway::config::{self, Config, EXIT_INVALID_CONFIG, TelemetrySettings};
use ozg_gateway::telemetry::{self, TelemetryGuard};

use args::LogFormat;

/// Logging (and tracing, for `run`) as configured, the command line's format winning.
pub fn init_telemetry(
    mut settings: TelemetrySettings,
    format: Option<LogFormat>,
) -> Result<TelemetryGuard, ExitCode> {
    if let Some(format) = format {
        settings.log_format = match format {
            LogFormat::Text => config::LogFormat::Text,
            LogFormat::Json => config::LogFormat::Json,
        };
    }
    telemetry::init(&settings).map_err(fail)
}

pub fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        eprint!("{errors}");
        ExitCode::from(EXIT_INVALID_CONFIG)
    })
}

pub fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("ozg-gateway: {message}");
    ExitCode::FAILURE
}

/// The log filter of a one-off command: its own output is on stdout, so its log says only
/// what went wrong unless asked for more.
pub fn one_off_log_level(verbose: u8) -> String {
    match verbose {
        0 => "warn,lapin=off",
        1 => "info,lapin=off",
        _ => "debug",
    }
    .to_owned()
}
