//! The console's pages: login and logout, the overview. Each handler finds the session,
//! calls the service layer as the session's principal, and renders a template; what the
//! principal may see or do is the service's to decide, as for the gRPC API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use askama::Template;
use axum::extract::{ConnectInfo, Form, FromRequestParts, Query, State};
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::Console;
use super::forms::Fields;
use super::i18n::{self, Lang, Texts};
use super::session::{self, Session};
use crate::activity::{ConsumerState, Rates};
use crate::admin::service::{DestinationStats, Overview, PlatformStats, Principal, ServiceError};
use crate::outcome::Reason;
use crate::store::{DeadLetterFilter, DeadLetterState};

/// How often the overview refreshes itself.
const REFRESH: Duration = Duration::from_secs(2);
/// Overdue submissions the overview lists at most.
const OVERDUE_SHOWN: u32 = 20;

/// What every page's frame shows: language, the signed-in operator, where it is.
pub struct Chrome {
    pub lang: Lang,
    pub t: &'static Texts,
    pub user: Option<UserView>,
    /// The path of this page, for the navigation and the language switch.
    pub page: &'static str,
    pub back: String,
}

pub struct UserView {
    pub name: String,
    pub roles: String,
    pub scope: String,
    pub csrf: String,
}

impl Chrome {
    pub fn new(headers: &HeaderMap, session: Option<&Session>, page: &'static str) -> Chrome {
        let lang = Lang::of(headers);
        Chrome {
            lang,
            t: lang.texts(),
            user: session.map(|s| UserView {
                name: s.principal.name.clone(),
                roles: s
                    .principal
                    .roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                scope: scope_text(&s.principal, lang.texts()),
                csrf: s.csrf.clone(),
            }),
            page,
            back: page.to_owned(),
        }
    }

    /// The session's CSRF token, for the forms of the page.
    pub fn csrf(&self) -> &str {
        self.user.as_ref().map_or("", |u| u.csrf.as_str())
    }

    pub fn current(&self, href: &str) -> bool {
        self.page == href
    }

    /// The navigation: path and label of each page.
    pub fn nav(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            ("/overview", self.t.overview),
            ("/dead-letters", self.t.dead_letters),
            ("/routing", self.t.routing),
            ("/trace", self.t.trace),
            ("/tail", self.t.live_tail),
        ]
    }
}

fn scope_text(who: &Principal, t: &Texts) -> String {
    if who.scope.is_all() {
        t.all_laender.to_owned()
    } else {
        who.scope.to_string()
    }
}

/// The platforms in the principal's scope, for a filter's choices.
pub async fn platform_choices(console: &Console, who: &Principal) -> Vec<String> {
    console
        .service
        .overview(who)
        .await
        .map(|o| o.platforms.into_iter().map(|p| p.id).collect())
        .unwrap_or_default()
}

/// The destinations in the principal's scope (id, name), for a form's choices.
pub fn destination_choices(console: &Console, who: &Principal) -> Vec<(String, String)> {
    console
        .service
        .list_destinations(who)
        .map(|ds| {
            ds.into_iter()
                .map(|d| (d.destination.id, d.destination.name))
                .collect()
        })
        .unwrap_or_default()
}

pub fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console: a page could not be rendered");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

pub fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to.to_owned())]).into_response()
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    c: Chrome,
    status: u16,
    message: String,
}

/// A page that says why nothing was done.
fn error_page(c: Chrome, status: StatusCode, message: String) -> Response {
    let page = ErrorPage {
        c,
        status: status.as_u16(),
        message,
    };
    (status, render(&page)).into_response()
}

/// A service error as a page, its status as the gRPC API's code would say it.
pub fn service_error(c: Chrome, e: ServiceError) -> Response {
    let status = match &e {
        ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
        ServiceError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        ServiceError::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
        ServiceError::AlreadyExists(_) | ServiceError::Aborted(_) => StatusCode::CONFLICT,
        ServiceError::FailedPrecondition(_) => StatusCode::PRECONDITION_FAILED,
        ServiceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_page(c, status, e.to_string())
}

/// A request's open session: without one, a page is answered by sending the browser to
/// the login.
pub struct SignedIn(pub Session);

impl FromRequestParts<Arc<Console>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        console
            .sessions
            .find(&parts.headers)
            .map(SignedIn)
            .ok_or_else(|| redirect("/login"))
    }
}

/// A signed-in operator's request for a page by its query: the session (without one, to the
/// login as [`SignedIn`]) and the query, as it came (`raw`, for links back to the same
/// view) and as fields; the request's headers make the page's frame ([`Self::chrome`]).
pub struct PageRequest {
    pub session: Session,
    pub f: Fields,
    pub raw: String,
    headers: HeaderMap,
}

impl PageRequest {
    /// The frame of the page at `path` for this request's operator and language.
    pub fn chrome(&self, path: &'static str) -> Chrome {
        Chrome::new(&self.headers, Some(&self.session), path)
    }
}

impl FromRequestParts<Arc<Console>> for PageRequest {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        let SignedIn(session) = SignedIn::from_request_parts(parts, console).await?;
        let raw = parts.uri.query().unwrap_or_default().to_owned();
        Ok(PageRequest {
            session,
            f: Fields::parse(raw.as_bytes()),
            raw,
            headers: parts.headers.clone(),
        })
    }
}

/// The session of a form that changes something: refused (403) without a session or
/// without the session's CSRF token.
pub fn changing(
    console: &Console,
    headers: &HeaderMap,
    csrf: &str,
    page: &'static str,
) -> Result<Session, Box<Response>> {
    let refused = |session: Option<&Session>| {
        let c = Chrome::new(headers, session, page);
        let message = c.t.forbidden.to_owned();
        Box::new(error_page(c, StatusCode::FORBIDDEN, message))
    };
    let Some(session) = console.sessions.find(headers) else {
        return Err(refused(None));
    };
    if !session.csrf_matches(csrf) {
        tracing::warn!(operator = %session.principal.name, page, "console: a form without its session's CSRF token refused");
        return Err(refused(Some(&session)));
    }
    Ok(session)
}

/// A form that changes something, read from its body: its fields, its session (refused as
/// [`changing`] says) and the frame of the page it was sent from.
pub fn changing_form(
    console: &Console,
    headers: &HeaderMap,
    body: &[u8],
    page: &'static str,
) -> Result<(Fields, Session, Chrome), Box<Response>> {
    let f = Fields::parse(body);
    let session = changing(console, headers, f.get("csrf"), page)?;
    let c = Chrome::new(headers, Some(&session), page);
    Ok((f, session, c))
}

// ---- login ------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    c: Chrome,
    csrf: String,
    problem: Option<&'static str>,
}

/// The login form with a fresh CSRF token in its cookie.
fn login_form(headers: &HeaderMap, status: StatusCode, problem: Option<&'static str>) -> Response {
    let csrf = session::random_token();
    let page = LoginPage {
        c: Chrome::new(headers, None, "/login"),
        csrf: csrf.clone(),
        problem,
    };
    let cookie = session::set_cookie(session::LOGIN_COOKIE, &csrf, "/login", None);
    (status, [(SET_COOKIE, cookie)], render(&page)).into_response()
}

pub async fn login_page(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if console.sessions.find(&headers).is_some() {
        return redirect("/overview");
    }
    login_form(&headers, StatusCode::OK, None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
}

pub async fn login(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let t = Lang::of(&headers).texts();
    let expected = session::cookie(&headers, session::LOGIN_COOKIE).unwrap_or_default();
    if !session::same_secret(expected, &form.csrf) {
        return login_form(&headers, StatusCode::FORBIDDEN, Some(t.login_expired));
    }
    match console.auth.check_token(&form.token, Some(peer)).await {
        Ok(principal) => {
            tracing::info!(operator = %principal.name, peer = %peer, "console: logged in");
            let cookie = console.sessions.open(principal);
            let mut response = redirect("/overview");
            let h = response.headers_mut();
            for value in [
                session::set_cookie(session::COOKIE_NAME, &cookie, "/", None),
                session::set_cookie(session::LOGIN_COOKIE, "", "/login", Some(Duration::ZERO)),
            ] {
                if let Ok(v) = value.parse() {
                    h.append(SET_COOKIE, v);
                }
            }
            response
        }
        Err(_) => login_form(&headers, StatusCode::UNAUTHORIZED, Some(t.login_failed)),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let session = match changing(&console, &headers, &form.csrf, "/overview") {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    console.sessions.close(&headers);
    tracing::info!(operator = %session.principal.name, "console: logged out");
    let mut response = redirect("/login");
    if let Ok(v) = session::set_cookie(session::COOKIE_NAME, "", "/", Some(Duration::ZERO)).parse()
    {
        response.headers_mut().append(SET_COOKIE, v);
    }
    response
}

pub async fn home(_: SignedIn) -> Response {
    redirect("/overview")
}

#[derive(Deserialize)]
pub struct LangQuery {
    #[serde(default)]
    to: String,
    #[serde(default)]
    back: String,
}

/// Sets the language cookie and goes back to the page the switch was on (a path of this
/// console only, never another site).
pub async fn switch_language(Query(q): Query<LangQuery>) -> Response {
    let lang = Lang::parse(&q.to).unwrap_or(Lang::De);
    let back = if q.back.starts_with('/') && !q.back.starts_with("//") && !q.back.contains('\\') {
        q.back
    } else {
        "/".to_owned()
    };
    let mut response = redirect(&back);
    let cookie = session::set_cookie(
        i18n::COOKIE_NAME,
        lang.code(),
        "/",
        Some(Duration::from_secs(365 * 24 * 3600)),
    );
    if let Ok(v) = cookie.parse() {
        response.headers_mut().append(SET_COOKIE, v);
    }
    response
}

// ---- overview ---------------------------------------------------------------------------------

struct OverviewView {
    pub generated_at: String,
    pub version: &'static str,
    pub uptime: String,
    pub directory_version: i64,
    pub scope: String,
    pub store_problem: Option<String>,
    pub platforms: Vec<PlatformRow>,
    pub destinations: Vec<DestinationRow>,
    pub brokers: Vec<BrokerRow>,
    pub pending: Vec<(&'static str, u64)>,
    pub pending_total: u64,
    pub overdue: Vec<OverdueRow>,
}

struct PlatformRow {
    pub id: String,
    pub land: String,
    pub state_class: &'static str,
    pub state_text: &'static str,
    pub consumed: u64,
    pub forwarded: u64,
    pub rejected: u64,
    pub in_flight: u64,
    pub rates: (String, String, String),
    pub backlog: String,
}

pub struct DestinationRow {
    pub id: String,
    pub name: String,
    pub delivered: u64,
    pub failed: u64,
    pub retrying: u64,
    pub rates: (String, String, String),
    pub last_error: Option<String>,
}

struct BrokerRow {
    pub broker: String,
    pub role: &'static str,
    pub connected: bool,
    pub node: String,
    pub last_error: Option<String>,
}

struct OverdueRow {
    pub submission: String,
    pub platform: String,
    pub destination: String,
    pub delivered_at: String,
}

fn rates(r: &Rates) -> (String, String, String) {
    let f = |v: f64| format!("{v:.2}");
    (f(r.m1), f(r.m5), f(r.m15))
}

/// A moment as UTC, to the second.
pub fn when(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    c: Chrome,
    t: &'static Texts,
    o: OverviewView,
    refresh_ms: u128,
}

#[derive(Template)]
#[template(path = "overview_live.html")]
struct OverviewLive {
    t: &'static Texts,
    o: OverviewView,
}

async fn overview_view(
    console: &Console,
    who: &Principal,
    t: &Texts,
) -> Result<OverviewView, ServiceError> {
    let service = &console.service;
    let o: Overview = service.overview(who).await?;
    let pending = pending_by_reason(console, who).await?;
    let overdue = service
        .overdue(who, OVERDUE_SHOWN)
        .await?
        .submissions
        .into_iter()
        .map(|f| OverdueRow {
            submission: f.submission_id.to_string(),
            platform: f.platform,
            destination: f.destination,
            delivered_at: when(f.delivered_at),
        })
        .collect();
    Ok(OverviewView {
        generated_at: when(SystemTime::now()),
        version: o.version,
        uptime: duration(o.uptime),
        directory_version: o.directory_version,
        scope: if o.scope.is_all() {
            t.all_laender.to_owned()
        } else {
            o.scope.to_string()
        },
        store_problem: o.store_problem,
        platforms: o.platforms.iter().map(|p| platform_row(p, t)).collect(),
        destinations: o.destinations.iter().map(destination_row).collect(),
        brokers: o
            .brokers
            .iter()
            .map(|b| BrokerRow {
                broker: b.broker.clone(),
                role: b.role,
                connected: b.connected,
                node: b.node.clone().unwrap_or_default(),
                // A blocked link is connected; what the operator must act on is the
                // broker's alarm, shown where a failure would be.
                last_error: b.last_error.clone().or_else(|| {
                    b.blocked
                        .as_ref()
                        .map(|reason| format!("{}: {reason}", t.blocked_by_broker))
                }),
            })
            .collect(),
        pending_total: o.dead_letters_pending,
        pending,
        overdue,
    })
}

/// Pending dead letters per reason, most first; reasons without any left out.
async fn pending_by_reason(
    console: &Console,
    who: &Principal,
) -> Result<Vec<(&'static str, u64)>, ServiceError> {
    let mut pending = Vec::new();
    for reason in Reason::ALL {
        let filter = DeadLetterFilter {
            reason: Some(reason.code().to_owned()),
            state: Some(DeadLetterState::Pending),
            ..DeadLetterFilter::default()
        };
        let n = console
            .service
            .list_dead_letters(who, filter, "", 1)
            .await?
            .total;
        if n > 0 {
            pending.push((reason.code(), n));
        }
    }
    pending.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    Ok(pending)
}

fn platform_row(p: &PlatformStats, t: &Texts) -> PlatformRow {
    let (state_class, state_text) = match p.state {
        ConsumerState::Consuming => ("ok", t.state_consuming),
        ConsumerState::Connecting => ("bad", t.state_connecting),
        ConsumerState::Paused => ("warn", t.state_paused),
    };
    PlatformRow {
        id: p.id.clone(),
        land: p.land.to_string(),
        state_class,
        state_text,
        consumed: p.consumed,
        forwarded: p.forwarded,
        rejected: p.rejected,
        in_flight: p.in_flight,
        rates: rates(&p.consumed_rate),
        backlog: p
            .queue
            .as_ref()
            .map_or_else(|| t.not_counted_yet.to_owned(), |q| q.ready.to_string()),
    }
}

fn destination_row(d: &DestinationStats) -> DestinationRow {
    DestinationRow {
        id: d.id.clone(),
        name: d.name.clone(),
        delivered: d.delivered,
        failed: d.failed,
        retrying: d.retrying,
        rates: rates(&d.delivered_rate),
        last_error: d
            .last_error
            .as_ref()
            .map(|(e, at)| format!("{} ({e})", when(*at))),
    }
}

pub async fn overview(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    headers: HeaderMap,
) -> Response {
    let c = Chrome::new(&headers, Some(&session), "/overview");
    let t = c.t;
    match overview_view(&console, &session.principal, t).await {
        Ok(o) => render(&OverviewPage {
            c,
            t,
            o,
            refresh_ms: REFRESH.as_millis(),
        }),
        Err(e) => service_error(c, e),
    }
}

/// The overview's changing part, which the page fetches every [`REFRESH`].
pub async fn overview_live(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Some(session) = console.sessions.find(&headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let t = Lang::of(&headers).texts();
    match overview_view(&console, &session.principal, t).await {
        Ok(o) => render(&OverviewLive { t, o }),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}
