//! The overview: this instance's counters and rates, its broker links, the instances
//! sharing the store, pending dead letters. A scoped caller gets the rows of its own
//! platforms and destinations; figures that sum up every Land (the gateway's overall rates,
//! the instances' counters) only a caller for every Land gets.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::{Principal, Right, Service, ServiceError};
use crate::activity::{ConsumerState, Rates};
use crate::config::Scope;
use crate::instances::{GONE_AFTER, LISTED_FOR};
use crate::model::Land;
use crate::store::{DeadLetterFilter, DeadLetterState, Instance, StoreError};

#[derive(Debug, Clone)]
pub struct Overview {
    pub version: &'static str,
    pub started_at: SystemTime,
    pub uptime: Duration,
    /// "sqlite" or "postgres".
    pub store: &'static str,
    pub platforms: Vec<PlatformStats>,
    pub destinations: Vec<DestinationStats>,
    pub brokers: Vec<BrokerLinkStats>,
    /// Over every platform: `None` for a caller limited to some Länder.
    pub consumed: Option<Rates>,
    pub rejected: Option<Rates>,
    /// In the caller's scope.
    pub dead_letters_pending: u64,
    pub directory_version: i64,
    pub instances: Vec<InstanceStats>,
    /// What the rows above were chosen by.
    pub scope: Scope,
    /// Why the store is not answering (the message path's finding, and what this overview
    /// could not read from it); `None` while it works.
    pub store_problem: Option<String>,
    /// Since when the message path has found the store failing.
    pub store_down_since: Option<SystemTime>,
}

#[derive(Debug, Clone)]
pub struct PlatformStats {
    pub id: String,
    pub land: Land,
    pub state: ConsumerState,
    pub consumed: u64,
    pub forwarded: u64,
    pub rejected: u64,
    pub in_flight: u64,
    pub consumed_rate: Rates,
}

#[derive(Debug, Clone)]
pub struct DestinationStats {
    pub id: String,
    pub name: String,
    pub delivered: u64,
    pub failed: u64,
    pub retrying: u64,
    pub last_error: Option<(String, SystemTime)>,
    pub delivered_rate: Rates,
}

#[derive(Debug, Clone)]
pub struct BrokerLinkStats {
    pub broker: String,
    pub role: &'static str,
    pub connected: bool,
    pub node: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct InstanceStats {
    /// Its counters are zero for a caller limited to some Länder: they count every Land.
    pub instance: Instance,
    pub alive: bool,
    /// The instance answering.
    pub current: bool,
}

impl Service {
    pub async fn overview(&self, who: &Principal) -> Result<Overview, ServiceError> {
        who.require(Right::Read)?;
        let activity = self.gateway.activity();
        let snapshot = self.gateway.snapshot();
        let reach = self.reach(who, &snapshot);
        let platforms = self
            .config
            .platforms
            .iter()
            .zip(activity.platforms())
            .filter(|(p, _)| reach.platform(&p.id))
            .map(|(p, (_, a))| PlatformStats {
                id: p.id.clone(),
                land: p.land,
                state: a.state(),
                consumed: a.consumed.get(),
                forwarded: a.forwarded.load(Ordering::Relaxed),
                rejected: a.rejected.load(Ordering::Relaxed),
                in_flight: a.in_flight.load(Ordering::Relaxed),
                consumed_rate: a.consumed.rates(),
            })
            .collect();
        let destinations = snapshot
            .destinations
            .iter()
            .filter(|d| reach.destination(&d.id))
            .map(|d| {
                let a = activity.destination(&d.id);
                DestinationStats {
                    id: d.id.clone(),
                    name: d.name.clone(),
                    delivered: a.delivered.get(),
                    failed: a.failed.load(Ordering::Relaxed),
                    retrying: a.retrying.load(Ordering::Relaxed),
                    last_error: a.last_error(),
                    delivered_rate: a.delivered.rates(),
                }
            })
            .collect();
        let brokers = self
            .links
            .iter()
            .map(|l| {
                let state = l.state.borrow();
                BrokerLinkStats {
                    broker: l.broker.clone(),
                    role: l.role,
                    connected: state.is_connected(),
                    node: state.node().map(str::to_owned),
                    last_error: state.last_error().map(str::to_owned),
                }
            })
            .collect();
        // An overview is what an operator asks for when the store fails: what cannot be
        // read is left out and said in `store_problem` instead of failing the whole call.
        let store_status = self.gateway.store_health().status();
        let mut store_problems = vec![store_status.problem()];
        let mut unread = |what: &str, e: StoreError| {
            tracing::warn!(error = %e, what, "overview: cannot read from the store");
            store_problems.push(format!("cannot read {what} (the gateway's log says why)"));
        };
        let pending = self
            .store
            .count_dead_letters(&DeadLetterFilter {
                state: Some(DeadLetterState::Pending),
                visible: reach.visible(),
                ..DeadLetterFilter::default()
            })
            .await
            .unwrap_or_else(|e| {
                unread("pending dead letters", e);
                0
            });
        let now = SystemTime::now();
        let every_land = reach.is_all();
        let instances = self
            .store
            .instances(
                now.checked_sub(LISTED_FOR)
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            )
            .await
            .unwrap_or_else(|e| {
                unread("instances", e);
                Vec::new()
            })
            .into_iter()
            .map(|mut instance| {
                if !every_land {
                    instance.consumed = 0;
                    instance.forwarded = 0;
                    instance.rejected = 0;
                    instance.in_flight = 0;
                }
                InstanceStats {
                    alive: now.duration_since(instance.seen_at).unwrap_or_default() <= GONE_AFTER,
                    current: instance.id == self.instance,
                    instance,
                }
            })
            .collect();
        Ok(Overview {
            version: env!("CARGO_PKG_VERSION"),
            started_at: activity.started,
            uptime: now.duration_since(activity.started).unwrap_or_default(),
            store: self.store.kind(),
            platforms,
            destinations,
            brokers,
            consumed: every_land.then(|| activity.consumed.rates()),
            rejected: every_land.then(|| activity.rejected.rates()),
            dead_letters_pending: pending,
            directory_version: snapshot.version,
            instances,
            scope: who.scope.clone(),
            store_problem: Some(
                store_problems
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
            .filter(|p| !p.is_empty()),
            store_down_since: store_status.down_since(),
        })
    }
}
