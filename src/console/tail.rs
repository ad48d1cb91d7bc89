//! The live tail of routing outcomes (delivered, duplicate, retrying, requeued,
//! dead-lettered) in the session's scope, narrowed by platform or destination, as
//! server-sent events: the service's `watch`, which the gRPC API streams too.

use std::convert::Infallible;
use std::sync::Arc;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};

use super::Console;
use super::forms::{Fields, query};
use super::i18n::Texts;
use super::pages::{
    Chrome, PageRequest, destination_choices, platform_choices, render, service_error, when,
};
use crate::admin::service::WatchFilter;

#[derive(Template)]
#[template(path = "tail.html")]
struct TailPage {
    c: Chrome,
    t: &'static Texts,
    platform: String,
    destination: String,
    platforms: Vec<String>,
    destinations: Vec<(String, String)>,
    events: String,
}

fn filter(f: &Fields) -> WatchFilter {
    let some = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    WatchFilter {
        platform: some(f.get("platform")),
        destination: some(f.get("destination")),
    }
}

pub async fn page(State(console): State<Arc<Console>>, page: PageRequest) -> Response {
    let PageRequest { session, f, .. } = &page;
    let (platform, destination) = (
        f.get("platform").to_owned(),
        f.get("destination").to_owned(),
    );
    let pairs = [
        ("platform", platform.as_str()),
        ("destination", destination.as_str()),
    ];
    let mut c = page.chrome("/tail");
    c.back = format!("/tail?{}", query(pairs));
    let t = c.t;
    let who = &session.principal;
    // Refused here already (an unknown platform, a missing role), not in the stream.
    if let Err(e) = console.service.watch(who, filter(f)) {
        return service_error(c, e);
    }
    let platforms = platform_choices(&console, who).await;
    let destinations = destination_choices(&console, who);
    render(&TailPage {
        t,
        events: format!("/tail/events?{}", query(pairs)),
        platform,
        destination,
        platforms,
        destinations,
        c,
    })
}

/// The events as they happen, until the browser goes away or the gateway stops.
pub async fn events(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let Some(session) = console.sessions.find(&headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let f = Fields::parse(raw.unwrap_or_default().as_bytes());
    let watch = match console.service.watch(&session.principal, filter(&f)) {
        Ok(w) => w,
        Err(e) => return (StatusCode::FORBIDDEN, e.to_string()).into_response(),
    };
    let stop = console.stop.clone();
    let events = stream::unfold(watch, |mut watch| async move {
        let watched = watch.next().await?;
        let e = &watched.event;
        let data = serde_json::json!({
            "at": when(e.at),
            "submission": e.submission_id,
            "platform": e.platform,
            "destination": e.destination,
            "outcome": e.outcome,
            "reason": e.reason,
            "missed": watched.missed,
            "lagged": watched.lagged,
        });
        Some((
            Ok::<Event, Infallible>(Event::default().data(data.to_string())),
            watch,
        ))
    })
    .take_until(stop.cancelled_owned());
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
