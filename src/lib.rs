//! ozg-gateway moves citizens' online applications (OZG submissions) from the RabbitMQ
//! queues of every Land's platform to the back office of the responsible authority.
//!
//! For each submission it decodes and validates the envelope ([`envelope`]), resolves the
//! responsible authority from the service key and region by walking up the administrative
//! hierarchy ([`routing`], [`municipalities`]), publishes it to that authority's exchange with a
//! publisher confirm ([`amqp`]) and only then acks the source; what cannot be delivered goes
//! to the dead-letter exchange with a reason ([`pipeline`], [`outcome`]). The platform hears
//! what became of it through a status event. [`app::run`] wires it together; see
//! ARCHITECTURE.md for the map and the invariants.

pub(crate) mod activity;
pub mod admin;
pub mod amqp;
pub mod app;
pub(crate) mod backlog;
pub mod config;
pub mod envelope;
pub mod health;
pub mod ingress;
pub(crate) mod instances;
pub mod model;
pub mod municipalities;
pub mod outcome;
pub mod pipeline;
pub mod routing;
pub mod sample;
pub mod secret;
pub mod store;
pub mod telemetry;
pub(crate) mod tls;
pub mod topology;
pub mod wire;

// The operators' web pages, over the same service layer as the admin API.
pub(crate) mod console;

pub use app::{RunError, run};
pub use config::Config;
