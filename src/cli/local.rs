//! `submit`, `receive` and `answer`: helpers for local set-ups and the walkthrough, which
//! play a platform and a back office against the configured brokers.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, FieldTable};
use ozg_gateway::amqp::link::{Link, LinkState};
use ozg_gateway::amqp::{self, Publisher, Role};
use ozg_gateway::config::Config;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::wire::v1 as wire;
use ozg_gateway::{sample, topology};
use tokio_util::sync::CancellationToken;

use super::args::{AnswerKind, ReceiveFrom};
use super::{fail, load};

/// A publisher on `broker` for the local helpers, which fail fast on a broker that does
/// not answer rather than reconnect forever. Cancel the token and close the link when done.
async fn helper_publisher(
    config: &Config,
    broker: usize,
) -> Result<(Publisher, std::sync::Arc<Link>, CancellationToken), ExitCode> {
    let broker = config.broker(broker);
    let stop = CancellationToken::new();
    let link = Link::start(broker.clone(), Role::Publish, stop.clone());
    let connected = tokio::time::timeout(Duration::from_secs(10), link.connected(&stop)).await;
    if !matches!(connected, Ok(Some(_))) {
        stop.cancel();
        return Err(fail(match link.state() {
            LinkState::Connecting {
                last_error: Some(e),
                ..
            } => e,
            _ => format!("broker {} did not answer within 10 s", broker.name),
        }));
    }
    Ok((
        Publisher::new(link.clone(), Duration::from_secs(10)),
        link,
        stop,
    ))
}

pub async fn answer(
    path: &std::path::Path,
    destination_id: &str,
    submission_id: &str,
    kind: AnswerKind,
    json: bool,
) -> Result<(), ExitCode> {
    let config = load(path)?;
    let d = config
        .destinations
        .iter()
        .find(|d| d.id == destination_id)
        .ok_or_else(|| {
            fail(format!(
                "no destination {destination_id:?} in {}",
                path.display()
            ))
        })?;
    let queue = d.receipt_queue.as_deref().ok_or_else(|| {
        fail(format!(
            "destination {destination_id:?} has no receipt_queue"
        ))
    })?;
    let problem = |text: &String| {
        let (title, detail) = text.split_once(':').unwrap_or((text.as_str(), ""));
        wire::Problem {
            title: title.trim().to_owned(),
            detail: detail.trim().to_owned(),
            instance: format!("urn:uuid:{submission_id}"),
            ..wire::Problem::default()
        }
    };
    let (receipt_kind, word) = if kind.accept {
        (wire::ReceiptKind::Accepted, "accepted")
    } else if kind.forward.is_some() {
        (wire::ReceiptKind::ForwardedOnward, "forwarded onward")
    } else {
        (wire::ReceiptKind::Rejected, "rejected")
    };
    let receipt = wire::Receipt {
        receipt_id: uuid::Uuid::new_v4().to_string(),
        submission_id: submission_id.to_owned(),
        kind: receipt_kind as i32,
        problems: kind.reject.iter().map(problem).collect(),
        note: kind.forward.unwrap_or_default(),
        time: None,
    };
    let (body, content_type) = if json {
        let body = serde_json::to_vec(&receipt).map_err(fail)?;
        (body, Encoding::Json.content_type())
    } else {
        (
            prost::Message::encode_to_vec(&receipt),
            Encoding::Protobuf.content_type(),
        )
    };
    let (publisher, link, stop) = helper_publisher(&config, d.broker).await?;
    let properties = BasicProperties::default()
        .with_message_id(receipt.receipt_id.as_str().into())
        .with_content_type(content_type.into());
    let published = publisher.publish("", queue, &body, properties).await;
    stop.cancel();
    link.close().await;
    published.map_err(fail)?;
    println!("answered {submission_id} as {destination_id}: {word} (to {queue})");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub async fn submit(
    path: &std::path::Path,
    platform_id: &str,
    service: &str,
    region: &str,
    json: bool,
    count: usize,
    size: usize,
    raw: Option<PathBuf>,
    content_type: &str,
) -> Result<(), ExitCode> {
    let config = load(path)?;
    let platform = config
        .platform(platform_id)
        .ok_or_else(|| fail(format!("no platform {platform_id:?} in {}", path.display())))?;
    let (publisher, link, stop) = helper_publisher(&config, platform.broker).await?;
    let messages: Vec<(String, Vec<u8>, String)> = match raw {
        Some(file) => {
            let body =
                std::fs::read(&file).map_err(|e| fail(format!("{}: {e}", file.display())))?;
            vec![(
                uuid::Uuid::new_v4().to_string(),
                body,
                content_type.to_owned(),
            )]
        }
        None => {
            let encoding = if json {
                Encoding::Json
            } else {
                Encoding::Protobuf
            };
            let land = platform.land.to_string();
            (0..count)
                .map(|_| {
                    let s = sample::submission(&sample::SampleSpec {
                        platform_id,
                        land: &land,
                        service_key: service,
                        region,
                        size,
                    });
                    let body = sample::encode(&s, encoding);
                    (s.submission_id, body, encoding.content_type().to_owned())
                })
                .collect()
        }
    };
    for (id, body, content_type) in messages {
        let properties = BasicProperties::default()
            .with_message_id(id.as_str().into())
            .with_content_type(content_type.into());
        publisher
            .publish("", &platform.ingress_queue, &body, properties)
            .await
            .map_err(fail)?;
        println!(
            "submitted {id} to {} ({} bytes)",
            platform.ingress_queue,
            body.len()
        );
    }
    stop.cancel();
    link.close().await;
    Ok(())
}

pub async fn receive(
    path: &std::path::Path,
    from: &ReceiveFrom,
    count: usize,
    wait: Duration,
) -> Result<(), ExitCode> {
    let config = load(path)?;
    let (broker, queue, kind) = if let Some(id) = &from.destination {
        let d = config
            .destination_index(id)
            .map(|i| &config.destinations[i])
            .ok_or_else(|| fail(format!("no destination {id:?}")))?;
        let queue = if d.exchange.is_empty() {
            d.routing_key.clone()
        } else {
            topology::backoffice_queue(&d.id)
        };
        (d.broker, queue, "submission")
    } else if let Some(id) = &from.status {
        let p = config
            .platform(id)
            .ok_or_else(|| fail(format!("no platform {id:?}")))?;
        (p.broker, topology::status_queue(&p.id), "status")
    } else {
        (
            config.gateway.dead_letter_broker,
            config.gateway.dead_letter_queue.clone(),
            "dead-letter",
        )
    };
    let connection = amqp::connect_any(config.broker(broker), Role::Consume)
        .await
        .map_err(fail)?;
    let channel = connection.create_channel().await.map_err(fail)?;
    let mut received = 0;
    let mut idle_since = tokio::time::Instant::now();
    while received < count && idle_since.elapsed() < wait {
        let got = channel
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
            .map_err(fail)?;
        let Some(message) = got else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        idle_since = tokio::time::Instant::now();
        received += 1;
        let delivery = message.delivery;
        println!("{}", describe(kind, &delivery.properties, &delivery.data));
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(fail)?;
    }
    if received == 0 {
        println!("{queue}: no message within {wait:?}");
    }
    ozg_gateway::amqp::close(&connection, "done").await;
    Ok(())
}

/// One line of metadata. Submissions and dead letters show headers and size only; status
/// events carry no personal data and are shown whole.
fn describe(kind: &str, properties: &BasicProperties, body: &[u8]) -> String {
    let mut fields = serde_json::Map::new();
    fields.insert("kind".into(), kind.into());
    if let Some(id) = properties.message_id() {
        fields.insert("message_id".into(), id.as_str().into());
    }
    if let Some(ct) = properties.content_type() {
        fields.insert("content_type".into(), ct.as_str().into());
    }
    fields.insert("bytes".into(), body.len().into());
    if let Some(headers) = properties.headers() {
        fields.insert("headers".into(), headers_json(headers));
    }
    if kind == "status" {
        let event = if properties
            .content_type()
            .as_ref()
            .is_some_and(|c| c.as_str().contains("json"))
        {
            serde_json::from_slice::<wire::StatusEvent>(body).ok()
        } else {
            <wire::StatusEvent as prost::Message>::decode(body).ok()
        };
        if let Some(event) = event.and_then(|e| serde_json::to_value(e).ok()) {
            fields.insert("event".into(), event);
        }
    }
    serde_json::Value::Object(fields).to_string()
}

fn headers_json(headers: &FieldTable) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (key, value) in headers.inner() {
        map.insert(key.as_str().to_owned(), amqp_json(value));
    }
    serde_json::Value::Object(map)
}

/// A header's value as JSON: numbers as numbers, arrays and tables (RabbitMQ's `x-death`)
/// as arrays and objects, rather than Rust's debug notation.
fn amqp_json(value: &AMQPValue) -> serde_json::Value {
    use serde_json::Value;
    match value {
        AMQPValue::Boolean(b) => (*b).into(),
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::Float(f) => f64::from(*f).into(),
        AMQPValue::Double(d) => (*d).into(),
        AMQPValue::DecimalValue(d) => (f64::from(d.value) / 10f64.powi(i32::from(d.scale))).into(),
        AMQPValue::ShortString(s) => s.as_str().into(),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into(),
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(amqp_json).collect())
        }
        AMQPValue::Timestamp(t) => (*t).into(),
        AMQPValue::FieldTable(table) => headers_json(table),
        AMQPValue::ByteArray(bytes) => hex::encode(bytes.as_slice()).into(),
        AMQPValue::Void => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_as_json_values() {
        let mut death = FieldTable::default();
        death.insert("count".into(), AMQPValue::LongLongInt(2));
        death.insert(
            "queue".into(),
            AMQPValue::LongString("ozg.submissions".into()),
        );
        let cases = [
            (AMQPValue::Boolean(true), "true"),
            (AMQPValue::ShortShortInt(-3), "-3"),
            (AMQPValue::LongUInt(7), "7"),
            (AMQPValue::LongLongInt(-9), "-9"),
            (AMQPValue::Double(0.5), "0.5"),
            (
                AMQPValue::DecimalValue(lapin::types::DecimalValue {
                    scale: 2,
                    value: 1250,
                }),
                "12.5",
            ),
            (AMQPValue::ShortString("he".into()), "\"he\""),
            (AMQPValue::Timestamp(1_750_000_000), "1750000000"),
            (
                AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
                r#"[{"count":2,"queue":"ozg.submissions"}]"#,
            ),
            (AMQPValue::ByteArray(vec![0xca, 0xfe].into()), "\"cafe\""),
            (AMQPValue::Void, "null"),
        ];
        for (value, json) in cases {
            assert_eq!(amqp_json(&value).to_string(), json, "{value:?}");
        }
    }
}
