//! RabbitMQ plumbing: connections, confirmed publishing, the parts of the topology the
//! gateway owns (described in [`crate::topology`]).
//!
//! A [`Publisher`] (`publish.rs`) owns one channel in confirm mode and reopens it when the
//! broker closed it (a publish to a missing exchange closes the channel with 404). The
//! destinations on a broker share one publisher per publishing connection, whose publishes
//! are pipelined; a destination whose exchange is missing publishes through one of its own
//! until it is back, and so do each platform's status exchange and the dead-letter exchange.
//! Publishing and consuming use separate connections, as RabbitMQ advises: a blocked
//! publisher connection must not stall consumers.

use std::time::Duration;

use lapin::tcp::{AMQPUriTcpExt, AsyncTcpStream, RustlsConnector, TLSConfig};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::uri::AMQPScheme;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::model::Broker;
use guard::{FrameLimit, GuardKit, GuardedStream};

pub mod declare;
pub mod guard;
pub mod link;
mod publish;
mod returns;
use crate::topology::{self, Declarations};
pub use publish::{Publisher, names_exchange};

/// Why a publish did not end in a positive confirm. Every variant is a failed delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error(
        "returned unroutable by broker {broker}: {code} {text} (exchange {exchange:?}, routing key {routing_key:?})"
    )]
    Returned {
        broker: String,
        exchange: String,
        routing_key: String,
        code: u16,
        text: String,
    },
    #[error("negatively acknowledged (nack) by broker {broker}")]
    Nacked { broker: String },
    #[error("no confirm from broker {broker} within {timeout:?}; the message may have arrived")]
    ConfirmTimeout { broker: String, timeout: Duration },
    /// Sent, but the channel or connection closed before the broker's confirm.
    #[error("no confirm from broker {broker}: {detail}; the message may have arrived")]
    ConfirmLost { broker: String, detail: String },
    #[error("channel to broker {broker} failed: {detail}")]
    Channel { broker: String, detail: String },
    #[error("broker {broker} is not connected (reconnecting)")]
    NotConnected { broker: String },
    /// Not sent: the broker blocks the connection (a memory or disk alarm), so a publish
    /// would only wait out its confirm timeout.
    #[error("broker {broker} blocks publishing: {reason}")]
    Blocked { broker: String, reason: String },
    /// Never sent: the broker closes the whole connection on a frame larger than agreed.
    #[error(
        "not sent: its properties take a {size}-byte frame, larger than the frame size of broker {broker} ({frame_max} bytes)"
    )]
    HeadersTooLarge {
        broker: String,
        size: usize,
        frame_max: u32,
    },
}

impl DeliveryError {
    /// A short, stable name for the kind of failure (`error.type` in traces, metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            DeliveryError::Returned { .. } => "returned",
            DeliveryError::Nacked { .. } => "nacked",
            DeliveryError::ConfirmTimeout { .. } => "confirm-timeout",
            DeliveryError::ConfirmLost { .. } => "confirm-lost",
            DeliveryError::Channel { .. } => "channel-error",
            DeliveryError::NotConnected { .. } => "not-connected",
            DeliveryError::Blocked { .. } => "broker-blocked",
            DeliveryError::HeadersTooLarge { .. } => "headers-too-large",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `display` is the node's URI without password. A TLS failure (unknown CA, name
    /// mismatch, a client certificate the broker wanted) shows in `source`.
    #[error("cannot connect to broker {broker} ({display}): {source}")]
    Failed {
        broker: String,
        display: String,
        source: lapin::Error,
    },
    #[error("cannot connect to broker {broker} ({display}): no answer within {timeout:?}")]
    Timeout {
        broker: String,
        display: String,
        timeout: Duration,
    },
}

/// How long one connection attempt (TCP, TLS, AMQP handshake) may take: a node that is
/// gone without a reset (a host down, a dropped route) must not hold up the next node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound on each step of closing down that waits for the broker: a connection that died
/// under lapin can leave its close (or a cancel) unanswered for ever.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Closes `connection`, waiting at most [`CLOSE_TIMEOUT`] for the broker's answer; errors
/// are of no use to a caller that is done with it.
pub async fn close(connection: &Connection, reason: &str) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, reason.into())).await;
}

/// Which connection of a broker: consuming and publishing never share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Consume,
    Publish,
}

/// The frame size a publishing connection asks for unless a broker's URL says
/// `?frame_max=`. lapin keeps a send and a receive buffer of 32 frames per connection, and
/// the gateway fits what it publishes into the frame size (`fit`); bodies are split into
/// frames of any size. 8 KiB frames carry a 4 KiB submission in one frame.
const PUBLISH_FRAME_MAX: u32 = 8192;

/// The frame size a consuming connection asks for unless a broker's URL says `?frame_max=`.
/// It bounds the headers a message may carry and still arrive whole (larger ones the header
/// guard cuts out: `headers-too-large`); 32 KiB holds a thousand or so typical headers.
/// lapin keeps a receive ring of 32 frames per connection, which traffic touches whole:
/// 1 MiB per platform's connection at this size (at RabbitMQ's own 128 KiB, 4 MiB: 64 MiB
/// for 16 platforms). lapin takes the smaller of this and the broker's offer; asked for up
/// front, its buffers are allocated at this size once.
const CONSUME_FRAME_MAX: u32 = 32_768;

/// Connects to node `node` of `broker`; every broker connection of the gateway and its
/// commands is opened here. amqps:// verifies the node against the broker's CA only
/// (`tls::BrokerTls`), with the node's host or the configured `server_name`; there is no
/// way to skip that. A consuming connection is guarded (`guard`): a message whose headers
/// do not fit its frame size arrives without them instead of closing the connection.
pub async fn connect(broker: &Broker, node: usize, role: Role) -> Result<Connection, ConnectError> {
    let role_name = match role {
        Role::Consume => "consume",
        Role::Publish => "publish",
    };
    let Some(target) = broker.nodes.get(node) else {
        return Err(ConnectError::Failed {
            broker: broker.name.clone(),
            display: broker.display.clone(),
            source: std::io::Error::other(format!("no node {node}")).into(),
        });
    };
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("ozg-gateway {role_name} {}", broker.name).into());
    let mut uri = target.uri().clone();
    if uri.query.frame_max.is_none() {
        uri.query.frame_max = Some(match role {
            Role::Consume => CONSUME_FRAME_MAX,
            Role::Publish => PUBLISH_FRAME_MAX,
        });
    }
    // Validation pairs amqps:// with TLS settings; refuse rather than fall back to lapin's
    // default roots should that ever not hold.
    if uri.scheme != AMQPScheme::AMQP && broker.tls.is_none() {
        return Err(ConnectError::Failed {
            broker: broker.name.clone(),
            display: target.display.clone(),
            source: std::io::Error::other("amqps:// without TLS settings").into(),
        });
    }
    let tls = broker.tls.as_ref().map(|tls| {
        (
            RustlsConnector::from(tls.client_config()),
            tls.name_for(&uri.authority.host).to_owned(),
        )
    });
    let limit = FrameLimit::default();
    let guard = (role == Role::Consume).then(|| limit.clone());
    let runtime = async_rs::Runtime::new(GuardKit::current());
    let connecting = Connection::connector(
        uri,
        runtime,
        async move |uri, runtime| {
            let mut plain = uri.clone();
            plain.scheme = AMQPScheme::AMQP;
            let tcp =
                AMQPUriTcpExt::connect_with_config_async(&plain, TLSConfig::default(), &runtime)
                    .await?;
            let stream = match &tls {
                Some((connector, server_name)) => tcp.into_rustls(connector, server_name).await?,
                None => tcp,
            };
            // Above TLS: the guard reads frames, not ciphertext.
            Ok(match &guard {
                Some(limit) => {
                    AsyncTcpStream::Plain(GuardedStream::guarding(stream, limit.clone()))
                }
                None => stream,
            })
        },
        properties,
    );
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => {
            // Deliveries come only after a subscription, by when the guard knows this.
            limit.set(connection.configuration().frame_max());
            Ok(connection)
        }
        Ok(Err(source)) => Err(ConnectError::Failed {
            broker: broker.name.clone(),
            display: target.display.clone(),
            source,
        }),
        Err(_) => Err(ConnectError::Timeout {
            broker: broker.name.clone(),
            display: target.display.clone(),
            timeout: CONNECT_TIMEOUT,
        }),
    }
}

/// For one-off commands: the first node of `broker` that answers, in the configured order.
/// Nodes that fail are logged; the last failure is returned when none answers.
pub async fn connect_any(broker: &Broker, role: Role) -> Result<Connection, ConnectError> {
    let mut last = None;
    for node in 0..broker.nodes.len() {
        match connect(broker, node, role).await {
            Ok(connection) => return Ok(connection),
            Err(e) => {
                if node + 1 < broker.nodes.len() {
                    tracing::warn!(error = %e, "trying the next node");
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| ConnectError::Failed {
        broker: broker.name.clone(),
        display: broker.display.clone(),
        source: std::io::Error::other("no node configured").into(),
    }))
}

/// The parts of the topology the gateway owns and declares itself.
#[derive(Debug, Clone)]
pub enum OwnedTopology {
    DeadLetter {
        exchange: String,
        queue: String,
    },
    Retry {
        delays: Vec<Duration>,
    },
    /// The queue replayed dead letters wait in until the gateway takes them.
    Replay,
}

impl OwnedTopology {
    /// What this part consists of, from the one description in [`crate::topology`] that
    /// `declare-topology` and the definitions export read too.
    pub fn declarations(&self) -> Declarations {
        match self {
            OwnedTopology::DeadLetter { exchange, queue } => topology::dead_letter(exchange, queue),
            OwnedTopology::Retry { delays } => topology::retry(delays),
            OwnedTopology::Replay => topology::replay(),
        }
    }

    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        self.declarations()
            .declare(channel)
            .await
            .map_err(|e| e.source)
    }
}

/// How many bytes the content-header frame of a message with these properties takes: the
/// frame's own 8, class, weight and body size (12), and the encoded properties. AMQP cannot
/// split it, so it must fit the connection's frame size.
pub fn header_frame_size(properties: &BasicProperties) -> usize {
    const FIXED: usize = 8 + 12;
    let encoded = cookie_factory::r#gen(
        lapin::protocol::basic::gen_properties(properties),
        Vec::new(),
    );
    // Writing into a Vec does not fail; were it to, the frame counts as too large.
    encoded.map_or(usize::MAX, |(_, len)| {
        FIXED + usize::try_from(len).unwrap_or(usize::MAX)
    })
}

/// `properties` fitted to `frame_max`: as they are when their content header fits, else
/// with only the headers `keep` accepts, and the size in bytes of what was left out.
pub fn fit(
    properties: &BasicProperties,
    frame_max: u32,
    keep: impl Fn(&str) -> bool,
) -> (BasicProperties, Option<usize>) {
    let size = header_frame_size(properties);
    if size <= frame_max as usize {
        return (properties.clone(), None);
    }
    let mut kept = FieldTable::default();
    if let Some(headers) = properties.headers() {
        for (name, value) in headers.inner() {
            if keep(name.as_str()) {
                kept.insert(name.clone(), value.clone());
            }
        }
    }
    let fitted = properties.clone().with_headers(kept);
    let left_out = size.saturating_sub(header_frame_size(&fitted));
    (fitted, Some(left_out))
}

pub fn header_string(value: impl Into<String>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.into()))
}

/// A header's value as text, whether the publisher sent it as a string or as bytes.
pub fn header_text(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    value_text(headers?.inner().get(name)?)
}

/// A header value as text when it is a string or bytes; `None` for numbers, tables, ….
pub fn value_text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::ByteArray(b) => Some(String::from_utf8_lossy(b.as_slice()).into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_headers(n: usize, value_len: usize) -> BasicProperties {
        let mut headers = FieldTable::default();
        for i in 0..n {
            headers.insert(
                format!("h{i:04}").into(),
                header_string("v".repeat(value_len)),
            );
        }
        headers.insert("x-ozg-reason".into(), header_string("no-route"));
        headers.insert(
            "traceparent".into(),
            header_string("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id("5f0c".into())
            .with_delivery_mode(2)
            .with_headers(headers)
    }

    #[test]
    fn the_header_frame_size_is_what_goes_on_the_wire() {
        use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, gen_frame};
        for properties in [
            BasicProperties::default(),
            with_headers(0, 0),
            with_headers(3, 10),
            with_headers(2_500, 1),
            with_headers(1, 9_000),
        ] {
            let frame = AMQPFrame::Header(
                1,
                AMQPContentHeader {
                    class_id: 60,
                    body_size: 4096,
                    properties: properties.clone(),
                },
            );
            let (_, wire) = cookie_factory::r#gen(gen_frame(&frame), Vec::new()).unwrap();
            assert_eq!(header_frame_size(&properties) as u64, wire);
        }
    }

    #[test]
    fn headers_that_do_not_fit_are_left_out_but_the_kept_ones() {
        let own = |name: &str| name.starts_with("x-ozg-") || name == "traceparent";
        for (properties, frame_max, left_out) in [
            (with_headers(3, 10), 8192, false),
            (with_headers(1, 9_000), 8192, true),
            (with_headers(1, 9_000), 131_072, false),
            (with_headers(2_500, 1), 8192, true),
        ] {
            let (fitted, dropped) = fit(&properties, frame_max, own);
            assert_eq!(dropped.is_some(), left_out);
            assert!(header_frame_size(&fitted) <= frame_max as usize);
            let names: Vec<String> = fitted
                .headers()
                .as_ref()
                .unwrap()
                .inner()
                .keys()
                .map(|k| k.to_string())
                .collect();
            if left_out {
                assert_eq!(names, ["traceparent", "x-ozg-reason"]);
                assert_eq!(
                    dropped,
                    Some(header_frame_size(&properties) - header_frame_size(&fitted))
                );
                assert_eq!(fitted.message_id(), properties.message_id());
            } else {
                assert_eq!(fitted, properties);
            }
        }
    }
}
