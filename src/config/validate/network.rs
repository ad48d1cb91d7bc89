//! The network sections: `[[platforms]]`, `[[destinations]]`, `[[services]]`, `[[routes]]`.

use std::collections::{HashMap, HashSet};

use super::Validator;
use crate::config::DEFAULT_PREFETCH;
use crate::config::raw::{RawConfig, RawDestination, RawPlatform, RawService};
use crate::model::{
    BrokerIndex, Destination, DestinationIndex, DestinationRules, DestinationSpec, Platform, Route,
    RouteSpec, ServiceName, ServiceSpec, StatusFormat, validate_destination, validate_routes,
    validate_services,
};
use crate::municipalities::Municipalities;

impl Validator {
    /// `[[platforms]]`.
    pub(super) fn platforms(
        &mut self,
        raw: &[RawPlatform],
        broker_names: &HashMap<&str, BrokerIndex>,
    ) -> Vec<Platform> {
        let mut platforms = Vec::new();
        let mut platform_ids = HashSet::new();
        let mut ingress_queues = HashSet::new();
        if raw.is_empty() {
            self.error("platforms", "no platform is configured ([[platforms]])");
        }
        for (i, p) in raw.iter().enumerate() {
            let key = |field: &str| format!("platforms[{i}].{field}");
            let id = self.required(&key("id"), &p.id).map(str::to_owned);
            if let Some(id) = &id
                && !platform_ids.insert(id.clone())
            {
                self.error(key("id"), format!("platform {id:?} is configured twice"));
            }
            let land = self.land(&key("land"), &p.land);
            let broker = self.broker_ref(&key("broker"), &p.broker, broker_names);
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
        platforms
    }

    /// `[[destinations]]`, with the index of each valid one by its id.
    pub(super) fn destinations(
        &mut self,
        raw: &[RawDestination],
        rules: &DestinationRules,
    ) -> (Vec<Destination>, HashMap<String, DestinationIndex>) {
        let mut destinations: Vec<Destination> = Vec::new();
        let mut destination_ids: HashMap<String, DestinationIndex> = HashMap::new();
        for (i, d) in raw.iter().enumerate() {
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
            let valid = validate_destination(&key, &spec, rules, |k, m| {
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
        (destinations, destination_ids)
    }

    /// `[[services]]`: the catalogue of service names.
    pub(super) fn services(&mut self, raw: &[RawService]) -> Vec<ServiceName> {
        let service_specs: Vec<(String, ServiceSpec)> = raw
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
        validate_services(&[], &service_specs, |k, m| self.error(k, m))
    }

    /// `[[routes]]`, against the destinations that are valid.
    pub(super) fn routes(
        &mut self,
        raw: &RawConfig,
        destination_ids: &HashMap<String, DestinationIndex>,
        municipalities: &Municipalities,
    ) -> Vec<Route> {
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
        let unknown_municipalities = self.unknown_municipalities;
        validate_routes(
            &[],
            &raw_routes,
            destination_ids,
            &|r| municipalities.contains(r),
            |key, message| {
                let unknown_region =
                    unknown_municipalities && message.contains("municipality directory");
                if !left_out.contains(&key) && !unknown_region {
                    self.error(key, message)
                }
            },
        )
    }
}
