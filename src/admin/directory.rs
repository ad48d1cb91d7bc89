//! DirectoryService: destinations, routes and the services catalogue; the audit log;
//! Resolve.
//!
//! A change is validated against the file's entries and every stored one exactly as the
//! configuration file is (same functions, same messages), written to the store together
//! with its audit row, and only then put in use: the pipeline swaps in the new directory,
//! submissions in flight finish on the old one.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::State;
use super::auth::{Principal, Right};
use super::convert::{self, invalid, json, store_error, timestamp};
use crate::config::quoted;
use crate::config::{RouteSpec, ServiceSpec};
use crate::live::{EntrySource, Snapshot, StoredEntries};
use crate::model::{Ags, Ars, RegionPrefix, ServiceKey, ServiceSelector};
use crate::store::{AuditFilter, DirectoryChange, NewAudit, StoredRoute, StoredService};
use crate::wire::admin as pb;

pub struct DirectoryApi(pub Arc<State>);

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// What a change does, for the store and the audit log.
struct Change {
    /// The directory version the caller saw; 0: whatever it is now.
    expected: i64,
    store: DirectoryChange,
    action: &'static str,
    object: String,
    before: Option<String>,
    after: Option<String>,
}

impl DirectoryApi {
    /// Validates `entries` (the stored directory with the request applied), writes the
    /// change with its audit row and puts the new directory in use.
    async fn apply(
        &self,
        who: &Principal,
        key: &str,
        entries: StoredEntries,
        change: Change,
    ) -> Result<Arc<Snapshot>, Status> {
        let state = &self.0;
        if change.expected != 0 && change.expected != entries.version {
            return Err(Status::aborted(format!(
                "the directory is at version {}, not {}: someone changed it meanwhile; \
                 read it again and retry",
                entries.version, change.expected
            )));
        }
        let (mut snapshot, problems) = Snapshot::build(&state.gateway.directory_config(), &entries);
        if let Some(status) = invalid(key, &problems) {
            return Err(status);
        }
        let version = state
            .store
            .apply_directory_change(
                change.store,
                NewAudit {
                    actor: who.name.clone(),
                    action: change.action.to_owned(),
                    object: change.object.clone(),
                    before: change.before,
                    after: change.after,
                },
            )
            .await
            .map_err(store_error)?;
        if version == entries.version + 1 {
            snapshot.version = version;
            state.gateway.install_newer(snapshot);
        } else {
            // Another instance changed the directory between our read and our write: the
            // store holds both changes, the snapshot built here only ours.
            state.gateway.install_newer(
                crate::app::load_directory(&state.gateway.directory_config(), &state.store).await,
            );
        }
        tracing::info!(actor = %who.name, action = change.action, object = %change.object,
            version, "routing directory changed");
        Ok(state.gateway.snapshot())
    }

    async fn stored(&self) -> Result<StoredEntries, Status> {
        let stored = self.0.store.load_directory().await.map_err(store_error)?;
        Ok(super::stored_entries(&stored))
    }

    fn broker_name(&self, index: usize) -> String {
        self.0.config.brokers[index].name.clone()
    }

    fn destination_view(&self, snapshot: &Snapshot, id: &str) -> Option<pb::Destination> {
        let i = snapshot.destination_index(id)?;
        let d = &snapshot.destinations[i];
        Some(convert::destination(
            d,
            &self.broker_name(d.broker),
            snapshot.destination_sources[i],
        ))
    }

    fn route_view(&self, snapshot: &Snapshot, route: &crate::config::Route) -> pb::Route {
        let d = &snapshot.destinations[route.destination];
        let service_name = match route.service {
            ServiceSelector::Exact(k) => snapshot.service_name(k).unwrap_or_default().to_owned(),
            ServiceSelector::Any => "every service".to_owned(),
        };
        pb::Route {
            service: route.service.to_string(),
            region: route.region.to_string(),
            destination: d.id.clone(),
            source: convert::source(snapshot.route_source(route)),
            service_name,
            region_name: self
                .0
                .config
                .directory
                .unit(route.region)
                .map(|u| u.name.clone())
                .unwrap_or_default(),
            destination_name: d.name.clone(),
        }
    }

    /// The route the request names, parsed; a malformed key is INVALID_ARGUMENT with the
    /// configuration's message.
    fn route_key(service: &str, region: &str) -> Result<(ServiceSelector, RegionPrefix), Status> {
        let s = service
            .trim()
            .parse::<ServiceSelector>()
            .map_err(|e| Status::invalid_argument(format!("route.service: {e}")))?;
        let r = region
            .trim()
            .parse::<RegionPrefix>()
            .map_err(|e| Status::invalid_argument(format!("route.region: {e}")))?;
        Ok((s, r))
    }

    /// NOT_FOUND, or FAILED_PRECONDITION for an entry of the configuration file.
    fn changeable(source: Option<EntrySource>, what: &str) -> Result<(), Status> {
        match source {
            None => Err(Status::not_found(format!("{what} does not exist"))),
            Some(EntrySource::Config) => Err(Status::failed_precondition(format!(
                "{what} is defined in the configuration file; change it there and restart"
            ))),
            Some(EntrySource::Store) => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl pb::directory_service_server::DirectoryService for DirectoryApi {
    async fn list_destinations(
        &self,
        request: Request<pb::ListDestinationsRequest>,
    ) -> Result<Response<pb::ListDestinationsResponse>, Status> {
        self.0.admit(&request, Right::Read).await?;
        let snapshot = self.0.gateway.snapshot();
        let mut destinations: Vec<pb::Destination> = snapshot
            .destinations
            .iter()
            .enumerate()
            .map(|(i, d)| {
                convert::destination(
                    d,
                    &self.broker_name(d.broker),
                    snapshot.destination_sources[i],
                )
            })
            .collect();
        destinations.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Response::new(pb::ListDestinationsResponse { destinations }))
    }

    async fn get_destination(
        &self,
        request: Request<pb::GetDestinationRequest>,
    ) -> Result<Response<pb::Destination>, Status> {
        self.0.admit(&request, Right::Read).await?;
        let id = &request.get_ref().id;
        self.destination_view(&self.0.gateway.snapshot(), id)
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("destination {} does not exist", quoted(id))))
    }

    async fn create_destination(
        &self,
        request: Request<pb::CreateDestinationRequest>,
    ) -> Result<Response<pb::Destination>, Status> {
        let who = self.0.admit(&request, Right::Change).await?;
        let wanted = request
            .get_ref()
            .destination
            .as_ref()
            .map(convert::destination_from_request)
            .ok_or_else(|| Status::invalid_argument("destination: is missing"))?;
        let _one_at_a_time = self.0.directory_lock.lock().await;
        if self.0.gateway.snapshot().destination(&wanted.id).is_some() {
            return Err(Status::already_exists(format!(
                "destination {} exists already",
                quoted(&wanted.id)
            )));
        }
        let mut entries = self.stored().await?;
        entries
            .destinations
            .push(("destination".to_owned(), wanted.clone()));
        let stored = convert::stored_destination(&wanted);
        let snapshot = self
            .apply(
                &who,
                "destination",
                entries,
                Change {
                    expected: request.get_ref().expected_directory_version,
                    action: "destination.create",
                    object: format!("destination {}", wanted.id),
                    before: None,
                    after: json(&stored),
                    store: DirectoryChange::PutDestination(stored),
                },
            )
            .await?;
        self.destination_view(&snapshot, &wanted.id)
            .map(Response::new)
            .ok_or_else(|| Status::internal("the new destination is not in the directory"))
    }

    async fn update_destination(
        &self,
        request: Request<pb::UpdateDestinationRequest>,
    ) -> Result<Response<pb::Destination>, Status> {
        let who = self.0.admit(&request, Right::Change).await?;
        let wanted = request
            .get_ref()
            .destination
            .as_ref()
            .map(convert::destination_from_request)
            .ok_or_else(|| Status::invalid_argument("destination: is missing"))?;
        let _one_at_a_time = self.0.directory_lock.lock().await;
        let snapshot = self.0.gateway.snapshot();
        Self::changeable(
            snapshot.destination_source(&wanted.id),
            &format!("destination {}", quoted(&wanted.id)),
        )?;
        let mut entries = self.stored().await?;
        let before = replace(
            &mut entries.destinations,
            |d| d.id == wanted.id,
            Some(("destination", wanted.clone())),
        )
        .map(|d| convert::stored_destination(&d));
        let stored = convert::stored_destination(&wanted);
        let snapshot = self
            .apply(
                &who,
                "destination",
                entries,
                Change {
                    expected: request.get_ref().expected_directory_version,
                    action: "destination.update",
                    object: format!("destination {}", wanted.id),
                    before: before.as_ref().and_then(json),
                    after: json(&stored),
                    store: DirectoryChange::PutDestination(stored),
                },
            )
            .await?;
        self.destination_view(&snapshot, &wanted.id)
            .map(Response::new)
            .ok_or_else(|| Status::internal("the destination is not in the directory"))
    }

    async fn delete_destination(
        &self,
        request: Request<pb::DeleteDestinationRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let who = self.0.admit(&request, Right::Change).await?;
        let id = request.get_ref().id.trim().to_owned();
        let _one_at_a_time = self.0.directory_lock.lock().await;
        let snapshot = self.0.gateway.snapshot();
        Self::changeable(
            snapshot.destination_source(&id),
            &format!("destination {}", quoted(&id)),
        )?;
        if let Some(index) = snapshot.destination_index(&id) {
            let routes: Vec<String> = snapshot
                .routes_to(index)
                .map(|r| format!("{} {}", r.service, r.region))
                .collect();
            if !routes.is_empty() {
                return Err(Status::failed_precondition(format!(
                    "destination {} is the target of {} route(s) ({}); delete or change them first",
                    quoted(&id),
                    routes.len(),
                    routes.join(", ")
                )));
            }
        }
        let mut entries = self.stored().await?;
        let before = replace(&mut entries.destinations, |d| d.id == id, None)
            .map(|d| convert::stored_destination(&d));
        self.apply(
            &who,
            "destination",
            entries,
            Change {
                expected: request.get_ref().expected_directory_version,
                action: "destination.delete",
                object: format!("destination {id}"),
                before: before.as_ref().and_then(json),
                after: None,
                store: DirectoryChange::DeleteDestination { id: id.clone() },
            },
        )
        .await?;
        Ok(Response::new(pb::DeleteResponse {}))
    }

    async fn list_routes(
        &self,
        request: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::ListRoutesResponse>, Status> {
        self.0.admit(&request, Right::Read).await?;
        let filter = request.get_ref();
        let snapshot = self.0.gateway.snapshot();
        let mut routes: Vec<pb::Route> = snapshot
            .table
            .routes()
            .iter()
            .map(|r| self.route_view(&snapshot, r))
            .filter(|r| filter.service.is_empty() || r.service == filter.service)
            .filter(|r| filter.destination.is_empty() || r.destination == filter.destination)
            .filter(|r| r.region.starts_with(&filter.region_prefix))
            .collect();
        routes.sort_by(|a, b| (&a.service, &a.region).cmp(&(&b.service, &b.region)));
        Ok(Response::new(pb::ListRoutesResponse { routes }))
    }

    async fn get_route(
        &self,
        request: Request<pb::GetRouteRequest>,
    ) -> Result<Response<pb::Route>, Status> {
        self.0.admit(&request, Right::Read).await?;
        let r = request.get_ref();
        let (service, region) = Self::route_key(&r.service, &r.region)?;
        let snapshot = self.0.gateway.snapshot();
        snapshot
            .route(service, region)
            .map(|route| Response::new(self.route_view(&snapshot, route)))
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no route for service {service} and region {region}"
                ))
            })
    }

    async fn create_route(
        &self,
        request: Request<pb::CreateRouteRequest>,
    ) -> Result<Response<pb::Route>, Status> {
        let who = self.0.admit(&request, Right::Change).await?;
        let r = request.get_ref();
        self.put_route(&who, r.route.as_ref(), r.expected_directory_version, true)
            .await
            .map(Response::new)
    }

    async fn update_route(
        &self,
        request: Request<pb::UpdateRouteRequest>,
    ) -> Result<Response<pb::Route>, Status> {
        let who = self.0.admit(&request, Right::Change).await?;
        let r = request.get_ref();
        self.put_route(&who, r.route.as_ref(), r.expected_directory_version, false)
            .await
            .map(Response::new)
    }

    async fn delete_route(
        &self,
        request: Request<pb::DeleteRouteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let who = self.0.admit(&request, Right::Change).await?;
        let r = request.get_ref();
        let (service, region) = Self::route_key(&r.service, &r.region)?;
        let _one_at_a_time = self.0.directory_lock.lock().await;
        let snapshot = self.0.gateway.snapshot();
        let what = format!("the route for service {service} and region {region}");
        Self::changeable(
            snapshot
                .route(service, region)
                .map(|route| snapshot.route_source(route)),
            &what,
        )?;
        let (service, region) = (service.to_string(), region.to_string());
        let mut entries = self.stored().await?;
        let before = replace(
            &mut entries.routes,
            |r| r.service == service && r.region == region,
            None,
        )
        .map(|r| stored_route(&r));
        self.apply(
            &who,
            "route",
            entries,
            Change {
                expected: request.get_ref().expected_directory_version,
                action: "route.delete",
                object: format!("route {service} {region}"),
                before: before.as_ref().and_then(json),
                after: None,
                store: DirectoryChange::DeleteRoute { service, region },
            },
        )
        .await?;
        Ok(Response::new(pb::DeleteResponse {}))
    }

    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        self.0.admit(&request, Right::Read).await?;
        let snapshot = self.0.gateway.snapshot();
        let mut services: Vec<pb::Service> = snapshot
            .services
            .iter()
            .map(|(s, source)| pb::Service {
                key: s.key.to_string(),
                name: s.name.clone(),
                source: convert::source(*source),
            })
            .collect();
        services.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Response::new(pb::ListServicesResponse { services }))
    }

    async fn put_service(
        &self,
        request: Request<pb::PutServiceRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        let who = self.0.admit(&request, Right::Change).await?;
        let wanted = request
            .get_ref()
            .service
            .as_ref()
            .map(|s| ServiceSpec {
                key: s.key.trim().to_owned(),
                name: s.name.trim().to_owned(),
            })
            .ok_or_else(|| Status::invalid_argument("service: is missing"))?;
        let _one_at_a_time = self.0.directory_lock.lock().await;
        let snapshot = self.0.gateway.snapshot();
        let existing = wanted
            .key
            .parse::<ServiceKey>()
            .ok()
            .and_then(|k| snapshot.service_source(k));
        if existing == Some(EntrySource::Config) {
            return Err(Status::failed_precondition(format!(
                "service {} is named in the configuration file; change it there and restart",
                wanted.key
            )));
        }
        let mut entries = self.stored().await?;
        let before = replace(
            &mut entries.services,
            |s| s.key == wanted.key,
            Some(("service", wanted.clone())),
        )
        .map(|s| stored_service(&s));
        let stored = StoredService {
            key: wanted.key.clone(),
            name: wanted.name.clone(),
        };
        self.apply(
            &who,
            "service",
            entries,
            Change {
                expected: request.get_ref().expected_directory_version,
                action: if before.is_some() {
                    "service.update"
                } else {
                    "service.create"
                },
                object: format!("service {}", wanted.key),
                before: before.as_ref().and_then(json),
                after: json(&stored),
                store: DirectoryChange::PutService(stored),
            },
        )
        .await?;
        Ok(Response::new(pb::Service {
            key: wanted.key,
            name: wanted.name,
            source: convert::source(EntrySource::Store),
        }))
    }

    async fn delete_service(
        &self,
        request: Request<pb::DeleteServiceRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let who = self.0.admit(&request, Right::Change).await?;
        let key = request.get_ref().key.trim().to_owned();
        let parsed = key
            .parse::<ServiceKey>()
            .map_err(|e| Status::invalid_argument(format!("service.key: {e}")))?;
        let _one_at_a_time = self.0.directory_lock.lock().await;
        let snapshot = self.0.gateway.snapshot();
        Self::changeable(snapshot.service_source(parsed), &format!("service {key}"))?;
        let mut entries = self.stored().await?;
        let before =
            replace(&mut entries.services, |s| s.key == key, None).map(|s| stored_service(&s));
        self.apply(
            &who,
            "service",
            entries,
            Change {
                expected: request.get_ref().expected_directory_version,
                action: "service.delete",
                object: format!("service {key}"),
                before: before.as_ref().and_then(json),
                after: None,
                store: DirectoryChange::DeleteService { key: key.clone() },
            },
        )
        .await?;
        Ok(Response::new(pb::DeleteResponse {}))
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        self.0.admit(&request, Right::Read).await?;
        let r = request.get_ref();
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let filter = AuditFilter {
            actor: nonempty(&r.actor),
            action_prefix: nonempty(&r.action_prefix),
            object_prefix: nonempty(&r.object_prefix),
            since: convert::time(r.since.as_ref()),
            until: convert::time(r.until.as_ref()),
        };
        let before_id = if r.page_token.is_empty() {
            None
        } else {
            Some(
                r.page_token
                    .parse::<i64>()
                    .map_err(|_| Status::invalid_argument("page_token: not one this API gave"))?,
            )
        };
        let limit = page_size(r.page_size);
        let entries = self
            .0
            .store
            .list_audit(&filter, before_id, limit)
            .await
            .map_err(store_error)?;
        let next_page_token = if entries.len() == limit as usize {
            entries.last().map(|e| e.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListAuditResponse {
            entries: entries
                .into_iter()
                .map(|e| pb::AuditEntry {
                    id: e.id,
                    at: Some(timestamp(e.at)),
                    actor: e.actor,
                    action: e.action,
                    object: e.object,
                    before: e.before.unwrap_or_default(),
                    after: e.after.unwrap_or_default(),
                })
                .collect(),
            next_page_token,
        }))
    }

    async fn resolve(
        &self,
        request: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveResponse>, Status> {
        self.0.admit(&request, Right::Read).await?;
        let r = request.get_ref();
        let directory = &self.0.config.directory;
        let service = r
            .service
            .trim()
            .parse::<ServiceKey>()
            .map_err(|e| Status::invalid_argument(format!("service: {e}")))?;
        let region = r.region.trim();
        let ars = match region.chars().count() {
            8 => {
                let ags = region
                    .parse::<Ags>()
                    .map_err(|e| Status::invalid_argument(format!("region: {e}")))?;
                directory.ars_for_ags(ags).ok_or_else(|| {
                    Status::not_found(format!(
                        "region: AGS {ags} is not in the municipality directory"
                    ))
                })?
            }
            _ => region
                .parse::<Ars>()
                .map_err(|e| Status::invalid_argument(format!("region: {e}; or an 8-digit AGS")))?,
        };
        let snapshot = self.0.gateway.snapshot();
        let explanation = snapshot.table.explain(service, ars, directory);
        let steps = explanation
            .steps
            .iter()
            .map(|s| pb::ResolveStep {
                service: s.service.to_string(),
                region: s.region.to_string(),
                level: s.region.level().name().to_owned(),
                unit_name: s.unit_name.clone().unwrap_or_default(),
                matched: s.matched.is_some(),
            })
            .collect();
        let (destination, matched_rule) = match explanation.resolution {
            Some(found) => {
                let d = &snapshot.destinations[found.destination];
                (
                    self.destination_view(&snapshot, &d.id),
                    format!("service {} region {}", found.service, found.region),
                )
            }
            None => (None, String::new()),
        };
        Ok(Response::new(pb::ResolveResponse {
            service: service.to_string(),
            service_name: snapshot
                .service_name(service)
                .unwrap_or_default()
                .to_owned(),
            ars: ars.to_string(),
            region_name: directory
                .gemeinde(ars)
                .map(|u| u.name.clone())
                .unwrap_or_default(),
            steps,
            destination,
            matched_rule,
        }))
    }
}

impl DirectoryApi {
    async fn put_route(
        &self,
        who: &Principal,
        route: Option<&pb::Route>,
        expected: i64,
        create: bool,
    ) -> Result<pb::Route, Status> {
        let route = route.ok_or_else(|| Status::invalid_argument("route: is missing"))?;
        let spec = RouteSpec {
            service: route.service.trim().to_owned(),
            region: route.region.trim().to_owned(),
            destination: route.destination.trim().to_owned(),
        };
        let _one_at_a_time = self.0.directory_lock.lock().await;
        let snapshot = self.0.gateway.snapshot();
        let key = Self::route_key(&spec.service, &spec.region).ok();
        let existing =
            key.and_then(|(s, r)| snapshot.route(s, r).map(|x| snapshot.route_source(x)));
        let what = format!(
            "the route for service {} and region {}",
            spec.service, spec.region
        );
        if create {
            if existing.is_some() {
                return Err(Status::already_exists(format!("{what} exists already")));
            }
        } else {
            Self::changeable(existing, &what)?;
        }
        // Keys are kept in their canonical form, as the table prints them.
        let canonical = key.map_or_else(
            || (spec.service.clone(), spec.region.clone()),
            |(s, r)| (s.to_string(), r.to_string()),
        );
        let spec = RouteSpec {
            service: canonical.0,
            region: canonical.1,
            ..spec
        };
        let mut entries = self.stored().await?;
        let before = replace(
            &mut entries.routes,
            |r| r.service == spec.service && r.region == spec.region,
            Some(("route", spec.clone())),
        )
        .map(|r| stored_route(&r));
        let stored = stored_route(&spec);
        let snapshot = self
            .apply(
                who,
                "route",
                entries,
                Change {
                    expected,
                    action: if create {
                        "route.create"
                    } else {
                        "route.update"
                    },
                    object: format!("route {} {}", spec.service, spec.region),
                    before: before.as_ref().and_then(json),
                    after: json(&stored),
                    store: DirectoryChange::PutRoute(stored),
                },
            )
            .await?;
        let (service, region) = Self::route_key(&spec.service, &spec.region)?;
        snapshot
            .route(service, region)
            .map(|r| self.route_view(&snapshot, r))
            .ok_or_else(|| Status::internal("the route is not in the directory"))
    }
}

/// Takes the stored entry `matches` picks out of `entries` (returning it, for the audit's
/// "before") and puts `new` in under its request key, whose errors are then the request's.
fn replace<T>(
    entries: &mut Vec<(String, T)>,
    matches: impl Fn(&T) -> bool,
    new: Option<(&str, T)>,
) -> Option<T> {
    let before = entries
        .iter()
        .position(|(_, entry)| matches(entry))
        .map(|i| entries.remove(i).1);
    entries.extend(new.map(|(key, entry)| (key.to_owned(), entry)));
    before
}

fn stored_service(s: &ServiceSpec) -> StoredService {
    StoredService {
        key: s.key.clone(),
        name: s.name.clone(),
    }
}

fn stored_route(r: &RouteSpec) -> StoredRoute {
    StoredRoute {
        service: r.service.clone(),
        region: r.region.clone(),
        destination: r.destination.clone(),
    }
}

pub(super) fn page_size(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}
