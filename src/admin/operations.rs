//! OperationsService: pause and resume a platform's ingress, a submission's trace, the
//! overdue list, the live tail of routing outcomes (`Service::set_paused`, `trace`,
//! `overdue`, `watch`).

use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::State;
use super::convert::{self, status};
use super::service::WatchFilter;
use crate::wire::admin as pb;

pub struct Operations(pub Arc<State>);

/// Events buffered per watcher between the service's watch and its gRPC stream.
const WATCH_BUFFER: usize = 256;

impl Operations {
    async fn set_paused<T: serde::Serialize>(
        &self,
        request: Request<T>,
        platform_id: impl Fn(&T) -> &str,
        paused: bool,
    ) -> Result<Response<pb::IngressState>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                let state = service.set_paused(who, platform_id(r), paused).await?;
                Ok(pb::IngressState {
                    platform_id: state.platform_id,
                    paused: state.paused,
                    consumer_state: state.state.as_str().to_owned(),
                })
            })
            .await
    }
}

#[tonic::async_trait]
impl pb::operations_service_server::OperationsService for Operations {
    async fn pause_ingress(
        &self,
        request: Request<pb::PauseIngressRequest>,
    ) -> Result<Response<pb::IngressState>, Status> {
        self.set_paused(request, |r| &r.platform_id, true).await
    }

    async fn resume_ingress(
        &self,
        request: Request<pb::ResumeIngressRequest>,
    ) -> Result<Response<pb::IngressState>, Status> {
        self.set_paused(request, |r| &r.platform_id, false).await
    }

    async fn get_submission_trace(
        &self,
        request: Request<pb::GetSubmissionTraceRequest>,
    ) -> Result<Response<pb::SubmissionTrace>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                let id = r.submission_id.trim();
                let events = service.trace(who, id).await?;
                Ok(pb::SubmissionTrace {
                    submission_id: id.to_owned(),
                    events: events.into_iter().map(convert::trace_event).collect(),
                })
            })
            .await
    }

    async fn list_overdue(
        &self,
        request: Request<pb::ListOverdueRequest>,
    ) -> Result<Response<pb::ListOverdueResponse>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                let overdue = service.overdue(who, r.page_size).await?;
                Ok(pb::ListOverdueResponse {
                    submissions: overdue
                        .submissions
                        .into_iter()
                        .map(convert::overdue)
                        .collect(),
                    scope: overdue.scope.to_string(),
                })
            })
            .await
    }

    type WatchEventsStream = ReceiverStream<Result<pb::RoutingEvent, Status>>;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let who = self.0.admit(&request).await?;
        let r = request.into_inner();
        let given = |s: String| Some(s).filter(|s| !s.is_empty());
        let filter = WatchFilter {
            platform: given(r.platform),
            destination: given(r.destination),
        };
        let mut watch = self.0.service.watch(&who, filter).map_err(status)?;
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let stop = self.0.stop.clone();
        tokio::spawn(async move {
            loop {
                let watched = tokio::select! {
                    () = stop.cancelled() => return,
                    () = tx.closed() => return,
                    watched = watch.next() => watched,
                };
                let Some(watched) = watched else { return };
                if tx.send(Ok(convert::routing_event(watched))).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
