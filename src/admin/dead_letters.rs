//! DeadLetterService: what the gateway took off its dead-letter queue into the store
//! (`Service::*_dead_letter*`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::State;
use super::convert::{self, status};
use crate::wire::admin as pb;

pub struct DeadLetters(pub Arc<State>);

#[tonic::async_trait]
impl pb::dead_letter_service_server::DeadLetterService for DeadLetters {
    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        let who = self.0.admit(&request).await?;
        let r = request.get_ref();
        let filter = convert::dead_letter_filter(r.filter.as_ref());
        let page = self
            .0
            .service
            .list_dead_letters(&who, filter, &r.page_token, r.page_size)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: page.letters.into_iter().map(convert::dead_letter).collect(),
            next_page_token: page.next_page_token,
            total: page.total,
            scope: page.scope.to_string(),
        }))
    }

    async fn get_dead_letter(
        &self,
        request: Request<pb::GetDeadLetterRequest>,
    ) -> Result<Response<pb::DeadLetter>, Status> {
        let who = self.0.admit(&request).await?;
        let letter = self
            .0
            .service
            .dead_letter(&who, &request.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::dead_letter(letter)))
    }

    async fn get_dead_letter_payload(
        &self,
        request: Request<pb::GetDeadLetterPayloadRequest>,
    ) -> Result<Response<pb::DeadLetterPayload>, Status> {
        let who = self.0.admit(&request).await?;
        let r = request.get_ref();
        let (id, message) = self
            .0
            .service
            .dead_letter_payload(&who, &r.id, &r.justification)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeadLetterPayload {
            id: id.to_string(),
            content_type: message.content_type,
            body: message.body,
        }))
    }

    async fn replay_dead_letters(
        &self,
        request: Request<pb::ReplayDeadLettersRequest>,
    ) -> Result<Response<pb::ReplayDeadLettersResponse>, Status> {
        let who = self.0.admit(&request).await?;
        let r = request.get_ref();
        let selection = convert::selection(&r.ids, r.filter.as_ref(), r.all);
        let destination = Some(r.destination.trim()).filter(|d| !d.is_empty());
        let replayed = self
            .0
            .service
            .replay_dead_letters(
                &who,
                &selection,
                destination,
                convert::commit(r.dry_run, r.expected_count),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(convert::replayed(replayed)))
    }

    async fn discard_dead_letters(
        &self,
        request: Request<pb::DiscardDeadLettersRequest>,
    ) -> Result<Response<pb::DiscardDeadLettersResponse>, Status> {
        let who = self.0.admit(&request).await?;
        let r = request.get_ref();
        let selection = convert::selection(&r.ids, r.filter.as_ref(), r.all);
        let discarded = self
            .0
            .service
            .discard_dead_letters(
                &who,
                &selection,
                convert::commit(r.dry_run, r.expected_count),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(convert::discarded(discarded)))
    }

    async fn summarize_dead_letters(
        &self,
        request: Request<pb::SummarizeDeadLettersRequest>,
    ) -> Result<Response<pb::DeadLetterSummary>, Status> {
        let who = self.0.admit(&request).await?;
        let filter = convert::dead_letter_filter(request.get_ref().filter.as_ref());
        let summary = self
            .0
            .service
            .summarize_dead_letters(&who, filter)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::summary(summary)))
    }

    async fn get_replay_outcomes(
        &self,
        request: Request<pb::GetReplayOutcomesRequest>,
    ) -> Result<Response<pb::GetReplayOutcomesResponse>, Status> {
        let who = self.0.admit(&request).await?;
        let outcomes = self
            .0
            .service
            .replay_outcomes(&who, &request.get_ref().ids)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::GetReplayOutcomesResponse {
            outcomes: outcomes
                .outcomes
                .into_iter()
                .map(convert::replay_outcome)
                .collect(),
            scope: outcomes.scope.to_string(),
        }))
    }
}
