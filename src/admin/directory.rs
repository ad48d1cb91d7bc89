//! DirectoryService: destinations, routes and the services catalogue; the audit log;
//! Resolve (`Service`'s directory calls).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::State;
use super::convert::{self, status};
use super::service::RouteFilter;
use crate::model::ServiceSpec;
use crate::store::AuditFilter;
use crate::wire::admin as pb;

pub struct DirectoryApi(pub Arc<State>);

fn deleted(
    result: Result<(), super::service::ServiceError>,
) -> Result<Response<pb::DeleteResponse>, Status> {
    result
        .map(|()| Response::new(pb::DeleteResponse {}))
        .map_err(status)
}

#[tonic::async_trait]
impl pb::directory_service_server::DirectoryService for DirectoryApi {
    async fn list_destinations(
        &self,
        request: Request<pb::ListDestinationsRequest>,
    ) -> Result<Response<pb::ListDestinationsResponse>, Status> {
        let who = self.0.admit(&request).await?;
        let destinations = self.0.service.list_destinations(&who).map_err(status)?;
        Ok(Response::new(pb::ListDestinationsResponse {
            destinations: destinations.iter().map(convert::destination).collect(),
        }))
    }

    async fn get_destination(
        &self,
        request: Request<pb::GetDestinationRequest>,
    ) -> Result<Response<pb::Destination>, Status> {
        let who = self.0.admit(&request).await?;
        let view = self
            .0
            .service
            .destination(&who, &request.get_ref().id)
            .map_err(status)?;
        Ok(Response::new(convert::destination(&view)))
    }

    async fn create_destination(
        &self,
        request: Request<pb::CreateDestinationRequest>,
    ) -> Result<Response<pb::Destination>, Status> {
        let who = self.0.admit(&request).await?;
        let r = request.get_ref();
        let wanted = convert::destination_from_request(r.destination.as_ref())?;
        let view = self
            .0
            .service
            .create_destination(&who, wanted, r.expected_directory_version)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::destination(&view)))
    }

    async fn update_destination(
        &self,
        request: Request<pb::UpdateDestinationRequest>,
    ) -> Result<Response<pb::Destination>, Status> {
        let who = self.0.admit(&request).await?;
        let r = request.get_ref();
        let wanted = convert::destination_from_request(r.destination.as_ref())?;
        let view = self
            .0
            .service
            .update_destination(&who, wanted, r.expected_directory_version)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::destination(&view)))
    }

    async fn delete_destination(
        &self,
        request: Request<pb::DeleteDestinationRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let who = self.0.admit(&request).await?;
        let r = request.get_ref();
        deleted(
            self.0
                .service
                .delete_destination(&who, r.id.trim(), r.expected_directory_version)
                .await,
        )
    }

    async fn list_routes(
        &self,
        request: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::ListRoutesResponse>, Status> {
        let who = self.0.admit(&request).await?;
        let r = request.get_ref();
        let given = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
        let filter = RouteFilter {
            service: given(&r.service),
            destination: given(&r.destination),
            region_prefix: r.region_prefix.clone(),
        };
        let routes = self.0.service.list_routes(&who, &filter).map_err(status)?;
        Ok(Response::new(pb::ListRoutesResponse {
            routes: routes.into_iter().map(convert::route).collect(),
        }))
    }

    async fn get_route(
        &self,
        request: Request<pb::GetRouteRequest>,
    ) -> Result<Response<pb::Route>, Status> {
        let who = self.0.admit(&request).await?;
        let r = request.get_ref();
        let route = self
            .0
            .service
            .route(&who, &r.service, &r.region)
            .map_err(status)?;
        Ok(Response::new(convert::route(route)))
    }

    async fn create_route(
        &self,
        request: Request<pb::CreateRouteRequest>,
    ) -> Result<Response<pb::Route>, Status> {
        let who = self.0.admit(&request).await?;
        let r = request.get_ref();
        let spec = convert::route_from_request(r.route.as_ref())?;
        let route = self
            .0
            .service
            .put_route(&who, spec, r.expected_directory_version, true)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::route(route)))
    }

    async fn update_route(
        &self,
        request: Request<pb::UpdateRouteRequest>,
    ) -> Result<Response<pb::Route>, Status> {
        let who = self.0.admit(&request).await?;
        let r = request.get_ref();
        let spec = convert::route_from_request(r.route.as_ref())?;
        let route = self
            .0
            .service
            .put_route(&who, spec, r.expected_directory_version, false)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::route(route)))
    }

    async fn delete_route(
        &self,
        request: Request<pb::DeleteRouteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let who = self.0.admit(&request).await?;
        let r = request.get_ref();
        deleted(
            self.0
                .service
                .delete_route(&who, &r.service, &r.region, r.expected_directory_version)
                .await,
        )
    }

    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let who = self.0.admit(&request).await?;
        let services = self.0.service.list_services(&who).map_err(status)?;
        Ok(Response::new(pb::ListServicesResponse {
            services: services
                .into_iter()
                .map(|s| pb::Service {
                    key: s.key,
                    name: s.name,
                    source: convert::source(s.source),
                })
                .collect(),
        }))
    }

    async fn put_service(
        &self,
        request: Request<pb::PutServiceRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        let who = self.0.admit(&request).await?;
        let r = request.get_ref();
        let wanted = r
            .service
            .as_ref()
            .map(|s| ServiceSpec {
                key: s.key.trim().to_owned(),
                name: s.name.trim().to_owned(),
            })
            .ok_or_else(|| {
                status(super::service::ServiceError::invalid(
                    "service",
                    "is missing",
                ))
            })?;
        let service = self
            .0
            .service
            .put_service(&who, wanted, r.expected_directory_version)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::Service {
            key: service.key,
            name: service.name,
            source: convert::source(service.source),
        }))
    }

    async fn delete_service(
        &self,
        request: Request<pb::DeleteServiceRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let who = self.0.admit(&request).await?;
        let r = request.get_ref();
        deleted(
            self.0
                .service
                .delete_service(&who, r.key.trim(), r.expected_directory_version)
                .await,
        )
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let who = self.0.admit(&request).await?;
        let r = request.get_ref();
        let given = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
        let filter = AuditFilter {
            actor: given(&r.actor),
            action_prefix: given(&r.action_prefix),
            object_prefix: given(&r.object_prefix),
            since: convert::time(r.since.as_ref()),
            until: convert::time(r.until.as_ref()),
            ..AuditFilter::default()
        };
        let page = self
            .0
            .service
            .list_audit(&who, filter, &r.page_token, r.page_size)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListAuditResponse {
            entries: page.entries.into_iter().map(convert::audit_entry).collect(),
            next_page_token: page.next_page_token,
            scope: page.scope.to_string(),
        }))
    }

    async fn resolve(
        &self,
        request: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveResponse>, Status> {
        let who = self.0.admit(&request).await?;
        let r = request.get_ref();
        let resolution = self
            .0
            .service
            .resolve(&who, r.service.trim(), r.region.trim())
            .map_err(status)?;
        let steps = resolution
            .explanation
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
        let matched_rule = resolution
            .explanation
            .resolution
            .map(|found| format!("service {} region {}", found.service, found.region))
            .unwrap_or_default();
        Ok(Response::new(pb::ResolveResponse {
            service: resolution.service.to_string(),
            service_name: resolution.service_name,
            ars: resolution.ars.to_string(),
            region_name: resolution.region_name,
            steps,
            destination: resolution.destination.as_ref().map(convert::destination),
            matched_rule,
        }))
    }
}
