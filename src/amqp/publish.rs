//! Confirmed publishing: a [`Publisher`] owns one confirm-mode channel taken from a link and
//! reopens it after the broker closed it or the link reconnected.
//!
//! Two kinds. A publisher of its own (a platform's status exchange, the dead-letter
//! exchange, the delay and replay queues, a destination whose exchange is missing) carries
//! one publish at a time on a new channel until one has been confirmed on it. A shared
//! publisher ([`Publisher::shared`]: one per publishing link, for every destination on that
//! broker) pipelines from the start, and a channel the broker closed for one exchange's
//! publish does not fail the others that were in flight on it: they are published again on
//! a fresh channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio_util::sync::CancellationToken;

use super::link::Link;
use super::returns::{Carried, Entry, ReturnBook, Returned};
use super::{DeliveryError, OwnedTopology, header_frame_size};

/// One confirm-mode channel, reopened on demand after the broker closed it or the link
/// reconnected.
///
/// A new channel of a publisher of its own carries one publish at a time until one has been
/// confirmed (it is "proven"): when the exchange is missing, the broker closes the channel
/// on the first publish, and publishes that lapin still sends on it after acknowledging the
/// close make the broker close the whole connection (504 CHANNEL_ERROR "expected
/// 'channel.open'"), and with it every other channel on that broker. A shared publisher
/// skips the gate: the exchanges it publishes into are checked when a directory is
/// installed, and a destination whose exchange turned out missing publishes through a
/// publisher of its own until a publish there is confirmed again.
pub struct Publisher {
    broker: String,
    link: Arc<Link>,
    /// Shared by the publishes on it: one pointer each to hold while a confirm is awaited.
    channel: Mutex<Option<Arc<OpenChannel>>>,
    confirm_timeout: Duration,
    /// Declared on every new channel: the topology the gateway owns must exist again after
    /// a broker restart.
    owned: Option<OwnedTopology>,
    /// Carries publishes to many exchanges (see [`Publisher::shared`]).
    shared: bool,
}

/// A publisher's channel with its proving gate.
struct OpenChannel {
    channel: Channel,
    /// The connection the channel is on. Only a publish in progress holds it (see
    /// [`Link::open_channel`]): a connection the link replaced is closed once its last
    /// publish is done, and an idle channel on it goes with it.
    connection: std::sync::Weak<Connection>,
    /// Locked by the one publish allowed while the channel is unproven; `true` once a
    /// publish on it was confirmed.
    gate: Arc<Mutex<bool>>,
    proven: Arc<AtomicBool>,
    /// Where a shared channel's returns are matched to their publishes (see
    /// [`super::returns`]).
    returns: Arc<ReturnBook>,
}

impl Publisher {
    pub fn new(link: Arc<Link>, confirm_timeout: Duration) -> Publisher {
        Publisher {
            broker: link.broker().to_owned(),
            link,
            channel: Mutex::new(None),
            confirm_timeout,
            owned: None,
            shared: false,
        }
    }

    /// The one confirm channel of a publishing link that every destination on its broker
    /// publishes on: publishes pipelined, their confirms awaited side by side. When the
    /// broker closes the channel for one publish (a missing exchange: 404), that publish
    /// fails and the others it had unconfirmed are published again on a fresh channel;
    /// those may arrive twice, under the same message id.
    pub fn shared(link: Arc<Link>, confirm_timeout: Duration) -> Publisher {
        Publisher {
            shared: true,
            ..Publisher::new(link, confirm_timeout)
        }
    }

    /// Whether the broker connection behind this publisher is up right now.
    pub fn connected(&self) -> bool {
        self.link.current().is_some()
    }

    /// The publishing link this publisher takes its channels from.
    pub fn link(&self) -> &Arc<Link> {
        &self.link
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

    fn confirm_timeout_error(&self) -> DeliveryError {
        DeliveryError::ConfirmTimeout {
            broker: self.broker.clone(),
            timeout: self.confirm_timeout,
        }
    }

    /// The channel to publish on, with its connection (held for the publish). A channel on
    /// a connection the link has replaced is left to the publishes still using it; new
    /// ones go to a channel on the link's current connection.
    async fn channel(&self) -> Result<(Arc<OpenChannel>, Arc<Connection>), DeliveryError> {
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
                return Ok((Arc::clone(open), connection));
            }
        }
        let (connection, channel) = self.open().await?;
        let open = Arc::new(OpenChannel {
            channel,
            connection: Arc::downgrade(&connection),
            gate: Arc::new(Mutex::new(self.shared)),
            proven: Arc::new(AtomicBool::new(self.shared)),
            returns: Arc::default(),
        });
        *slot = Some(Arc::clone(&open));
        Ok((open, connection))
    }

    /// A new channel in confirm mode, with the owned topology declared on it.
    async fn open(&self) -> Result<(Arc<Connection>, Channel), DeliveryError> {
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
            Err(_) => return Err(self.confirm_timeout_error()),
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
            Ok(Ok(())) => Ok((connection, channel)),
            Ok(Err(e)) => Err(self.channel_error(e)),
            Err(_) => Err(self.confirm_timeout_error()),
        }
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
    /// send (see [`super::fit`]). Properties that still take a larger frame are refused
    /// unsent ([`DeliveryError::HeadersTooLarge`]): the broker would close the whole
    /// connection.
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
        // Sent before on a channel that closed: it may have arrived.
        let mut resent = false;
        loop {
            match self
                .publish_once((exchange, routing_key), body, &fit, deadline)
                .await
            {
                // Nothing of this publish reached the broker (its channel was closed under
                // it, by the broker for another publish on it or with the connection): a
                // fresh channel gives the broker's own answer for this message instead of
                // a stale "channel closed", and a failed attempt is not counted for
                // something that was never sent. On a shared channel, a publish whose
                // confirm was lost with the channel goes out again as well.
                Err(Unsent(_)) if Instant::now() < deadline => {}
                Err(Resend(_)) if Instant::now() < deadline => resent = true,
                // The connection the closed channel was on may be going down with it (a 504
                // after a 404) before the link notices: try again shortly, within the
                // deadline, rather than fail a message that may have arrived.
                Err(NoChannel(_)) if resent && Instant::now() < deadline => {
                    tokio::time::sleep(REOPEN_PAUSE).await;
                }
                Err(NoChannel(e)) if resent => {
                    return Err(DeliveryError::ConfirmLost {
                        broker: self.broker.clone(),
                        detail: e.to_string(),
                    });
                }
                other => return other.map_err(PublishFailure::into_error),
            }
        }
    }

    async fn publish_once(
        &self,
        (exchange, routing_key): (&str, &str),
        body: &[u8],
        fit: &impl Fn(u32) -> BasicProperties,
        deadline: Instant,
    ) -> Result<(), PublishFailure> {
        if let Some(reason) = self.link.blocked() {
            return Err(Failed(DeliveryError::Blocked {
                broker: self.broker.clone(),
                reason,
            }));
        }
        // Held until the confirm is in: a replaced connection is closed only after that.
        // Getting the channel is over in a moment but its future is large (a KiB): boxed,
        // it does not widen the state that every submission in flight keeps while it
        // waits for its confirm.
        let (open, connection) = Box::pin(self.acquire(deadline)).await?;
        let properties = self.fitted(&connection, fit)?;
        let proving = self.pass_gate(&open).await?;
        if !open.channel.status().connected() {
            self.discard(&open).await;
            return Err(Unsent(
                self.channel_error("the channel closed before the publish went out"),
            ));
        }
        // Only a shared channel carries publishes to several routes at once, where a return
        // can come back with another publish's confirm; its messages always have an id.
        let matched = properties
            .message_id()
            .as_ref()
            .filter(|_| self.shared)
            .map(|id| (id.to_string(), open.returns.enter()));
        let sent = self.send(
            &open.channel,
            (exchange, routing_key),
            body,
            properties,
            proving.is_some(),
        );
        let result = match tokio::time::timeout(self.confirm_timeout, sent).await {
            Err(_) => Err(self.confirm_timeout_error()),
            Ok(Err(failure)) => {
                self.discard(&open).await;
                return Err(failure);
            }
            Ok(Ok(confirmation)) => match matched {
                Some((id, entry)) => {
                    self.judge_matched(
                        &open.returns,
                        (id, entry),
                        confirmation,
                        exchange,
                        routing_key,
                    )
                    .await
                }
                None => self.judge(confirmation, exchange, routing_key),
            },
        };
        self.conclude(&open, proving, &result).await;
        drop(connection);
        result.map_err(Failed)
    }

    /// The channel for a publish and its connection. Getting it (waiting for the link, or
    /// behind other publishes waiting for it) ends at the publish's deadline: when a broker
    /// is down, the publishes queued for its channel fail together after one confirm
    /// timeout, not one after the other.
    async fn acquire(
        &self,
        deadline: Instant,
    ) -> Result<(Arc<OpenChannel>, Arc<Connection>), PublishFailure> {
        match tokio::time::timeout_at(deadline.into(), self.channel()).await {
            Ok(opened) => opened.map_err(NoChannel),
            Err(_) if self.link.current().is_none() => {
                Err(NoChannel(DeliveryError::NotConnected {
                    broker: self.broker.clone(),
                }))
            }
            Err(_) => Err(NoChannel(self.confirm_timeout_error())),
        }
    }

    /// The properties `fit` makes for `connection`'s frame size, persistent; refused when
    /// their content header still does not fit.
    fn fitted(
        &self,
        connection: &Connection,
        fit: &impl Fn(u32) -> BasicProperties,
    ) -> Result<BasicProperties, PublishFailure> {
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
        Ok(properties)
    }

    /// Waits for the proving gate of an unproven channel; the guard (held until the confirm)
    /// when this publish is the one that proves it.
    async fn pass_gate(
        &self,
        open: &OpenChannel,
    ) -> Result<Option<OwnedMutexGuard<bool>>, PublishFailure> {
        if open.proven.load(Ordering::Acquire) {
            return Ok(None);
        }
        let gate = tokio::time::timeout(self.confirm_timeout, open.gate.clone().lock_owned())
            .await
            .map_err(|_| Failed(self.confirm_timeout_error()))?;
        // Proven meanwhile: no need to hold the others back.
        Ok(if *gate { None } else { Some(gate) })
    }

    /// Sends the message and waits for the broker's answer to it.
    async fn send(
        &self,
        channel: &Channel,
        (exchange, routing_key): (&str, &str),
        body: &[u8],
        properties: BasicProperties,
        proving: bool,
    ) -> Result<Answer, PublishFailure> {
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        // Boxed for the same reason as `acquire`: lapin's publish future (a KiB) is done
        // once the frames are written; only the small confirm is awaited for long.
        let confirm = Box::pin(channel.basic_publish(
            ShortString::from(exchange),
            ShortString::from(routing_key),
            options,
            body,
            properties,
        ))
        .await
        // lapin answers a publish once all its frames are written: an error here means
        // the broker never got the whole message (the channel or connection closed
        // first), so it cannot have arrived.
        .map_err(|e| Unsent(self.channel_error(e)))?;
        confirm
            .await
            .map(Answer::from)
            .map_err(|e| self.confirm_failure(&e, exchange, proving))
    }

    /// What a confirm that never came means for this publish. The broker refused this very
    /// publish (a missing exchange: 404) when it was the only one in flight on the channel,
    /// or when the broker's reason names its exchange; on a shared channel, another
    /// exchange's refusal closed the channel under it and it goes out again; otherwise the
    /// channel or the connection went away after the message was sent: it may have arrived.
    fn confirm_failure(&self, e: &lapin::Error, exchange: &str, proving: bool) -> PublishFailure {
        let refusal = match e.kind() {
            lapin::ErrorKind::ProtocolError(amqp)
                if matches!(amqp.kind(), lapin::protocol::AMQPErrorKind::Soft(_)) =>
            {
                Some(amqp.get_message().as_str())
            }
            _ => None,
        };
        let names_this = refusal.is_some_and(|text| names_exchange(text, exchange));
        if (proving && refusal.is_some()) || (self.shared && names_this) {
            return Failed(self.channel_error(e));
        }
        let lost = DeliveryError::ConfirmLost {
            broker: self.broker.clone(),
            detail: e.to_string(),
        };
        if self.shared {
            Resend(lost)
        } else {
            Failed(lost)
        }
    }

    /// [`judge`](Self::judge) on a shared channel: the return, if any, is the one filed
    /// under this publish's message id, whichever confirm lapin gave it with. Waiting for it
    /// is bounded by the confirm timeout; past that, the publish counts as unconfirmed (it
    /// may have arrived) rather than delivered.
    async fn judge_matched(
        &self,
        returns: &ReturnBook,
        (id, entry): (String, Entry),
        answer: Answer,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), DeliveryError> {
        let (acked, carried) = match answer {
            Answer::Ack(returned) => (true, returned),
            Answer::Nack(returned) => (false, returned),
            Answer::NotRequested => {
                drop(entry);
                return Err(self.channel_error("channel is not in confirm mode"));
            }
        };
        let answered = entry.answered(&id, carried);
        let own = tokio::time::timeout(self.confirm_timeout, returns.own_return(answered, &id));
        let Ok(own) = own.await else {
            returns.forget(&id);
            return Err(self.confirm_timeout_error());
        };
        match (acked, own) {
            (true, None) => Ok(()),
            (true, Some(returned)) => Err(self.returned(exchange, routing_key, returned)),
            (false, _) => Err(DeliveryError::Nacked {
                broker: self.broker.clone(),
            }),
        }
    }

    fn returned(&self, exchange: &str, routing_key: &str, returned: Returned) -> DeliveryError {
        DeliveryError::Returned {
            broker: self.broker.clone(),
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            code: returned.code,
            text: returned.text,
        }
    }

    /// The broker's confirm as the publish's result.
    fn judge(
        &self,
        answer: Answer,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), DeliveryError> {
        match answer {
            Answer::Ack(None) => Ok(()),
            Answer::Ack(Some(carried)) => {
                Err(self.returned(exchange, routing_key, carried.returned))
            }
            Answer::Nack(_) => Err(DeliveryError::Nacked {
                broker: self.broker.clone(),
            }),
            Answer::NotRequested => Err(self.channel_error("channel is not in confirm mode")),
        }
    }

    /// Retires the channel after a failure that may recur on it, or marks it proven.
    async fn conclude(
        &self,
        open: &OpenChannel,
        proving: Option<OwnedMutexGuard<bool>>,
        result: &Result<(), DeliveryError>,
    ) {
        // A nacked channel is retired too: RabbitMQ 3.10 kept nacking every publish on a
        // channel opened while quorum queues were electing new leaders after a node died
        // (tests/cluster.rs stalled on it), and a fresh channel is cheap next to that.
        if matches!(
            result,
            Err(DeliveryError::Channel { .. }
                | DeliveryError::ConfirmTimeout { .. }
                | DeliveryError::Nacked { .. })
        ) {
            self.discard(open).await;
        } else if let Some(mut gate) = proving {
            // Confirmed, or returned with the channel still open: it works.
            *gate = true;
            open.proven.store(true, Ordering::Release);
        }
    }
}

/// Whether a broker's reason for closing a channel names `exchange` (RabbitMQ says
/// "NOT_FOUND - no exchange 'x' in vhost 'v'", "ACCESS_REFUSED - access to exchange 'x' …").
pub fn names_exchange(reason: &str, exchange: &str) -> bool {
    reason.contains(&format!("exchange '{exchange}'"))
}

/// Why [`Publisher::publish_once`] failed: whether the message may have reached the broker.
enum PublishFailure {
    /// Not sent whole: lapin refused it or dropped its frames before the last was written
    /// (the channel or connection had closed meanwhile).
    Unsent(DeliveryError),
    /// Sent on a shared channel that closed before its confirm, for another publish's sake
    /// or with the connection: it may have arrived, and goes out again.
    Resend(DeliveryError),
    /// No channel to publish on could be had: nothing of this attempt was sent.
    NoChannel(DeliveryError),
    Failed(DeliveryError),
}
use PublishFailure::{Failed, NoChannel, Resend, Unsent};

/// The broker's answer to a publish, a returned message reduced to what the gateway reads
/// of it. lapin's `Confirmation` carries the whole returned message inline (472 bytes),
/// which every publish awaiting its answer would otherwise hold.
enum Answer {
    Ack(Option<Carried>),
    Nack(Option<Carried>),
    NotRequested,
}

impl From<Confirmation> for Answer {
    fn from(confirmation: Confirmation) -> Answer {
        match confirmation {
            Confirmation::Ack(returned) => Answer::Ack(returned.as_ref().map(Carried::from)),
            Confirmation::Nack(returned) => Answer::Nack(returned.as_ref().map(Carried::from)),
            Confirmation::NotRequested => Answer::NotRequested,
        }
    }
}

/// How long a publish going out again waits before it asks for a channel once more.
const REOPEN_PAUSE: Duration = Duration::from_millis(50);

impl PublishFailure {
    fn into_error(self) -> DeliveryError {
        match self {
            Unsent(e) | Resend(e) | NoChannel(e) | Failed(e) => e,
        }
    }
}
