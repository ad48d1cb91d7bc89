//! The load side of `deploy/bench/run.sh`: makes the benchmark's configuration, fills the
//! platform queues (or a plain queue for the shovel), publishes at a fixed rate while
//! consuming every back office for the end-to-end latency, and checks what arrived where.
//!
//! ```text
//! bench_load config --example deploy/config/example.toml --vhost-prefix P --data-dir D [--store URL] [--prefetch N] --out FILE
//! bench_load fill   --config FILE --count N --size BYTES [--queue Q [--broker NAME]] [--expected FILE] [--window 1000]
//! bench_load paced  --config FILE --rate R (--seconds T | --count N) --size BYTES [--grace 30s]
//! bench_load verify --config FILE --expected FILE
//! bench_load count  --config FILE --broker NAME --queue Q [--queue Q …] [--expect N]
//! bench_load ingress --config FILE
//! bench_load purge  --config FILE
//! ```
//!
//! Figures go to stdout as `key=value` lines; problems to stderr, with exit status 1: a run
//! that lost, duplicated or misrouted anything is invalid, whatever its figures.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ozg_gateway::Config;

mod harness;

use harness::{BenchError, ConfigOptions, FillTarget, Mix, PacedOptions};

#[derive(Parser)]
#[command(about = "Load for deploy/bench/run.sh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the benchmark configuration; print the vhosts it names, one a line.
    Config {
        #[arg(long)]
        example: PathBuf,
        #[arg(long)]
        vhost_prefix: String,
        #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672")]
        amqp: String,
        #[arg(long)]
        data_dir: String,
        /// Store URL; default: SQLite in the data dir.
        #[arg(long)]
        store: Option<String>,
        /// Every platform's prefetch; default: the example's.
        #[arg(long)]
        prefetch: Option<u16>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Publish N submissions as fast as the broker confirms them.
    Fill {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        size: usize,
        /// Into this plain queue instead of the platforms' ingress queues.
        #[arg(long)]
        queue: Option<String>,
        /// The broker of --queue; default: the gateway's own (dead_letter_broker).
        #[arg(long, requires = "queue")]
        broker: Option<String>,
        /// Write `DESTINATION COUNT` lines for `verify`.
        #[arg(long)]
        expected: Option<PathBuf>,
        /// Unconfirmed publishes at most.
        #[arg(long, default_value_t = 1000)]
        window: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Publish at a fixed rate while consuming every back office; report latency and counts.
    Paced {
        #[arg(long)]
        config: PathBuf,
        /// Submissions per second.
        #[arg(long)]
        rate: f64,
        #[arg(long, conflicts_with = "count")]
        seconds: Option<f64>,
        #[arg(long)]
        count: Option<u64>,
        #[arg(long)]
        size: usize,
        /// How long to wait after the last publish for what has not arrived.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        grace: Duration,
        #[arg(long, default_value_t = 1000)]
        window: usize,
        #[arg(long, default_value_t = 2)]
        seed: u64,
    },
    /// Check that each back office holds exactly what the fill expected, and nothing else is left.
    Verify {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        expected: PathBuf,
    },
    /// Messages ready in the queues given, together.
    Count {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        broker: String,
        #[arg(long, required = true)]
        queue: Vec<String>,
        /// Fail unless the queues hold exactly this many together.
        #[arg(long)]
        expect: Option<u32>,
    },
    /// Print each platform's ingress queue as `VHOST:QUEUE`, one a line.
    Ingress {
        #[arg(long)]
        config: PathBuf,
    },
    /// Empty every queue of the configuration (back offices, platforms, status, dead letters).
    Purge {
        #[arg(long)]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse().command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &Path) -> Result<Config, BenchError> {
    Config::load(path).map_err(|e| BenchError::Config(e.to_string()))
}

fn broker_index(config: &Config, name: &str) -> Result<usize, BenchError> {
    config
        .brokers
        .iter()
        .position(|b| b.name == name)
        .ok_or_else(|| BenchError::Config(format!("no broker {name:?} in {}", config.source)))
}

fn write(path: &Path, text: &str) -> Result<(), BenchError> {
    std::fs::write(path, text).map_err(|source| BenchError::Io {
        what: path.display().to_string(),
        source,
    })
}

async fn run(command: Command) -> Result<(), BenchError> {
    match command {
        Command::Config {
            example,
            vhost_prefix,
            amqp,
            data_dir,
            store,
            prefetch,
            out,
        } => {
            let text = std::fs::read_to_string(&example).map_err(|source| BenchError::Io {
                what: example.display().to_string(),
                source,
            })?;
            let base = example.parent().unwrap_or(Path::new("."));
            let made = harness::bench_config(
                &text,
                base,
                &ConfigOptions {
                    amqp: &amqp,
                    vhost_prefix: &vhost_prefix,
                    data_dir: &data_dir,
                    store_url: store.as_deref(),
                    prefetch,
                },
            )?;
            write(&out, &made.text)?;
            for vhost in &made.vhosts {
                println!("{vhost}");
            }
            eprintln!(
                "bench_load: {} with {} Kreis destinations, {} vhosts",
                out.display(),
                made.kreis_destinations,
                made.vhosts.len()
            );
        }
        Command::Fill {
            config,
            count,
            size,
            queue,
            broker,
            expected,
            window,
            seed,
        } => {
            let config = load(&config)?;
            let target = match queue {
                None => FillTarget::Platforms,
                Some(queue) => FillTarget::Queue {
                    broker: match broker {
                        Some(name) => broker_index(&config, &name)?,
                        None => config.gateway.dead_letter_broker,
                    },
                    queue,
                },
            };
            let mix = Mix::new(&config, size, seed)?;
            let report = harness::fill(&config, mix, count, window, &target).await?;
            if let Some(path) = expected {
                write(&path, &harness::write_expected(&report.expected))?;
            }
            println!("published={}", report.published);
            println!("msgs_per_s={:.0}", report.msgs_per_s());
            println!("mib={:.1}", report.bytes as f64 / 1048576.0);
            if report.unrouted > 0 && matches!(target, FillTarget::Platforms) {
                return Err(BenchError::Refused(format!(
                    "{} submissions have no route: the configuration does not cover the mix",
                    report.unrouted
                )));
            }
        }
        Command::Paced {
            config,
            rate,
            seconds,
            count,
            size,
            grace,
            window,
            seed,
        } => {
            let config = load(&config)?;
            let count = match (count, seconds) {
                (Some(n), _) => n,
                (None, Some(s)) => (rate * s).round() as u64,
                (None, None) => {
                    return Err(BenchError::Config("paced: --seconds or --count".into()));
                }
            };
            if !rate.is_finite() || rate <= 0.0 {
                return Err(BenchError::Config(format!(
                    "paced: --rate {rate} must be > 0"
                )));
            }
            let mix = Mix::new(&config, size, seed)?;
            let opts = PacedOptions {
                rate,
                count,
                grace,
                window,
            };
            let report = harness::paced(&config, mix, &opts).await?;
            print!("{}", report.lines());
            let problems = report.problems();
            if !problems.is_empty() {
                return Err(BenchError::Refused(format!(
                    "the latency run is invalid: {}",
                    problems.join("; ")
                )));
            }
        }
        Command::Verify { config, expected } => {
            let config = load(&config)?;
            let text = std::fs::read_to_string(&expected).map_err(|source| BenchError::Io {
                what: expected.display().to_string(),
                source,
            })?;
            let expected = harness::read_expected(&text)?;
            let v = harness::verify(&config, &expected).await?;
            if !v.problems.is_empty() {
                for p in v.problems.iter().take(20) {
                    eprintln!("bench_load: verify: {p}");
                }
                return Err(BenchError::Refused(format!(
                    "{} destinations or queues are not as expected ({} arrived, {} expected)",
                    v.problems.len(),
                    v.arrived,
                    expected.values().sum::<u64>()
                )));
            }
            println!("verified={}", v.arrived);
        }
        Command::Count {
            config,
            broker,
            queue,
            expect,
        } => {
            let config = load(&config)?;
            let n = harness::count(&config, broker_index(&config, &broker)?, &queue).await?;
            println!("{n}");
            if let Some(want) = expect {
                if n != u64::from(want) {
                    let what = match queue.as_slice() {
                        [one] => one.clone(),
                        many => format!("{} queues", many.len()),
                    };
                    return Err(BenchError::Refused(format!(
                        "{what} hold {n}, expected {want}"
                    )));
                }
            }
        }
        Command::Ingress { config } => {
            let config = load(&config)?;
            for p in &config.platforms {
                println!(
                    "{}:{}",
                    harness::vhost(&config.broker(p.broker).display),
                    p.ingress_queue
                );
            }
        }
        Command::Purge { config } => {
            let config = load(&config)?;
            println!("purged={}", harness::purge(&config).await?);
        }
    }
    Ok(())
}
