//! `run` and `probe`: the gateway itself, its signals and systemd notifications, and the
//! container health check.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ozg_gateway::config::Config;

use super::args::{LogFormat, Probe};
use super::{fail, init_telemetry, load};

/// Runs the gateway: SIGTERM or SIGINT stop it, SIGHUP reloads the configuration file.
/// Under systemd (`Type=notify`) it says READY=1 once started, RELOADING=1 … READY=1
/// around a reload, STOPPING=1 on a stop signal, and pings the watchdog while its runtime
/// works; without `NOTIFY_SOCKET` these do nothing.
pub async fn run(path: PathBuf, log_format: Option<LogFormat>) -> Result<(), ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    let config = load(&path)?;
    let _telemetry = init_telemetry(config.telemetry.clone(), log_format)?;
    for warning in &config.warnings {
        tracing::warn!(warning = %warning, "configuration");
    }
    let (reload_tx, reloads) = tokio::sync::mpsc::channel(1);
    match signal(SignalKind::hangup()) {
        Ok(hangups) => {
            tokio::spawn(reload_on_hangup(path.clone(), hangups, reload_tx));
        }
        Err(e) => tracing::error!(error = %e, "cannot listen for SIGHUP; reloading is off"),
    }
    let shutdown = async {
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; stop with SIGINT");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        notify(&[sd_notify::NotifyState::Stopping]);
    };
    let started = |ready: ozg_gateway::app::Ready| {
        notify(&[sd_notify::NotifyState::Ready]);
        if let Some(timeout) = sd_notify::watchdog_enabled() {
            tokio::spawn(watchdog(ready.health, timeout));
        }
    };
    ozg_gateway::app::run_controlled(config, shutdown, reloads, started)
        .await
        .map_err(fail)
}

/// `probe`: one GET of `/live` or `/ready`, bounded to 5 s.
pub async fn probe(what: Probe, address: &str) -> ExitCode {
    let path = match what {
        Probe::Live => "live",
        Probe::Ready => "ready",
    };
    let url = format!("http://{address}/{path}");
    let asked = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent.get(&url).call().map_err(|e| format!("{url}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("{url}: {e}"))?;
        Ok::<_, String>((status, body))
    })
    .await;
    match asked {
        Ok(Ok((status, body))) => {
            println!("{body}");
            if status == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok(Err(e)) => {
            eprintln!("ozg-gateway probe: {e}");
            ExitCode::from(5)
        }
        Err(e) => fail(e),
    }
}

/// Tells systemd (`NOTIFY_SOCKET`) about the service's state; nothing without it.
fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// Pings systemd's watchdog twice per `timeout`, but only while the gateway's runtime runs
/// its tasks in time: a gateway that hangs is restarted, one that merely waits for a broker
/// is not.
async fn watchdog(health: std::sync::Arc<ozg_gateway::health::Health>, timeout: Duration) {
    let mut stalled = false;
    loop {
        tokio::time::sleep(timeout / 2).await;
        if health.runtime_works() {
            notify(&[sd_notify::NotifyState::Watchdog]);
            stalled = false;
        } else if !stalled {
            stalled = true;
            tracing::error!("runtime stalled: the watchdog is not pinged");
        }
    }
}

/// Reads the configuration file again at every SIGHUP. An invalid file changes nothing and
/// every problem is logged; a valid one goes to the running gateway, which applies what can
/// change without a restart (`app::reload`).
async fn reload_on_hangup(
    path: PathBuf,
    mut hangups: tokio::signal::unix::Signal,
    reloads: tokio::sync::mpsc::Sender<ozg_gateway::app::Reload>,
) {
    while hangups.recv().await.is_some() {
        tracing::info!(file = %path.display(), "SIGHUP received: reading the configuration again");
        let reloading = sd_notify::NotifyState::monotonic_usec_now()
            .map(|now| vec![sd_notify::NotifyState::Reloading, now])
            .unwrap_or_else(|_| vec![sd_notify::NotifyState::Reloading]);
        notify(&reloading);
        match Config::load(&path) {
            Err(errors) => {
                for problem in &errors.0 {
                    tracing::error!(problem = %problem, "configuration not reloaded");
                }
                tracing::error!(
                    problems = errors.0.len(),
                    "configuration not reloaded: the file is invalid; nothing changed"
                );
            }
            Ok(config) => {
                for warning in &config.warnings {
                    tracing::warn!(warning = %warning, "configuration");
                }
                let (done, applied) = tokio::sync::oneshot::channel();
                let reload = ozg_gateway::app::Reload { config, done };
                if reloads.send(reload).await.is_err() {
                    return;
                }
                let _ = applied.await;
            }
        }
        notify(&[sd_notify::NotifyState::Ready]);
    }
}
