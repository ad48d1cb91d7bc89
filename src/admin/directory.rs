//! DirectoryService: destinations, routes and the services catalogue; the audit log;
//! Resolve (`Service`'s directory calls).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::State;
use super::convert;
use super::service::{RouteFilter, ServiceError};
use crate::model::ServiceSpec;
use crate::store::AuditFilter;
use crate::wire::admin as pb;

pub struct DirectoryApi(pub Arc<State>);

impl DirectoryApi {
    /// Create and Update of a destination differ only in what the service checks.
    async fn put_destination<T: serde::Serialize>(
        &self,
        request: Request<T>,
        wanted: impl Fn(&T) -> (Option<&pb::Destination>, i64),
        create: bool,
    ) -> Result<Response<pb::Destination>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                let (destination, expected_version) = wanted(r);
                let spec = convert::destination_from_request(destination)?;
                let view = service
                    .put_destination(who, spec, expected_version, create)
                    .await?;
                Ok(convert::destination(&view))
            })
            .await
    }

    /// Create and Update of a route differ only in what the service checks.
    async fn put_route<T: serde::Serialize>(
        &self,
        request: Request<T>,
        wanted: impl Fn(&T) -> (Option<&pb::Route>, i64),
        create: bool,
    ) -> Result<Response<pb::Route>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                let (route, expected_version) = wanted(r);
                let spec = convert::route_from_request(route)?;
                let view = service
                    .put_route(who, spec, expected_version, create)
                    .await?;
                Ok(convert::route(view))
            })
            .await
    }
}

/// A text field of a filter: empty means "any".
fn given(s: &str) -> Option<String> {
    Some(s.to_owned()).filter(|s| !s.is_empty())
}

#[tonic::async_trait]
impl pb::directory_service_server::DirectoryService for DirectoryApi {
    async fn list_destinations(
        &self,
        request: Request<pb::ListDestinationsRequest>,
    ) -> Result<Response<pb::ListDestinationsResponse>, Status> {
        self.0
            .unary(request, async |service, who, _| {
                let destinations = service.list_destinations(who)?;
                Ok(pb::ListDestinationsResponse {
                    destinations: destinations.iter().map(convert::destination).collect(),
                })
            })
            .await
    }

    async fn get_destination(
        &self,
        request: Request<pb::GetDestinationRequest>,
    ) -> Result<Response<pb::Destination>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                Ok(convert::destination(&service.destination(who, &r.id)?))
            })
            .await
    }

    async fn create_destination(
        &self,
        request: Request<pb::CreateDestinationRequest>,
    ) -> Result<Response<pb::Destination>, Status> {
        self.put_destination(
            request,
            |r| (r.destination.as_ref(), r.expected_directory_version),
            true,
        )
        .await
    }

    async fn update_destination(
        &self,
        request: Request<pb::UpdateDestinationRequest>,
    ) -> Result<Response<pb::Destination>, Status> {
        self.put_destination(
            request,
            |r| (r.destination.as_ref(), r.expected_directory_version),
            false,
        )
        .await
    }

    async fn delete_destination(
        &self,
        request: Request<pb::DeleteDestinationRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                service
                    .delete_destination(who, r.id.trim(), r.expected_directory_version)
                    .await?;
                Ok(pb::DeleteResponse {})
            })
            .await
    }

    async fn list_routes(
        &self,
        request: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::ListRoutesResponse>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                let filter = RouteFilter {
                    service: given(&r.service),
                    destination: given(&r.destination),
                    region_prefix: r.region_prefix.clone(),
                };
                let routes = service.list_routes(who, &filter)?;
                Ok(pb::ListRoutesResponse {
                    routes: routes.into_iter().map(convert::route).collect(),
                })
            })
            .await
    }

    async fn get_route(
        &self,
        request: Request<pb::GetRouteRequest>,
    ) -> Result<Response<pb::Route>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                Ok(convert::route(service.route(who, &r.service, &r.region)?))
            })
            .await
    }

    async fn create_route(
        &self,
        request: Request<pb::CreateRouteRequest>,
    ) -> Result<Response<pb::Route>, Status> {
        self.put_route(
            request,
            |r| (r.route.as_ref(), r.expected_directory_version),
            true,
        )
        .await
    }

    async fn update_route(
        &self,
        request: Request<pb::UpdateRouteRequest>,
    ) -> Result<Response<pb::Route>, Status> {
        self.put_route(
            request,
            |r| (r.route.as_ref(), r.expected_directory_version),
            false,
        )
        .await
    }

    async fn delete_route(
        &self,
        request: Request<pb::DeleteRouteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                service
                    .delete_route(who, &r.service, &r.region, r.expected_directory_version)
                    .await?;
                Ok(pb::DeleteResponse {})
            })
            .await
    }

    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        self.0
            .unary(request, async |service, who, _| {
                let services = service.list_services(who)?;
                Ok(pb::ListServicesResponse {
                    services: services.into_iter().map(convert::service).collect(),
                })
            })
            .await
    }

    async fn put_service(
        &self,
        request: Request<pb::PutServiceRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                let wanted = r
                    .service
                    .as_ref()
                    .map(|s| ServiceSpec {
                        key: s.key.trim().to_owned(),
                        name: s.name.trim().to_owned(),
                    })
                    .ok_or_else(|| ServiceError::invalid("service", "is missing"))?;
                let view = service
                    .put_service(who, wanted, r.expected_directory_version)
                    .await?;
                Ok(convert::service(view))
            })
            .await
    }

    async fn delete_service(
        &self,
        request: Request<pb::DeleteServiceRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                service
                    .delete_service(who, r.key.trim(), r.expected_directory_version)
                    .await?;
                Ok(pb::DeleteResponse {})
            })
            .await
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                let filter = AuditFilter {
                    actor: given(&r.actor),
                    action_prefix: given(&r.action_prefix),
                    object_prefix: given(&r.object_prefix),
                    since: convert::time(r.since.as_ref()),
                    until: convert::time(r.until.as_ref()),
                    ..AuditFilter::default()
                };
                let page = service
                    .list_audit(who, filter, &r.page_token, r.page_size)
                    .await?;
                Ok(pb::ListAuditResponse {
                    entries: page.entries.into_iter().map(convert::audit_entry).collect(),
                    next_page_token: page.next_page_token,
                    scope: page.scope.to_string(),
                })
            })
            .await
    }

    async fn resolve(
        &self,
        request: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveResponse>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                let resolution = service.resolve(who, r.service.trim(), r.region.trim())?;
                Ok(convert::resolution(resolution))
            })
            .await
    }
}
