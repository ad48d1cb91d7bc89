//! Pausing and resuming a platform's ingress, a submission's trace, the overdue list and
//! the live tail of routing outcomes, each within the caller's scope.

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::access::{self, Reach};
use super::{Principal, Right, Service, ServiceError, audit_row, page_size};
use crate::activity::{ConsumerState, RoutingEvent};
use crate::config::{Config, Scope};
use crate::model::quoted;
use crate::pipeline::Pipeline;
use crate::store::{Fate, TraceEvent};

#[derive(Debug, Clone)]
pub struct IngressState {
    pub platform_id: String,
    pub paused: bool,
    pub state: ConsumerState,
}

/// Delivered submissions without an answer in time, oldest first.
#[derive(Debug, Clone)]
pub struct Overdue {
    pub submissions: Vec<Fate>,
    pub scope: Scope,
}

/// Which events a live tail shows besides the scope's limit; `None`: any.
#[derive(Debug, Clone, Default)]
pub struct WatchFilter {
    pub platform: Option<String>,
    pub destination: Option<String>,
}

/// One event of a live tail.
#[derive(Debug, Clone)]
pub struct Watched {
    pub event: RoutingEvent,
    /// Events dropped before this one because the watcher read too slowly (the gateway
    /// does not wait for watchers). For a caller limited to some Länder the number is not
    /// told: the dropped events were of every Land, and how many there were is theirs.
    pub missed: Option<u64>,
    pub lagged: bool,
}

/// A live tail of routing outcomes in the caller's scope.
pub struct Watch {
    events: broadcast::Receiver<RoutingEvent>,
    scope: Scope,
    filter: WatchFilter,
    config: Arc<Config>,
    gateway: Arc<Pipeline>,
}

impl Watch {
    /// The next event for this watcher; `None` when the gateway stops.
    pub async fn next(&mut self) -> Option<Watched> {
        let mut missed = 0u64;
        loop {
            let event = match self.events.recv().await {
                Ok(event) => event,
                Err(RecvError::Lagged(n)) => {
                    missed += n;
                    continue;
                }
                Err(RecvError::Closed) => return None,
            };
            if self
                .filter
                .platform
                .as_ref()
                .is_some_and(|p| *p != event.platform)
                || self
                    .filter
                    .destination
                    .as_ref()
                    .is_some_and(|d| *d != event.destination)
            {
                continue;
            }
            // The directory in use when the event is read: a destination created, or
            // moved to another Land, counts from then on.
            let snapshot = self.gateway.snapshot();
            let reach = Reach::new(&self.scope, &self.config, &snapshot);
            if !reach.submission(&event.platform, &event.destination) {
                continue;
            }
            return Some(Watched {
                event,
                missed: reach.is_all().then_some(missed),
                lagged: missed > 0,
            });
        }
    }
}

impl Service {
    /// Stops (`paused`) or restarts consuming the platform's queue; submissions in flight
    /// finish.
    pub async fn set_paused(
        &self,
        who: &Principal,
        platform_id: &str,
        paused: bool,
    ) -> Result<IngressState, ServiceError> {
        who.require(Right::Change)?;
        let not_configured = || {
            ServiceError::NotFound(format!(
                "platform {} is not configured",
                quoted(platform_id)
            ))
        };
        let configured = self
            .config
            .platform(platform_id)
            .ok_or_else(not_configured)?;
        let snapshot = self.gateway.snapshot();
        self.reach(who, &snapshot).change_platform(configured)?;
        let platform = self
            .gateway
            .activity()
            .platform_by_id(platform_id)
            .ok_or_else(not_configured)?;
        let changed = platform.set_paused(paused);
        let action = if paused {
            "ingress.pause"
        } else {
            "ingress.resume"
        };
        if changed {
            tracing::info!(actor = %who.name, platform = %platform_id, action, "ingress control");
            self.audit_done(audit_row(
                who,
                action,
                format!("ingress {platform_id}"),
                Some(serde_json::json!({ "paused": !paused }).to_string()),
                Some(serde_json::json!({ "paused": paused }).to_string()),
                access::concerns([configured.land], []),
            ))
            .await;
        }
        Ok(IngressState {
            platform_id: platform_id.to_owned(),
            paused: platform.paused(),
            state: platform.state(),
        })
    }

    /// What happened to one submission, oldest first. A submission outside the caller's
    /// scope is one it has never seen.
    pub async fn trace(
        &self,
        who: &Principal,
        submission_id: &str,
    ) -> Result<Vec<TraceEvent>, ServiceError> {
        who.require(Right::Read)?;
        let id = submission_id.trim();
        if id.is_empty() {
            return Err(ServiceError::invalid("submission_id", "is missing"));
        }
        let events = self.store.trace(id).await?;
        let snapshot = self.gateway.snapshot();
        let reach = self.reach(who, &snapshot);
        if !events
            .iter()
            .any(|e| reach.submission(&e.platform, &e.destination))
        {
            return Err(ServiceError::NotFound(format!(
                "no trace of submission {} (never seen, or older than the trace retention)",
                quoted(id)
            )));
        }
        Ok(events)
    }

    /// Delivered submissions in the caller's scope without an answer from their back
    /// office after `receipts.overdue_after`, oldest first.
    pub async fn overdue(&self, who: &Principal, page_size: u32) -> Result<Overdue, ServiceError> {
        who.require(Right::Read)?;
        let cutoff = std::time::SystemTime::now()
            .checked_sub(self.config.receipts.overdue_after)
            .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
        let visible = self.reach(who, &self.gateway.snapshot()).visible();
        let submissions = self
            .store
            .unanswered(cutoff, false, &visible, self::page_size(page_size))
            .await?;
        Ok(Overdue {
            submissions,
            scope: who.scope.clone(),
        })
    }

    /// A live tail of routing outcomes in the caller's scope, narrowed by `filter`.
    pub fn watch(&self, who: &Principal, filter: WatchFilter) -> Result<Watch, ServiceError> {
        who.require(Right::Read)?;
        Ok(Watch {
            events: self.gateway.activity().subscribe(),
            scope: who.scope.clone(),
            filter,
            config: self.config.clone(),
            gateway: self.gateway.clone(),
        })
    }
}
