//! The routing directory as the gateway uses it: the configuration file's destinations,
//! routes and services merged with those created through the admin API and kept in the
//! store.
//!
//! The file's entries are fixed for the life of the process (change the file and restart);
//! the stored ones change live. The file's entries are validated once, when the file is
//! read; the stored ones by the same functions ([`crate::model::validate_destination`],
//! [`crate::model::validate_routes`], [`crate::model::validate_services`]) against them, so
//! an entry the API accepts is one the file would have accepted, with the same messages. A [`Snapshot`] is immutable: a change builds a new one
//! and the pipeline swaps it in, while submissions in flight finish on the one they
//! started with.

use std::collections::{HashMap, HashSet};

use crate::config::Config;
use crate::model::{
    Destination, DestinationIndex, DestinationSpec, Route, RouteSpec, ServiceName, ServiceSpec,
};
use crate::model::{RegionPrefix, ServiceKey, ServiceSelector};
use crate::routing::table::RoutingTable;
use crate::store::{Store, StoredDirectory};

/// Where a directory entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntrySource {
    /// The configuration file: read-only through the API.
    Config,
    /// Created through the admin API, kept in the store.
    Store,
}

/// Stored entries with the key their errors are reported under.
#[derive(Debug, Clone, Default)]
pub struct StoredEntries {
    pub destinations: Vec<(String, DestinationSpec)>,
    pub routes: Vec<(String, RouteSpec)>,
    pub services: Vec<(String, ServiceSpec)>,
    pub version: i64,
}

/// One validated, merged directory.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Raised by every change applied through the admin API; 0 for the file alone.
    pub version: i64,
    /// The file's destinations first, at the same indices as in `Config::destinations`.
    pub destinations: Vec<Destination>,
    pub destination_sources: Vec<EntrySource>,
    pub table: RoutingTable,
    pub services: Vec<(ServiceName, EntrySource)>,
    config_routes: HashSet<(ServiceSelector, RegionPrefix)>,
    destination_ids: HashMap<String, DestinationIndex>,
    service_names: HashMap<ServiceKey, usize>,
    /// The stored entries this was built from, to build it again on a reloaded file.
    stored: StoredEntries,
}

/// A validation problem: the key of the offending entry (and field) and what is wrong.
pub type Problem = (String, String);

impl Snapshot {
    /// The configuration file alone.
    pub fn from_config(config: &Config) -> Snapshot {
        let (snapshot, _) = Snapshot::build(config, &StoredEntries::default());
        snapshot
    }

    /// Validates the file's entries and `stored` together. Invalid stored entries are left
    /// out of the snapshot and reported; the file's entries are valid already.
    pub fn build(config: &Config, stored: &StoredEntries) -> (Snapshot, Vec<Problem>) {
        let mut problems: Vec<Problem> = Vec::new();
        let (destinations, destination_sources, destination_ids) =
            merge_destinations(config, stored, &mut problems);
        let (routes, config_routes) = merge_routes(config, stored, &destination_ids, &mut problems);
        let (services, service_names) = merge_services(config, stored, &mut problems);
        let snapshot = Snapshot {
            version: stored.version,
            destinations,
            destination_sources,
            table: RoutingTable::new(routes),
            services,
            config_routes,
            destination_ids,
            service_names,
            stored: stored.clone(),
        };
        (snapshot, problems)
    }

    /// The same stored entries on the file entries of `config` (a reloaded configuration
    /// file), at the same version.
    pub fn rebuild(&self, config: &Config) -> (Snapshot, Vec<Problem>) {
        let (mut snapshot, problems) = Snapshot::build(config, &self.stored);
        snapshot.version = self.version;
        (snapshot, problems)
    }

    pub fn destination_index(&self, id: &str) -> Option<DestinationIndex> {
        self.destination_ids.get(id).copied()
    }

    pub fn destination(&self, id: &str) -> Option<&Destination> {
        self.destination_index(id).map(|i| &self.destinations[i])
    }

    pub fn destination_source(&self, id: &str) -> Option<EntrySource> {
        self.destination_index(id)
            .map(|i| self.destination_sources[i])
    }

    pub fn route_source(&self, route: &Route) -> EntrySource {
        if self.config_routes.contains(&(route.service, route.region)) {
            EntrySource::Config
        } else {
            EntrySource::Store
        }
    }

    pub fn service_name(&self, key: ServiceKey) -> Option<&str> {
        self.service_names
            .get(&key)
            .map(|&i| self.services[i].0.name.as_str())
    }

    pub fn service_source(&self, key: ServiceKey) -> Option<EntrySource> {
        self.service_names.get(&key).map(|&i| self.services[i].1)
    }

    /// The route for exactly this (service, region), if any.
    pub fn route(&self, service: ServiceSelector, region: RegionPrefix) -> Option<&Route> {
        self.table.get(service, region)
    }

    /// Routes pointing at the destination.
    pub fn routes_to(&self, destination: DestinationIndex) -> impl Iterator<Item = &Route> {
        self.table
            .routes()
            .iter()
            .filter(move |r| r.destination == destination)
    }
}

/// What changed from one directory to the next, in one line for the log:
/// `destinations +1 -0 ~2, routes +3 -1 ~0, services +0 -0 ~0`, or `none`.
pub fn changes(before: &Snapshot, after: &Snapshot) -> String {
    fn count<K: std::hash::Hash + Eq, V: PartialEq>(
        before: &HashMap<K, V>,
        after: &HashMap<K, V>,
    ) -> (usize, usize, usize) {
        let added = after.keys().filter(|k| !before.contains_key(*k)).count();
        let removed = before.keys().filter(|k| !after.contains_key(*k)).count();
        let changed = after
            .iter()
            .filter(|(k, v)| before.get(*k).is_some_and(|old| old != *v))
            .count();
        (added, removed, changed)
    }
    let destinations = |s: &Snapshot| -> HashMap<String, String> {
        s.destinations
            .iter()
            .map(|d| (d.id.clone(), format!("{d:?}")))
            .collect()
    };
    let routes = |s: &Snapshot| -> HashMap<(ServiceSelector, RegionPrefix), String> {
        s.table
            .routes()
            .iter()
            .map(|r| {
                (
                    (r.service, r.region),
                    s.destinations[r.destination].id.clone(),
                )
            })
            .collect()
    };
    let services = |s: &Snapshot| -> HashMap<ServiceKey, String> {
        s.services
            .iter()
            .map(|(n, _)| (n.key, n.name.clone()))
            .collect()
    };
    let counts = [
        (
            "destinations",
            count(&destinations(before), &destinations(after)),
        ),
        ("routes", count(&routes(before), &routes(after))),
        ("services", count(&services(before), &services(after))),
    ];
    if counts.iter().all(|(_, c)| *c == (0, 0, 0)) {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(what, (added, removed, changed))| format!("{what} +{added} -{removed} ~{changed}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The file's destinations and the valid stored ones, with where each comes from and the
/// index of each by its id.
fn merge_destinations(
    config: &Config,
    stored: &StoredEntries,
    problems: &mut Vec<Problem>,
) -> (
    Vec<Destination>,
    Vec<EntrySource>,
    HashMap<String, DestinationIndex>,
) {
    let mut destinations = config.destinations.clone();
    let mut destination_sources = vec![EntrySource::Config; destinations.len()];
    let mut destination_ids: HashMap<String, DestinationIndex> = destinations
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id.clone(), i))
        .collect();
    let rules = config.destination_rules();
    for (key, spec) in &stored.destinations {
        if let Some(&i) = destination_ids.get(&spec.id) {
            let message = match destination_sources[i] {
                EntrySource::Config => format!(
                    "destination {:?} is defined in the configuration file",
                    spec.id
                ),
                EntrySource::Store => format!("destination {:?} exists already", spec.id),
            };
            problems.push((format!("{key}.id"), message));
            continue;
        }
        let valid = crate::model::validate_destination(key, spec, &rules, |k, m| {
            problems.push((k, m));
        });
        if let Some(destination) = valid {
            destination_ids.insert(destination.id.clone(), destinations.len());
            destinations.push(destination);
            destination_sources.push(EntrySource::Store);
        }
    }
    (destinations, destination_sources, destination_ids)
}

/// The file's routes and the valid stored ones (a stored route for the same service and
/// region as the file's is refused with the file's message), and which came from the file.
fn merge_routes(
    config: &Config,
    stored: &StoredEntries,
    destination_ids: &HashMap<String, DestinationIndex>,
    problems: &mut Vec<Problem>,
) -> (Vec<Route>, HashSet<(ServiceSelector, RegionPrefix)>) {
    let config_routes: HashSet<(ServiceSelector, RegionPrefix)> = config
        .routes
        .iter()
        .map(|r| (r.service, r.region))
        .collect();
    let routes: Vec<Route> = crate::model::validate_routes(
        &config.routes,
        &stored.routes,
        destination_ids,
        &|r| config.municipalities.contains(r),
        |k, m| problems.push((k, m)),
    );
    (routes, config_routes)
}

/// The file's service names and the valid stored ones, with where each comes from and the
/// index of each by its key.
fn merge_services(
    config: &Config,
    stored: &StoredEntries,
    problems: &mut Vec<Problem>,
) -> (Vec<(ServiceName, EntrySource)>, HashMap<ServiceKey, usize>) {
    let named = crate::model::validate_services(&config.services, &stored.services, |k, m| {
        problems.push((k, m))
    });
    let config_services: HashSet<ServiceKey> = config.services.iter().map(|s| s.key).collect();
    let services: Vec<(ServiceName, EntrySource)> = named
        .into_iter()
        .map(|s| {
            let source = if config_services.contains(&s.key) {
                EntrySource::Config
            } else {
                EntrySource::Store
            };
            (s, source)
        })
        .collect();
    let service_names = services
        .iter()
        .enumerate()
        .map(|(i, (s, _))| (s.key, i))
        .collect();
    (services, service_names)
}

impl StoredEntries {
    /// The stored directory as entries for [`Snapshot::build`], each under a key that names
    /// it for operators.
    pub fn from_store(stored: &StoredDirectory) -> StoredEntries {
        StoredEntries {
            destinations: stored
                .destinations
                .iter()
                .map(|d| (format!("stored destination {}", d.id), d.clone()))
                .collect(),
            routes: stored
                .routes
                .iter()
                .map(|r| {
                    (
                        format!("stored route {} {}", r.service, r.region),
                        r.clone(),
                    )
                })
                .collect(),
            services: stored
                .services
                .iter()
                .map(|s| (format!("stored service {}", s.key), s.clone()))
                .collect(),
            version: stored.version,
        }
    }
}

/// The file's directory merged with the entries stored through the admin API. A stored
/// entry that no longer fits the file (the file now defines the same id, a broker was
/// removed) is left out and logged; the gateway still starts.
pub async fn load(config: &Config, store: &Store) -> Snapshot {
    let stored = match store.load_directory().await {
        Ok(stored) => StoredEntries::from_store(&stored),
        Err(e) => {
            tracing::error!(error = %e,
                "cannot read the stored routing directory; routing with the configuration file's entries only");
            return Snapshot::from_config(config);
        }
    };
    let (snapshot, problems) = Snapshot::build(config, &stored);
    for (key, message) in problems {
        tracing::error!(entry = %key, problem = %message,
            "stored routing directory entry left out");
    }
    snapshot
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The configuration tests' file with a service named.
    fn config() -> Config {
        let text = format!(
            "{}\n[[services]]\nkey = \"99115005104000\"\nname = \"Anmeldung einer Wohnung\"\n",
            crate::config::tests::VALID
        );
        Config::parse(&text, "test.toml", Path::new(".")).unwrap()
    }

    fn destination(id: &str) -> DestinationSpec {
        DestinationSpec {
            id: id.to_owned(),
            name: format!("Name of {id}"),
            kind: "kreis".to_owned(),
            land: "06".to_owned(),
            broker: "he".to_owned(),
            exchange: "ozg.backoffice".to_owned(),
            routing_key: id.to_owned(),
            receipt_queue: String::new(),
        }
    }

    fn route(service: &str, region: &str, destination: &str) -> RouteSpec {
        RouteSpec {
            service: service.to_owned(),
            region: region.to_owned(),
            destination: destination.to_owned(),
        }
    }

    #[test]
    fn file_alone_keeps_its_indices_and_sources() {
        let s = Snapshot::from_config(&config());
        assert_eq!(s.version, 0);
        assert_eq!(s.destination_index("he-darmstadt"), Some(0));
        assert_eq!(
            s.destination_source("he-darmstadt"),
            Some(EntrySource::Config)
        );
        assert_eq!(s.table.routes().len(), 1);
        assert_eq!(s.route_source(&s.table.routes()[0]), EntrySource::Config);
        let key: ServiceKey = "99115005104000".parse().unwrap();
        assert_eq!(s.service_name(key), Some("Anmeldung einer Wohnung"));
    }

    #[test]
    fn stored_entries_join_the_file_and_route() {
        let stored = StoredEntries {
            destinations: vec![("destination".into(), destination("he-bergstrasse"))],
            routes: vec![(
                "route".into(),
                route("99115005104000", "06431", "he-bergstrasse"),
            )],
            services: vec![(
                "service".into(),
                ServiceSpec {
                    key: "99008001011001".into(),
                    name: "Personalausweis".into(),
                },
            )],
            version: 7,
        };
        let (s, problems) = Snapshot::build(&config(), &stored);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.version, 7);
        assert_eq!(s.destination_index("he-bergstrasse"), Some(1));
        let found = s
            .table
            .resolve(
                "99115005104000".parse().unwrap(),
                "064310001001".parse().unwrap(),
            )
            .unwrap();
        assert_eq!(s.destinations[found.destination].id, "he-bergstrasse");
        assert_eq!(
            s.route_source(&s.table.routes()[found.route]),
            EntrySource::Store
        );
        assert_eq!(
            s.service_source("99008001011001".parse().unwrap()),
            Some(EntrySource::Store)
        );
    }

    /// Each stored entry that the file would refuse is refused with the file's message.
    #[test]
    fn invalid_stored_entries_are_reported_like_the_file_and_left_out() {
        let cases: Vec<(StoredEntries, &str, &str)> = vec![
            (
                StoredEntries {
                    destinations: vec![("destination".into(), destination("he-darmstadt"))],
                    ..StoredEntries::default()
                },
                "destination.id",
                "defined in the configuration file",
            ),
            (
                StoredEntries {
                    destinations: vec![(
                        "destination".into(),
                        DestinationSpec {
                            broker: "nowhere".into(),
                            ..destination("x")
                        },
                    )],
                    ..StoredEntries::default()
                },
                "destination.broker",
                "unknown broker \"nowhere\"",
            ),
            (
                StoredEntries {
                    destinations: vec![(
                        "destination".into(),
                        DestinationSpec {
                            kind: "castle".into(),
                            ..destination("x")
                        },
                    )],
                    ..StoredEntries::default()
                },
                "destination.kind",
                "unknown kind \"castle\"",
            ),
            (
                StoredEntries {
                    routes: vec![("route".into(), route("*", "06411", "he-darmstadt"))],
                    ..StoredEntries::default()
                },
                "route",
                "a second route for service * and region 06411 (the first is routes[0])",
            ),
            (
                StoredEntries {
                    routes: vec![("route".into(), route("*", "06999", "he-darmstadt"))],
                    ..StoredEntries::default()
                },
                "route.region",
                "not a Kreis in the municipality directory",
            ),
            (
                StoredEntries {
                    routes: vec![(
                        "route".into(),
                        route("12345678901234", "06", "he-darmstadt"),
                    )],
                    ..StoredEntries::default()
                },
                "route.service",
                "must start with 99",
            ),
            (
                StoredEntries {
                    routes: vec![("route".into(), route("*", "06", "he-nowhere"))],
                    ..StoredEntries::default()
                },
                "route.destination",
                "unknown destination \"he-nowhere\"",
            ),
            (
                StoredEntries {
                    services: vec![(
                        "service".into(),
                        ServiceSpec {
                            key: "99115005104000".into(),
                            name: "again".into(),
                        },
                    )],
                    ..StoredEntries::default()
                },
                "service.key",
                "named twice",
            ),
        ];
        for (stored, key, message) in cases {
            let (s, problems) = Snapshot::build(&config(), &stored);
            assert!(
                problems
                    .iter()
                    .any(|(k, m)| k == key && m.contains(message)),
                "want {key}: …{message}…, got {problems:?}"
            );
            assert_eq!(s.destinations.len(), 1, "{key}");
            assert_eq!(s.table.routes().len(), 1, "{key}");
            assert_eq!(s.services.len(), 1, "{key}");
        }
    }
}
