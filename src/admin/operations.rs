//! OperationsService: pause and resume a platform's ingress, a submission's trace, the
//! live tail of routing outcomes.

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::State;
use super::auth::{Principal, Right};
use super::convert::{store_error, timestamp};
use crate::config::quoted;
use crate::store::NewAudit;
use crate::wire::admin as pb;

pub struct Operations(pub Arc<State>);

/// Events buffered per watcher between the broadcast and its gRPC stream.
const WATCH_BUFFER: usize = 256;

impl Operations {
    async fn set_paused(
        &self,
        who: &Principal,
        platform_id: &str,
        paused: bool,
    ) -> Result<pb::IngressState, Status> {
        let activity = self.0.gateway.activity();
        let platform = activity.platform_by_id(platform_id).ok_or_else(|| {
            Status::not_found(format!(
                "platform {} is not configured",
                quoted(platform_id)
            ))
        })?;
        let changed = platform.set_paused(paused);
        let action = if paused {
            "ingress.pause"
        } else {
            "ingress.resume"
        };
        if changed {
            tracing::info!(actor = %who.name, platform = %platform_id, action, "ingress control");
            let entry = NewAudit {
                actor: who.name.clone(),
                action: action.to_owned(),
                object: format!("ingress {platform_id}"),
                before: Some(serde_json::json!({ "paused": !paused }).to_string()),
                after: Some(serde_json::json!({ "paused": paused }).to_string()),
            };
            if let Err(e) = self.0.store.audit(entry).await {
                tracing::error!(error = %e, action, "cannot write the audit row");
            }
        }
        Ok(pb::IngressState {
            platform_id: platform_id.to_owned(),
            paused: platform.paused(),
            consumer_state: platform.state().as_str().to_owned(),
        })
    }
}

#[tonic::async_trait]
impl pb::operations_service_server::OperationsService for Operations {
    async fn pause_ingress(
        &self,
        request: Request<pb::PauseIngressRequest>,
    ) -> Result<Response<pb::IngressState>, Status> {
        let who = self.0.admit(&request, Right::Change).await?;
        let id = request.get_ref().platform_id.clone();
        self.set_paused(&who, &id, true).await.map(Response::new)
    }

    async fn resume_ingress(
        &self,
        request: Request<pb::ResumeIngressRequest>,
    ) -> Result<Response<pb::IngressState>, Status> {
        let who = self.0.admit(&request, Right::Change).await?;
        let id = request.get_ref().platform_id.clone();
        self.set_paused(&who, &id, false).await.map(Response::new)
    }

    async fn get_submission_trace(
        &self,
        request: Request<pb::GetSubmissionTraceRequest>,
    ) -> Result<Response<pb::SubmissionTrace>, Status> {
        self.0.admit(&request, Right::Read).await?;
        let id = request.get_ref().submission_id.trim().to_owned();
        if id.is_empty() {
            return Err(Status::invalid_argument("submission_id: is missing"));
        }
        let events = self.0.store.trace(&id).await.map_err(store_error)?;
        if events.is_empty() {
            return Err(Status::not_found(format!(
                "no trace of submission {} (never seen, or older than the trace retention)",
                quoted(&id)
            )));
        }
        Ok(Response::new(pb::SubmissionTrace {
            submission_id: id,
            events: events
                .into_iter()
                .map(|e| pb::TraceEvent {
                    at: Some(timestamp(e.at)),
                    event: e.event,
                    platform: e.platform,
                    destination: e.destination,
                    detail: e.detail,
                })
                .collect(),
        }))
    }

    async fn list_overdue(
        &self,
        request: Request<pb::ListOverdueRequest>,
    ) -> Result<Response<pb::ListOverdueResponse>, Status> {
        self.0.admit(&request, Right::Read).await?;
        let limit = super::directory::page_size(request.get_ref().page_size);
        let cutoff = std::time::SystemTime::now()
            .checked_sub(self.0.config.receipts.overdue_after)
            .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
        let overdue = self
            .0
            .store
            .unanswered(cutoff, false, limit)
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::ListOverdueResponse {
            submissions: overdue
                .into_iter()
                .map(|f| pb::OverdueSubmission {
                    submission_id: f.submission_id.to_string(),
                    platform: f.platform,
                    destination: f.destination,
                    delivered_at: Some(timestamp(f.delivered_at)),
                    reported_at: f.overdue_reported_at.map(timestamp),
                })
                .collect(),
        }))
    }

    type WatchEventsStream = ReceiverStream<Result<pb::RoutingEvent, Status>>;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        self.0.admit(&request, Right::Read).await?;
        let filter = request.into_inner();
        let mut events = self.0.gateway.activity().subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let stop = self.0.stop.clone();
        tokio::spawn(async move {
            let mut missed = 0u64;
            loop {
                let event = tokio::select! {
                    () = stop.cancelled() => return,
                    () = tx.closed() => return,
                    event = events.recv() => event,
                };
                let event = match event {
                    Ok(e) => e,
                    // The gateway does not wait for slow watchers; they learn how much
                    // they missed with the next event.
                    Err(RecvError::Lagged(n)) => {
                        missed += n;
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                if (!filter.platform.is_empty() && event.platform != filter.platform)
                    || (!filter.destination.is_empty() && event.destination != filter.destination)
                {
                    continue;
                }
                let out = pb::RoutingEvent {
                    at: Some(timestamp(event.at)),
                    submission_id: event.submission_id,
                    platform: event.platform,
                    destination: event.destination,
                    outcome: event.outcome,
                    reason: event.reason,
                    missed,
                };
                missed = 0;
                if tx.send(Ok(out)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
