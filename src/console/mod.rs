//! The web console: the operators' pages, served by the gateway itself on its own address
//! (`[console]`), over the same service layer as the gRPC API (`admin::service`), so the
//! two can never disagree about what an operator may see or change.
//!
//! Pages are rendered on the server (askama templates, checked when the crate compiles,
//! escaping what they show); the only script is `static/console.js`, embedded in the
//! binary, which refreshes parts of pages and asks before a change. Nothing is loaded from
//! elsewhere, so the console works in networks without internet. Operators log in with an
//! admin token ([`session`]); every response carries a strict Content-Security-Policy (no
//! inline script or style, nothing from other origins, no framing).

mod dead_letters;
mod directory;
mod forms;
mod i18n;
mod pages;
mod session;
mod tail;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::admin::auth::Authenticator;
use crate::admin::service::Service;
use crate::config::{AdminToken, ConsoleSettings};

/// Scripts and styles from this console only; no inline script, no framing, forms posting
/// to the console only.
const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

const SCRIPT: &str = include_str!("static/console.js");
const STYLE: &str = include_str!("static/console.css");

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// What the console's handlers share.
pub struct Console {
    service: Arc<Service>,
    auth: Authenticator,
    sessions: session::Sessions,
    /// Ends the live tails' streams when the gateway stops.
    stop: CancellationToken,
}

/// Binds the console's address and serves until `stop`; returns the address bound.
pub async fn serve(
    settings: &ConsoleSettings,
    service: Arc<Service>,
    tokens: Vec<AdminToken>,
    stop: CancellationToken,
) -> Result<SocketAddr, ConsoleError> {
    let bind_error = |source| ConsoleError::Bind {
        address: settings.address,
        source,
    };
    let listener = tokio::net::TcpListener::bind(settings.address)
        .await
        .map_err(bind_error)?;
    let address = listener.local_addr().map_err(bind_error)?;
    let console = Arc::new(Console {
        service,
        auth: Authenticator::new(tokens),
        sessions: session::Sessions::default(),
        stop: stop.clone(),
    });
    let app = router(console);
    tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "web console stopped with an error");
        }
    });
    tracing::info!(address = %address, "web console listening");
    Ok(address)
}

fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login_page).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/lang", get(pages::switch_language))
        .route("/overview", get(pages::overview))
        .route("/overview/live", get(pages::overview_live))
        .route("/dead-letters", get(dead_letters::list))
        .route("/dead-letters/confirm", post(dead_letters::confirm))
        .route("/dead-letters/apply", post(dead_letters::apply))
        .route("/dead-letters/outcomes", get(dead_letters::outcomes))
        .route(
            "/dead-letters/outcomes/live",
            get(dead_letters::outcomes_live),
        )
        .route("/dead-letters/{id}", get(dead_letters::detail))
        .route("/trace", get(dead_letters::trace))
        .route("/routing", get(directory::page))
        .route("/routing/routes", post(directory::put_route))
        .route("/routing/routes/delete", post(directory::delete_route))
        .route("/routing/explain", get(directory::explain))
        .route(
            "/dead-letters/{id}/payload",
            get(dead_letters::payload_form).post(dead_letters::payload),
        )
        .route("/tail", get(tail::page))
        .route("/tail/events", get(tail::events))
        .route(
            "/static/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/static/console.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}

/// Headers on every answer: the policy above, no sniffing, no framing, no referrer, and
/// no caching of pages (they show what one operator may see).
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
