//! The operators' gRPC API (proto/ozg/gateway/admin/v1): overview and statistics, the
//! routing directory, dead letters, ingress control, submission traces and a live tail of
//! routing outcomes; beside them grpc.health.v1 and server reflection (v1 and v1alpha), so
//! grpcurl works without proto files.
//!
//! What each call does, and whether the caller may (roles and scope), is the `service`
//! layer's, which a web console shares. The gRPC services here (`stats`, `directory`,
//! `dead_letters`, `operations`) are thin: every call is authenticated ([`auth`]) and has
//! its request's text fields bounded (`limits`) before anything else (`State::admit`),
//! then its message is converted (`convert`), handed to the service, and the answer or
//! the `service::ServiceError` converted back. Generated types stay here: neither the
//! engine nor the service layer sees them.

pub mod auth;
mod convert;
mod dead_letters;
mod directory;
mod health;
mod limits;
mod operations;
pub(crate) mod service;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::config::{AdminSettings, Config};
use crate::wire::admin as pb;
use service::{Principal, Service};

pub use health::{Health, LinkView};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read {what} {path}: {source}")]
    ReadTls {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("TLS set-up failed: {0}")]
    Tls(String),
    #[error("reflection set-up failed: {0}")]
    Reflection(String),
}

/// What the gRPC services share.
pub struct State {
    service: Arc<Service>,
    auth: auth::Authenticator,
    /// Ends server streams (WatchEvents) when the gateway stops.
    stop: CancellationToken,
}

impl State {
    /// The gRPC API over a service that another face (a web console) shares: one
    /// service, so that directory changes from both are made one at a time.
    pub fn new(service: Arc<Service>, config: &Config, stop: CancellationToken) -> State {
        let tokens = config
            .admin
            .as_ref()
            .map(|a| a.tokens.clone())
            .unwrap_or_default();
        State {
            service,
            auth: auth::Authenticator::new(tokens),
            stop,
        }
    }

    /// Every unary call: admitted ([`admit`](Self::admit)), then answered by `call` from the
    /// service, a [`service::ServiceError`] as its status ([`convert::status`]).
    async fn unary<T: serde::Serialize, R>(
        &self,
        request: tonic::Request<T>,
        call: impl AsyncFnOnce(&Service, &Principal, &T) -> Result<R, service::ServiceError>,
    ) -> Result<tonic::Response<R>, tonic::Status> {
        let who = self.admit(&request).await?;
        call(&self.service, &who, request.get_ref())
            .await
            .map(tonic::Response::new)
            .map_err(convert::status)
    }

    /// Every call's door: the bearer token (a failure answered late, see [`auth`]), then
    /// the bounds on every text field of the request ([`limits`]). What the principal may
    /// do is the service's to decide.
    async fn admit<T: serde::Serialize>(
        &self,
        request: &tonic::Request<T>,
    ) -> Result<Principal, tonic::Status> {
        let who = self
            .auth
            .check(request.metadata(), request.remote_addr())
            .await?;
        limits::check(request.get_ref())?;
        Ok(who)
    }
}

/// A running admin server.
pub struct Running {
    pub address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits until the server has stopped (after the stop token given to [`serve`]).
    pub async fn stopped(self) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await;
    }
}

/// Chooses rustls's cryptography for the admin API's TLS, server and client side. Other
/// dependencies enable a second provider, and rustls refuses to guess between two.
pub fn install_crypto_provider() {
    // Err only means one is installed already, which is what is wanted.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Binds the admin port and serves until `stop`.
pub async fn serve(
    settings: &AdminSettings,
    state: State,
    health: Health,
    stop: CancellationToken,
) -> Result<Running, AdminError> {
    let listener = tokio::net::TcpListener::bind(settings.address)
        .await
        .map_err(|source| AdminError::Bind {
            address: settings.address,
            source,
        })?;
    let address = listener.local_addr().map_err(|source| AdminError::Bind {
        address: settings.address,
        source,
    })?;
    let mut server = Server::builder();
    if let Some(tls) = &settings.tls {
        install_crypto_provider();
        let read = |what: &'static str, path: &std::path::Path| {
            std::fs::read(path).map_err(|source| AdminError::ReadTls {
                what,
                path: path.display().to_string(),
                source,
            })
        };
        let identity = Identity::from_pem(read("certificate", &tls.cert)?, read("key", &tls.key)?);
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &tls.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read("client CA", ca)?));
        }
        server = server
            .tls_config(config)
            .map_err(|e| AdminError::Tls(e.to_string()))?;
    }
    let descriptors = |b: tonic_reflection::server::Builder<'static>| {
        b.register_encoded_file_descriptor_set(crate::wire::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = descriptors(tonic_reflection::server::Builder::configure())
        .build_v1()
        .map_err(|e| AdminError::Reflection(e.to_string()))?;
    let reflection_v1alpha = descriptors(tonic_reflection::server::Builder::configure())
        .build_v1alpha()
        .map_err(|e| AdminError::Reflection(e.to_string()))?;
    let state = Arc::new(state);
    let router = server
        .add_service(health.service())
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(pb::stats_service_server::StatsServiceServer::new(
            stats::Stats(state.clone()),
        ))
        .add_service(pb::directory_service_server::DirectoryServiceServer::new(
            directory::DirectoryApi(state.clone()),
        ))
        .add_service(
            pb::dead_letter_service_server::DeadLetterServiceServer::new(
                dead_letters::DeadLetters(state.clone()),
            ),
        )
        .add_service(pb::operations_service_server::OperationsServiceServer::new(
            operations::Operations(state.clone()),
        ));
    // Answers are small writes after small reads: without TCP_NODELAY, Nagle's algorithm
    // waits for the client's delayed ACK and every call takes ~40 ms. (Server::tcp_nodelay
    // applies only to a listener tonic binds itself.)
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let task = tokio::spawn(async move {
        let stopped = stop.cancelled_owned();
        if let Err(e) = router.serve_with_incoming_shutdown(incoming, stopped).await {
            tracing::error!(error = %e, "admin API stopped with an error");
        }
    });
    tracing::info!(address = %address, tls = settings.tls.is_some(), "admin API listening");
    Ok(Running { address, task })
}
