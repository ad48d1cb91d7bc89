//! Routing-directory entries as an operator writes them (in the file or through the admin
//! API) and their one validation.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::model::{
    AuthorityKind, Broker, BrokerIndex, Destination, DestinationIndex, Land, MAX_ID_CHARS,
    MAX_NAME_CHARS, Platform, RegionPrefix, Route, ServiceKey, ServiceName, ServiceSelector,
    check_amqp_name, check_id, check_text, quoted,
};

/// A destination as an operator writes it, before validation: what the admin API takes and
/// the store keeps (as JSON too, in the audit log).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationSpec {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub land: String,
    pub broker: String,
    pub exchange: String,
    pub routing_key: String,
    /// Empty: the back office sends no receipts.
    #[serde(default)]
    pub receipt_queue: String,
}

/// Exchanges and queues whose names start with this belong to the gateway (dead letters,
/// retries, replays), on whatever broker.
const GATEWAY_NAMESPACE: &str = "ozg.gateway.";

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

/// Validates one destination the same way wherever it comes from (file or admin API);
/// errors go to `report(key, message)` with keys under `key`. Duplicate ids are the
/// caller's to check: only it knows the other destinations.
pub fn validate_destination(
    key: &str,
    spec: &DestinationSpec,
    rules: &DestinationRules,
    mut report: impl FnMut(String, String),
) -> Option<Destination> {
    let mut report = |field: &str, message: String| report(format!("{key}.{field}"), message);
    let texts = destination_texts(spec, &mut report);
    let kind = texts
        .kind
        .then(|| destination_kind(spec, &mut report))
        .flatten();
    let land = if texts.land {
        match spec.land.parse::<Land>() {
            Ok(land) => Some(land),
            Err(e) => {
                report("land", e.to_string());
                None
            }
        }
    } else {
        None
    };
    let broker = destination_broker(spec, rules.brokers, texts.broker, &mut report);
    if !texts.amqp_names {
        return None;
    }
    if spec.exchange.is_empty() && spec.routing_key.is_empty() {
        report(
            "routing_key",
            "is missing (with the default exchange it names the back office's queue)".to_owned(),
        );
        return None;
    }
    let free = broker.is_none_or(|b| targets_free(spec, rules, b, &mut report));
    match (texts.id_and_name && free, kind, land, broker) {
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

/// Which of a destination's text fields passed their bounds.
struct DestinationTexts {
    id_and_name: bool,
    kind: bool,
    land: bool,
    broker: bool,
    amqp_names: bool,
}

fn destination_texts(
    spec: &DestinationSpec,
    report: &mut impl FnMut(&str, String),
) -> DestinationTexts {
    let mut check = |field: &str, result: Result<(), String>| match result {
        Ok(()) => true,
        Err(message) => {
            report(field, message);
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
    let [kind, land, broker] = [
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
    let amqp_names = [
        ("exchange", &spec.exchange),
        ("routing_key", &spec.routing_key),
        ("receipt_queue", &spec.receipt_queue),
    ]
    .map(|(field, value)| check(field, check_amqp_name(value)))
    .iter()
    .all(|ok| *ok);
    DestinationTexts {
        id_and_name: has_id && has_name,
        kind,
        land,
        broker,
        amqp_names,
    }
}

fn destination_kind(
    spec: &DestinationSpec,
    report: &mut impl FnMut(&str, String),
) -> Option<AuthorityKind> {
    match spec.kind.parse::<AuthorityKind>() {
        Ok(kind) => Some(kind),
        Err(()) => {
            report(
                "kind",
                format!(
                    "unknown kind {} (one of {})",
                    quoted(&spec.kind),
                    AuthorityKind::NAMES.join(", ")
                ),
            );
            None
        }
    }
}

fn destination_broker(
    spec: &DestinationSpec,
    brokers: &[Broker],
    has_broker: bool,
    report: &mut impl FnMut(&str, String),
) -> Option<BrokerIndex> {
    match brokers.iter().position(|b| b.name == spec.broker) {
        Some(i) => Some(i),
        None if !has_broker => None,
        None => {
            let mut known: Vec<&str> = brokers.iter().map(|b| b.name.as_str()).collect();
            known.sort_unstable();
            report(
                "broker",
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
    }
}

/// Whether the destination's exchange and queues are none of those [`DestinationRules`]
/// keep from destinations (each one that is reported).
fn targets_free(
    spec: &DestinationSpec,
    rules: &DestinationRules,
    broker: BrokerIndex,
    report: &mut impl FnMut(&str, String),
) -> bool {
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
    let mut free = true;
    for (field, why) in taken {
        if let Some(why) = why {
            report(field, format!("{why}: a destination cannot use it"));
            free = false;
        }
    }
    free
}

/// A service catalogue entry as an operator writes it, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub key: String,
    pub name: String,
}

/// Validates catalogue entries: a LeiKa key each, a name, no key twice. `valid` are
/// entries validated before (the file's, when stored ones join them): they come first in
/// what is returned, and count for "named twice".
pub fn validate_services(
    valid: &[ServiceName],
    specs: &[(String, ServiceSpec)],
    mut report: impl FnMut(String, String),
) -> Vec<ServiceName> {
    let mut out: Vec<ServiceName> = Vec::with_capacity(valid.len() + specs.len());
    out.extend_from_slice(valid);
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

/// A route as an operator writes it, before validation. `destination` may name a
/// destination of the configuration file, so the store does not check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    pub service: String,
    pub region: String,
    pub destination: String,
}

/// Validates routes the same way wherever they come from (file or admin API): malformed
/// keys, regions not in the municipality directory (`region_exists`), unknown destinations,
/// and two routes for the same service and region. Errors go to `report(key, message)`.
/// `valid` are the file's routes, validated before, when stored ones join them: they come
/// first in what is returned, and a spec for the same service and region as one of them
/// is a second route, the first named by its key in the file (`routes[i]`).
pub fn validate_routes(
    valid: &[Route],
    specs: &[(String, RouteSpec)],
    destination_ids: &HashMap<String, DestinationIndex>,
    region_exists: &dyn Fn(RegionPrefix) -> bool,
    mut report: impl FnMut(String, String),
) -> Vec<Route> {
    let mut routes = Vec::with_capacity(valid.len() + specs.len());
    routes.extend_from_slice(valid);
    let mut seen: HashMap<(ServiceSelector, RegionPrefix), First<'_>> = valid
        .iter()
        .enumerate()
        .map(|(i, r)| ((r.service, r.region), First::File(i)))
        .collect();
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
        let region = route_region(key, &spec.region, region_exists, &mut report);
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
            seen.insert((service, region), First::Spec(key));
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

/// The first route for a service and region, as a second one's error names it.
enum First<'a> {
    /// The file's `routes[i]`.
    File(usize),
    Spec(&'a str),
}

impl std::fmt::Display for First<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            First::File(i) => write!(f, "routes[{i}]"),
            First::Spec(key) => f.write_str(key),
        }
    }
}

/// A route's region: an ARS prefix of a unit the municipality directory has.
fn route_region(
    key: &str,
    region: &str,
    region_exists: &dyn Fn(RegionPrefix) -> bool,
    report: &mut impl FnMut(String, String),
) -> Option<RegionPrefix> {
    if region.trim().is_empty() {
        report(
            format!("{key}.region"),
            "is missing (an ARS prefix)".to_owned(),
        );
        None
    } else {
        match region.parse::<RegionPrefix>() {
            Ok(r) if region_exists(r) => Some(r),
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
    }
}
