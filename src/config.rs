//! Configuration: TOML file → raw serde structs → validated [`Config`].
//!
//! Only the validated form is used by the rest of the gateway. Validation collects every
//! problem it finds (file, key, what is wrong) instead of stopping at the first, so an
//! operator fixes a file in one round. Nothing connects before validation has passed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use lapin::uri::{AMQPScheme, AMQPUri};

use crate::directory::{Directory, DirectoryError};
use crate::model::{Land, RegionPrefix, ServiceKey, ServiceSelector};
use crate::secret::{self, Secret};
use crate::telemetry::{LogFormat, OtlpProtocol, TelemetrySettings};
use crate::tls::{self, BrokerTls};

/// Exit code for invalid configuration (EX_USAGE), as operators' scripts expect.
pub const EXIT_INVALID_CONFIG: u8 = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
    #[error("{path}: gateway.directory: {source}")]
    Directory {
        path: String,
        source: DirectoryError,
    },
}

/// Every problem found in one configuration, in file order.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "invalid configuration: {n} error{}",
            if n == 1 { "" } else { "s" }
        )?;
        for error in &self.0 {
            writeln!(f, "  {error}")?;
        }
        Ok(())
    }
}
impl std::error::Error for ConfigErrors {}

// ---------------------------------------------------------------------------------------
// Raw form: what serde reads. Required strings default to empty so that validation can list
// every missing key instead of serde stopping at the first.

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default)]
    brokers: BTreeMap<String, RawBroker>,
    #[serde(default)]
    platforms: Vec<RawPlatform>,
    #[serde(default)]
    destinations: Vec<RawDestination>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    telemetry: RawTelemetry,
    #[serde(default)]
    services: Vec<RawService>,
    #[serde(default)]
    receipts: RawReceipts,
    #[serde(default)]
    admin: Option<RawAdmin>,
    #[serde(default)]
    console: Option<RawConsole>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    #[serde(default)]
    address: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReceipts {
    #[serde(default, with = "humantime_serde")]
    overdue_after: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    check_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    retention: Option<Duration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default)]
    key: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default)]
    address: String,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    #[serde(default)]
    tokens: Vec<RawToken>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawToken {
    #[serde(default)]
    name: String,
    sha256: Option<String>,
    sha256_file: Option<PathBuf>,
    #[serde(default)]
    roles: Vec<String>,
    /// Land codes or abbreviations, or `["*"]`; absent: every Land.
    laender: Option<Vec<String>>,
    /// Destination ids the token is narrowed to; absent: every destination of its Länder.
    destinations: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    otlp_endpoint: Option<String>,
    otlp_protocol: Option<String>,
    sampling_ratio: Option<f64>,
    metrics_address: Option<String>,
    #[serde(default, with = "humantime_serde")]
    backlog_interval: Option<Duration>,
    log_level: Option<String>,
    log_format: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    delays: Option<Vec<humantime_serde::Serde<Duration>>>,
    max_attempts: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    max_age: Option<Duration>,
    prefetch: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    #[serde(default, with = "humantime_serde")]
    dedup_window: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    trace_retention: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    dead_letter_retention: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    directory_poll: Option<Duration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    #[serde(default)]
    dead_letter_broker: String,
    dead_letter_exchange: Option<String>,
    dead_letter_queue: Option<String>,
    max_message_bytes: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    confirm_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    shutdown_grace: Option<Duration>,
    verify_attachment_hashes: Option<bool>,
    directory: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    store_dead_letters: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBroker {
    url: Option<String>,
    /// The nodes of a cluster, instead of `url`.
    urls: Option<Vec<String>>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    tls: Option<RawBrokerTls>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBrokerTls {
    ca_file: Option<PathBuf>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
    server_name: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPlatform {
    #[serde(default)]
    id: String,
    #[serde(default)]
    land: String,
    #[serde(default)]
    broker: String,
    #[serde(default)]
    ingress_queue: String,
    #[serde(default)]
    status_exchange: String,
    status_routing_key: Option<String>,
    status_format: Option<String>,
    prefetch: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    land: String,
    #[serde(default)]
    broker: String,
    #[serde(default)]
    exchange: String,
    #[serde(default)]
    routing_key: String,
    receipt_queue: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(default)]
    service: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    destination: String,
}

// ---------------------------------------------------------------------------------------
// Validated form.

pub type BrokerIndex = usize;
pub type DestinationIndex = usize;

/// A broker: one RabbitMQ node, or the nodes of one cluster, tried in the order given.
#[derive(Clone)]
pub struct Broker {
    pub name: String,
    /// At least one; all with the same scheme, user and vhost.
    pub nodes: Vec<BrokerNode>,
    /// Set exactly when the nodes are amqps://.
    pub tls: Option<BrokerTls>,
    /// The nodes' URIs without password, for logs and admin output
    /// (`amqps://user@n1:5671,n2:5671/vhost` for a cluster).
    pub display: String,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("name", &self.name)
            .field("uri", &self.display)
            .field("tls", &self.tls)
            .finish()
    }
}

/// One node of a broker.
#[derive(Clone)]
pub struct BrokerNode {
    /// With the password (from the URL, `password_file` or `password_env`): never log it;
    /// `display` and `address` are for people.
    uri: AMQPUri,
    /// `host:port`.
    pub address: String,
    /// `scheme://user@host:port/vhost`.
    pub display: String,
}

impl BrokerNode {
    fn new(uri: AMQPUri) -> BrokerNode {
        let vhost = if uri.vhost.is_empty() {
            "%2f".to_owned()
        } else {
            uri.vhost.replace('/', "%2f")
        };
        let address = format!("{}:{}", uri.authority.host, uri.authority.port);
        BrokerNode {
            display: format!(
                "{}://{}@{address}/{vhost}",
                uri.scheme, uri.authority.userinfo.username
            ),
            address,
            uri,
        }
    }

    /// The URI to connect with, password included.
    pub(crate) fn uri(&self) -> &AMQPUri {
        &self.uri
    }
}

/// The password in the URI is zeroed when a node is dropped (as a [`Secret`] is).
impl Drop for BrokerNode {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.uri.authority.userinfo.password);
    }
}

/// The store URL may hold a password: zeroed when dropped (as a [`Secret`] is).
impl Drop for StoreSettings {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.url);
    }
}

impl fmt::Debug for BrokerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

#[derive(Debug, Clone)]
pub struct Platform {
    pub id: String,
    pub land: Land,
    pub broker: BrokerIndex,
    pub ingress_queue: String,
    pub status_exchange: String,
    pub status_routing_key: String,
    pub status_format: StatusFormat,
    pub prefetch: u16,
}

/// Encoding of the status events sent to a platform: the canonical proto3 JSON mapping
/// (default) or protobuf, both of `ozg.gateway.v1.StatusEvent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFormat {
    Json,
    Protobuf,
}

/// The kind of authority a destination is; informational, shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorityKind {
    Gemeinde,
    Gemeindeverband,
    Kreis,
    KreisfreieStadt,
    LandOffice,
    FederalOffice,
    Other,
}

impl AuthorityKind {
    pub const NAMES: [&'static str; 7] = [
        "gemeinde",
        "gemeindeverband",
        "kreis",
        "kreisfreie-stadt",
        "land-office",
        "federal-office",
        "other",
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorityKind::Gemeinde => "gemeinde",
            AuthorityKind::Gemeindeverband => "gemeindeverband",
            AuthorityKind::Kreis => "kreis",
            AuthorityKind::KreisfreieStadt => "kreisfreie-stadt",
            AuthorityKind::LandOffice => "land-office",
            AuthorityKind::FederalOffice => "federal-office",
            AuthorityKind::Other => "other",
        }
    }
}

impl FromStr for AuthorityKind {
    type Err = ();
    fn from_str(s: &str) -> Result<AuthorityKind, ()> {
        Ok(match s {
            "gemeinde" => AuthorityKind::Gemeinde,
            "gemeindeverband" => AuthorityKind::Gemeindeverband,
            "kreis" => AuthorityKind::Kreis,
            "kreisfreie-stadt" => AuthorityKind::KreisfreieStadt,
            "land-office" => AuthorityKind::LandOffice,
            "federal-office" => AuthorityKind::FederalOffice,
            "other" => AuthorityKind::Other,
            _ => return Err(()),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Destination {
    pub id: String,
    pub name: String,
    pub kind: AuthorityKind,
    pub land: Land,
    pub broker: BrokerIndex,
    /// Empty means the AMQP default exchange (routing key = queue name).
    pub exchange: String,
    pub routing_key: String,
    /// Where the back office publishes its receipts (on its broker); none: it sends none.
    pub receipt_queue: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub service: ServiceSelector,
    pub region: RegionPrefix,
    pub destination: DestinationIndex,
}

#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub dead_letter_broker: BrokerIndex,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    pub max_message_bytes: usize,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceName {
    pub key: ServiceKey,
    pub name: String,
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

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from, for messages.
    pub source: String,
    /// What is allowed but unwise (a password in a URL, a secret file every user may
    /// read), as `file: key: message`; `check-config` prints them, `run` logs them.
    pub warnings: Vec<String>,
    pub gateway: GatewaySettings,
    pub store: StoreSettings,
    pub retry: RetrySettings,
    pub telemetry: TelemetrySettings,
    pub brokers: Vec<Broker>,
    pub platforms: Vec<Platform>,
    pub destinations: Vec<Destination>,
    pub routes: Vec<Route>,
    pub services: Vec<ServiceName>,
    pub receipts: ReceiptSettings,
    pub admin: Option<AdminSettings>,
    pub console: Option<ConsoleSettings>,
    pub directory: Arc<Directory>,
}

pub const DEFAULT_DEAD_LETTER_EXCHANGE: &str = "ozg.gateway.dead-letter";
pub const DEFAULT_DEAD_LETTER_QUEUE: &str = "ozg.gateway.dead-letters";
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 32 * 1024 * 1024;
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
pub const DEFAULT_PREFETCH: u32 = 256;
/// Relative to the working directory; services set an absolute path (/var/lib/ozg-gateway).
pub const DEFAULT_DATA_DIR: &str = "ozg-gateway-data";

/// A section of a configuration file that takes effect only when the gateway starts.
pub const RESTART_ONLY: [&str; 10] = [
    "gateway",
    "gateway.directory",
    "store",
    "retry",
    "telemetry",
    "brokers",
    "platforms",
    "receipts",
    "admin",
    "console",
];

impl Config {
    /// The sections of [`RESTART_ONLY`] in which `new` differs from `self` (secrets
    /// included: a changed password counts, without being shown).
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let broker_name = |c: &Config, i: BrokerIndex| c.brokers[i].name.clone();
        let gateway = |c: &Config| {
            let g = &c.gateway;
            format!(
                "{} {} {} {} {:?} {:?} {} {}",
                broker_name(c, g.dead_letter_broker),
                g.dead_letter_exchange,
                g.dead_letter_queue,
                g.max_message_bytes,
                g.confirm_timeout,
                g.shutdown_grace,
                g.verify_attachment_hashes,
                g.store_dead_letters
            )
        };
        let store = |c: &Config| (c.store.url.clone(), format!("{:?}", c.store));
        let brokers = |c: &Config| {
            c.brokers
                .iter()
                .map(|b| {
                    let uris: Vec<&AMQPUri> = b.nodes.iter().map(BrokerNode::uri).collect();
                    (b.name.clone(), format!("{uris:?} {:?}", b.tls))
                })
                .collect::<Vec<_>>()
        };
        let platforms = |c: &Config| {
            c.platforms
                .iter()
                .map(|p| format!("{p:?} on {}", broker_name(c, p.broker)))
                .collect::<Vec<_>>()
        };
        let admin = |c: &Config| {
            c.admin.as_ref().map(|a| {
                let tokens: Vec<_> = a
                    .tokens
                    .iter()
                    .map(|t| (t.name.clone(), t.sha256, t.roles.clone()))
                    .collect();
                (a.address, format!("{:?}", a.tls), tokens)
            })
        };
        let directory = |c: &Config| (c.directory.n_gemeinden(), c.directory.units().count());
        let mut changed = Vec::new();
        for (section, differs) in [
            ("gateway", gateway(self) != gateway(new)),
            ("gateway.directory", directory(self) != directory(new)),
            ("store", store(self) != store(new)),
            ("retry", self.retry != new.retry),
            ("telemetry", self.telemetry != new.telemetry),
            ("brokers", brokers(self) != brokers(new)),
            ("platforms", platforms(self) != platforms(new)),
            ("receipts", self.receipts != new.receipts),
            ("admin", admin(self) != admin(new)),
            ("console", self.console != new.console),
        ] {
            if differs {
                changed.push(section);
            }
        }
        changed
    }

    /// This configuration with the routing directory of `new` (its destinations, routes and
    /// services): what a reload of the configuration file puts in use. A destination on a
    /// broker this configuration does not have cannot be: brokers change with a restart.
    pub fn with_directory_of(&self, new: &Config) -> Result<Config, Vec<String>> {
        let mut problems = Vec::new();
        let mut destinations = new.destinations.clone();
        for (i, d) in destinations.iter_mut().enumerate() {
            let name = &new.brokers[d.broker].name;
            match self.broker_index(name) {
                Some(index) => d.broker = index,
                None => problems.push(format!(
                    "{}: destinations[{i}].broker: {name:?} is not a broker of the running gateway; a new broker takes a restart",
                    new.source
                )),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut merged = self.clone();
        merged.destinations = destinations;
        merged.routes = new.routes.clone();
        merged.services = new.services.clone();
        Ok(merged)
    }

    /// Reads and validates a configuration file. A relative `gateway.directory` is taken
    /// relative to the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| {
            ConfigErrors(vec![ConfigError::Read {
                path: shown.clone(),
                source,
            }])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, &shown, base)
    }

    /// Validates configuration text; `source` names it in messages, `base` resolves
    /// relative paths.
    pub fn parse(text: &str, source: &str, base: &Path) -> Result<Config, ConfigErrors> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigErrors(vec![ConfigError::Syntax {
                path: source.to_owned(),
                message: e.to_string().trim_end().replace('\n', "\n    "),
            }])
        })?;
        let mut validator = Validator::new(source);
        let raw =
            read_raw(table, &mut validator).ok_or_else(|| ConfigErrors(validator.take_errors()))?;
        let directory = match &raw.gateway.directory {
            None => Directory::embedded(),
            Some(p) => match Directory::load(&base.join(p)) {
                Ok(directory) => Ok(directory),
                Err(e) => {
                    validator.errors.push(ConfigError::Directory {
                        path: source.to_owned(),
                        source: e,
                    });
                    // The rest is still checked, against the embedded directory; which
                    // regions exist is not known, so that is not reported.
                    validator.unknown_directory = true;
                    Directory::embedded()
                }
            },
        }
        .map_err(|e| {
            ConfigErrors(vec![ConfigError::Directory {
                path: source.to_owned(),
                source: e,
            }])
        })?;
        validator.validate(raw, Arc::new(directory), base)
    }

    pub fn broker(&self, index: BrokerIndex) -> &Broker {
        &self.brokers[index]
    }

    pub fn broker_index(&self, name: &str) -> Option<BrokerIndex> {
        self.brokers.iter().position(|b| b.name == name)
    }

    pub fn platform(&self, id: &str) -> Option<&Platform> {
        self.platforms.iter().find(|p| p.id == id)
    }

    pub fn destination_index(&self, id: &str) -> Option<DestinationIndex> {
        self.destinations.iter().position(|d| d.id == id)
    }
}

/// At most this many format-level problems are listed: past them, a file is more likely
/// not a gateway configuration at all.
const MAX_FORMAT_ERRORS: usize = 100;

/// Reads the TOML tree into the raw structs, listing every format-level problem (unknown
/// keys, wrong types, bad durations) instead of stopping at the first: each offending key is
/// reported and taken out, then the tree is read again. A bad element of an array of tables
/// is replaced by an empty table rather than removed, so that the entries after it keep
/// their numbers in every later message. What validation would then say about a key taken
/// out ("is missing") is suppressed. `None`: a problem that cannot be located (reported).
fn read_raw(table: toml::Table, validator: &mut Validator) -> Option<RawConfig> {
    use serde_path_to_error::Segment;
    let mut tree = toml::Value::Table(table);
    // Original indices taken out of each array (by its path as reported), so that an error
    // after a removal still names the element as the file numbers it.
    let mut removed_indices: HashMap<String, Vec<usize>> = HashMap::new();
    // The key last replaced by an empty table: failing again, it is no table at all.
    let mut placeholder: Option<Vec<Segment>> = None;
    let mut reported = 0;
    loop {
        let error = match serde_path_to_error::deserialize::<_, RawConfig>(tree.clone()) {
            Ok(raw) => return Some(raw),
            Err(e) => e,
        };
        let path: Vec<Segment> = error.path().iter().cloned().collect();
        let (key, array_key, original) = original_key(&path, &removed_indices);
        let again = placeholder.take().is_some_and(|p| same_path(&p, &path));
        if !again {
            reported += 1;
            validator.format_error(&key, error.inner().message());
            if reported >= MAX_FORMAT_ERRORS {
                validator.format_error(
                    "",
                    format!("stopped after {MAX_FORMAT_ERRORS} problems at the format level"),
                );
                return None;
            }
        }
        // An error that names no key cannot be taken out: it is the last one listed.
        let (last, parents) = path.split_last()?;
        let parent = node(&mut tree, parents)?;
        match (last, parent) {
            (Segment::Map { key: name }, toml::Value::Table(t)) => {
                t.remove(name)?;
            }
            (Segment::Seq { index }, toml::Value::Array(a)) if *index < a.len() => {
                if again {
                    a.remove(*index);
                    let taken = removed_indices.entry(array_key).or_default();
                    taken.push(original.unwrap_or(*index));
                    taken.sort_unstable();
                } else {
                    a[*index] = toml::Value::Table(toml::Table::new());
                    placeholder = Some(path);
                }
            }
            _ => return None,
        }
    }
}

fn same_path(a: &[serde_path_to_error::Segment], b: &[serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    a.len() == b.len()
        && a.iter().zip(b).all(|pair| match pair {
            (Segment::Seq { index: x }, Segment::Seq { index: y }) => x == y,
            (Segment::Map { key: x }, Segment::Map { key: y }) => x == y,
            _ => false,
        })
}

/// The node at `path` in the tree.
fn node<'a>(
    tree: &'a mut toml::Value,
    path: &[serde_path_to_error::Segment],
) -> Option<&'a mut toml::Value> {
    use serde_path_to_error::Segment;
    path.iter()
        .try_fold(tree, |node, segment| match (segment, node) {
            (Segment::Map { key }, toml::Value::Table(t)) => t.get_mut(key),
            (Segment::Seq { index }, toml::Value::Array(a)) => a.get_mut(*index),
            _ => None,
        })
}

/// The key as the file numbers it (`platforms[2].prefetch`), with the indices removals
/// have shifted put back; also the key of the array the last index is in, and that
/// original index (for an element's own path).
fn original_key(
    path: &[serde_path_to_error::Segment],
    removed: &HashMap<String, Vec<usize>>,
) -> (String, String, Option<usize>) {
    use serde_path_to_error::Segment;
    let mut key = String::new();
    let mut array_key = String::new();
    let mut last_index = None;
    for segment in path {
        match segment {
            Segment::Seq { index } => {
                let mut original = *index;
                for taken in removed.get(&key).map(Vec::as_slice).unwrap_or_default() {
                    if *taken <= original {
                        original += 1;
                    }
                }
                array_key = key.clone();
                last_index = Some(original);
                key.push_str(&format!("[{original}]"));
            }
            Segment::Map { key: name } | Segment::Enum { variant: name } => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(name);
                last_index = None;
            }
            Segment::Unknown => {
                key.push_str(".?");
                last_index = None;
            }
        }
    }
    (key, array_key, last_index)
}

struct Validator {
    path: String,
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
    /// Brokers configured but invalid: references to them are not reported again.
    invalid_brokers: HashSet<String>,
    /// Keys reported at the format level and taken out of the file: what validation would
    /// say about them next ("is missing") is a consequence, not another problem.
    taken_out: Vec<String>,
    /// `gateway.directory` could not be read: which regions exist is unknown.
    unknown_directory: bool,
}

impl Validator {
    fn new(path: &str) -> Validator {
        Validator {
            path: path.to_owned(),
            errors: Vec::new(),
            warnings: Vec::new(),
            invalid_brokers: HashSet::new(),
            taken_out: Vec::new(),
            unknown_directory: false,
        }
    }

    fn take_errors(&mut self) -> Vec<ConfigError> {
        std::mem::take(&mut self.errors)
    }

    /// A problem found reading the file's structure; the key is taken out of the file.
    fn format_error(&mut self, key: &str, message: impl Into<String>) {
        let message = in_toml_words(&message.into());
        // serde quotes the offending value; under these keys it may be a secret.
        let last = key.rsplit(['.', '[']).next().unwrap_or(key);
        let message = if ["url", "urls", "sha256"].contains(&last) || key.contains(".urls[") {
            without_values(&message)
        } else {
            message
        };
        if let Some(name) = key
            .strip_prefix("brokers.")
            .filter(|name| !name.contains('.'))
        {
            self.invalid_brokers.insert(name.to_owned());
        }
        self.errors.push(ConfigError::Invalid {
            path: self.path.clone(),
            key: if key.is_empty() {
                "(file)".to_owned()
            } else {
                key.to_owned()
            },
            message,
        });
        self.taken_out.push(key.to_owned());
    }

    /// Whether `key` is one taken out at the format level, or inside one.
    fn is_taken_out(&self, key: &str) -> bool {
        self.taken_out.iter().any(|out| {
            key == out
                || key
                    .strip_prefix(out.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
    }

    fn warn(&mut self, key: impl fmt::Display, message: impl fmt::Display) {
        self.warnings
            .push(format!("{}: {key}: {message}", self.path));
    }

    /// The secret named by `<prefix>password_file` (relative to the configuration's folder)
    /// or `<prefix>password_env`, at most one of them. `Err(())`: reported already.
    fn password(
        &mut self,
        prefix: &str,
        file: Option<&PathBuf>,
        env: Option<&String>,
        base: &Path,
    ) -> Result<Option<Secret>, ()> {
        match (file, env) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => {
                self.error(
                    format!("{prefix}password_env"),
                    format!("and {prefix}password_file are both set: give one"),
                );
                Err(())
            }
            (Some(file), None) => {
                let key = format!("{prefix}password_file");
                match secret::from_file(&base.join(file)) {
                    Ok(read) => {
                        if let Some(warning) = read.warning {
                            self.warn(&key, warning);
                        }
                        Ok(Some(read.secret))
                    }
                    Err(e) => {
                        self.error(key, e.to_string());
                        Err(())
                    }
                }
            }
            (None, Some(name)) => match secret::from_env(name) {
                Ok(secret) => Ok(Some(secret)),
                Err(e) => {
                    self.error(format!("{prefix}password_env"), e.to_string());
                    Err(())
                }
            },
        }
    }

    fn broker(&mut self, name: &str, raw: &RawBroker, base: &Path) -> Option<Broker> {
        let key = |field: &str| format!("brokers.{name}.{field}");
        let urls: Vec<(String, &str)> = match (&raw.url, &raw.urls) {
            (Some(url), None) => vec![(key("url"), url.as_str())],
            (None, Some(urls)) if urls.is_empty() => {
                self.error(key("urls"), "is empty (one URL per node of the cluster)");
                return None;
            }
            (None, Some(urls)) => urls
                .iter()
                .enumerate()
                .map(|(i, u)| (format!("brokers.{name}.urls[{i}]"), u.as_str()))
                .collect(),
            (None, None) => {
                self.error(
                    key("url"),
                    "is missing (or urls = [\"amqps://node1…\", …] for the nodes of a cluster)",
                );
                return None;
            }
            (Some(_), Some(_)) => {
                self.error(
                    format!("brokers.{name}"),
                    "has url and urls: give one (urls for the nodes of a cluster)",
                );
                return None;
            }
        };
        let password = self.password(
            &format!("brokers.{name}."),
            raw.password_file.as_ref(),
            raw.password_env.as_ref(),
            base,
        );
        let mut valid = password.is_ok();
        let password = password.ok().flatten();
        let separate_password = raw.password_file.is_some() || raw.password_env.is_some();
        let mut nodes: Vec<BrokerNode> = Vec::new();
        for (k, text) in &urls {
            if text.trim().is_empty() {
                self.error(k, "is missing");
                valid = false;
                continue;
            }
            let Ok(mut uri) = AMQPUri::from_str(text) else {
                // The parser's message may quote the URL, which may hold a password.
                self.error(
                    k,
                    "is not a valid AMQP URI (amqp://user@host:port/vhost or amqps://…)",
                );
                valid = false;
                continue;
            };
            let has_password = url::Url::parse(text).is_ok_and(|u| u.password().is_some());
            if has_password && separate_password {
                self.error(
                    k,
                    format!(
                        "has a password, and brokers.{name}.password_{} gives one too: leave it out of the URL",
                        if raw.password_file.is_some() { "file" } else { "env" }
                    ),
                );
                valid = false;
            } else if has_password && !is_guest(&uri) {
                self.warn(
                    k,
                    "holds the password; prefer password_file or password_env (the URL then has none)",
                );
            }
            if let Some(password) = &password {
                uri.authority.userinfo.password = password.expose().to_owned();
            }
            let node = BrokerNode::new(uri);
            if let Some(first) = nodes.first() {
                let (a, b) = (first.uri(), node.uri());
                if a.scheme != b.scheme
                    || a.vhost != b.vhost
                    || a.authority.userinfo.username != b.authority.userinfo.username
                {
                    self.error(
                        k,
                        format!(
                            "{} differs from {} in scheme, user or vhost: the nodes of one broker are one cluster",
                            node.display, first.display
                        ),
                    );
                    valid = false;
                }
            }
            if nodes.iter().any(|n| n.address == node.address) {
                self.error(k, format!("node {} is listed twice", node.address));
                valid = false;
            }
            nodes.push(node);
        }
        let amqps = nodes
            .first()
            .is_some_and(|n| n.uri().scheme == AMQPScheme::AMQPS);
        let tls = match &raw.tls {
            Some(tls) if amqps => {
                let loaded = self.broker_tls(name, tls, base, &nodes);
                valid &= loaded.is_some();
                loaded
            }
            Some(_) => {
                if !nodes.is_empty() {
                    self.error(
                        key("tls"),
                        "is set, but the broker's URL is amqp:// (plain): use amqps:// for TLS",
                    );
                }
                valid = false;
                None
            }
            None if amqps => {
                self.error(
                    key("tls.ca_file"),
                    "is missing: amqps:// needs the CA that signed the broker's certificate \
                     ([brokers.NAME.tls] ca_file = …; for a public CA the system bundle, \
                     e.g. /etc/ssl/certs/ca-certificates.crt)",
                );
                valid = false;
                None
            }
            None => None,
        };
        if !valid || nodes.is_empty() {
            return None;
        }
        let display = match nodes.as_slice() {
            [one] => one.display.clone(),
            [first, ..] => {
                let uri = first.uri();
                let addresses: Vec<&str> = nodes.iter().map(|n| n.address.as_str()).collect();
                let (_, path) = first
                    .display
                    .split_once(&format!("@{}", first.address))
                    .unwrap_or(("", ""));
                format!(
                    "{}://{}@{}{path}",
                    uri.scheme,
                    uri.authority.userinfo.username,
                    addresses.join(",")
                )
            }
            [] => String::new(),
        };
        Some(Broker {
            name: name.to_owned(),
            nodes,
            tls,
            display,
        })
    }

    fn broker_tls(
        &mut self,
        name: &str,
        raw: &RawBrokerTls,
        base: &Path,
        nodes: &[BrokerNode],
    ) -> Option<BrokerTls> {
        let key = |field: &str| format!("brokers.{name}.tls.{field}");
        let Some(ca_file) = &raw.ca_file else {
            self.error(
                key("ca_file"),
                "is missing (the CA that signed the broker's certificate)",
            );
            return None;
        };
        let client = match (&raw.client_cert_file, &raw.client_key_file) {
            (Some(cert), Some(key_file)) => Some((base.join(cert), base.join(key_file))),
            (None, None) => None,
            (Some(_), None) => {
                self.error(
                    key("client_key_file"),
                    "is missing (client_cert_file is set)",
                );
                return None;
            }
            (None, Some(_)) => {
                self.error(
                    key("client_cert_file"),
                    "is missing (client_key_file is set)",
                );
                return None;
            }
        };
        match &raw.server_name {
            Some(server_name) if !tls::valid_server_name(server_name) => {
                self.error(
                    key("server_name"),
                    format!("{server_name:?} is not a DNS name or IP address"),
                );
                return None;
            }
            Some(_) => {}
            None => {
                let bad: Vec<&str> = nodes
                    .iter()
                    .map(|n| n.uri().authority.host.as_str())
                    .filter(|host| !tls::valid_server_name(host))
                    .collect();
                if !bad.is_empty() {
                    self.error(
                        key("server_name"),
                        format!(
                            "is needed: {} cannot be checked against a certificate",
                            bad.join(", ")
                        ),
                    );
                    return None;
                }
            }
        }
        if let Some((_, key_file)) = &client
            && let Some(warning) = secret::world_readable(key_file)
        {
            self.warn(key("client_key_file"), warning);
        }
        let client = client.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        match BrokerTls::load(&base.join(ca_file), client, raw.server_name.clone()) {
            Ok(tls) => Some(tls),
            Err(e) => {
                self.error(key(e.key), e.message);
                None
            }
        }
    }

    fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        if self.is_taken_out(&key) {
            return;
        }
        self.errors.push(ConfigError::Invalid {
            path: self.path.clone(),
            key,
            message: message.into(),
        });
    }

    fn required<'a>(&mut self, key: &str, value: &'a str) -> Option<&'a str> {
        if value.trim().is_empty() {
            self.error(key, "is missing");
            None
        } else {
            Some(value)
        }
    }

    fn land(&mut self, key: &str, value: &str) -> Option<Land> {
        let value = self.required(key, value)?;
        match value.parse() {
            Ok(land) => Some(land),
            Err(e) => {
                self.error(key, e.to_string());
                None
            }
        }
    }

    fn broker_ref(
        &mut self,
        key: &str,
        value: &str,
        names: &HashMap<&str, BrokerIndex>,
    ) -> Option<BrokerIndex> {
        let value = self.required(key, value)?;
        match names.get(value) {
            Some(i) => Some(*i),
            // Declared, but reported invalid already: one error is enough.
            None if self.invalid_brokers.contains(value) => None,
            None => {
                let mut known: Vec<_> = names.keys().copied().collect();
                known.sort_unstable();
                self.error(
                    key,
                    format!(
                        "unknown broker {value:?} (configured: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                None
            }
        }
    }

    /// Puts the password of `store.password_file` or `store.password_env` into a postgres://
    /// URL, which must not have one of its own; warns about one written into the URL.
    fn store_password(&mut self, url: &mut String, raw: &RawStore, base: &Path) {
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let Ok(password) = self.password(
            "store.",
            raw.password_file.as_ref(),
            raw.password_env.as_ref(),
            base,
        ) else {
            return;
        };
        let key = if raw.password_file.is_some() {
            "store.password_file"
        } else {
            "store.password_env"
        };
        let parsed = url::Url::parse(url);
        let has_password = parsed.as_ref().is_ok_and(|u| u.password().is_some());
        match (password, parsed) {
            (Some(_), _) if !postgres => self.error(
                key,
                "needs a postgres:// store.url (the embedded SQLite store has no password)",
            ),
            (Some(_), Ok(_)) if has_password => self.error(
                "store.url",
                format!("has a password, and {key} gives one too: leave it out of the URL"),
            ),
            (Some(password), Ok(mut parsed)) => {
                if parsed.set_password(Some(password.expose())).is_ok() {
                    *url = parsed.to_string();
                } else {
                    self.error("store.url", "has no host to give the password for");
                }
            }
            (Some(_), Err(_)) => self.error("store.url", "is not a valid URL"),
            (None, _) if postgres && has_password => self.warn(
                "store.url",
                "holds the password; prefer store.password_file or store.password_env (the URL then has none)",
            ),
            (None, _) => {}
        }
    }

    fn console(&mut self, raw: &RawConsole, has_tokens: bool) -> Option<ConsoleSettings> {
        let a = self.required("console.address", &raw.address)?;
        let Ok(address) = a.parse::<std::net::SocketAddr>() else {
            self.error(
                "console.address",
                format!("{a:?} is not an address like 127.0.0.1:8080"),
            );
            return None;
        };
        if !has_tokens {
            self.error(
                "console",
                "operators log in with an admin token: configure [admin] with [[admin.tokens]]",
            );
            return None;
        }
        if !address.ip().is_loopback() {
            self.warn(
                "console.address",
                format!(
                    "{address} is reachable from other machines over plain HTTP: tokens and \
                     session cookies cross the network readable; put a TLS-terminating proxy \
                     in front, or listen on loopback"
                ),
            );
        }
        Some(ConsoleSettings { address })
    }

    fn admin(
        &mut self,
        raw: &RawAdmin,
        base: &Path,
        platforms: &[Platform],
        destinations: &[Destination],
    ) -> Option<AdminSettings> {
        let address = match self.required("admin.address", &raw.address) {
            Some(a) => match a.parse::<std::net::SocketAddr>() {
                Ok(address) => Some(address),
                Err(_) => {
                    self.error(
                        "admin.address",
                        format!("{a:?} is not an address like 127.0.0.1:50051"),
                    );
                    None
                }
            },
            None => None,
        };
        let tls = match (&raw.tls_cert, &raw.tls_key) {
            (Some(cert), Some(key)) => Some(AdminTls {
                cert: base.join(cert),
                key: base.join(key),
                client_ca: raw.client_ca.as_ref().map(|ca| base.join(ca)),
            }),
            (None, None) => {
                if raw.client_ca.is_some() {
                    self.error(
                        "admin.client_ca",
                        "needs TLS: set admin.tls_cert and admin.tls_key too",
                    );
                }
                None
            }
            (Some(_), None) => {
                self.error("admin.tls_key", "is missing (admin.tls_cert is set)");
                None
            }
            (None, Some(_)) => {
                self.error("admin.tls_cert", "is missing (admin.tls_key is set)");
                None
            }
        };
        if let Some(tls) = &tls {
            for (key, path) in [
                ("admin.tls_cert", Some(&tls.cert)),
                ("admin.tls_key", Some(&tls.key)),
                ("admin.client_ca", tls.client_ca.as_ref()),
            ] {
                if let Some(path) = path
                    && !path.is_file()
                {
                    self.error(key, format!("{} is not a readable file", path.display()));
                }
            }
        }
        if let Some(address) = address
            && tls.is_none()
            && !address.ip().is_loopback()
        {
            self.warn(
                "admin.address",
                format!(
                    "{address} is reachable from other machines, without TLS: bearer tokens and \
                     dead-letter payloads would cross the network in clear text; set \
                     admin.tls_cert and admin.tls_key, or listen on 127.0.0.1"
                ),
            );
        }
        let mut tokens: Vec<AdminToken> = Vec::new();
        for (i, t) in raw.tokens.iter().enumerate() {
            let key = |field: &str| format!("admin.tokens[{i}].{field}");
            let name = self.required(&key("name"), &t.name).map(str::to_owned);
            if let Some(name) = &name
                && tokens.iter().any(|other| &other.name == name)
            {
                self.error(key("name"), format!("token name {name:?} is used twice"));
            }
            let text = match (&t.sha256, &t.sha256_file) {
                (Some(text), None) => Some((key("sha256"), Secret::new(text.clone()))),
                (None, Some(file)) => match secret::from_file(&base.join(file)) {
                    Ok(read) => {
                        if let Some(warning) = read.warning {
                            self.warn(key("sha256_file"), warning);
                        }
                        Some((key("sha256_file"), read.secret))
                    }
                    Err(e) => {
                        self.error(key("sha256_file"), e.to_string());
                        None
                    }
                },
                (None, None) => {
                    self.error(key("sha256"), "is missing (or sha256_file)");
                    None
                }
                (Some(_), Some(_)) => {
                    self.error(key("sha256_file"), "and sha256 are both set: give one");
                    None
                }
            };
            // Never quote the value: someone may have pasted the token itself here.
            let sha256 = text.and_then(|(field, text)| {
                let hash = hex::decode(text.expose().trim())
                    .ok()
                    .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok());
                if hash.is_none() {
                    let what = if field.ends_with("_file") { "hold" } else { "be" };
                    self.error(
                        field,
                        format!("must {what} the SHA-256 of the token as 64 hex digits (ozg-gateway hash-token prints it)"),
                    );
                }
                hash
            });
            let mut roles = Vec::new();
            if t.roles.is_empty() {
                self.error(
                    key("roles"),
                    format!("is missing (one or more of {})", Role::NAMES.join(", ")),
                );
            }
            for r in &t.roles {
                match r.as_str() {
                    "viewer" => roles.push(Role::Viewer),
                    "operator" => roles.push(Role::Operator),
                    "payload" => roles.push(Role::Payload),
                    other => self.error(
                        key("roles"),
                        format!("unknown role {other:?} (one of {})", Role::NAMES.join(", ")),
                    ),
                }
            }
            let scope = self.token_scope(i, t, destinations);
            let lands: HashSet<Land> = platforms
                .iter()
                .map(|p| p.land)
                .chain(destinations.iter().map(|d| d.land))
                .collect();
            if t.laender.is_none() && roles.contains(&Role::Operator) && lands.len() > 1 {
                self.warn(
                    key("laender"),
                    "is not set: this operator token sees and changes every Land's part; \
                     name its Länder (laender = [\"HE\"]), or write laender = [\"*\"] to say so",
                );
            }
            if let (Some(name), Some(sha256), Some(scope)) = (name, sha256, scope) {
                tokens.push(AdminToken {
                    name,
                    sha256,
                    roles,
                    scope,
                });
            }
        }
        Some(AdminSettings {
            address: address?,
            tls,
            tokens,
        })
    }

    /// The scope of `admin.tokens[i]`; `None` after reporting what is wrong with it.
    fn token_scope(
        &mut self,
        i: usize,
        t: &RawToken,
        destinations: &[Destination],
    ) -> Option<Scope> {
        let key = |field: &str| format!("admin.tokens[{i}].{field}");
        let mut valid = true;
        let laender = match &t.laender {
            None => None,
            Some(codes) if codes.iter().any(|c| c.trim() == "*") => {
                if codes.len() > 1 {
                    self.error(
                        key("laender"),
                        "\"*\" (every Land) stands alone: give it, or the Länder",
                    );
                    valid = false;
                }
                None
            }
            Some(codes) if codes.is_empty() => {
                self.error(
                    key("laender"),
                    "is empty: name the Länder (codes like \"06\" or abbreviations like \"HE\"), or \"*\" for every Land",
                );
                valid = false;
                None
            }
            Some(codes) => {
                let mut laender = Vec::new();
                for code in codes {
                    match code.trim().parse::<Land>() {
                        Ok(land) => laender.push(land),
                        Err(e) => {
                            self.error(key("laender"), e.to_string());
                            valid = false;
                        }
                    }
                }
                laender.sort();
                laender.dedup();
                Some(laender)
            }
        };
        let named = match &t.destinations {
            None => None,
            Some(ids) if ids.is_empty() => {
                self.error(
                    key("destinations"),
                    "is empty: name destinations, or leave the key out for every destination of the token's Länder",
                );
                valid = false;
                None
            }
            Some(ids) => {
                let mut named: Vec<String> = Vec::new();
                for id in ids {
                    let id = id.trim();
                    if let Err(message) = check_id(id) {
                        self.error(key("destinations"), message);
                        valid = false;
                        continue;
                    }
                    match destinations.iter().find(|d| d.id == id) {
                        Some(d) if laender.as_ref().is_some_and(|l| !l.contains(&d.land)) => {
                            self.error(
                                key("destinations"),
                                format!(
                                    "destination {id:?} is of Land {} {}, which is not among laender",
                                    d.land,
                                    d.land.abbreviation()
                                ),
                            );
                            valid = false;
                        }
                        Some(_) => {}
                        None => self.warn(
                            key("destinations"),
                            format!(
                                "destination {id:?} is not in this file: it counts once it is created through the admin API"
                            ),
                        ),
                    }
                    named.push(id.to_owned());
                }
                named.sort();
                named.dedup();
                Some(named)
            }
        };
        valid.then_some(Scope {
            laender,
            destinations: named,
        })
    }

    fn validate(
        mut self,
        raw: RawConfig,
        directory: Arc<Directory>,
        base: &Path,
    ) -> Result<Config, ConfigErrors> {
        // Brokers.
        let mut brokers = Vec::new();
        if raw.brokers.is_empty() {
            self.error(
                "brokers",
                "no broker is configured ([brokers.NAME] with url = \"amqp://…\")",
            );
        }
        for (name, broker) in &raw.brokers {
            match self.broker(name, broker, base) {
                Some(broker) => brokers.push(broker),
                None => {
                    self.invalid_brokers.insert(name.clone());
                }
            }
        }
        let broker_names: HashMap<&str, BrokerIndex> = brokers
            .iter()
            .enumerate()
            .map(|(i, b)| (b.name.as_str(), i))
            .collect();

        // Gateway settings.
        let g = &raw.gateway;
        let dead_letter_broker = self.broker_ref(
            "gateway.dead_letter_broker",
            &g.dead_letter_broker,
            &broker_names,
        );
        let max_message_bytes = g.max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        if max_message_bytes == 0 || max_message_bytes > 512 * 1024 * 1024 {
            self.error(
                "gateway.max_message_bytes",
                format!("{max_message_bytes} is out of range (1 … 536870912)"),
            );
        }
        let confirm_timeout = g.confirm_timeout.unwrap_or(DEFAULT_CONFIRM_TIMEOUT);
        if confirm_timeout.is_zero() {
            self.error("gateway.confirm_timeout", "must be longer than zero");
        }
        let dead_letter_exchange = g
            .dead_letter_exchange
            .clone()
            .unwrap_or_else(|| DEFAULT_DEAD_LETTER_EXCHANGE.to_owned());
        if dead_letter_exchange.is_empty() {
            self.error("gateway.dead_letter_exchange", "must not be empty");
        }
        let dead_letter_queue = g
            .dead_letter_queue
            .clone()
            .unwrap_or_else(|| DEFAULT_DEAD_LETTER_QUEUE.to_owned());
        if dead_letter_queue.is_empty() {
            self.error("gateway.dead_letter_queue", "must not be empty");
        }

        // Store.
        let mut store_url = match &raw.store.url {
            Some(url) => url.clone(),
            None => {
                let dir = g
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
                format!("sqlite://{}", dir.join("ozg-gateway.db").display())
            }
        };
        if !(store_url.starts_with("sqlite:")
            || store_url.starts_with("postgres://")
            || store_url.starts_with("postgresql://"))
        {
            self.error(
                "store.url",
                "must start with sqlite: (embedded) or postgres:// (PostgreSQL)",
            );
        }
        self.store_password(&mut store_url, &raw.store, base);
        let dedup_window = raw
            .store
            .dedup_window
            .unwrap_or(crate::store::DEFAULT_WINDOW);
        if dedup_window.is_zero() {
            self.error("store.dedup_window", "must be longer than zero");
        }
        let directory_poll = raw.store.directory_poll.unwrap_or(DEFAULT_DIRECTORY_POLL);
        if directory_poll < Duration::from_millis(100) {
            // Each poll is one query per instance: faster than this only loads the store.
            self.error("store.directory_poll", "must be at least 100ms");
        }

        // Retries.
        let delays = raw
            .retry
            .delays
            .as_ref()
            .map(|ds| ds.iter().map(|d| d.into_inner()).collect())
            .unwrap_or_else(default_retry_delays);
        if delays.is_empty() || delays.len() > 20 {
            self.error("retry.delays", "must list 1 to 20 durations");
        }
        if delays
            .iter()
            .any(|d| d.as_millis() == 0 || d.as_secs() > 24 * 3600)
        {
            self.error("retry.delays", "each delay must be between 1 ms and 24 h");
        }
        let max_attempts = raw.retry.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if max_attempts == 0 {
            self.error("retry.max_attempts", "must be at least 1 (1 = never retry)");
        }
        let retry_prefetch = raw.retry.prefetch.unwrap_or(DEFAULT_PREFETCH);
        if retry_prefetch == 0 || retry_prefetch > u32::from(u16::MAX) {
            self.error(
                "retry.prefetch",
                format!("{retry_prefetch} is out of range (1 … 65535)"),
            );
        }
        let retry = RetrySettings {
            delays,
            max_attempts,
            max_age: raw.retry.max_age.unwrap_or(DEFAULT_RETRY_MAX_AGE),
            prefetch: u16::try_from(retry_prefetch).unwrap_or(u16::MAX),
        };

        // Telemetry.
        let t = &raw.telemetry;
        let defaults = TelemetrySettings::default();
        let otlp_protocol = match t.otlp_protocol.as_deref() {
            None | Some("grpc") => OtlpProtocol::Grpc,
            Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some(other) => {
                self.error(
                    "telemetry.otlp_protocol",
                    format!("unknown protocol {other:?} (grpc or http/protobuf)"),
                );
                OtlpProtocol::Grpc
            }
        };
        if let Some(endpoint) = &t.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            self.error(
                "telemetry.otlp_endpoint",
                "must be an http:// or https:// URL",
            );
        }
        let sampling_ratio = t.sampling_ratio.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sampling_ratio) {
            self.error(
                "telemetry.sampling_ratio",
                format!("{sampling_ratio} is not between 0 and 1"),
            );
        }
        let metrics_address = match &t.metrics_address {
            None => None,
            Some(a) => match a.parse::<std::net::SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.error(
                        "telemetry.metrics_address",
                        format!("{a:?} is not an address like 127.0.0.1:9464"),
                    );
                    None
                }
            },
        };
        let backlog_interval = t.backlog_interval.unwrap_or(defaults.backlog_interval);
        if backlog_interval.is_zero() {
            self.error("telemetry.backlog_interval", "must be longer than zero");
        }
        let log_level = t.log_level.clone().unwrap_or(defaults.log_level);
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            self.error(
                "telemetry.log_level",
                format!("{log_level:?} is not a log filter (e.g. info, or info,lapin=off)"),
            );
        }
        let log_format = match t.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.error(
                    "telemetry.log_format",
                    format!("unknown format {other:?} (text or json)"),
                );
                LogFormat::Text
            }
        };
        let telemetry = TelemetrySettings {
            otlp_endpoint: t.otlp_endpoint.clone(),
            otlp_protocol,
            sampling_ratio,
            metrics_address,
            backlog_interval,
            log_level,
            log_format,
        };

        // Platforms.
        let mut platforms = Vec::new();
        let mut platform_ids = HashSet::new();
        let mut ingress_queues = HashSet::new();
        if raw.platforms.is_empty() {
            self.error("platforms", "no platform is configured ([[platforms]])");
        }
        for (i, p) in raw.platforms.iter().enumerate() {
            let key = |field: &str| format!("platforms[{i}].{field}");
            let id = self.required(&key("id"), &p.id).map(str::to_owned);
            if let Some(id) = &id
                && !platform_ids.insert(id.clone())
            {
                self.error(key("id"), format!("platform {id:?} is configured twice"));
            }
            let land = self.land(&key("land"), &p.land);
            let broker = self.broker_ref(&key("broker"), &p.broker, &broker_names);
            let ingress = self.required(&key("ingress_queue"), &p.ingress_queue);
            if let (Some(q), Some(b)) = (ingress, broker)
                && !ingress_queues.insert((b, q.to_owned()))
            {
                self.error(
                    key("ingress_queue"),
                    format!("queue {q:?} on that broker is already another platform's ingress"),
                );
            }
            let status = self.required(&key("status_exchange"), &p.status_exchange);
            let status_format = match p.status_format.as_deref() {
                None | Some("json") => StatusFormat::Json,
                Some("protobuf") => StatusFormat::Protobuf,
                Some(other) => {
                    self.error(
                        key("status_format"),
                        format!("unknown format {other:?} (json or protobuf)"),
                    );
                    StatusFormat::Json
                }
            };
            let prefetch = p.prefetch.unwrap_or(DEFAULT_PREFETCH);
            if prefetch == 0 || prefetch > u32::from(u16::MAX) {
                self.error(
                    key("prefetch"),
                    format!("{prefetch} is out of range (1 … 65535)"),
                );
            }
            if let (Some(id), Some(land), Some(broker), Some(ingress), Some(status)) =
                (id, land, broker, ingress, status)
            {
                platforms.push(Platform {
                    status_routing_key: p.status_routing_key.clone().unwrap_or_else(|| id.clone()),
                    id,
                    land,
                    broker,
                    ingress_queue: ingress.to_owned(),
                    status_exchange: status.to_owned(),
                    status_format,
                    prefetch: u16::try_from(prefetch).unwrap_or(u16::MAX),
                });
            }
        }

        // Destinations.
        let rules = DestinationRules::new(
            &brokers,
            dead_letter_broker
                .map(|b| (b, dead_letter_exchange.as_str(), dead_letter_queue.as_str())),
            &platforms,
        );
        let mut destinations: Vec<Destination> = Vec::new();
        let mut destination_ids: HashMap<String, DestinationIndex> = HashMap::new();
        for (i, d) in raw.destinations.iter().enumerate() {
            let key = format!("destinations[{i}]");
            let spec = DestinationSpec {
                id: d.id.clone(),
                name: d.name.clone(),
                kind: d.kind.clone(),
                land: d.land.clone(),
                broker: d.broker.clone(),
                exchange: d.exchange.clone(),
                routing_key: d.routing_key.clone(),
                receipt_queue: d.receipt_queue.clone().unwrap_or_default(),
            };
            if !d.id.trim().is_empty() && destination_ids.contains_key(&d.id) {
                self.error(
                    format!("{key}.id"),
                    format!("destination {:?} is configured twice", d.id),
                );
                continue;
            }
            let broker_reported = self.invalid_brokers.contains(&spec.broker);
            let valid = validate_destination(&key, &spec, &rules, |k, m| {
                if !(broker_reported && k.ends_with(".broker")) {
                    self.error(k, m)
                }
            });
            if let Some(q) = &d.receipt_queue
                && q.trim().is_empty()
            {
                self.error(format!("{key}.receipt_queue"), "must not be empty");
            }
            if let Some(destination) = valid {
                destination_ids.insert(destination.id.clone(), destinations.len());
                destinations.push(destination);
            }
        }

        // Services catalogue.
        let service_specs: Vec<(String, ServiceSpec)> = raw
            .services
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    format!("services[{i}]"),
                    ServiceSpec {
                        key: r.key.clone(),
                        name: r.name.clone(),
                    },
                )
            })
            .collect();
        let services = validate_services(&service_specs, |k, m| self.error(k, m));

        // Admin API.
        let admin = raw
            .admin
            .as_ref()
            .and_then(|a| self.admin(a, base, &platforms, &destinations));
        let has_tokens = raw.admin.as_ref().is_some_and(|a| !a.tokens.is_empty());
        let console = raw
            .console
            .as_ref()
            .and_then(|c| self.console(c, has_tokens));

        // Receipts.
        let r = &raw.receipts;
        let receipts = ReceiptSettings {
            overdue_after: r.overdue_after.unwrap_or(DEFAULT_OVERDUE_AFTER),
            check_interval: r.check_interval.unwrap_or(DEFAULT_OVERDUE_CHECK),
            retention: r.retention.unwrap_or(DEFAULT_RECEIPT_RETENTION),
        };
        for (key, value) in [
            ("receipts.overdue_after", receipts.overdue_after),
            ("receipts.check_interval", receipts.check_interval),
            ("receipts.retention", receipts.retention),
        ] {
            if value.is_zero() {
                self.error(key, "must be longer than zero");
            }
        }
        if receipts.retention < receipts.overdue_after {
            self.error(
                "receipts.retention",
                "must be at least receipts.overdue_after (an overdue submission must still be known)",
            );
        }

        // Routes.
        let raw_routes: Vec<(String, RouteSpec)> = raw
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    format!("routes[{i}]"),
                    RouteSpec {
                        service: r.service.clone(),
                        region: r.region.clone(),
                        destination: r.destination.clone(),
                    },
                )
            })
            .collect();
        // A destination configured but left out (its own errors, or its broker's, are
        // reported) is not "unknown" to its routes: one missing password file would otherwise
        // bury its cause under an error for every route to that broker.
        let left_out: HashSet<String> = raw_routes
            .iter()
            .filter(|(_, r)| {
                !destination_ids.contains_key(&r.destination)
                    && raw.destinations.iter().any(|d| d.id == r.destination)
            })
            .map(|(key, _)| format!("{key}.destination"))
            .collect();
        let unknown_directory = self.unknown_directory;
        let routes = validate_routes(&raw_routes, &destination_ids, &directory, |key, message| {
            let unknown_region = unknown_directory && message.contains("municipality directory");
            if !left_out.contains(&key) && !unknown_region {
                self.error(key, message)
            }
        });

        if self.errors.is_empty()
            && let Some(dead_letter_broker) = dead_letter_broker
        {
            Ok(Config {
                source: self.path,
                warnings: self.warnings,
                gateway: GatewaySettings {
                    dead_letter_broker,
                    dead_letter_exchange,
                    dead_letter_queue,
                    max_message_bytes: usize::try_from(max_message_bytes).unwrap_or(usize::MAX),
                    confirm_timeout,
                    shutdown_grace: g.shutdown_grace.unwrap_or(DEFAULT_SHUTDOWN_GRACE),
                    verify_attachment_hashes: g.verify_attachment_hashes.unwrap_or(true),
                    store_dead_letters: g.store_dead_letters.unwrap_or(true),
                },
                retry,
                telemetry,
                store: StoreSettings {
                    display: crate::store::redact_url(&store_url),
                    url: store_url,
                    dedup_window,
                    trace_retention: raw.store.trace_retention.unwrap_or(DEFAULT_TRACE_RETENTION),
                    dead_letter_retention: raw
                        .store
                        .dead_letter_retention
                        .unwrap_or(DEFAULT_DEAD_LETTER_RETENTION),
                    directory_poll,
                },
                brokers,
                platforms,
                destinations,
                routes,
                services,
                receipts,
                admin,
                console,
                directory,
            })
        } else {
            Err(ConfigErrors(self.errors))
        }
    }
}

/// serde's message without the values it quotes (`invalid type: string "…", expected …`
/// → `invalid type: a string, expected …`).
fn without_values(message: &str) -> String {
    let Some((what, rest)) = message.split_once(": ") else {
        return message.to_owned();
    };
    let expected = rest.find(", expected").map_or("", |at| &rest[at..]);
    let kind = rest.split([' ', ',']).next().unwrap_or("value");
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{what}: {article} {kind}{expected}")
}

/// serde's type names in the words of a TOML file.
fn in_toml_words(message: &str) -> String {
    let mut out = message.to_owned();
    if let Some(at) = out.find("expected struct Raw") {
        let end = out[at..]
            .find(|c: char| !(c.is_alphanumeric() || c == ' '))
            .map_or(out.len(), |n| at + n);
        out.replace_range(at..end, "expected a table");
    }
    for (rust, toml) in [
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
    ] {
        out = out.replace(rust, toml);
    }
    out
}

/// RabbitMQ's default user: its password is public, and the broker lets it in only over
/// loopback, so local set-ups may write it into the URL without a warning.
fn is_guest(uri: &AMQPUri) -> bool {
    let user = &uri.authority.userinfo;
    user.username == "guest" && user.password == "guest"
}

/// A destination as an operator writes it, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationSpec {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub land: String,
    pub broker: String,
    pub exchange: String,
    pub routing_key: String,
    /// Empty: the back office sends no receipts.
    pub receipt_queue: String,
}

/// The longest id (of a destination, a dead letter, a platform in a filter …) anyone may
/// give: ids go into headers, logs, metrics labels and queue names.
pub const MAX_ID_CHARS: usize = 128;
/// The longest name of a destination or a service.
pub const MAX_NAME_CHARS: usize = 300;
/// AMQP's limit for exchange, queue and routing key names (a short string).
pub const MAX_AMQP_NAME_BYTES: usize = 255;

/// A value from outside, for a message: escaped, and cut after a few characters, so that
/// a message never carries much of what someone sent.
pub fn quoted(value: &str) -> String {
    const SHOWN: usize = 40;
    match value.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

/// Text of at most `max_chars` characters without control characters.
pub fn check_text(value: &str, max_chars: usize) -> Result<(), String> {
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(format!(
            "has {chars} characters, at most {max_chars} are allowed ({})",
            quoted(value)
        ));
    }
    match value.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, c)) => Err(format!(
            "contains a control character (U+{:04X}) at byte {at}",
            u32::from(c)
        )),
        None => Ok(()),
    }
}

/// An id: 1 to [`MAX_ID_CHARS`] letters, digits, `-`, `_`, `.` and `:`.
pub fn check_id(value: &str) -> Result<(), String> {
    check_text(value, MAX_ID_CHARS)?;
    match value
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        Some(c) => Err(format!(
            "{} is not an id: letters, digits, '-', '_', '.' and ':' only, not {c:?}",
            quoted(value)
        )),
        None => Ok(()),
    }
}

/// An exchange, queue or routing key name.
pub fn check_amqp_name(value: &str) -> Result<(), String> {
    check_text(value, MAX_AMQP_NAME_BYTES)?;
    if value.len() > MAX_AMQP_NAME_BYTES {
        return Err(format!(
            "has {} bytes, at most {MAX_AMQP_NAME_BYTES} are allowed in an AMQP name",
            value.len()
        ));
    }
    Ok(())
}

/// Exchanges and queues whose names start with this belong to the gateway (dead letters,
/// retries, replays), on whatever broker.
pub const GATEWAY_NAMESPACE: &str = "ozg.gateway.";

/// What a destination may not point at, besides its own fields' rules: the gateway's own
/// exchanges and queues (a delivery into the replay queue would come back for ever), and a
/// platform's ingress queue (the same loop through the platform).
#[derive(Debug, Clone)]
pub struct DestinationRules<'a> {
    pub brokers: &'a [Broker],
    /// The broker and names of the dead-letter exchange and queue, which may be outside
    /// [`GATEWAY_NAMESPACE`].
    dead_letters: Option<(BrokerIndex, &'a str, &'a str)>,
    /// (broker, queue, platform id) of every platform.
    ingress: Vec<(BrokerIndex, &'a str, &'a str)>,
}

impl<'a> DestinationRules<'a> {
    pub fn new(
        brokers: &'a [Broker],
        dead_letters: Option<(BrokerIndex, &'a str, &'a str)>,
        platforms: &'a [Platform],
    ) -> DestinationRules<'a> {
        DestinationRules {
            brokers,
            dead_letters,
            ingress: platforms
                .iter()
                .map(|p| (p.broker, p.ingress_queue.as_str(), p.id.as_str()))
                .collect(),
        }
    }

    /// Why `exchange` on `broker` is none a destination may publish to.
    fn exchange_taken(&self, broker: BrokerIndex, exchange: &str) -> Option<String> {
        if exchange.starts_with(GATEWAY_NAMESPACE) {
            return Some(format!(
                "{} is the gateway's own (names starting with {GATEWAY_NAMESPACE} are)",
                quoted(exchange)
            ));
        }
        match self.dead_letters {
            Some((b, dead, _)) if b == broker && dead == exchange => Some(format!(
                "{} is the gateway's dead-letter exchange",
                quoted(exchange)
            )),
            _ => None,
        }
    }

    /// Why queue `queue` on `broker` is none a destination may deliver to or read from.
    fn queue_taken(&self, broker: BrokerIndex, queue: &str) -> Option<String> {
        if queue.starts_with(GATEWAY_NAMESPACE) {
            return Some(format!(
                "{} is the gateway's own queue (names starting with {GATEWAY_NAMESPACE} are)",
                quoted(queue)
            ));
        }
        if let Some((b, _, dead)) = self.dead_letters
            && b == broker
            && dead == queue
        {
            return Some(format!(
                "{} is the gateway's dead-letter queue",
                quoted(queue)
            ));
        }
        self.ingress
            .iter()
            .find(|(b, q, _)| *b == broker && *q == queue)
            .map(|(_, _, platform)| {
                format!(
                    "{} is the ingress queue of platform {}",
                    quoted(queue),
                    quoted(platform)
                )
            })
    }
}

impl Config {
    /// The rules for destinations, for entries that come from elsewhere than the file.
    pub fn destination_rules(&self) -> DestinationRules<'_> {
        DestinationRules::new(
            &self.brokers,
            Some((
                self.gateway.dead_letter_broker,
                self.gateway.dead_letter_exchange.as_str(),
                self.gateway.dead_letter_queue.as_str(),
            )),
            &self.platforms,
        )
    }
}

/// Validates one destination the same way wherever it comes from (file or admin API);
/// errors go to `report(key, message)` with keys under `key`. Duplicate ids are the
/// caller's to check: only it knows the other destinations.
pub fn validate_destination(
    key: &str,
    spec: &DestinationSpec,
    rules: &DestinationRules,
    mut report: impl FnMut(String, String),
) -> Option<Destination> {
    let brokers = rules.brokers;
    let k = |field: &str| format!("{key}.{field}");
    let mut check = |field: &str, result: Result<(), String>| match result {
        Ok(()) => true,
        Err(message) => {
            report(k(field), message);
            false
        }
    };
    let present = |value: &str| {
        if value.trim().is_empty() {
            Err("is missing".to_owned())
        } else {
            Ok(())
        }
    };
    let has_id = check("id", present(&spec.id).and_then(|()| check_id(&spec.id)));
    let has_name = check(
        "name",
        present(&spec.name).and_then(|()| check_text(&spec.name, MAX_NAME_CHARS)),
    );
    let [has_kind, has_land, has_broker] = [
        ("kind", &spec.kind),
        ("land", &spec.land),
        ("broker", &spec.broker),
    ]
    .map(|(field, value)| {
        check(
            field,
            present(value).and_then(|()| check_text(value, MAX_ID_CHARS)),
        )
    });
    let names_ok = [
        ("exchange", &spec.exchange),
        ("routing_key", &spec.routing_key),
        ("receipt_queue", &spec.receipt_queue),
    ]
    .map(|(field, value)| check(field, check_amqp_name(value)))
    .iter()
    .all(|ok| *ok);
    let kind = if has_kind {
        match spec.kind.parse::<AuthorityKind>() {
            Ok(kind) => Some(kind),
            Err(()) => {
                report(
                    k("kind"),
                    format!(
                        "unknown kind {} (one of {})",
                        quoted(&spec.kind),
                        AuthorityKind::NAMES.join(", ")
                    ),
                );
                None
            }
        }
    } else {
        None
    };
    let land = if has_land {
        match spec.land.parse::<Land>() {
            Ok(land) => Some(land),
            Err(e) => {
                report(k("land"), e.to_string());
                None
            }
        }
    } else {
        None
    };
    let broker = match brokers.iter().position(|b| b.name == spec.broker) {
        Some(i) => Some(i),
        None if !has_broker => None,
        None => {
            let mut known: Vec<&str> = brokers.iter().map(|b| b.name.as_str()).collect();
            known.sort_unstable();
            report(
                k("broker"),
                format!(
                    "unknown broker {} (configured: {})",
                    quoted(&spec.broker),
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            );
            None
        }
    };
    if !names_ok {
        return None;
    }
    if spec.exchange.is_empty() && spec.routing_key.is_empty() {
        report(
            k("routing_key"),
            "is missing (with the default exchange it names the back office's queue)".to_owned(),
        );
        return None;
    }
    let mut targets_free = true;
    if let Some(broker) = broker {
        let receipt_queue = spec.receipt_queue.trim();
        let taken = [
            ("exchange", rules.exchange_taken(broker, &spec.exchange)),
            (
                "routing_key",
                // With the default exchange the routing key is the queue delivered to.
                spec.exchange
                    .is_empty()
                    .then(|| rules.queue_taken(broker, &spec.routing_key))
                    .flatten(),
            ),
            (
                "receipt_queue",
                if receipt_queue.is_empty() {
                    None
                } else if spec.exchange.is_empty() && receipt_queue == spec.routing_key {
                    Some(format!(
                        "{} is the queue this destination's submissions are delivered to",
                        quoted(receipt_queue)
                    ))
                } else {
                    rules.queue_taken(broker, receipt_queue)
                },
            ),
        ];
        for (field, why) in taken {
            if let Some(why) = why {
                report(k(field), format!("{why}: a destination cannot use it"));
                targets_free = false;
            }
        }
    }
    match (has_id && has_name && targets_free, kind, land, broker) {
        (true, Some(kind), Some(land), Some(broker)) => Some(Destination {
            id: spec.id.clone(),
            name: spec.name.clone(),
            kind,
            land,
            broker,
            exchange: spec.exchange.clone(),
            routing_key: spec.routing_key.clone(),
            receipt_queue: Some(spec.receipt_queue.trim())
                .filter(|q| !q.is_empty())
                .map(str::to_owned),
        }),
        _ => None,
    }
}

/// A service catalogue entry as an operator writes it, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSpec {
    pub key: String,
    pub name: String,
}

/// Validates catalogue entries: a LeiKa key each, a name, no key twice.
pub fn validate_services(
    specs: &[(String, ServiceSpec)],
    mut report: impl FnMut(String, String),
) -> Vec<ServiceName> {
    let mut out: Vec<ServiceName> = Vec::with_capacity(specs.len());
    for (key, spec) in specs {
        let service = match spec.key.parse::<ServiceKey>() {
            Ok(k) => Some(k),
            Err(e) => {
                report(format!("{key}.key"), e.to_string());
                None
            }
        };
        if spec.name.trim().is_empty() {
            report(format!("{key}.name"), "is missing".to_owned());
            continue;
        }
        if let Some(service) = service {
            if out.iter().any(|s| s.key == service) {
                report(
                    format!("{key}.key"),
                    format!("service {service} is named twice"),
                );
                continue;
            }
            out.push(ServiceName {
                key: service,
                name: spec.name.clone(),
            });
        }
    }
    out
}

/// A route as an operator writes it, before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub service: String,
    pub region: String,
    pub destination: String,
}

/// Validates routes the same way wherever they come from (file now, admin API later):
/// malformed keys, regions not in the directory, unknown destinations, and two routes for
/// the same service and region. Errors go to `report(key, message)`.
pub fn validate_routes(
    specs: &[(String, RouteSpec)],
    destination_ids: &HashMap<String, DestinationIndex>,
    directory: &Directory,
    mut report: impl FnMut(String, String),
) -> Vec<Route> {
    let mut routes = Vec::with_capacity(specs.len());
    let mut seen: HashMap<(ServiceSelector, RegionPrefix), &str> = HashMap::new();
    for (key, spec) in specs {
        let service = if spec.service.trim().is_empty() {
            report(
                format!("{key}.service"),
                "is missing (a LeiKa key or \"*\")".to_owned(),
            );
            None
        } else {
            match spec.service.parse::<ServiceSelector>() {
                Ok(s) => Some(s),
                Err(e) => {
                    report(
                        format!("{key}.service"),
                        format!("{e}; or \"*\" for every service"),
                    );
                    None
                }
            }
        };
        let region = if spec.region.trim().is_empty() {
            report(
                format!("{key}.region"),
                "is missing (an ARS prefix)".to_owned(),
            );
            None
        } else {
            match spec.region.parse::<RegionPrefix>() {
                Ok(r) if directory.contains(r) => Some(r),
                Ok(r) => {
                    report(
                        format!("{key}.region"),
                        format!(
                            "{r} is not a {} in the municipality directory",
                            r.level().name()
                        ),
                    );
                    None
                }
                Err(e) => {
                    report(format!("{key}.region"), e.to_string());
                    None
                }
            }
        };
        let destination = if spec.destination.trim().is_empty() {
            report(format!("{key}.destination"), "is missing".to_owned());
            None
        } else {
            match destination_ids.get(&spec.destination) {
                Some(i) => Some(*i),
                None => {
                    report(
                        format!("{key}.destination"),
                        format!("unknown destination {:?}", spec.destination),
                    );
                    None
                }
            }
        };
        if let (Some(service), Some(region)) = (service, region) {
            if let Some(first) = seen.get(&(service, region)) {
                report(
                    key.clone(),
                    format!(
                        "a second route for service {service} and region {region} (the first is {first})"
                    ),
                );
                continue;
            }
            seen.insert((service, region), key);
            if let Some(destination) = destination {
                routes.push(Route {
                    service,
                    region,
                    destination,
                });
            }
        }
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
[gateway]
dead_letter_broker = "he"

[brokers.he]
url = "amqp://guest:secret@127.0.0.1:5672/ozg-he"

[[platforms]]
id = "civento-he"
land = "HE"
broker = "he"
ingress_queue = "ozg.he.submissions"
status_exchange = "ozg.he.status"

[[destinations]]
id = "he-darmstadt"
name = "Wissenschaftsstadt Darmstadt"
kind = "kreisfreie-stadt"
land = "06"
broker = "he"
exchange = "ozg.backoffice"
routing_key = "he-darmstadt"

[[routes]]
service = "*"
region = "06411"
destination = "he-darmstadt"
"#;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(text, "test.toml", Path::new("."))
    }

    #[test]
    fn a_valid_file_gives_defaults_and_hides_the_password() {
        let config = parse(VALID).unwrap();
        assert_eq!(config.platforms[0].land.code(), 6);
        assert_eq!(config.platforms[0].prefetch, 256);
        assert_eq!(config.platforms[0].status_routing_key, "civento-he");
        assert_eq!(
            config.gateway.dead_letter_exchange,
            DEFAULT_DEAD_LETTER_EXCHANGE
        );
        assert_eq!(
            config.brokers[0].display,
            "amqp://guest@127.0.0.1:5672/ozg-he"
        );
        assert!(!format!("{config:?}").contains("secret"));
    }

    #[test]
    fn every_error_is_listed_with_file_and_key() {
        let text = VALID
            .replace("land = \"HE\"", "land = \"XX\"")
            .replace("region = \"06411\"", "region = \"0641\"")
            .replace(
                "destination = \"he-darmstadt\"",
                "destination = \"nowhere\"",
            )
            + r#"
[[routes]]
service = "12345"
region = "06411"
destination = "he-darmstadt"

[[routes]]
service = "99115005104000"
region = "064119999999"
destination = "he-darmstadt"

[[routes]]
service = "*"
region = "06411"
destination = "he-darmstadt"

[[routes]]
service = "*"
region = "06411"
destination = "he-darmstadt"
"#;
        let errors = parse(&text).unwrap_err().to_string();
        for expected in [
            "test.toml: platforms[0].land: \"XX\" is not a Land code",
            "test.toml: routes[0].region: \"0641\" has 4 characters, expected 2, 3, 5, 9 or 12 digits",
            "test.toml: routes[0].destination: unknown destination \"nowhere\"",
            "test.toml: routes[1].service: \"12345\" has 5 characters, expected 14 digits",
            "test.toml: routes[2].region: 064119999999 is not a Gemeinde in the municipality directory",
            "test.toml: routes[4]: a second route for service * and region 06411 (the first is routes[3])",
        ] {
            assert!(
                errors.contains(expected),
                "missing {expected:?} in:\n{errors}"
            );
        }
        assert!(
            errors.starts_with("invalid configuration: 6 errors"),
            "{errors}"
        );
    }

    #[test]
    fn the_directory_is_polled_every_two_seconds_unless_configured() {
        assert_eq!(
            parse(VALID).unwrap().store.directory_poll,
            DEFAULT_DIRECTORY_POLL
        );
        let polled =
            |every: &str| parse(&format!("{VALID}\n[store]\ndirectory_poll = \"{every}\"\n"));
        assert_eq!(
            polled("500ms").unwrap().store.directory_poll,
            Duration::from_millis(500)
        );
        let errors = polled("10ms").unwrap_err().to_string();
        assert!(
            errors.contains("test.toml: store.directory_poll: must be at least 100ms"),
            "{errors}"
        );
    }

    #[test]
    fn routes_to_a_destination_left_out_for_its_broker_add_no_error() {
        let text = VALID.replace(
            "url = \"amqp://guest:secret@127.0.0.1:5672/ozg-he\"",
            "url = \"amqp://gw@127.0.0.1:5672/ozg-he\"\npassword_file = \"/nonexistent/pw\"",
        );
        let errors = parse(&text).unwrap_err().to_string();
        assert!(
            errors.starts_with("invalid configuration: 1 error")
                && errors.contains("brokers.he.password_file: cannot read /nonexistent/pw"),
            "{errors}"
        );
    }

    #[test]
    fn missing_keys_and_unknown_references() {
        let text = r#"
[gateway]
dead_letter_broker = "nope"
[brokers.a]
url = "http://[::1"
[[platforms]]
id = "p"
[[destinations]]
id = "d"
kind = "castle"
"#;
        let errors = parse(text).unwrap_err().to_string();
        for expected in [
            "brokers.a.url: is not a valid AMQP URI",
            "gateway.dead_letter_broker: unknown broker \"nope\"",
            "platforms[0].land: is missing",
            "platforms[0].broker: is missing",
            "platforms[0].ingress_queue: is missing",
            "platforms[0].status_exchange: is missing",
            "destinations[0].name: is missing",
            "destinations[0].kind: unknown kind \"castle\"",
            "destinations[0].routing_key: is missing",
        ] {
            assert!(
                errors.contains(expected),
                "missing {expected:?} in:\n{errors}"
            );
        }
    }

    #[test]
    fn syntax_errors_name_the_line_and_unknown_keys_are_refused() {
        let errors = parse("[gateway\n").unwrap_err().to_string();
        assert!(
            errors.contains("test.toml: TOML parse error at line 1"),
            "{errors}"
        );
        let errors = parse(
            &VALID
                .replace("prefetch", "x")
                .replace("[gateway]", "[gateway]\ndead_leter_broker = 1"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            errors.contains("unknown field `dead_leter_broker`"),
            "{errors}"
        );
    }

    #[test]
    fn every_problem_at_once_also_at_the_format_level() {
        let text = "routes = [5, { service = \"*\", region = \"0641\", destination = \"he-darmstadt\", colour = \"red\" }, { service = \"*\", region = \"06411\", destination = \"he-darmstadt\" }]\n".to_owned()
            + &VALID
            .replace(
                "dead_letter_broker = \"he\"",
                "dead_letter_broker = \"he\"\nconfirm_timout = \"5s\"\nshutdown_grace = \"30 parsecs\"\nmax_message_bytes = \"big\"",
            )
            .replace("land = \"HE\"", "land = \"XX\"\nprefetch = \"many\"")
            .replace("kind = \"kreisfreie-stadt\"", "kind = 5")
            .replace(
                "[[routes]]\nservice = \"*\"\nregion = \"06411\"\ndestination = \"he-darmstadt\"\n",
                "",
            )
            + "[retry]\ndelays = [\"1s\", \"soon\", \"5s\", 7, \"later\"]\n[telemetery]\nlog_level = \"debug\"\n[brokers.th]\nurl = 5\n";
        let errors = parse(&text).unwrap_err().to_string();
        println!("{errors}");
        let lines: Vec<&str> = errors.lines().skip(1).map(str::trim).collect();
        let expected = [
            "test.toml: brokers.th.url: invalid type: an integer, expected a string",
            "test.toml: destinations[0].kind: invalid type: integer `5`, expected a string",
            "test.toml: gateway.confirm_timout: unknown field `confirm_timout`, expected one of",
            "test.toml: gateway.max_message_bytes: invalid type: string \"big\", expected a whole number",
            "test.toml: gateway.shutdown_grace: ",
            "test.toml: platforms[0].prefetch: invalid type: string \"many\", expected a whole number",
            "test.toml: retry.delays[1]: ",
            "test.toml: retry.delays[3]: invalid type: integer `7`",
            "test.toml: retry.delays[4]: ",
            "test.toml: routes[0]: invalid type: integer `5`, expected a table",
            "test.toml: routes[1].colour: unknown field `colour`",
            "test.toml: telemetery: unknown field `telemetery`",
            // And what validation finds besides, with the numbering of the file.
            "test.toml: platforms[0].land: \"XX\" is not a Land code",
            "test.toml: routes[1].region: \"0641\" has 4 characters",
        ];
        for want in expected {
            assert!(
                lines.iter().any(|l| l.starts_with(want)),
                "missing {want:?} in:\n{errors}"
            );
        }
        assert_eq!(lines.len(), expected.len(), "{errors}");
        assert!(
            !errors.contains("is missing"),
            "consequences are not reported: {errors}"
        );
        assert!(!errors.contains("secret"), "{errors}");
    }

    #[test]
    fn a_console_needs_admin_tokens_and_is_warned_about_off_loopback() {
        let admin = "[admin]\naddress = \"127.0.0.1:0\"\n[[admin.tokens]]\nname = \"ops\"\n\
                     sha256 = \"0e0f32b32f222d209c23da5994f02cd3caf03a883ad8c0f491339d3f058bf34a\"\n\
                     roles = [\"operator\"]\n";
        let config = parse(&format!(
            "{VALID}\n{admin}\n[console]\naddress = \"127.0.0.1:8080\"\n"
        ))
        .unwrap();
        assert_eq!(
            config.console.map(|c| c.address.port()),
            Some(8080),
            "{:?}",
            config.warnings
        );
        assert!(parse(VALID).unwrap().console.is_none());
        let errors = parse(&format!(
            "{VALID}\n[console]\naddress = \"127.0.0.1:8080\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            errors.contains("test.toml: console: operators log in with an admin token"),
            "{errors}"
        );
        let errors = parse(&format!(
            "{VALID}\n{admin}\n[console]\naddress = \"localhost\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            errors.contains("console.address: \"localhost\" is not an address"),
            "{errors}"
        );
        let open = parse(&format!(
            "{VALID}\n{admin}\n[console]\naddress = \"0.0.0.0:8080\"\n"
        ))
        .unwrap();
        assert!(
            open.warnings
                .iter()
                .any(|w| w.contains("console.address: 0.0.0.0:8080 is reachable")),
            "{:?}",
            open.warnings
        );
    }

    #[test]
    fn an_admin_api_for_other_machines_without_tls_is_warned_about() {
        for (address, warned) in [
            ("127.0.0.1:0", false),
            ("[::1]:50051", false),
            ("0.0.0.0:50051", true),
            ("[::]:50051", true),
            ("10.1.2.3:50051", true),
        ] {
            let config = parse(&format!("{VALID}\n[admin]\naddress = \"{address}\"\n")).unwrap();
            let warning = config.warnings.iter().find(|w| w.contains("admin.address"));
            assert_eq!(
                warning.is_some(),
                warned,
                "{address}: {:?}",
                config.warnings
            );
            if let Some(warning) = warning {
                assert!(
                    warning.starts_with(&format!(
                        "test.toml: admin.address: {address} is reachable from other machines, without TLS"
                    )),
                    "{warning}"
                );
            }
        }
    }

    #[test]
    fn destinations_are_refused_with_bad_ids_long_names_and_the_gateways_own_targets() {
        let long_name = "x".repeat(1 << 20);
        let long_key = "k".repeat(256);
        // (what replaces a line of the destination, the error expected)
        let cases: Vec<(&str, String, String)> = vec![
            (
                "id = \"he-darmstadt\"",
                "id = \"he\\u0007x\"".into(),
                "destinations[0].id: contains a control character (U+0007) at byte 2".into(),
            ),
            (
                "id = \"he-darmstadt\"",
                "id = \"he darmstadt\"".into(),
                "destinations[0].id: \"he darmstadt\" is not an id: letters, digits, '-', '_', '.' and ':' only, not ' '".into(),
            ),
            (
                "id = \"he-darmstadt\"",
                format!("id = \"{}\"", "d".repeat(129)),
                "destinations[0].id: has 129 characters, at most 128 are allowed (\"dddddddddddddddddddddddddddddddddddddddd\"…)".into(),
            ),
            (
                "name = \"Wissenschaftsstadt Darmstadt\"",
                format!("name = \"{long_name}\""),
                format!("destinations[0].name: has 1048576 characters, at most 300 are allowed (\"{}\"…)", "x".repeat(40)),
            ),
            (
                "name = \"Wissenschaftsstadt Darmstadt\"",
                "name = \"Darmstadt\\nBürgeramt\"".into(),
                "destinations[0].name: contains a control character (U+000A) at byte 9".into(),
            ),
            (
                "routing_key = \"he-darmstadt\"",
                format!("routing_key = \"{long_key}\""),
                "destinations[0].routing_key: has 256 characters, at most 255 are allowed".into(),
            ),
            (
                "exchange = \"ozg.backoffice\"",
                "exchange = \"ozg.gateway.retry\"".into(),
                "destinations[0].exchange: \"ozg.gateway.retry\" is the gateway's own (names starting with ozg.gateway. are): a destination cannot use it".into(),
            ),
            (
                "exchange = \"ozg.backoffice\"\nrouting_key = \"he-darmstadt\"",
                "exchange = \"\"\nrouting_key = \"ozg.gateway.replay\"".into(),
                "destinations[0].routing_key: \"ozg.gateway.replay\" is the gateway's own queue (names starting with ozg.gateway. are): a destination cannot use it".into(),
            ),
            (
                "exchange = \"ozg.backoffice\"\nrouting_key = \"he-darmstadt\"",
                "exchange = \"\"\nrouting_key = \"ozg.he.submissions\"".into(),
                "destinations[0].routing_key: \"ozg.he.submissions\" is the ingress queue of platform \"civento-he\": a destination cannot use it".into(),
            ),
            (
                "routing_key = \"he-darmstadt\"",
                "routing_key = \"he-darmstadt\"\nreceipt_queue = \"ozg.gateway.dead-letters\"".into(),
                "destinations[0].receipt_queue: \"ozg.gateway.dead-letters\" is the gateway's own queue (names starting with ozg.gateway. are): a destination cannot use it".into(),
            ),
            (
                "exchange = \"ozg.backoffice\"\nrouting_key = \"he-darmstadt\"",
                "exchange = \"\"\nrouting_key = \"bo.darmstadt\"\nreceipt_queue = \"bo.darmstadt\"".into(),
                "destinations[0].receipt_queue: \"bo.darmstadt\" is the queue this destination's submissions are delivered to: a destination cannot use it".into(),
            ),
            (
                "exchange = \"ozg.backoffice\"",
                "exchange = \"dead\"".into(),
                "destinations[0].exchange: \"dead\" is the gateway's dead-letter exchange: a destination cannot use it".into(),
            ),
        ];
        for (line, replacement, expected) in cases {
            assert!(VALID.contains(line), "{line}");
            let text = VALID.replace(line, &replacement).replace(
                "dead_letter_broker = \"he\"",
                "dead_letter_broker = \"he\"\ndead_letter_exchange = \"dead\"",
            );
            let errors = parse(&text).unwrap_err().to_string();
            assert!(
                errors.contains(&expected),
                "missing {expected:?} in:\n{}",
                quoted(&errors)
            );
            assert!(
                errors.len() < 2_000,
                "nothing long is echoed: {}",
                errors.len()
            );
        }
        // A back office queue on another broker may have any name but the namespace's.
        let valid = VALID.replace(
            "exchange = \"ozg.backoffice\"\nrouting_key = \"he-darmstadt\"",
            "exchange = \"\"\nrouting_key = \"ozg.gateway-de.darmstadt\"",
        );
        parse(&valid).unwrap();
    }

    #[test]
    fn a_missing_directory_file_is_reported() {
        let text = VALID
            .replace(
                "[gateway]",
                "[gateway]\ndirectory = \"/nonexistent/gv.csv\"",
            )
            .replace("land = \"HE\"", "land = \"XX\"")
            .replace("region = \"06411\"", "region = \"069\"");
        let errors = parse(&text).unwrap_err().to_string();
        assert!(
            errors.contains("gateway.directory: /nonexistent/gv.csv: cannot read"),
            "{errors}"
        );
        // The rest is still checked; regions only for their form, the directory unknown.
        assert!(errors.contains("platforms[0].land: \"XX\""), "{errors}");
        assert!(
            errors.starts_with("invalid configuration: 2 errors"),
            "{errors}"
        );
    }

    /// Files the secret and TLS cases refer to, in a folder of their own (the `base`).
    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            use std::os::unix::fs::PermissionsExt;
            let dir = tempfile::tempdir().unwrap();
            let ca = ca();
            let other = ca_pair();
            let (cert, key) = issue(&ca, "gw");
            let (_, stray_key) = issue(&ca, "stray");
            let token_hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"tok"));
            for (name, content, mode) in [
                ("ca.pem", ca.pem(), 0o644),
                ("other-ca.pem", other.pem(), 0o644),
                ("client.pem", cert, 0o644),
                ("client-key.pem", key.clone(), 0o600),
                ("stray-key.pem", stray_key, 0o600),
                ("open-key.pem", key, 0o644),
                ("not-pem.txt", "hello".to_owned(), 0o644),
                ("pw", "s3cret-pw\n".to_owned(), 0o400),
                ("pw-open", "s3cret-pw".to_owned(), 0o644),
                ("empty", String::new(), 0o600),
                ("token.sha256", format!("{token_hash}\n"), 0o400),
            ] {
                let path = dir.path().join(name);
                std::fs::write(&path, content).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            Files { dir }
        }

        fn path(&self, name: &str) -> String {
            self.dir.path().join(name).display().to_string()
        }

        /// VALID with its broker replaced by `broker` (TOML from `[brokers.he]` on) and
        /// `extra` appended; `{dir}` in either stands for the folder.
        fn parse(&self, broker: &str, extra: &str) -> Result<Config, ConfigErrors> {
            let dir = self.dir.path().display().to_string();
            let text = VALID.replace(
                "[brokers.he]\nurl = \"amqp://guest:secret@127.0.0.1:5672/ozg-he\"\n",
                &format!("{}\n", broker.replace("{dir}", &dir)),
            ) + &extra.replace("{dir}", &dir);
            Config::parse(&text, "test.toml", self.dir.path())
        }
    }

    fn ca_pair() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
    }

    fn ca() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
        ca_pair()
    }

    fn issue(ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, ca)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    const TLS: &str = "[brokers.he]\nurl = \"amqps://gw@rabbit-he.example:5671/ozg-he\"\npassword_file = \"pw\"\n[brokers.he.tls]\nca_file = \"ca.pem\"\n";

    #[test]
    fn broker_keys_are_validated_with_specific_messages() {
        let files = Files::new();
        let dir = files.path("");
        let dir = dir.trim_end_matches('/');
        // (broker TOML, errors expected: each a substring of one line)
        let cases: &[(&str, &[&str])] = &[
            (
                "[brokers.he]\nurl = \"amqp://gw:inline@h:5672/v\"\npassword_file = \"pw\"",
                &[
                    "test.toml: brokers.he.url: has a password, and brokers.he.password_file gives one too: leave it out of the URL",
                ],
            ),
            (
                "[brokers.he]\nurl = \"amqp://gw@h:5672/v\"\npassword_file = \"missing\"",
                &[
                    "brokers.he.password_file: cannot read {dir}/missing: No such file or directory (os error 2)",
                ],
            ),
            (
                "[brokers.he]\nurl = \"amqp://gw@h:5672/v\"\npassword_file = \"empty\"",
                &["brokers.he.password_file: {dir}/empty is empty"],
            ),
            (
                "[brokers.he]\nurl = \"amqp://gw@h:5672/v\"\npassword_file = \"pw\"\npassword_env = \"X\"",
                &["brokers.he.password_env: and brokers.he.password_file are both set: give one"],
            ),
            (
                "[brokers.he]\nurl = \"amqp://gw@h:5672/v\"\npassword_env = \"OZG_TEST_NEVER_SET_PW\"",
                &["brokers.he.password_env: environment variable OZG_TEST_NEVER_SET_PW is not set"],
            ),
            (
                "[brokers.he]\nurl = \"amqp://gw@h:5672/v\"\npassword_env = \"not-a-name\"",
                &["brokers.he.password_env: \"not-a-name\" is not an environment variable name"],
            ),
            (
                "[brokers.he]\nurl = \"amqp://h/v\"\nurls = [\"amqp://h/v\"]",
                &["brokers.he: has url and urls: give one"],
            ),
            ("[brokers.he]\nurls = []", &["brokers.he.urls: is empty"]),
            ("[brokers.he]", &["brokers.he.url: is missing (or urls = ["]),
            (
                "[brokers.he]\nurls = [\"amqp://n1:5672/v\", \"amqp://n2:5672/w\"]",
                &[
                    "brokers.he.urls[1]: amqp://guest@n2:5672/w differs from amqp://guest@n1:5672/v in scheme, user or vhost",
                ],
            ),
            (
                "[brokers.he]\nurls = [\"amqp://n1:5672/v\", \"amqps://n2:5671/v\"]",
                &["brokers.he.urls[1]: amqps://guest@n2:5671/v differs"],
            ),
            (
                "[brokers.he]\nurls = [\"amqp://n1:5672/v\", \"amqp://n1:5672/v\"]",
                &["brokers.he.urls[1]: node n1:5672 is listed twice"],
            ),
            (
                "[brokers.he]\nurls = [\"amqp://n1:5672/v\", \"http://[::1\"]",
                &["brokers.he.urls[1]: is not a valid AMQP URI"],
            ),
            (
                "[brokers.he]\nurl = \"amqps://gw@h:5671/v\"",
                &[
                    "brokers.he.tls.ca_file: is missing: amqps:// needs the CA that signed the broker's certificate",
                ],
            ),
            (
                "[brokers.he]\nurl = \"amqp://gw@h:5672/v\"\n[brokers.he.tls]\nca_file = \"ca.pem\"",
                &[
                    "brokers.he.tls: is set, but the broker's URL is amqp:// (plain): use amqps:// for TLS",
                ],
            ),
            (
                &TLS.replace("ca.pem", "nope.pem"),
                &[
                    "brokers.he.tls.ca_file: cannot read {dir}/nope.pem: No such file or directory (os error 2)",
                ],
            ),
            (
                &TLS.replace("ca.pem", "not-pem.txt"),
                &["brokers.he.tls.ca_file: {dir}/not-pem.txt holds no PEM certificate"],
            ),
            (
                &TLS.replace("ca_file = \"ca.pem\"", "server_name = \"x\""),
                &[
                    "brokers.he.tls.ca_file: is missing (the CA that signed the broker's certificate)",
                ],
            ),
            (
                &format!("{TLS}client_cert_file = \"client.pem\""),
                &["brokers.he.tls.client_key_file: is missing (client_cert_file is set)"],
            ),
            (
                &format!("{TLS}client_key_file = \"client-key.pem\""),
                &["brokers.he.tls.client_cert_file: is missing (client_key_file is set)"],
            ),
            (
                &format!(
                    "{TLS}client_cert_file = \"client.pem\"\nclient_key_file = \"stray-key.pem\""
                ),
                &[
                    "brokers.he.tls.client_key_file: {dir}/stray-key.pem does not go with {dir}/client.pem",
                ],
            ),
            (
                &format!(
                    "{TLS}client_cert_file = \"client.pem\"\nclient_key_file = \"not-pem.txt\""
                ),
                &[
                    "brokers.he.tls.client_key_file: {dir}/not-pem.txt holds no usable PEM private key",
                ],
            ),
            (
                &format!(
                    "{TLS}client_cert_file = \"missing.pem\"\nclient_key_file = \"client-key.pem\""
                ),
                &["brokers.he.tls.client_cert_file: cannot read {dir}/missing.pem"],
            ),
            (
                &format!("{TLS}server_name = \"not a name!\""),
                &["brokers.he.tls.server_name: \"not a name!\" is not a DNS name or IP address"],
            ),
            // There is no switch to turn verification off.
            (&format!("{TLS}verify = false"), &["unknown field `verify`"]),
        ];
        for (broker, expected) in cases {
            let errors = match files.parse(broker, "") {
                Ok(_) => panic!("accepted:\n{broker}"),
                Err(e) => e.to_string(),
            };
            for part in *expected {
                let part = part.replace("{dir}", dir);
                assert!(
                    errors.contains(&part),
                    "{broker}\nmissing {part:?} in:\n{errors}"
                );
            }
            assert!(!errors.contains("s3cret-pw"), "{errors}");
        }
    }

    #[test]
    fn valid_broker_keys_give_nodes_tls_and_warnings() {
        let files = Files::new();
        let dir = files.path("");
        let dir = dir.trim_end_matches('/');
        // (broker TOML, display, node addresses, TLS?, warnings expected)
        type Case<'a> = (&'a str, &'a str, &'a [&'a str], bool, &'a [&'a str]);
        let cases: &[Case] = &[
            (
                "[brokers.he]\nurl = \"amqp://gw@h:5672/ozg-he\"\npassword_file = \"pw\"",
                "amqp://gw@h:5672/ozg-he",
                &["h:5672"],
                false,
                &[],
            ),
            (
                "[brokers.he]\nurl = \"amqp://gw:inline@h:5672/ozg-he\"",
                "amqp://gw@h:5672/ozg-he",
                &["h:5672"],
                false,
                &[
                    "test.toml: brokers.he.url: holds the password; prefer password_file or password_env",
                ],
            ),
            (
                "[brokers.he]\nurl = \"amqp://guest:guest@h:5672/ozg-he\"",
                "amqp://guest@h:5672/ozg-he",
                &["h:5672"],
                false,
                &[],
            ),
            (
                "[brokers.he]\nurl = \"amqp://gw@h/ozg-he\"\npassword_file = \"pw-open\"",
                "amqp://gw@h:5672/ozg-he",
                &["h:5672"],
                false,
                &[
                    "test.toml: brokers.he.password_file: {dir}/pw-open is readable by every user (mode 0644); make it 0400 or 0600",
                ],
            ),
            (
                "[brokers.he]\nurls = [\"amqps://gw@n1:5671/ozg-he\", \"amqps://gw@n2/ozg-he\", \"amqps://gw@n3:5699/ozg-he\"]\npassword_env = \"PATH\"\n[brokers.he.tls]\nca_file = \"ca.pem\"",
                "amqps://gw@n1:5671,n2:5671,n3:5699/ozg-he",
                &["n1:5671", "n2:5671", "n3:5699"],
                true,
                &[],
            ),
            (
                &format!(
                    "{TLS}client_cert_file = \"client.pem\"\nclient_key_file = \"client-key.pem\"\nserver_name = \"rabbit.example\""
                ),
                "amqps://gw@rabbit-he.example:5671/ozg-he",
                &["rabbit-he.example:5671"],
                true,
                &[],
            ),
            (
                &format!(
                    "{TLS}client_cert_file = \"{{dir}}/client.pem\"\nclient_key_file = \"open-key.pem\""
                ),
                "amqps://gw@rabbit-he.example:5671/ozg-he",
                &["rabbit-he.example:5671"],
                true,
                &["brokers.he.tls.client_key_file: {dir}/open-key.pem is readable by every user"],
            ),
        ];
        for (broker, display, addresses, tls, warnings) in cases {
            let config = files
                .parse(broker, "")
                .unwrap_or_else(|e| panic!("{broker}\n{e}"));
            let b = &config.brokers[0];
            assert_eq!(b.display, *display, "{broker}");
            let got: Vec<&str> = b.nodes.iter().map(|n| n.address.as_str()).collect();
            assert_eq!(got, *addresses, "{broker}");
            assert_eq!(b.tls.is_some(), *tls, "{broker}");
            let expected: Vec<String> = warnings.iter().map(|w| w.replace("{dir}", dir)).collect();
            for w in &expected {
                assert!(
                    config.warnings.iter().any(|got| got.contains(w.as_str())),
                    "{broker}\nmissing warning {w:?} in {:?}",
                    config.warnings
                );
            }
            assert_eq!(
                config.warnings.len(),
                expected.len(),
                "{:?}",
                config.warnings
            );
            let debug = format!("{config:?}");
            for secret in ["s3cret-pw", "inline"] {
                assert!(!debug.contains(secret), "Debug shows {secret}: {debug}");
                assert!(!b.display.contains(secret));
            }
        }
        // The password reaches the connection, and only that.
        let config = files.parse(TLS, "").unwrap();
        assert_eq!(
            config.brokers[0].nodes[0].uri().authority.userinfo.password,
            "s3cret-pw"
        );
        assert_eq!(
            config.brokers[0].tls.as_ref().unwrap().ca_file,
            files.dir.path().join("ca.pem"),
            "relative to the configuration's folder"
        );
        let from_env = files
            .parse(
                "[brokers.he]\nurl = \"amqp://gw@h/v\"\npassword_env = \"PATH\"",
                "",
            )
            .unwrap();
        assert_eq!(
            from_env.brokers[0].nodes[0]
                .uri()
                .authority
                .userinfo
                .password,
            std::env::var("PATH").unwrap()
        );
    }

    #[test]
    fn store_passwords_and_admin_token_files() {
        let files = Files::new();
        let dir = files.path("");
        let dir = dir.trim_end_matches('/');
        let broker = "[brokers.he]\nurl = \"amqp://gw@h/v\"\npassword_file = \"pw\"";
        let admin = |token: &str| {
            format!(
                "\n[admin]\naddress = \"127.0.0.1:0\"\n[[admin.tokens]]\nname = \"ops\"\nroles = [\"viewer\"]\n{token}\n"
            )
        };
        // (extra TOML, Ok(check) or Err(expected error))
        let errors: &[(&str, &str)] = &[
            (
                "[store]\nurl = \"sqlite://x.db\"\npassword_file = \"pw\"",
                "store.password_file: needs a postgres:// store.url",
            ),
            (
                "[store]\nurl = \"postgres://ozg:inline@db/ozg\"\npassword_file = \"pw\"",
                "store.url: has a password, and store.password_file gives one too",
            ),
            (
                "[store]\nurl = \"postgres://ozg@db/ozg\"\npassword_env = \"OZG_TEST_NEVER_SET_PW\"",
                "store.password_env: environment variable OZG_TEST_NEVER_SET_PW is not set",
            ),
            (
                "[store]\nurl = \"postgres://ozg@db/ozg\"\npassword_file = \"pw\"\npassword_env = \"PATH\"",
                "store.password_env: and store.password_file are both set",
            ),
            (
                "[store]\nurl = \"postgres://ozg@db/ozg\"\npassword_file = \"empty\"",
                "store.password_file: {dir}/empty is empty",
            ),
        ];
        for (extra, expected) in errors {
            let text = files.parse(broker, extra).unwrap_err().to_string();
            let expected = expected.replace("{dir}", dir);
            assert!(
                text.contains(&expected),
                "{extra}\nmissing {expected:?} in\n{text}"
            );
            assert!(
                !text.contains("s3cret-pw") && !text.contains("inline"),
                "{text}"
            );
        }
        for (token, expected) in [
            (
                "sha256_file = \"missing\"",
                "admin.tokens[0].sha256_file: cannot read {dir}/missing",
            ),
            (
                "sha256_file = \"pw\"",
                "admin.tokens[0].sha256_file: must hold the SHA-256 of the token as 64 hex digits",
            ),
            (
                "sha256 = \"abc\"",
                "admin.tokens[0].sha256: must be the SHA-256 of the token as 64 hex digits",
            ),
            (
                "sha256_file = \"token.sha256\"\nsha256 = \"00\"",
                "admin.tokens[0].sha256_file: and sha256 are both set: give one",
            ),
            ("", "admin.tokens[0].sha256: is missing (or sha256_file)"),
        ] {
            let text = files.parse(broker, &admin(token)).unwrap_err().to_string();
            let expected = expected.replace("{dir}", dir);
            assert!(
                text.contains(&expected),
                "{token}\nmissing {expected:?} in\n{text}"
            );
            assert!(!text.contains("s3cret-pw"), "{text}");
        }

        let config = files
            .parse(
                broker,
                "[store]\nurl = \"postgres://ozg@db:5432/ozg?options=-csearch_path%3Dgw\"\npassword_file = \"pw\"",
            )
            .unwrap();
        assert_eq!(
            config.store.url,
            "postgres://ozg:s3cret-pw@db:5432/ozg?options=-csearch_path%3Dgw"
        );
        assert!(
            !config.store.display.contains("s3cret"),
            "{}",
            config.store.display
        );
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);

        let inline = files
            .parse(broker, "[store]\nurl = \"postgres://ozg:inline@db/ozg\"")
            .unwrap();
        assert_eq!(
            inline.warnings,
            [
                "test.toml: store.url: holds the password; prefer store.password_file or store.password_env (the URL then has none)"
            ]
        );

        let config = files
            .parse(broker, &admin("sha256_file = \"token.sha256\""))
            .unwrap();
        let token = &config.admin.unwrap().tokens[0];
        assert_eq!(
            token.sha256.to_vec(),
            <sha2::Sha256 as sha2::Digest>::digest(b"tok").to_vec()
        );
    }

    /// A second Land's platform and destination beside VALID's Hessen, and a token with
    /// the given scope keys.
    fn with_token_scope(keys: &str, roles: &str) -> String {
        format!(
            "{VALID}
[[platforms]]
id = \"civento-th\"
land = \"TH\"
broker = \"he\"
ingress_queue = \"ozg.th.submissions\"
status_exchange = \"ozg.th.status\"

[[destinations]]
id = \"th-erfurt\"
name = \"Erfurt\"
kind = \"kreisfreie-stadt\"
land = \"16\"
broker = \"he\"
exchange = \"ozg.backoffice\"
routing_key = \"th-erfurt\"

[admin]
address = \"127.0.0.1:0\"
[[admin.tokens]]
name = \"ops\"
sha256 = \"{}\"
roles = [{roles}]
{keys}
",
            "0".repeat(64)
        )
    }

    #[test]
    fn token_scopes_are_read_and_checked() {
        let he = Land::from_code(6).unwrap();
        let th = Land::from_code(16).unwrap();
        let scope = |laender: Option<Vec<Land>>, destinations: Option<&[&str]>| Scope {
            laender,
            destinations: destinations.map(|d| d.iter().map(|s| (*s).to_owned()).collect()),
        };
        // (scope keys, the scope, or the start of the error after "test.toml: ")
        let cases: Vec<(&str, Result<Scope, &str>)> = vec![
            ("", Ok(Scope::ALL)),
            ("laender = [\"*\"]", Ok(Scope::ALL)),
            ("laender = [\"HE\"]", Ok(scope(Some(vec![he]), None))),
            (
                "laender = [\"16\", \"he\", \"06\"]",
                Ok(scope(Some(vec![he, th]), None)),
            ),
            (
                "laender = [\"HE\"]\ndestinations = [\"he-darmstadt\"]",
                Ok(scope(Some(vec![he]), Some(&["he-darmstadt"]))),
            ),
            (
                "destinations = [\"th-erfurt\", \"he-darmstadt\"]",
                Ok(scope(None, Some(&["he-darmstadt", "th-erfurt"]))),
            ),
            (
                "laender = [\"HX\"]",
                Err("admin.tokens[0].laender: \"HX\" is not a Land code (01 … 16, or SH, HH"),
            ),
            (
                "laender = [\"17\"]",
                Err("admin.tokens[0].laender: \"17\" is not a Land code"),
            ),
            (
                "laender = []",
                Err("admin.tokens[0].laender: is empty: name the Länder"),
            ),
            (
                "laender = [\"*\", \"HE\"]",
                Err("admin.tokens[0].laender: \"*\" (every Land) stands alone"),
            ),
            (
                "destinations = []",
                Err("admin.tokens[0].destinations: is empty"),
            ),
            (
                "destinations = [\"he darmstadt\"]",
                Err("admin.tokens[0].destinations: \"he darmstadt\" is not an id"),
            ),
            (
                "laender = [\"HE\"]\ndestinations = [\"th-erfurt\"]",
                Err(
                    "admin.tokens[0].destinations: destination \"th-erfurt\" is of Land 16 TH, which is not among laender",
                ),
            ),
        ];
        for (keys, want) in cases {
            let got = parse(&with_token_scope(keys, "\"operator\""));
            match (got, want) {
                (Ok(config), Ok(want)) => {
                    let tokens = config.admin.unwrap().tokens;
                    assert_eq!(tokens[0].scope, want, "{keys}");
                }
                (Err(errors), Err(start)) => {
                    let text = errors.to_string();
                    assert!(
                        text.contains(&format!("test.toml: {start}")),
                        "{keys}: missing {start:?} in\n{text}"
                    );
                }
                (got, want) => panic!("{keys}: got {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn an_operator_token_for_every_land_is_warned_about_only_when_it_is_not_said() {
        let warned = |keys: &str, roles: &str| {
            parse(&with_token_scope(keys, roles))
                .unwrap()
                .warnings
                .iter()
                .any(|w| w.contains("admin.tokens[0].laender: is not set"))
        };
        assert!(warned("", "\"operator\""));
        assert!(!warned("laender = [\"*\"]", "\"operator\""));
        assert!(!warned("laender = [\"HE\"]", "\"operator\""));
        // A viewer changes nothing; one Land's gateway has nothing to divide.
        assert!(!warned("", "\"viewer\""));
        let one_land = format!(
            "{VALID}\n[admin]\naddress = \"127.0.0.1:0\"\n[[admin.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nroles = [\"operator\"]\n",
            "0".repeat(64)
        );
        assert!(
            !parse(&one_land)
                .unwrap()
                .warnings
                .iter()
                .any(|w| w.contains("laender")),
        );
        // A destination not in the file may be one created through the admin API later.
        let later = parse(&with_token_scope(
            "laender = [\"HE\"]\ndestinations = [\"he-later\"]",
            "\"operator\"",
        ))
        .unwrap();
        assert!(
            later.warnings.iter().any(|w| w.contains(
                "destinations: destination \"he-later\" is not in this file: it counts once it is created"
            )),
            "{:?}",
            later.warnings
        );
    }

    #[test]
    fn a_scope_says_what_it_covers() {
        let he = Land::from_code(6).unwrap();
        let th = Land::from_code(16).unwrap();
        let cases = [
            (Scope::ALL, "every Land"),
            (
                Scope {
                    laender: Some(vec![he]),
                    destinations: None,
                },
                "Land 06 HE",
            ),
            (
                Scope {
                    laender: Some(vec![he, th]),
                    destinations: None,
                },
                "Länder 06 HE, 16 TH",
            ),
            (
                Scope {
                    laender: Some(vec![he]),
                    destinations: Some(vec!["he-a".into(), "he-b".into()]),
                },
                "Land 06 HE; destinations he-a, he-b",
            ),
            (
                Scope {
                    laender: None,
                    destinations: Some(vec!["he-a".into()]),
                },
                "destination he-a",
            ),
        ];
        for (scope, text) in cases {
            assert_eq!(scope.to_string(), text);
        }
    }
}
