//! Accept: what a delivery says about itself before any I/O. Where it came from (the
//! gateway's own headers on retries and replays), then size, content type, decoding and
//! validation, and the fingerprint deduplication compares.

use std::time::SystemTime;

use lapin::message::Delivery;
use uuid::Uuid;

use super::headers::{self, header_timestamp};
use super::{Arrival, Attempts, Pipeline, Replay, Source};
use crate::amqp::guard::{self, DROPPED_HEADERS};
use crate::amqp::header_text;
use crate::envelope::{self, DecodeError, Encoding, Envelope};
use crate::outcome::Rejection;
use crate::store::{self, Fingerprint};

/// A submission that passed every check that needs no I/O.
pub(super) struct Accepted {
    pub envelope: Envelope,
    pub encoding: Encoding,
    pub fingerprint: Fingerprint,
}

/// Why a delivery was not accepted, with the submission id when the body carried a valid
/// one (so that the platform can tell which submission it was).
pub(super) struct NotAccepted {
    pub rejection: Rejection,
    pub submission_id: Option<String>,
}

impl NotAccepted {
    fn without_id(rejection: Rejection) -> NotAccepted {
        NotAccepted {
            rejection,
            submission_id: None,
        }
    }
}

impl Pipeline {
    /// Where a delivery came from and what the gateway's own headers say about it. Retry
    /// bookkeeping is read only from the retry queue, never from a platform's headers.
    pub(super) fn arrival(&self, source: Source, delivery: &Delivery) -> Arrival {
        let received_at = SystemTime::now();
        let headers = delivery.properties.headers().as_ref();
        let origin = || {
            let name = header_text(headers, headers::ORIGIN_PLATFORM).unwrap_or_default();
            self.config.platforms.iter().position(|p| p.id == name)
        };
        let (platform, attempts, replay) = match source {
            Source::Platform(i) => (Some(i), Attempts::default(), None),
            Source::Retry => {
                let attempts = Attempts {
                    failed: header_text(headers, headers::ATTEMPTS_FAILED)
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1),
                    first_failure: header_timestamp(headers, headers::FIRST_FAILURE_AT),
                };
                (origin(), attempts, None)
            }
            Source::Replay => {
                let replay = Replay {
                    of: header_text(headers, headers::REPLAY_OF).unwrap_or_default(),
                    destination: header_text(headers, headers::REPLAY_DESTINATION)
                        .filter(|d| !d.is_empty()),
                };
                (origin(), Attempts::default(), Some(replay))
            }
        };
        Arrival {
            platform,
            trace: lapin::types::FieldTable::default(),
            attempts,
            replay,
            received_at,
        }
    }

    /// The checks that need no I/O: size, content type, decoding, validation.
    pub(super) fn accept(
        &self,
        platform: usize,
        delivery: &Delivery,
    ) -> Result<Accepted, NotAccepted> {
        let limit = self.config.gateway.max_message_bytes;
        let content_type = delivery.properties.content_type();
        let encoding = Encoding::from_content_type(content_type.as_ref().map(|c| c.as_str()));
        if let Some(left_out) = header_text(delivery.properties.headers().as_ref(), DROPPED_HEADERS)
            .and_then(|value| guard::left_out(&value))
        {
            // The submission id, when the body says it, lets the platform tell which one.
            let id = encoding
                .as_ref()
                .ok()
                .filter(|_| delivery.data.len() <= limit)
                .and_then(|encoding| envelope::decode(*encoding, &delivery.data).ok())
                .and_then(|submission| Uuid::parse_str(&submission.submission_id).ok())
                .map(|id| id.to_string());
            let broker = self.config.broker(self.config.platforms[platform].broker);
            return Err(NotAccepted {
                rejection: Rejection::headers_too_large(left_out, &broker.name),
                submission_id: id,
            });
        }
        if delivery.data.len() > limit {
            let e = DecodeError::Oversized {
                size: delivery.data.len(),
                limit,
            };
            return Err(NotAccepted::without_id(e.into()));
        }
        let encoding = encoding.map_err(|e| NotAccepted::without_id(e.into()))?;
        let submission = envelope::decode(encoding, &delivery.data)
            .map_err(|e| NotAccepted::without_id(e.into()))?;
        let envelope = envelope::validate(
            &submission,
            &self.config.platforms[platform],
            &self.config.municipalities,
            self.config.gateway.verify_attachment_hashes,
        )
        .map_err(|e| NotAccepted {
            rejection: e.into(),
            submission_id: Uuid::parse_str(&submission.submission_id)
                .ok()
                .map(|u| u.to_string()),
        })?;
        // Over the canonical protobuf encoding, so that a republish of the same submission
        // in the other encoding is recognised as the same content.
        let fingerprint = store::fingerprint(&prost::Message::encode_to_vec(&submission));
        Ok(Accepted {
            envelope,
            encoding,
            fingerprint,
        })
    }
}
