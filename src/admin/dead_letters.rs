//! DeadLetterService: what the gateway took off its dead-letter queue into the store
//! (`Service::*_dead_letter*`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::State;
use super::convert;
use crate::wire::admin as pb;

pub struct DeadLetters(pub Arc<State>);

#[tonic::async_trait]
impl pb::dead_letter_service_server::DeadLetterService for DeadLetters {
    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                let filter = convert::dead_letter_filter(r.filter.as_ref());
                let page = service
                    .list_dead_letters(who, filter, &r.page_token, r.page_size)
                    .await?;
                Ok(pb::ListDeadLettersResponse {
                    dead_letters: page.letters.into_iter().map(convert::dead_letter).collect(),
                    next_page_token: page.next_page_token,
                    total: page.total,
                    scope: page.scope.to_string(),
                })
            })
            .await
    }

    async fn get_dead_letter(
        &self,
        request: Request<pb::GetDeadLetterRequest>,
    ) -> Result<Response<pb::DeadLetter>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                Ok(convert::dead_letter(service.dead_letter(who, &r.id).await?))
            })
            .await
    }

    async fn get_dead_letter_payload(
        &self,
        request: Request<pb::GetDeadLetterPayloadRequest>,
    ) -> Result<Response<pb::DeadLetterPayload>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                let (id, message) = service
                    .dead_letter_payload(who, &r.id, &r.justification)
                    .await?;
                Ok(pb::DeadLetterPayload {
                    id: id.to_string(),
                    content_type: message.content_type,
                    body: message.body,
                })
            })
            .await
    }

    async fn replay_dead_letters(
        &self,
        request: Request<pb::ReplayDeadLettersRequest>,
    ) -> Result<Response<pb::ReplayDeadLettersResponse>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                let selection = convert::selection(&r.ids, r.filter.as_ref(), r.all);
                let destination = Some(r.destination.trim()).filter(|d| !d.is_empty());
                let commit = convert::commit(r.dry_run, r.expected_count);
                let replayed = service
                    .replay_dead_letters(who, &selection, destination, commit)
                    .await?;
                Ok(convert::replayed(replayed))
            })
            .await
    }

    async fn discard_dead_letters(
        &self,
        request: Request<pb::DiscardDeadLettersRequest>,
    ) -> Result<Response<pb::DiscardDeadLettersResponse>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                let selection = convert::selection(&r.ids, r.filter.as_ref(), r.all);
                let commit = convert::commit(r.dry_run, r.expected_count);
                let discarded = service
                    .discard_dead_letters(who, &selection, commit)
                    .await?;
                Ok(convert::discarded(discarded))
            })
            .await
    }

    async fn summarize_dead_letters(
        &self,
        request: Request<pb::SummarizeDeadLettersRequest>,
    ) -> Result<Response<pb::DeadLetterSummary>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                let filter = convert::dead_letter_filter(r.filter.as_ref());
                let summary = service.summarize_dead_letters(who, filter).await?;
                Ok(convert::summary(summary))
            })
            .await
    }

    async fn get_replay_outcomes(
        &self,
        request: Request<pb::GetReplayOutcomesRequest>,
    ) -> Result<Response<pb::GetReplayOutcomesResponse>, Status> {
        self.0
            .unary(request, async |service, who, r| {
                let outcomes = service.replay_outcomes(who, &r.ids).await?;
                Ok(pb::GetReplayOutcomesResponse {
                    outcomes: outcomes
                        .outcomes
                        .into_iter()
                        .map(convert::replay_outcome)
                        .collect(),
                    scope: outcomes.scope.to_string(),
                })
            })
            .await
    }
}
