//! The network the gateway connects: brokers, the platforms it reads from, the destinations
//! it delivers to and the routes between them, as validated from the file or the admin API.

use std::fmt;
use std::str::FromStr;

use lapin::uri::AMQPUri;

use crate::model::{Land, RegionPrefix, ServiceKey, ServiceSelector};
use crate::tls::BrokerTls;

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
    pub(crate) fn new(uri: AMQPUri) -> BrokerNode {
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

/// The password in the URI is zeroed when a node is dropped (as a [`Secret`](crate::secret::Secret) is).
impl Drop for BrokerNode {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.uri.authority.userinfo.password);
    }
}

/// The store URL may hold a password: zeroed when dropped (as a [`Secret`](crate::secret::Secret) is).
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceName {
    pub key: ServiceKey,
    pub name: String,
}
