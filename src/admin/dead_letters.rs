//! DeadLetterService: what the gateway took off its dead-letter queue into the store.

use std::sync::Arc;
use std::time::SystemTime;

use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::State;
use super::auth::{Principal, Right};
use super::convert::{self, store_error, timestamp};
use crate::config::quoted;
use crate::outcome::Reason;
use crate::store::{DeadLetter, DeadLetterFilter, DeadLetterState, NewAudit, TraceEvent};
use crate::wire::admin as pb;

pub struct DeadLetters(pub Arc<State>);

/// A replay or discard by filter takes at most this many letters in one call; the operator
/// calls again for the rest.
const MAX_SELECTED: usize = 10_000;

fn state_to_pb(state: DeadLetterState) -> i32 {
    match state {
        DeadLetterState::Pending => pb::DeadLetterState::Pending as i32,
        DeadLetterState::Replayed => pb::DeadLetterState::Replayed as i32,
        DeadLetterState::Discarded => pb::DeadLetterState::Discarded as i32,
    }
}

fn filter(f: Option<&pb::DeadLetterFilter>) -> DeadLetterFilter {
    let Some(f) = f else {
        return DeadLetterFilter {
            state: Some(DeadLetterState::Pending),
            ..DeadLetterFilter::default()
        };
    };
    let nonempty = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    DeadLetterFilter {
        platform: nonempty(&f.platform),
        reason: nonempty(&f.reason),
        service: nonempty(&f.service),
        destination: nonempty(&f.destination),
        since: convert::time(f.since.as_ref()),
        until: convert::time(f.until.as_ref()),
        state: match pb::DeadLetterState::try_from(f.state) {
            Ok(pb::DeadLetterState::Replayed) => Some(DeadLetterState::Replayed),
            Ok(pb::DeadLetterState::Discarded) => Some(DeadLetterState::Discarded),
            Ok(pb::DeadLetterState::Any) => None,
            _ => Some(DeadLetterState::Pending),
        },
        submission_id: nonempty(&f.submission_id),
    }
}

fn view(d: DeadLetter) -> pb::DeadLetter {
    let headers = serde_json::from_str::<std::collections::HashMap<String, String>>(&d.headers)
        .unwrap_or_default();
    pb::DeadLetter {
        id: d.id.to_string(),
        submission_id: d.submission_id,
        platform: d.platform,
        reason: d.reason,
        field: d.field,
        detail: d.detail,
        service: d.service,
        ars: d.ars,
        destination: d.destination,
        dead_lettered_at: Some(timestamp(d.dead_lettered_at)),
        content_type: d.content_type,
        body_bytes: d.body_bytes,
        state: state_to_pb(d.state),
        state_changed_at: d.state_changed_at.map(timestamp),
        state_changed_by: d.state_changed_by,
        replays: d.replays,
        headers,
    }
}

fn parse_id(id: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(id.trim()).map_err(|_| {
        Status::invalid_argument(format!("id: {} is not a dead letter id (UUID)", quoted(id)))
    })
}

fn page_token(d: &DeadLetter) -> String {
    let micros = d
        .dead_lettered_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |t| t.as_micros());
    format!("{micros}_{}", d.id)
}

fn parse_page_token(token: &str) -> Result<Option<(SystemTime, Uuid)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || Status::invalid_argument("page_token: not one this API gave");
    let (micros, id) = token.split_once('_').ok_or_else(bad)?;
    let micros: u64 = micros.parse().map_err(|_| bad())?;
    let id = Uuid::parse_str(id).map_err(|_| bad())?;
    let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(micros);
    Ok(Some((at, id)))
}

impl DeadLetters {
    /// The letters a replay or discard is about: the ids given (whatever their state; the
    /// caller skips those not pending), or the pending ones matching the filter.
    async fn select(
        &self,
        ids: &[String],
        f: Option<&pb::DeadLetterFilter>,
        all: bool,
    ) -> Result<(Vec<DeadLetter>, Vec<String>), Status> {
        let store = &self.0.store;
        let mut found = Vec::new();
        let mut skipped = Vec::new();
        if !ids.is_empty() {
            for id in ids {
                match store
                    .get_dead_letter(parse_id(id)?)
                    .await
                    .map_err(store_error)?
                {
                    Some(d) if d.state == DeadLetterState::Pending => found.push(d),
                    _ => skipped.push(id.clone()),
                }
            }
            return Ok((found, skipped));
        }
        let default = pb::DeadLetterFilter::default();
        let f = f.unwrap_or(&default);
        if !all && *f == default {
            // An empty filter selects everything: that must be said, not happen by accident.
            return Err(Status::invalid_argument(
                "name the dead letters: ids, a filter with at least one criterion, or all",
            ));
        }
        let pending = [
            pb::DeadLetterState::Unspecified as i32,
            pb::DeadLetterState::Pending as i32,
        ];
        if !pending.contains(&f.state) {
            return Err(Status::invalid_argument(
                "filter.state: only pending dead letters are replayed or discarded",
            ));
        }
        let mut wanted = filter(Some(f));
        wanted.state = Some(DeadLetterState::Pending);
        let mut after = None;
        loop {
            let page = store
                .list_dead_letters(&wanted, after, 1000)
                .await
                .map_err(store_error)?;
            let full = page.len() == 1000;
            after = page.last().map(|d| (d.dead_lettered_at, d.id));
            found.extend(page);
            if !full || found.len() >= MAX_SELECTED {
                break;
            }
        }
        found.truncate(MAX_SELECTED);
        Ok((found, skipped))
    }

    async fn audit(&self, who: &Principal, action: &str, object: String, after: String) {
        let entry = NewAudit {
            actor: who.name.clone(),
            action: action.to_owned(),
            object,
            before: None,
            after: Some(after),
        };
        // The change is done; an audit row that cannot be written is an operator's
        // problem to see in the log, not a reason to report the change as failed.
        if let Err(e) = self.0.store.audit(entry).await {
            tracing::error!(error = %e, actor = %who.name, action, "cannot write the audit row");
        }
    }
}

#[tonic::async_trait]
impl pb::dead_letter_service_server::DeadLetterService for DeadLetters {
    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        self.0.admit(&request, Right::Read).await?;
        let r = request.get_ref();
        let wanted = filter(r.filter.as_ref());
        let limit = super::directory::page_size(r.page_size);
        let after = parse_page_token(&r.page_token)?;
        let store = &self.0.store;
        let page = store
            .list_dead_letters(&wanted, after, limit)
            .await
            .map_err(store_error)?;
        let total = store
            .count_dead_letters(&wanted)
            .await
            .map_err(store_error)?;
        let next_page_token = if page.len() == limit as usize {
            page.last().map(page_token).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: page.into_iter().map(view).collect(),
            next_page_token,
            total,
        }))
    }

    async fn get_dead_letter(
        &self,
        request: Request<pb::GetDeadLetterRequest>,
    ) -> Result<Response<pb::DeadLetter>, Status> {
        self.0.admit(&request, Right::Read).await?;
        let id = parse_id(&request.get_ref().id)?;
        self.0
            .store
            .get_dead_letter(id)
            .await
            .map_err(store_error)?
            .map(|d| Response::new(view(d)))
            .ok_or_else(|| Status::not_found(format!("dead letter {id} does not exist")))
    }

    async fn get_dead_letter_payload(
        &self,
        request: Request<pb::GetDeadLetterPayloadRequest>,
    ) -> Result<Response<pb::DeadLetterPayload>, Status> {
        let who = self.0.admit(&request, Right::Payload).await?;
        let r = request.get_ref();
        let id = parse_id(&r.id)?;
        let justification = r.justification.trim();
        if justification.is_empty() {
            return Err(Status::invalid_argument(
                "justification: is missing (why the payload is needed; it goes into the audit log)",
            ));
        }
        let message = self
            .0
            .store
            .dead_letter_message(id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| Status::not_found(format!("dead letter {id} does not exist")))?;
        // Written before the payload leaves: an access that cannot be audited does not
        // happen.
        self.0
            .store
            .audit(NewAudit {
                actor: who.name.clone(),
                action: "dead-letter.payload".to_owned(),
                object: format!("dead-letter {id}"),
                before: None,
                after: convert::json(&serde_json::json!({ "justification": justification })),
            })
            .await
            .map_err(store_error)?;
        tracing::info!(actor = %who.name, dead_letter = %id, "dead letter payload read");
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
        let who = self.0.admit(&request, Right::Change).await?;
        let r = request.get_ref();
        let destination = Some(r.destination.trim()).filter(|d| !d.is_empty());
        if let Some(d) = destination
            && self.0.gateway.snapshot().destination(d).is_none()
        {
            return Err(Status::invalid_argument(format!(
                "destination: {} is not in the directory",
                quoted(d)
            )));
        }
        let (letters, mut skipped) = self.select(&r.ids, r.filter.as_ref(), r.all).await?;
        // Traced as of before the first publish, so that the trace lists the replay before
        // the gateway receives the submission again.
        let started = SystemTime::now();
        let mut replayed = Vec::new();
        for letter in letters {
            // A refused receipt is the back office's message, not a submission: there is
            // nothing to route.
            if Reason::ALL
                .iter()
                .any(|r| r.is_receipt() && r.code() == letter.reason)
            {
                skipped.push(letter.id.to_string());
                continue;
            }
            let Some(message) = self
                .0
                .store
                .dead_letter_message(letter.id)
                .await
                .map_err(store_error)?
            else {
                skipped.push(letter.id.to_string());
                continue;
            };
            let id = letter.id.to_string();
            if let Err(e) = self
                .0
                .gateway
                .replay(&id, &letter.platform, &message, destination)
                .await
            {
                // What went out is marked; the rest stays pending for another try.
                self.mark_replayed(&who, &replayed, destination, started)
                    .await?;
                return Err(Status::unavailable(format!(
                    "replayed {} of the selected dead letters, then the replay queue failed: {e}",
                    replayed.len()
                )));
            }
            replayed.push(letter);
        }
        self.mark_replayed(&who, &replayed, destination, started)
            .await?;
        Ok(Response::new(pb::ReplayDeadLettersResponse {
            replayed: u32::try_from(replayed.len()).unwrap_or(u32::MAX),
            skipped,
        }))
    }

    async fn discard_dead_letters(
        &self,
        request: Request<pb::DiscardDeadLettersRequest>,
    ) -> Result<Response<pb::DiscardDeadLettersResponse>, Status> {
        let who = self.0.admit(&request, Right::Change).await?;
        let r = request.get_ref();
        let (letters, _) = self.select(&r.ids, r.filter.as_ref(), r.all).await?;
        let ids: Vec<Uuid> = letters.iter().map(|d| d.id).collect();
        let n = self
            .0
            .store
            .set_dead_letter_state(&ids, DeadLetterState::Discarded, &who.name)
            .await
            .map_err(store_error)?;
        self.audit(
            &who,
            "dead-letter.discard",
            format!("{n} dead letter(s)"),
            serde_json::json!({ "ids": ids.iter().map(Uuid::to_string).collect::<Vec<_>>() })
                .to_string(),
        )
        .await;
        Ok(Response::new(pb::DiscardDeadLettersResponse {
            discarded: u32::try_from(n).unwrap_or(u32::MAX),
        }))
    }
}

impl DeadLetters {
    /// Marks what went to the replay queue and notes it in the audit log and the
    /// submissions' traces. A letter replayed but not marked (the store failed here) stays
    /// pending; replaying it again is harmless, deduplication sees to that.
    async fn mark_replayed(
        &self,
        who: &Principal,
        replayed: &[DeadLetter],
        destination: Option<&str>,
        at: SystemTime,
    ) -> Result<(), Status> {
        if replayed.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = replayed.iter().map(|d| d.id).collect();
        self.0
            .store
            .set_dead_letter_state(&ids, DeadLetterState::Replayed, &who.name)
            .await
            .map_err(store_error)?;
        let events: Vec<TraceEvent> = replayed
            .iter()
            .filter(|d| !d.submission_id.is_empty())
            .map(|d| TraceEvent {
                submission_id: d.submission_id.clone(),
                at,
                event: "replayed".to_owned(),
                platform: d.platform.clone(),
                destination: destination.unwrap_or_default().to_owned(),
                detail: format!(
                    "dead letter {} replayed by {}{}",
                    d.id,
                    who.name,
                    destination.map_or(String::new(), |d| format!(" to {d}"))
                ),
            })
            .collect();
        if let Err(e) = self.0.store.record_events(&events).await {
            tracing::warn!(error = %e, "cannot add the replays to the submission traces");
        }
        self.audit(
            who,
            "dead-letter.replay",
            format!("{} dead letter(s)", ids.len()),
            serde_json::json!({
                "ids": ids.iter().map(Uuid::to_string).collect::<Vec<_>>(),
                "destination": destination,
            })
            .to_string(),
        )
        .await;
        Ok(())
    }
}
