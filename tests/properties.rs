#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property tests for the key types and the envelope codec, and the fuzzers' seeds and crash
//! reproducers replayed as regression tests. No broker needed.
//!
//! The seeds under `fuzz/seeds/decode/` use the layout of the `decode` fuzz target
//! (`fuzz/fuzz_targets/decode.rs`): the first byte picks the content type from
//! [`CONTENT_TYPES`], the rest is the body. Regenerate them with
//! `cargo run --example write_fuzz_seeds`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ozg_gateway::envelope::{self, Encoding, Envelope};
use ozg_gateway::model::{
    Ags, Ars, KeyError, Land, Level, RegionPrefix, ServiceKey, ServiceSelector,
};
use ozg_gateway::model::{Platform, StatusFormat};
use ozg_gateway::municipalities::Municipalities;
use ozg_gateway::sample;
use ozg_gateway::wire::v1 as wire;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// The decode fuzz target's path, replayed on its seeds and crash reproducers.

/// Must stay equal to `CONTENT_TYPES` in `fuzz/fuzz_targets/decode.rs`.
const CONTENT_TYPES: [Option<&str>; 8] = [
    Some("application/x-protobuf"),
    Some("application/json"),
    None,
    Some("text/plain"),
    Some("application/json; charset=utf-8"),
    Some("application/vnd.google.protobuf"),
    Some(" Application/Protobuf ;x=1"),
    Some(""),
];

fn directory() -> &'static Municipalities {
    static DIRECTORY: OnceLock<Municipalities> = OnceLock::new();
    DIRECTORY.get_or_init(|| Municipalities::embedded().expect("the embedded directory loads"))
}

fn platform() -> &'static Platform {
    static PLATFORM: OnceLock<Platform> = OnceLock::new();
    PLATFORM.get_or_init(|| Platform {
        id: "civento-he".into(),
        land: "06".parse().unwrap(),
        broker: 0,
        ingress_queue: "ozg.submissions".into(),
        status_exchange: "ozg.status".into(),
        status_routing_key: "civento-he".into(),
        status_format: StatusFormat::Json,
        prefetch: 1,
    })
}

/// How far one fuzz input got.
#[derive(Debug)]
enum Stage {
    Empty,
    ContentType,
    Decode,
    Invalid,
    Valid(Envelope),
}

/// The same steps and checks as the `decode` fuzz target.
fn decode_path(data: &[u8]) -> Stage {
    let Some((&selector, body)) = data.split_first() else {
        return Stage::Empty;
    };
    let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
    let Ok(encoding) = Encoding::from_content_type(content_type) else {
        return Stage::ContentType;
    };
    let Ok(submission) = envelope::decode(encoding, body) else {
        return Stage::Decode;
    };
    let verdict = envelope::validate(&submission, platform(), directory(), true);
    if let Err(e) = &verdict {
        let _ = (e.to_string(), e.field());
    }
    let canonical = prost::Message::encode_to_vec(&submission);
    let again = envelope::decode(Encoding::Protobuf, &canonical).unwrap();
    assert_eq!(
        again, submission,
        "protobuf round trip changed the submission"
    );
    assert_eq!(
        envelope::validate(&again, platform(), directory(), true),
        verdict
    );
    match verdict {
        Ok(envelope) => Stage::Valid(envelope),
        Err(_) => Stage::Invalid,
    }
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn decode_seeds_and_regressions_never_panic() {
    let seeds = files_in(&fuzz_dir().join("seeds/decode"));
    assert!(
        seeds.len() >= 5,
        "expected the seed corpus in fuzz/seeds/decode, found {} files",
        seeds.len()
    );
    let regressions = files_in(&fuzz_dir().join("regressions/decode"));
    let mut failures = Vec::new();
    for path in seeds.iter().chain(&regressions) {
        let data = std::fs::read(path).unwrap();
        match catch_unwind(AssertUnwindSafe(|| decode_path(&data))) {
            Err(_) => failures.push(format!("{}: panicked", path.display())),
            Ok(stage) => {
                // Seeds named valid-* must stay valid, or they no longer lead the fuzzer
                // past validation.
                let name = path.file_name().unwrap().to_string_lossy();
                match stage {
                    Stage::Valid(envelope) => assert_eq!(envelope.origin_land.code(), 6),
                    _ if name.starts_with("valid-") => {
                        failures.push(format!("{}: expected valid, got {stage:?}", path.display()))
                    }
                    _ => {}
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------------------------
// Key types.

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any 12-digit string whose first two digits are a Land code.
fn ars_string() -> impl Strategy<Value = String> {
    (1u8..=16, "[0-9]{10}").prop_map(|(land, rest)| format!("{land:02}{rest}"))
}

fn is_leika(s: &str) -> bool {
    s.len() == 14 && s.starts_with("99") && s.bytes().all(|b| b.is_ascii_digit())
}

/// Strings that miss `^99\d{12}$` by a little: wrong length, a non-digit, another prefix.
fn near_miss_service_key() -> impl Strategy<Value = String> {
    let wrong_length = prop_oneof!["99[0-9]{0,11}", "99[0-9]{13,20}", "[0-9]{0,13}"];
    let non_digit = ("[0-9]{12}", 0usize..14, "[^0-9]").prop_map(|(digits, at, bad)| {
        let mut s = format!("99{digits}");
        s.replace_range(at..=at, &bad);
        s
    });
    let other_prefix = ("([0-8][0-9]|9[0-8])", "[0-9]{12}").prop_map(|(p, d)| format!("{p}{d}"));
    let padded = prop_oneof![
        "99[0-9]{12}".prop_map(|s| format!(" {s}")),
        "99[0-9]{12}".prop_map(|s| format!("{s}\n")),
        "99[0-9]{12}".prop_map(|s| format!("+{s}")),
        "[０-９]{14}",
    ];
    prop_oneof![wrong_length, non_digit, other_prefix, padded]
}

/// Strings near what the parsers accept, and anything at all.
fn key_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,16}",
        "[0-9A-Za-z*+ -]{0,16}",
        "[0-9]{1,4}[^0-9][0-9]{0,12}",
        any::<String>(),
        "\\PC{0,40}",
    ]
}

fn every_parser(s: &str) {
    let _ = s
        .parse::<Ars>()
        .map(|a| (a.to_string(), a.to_ags().to_string()));
    let _ = s.parse::<Ags>().map(|a| a.to_string());
    let _ = s.parse::<RegionPrefix>().map(|p| {
        let mut p = p;
        while let Some(up) = p.parent() {
            p = up;
        }
        p.to_string()
    });
    let _ = s.parse::<ServiceKey>().map(|k| k.to_string());
    let _ = s.parse::<ServiceSelector>().map(|k| k.to_string());
    let _ = s.parse::<Land>().map(|l| format!("{l:?}"));
    let _ = Land::parse_code(s).map(|l| l.name());
    // A wrong length is one the parser does not take, counted in characters.
    for (err, allowed) in [
        (s.parse::<Ars>().err(), &[12][..]),
        (s.parse::<Ags>().err(), &[8]),
        (s.parse::<RegionPrefix>().err(), &[2, 3, 5, 9, 12]),
        (s.parse::<ServiceKey>().err(), &[14]),
    ] {
        if let Some(KeyError::WrongLength { len, .. }) = err {
            assert_eq!(len, s.chars().count(), "{s:?}");
            assert!(!allowed.contains(&len), "{s:?}: {len} is an allowed length");
        }
    }
    for err in [
        s.parse::<Ars>().err(),
        s.parse::<Ags>().err(),
        s.parse::<RegionPrefix>().err(),
        s.parse::<ServiceKey>().err(),
        s.parse::<Land>().err(),
    ]
    .into_iter()
    .flatten()
    {
        let shown = err.to_string();
        assert!(shown.chars().count() < 200, "{shown}");
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_ars_with_a_land_code_parses_and_round_trips(s in ars_string()) {
        let ars: Ars = s.parse().unwrap();
        prop_assert_eq!(ars.to_string(), s.as_str());
        prop_assert_eq!(ars.land().map(Land::code), Some(s[..2].parse::<u8>().unwrap()));
    }

    #[test]
    fn ars_outside_the_land_codes_is_refused(
        land in prop_oneof![Just(0u8), 17u8..=99],
        rest in "[0-9]{10}",
    ) {
        let s = format!("{land:02}{rest}");
        prop_assert!(s.parse::<Ars>().is_err());
        prop_assert!(s.parse::<RegionPrefix>().is_err());
    }

    #[test]
    fn ags_is_kreis_plus_gemeinde_digits_of_the_ars(s in ars_string()) {
        let ars: Ars = s.parse().unwrap();
        let expected = format!("{}{}", &s[0..5], &s[9..12]);
        prop_assert_eq!(ars.to_ags().to_string(), expected.as_str());
        prop_assert_eq!(expected.parse::<Ags>().unwrap(), ars.to_ags());
    }

    #[test]
    fn region_prefix_parents_are_prefixes_of_the_ars(s in ars_string()) {
        let ars: Ars = s.parse().unwrap();
        let mut prefix: RegionPrefix = s.parse().unwrap();
        prop_assert_eq!(prefix.as_ars(), Some(ars));
        let mut chain = vec![prefix];
        while let Some(up) = prefix.parent() {
            chain.push(up);
            prefix = up;
        }
        let lengths: Vec<usize> = chain.iter().map(|p| p.to_string().len()).collect();
        prop_assert_eq!(lengths, vec![12, 9, 5, 3, 2]);
        for (p, level) in chain.iter().zip(Level::WALK) {
            let shown = p.to_string();
            prop_assert!(s.starts_with(&shown), "{} is not a prefix of {}", shown, s);
            prop_assert_eq!(p.level(), level);
            prop_assert_eq!(*p, ars.prefix(level));
            prop_assert_eq!(shown.parse::<RegionPrefix>().unwrap(), *p);
            prop_assert_eq!(p.land(), ars.land());
        }
    }

    #[test]
    fn service_key_accepts_every_leika_key(s in "99[0-9]{12}") {
        let key: ServiceKey = s.parse().unwrap();
        prop_assert_eq!(key.to_string(), s.as_str());
        prop_assert_eq!(s.parse::<ServiceSelector>().unwrap(), ServiceSelector::Exact(key));
    }

    #[test]
    fn service_key_refuses_near_misses(s in near_miss_service_key()) {
        prop_assert!(!is_leika(&s), "the strategy made a LeiKa key: {:?}", s);
        prop_assert!(s.parse::<ServiceKey>().is_err(), "{:?} was accepted", s);
    }

    #[test]
    fn service_key_accepts_exactly_the_pattern(s in key_like()) {
        prop_assert_eq!(s.parse::<ServiceKey>().is_ok(), is_leika(&s), "{:?}", s);
    }

    #[test]
    fn no_parser_panics_on_any_string(s in key_like()) {
        every_parser(&s);
    }

    #[test]
    fn what_parses_prints_back_as_given(s in key_like()) {
        if let Ok(ars) = s.parse::<Ars>() {
            prop_assert_eq!(ars.to_string(), s.as_str());
        }
        if let Ok(ags) = s.parse::<Ags>() {
            prop_assert_eq!(ags.to_string(), s.as_str());
        }
        if let Ok(prefix) = s.parse::<RegionPrefix>() {
            prop_assert_eq!(prefix.to_string(), s.as_str());
        }
        if let Ok(land) = Land::parse_code(&s) {
            prop_assert_eq!(land.to_string(), s.as_str());
        }
    }
}

#[test]
fn every_gemeinde_maps_back_from_its_ags() {
    let directory = directory();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for unit in directory.units() {
        let Some(ars) = unit.prefix.as_ars() else {
            continue;
        };
        checked += 1;
        let back = directory.ars_for_ags(ars.to_ags());
        if back != Some(ars) {
            wrong.push(format!(
                "{ars} ({}) → AGS {} → {back:?}",
                unit.name,
                ars.to_ags()
            ));
        }
        // And through the string forms, as a platform sends them.
        let ags: Ags = ars.to_ags().to_string().parse().unwrap();
        assert_eq!(ags, ars.to_ags());
    }
    assert_eq!(checked, directory.n_gemeinden());
    assert!(wrong.is_empty(), "{} Gemeinden: {wrong:#?}", wrong.len());
}

// ---------------------------------------------------------------------------------------------
// Protobuf and JSON mean the same.

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "\\PC{0,12}", any::<String>()]
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..48)
}

/// Timestamps the proto3 JSON mapping can express: 0001-01-01T00:00:00Z … 9999-12-31T23:59:59Z.
fn timestamp() -> impl Strategy<Value = pbjson_types::Timestamp> {
    (
        -62_135_596_800i64..=253_402_300_799,
        prop_oneof![Just(0i32), 0i32..1_000_000_000],
    )
        .prop_map(|(seconds, nanos)| pbjson_types::Timestamp { seconds, nanos })
}

fn attachment() -> impl Strategy<Value = wire::Attachment> {
    (
        (text(), text(), text(), text()),
        (any::<u64>(), text(), bytes()),
    )
        .prop_map(
            |((attachment_id, file_name, media_type, purpose), (size, sha512, content))| {
                wire::Attachment {
                    attachment_id,
                    file_name,
                    media_type,
                    purpose,
                    size,
                    sha512,
                    content,
                }
            },
        )
}

fn submission() -> impl Strategy<Value = wire::Submission> {
    let origin = proptest::option::of(
        (text(), text()).prop_map(|(platform_id, land)| wire::Origin { platform_id, land }),
    );
    let service =
        proptest::option::of((text(), text()).prop_map(|(key, name)| wire::Service { key, name }));
    let form_data = proptest::option::of((text(), text(), bytes()).prop_map(
        |(media_type, schema_uri, content)| wire::FormData {
            media_type,
            schema_uri,
            content,
        },
    ));
    let reply_channel = proptest::option::of(
        (text(), text()).prop_map(|(kind, address)| wire::ReplyChannel { kind, address }),
    );
    (
        (text(), text(), origin, service, text()),
        (
            proptest::option::of(timestamp()),
            form_data,
            proptest::collection::vec(attachment(), 0..3),
            reply_channel,
            text(),
        ),
    )
        .prop_map(
            |(
                (submission_id, case_id, origin, service, region),
                (submitted_at, form_data, attachments, reply_channel, sender_reference),
            )| wire::Submission {
                submission_id,
                case_id,
                origin,
                service,
                region,
                submitted_at,
                form_data,
                attachments,
                reply_channel,
                sender_reference,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..config() })]

    #[test]
    fn protobuf_and_json_decode_to_the_same_submission(s in submission()) {
        let proto = sample::encode(&s, Encoding::Protobuf);
        let json = sample::encode(&s, Encoding::Json);
        prop_assert!(!json.is_empty(), "JSON encoding failed");
        let from_proto = envelope::decode(Encoding::Protobuf, &proto).unwrap();
        let from_json = envelope::decode(Encoding::Json, &json).unwrap();
        prop_assert_eq!(&from_proto, &from_json);
        prop_assert_eq!(&from_proto, &s);
        // And validation cannot tell them apart.
        prop_assert_eq!(
            envelope::validate(&from_proto, platform(), directory(), true),
            envelope::validate(&from_json, platform(), directory(), true)
        );
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(
        data in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        decode_path(&data);
    }
}
