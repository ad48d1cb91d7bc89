//! The routing directory (destinations, routes, the services catalogue) and the audit log.
//!
//! Reads are open to every reader, whatever its scope: where a submission would go is no
//! Land's secret. A change is allowed when the caller's scope covers it (see
//! `access::Reach`), validated against the file's entries and every stored one exactly as
//! the configuration file is (same functions, same messages), written to the store together
//! with its audit row, and only then put in use: the pipeline swaps in the new directory,
//! submissions in flight finish on the old one.

use std::sync::Arc;

use super::access;
use super::{Principal, Right, Service, ServiceError, audit_row, page_size};
use crate::config::Scope;
use crate::model::{Destination, DestinationSpec, Route, RouteSpec, ServiceSpec, quoted};
use crate::model::{Land, RegionPrefix, ServiceKey, ServiceSelector};
use crate::routing::live::{EntrySource, Problem, Snapshot, StoredEntries};
use crate::store::{AuditEntry, AuditFilter, Concerns, DirectoryChange};

/// A destination as operators see it.
#[derive(Debug, Clone)]
pub struct DestinationView {
    pub destination: Destination,
    /// The name of its broker.
    pub broker: String,
    pub source: EntrySource,
}

/// A route as operators see it, with the names that go with its keys.
#[derive(Debug, Clone)]
pub struct RouteView {
    pub service: ServiceSelector,
    pub region: RegionPrefix,
    pub destination: String,
    pub source: EntrySource,
    /// From the services catalogue; "every service" for `*`; empty when not named.
    pub service_name: String,
    /// From the municipality directory.
    pub region_name: String,
    pub destination_name: String,
}

/// Which routes to list; every part that is set must match.
#[derive(Debug, Clone, Default)]
pub struct RouteFilter {
    /// A LeiKa key or "*".
    pub service: Option<String>,
    pub destination: Option<String>,
    /// The region starts with this.
    pub region_prefix: String,
}

#[derive(Debug, Clone)]
pub struct ServiceView {
    pub key: String,
    pub name: String,
    pub source: EntrySource,
}

/// A page of the audit log, newest first.
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Empty on the last page.
    pub next_page_token: String,
    /// The rows were chosen by this scope.
    pub scope: Scope,
}

/// One entry of the stored directory put in or taken out, with what the store and the
/// audit log are told.
struct Edit<'a, T> {
    /// The kind of entry: the request's key for its problems, and the audit action's stem.
    kind: &'static str,
    verb: Verb,
    /// Where entries of this kind are kept among the stored entries.
    list: fn(&mut StoredEntries) -> &mut Vec<(String, T)>,
    /// Picks the stored entry the change replaces or removes.
    matches: &'a (dyn Fn(&T) -> bool + Sync),
    /// The entry put in; `None` deletes.
    new: Option<T>,
    /// The directory version the caller saw; 0: whatever it is now.
    expected: i64,
    store: DirectoryChange,
    object: String,
    concerns: Concerns,
}

#[derive(Clone, Copy)]
enum Verb {
    Create,
    Update,
    Delete,
    /// Create or update, as the stored entries have it or not.
    Put,
}

impl Service {
    /// The version of the directory in use, which a change sends back as the version it
    /// was made on.
    pub fn directory_version(&self, who: &Principal) -> Result<i64, ServiceError> {
        who.require(Right::Read)?;
        Ok(self.pipeline.snapshot().version)
    }

    pub fn list_destinations(&self, who: &Principal) -> Result<Vec<DestinationView>, ServiceError> {
        who.require(Right::Read)?;
        let snapshot = self.pipeline.snapshot();
        let mut destinations: Vec<DestinationView> = snapshot
            .destinations
            .iter()
            .filter_map(|d| self.destination_view(&snapshot, &d.id))
            .collect();
        destinations.sort_by(|a, b| a.destination.id.cmp(&b.destination.id));
        Ok(destinations)
    }

    pub fn destination(&self, who: &Principal, id: &str) -> Result<DestinationView, ServiceError> {
        who.require(Right::Read)?;
        self.destination_view(&self.pipeline.snapshot(), id)
            .ok_or_else(|| {
                ServiceError::NotFound(format!("destination {} does not exist", quoted(id)))
            })
    }

    /// The directory in use, held against other changes until the guard drops: one change
    /// at a time, each validated against the result of the last.
    async fn changing(&self) -> (tokio::sync::MutexGuard<'_, ()>, Arc<Snapshot>) {
        let one_at_a_time = self.directory_lock.lock().await;
        (one_at_a_time, self.pipeline.snapshot())
    }

    /// Creates the destination (`create`), or changes one stored through the API.
    pub async fn put_destination(
        &self,
        who: &Principal,
        wanted: DestinationSpec,
        expected_version: i64,
        create: bool,
    ) -> Result<DestinationView, ServiceError> {
        who.require(Right::Change)?;
        let (_one_at_a_time, snapshot) = self.changing().await;
        let reach = self.reach(who, &snapshot);
        let existing = snapshot.destination(&wanted.id);
        // Whom the change concerns: the Land it names, and the Land it leaves.
        let lands: Vec<Land> = existing
            .filter(|_| !create)
            .map(|d| d.land)
            .into_iter()
            .chain(land_of(&wanted))
            .collect();
        reach.change_destination(&wanted.id, &lands)?;
        let what = format!("destination {}", quoted(&wanted.id));
        puttable(snapshot.destination_source(&wanted.id), &what, create)?;
        let id = wanted.id.clone();
        // A new destination is added beside whatever is stored, so that an id stored twice
        // is refused as the file's would be.
        let replaces = |d: &DestinationSpec| !create && d.id == id;
        let snapshot = self
            .edit(
                who,
                Edit {
                    kind: "destination",
                    verb: if create { Verb::Create } else { Verb::Update },
                    list: |e| &mut e.destinations,
                    matches: &replaces,
                    new: Some(wanted.clone()),
                    expected: expected_version,
                    store: DirectoryChange::PutDestination(wanted),
                    object: format!("destination {id}"),
                    concerns: access::concerns(lands, [id.as_str()]),
                },
            )
            .await?;
        self.destination_view(&snapshot, &id)
            .ok_or_else(|| ServiceError::Internal("the destination is not in the directory".into()))
    }

    pub async fn delete_destination(
        &self,
        who: &Principal,
        id: &str,
        expected_version: i64,
    ) -> Result<(), ServiceError> {
        who.require(Right::Change)?;
        let (_one_at_a_time, snapshot) = self.changing().await;
        let reach = self.reach(who, &snapshot);
        let lands: Vec<Land> = snapshot
            .destination(id)
            .map(|d| d.land)
            .into_iter()
            .collect();
        reach.change_destination(id, &lands)?;
        changeable(
            snapshot.destination_source(id),
            &format!("destination {}", quoted(id)),
        )?;
        if let Some(index) = snapshot.destination_index(id) {
            let routes: Vec<String> = snapshot
                .routes_to(index)
                .map(|r| format!("{} {}", r.service, r.region))
                .collect();
            if !routes.is_empty() {
                return Err(ServiceError::FailedPrecondition(format!(
                    "destination {} is the target of {} route(s) ({}); delete or change them first",
                    quoted(id),
                    routes.len(),
                    routes.join(", ")
                )));
            }
        }
        self.edit(
            who,
            Edit {
                kind: "destination",
                verb: Verb::Delete,
                list: |e| &mut e.destinations,
                matches: &|d: &DestinationSpec| d.id == id,
                new: None,
                expected: expected_version,
                store: DirectoryChange::DeleteDestination { id: id.to_owned() },
                object: format!("destination {id}"),
                concerns: access::concerns(lands, [id]),
            },
        )
        .await?;
        Ok(())
    }

    pub fn list_routes(
        &self,
        who: &Principal,
        filter: &RouteFilter,
    ) -> Result<Vec<RouteView>, ServiceError> {
        who.require(Right::Read)?;
        let snapshot = self.pipeline.snapshot();
        let mut routes: Vec<RouteView> = snapshot
            .table
            .routes()
            .iter()
            .map(|r| self.route_view(&snapshot, r))
            .filter(|r| {
                filter
                    .service
                    .as_ref()
                    .is_none_or(|s| r.service.to_string() == *s)
            })
            .filter(|r| {
                filter
                    .destination
                    .as_ref()
                    .is_none_or(|d| r.destination == *d)
            })
            .filter(|r| r.region.to_string().starts_with(&filter.region_prefix))
            .collect();
        routes.sort_by_key(|r| (r.service.to_string(), r.region.to_string()));
        Ok(routes)
    }

    pub fn route(
        &self,
        who: &Principal,
        service: &str,
        region: &str,
    ) -> Result<RouteView, ServiceError> {
        who.require(Right::Read)?;
        let (service, region) = route_key(service, region)?;
        let snapshot = self.pipeline.snapshot();
        snapshot
            .route(service, region)
            .map(|route| self.route_view(&snapshot, route))
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "no route for service {service} and region {region}"
                ))
            })
    }

    /// Creates the route (`create`), or points an existing one elsewhere.
    pub async fn put_route(
        &self,
        who: &Principal,
        spec: RouteSpec,
        expected_version: i64,
        create: bool,
    ) -> Result<RouteView, ServiceError> {
        who.require(Right::Change)?;
        let (_one_at_a_time, snapshot) = self.changing().await;
        let key = route_key(&spec.service, &spec.region).ok();
        let existing = key.and_then(|(s, r)| snapshot.route(s, r));
        let before_destination = existing.map(|r| snapshot.destinations[r.destination].id.clone());
        if let Some((_, region)) = key {
            let destinations: Vec<&str> = before_destination
                .iter()
                .map(String::as_str)
                .chain([spec.destination.as_str()])
                .collect();
            self.reach(who, &snapshot)
                .change_route(region, &destinations)?;
        }
        let what = format!(
            "the route for service {} and region {}",
            spec.service, spec.region
        );
        puttable(existing.map(|x| snapshot.route_source(x)), &what, create)?;
        // Keys are kept in their canonical form, as the table prints them.
        let spec = match key {
            Some((service, region)) => RouteSpec {
                service: service.to_string(),
                region: region.to_string(),
                ..spec
            },
            None => spec,
        };
        let concerns = self.route_concerns(
            who,
            &snapshot,
            key.map(|(_, r)| r),
            before_destination.as_deref(),
            &spec.destination,
        );
        let snapshot = self
            .edit(
                who,
                Edit {
                    kind: "route",
                    verb: if create { Verb::Create } else { Verb::Update },
                    list: |e| &mut e.routes,
                    matches: &|r: &RouteSpec| r.service == spec.service && r.region == spec.region,
                    new: Some(spec.clone()),
                    expected: expected_version,
                    store: DirectoryChange::PutRoute(spec.clone()),
                    object: format!("route {} {}", spec.service, spec.region),
                    concerns,
                },
            )
            .await?;
        let (service, region) = route_key(&spec.service, &spec.region)?;
        snapshot
            .route(service, region)
            .map(|r| self.route_view(&snapshot, r))
            .ok_or_else(|| ServiceError::Internal("the route is not in the directory".into()))
    }

    /// Whom a route change concerns: the Land of its region and of the destinations it
    /// pointed to and points to now.
    fn route_concerns(
        &self,
        who: &Principal,
        snapshot: &Snapshot,
        region: Option<RegionPrefix>,
        before_destination: Option<&str>,
        destination: &str,
    ) -> Concerns {
        let reach = self.reach(who, snapshot);
        let lands = region
            .and_then(|r| r.land())
            .into_iter()
            .chain(before_destination.and_then(|d| reach.destination_land(d)))
            .chain(reach.destination_land(destination));
        access::concerns(lands, before_destination.into_iter().chain([destination]))
    }

    pub async fn delete_route(
        &self,
        who: &Principal,
        service: &str,
        region: &str,
        expected_version: i64,
    ) -> Result<(), ServiceError> {
        who.require(Right::Change)?;
        let (service, region) = route_key(service, region)?;
        let (_one_at_a_time, snapshot) = self.changing().await;
        let route = snapshot.route(service, region);
        let destination = route.map(|r| snapshot.destinations[r.destination].id.clone());
        let reach = self.reach(who, &snapshot);
        reach.change_route(
            region,
            &destination.as_deref().into_iter().collect::<Vec<_>>(),
        )?;
        let what = format!("the route for service {service} and region {region}");
        changeable(route.map(|route| snapshot.route_source(route)), &what)?;
        let concerns = access::concerns(
            region.land().into_iter().chain(
                destination
                    .as_deref()
                    .and_then(|d| reach.destination_land(d)),
            ),
            destination.as_deref(),
        );
        let (service, region) = (service.to_string(), region.to_string());
        self.edit(
            who,
            Edit {
                kind: "route",
                verb: Verb::Delete,
                list: |e| &mut e.routes,
                matches: &|r: &RouteSpec| r.service == service && r.region == region,
                new: None,
                expected: expected_version,
                object: format!("route {service} {region}"),
                store: DirectoryChange::DeleteRoute {
                    service: service.clone(),
                    region: region.clone(),
                },
                concerns,
            },
        )
        .await?;
        Ok(())
    }

    pub fn list_services(&self, who: &Principal) -> Result<Vec<ServiceView>, ServiceError> {
        who.require(Right::Read)?;
        let snapshot = self.pipeline.snapshot();
        let mut services: Vec<ServiceView> = snapshot
            .services
            .iter()
            .map(|(s, source)| ServiceView {
                key: s.key.to_string(),
                name: s.name.clone(),
                source: *source,
            })
            .collect();
        services.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(services)
    }

    /// Creates or renames a service of the catalogue, which every Land shares.
    pub async fn put_service(
        &self,
        who: &Principal,
        wanted: ServiceSpec,
        expected_version: i64,
    ) -> Result<ServiceView, ServiceError> {
        who.require(Right::Change)?;
        let (_one_at_a_time, snapshot) = self.changing().await;
        self.reach(who, &snapshot)
            .change_shared("the services catalogue")?;
        let existing = wanted
            .key
            .parse::<ServiceKey>()
            .ok()
            .and_then(|k| snapshot.service_source(k));
        if existing == Some(EntrySource::Config) {
            return Err(ServiceError::FailedPrecondition(format!(
                "service {} is named in the configuration file; change it there and restart",
                wanted.key
            )));
        }
        self.edit(
            who,
            Edit {
                kind: "service",
                verb: Verb::Put,
                list: |e| &mut e.services,
                matches: &|s: &ServiceSpec| s.key == wanted.key,
                new: Some(wanted.clone()),
                expected: expected_version,
                store: DirectoryChange::PutService(wanted.clone()),
                object: format!("service {}", wanted.key),
                concerns: access::concerns_everyone(),
            },
        )
        .await?;
        Ok(ServiceView {
            key: wanted.key,
            name: wanted.name,
            source: EntrySource::Store,
        })
    }

    pub async fn delete_service(
        &self,
        who: &Principal,
        key: &str,
        expected_version: i64,
    ) -> Result<(), ServiceError> {
        who.require(Right::Change)?;
        let parsed = key
            .parse::<ServiceKey>()
            .map_err(|e| ServiceError::invalid("service.key", e.to_string()))?;
        let (_one_at_a_time, snapshot) = self.changing().await;
        self.reach(who, &snapshot)
            .change_shared("the services catalogue")?;
        changeable(snapshot.service_source(parsed), &format!("service {key}"))?;
        self.edit(
            who,
            Edit {
                kind: "service",
                verb: Verb::Delete,
                list: |e| &mut e.services,
                matches: &|s: &ServiceSpec| s.key == key,
                new: None,
                expected: expected_version,
                store: DirectoryChange::DeleteService {
                    key: key.to_owned(),
                },
                object: format!("service {key}"),
                concerns: access::concerns_everyone(),
            },
        )
        .await?;
        Ok(())
    }

    /// Audit rows matching `filter` that the caller's scope covers (`filter.visible` is
    /// set from it), newest first; `page_token` from the previous page, or empty.
    pub async fn list_audit(
        &self,
        who: &Principal,
        mut filter: AuditFilter,
        page_token: &str,
        page_size: u32,
    ) -> Result<AuditPage, ServiceError> {
        who.require(Right::Read)?;
        let before_id = if page_token.is_empty() {
            None
        } else {
            Some(
                page_token
                    .parse::<i64>()
                    .map_err(|_| ServiceError::invalid("page_token", "not one this API gave"))?,
            )
        };
        filter.visible = self.reach(who, &self.pipeline.snapshot()).audit_visible();
        let limit = self::page_size(page_size);
        let entries = self.store.list_audit(&filter, before_id, limit).await?;
        let next_page_token = if entries.len() == limit as usize {
            entries.last().map(|e| e.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(AuditPage {
            entries,
            next_page_token,
            scope: who.scope.clone(),
        })
    }

    /// Applies `edit` to the stored entries, validates them as the file's would be, writes
    /// the change with its audit row and puts the new directory in use.
    async fn edit<T: serde::Serialize>(
        &self,
        who: &Principal,
        edit: Edit<'_, T>,
    ) -> Result<Arc<Snapshot>, ServiceError> {
        let mut entries = self.stored().await?;
        let after = edit.new.as_ref().and_then(json);
        let before = replace(
            (edit.list)(&mut entries),
            edit.matches,
            edit.new.map(|entry| (edit.kind, entry)),
        );
        if edit.expected != 0 && edit.expected != entries.version {
            return Err(ServiceError::Aborted(format!(
                "the directory is at version {}, not {}: someone changed it meanwhile; \
                 read it again and retry",
                entries.version, edit.expected
            )));
        }
        let (mut snapshot, problems) = Snapshot::build(&self.pipeline.directory_config(), &entries);
        if let Some(error) = invalid(edit.kind, &problems) {
            return Err(error);
        }
        let verb = match (edit.verb, before.is_some()) {
            (Verb::Create, _) | (Verb::Put, false) => "create",
            (Verb::Update, _) | (Verb::Put, true) => "update",
            (Verb::Delete, _) => "delete",
        };
        let action = format!("{}.{verb}", edit.kind);
        let audit = audit_row(
            who,
            &action,
            edit.object.clone(),
            before.as_ref().and_then(json),
            after,
            edit.concerns,
        );
        let version = self.store.apply_directory_change(edit.store, audit).await?;
        if version == entries.version + 1 {
            snapshot.version = version;
            self.pipeline.install_newer(snapshot);
        } else {
            // Another instance changed the directory between our read and our write: the
            // store holds both changes, the snapshot built here only ours.
            self.pipeline.install_newer(
                crate::routing::live::load(&self.pipeline.directory_config(), &self.store).await,
            );
        }
        tracing::info!(actor = %who.name, action = %action, object = %edit.object,
            version, "routing directory changed");
        Ok(self.pipeline.snapshot())
    }

    async fn stored(&self) -> Result<StoredEntries, ServiceError> {
        let stored = self.store.load_directory().await?;
        Ok(StoredEntries::from_store(&stored))
    }

    pub(super) fn destination_view(
        &self,
        snapshot: &Snapshot,
        id: &str,
    ) -> Option<DestinationView> {
        let i = snapshot.destination_index(id)?;
        let d = &snapshot.destinations[i];
        Some(DestinationView {
            destination: d.clone(),
            broker: self.config.brokers[d.broker].name.clone(),
            source: snapshot.destination_sources[i],
        })
    }

    fn route_view(&self, snapshot: &Snapshot, route: &Route) -> RouteView {
        let d = &snapshot.destinations[route.destination];
        let service_name = match route.service {
            ServiceSelector::Exact(k) => snapshot.service_name(k).unwrap_or_default().to_owned(),
            ServiceSelector::Any => "every service".to_owned(),
        };
        RouteView {
            service: route.service,
            region: route.region,
            destination: d.id.clone(),
            source: snapshot.route_source(route),
            service_name,
            region_name: self
                .config
                .municipalities
                .unit(route.region)
                .map(|u| u.name.clone())
                .unwrap_or_default(),
            destination_name: d.name.clone(),
        }
    }
}

/// The Land a destination spec names, if it names one.
fn land_of(spec: &DestinationSpec) -> Option<Land> {
    spec.land.parse().ok()
}

/// The route the request names, parsed; a malformed key is INVALID_ARGUMENT with the
/// configuration's message.
fn route_key(service: &str, region: &str) -> Result<(ServiceSelector, RegionPrefix), ServiceError> {
    let s = service
        .trim()
        .parse::<ServiceSelector>()
        .map_err(|e| ServiceError::invalid("route.service", e.to_string()))?;
    let r = region
        .trim()
        .parse::<RegionPrefix>()
        .map_err(|e| ServiceError::invalid("route.region", e.to_string()))?;
    Ok((s, r))
}

/// NOT_FOUND, or FAILED_PRECONDITION for an entry of the configuration file.
fn changeable(source: Option<EntrySource>, what: &str) -> Result<(), ServiceError> {
    match source {
        None => Err(ServiceError::NotFound(format!("{what} does not exist"))),
        Some(EntrySource::Config) => Err(ServiceError::FailedPrecondition(format!(
            "{what} is defined in the configuration file; change it there and restart"
        ))),
        Some(EntrySource::Store) => Ok(()),
    }
}

/// An entry is created only where none is, and changed only where one stored through the
/// API is.
fn puttable(existing: Option<EntrySource>, what: &str, create: bool) -> Result<(), ServiceError> {
    if !create {
        return changeable(existing, what);
    }
    if existing.is_some() {
        return Err(ServiceError::AlreadyExists(format!(
            "{what} exists already"
        )));
    }
    Ok(())
}

/// The problems reported under `key` (the entry of the request) as one INVALID_ARGUMENT:
/// the same messages the configuration file would get.
fn invalid(key: &str, problems: &[Problem]) -> Option<ServiceError> {
    let prefix = format!("{key}.");
    let mut mine = problems
        .iter()
        .filter(|(k, _)| k == key || k.starts_with(&prefix));
    let (field, first) = mine.next()?;
    let mut message = first.clone();
    for (k, m) in mine {
        message.push_str(&format!("; {k}: {m}"));
    }
    Some(ServiceError::invalid(field.clone(), message))
}

/// Takes the stored entry `matches` picks out of `entries` (returning it, for the audit's
/// "before") and puts `new` in under its request key, whose errors are then the request's.
fn replace<T>(
    entries: &mut Vec<(String, T)>,
    matches: &(dyn Fn(&T) -> bool + Sync),
    new: Option<(&str, T)>,
) -> Option<T> {
    let before = entries
        .iter()
        .position(|(_, entry)| matches(entry))
        .map(|i| entries.remove(i).1);
    entries.extend(new.map(|(key, entry)| (key.to_owned(), entry)));
    before
}

fn json<T: serde::Serialize>(value: &T) -> Option<String> {
    serde_json::to_string(value).ok()
}
