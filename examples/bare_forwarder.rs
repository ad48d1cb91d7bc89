//! The floor for `deploy/bench/run.sh`: a bare lapin forwarder with no routing at all.
//!
//! Consumes `SRC` and publishes each body unchanged to `DST` (default exchange, persistent,
//! confirms pipelined), acking the source with `multiple` once a run of confirms is in,
//! as ../shared/docs/rabbitmq.md describes the fastest lapin forwarder. It tells what lapin
//! and the broker cost per message before the gateway does any work of its own.
//!
//! `cargo run --release --example bare_forwarder -- AMQP_URI SRC DST N [PREFETCH]`
//! exits after N messages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, uri, src, dst, n, rest @ ..] = args.as_slice() else {
        eprintln!("usage: bare_forwarder AMQP_URI SRC DST N [PREFETCH]");
        std::process::exit(2);
    };
    let n: u64 = n.parse().expect("N");
    let prefetch: u16 = rest.first().map_or(256, |p| p.parse().expect("PREFETCH"));
    let consume = Connection::connect(uri, ConnectionProperties::default())
        .await
        .expect("connect");
    let publish = Connection::connect(uri, ConnectionProperties::default())
        .await
        .expect("connect");
    let in_channel = consume.create_channel().await.expect("channel");
    in_channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .expect("qos");
    let out = publish.create_channel().await.expect("channel");
    out.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm");
    let mut consumer = in_channel
        .basic_consume(
            src.as_str().into(),
            "bare".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(lapin::PublisherConfirm, lapin::Acker)>(
        usize::from(prefetch),
    );
    let acking = tokio::spawn(async move {
        let mut done = 0u64;
        while let Some((confirm, acker)) = rx.recv().await {
            match confirm.await.expect("confirm") {
                Confirmation::Ack(None) => {}
                other => panic!("not confirmed: {other:?}"),
            }
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
    });
    let mut taken = 0u64;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.expect("delivery");
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
        if taken == n {
            break;
        }
    }
    acking.await.expect("acking task");
}
