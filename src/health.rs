//! Whether the gateway lives and whether it is ready, for supervisors: the HTTP `/live` and
//! `/ready` endpoints (served beside `/metrics`), grpc.health.v1 (`admin::Health`) and the
//! systemd watchdog read the same [`Health`].
//!
//! **Live**: the process works: its runtime runs tasks (a heartbeat ticks), the store
//! answers, and the links to the gateway's own broker (`gateway.dead_letter_broker`: dead
//! letters, retries, replays) are up. Failing it, a supervisor restarts the gateway.
//!
//! **Ready**: at least one platform's ingress is consuming, or every ingress is paused on
//! purpose; and the store answers. One Land's broker down, or one ingress paused, leaves the
//! gateway ready for the other Länder: restarting it for them all would help nobody.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::activity::{Activity, ConsumerState};
use crate::amqp::link::LinkState;
use crate::config::Config;
use crate::store::StoreHealth;

/// How often the heartbeat ticks.
pub const HEARTBEAT: Duration = Duration::from_millis(250);
/// A heartbeat older than this means the runtime no longer runs its tasks in time.
pub const RUNTIME_STALLED: Duration = Duration::from_secs(5);

/// A broker link as health and the admin API show it.
#[derive(Debug, Clone)]
pub struct LinkView {
    pub broker: String,
    pub role: &'static str,
    pub state: watch::Receiver<LinkState>,
}

impl LinkView {
    pub fn connected(&self) -> bool {
        self.state.borrow().is_connected()
    }
}

/// A platform's ingress as health sees it.
#[derive(Debug, Clone)]
struct IngressView {
    platform: String,
    land: String,
    broker: String,
    queue: String,
}

/// What `/live`, `/ready`, grpc.health.v1 and the watchdog read.
pub struct Health {
    ingresses: Vec<IngressView>,
    activity: Arc<Activity>,
    links: Vec<LinkView>,
    own_broker: String,
    store: StoreHealth,
    started: Instant,
    /// Milliseconds after `started` of the heartbeat's last tick.
    last_beat: AtomicU64,
}

/// The state of one ingress in a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IngressState {
    Consuming,
    /// Paused by an operator.
    Paused,
    /// Waiting for its broker, or resubscribing.
    Connecting,
}

#[derive(Debug, Clone, Serialize)]
pub struct IngressReport {
    pub platform: String,
    pub land: String,
    pub broker: String,
    pub queue: String,
    pub state: IngressState,
}

#[derive(Debug, Clone, Serialize)]
pub struct LinkReport {
    pub broker: String,
    pub role: &'static str,
    /// connected, blocked (connected, but the broker takes no messages on it: a memory or
    /// disk alarm), connecting or stopped.
    pub state: &'static str,
    /// The broker's reason, while it blocks the connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Why the last attempt to connect failed (never with a password).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoreReport {
    /// up or down.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_since: Option<u64>,
}

/// The body of `/ready`.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Why, in one line.
    pub reason: String,
    pub ingresses: Vec<IngressReport>,
    pub links: Vec<LinkReport>,
    pub store: StoreReport,
}

/// The body of `/live`.
#[derive(Debug, Clone, Serialize)]
pub struct Liveness {
    pub live: bool,
    pub reason: String,
    /// Milliseconds since the runtime's heartbeat last ticked.
    pub heartbeat_age_ms: u64,
    /// The links to the gateway's own broker.
    pub links: Vec<LinkReport>,
    pub store: StoreReport,
}

impl Health {
    pub fn new(
        config: &Config,
        links: Vec<LinkView>,
        activity: Arc<Activity>,
        store: StoreHealth,
    ) -> Arc<Health> {
        let ingresses = config
            .platforms
            .iter()
            .map(|p| IngressView {
                platform: p.id.clone(),
                land: p.land.to_string(),
                broker: config.broker(p.broker).name.clone(),
                queue: p.ingress_queue.clone(),
            })
            .collect();
        Arc::new(Health {
            ingresses,
            activity,
            links,
            own_broker: config
                .broker(config.gateway.dead_letter_broker)
                .name
                .clone(),
            store,
            started: Instant::now(),
            last_beat: AtomicU64::new(0),
        })
    }

    /// Ticks the heartbeat every [`HEARTBEAT`] until `stop`. A runtime that no longer gets
    /// to this task in time is what `/live` and the watchdog call stalled.
    pub fn beat(self: &Arc<Self>, stop: &CancellationToken) {
        let health = self.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                health.last_beat.store(
                    u64::try_from(health.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(HEARTBEAT) => {}
                }
            }
        });
    }

    fn heartbeat_age(&self) -> Duration {
        let now = self.started.elapsed();
        now.saturating_sub(Duration::from_millis(
            self.last_beat.load(Ordering::Relaxed),
        ))
    }

    /// Whether the runtime runs its tasks in time (the watchdog pings only then).
    pub fn runtime_works(&self) -> bool {
        self.heartbeat_age() < RUNTIME_STALLED
    }

    pub fn links(&self) -> &[LinkView] {
        &self.links
    }

    /// Each platform's ingress with its state.
    pub fn ingress_states(&self) -> Vec<(String, IngressState)> {
        self.ingresses
            .iter()
            .enumerate()
            .map(|(i, view)| (view.platform.clone(), self.ingress_state(i)))
            .collect()
    }

    fn ingress_state(&self, index: usize) -> IngressState {
        match self.activity.platform(index).state() {
            ConsumerState::Consuming => IngressState::Consuming,
            ConsumerState::Paused => IngressState::Paused,
            ConsumerState::Connecting => IngressState::Connecting,
        }
    }

    pub fn store_up(&self) -> bool {
        self.store.is_up()
    }

    pub fn readiness(&self) -> Readiness {
        let ingresses: Vec<IngressReport> = self
            .ingresses
            .iter()
            .enumerate()
            .map(|(i, view)| IngressReport {
                platform: view.platform.clone(),
                land: view.land.clone(),
                broker: view.broker.clone(),
                queue: view.queue.clone(),
                state: self.ingress_state(i),
            })
            .collect();
        let states: Vec<IngressState> = ingresses.iter().map(|i| i.state).collect();
        let store = self.store_report();
        let (ready, reason) = ready(&states, store.state == "up");
        Readiness {
            ready,
            reason,
            ingresses,
            links: self.links.iter().map(link_report).collect(),
            store,
        }
    }

    pub fn liveness(&self) -> Liveness {
        let age = self.heartbeat_age();
        let links: Vec<LinkReport> = self
            .links
            .iter()
            .filter(|l| l.broker == self.own_broker)
            .map(link_report)
            .collect();
        let store = self.store_report();
        let mut problems = Vec::new();
        if age >= RUNTIME_STALLED {
            problems.push(format!(
                "the runtime's heartbeat is {} ms old",
                age.as_millis()
            ));
        }
        if store.state != "up" {
            problems.push("the store does not answer".to_owned());
        }
        // A broker's resource alarm blocks publishing until an operator frees memory or
        // disk there; restarting the gateway would not help.
        for link in links
            .iter()
            .filter(|l| l.state != "connected" && l.state != "blocked")
        {
            problems.push(format!(
                "the {} link to the gateway's broker {} is {}",
                link.role, link.broker, link.state
            ));
        }
        Liveness {
            live: problems.is_empty(),
            reason: if problems.is_empty() {
                "runtime, store and the gateway's own broker work".to_owned()
            } else {
                problems.join("; ")
            },
            heartbeat_age_ms: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
            links,
            store,
        }
    }

    fn store_report(&self) -> StoreReport {
        let status = self.store.status();
        if status.is_up() {
            return StoreReport {
                state: "up",
                problem: None,
                down_since: None,
            };
        }
        StoreReport {
            state: "down",
            problem: Some(status.problem()),
            down_since: status.down_since().map(|t| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            }),
        }
    }
}

fn link_report(link: &LinkView) -> LinkReport {
    let state = link.state.borrow().clone();
    LinkReport {
        broker: link.broker.clone(),
        role: link.role,
        state: match state {
            LinkState::Connected { blocked: None, .. } => "connected",
            LinkState::Connected {
                blocked: Some(_), ..
            } => "blocked",
            LinkState::Connecting { .. } => "connecting",
            LinkState::Stopped => "stopped",
        },
        blocked: state.blocked().map(str::to_owned),
        node: state.node().map(str::to_owned),
        last_error: state.last_error().map(str::to_owned),
    }
}

/// The readiness rule: ready while the store answers and at least one ingress consumes, or
/// every ingress is paused on purpose. Returns the verdict and why.
pub fn ready(ingresses: &[IngressState], store_up: bool) -> (bool, String) {
    if !store_up {
        return (
            false,
            "the store does not answer: no queue is consumed".to_owned(),
        );
    }
    let consuming = ingresses
        .iter()
        .filter(|s| **s == IngressState::Consuming)
        .count();
    let paused = ingresses
        .iter()
        .filter(|s| **s == IngressState::Paused)
        .count();
    let all = ingresses.len();
    if consuming > 0 {
        (true, format!("{consuming} of {all} ingresses consuming"))
    } else if paused == all {
        (true, format!("all {all} ingresses paused by an operator"))
    } else {
        (
            false,
            format!(
                "no ingress consuming ({} connecting, {paused} paused)",
                all - paused
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IngressState::{Connecting as C, Consuming as X, Paused as P};

    #[test]
    fn ready_while_one_ingress_consumes_or_all_are_paused_and_the_store_answers() {
        for (ingresses, store_up, want, reason) in [
            (&[X, C, C][..], true, true, "1 of 3 ingresses consuming"),
            (&[X, X, X], true, true, "3 of 3 ingresses consuming"),
            (&[X, P], true, true, "1 of 2 ingresses consuming"),
            (&[P, P], true, true, "all 2 ingresses paused by an operator"),
            (
                &[P, C],
                true,
                false,
                "no ingress consuming (1 connecting, 1 paused)",
            ),
            (
                &[C, C],
                true,
                false,
                "no ingress consuming (2 connecting, 0 paused)",
            ),
            (&[X, X], false, false, "the store does not answer"),
            (&[P, P], false, false, "the store does not answer"),
        ] {
            let (ready, why) = ready(ingresses, store_up);
            assert_eq!(ready, want, "{ingresses:?} store_up={store_up}: {why}");
            assert!(why.contains(reason), "{ingresses:?}: {why}");
        }
    }
}
