//! What became of each delivered submission at its back office: the answer its receipt
//! brought (accepted, rejected, forwarded onward), and whether the platform was told that
//! none came in time. Kept on the deduplication record, which already says where the
//! submission went: a receipt is checked against exactly that.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use super::{Backend, Store, StoreError, Visible, postgres, sqlite, to_micros};

/// A delivered submission and its answer so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fate {
    pub submission_id: Uuid,
    pub platform: String,
    pub destination: String,
    pub delivered_at: SystemTime,
    /// `None` until a receipt came: "accepted", "rejected" or "forwarded-onward".
    pub answer: Option<String>,
    /// SHA-256 of the answer (kind and problems), to tell a repeated receipt from another.
    pub answer_digest: Option<Vec<u8>>,
    pub answered_at: Option<SystemTime>,
    pub overdue_reported_at: Option<SystemTime>,
}

/// What [`Store::unanswered`] asks the backends for.
pub(super) struct Unanswered<'a> {
    pub delivered_before: i64,
    pub unreported_only: bool,
    pub visible: &'a Visible,
    pub limit: u32,
}

/// A receipt's answer, to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub submission_id: Uuid,
    /// The destination the receipt came from; the answer is recorded only if the
    /// submission went there.
    pub destination: String,
    pub answer: String,
    pub digest: [u8; 32],
}

impl Store {
    pub async fn fate(&self, submission_id: Uuid) -> Result<Option<Fate>, StoreError> {
        on_backend!(self, fate(submission_id))
    }

    /// Records the answer if the submission was delivered to `answer.destination` and has
    /// no final answer yet (none, or only "forwarded onward"), in one conditional statement:
    /// of two receipts racing, one wins. Returns whether it was recorded.
    pub async fn record_answer(&self, answer: &Answer) -> Result<bool, StoreError> {
        let at = to_micros(SystemTime::now());
        let recorded = on_backend!(self, record_answer(answer, at));
        self.kept(recorded)
    }

    /// Submissions delivered before `delivered_before` without an answer, oldest first,
    /// those `visible` lets through; with `unreported_only`, only those whose platform was
    /// not told yet.
    pub async fn unanswered(
        &self,
        delivered_before: SystemTime,
        unreported_only: bool,
        visible: &Visible,
        limit: u32,
    ) -> Result<Vec<Fate>, StoreError> {
        let before = to_micros(delivered_before);
        let query = Unanswered {
            delivered_before: before,
            unreported_only,
            visible,
            limit,
        };
        on_backend!(self, unanswered(&query))
    }

    pub async fn mark_overdue_reported(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let at = to_micros(SystemTime::now());
        on_backend!(self, mark_overdue_reported(ids, at))
    }

    /// Takes up to `limit` submissions delivered before `delivered_before`, without an
    /// answer and not reported overdue yet, for this instance to report, oldest first.
    /// Instances sharing the store get disjoint sets: a claimed row is passed over until
    /// its claim is older than `lease`, after which another instance takes it (the claimer
    /// died before reporting). Report with [`mark_overdue_reported`](Self::mark_overdue_reported)
    /// or give back with [`release_overdue_claims`](Self::release_overdue_claims).
    pub async fn claim_overdue(
        &self,
        delivered_before: SystemTime,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Fate>, StoreError> {
        let now = SystemTime::now();
        let before = to_micros(delivered_before);
        let stale = to_micros(now.checked_sub(lease).unwrap_or(UNIX_EPOCH));
        let at = to_micros(now);
        let mut claimed = on_backend!(self, claim_overdue(before, stale, at, limit))?;
        // RETURNING follows no ORDER BY.
        claimed.sort_by(|a, b| {
            (a.delivered_at, a.submission_id).cmp(&(b.delivered_at, b.submission_id))
        });
        Ok(claimed)
    }

    /// Gives claims back (the report failed), so that the next check, here or on another
    /// instance, takes them again at once.
    pub async fn release_overdue_claims(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        on_backend!(self, release_overdue_claims(ids))
    }
}
