//! Several gateway instances on one PostgreSQL store: how they find out about each other and
//! about each other's directory changes.
//!
//! Instances consume the same platform queues as competing consumers; the broker divides the
//! submissions. What they share (deduplication, dead letters, traces, audit, the routing
//! directory) lives in the store. Two things need more than shared tables:
//! - a directory change is validated, stored and put in use by the instance whose admin API
//!   took it; the others read the directory's version every `[store] directory_poll` and
//!   load the directory again when it moved ([`follow_directory`]);
//! - each instance writes a heartbeat row with its counters ([`beat`]), so that any
//!   instance's admin API lists all of them, and one that stopped beating shows as gone.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::pipeline::Pipeline;
use crate::store::{Instance, Store};

/// How often an instance writes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// An instance whose last heartbeat is older than this is shown as gone: three missed beats,
/// so that one slow store round trip does not make a live instance look dead.
pub const GONE_AFTER: Duration = Duration::from_secs(15);
/// Gone instances stay listed this long, so that an operator sees which one stopped.
pub const LISTED_FOR: Duration = Duration::from_secs(3600);

/// Who this process is among the instances sharing the store.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub started_at: SystemTime,
}

impl Identity {
    /// A new identity: random, since a restarted process is a new instance.
    pub fn new(started_at: SystemTime) -> Identity {
        Identity {
            id: Uuid::new_v4().to_string(),
            host: host_name(),
            pid: std::process::id(),
            started_at,
        }
    }
}

/// The kernel's host name (the container's, in a container); "unknown" where there is none.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// This instance's row as of now.
fn row(identity: &Identity, gateway: &Pipeline) -> Instance {
    let mut row = Instance {
        id: identity.id.clone(),
        host: identity.host.clone(),
        pid: identity.pid,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: identity.started_at,
        seen_at: SystemTime::now(),
        directory_version: gateway.snapshot().version,
        consumed: 0,
        forwarded: 0,
        rejected: 0,
        in_flight: 0,
    };
    for (_, platform) in gateway.activity().platforms() {
        row.consumed += platform.consumed.get();
        row.forwarded += platform.forwarded.load(Ordering::Relaxed);
        row.rejected += platform.rejected.load(Ordering::Relaxed);
        row.in_flight += platform.in_flight.load(Ordering::Relaxed);
    }
    row
}

/// Writes this instance's heartbeat every [`HEARTBEAT`] until `stop`, and once more then,
/// so that the last counters are kept.
pub async fn beat(
    identity: Identity,
    gateway: Arc<Pipeline>,
    store: Store,
    stop: CancellationToken,
) {
    let mut failing = false;
    loop {
        let stopping = stop.is_cancelled();
        match store.heartbeat(&row(&identity, &gateway)).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("instance heartbeat written again");
            }
            Ok(()) => {}
            // Only the admin listing suffers; logged once per outage, not every beat.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot write the instance heartbeat");
            }
            Err(_) => {}
        }
        if stopping {
            return;
        }
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(HEARTBEAT) => {}
        }
    }
}

/// Every `interval` until `stop`: reads the stored directory's version and, when another
/// instance (or anything else writing the store) moved it past the one in use, loads the
/// directory and puts it in use.
pub async fn follow_directory(
    gateway: Arc<Pipeline>,
    store: Store,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let stored = match store.directory_version().await {
            Ok(version) => version,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e,
                        "cannot read the stored directory's version; changes made through other instances wait");
                }
                failing = true;
                continue;
            }
        };
        failing = false;
        if stored <= gateway.snapshot().version {
            continue;
        }
        let snapshot = crate::routing::live::load(&gateway.directory_config(), &store).await;
        let version = snapshot.version;
        if gateway.install_newer(snapshot) {
            tracing::info!(
                version,
                "routing directory changed through another instance; now in use"
            );
        }
    }
}
