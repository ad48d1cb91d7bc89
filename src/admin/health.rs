//! grpc.health.v1 for the gateway: one name per platform ingress (`ingress/<platform>`,
//! SERVING while it consumes), per broker connection (`broker/<name>/<consume|publish>`)
//! and for the store (`store`). The overall service "" follows the readiness rule of
//! [`crate::health`] (`/ready`): SERVING while at least one ingress consumes, or every
//! ingress is paused on purpose, and the store answers. One Land's broker down or one
//! paused ingress shows in its own name, not in "".

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::{HealthReporter, HealthService};

use crate::health::{self, IngressState};

pub use crate::health::LinkView;

pub struct Health {
    reporter: HealthReporter,
}

impl Health {
    /// Starts keeping the health statuses current until `stop`; changes reach `Watch`
    /// callers within one heartbeat.
    pub fn start(health: &Arc<health::Health>, stop: &CancellationToken) -> Health {
        let reporter = HealthReporter::new();
        let health = health.clone();
        let stop = stop.clone();
        let updating = reporter.clone();
        tokio::spawn(async move {
            let mut last: Vec<(String, ServingStatus)> = Vec::new();
            loop {
                let mut now: Vec<(String, ServingStatus)> = Vec::new();
                for link in health.links() {
                    now.push((
                        format!("broker/{}/{}", link.broker, link.role),
                        serving(link.connected()),
                    ));
                }
                for (platform, state) in health.ingress_states() {
                    now.push((
                        format!("ingress/{platform}"),
                        serving(state == IngressState::Consuming),
                    ));
                }
                now.push(("store".to_owned(), serving(health.store_up())));
                now.push((String::new(), serving(health.readiness().ready)));
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
                    () = tokio::time::sleep(health::HEARTBEAT) => {}
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
