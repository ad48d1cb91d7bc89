//! Start-up, the consumer loops and shutdown: the only code that knows the whole graph.
//!
//! `run(config, shutdown)` takes the stop signal as a parameter, so tests run the real
//! gateway in-process and stop it at will; the binary passes SIGTERM/SIGINT.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, Consumer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::amqp::{self, ConnectError, Publisher, Role};
use crate::config::{BrokerIndex, Config};
use crate::pipeline::Gateway;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(
        "broker {broker}: cannot declare the dead-letter exchange {exchange:?} and queue {queue:?}: {source}"
    )]
    DeadLetterTopology {
        broker: String,
        exchange: String,
        queue: String,
        source: lapin::Error,
    },
    #[error(
        "platform {platform}: ingress queue {queue:?} is not there on broker {broker}: {source}"
    )]
    MissingQueue {
        platform: String,
        queue: String,
        broker: String,
        source: lapin::Error,
    },
    #[error("platform {platform}: cannot subscribe to {queue:?}: {source}")]
    Subscribe {
        platform: String,
        queue: String,
        source: lapin::Error,
    },
    #[error("platform {platform}: consumer stopped: {detail}")]
    ConsumerLost { platform: String, detail: String },
}

struct Connections {
    consume: HashMap<BrokerIndex, Connection>,
    publish: HashMap<BrokerIndex, Arc<Connection>>,
}

impl Connections {
    async fn open(config: &Config) -> Result<Connections, ConnectError> {
        let mut consume = HashMap::new();
        let mut publish = HashMap::new();
        for p in &config.platforms {
            if let std::collections::hash_map::Entry::Vacant(slot) = consume.entry(p.broker) {
                slot.insert(amqp::connect(config.broker(p.broker), Role::Consume).await?);
            }
        }
        let publishing = config
            .destinations
            .iter()
            .map(|d| d.broker)
            .chain(config.platforms.iter().map(|p| p.broker))
            .chain([config.gateway.dead_letter_broker]);
        for b in publishing {
            if let std::collections::hash_map::Entry::Vacant(slot) = publish.entry(b) {
                slot.insert(Arc::new(
                    amqp::connect(config.broker(b), Role::Publish).await?,
                ));
            }
        }
        Ok(Connections { consume, publish })
    }

    fn publisher(&self, config: &Config, broker: BrokerIndex) -> Publisher {
        // Every publishing broker was connected in `open`.
        let connection = self.publish[&broker].clone();
        Publisher::new(
            &config.broker(broker).name,
            connection,
            config.gateway.confirm_timeout,
        )
    }

    async fn close(&self) {
        for connection in self
            .consume
            .values()
            .chain(self.publish.values().map(|c| c.as_ref()))
        {
            let _ = connection
                .close(200, "ozg-gateway shutting down".into())
                .await;
        }
    }
}

/// Runs the gateway until `shutdown` completes or a consumer is lost.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let config = Arc::new(config);
    let connections = Connections::open(&config).await?;
    let result = serve(&config, &connections, shutdown).await;
    connections.close().await;
    result
}

async fn serve(
    config: &Arc<Config>,
    connections: &Connections,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let g = &config.gateway;
    let dl_broker = &config.broker(g.dead_letter_broker).name;
    let topology_error = |source| RunError::DeadLetterTopology {
        broker: dl_broker.clone(),
        exchange: g.dead_letter_exchange.clone(),
        queue: g.dead_letter_queue.clone(),
        source,
    };
    let channel = connections.publish[&g.dead_letter_broker]
        .create_channel()
        .await
        .map_err(topology_error)?;
    amqp::declare_dead_letter(&channel, &g.dead_letter_exchange, &g.dead_letter_queue)
        .await
        .map_err(topology_error)?;
    let _ = channel.close(200, "declared".into()).await;

    let gateway = Arc::new(Gateway::new(
        config.clone(),
        config
            .destinations
            .iter()
            .map(|d| connections.publisher(config, d.broker))
            .collect(),
        config
            .platforms
            .iter()
            .map(|p| connections.publisher(config, p.broker))
            .collect(),
        connections.publisher(config, g.dead_letter_broker),
    ));

    let mut consumers = Vec::with_capacity(config.platforms.len());
    for (index, p) in config.platforms.iter().enumerate() {
        let connection = &connections.consume[&p.broker];
        let missing = |source| RunError::MissingQueue {
            platform: p.id.clone(),
            queue: p.ingress_queue.clone(),
            broker: config.broker(p.broker).name.clone(),
            source,
        };
        let subscribe = |source| RunError::Subscribe {
            platform: p.id.clone(),
            queue: p.ingress_queue.clone(),
            source,
        };
        let channel = connection.create_channel().await.map_err(subscribe)?;
        // Passive: the platform owns its queue; a missing one is a configuration error the
        // operator must see at start, not a queue the gateway silently invents.
        channel
            .queue_declare(
                p.ingress_queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(missing)?;
        channel
            .basic_qos(p.prefetch, BasicQosOptions::default())
            .await
            .map_err(subscribe)?;
        let consumer = channel
            .basic_consume(
                p.ingress_queue.as_str().into(),
                format!("ozg-gateway {}", p.id).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(subscribe)?;
        tracing::info!(platform = %p.id, queue = %p.ingress_queue, prefetch = p.prefetch, "consuming");
        consumers.push((index, channel, consumer));
    }

    let stop = CancellationToken::new();
    let in_flight = TaskTracker::new();
    let mut loops = tokio::task::JoinSet::new();
    let mut channels = Vec::new();
    for (index, channel, consumer) in consumers {
        channels.push((channel, consumer.tag()));
        loops.spawn(consume(
            gateway.clone(),
            index,
            consumer,
            in_flight.clone(),
            stop.clone(),
        ));
    }
    tracing::info!(
        platforms = config.platforms.len(),
        destinations = config.destinations.len(),
        routes = config.routes.len(),
        "ozg-gateway ready"
    );

    let mut result = Ok(());
    tokio::select! {
        () = shutdown => tracing::info!("shutdown requested"),
        Some(ended) = loops.join_next() => {
            result = match ended {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Ok(()),
                Err(e) => Err(RunError::ConsumerLost { platform: "?".into(), detail: e.to_string() }),
            };
        }
    }

    // Stop taking new work, let in-flight submissions finish (bounded), then return; the
    // caller closes the connections, which hands anything unacked back to the broker.
    stop.cancel();
    for (channel, tag) in &channels {
        let _ = channel
            .basic_cancel(tag.clone(), BasicCancelOptions::default())
            .await;
    }
    while loops.join_next().await.is_some() {}
    in_flight.close();
    if tokio::time::timeout(g.shutdown_grace, in_flight.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?g.shutdown_grace,
            in_flight = in_flight.len(),
            "shutdown grace period over; unfinished submissions stay unacked and will be redelivered"
        );
    }
    result
}

async fn consume(
    gateway: Arc<Gateway>,
    platform: usize,
    mut consumer: Consumer,
    in_flight: TaskTracker,
    stop: CancellationToken,
) -> Result<(), RunError> {
    loop {
        let next = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(()),
            next = consumer.next() => next,
        };
        match next {
            Some(Ok(delivery)) => {
                let gateway = gateway.clone();
                in_flight.spawn(async move { gateway.process(platform, delivery).await });
            }
            Some(Err(e)) => {
                return Err(RunError::ConsumerLost {
                    platform: gateway.platform_id(platform).to_owned(),
                    detail: e.to_string(),
                });
            }
            None => {
                return Err(RunError::ConsumerLost {
                    platform: gateway.platform_id(platform).to_owned(),
                    detail: "the broker cancelled the consumer".into(),
                });
            }
        }
    }
}
