//! Supervised broker connections. A [`Link`] keeps one AMQP connection to one broker (for one
//! role) alive: it connects, watches the connection, and after a drop or a broker restart
//! reconnects with capped exponential backoff and jitter. Users ask the link for the current
//! connection instead of holding one, so they pick up the new connection after a reconnect.
//! The state of every link is observable (for health and statistics).
//!
//! A broker given as the nodes of a cluster is connected to one node at a time, the first
//! at start; when that node fails the link goes on to the next one in the list (not back
//! to the first), and only after every node failed in turn does it wait out a backoff.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::Connection;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::amqp::{self, Role};
use crate::config::Broker;

/// First retry after this long, doubling up to [`BACKOFF_CAP`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(200);
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
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
    /// Up, to the node at `node` (`host:port`).
    Connected {
        node: String,
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
            LinkState::Connected { node } => Some(node),
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
            let Some(connection) = self.connected(stop).await else {
                return;
            };
            let subscribed = async {
                let channel = connection.create_channel().await?;
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
                Ok::<_, lapin::Error>((channel, consumer))
            };
            match subscribed.await {
                // The channel is held while the consumer runs: its acks travel on it.
                Ok((_channel, consumer)) => {
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
                if attempt > 0 {
                    tracing::info!(broker = %link.broker, role = ?link.role, node = %address,
                        "reconnected");
                } else {
                    tracing::info!(broker = %link.broker, role = ?link.role, node = %address,
                        "connected");
                }
                let connection = Arc::new(connection);
                let mut events = connection.events_listener();
                // State first: whoever is woken by the connection must find the link
                // reported as connected to this node, not still connecting.
                link.state.send_replace(LinkState::Connected {
                    node: address.clone(),
                });
                link.connection.send_replace(Some(connection.clone()));
                let lost = loop {
                    tokio::select! {
                        () = stop.cancelled() => break None,
                        event = events.next() => match event {
                            // Channel errors (a 404 on one destination's channel) come
                            // through here too; only a connection that is gone is lost.
                            Some(lapin::Event::Error(e)) => {
                                if !connection.status().connected() {
                                    break Some(e.to_string());
                                }
                                tracing::debug!(broker = %link.broker, error = %e,
                                    "channel error on a connection that is still up");
                            }
                            Some(_) => {}
                            None => break Some("connection event stream ended".to_owned()),
                        },
                        () = tokio::time::sleep(WATCH_INTERVAL) => {
                            if !connection.status().connected() {
                                break Some("connection closed".to_owned());
                            }
                        }
                    }
                };
                let Some(reason) = lost else { break };
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
                // Straight on to the next node; a backoff only after a whole round failed.
                let round_over = attempt % u32::try_from(nodes).unwrap_or(u32::MAX) == 0;
                let delay = if round_over {
                    backoff(attempt.div_ceil(u32::try_from(nodes).unwrap_or(u32::MAX)))
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
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    link.state.send_replace(LinkState::Stopped);
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
            (8, 25_600),
            (9, 30_000),
            (40, 30_000),
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
