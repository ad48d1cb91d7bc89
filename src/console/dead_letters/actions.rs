//! Replay and discard, one letter or many: the confirmation that says how many letters an
//! action touches (the service's dry run), the action with the confirmed count, and what
//! became of each replayed letter.

use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::super::Console;
use super::super::forms::{Fields, query};
use super::super::i18n::Texts;
use super::super::pages::{
    Chrome, PageRequest, changing_form, redirect, render, service_error, when,
};
use super::super::session::Session;
use super::{FilterForm, OUTCOMES_SHOWN};
use crate::admin::service::{Commit, Principal, ReplayFate, Selection, ServiceError};

/// What an operator asked to do with dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Replay,
    Discard,
}

/// The action, the letters and the destination a confirmation or a change names.
struct Request {
    action: Action,
    /// Ids selected one by one; empty: every pending letter the filter matches.
    ids: Vec<String>,
    form: FilterForm,
    to: Option<String>,
}

impl Request {
    fn of(f: &Fields) -> Result<Request, ServiceError> {
        let (action, all) = match f.get("action") {
            "replay" => (Action::Replay, false),
            "discard" => (Action::Discard, false),
            "replay-all" => (Action::Replay, true),
            "discard-all" => (Action::Discard, true),
            other => {
                return Err(ServiceError::invalid(
                    "action",
                    format!("{other:?} is not replay, discard, replay-all or discard-all"),
                ));
            }
        };
        let ids = if all { Vec::new() } else { f.all("id") };
        if !all && ids.is_empty() {
            return Err(ServiceError::invalid(
                "id",
                "no dead letter selected".to_owned(),
            ));
        }
        let to = Some(f.get("to").to_owned()).filter(|d| !d.is_empty() && action == Action::Replay);
        Ok(Request {
            action,
            ids,
            form: FilterForm::of(f),
            to,
        })
    }

    fn selection(&self) -> Result<Selection, ServiceError> {
        if self.ids.is_empty() {
            self.form.selection()
        } else {
            Ok(Selection::Ids(self.ids.clone()))
        }
    }
}

/// What a replay or discard would touch (a dry run), or did.
struct Touched {
    count: u64,
    ids: Vec<String>,
    skipped: usize,
    matched: u64,
}

async fn touch(
    console: &Console,
    who: &Principal,
    request: &Request,
    commit: Commit,
) -> Result<Touched, ServiceError> {
    let selection = request.selection()?;
    match request.action {
        Action::Replay => {
            let r = console
                .service
                .replay_dead_letters(who, &selection, request.to.as_deref(), commit)
                .await?;
            Ok(Touched {
                count: u64::from(r.replayed),
                ids: r.ids,
                skipped: r.skipped.len(),
                matched: r.matched,
            })
        }
        Action::Discard => {
            let r = console
                .service
                .discard_dead_letters(who, &selection, commit)
                .await?;
            Ok(Touched {
                count: r.discarded,
                ids: r.ids,
                skipped: 0,
                matched: r.matched,
            })
        }
    }
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    c: Chrome,
    t: &'static Texts,
    csrf: String,
    action: &'static str,
    question: String,
    count: u64,
    shown: Vec<String>,
    more: usize,
    skipped: usize,
    beyond: u64,
    ids: Vec<String>,
    hidden: Vec<(&'static str, String)>,
    to: String,
    back: String,
}

/// A bulk change's form: its fields, session and frame (see [`changing_form`]) and the
/// change it asks for.
fn bulk_form(
    console: &Console,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Fields, Session, Chrome, Request), Box<Response>> {
    let (f, session, c) = changing_form(console, headers, body, "/dead-letters")?;
    match Request::of(&f) {
        Ok(request) => Ok((f, session, c, request)),
        Err(e) => Err(Box::new(service_error(c, e))),
    }
}

/// The confirmation: a dry run says how many letters the change touches; the form sends
/// that number back, and the change is made only if it still holds.
pub async fn confirm(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, session, c, request) = match bulk_form(&console, &headers, &body) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let t = c.t;
    let touched = match touch(&console, &session.principal, &request, Commit::DryRun).await {
        Ok(touched) => touched,
        Err(e) => return service_error(c, e),
    };
    let (action, question) = match (request.action, &request.to) {
        (Action::Replay, None) => ("replay", t.confirm_replay.to_owned()),
        (Action::Replay, Some(to)) => ("replay", format!("{} {to}", t.confirm_replay_to)),
        (Action::Discard, _) => ("discard", t.confirm_discard.to_owned()),
    };
    const SHOWN: usize = 20;
    let back = format!("/dead-letters?{}", request.form.query());
    render(&ConfirmPage {
        t,
        csrf: session.csrf.clone(),
        action: if request.ids.is_empty() {
            match action {
                "replay" => "replay-all",
                _ => "discard-all",
            }
        } else {
            action
        },
        question,
        count: touched.count,
        shown: touched.ids.iter().take(SHOWN).cloned().collect(),
        more: touched.ids.len().saturating_sub(SHOWN),
        skipped: touched.skipped,
        beyond: touched
            .matched
            .saturating_sub(touched.count + touched.skipped as u64),
        ids: request.ids.clone(),
        hidden: request.form.hidden(),
        to: request.to.clone().unwrap_or_default(),
        back,
        c,
    })
}

/// The confirmed change: made only if it touches the number confirmed.
pub async fn apply(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (f, session, c, request) = match bulk_form(&console, &headers, &body) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let Ok(expected) = f.get("expected").parse::<u64>() else {
        let e = ServiceError::invalid("expected", "is not the number confirmed".to_owned());
        return service_error(c, e);
    };
    let touched = match touch(
        &console,
        &session.principal,
        &request,
        Commit::IfCount(expected),
    )
    .await
    {
        Ok(touched) => touched,
        Err(e) => return service_error(c, e),
    };
    let to = match request.action {
        Action::Replay => format!(
            "/dead-letters/outcomes?{}",
            query(
                touched
                    .ids
                    .iter()
                    .take(OUTCOMES_SHOWN)
                    .map(|id| ("id", id.as_str()))
            )
        ),
        Action::Discard => format!(
            "/dead-letters?{}",
            query([
                ("done", "discarded"),
                ("n", touched.count.to_string().as_str())
            ])
        ),
    };
    redirect(&to)
}

struct OutcomeRow {
    pub id: String,
    pub submission: String,
    pub reason: String,
    pub class: &'static str,
    pub fate: String,
    pub settled: bool,
}

#[derive(Template)]
#[template(path = "outcomes.html")]
struct OutcomesPage {
    c: Chrome,
    t: &'static Texts,
    rows: Vec<OutcomeRow>,
    live: String,
    settled: bool,
}

#[derive(Template)]
#[template(path = "outcomes_live.html")]
struct OutcomesLive {
    t: &'static Texts,
    rows: Vec<OutcomeRow>,
    settled: bool,
}

async fn outcome_rows(
    console: &Console,
    who: &Principal,
    ids: &[String],
    t: &Texts,
) -> Result<Vec<OutcomeRow>, ServiceError> {
    let outcomes = console.service.replay_outcomes(who, ids).await?;
    Ok(outcomes
        .outcomes
        .into_iter()
        .map(|o| {
            let settled = o.fate.settled();
            let (class, fate) = match o.fate {
                ReplayFate::NotReplayed => ("warn", t.fate_not_replayed.to_owned()),
                ReplayFate::Discarded => ("warn", t.fate_discarded.to_owned()),
                ReplayFate::Waiting => ("warn", t.fate_waiting.to_owned()),
                ReplayFate::Delivered { destination, at } => (
                    "ok",
                    format!("{} {destination} ({})", t.fate_delivered, when(at)),
                ),
                ReplayFate::Duplicate { destination, at } => (
                    "ok",
                    format!("{} {destination} ({})", t.fate_duplicate, when(at)),
                ),
                ReplayFate::Retrying {
                    destination,
                    detail,
                    at,
                } => (
                    "warn",
                    format!("{} {destination}: {detail} ({})", t.fate_retrying, when(at)),
                ),
                ReplayFate::DeadLettered {
                    reason, detail, at, ..
                } => (
                    "bad",
                    format!("{} {reason}: {detail} ({})", t.fate_dead_lettered, when(at)),
                ),
            };
            OutcomeRow {
                id: o.letter.record.id.to_string(),
                submission: o.letter.record.submission_id,
                reason: o.letter.record.reason,
                class,
                fate,
                settled,
            }
        })
        .collect())
}

pub async fn outcomes(State(console): State<Arc<Console>>, page: PageRequest) -> Response {
    let PageRequest { session, f, .. } = &page;
    let q = &page.raw;
    let ids = f.all("id");
    let mut c = page.chrome("/dead-letters");
    c.back = format!("/dead-letters/outcomes?{q}");
    let t = c.t;
    match outcome_rows(&console, &session.principal, &ids, t).await {
        Ok(rows) => render(&OutcomesPage {
            t,
            settled: rows.iter().all(|r| r.settled),
            rows,
            live: format!("/dead-letters/outcomes/live?{q}"),
            c,
        }),
        Err(e) => service_error(c, e),
    }
}

/// The outcomes' table, which their page fetches until every replay has settled.
pub async fn outcomes_live(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let Some(session) = console.sessions.find(&headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let ids = Fields::parse(q.unwrap_or_default().as_bytes()).all("id");
    let t = super::super::i18n::Lang::of(&headers).texts();
    match outcome_rows(&console, &session.principal, &ids, t).await {
        Ok(rows) => render(&OutcomesLive {
            t,
            settled: rows.iter().all(|r| r.settled),
            rows,
        }),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}
