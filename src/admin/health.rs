//! grpc.health.v1 for the gateway: one name per platform ingress
//! (`ingress/<platform>`), per broker connection (`broker/<name>/<consume|publish>`) and
//! for the store (`store`), and the overall service "" which is SERVING only while every
//! one of them is: a disconnected broker, a paused ingress or a store that does not answer
//! makes the gateway not ready, the way operators of shovels wished theirs said so.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::{HealthReporter, HealthService};

use crate::activity::{Activity, ConsumerState};
use crate::config::Config;
use crate::link::LinkState;
use crate::store::StoreHealth;

/// How often the states are looked at; changes are reported to `Watch` callers at once
/// after that.
const POLL: Duration = Duration::from_millis(250);

/// A broker link as the admin API shows it.
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

pub struct Health {
    reporter: HealthReporter,
}

impl Health {
    /// Starts keeping the health statuses current until `stop`.
    pub fn start(
        config: &Config,
        links: &[LinkView],
        activity: &Arc<Activity>,
        store: &StoreHealth,
        stop: &CancellationToken,
    ) -> Health {
        let reporter = HealthReporter::new();
        let links = links.to_vec();
        let store = store.clone();
        let platforms: Vec<String> = config.platforms.iter().map(|p| p.id.clone()).collect();
        let activity = activity.clone();
        let stop = stop.clone();
        let updating = reporter.clone();
        tokio::spawn(async move {
            let mut last: Vec<(String, ServingStatus)> = Vec::new();
            loop {
                let mut now: Vec<(String, ServingStatus)> = Vec::new();
                for link in &links {
                    now.push((
                        format!("broker/{}/{}", link.broker, link.role),
                        serving(link.connected()),
                    ));
                }
                for (i, id) in platforms.iter().enumerate() {
                    let consuming = activity.platform(i).state() == ConsumerState::Consuming;
                    now.push((format!("ingress/{id}"), serving(consuming)));
                }
                now.push(("store".to_owned(), serving(store.is_up())));
                let all = now.iter().all(|(_, s)| *s == ServingStatus::Serving);
                now.push((String::new(), serving(all)));
                for (name, status) in &now {
                    let known = last.iter().find(|(n, _)| n == name).map(|(_, s)| *s);
                    if known != Some(*status) {
                        updating.set_service_status(name, *status).await;
                    }
                }
                last = now;
                tokio::select! {
                    () = stop.cancelled() => {
                        updating.set_service_status("", ServingStatus::NotServing).await;
                        return;
                    }
                    () = tokio::time::sleep(POLL) => {}
                }
            }
        });
        Health { reporter }
    }

    pub fn service(&self) -> tonic_health::pb::health_server::HealthServer<HealthService> {
        tonic_health::pb::health_server::HealthServer::new(HealthService::from_health_reporter(
            self.reporter.clone(),
        ))
    }
}

fn serving(up: bool) -> ServingStatus {
    if up {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}
