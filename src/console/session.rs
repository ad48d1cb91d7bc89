//! Console sessions: a login with an admin token opens one, held in memory and named by a
//! random cookie (HttpOnly, SameSite=Strict); each carries the principal of the token and
//! its own CSRF token, which every form that changes something must send back. The token
//! itself is never kept: a session ends when it idles, grows old, or the operator logs out,
//! and with the process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::admin::service::Principal;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "ozg_session";
/// The cookie that carries the login form's CSRF token before there is a session.
pub const LOGIN_COOKIE: &str = "ozg_login";
/// A session unused this long ends.
const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after its login, used or not.
const LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// Sessions held at most; beyond, the least recently used ends.
const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    /// Sent back by every form that changes something.
    pub csrf: String,
    opened: Instant,
    used: Instant,
}

impl Session {
    /// Whether `presented` is this session's CSRF token (compared in constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        same_secret(&self.csrf, presented)
    }
}

/// Two secrets compared in constant time.
pub fn same_secret(a: &str, b: &str) -> bool {
    !a.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The open sessions, by the SHA-256 of their cookie (a memory dump shows no usable cookie).
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<[u8; 32], Session>>,
}

/// 32 random bytes as hex: a session cookie or a CSRF token.
pub fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn key(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

impl Sessions {
    /// Opens a session for `principal`; returns the cookie's value.
    pub fn open(&self, principal: Principal) -> String {
        let cookie = random_token();
        let now = Instant::now();
        let session = Session {
            principal,
            csrf: random_token(),
            opened: now,
            used: now,
        };
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= MAX_SESSIONS {
            open.retain(|_, s| live(s, now));
        }
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| *k)
        {
            open.remove(&oldest);
        }
        open.insert(key(&cookie), session);
        cookie
    }

    /// The session the request's cookie names, if it is still open.
    pub fn find(&self, headers: &HeaderMap) -> Option<Session> {
        let cookie = cookie(headers, COOKIE_NAME)?;
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let k = key(cookie);
        let session = open.get_mut(&k)?;
        if !live(session, now) {
            open.remove(&k);
            return None;
        }
        session.used = now;
        Some(session.clone())
    }

    /// Ends the session the request's cookie names.
    pub fn close(&self, headers: &HeaderMap) {
        if let Some(cookie) = cookie(headers, COOKIE_NAME) {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            open.remove(&key(cookie));
        }
    }
}

fn live(session: &Session, now: Instant) -> bool {
    now.duration_since(session.used) < IDLE && now.duration_since(session.opened) < LIFETIME
}

/// The value of cookie `name` in the request, if sent.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value for a cookie only this console's own pages send back.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: Option<Duration>) -> String {
    let age = max_age.map_or_else(String::new, |a| format!("; Max-Age={}", a.as_secs()));
    format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict{age}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Role, Scope};
    use axum::http::HeaderValue;

    fn principal() -> Principal {
        Principal {
            name: "ops".to_owned(),
            roles: vec![Role::Operator],
            scope: Scope::default(),
        }
    }

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn a_session_is_found_by_its_cookie_only_until_closed() {
        let sessions = Sessions::default();
        let cookie = sessions.open(principal());
        let headers = with_cookie(&format!("lang=de; {COOKIE_NAME}={cookie}"));
        let session = sessions.find(&headers).unwrap();
        assert_eq!(session.principal.name, "ops");
        assert!(session.csrf_matches(&session.csrf.clone()));
        assert!(!session.csrf_matches(""));
        assert!(!session.csrf_matches("0"));
        assert!(
            sessions
                .find(&with_cookie(&format!("{COOKIE_NAME}={cookie}x")))
                .is_none()
        );
        assert!(sessions.find(&HeaderMap::new()).is_none());
        sessions.close(&headers);
        assert!(sessions.find(&headers).is_none());
    }

    #[test]
    fn cookies_are_http_only_and_strict() {
        let c = set_cookie(COOKIE_NAME, "abc", "/", None);
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict"),
            "{c}"
        );
    }
}
