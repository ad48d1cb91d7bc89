//! Supervised broker connections. A [`Link`] keeps one AMQP connection to one broker (for one
//! role) alive: it connects, watches the connection, and after a drop or a broker restart
//! reconnects with capped exponential backoff and jitter. Users ask the link for the current
//! connection instead of holding one, so they pick up the new connection after a reconnect.
//! The state of every link is observable (for health and statistics).
//!
//! A broker given as the nodes of a cluster is connected to one node at a time, the first
//! at start; when that node fails the link goes on to the next one in the list (not back
//! to the first), and only after every node failed in turn does it wait out a backoff.
//!
//! A broker under a memory or disk alarm blocks the connections that publish to it
//! (`connection.blocked`) until the alarm clears. The link's state says so while it lasts
//! ([`LinkState::blocked`]), and publishers fail at once instead of waiting out their
//! confirm timeout, so that their deliveries go the retry path and a batch that also holds
//! deliveries for other brokers is not held up.
//!
//! Every channel is opened through [`Link::open_channel`]. lapin 4.12 keeps the number of
//! each channel the broker closed (a publish to a missing exchange, a passive declare of a
//! missing queue: 404) marked as failed for the rest of the connection; once its channel
//! numbers wrap around it cannot open a channel on such a number and keeps the failed
//! channel in its registry for good, until no channel can be opened at all ("the maximum
//! number of channels for this connection has been reached") although the broker shows
//! only the few in use. A connection on which a channel cannot be opened while it is up is
//! therefore replaced (`Link::renew`): the link connects afresh and hands out the new
//! connection, and the old one is closed as soon as nobody holds it any more, so that what
//! runs on it (publishes awaiting their confirms, consumers) finishes there undisturbed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::Connection;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::amqp::{self, Role};
use crate::model::Broker;

/// First retry after this long, doubling up to [`BACKOFF_CAP`].
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// After a long outage the gateway is back within this long of the broker (5 to 10 s with
/// the jitter); an attempt every few seconds per connection is nothing to a broker.
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// How often a connection's status is looked at, besides its error events.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Trying to (re)connect; `attempt` counts failures since the last success.
    /// `last_error` names the node and never holds a password.
    Connecting {
        attempt: u32,
        last_error: Option<String>,
    },
    /// Up, to the node at `node` (`host:port`). `blocked` holds the broker's reason while
    /// it refuses to take messages on this connection (a memory or disk alarm): publishes
    /// would only wait out their confirm timeout.
    Connected {
        node: String,
        blocked: Option<String>,
    },
    Stopped,
}

impl LinkState {
    pub fn is_connected(&self) -> bool {
        matches!(self, LinkState::Connected { .. })
    }

    /// The node connected to, as `host:port`.
    pub fn node(&self) -> Option<&str> {
        match self {
            LinkState::Connected { node, .. } => Some(node),
            _ => None,
        }
    }

    /// Why the broker blocks this connection, while it does.
    pub fn blocked(&self) -> Option<&str> {
        match self {
            LinkState::Connected { blocked, .. } => blocked.as_deref(),
            _ => None,
        }
    }

    /// Why the last attempt to connect failed, while connecting.
    pub fn last_error(&self) -> Option<&str> {
        match self {
            LinkState::Connecting { last_error, .. } => last_error.as_deref(),
            _ => None,
        }
    }
}

pub struct Link {
    broker: String,
    role: Role,
    connection: watch::Sender<Option<Arc<Connection>>>,
    state: watch::Sender<LinkState>,
    /// Wakes the supervisor when [`Link::renew`] took the connection out of service.
    renewal: tokio::sync::Notify,
}

/// Why a channel could not be opened through [`Link::open_channel`].
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("{0}")]
    Open(#[from] lapin::Error),
    #[error("the link to broker {broker} is stopping")]
    Stopped { broker: String },
}

/// Delay before reconnect attempt `attempt` (1-based): exponential, capped, with jitter in
/// [50 %, 100 %] so that many gateways do not reconnect in lockstep after a broker restart.
pub fn backoff(attempt: u32) -> Duration {
    let exponential = BACKOFF_BASE.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exponential.min(BACKOFF_CAP);
    capped.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

impl Link {
    /// Starts supervising a connection to `broker`; stops when `stop` is cancelled.
    pub fn start(broker: Broker, role: Role, stop: CancellationToken) -> Arc<Link> {
        let link = Arc::new(Link {
            broker: broker.name.clone(),
            role,
            connection: watch::Sender::new(None),
            state: watch::Sender::new(LinkState::Connecting {
                attempt: 0,
                last_error: None,
            }),
            renewal: tokio::sync::Notify::new(),
        });
        tokio::spawn(supervise(link.clone(), broker, stop));
        link
    }

    pub fn broker(&self) -> &str {
        &self.broker
    }

    /// Keeps one consumer of `queue` going: waits for the connection, opens a channel, lets
    /// `prepare` declare or check what it needs, subscribes with `prefetch`, and hands the
    /// consumer to `run`. `run` returns `None` when told to stop, or why the consumer
    /// ended; then this starts over after a backoff. Returns when `stop` is cancelled.
    /// (Plain closures returning futures rather than async closures: the latter's futures
    /// cannot be shown to be `Send`, and the callers are spawned.)
    pub async fn keep_consuming<P, R>(
        &self,
        queue: &str,
        consumer_tag: &str,
        prefetch: u16,
        stop: &CancellationToken,
        mut prepare: impl FnMut(lapin::Channel) -> P,
        mut run: impl FnMut(lapin::Consumer) -> R,
    ) where
        P: std::future::Future<Output = Result<(), lapin::Error>>,
        R: std::future::Future<Output = Option<String>>,
    {
        let mut attempt = 0u32;
        loop {
            let subscribed = async {
                let (connection, channel) = self.open_channel(stop).await?;
                prepare(channel.clone()).await?;
                channel
                    .basic_qos(prefetch, lapin::options::BasicQosOptions::default())
                    .await?;
                let consumer = channel
                    .basic_consume(
                        queue.into(),
                        consumer_tag.into(),
                        lapin::options::BasicConsumeOptions::default(),
                        lapin::types::FieldTable::default(),
                    )
                    .await?;
                Ok::<_, ChannelError>((connection, channel, consumer))
            };
            match subscribed.await {
                Err(ChannelError::Stopped { .. }) => return,
                // The channel is held while the consumer runs: its acks travel on it; and
                // the connection, which a renewal closes only once nobody holds it.
                Ok((_connection, _channel, consumer)) => {
                    attempt = 0;
                    tracing::info!(queue = %queue, broker = %self.broker, "consuming");
                    match run(consumer).await {
                        None => return,
                        Some(reason) => tracing::warn!(queue = %queue, error = %reason,
                            "consumer lost; resubscribing"),
                    }
                }
                Err(e) => tracing::error!(queue = %queue, broker = %self.broker, error = %e,
                    "cannot subscribe; retrying"),
            }
            attempt = attempt.saturating_add(1);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff(attempt)) => {}
            }
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The connection if it is up now.
    pub fn current(&self) -> Option<Arc<Connection>> {
        self.connection
            .borrow()
            .as_ref()
            .filter(|c| c.status().connected())
            .cloned()
    }

    /// Waits until the link is connected; `None` when `stop` fires first.
    pub async fn connected(&self, stop: &CancellationToken) -> Option<Arc<Connection>> {
        let mut changes = self.connection.subscribe();
        loop {
            if let Some(c) = changes
                .borrow_and_update()
                .as_ref()
                .filter(|c| c.status().connected())
            {
                return Some(c.clone());
            }
            tokio::select! {
                () = stop.cancelled() => return None,
                changed = changes.changed() => if changed.is_err() { return None },
                // A connection object can go bad before the supervisor notices.
                () = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
        }
    }

    pub fn state(&self) -> LinkState {
        self.state.borrow().clone()
    }

    /// Why the broker blocks the current connection, while it does.
    pub fn blocked(&self) -> Option<String> {
        self.state.borrow().blocked().map(str::to_owned)
    }

    fn set_blocked(&self, reason: Option<String>) {
        self.state.send_if_modified(|state| match state {
            LinkState::Connected { blocked, .. } if *blocked != reason => {
                *blocked = reason;
                true
            }
            _ => false,
        });
    }

    /// A new channel on the current connection (waiting for the link to be connected), with
    /// the connection it is on: whoever uses the channel holds the connection too, so that
    /// a renewal closes a replaced connection only when its last user is done. A channel
    /// that cannot be opened on a connection that is still up renews the connection (see
    /// the module documentation) and is opened on the new one.
    pub async fn open_channel(
        &self,
        stop: &CancellationToken,
    ) -> Result<(Arc<Connection>, lapin::Channel), ChannelError> {
        let stopped = || ChannelError::Stopped {
            broker: self.broker.clone(),
        };
        let connection = self.connected(stop).await.ok_or_else(stopped)?;
        match connection.create_channel().await {
            Ok(channel) => Ok((connection, channel)),
            Err(e) if connection.status().connected() => {
                tracing::warn!(broker = %self.broker, role = ?self.role, error = %e,
                    "cannot open a channel on a connection that is up; replacing the connection");
                self.renew(&connection);
                let fresh = self.connected(stop).await.ok_or_else(stopped)?;
                let channel = fresh.create_channel().await?;
                Ok((fresh, channel))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Takes `spent` out of service if it is still the link's connection: nobody is handed
    /// it any more, the supervisor connects afresh, and `spent` is closed once its last
    /// user let go of it.
    fn renew(&self, spent: &Arc<Connection>) {
        let taken = self.connection.send_if_modified(|current| {
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, spent)) {
                *current = None;
                true
            } else {
                false
            }
        });
        if taken {
            self.renewal.notify_one();
        }
    }

    pub fn watch_state(&self) -> watch::Receiver<LinkState> {
        self.state.subscribe()
    }

    /// Closes the current connection (used at the end of shutdown).
    pub async fn close(&self) {
        let current = self.connection.borrow().clone();
        if let Some(c) = current {
            amqp::close(&c, "ozg-gateway shutting down").await;
        }
    }
}

async fn supervise(link: Arc<Link>, broker: Broker, stop: CancellationToken) {
    let nodes = broker.nodes.len().max(1);
    let mut node = 0usize;
    // Failures since the last success; a round is one try of every node.
    let mut attempt = 0u32;
    loop {
        if stop.is_cancelled() {
            break;
        }
        let address = broker
            .nodes
            .get(node)
            .map(|n| n.address.clone())
            .unwrap_or_default();
        let connected = tokio::select! {
            () = stop.cancelled() => break,
            result = amqp::connect(&broker, node, link.role) => result,
        };
        match connected {
            Ok(connection) => {
                let (ended, connection) =
                    serve(&link, connection, &address, attempt > 0, &stop).await;
                let reason = match ended {
                    Ended::Stopped => break,
                    Ended::Renewed => {
                        tracing::info!(broker = %link.broker, role = ?link.role, node = %address,
                            "connection replaced; the old one closes when its last user is done");
                        tokio::spawn(retire(connection, stop.clone()));
                        // The same node again, at once: nothing is wrong with it.
                        attempt = 1;
                        continue;
                    }
                    Ended::Lost(reason) => reason,
                };
                link.connection.send_replace(None);
                // The node that failed is likely to fail again: the next one first.
                node = (node + 1) % nodes;
                tracing::warn!(broker = %link.broker, role = ?link.role, node = %address,
                    error = %reason, "broker connection lost; reconnecting");
                attempt = 1;
                link.state.send_replace(LinkState::Connecting {
                    attempt,
                    last_error: Some(format!("{address}: {reason}")),
                });
            }
            Err(e) => {
                attempt = attempt.saturating_add(1);
                node = (node + 1) % nodes;
                if !pause_after_failure(&link, &e, attempt, nodes, &stop).await {
                    break;
                }
            }
        }
    }
    link.state.send_replace(LinkState::Stopped);
}

/// Puts a new connection in service on `link` and watches it until it is lost, renewed or
/// the link stops; the connection comes back for the caller to retire.
async fn serve(
    link: &Link,
    connection: Connection,
    address: &str,
    again: bool,
    stop: &CancellationToken,
) -> (Ended, Arc<Connection>) {
    if again {
        tracing::info!(broker = %link.broker, role = ?link.role, node = %address, "reconnected");
    } else {
        tracing::info!(broker = %link.broker, role = ?link.role, node = %address, "connected");
    }
    let connection = Arc::new(connection);
    let mut events = connection.events_listener();
    // State first: whoever is woken by the connection must find the link reported as
    // connected to this node, not still connecting.
    link.state.send_replace(LinkState::Connected {
        node: address.to_owned(),
        blocked: None,
    });
    link.connection.send_replace(Some(connection.clone()));
    let ended = loop {
        tokio::select! {
            () = stop.cancelled() => break Ended::Stopped,
            // `renew` took this connection out of service (a stale wake-up finds it still
            // in place and is ignored).
            () = link.renewal.notified() => {
                if link.connection.borrow().is_none() {
                    break Ended::Renewed;
                }
            }
            event = events.next() => match event {
                // Channel errors (a 404 on a channel a missing exchange closed) come through
                // here too; only a connection that is gone is lost.
                Some(lapin::Event::Error(e)) => {
                    if !connection.status().connected() {
                        break Ended::Lost(e.to_string());
                    }
                    tracing::debug!(broker = %link.broker, error = %e,
                        "channel error on a connection that is still up");
                }
                Some(lapin::Event::ConnectionBlocked(reason)) => {
                    tracing::warn!(broker = %link.broker, role = ?link.role, node = %address,
                        reason = %reason, "the broker blocks publishing on this connection");
                    link.set_blocked(Some(reason));
                }
                Some(lapin::Event::ConnectionUnblocked) => {
                    tracing::info!(broker = %link.broker, role = ?link.role, node = %address,
                        "the broker takes messages on this connection again");
                    link.set_blocked(None);
                }
                Some(_) => {}
                None => break Ended::Lost("connection event stream ended".to_owned()),
            },
            () = tokio::time::sleep(WATCH_INTERVAL) => {
                if !connection.status().connected() {
                    break Ended::Lost("connection closed".to_owned());
                }
            }
        }
    };
    (ended, connection)
}

/// After a failed connection attempt: straight on to the next node, a backoff only after a
/// whole round of nodes failed. `false` when the link stopped meanwhile.
async fn pause_after_failure(
    link: &Link,
    e: &amqp::ConnectError,
    attempt: u32,
    nodes: usize,
    stop: &CancellationToken,
) -> bool {
    let nodes = u32::try_from(nodes).unwrap_or(u32::MAX);
    let delay = if attempt % nodes == 0 {
        backoff(attempt.div_ceil(nodes))
    } else {
        Duration::ZERO
    };
    tracing::warn!(broker = %link.broker, role = ?link.role, attempt, retry_in = ?delay,
        error = %e, "cannot connect to broker");
    link.state.send_replace(LinkState::Connecting {
        attempt,
        last_error: Some(e.to_string()),
    });
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

/// How the supervisor stopped watching a connection.
enum Ended {
    Stopped,
    /// Taken out of service by [`Link::renew`].
    Renewed,
    Lost(String),
}

/// How often a replaced connection is looked at until nobody holds it.
const RETIRE_POLL: Duration = Duration::from_millis(500);

/// Closes a replaced connection once the supervisor's is the last handle on it (its
/// publishes confirmed, its consumers gone), or when the link stops.
async fn retire(connection: Arc<Connection>, stop: CancellationToken) {
    while Arc::strong_count(&connection) > 1 && connection.status().connected() {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(RETIRE_POLL) => {}
        }
    }
    amqp::close(&connection, "ozg-gateway: connection replaced").await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        for (attempt, nominal) in [
            (1, 200),
            (2, 400),
            (3, 800),
            (6, 6_400),
            (7, 10_000),
            (40, 10_000),
        ] {
            for _ in 0..50 {
                let d = backoff(attempt).as_millis() as u64;
                assert!(
                    d >= nominal / 2 && d <= nominal,
                    "attempt {attempt}: {d} ms"
                );
            }
        }
        let distinct: std::collections::HashSet<_> = (0..20).map(|_| backoff(5)).collect();
        assert!(distinct.len() > 1, "jitter spreads reconnects");
    }
}
