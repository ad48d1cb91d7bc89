//! Declares, for local set-ups and tests, the topology that platforms and back offices own in
//! production: each platform's ingress queue and status exchange (with a queue to read the
//! events from), each destination's exchange with a back-office queue, and the gateway's
//! dead-letter exchange and queue. The gateway itself declares only the dead-letter part.

use std::collections::HashMap;

use lapin::ExchangeKind;
use lapin::options::QueueBindOptions;
use lapin::types::FieldTable;

use crate::amqp::{self, ConnectError, Role};
use crate::config::Config;

/// The queue that receives a platform's status events in the local topology.
pub fn status_queue(platform_id: &str) -> String {
    format!("{platform_id}.status")
}

/// The queue a destination's back office reads in the local topology.
pub fn backoffice_queue(destination_id: &str) -> String {
    format!("backoffice.{destination_id}")
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("broker {broker}: {what}: {source}")]
    Declare {
        broker: String,
        what: String,
        source: lapin::Error,
    },
}

pub async fn declare(config: &Config) -> Result<(), TopologyError> {
    let mut channels = HashMap::new();
    let mut connections = Vec::new();
    for (index, broker) in config.brokers.iter().enumerate() {
        let connection = amqp::connect_any(broker, Role::Publish).await?;
        let channel =
            connection
                .create_channel()
                .await
                .map_err(|source| TopologyError::Declare {
                    broker: broker.name.clone(),
                    what: "open channel".into(),
                    source,
                })?;
        channels.insert(index, channel);
        connections.push(connection);
    }
    let failed = |broker: usize, what: String| {
        let broker = config.broker(broker).name.clone();
        move |source| TopologyError::Declare {
            broker,
            what,
            source,
        }
    };
    for p in &config.platforms {
        let ch = &channels[&p.broker];
        amqp::declare_queue(ch, &p.ingress_queue)
            .await
            .map_err(failed(p.broker, format!("queue {}", p.ingress_queue)))?;
        amqp::declare_exchange(ch, &p.status_exchange, ExchangeKind::Topic)
            .await
            .map_err(failed(p.broker, format!("exchange {}", p.status_exchange)))?;
        let queue = status_queue(&p.id);
        amqp::declare_queue(ch, &queue)
            .await
            .map_err(failed(p.broker, format!("queue {queue}")))?;
        ch.queue_bind(
            queue.as_str().into(),
            p.status_exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(failed(p.broker, format!("binding {queue}")))?;
    }
    for d in &config.destinations {
        let ch = &channels[&d.broker];
        if let Some(queue) = &d.receipt_queue {
            amqp::declare_queue(ch, queue)
                .await
                .map_err(failed(d.broker, format!("queue {queue}")))?;
        }
        if d.exchange.is_empty() {
            amqp::declare_queue(ch, &d.routing_key)
                .await
                .map_err(failed(d.broker, format!("queue {}", d.routing_key)))?;
            continue;
        }
        amqp::declare_exchange(ch, &d.exchange, ExchangeKind::Direct)
            .await
            .map_err(failed(d.broker, format!("exchange {}", d.exchange)))?;
        let queue = backoffice_queue(&d.id);
        amqp::declare_queue(ch, &queue)
            .await
            .map_err(failed(d.broker, format!("queue {queue}")))?;
        ch.queue_bind(
            queue.as_str().into(),
            d.exchange.as_str().into(),
            d.routing_key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(failed(d.broker, format!("binding {queue}")))?;
    }
    let g = &config.gateway;
    amqp::declare_dead_letter(
        &channels[&g.dead_letter_broker],
        &g.dead_letter_exchange,
        &g.dead_letter_queue,
    )
    .await
    .map_err(failed(
        g.dead_letter_broker,
        format!("dead-letter exchange {}", g.dead_letter_exchange),
    ))?;
    for connection in connections {
        let _ = connection.close(200, "topology declared".into()).await;
    }
    Ok(())
}
