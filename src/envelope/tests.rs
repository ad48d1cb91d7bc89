use super::*;

fn platform() -> Platform {
    Platform {
        id: "civento-he".into(),
        land: "06".parse().unwrap(),
        broker: 0,
        ingress_queue: "q".into(),
        status_exchange: "s".into(),
        status_routing_key: "civento-he".into(),
        status_format: crate::model::StatusFormat::Json,
        prefetch: 1,
    }
}

pub(crate) fn good() -> wire::Submission {
    let content = b"%PDF-1.7 attachment".to_vec();
    wire::Submission {
        submission_id: "0b5f6a8e-8f7e-4c1e-9a57-1f4e2b7c9d10".into(),
        case_id: "case-1".into(),
        origin: Some(wire::Origin {
            platform_id: "civento-he".into(),
            land: "06".into(),
        }),
        service: Some(wire::Service {
            key: "99115005104000".into(),
            name: "Anmeldung einer Wohnung".into(),
        }),
        region: "160510000000".into(),
        submitted_at: Some(pbjson_types::Timestamp {
            seconds: 1_790_000_000,
            nanos: 0,
        }),
        form_data: Some(wire::FormData {
            media_type: "application/json".into(),
            schema_uri: "urn:xoev-de:fim:standard:xfall".into(),
            content: b"{\"name\":\"Erika\"}".to_vec(),
        }),
        attachments: vec![crate::sample::pdf_attachment("a1", "scan.pdf", content)],
        reply_channel: None,
        sender_reference: String::new(),
    }
}

fn check(change: impl FnOnce(&mut wire::Submission), expected: &str) {
    let municipalities = Municipalities::embedded().unwrap();
    let mut s = good();
    change(&mut s);
    let err = validate(&s, &platform(), &municipalities, true).unwrap_err();
    let shown = format!("{} [{}]", err, err.field());
    assert_eq!(shown, expected);
}

#[test]
fn a_good_submission_validates() {
    let municipalities = Municipalities::embedded().unwrap();
    let e = validate(&good(), &platform(), &municipalities, true).unwrap();
    assert_eq!(e.ars.to_string(), "160510000000");
    assert_eq!(e.service.to_string(), "99115005104000");
    assert_eq!(e.case_id.as_deref(), Some("case-1"));
}

#[test]
fn an_ags_is_converted_through_the_municipality_directory() {
    let municipalities = Municipalities::embedded().unwrap();
    let mut s = good();
    s.region = "06431001".into();
    let e = validate(&s, &platform(), &municipalities, true).unwrap();
    assert_eq!(e.ars.to_string(), "064310001001");
}

#[test]
fn each_problem_names_its_field() {
    check(
        |s| s.submission_id.clear(),
        "submission_id is missing [submission_id]",
    );
    check(
        |s| s.submission_id = "42".into(),
        "submission_id: is not a UUID [submission_id]",
    );
    check(|s| s.origin = None, "origin is missing [origin]");
    check(
        |s| s.origin.as_mut().unwrap().platform_id.clear(),
        "origin.platform_id is missing [origin.platform_id]",
    );
    check(
        |s| s.origin.as_mut().unwrap().land.clear(),
        "origin.land is missing [origin.land]",
    );
    check(
        |s| s.origin.as_mut().unwrap().land = "6".into(),
        "origin.land: \"6\" is not a Land code (01 … 16, or SH, HH, NI, HB, NW, HE, RP, BW, BY, SL, BE, BB, MV, SN, ST, TH) [origin.land]",
    );
    check(
        |s| s.origin.as_mut().unwrap().platform_id = "civento-th".into(),
        "origin.platform_id is \"civento-th\", but the message came from the queue of platform \"civento-he\" (platform_id \"civento-he\") [origin.platform_id]",
    );
    check(
        |s| s.origin.as_mut().unwrap().land = "16".into(),
        "origin.land is \"16\", but the message came from the queue of platform \"civento-he\" (land \"06\") [origin.land]",
    );
    check(|s| s.service = None, "service is missing [service]");
    check(
        |s| s.service.as_mut().unwrap().key.clear(),
        "service.key is missing [service.key]",
    );
    check(
        |s| s.service.as_mut().unwrap().key = "12115005104000".into(),
        "service.key: \"12115005104000\" must start with 99 (LeiKa Leistungsschlüssel, ^99\\d{12}$) [service.key]",
    );
    check(|s| s.region.clear(), "region is missing [region]");
    check(
        |s| s.region = "1605100000".into(),
        "region: \"1605100000\" has 10 characters, expected 12 digits (ARS); expected a 12-digit ARS or an 8-digit AGS [region]",
    );
    check(
        |s| s.region = "160519999999".into(),
        "region 160519999999 is not in the municipality directory [region]",
    );
    check(
        |s| s.region = "16051999".into(),
        "region 16051999 (AGS) is not in the municipality directory [region]",
    );
    check(
        |s| s.submitted_at = None,
        "submitted_at is missing [submitted_at]",
    );
    check(|s| s.form_data = None, "form_data is missing [form_data]");
    check(
        |s| s.form_data.as_mut().unwrap().media_type.clear(),
        "form_data.media_type is missing [form_data.media_type]",
    );
    check(
        |s| s.form_data.as_mut().unwrap().schema_uri.clear(),
        "form_data.schema_uri is missing [form_data.schema_uri]",
    );
    check(
        |s| s.form_data.as_mut().unwrap().content.clear(),
        "form_data.content is missing [form_data.content]",
    );
    check(
        |s| s.attachments[0].attachment_id.clear(),
        "attachments[0].attachment_id is missing [attachments[0].attachment_id]",
    );
    check(
        |s| s.attachments[0].file_name.clear(),
        "attachments[0].file_name is missing [attachments[0].file_name]",
    );
    check(
        |s| s.attachments[0].media_type.clear(),
        "attachments[0].media_type is missing [attachments[0].media_type]",
    );
    check(
        |s| s.attachments[0].sha512.clear(),
        "attachments[0].sha512 is missing [attachments[0].sha512]",
    );
    check(
        |s| s.attachments[0].sha512 = "ab".into(),
        "attachments[0].sha512: is not 128 hexadecimal digits [attachments[0].sha512]",
    );
    check(
        |s| s.attachments[0].size = 3,
        "attachments[0].size: says 3 bytes, the content has 19 [attachments[0].size]",
    );
    check(
        |s| s.attachments[0].content[0] ^= 1,
        "attachments[0].sha512: does not match the content [attachments[0].sha512]",
    );
    check(
        |s| {
            let copy = s.attachments[0].clone();
            s.attachments.push(copy);
        },
        "attachments[1].attachment_id: is used by another attachment too [attachments[1].attachment_id]",
    );
}

#[test]
fn a_region_is_told_apart_by_characters_not_bytes() {
    // Regression: eight full-width digits (24 bytes) were parsed as an ARS and refused
    // as "has 8 characters, expected 12 digits (ARS)".
    check(
        |s| s.region = "０６４３１００１".into(),
        "region: the value must consist of digits only; expected a 12-digit ARS or an 8-digit AGS [region]",
    );
    check(
        |s| s.region = "ää1234".into(),
        "region: the value has 6 characters, expected 12 digits (ARS); expected a 12-digit ARS or an 8-digit AGS [region]",
    );
}

#[test]
fn content_types() {
    let cases: &[(Option<&str>, Result<Encoding, &str>)] = &[
        (Some("application/x-protobuf"), Ok(Encoding::Protobuf)),
        (Some("application/protobuf"), Ok(Encoding::Protobuf)),
        (Some("application/json; charset=utf-8"), Ok(Encoding::Json)),
        (Some("Application/JSON"), Ok(Encoding::Json)),
        (None, Err("content_type is missing")),
        (Some(""), Err("content_type is missing")),
        (
            Some("text/plain"),
            Err("content_type \"text/plain\" is not supported"),
        ),
    ];
    for (input, expected) in cases {
        let got = Encoding::from_content_type(*input).map_err(|e| e.to_string());
        match (got, expected) {
            (Ok(a), Ok(b)) => assert_eq!(a, *b, "{input:?}"),
            (Err(a), Err(b)) => assert!(a.starts_with(b), "{input:?}: {a}"),
            (got, _) => panic!("{input:?}: got {got:?}"),
        }
    }
}

#[test]
fn json_and_protobuf_mean_the_same() {
    let s = good();
    let json = serde_json::to_vec(&s).unwrap();
    let text = String::from_utf8(json.clone()).unwrap();
    assert!(
        text.contains("\"submissionId\":\"0b5f6a8e"),
        "canonical lowerCamelCase names: {text}"
    );
    assert!(
        text.contains("\"submittedAt\":\"2026-"),
        "RFC 3339 timestamps: {text}"
    );
    let from_json = decode(Encoding::Json, &json).unwrap();
    let from_proto = decode(Encoding::Protobuf, &prost::Message::encode_to_vec(&s)).unwrap();
    assert_eq!(from_json, s);
    assert_eq!(from_proto, s);
}

/// A decode's expected verdict: `Ok`, or the field and (part of) the message.
type Verdict = Result<(), (&'static str, &'static str)>;

/// The JSON of `good()`, changed by `change`, as the decoder sees it: `Ok` or the
/// field and the message of its error.
fn json_verdict(change: impl FnOnce(&mut serde_json::Value)) -> Result<(), (String, String)> {
    let mut value = serde_json::to_value(good()).unwrap();
    change(&mut value);
    let body = serde_json::to_vec(&value).unwrap();
    decode(Encoding::Json, &body)
        .map(|_| ())
        .map_err(|e| (e.field().unwrap_or_default(), e.to_string()))
}

/// `[[[…]]]`, `depth` arrays deep (serde_json's own `Value` stops at 128; deeper
/// texts are built by hand in `json_policy_texts_that_are_no_object_tree`).
fn nested(depth: usize) -> serde_json::Value {
    let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn json_policy_unknown_fields_are_refused_by_their_path() {
    type Change = Box<dyn FnOnce(&mut serde_json::Value)>;
    let set = |path: &'static str, value: serde_json::Value| -> Change {
        Box::new(move |v: &mut serde_json::Value| {
            let (parent, key) = path.rsplit_once('/').unwrap_or(("", path));
            let target = if parent.is_empty() {
                v
            } else {
                v.pointer_mut(parent).unwrap()
            };
            target[key] = value;
        })
    };
    let rename = |parent: &'static str, from: &'static str, to: &'static str| -> Change {
        Box::new(move |v: &mut serde_json::Value| {
            let object = v.pointer_mut(parent).unwrap().as_object_mut().unwrap();
            let value = object.remove(from).unwrap();
            object.insert(to.to_owned(), value);
        })
    };
    let unknown = "unknown field (the contract has none of this name; misspelt?)";
    let cases: Vec<(&str, Change, Verdict)> = vec![
        ("as it is", Box::new(|_| {}), Ok(())),
        (
            "proto field names instead of JSON names",
            rename("", "submissionId", "submission_id"),
            Ok(()),
        ),
        (
            "explicit null for an optional message",
            set("/replyChannel", serde_json::Value::Null),
            Ok(()),
        ),
        (
            "an unknown top-level field",
            set("/priority", serde_json::json!({"level": 1})),
            Err(("priority", unknown)),
        ),
        (
            "a misspelt field whose data would vanish",
            rename("", "attachments", "attachements"),
            Err(("attachements", unknown)),
        ),
        (
            "a misspelt nested field",
            rename("/origin", "land", "lnd"),
            Err(("origin.lnd", unknown)),
        ),
        (
            "a misspelt field of an attachment",
            rename("/attachments/0", "fileName", "filename"),
            Err(("attachments[0].filename", unknown)),
        ),
        (
            "a key that is personal data",
            set("/Erika Mustermann", serde_json::json!(1)),
            Err(("?", unknown)),
        ),
        (
            "a key that is a capitalised name",
            set("/formData/Mustermann", serde_json::json!("x")),
            Err(("formData.?", unknown)),
        ),
        (
            "a wrong JSON type",
            set("/submissionId", serde_json::json!(42)),
            Err(("submissionId", "has the wrong JSON type")),
        ),
        (
            "nested arrays where a string belongs",
            set("/region", nested(100)),
            Err(("region", "has the wrong JSON type")),
        ),
        (
            "nested arrays where an attachment belongs",
            set("/attachments", nested(100)),
            Err(("attachments[0]", "has the wrong JSON type")),
        ),
        (
            "content that is not base64",
            set("/formData/content", serde_json::json!("Erika Mustermann!")),
            Err(("formData.content", "has a bad value or format")),
        ),
        (
            "a time that is none",
            set("/submittedAt", serde_json::json!("yesterday")),
            Err(("submittedAt", "has a bad value or format")),
        ),
        (
            "a size that is negative",
            set("/attachments/0/size", serde_json::json!(-1)),
            Err(("attachments[0].size", "has a bad value or format")),
        ),
    ];
    for (label, change, expected) in cases {
        let got = json_verdict(change);
        match (&got, &expected) {
            (Ok(()), Ok(())) => {}
            (Err((field, message)), Err((want_field, want_problem))) => {
                assert_eq!(field, want_field, "{label}: {message}");
                assert!(
                    message.starts_with("not a JSON ozg.gateway.v1.Submission: ")
                        && message.contains(&format!("{field}: {want_problem} at line 1, column ")),
                    "{label}: {message}"
                );
                assert!(!message.contains("Mustermann"), "{label}: {message}");
            }
            _ => panic!("{label}: got {got:?}, expected {expected:?}"),
        }
    }
}

#[test]
fn json_policy_texts_that_are_no_object_tree() {
    let good = serde_json::to_string(&good()).unwrap();
    let deep = |depth: usize, at: &str| {
        good.replacen(
            "{",
            &format!("{{\"{at}\":{}{},", "[".repeat(depth), "]".repeat(depth)),
            1,
        )
    };
    let cases: Vec<(&str, String, Option<&str>, &str)> = vec![
        // 25,000 nested arrays: refused at the key, the value is never parsed.
        (
            "deep arrays in an unknown field",
            deep(25_000, "extra"),
            Some("extra"),
            "unknown field",
        ),
        (
            "deep arrays in a known field",
            deep(25_000, "region"),
            Some("region"),
            "has the wrong JSON type",
        ),
        (
            "a field given twice",
            good.replacen("{", "{\"region\":\"064110000000\",", 1),
            Some("region"),
            "given twice",
        ),
        (
            "text after the object",
            format!("{good} x"),
            None,
            "malformed JSON",
        ),
        (
            "cut short",
            good[..good.len() / 2].to_owned(),
            None,
            "JSON ends early",
        ),
        (
            "not JSON at all",
            "Erika Mustermann".to_owned(),
            None,
            "malformed JSON",
        ),
    ];
    for (label, body, field, problem) in cases {
        let started = std::time::Instant::now();
        let err = decode(Encoding::Json, body.as_bytes()).unwrap_err();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{label}"
        );
        let message = err.to_string();
        if let Some(field) = field {
            assert_eq!(err.field().as_deref(), Some(field), "{label}: {message}");
        }
        assert!(message.contains(problem), "{label}: {message}");
        assert!(!message.contains("Mustermann"), "{label}: {message}");
    }
}

#[test]
fn protobuf_policy_unknown_field_numbers_are_skipped() {
    // Field 99, length-delimited: what a newer contract's field looks like to this one.
    let mut body = prost::Message::encode_to_vec(&good());
    body.extend_from_slice(&[0x9a, 0x06, 0x03, b'n', b'e', b'w']);
    assert_eq!(decode(Encoding::Protobuf, &body).unwrap(), good());
}

#[test]
fn receipts_follow_the_same_policy() {
    let cases: &[(&str, Verdict)] = &[
        (
            r#"{"submissionId":"x","kind":"RECEIPT_KIND_ACCEPTED"}"#,
            Ok(()),
        ),
        (
            r#"{"submissionId":"x","kind":"RECEIPT_KIND_ACCEPTED","notes":"a"}"#,
            Err(("notes", "unknown field")),
        ),
        (
            r#"{"submissionId":"x","kind":"RECEIPT_KIND_ACCEPTD"}"#,
            Err(("kind", "is not one of the values the contract defines")),
        ),
        (
            r#"{"submissionId":"x","problems":[{"title":"t","detial":"d"}]}"#,
            Err(("problems[0].detial", "unknown field")),
        ),
    ];
    for (body, expected) in cases {
        let got = decode_message::<wire::Receipt>(Encoding::Json, body.as_bytes())
            .map(|_| ())
            .map_err(|e| (e.field().unwrap_or_default(), e.to_string()));
        match (&got, expected) {
            (Ok(()), Ok(())) => {}
            (Err((field, message)), Err((want_field, problem))) => {
                assert_eq!(field, want_field, "{body}: {message}");
                assert!(
                    message.starts_with("not a JSON ozg.gateway.v1.Receipt: ")
                        && message.contains(problem),
                    "{body}: {message}"
                );
            }
            _ => panic!("{body}: got {got:?}, expected {expected:?}"),
        }
    }
}

#[test]
fn decode_errors_never_quote_content() {
    let body = br#"{"submissionId": "x", "formData": {"content": "not base64: Erika Mustermann"}}"#;
    let err = decode(Encoding::Json, body).unwrap_err().to_string();
    assert!(!err.contains("Mustermann"), "{err}");
    assert!(err.contains("line 1"), "{err}");
    let err = decode(Encoding::Json, b"Erika Mustermann")
        .unwrap_err()
        .to_string();
    assert!(!err.contains("Mustermann"), "{err}");
    let err = decode(Encoding::Protobuf, b"\xff\xff\xff\xffErika")
        .unwrap_err()
        .to_string();
    assert!(!err.contains("Erika"), "{err}");
}
