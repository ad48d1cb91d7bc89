//! What became of a submission taken off a queue, and why: the reason codes shared by
//! dead-letter headers, status events and logs.

use crate::amqp::DeliveryError;
use crate::amqp::guard::LeftOut;
use crate::envelope::{DecodeError, Envelope, ValidationError};
use crate::model::DestinationIndex;
use crate::model::{Ars, ServiceKey};

/// How often delivery of this submission failed before, read from the headers the gateway
/// set when it scheduled the retry (never from a platform's own headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attempts {
    pub failed: u32,
    /// Unix seconds of the first failure.
    pub first_failure: Option<u64>,
}

/// Reason codes. Stable: platforms and operators filter on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Oversized,
    /// The message's AMQP headers did not fit the frame size of the gateway's connection:
    /// it arrived without them.
    HeadersTooLarge,
    UnsupportedContentType,
    Undecodable,
    MissingField,
    InvalidField,
    InvalidServiceKey,
    InvalidRegion,
    UnknownRegion,
    OriginMismatch,
    NoRoute,
    Conflict,
    DeliveryFailed,
    /// A back office's receipt that cannot be decoded or lacks what it must carry.
    ReceiptInvalid,
    /// A receipt for a submission the gateway did not deliver (or no longer knows).
    ReceiptUnknownSubmission,
    /// A receipt from a destination the submission was not delivered to.
    ReceiptWrongDestination,
    /// A receipt that contradicts the answer given before.
    ReceiptIllegalTransition,
}

impl Reason {
    /// Reasons that concern a back office's receipt, not a platform's submission: such a
    /// dead letter is no submission to replay.
    pub fn is_receipt(self) -> bool {
        matches!(
            self,
            Reason::ReceiptInvalid
                | Reason::ReceiptUnknownSubmission
                | Reason::ReceiptWrongDestination
                | Reason::ReceiptIllegalTransition
        )
    }

    pub const ALL: [Reason; 17] = [
        Reason::Oversized,
        Reason::HeadersTooLarge,
        Reason::UnsupportedContentType,
        Reason::Undecodable,
        Reason::MissingField,
        Reason::InvalidField,
        Reason::InvalidServiceKey,
        Reason::InvalidRegion,
        Reason::UnknownRegion,
        Reason::OriginMismatch,
        Reason::NoRoute,
        Reason::Conflict,
        Reason::DeliveryFailed,
        Reason::ReceiptInvalid,
        Reason::ReceiptUnknownSubmission,
        Reason::ReceiptWrongDestination,
        Reason::ReceiptIllegalTransition,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::Oversized => "oversized",
            Reason::HeadersTooLarge => "headers-too-large",
            Reason::UnsupportedContentType => "unsupported-content-type",
            Reason::Undecodable => "undecodable",
            Reason::MissingField => "missing-field",
            Reason::InvalidField => "invalid-field",
            Reason::InvalidServiceKey => "invalid-service-key",
            Reason::InvalidRegion => "invalid-region",
            Reason::UnknownRegion => "unknown-region",
            Reason::OriginMismatch => "origin-mismatch",
            Reason::NoRoute => "no-route",
            Reason::Conflict => "conflict",
            Reason::DeliveryFailed => "delivery-failed",
            Reason::ReceiptInvalid => "receipt-invalid",
            Reason::ReceiptUnknownSubmission => "receipt-unknown-submission",
            Reason::ReceiptWrongDestination => "receipt-wrong-destination",
            Reason::ReceiptIllegalTransition => "receipt-illegal-transition",
        }
    }

    /// RFC 7807 title: the same for every occurrence of the reason.
    pub fn title(self) -> &'static str {
        match self {
            Reason::Oversized => "Message too large",
            Reason::HeadersTooLarge => "Message headers too large to receive",
            Reason::UnsupportedContentType => "Unsupported content type",
            Reason::Undecodable => "Message cannot be decoded",
            Reason::MissingField => "Required field missing",
            Reason::InvalidField => "Field has an invalid value",
            Reason::InvalidServiceKey => "Invalid service key (Leistungsschlüssel)",
            Reason::InvalidRegion => "Invalid region key (ARS/AGS)",
            Reason::UnknownRegion => "Region not in the municipality directory",
            Reason::OriginMismatch => "Origin does not match the submitting platform",
            Reason::NoRoute => "No responsible authority configured",
            Reason::Conflict => "Submission id already delivered with other content",
            Reason::DeliveryFailed => "Delivery to the responsible authority failed",
            Reason::ReceiptInvalid => "Receipt cannot be read",
            Reason::ReceiptUnknownSubmission => "Receipt for an unknown submission",
            Reason::ReceiptWrongDestination => {
                "Receipt from an authority the submission did not go to"
            }
            Reason::ReceiptIllegalTransition => "Receipt contradicts the earlier answer",
        }
    }

    pub fn type_uri(self) -> String {
        format!("urn:ozg-gateway:problem:{}", self.code())
    }
}

/// A submission the gateway will not deliver, with a specific reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    /// Path of the offending envelope field, if a field is to blame.
    pub field: Option<String>,
    /// What exactly was wrong. Built only from keys, sizes and positions: never payload.
    pub detail: String,
}

impl From<DecodeError> for Rejection {
    fn from(e: DecodeError) -> Rejection {
        let reason = match e {
            DecodeError::Oversized { .. } => Reason::Oversized,
            DecodeError::MissingContentType | DecodeError::UnsupportedContentType(_) => {
                Reason::UnsupportedContentType
            }
            DecodeError::Protobuf { .. } | DecodeError::Json { .. } => Reason::Undecodable,
        };
        Rejection {
            reason,
            field: e.field(),
            detail: e.to_string(),
        }
    }
}

impl From<ValidationError> for Rejection {
    fn from(e: ValidationError) -> Rejection {
        let reason = match e {
            ValidationError::Missing { .. } => Reason::MissingField,
            ValidationError::Invalid { .. } => Reason::InvalidField,
            ValidationError::ServiceKey(_) => Reason::InvalidServiceKey,
            ValidationError::Region(_) => Reason::InvalidRegion,
            ValidationError::UnknownRegion { .. } => Reason::UnknownRegion,
            ValidationError::OriginMismatch { .. } => Reason::OriginMismatch,
        };
        Rejection {
            reason,
            field: Some(e.field()),
            detail: e.to_string(),
        }
    }
}

impl From<DeliveryError> for Rejection {
    fn from(e: DeliveryError) -> Rejection {
        Rejection {
            reason: Reason::DeliveryFailed,
            field: None,
            detail: e.to_string(),
        }
    }
}

impl Rejection {
    /// The guard received the message without its headers (`amqp::guard`).
    pub fn headers_too_large(left_out: LeftOut, broker: &str) -> Rejection {
        Rejection {
            reason: Reason::HeadersTooLarge,
            field: None,
            detail: format!(
                "its AMQP headers ({} bytes) do not fit the frame size of the gateway's connection to broker {broker} ({} bytes): it was received without them, and they are not in this dead letter",
                left_out.bytes, left_out.frame_max
            ),
        }
    }

    pub fn no_route(service: ServiceKey, ars: Ars) -> Rejection {
        Rejection {
            reason: Reason::NoRoute,
            field: None,
            detail: format!(
                "no route for service {service} in region {ars} or any unit above it, and no \"*\" route there either"
            ),
        }
    }
}

impl Rejection {
    /// Delivery failed and the retries are used up (attempts or age).
    pub fn gave_up(last: &DeliveryError, attempts: u32, age: std::time::Duration) -> Rejection {
        Rejection {
            reason: Reason::DeliveryFailed,
            field: None,
            detail: format!(
                "gave up after {attempts} attempt{} over {}; last error: {last}",
                if attempts == 1 { "" } else { "s" },
                humantime::format_duration(std::time::Duration::from_secs(age.as_secs()))
            ),
        }
    }

    pub fn conflict(destination: &str, delivered_at: std::time::SystemTime) -> Rejection {
        let when = humantime::format_rfc3339_seconds(delivered_at);
        Rejection {
            reason: Reason::Conflict,
            field: Some("submission_id".to_owned()),
            detail: format!(
                "this submission id was delivered to {destination} at {when} with different content; a new submission needs a new id"
            ),
        }
    }
}

/// The end of one submission's way through the gateway, before it is settled.
#[derive(Debug)]
pub enum Outcome {
    /// Confirmed by the destination's broker.
    Delivered {
        envelope: Envelope,
        destination: DestinationIndex,
    },
    /// Delivered before (same id, same content, within the deduplication window): not
    /// delivered again, acked.
    Duplicate {
        envelope: Envelope,
        destination: String,
    },
    /// Delivery failed; the submission waits in a delay queue and is tried again.
    Retry {
        submission_id: String,
        /// The destination that failed (the retry routes afresh).
        destination: String,
        attempts: Attempts,
        error: String,
    },
    /// The gateway cannot finish now (the store does not answer, the destination's broker
    /// is reconnecting): back on the queue.
    Requeue {
        submission_id: String,
        error: String,
    },
    /// Not delivered; goes to the dead-letter exchange. `envelope` is there when the
    /// submission decoded and validated (a no-route or delivery failure).
    Rejected {
        rejection: Rejection,
        envelope: Option<Envelope>,
        /// The best id known: the envelope's when it decoded, else none (the AMQP message
        /// id is used then).
        submission_id: Option<String>,
        /// The destination concerned, when there was one (a conflict, a delivery given up).
        destination: Option<String>,
    },
}

/// How a delivery taken off a queue ended, as metrics, the live tail, spans and logs name
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Confirmed by the destination, recorded, acked.
    Delivered,
    /// Delivered before; acked without delivering again.
    Duplicate,
    /// Handed to a delay queue (confirmed), acked; tried again later.
    Retrying,
    /// Left on its queue for redelivery.
    Requeued,
    /// Confirmed by the dead-letter exchange with a reason, acked.
    DeadLettered,
}

impl Ending {
    /// The word of the `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Delivered => "delivered",
            Ending::Duplicate => "duplicate",
            Ending::Retrying => "retrying",
            Ending::Requeued => "requeued",
            Ending::DeadLettered => "dead-lettered",
        }
    }

    /// Whether a span ends in error with this outcome.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Ending::DeadLettered | Ending::Retrying | Ending::Requeued
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_are_unique_and_kebab_case() {
        let mut codes: Vec<_> = Reason::ALL.iter().map(|r| r.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Reason::ALL.len());
        for code in codes {
            assert!(
                code.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{code}"
            );
        }
        assert_eq!(
            Reason::NoRoute.type_uri(),
            "urn:ozg-gateway:problem:no-route"
        );
    }
}
