//! The topology of a configuration as a RabbitMQ definitions file (`rabbitmqctl
//! import_definitions`, `load_definitions` at boot, the management API's import): vhosts,
//! permissions for the users the configuration connects as, policies, and every exchange,
//! queue and binding of [`super::by_broker`], with exactly the arguments the gateway
//! declares.
//!
//! Users are not part of it: a user carries a password (hash), which belongs to the
//! broker's operator, not to a file printed from the gateway's configuration.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Argument, Declarations, by_broker, status_queue};
use crate::config::Config;
use crate::model::Broker;

/// Status events a platform's stand-in status queue holds at most; further events are
/// refused (the gateway logs each), never dropped silently. See docs/operations.md.
const STATUS_QUEUE_MAX_LENGTH: i64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum DefinitionsError {
    #[error("no broker {0:?} in the configuration")]
    UnknownBroker(String),
    #[error("broker {broker}: no node")]
    NoNode { broker: String },
    #[error("vhost {vhost:?}: {conflict}")]
    Conflict { vhost: String, conflict: String },
}

#[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Vhost {
    pub name: String,
}

#[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

#[derive(Debug, Serialize)]
pub struct Policy {
    pub vhost: String,
    pub name: String,
    pub pattern: String,
    #[serde(rename = "apply-to")]
    pub apply_to: &'static str,
    pub definition: BTreeMap<&'static str, Argument>,
    pub priority: i64,
}

#[derive(Debug, Serialize)]
pub struct QueueDefinition {
    pub name: String,
    pub vhost: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub arguments: BTreeMap<&'static str, Argument>,
}

#[derive(Debug, Serialize)]
pub struct ExchangeDefinition {
    pub name: String,
    pub vhost: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: BTreeMap<&'static str, Argument>,
}

#[derive(Debug, Serialize)]
pub struct BindingDefinition {
    pub source: String,
    pub vhost: String,
    pub destination: String,
    pub destination_type: &'static str,
    pub routing_key: String,
    pub arguments: BTreeMap<&'static str, Argument>,
}

/// Field order as in RabbitMQ's own export; entries sorted by vhost and name, so the file
/// diffs well.
#[derive(Debug, Serialize)]
pub struct Definitions {
    pub vhosts: Vec<Vhost>,
    pub permissions: Vec<Permission>,
    pub policies: Vec<Policy>,
    pub queues: Vec<QueueDefinition>,
    pub exchanges: Vec<ExchangeDefinition>,
    pub bindings: Vec<BindingDefinition>,
}

impl Definitions {
    /// Pretty JSON with a final newline, as committed in deploy/rabbitmq/definitions.json.
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self).map(|text| text + "\n")
    }
}

/// The broker's vhost and the user the gateway connects as (AMQP's default `guest` when the
/// URL names none). The configuration holds a cluster's nodes to one vhost and user, so the
/// first node speaks for all.
fn vhost_and_user(broker: &Broker) -> Result<(String, String), DefinitionsError> {
    let Some(node) = broker.nodes.first() else {
        return Err(DefinitionsError::NoNode {
            broker: broker.name.clone(),
        });
    };
    let uri = node.uri();
    Ok((uri.vhost.clone(), uri.authority.userinfo.username.clone()))
}

/// A regular expression matching exactly these names.
fn exactly(names: &BTreeSet<String>) -> String {
    let escaped: Vec<String> = names
        .iter()
        .map(|name| {
            name.chars()
                .flat_map(|c| {
                    let special = "\\.+*?()|[]{}^$".contains(c);
                    special.then_some('\\').into_iter().chain([c])
                })
                .collect()
        })
        .collect();
    format!("^({})$", escaped.join("|"))
}

/// The definitions for the brokers named in `only` (all of the configuration's when empty).
/// Brokers on the same vhost share its entries; a name declared differently on one vhost
/// is an error, as it would be on the broker.
pub fn definitions(config: &Config, only: &[String]) -> Result<Definitions, DefinitionsError> {
    if let Some(unknown) = only
        .iter()
        .find(|name| !config.brokers.iter().any(|b| &b.name == *name))
    {
        return Err(DefinitionsError::UnknownBroker(unknown.clone()));
    }
    let Vhosts {
        declarations: per_vhost,
        users,
        status_queues,
    } = by_vhost(config, only)?;
    let mut out = Definitions {
        vhosts: per_vhost
            .keys()
            .map(|name| Vhost { name: name.clone() })
            .collect(),
        // The local set-up's user also runs declare-topology, so it may configure
        // everything; docs/operations.md says what the gateway alone needs in production.
        permissions: users
            .into_iter()
            .map(|(user, vhost)| Permission {
                user,
                vhost,
                configure: ".*".into(),
                write: ".*".into(),
                read: ".*".into(),
            })
            .collect(),
        policies: status_queues
            .into_iter()
            .map(|(vhost, queues)| Policy {
                vhost,
                name: "ozg-status-queues-bounded".into(),
                pattern: exactly(&queues),
                apply_to: "queues",
                definition: BTreeMap::from([
                    ("max-length", Argument::Integer(STATUS_QUEUE_MAX_LENGTH)),
                    ("overflow", Argument::Text("reject-publish".into())),
                ]),
                priority: 0,
            })
            .collect(),
        queues: Vec::new(),
        exchanges: Vec::new(),
        bindings: Vec::new(),
    };
    for (vhost, d) in per_vhost {
        out.add(vhost, &d)?;
    }
    out.exchanges
        .sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
    out.queues
        .sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
    out.bindings.sort_by(|a, b| {
        (&a.vhost, &a.source, &a.destination, &a.routing_key).cmp(&(
            &b.vhost,
            &b.source,
            &b.destination,
            &b.routing_key,
        ))
    });
    Ok(out)
}

/// What the brokers of a definitions file hold, merged per vhost.
struct Vhosts {
    declarations: BTreeMap<String, Declarations>,
    /// (user, vhost) of each broker.
    users: BTreeSet<(String, String)>,
    status_queues: BTreeMap<String, BTreeSet<String>>,
}

/// The declarations of the brokers in `only` (all when empty) merged per vhost, with each
/// vhost's user and the status queues on it.
fn by_vhost(config: &Config, only: &[String]) -> Result<Vhosts, DefinitionsError> {
    let mut per_vhost: BTreeMap<String, Declarations> = BTreeMap::new();
    let mut users: BTreeSet<(String, String)> = BTreeSet::new();
    let mut status_queues: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (index, declarations) in by_broker(config).into_iter().enumerate() {
        let broker = config.broker(index);
        if !only.is_empty() && !only.contains(&broker.name) {
            continue;
        }
        let (vhost, user) = vhost_and_user(broker)?;
        users.insert((user, vhost.clone()));
        for p in config.platforms.iter().filter(|p| p.broker == index) {
            status_queues
                .entry(vhost.clone())
                .or_default()
                .insert(status_queue(&p.id));
        }
        per_vhost.entry(vhost).or_default().extend(declarations);
    }
    Ok(Vhosts {
        declarations: per_vhost,
        users,
        status_queues,
    })
}

impl Definitions {
    /// The exchanges, queues and bindings of one vhost; a name declared twice differently is
    /// an error, as it would be on the broker.
    fn add(&mut self, vhost: String, d: &Declarations) -> Result<(), DefinitionsError> {
        if let Some(conflict) = d.conflicts().into_iter().next() {
            return Err(DefinitionsError::Conflict { vhost, conflict });
        }
        self.exchanges
            .extend(d.exchanges.iter().map(|e| ExchangeDefinition {
                name: e.name.clone(),
                vhost: vhost.clone(),
                kind: e.kind.name(),
                durable: true,
                auto_delete: false,
                internal: false,
                arguments: BTreeMap::new(),
            }));
        self.queues.extend(d.queues.iter().map(|q| QueueDefinition {
            name: q.name.clone(),
            vhost: vhost.clone(),
            durable: true,
            auto_delete: false,
            arguments: q.arguments(),
        }));
        self.bindings
            .extend(d.bindings.iter().map(|b| BindingDefinition {
                source: b.exchange.clone(),
                vhost: vhost.clone(),
                destination: b.queue.clone(),
                destination_type: "queue",
                routing_key: b.routing_key.clone(),
                arguments: BTreeMap::new(),
            }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_matches_exactly_the_names_given() {
        let names = BTreeSet::from(["civento-he.status".to_owned(), "a+b.status".to_owned()]);
        assert_eq!(exactly(&names), r"^(a\+b\.status|civento-he\.status)$");
    }
}
