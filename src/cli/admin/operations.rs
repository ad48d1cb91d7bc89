//! The operations commands: health, ingress pause and resume, traces, overdue submissions
//! and the live tail.

use std::future::Future;
use std::time::SystemTime;

use clap::Subcommand;
use ozg_gateway::wire::admin as api;
use tonic::codec::Streaming;
use tonic::{Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use super::connect::{self, Failure};
use super::{Api, Output, render};

#[derive(Subcommand)]
pub(super) enum IngressCommand {
    /// Stop consuming PLATFORM's queue; submissions in flight finish.
    Pause { platform: String },
    /// Consume PLATFORM's queue again.
    Resume { platform: String },
}

/// The proto3 JSON of a HealthCheckResponse, which tonic-health does not derive.
#[derive(serde::Serialize)]
struct Health {
    status: &'static str,
}

impl Health {
    fn of(status: i32) -> Self {
        Health {
            status: ServingStatus::try_from(status).map_or("UNKNOWN", |s| s.as_str_name()),
        }
    }
}

pub(super) async fn health(
    api: &Api,
    out: &Output,
    service: String,
    watch: bool,
) -> Result<(), Failure> {
    let mut client = api.health();
    let request = HealthCheckRequest { service };
    if watch {
        return follow(client.watch(request), |response| {
            out.show(&Health::of(response.status), |h| {
                format!(
                    "{} {}",
                    humantime::format_rfc3339_seconds(SystemTime::now()),
                    h.status
                )
            })
        })
        .await;
    }
    let response = client.check(api.unary(request)).await?.into_inner();
    out.show(&Health::of(response.status), |h| h.status.to_owned())?;
    if response.status == ServingStatus::Serving as i32 {
        Ok(())
    } else {
        Err(Failure::Quiet(connect::EXIT_CALL_FAILED))
    }
}

/// Hands each message of a server stream to `each` until the stream ends or Ctrl-C, which is
/// how an operator ends a tail, so it is a success.
async fn follow<M>(
    call: impl Future<Output = Result<Response<Streaming<M>>, Status>>,
    mut each: impl FnMut(M) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let tail = async {
        let mut stream = call.await?.into_inner();
        while let Some(message) = stream.message().await? {
            each(message)?;
        }
        Ok(())
    };
    tokio::select! {
        result = tail => result,
        signal = tokio::signal::ctrl_c() => signal
            .map_err(|e| Failure::Local(format!("cannot listen for Ctrl-C: {e}"))),
    }
}

pub(super) async fn ingress(
    api: &Api,
    out: &Output,
    command: IngressCommand,
) -> Result<(), Failure> {
    let mut client = api.operations();
    let state = match command {
        IngressCommand::Pause { platform } => {
            let request = api::PauseIngressRequest {
                platform_id: platform,
            };
            client.pause_ingress(api.unary(request)).await?
        }
        IngressCommand::Resume { platform } => {
            let request = api::ResumeIngressRequest {
                platform_id: platform,
            };
            client.resume_ingress(api.unary(request)).await?
        }
    };
    out.show(state.get_ref(), render::ingress)
}

pub(super) async fn trace(api: &Api, out: &Output, submission_id: String) -> Result<(), Failure> {
    let request = api.unary(api::GetSubmissionTraceRequest { submission_id });
    let trace = api
        .operations()
        .get_submission_trace(request)
        .await?
        .into_inner();
    out.show(&trace, render::trace)
}

pub(super) async fn overdue(api: &Api, out: &Output, limit: Option<u32>) -> Result<(), Failure> {
    let request = api.unary(api::ListOverdueRequest {
        page_size: limit.unwrap_or(0),
    });
    let list = api.operations().list_overdue(request).await?.into_inner();
    out.show(&list, render::overdue)?;
    out.note(&format!(
        "{} overdue{}",
        list.submissions.len(),
        render::within(&list.scope)
    ));
    Ok(())
}

pub(super) async fn watch(
    api: &Api,
    out: &Output,
    platform: Option<String>,
    destination: Option<String>,
) -> Result<(), Failure> {
    let request = api::WatchEventsRequest {
        platform: platform.unwrap_or_default(),
        destination: destination.unwrap_or_default(),
    };
    let mut client = api.operations();
    follow(client.watch_events(request), |event| {
        out.show(&event, render::event)
    })
    .await
}
