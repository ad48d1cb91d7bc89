//! `ozg-gateway admin`: the operators' client of the admin API
//! (proto/ozg/gateway/admin/v1/admin.proto), one subcommand per RPC. Tables for people;
//! `--json` prints the proto3 JSON mapping, one document per response and line, for scripts.
//! Beside it `hash-token`, which makes a token's entry for the admin API's configuration, and
//! `docs`: shell completions and manual pages.

mod connect;
pub mod docs;
pub mod hash_token;
mod render;
mod request;

use std::future::Future;
use std::io::{ErrorKind, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use ozg_gateway::secret::{self, Secret};
use ozg_gateway::wire::admin as api;
use ozg_gateway::wire::admin::dead_letter_service_client::DeadLetterServiceClient;
use ozg_gateway::wire::admin::directory_service_client::DirectoryServiceClient;
use ozg_gateway::wire::admin::operations_service_client::OperationsServiceClient;
use ozg_gateway::wire::admin::stats_service_client::StatsServiceClient;
use tonic::codec::Streaming;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub use connect::EXIT_CODES_HELP;
use connect::{Bearer, Failure, Target};
use request::{DestinationChanges, FilterArgs, NewDestination, StateArg};

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

#[derive(Subcommand)]
enum DestinationsCommand {
    /// Every destination, from the configuration file (read-only) and the store.
    List,
    /// One destination.
    Get { id: String },
    /// Add a destination to the store.
    Create(NewDestination),
    /// Change a destination in the store; fields not given stay as they are.
    Update {
        #[arg(long)]
        id: String,
        #[command(flatten)]
        changes: DestinationChanges,
    },
    /// Remove a destination from the store (refused while routes point at it).
    Delete { id: String },
}

#[derive(Subcommand)]
enum RoutesCommand {
    /// Routes, optionally filtered.
    List {
        /// LeiKa key, or "*".
        #[arg(long)]
        service: Option<String>,
        /// Destination id.
        #[arg(long)]
        destination: Option<String>,
        /// Routes whose region starts with this ("06": Hessen).
        #[arg(long)]
        region_prefix: Option<String>,
    },
    /// The route for SERVICE and REGION.
    Get { service: String, region: String },
    /// Add a route to the store: SERVICE (LeiKa key or "*") in REGION (ARS prefix of 2, 3,
    /// 5, 9 or 12 digits) goes to DESTINATION.
    Create {
        service: String,
        region: String,
        destination: String,
    },
    /// Point the route for SERVICE and REGION at another DESTINATION.
    Update {
        service: String,
        region: String,
        destination: String,
    },
    /// Remove a route from the store.
    Delete { service: String, region: String },
}

#[derive(Subcommand)]
enum ServicesCommand {
    /// Every service in the catalogue.
    List,
    /// Add or rename a service.
    Put { key: String, name: String },
    /// Remove a service from the store.
    Delete { key: String },
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

#[derive(Args)]
struct AuditArgs {
    /// The token name that made the change.
    #[arg(long)]
    actor: Option<String>,
    /// Actions starting with this ("route.", "dead-letter.payload").
    #[arg(long)]
    action: Option<String>,
    /// Objects starting with this.
    #[arg(long)]
    object: Option<String>,
    /// At or after: RFC 3339 in UTC, or a duration back from now (2h).
    #[arg(long, value_parser = request::parse_time)]
    since: Option<SystemTime>,
    /// Before: RFC 3339 in UTC, or a duration back from now.
    #[arg(long, value_parser = request::parse_time)]
    until: Option<SystemTime>,
    #[command(flatten)]
    page: Page,
}

#[derive(Subcommand)]
enum DeadLettersCommand {
    /// Dead letters matching the filters, oldest first (pending ones unless --state).
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Which state; default pending.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        #[command(flatten)]
        page: Page,
        /// Follow next-page tokens to the end.
        #[arg(long, conflicts_with = "page_token")]
        all_pages: bool,
    },
    /// One dead letter's metadata and headers (not its content).
    #[command(visible_alias = "show")]
    Get { id: String },
    /// Write a dead letter's content to --out, or to stdout when that is not a terminal.
    /// Needs the payload right; every read is audited with the justification.
    Payload {
        id: String,
        /// Why you need to see it (goes into the audit log).
        #[arg(long)]
        justification: String,
        /// Write here (created readable by you only).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// How many dead letters there are, by reason, platform and destination (pending ones
    /// unless --state).
    Summary {
        #[command(flatten)]
        filter: FilterArgs,
        /// Which state; default pending.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
    },
    /// Send dead letters through the normal path again (deduplication included): the given
    /// ids, the pending ones matching the filters, or with --all every pending one; then
    /// show what became of each.
    ///
    /// A selection by filter or --all is counted first and needs a confirmation: answer the
    /// prompt, or give --yes or --expect N. The replay is refused, and nothing is sent, when
    /// the selection no longer holds the number confirmed.
    Replay {
        #[command(flatten)]
        select: Select,
        /// Deliver to this destination instead of the freshly resolved route.
        #[arg(long, value_name = "DESTINATION")]
        to: Option<String>,
        #[command(flatten)]
        confirm: Confirm,
        /// Wait up to this long (e.g. 30s) for every replayed letter to be delivered or
        /// dead-lettered again, then show the outcomes; without it they are shown at once.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "dry_run")]
        wait: Option<Duration>,
    },
    /// Mark dead letters discarded: the given ids, the pending ones matching the filters, or
    /// with --all every pending one.
    ///
    /// A selection by filter or --all is counted first and needs a confirmation: answer the
    /// prompt, or give --yes or --expect N.
    Discard {
        #[command(flatten)]
        select: Select,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// What became of replayed dead letters: delivered (where), dead-lettered again (the new
    /// letter and its reason), still retrying or waiting.
    Outcomes {
        /// Dead-letter ids (as `replay` printed them).
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Args)]
struct Confirm {
    /// Only count the dead letters that would be touched and show some of their ids; touch
    /// none.
    #[arg(long, conflicts_with_all = ["yes", "expect"])]
    dry_run: bool,
    /// Go ahead without asking.
    #[arg(long, short = 'y', conflicts_with = "expect")]
    yes: bool,
    /// Go ahead only if exactly N dead letters are selected (the count a --dry-run showed);
    /// otherwise nothing is done.
    #[arg(long, value_name = "N")]
    expect: Option<u32>,
}

#[derive(Args)]
struct Select {
    /// Dead-letter ids (not submission ids).
    ids: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Every pending dead letter; needed when neither ids nor filters are given.
    #[arg(long)]
    all: bool,
}

#[derive(Subcommand)]
enum IngressCommand {
    /// Stop consuming PLATFORM's queue; submissions in flight finish.
    Pause { platform: String },
    /// Consume PLATFORM's queue again.
    Resume { platform: String },
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
        AdminCommand::Health { watch, service } => health(&api, &out, service, watch).await,
        AdminCommand::Overview(filter) => {
            let request = api.unary(api::GetOverviewRequest {
                laender: filter.laender,
                platforms: filter.platforms,
                destinations: filter.destinations,
            });
            let overview = api.stats().get_overview(request).await?.into_inner();
            out.show(&overview, render::overview)
        }
        AdminCommand::Destinations(command) => destinations(&api, &out, command).await,
        AdminCommand::Routes(command) => routes(&api, &out, command).await,
        AdminCommand::Services(command) => services(&api, &out, command).await,
        AdminCommand::Audit(args) => audit(&api, &out, args).await,
        AdminCommand::Resolve { service, region } => {
            let request = api.unary(api::ResolveRequest { service, region });
            let resolution = api.directory().resolve(request).await?.into_inner();
            out.show(&resolution, render::resolution)
        }
        AdminCommand::DeadLetters(command) => dead_letters(&api, &out, command).await,
        AdminCommand::Ingress(command) => {
            let mut client = api.operations();
            let state = match command {
                IngressCommand::Pause { platform } => {
                    let request = api::PauseIngressRequest {
                        platform_id: platform,
                    };
                    client.pause_ingress(api.unary(request)).await?
                }
                IngressCommand::Resume { platform } => {
                    let request = api::ResumeIngressRequest {
                        platform_id: platform,
                    };
                    client.resume_ingress(api.unary(request)).await?
                }
            };
            out.show(state.get_ref(), render::ingress)
        }
        AdminCommand::Trace { submission_id } => {
            let request = api.unary(api::GetSubmissionTraceRequest { submission_id });
            let trace = api
                .operations()
                .get_submission_trace(request)
                .await?
                .into_inner();
            out.show(&trace, render::trace)
        }
        AdminCommand::Overdue { limit } => {
            let request = api.unary(api::ListOverdueRequest {
                page_size: limit.unwrap_or(0),
            });
            let list = api.operations().list_overdue(request).await?.into_inner();
            out.show(&list, render::overdue)?;
            out.note(&format!(
                "{} overdue{}",
                list.submissions.len(),
                render::within(&list.scope)
            ));
            Ok(())
        }
        AdminCommand::Watch {
            platform,
            destination,
        } => {
            let request = api::WatchEventsRequest {
                platform: platform.unwrap_or_default(),
                destination: destination.unwrap_or_default(),
            };
            let mut client = api.operations();
            follow(client.watch_events(request), |event| {
                out.show(&event, render::event)
            })
            .await
        }
    }
}

/// The proto3 JSON of a HealthCheckResponse, which tonic-health does not derive.
#[derive(serde::Serialize)]
struct Health {
    status: &'static str,
}

impl Health {
    fn of(status: i32) -> Self {
        Health {
            status: ServingStatus::try_from(status).map_or("UNKNOWN", |s| s.as_str_name()),
        }
    }
}

async fn health(api: &Api, out: &Output, service: String, watch: bool) -> Result<(), Failure> {
    let mut client = api.health();
    let request = HealthCheckRequest { service };
    if watch {
        return follow(client.watch(request), |response| {
            out.show(&Health::of(response.status), |h| {
                format!(
                    "{} {}",
                    humantime::format_rfc3339_seconds(SystemTime::now()),
                    h.status
                )
            })
        })
        .await;
    }
    let response = client.check(api.unary(request)).await?.into_inner();
    out.show(&Health::of(response.status), |h| h.status.to_owned())?;
    if response.status == ServingStatus::Serving as i32 {
        Ok(())
    } else {
        Err(Failure::Quiet(connect::EXIT_CALL_FAILED))
    }
}

/// Hands each message of a server stream to `each` until the stream ends or Ctrl-C, which is
/// how an operator ends a tail, so it is a success.
async fn follow<M>(
    call: impl Future<Output = Result<Response<Streaming<M>>, Status>>,
    mut each: impl FnMut(M) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let tail = async {
        let mut stream = call.await?.into_inner();
        while let Some(message) = stream.message().await? {
            each(message)?;
        }
        Ok(())
    };
    tokio::select! {
        result = tail => result,
        signal = tokio::signal::ctrl_c() => signal
            .map_err(|e| Failure::Local(format!("cannot listen for Ctrl-C: {e}"))),
    }
}

async fn destinations(
    api: &Api,
    out: &Output,
    command: DestinationsCommand,
) -> Result<(), Failure> {
    let mut client = api.directory();
    let changed = match command {
        DestinationsCommand::List => {
            let request = api.unary(api::ListDestinationsRequest {});
            let list = client.list_destinations(request).await?.into_inner();
            return out.show(&list, |l| render::destinations(&l.destinations));
        }
        DestinationsCommand::Get { id } => {
            let request = api.unary(api::GetDestinationRequest { id });
            client.get_destination(request).await?
        }
        DestinationsCommand::Create(new) => {
            let request = api.unary(api::CreateDestinationRequest {
                destination: Some(new.into()),
                ..Default::default()
            });
            client.create_destination(request).await?
        }
        DestinationsCommand::Update { id, changes } => {
            changes.check().map_err(Failure::Usage)?;
            let request = api.unary(api::GetDestinationRequest { id });
            let current = client.get_destination(request).await?.into_inner();
            let updated = request::apply_changes(current, &changes).map_err(Failure::Usage)?;
            let request = api.unary(api::UpdateDestinationRequest {
                destination: Some(updated),
                ..Default::default()
            });
            client.update_destination(request).await?
        }
        DestinationsCommand::Delete { id } => {
            let request = api.unary(api::DeleteDestinationRequest {
                id: id.clone(),
                ..Default::default()
            });
            let deleted = client.delete_destination(request).await?.into_inner();
            return out.show(&deleted, |_| {
                format!("deleted destination {}", render::clean(&id))
            });
        }
    };
    out.show(changed.get_ref(), render::destination)
}

async fn routes(api: &Api, out: &Output, command: RoutesCommand) -> Result<(), Failure> {
    let mut client = api.directory();
    let route = |service, region, destination| api::Route {
        service,
        region,
        destination,
        ..Default::default()
    };
    let changed = match command {
        RoutesCommand::List {
            service,
            destination,
            region_prefix,
        } => {
            let request = api.unary(api::ListRoutesRequest {
                service: service.unwrap_or_default(),
                destination: destination.unwrap_or_default(),
                region_prefix: region_prefix.unwrap_or_default(),
            });
            let list = client.list_routes(request).await?.into_inner();
            return out.show(&list, |l| render::routes(&l.routes));
        }
        RoutesCommand::Get { service, region } => {
            let request = api.unary(api::GetRouteRequest { service, region });
            client.get_route(request).await?
        }
        RoutesCommand::Create {
            service,
            region,
            destination,
        } => {
            let request = api.unary(api::CreateRouteRequest {
                route: Some(route(service, region, destination)),
                ..Default::default()
            });
            client.create_route(request).await?
        }
        RoutesCommand::Update {
            service,
            region,
            destination,
        } => {
            let request = api.unary(api::UpdateRouteRequest {
                route: Some(route(service, region, destination)),
                ..Default::default()
            });
            client.update_route(request).await?
        }
        RoutesCommand::Delete { service, region } => {
            let shown = format!(
                "deleted route {} {}",
                render::clean(&service),
                render::clean(&region)
            );
            let request = api.unary(api::DeleteRouteRequest {
                service,
                region,
                ..Default::default()
            });
            let deleted = client.delete_route(request).await?.into_inner();
            return out.show(&deleted, |_| shown);
        }
    };
    out.show(changed.get_ref(), render::route)
}

async fn services(api: &Api, out: &Output, command: ServicesCommand) -> Result<(), Failure> {
    let mut client = api.directory();
    match command {
        ServicesCommand::List => {
            let request = api.unary(api::ListServicesRequest {});
            let list = client.list_services(request).await?.into_inner();
            out.show(&list, |l| render::services(&l.services))
        }
        ServicesCommand::Put { key, name } => {
            let request = api.unary(api::PutServiceRequest {
                service: Some(api::Service {
                    key,
                    name,
                    source: api::Source::Unspecified as i32,
                }),
                ..Default::default()
            });
            let service = client.put_service(request).await?.into_inner();
            out.show(&service, render::service)
        }
        ServicesCommand::Delete { key } => {
            let shown = format!("deleted service {}", render::clean(&key));
            let request = api.unary(api::DeleteServiceRequest {
                key,
                ..Default::default()
            });
            let deleted = client.delete_service(request).await?.into_inner();
            out.show(&deleted, |_| shown)
        }
    }
}

async fn audit(api: &Api, out: &Output, args: AuditArgs) -> Result<(), Failure> {
    let (since, until) = request::bounds(args.since, args.until).map_err(Failure::Usage)?;
    let request = api.unary(api::ListAuditRequest {
        actor: args.actor.unwrap_or_default(),
        action_prefix: args.action.unwrap_or_default(),
        object_prefix: args.object.unwrap_or_default(),
        since,
        until,
        page_size: args.page.limit.unwrap_or(0),
        page_token: args.page.page_token.unwrap_or_default(),
    });
    let page = api.directory().list_audit(request).await?.into_inner();
    out.show(&page, |p| render::audit(&p.entries))?;
    out.note(&format!(
        "{} entries{}",
        page.entries.len(),
        render::within(&page.scope)
    ));
    out.next_page(&page.next_page_token);
    Ok(())
}

async fn dead_letters(api: &Api, out: &Output, command: DeadLettersCommand) -> Result<(), Failure> {
    let mut client = api.dead_letters();
    match command {
        DeadLettersCommand::List {
            filter,
            state,
            page,
            all_pages,
        } => {
            let request = api::ListDeadLettersRequest {
                filter: Some(request::dead_letter_filter(&filter, state).map_err(Failure::Usage)?),
                page_size: page.limit.unwrap_or(0),
                page_token: page.page_token.unwrap_or_default(),
            };
            list_dead_letters(api, out, &mut client, request, all_pages).await
        }
        DeadLettersCommand::Get { id } => {
            let request = api.unary(api::GetDeadLetterRequest { id });
            let letter = client.get_dead_letter(request).await?.into_inner();
            out.show(&letter, render::dead_letter)
        }
        DeadLettersCommand::Payload {
            id,
            justification,
            out: file,
        } => {
            if justification.trim().is_empty() {
                return Err(Failure::Usage("--justification must say why".into()));
            }
            // Decided before asking: every read is audited, so a refused dump should not
            // leave a trace of a read nobody saw.
            if file.is_none() && std::io::stdout().is_terminal() {
                return Err(Failure::Usage(
                    "not writing a payload to a terminal: give --out FILE or redirect stdout"
                        .into(),
                ));
            }
            let request = api.unary(api::GetDeadLetterPayloadRequest { id, justification });
            let payload = client.get_dead_letter_payload(request).await?.into_inner();
            write_payload(&payload, out.json, file.as_deref())
        }
        DeadLettersCommand::Summary { filter, state } => {
            let request = api.unary(api::SummarizeDeadLettersRequest {
                filter: Some(request::dead_letter_filter(&filter, state).map_err(Failure::Usage)?),
            });
            let summary = client.summarize_dead_letters(request).await?.into_inner();
            out.show(&summary, render::summary)
        }
        DeadLettersCommand::Replay {
            select,
            to,
            confirm,
            wait,
        } => {
            let bulk = select.ids.is_empty();
            let selection = select_letters(select)?;
            let mut request = api::ReplayDeadLettersRequest {
                ids: selection.ids,
                filter: selection.filter,
                destination: to.unwrap_or_default(),
                all: selection.all,
                dry_run: true,
                expected_count: None,
            };
            let dry = {
                let (request, mut client) = (api.unary(request.clone()), client.clone());
                || async move { Ok(client.replay_dead_letters(request).await?.into_inner()) }
            };
            let counted =
                |d: &api::ReplayDeadLettersResponse| (d.replayed, d.matched, d.scope.clone());
            let Some(expected) = confirmation(
                out,
                &confirm,
                bulk,
                "replay",
                dry,
                counted,
                render::replayed,
            )
            .await?
            else {
                return Ok(());
            };
            request.dry_run = false;
            request.expected_count = expected;
            let replayed = client
                .replay_dead_letters(api.unary(request))
                .await?
                .into_inner();
            out.show(&replayed, render::replayed)?;
            outcomes(api, out, &mut client, &replayed.ids, wait).await
        }
        DeadLettersCommand::Discard { select, confirm } => {
            let bulk = select.ids.is_empty();
            let selection = select_letters(select)?;
            let mut request = api::DiscardDeadLettersRequest {
                ids: selection.ids,
                filter: selection.filter,
                all: selection.all,
                dry_run: true,
                expected_count: None,
            };
            let dry = {
                let (request, mut client) = (api.unary(request.clone()), client.clone());
                || async move { Ok(client.discard_dead_letters(request).await?.into_inner()) }
            };
            let counted =
                |d: &api::DiscardDeadLettersResponse| (d.discarded, d.matched, d.scope.clone());
            let Some(expected) = confirmation(
                out,
                &confirm,
                bulk,
                "discard",
                dry,
                counted,
                render::discarded,
            )
            .await?
            else {
                return Ok(());
            };
            request.dry_run = false;
            request.expected_count = expected;
            let discarded = client
                .discard_dead_letters(api.unary(request))
                .await?
                .into_inner();
            out.show(&discarded, render::discarded)
        }
        DeadLettersCommand::Outcomes { ids } => outcomes(api, out, &mut client, &ids, None).await,
    }
}

/// The count a replay or discard goes ahead with (`Some(None)`: unguarded, for ids named
/// without `--expect`), or `None` when it is not to go ahead: it was a dry run, or nothing
/// is selected. A selection by filter or `--all` is counted by `dry_run` first and
/// confirmed (`confirm_count`); `counted` reads (letters to act on, letters matching, scope)
/// from the dry run's answer.
async fn confirmation<M, F, Fut>(
    out: &Output,
    confirm: &Confirm,
    bulk: bool,
    action: &str,
    dry_run: F,
    counted: impl FnOnce(&M) -> (u32, u64, String),
    render: fn(&M) -> String,
) -> Result<Option<Option<u32>>, Failure>
where
    M: serde::Serialize,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<M, Failure>>,
{
    if !confirm.dry_run && (!bulk || confirm.expect.is_some()) {
        return Ok(Some(confirm.expect));
    }
    let dry = dry_run().await?;
    if confirm.dry_run {
        out.show(&dry, render)?;
        return Ok(None);
    }
    let (n, matched, scope) = counted(&dry);
    if n == 0 {
        out.note(&format!("nothing to {action}{}", render::within(&scope)));
        return Ok(None);
    }
    confirm_count(confirm, action, n, matched, &scope)?;
    Ok(Some(Some(n)))
}

/// Asks the person at the terminal whether `n` letters are to be acted on, unless --yes
/// said so already; without a terminal, a confirmation must be given as an argument.
fn confirm_count(
    confirm: &Confirm,
    action: &str,
    n: u32,
    matched: u64,
    scope: &str,
) -> Result<(), Failure> {
    if confirm.yes {
        return Ok(());
    }
    let more = if matched > u64::from(n) {
        format!(" (of {matched} matching; one call takes at most {n})")
    } else {
        String::new()
    };
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Failure::Usage(format!(
            "this would {action} {n} dead letter(s){more}{}; confirm with --yes or --expect {n}, \
             or see them first with --dry-run",
            render::within(scope)
        )));
    }
    eprint!(
        "{action} {n} dead letter(s){more}{}? [y/N] ",
        render::within(scope)
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin
        .read_line(&mut answer)
        .map_err(|e| Failure::Local(format!("stdin: {e}")))?;
    if matches!(answer.trim().to_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        eprintln!("nothing done");
        Err(Failure::Quiet(1))
    }
}

/// Asks for the outcomes of `ids`, a page of ids at a time; with `wait`, again until every
/// one is settled or the time is up. Prints them and a tally.
async fn outcomes(
    api: &Api,
    out: &Output,
    client: &mut DeadLetterServiceClient<Authed>,
    ids: &[String],
    wait: Option<Duration>,
) -> Result<(), Failure> {
    if ids.is_empty() {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + wait.unwrap_or_default();
    loop {
        let mut all = api::GetReplayOutcomesResponse::default();
        for chunk in ids.chunks(1000) {
            let request = api.unary(api::GetReplayOutcomesRequest {
                ids: chunk.to_vec(),
            });
            let page = client.get_replay_outcomes(request).await?.into_inner();
            all.outcomes.extend(page.outcomes);
            all.scope = page.scope;
        }
        let settled = all.outcomes.iter().all(|o| o.settled);
        if settled || tokio::time::Instant::now() >= deadline {
            out.show(&all, render::outcomes)?;
            out.note(&render::outcome_tally(&all.outcomes));
            if !settled && wait.is_some() {
                out.note(
                    "not every replay settled in time: ask again with `dead-letters outcomes ID…`",
                );
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn select_letters(select: Select) -> Result<request::Selection, Failure> {
    // Replay and discard act on pending letters only, so the state is not the caller's.
    let filter = request::dead_letter_filter(&select.filter, None).map_err(Failure::Usage)?;
    request::selection(select.ids, filter, select.all).map_err(Failure::Usage)
}

async fn list_dead_letters(
    api: &Api,
    out: &Output,
    client: &mut DeadLetterServiceClient<Authed>,
    mut request: api::ListDeadLettersRequest,
    all_pages: bool,
) -> Result<(), Failure> {
    let mut letters = Vec::new();
    loop {
        let page = client
            .list_dead_letters(api.unary(request.clone()))
            .await?
            .into_inner();
        if out.json {
            out.show(&page, |_| String::new())?;
        }
        letters.extend(page.dead_letters);
        let next = page.next_page_token;
        // A server handing out the same token again would keep this loop going forever.
        let more = all_pages && !next.is_empty() && next != request.page_token;
        if !more {
            if !out.json {
                print(render::dead_letters(&letters).as_bytes(), false)?;
            }
            out.note(&format!(
                "{} of {} shown{}",
                letters.len(),
                page.total,
                render::within(&page.scope)
            ));
            out.next_page(&next);
            return Ok(());
        }
        request.page_token = next;
    }
}

/// The body as it is, or with --json the whole message (body in base64). A file gets mode
/// 0600 from the start: it holds a citizen's personal data.
fn write_payload(
    payload: &api::DeadLetterPayload,
    json: bool,
    file: Option<&Path>,
) -> Result<(), Failure> {
    let mut bytes = if json {
        serde_json::to_vec(payload)
            .map_err(|e| Failure::Local(format!("cannot write the payload as JSON: {e}")))?
    } else {
        payload.body.clone()
    };
    if json {
        bytes.push(b'\n');
    }
    let Some(path) = file else {
        return print(&bytes, false);
    };
    let written = (|| {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(&bytes)?;
        f.sync_all()
    })();
    written.map_err(|e| Failure::Local(format!("--out {}: {e}", path.display())))?;
    eprintln!(
        "wrote {} bytes ({}) of dead letter {} to {}",
        payload.body.len(),
        render::clean(&payload.content_type),
        render::clean(&payload.id),
        path.display()
    );
    Ok(())
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
