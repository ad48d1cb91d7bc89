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

const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";
const CONTENT_TYPE_JSON: &str = "application/json";

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
    municipalities: &Municipalities,
    verify_attachment_hashes: bool,
) -> Result<Envelope, ValidationError> {
    if submission.submission_id.is_empty() {
        return Err(missing("submission_id"));
    }
    let submission_id = Uuid::parse_str(&submission.submission_id)
        .map_err(|_| invalid("submission_id", "is not a UUID"))?;
    let origin_land = validate_origin(submission, platform)?;

    let service = submission
        .service
        .as_ref()
        .ok_or_else(|| missing("service"))?;
    if service.key.is_empty() {
        return Err(missing("service.key"));
    }
    let service_key: ServiceKey = service.key.parse().map_err(ValidationError::ServiceKey)?;

    let ars = validate_region(&submission.region, municipalities)?;
    validate_time_and_form(submission)?;
    validate_attachments(&submission.attachments, verify_attachment_hashes)?;

    Ok(Envelope {
        submission_id,
        case_id: (!submission.case_id.is_empty()).then(|| submission.case_id.clone()),
        origin_land,
        service: service_key,
        ars,
    })
}

/// The origin must name the platform whose queue the message came from, and its Land.
fn validate_origin(
    submission: &wire::Submission,
    platform: &Platform,
) -> Result<Land, ValidationError> {
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
            found: shown_platform_id(&origin.platform_id),
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
    Ok(origin_land)
}

/// Another platform's id is shown only when it looks like one; anything else could be
/// personal data put into the wrong field.
fn shown_platform_id(platform_id: &str) -> String {
    if platform_id.len() <= 64
        && platform_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && platform_id.bytes().any(|b| b == b'-' || b.is_ascii_digit())
    {
        format!("{platform_id:?}")
    } else {
        "another value".to_owned()
    }
}

/// A 12-digit ARS or an 8-digit AGS, known to the municipality directory.
fn validate_region(region: &str, municipalities: &Municipalities) -> Result<Ars, ValidationError> {
    if region.is_empty() {
        return Err(missing("region"));
    }
    // Characters, not bytes: eight full-width digits are a malformed AGS, not a 24-byte ARS.
    match region.chars().count() {
        8 => {
            let ags: Ags = region.parse().map_err(ValidationError::Region)?;
            municipalities
                .ars_for_ags(ags)
                .ok_or_else(|| ValidationError::UnknownRegion {
                    region: format!("{ags} (AGS)"),
                })
        }
        _ => {
            let ars: Ars = region.parse().map_err(ValidationError::Region)?;
            if municipalities.gemeinde(ars).is_none() {
                return Err(ValidationError::UnknownRegion {
                    region: ars.to_string(),
                });
            }
            Ok(ars)
        }
    }
}

fn validate_time_and_form(submission: &wire::Submission) -> Result<(), ValidationError> {
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
    Ok(())
}

/// Ids unique, names and types present, the size and (if asked) the SHA-512 hash true to
/// the content.
fn validate_attachments(
    attachments: &[wire::Attachment],
    verify_hashes: bool,
) -> Result<(), ValidationError> {
    let mut attachment_ids = HashSet::with_capacity(attachments.len());
    for (i, a) in attachments.iter().enumerate() {
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
        if verify_hashes && Sha512::digest(&a.content).as_slice() != expected {
            return Err(invalid(field("sha512"), "does not match the content"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
