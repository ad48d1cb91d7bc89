//! The overview: this instance's counters and rates, its ingress queues' depths, its broker
//! links, the instances sharing the store, pending dead letters. A scoped caller gets the
//! rows of its own platforms and destinations; figures that sum up every Land (the
//! gateway's overall rates, the instances' counters) only a caller for every Land gets. An
//! [`OverviewFilter`] narrows the rows further, never beyond the scope.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::access::Reach;
use super::{Principal, Right, Service, ServiceError};
use crate::activity::{Activity, ConsumerState, QueueDepth, Rates};
use crate::config::Scope;
use crate::instances::{GONE_AFTER, LISTED_FOR};
use crate::model::{Destination, Land};
use crate::routing::live::Snapshot;
use crate::store::{DeadLetterFilter, DeadLetterState, Instance, StoreError, Visible};

/// Which rows of the overview to show; empty: all in the caller's scope. A platform is
/// shown when its Land is among `laender` (if any are given) and it is among `platforms`,
/// or, without `platforms`, when no `destinations` are asked for either; the same for a
/// destination. So `platforms` alone shows those platforms and no destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverviewFilter {
    pub laender: Vec<Land>,
    pub platforms: Vec<String>,
    pub destinations: Vec<String>,
}

impl OverviewFilter {
    fn is_empty(&self) -> bool {
        self.laender.is_empty() && self.platforms.is_empty() && self.destinations.is_empty()
    }

    /// A row of Land `land` named `id`, where `named` lists the ids asked for of its kind
    /// and `others` those of the other kind.
    fn shows(&self, land: Land, id: &str, named: &[String], others: &[String]) -> bool {
        (self.laender.is_empty() || self.laender.contains(&land))
            && if named.is_empty() {
                others.is_empty()
            } else {
                named.iter().any(|n| n == id)
            }
    }

    fn platform(&self, id: &str, land: Land) -> bool {
        self.shows(land, id, &self.platforms, &self.destinations)
    }

    fn destination(&self, id: &str, land: Land) -> bool {
        self.shows(land, id, &self.destinations, &self.platforms)
    }
}

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
    pub ingress_queue: String,
    /// `None` while its broker has not answered.
    pub queue: Option<QueueDepth>,
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
    /// The broker's reason, while it blocks the connection.
    pub blocked: Option<String>,
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
    /// Everything in the caller's scope.
    pub async fn overview(&self, who: &Principal) -> Result<Overview, ServiceError> {
        self.overview_of(who, &OverviewFilter::default()).await
    }

    /// The rows `filter` asks for, within the caller's scope. A platform or destination it
    /// names that does not exist or lies outside the scope is NOT_FOUND, the same for both.
    pub async fn overview_of(
        &self,
        who: &Principal,
        filter: &OverviewFilter,
    ) -> Result<Overview, ServiceError> {
        who.require(Right::Read)?;
        let activity = self.pipeline.activity();
        let snapshot = self.pipeline.snapshot();
        let reach = self.reach(who, &snapshot);
        self.check_named(who, filter, &reach, &snapshot)?;
        let platforms = self.platform_rows(activity, &reach, filter);
        let shown_destinations: Vec<&Destination> = snapshot
            .destinations
            .iter()
            .filter(|d| reach.destination(&d.id) && filter.destination(&d.id, d.land))
            .collect();
        let destinations = shown_destinations
            .iter()
            .map(|d| destination_row(activity, d))
            .collect();
        let brokers = self.broker_rows(filter, &platforms, &shown_destinations);
        // An overview is what an operator asks for when the store fails: what cannot be
        // read is left out and said in `store_problem` instead of failing the whole call.
        let store_status = self.pipeline.store_health().status();
        let mut store_problems = vec![store_status.problem()];
        let visible = if filter.is_empty() {
            reach.visible()
        } else {
            // The rows shown are in the scope already: their letters are the caller's.
            Visible::Only {
                platforms: platforms.iter().map(|p| p.id.clone()).collect(),
                destinations: shown_destinations.iter().map(|d| d.id.clone()).collect(),
            }
        };
        let pending = self
            .store
            .count_dead_letters(&DeadLetterFilter {
                state: Some(DeadLetterState::Pending),
                visible,
                ..DeadLetterFilter::default()
            })
            .await
            .unwrap_or_else(|e| {
                unread(&mut store_problems, "pending dead letters", e);
                0
            });
        let now = SystemTime::now();
        let every_land = reach.is_all();
        let instances = self
            .instance_rows(now, every_land, &mut store_problems)
            .await;
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

    /// Every platform and destination the filter names must exist within the scope.
    fn check_named(
        &self,
        who: &Principal,
        filter: &OverviewFilter,
        reach: &Reach<'_>,
        snapshot: &Snapshot,
    ) -> Result<(), ServiceError> {
        let outside = |what: &str, id: &str| {
            let within = if reach.is_all() {
                String::new()
            } else {
                format!(" within the token's scope ({})", who.scope)
            };
            ServiceError::NotFound(format!("no {what} {id:?}{within}"))
        };
        if let Some(id) = filter
            .platforms
            .iter()
            .find(|id| self.config.platform(id).is_none() || !reach.platform(id))
        {
            return Err(outside("platform", id));
        }
        if let Some(id) = filter
            .destinations
            .iter()
            .find(|id| snapshot.destination(id).is_none() || !reach.destination(id))
        {
            return Err(outside("destination", id));
        }
        Ok(())
    }

    fn platform_rows(
        &self,
        activity: &Activity,
        reach: &Reach<'_>,
        filter: &OverviewFilter,
    ) -> Vec<PlatformStats> {
        self.config
            .platforms
            .iter()
            .zip(activity.platforms())
            .filter(|(p, _)| reach.platform(&p.id) && filter.platform(&p.id, p.land))
            .map(|(p, (_, a))| PlatformStats {
                id: p.id.clone(),
                land: p.land,
                state: a.state(),
                consumed: a.consumed.get(),
                forwarded: a.forwarded.load(Ordering::Relaxed),
                rejected: a.rejected.load(Ordering::Relaxed),
                in_flight: a.in_flight.load(Ordering::Relaxed),
                consumed_rate: a.consumed.rates(),
                ingress_queue: p.ingress_queue.clone(),
                queue: a.queue(),
            })
            .collect()
    }

    /// The broker links; a filtered overview shows the links its rows depend on.
    fn broker_rows(
        &self,
        filter: &OverviewFilter,
        platforms: &[PlatformStats],
        shown_destinations: &[&Destination],
    ) -> Vec<BrokerLinkStats> {
        let used: Option<Vec<&str>> = (!filter.is_empty()).then(|| {
            let platform_brokers = self
                .config
                .platforms
                .iter()
                .filter(|p| platforms.iter().any(|shown| shown.id == p.id))
                .map(|p| p.broker);
            let destination_brokers = shown_destinations.iter().map(|d| d.broker);
            platform_brokers
                .chain(destination_brokers)
                .map(|b| self.config.broker(b).name.as_str())
                .collect()
        });
        self.links
            .iter()
            .filter(|l| used.as_ref().is_none_or(|u| u.contains(&l.broker.as_str())))
            .map(|l| {
                let state = l.state.borrow();
                BrokerLinkStats {
                    broker: l.broker.clone(),
                    role: l.role,
                    connected: state.is_connected(),
                    node: state.node().map(str::to_owned),
                    last_error: state.last_error().map(str::to_owned),
                    blocked: state.blocked().map(str::to_owned),
                }
            })
            .collect()
    }

    /// The instances sharing the store; their counters sum up every Land, so only a caller
    /// for every Land sees them.
    async fn instance_rows(
        &self,
        now: SystemTime,
        every_land: bool,
        store_problems: &mut Vec<String>,
    ) -> Vec<InstanceStats> {
        self.store
            .instances(
                now.checked_sub(LISTED_FOR)
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            )
            .await
            .unwrap_or_else(|e| {
                unread(store_problems, "instances", e);
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
            .collect()
    }
}

fn destination_row(activity: &Activity, d: &Destination) -> DestinationStats {
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
}

/// What the overview could not read from the store, said instead of failing the call.
fn unread(store_problems: &mut Vec<String>, what: &str, e: StoreError) {
    tracing::warn!(error = %e, what, "overview: cannot read from the store");
    store_problems.push(format!("cannot read {what} (the gateway's log says why)"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_shows_the_rows_asked_for() {
        let land = |code: u8| Land::from_code(code).unwrap();
        let ids = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        // Platforms civento-he (06) and civento-th (16); destinations he-a (06), th-a (16).
        let platforms = [("civento-he", land(6)), ("civento-th", land(16))];
        let destinations = [("he-a", land(6)), ("th-a", land(16))];
        // (laender, platforms, destinations) → platform rows, destination rows
        type Case = (
            Vec<Land>,
            Vec<String>,
            Vec<String>,
            Vec<&'static str>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                vec![],
                vec![],
                vec![],
                vec!["civento-he", "civento-th"],
                vec!["he-a", "th-a"],
            ),
            (
                vec![land(6)],
                vec![],
                vec![],
                vec!["civento-he"],
                vec!["he-a"],
            ),
            (
                vec![land(6), land(16)],
                vec![],
                vec![],
                vec!["civento-he", "civento-th"],
                vec!["he-a", "th-a"],
            ),
            (vec![land(9)], vec![], vec![], vec![], vec![]),
            (
                vec![],
                ids(&["civento-th"]),
                vec![],
                vec!["civento-th"],
                vec![],
            ),
            (vec![], vec![], ids(&["he-a"]), vec![], vec!["he-a"]),
            (
                vec![],
                ids(&["civento-th"]),
                ids(&["he-a"]),
                vec!["civento-th"],
                vec!["he-a"],
            ),
            // The Land narrows what is named.
            (vec![land(6)], ids(&["civento-th"]), vec![], vec![], vec![]),
            (
                vec![land(16)],
                ids(&["civento-th"]),
                ids(&["he-a", "th-a"]),
                vec!["civento-th"],
                vec!["th-a"],
            ),
        ];
        for (laender, p, d, want_platforms, want_destinations) in cases {
            let filter = OverviewFilter {
                laender,
                platforms: p,
                destinations: d,
            };
            let got_platforms: Vec<&str> = platforms
                .iter()
                .filter(|(id, land)| filter.platform(id, *land))
                .map(|(id, _)| *id)
                .collect();
            let got_destinations: Vec<&str> = destinations
                .iter()
                .filter(|(id, land)| filter.destination(id, *land))
                .map(|(id, _)| *id)
                .collect();
            assert_eq!(
                (got_platforms, got_destinations),
                (want_platforms, want_destinations),
                "{filter:?}"
            );
        }
    }
}
