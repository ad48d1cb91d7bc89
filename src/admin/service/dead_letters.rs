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
    DeadLetter, DeadLetterFilter, DeadLetterGroup, DeadLetterMessage, DeadLetterState, TraceEvent,
    Visible,
};

/// A replay or discard by filter takes at most this many letters in one call; the operator
/// calls again for the rest.
const MAX_SELECTED: usize = 10_000;

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

/// How a replay or discard goes about its selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Commit {
    /// Do it.
    #[default]
    Now,
    /// Do it only if the selection holds exactly this many letters (what the operator was
    /// shown and confirmed); otherwise FAILED_PRECONDITION with the actual number, and
    /// nothing is done.
    IfCount(u64),
    /// Only say what would be done; nothing is touched.
    DryRun,
}

#[derive(Debug, Clone)]
pub struct Replayed {
    /// How many were replayed (in a dry run: would be).
    pub replayed: u32,
    /// Their ids, oldest first.
    pub ids: Vec<String>,
    /// Ids that were not pending, or refused receipts (no submissions to route).
    pub skipped: Vec<String>,
    /// How many pending letters the selection matches in all; more than `replayed` (plus
    /// the receipts skipped) when a filter matches more than one call takes
    /// ([`MAX_SELECTED`]).
    pub matched: u64,
    pub dry_run: bool,
    /// The letters were chosen within this scope only.
    pub scope: Scope,
}

#[derive(Debug, Clone)]
pub struct Discarded {
    /// How many were discarded (in a dry run: would be).
    pub discarded: u64,
    /// Their ids, oldest first.
    pub ids: Vec<String>,
    /// As for [`Replayed::matched`].
    pub matched: u64,
    pub dry_run: bool,
    pub scope: Scope,
}

/// Dead letters counted by reason, by platform and by destination, most first.
#[derive(Debug, Clone)]
pub struct DeadLetterSummary {
    pub total: u64,
    pub by_reason: Vec<(String, u64)>,
    pub by_platform: Vec<(String, u64)>,
    /// `""` for the letters that found no destination.
    pub by_destination: Vec<(String, u64)>,
    pub scope: Scope,
}

/// What became of a dead letter that was replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayFate {
    /// Still pending: never replayed.
    NotReplayed,
    Discarded,
    /// Replayed, and nothing recorded since: on the replay queue, or being processed.
    Waiting,
    Delivered {
        destination: String,
        at: SystemTime,
    },
    /// Delivered before; not delivered twice.
    Duplicate {
        destination: String,
        at: SystemTime,
    },
    /// The destination did not take it yet; the gateway retries.
    Retrying {
        destination: String,
        detail: String,
        at: SystemTime,
    },
    /// Dead-lettered again: the new letter (once the intake has stored it, and if the
    /// caller may see it) and why.
    DeadLettered {
        dead_letter: Option<Uuid>,
        reason: String,
        detail: String,
        at: SystemTime,
    },
}

impl ReplayFate {
    /// Whether it is over: nothing more will happen to the letter without an operator.
    pub fn settled(&self) -> bool {
        !matches!(self, ReplayFate::Waiting | ReplayFate::Retrying { .. })
    }
}

#[derive(Debug, Clone)]
pub struct ReplayOutcome {
    pub letter: DeadLetter,
    pub fate: ReplayFate,
}

#[derive(Debug, Clone)]
pub struct ReplayOutcomes {
    /// In the order of the ids asked for.
    pub outcomes: Vec<ReplayOutcome>,
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
        let snapshot = self.pipeline.snapshot();
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
                reach.submission_concerns(&letter.record.platform, &letter.record.destination),
            ))
            .await?;
        tracing::info!(actor = %who.name, dead_letter = %id, "dead letter payload read");
        Ok((id, message))
    }

    /// The letters matching `filter` in the caller's scope, counted by reason, platform and
    /// destination.
    pub async fn summarize_dead_letters(
        &self,
        who: &Principal,
        mut filter: DeadLetterFilter,
    ) -> Result<DeadLetterSummary, ServiceError> {
        who.require(Right::Read)?;
        filter.visible = self.visible(who);
        let total = self.store.count_dead_letters(&filter).await?;
        let by_reason = self
            .store
            .count_dead_letters_by(&filter, DeadLetterGroup::Reason)
            .await?;
        let by_platform = self
            .store
            .count_dead_letters_by(&filter, DeadLetterGroup::Platform)
            .await?;
        let by_destination = self
            .store
            .count_dead_letters_by(&filter, DeadLetterGroup::Destination)
            .await?;
        Ok(DeadLetterSummary {
            total,
            by_reason,
            by_platform,
            by_destination,
            scope: who.scope.clone(),
        })
    }

    /// What became of each of the letters `ids` (at most [`super::MAX_PAGE`]), in the
    /// caller's scope: one outside it, or unknown, makes the call NOT_FOUND.
    pub async fn replay_outcomes(
        &self,
        who: &Principal,
        ids: &[String],
    ) -> Result<ReplayOutcomes, ServiceError> {
        who.require(Right::Read)?;
        if ids.is_empty() {
            return Err(ServiceError::invalid("ids", "is empty (dead-letter ids)"));
        }
        if ids.len() > super::MAX_PAGE as usize {
            return Err(ServiceError::invalid(
                "ids",
                format!("{} ids; at most {} at once", ids.len(), super::MAX_PAGE),
            ));
        }
        let visible = self.visible(who);
        let mut letters = Vec::with_capacity(ids.len());
        for (i, given) in ids.iter().enumerate() {
            let id = parse_id(&format!("ids[{i}]"), given)?;
            let letter = self
                .store
                .get_dead_letter(id, &visible)
                .await?
                .ok_or_else(|| not_found(id))?;
            letters.push(letter);
        }
        let mut outcomes = Vec::with_capacity(letters.len());
        for letter in letters {
            let fate = self.replay_fate(&letter, &visible).await?;
            outcomes.push(ReplayOutcome { letter, fate });
        }
        Ok(ReplayOutcomes {
            outcomes,
            scope: who.scope.clone(),
        })
    }

    /// Follows a replayed letter: first a later dead letter of the same replay (its
    /// headers name the letter in `x-ozg-replay-of`, also after retries), then the
    /// submission's trace after the replay, then its delivery record.
    async fn replay_fate(
        &self,
        letter: &DeadLetter,
        visible: &Visible,
    ) -> Result<ReplayFate, ServiceError> {
        match letter.state {
            DeadLetterState::Pending => return Ok(ReplayFate::NotReplayed),
            DeadLetterState::Discarded => return Ok(ReplayFate::Discarded),
            DeadLetterState::Replayed => {}
        }
        let id = letter.record.id.to_string();
        let later = DeadLetterFilter {
            submission_id: Some(letter.record.submission_id.clone()),
            since: Some(letter.record.dead_lettered_at),
            visible: visible.clone(),
            ..DeadLetterFilter::default()
        };
        let found = self
            .store
            .list_dead_letters(&later, None, super::MAX_PAGE)
            .await?;
        if let Some(again) = found.iter().rev().find(|d| {
            d.record.id != letter.record.id
                && replay_of(&d.record.headers).as_deref() == Some(id.as_str())
        }) {
            return Ok(ReplayFate::DeadLettered {
                dead_letter: Some(again.record.id),
                reason: again.record.reason.clone(),
                detail: again.record.detail.clone(),
                at: again.record.dead_lettered_at,
            });
        }
        // An empty submission id names no one submission's trace.
        if !letter.record.submission_id.is_empty() {
            let events = self.store.trace(&letter.record.submission_id).await?;
            if let Some(fate) = fate_in_trace(&events, &id) {
                return Ok(fate);
            }
        }
        if let Ok(submission) = Uuid::parse_str(&letter.record.submission_id)
            && let Some(record) = self.store.fate(submission).await?
            && record.delivered_at >= letter.record.dead_lettered_at
        {
            return Ok(ReplayFate::Delivered {
                destination: record.destination,
                at: record.delivered_at,
            });
        }
        Ok(ReplayFate::Waiting)
    }

    /// Sends the selected letters through the normal path again: routed afresh, or to
    /// `destination`, which must be in the caller's scope.
    pub async fn replay_dead_letters(
        &self,
        who: &Principal,
        selection: &Selection,
        destination: Option<&str>,
        commit: Commit,
    ) -> Result<Replayed, ServiceError> {
        who.require(Right::Change)?;
        if let Some(d) = destination {
            let snapshot = self.pipeline.snapshot();
            if snapshot.destination(d).is_none() {
                return Err(ServiceError::invalid(
                    "destination",
                    format!("{} is not in the directory", quoted(d)),
                ));
            }
            self.reach(who, &snapshot).send_to(d)?;
        }
        let (selected, mut skipped, matched) = self.select(who, selection).await?;
        // A refused receipt is the back office's message, not a submission: there is
        // nothing to route.
        let (receipts, letters): (Vec<DeadLetter>, Vec<DeadLetter>) =
            selected.into_iter().partition(|letter| {
                Reason::ALL
                    .iter()
                    .any(|r| r.is_receipt() && r.code() == letter.record.reason)
            });
        skipped.extend(receipts.iter().map(|d| d.record.id.to_string()));
        let dry_run = confirmed(commit, letters.len(), "replayed")?;
        if dry_run {
            return Ok(Replayed {
                replayed: u32::try_from(letters.len()).unwrap_or(u32::MAX),
                ids: letters.iter().map(|d| d.record.id.to_string()).collect(),
                skipped,
                matched,
                dry_run,
                scope: who.scope.clone(),
            });
        }
        // Traced as of before the first publish, so that the trace lists the replay before
        // the gateway receives the submission again.
        let started = SystemTime::now();
        let mut replayed = Vec::new();
        for letter in letters {
            let Some(message) = self.store.dead_letter_message(letter.record.id).await? else {
                skipped.push(letter.record.id.to_string());
                continue;
            };
            let id = letter.record.id.to_string();
            if let Err(e) = self
                .pipeline
                .replay(&id, &letter.record.platform, &message, destination)
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
            ids: replayed.iter().map(|d| d.record.id.to_string()).collect(),
            skipped,
            matched,
            dry_run,
            scope: who.scope.clone(),
        })
    }

    pub async fn discard_dead_letters(
        &self,
        who: &Principal,
        selection: &Selection,
        commit: Commit,
    ) -> Result<Discarded, ServiceError> {
        who.require(Right::Change)?;
        let (letters, _, matched) = self.select(who, selection).await?;
        let dry_run = confirmed(commit, letters.len(), "discarded")?;
        let ids: Vec<Uuid> = letters.iter().map(|d| d.record.id).collect();
        let discarded = if dry_run {
            ids.len() as u64
        } else {
            let n = self
                .store
                .set_dead_letter_state(&ids, DeadLetterState::Discarded, &who.name)
                .await?;
            self.audit_letters(who, "dead-letter.discard", &letters, None)
                .await;
            n
        };
        Ok(Discarded {
            discarded,
            ids: ids.iter().map(Uuid::to_string).collect(),
            matched,
            dry_run,
            scope: who.scope.clone(),
        })
    }

    fn visible(&self, who: &Principal) -> Visible {
        self.reach(who, &self.pipeline.snapshot()).visible()
    }

    /// The letters a replay or discard is about (see [`Selection`]), at most
    /// [`MAX_SELECTED`]; the ids given that are skipped because they are not pending; and
    /// how many pending letters the selection matches in all.
    async fn select(
        &self,
        who: &Principal,
        selection: &Selection,
    ) -> Result<(Vec<DeadLetter>, Vec<String>, u64), ServiceError> {
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
                let matched = found.len() as u64;
                return Ok((found, skipped, matched));
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
        let matched = self.store.count_dead_letters(&wanted).await?;
        let mut after = None;
        loop {
            let page = self.store.list_dead_letters(&wanted, after, 1000).await?;
            let full = page.len() == 1000;
            after = page
                .last()
                .map(|d| (d.record.dead_lettered_at, d.record.id));
            found.extend(page);
            if !full || found.len() >= MAX_SELECTED {
                break;
            }
        }
        found.truncate(MAX_SELECTED);
        Ok((found, skipped, matched))
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
        let ids: Vec<Uuid> = replayed.iter().map(|d| d.record.id).collect();
        self.store
            .set_dead_letter_state(&ids, DeadLetterState::Replayed, &who.name)
            .await?;
        let events: Vec<TraceEvent> = replayed
            .iter()
            .filter(|d| !d.record.submission_id.is_empty())
            .map(|d| TraceEvent {
                submission_id: d.record.submission_id.clone(),
                at,
                event: "replayed".to_owned(),
                platform: d.record.platform.clone(),
                destination: destination.unwrap_or_default().to_owned(),
                detail: format!(
                    "{REPLAYED_PREFIX}{} replayed by {}{}",
                    d.record.id,
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
        let snapshot = self.pipeline.snapshot();
        let reach = Reach::new(&who.scope, &self.config, &snapshot);
        let mut groups: BTreeMap<(Option<Land>, &str), Vec<&DeadLetter>> = BTreeMap::new();
        for letter in letters {
            groups
                .entry((
                    reach.platform_land(&letter.record.platform),
                    &letter.record.destination,
                ))
                .or_default()
                .push(letter);
        }
        for group in groups.into_values() {
            let Some(first) = group.first() else {
                continue;
            };
            let ids: Vec<String> = group.iter().map(|d| d.record.id.to_string()).collect();
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
                reach.submission_concerns(&first.record.platform, &first.record.destination),
            );
            self.audit_done(row).await;
        }
    }
}

/// Whether `commit` lets a replay or discard of `count` letters go ahead: `Ok(true)` for a
/// dry run, `Ok(false)` to do it, FAILED_PRECONDITION when the count is not the one
/// confirmed.
fn confirmed(commit: Commit, count: usize, done: &str) -> Result<bool, ServiceError> {
    match commit {
        Commit::Now => Ok(false),
        Commit::DryRun => Ok(true),
        Commit::IfCount(expected) if expected == count as u64 => Ok(false),
        Commit::IfCount(expected) => Err(ServiceError::FailedPrecondition(format!(
            "the selection holds {count} dead letter(s) now, not the {expected} confirmed; \
             nothing was {done}"
        ))),
    }
}

/// How the "replayed" trace event that [`Service::replay_dead_letters`] writes begins,
/// followed by the letter's id.
const REPLAYED_PREFIX: &str = "dead letter ";
/// How the pipeline's "received" event of a replayed letter reads, followed by its id.
const RECEIVED_PREFIX: &str = "replay of dead letter ";

/// The letter a dead letter's headers say it was replayed from.
fn replay_of(headers: &str) -> Option<String> {
    let headers: BTreeMap<String, serde_json::Value> = serde_json::from_str(headers).ok()?;
    match headers.get(crate::pipeline::headers::REPLAY_OF)? {
        serde_json::Value::String(id) => Some(id.clone()),
        _ => None,
    }
}

/// The dead letter whose replay a trace event marks: the "replayed" event, or the
/// "received" one when the gateway took the replay.
fn replay_marked(event: &TraceEvent) -> Option<&str> {
    let id = match event.event.as_str() {
        "replayed" => event
            .detail
            .strip_prefix(REPLAYED_PREFIX)?
            .split(' ')
            .next(),
        "received" => event.detail.strip_prefix(RECEIVED_PREFIX),
        _ => None,
    }?;
    Some(id)
}

/// The last outcome in `events` after the replay of letter `id` and before any replay of
/// another letter of the same submission; `None` when there is none yet.
fn fate_in_trace(events: &[TraceEvent], id: &str) -> Option<ReplayFate> {
    let start = events.iter().position(|e| replay_marked(e) == Some(id))?;
    let mut fate = None;
    for e in &events[start + 1..] {
        match replay_marked(e) {
            Some(other) if other != id => break,
            _ => {}
        }
        let destination = e.destination.clone();
        fate = match e.event.as_str() {
            "forwarded" => Some(ReplayFate::Delivered {
                destination,
                at: e.at,
            }),
            "duplicate" => Some(ReplayFate::Duplicate {
                destination,
                at: e.at,
            }),
            "retrying" => Some(ReplayFate::Retrying {
                destination,
                detail: e.detail.clone(),
                at: e.at,
            }),
            "dead-lettered" => {
                // The pipeline writes "<reason>: <detail>".
                let (reason, detail) = e.detail.split_once(": ").unwrap_or((&e.detail, ""));
                Some(ReplayFate::DeadLettered {
                    dead_letter: None,
                    reason: reason.to_owned(),
                    detail: detail.to_owned(),
                    at: e.at,
                })
            }
            _ => continue,
        };
    }
    fate
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
        .record
        .dead_lettered_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |t| t.as_micros());
    format!("{micros}_{}", d.record.id)
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
