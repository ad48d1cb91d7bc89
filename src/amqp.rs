//! RabbitMQ plumbing: connections, confirmed publishing, the parts of the topology the
//! gateway owns (described in [`crate::topology`]).
//!
//! A [`Publisher`] owns one channel in confirm mode and reopens it when the broker closed it
//! (a publish to a missing exchange closes the channel with 404). Each destination, each
//! platform's status exchange and the dead-letter exchange get their own publisher, so one
//! failing destination never takes down the channel others publish on. Publishing and
//! consuming use separate connections, as RabbitMQ advises: a blocked publisher connection
//! must not stall consumers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::tcp::{AMQPUriTcpExt, AsyncTcpStream, RustlsConnector, TLSConfig};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::AMQPScheme;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::model::Broker;
use guard::{FrameLimit, GuardKit, GuardedStream};

pub mod declare;
pub mod guard;
pub mod link;
use crate::topology::{self, Declarations};
use link::Link;

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
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
pub const PUBLISH_FRAME_MAX: u32 = 8192;

/// The frame size a consuming connection asks for unless a broker's URL says `?frame_max=`.
/// It bounds the headers a message may carry and still arrive whole (larger ones the header
/// guard cuts out: `headers-too-large`); 32 KiB holds a thousand or so typical headers.
/// lapin keeps a receive ring of 32 frames per connection, which traffic touches whole:
/// 1 MiB per platform's connection at this size (at RabbitMQ's own 128 KiB, 4 MiB: 64 MiB
/// for 16 platforms). lapin takes the smaller of this and the broker's offer; asked for up
/// front, its buffers are allocated at this size once.
pub const CONSUME_FRAME_MAX: u32 = 32_768;

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

/// One confirm-mode channel, reopened on demand after the broker closed it or the link
/// reconnected.
///
/// A new channel carries one publish at a time until one has been confirmed (it is
/// "proven"): when the exchange is missing, the broker closes the channel on the first
/// publish, and publishes that lapin still sends on it after acknowledging the close make the
/// broker close the whole connection (504 CHANNEL_ERROR "expected 'channel.open'"), and with
/// it every other destination's channel on that broker. Seen in tests/delivery.rs with
/// batches of publishes to a destination whose exchange was deleted.
pub struct Publisher {
    broker: String,
    link: Arc<Link>,
    channel: Mutex<Option<OpenChannel>>,
    confirm_timeout: Duration,
    /// Declared on every new channel: the topology the gateway owns must exist again after
    /// a broker restart.
    owned: Option<OwnedTopology>,
}

/// A publisher's channel with its proving gate.
#[derive(Clone)]
struct OpenChannel {
    channel: Channel,
    /// The connection the channel is on. Only a publish in progress holds it (see
    /// [`Link::open_channel`]): a connection the link replaced is closed once its last
    /// publish is done, and an idle channel on it goes with it.
    connection: std::sync::Weak<Connection>,
    /// Locked by the one publish allowed while the channel is unproven; `true` once a
    /// publish on it was confirmed.
    gate: Arc<Mutex<bool>>,
    proven: Arc<std::sync::atomic::AtomicBool>,
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

impl Publisher {
    pub fn new(link: Arc<Link>, confirm_timeout: Duration) -> Publisher {
        Publisher {
            broker: link.broker().to_owned(),
            link,
            channel: Mutex::new(None),
            confirm_timeout,
            owned: None,
        }
    }

    /// Whether the broker connection behind this publisher is up right now.
    pub fn connected(&self) -> bool {
        self.link.current().is_some()
    }

    /// A publisher that declares the topology it publishes into whenever it opens a channel.
    pub fn owning(link: Arc<Link>, confirm_timeout: Duration, owned: OwnedTopology) -> Publisher {
        Publisher {
            owned: Some(owned),
            ..Publisher::new(link, confirm_timeout)
        }
    }

    fn channel_error(&self, e: impl std::fmt::Display) -> DeliveryError {
        DeliveryError::Channel {
            broker: self.broker.clone(),
            detail: e.to_string(),
        }
    }

    /// The channel to publish on, with its connection (held for the publish). A channel on
    /// a connection the link has replaced is left to the publishes still using it; new
    /// ones go to a channel on the link's current connection.
    async fn channel(&self) -> Result<(OpenChannel, Arc<Connection>), DeliveryError> {
        let mut slot = self.channel.lock().await;
        if let Some(open) = slot.as_ref()
            && open.channel.status().connected()
            && let Some(connection) = open.connection.upgrade()
        {
            let replaced = self
                .link
                .current()
                .is_some_and(|current| !Arc::ptr_eq(&current, &connection));
            if !replaced {
                return Ok((open.clone(), connection));
            }
        }
        // Right after start or during a reconnect the link may be down for a moment: wait for
        // it as long as for a confirm rather than failing the delivery at once. Opening a
        // channel can hang on a connection that is going away: the same bound.
        let opened = tokio::time::timeout(
            self.confirm_timeout,
            self.link.open_channel(&CancellationToken::new()),
        )
        .await;
        let (connection, channel) = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(e)) => return Err(self.channel_error(e)),
            Err(_) if self.link.current().is_none() => {
                return Err(DeliveryError::NotConnected {
                    broker: self.broker.clone(),
                });
            }
            Err(_) => {
                return Err(DeliveryError::ConfirmTimeout {
                    broker: self.broker.clone(),
                    timeout: self.confirm_timeout,
                });
            }
        };
        // A channel that fails here is dropped, and lapin closes it with its last handle.
        let prepared = async {
            if let Some(owned) = &self.owned {
                owned.declare(&channel).await?;
            }
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
        };
        match tokio::time::timeout(self.confirm_timeout, prepared).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.channel_error(e)),
            Err(_) => {
                return Err(DeliveryError::ConfirmTimeout {
                    broker: self.broker.clone(),
                    timeout: self.confirm_timeout,
                });
            }
        }
        let open = OpenChannel {
            channel,
            connection: Arc::downgrade(&connection),
            gate: Arc::new(Mutex::new(false)),
            proven: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        *slot = Some(open.clone());
        Ok((open, connection))
    }

    /// Forgets the channel after an error, so that the next publish opens a fresh one.
    async fn discard(&self, failed: &OpenChannel) {
        let mut slot = self.channel.lock().await;
        if slot
            .as_ref()
            .is_some_and(|open| Arc::ptr_eq(&open.gate, &failed.gate))
        {
            *slot = None;
        }
    }

    /// Publishes persistently with `mandatory` and waits (bounded) for the broker's confirm.
    /// Only a positive confirm without a returned message counts as success.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), DeliveryError> {
        self.publish_fitted(exchange, routing_key, body, |_| properties.clone())
            .await
    }

    /// [`publish`](Self::publish) with properties made for the frame size of the connection
    /// the message goes out on: `fit` gets that frame size and returns the properties to
    /// send (see [`fit`]). Properties that still take a larger frame are refused unsent
    /// ([`DeliveryError::HeadersTooLarge`]): the broker would close the whole connection.
    pub async fn publish_fitted(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        fit: impl Fn(u32) -> BasicProperties,
    ) -> Result<(), DeliveryError> {
        // Publishes queued behind a failing channel's gate each get a fresh channel in turn,
        // one round trip apiece; together they have as long as one confirm.
        let deadline = Instant::now() + self.confirm_timeout;
        loop {
            match self
                .publish_once(exchange, routing_key, body, &fit, deadline)
                .await
            {
                // Nothing of this publish reached the broker (its channel was closed under
                // it, by the broker for another publish on it or with the connection): a
                // fresh channel gives the broker's own answer for this message instead of
                // a stale "channel closed", and a failed attempt is not counted for
                // something that was never sent.
                Err(Unsent(_)) if Instant::now() < deadline => {}
                other => return other.map_err(PublishFailure::into_error),
            }
        }
    }

    async fn publish_once(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        fit: &impl Fn(u32) -> BasicProperties,
        deadline: Instant,
    ) -> Result<(), PublishFailure> {
        // Getting a channel (waiting for the link, or behind other publishes waiting for it)
        // ends at the publish's deadline: when a broker is down, the publishes queued for
        // its channel fail together after one confirm timeout, not one after the other.
        let channel = tokio::time::timeout_at(deadline.into(), self.channel()).await;
        // Held until the confirm is in: a replaced connection is closed only after that.
        let (open, connection) = match channel {
            Ok(opened) => opened.map_err(Failed)?,
            Err(_) if self.link.current().is_none() => {
                return Err(Failed(DeliveryError::NotConnected {
                    broker: self.broker.clone(),
                }));
            }
            Err(_) => {
                return Err(Failed(DeliveryError::ConfirmTimeout {
                    broker: self.broker.clone(),
                    timeout: self.confirm_timeout,
                }));
            }
        };
        let frame_max = connection.configuration().frame_max();
        let properties = fit(frame_max).with_delivery_mode(2);
        let size = header_frame_size(&properties);
        if size > frame_max as usize {
            return Err(Failed(DeliveryError::HeadersTooLarge {
                broker: self.broker.clone(),
                size,
                frame_max,
            }));
        }
        let channel = &open.channel;
        let proving = if open.proven.load(std::sync::atomic::Ordering::Acquire) {
            None
        } else {
            let gate = tokio::time::timeout(self.confirm_timeout, open.gate.clone().lock_owned())
                .await
                .map_err(|_| {
                    Failed(DeliveryError::ConfirmTimeout {
                        broker: self.broker.clone(),
                        timeout: self.confirm_timeout,
                    })
                })?;
            // Proven meanwhile: no need to hold the others back.
            if *gate { None } else { Some(gate) }
        };
        if !channel.status().connected() {
            self.discard(&open).await;
            return Err(Unsent(
                self.channel_error("the channel closed before the publish went out"),
            ));
        }
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let sent = async {
            let confirm = channel
                .basic_publish(
                    ShortString::from(exchange),
                    ShortString::from(routing_key),
                    options,
                    body,
                    properties,
                )
                .await
                // lapin answers a publish once all its frames are written: an error here
                // means the broker never got the whole message (the channel or connection
                // closed first), so it cannot have arrived.
                .map_err(|e| Unsent(self.channel_error(e)))?;
            confirm.await.map_err(|e| {
                // The broker refused this very publish (a missing exchange: 404) when it
                // was the only one in flight on the channel; otherwise the channel or the
                // connection went away after the message was sent: it may have arrived.
                let refused = proving.is_some()
                    && matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp)
                        if matches!(amqp.kind(), lapin::protocol::AMQPErrorKind::Soft(_)));
                Failed(if refused {
                    self.channel_error(e)
                } else {
                    DeliveryError::ConfirmLost {
                        broker: self.broker.clone(),
                        detail: e.to_string(),
                    }
                })
            })
        };
        let result = match tokio::time::timeout(self.confirm_timeout, sent).await {
            Err(_) => Err(DeliveryError::ConfirmTimeout {
                broker: self.broker.clone(),
                timeout: self.confirm_timeout,
            }),
            Ok(Err(failure)) => {
                self.discard(&open).await;
                return Err(failure);
            }
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)))) => Err(DeliveryError::Returned {
                broker: self.broker.clone(),
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
                code: returned.reply_code,
                text: returned.reply_text.to_string(),
            }),
            Ok(Ok(Confirmation::Nack(_))) => Err(DeliveryError::Nacked {
                broker: self.broker.clone(),
            }),
            Ok(Ok(Confirmation::NotRequested)) => {
                Err(self.channel_error("channel is not in confirm mode"))
            }
        };
        // A nacked channel is retired too: RabbitMQ 3.10 kept nacking every publish on a
        // channel opened while quorum queues were electing new leaders after a node died
        // (tests/cluster.rs stalled on it), and a fresh channel is cheap next to that.
        if matches!(
            result,
            Err(DeliveryError::Channel { .. }
                | DeliveryError::ConfirmTimeout { .. }
                | DeliveryError::Nacked { .. })
        ) {
            self.discard(&open).await;
        } else if let Some(mut gate) = proving {
            // Confirmed, or returned with the channel still open: it works.
            *gate = true;
            open.proven
                .store(true, std::sync::atomic::Ordering::Release);
        }
        result.map_err(Failed)
    }
}

/// Why [`Publisher::publish_once`] failed: whether the message may have reached the broker.
enum PublishFailure {
    /// Not sent whole: lapin refused it or dropped its frames before the last was written
    /// (the channel or connection had closed meanwhile).
    Unsent(DeliveryError),
    Failed(DeliveryError),
}
use PublishFailure::{Failed, Unsent};

impl PublishFailure {
    fn into_error(self) -> DeliveryError {
        match self {
            Unsent(e) | Failed(e) => e,
        }
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
