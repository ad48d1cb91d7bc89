//! The admin API's calls on the [`Store`]: the stored directory, the audit log, dead letters
//! and submission traces, each dispatched to its backend.

use std::time::SystemTime;

use uuid::Uuid;

use super::{
    AuditEntry, AuditFilter, Condition, DeadLetter, DeadLetterFilter, DeadLetterGroup,
    DeadLetterMessage, DeadLetterState, DirectoryChange, NewAudit, NewDeadLetter, StoredDirectory,
    TraceEvent, Visible,
};
use crate::store::{Backend, Store, StoreError, postgres, sqlite, to_micros};

/// The admin API's part of the store; see this module's files for the types. Times are taken from the
/// gateway's clock (`SystemTime::now()`), not the database's.
impl Store {
    /// Everything the directory tables hold, sorted (destinations by id, routes by
    /// (service, region), services by key, in byte order), with the directory version, all
    /// read from one snapshot.
    pub async fn load_directory(&self) -> Result<StoredDirectory, StoreError> {
        let directory = match &self.backend {
            Backend::Sqlite(pool) => sqlite::load_directory(pool).await?,
            Backend::Postgres(pool) => postgres::load_directory(pool).await?,
        };
        Ok(directory.sorted())
    }

    /// The directory version: raised by every applied change, so that other instances
    /// sharing a PostgreSQL store can poll it to notice changes. 0 before the first.
    pub async fn directory_version(&self) -> Result<i64, StoreError> {
        match &self.backend {
            Backend::Sqlite(pool) => sqlite::directory_version(pool).await,
            Backend::Postgres(pool) => postgres::directory_version(pool).await,
        }
    }

    /// Applies `change`, raises the version and writes `audit`, in one transaction; returns
    /// the new version. Put inserts or replaces. Deleting an entry that is not there fails
    /// with [`StoreError::NotFound`], and then nothing is written: no version bump, no audit
    /// row (the caller can audit the failed attempt with [`audit`](Self::audit)).
    pub async fn apply_directory_change(
        &self,
        change: DirectoryChange,
        audit: NewAudit,
    ) -> Result<i64, StoreError> {
        let at = to_micros(SystemTime::now());
        let applied = match &self.backend {
            Backend::Sqlite(pool) => {
                sqlite::apply_directory_change(pool, &change, &audit, at).await
            }
            Backend::Postgres(pool) => {
                postgres::apply_directory_change(pool, &change, &audit, at).await
            }
        };
        self.kept(applied)
    }

    /// Writes an audit row on its own (payload access, replay, discard, pause/resume).
    pub async fn audit(&self, entry: NewAudit) -> Result<(), StoreError> {
        let at = to_micros(SystemTime::now());
        match &self.backend {
            Backend::Sqlite(pool) => sqlite::audit(pool, &entry, at).await,
            Backend::Postgres(pool) => postgres::audit(pool, &entry, at).await,
        }
    }

    /// Audit rows matching `filter`, newest (highest id) first, at most `limit`; for the
    /// next page pass the last id of this one as `before_id` (rows with a lower id).
    pub async fn list_audit(
        &self,
        filter: &AuditFilter,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let conditions = filter.conditions(before_id);
        match &self.backend {
            Backend::Sqlite(pool) => sqlite::list_audit(pool, &conditions, limit).await,
            Backend::Postgres(pool) => postgres::list_audit(pool, &conditions, limit).await,
        }
    }

    /// Stores dead letters taken off the dead-letter queue, all or none. A letter whose id
    /// is already stored is skipped, not an error: the queue may deliver one again.
    pub async fn insert_dead_letters(&self, letters: &[NewDeadLetter]) -> Result<(), StoreError> {
        if letters.is_empty() {
            return Ok(());
        }
        let stored_at = to_micros(SystemTime::now());
        // Acked off the queue after this: an SQLite file deleted meanwhile would take the
        // letters with it.
        let stored = match &self.backend {
            Backend::Sqlite(pool) => sqlite::insert_dead_letters(pool, letters, stored_at).await,
            Backend::Postgres(pool) => {
                postgres::insert_dead_letters(pool, letters, stored_at).await
            }
        };
        self.kept(stored)
    }

    /// Dead letters matching `filter`, oldest first by `(dead_lettered_at, id)`, at most
    /// `limit`, without their bodies. For the next page pass the `(dead_lettered_at, id)`
    /// of this page's last row as `after`.
    pub async fn list_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        after: Option<(SystemTime, Uuid)>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let conditions = filter.conditions(after);
        match &self.backend {
            Backend::Sqlite(pool) => sqlite::list_dead_letters(pool, &conditions, limit).await,
            Backend::Postgres(pool) => postgres::list_dead_letters(pool, &conditions, limit).await,
        }
    }

    /// How many dead letters match `filter`.
    pub async fn count_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64, StoreError> {
        let conditions = filter.conditions(None);
        let count = match &self.backend {
            Backend::Sqlite(pool) => sqlite::count_dead_letters(pool, &conditions).await?,
            Backend::Postgres(pool) => postgres::count_dead_letters(pool, &conditions).await?,
        };
        u64::try_from(count).map_err(|_| StoreError::Corrupt {
            detail: format!("dead letter count {count} is negative"),
        })
    }

    /// How many dead letters match `filter`, per value of `group`, most first (then by
    /// value, byte order).
    pub async fn count_dead_letters_by(
        &self,
        filter: &DeadLetterFilter,
        group: DeadLetterGroup,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let conditions = filter.conditions(None);
        let column = group.column();
        let mut counts = match &self.backend {
            Backend::Sqlite(pool) => {
                sqlite::count_dead_letters_by(pool, &conditions, column).await?
            }
            Backend::Postgres(pool) => {
                postgres::count_dead_letters_by(pool, &conditions, column).await?
            }
        };
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(counts)
    }

    /// One dead letter without its body; `None` if there is none with `id` that `visible`
    /// lets through (the same answer either way, so that a caller cannot tell).
    pub async fn get_dead_letter(
        &self,
        id: Uuid,
        visible: &Visible,
    ) -> Result<Option<DeadLetter>, StoreError> {
        let mut conditions = vec![Condition::DeadLetterId(id)];
        conditions.extend(visible.condition());
        let mut found = match &self.backend {
            Backend::Sqlite(pool) => sqlite::list_dead_letters(pool, &conditions, 1).await?,
            Backend::Postgres(pool) => postgres::list_dead_letters(pool, &conditions, 1).await?,
        };
        Ok(found.pop())
    }

    /// The stored body and the AMQP properties needed to publish the letter again. The body
    /// is personal data: audit the access, never log it.
    pub async fn dead_letter_message(
        &self,
        id: Uuid,
    ) -> Result<Option<DeadLetterMessage>, StoreError> {
        match &self.backend {
            Backend::Sqlite(pool) => sqlite::dead_letter_message(pool, id).await,
            Backend::Postgres(pool) => postgres::dead_letter_message(pool, id).await,
        }
    }

    /// Moves the `Pending` letters among `ids` to `state`: sets `state_changed_at` to now
    /// and `state_changed_by` to `actor`, and counts a replay for `Replayed`. Returns how
    /// many letters changed. Letters that are not pending are left alone (a replayed or
    /// discarded letter is not replayed or discarded again), and so are unknown ids; a
    /// target of `Pending` changes nothing and returns 0. One statement, so two callers
    /// racing for a letter cannot both move it: the one whose count includes it won, which
    /// makes this usable as a claim before publishing the letter again.
    pub async fn set_dead_letter_state(
        &self,
        ids: &[Uuid],
        state: DeadLetterState,
        actor: &str,
    ) -> Result<u64, StoreError> {
        if ids.is_empty() || state == DeadLetterState::Pending {
            return Ok(0);
        }
        let at = to_micros(SystemTime::now());
        let changed = match &self.backend {
            Backend::Sqlite(pool) => {
                sqlite::set_dead_letter_state(pool, ids, state, actor, at).await
            }
            Backend::Postgres(pool) => {
                postgres::set_dead_letter_state(pool, ids, state, actor, at).await
            }
        };
        self.kept(changed)
    }

    /// Deletes the letters that left `Pending` before `older_than` (their bodies hold
    /// personal data); returns how many. Pending letters are kept however old.
    pub async fn purge_dead_letters(&self, older_than: SystemTime) -> Result<u64, StoreError> {
        let cutoff = to_micros(older_than);
        match &self.backend {
            Backend::Sqlite(pool) => sqlite::purge_dead_letters(pool, cutoff).await,
            Backend::Postgres(pool) => postgres::purge_dead_letters(pool, cutoff).await,
        }
    }

    /// Writes trace events in one statement. The hot path goes through [`EventRecorder`].
    pub async fn record_events(&self, events: &[TraceEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Sqlite(pool) => sqlite::record_events(pool, events).await,
            Backend::Postgres(pool) => postgres::record_events(pool, events).await,
        }
    }

    /// A submission's events in the order they happened: by time, then in the order they
    /// were recorded. The "received" and "forwarded" events of a delivery whose trace is
    /// kept on its record ([`DeliveryRecord::received_at`]) come from that record.
    pub async fn trace(&self, submission_id: &str) -> Result<Vec<TraceEvent>, StoreError> {
        let events = match &self.backend {
            Backend::Sqlite(pool) => sqlite::trace(pool, submission_id).await?,
            Backend::Postgres(pool) => postgres::trace(pool, submission_id).await?,
        };
        let Ok(id) = Uuid::parse_str(submission_id) else {
            return Ok(events);
        };
        let records = match &self.backend {
            Backend::Sqlite(pool) => sqlite::fetch(pool, &[id]).await?,
            Backend::Postgres(pool) => postgres::fetch(pool, &[id]).await?,
        };
        let mut merged: Vec<TraceEvent> = Vec::with_capacity(events.len() + 2);
        for record in records {
            let Some(received_at) = record.received_at else {
                continue;
            };
            merged.push(TraceEvent {
                submission_id: submission_id.to_owned(),
                at: received_at,
                event: "received".to_owned(),
                platform: record.platform.clone(),
                destination: String::new(),
                detail: String::new(),
            });
            merged.push(TraceEvent {
                submission_id: submission_id.to_owned(),
                at: record.delivered_at,
                event: "forwarded".to_owned(),
                platform: record.platform,
                destination: record.destination,
                detail: String::new(),
            });
        }
        if merged.is_empty() {
            return Ok(events);
        }
        merged.extend(events);
        // Stable: at the same instant the record's events stay before the later rows.
        merged.sort_by_key(|event| event.at);
        Ok(merged)
    }

    /// Deletes the events that happened before `older_than`; returns how many.
    pub async fn purge_events(&self, older_than: SystemTime) -> Result<u64, StoreError> {
        let cutoff = to_micros(older_than);
        match &self.backend {
            Backend::Sqlite(pool) => sqlite::purge_events(pool, cutoff).await,
            Backend::Postgres(pool) => postgres::purge_events(pool, cutoff).await,
        }
    }
}
