//! The validated settings of each section of the file.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::{BrokerIndex, Land};

#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub dead_letter_broker: BrokerIndex,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    pub max_message_bytes: usize,
    /// Message bodies the consumers of platforms' queues and of the retry and replay queues
    /// hold unacked, all together: each consumer's prefetch is derived from its share and
    /// the body sizes it has seen (`ingress::Window`).
    pub in_flight_bytes: usize,
    pub confirm_timeout: Duration,
    pub shutdown_grace: Duration,
    pub verify_attachment_hashes: bool,
    /// Take the dead-letter queue into the store (default), where operators list, replay
    /// and discard them over the admin API; off leaves them on the queue for other tools.
    pub store_dead_letters: bool,
}

/// Failed deliveries wait in delay queues on the gateway's broker and are tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySettings {
    /// Wait before the 1st, 2nd, … retry; the last one repeats.
    pub delays: Vec<Duration>,
    /// Delivery attempts in all, the first included; 1 means never retry.
    pub max_attempts: u32,
    /// Give up when the first failure is older than this.
    pub max_age: Duration,
    /// Unacked retries in flight.
    pub prefetch: u16,
}

impl RetrySettings {
    /// The wait after `failed` failed attempts (1-based).
    pub fn delay(&self, failed: u32) -> Duration {
        let i = usize::try_from(failed.saturating_sub(1)).unwrap_or(usize::MAX);
        self.delays
            .get(i)
            .or(self.delays.last())
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }
}

pub fn default_retry_delays() -> Vec<Duration> {
    [1, 5, 30, 120, 600].map(Duration::from_secs).to_vec()
}
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
pub const DEFAULT_RETRY_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Where delivered submission ids are remembered (deduplication).
#[derive(Clone)]
pub struct StoreSettings {
    /// `sqlite://…` (embedded default) or `postgres://…`; may hold a password: log
    /// `display` instead.
    pub url: String,
    pub display: String,
    pub dedup_window: Duration,
    /// How long submission traces are kept.
    pub trace_retention: Duration,
    /// How long replayed or discarded dead letters (bodies included) are kept.
    pub dead_letter_retention: Duration,
    /// How often the stored directory's version is read, so that a change made through
    /// another instance's admin API is put in use here too.
    pub directory_poll: Duration,
}

impl fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSettings")
            .field("url", &self.display)
            .field("dedup_window", &self.dedup_window)
            .field("trace_retention", &self.trace_retention)
            .field("dead_letter_retention", &self.dead_letter_retention)
            .field("directory_poll", &self.directory_poll)
            .finish()
    }
}

/// Back offices' receipts and the watch for submissions that get none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptSettings {
    /// A delivered submission without an answer after this long is reported as overdue.
    pub overdue_after: Duration,
    /// How often to look for overdue submissions.
    pub check_interval: Duration,
    /// How long a delivered submission's answer (or the lack of one) is kept.
    pub retention: Duration,
}

/// FIT-Connect platforms give up on a submission after 14 days: a week leaves time to act.
pub const DEFAULT_OVERDUE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_OVERDUE_CHECK: Duration = Duration::from_secs(60);
pub const DEFAULT_RECEIPT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

pub const DEFAULT_TRACE_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
pub const DEFAULT_DEAD_LETTER_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// A route changed on one instance is in use on all within about this long.
pub const DEFAULT_DIRECTORY_POLL: Duration = Duration::from_secs(2);

/// A name for a LeiKa key, shown to operators next to routes.
impl Drop for StoreSettings {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.url);
    }
}

/// What a bearer token may do on the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Read everything but payload content.
    Viewer,
    /// Read, and change routes, destinations, services, dead letters and ingress.
    Operator,
    /// Read a dead letter's payload (audited).
    Payload,
}

impl Role {
    pub const NAMES: [&'static str; 3] = ["viewer", "operator", "payload"];
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Payload => "payload",
        }
    }
}

/// Which part of a gateway shared by several Länder a token sees and changes: the
/// submissions from platforms of its Länder and to destinations of its Länder, optionally
/// only those to named destinations. What that means for each admin call is decided in
/// `admin::service::access`; here it is only data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope {
    /// `None`: every Land. Otherwise sorted, without repeats, never empty.
    pub laender: Option<Vec<Land>>,
    /// `None`: every destination (of those Länder). Otherwise the destination ids, sorted,
    /// without repeats, never empty; one counts only while its Land is among `laender`.
    pub destinations: Option<Vec<String>>,
}

impl Scope {
    /// Every Land, every destination.
    pub const ALL: Scope = Scope {
        laender: None,
        destinations: None,
    };

    pub fn is_all(&self) -> bool {
        self.laender.is_none() && self.destinations.is_none()
    }
}

/// "every Land", "Land 06 HE", "Länder 06 HE, 16 TH", "Land 06 HE, destinations he-a":
/// what the audit log records and the admin API says it applied.
impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let laender = self.laender.as_ref().map(|laender| {
            let names: Vec<String> = laender
                .iter()
                .map(|l| format!("{l} {}", l.abbreviation()))
                .collect();
            let word = if laender.len() == 1 {
                "Land"
            } else {
                "Länder"
            };
            format!("{word} {}", names.join(", "))
        });
        let destinations = self.destinations.as_ref().map(|ids| {
            let word = if ids.len() == 1 {
                "destination"
            } else {
                "destinations"
            };
            format!("{word} {}", ids.join(", "))
        });
        match (laender, destinations) {
            (None, None) => f.write_str("every Land"),
            (Some(l), None) => f.write_str(&l),
            (None, Some(d)) => f.write_str(&d),
            (Some(l), Some(d)) => write!(f, "{l}; {d}"),
        }
    }
}

/// A configured admin token: its name (shown in the audit log), the SHA-256 of the token
/// (never the token itself), its roles and its scope.
#[derive(Clone)]
pub struct AdminToken {
    pub name: String,
    pub sha256: [u8; 32],
    pub roles: Vec<Role>,
    pub scope: Scope,
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminToken")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// The operators' gRPC API; absent from the configuration means no admin port.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub address: std::net::SocketAddr,
    pub tls: Option<AdminTls>,
    pub tokens: Vec<AdminToken>,
}

/// The web console (`src/console/`); absent means none. Operators log in with an admin
/// token, so it needs `[admin]` tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSettings {
    pub address: std::net::SocketAddr,
}

#[derive(Debug, Clone)]
pub struct AdminTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

pub const DEFAULT_DEAD_LETTER_EXCHANGE: &str = "ozg.gateway.dead-letter";
pub const DEFAULT_DEAD_LETTER_QUEUE: &str = "ozg.gateway.dead-letters";
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 32 * 1024 * 1024;
/// Leaves the example's 16 platforms their full prefetch at a few KiB per submission, and
/// keeps a gateway's memory within tens of MiB when submissions carry large attachments.
pub const DEFAULT_IN_FLIGHT_BYTES: u64 = 16 * 1024 * 1024;
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
pub const DEFAULT_PREFETCH: u32 = 256;
/// Relative to the working directory; services set an absolute path (/var/lib/ozg-gateway).
pub const DEFAULT_DATA_DIR: &str = "ozg-gateway-data";

/// How traces leave the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// OTLP endpoint; no export when absent.
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: OtlpProtocol,
    /// Share of new traces recorded (a platform's sampled trace is always continued).
    pub sampling_ratio: f64,
    /// Where `/metrics`, `/live` and `/ready` are served; not served when absent.
    pub metrics_address: Option<SocketAddr>,
    /// How often queue depths and pending dead letters are asked for (`crate::backlog`).
    pub backlog_interval: Duration,
    /// Default log filter; `OZG_LOG` (or `RUST_LOG`) overrides it.
    pub log_level: String,
    pub log_format: LogFormat,
}

impl Default for TelemetrySettings {
    fn default() -> TelemetrySettings {
        TelemetrySettings {
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::Grpc,
            sampling_ratio: 1.0,
            metrics_address: None,
            backlog_interval: Duration::from_secs(15),
            // lapin logs an ERROR for every channel the broker closes (a 404 on a missing
            // destination exchange), which the gateway already reports as a failed delivery.
            log_level: "info,lapin=off".to_owned(),
            log_format: LogFormat::Text,
        }
    }
}
