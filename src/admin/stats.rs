//! StatsService: version, uptime, counters and rates.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use tonic::{Request, Response, Status};

use super::State;
use super::auth::Right;
use super::convert::timestamp;
use crate::activity::Rates;
use crate::instances::{GONE_AFTER, LISTED_FOR};
use crate::store::{DeadLetterFilter, DeadLetterState, StoreError};
use crate::wire::admin as pb;

pub struct Stats(pub Arc<State>);

fn rates(r: Rates) -> Option<pb::Rates> {
    Some(pb::Rates {
        m1: r.m1,
        m5: r.m5,
        m15: r.m15,
    })
}

#[tonic::async_trait]
impl pb::stats_service_server::StatsService for Stats {
    async fn get_overview(
        &self,
        request: Request<pb::GetOverviewRequest>,
    ) -> Result<Response<pb::Overview>, Status> {
        let state = &self.0;
        state.admit(&request, Right::Read).await?;
        let activity = state.gateway.activity();
        let snapshot = state.gateway.snapshot();
        let platforms = state
            .config
            .platforms
            .iter()
            .zip(activity.platforms())
            .map(|(p, (_, a))| pb::PlatformStats {
                platform_id: p.id.clone(),
                land: p.land.to_string(),
                consumer_state: a.state().as_str().to_owned(),
                consumed: a.consumed.get(),
                forwarded: a.forwarded.load(Ordering::Relaxed),
                rejected: a.rejected.load(Ordering::Relaxed),
                in_flight: a.in_flight.load(Ordering::Relaxed),
                consumed_rate: rates(a.consumed.rates()),
            })
            .collect();
        let destinations = snapshot
            .destinations
            .iter()
            .map(|d| {
                let a = activity.destination(&d.id);
                let last_error = a.last_error();
                pb::DestinationStats {
                    destination_id: d.id.clone(),
                    name: d.name.clone(),
                    delivered: a.delivered.get(),
                    failed: a.failed.load(Ordering::Relaxed),
                    retrying: a.retrying.load(Ordering::Relaxed),
                    last_error: last_error
                        .as_ref()
                        .map(|(e, _)| e.clone())
                        .unwrap_or_default(),
                    last_error_at: last_error.map(|(_, at)| timestamp(at)),
                    delivered_rate: rates(a.delivered.rates()),
                }
            })
            .collect();
        let brokers = state
            .links
            .iter()
            .map(|l| {
                let state = l.state.borrow();
                pb::BrokerLink {
                    broker: l.broker.clone(),
                    role: l.role.to_owned(),
                    connected: state.is_connected(),
                    node: state.node().unwrap_or_default().to_owned(),
                    last_error: state.last_error().unwrap_or_default().to_owned(),
                }
            })
            .collect();
        // An overview is what an operator asks for when the store fails: what cannot be
        // read is left out and said in `store_problem` instead of failing the whole call.
        let store_status = state.gateway.store_health().status();
        let mut store_problems = vec![store_status.problem()];
        let mut unread = |what: &str, e: StoreError| {
            tracing::warn!(error = %e, what, "overview: cannot read from the store");
            store_problems.push(format!("cannot read {what}: {e}"));
        };
        let pending = state
            .store
            .count_dead_letters(&DeadLetterFilter {
                state: Some(DeadLetterState::Pending),
                ..DeadLetterFilter::default()
            })
            .await
            .unwrap_or_else(|e| {
                unread("pending dead letters", e);
                0
            });
        let now = SystemTime::now();
        let instances = state
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
            .map(|i| pb::Instance {
                alive: now.duration_since(i.seen_at).unwrap_or_default() <= GONE_AFTER,
                current: i.id == state.instance,
                started_at: Some(timestamp(i.started_at)),
                seen_at: Some(timestamp(i.seen_at)),
                id: i.id,
                host: i.host,
                pid: i.pid,
                version: i.version,
                directory_version: i.directory_version,
                consumed: i.consumed,
                forwarded: i.forwarded,
                rejected: i.rejected,
                in_flight: i.in_flight,
            })
            .collect();
        Ok(Response::new(pb::Overview {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: Some(timestamp(activity.started)),
            uptime_seconds: SystemTime::now()
                .duration_since(activity.started)
                .unwrap_or_default()
                .as_secs(),
            store: state.store.kind().to_owned(),
            platforms,
            destinations,
            brokers,
            consumed: rates(activity.consumed.rates()),
            rejected: rates(activity.rejected.rates()),
            dead_letters_pending: pending,
            directory_version: snapshot.version,
            instances,
            store_up: store_problems.iter().all(String::is_empty),
            store_problem: store_problems
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
            store_down_since: store_status.down_since().map(timestamp),
        }))
    }
}
