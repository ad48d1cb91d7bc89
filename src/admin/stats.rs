//! StatsService: version, uptime, counters, rates and queue depths, filtered as asked
//! (`Service::overview_of`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::State;
use super::convert::{self, status};
use crate::wire::admin as pb;

pub struct Stats(pub Arc<State>);

#[tonic::async_trait]
impl pb::stats_service_server::StatsService for Stats {
    async fn get_overview(
        &self,
        request: Request<pb::GetOverviewRequest>,
    ) -> Result<Response<pb::Overview>, Status> {
        let who = self.0.admit(&request).await?;
        let filter = convert::overview_filter(request.get_ref()).map_err(status)?;
        let overview = self
            .0
            .service
            .overview_of(&who, &filter)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::overview(overview)))
    }
}
