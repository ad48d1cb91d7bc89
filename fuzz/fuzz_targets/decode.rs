//! Fuzzes the ingress path up to routing: content type → `Encoding`, `envelope::decode`, and
//! on success `envelope::validate` against a fixed platform and the embedded directory.
//!
//! Input layout: the first byte picks the content type (see `CONTENT_TYPES`), the rest is the
//! body. Nothing may panic; a decoded submission must survive a protobuf round trip unchanged
//! and validate the same way afterwards.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ozg_gateway::model::{Platform, StatusFormat};
use ozg_gateway::municipalities::Municipalities;
use ozg_gateway::envelope::{self, Encoding};

/// Indexed by the first input byte modulo the length.
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
        land: "06".parse().expect("Land 06"),
        broker: 0,
        ingress_queue: "ozg.submissions".into(),
        status_exchange: "ozg.status".into(),
        status_routing_key: "civento-he".into(),
        status_format: StatusFormat::Json,
        prefetch: 1,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
    let Ok(encoding) = Encoding::from_content_type(content_type) else {
        return;
    };
    let Ok(submission) = envelope::decode(encoding, body) else {
        return;
    };
    let verdict = envelope::validate(&submission, platform(), directory(), true);
    if let Err(e) = &verdict {
        // Building the reason's texts must not panic either.
        let _ = (e.to_string(), e.field());
    }

    // What deduplication fingerprints: the canonical protobuf encoding.
    let canonical = prost::Message::encode_to_vec(&submission);
    let again = envelope::decode(Encoding::Protobuf, &canonical)
        .expect("the protobuf encoding of a decoded submission decodes");
    assert_eq!(
        again, submission,
        "protobuf round trip changed the submission"
    );
    assert_eq!(
        envelope::validate(&again, platform(), directory(), true),
        verdict,
        "validation differs after a round trip"
    );
});
