//! Generated protobuf types (prost) with the canonical proto3 JSON mapping (pbjson).
//!
//! Only `envelope` and `status` convert between these and domain types; the engine never
//! builds or inspects them elsewhere.

#[allow(clippy::all, clippy::unwrap_used, clippy::expect_used)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/ozg.gateway.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/ozg.gateway.v1.serde.rs"));
}

/// The operators' API (gRPC): tonic server and client, with the JSON mapping for the CLI's
/// `--json`.
#[allow(clippy::all, clippy::unwrap_used, clippy::expect_used)]
pub mod admin {
    include!(concat!(env!("OUT_DIR"), "/ozg.gateway.admin.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/ozg.gateway.admin.v1.serde.rs"));
}

/// The compiled descriptors of every proto file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ozg_descriptor.bin"));

use std::fmt;

impl fmt::Debug for admin::DeadLetterPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterPayload")
            .field("id", &self.id)
            .field("content_type", &self.content_type)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish()
    }
}

// Payload-carrying messages: Debug shows sizes and media types, never content, so that no
// `{:?}` anywhere can print personal data.

impl fmt::Debug for v1::FormData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FormData")
            .field("media_type", &self.media_type)
            .field("schema_uri", &self.schema_uri)
            .field("content", &format_args!("<{} bytes>", self.content.len()))
            .finish()
    }
}

impl fmt::Debug for v1::Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attachment")
            .field("attachment_id", &self.attachment_id)
            .field("file_name", &"<redacted>")
            .field("media_type", &self.media_type)
            .field("purpose", &self.purpose)
            .field("size", &self.size)
            .field("content", &format_args!("<{} bytes>", self.content.len()))
            .finish()
    }
}

impl fmt::Debug for v1::ReplyChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyChannel")
            .field("kind", &self.kind)
            .field("address", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::v1::*;

    #[test]
    fn debug_output_never_shows_payload_content() {
        let submission = Submission {
            form_data: Some(FormData {
                media_type: "application/json".into(),
                schema_uri: "urn:x".into(),
                content: b"Erika Mustermann".to_vec(),
            }),
            attachments: vec![Attachment {
                file_name: "Mustermann-Ausweis.pdf".into(),
                content: b"Erika Mustermann".to_vec(),
                ..Default::default()
            }],
            reply_channel: Some(ReplyChannel {
                kind: "email".into(),
                address: "erika@mustermann.de".into(),
            }),
            ..Default::default()
        };
        let shown = format!("{submission:?}");
        assert!(!shown.contains("Mustermann"), "{shown}");
        assert!(shown.contains("<16 bytes>"), "{shown}");
    }
}
