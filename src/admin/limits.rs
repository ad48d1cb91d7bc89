//! Bounds on what a request may carry. Every text field of every request is checked after
//! authentication and before the call does anything with it: ids and keys at most
//! [`MAX_ID_CHARS`] characters, names [`MAX_NAME_CHARS`], exchange, queue and routing key
//! names AMQP's 255 bytes, a justification [`MAX_JUSTIFICATION_CHARS`]; no control
//! characters anywhere (a justification may have line breaks). The fields are found through
//! the request's JSON form, so a field added to the API later is bounded too.

use serde::Serialize;
use serde_json::Value;
use tonic::Status;

use crate::model::{MAX_ID_CHARS, MAX_NAME_CHARS, check_amqp_name, check_text};

/// The longest justification for reading a payload.
const MAX_JUSTIFICATION_CHARS: usize = 1000;

/// INVALID_ARGUMENT naming the first text field of `request` out of bounds, with at most a
/// short escaped prefix of what it holds.
pub fn check<T: Serialize>(request: &T) -> Result<(), Status> {
    let value = serde_json::to_value(request)
        .map_err(|_| Status::internal("the request cannot be checked"))?;
    walk(&value, &mut String::new())
}

fn walk(value: &Value, path: &mut String) -> Result<(), Status> {
    let len = path.len();
    let result = match value {
        Value::String(text) => check_field(path, text),
        Value::Array(items) => items.iter().enumerate().try_for_each(|(i, item)| {
            path.push_str(&format!("[{i}]"));
            let result = walk(item, path);
            path.truncate(len);
            result
        }),
        Value::Object(fields) => fields.iter().try_for_each(|(name, item)| {
            if !path.is_empty() {
                path.push('.');
            }
            push_snake_case(path, name);
            let result = walk(item, path);
            path.truncate(len);
            result
        }),
        _ => Ok(()),
    };
    path.truncate(len);
    result
}

/// The JSON mapping's `routingKey` as the proto and the error messages spell it.
fn push_snake_case(path: &mut String, name: &str) {
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            path.push('_');
            path.push(c.to_ascii_lowercase());
        } else {
            path.push(c);
        }
    }
}

fn check_field(path: &str, text: &str) -> Result<(), Status> {
    let field = path
        .rsplit('.')
        .next()
        .unwrap_or(path)
        .split('[')
        .next()
        .unwrap_or_default();
    let result = match field {
        "name" | "service_name" | "region_name" | "destination_name" => {
            check_text(text, MAX_NAME_CHARS)
        }
        "justification" => check_text(
            &text.replace(['\n', '\r', '\t'], " "),
            MAX_JUSTIFICATION_CHARS,
        ),
        "exchange" | "routing_key" | "receipt_queue" => check_amqp_name(text),
        _ => check_text(text, MAX_ID_CHARS),
    };
    result.map_err(|message| Status::invalid_argument(format!("{path}: {message}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::admin as pb;

    fn verdict<T: Serialize>(request: &T) -> Result<(), String> {
        check(request).map_err(|s| {
            assert_eq!(s.code(), tonic::Code::InvalidArgument);
            s.message().to_owned()
        })
    }

    #[test]
    fn every_text_field_of_a_request_is_bounded() {
        let huge = "i".repeat(100 * 1024);
        let destination = |change: fn(&mut pb::Destination)| {
            let mut d = pb::Destination {
                id: "he-neu".into(),
                name: "Bürgeramt Neustadt".into(),
                kind: "gemeinde".into(),
                land: "06".into(),
                broker: "he".into(),
                exchange: "backoffice".into(),
                routing_key: "he-neu".into(),
                ..Default::default()
            };
            change(&mut d);
            pb::CreateDestinationRequest {
                destination: Some(d),
                expected_directory_version: 7,
            }
        };
        // (label, what the check said, Ok or the start of the message expected)
        type Case<'a> = (&'a str, Result<(), String>, Result<(), &'a str>);
        let cases: Vec<Case> = vec![
            (
                "a dead letter id of 100 KB",
                verdict(&pb::GetDeadLetterRequest { id: huge.clone() }),
                Err(
                    "id: has 102400 characters, at most 128 are allowed (\"iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii\"…)",
                ),
            ),
            (
                "a NUL in a filter",
                verdict(&pb::ListDeadLettersRequest {
                    filter: Some(pb::DeadLetterFilter {
                        platform: "civento\0he".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                Err("filter.platform: contains a control character (U+0000) at byte 7"),
            ),
            (
                "a long id among the ids",
                verdict(&pb::ReplayDeadLettersRequest {
                    ids: vec!["a".into(), "b".repeat(200)],
                    ..Default::default()
                }),
                Err("ids[1]: has 200 characters, at most 128"),
            ),
            (
                "a destination with a 1 MB name",
                verdict(&destination(|d| d.name = "n".repeat(1 << 20))),
                Err("destination.name: has 1048576 characters, at most 300"),
            ),
            (
                "a destination with a bell in its id",
                verdict(&destination(|d| d.id = "he\u{7}neu".into())),
                Err("destination.id: contains a control character (U+0007) at byte 2"),
            ),
            (
                "a routing key over AMQP's limit",
                verdict(&destination(|d| d.routing_key = "r".repeat(256))),
                Err("destination.routing_key: has 256 characters, at most 255"),
            ),
            ("a good destination", verdict(&destination(|_| {})), Ok(())),
            (
                "a justification over several lines",
                verdict(&pb::GetDeadLetterPayloadRequest {
                    id: "x".into(),
                    justification: "Ticket 4711:\nthe platform asks why".into(),
                }),
                Ok(()),
            ),
            (
                "a justification too long",
                verdict(&pb::GetDeadLetterPayloadRequest {
                    id: "x".into(),
                    justification: "j".repeat(1001),
                }),
                Err("justification: has 1001 characters, at most 1000"),
            ),
            (
                "a platform id in a watch",
                verdict(&pb::WatchEventsRequest {
                    platform: "p".repeat(129),
                    destination: String::new(),
                }),
                Err("platform: has 129 characters"),
            ),
        ];
        for (label, got, expected) in cases {
            match (&got, expected) {
                (Ok(()), Ok(())) => {}
                (Err(message), Err(start)) => {
                    assert!(message.starts_with(start), "{label}: {message}");
                    assert!(message.len() < 200, "{label}: echoes too much: {message}");
                }
                _ => panic!("{label}: got {got:?}, expected {expected:?}"),
            }
        }
    }
}
