//! Sample submissions for the walkthrough (`ozg-gateway submit`), tests and benchmarks.
//! The form content is synthetic filler of the requested size, not a real person's data.

use sha2::{Digest, Sha512};
use uuid::Uuid;

use crate::envelope::Encoding;
use crate::wire::v1 as wire;

pub struct SampleSpec<'a> {
    pub platform_id: &'a str,
    /// Two-digit Land code of the platform.
    pub land: &'a str,
    pub service_key: &'a str,
    /// ARS (12 digits) or AGS (8 digits).
    pub region: &'a str,
    /// Approximate size of the encoded submission in bytes.
    pub size: usize,
}

/// A valid submission (for the given platform) of about `spec.size` bytes, with one
/// attachment whose size and SHA-512 match.
pub fn submission(spec: &SampleSpec<'_>) -> wire::Submission {
    let id = Uuid::new_v4();
    let attachment: Vec<u8> = b"%PDF-1.7 sample attachment\n".to_vec();
    let overhead = 600 + attachment.len();
    let filler = spec.size.saturating_sub(overhead).max(16);
    let mut content = Vec::with_capacity(filler);
    content.extend_from_slice(b"{\"sample\":\"");
    while content.len() + 2 < filler {
        content.push(b'x');
    }
    content.extend_from_slice(b"\"}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    wire::Submission {
        submission_id: id.to_string(),
        case_id: format!("case-{}", &id.simple().to_string()[..8]),
        origin: Some(wire::Origin {
            platform_id: spec.platform_id.to_owned(),
            land: spec.land.to_owned(),
        }),
        service: Some(wire::Service {
            key: spec.service_key.to_owned(),
            name: String::new(),
        }),
        region: spec.region.to_owned(),
        submitted_at: Some(pbjson_types::Timestamp {
            seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
            nanos: 0,
        }),
        form_data: Some(wire::FormData {
            media_type: "application/json".into(),
            schema_uri: "urn:xoev-de:fim:standard:sample".into(),
            content,
        }),
        attachments: vec![pdf_attachment("attachment-1", "sample.pdf", attachment)],
        reply_channel: None,
        sender_reference: String::new(),
    }
}

/// A PDF attachment whose size and SHA-512 match its content.
pub fn pdf_attachment(id: &str, file_name: &str, content: Vec<u8>) -> wire::Attachment {
    wire::Attachment {
        attachment_id: id.into(),
        file_name: file_name.into(),
        media_type: "application/pdf".into(),
        purpose: "attachment".into(),
        size: content.len() as u64,
        sha512: hex::encode(Sha512::digest(&content)),
        content,
    }
}

/// Encodes a submission as a platform would publish it.
pub fn encode(submission: &wire::Submission, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => prost::Message::encode_to_vec(submission),
        // Serialising generated types to a Vec cannot fail.
        Encoding::Json => serde_json::to_vec(submission).unwrap_or_default(),
    }
}
