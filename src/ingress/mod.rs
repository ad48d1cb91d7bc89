//! The gateway's consumers: platforms' ingress queues and its own retry and replay queues
//! (this module), the dead-letter intake ([`dead_letters`]) and back offices' receipts
//! ([`receipts`]). Each settles what it takes through [`crate::pipeline::settle`].

pub mod dead_letters;
pub mod receipts;
mod window;

pub use window::Window;

use std::sync::Arc;

use futures_util::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::activity::ConsumerState;
use crate::amqp::link::{self, Link};
use crate::amqp::{CLOSE_TIMEOUT, OwnedTopology};
use crate::pipeline::{AckOrder, Pipeline, Source};
use crate::store;
use crate::telemetry::{ConsumerLabels, Metrics};

/// A queue the gateway consumes: a platform's ingress queue, or its own retry queue.
#[derive(Clone)]
pub struct Ingress {
    pub source: Source,
    /// For logs: the platform id, or "retry".
    pub name: String,
    pub queue: String,
    /// The most it takes unacked; fewer when its window says so.
    pub prefetch: u16,
    /// Its share of `gateway.in_flight_bytes`, for its [`Window`].
    pub window_bytes: usize,
    /// The gateway's own queues are declared before subscribing; platforms' queues are only
    /// checked (passively): a missing one is an error the operator must see, not a queue
    /// the gateway silently invents.
    pub owned: Option<OwnedTopology>,
}

/// Keeps one consumer subscribed: waits for its broker link, subscribes, pumps deliveries
/// into the pipeline, and after a lost channel or connection starts over. A platform's
/// consumer also follows the operator's pause switch.
pub async fn consume(
    gateway: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    ingress: Ingress,
    link: Arc<Link>,
    in_flight: TaskTracker,
    stop: CancellationToken,
) {
    let up = up_gauge(&metrics, &ingress);
    let platform = match ingress.source {
        Source::Platform(i) => Some(gateway.activity().platform(i)),
        Source::Retry | Source::Replay => None,
    };
    let set_state = |state: ConsumerState| {
        if let Some(p) = platform {
            p.set_state(state);
        }
    };
    let mut paused = platform.map(|p| p.watch_paused());
    let mut window = Window::new(ingress.window_bytes, ingress.prefetch);
    let mut attempt = 0u32;
    // A resize replaces a subscription at once: the consumer counts as up throughout.
    let mut resizing = false;
    loop {
        if !resizing {
            up.set(0);
            set_state(ConsumerState::Connecting);
        }
        resizing = false;
        if let Some(paused) = paused.as_mut()
            && *paused.borrow_and_update()
        {
            set_state(ConsumerState::Paused);
            if !resumed(paused, &ingress.name, &stop).await {
                return;
            }
            set_state(ConsumerState::Connecting);
        }
        let prefetch = window.prefetch();
        match subscribe(&link, &ingress, prefetch, &stop).await {
            Err(link::ChannelError::Stopped { .. }) => return,
            Ok(subscription) => {
                attempt = 0;
                up.set(1);
                set_state(ConsumerState::Consuming);
                tracing::info!(ingress = %ingress.name, queue = %ingress.queue,
                    prefetch, "consuming");
                let mut taking = Taking {
                    gateway: &gateway,
                    ingress: &ingress,
                    in_flight: &in_flight,
                    stop: &stop,
                    window: &mut window,
                    prefetch,
                };
                match taking.run(subscription, paused.as_mut()).await {
                    Next::Return => return,
                    Next::Resume => continue,
                    Next::Resize => {
                        resizing = true;
                        continue;
                    }
                    Next::Resubscribe => {}
                }
            }
            Err(e) => {
                tracing::error!(ingress = %ingress.name, queue = %ingress.queue,
                    broker = %link.broker(), error = %e, "cannot subscribe; retrying");
            }
        }
        set_state(ConsumerState::Connecting);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(link::backoff(attempt)) => {}
        }
    }
}

/// The consumer's `consumer_up` gauge.
fn up_gauge(metrics: &Metrics, ingress: &Ingress) -> prometheus_client::metrics::gauge::Gauge {
    let (consumer, platform_id) = match ingress.source {
        Source::Platform(_) => ("ingress", ingress.name.as_str()),
        Source::Retry => ("retry", ""),
        Source::Replay => ("replay", ""),
    };
    metrics
        .consumer_up
        .get_or_create(&ConsumerLabels {
            consumer: consumer.to_owned(),
            platform: platform_id.to_owned(),
        })
        .clone()
}

/// Waits until an operator resumes the platform; false when told to stop first.
async fn resumed(
    paused: &mut tokio::sync::watch::Receiver<bool>,
    name: &str,
    stop: &CancellationToken,
) -> bool {
    tracing::info!(ingress = %name, "paused by an operator");
    tokio::select! {
        () = stop.cancelled() => return false,
        _ = paused.wait_for(|p| !*p) => {}
    }
    tracing::info!(ingress = %name, "resumed by an operator");
    true
}

/// One subscription: the connection it holds (a link that replaced it closes it only once
/// this consumer is done with it), its channel and its consumer.
type Subscription = (Arc<Connection>, Channel, Consumer);

/// What one subscription takes deliveries for.
struct Taking<'a> {
    gateway: &'a Arc<Pipeline>,
    ingress: &'a Ingress,
    in_flight: &'a TaskTracker,
    stop: &'a CancellationToken,
    window: &'a mut Window,
    /// What this subscription was made with.
    prefetch: u16,
}

impl Taking<'_> {
    /// Pumps one subscription's deliveries into the pipeline until it ends, then winds it
    /// down: cancel, process what the broker had sent, close the channel once every batch
    /// has settled.
    async fn run(
        &mut self,
        (connection, channel, consumer): Subscription,
        paused: Option<&mut tokio::sync::watch::Receiver<bool>>,
    ) -> Next {
        let tag = consumer.tag();
        // This subscription's own deliveries: its channel stays open until they are
        // settled, since their acks travel on it.
        let subscription = TaskTracker::new();
        let mut order = AckOrder::default();
        let mut spawn = |batch: Vec<lapin::message::Delivery>| {
            let gateway = self.gateway.clone();
            let source = self.ingress.source;
            let turn = order.next_turn();
            self.in_flight.spawn(subscription.track_future(async move {
                gateway.process_batch(source, batch, turn).await;
            }));
        };
        let store = self.gateway.store_health().clone();
        let window = Held {
            window: self.window,
            prefetch: self.prefetch,
        };
        let ended = pump(consumer, &mut spawn, self.stop, paused, &store, window).await;
        let (consumer, next) = match ended {
            Ended::Stopped(consumer) => (Some(consumer), Next::Return),
            Ended::Paused(consumer) => (Some(consumer), Next::Resume),
            Ended::Resized(consumer) => {
                tracing::info!(ingress = %self.ingress.name, from = self.prefetch,
                    to = self.window.prefetch(), "in-flight window resized; resubscribing");
                (Some(consumer), Next::Resize)
            }
            Ended::Lost(reason) => {
                tracing::warn!(ingress = %self.ingress.name, error = %reason,
                    "consumer lost; resubscribing");
                (None, Next::Resubscribe)
            }
        };
        if let Some(mut consumer) = consumer {
            // Bounded: on a broken connection the cancel may never be answered.
            let cancel = channel.basic_cancel(tag, BasicCancelOptions::default());
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, cancel).await;
            // Deliveries the broker sent before the cancel took effect are processed like
            // any other, not left unacked on a forgotten channel.
            let drain = async {
                while let Some(Ok(delivery)) = consumer.next().await {
                    spawn(vec![delivery]);
                }
            };
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
        }
        subscription.close();
        // The channel stays open until every batch of this subscription has sent its acks
        // on it (closing it earlier hands settled deliveries back to the broker, to be
        // settled a second time). Tracked in `in_flight`: a shutdown waits for it within
        // its grace period, then closes the connections anyway.
        self.in_flight.spawn(async move {
            subscription.wait().await;
            let close = channel.close(200, "subscription ended".into());
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
            drop(connection);
        });
        next
    }
}

/// Why [`pump`] returned. A consumer handed back is cancelled and drained.
enum Ended {
    /// The gateway is stopping.
    Stopped(Consumer),
    /// An operator paused the platform.
    Paused(Consumer),
    /// The window wants another prefetch.
    Resized(Consumer),
    Lost(String),
}

/// What the consumer loop does once a subscription is wound down.
enum Next {
    Return,
    Resume,
    /// At once, with the window's prefetch.
    Resize,
    Resubscribe,
}

async fn subscribe(
    link: &Link,
    ingress: &Ingress,
    prefetch: u16,
    stop: &CancellationToken,
) -> Result<Subscription, link::ChannelError> {
    let (connection, channel) = link.open_channel(stop).await?;
    match &ingress.owned {
        Some(owned) => owned.declare(&channel).await?,
        None => {
            channel
                .queue_declare(
                    ingress.queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
        }
    }
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            ingress.queue.as_str().into(),
            format!("ozg-gateway {}", ingress.name).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((connection, channel, consumer))
}

/// Deliveries handed to the pipeline together at most: a batch shares its store round
/// trips and settles with one ack, and several batches of one consumer are in flight at
/// once (up to the prefetch), so that the broker is never left waiting for a whole batch.
const MAX_BATCH: usize = 64;

/// A batch smaller than this waits up to [`COMPANY_WAIT`] for more deliveries: at moderate
/// load submissions then share a batch's ack and store round trips, as they do when a
/// backlog drains, for a millisecond of latency.
const SMALL_BATCH: usize = 8;
const COMPANY_WAIT: std::time::Duration = std::time::Duration::from_millis(1);

/// A subscription's window and the prefetch it was made with.
struct Held<'a> {
    window: &'a mut Window,
    prefetch: u16,
}

/// Hands deliveries to the pipeline in batches until told to stop or pause, the window
/// wants another prefetch, or the consumer ends. A batch is what the broker has already
/// sent when the first of it is taken; a small one waits at most [`COMPANY_WAIT`] for more.
/// Nothing is taken while the store does not answer: what the broker sent meanwhile waits,
/// unacked, within the prefetch.
async fn pump(
    mut consumer: Consumer,
    spawn: &mut impl FnMut(Vec<lapin::message::Delivery>),
    stop: &CancellationToken,
    mut paused: Option<&mut tokio::sync::watch::Receiver<bool>>,
    store: &store::StoreHealth,
    held: Held<'_>,
) -> Ended {
    loop {
        let pause = async {
            match paused.as_mut() {
                Some(p) => {
                    let _ = p.wait_for(|p| *p).await;
                }
                None => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            biased;
            () = stop.cancelled() => return Ended::Stopped(consumer),
            () = pause => return Ended::Paused(consumer),
            next = async {
                store.wait_up().await;
                consumer.next().await
            } => next,
        };
        let first = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(e)) => return Ended::Lost(e.to_string()),
            None => return Ended::Lost("the broker cancelled the consumer".to_owned()),
        };
        // The store may have failed while this waited for the delivery: held until it
        // answers. Never dropped: what the broker had already sent is processed on stop and
        // a later batch's `multiple` ack would cover a dropped delivery, so on stop it goes
        // into the pipeline like the rest (which hands it back while the store fails).
        if !store.is_up() {
            tokio::select! {
                biased;
                () = stop.cancelled() => {
                    spawn(vec![first]);
                    return Ended::Stopped(consumer);
                }
                () = store.wait_up() => {}
            }
        }
        let mut batch = Vec::with_capacity(MAX_BATCH);
        batch.push(first);
        let mut ended = take_sent(&mut consumer, &mut batch);
        if ended.is_none() && batch.len() < SMALL_BATCH {
            let company = tokio::time::Instant::now() + COMPANY_WAIT;
            while ended.is_none() && batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(company, consumer.next()).await {
                    Err(_) => break,
                    Ok(next) => {
                        ended = added(next, &mut batch);
                        if ended.is_none() {
                            ended = take_sent(&mut consumer, &mut batch);
                        }
                    }
                }
            }
        }
        for delivery in &batch {
            held.window.saw(delivery.data.len());
        }
        spawn(batch);
        if let Some(ended) = ended {
            return ended;
        }
        if held.window.moved(held.prefetch) {
            return Ended::Resized(consumer);
        }
    }
}

/// Adds what the broker has already sent to `batch`, up to [`MAX_BATCH`], without waiting;
/// how the consumer ended, if it did.
fn take_sent(consumer: &mut Consumer, batch: &mut Vec<lapin::message::Delivery>) -> Option<Ended> {
    use futures_util::FutureExt;
    while batch.len() < MAX_BATCH {
        let next = consumer.next().now_or_never()?;
        if let Some(ended) = added(next, batch) {
            return Some(ended);
        }
    }
    None
}

/// Adds one item of the consumer's stream to `batch`, or says how the consumer ended.
fn added(
    next: Option<lapin::Result<lapin::message::Delivery>>,
    batch: &mut Vec<lapin::message::Delivery>,
) -> Option<Ended> {
    match next {
        Some(Ok(delivery)) => {
            batch.push(delivery);
            None
        }
        Some(Err(e)) => Some(Ended::Lost(e.to_string())),
        None => Some(Ended::Lost("the broker cancelled the consumer".to_owned())),
    }
}
