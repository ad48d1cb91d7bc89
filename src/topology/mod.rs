//! One description of every queue, exchange and binding the gateway's world needs, with
//! their arguments: what the gateway owns and declares itself (dead-letter exchange and
//! queue, retry exchange with ready and delay queues, replay queue), and the stand-ins for
//! what platforms and back offices own in production (ingress queues, status exchanges with
//! a queue to read events from, destination exchanges with back-office queues, receipt
//! queues).
//!
//! Everything that declares reads it: the gateway's own declarations
//! ([`crate::amqp::OwnedTopology`]), `declare-topology` ([`crate::amqp::declare`]) and the RabbitMQ
//! definitions export ([`definitions`], `ozg-gateway definitions`). A queue's arguments are
//! written down once, so an imported definitions file cannot drift from what the gateway
//! declares (a drift would be a PRECONDITION_FAILED on the gateway's next channel).

pub mod definitions;

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use crate::config::Config;
use crate::model::{Destination, Platform};

/// Routing key from the retry exchange to the ready queue.
const RETRY_READY_KEY: &str = "ready";

/// The queue that receives a platform's status events in the local topology.
pub fn status_queue(platform_id: &str) -> String {
    format!("{platform_id}.status")
}

/// The queue a destination's back office reads in the local topology.
pub fn backoffice_queue(destination_id: &str) -> String {
    format!("backoffice.{destination_id}")
}

/// Exchange through which expired retries come back to the gateway.
const RETRY_EXCHANGE: &str = "ozg.gateway.retry";
/// Queue the gateway consumes retries from, once their delay is over.
pub const RETRY_READY_QUEUE: &str = "ozg.gateway.retry.ready";
/// Queue of dead letters an operator replayed; the gateway consumes it like a platform's.
pub const REPLAY_QUEUE: &str = "ozg.gateway.replay";

/// The delay queue for one delay; named by the delay so that changing the configured delays
/// adds queues instead of clashing with the arguments of existing ones.
pub fn retry_wait_queue(delay: Duration) -> String {
    format!("ozg.gateway.retry.wait-{}ms", delay.as_millis())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExchangeType {
    Direct,
    Topic,
}

impl ExchangeType {
    pub fn name(self) -> &'static str {
        match self {
            ExchangeType::Direct => "direct",
            ExchangeType::Topic => "topic",
        }
    }

    fn kind(self) -> ExchangeKind {
        match self {
            ExchangeType::Direct => ExchangeKind::Direct,
            ExchangeType::Topic => ExchangeKind::Topic,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QueueType {
    /// Declared without `x-queue-type`, as platforms' and back offices' stand-ins always were.
    Classic,
    Quorum,
}

impl QueueType {
    pub fn name(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

/// A queue argument's (or policy's) value: the few AMQP field types the topology uses;
/// in JSON a string or a number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(untagged)]
pub enum Argument {
    Text(String),
    Integer(i64),
}

impl Argument {
    fn amqp(&self) -> AMQPValue {
        match self {
            Argument::Text(s) => AMQPValue::LongString(LongString::from(s.clone())),
            Argument::Integer(i) => AMQPValue::LongLongInt(*i),
        }
    }

    fn text(value: &str) -> Argument {
        Argument::Text(value.to_owned())
    }
}

/// A durable exchange without arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub name: String,
    pub kind: ExchangeType,
}

/// A durable, non-exclusive queue that is never deleted automatically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub name: String,
    pub kind: QueueType,
    /// Optional arguments other than `x-queue-type` (which [`Queue::arguments`] adds).
    pub extra: BTreeMap<&'static str, Argument>,
}

impl Queue {
    /// The stand-ins' queue type, and the benchmark's plain queue for the shovel.
    pub fn classic(name: &str) -> Queue {
        Queue {
            name: name.to_owned(),
            kind: QueueType::Classic,
            extra: BTreeMap::new(),
        }
    }

    /// Every queue the gateway owns is a quorum queue: replicated on a cluster, confirmed
    /// dead-lettering, and a dead letter or a waiting retry is the last copy of a submission.
    fn quorum(name: &str) -> Queue {
        Queue {
            kind: QueueType::Quorum,
            ..Queue::classic(name)
        }
    }

    /// The queue's arguments as declared, `x-queue-type` included for non-classic queues.
    pub fn arguments(&self) -> BTreeMap<&'static str, Argument> {
        let mut arguments = self.extra.clone();
        if self.kind != QueueType::Classic {
            arguments.insert("x-queue-type", Argument::text(self.kind.name()));
        }
        arguments
    }

    fn field_table(&self) -> FieldTable {
        let mut table = FieldTable::default();
        for (key, value) in self.arguments() {
            table.insert(key.into(), value.amqp());
        }
        table
    }
}

/// A queue bound to an exchange with a routing key, without arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub exchange: String,
    pub queue: String,
    pub routing_key: String,
}

/// Exchanges, queues and bindings to declare on one broker, in that order. Identical
/// entries are kept once; two different entries under one name are both kept, so that
/// declaring reports the broker's PRECONDITION_FAILED and [`Declarations::conflicts`] names
/// them before anything is sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declarations {
    pub exchanges: Vec<Exchange>,
    pub queues: Vec<Queue>,
    pub bindings: Vec<Binding>,
}

/// A declaration the broker refused, and which one.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct DeclareError {
    pub what: String,
    pub source: lapin::Error,
}

fn push_once<T: PartialEq>(items: &mut Vec<T>, item: T) {
    if !items.contains(&item) {
        items.push(item);
    }
}

impl Declarations {
    fn exchange(&mut self, name: &str, kind: ExchangeType) {
        push_once(
            &mut self.exchanges,
            Exchange {
                name: name.to_owned(),
                kind,
            },
        );
    }

    fn queue(&mut self, queue: Queue) {
        push_once(&mut self.queues, queue);
    }

    fn bind(&mut self, queue: &str, exchange: &str, routing_key: &str) {
        push_once(
            &mut self.bindings,
            Binding {
                exchange: exchange.to_owned(),
                queue: queue.to_owned(),
                routing_key: routing_key.to_owned(),
            },
        );
    }

    pub fn extend(&mut self, other: Declarations) {
        for e in other.exchanges {
            push_once(&mut self.exchanges, e);
        }
        for q in other.queues {
            push_once(&mut self.queues, q);
        }
        for b in other.bindings {
            push_once(&mut self.bindings, b);
        }
    }

    /// Names declared twice with different types or arguments.
    pub fn conflicts(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, e) in self.exchanges.iter().enumerate() {
            if let Some(other) = self.exchanges[..i].iter().find(|o| o.name == e.name) {
                out.push(format!(
                    "exchange {:?} is declared both as {} and as {}",
                    e.name,
                    other.kind.name(),
                    e.kind.name()
                ));
            }
        }
        for (i, q) in self.queues.iter().enumerate() {
            if self.queues[..i].iter().any(|o| o.name == q.name) {
                out.push(format!(
                    "queue {:?} is declared twice with different types or arguments",
                    q.name
                ));
            }
        }
        out
    }

    /// Declares everything on `channel`: exchanges, then queues, then bindings.
    pub async fn declare(&self, channel: &Channel) -> Result<(), DeclareError> {
        let durable = || ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for e in &self.exchanges {
            channel
                .exchange_declare(
                    e.name.as_str().into(),
                    e.kind.kind(),
                    durable(),
                    FieldTable::default(),
                )
                .await
                .map_err(|source| DeclareError {
                    what: format!("exchange {}", e.name),
                    source,
                })?;
        }
        for q in &self.queues {
            channel
                .queue_declare(
                    q.name.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    q.field_table(),
                )
                .await
                .map_err(|source| DeclareError {
                    what: format!("queue {}", q.name),
                    source,
                })?;
        }
        for b in &self.bindings {
            channel
                .queue_bind(
                    b.queue.as_str().into(),
                    b.exchange.as_str().into(),
                    b.routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|source| DeclareError {
                    what: format!("binding {} → {}", b.exchange, b.queue),
                    source,
                })?;
        }
        Ok(())
    }
}

/// The dead-letter exchange (topic, routing key = reason code) and its queue, bound with `#`.
pub fn dead_letter(exchange: &str, queue: &str) -> Declarations {
    let mut d = Declarations::default();
    d.exchange(exchange, ExchangeType::Topic);
    d.queue(Queue::quorum(queue));
    d.bind(queue, exchange, "#");
    d
}

/// The retry topology: one delay queue per delay whose messages expire after that delay
/// into the retry exchange, and the ready queue bound to it. Each delay queue holds one
/// delay only, so expiry happens in arrival order and nothing waits behind a longer delay.
/// `at-least-once` dead-lettering (quorum queues only; it needs `reject-publish`), because
/// dead-lettering without confirms can lose messages.
pub fn retry(delays: &[Duration]) -> Declarations {
    let mut d = Declarations::default();
    d.exchange(RETRY_EXCHANGE, ExchangeType::Direct);
    d.queue(Queue::quorum(RETRY_READY_QUEUE));
    d.bind(RETRY_READY_QUEUE, RETRY_EXCHANGE, RETRY_READY_KEY);
    for delay in delays {
        let mut queue = Queue::quorum(&retry_wait_queue(*delay));
        let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        queue.extra = BTreeMap::from([
            ("x-message-ttl", Argument::Integer(ttl)),
            ("x-dead-letter-exchange", Argument::text(RETRY_EXCHANGE)),
            ("x-dead-letter-routing-key", Argument::text(RETRY_READY_KEY)),
            ("x-dead-letter-strategy", Argument::text("at-least-once")),
            ("x-overflow", Argument::text("reject-publish")),
        ]);
        d.queue(queue);
    }
    d
}

/// The queue replayed dead letters wait in (published to it through the default exchange):
/// a replayed submission must survive a broker restart as surely as it did in the store.
pub fn replay() -> Declarations {
    let mut d = Declarations::default();
    d.queue(Queue::quorum(REPLAY_QUEUE));
    d
}

/// Everything the gateway declares itself, on its own broker.
fn gateway_owned(config: &Config) -> Declarations {
    let g = &config.gateway;
    let mut d = dead_letter(&g.dead_letter_exchange, &g.dead_letter_queue);
    d.extend(retry(&config.retry.delays));
    d.extend(replay());
    d
}

/// Stand-ins for a platform's own topology: its ingress queue, its status exchange and a
/// queue bound to it with `#` to read the events from.
fn platform_stand_in(p: &Platform) -> Declarations {
    let mut d = Declarations::default();
    d.queue(Queue::classic(&p.ingress_queue));
    d.exchange(&p.status_exchange, ExchangeType::Topic);
    let queue = status_queue(&p.id);
    d.queue(Queue::classic(&queue));
    d.bind(&queue, &p.status_exchange, "#");
    d
}

/// Stand-ins for a back office's own topology: its exchange with a back-office queue bound
/// by the destination's routing key (or, on the default exchange, the queue itself), and
/// its receipt queue.
fn destination_stand_in(dest: &Destination) -> Declarations {
    let mut d = Declarations::default();
    if dest.exchange.is_empty() {
        d.queue(Queue::classic(&dest.routing_key));
    } else {
        d.exchange(&dest.exchange, ExchangeType::Direct);
        let queue = backoffice_queue(&dest.id);
        d.queue(Queue::classic(&queue));
        d.bind(&queue, &dest.exchange, &dest.routing_key);
    }
    if let Some(queue) = &dest.receipt_queue {
        d.queue(Queue::classic(queue));
    }
    d
}

/// The whole topology of a configuration, per broker (indexed like `config.brokers`): the
/// stand-ins on each platform's and destination's broker, the gateway's own part on its
/// broker.
pub fn by_broker(config: &Config) -> Vec<Declarations> {
    let mut out = vec![Declarations::default(); config.brokers.len()];
    for p in &config.platforms {
        out[p.broker].extend(platform_stand_in(p));
    }
    for d in &config.destinations {
        out[d.broker].extend(destination_stand_in(d));
    }
    out[config.gateway.dead_letter_broker].extend(gateway_owned(config));
    out
}
