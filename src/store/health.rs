//! Whether the store answers the message path, for the consumers' gate, health and metrics.
//!
//! Three things can make the store unusable for deduplication, each reported by the code
//! that notices it: delivery records that cannot be written (the deduplicator holds them
//! and tries again), checks that fail (the deduplicator probes until one succeeds), and an
//! SQLite file that was deleted or replaced under the running gateway (which stays so until
//! a restart). The store is up while none of them is failing. A change is logged once, when
//! it happens, not at every failed try.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use super::StoreError;

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// Writing delivery records.
    Records,
    /// Deduplication look-ups.
    Checks,
    /// The SQLite file is no longer the one the gateway opened.
    File,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Records => "delivery records cannot be written",
            Part::Checks => "deduplication checks fail",
            Part::File => "database file",
        }
    }
}

/// The store's state as the message path sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStatus {
    records: Option<String>,
    checks: Option<String>,
    file: Option<String>,
    /// When the store stopped answering (the first part that failed).
    since: Option<SystemTime>,
}

impl StoreStatus {
    /// True while nothing is failing.
    pub fn is_up(&self) -> bool {
        self.records.is_none() && self.checks.is_none() && self.file.is_none()
    }

    /// What is failing, in one line for operators; empty while up.
    pub fn problem(&self) -> String {
        [
            (Part::File, &self.file),
            (Part::Records, &self.records),
            (Part::Checks, &self.checks),
        ]
        .into_iter()
        .filter_map(|(part, error)| error.as_ref().map(|e| format!("{}: {e}", part.name())))
        .collect::<Vec<_>>()
        .join("; ")
    }

    /// Since when the store has not been up.
    pub fn down_since(&self) -> Option<SystemTime> {
        self.since
    }

    fn slot(&mut self, part: Part) -> &mut Option<String> {
        match part {
            Part::Records => &mut self.records,
            Part::Checks => &mut self.checks,
            Part::File => &mut self.file,
        }
    }
}

/// Shared by every clone of a [`Store`](super::Store).
#[derive(Debug, Clone)]
pub struct StoreHealth {
    status: Arc<watch::Sender<StoreStatus>>,
}

impl Default for StoreHealth {
    fn default() -> StoreHealth {
        StoreHealth {
            status: Arc::new(watch::Sender::new(StoreStatus::default())),
        }
    }
}

impl StoreHealth {
    /// The current status, and every change after it.
    pub fn watch(&self) -> watch::Receiver<StoreStatus> {
        self.status.subscribe()
    }

    pub fn status(&self) -> StoreStatus {
        self.status.borrow().clone()
    }

    pub fn is_up(&self) -> bool {
        self.status.borrow().is_up()
    }

    /// Returns once the store is up (at once if it is).
    pub async fn wait_up(&self) {
        let mut status = self.status.subscribe();
        // The sender lives as long as `self`, so the wait cannot fail.
        let _ = status.wait_for(StoreStatus::is_up).await;
    }

    /// `part` failed with `error`.
    pub(crate) fn failing(&self, part: Part, error: &StoreError) {
        self.set_failing(part, error.to_string());
    }

    pub(crate) fn set_failing(&self, part: Part, error: String) {
        self.status.send_if_modified(|status| {
            let was_up = status.is_up();
            let slot = status.slot(part);
            let newly = slot.is_none();
            *slot = Some(error.clone());
            if was_up {
                status.since = Some(SystemTime::now());
                tracing::error!(problem = %status.problem(),
                    "store failing: taking no more submissions until it answers; held deliveries are acked once their records are written");
            } else if newly {
                tracing::error!(problem = %status.problem(), "store failing");
            }
            // Only a change of state is worth waking the watchers for.
            newly
        });
    }

    /// `part` works again.
    pub(crate) fn answering(&self, part: Part) {
        self.status.send_if_modified(|status| {
            if status.slot(part).take().is_none() {
                return false;
            }
            if status.is_up() {
                let down = status
                    .since
                    .take()
                    .and_then(|since| since.elapsed().ok())
                    .unwrap_or_default();
                tracing::info!(down_for = ?down, "store answers again; taking submissions");
            } else {
                tracing::info!(part = part.name(), problem = %status.problem(),
                    "store partly answers again");
            }
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> StoreError {
        StoreError::Corrupt {
            detail: text.to_owned(),
        }
    }

    #[test]
    fn up_only_while_no_part_fails() {
        let health = StoreHealth::default();
        assert!(health.is_up());
        health.failing(Part::Records, &error("disk full"));
        health.failing(Part::Checks, &error("no connection"));
        let status = health.status();
        assert!(!status.is_up());
        assert!(status.down_since().is_some());
        assert_eq!(
            status.problem(),
            "delivery records cannot be written: store holds a malformed row: disk full; \
             deduplication checks fail: store holds a malformed row: no connection"
        );
        health.answering(Part::Records);
        assert!(!health.is_up());
        assert_eq!(
            health.status().problem(),
            "deduplication checks fail: store holds a malformed row: no connection"
        );
        health.answering(Part::Checks);
        assert!(health.is_up());
        assert_eq!(health.status(), StoreStatus::default());
    }

    #[tokio::test]
    async fn watchers_hear_changes_of_state_only() {
        let health = StoreHealth::default();
        let mut watch = health.watch();
        watch.borrow_and_update();
        health.answering(Part::Records);
        assert!(!watch.has_changed().unwrap_or(true), "nothing failed yet");
        health.failing(Part::Records, &error("one"));
        assert!(watch.has_changed().unwrap_or(false));
        watch.borrow_and_update();
        health.failing(Part::Records, &error("two"));
        assert!(
            !watch.has_changed().unwrap_or(true),
            "another error of a failing part"
        );
        let waiting = tokio::spawn({
            let health = health.clone();
            async move { health.wait_up().await }
        });
        health.answering(Part::Records);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .unwrap_or_else(|_| panic!("wait_up did not return"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
