//! StatsService: version, uptime, counters, rates and queue depths, filtered as asked
//! (`Service::overview_of`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::State;
use super::convert;
use crate::wire::admin as pb;

pub struct Stats(pub Arc<State>);

#[tonic::async_trait]
impl pb::stats_service_server::StatsService for Stats {
    async fn get_overview(
        &self,
        request: Request<pb::GetOverviewRequest>,
    ) -> Result<Response<pb::Overview>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                let filter = convert::overview_filter(r)?;
                Ok(convert::overview(service.overview_of(who, &filter).await?))
            })
            .await
    }
}
