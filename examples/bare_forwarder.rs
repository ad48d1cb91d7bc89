//! The floor for `deploy/bench/run.sh`: a bare lapin forwarder with no routing at all.
//!
//! Consumes `SRC` and publishes each body unchanged to `DST` (default exchange, persistent,
//! confirms pipelined), acking the source with `multiple` once a run of confirms is in,
//! as ../shared/docs/rabbitmq.md describes the fastest lapin forwarder. It tells what lapin
//! and the broker cost per message before the gateway does any work of its own.
//!
//! Two options add the rest of the broker work the gateway must do per submission, and
//! nothing else:
//! - `--status QUEUE`: once a message's confirm is in, publish a small persistent status
//!   message to `QUEUE` (confirms pipelined), and ack the source only once that one is
//!   confirmed too, as the gateway tells each platform what became of every submission;
//! - `--fanout K`: publish to `K` durable queues `DST.0` … `DST.<K-1>` (declared here) in
//!   turn instead of to `DST`, as the gateway spreads submissions over the back offices of
//!   its directory.
//!
//! `cargo run --release --example bare_forwarder -- AMQP_URI SRC DST N [--prefetch P]
//! [--status QUEUE] [--fanout K]` exits after N messages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use tokio::sync::mpsc;

#[derive(Parser)]
struct Args {
    uri: String,
    src: String,
    dst: String,
    /// Exit after this many messages.
    n: u64,
    #[arg(long, default_value_t = 256)]
    prefetch: u16,
    /// Publish a status message to this queue per message forwarded.
    #[arg(long)]
    status: Option<String>,
    /// Spread the messages over this many queues `DST.<i>`, in turn.
    #[arg(long, default_value_t = 0)]
    fanout: usize,
}

type Pending = (lapin::PublisherConfirm, lapin::Acker);

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let consume = Connection::connect(&args.uri, ConnectionProperties::default())
        .await
        .expect("connect");
    let publish = Connection::connect(&args.uri, ConnectionProperties::default())
        .await
        .expect("connect");
    let in_channel = consume.create_channel().await.expect("channel");
    in_channel
        .basic_qos(args.prefetch, BasicQosOptions::default())
        .await
        .expect("qos");
    let out = publish.create_channel().await.expect("channel");
    out.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm");
    let destinations = destinations(&out, &args.dst, args.fanout).await;
    let mut consumer = in_channel
        .basic_consume(
            args.src.as_str().into(),
            "bare".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let window = usize::from(args.prefetch);
    let (tx, rx) = mpsc::channel::<Pending>(window);
    let acking = match args.status {
        None => tokio::spawn(ack_confirmed(rx, args.n)),
        Some(status) => {
            let (status_tx, status_rx) = mpsc::channel(window);
            tokio::spawn(report(rx, out.clone(), status, status_tx));
            tokio::spawn(ack_confirmed(status_rx, args.n))
        }
    };
    let mut taken = 0u64;
    let mut next = destinations.iter().cycle();
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.expect("delivery");
        let dst = next.next().expect("at least one destination");
        let confirm = out
            .basic_publish(
                "".into(),
                dst.as_str().into(),
                BasicPublishOptions::default(),
                &delivery.data,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish");
        tx.send((confirm, delivery.acker)).await.expect("acking");
        taken += 1;
        if taken == args.n {
            break;
        }
    }
    acking.await.expect("acking task");
}

/// `DST` itself, or the `fanout` queues `DST.<i>`, declared durable.
async fn destinations(out: &lapin::Channel, dst: &str, fanout: usize) -> Vec<String> {
    if fanout == 0 {
        return vec![dst.to_owned()];
    }
    let mut queues = Vec::with_capacity(fanout);
    for i in 0..fanout {
        let queue = format!("{dst}.{i}");
        out.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare");
        queues.push(queue);
    }
    queues
}

/// Acks each source message once its last publish is confirmed, `multiple` every 64.
async fn ack_confirmed(mut rx: mpsc::Receiver<Pending>, n: u64) {
    let mut done = 0u64;
    while let Some((confirm, acker)) = rx.recv().await {
        confirmed(confirm).await;
        done += 1;
        // Confirms come in publish order, so this acker's tag covers every earlier one.
        if done % 64 == 0 || done == n {
            acker
                .ack(BasicAckOptions { multiple: true })
                .await
                .expect("ack");
        }
        if done == n {
            return;
        }
    }
}

/// Once a forwarded message is confirmed, publishes its status message (persistent, about
/// the size of a gateway's status event) and hands that confirm on to the acking task.
async fn report(
    mut rx: mpsc::Receiver<Pending>,
    out: lapin::Channel,
    queue: String,
    tx: mpsc::Sender<Pending>,
) {
    let body = [b's'; 300];
    while let Some((confirm, acker)) = rx.recv().await {
        confirmed(confirm).await;
        let confirm = out
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish status");
        if tx.send((confirm, acker)).await.is_err() {
            return;
        }
    }
}

async fn confirmed(confirm: lapin::PublisherConfirm) {
    match confirm.await.expect("confirm") {
        Confirmation::Ack(None) => {}
        other => panic!("not confirmed: {other:?}"),
    }
}
