//! Bearer tokens: which configured token a call presents, and so which `Principal` (name,
//! roles, scope) it acts as. Tokens are configured as SHA-256 hashes, compared in constant
//! time, and never logged: only a token's configured name appears in logs and the audit.
//! What a principal may do is decided by the service layer (`service::access`), not here.
//!
//! A failed authentication is logged (the client's address, never the token; one line per
//! address per `LOG_EVERY`) and answered late: per client address (an IPv6 client by its
//! /64), failures are answered no faster than one per `FAILURE_SPACING` after a burst of
//! `FAILURE_BURST`. A known token is never delayed, so a guesser slows down nobody but
//! itself. Failures waiting for their answer are bounded per address (`MAX_WAITING`):
//! past that, calls from the address are refused before their token is looked at, so
//! that opening more calls does not buy faster answers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::time::Instant;
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::service::Principal;
use crate::config::AdminToken;

/// Failures from one address answered without delay before the spacing applies.
const FAILURE_BURST: u32 = 10;
/// After the burst, one failure from an address is answered per this long: 40 guesses a
/// second instead of thousands.
const FAILURE_SPACING: Duration = Duration::from_millis(25);
/// Failures of one address waiting for their answer at most; past this the address is
/// refused until they are answered.
const MAX_WAITING: u32 = 16;
/// At most one log line per address this often; it counts the failures in between.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Addresses tracked at most; beyond, the rest share one entry.
const MAX_PEERS: usize = 10_000;

#[derive(Debug)]
pub struct Authenticator {
    tokens: Vec<AdminToken>,
    peers: Mutex<HashMap<PeerKey, Peer>>,
}

/// Whom failures are counted for: an IPv4 address, an IPv6 /64 (one customer's network),
/// or everybody beyond [`MAX_PEERS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PeerKey {
    V4([u8; 4]),
    V6([u8; 8]),
    Unknown,
    Overflow,
}

impl PeerKey {
    fn of(peer: Option<SocketAddr>) -> PeerKey {
        match peer.map(|p| p.ip().to_canonical()) {
            Some(IpAddr::V4(ip)) => PeerKey::V4(ip.octets()),
            Some(IpAddr::V6(ip)) => {
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&ip.octets()[..8]);
                PeerKey::V6(prefix)
            }
            None => PeerKey::Unknown,
        }
    }
}

#[derive(Debug)]
struct Peer {
    /// The theoretical time of the next failure (GCRA): answers are due at most
    /// `FAILURE_BURST` spacings before it.
    next: Instant,
    waiting: u32,
    logged_at: Option<Instant>,
    unlogged: u64,
}

impl Peer {
    fn idle(&self, now: Instant) -> bool {
        self.waiting == 0
            && self.next <= now
            && self
                .logged_at
                .is_none_or(|at| now.duration_since(at) >= LOG_EVERY)
    }
}

/// A failure waiting for its answer; counted until dropped, also when the caller gives up.
struct Waiting<'a> {
    auth: &'a Authenticator,
    key: PeerKey,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut peers = self.auth.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(peer) = peers.get_mut(&self.key) {
            peer.waiting = peer.waiting.saturating_sub(1);
        }
    }
}

/// The bearer token of a call's metadata, trimmed, or why there is none.
fn bearer(metadata: &MetadataMap) -> Result<&str, &'static str> {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or("missing bearer token (authorization: Bearer <token>)")
}

/// The SHA-256 of a token as configured (`ozg-gateway hash-token` prints it). Blanks
/// around the token do not count: a presented token is trimmed the same way.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

impl Authenticator {
    pub fn new(tokens: Vec<AdminToken>) -> Authenticator {
        Authenticator {
            tokens,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// The principal of the token presented; UNAUTHENTICATED without a known token (after
    /// the delay due for the caller's address), RESOURCE_EXHAUSTED for an address with too
    /// many failures waiting.
    pub async fn check(
        &self,
        metadata: &MetadataMap,
        peer: Option<SocketAddr>,
    ) -> Result<Principal, Status> {
        self.admit(bearer(metadata), peer).await
    }

    /// [`check`](Self::check) for a token typed into the web console's login form: the
    /// same tokens, the same delays for the same client address.
    pub async fn check_token(
        &self,
        token: &str,
        peer: Option<SocketAddr>,
    ) -> Result<Principal, Status> {
        let presented = Some(token.trim())
            .filter(|t| !t.is_empty())
            .ok_or("missing token");
        self.admit(presented, peer).await
    }

    async fn admit(
        &self,
        presented: Result<&str, &'static str>,
        peer: Option<SocketAddr>,
    ) -> Result<Principal, Status> {
        let key = PeerKey::of(peer);
        if self.saturated(key) {
            return Err(Status::resource_exhausted(
                "too many failed authentications from this address; wait and try again",
            ));
        }
        let token = match presented.and_then(|p| self.identify(p)) {
            Ok(token) => token,
            Err(why) => {
                let (wait, waiting) = self.failed(key, peer, why);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                drop(waiting);
                return Err(Status::unauthenticated(why));
            }
        };
        Ok(Principal {
            name: token.name.clone(),
            roles: token.roles.clone(),
            scope: token.scope.clone(),
        })
    }

    /// The configured token presented, or why there is none.
    fn identify(&self, presented: &str) -> Result<&AdminToken, &'static str> {
        let hash = hash_token(presented);
        // Every configured hash is compared, match or not, so the time taken says nothing
        // about which or how many bytes matched.
        let mut found: Option<&AdminToken> = None;
        for token in &self.tokens {
            if bool::from(token.sha256.ct_eq(&hash)) {
                found = Some(token);
            }
        }
        found.ok_or("unknown bearer token")
    }

    fn saturated(&self, key: PeerKey) -> bool {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.get(&key).is_some_and(|p| p.waiting >= MAX_WAITING)
    }

    /// Books a failure: how long until it may be answered, the guard that counts it as
    /// waiting meanwhile; logs it if this address's line is due.
    fn failed(
        &self,
        key: PeerKey,
        peer: Option<SocketAddr>,
        why: &'static str,
    ) -> (Duration, Waiting<'_>) {
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.len() >= MAX_PEERS && !peers.contains_key(&key) {
            peers.retain(|_, p| !p.idle(now));
        }
        let key = if peers.len() >= MAX_PEERS && !peers.contains_key(&key) {
            PeerKey::Overflow
        } else {
            key
        };
        let entry = peers.entry(key).or_insert(Peer {
            next: now,
            waiting: 0,
            logged_at: None,
            unlogged: 0,
        });
        let next = entry.next.max(now);
        let tolerance = FAILURE_SPACING * FAILURE_BURST;
        let due = next.checked_sub(tolerance).map_or(now, |t| t.max(now));
        entry.next = next + FAILURE_SPACING;
        entry.waiting += 1;
        entry.unlogged += 1;
        let log = entry
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY);
        let failures = entry.unlogged;
        if log {
            entry.logged_at = Some(now);
            entry.unlogged = 0;
        }
        drop(peers);
        if log {
            let peer = peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
            tracing::warn!(peer = %peer, reason = why, failures,
                "admin API: authentication failed (failures from this address since the last such line)");
        }
        (due - now, Waiting { auth: self, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::{Role, Scope};

    fn auth() -> Authenticator {
        let token = |name: &str, secret: &str, roles: &[Role]| AdminToken {
            name: name.to_owned(),
            sha256: hash_token(secret),
            roles: roles.to_vec(),
            scope: Scope::default(),
        };
        Authenticator::new(vec![
            token("viewer", "v-secret", &[Role::Viewer]),
            token("operator", "o-secret", &[Role::Operator]),
            token("auditor", "a-secret", &[Role::Viewer, Role::Payload]),
            token("payload-only", "p-secret", &[Role::Payload]),
        ])
    }

    fn request(header: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(h) = header {
            m.insert("authorization", h.parse().unwrap());
        }
        m
    }

    fn from(n: u8) -> Option<SocketAddr> {
        Some(SocketAddr::from(([192, 0, 2, n], 40000)))
    }

    #[tokio::test]
    async fn a_known_token_is_its_principal_and_nothing_else_is() {
        use tonic::Code::{Ok as Known, Unauthenticated};
        let cases = [
            (None, Unauthenticated, ""),
            (Some("Bearer "), Unauthenticated, ""),
            (Some("Basic v-secret"), Unauthenticated, ""),
            (Some("Bearer wrong"), Unauthenticated, ""),
            (Some("Bearer v-secret"), Known, "viewer"),
            (Some("bearer o-secret"), Known, "operator"),
            (Some("Bearer  a-secret "), Known, "auditor"),
            (Some("Bearer p-secret"), Known, "payload-only"),
        ];
        let auth = auth();
        for (header, want, name) in cases {
            let got = match auth.check(&request(header), from(1)).await {
                Ok(who) => {
                    assert_eq!(who.name, name, "{header:?}");
                    Known
                }
                Err(status) => {
                    assert!(!status.message().contains("secret"), "{status:?}");
                    status.code()
                }
            };
            assert_eq!(got, want, "{header:?}");
        }
        let who = auth
            .check(&request(Some("Bearer a-secret")), from(1))
            .await
            .unwrap();
        assert_eq!(who.roles, [Role::Viewer, Role::Payload]);
    }

    // On tokio's paused clock, which the spacing uses: only the waits the guard imposes
    // count, not how long a loaded machine takes to check a token.
    #[tokio::test(start_paused = true)]
    async fn failures_are_spaced_per_address_and_a_known_token_is_not_delayed() {
        let auth = auth();
        let wrong = request(Some("Bearer guess"));
        let started = tokio::time::Instant::now();
        for _ in 0..FAILURE_BURST {
            let _ = auth.check(&wrong, from(1)).await;
        }
        assert!(
            started.elapsed() < FAILURE_SPACING * 4,
            "the burst is not delayed"
        );
        let started = tokio::time::Instant::now();
        for _ in 0..20 {
            let status = auth.check(&wrong, from(1)).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
        }
        assert!(
            started.elapsed() >= FAILURE_SPACING * 19,
            "{:?}",
            started.elapsed()
        );
        // The right token from the same address, and anything from another, at once.
        let started = tokio::time::Instant::now();
        auth.check(&request(Some("Bearer v-secret")), from(1))
            .await
            .unwrap();
        let _ = auth.check(&wrong, from(2)).await;
        assert!(
            started.elapsed() < FAILURE_SPACING,
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn many_failures_at_once_are_refused_before_the_token_is_looked_at() {
        let auth = std::sync::Arc::new(auth());
        let calls: Vec<_> = (0..FAILURE_BURST + MAX_WAITING + 8)
            .map(|_| {
                let auth = auth.clone();
                tokio::spawn(async move {
                    auth.check(&request(Some("Bearer guess")), from(3))
                        .await
                        .unwrap_err()
                        .code()
                })
            })
            .collect();
        // While they wait, the address is refused even with a known token.
        tokio::task::yield_now().await;
        let refused = auth
            .check(&request(Some("Bearer v-secret")), from(3))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        let mut codes = Vec::new();
        for call in calls {
            codes.push(call.await.unwrap());
        }
        assert!(codes.contains(&tonic::Code::ResourceExhausted), "{codes:?}");
        // Once answered, the address is served again.
        auth.check(&request(Some("Bearer v-secret")), from(3))
            .await
            .unwrap();
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64() {
        let a: SocketAddr = "[2001:db8:1:2::1]:1".parse().unwrap();
        let b: SocketAddr = "[2001:db8:1:2:ffff::9]:2".parse().unwrap();
        let c: SocketAddr = "[2001:db8:1:3::1]:1".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:1".parse().unwrap();
        assert_eq!(PeerKey::of(Some(a)), PeerKey::of(Some(b)));
        assert_ne!(PeerKey::of(Some(a)), PeerKey::of(Some(c)));
        assert_eq!(PeerKey::of(Some(mapped)), PeerKey::V4([192, 0, 2, 7]));
    }
}
