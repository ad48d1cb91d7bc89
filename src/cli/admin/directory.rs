//! The directory's commands: destinations, routes, services and the audit log.

use std::time::SystemTime;

use clap::{Args, Subcommand};
use ozg_gateway::wire::admin as api;

use super::connect::Failure;
use super::request::{self, DestinationChanges, NewDestination};
use super::{Api, Output, Page, render};

#[derive(Subcommand)]
pub(super) enum DestinationsCommand {
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
pub(super) enum RoutesCommand {
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
    Create(RouteArgs),
    /// Point the route for SERVICE and REGION at another DESTINATION.
    Update(RouteArgs),
    /// Remove a route from the store.
    Delete { service: String, region: String },
}

/// A route as the command line gives it.
#[derive(Args)]
pub(super) struct RouteArgs {
    service: String,
    region: String,
    destination: String,
}

impl From<RouteArgs> for api::Route {
    fn from(r: RouteArgs) -> api::Route {
        api::Route {
            service: r.service,
            region: r.region,
            destination: r.destination,
            ..Default::default()
        }
    }
}

#[derive(Subcommand)]
pub(super) enum ServicesCommand {
    /// Every service in the catalogue.
    List,
    /// Add or rename a service.
    Put { key: String, name: String },
    /// Remove a service from the store.
    Delete { key: String },
}

#[derive(Args)]
pub(super) struct AuditArgs {
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

pub(super) async fn destinations(
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

pub(super) async fn routes(api: &Api, out: &Output, command: RoutesCommand) -> Result<(), Failure> {
    let mut client = api.directory();
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
        RoutesCommand::Create(route) => {
            let route = Some(route.into());
            let request = api.unary(api::CreateRouteRequest {
                route,
                ..Default::default()
            });
            client.create_route(request).await?
        }
        RoutesCommand::Update(route) => {
            let route = Some(route.into());
            let request = api.unary(api::UpdateRouteRequest {
                route,
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

pub(super) async fn services(
    api: &Api,
    out: &Output,
    command: ServicesCommand,
) -> Result<(), Failure> {
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

pub(super) async fn audit(api: &Api, out: &Output, args: AuditArgs) -> Result<(), Failure> {
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
