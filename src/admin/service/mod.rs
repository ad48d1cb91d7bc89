//! The operators' service layer: every admin call as a method of [`Service`] that takes the
//! caller (a [`Principal`]: name, roles, scope) and plain domain types, decides whether the
//! caller may (roles and scope, in [`access`]), does it, and returns domain results or one
//! [`ServiceError`].
//!
//! The gRPC services (`admin::{stats, directory, dead_letters, operations}`) only translate
//! their messages to these calls and back; a web console calls the same methods with the
//! same principals, so the two faces cannot disagree about who may see or change what.
//! Nothing here knows tonic or the generated protobuf types.

mod access;
mod dead_letters;
mod directory;
mod error;
mod operations;
mod regions;
mod stats;

use std::sync::Arc;

pub use access::{Principal, Right};
pub use dead_letters::{
    Commit, DeadLetterSummary, Discarded, ReplayFate, ReplayOutcome, Replayed, Selection,
};
pub use directory::{DestinationView, RouteFilter, RouteView, ServiceView};
pub use error::ServiceError;
pub use operations::{WatchFilter, Watched};
pub use regions::Resolution;
pub use stats::{DestinationStats, Overview, OverviewFilter, PlatformStats};

use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::store::{AuditRecord, Concerns, NewAudit, Store};
use access::Reach;

use super::LinkView;

/// Listings give this many entries unless asked for another number.
const DEFAULT_PAGE: u32 = 100;
/// Listings give at most this many entries at once.
pub const MAX_PAGE: u32 = 1000;

/// What every call works on: the configuration, the running gateway (its directory in use,
/// its activity), the store, the broker links.
pub struct Service {
    config: Arc<Config>,
    pipeline: Arc<Pipeline>,
    store: Store,
    links: Vec<LinkView>,
    /// This instance's id among those sharing the store.
    instance: String,
    /// One directory change at a time: each is validated against the result of the last.
    directory_lock: tokio::sync::Mutex<()>,
}

impl Service {
    pub fn new(
        config: Arc<Config>,
        pipeline: Arc<Pipeline>,
        store: Store,
        links: Vec<LinkView>,
        instance: String,
    ) -> Service {
        Service {
            config,
            pipeline,
            store,
            links,
            instance,
            directory_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The caller's scope against the directory in use now.
    fn reach<'a>(
        &'a self,
        who: &'a Principal,
        snapshot: &'a crate::routing::live::Snapshot,
    ) -> Reach<'a> {
        Reach::new(&who.scope, &self.config, snapshot)
    }

    /// Writes an audit row on its own. A change that is done is not reported as failed
    /// because its audit row could not be written: the log says so instead.
    async fn audit_done(&self, entry: NewAudit) {
        let (actor, action) = (entry.record.actor.clone(), entry.record.action.clone());
        if let Err(e) = self.store.audit(entry).await {
            tracing::error!(error = %e, actor = %actor, action = %action, "cannot write the audit row");
        }
    }
}

/// An audit row by `who`.
fn audit_row(
    who: &Principal,
    action: &str,
    object: String,
    before: Option<String>,
    after: Option<String>,
    concerns: Concerns,
) -> NewAudit {
    NewAudit {
        record: AuditRecord {
            actor: who.name.clone(),
            actor_scope: who.scope.to_string(),
            action: action.to_owned(),
            object,
            before,
            after,
        },
        concerns,
    }
}

/// A page size as asked: 0 for the default, at most [`MAX_PAGE`].
pub fn page_size(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}
