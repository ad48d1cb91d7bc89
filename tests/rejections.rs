//! Every kind of bad input ends in the dead-letter queue with its specific reason, the
//! platform gets a `rejected` event naming the field, and the gateway keeps serving.
//! Plus the accounting: N published = delivered + dead-lettered, none lost, none twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use ozg_gateway::Config;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::sample;
use ozg_gateway::wire::v1 as wire;

const MELDE: &str = "99115005104000";
const MARKER: &[u8] = b"Erika Mustermann, Hauptstr. 1";

fn config(v: &Vhosts) -> Config {
    TestConfig::new(v)
        .gateway(r#"confirm_timeout = "5s""#)
        .gateway("max_message_bytes = 65536")
        .platform("civento-th", "16", "th", Some(20))
        .platform("civento-he", "06", "he", Some(20))
        .line(r#"status_format = "protobuf""#)
        .destination("he-darmstadt", "06", "he", "Darmstadt")
        .destination("th-erfurt", "16", "th", "Erfurt")
        .route("*", "06411", "he-darmstadt")
        .route(MELDE, "16051", "th-erfurt")
        .build()
}

fn good() -> wire::Submission {
    let mut s = sample_submission("civento-th", "16", MELDE, "064110000000", 1024);
    // Personal data in the payload: must never reach a header, an event or a detail.
    if let Some(form) = s.form_data.as_mut() {
        form.content = [b"{\"name\":\"".as_slice(), MARKER, b"\"}"].concat();
    }
    s
}

type Change = fn(&mut wire::Submission);
/// (label, body, content type, expected reason, expected field)
type Case = (
    String,
    Vec<u8>,
    Option<&'static str>,
    &'static str,
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_input_is_dead_lettered_with_its_reason() {
    let v = Vhosts::create("bad", &["gw", "th", "he"]);
    let gateway = start_gateway(config(&v)).await;

    // (label, body, content type, expected reason, expected field)
    // (label, body, content type, expected reason, expected field, submission id inside)
    let mut cases: Vec<Case> = vec![
        (
            "protobuf garbage".into(),
            [b"\xff\xff\xff\xff\x0f".as_slice(), MARKER].concat(),
            Some("application/x-protobuf"),
            "undecodable",
            "",
        ),
        (
            "json garbage".into(),
            MARKER.to_vec(),
            Some("application/json"),
            "undecodable",
            "",
        ),
        (
            "json wrong type".into(),
            br#"{"submissionId": 42}"#.to_vec(),
            Some("application/json"),
            "undecodable",
            "submissionId",
        ),
        (
            "no content type".into(),
            sample::encode(&good(), Encoding::Json),
            None,
            "unsupported-content-type",
            "",
        ),
        (
            "text/plain".into(),
            sample::encode(&good(), Encoding::Json),
            Some("text/plain"),
            "unsupported-content-type",
            "",
        ),
        (
            "oversized".into(),
            vec![b'x'; 100_000],
            Some("application/json"),
            "oversized",
            "",
        ),
    ];
    let changes: Vec<(&str, Change, &str, &str)> = vec![
        (
            "no submission_id",
            |s| s.submission_id.clear(),
            "missing-field",
            "submission_id",
        ),
        (
            "submission_id not a uuid",
            |s| s.submission_id = "not-a-uuid".into(),
            "invalid-field",
            "submission_id",
        ),
        ("no origin", |s| s.origin = None, "missing-field", "origin"),
        (
            "no origin.platform_id",
            |s| s.origin.as_mut().unwrap().platform_id.clear(),
            "missing-field",
            "origin.platform_id",
        ),
        (
            "no origin.land",
            |s| s.origin.as_mut().unwrap().land.clear(),
            "missing-field",
            "origin.land",
        ),
        (
            "no service",
            |s| s.service = None,
            "missing-field",
            "service",
        ),
        (
            "no service.key",
            |s| s.service.as_mut().unwrap().key.clear(),
            "missing-field",
            "service.key",
        ),
        ("no region", |s| s.region.clear(), "missing-field", "region"),
        (
            "no submitted_at",
            |s| s.submitted_at = None,
            "missing-field",
            "submitted_at",
        ),
        (
            "no form_data",
            |s| s.form_data = None,
            "missing-field",
            "form_data",
        ),
        (
            "no media type",
            |s| s.form_data.as_mut().unwrap().media_type.clear(),
            "missing-field",
            "form_data.media_type",
        ),
        (
            "no schema uri",
            |s| s.form_data.as_mut().unwrap().schema_uri.clear(),
            "missing-field",
            "form_data.schema_uri",
        ),
        (
            "no content",
            |s| s.form_data.as_mut().unwrap().content.clear(),
            "missing-field",
            "form_data.content",
        ),
        (
            "attachment hash",
            |s| s.attachments[0].content.push(b'!'),
            "invalid-field",
            "attachments[0].size",
        ),
        (
            "leika not 99",
            |s| s.service.as_mut().unwrap().key = "12115005104000".into(),
            "invalid-service-key",
            "service.key",
        ),
        (
            "leika too short",
            |s| s.service.as_mut().unwrap().key = "991150051040".into(),
            "invalid-service-key",
            "service.key",
        ),
        (
            "ars letters",
            |s| s.region = "06411000000X".into(),
            "invalid-region",
            "region",
        ),
        (
            "ars 10 digits",
            |s| s.region = "0641100000".into(),
            "invalid-region",
            "region",
        ),
        (
            "ars unknown",
            |s| s.region = "064119999999".into(),
            "unknown-region",
            "region",
        ),
        (
            "ags unknown",
            |s| s.region = "06411999".into(),
            "unknown-region",
            "region",
        ),
        (
            "origin other platform",
            |s| s.origin.as_mut().unwrap().platform_id = "civento-he".into(),
            "origin-mismatch",
            "origin.platform_id",
        ),
        (
            "origin other land",
            |s| s.origin.as_mut().unwrap().land = "06".into(),
            "origin-mismatch",
            "origin.land",
        ),
        (
            "no route",
            |s| s.region = "091620000000".into(),
            "no-route",
            "",
        ),
    ];
    let mut inside: HashMap<String, usize> = HashMap::new();
    for (label, change, reason, field) in &changes {
        let mut s = good();
        change(&mut s);
        inside.insert(s.submission_id.clone(), cases.len());
        let encoding = if label.len() % 2 == 0 {
            Encoding::Json
        } else {
            Encoding::Protobuf
        };
        cases.push((
            (*label).to_owned(),
            sample::encode(&s, encoding),
            Some(encoding.content_type()),
            reason,
            field,
        ));
    }

    let th = connect(&v.url("th")).await;
    let channel = confirm_channel(&th).await;
    let mut expected = HashMap::new();
    for (i, (label, body, content_type, reason, field)) in cases.iter().enumerate() {
        // The AMQP message id identifies even what cannot be decoded.
        let id = format!("case-{i}");
        publish(
            &channel,
            "submissions",
            body,
            *content_type,
            Some(&id),
            None,
        )
        .await;
        expected.insert(id, (label.clone(), *reason, *field));
    }
    // After all the bad input, the gateway still serves good submissions.
    let last = good();
    submit(&channel, &last, Encoding::Protobuf).await;

    let gw = connect(&v.url("gw")).await;
    let gw_channel = gw.create_channel().await.unwrap();
    let dead = take_dead_letters(&gw_channel, cases.len(), Duration::from_secs(30)).await;
    assert_eq!(
        dead.len(),
        cases.len(),
        "every bad message is dead-lettered"
    );
    let mut reasons_by_id = HashMap::new();
    for m in &dead {
        let id = m.message_id().unwrap();
        let (label, reason, field) = expected
            .get(&id)
            .unwrap_or_else(|| panic!("unexpected dead letter {id}"));
        assert_eq!(
            m.header("x-ozg-reason").as_deref(),
            Some(*reason),
            "{label}"
        );
        assert_eq!(
            m.header("x-ozg-field").unwrap_or_default(),
            *field,
            "{label}"
        );
        let detail = m.header("x-ozg-detail").unwrap();
        assert!(!detail.is_empty(), "{label}: a detail says what was wrong");
        assert!(
            !detail.contains("Mustermann"),
            "{label}: detail leaks payload: {detail}"
        );
        assert_eq!(
            m.header("x-ozg-origin-platform").as_deref(),
            Some("civento-th"),
            "{label}"
        );
        assert_eq!(
            m.header("x-ozg-origin-land").as_deref(),
            Some("16"),
            "{label}"
        );
        assert_eq!(
            m.header("x-ozg-source-queue").as_deref(),
            Some("submissions"),
            "{label}"
        );
        assert!(
            m.header_value("x-ozg-dead-lettered-at").is_some(),
            "{label}"
        );
        assert_eq!(m.properties.delivery_mode(), &Some(2), "{label}");
        reasons_by_id.insert(id, (*reason, *field));
    }
    assert!(
        reasons_by_id.len() == cases.len(),
        "each dead-lettered once"
    );

    // The platform hears `rejected` for each, with an RFC 7807 problem naming the field.
    let events = take_status(
        &channel,
        "civento-th",
        cases.len() + 1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(events.len(), cases.len() + 1);
    let mut rejected = 0;
    for e in &events {
        assert!(
            !e.body.windows(MARKER.len()).any(|w| w == MARKER),
            "status event leaks payload"
        );
        let event: wire::StatusEvent = serde_json::from_slice(&e.body).unwrap();
        if event.status == wire::Status::Forwarded as i32 {
            assert_eq!(event.submission_id, last.submission_id);
            continue;
        }
        rejected += 1;
        assert_eq!(e.header("x-ozg-status").as_deref(), Some("rejected"));
        let problem = event.problem.expect("a rejection carries a problem");
        assert!(problem.r#type.starts_with("urn:ozg-gateway:problem:"));
        assert!(!problem.title.is_empty() && !problem.detail.is_empty());
        // The submission id is reported when the envelope decoded and carried one;
        // otherwise the AMQP message id.
        let case = match inside.get(&event.submission_id) {
            Some(i) => format!("case-{i}"),
            None => event.submission_id.clone(),
        };
        let (reason, field) = reasons_by_id
            .get(&case)
            .unwrap_or_else(|| panic!("event for unknown {case}"));
        assert_eq!(problem.reason, *reason, "{case}");
        assert_eq!(problem.field, *field, "{case}");
    }
    assert_eq!(rejected, cases.len());

    let he = connect(&v.url("he")).await;
    let he_channel = he.create_channel().await.unwrap();
    let delivered = take_backoffice(&he_channel, "he-darmstadt", 2, Duration::from_secs(10)).await;
    assert_eq!(
        delivered.len(),
        1,
        "only the good submission reaches the back office"
    );
    assert_eq!(
        delivered[0].message_id().as_deref(),
        Some(last.submission_id.as_str())
    );
    assert!(gateway.is_running(), "bad input never stops the gateway");
    gateway.stop().await;
}

/// The contract's rules for what a sender adds (README, "The wire contract"): in JSON an
/// unknown field is refused by its path, however deep the value behind it; in protobuf an
/// unknown field number is a newer contract's field and goes on, bytes unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_policy_unknown_fields_are_dead_lettered_by_name_protobuf_ones_forwarded() {
    let v = Vhosts::create("json-policy", &["gw", "th", "he"]);
    let gateway = start_gateway(config(&v)).await;

    let json = |s: &wire::Submission| String::from_utf8(sample::encode(s, Encoding::Json)).unwrap();
    // `"key": value` put first into the object that starts at the first `{` after `after`.
    let with = |s: &wire::Submission, after: &str, key: &str, value: &str| {
        let text = json(s);
        let at = text.find(after).unwrap() + text[text.find(after).unwrap()..].find('{').unwrap();
        format!("{}{{\"{key}\":{value},{}", &text[..at], &text[at + 1..]).into_bytes()
    };
    let deep = format!("{}{}", "[".repeat(25_000), "]".repeat(25_000));
    let (good_json, good_proto) = (good(), good());
    let mut newer_proto = sample::encode(&good_proto, Encoding::Protobuf);
    // Field 99, length-delimited: a field of a newer contract.
    newer_proto.extend_from_slice(&[0x9a, 0x06, 0x03, b'n', b'e', b'w']);
    let (deep_unknown, typo, nested_typo, deep_known) = (good(), good(), good(), good());
    let typo_body = json(&typo).replacen("\"attachments\"", "\"attachements\"", 1);
    assert!(typo_body.contains("attachements"));

    // (label, submission, body, encoding, None = delivered | Some(field))
    type PolicyCase<'a> = (
        &'a str,
        &'a wire::Submission,
        Vec<u8>,
        Encoding,
        Option<&'a str>,
    );
    let cases: Vec<PolicyCase> = vec![
        (
            "good JSON",
            &good_json,
            json(&good_json).into_bytes(),
            Encoding::Json,
            None,
        ),
        (
            "protobuf with a newer field",
            &good_proto,
            newer_proto.clone(),
            Encoding::Protobuf,
            None,
        ),
        (
            "25,000 nested arrays in an unknown field",
            &deep_unknown,
            with(&deep_unknown, "", "extra", &deep),
            Encoding::Json,
            Some("extra"),
        ),
        (
            "a misspelt field",
            &typo,
            typo_body.into_bytes(),
            Encoding::Json,
            Some("attachements"),
        ),
        (
            "a misspelt nested field",
            &nested_typo,
            json(&nested_typo)
                .replacen("\"land\"", "\"lnd\"", 1)
                .into_bytes(),
            Encoding::Json,
            Some("origin.lnd"),
        ),
        (
            "25,000 nested arrays in a known field",
            &deep_known,
            with(&deep_known, "", "region", &deep),
            Encoding::Json,
            Some("region"),
        ),
    ];

    let th = connect(&v.url("th")).await;
    let channel = confirm_channel(&th).await;
    for (_, s, body, encoding, _) in &cases {
        publish(
            &channel,
            "submissions",
            body,
            Some(encoding.content_type()),
            Some(&s.submission_id),
            None,
        )
        .await;
    }
    let expected_dead = cases.iter().filter(|c| c.4.is_some()).count();
    let expected_delivered = cases.len() - expected_dead;

    let gw = connect(&v.url("gw")).await;
    let gw_channel = gw.create_channel().await.unwrap();
    let he = connect(&v.url("he")).await;
    let he_channel = he.create_channel().await.unwrap();
    let mut dead = take_dead_letters(&gw_channel, expected_dead, Duration::from_secs(30)).await;
    let mut delivered = take_backoffice(
        &he_channel,
        "he-darmstadt",
        expected_delivered,
        Duration::from_secs(30),
    )
    .await;
    // Anything more would be a duplicate.
    dead.extend(drain_dead_letters(&gw_channel, Duration::from_secs(1)).await);
    delivered
        .extend(drain_backoffice(&he_channel, "he-darmstadt", Duration::from_millis(300)).await);
    println!(
        "published={} delivered={} dead-lettered={}",
        cases.len(),
        delivered.len(),
        dead.len()
    );

    for (label, s, body, _, field) in &cases {
        let id = s.submission_id.as_str();
        let arrived = delivered
            .iter()
            .filter(|m| m.message_id().as_deref() == Some(id));
        let refused: Vec<&Received> = dead
            .iter()
            .filter(|m| m.message_id().as_deref() == Some(id))
            .collect();
        match field {
            None => {
                let arrived: Vec<&Received> = arrived.collect();
                assert_eq!((arrived.len(), refused.len()), (1, 0), "{label}");
                assert_eq!(&arrived[0].body, body, "{label}: forwarded byte for byte");
            }
            Some(field) => {
                assert_eq!((arrived.count(), refused.len()), (0, 1), "{label}");
                let m = refused[0];
                let detail = m.header("x-ozg-detail").unwrap();
                println!(
                    "{label}: {} {field}: {detail}",
                    m.header("x-ozg-reason").unwrap()
                );
                assert_eq!(
                    m.header("x-ozg-reason").as_deref(),
                    Some("undecodable"),
                    "{label}"
                );
                assert_eq!(m.header("x-ozg-field").as_deref(), Some(*field), "{label}");
                assert!(
                    detail.starts_with(&format!("not a JSON ozg.gateway.v1.Submission: {field}: ")),
                    "{label}: {detail}"
                );
                assert!(!detail.contains("Mustermann"), "{label}: {detail}");
            }
        }
    }
    assert_eq!(delivered.len(), expected_delivered);
    assert_eq!(dead.len(), expected_dead);
    assert!(gateway.is_running());
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounting_every_published_submission_is_delivered_or_dead_lettered_exactly_once() {
    let v = Vhosts::create("acct", &["gw", "th", "he"]);
    let gateway = start_gateway(config(&v)).await;

    const N: usize = 600;
    let th = connect(&v.url("th")).await;
    let he = connect(&v.url("he")).await;
    let th_channel = confirm_channel(&th).await;
    let he_channel = confirm_channel(&he).await;
    let mut ids = Vec::with_capacity(N);
    for i in 0..N {
        let (platform, land, channel) = if i % 2 == 0 {
            ("civento-th", "16", &th_channel)
        } else {
            ("civento-he", "06", &he_channel)
        };
        let region = match i % 5 {
            0 | 1 => "064110000000", // Darmstadt, any service
            2 => "160510000000",     // Erfurt, registration of residence
            3 => "091620000000",     // München: no route
            _ => "06411000",         // Darmstadt by AGS
        };
        let mut s = sample_submission(platform, land, MELDE, region, 1024);
        if i % 7 == 0 {
            s.service.as_mut().unwrap().key = "12345678901234".into(); // bad key
        }
        let encoding = if i % 3 == 0 {
            Encoding::Json
        } else {
            Encoding::Protobuf
        };
        publish(
            channel,
            "submissions",
            &sample::encode(&s, encoding),
            Some(encoding.content_type()),
            Some(&s.submission_id),
            None,
        )
        .await;
        ids.push(s.submission_id);
    }

    let quiet = Duration::from_secs(3);
    let mut arrived: Vec<String> = Vec::new();
    let he_read = he.create_channel().await.unwrap();
    let th_read = th.create_channel().await.unwrap();
    let gw = connect(&v.url("gw")).await;
    let gw_read = gw.create_channel().await.unwrap();
    let mut delivered = 0;
    let mut dead_lettered = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while arrived.len() < N && std::time::Instant::now() < deadline {
        let a = drain_backoffice(&he_read, "he-darmstadt", Duration::from_millis(300)).await;
        let b = drain_backoffice(&th_read, "th-erfurt", Duration::from_millis(300)).await;
        let c = drain_dead_letters(&gw_read, Duration::from_millis(300)).await;
        delivered += a.len() + b.len();
        dead_lettered += c.len();
        arrived.extend(
            a.iter()
                .chain(&b)
                .chain(&c)
                .map(|m| m.message_id().unwrap()),
        );
    }
    // Anything late would be a duplicate: wait a little more.
    let late = drain_backoffice(&he_read, "he-darmstadt", quiet)
        .await
        .len()
        + drain_backoffice(&th_read, "th-erfurt", Duration::from_millis(200))
            .await
            .len()
        + drain_dead_letters(&gw_read, Duration::from_millis(200))
            .await
            .len();

    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &arrived {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let lost = ids
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .count();
    let twice = counts.values().filter(|&&c| c > 1).count() + late;
    let unexpected = counts
        .keys()
        .filter(|id| !ids.iter().any(|i| i == *id))
        .count();
    println!(
        "published={N} delivered={delivered} dead-lettered={dead_lettered} lost={lost} duplicated={twice} unexpected={unexpected}"
    );
    assert_eq!(lost, 0);
    assert_eq!(twice, 0);
    assert_eq!(unexpected, 0);
    assert_eq!(delivered + dead_lettered, N);
    // i % 5 == 3 (no route) or i % 7 == 0 (bad key) are dead-lettered, the rest delivered.
    let expected_dead = (0..N).filter(|i| i % 5 == 3 || i % 7 == 0).count();
    assert_eq!(dead_lettered, expected_dead);
    assert_eq!(v.queue_depth("th", "submissions").await, 0);
    assert_eq!(v.queue_depth("he", "submissions").await, 0);
    gateway.stop().await;
}
