//! Decode and validate a submission envelope: bytes → `wire::v1::Submission` → [`Envelope`].
//!
//! The gateway reads only the metadata it routes on. Form data and attachment content stay
//! opaque; attachment sizes and SHA-512 hashes are checked for integrity, the content itself
//! is never logged, stored or put into an error message. Error messages from the JSON parser
//! can quote values, so they are reduced to position and category before use.

use std::collections::HashSet;

use sha2::{Digest, Sha512};
use uuid::Uuid;

use crate::model::Platform;
use crate::model::{Ags, Ars, KeyError, Land, ServiceKey};
use crate::municipalities::Municipalities;
use crate::wire::v1 as wire;

/// How the body is encoded, told by the AMQP content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

pub const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";
pub const CONTENT_TYPE_JSON: &str = "application/json";

impl Encoding {
    pub fn from_content_type(content_type: Option<&str>) -> Result<Encoding, DecodeError> {
        let Some(raw) = content_type.map(str::trim).filter(|c| !c.is_empty()) else {
            return Err(DecodeError::MissingContentType);
        };
        let essence = raw
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/x-protobuf"
            | "application/protobuf"
            | "application/vnd.google.protobuf" => Ok(Encoding::Protobuf),
            "application/json" => Ok(Encoding::Json),
            _ => Err(DecodeError::UnsupportedContentType(
                raw.chars().take(80).collect(),
            )),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => CONTENT_TYPE_PROTOBUF,
            Encoding::Json => CONTENT_TYPE_JSON,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    Oversized { size: usize, limit: usize },
    #[error("content_type is missing; use application/x-protobuf or application/json")]
    MissingContentType,
    #[error("content_type {0:?} is not supported; use application/x-protobuf or application/json")]
    UnsupportedContentType(String),
    #[error("not a protobuf {message}: {detail}")]
    Protobuf {
        message: &'static str,
        detail: String,
    },
    /// `field` is the path of the offending key as written in the message
    /// (`origin.platfromId`, `attachments[0].size`), when the problem lies in one.
    #[error("not a JSON {message}: {}{problem} at line {line}, column {column}",
        field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
    Json {
        message: &'static str,
        field: Option<String>,
        problem: &'static str,
        line: usize,
        column: usize,
    },
}

impl DecodeError {
    /// The offending field's path, when the error lies in one.
    pub fn field(&self) -> Option<String> {
        match self {
            DecodeError::Json { field, .. } => field.clone(),
            _ => None,
        }
    }
}

/// A wire message that arrives from outside (a platform's submission, a back office's
/// receipt), named in decode errors.
pub trait WireMessage: prost::Message + Default + serde::de::DeserializeOwned {
    const NAME: &'static str;
}

impl WireMessage for wire::Submission {
    const NAME: &'static str = "ozg.gateway.v1.Submission";
}

impl WireMessage for wire::Receipt {
    const NAME: &'static str = "ozg.gateway.v1.Receipt";
}

/// Decodes a body whose size the caller has already checked.
pub fn decode(encoding: Encoding, body: &[u8]) -> Result<wire::Submission, DecodeError> {
    decode_message(encoding, body)
}

/// Any of the wire messages (a submission, a receipt) in either encoding, by the contract's
/// rules (README, "The wire contract"):
///
/// - protobuf: unknown field numbers are skipped, as every protobuf reader does, so that the
///   contract can grow; the bytes go on unchanged, so a back office that knows the newer
///   contract sees them;
/// - JSON: an unknown field name is refused, as the proto3 JSON mapping prescribes. In JSON
///   it is usually a misspelt name whose data would otherwise vanish unseen, and the parser
///   never descends into a value it has no field for: a JSON body can nest no deeper than the
///   contract's own messages (three levels), whatever a sender puts into it.
///
/// JSON errors name the offending key's path and the position, never a value: serde_json
/// quotes values, which may be personal data, and keys are shown only when they look like
/// field names.
pub fn decode_message<T: WireMessage>(encoding: Encoding, body: &[u8]) -> Result<T, DecodeError> {
    match encoding {
        Encoding::Protobuf => T::decode(body).map_err(|e| DecodeError::Protobuf {
            message: T::NAME,
            detail: e.to_string(),
        }),
        // The plain parser first: tracking the path costs an allocation per key, and only
        // a failure needs it. Parsing is deterministic, so the second run fails the same way.
        Encoding::Json => serde_json::from_slice(body).map_err(|_| json_error::<T>(body)),
    }
}

/// Parses `body` again with the path of every key tracked, for an error that says where.
fn json_error<T: WireMessage>(body: &[u8]) -> DecodeError {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let (path, error) = match serde_path_to_error::deserialize::<_, T>(&mut deserializer)
        .map(|_| deserializer.end())
    {
        Err(e) => (Some(e.path().clone()), e.into_inner()),
        Ok(Err(e)) => (None, e),
        // Not reached: the plain parser refused this body. Reported all the same.
        Ok(Ok(())) => {
            return DecodeError::Json {
                message: T::NAME,
                field: None,
                problem: "JSON not accepted",
                line: 0,
                column: 0,
            };
        }
    };
    use serde_json::error::Category;
    let text = error.to_string();
    let problem = match error.classify() {
        Category::Syntax if text.starts_with("recursion limit exceeded") => "nested too deeply",
        Category::Syntax => "malformed JSON",
        Category::Eof => "JSON ends early",
        // serde's own wording for these; the value that follows it is never shown.
        Category::Data if text.starts_with("unknown field") => {
            "unknown field (the contract has none of this name; misspelt?)"
        }
        Category::Data if text.starts_with("duplicate field") => "given twice",
        Category::Data if text.starts_with("unknown variant") => {
            "is not one of the values the contract defines"
        }
        Category::Data if text.starts_with("invalid type") => "has the wrong JSON type",
        Category::Data => "has a bad value or format",
        Category::Io => "read error",
    };
    let mut field = path.map(|p| shown_path(&p)).unwrap_or_default();
    // A duplicate is found after its key was read, so the path ends at the object; serde
    // names the field in its message, and that name is the contract's own.
    if let Some(name) = text
        .strip_prefix("duplicate field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name)
        .filter(|name| looks_like_field_name(name))
    {
        if !field.is_empty() {
            field.push('.');
        }
        field.push_str(name);
    }
    let field = Some(field).filter(|f| !f.is_empty());
    DecodeError::Json {
        message: T::NAME,
        field,
        problem,
        line: error.line(),
        column: error.column(),
    }
}

/// A JSON key path for a header or a detail: keys that look like field names as written,
/// anything else (which may be personal data put where a name belongs) as `?`.
fn shown_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(if looks_like_field_name(key) { key } else { "?" });
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

/// `submissionId`, `form_data`: a lower-case ASCII letter, then letters, digits and `_`.
fn looks_like_field_name(key: &str) -> bool {
    key.len() <= 64
        && key.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("{field} is missing")]
    Missing { field: String },
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    #[error("service.key: {0}")]
    ServiceKey(KeyError),
    #[error("region: {0}; expected a 12-digit ARS or an 8-digit AGS")]
    Region(KeyError),
    #[error("region {region} is not in the municipality directory")]
    UnknownRegion { region: String },
    #[error(
        "origin.{field} is {found}, but the message came from the queue of platform {platform:?} ({field} {expected:?})"
    )]
    OriginMismatch {
        field: &'static str,
        found: String,
        expected: String,
        platform: String,
    },
}

impl ValidationError {
    /// Path of the offending field in the envelope.
    pub fn field(&self) -> String {
        match self {
            ValidationError::Missing { field } | ValidationError::Invalid { field, .. } => {
                field.clone()
            }
            ValidationError::ServiceKey(_) => "service.key".to_owned(),
            ValidationError::Region(_) | ValidationError::UnknownRegion { .. } => {
                "region".to_owned()
            }
            ValidationError::OriginMismatch { field, .. } => format!("origin.{field}"),
        }
    }
}

/// What routing and delivery need from a valid submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub submission_id: Uuid,
    pub case_id: Option<String>,
    pub origin_land: Land,
    pub service: ServiceKey,
    pub ars: Ars,
}

fn missing(field: &str) -> ValidationError {
    ValidationError::Missing {
        field: field.to_owned(),
    }
}

fn invalid(field: impl Into<String>, detail: impl Into<String>) -> ValidationError {
    ValidationError::Invalid {
        field: field.into(),
        detail: detail.into(),
    }
}

/// Checks a decoded submission field by field, in envelope order; the first problem wins.
pub fn validate(
    submission: &wire::Submission,
    platform: &Platform,
    directory: &Municipalities,
    verify_attachment_hashes: bool,
) -> Result<Envelope, ValidationError> {
    if submission.submission_id.is_empty() {
        return Err(missing("submission_id"));
    }
    let submission_id = Uuid::parse_str(&submission.submission_id)
        .map_err(|_| invalid("submission_id", "is not a UUID"))?;

    let origin = submission
        .origin
        .as_ref()
        .ok_or_else(|| missing("origin"))?;
    if origin.platform_id.is_empty() {
        return Err(missing("origin.platform_id"));
    }
    if origin.land.is_empty() {
        return Err(missing("origin.land"));
    }
    let origin_land =
        Land::parse_code(&origin.land).map_err(|e| invalid("origin.land", e.to_string()))?;
    if origin.platform_id != platform.id {
        return Err(ValidationError::OriginMismatch {
            field: "platform_id",
            // Another platform's id is shown only when it looks like one; anything else
            // could be personal data put into the wrong field.
            found: if origin.platform_id.len() <= 64
                && origin
                    .platform_id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
                && origin
                    .platform_id
                    .bytes()
                    .any(|b| b == b'-' || b.is_ascii_digit())
            {
                format!("{:?}", origin.platform_id)
            } else {
                "another value".to_owned()
            },
            expected: platform.id.clone(),
            platform: platform.id.clone(),
        });
    }
    if origin_land != platform.land {
        return Err(ValidationError::OriginMismatch {
            field: "land",
            found: format!("{:?}", origin.land),
            expected: platform.land.to_string(),
            platform: platform.id.clone(),
        });
    }

    let service = submission
        .service
        .as_ref()
        .ok_or_else(|| missing("service"))?;
    if service.key.is_empty() {
        return Err(missing("service.key"));
    }
    let service_key: ServiceKey = service.key.parse().map_err(ValidationError::ServiceKey)?;

    if submission.region.is_empty() {
        return Err(missing("region"));
    }
    // Characters, not bytes: eight full-width digits are a malformed AGS, not a 24-byte ARS.
    let ars = match submission.region.chars().count() {
        8 => {
            let ags: Ags = submission.region.parse().map_err(ValidationError::Region)?;
            directory
                .ars_for_ags(ags)
                .ok_or_else(|| ValidationError::UnknownRegion {
                    region: format!("{ags} (AGS)"),
                })?
        }
        _ => {
            let ars: Ars = submission.region.parse().map_err(ValidationError::Region)?;
            if directory.gemeinde(ars).is_none() {
                return Err(ValidationError::UnknownRegion {
                    region: ars.to_string(),
                });
            }
            ars
        }
    };

    let submitted_at = submission
        .submitted_at
        .as_ref()
        .ok_or_else(|| missing("submitted_at"))?;
    if !(0..1_000_000_000).contains(&submitted_at.nanos) || submitted_at.seconds <= 0 {
        return Err(invalid("submitted_at", "is not a valid point in time"));
    }

    let form = submission
        .form_data
        .as_ref()
        .ok_or_else(|| missing("form_data"))?;
    if form.media_type.is_empty() {
        return Err(missing("form_data.media_type"));
    }
    if form.schema_uri.is_empty() {
        return Err(missing("form_data.schema_uri"));
    }
    if form.content.is_empty() {
        return Err(missing("form_data.content"));
    }

    let mut attachment_ids = HashSet::with_capacity(submission.attachments.len());
    for (i, a) in submission.attachments.iter().enumerate() {
        let field = |name: &str| format!("attachments[{i}].{name}");
        if a.attachment_id.is_empty() {
            return Err(missing(&field("attachment_id")));
        }
        if !attachment_ids.insert(a.attachment_id.as_str()) {
            return Err(invalid(
                field("attachment_id"),
                "is used by another attachment too",
            ));
        }
        if a.file_name.is_empty() {
            return Err(missing(&field("file_name")));
        }
        if a.media_type.is_empty() {
            return Err(missing(&field("media_type")));
        }
        if a.sha512.is_empty() {
            return Err(missing(&field("sha512")));
        }
        let mut expected = [0u8; 64];
        if hex::decode_to_slice(&a.sha512, &mut expected).is_err() {
            return Err(invalid(field("sha512"), "is not 128 hexadecimal digits"));
        }
        if a.size != a.content.len() as u64 {
            return Err(invalid(
                field("size"),
                format!("says {} bytes, the content has {}", a.size, a.content.len()),
            ));
        }
        if verify_attachment_hashes && Sha512::digest(&a.content).as_slice() != expected {
            return Err(invalid(field("sha512"), "does not match the content"));
        }
    }

    Ok(Envelope {
        submission_id,
        case_id: (!submission.case_id.is_empty()).then(|| submission.case_id.clone()),
        origin_land,
        service: service_key,
        ars,
    })
}

#[cfg(test)]
mod tests {
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
            attachments: vec![wire::Attachment {
                attachment_id: "a1".into(),
                file_name: "scan.pdf".into(),
                media_type: "application/pdf".into(),
                purpose: "attachment".into(),
                size: content.len() as u64,
                sha512: hex::encode(Sha512::digest(&content)),
                content,
            }],
            reply_channel: None,
            sender_reference: String::new(),
        }
    }

    fn check(change: impl FnOnce(&mut wire::Submission), expected: &str) {
        let directory = Municipalities::embedded().unwrap();
        let mut s = good();
        change(&mut s);
        let err = validate(&s, &platform(), &directory, true).unwrap_err();
        let shown = format!("{} [{}]", err, err.field());
        assert_eq!(shown, expected);
    }

    #[test]
    fn a_good_submission_validates() {
        let directory = Municipalities::embedded().unwrap();
        let e = validate(&good(), &platform(), &directory, true).unwrap();
        assert_eq!(e.ars.to_string(), "160510000000");
        assert_eq!(e.service.to_string(), "99115005104000");
        assert_eq!(e.case_id.as_deref(), Some("case-1"));
    }

    #[test]
    fn an_ags_is_converted_through_the_directory() {
        let directory = Municipalities::embedded().unwrap();
        let mut s = good();
        s.region = "06431001".into();
        let e = validate(&s, &platform(), &directory, true).unwrap();
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
                            && message
                                .contains(&format!("{field}: {want_problem} at line 1, column ")),
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
        let body =
            br#"{"submissionId": "x", "formData": {"content": "not base64: Erika Mustermann"}}"#;
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
}
