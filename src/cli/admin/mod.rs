//! `ozg-gateway admin`: the operators' client of the admin API
//! (proto/ozg/gateway/admin/v1/admin.proto), one subcommand per RPC. Tables for people;
//! `--json` prints the proto3 JSON mapping, one document per response and line, for scripts.

mod connect;
mod dead_letters;
mod directory;
mod operations;
mod render;
mod request;

use std::io::{ErrorKind, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use ozg_gateway::secret::{self, Secret};
use ozg_gateway::wire::admin as api;
use ozg_gateway::wire::admin::dead_letter_service_client::DeadLetterServiceClient;
use ozg_gateway::wire::admin::directory_service_client::DirectoryServiceClient;
use ozg_gateway::wire::admin::operations_service_client::OperationsServiceClient;
use ozg_gateway::wire::admin::stats_service_client::StatsServiceClient;
use tonic::Request;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;

pub use connect::EXIT_CODES_HELP;
use connect::{Bearer, Failure, Target};
use dead_letters::DeadLettersCommand;
use directory::{AuditArgs, DestinationsCommand, RoutesCommand, ServicesCommand};
use operations::IngressCommand;

/// A dead letter's payload can be as large as the gateway accepts (at most 512 MiB), far
/// beyond tonic's default limit of 4 MiB for a response.
const MAX_RESPONSE_BYTES: usize = 513 * 1024 * 1024;

#[derive(Args)]
#[command(next_help_heading = "Admin API")]
pub struct AdminArgs {
    /// The admin API; https:// uses TLS.
    #[arg(
        long,
        global = true,
        env = "OZG_ADMIN_ADDRESS",
        default_value = "http://127.0.0.1:50051"
    )]
    address: String,
    /// File holding the bearer token (one trailing newline is ignored), sent as
    /// `authorization: Bearer <token>`. Without it, the token comes from the environment
    /// variable OZG_ADMIN_TOKEN. There is no flag for the token itself: every user can see a
    /// process's arguments.
    #[arg(long, global = true, value_name = "FILE", env = "OZG_ADMIN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Refused with a usage error, so that an old script fails instead of going on
    /// without its token.
    #[arg(long, global = true, hide = true, value_name = "TOKEN")]
    token: Option<String>,
    /// PEM file of the CA that signed the admin API's certificate (https only).
    #[arg(long, global = true, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// PEM client certificate for mutual TLS.
    #[arg(long, global = true, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, global = true, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Print the proto3 JSON mapping instead of tables: one document per response, each on
    /// one line (streams: one per message).
    #[arg(long, global = true)]
    json: bool,
    /// How long connecting and each call may take (streams run until they end).
    #[arg(long, global = true, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// grpc.health.v1 Check: is the gateway (or one service) serving? Exit 1 if not.
    Health {
        /// Print every change until Ctrl-C (grpc.health.v1 Watch).
        #[arg(long)]
        watch: bool,
        /// A service such as ozg.gateway.admin.v1.DirectoryService; empty: the gateway.
        #[arg(default_value = "")]
        service: String,
    },
    /// Counters, ingress queue depths, retry backlogs and broker links, filtered at will.
    ///
    /// Version, uptime and store; per platform its counters and its ingress queue's depth
    /// (ready as the broker last counted it, in flight: taken by this instance and not yet
    /// acked); per destination its counters and retry backlog; the broker links. The
    /// filters narrow the rows within the token's scope: --land to a Land's platforms and
    /// destinations, --platform and --destination to exactly those.
    Overview(OverviewArgs),
    /// The routing directory's destinations.
    #[command(subcommand)]
    Destinations(DestinationsCommand),
    /// The routing directory's routes: (service, region prefix) → destination.
    #[command(subcommand)]
    Routes(RoutesCommand),
    /// The services catalogue (LeiKa keys and names).
    #[command(subcommand)]
    Services(ServicesCommand),
    /// Who changed what and when, newest first.
    Audit(AuditArgs),
    /// Where a submission for SERVICE and REGION would go, and why; sends nothing.
    Resolve {
        /// LeiKa key.
        service: String,
        /// 12-digit ARS or 8-digit AGS.
        region: String,
    },
    /// Dead letters in the store: list, inspect, replay, discard.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Stop or restart consuming a platform's queue.
    #[command(subcommand)]
    Ingress(IngressCommand),
    /// What happened to one submission, oldest first.
    Trace { submission_id: String },
    /// Delivered submissions with no answer from their back office in time, oldest first.
    Overdue {
        /// How many at most (server default 100, at most 1000).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// A live tail of routing outcomes, one line each, until Ctrl-C or the server ends it.
    Watch {
        /// Only this platform's submissions.
        #[arg(long)]
        platform: Option<String>,
        /// Only submissions for this destination.
        #[arg(long)]
        destination: Option<String>,
    },
}

#[derive(Args)]
struct OverviewArgs {
    /// Only this Land's platforms and destinations: its code (06) or abbreviation (HE);
    /// repeatable.
    #[arg(long = "land", value_name = "LAND")]
    laender: Vec<String>,
    /// Only this platform (repeatable); without --destination, no destination rows.
    #[arg(long = "platform", value_name = "PLATFORM")]
    platforms: Vec<String>,
    /// Only this destination (repeatable); without --platform, no platform rows.
    #[arg(long = "destination", value_name = "DESTINATION")]
    destinations: Vec<String>,
}

#[derive(Args)]
struct Page {
    /// At most this many per page (dead letters: default 100, at most 1000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    limit: Option<u32>,
    /// Continue after the previous page.
    #[arg(long)]
    page_token: Option<String>,
}

pub async fn run(args: AdminArgs) -> ExitCode {
    let address = args.address.clone();
    let token = match token(&args) {
        Ok(token) => token,
        Err(failure) => {
            if let Some(line) = failure.message(&address, None) {
                eprintln!("admin: {line}");
            }
            return ExitCode::from(failure.exit_code());
        }
    };
    let shown = token.as_ref().map(Secret::expose);
    match execute(args, token.as_ref()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if let Some(line) = failure.message(&address, shown) {
                eprintln!("admin: {line}");
            }
            ExitCode::from(failure.exit_code())
        }
    }
}

/// The token from `--token-file` (or OZG_ADMIN_TOKEN_FILE), else OZG_ADMIN_TOKEN, else none.
fn token(args: &AdminArgs) -> Result<Option<Secret>, Failure> {
    if args.token.is_some() {
        return Err(Failure::Usage(
            "--token is not accepted: every user can see a process's arguments; \
             put the token in a file for --token-file FILE, or in OZG_ADMIN_TOKEN"
                .into(),
        ));
    }
    if let Some(path) = &args.token_file {
        let read =
            secret::from_file(path).map_err(|e| Failure::Usage(format!("--token-file: {e}")))?;
        if let Some(warning) = read.warning {
            eprintln!("admin: warning: --token-file: {warning}");
        }
        return Ok(Some(read.secret));
    }
    Ok(std::env::var("OZG_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .map(Secret::new))
}

type Authed = InterceptedService<Channel, Bearer>;

struct Api {
    channel: Channel,
    bearer: Bearer,
    timeout: Duration,
}

impl Api {
    /// Streams get no deadline: it would cut a `watch` off.
    fn unary<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    fn stats(&self) -> StatsServiceClient<Authed> {
        StatsServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    fn directory(&self) -> DirectoryServiceClient<Authed> {
        DirectoryServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    fn dead_letters(&self) -> DeadLetterServiceClient<Authed> {
        DeadLetterServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    fn operations(&self) -> OperationsServiceClient<Authed> {
        OperationsServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    fn health(&self) -> HealthClient<Authed> {
        HealthClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }
}

struct Output {
    json: bool,
}

impl Output {
    fn show<M: serde::Serialize>(
        &self,
        message: &M,
        human: impl FnOnce(&M) -> String,
    ) -> Result<(), Failure> {
        let text = if self.json {
            serde_json::to_string(message)
                .map_err(|e| Failure::Local(format!("cannot write the response as JSON: {e}")))?
        } else {
            human(message)
        };
        print(text.as_bytes(), !text.ends_with('\n'))
    }

    /// Remarks for people go to stderr so that a table on stdout stays a table; the JSON
    /// carries the same facts.
    fn note(&self, text: &str) {
        if !self.json {
            eprintln!("{text}");
        }
    }

    fn next_page(&self, token: &str) {
        if !token.is_empty() {
            self.note(&format!("more: --page-token {}", render::clean(token)));
        }
    }
}

fn print(bytes: &[u8], newline: bool) -> Result<(), Failure> {
    fn write(bytes: &[u8], newline: bool) -> std::io::Result<()> {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(bytes)?;
        if newline {
            stdout.write_all(b"\n")?;
        }
        stdout.flush()
    }
    match write(bytes, newline) {
        Ok(()) => Ok(()),
        // The reader is gone (`… | head`): nothing is left to do, and nothing went wrong.
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Err(Failure::Quiet(0)),
        Err(e) => Err(Failure::Local(format!("stdout: {e}"))),
    }
}

async fn execute(args: AdminArgs, token: Option<&Secret>) -> Result<(), Failure> {
    let target = Target {
        address: args.address,
        ca_cert: args.ca_cert,
        client_cert: args.client_cert,
        client_key: args.client_key,
        timeout: args.timeout,
    };
    let api = Api {
        channel: connect::endpoint(&target)?.connect_lazy(),
        bearer: Bearer::new(token.map(Secret::expose))?,
        timeout: args.timeout,
    };
    let out = Output { json: args.json };
    match args.command {
        AdminCommand::Health { watch, service } => {
            operations::health(&api, &out, service, watch).await
        }
        AdminCommand::Overview(filter) => {
            let request = api.unary(api::GetOverviewRequest {
                laender: filter.laender,
                platforms: filter.platforms,
                destinations: filter.destinations,
            });
            let overview = api.stats().get_overview(request).await?.into_inner();
            out.show(&overview, render::overview)
        }
        AdminCommand::Destinations(command) => directory::destinations(&api, &out, command).await,
        AdminCommand::Routes(command) => directory::routes(&api, &out, command).await,
        AdminCommand::Services(command) => directory::services(&api, &out, command).await,
        AdminCommand::Audit(args) => directory::audit(&api, &out, args).await,
        AdminCommand::Resolve { service, region } => {
            let request = api.unary(api::ResolveRequest { service, region });
            let resolution = api.directory().resolve(request).await?.into_inner();
            out.show(&resolution, render::resolution)
        }
        AdminCommand::DeadLetters(command) => dead_letters::run(&api, &out, command).await,
        AdminCommand::Ingress(command) => operations::ingress(&api, &out, command).await,
        AdminCommand::Trace { submission_id } => operations::trace(&api, &out, submission_id).await,
        AdminCommand::Overdue { limit } => operations::overdue(&api, &out, limit).await,
        AdminCommand::Watch {
            platform,
            destination,
        } => operations::watch(&api, &out, platform, destination).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        admin: AdminArgs,
    }

    fn parse(line: &str) -> Result<AdminArgs, clap::Error> {
        let args = std::iter::once("admin").chain(line.split_whitespace());
        Cli::try_parse_from(args).map(|cli| cli.admin)
    }

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn arguments_parse_or_are_refused_by_clap() {
        let accepted = [
            "health",
            "health --watch ozg.gateway.admin.v1.DirectoryService",
            "--json overview",
            "overview --json --timeout 2s",
            "overview --land 06 --land TH --platform civento-he --destination he-darmstadt",
            "dead-letters show 0b6c5d2e-1f4a-4c43-9e1a-52f0a4b8d7c1",
            "dead-letters list --reason delivery-failed",
            "dead-letters list --reason receipt-wrong-destination",
            "destinations create --id x --name X --kind other --land 06 --broker he",
            "destinations update --id x --routing-key q",
            "routes list --service * --region-prefix 06",
            "routes create 99115005104000 06411 he-darmstadt",
            "services put 99115005104000 Wohngeld",
            "audit --action route. --since 2h --limit 20",
            "dead-letters list --state all --since 1d --until 2025-06-15T15:06:40Z --all-pages",
            "dead-letters replay a b --to he-darmstadt",
            "dead-letters replay --reason no-route --platform he-portal",
            "dead-letters discard --all",
            "dead-letters payload x --justification ticket-42 --out p.bin",
            "ingress pause he-portal",
            "watch --platform he-portal",
        ];
        for line in accepted {
            if let Err(e) = parse(line) {
                panic!("{line}: {e}");
            }
        }
        let refused = [
            "",
            "destinations create --id x",
            "dead-letters list --limit 0",
            "dead-letters list --state some",
            "dead-letters list --reason no_route",
            "dead-letters replay --reason invalid-envelope",
            "dead-letters discard --reason NO-ROUTE",
            "dead-letters list --all-pages --page-token t",
            "dead-letters list --since 2025-06-15T17:06:40+02:00",
            "dead-letters payload x",
            "--client-cert c.pem overview",
            "--timeout soon overview",
            "routes get 99115005104000",
        ];
        for line in refused {
            let error = parse(line).err().unwrap_or_else(|| panic!("{line} parsed"));
            assert_eq!(error.exit_code(), 2, "{line}");
        }
    }

    /// Nothing listens on port 1; none of these may get as far as trying.
    #[tokio::test]
    async fn usage_errors_come_before_any_call() {
        let cases = [
            ("dead-letters discard", "add --all"),
            ("dead-letters replay --all a", "not both"),
            (
                "dead-letters list --since 1h --until 2h",
                "--since is after --until",
            ),
            ("destinations update --id x", "nothing to change"),
            (
                "dead-letters payload x --justification blank --out p",
                "must say why",
            ),
            ("--ca-cert ca.pem overview", "https://"),
        ];
        for (line, expected) in cases {
            let mut args = parse(&format!("--address http://127.0.0.1:1 {line}")).unwrap();
            if line.contains("--justification blank") {
                // split_whitespace cannot pass a blank argument.
                if let AdminCommand::DeadLetters(DeadLettersCommand::Payload {
                    justification,
                    ..
                }) = &mut args.command
                {
                    *justification = " ".into();
                }
            }
            match execute(args, None).await {
                Err(Failure::Usage(text)) => assert!(text.contains(expected), "{line}: {text}"),
                Err(other) => panic!("{line}: {other:?}"),
                Ok(()) => panic!("{line}: succeeded"),
            }
        }
    }

    #[test]
    fn a_token_on_the_command_line_is_refused_without_repeating_it() {
        let args = parse("--token s3cr3t-t0ken overview").unwrap();
        match token(&args) {
            Err(Failure::Usage(text)) => {
                assert!(text.contains("--token is not accepted"), "{text}");
                assert!(text.contains("--token-file"), "{text}");
                assert!(!text.contains("s3cr3t"), "{text}");
            }
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("a token on the command line was accepted"),
        }
        let args = parse("--token-file /nonexistent/token overview").unwrap();
        match token(&args) {
            Err(Failure::Usage(text)) => assert_eq!(
                text,
                "--token-file: cannot read /nonexistent/token: No such file or directory (os error 2)"
            ),
            _ => panic!("a missing token file must be a usage error"),
        }
    }
}
