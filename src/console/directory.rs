//! The routing directory: destinations and routes with their names, a route added or
//! pointed elsewhere with the directory version the page showed (a change made meanwhile
//! by someone else is refused, not overwritten), as the gRPC API does it.

use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::Console;
use super::forms::{Fields, query};
use super::i18n::Texts;
use super::pages::when;
use super::pages::{Chrome, PageRequest, changing_form, redirect, render, service_error};
use crate::admin::service::{
    DestinationView, Principal, Right, RouteFilter, RouteView, Service, ServiceError,
};
use crate::model::RouteSpec;
use crate::municipalities::UnitKind;
use crate::routing::live::EntrySource;
use crate::store::AuditFilter;

pub struct DestinationRow {
    pub id: String,
    pub name: String,
    pub land: String,
    pub broker: String,
    pub exchange: String,
    pub from_file: bool,
}

struct RouteRow {
    pub service: String,
    pub service_name: String,
    pub region: String,
    pub region_name: String,
    pub destination: String,
    pub destination_name: String,
    pub from_file: bool,
}

/// Regions a search lists at most.
const REGIONS_SHOWN: usize = 25;
/// Audit rows read, and shown at most.
const AUDIT_READ: u32 = 200;
const AUDIT_SHOWN: usize = 25;

#[derive(Template)]
#[template(path = "routing.html")]
struct RoutingPage {
    c: Chrome,
    t: &'static Texts,
    q: String,
    version: i64,
    destinations: Vec<DestinationRow>,
    routes: Vec<RouteRow>,
    can_change: bool,
    notice: Option<String>,
    regions: Vec<RegionRow>,
    audit: Vec<AuditRow>,
    /// The route form filled in to change this route.
    edit: (String, String, String),
}

/// Whether `row` matches the search `q` (any part of an id, name, key or region code).
fn matches(q: &str, parts: &[&str]) -> bool {
    let q = q.to_lowercase();
    q.is_empty() || parts.iter().any(|p| p.to_lowercase().contains(&q))
}

pub async fn page(State(console): State<Arc<Console>>, page: PageRequest) -> Response {
    let PageRequest { session, f, .. } = &page;
    let q = f.get("q").to_owned();
    let mut c = page.chrome("/routing");
    c.back = format!("/routing?{}", query([("q", q.as_str())]));
    let t = c.t;
    let who = &session.principal;
    let service = &console.service;
    let listed = service.directory_version(who).and_then(|version| {
        Ok((
            version,
            service.list_destinations(who)?,
            service.list_routes(who, &RouteFilter::default())?,
        ))
    });
    let (version, destinations, routes) = match listed {
        Ok(listed) => listed,
        Err(e) => return service_error(c, e),
    };
    let destinations = destination_rows(destinations, &q);
    let routes = route_rows(routes, &q);
    let notice = match f.get("done") {
        "route" => Some(t.route_saved.to_owned()),
        "deleted" => Some(t.route_deleted.to_owned()),
        _ => None,
    };
    let regions = region_rows(&console, who, &q);
    let audit = audit_rows(&console, who, &q).await;
    let edit = (
        f.get("service").to_owned(),
        f.get("region").to_owned(),
        f.get("destination").to_owned(),
    );
    render(&RoutingPage {
        regions,
        audit,
        edit,
        t,
        q,
        version,
        destinations,
        routes,
        can_change: who.require(Right::Change).is_ok(),
        notice,
        c,
    })
}

/// The destinations whose id or name contains `q`.
fn destination_rows(destinations: Vec<DestinationView>, q: &str) -> Vec<DestinationRow> {
    destinations
        .into_iter()
        .filter(|d| matches(q, &[&d.destination.id, &d.destination.name]))
        .map(|d| DestinationRow {
            id: d.destination.id.clone(),
            name: d.destination.name.clone(),
            land: d.destination.land.to_string(),
            broker: d.broker.clone(),
            exchange: d.destination.exchange.clone(),
            from_file: d.source == EntrySource::Config,
        })
        .collect()
}

/// The routes with `q` in their service, region or destination, by key or by name.
fn route_rows(routes: Vec<RouteView>, q: &str) -> Vec<RouteRow> {
    routes
        .into_iter()
        .map(|r| RouteRow {
            service: r.service.to_string(),
            service_name: r.service_name,
            region: r.region.to_string(),
            region_name: r.region_name,
            destination: r.destination,
            destination_name: r.destination_name,
            from_file: r.source == EntrySource::Config,
        })
        .filter(|r| {
            matches(
                q,
                &[
                    &r.service,
                    &r.service_name,
                    &r.region,
                    &r.region_name,
                    &r.destination,
                    &r.destination_name,
                ],
            )
        })
        .collect()
}

/// The directory version the form was shown with, which the change is made on.
fn shown_version(f: &Fields) -> Result<i64, ServiceError> {
    f.get("version")
        .parse::<i64>()
        .map_err(|_| ServiceError::invalid("version", "is not the directory version shown"))
}

/// Adds a route, or points an existing one elsewhere.
pub async fn put_route(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    change_route(&console, &headers, &body, "/routing?done=route", put).await
}

async fn put(
    service: &Service,
    who: &Principal,
    f: &Fields,
    version: i64,
) -> Result<(), ServiceError> {
    let spec = RouteSpec {
        service: f.get("service").to_owned(),
        region: f.get("region").to_owned(),
        destination: f.get("destination").to_owned(),
    };
    let create = f.get("mode") != "update";
    service.put_route(who, spec, version, create).await?;
    Ok(())
}

/// Deletes a route made through the API or the console.
pub async fn delete_route(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    change_route(&console, &headers, &body, "/routing?done=deleted", delete).await
}

async fn delete(
    service: &Service,
    who: &Principal,
    f: &Fields,
    version: i64,
) -> Result<(), ServiceError> {
    service
        .delete_route(who, f.get("service"), f.get("region"), version)
        .await
}

/// A route change from the routing page, made on the directory version the page showed;
/// then back to the page (`done`), or the service's error as a page.
async fn change_route(
    console: &Console,
    headers: &HeaderMap,
    body: &[u8],
    done: &str,
    change: impl AsyncFnOnce(&Service, &Principal, &Fields, i64) -> Result<(), ServiceError>,
) -> Response {
    let (f, session, c) = match changing_form(console, headers, body, "/routing") {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let changed = match shown_version(&f) {
        Ok(version) => change(&console.service, &session.principal, &f, version).await,
        Err(e) => Err(e),
    };
    match changed {
        Ok(()) => redirect(done),
        Err(e) => service_error(c, e),
    }
}

struct RegionRow {
    pub code: String,
    pub name: String,
    pub kind: &'static str,
    /// A municipality: "where would it go?" can start here.
    pub municipality: bool,
}

fn region_rows(console: &Console, who: &Principal, q: &str) -> Vec<RegionRow> {
    console
        .service
        .find_regions(who, q, REGIONS_SHOWN)
        .unwrap_or_default()
        .into_iter()
        .map(|r| RegionRow {
            code: r.prefix.to_string(),
            name: r.name,
            kind: r.kind.name(),
            municipality: matches!(r.kind, UnitKind::Gemeinde { .. }),
        })
        .collect()
}

struct AuditRow {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub object: String,
    pub before: String,
    pub after: String,
}

async fn audit_rows(console: &Console, who: &Principal, q: &str) -> Vec<AuditRow> {
    let page = console
        .service
        .list_audit(who, AuditFilter::default(), "", AUDIT_READ)
        .await;
    page.map(|p| p.entries)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| matches(q, &[&e.record.object, &e.record.actor, &e.record.action]))
        .take(AUDIT_SHOWN)
        .map(|e| AuditRow {
            at: when(e.at),
            actor: e.record.actor,
            action: e.record.action,
            object: e.record.object,
            before: e.record.before.unwrap_or_default(),
            after: e.record.after.unwrap_or_default(),
        })
        .collect()
}

struct StepRow {
    pub service: String,
    pub region: String,
    pub unit: String,
    pub found: Option<String>,
}

#[derive(Template)]
#[template(path = "explain.html")]
struct ExplainPage {
    c: Chrome,
    t: &'static Texts,
    service: String,
    region: String,
    heading: Option<String>,
    steps: Vec<StepRow>,
    result: Option<String>,
    problem: Option<String>,
}

/// "Where would it go?": the jurisdiction walk for a service and a municipality, step by
/// step, sending nothing.
pub async fn explain(State(console): State<Arc<Console>>, page: PageRequest) -> Response {
    let PageRequest { session, f, .. } = &page;
    let (service, region) = (f.get("service").to_owned(), f.get("region").to_owned());
    let mut c = page.chrome("/routing");
    c.back = format!(
        "/routing/explain?{}",
        query([("service", service.as_str()), ("region", region.as_str())])
    );
    let t = c.t;
    let mut page = ExplainPage {
        t,
        service: service.clone(),
        region: region.clone(),
        heading: None,
        steps: Vec::new(),
        result: None,
        problem: None,
        c,
    };
    if service.is_empty() || region.is_empty() {
        return render(&page);
    }
    let resolution = match console
        .service
        .resolve(&session.principal, &service, &region)
    {
        Ok(r) => r,
        Err(e) => {
            page.problem = Some(e.to_string());
            return render(&page);
        }
    };
    page.heading = Some(format!(
        "{} {}{} · {} {} ({})",
        t.service,
        resolution.service,
        if resolution.service_name.is_empty() {
            String::new()
        } else {
            format!(" ({})", resolution.service_name)
        },
        t.region,
        resolution.ars,
        resolution.region_name
    ));
    page.steps = resolution
        .explanation
        .steps
        .iter()
        .map(|s| StepRow {
            service: s.service.to_string(),
            region: s.region.to_string(),
            unit: s.unit_name.clone().unwrap_or_default(),
            found: s
                .matched
                .as_ref()
                .map(|m| format!("{} {}", m.service, m.region)),
        })
        .collect();
    page.result = resolution
        .destination
        .map(|d| format!("{} – {}", d.destination.id, d.destination.name));
    render(&page)
}
