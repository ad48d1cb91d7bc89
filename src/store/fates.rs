//! What became of each delivered submission at its back office: the answer its receipt
//! brought (accepted, rejected, forwarded onward), and whether the platform was told that
//! none came in time. Kept on the deduplication record, which already says where the
//! submission went: a receipt is checked against exactly that.

use std::time::SystemTime;

use uuid::Uuid;

use super::{Backend, Store, StoreError, postgres, sqlite, to_micros};

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
        match &self.backend {
            Backend::Sqlite(pool) => sqlite::fate(pool, submission_id).await,
            Backend::Postgres(pool) => postgres::fate(pool, submission_id).await,
        }
    }

    /// Records the answer if the submission was delivered to `answer.destination` and has
    /// no final answer yet (none, or only "forwarded onward"), in one conditional statement:
    /// of two receipts racing, one wins. Returns whether it was recorded.
    pub async fn record_answer(&self, answer: &Answer) -> Result<bool, StoreError> {
        let at = to_micros(SystemTime::now());
        match &self.backend {
            Backend::Sqlite(pool) => sqlite::record_answer(pool, answer, at).await,
            Backend::Postgres(pool) => postgres::record_answer(pool, answer, at).await,
        }
    }

    /// Submissions delivered before `delivered_before` without an answer, oldest first;
    /// with `unreported_only`, only those whose platform was not told yet.
    pub async fn unanswered(
        &self,
        delivered_before: SystemTime,
        unreported_only: bool,
        limit: u32,
    ) -> Result<Vec<Fate>, StoreError> {
        let before = to_micros(delivered_before);
        match &self.backend {
            Backend::Sqlite(pool) => sqlite::unanswered(pool, before, unreported_only, limit).await,
            Backend::Postgres(pool) => {
                postgres::unanswered(pool, before, unreported_only, limit).await
            }
        }
    }

    pub async fn mark_overdue_reported(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let at = to_micros(SystemTime::now());
        match &self.backend {
            Backend::Sqlite(pool) => sqlite::mark_overdue_reported(pool, ids, at).await,
            Backend::Postgres(pool) => postgres::mark_overdue_reported(pool, ids, at).await,
        }
    }
}
