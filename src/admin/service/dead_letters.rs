//! Dead letters the gateway took off its dead-letter queue into the store: list, read,
//! read the payload (audited), replay, discard; each limited to the caller's scope in the
//! store's query, so that a page is a page of the caller's letters and a letter outside
//! the scope is, to the caller, a letter that does not exist.

use std::collections::BTreeMap;
use std::time::SystemTime;

use uuid::Uuid;

use super::access::Reach;
use super::{Principal, Right, Service, ServiceError, audit_row, page_size};
use crate::config::Scope;
use crate::model::Land;
use crate::model::quoted;
use crate::outcome::Reason;
use crate::store::{
    DeadLetter, DeadLetterFilter, DeadLetterMessage, DeadLetterState, TraceEvent, Visible,
};

/// A replay or discard by filter takes at most this many letters in one call; the operator
/// calls again for the rest.
pub const MAX_SELECTED: usize = 10_000;

/// A page of dead letters, oldest first.
#[derive(Debug, Clone)]
pub struct DeadLetterPage {
    pub letters: Vec<DeadLetter>,
    /// Empty on the last page.
    pub next_page_token: String,
    /// How many match the filter in the caller's scope.
    pub total: u64,
    pub scope: Scope,
}

/// Which letters a replay or discard is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// These ids (whatever their state; those not pending are skipped). One that does not
    /// exist in the caller's scope makes the call NOT_FOUND, before anything is done.
    Ids(Vec<String>),
    /// The pending letters matching a filter with at least one criterion; its `state` must
    /// be pending.
    Matching(DeadLetterFilter),
    /// Every pending letter (in the caller's scope).
    All,
}

#[derive(Debug, Clone)]
pub struct Replayed {
    pub replayed: u32,
    /// Ids that were not pending, or refused receipts (no submissions to route).
    pub skipped: Vec<String>,
    /// The letters were chosen within this scope only.
    pub scope: Scope,
}

#[derive(Debug, Clone)]
pub struct Discarded {
    pub discarded: u64,
    pub scope: Scope,
}

impl Service {
    /// Dead letters matching `filter` in the caller's scope (`filter.visible` is set from
    /// it); `page_token` from the previous page, or empty.
    pub async fn list_dead_letters(
        &self,
        who: &Principal,
        mut filter: DeadLetterFilter,
        page_token: &str,
        page_size: u32,
    ) -> Result<DeadLetterPage, ServiceError> {
        who.require(Right::Read)?;
        let after = parse_page_token(page_token)?;
        filter.visible = self.visible(who);
        let limit = self::page_size(page_size);
        let letters = self.store.list_dead_letters(&filter, after, limit).await?;
        let total = self.store.count_dead_letters(&filter).await?;
        let next_page_token = if letters.len() == limit as usize {
            letters.last().map(page_token_of).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(DeadLetterPage {
            letters,
            next_page_token,
            total,
            scope: who.scope.clone(),
        })
    }

    pub async fn dead_letter(&self, who: &Principal, id: &str) -> Result<DeadLetter, ServiceError> {
        who.require(Right::Read)?;
        let id = parse_id("id", id)?;
        self.store
            .get_dead_letter(id, &self.visible(who))
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// The letter's id and content, for the payload role; the read is audited with the
    /// justification before the content leaves.
    pub async fn dead_letter_payload(
        &self,
        who: &Principal,
        id: &str,
        justification: &str,
    ) -> Result<(Uuid, DeadLetterMessage), ServiceError> {
        who.require(Right::Payload)?;
        let id = parse_id("id", id)?;
        let justification = justification.trim();
        if justification.is_empty() {
            return Err(ServiceError::invalid(
                "justification",
                "is missing (why the payload is needed; it goes into the audit log)",
            ));
        }
        let snapshot = self.gateway.snapshot();
        let reach = self.reach(who, &snapshot);
        let letter = self
            .store
            .get_dead_letter(id, &reach.visible())
            .await?
            .ok_or_else(|| not_found(id))?;
        let message = self
            .store
            .dead_letter_message(id)
            .await?
            .ok_or_else(|| not_found(id))?;
        // Written before the payload leaves: an access that cannot be audited does not
        // happen.
        self.store
            .audit(audit_row(
                who,
                "dead-letter.payload",
                format!("dead-letter {id}"),
                None,
                serde_json::to_string(&serde_json::json!({ "justification": justification })).ok(),
                reach.submission_concerns(&letter.platform, &letter.destination),
            ))
            .await?;
        tracing::info!(actor = %who.name, dead_letter = %id, "dead letter payload read");
        Ok((id, message))
    }

    /// Sends the selected letters through the normal path again: routed afresh, or to
    /// `destination`, which must be in the caller's scope.
    pub async fn replay_dead_letters(
        &self,
        who: &Principal,
        selection: &Selection,
        destination: Option<&str>,
    ) -> Result<Replayed, ServiceError> {
        who.require(Right::Change)?;
        if let Some(d) = destination {
            let snapshot = self.gateway.snapshot();
            if snapshot.destination(d).is_none() {
                return Err(ServiceError::invalid(
                    "destination",
                    format!("{} is not in the directory", quoted(d)),
                ));
            }
            self.reach(who, &snapshot).send_to(d)?;
        }
        let (letters, mut skipped) = self.select(who, selection).await?;
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
            let Some(message) = self.store.dead_letter_message(letter.id).await? else {
                skipped.push(letter.id.to_string());
                continue;
            };
            let id = letter.id.to_string();
            if let Err(e) = self
                .gateway
                .replay(&id, &letter.platform, &message, destination)
                .await
            {
                // What went out is marked; the rest stays pending for another try.
                self.mark_replayed(who, &replayed, destination, started)
                    .await?;
                return Err(ServiceError::Unavailable(format!(
                    "replayed {} of the selected dead letters, then the replay queue failed: {e}",
                    replayed.len()
                )));
            }
            replayed.push(letter);
        }
        self.mark_replayed(who, &replayed, destination, started)
            .await?;
        Ok(Replayed {
            replayed: u32::try_from(replayed.len()).unwrap_or(u32::MAX),
            skipped,
            scope: who.scope.clone(),
        })
    }

    pub async fn discard_dead_letters(
        &self,
        who: &Principal,
        selection: &Selection,
    ) -> Result<Discarded, ServiceError> {
        who.require(Right::Change)?;
        let (letters, _) = self.select(who, selection).await?;
        let ids: Vec<Uuid> = letters.iter().map(|d| d.id).collect();
        let n = self
            .store
            .set_dead_letter_state(&ids, DeadLetterState::Discarded, &who.name)
            .await?;
        self.audit_letters(who, "dead-letter.discard", &letters, None)
            .await;
        Ok(Discarded {
            discarded: n,
            scope: who.scope.clone(),
        })
    }

    fn visible(&self, who: &Principal) -> Visible {
        self.reach(who, &self.gateway.snapshot()).visible()
    }

    /// The letters a replay or discard is about (see [`Selection`]), and the ids given
    /// that are skipped because they are not pending.
    async fn select(
        &self,
        who: &Principal,
        selection: &Selection,
    ) -> Result<(Vec<DeadLetter>, Vec<String>), ServiceError> {
        let visible = self.visible(who);
        let mut found = Vec::new();
        let mut skipped = Vec::new();
        let mut wanted = match selection {
            Selection::Ids(ids) => {
                let mut parsed = Vec::with_capacity(ids.len());
                for (i, id) in ids.iter().enumerate() {
                    parsed.push(parse_id(&format!("ids[{i}]"), id)?);
                }
                for (id, given) in parsed.into_iter().zip(ids) {
                    match self.store.get_dead_letter(id, &visible).await? {
                        Some(d) if d.state == DeadLetterState::Pending => found.push(d),
                        Some(_) => skipped.push(given.clone()),
                        None => return Err(not_found(id)),
                    }
                }
                return Ok((found, skipped));
            }
            Selection::All => DeadLetterFilter::default(),
            Selection::Matching(filter) => {
                let criteria = [
                    filter.platform.is_some(),
                    filter.reason.is_some(),
                    filter.service.is_some(),
                    filter.destination.is_some(),
                    filter.since.is_some(),
                    filter.until.is_some(),
                    filter.submission_id.is_some(),
                ];
                if filter.state != Some(DeadLetterState::Pending) {
                    return Err(ServiceError::invalid(
                        "filter.state",
                        "only pending dead letters are replayed or discarded",
                    ));
                }
                if !criteria.contains(&true) {
                    // An empty filter selects everything: that must be said, not happen by
                    // accident.
                    return Err(ServiceError::invalid(
                        "filter",
                        "name the dead letters: ids, a filter with at least one criterion, or all",
                    ));
                }
                filter.clone()
            }
        };
        wanted.state = Some(DeadLetterState::Pending);
        wanted.visible = visible;
        let mut after = None;
        loop {
            let page = self.store.list_dead_letters(&wanted, after, 1000).await?;
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

    /// Marks what went to the replay queue and notes it in the audit log and the
    /// submissions' traces. A letter replayed but not marked (the store failed here) stays
    /// pending; replaying it again is harmless, deduplication sees to that.
    async fn mark_replayed(
        &self,
        who: &Principal,
        replayed: &[DeadLetter],
        destination: Option<&str>,
        at: SystemTime,
    ) -> Result<(), ServiceError> {
        if replayed.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = replayed.iter().map(|d| d.id).collect();
        self.store
            .set_dead_letter_state(&ids, DeadLetterState::Replayed, &who.name)
            .await?;
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
        if let Err(e) = self.store.record_events(&events).await {
            tracing::warn!(error = %e, "cannot add the replays to the submission traces");
        }
        self.audit_letters(who, "dead-letter.replay", replayed, Some(destination))
            .await;
        Ok(())
    }

    /// Audits a replay or discard: one row per origin Land and destination of the letters,
    /// so that whoever may read a row may see every letter it names.
    async fn audit_letters(
        &self,
        who: &Principal,
        action: &str,
        letters: &[DeadLetter],
        replayed_to: Option<Option<&str>>,
    ) {
        let snapshot = self.gateway.snapshot();
        let reach = Reach::new(&who.scope, &self.config, &snapshot);
        let mut groups: BTreeMap<(Option<Land>, &str), Vec<&DeadLetter>> = BTreeMap::new();
        for letter in letters {
            groups
                .entry((reach.platform_land(&letter.platform), &letter.destination))
                .or_default()
                .push(letter);
        }
        for group in groups.into_values() {
            let Some(first) = group.first() else {
                continue;
            };
            let ids: Vec<String> = group.iter().map(|d| d.id.to_string()).collect();
            let mut after = serde_json::json!({ "ids": ids });
            if let Some(to) = replayed_to {
                after["destination"] = serde_json::json!(to);
            }
            let row = audit_row(
                who,
                action,
                format!("{} dead letter(s)", group.len()),
                None,
                Some(after.to_string()),
                reach.submission_concerns(&first.platform, &first.destination),
            );
            self.audit_done(row).await;
        }
    }
}

fn not_found(id: Uuid) -> ServiceError {
    ServiceError::NotFound(format!("dead letter {id} does not exist"))
}

fn parse_id(field: &str, id: &str) -> Result<Uuid, ServiceError> {
    Uuid::parse_str(id.trim()).map_err(|_| {
        ServiceError::invalid(
            field,
            format!("{} is not a dead letter id (UUID)", quoted(id)),
        )
    })
}

fn page_token_of(d: &DeadLetter) -> String {
    let micros = d
        .dead_lettered_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |t| t.as_micros());
    format!("{micros}_{}", d.id)
}

fn parse_page_token(token: &str) -> Result<Option<(SystemTime, Uuid)>, ServiceError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || ServiceError::invalid("page_token", "not one this API gave");
    let (micros, id) = token.split_once('_').ok_or_else(bad)?;
    let micros: u64 = micros.parse().map_err(|_| bad())?;
    let id = Uuid::parse_str(id).map_err(|_| bad())?;
    let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(micros);
    Ok(Some((at, id)))
}
