//! The routing directory: destinations and routes with their names, a route added or
//! pointed elsewhere with the directory version the page showed (a change made meanwhile
//! by someone else is refused, not overwritten), as the gRPC API does it.

use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::Console;
use super::forms::{Fields, query};
use super::i18n::Texts;
use super::pages::{Chrome, SignedIn, changing, render, service_error};
use crate::admin::service::{Right, RouteFilter, ServiceError};
use crate::model::RouteSpec;
use crate::routing::live::EntrySource;

pub struct DestinationRow {
    pub id: String,
    pub name: String,
    pub land: String,
    pub broker: String,
    pub exchange: String,
    pub from_file: bool,
}

pub struct RouteRow {
    pub service: String,
    pub service_name: String,
    pub region: String,
    pub region_name: String,
    pub destination: String,
    pub destination_name: String,
    pub from_file: bool,
}

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
}

/// Whether `row` matches the search `q` (any part of an id, name, key or region code).
fn matches(q: &str, parts: &[&str]) -> bool {
    let q = q.to_lowercase();
    q.is_empty() || parts.iter().any(|p| p.to_lowercase().contains(&q))
}

pub async fn page(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let f = Fields::parse(raw.unwrap_or_default().as_bytes());
    let q = f.get("q").to_owned();
    let mut c = Chrome::new(&headers, Some(&session), "/routing");
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
    let destinations = destinations
        .into_iter()
        .filter(|d| matches(&q, &[&d.destination.id, &d.destination.name]))
        .map(|d| DestinationRow {
            id: d.destination.id.clone(),
            name: d.destination.name.clone(),
            land: d.destination.land.to_string(),
            broker: d.broker.clone(),
            exchange: d.destination.exchange.clone(),
            from_file: d.source == EntrySource::Config,
        })
        .collect();
    let routes = routes
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
                &q,
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
        .collect();
    let notice = (f.get("done") == "route").then(|| t.route_saved.to_owned());
    render(&RoutingPage {
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

/// Adds a route, or points an existing one elsewhere.
pub async fn put_route(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = Fields::parse(&body);
    let session = match changing(&console, &headers, f.get("csrf"), "/routing") {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    let c = Chrome::new(&headers, Some(&session), "/routing");
    let Ok(version) = f.get("version").parse::<i64>() else {
        let e = ServiceError::invalid("version", "is not the directory version shown".to_owned());
        return service_error(c, e);
    };
    let spec = RouteSpec {
        service: f.get("service").to_owned(),
        region: f.get("region").to_owned(),
        destination: f.get("destination").to_owned(),
    };
    let create = f.get("mode") != "update";
    match console
        .service
        .put_route(&session.principal, spec, version, create)
        .await
    {
        Ok(_) => (
            StatusCode::SEE_OTHER,
            [(LOCATION, "/routing?done=route".to_owned())],
        )
            .into_response(),
        Err(e) => service_error(c, e),
    }
}
