//! What the logs say, with the real binary at `OZG_LOG=debug` and `--log-format json`:
//! submissions whose payload carries personal data go through every way a submission can
//! end, and afterwards no log line shows any of that data, every line is JSON, and each
//! submission has exactly one outcome line naming it.
//!
//! Not covered: "replayed" (sending a dead letter again through an admin API) does not exist
//! yet; when it does, a replayed submission belongs in this test too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::sample::{self, SampleSpec};
use ozg_gateway::topology::{backoffice_queue, status_queue};
use ozg_gateway::wire::v1 as wire;
use serde_json::Value;
use sha2::{Digest, Sha512};

/// Personal data as a citizen would enter it: name, date of birth, IBAN.
const MARKER: &str = "Erika Mustermann 1964-08-12 DE89370400440532013000";
/// Parts of the marker that must not appear either (compared case-insensitively).
const PARTS: &[&str] = &["Mustermann", "Erika", "1964-08-12", "DE8937", "0532013000"];

const PLATFORM: &str = "civento-he";

/// A valid submission from `civento-he` whose form content, attachment (file name and
/// content) and reply address carry the marker. The case id is metadata and stays as it is.
fn personal(service: &str, region: &str) -> wire::Submission {
    let mut s = sample::submission(&SampleSpec {
        platform_id: PLATFORM,
        land: "06",
        service_key: service,
        region,
        size: 1024,
    });
    s.form_data.as_mut().unwrap().content =
        format!(r#"{{"name":"{MARKER}","note":"Antrag von {MARKER}"}}"#).into_bytes();
    let attachment = &mut s.attachments[0];
    attachment.file_name = format!("Ausweis {MARKER}.pdf");
    attachment.content = format!("%PDF-1.7 {MARKER}\n").into_bytes();
    attachment.size = attachment.content.len() as u64;
    attachment.sha512 = hex::encode(Sha512::digest(&attachment.content));
    s.reply_channel = Some(wire::ReplyChannel {
        kind: "email".into(),
        address: "erika.mustermann@example.de".into(),
    });
    s
}

/// Forms in which a careless log could show the marker besides plain text: hex and the
/// `Debug` of a byte slice.
fn forbidden() -> Vec<String> {
    let mut out: Vec<String> = PARTS.iter().map(|p| p.to_lowercase()).collect();
    out.push(MARKER.to_lowercase());
    out.push(hex::encode("Mustermann"));
    out.push(
        format!("{:?}", "Mustermann".as_bytes())
            .trim_matches(['[', ']'])
            .to_owned(),
    );
    out
}

/// An event field: at the top level (`flatten_event`), or under `fields`.
fn field<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line.get(name)
        .or_else(|| line.get("fields").and_then(|f| f.get(name)))
}

fn text<'a>(line: &'a Value, name: &str) -> Option<&'a str> {
    field(line, name).and_then(Value::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_name_every_outcome_and_never_show_payload_content() {
    let v = Vhosts::create("logs", &["gw", "he"]);
    let dir = tempfile::tempdir().unwrap();
    let test_config = TestConfig::new(&v)
        .gateway(&format!(
            "data_dir = \"{}\"",
            dir.path().join("data").display()
        ))
        .gateway(r#"confirm_timeout = "5s""#)
        .retry(r#"delays = ["100ms"]"#)
        .retry("max_attempts = 2")
        .platform(PLATFORM, "06", "he", None)
        .healthy_and_ghost();
    let path = dir.path().join("logs.toml");
    std::fs::write(&path, test_config.text()).unwrap();
    declare(&test_config.build()).await;

    // The ghost destination's exchange is gone: its deliveries fail, are retried once and
    // are dead-lettered as delivery-failed.
    delete_exchange(&v.url("he"), "ghost-exchange").await;
    let he = connect(&v.url("he")).await;

    let (mut gateway, reader) = run_with_json_logs(&path, Some("debug"));

    // What should become of each submission: (submission id, outcome, reason).
    let mut expected: Vec<(String, &str, Option<&str>)> = Vec::new();
    let channel = confirm_channel(&he).await;

    // Delivered (protobuf), to Darmstadt.
    let delivered = personal("99115005104000", "064110000000");
    let delivered_body = sample::encode(&delivered, Encoding::Protobuf);
    submit_encoded(&channel, &delivered_body, Encoding::Protobuf).await;
    expected.push((delivered.submission_id.clone(), "delivered", None));

    // Bad input: a service key that is not a LeiKa key (JSON, so that the body carries the
    // file name and reply address as plain text).
    let bad_key = personal("12345678901234", "064110000000");
    submit(&channel, &bad_key, Encoding::Json).await;
    expected.push((
        bad_key.submission_id.clone(),
        "dead-lettered",
        Some("invalid-service-key"),
    ));

    // Bad input: garbage bytes with the marker, as protobuf and as JSON. Neither decodes,
    // so the submission id in the log can only come from the AMQP message id.
    let garbage_pb = uuid::Uuid::new_v4().to_string();
    let mut bytes = vec![0xff, 0xfe, 0x00, 0x07];
    bytes.extend_from_slice(MARKER.as_bytes());
    publish(
        &channel,
        "submissions",
        &bytes,
        Some(Encoding::Protobuf.content_type()),
        Some(&garbage_pb),
        None,
    )
    .await;
    expected.push((garbage_pb, "dead-lettered", Some("undecodable")));
    let garbage_json = uuid::Uuid::new_v4().to_string();
    publish(
        &channel,
        "submissions",
        format!(r#"{{"submissionId": "x", "{MARKER}": "{MARKER}", "#).as_bytes(),
        Some(Encoding::Json.content_type()),
        Some(&garbage_json),
        None,
    )
    .await;
    expected.push((garbage_json, "dead-lettered", Some("undecodable")));

    // No route: Frankfurt am Main (06412) has none.
    let no_route = personal("99115005104000", "064120000000");
    submit(&channel, &no_route, Encoding::Json).await;
    expected.push((
        no_route.submission_id.clone(),
        "dead-lettered",
        Some("no-route"),
    ));

    // Delivery failed: Kassel's exchange is missing; tried twice, then dead-lettered.
    let failing = personal("99115005104000", "066110000000");
    submit(&channel, &failing, Encoding::Protobuf).await;
    expected.push((
        failing.submission_id.clone(),
        "dead-lettered",
        Some("delivery-failed"),
    ));

    let read_he = he.create_channel().await.unwrap();
    let gw = connect(&v.url("gw")).await;
    let read_gw = gw.create_channel().await.unwrap();
    let arrived = take(
        &read_he,
        &backoffice_queue("healthy"),
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(arrived.len(), 1, "the valid submission reaches Darmstadt");
    let mut dead = take_dead_letters(&read_gw, 5, Duration::from_secs(30)).await;
    assert_eq!(
        dead.len(),
        5,
        "bad key, 2 × garbage, no route, delivery failed"
    );
    // The `forwarded` event is sent after the delivery was recorded: from then on a
    // republish is recognised.
    let mut events = take(
        &read_he,
        &status_queue(PLATFORM),
        6,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(events.len(), 6, "one status event per submission so far");

    // A duplicate: the delivered submission republished as it was.
    submit_encoded(&channel, &delivered_body, Encoding::Protobuf).await;
    expected.push((delivered.submission_id.clone(), "duplicate", None));
    // And a conflict: the same id with other content.
    let mut changed = delivered.clone();
    changed.form_data.as_mut().unwrap().content = format!("{MARKER} (korrigiert)").into_bytes();
    submit(&channel, &changed, Encoding::Json).await;
    expected.push((
        delivered.submission_id.clone(),
        "dead-lettered",
        Some("conflict"),
    ));
    dead.extend(take_dead_letters(&read_gw, 1, Duration::from_secs(20)).await);
    assert_eq!(dead.len(), 6, "the conflict is dead-lettered");
    events.extend(
        take(
            &read_he,
            &status_queue(PLATFORM),
            2,
            Duration::from_secs(20),
        )
        .await,
    );
    assert_eq!(events.len(), 8, "one status event per submission");
    assert!(
        take(
            &read_he,
            &backoffice_queue("healthy"),
            1,
            Duration::from_millis(500)
        )
        .await
        .is_empty(),
        "the duplicate is not delivered again"
    );
    let reasons: Vec<String> = dead
        .iter()
        .map(|m| m.header("x-ozg-reason").unwrap_or_default())
        .collect();
    for (_, _, reason) in &expected {
        if let Some(reason) = reason {
            assert!(reasons.iter().any(|r| r == reason), "{reason}: {reasons:?}");
        }
    }

    // SIGTERM, then everything the gateway wrote.
    let status = terminate(&mut gateway, Duration::from_secs(30));
    let lines = reader.join().unwrap();
    assert!(status.success(), "exit {status:?}:\n{}", lines.join("\n"));

    // 1. No trace of the payload, in any form, on any line.
    let forbidden = forbidden();
    for (n, line) in lines.iter().enumerate() {
        let lower = line.to_lowercase();
        for f in &forbidden {
            assert!(
                !lower.contains(f.as_str()),
                "log line {} shows payload content ({f:?}):\n{line}",
                n + 1
            );
        }
    }

    // 2. Every line is a JSON object.
    let parsed: Vec<Value> = lines
        .iter()
        .enumerate()
        .map(|(n, line)| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("log line {} is not JSON ({e}):\n{line}", n + 1));
            assert!(
                value.is_object(),
                "log line {} is not an object: {line}",
                n + 1
            );
            value
        })
        .collect();

    // The gateway's own lines show values, never Rust's `Some(…)` around them.
    for line in &parsed {
        if text(line, "target").is_some_and(|t| t.starts_with("ozg_gateway")) {
            assert!(!line.to_string().contains("Some("), "{line}");
        }
    }

    // 3. One final outcome line per submission, naming it, the platform and (delivered,
    //    duplicate) the destination or (dead-lettered) the reason.
    let finals: Vec<&Value> = parsed
        .iter()
        .filter(|l| {
            matches!(
                text(l, "outcome"),
                Some("delivered" | "duplicate" | "dead-lettered")
            )
        })
        .collect();
    for (id, outcome, reason) in &expected {
        let found: Vec<&&Value> = finals
            .iter()
            .filter(|l| {
                text(l, "submission_id") == Some(id.as_str())
                    && text(l, "outcome") == Some(*outcome)
                    && text(l, "reason") == *reason
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "submission {id} ({outcome} {reason:?}): expected one outcome line, found {}:\n{}",
            found.len(),
            lines.join("\n")
        );
        let line = found[0];
        assert_eq!(text(line, "platform"), Some(PLATFORM), "{line}");
        match *outcome {
            "delivered" | "duplicate" => {
                assert_eq!(text(line, "destination"), Some("healthy"), "{line}")
            }
            _ => assert!(
                text(line, "detail").is_some_and(|d| !d.is_empty()),
                "a rejection says why: {line}"
            ),
        }
    }
    assert_eq!(
        finals.len(),
        expected.len(),
        "no outcome line for anything else:\n{}",
        finals
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The failing delivery was retried once before it was given up.
    let retrying: Vec<&Value> = parsed
        .iter()
        .filter(|l| text(l, "outcome") == Some("retrying"))
        .collect();
    assert_eq!(retrying.len(), 1, "{retrying:?}");
    assert_eq!(
        text(retrying[0], "submission_id"),
        Some(failing.submission_id.as_str())
    );
    assert_eq!(text(retrying[0], "platform"), Some(PLATFORM));
    assert!(
        parsed
            .iter()
            .any(|l| text(l, "message") == Some("SIGTERM received")),
        "the stop is logged"
    );

    let mut levels: HashMap<&str, usize> = HashMap::new();
    for l in &parsed {
        *levels
            .entry(l.get("level").and_then(Value::as_str).unwrap_or("?"))
            .or_default() += 1;
    }
    let mut levels: Vec<_> = levels.into_iter().collect();
    levels.sort();
    println!(
        "log lines checked: {} ({levels:?}); outcome lines: {} for {} submissions, {} retrying; \
         payload markers searched: {}",
        lines.len(),
        finals.len(),
        expected.len(),
        retrying.len(),
        forbidden.len()
    );
    for l in &finals {
        println!(
            "  {} {} {} {}",
            text(l, "outcome").unwrap_or(""),
            text(l, "submission_id").unwrap_or(""),
            text(l, "destination")
                .or_else(|| text(l, "reason"))
                .unwrap_or(""),
            text(l, "platform").unwrap_or("")
        );
    }
}
