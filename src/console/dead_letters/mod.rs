//! Dead letters: browse with filters and grouped counts, a letter's details (never its
//! payload), replay (afresh or to a named destination) and discard, one or many, each
//! after a confirmation that says how many letters it touches, and what became of each
//! replayed letter. The counts, the dry run behind the confirmation, the check that the
//! confirmed number still holds, and the outcomes are the service layer's, as for the
//! gRPC API and the CLI.

mod actions;

use std::sync::Arc;
use std::time::SystemTime;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use super::Console;
use super::forms::{Fields, query};
use super::i18n::Texts;
use super::pages::{
    Chrome, PageRequest, SignedIn, changing_form, destination_choices, platform_choices, render,
    service_error, when,
};
use crate::admin::service::{Right, Selection, ServiceError};
use crate::outcome::Reason;
use crate::store::{DeadLetter, DeadLetterFilter, DeadLetterState};

pub use actions::{apply, confirm, outcomes, outcomes_live};

/// Letters a page of the list shows.
const PAGE: u32 = 50;
/// Replays whose outcome the page after a replay follows at most.
const OUTCOMES_SHOWN: usize = 100;

/// The list's filter as its form carries it.
#[derive(Debug, Clone, Default)]
pub struct FilterForm {
    pub reason: String,
    pub platform: String,
    pub destination: String,
    pub since: String,
    pub until: String,
    /// "pending" (the default), "replayed", "discarded" or "all".
    pub state: String,
}

impl FilterForm {
    pub fn of(f: &Fields) -> FilterForm {
        let state = match f.get("state") {
            "" => "pending",
            s => s,
        };
        FilterForm {
            reason: f.get("reason").to_owned(),
            platform: f.get("platform").to_owned(),
            destination: f.get("destination").to_owned(),
            since: f.get("since").to_owned(),
            until: f.get("until").to_owned(),
            state: state.to_owned(),
        }
    }

    fn pairs(&self) -> [(&'static str, &str); 6] {
        [
            ("reason", &self.reason),
            ("platform", &self.platform),
            ("destination", &self.destination),
            ("since", &self.since),
            ("until", &self.until),
            ("state", &self.state),
        ]
    }

    /// Whether `value` is what the filter has for `key`, for the form's selected options.
    fn picked(&self, key: &str, value: &str) -> bool {
        self.pairs().iter().any(|(k, v)| *k == key && *v == value)
    }

    /// The filter as a query string, for links.
    pub fn query(&self) -> String {
        query(self.pairs())
    }

    /// The filter with one criterion replaced, as a link's query.
    pub fn with(&self, key: &str, value: &str) -> String {
        query(
            self.pairs()
                .into_iter()
                .map(|(k, v)| if k == key { (k, value) } else { (k, v) }),
        )
    }

    /// Hidden fields that carry the filter through a form.
    pub fn hidden(&self) -> Vec<(&'static str, String)> {
        self.pairs()
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k, v.to_owned()))
            .collect()
    }

    fn criteria(&self) -> bool {
        [
            &self.reason,
            &self.platform,
            &self.destination,
            &self.since,
            &self.until,
        ]
        .iter()
        .any(|v| !v.is_empty())
    }

    pub fn filter(&self) -> Result<DeadLetterFilter, ServiceError> {
        let text = |v: &str| (!v.is_empty()).then(|| v.to_owned());
        let state = match self.state.as_str() {
            "all" => None,
            s => Some(
                s.parse::<DeadLetterState>()
                    .map_err(|e| ServiceError::invalid("state", e.to_string()))?,
            ),
        };
        Ok(DeadLetterFilter {
            reason: text(&self.reason),
            platform: text(&self.platform),
            destination: text(&self.destination),
            since: moment("since", &self.since)?,
            until: moment("until", &self.until)?,
            state,
            ..DeadLetterFilter::default()
        })
    }

    /// Which pending letters a replay or discard of "all that match" takes.
    fn selection(&self) -> Result<Selection, ServiceError> {
        if !self.criteria() {
            return Ok(Selection::All);
        }
        let mut filter = self.filter()?;
        filter.state = Some(DeadLetterState::Pending);
        Ok(Selection::Matching(filter))
    }
}

/// A moment as a `datetime-local` field sends it (`2026-12-06T17:05`, UTC), or RFC 3339.
fn moment(field: &str, value: &str) -> Result<Option<SystemTime>, ServiceError> {
    if value.is_empty() {
        return Ok(None);
    }
    let full = if value.len() == 16 {
        format!("{value}:00Z")
    } else {
        value.to_owned()
    };
    humantime::parse_rfc3339_weak(full.trim_end_matches('Z'))
        .map(Some)
        .map_err(|_| {
            ServiceError::invalid(
                field,
                "is not a moment like 2026-12-06T17:05 (UTC)".to_owned(),
            )
        })
}

struct LetterRow {
    pub id: String,
    pub at: String,
    pub reason: String,
    pub field: String,
    pub platform: String,
    pub destination: String,
    pub service: String,
    pub ars: String,
    pub submission: String,
    pub state: &'static str,
    pub replays: u32,
}

fn row(d: &DeadLetter) -> LetterRow {
    let r = &d.record;
    LetterRow {
        id: r.id.to_string(),
        at: when(r.dead_lettered_at),
        reason: r.reason.clone(),
        field: r.field.clone(),
        platform: r.platform.clone(),
        destination: r.destination.clone(),
        service: r.service.clone(),
        ars: r.ars.clone(),
        submission: r.submission_id.clone(),
        state: d.state.as_str(),
        replays: d.replays,
    }
}

/// Grouped counts: (value, count, link to the list filtered by it).
struct Group {
    pub caption: &'static str,
    pub rows: Vec<(String, u64, String)>,
}

#[derive(Template)]
#[template(path = "dead_letters.html")]
struct ListPage {
    c: Chrome,
    t: &'static Texts,
    form: FilterForm,
    reasons: Vec<&'static str>,
    platforms: Vec<String>,
    destinations: Vec<(String, String)>,
    total: u64,
    groups: Vec<Group>,
    letters: Vec<LetterRow>,
    next: Option<String>,
    can_change: bool,
    notice: Option<String>,
}

pub async fn list(State(console): State<Arc<Console>>, page: PageRequest) -> Response {
    let PageRequest { session, f, .. } = &page;
    let form = FilterForm::of(f);
    let mut c = page.chrome("/dead-letters");
    c.back = format!("/dead-letters?{}", form.query());
    let t = c.t;
    let who = &session.principal;
    let service = &console.service;
    let filter = match form.filter() {
        Ok(filter) => filter,
        Err(e) => return service_error(c, e),
    };
    let summary = match service.summarize_dead_letters(who, filter.clone()).await {
        Ok(s) => s,
        Err(e) => return service_error(c, e),
    };
    let page = match service
        .list_dead_letters(who, filter, f.get("page"), PAGE)
        .await
    {
        Ok(p) => p,
        Err(e) => return service_error(c, e),
    };
    let destinations = destination_choices(&console, who);
    let group = |caption, key: &'static str, rows: Vec<(String, u64)>| Group {
        caption,
        rows: rows
            .into_iter()
            .map(|(value, n)| {
                let link = format!("/dead-letters?{}", form.with(key, &value));
                (value, n, link)
            })
            .collect(),
    };
    let groups = vec![
        group(t.by_reason, "reason", summary.by_reason),
        group(t.by_platform, "platform", summary.by_platform),
        group(t.by_destination, "destination", summary.by_destination),
    ];
    let next = (!page.next_page_token.is_empty()).then(|| {
        format!(
            "/dead-letters?{}&{}",
            form.query(),
            query([("page", page.next_page_token.as_str())])
        )
    });
    let notice = match (f.get("done"), f.get("n")) {
        ("discarded", n) => Some(format!("{} {n}", t.discarded_notice)),
        _ => None,
    };
    render(&ListPage {
        t,
        can_change: who.require(Right::Change).is_ok(),
        platforms: platform_choices(&console, who).await,
        reasons: Reason::ALL.iter().map(|r| r.code()).collect(),
        destinations,
        total: summary.total,
        groups,
        letters: page.letters.iter().map(row).collect(),
        next,
        notice,
        form,
        c,
    })
}

struct TraceRow {
    pub at: String,
    pub event: String,
    pub platform: String,
    pub destination: String,
    pub detail: String,
}

fn trace_rows(events: &[crate::store::TraceEvent]) -> Vec<TraceRow> {
    events
        .iter()
        .map(|e| TraceRow {
            at: when(e.at),
            event: e.event.clone(),
            platform: e.platform.clone(),
            destination: e.destination.clone(),
            detail: e.detail.clone(),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "dead_letter.html")]
struct DetailPage {
    c: Chrome,
    t: &'static Texts,
    d: LetterRow,
    detail: String,
    headers: String,
    content_type: String,
    body_bytes: u64,
    changed: Option<String>,
    trace: Vec<TraceRow>,
    can_change: bool,
    can_read_payload: bool,
    pending: bool,
    destinations: Vec<(String, String)>,
}

pub async fn detail(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut c = Chrome::new(&headers, Some(&session), "/dead-letters");
    c.back = format!("/dead-letters/{id}");
    let t = c.t;
    let who = &session.principal;
    let service = &console.service;
    let letter = match service.dead_letter(who, &id).await {
        Ok(l) => l,
        Err(e) => return service_error(c, e),
    };
    let trace = if letter.record.submission_id.is_empty() {
        Vec::new()
    } else {
        service
            .trace(who, &letter.record.submission_id)
            .await
            .map(|events| trace_rows(&events))
            .unwrap_or_default()
    };
    let destinations = destination_choices(&console, who);
    render(&DetailPage {
        t,
        detail: letter.record.detail.clone(),
        headers: letter.record.headers.clone(),
        content_type: letter.record.content_type.clone(),
        body_bytes: letter.body_bytes,
        changed: letter
            .state_changed_at
            .map(|at| format!("{} ({})", when(at), letter.state_changed_by)),
        can_change: who.require(Right::Change).is_ok(),
        can_read_payload: who.require(Right::Payload).is_ok(),
        pending: letter.state == DeadLetterState::Pending,
        d: row(&letter),
        trace,
        destinations,
        c,
    })
}

#[derive(Template)]
#[template(path = "trace.html")]
struct TracePage {
    c: Chrome,
    t: &'static Texts,
    id: String,
    trace: Vec<TraceRow>,
    problem: Option<String>,
}

/// A submission's timeline: paste its id.
pub async fn trace(State(console): State<Arc<Console>>, page: PageRequest) -> Response {
    let PageRequest { session, f, .. } = &page;
    let id = f.get("id").to_owned();
    let mut c = page.chrome("/trace");
    c.back = format!("/trace?{}", query([("id", id.as_str())]));
    let t = c.t;
    let (trace, problem) = if id.is_empty() {
        (Vec::new(), None)
    } else {
        match console.service.trace(&session.principal, &id).await {
            Ok(events) => (trace_rows(&events), None),
            Err(ServiceError::NotFound(m)) => (Vec::new(), Some(m)),
            Err(e) => return service_error(c, e),
        }
    };
    render(&TracePage {
        c,
        t,
        id,
        trace,
        problem,
    })
}

#[derive(Template)]
#[template(path = "payload.html")]
struct PayloadPage {
    c: Chrome,
    t: &'static Texts,
    id: String,
}

/// The form that asks for a justification before a payload is read.
pub async fn payload_form(
    SignedIn(session): SignedIn,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut c = Chrome::new(&headers, Some(&session), "/dead-letters");
    c.back = format!("/dead-letters/{id}/payload");
    if let Err(e) = session.principal.require(Right::Payload) {
        return service_error(c, e);
    }
    let t = c.t;
    render(&PayloadPage { c, t, id })
}

/// A letter's payload as a download, never as a page: for the payload role, with the
/// justification the service writes to the audit log before the content leaves.
pub async fn payload(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (f, session, c) = match changing_form(&console, &headers, &body, "/dead-letters") {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    match console
        .service
        .dead_letter_payload(&session.principal, &id, f.get("justification"))
        .await
    {
        Ok((id, message)) => (
            [
                (CONTENT_TYPE, "application/octet-stream".to_owned()),
                (
                    CONTENT_DISPOSITION,
                    format!("attachment; filename=\"dead-letter-{id}.bin\""),
                ),
            ],
            message.body,
        )
            .into_response(),
        Err(e) => service_error(c, e),
    }
}
