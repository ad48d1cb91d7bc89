//! Dead letters taken off the gateway's dead-letter queue: what is stored, their states and
//! the filters and groupings of their listings.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use uuid::Uuid;

use super::{Condition, push_period};
use crate::store::to_micros;

/// A dead letter taken off the gateway's dead-letter queue, to be stored.
#[derive(Clone, PartialEq, Eq)]
pub struct NewDeadLetter {
    pub id: Uuid,
    pub submission_id: String,
    pub platform: String,
    pub reason: String,
    pub field: String,
    pub detail: String,
    pub service: String,
    pub ars: String,
    pub destination: String,
    pub dead_lettered_at: SystemTime,
    pub content_type: String,
    pub message_id: String,
    /// AMQP headers of the dead-lettered message as a JSON object text (string values);
    /// never payload.
    pub headers: String,
    /// The message body: personal data. Never logged; `Debug` prints its length only.
    pub body: Vec<u8>,
}

impl fmt::Debug for NewDeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewDeadLetter")
            .field("id", &self.id)
            .field("submission_id", &self.submission_id)
            .field("platform", &self.platform)
            .field("reason", &self.reason)
            .field("field", &self.field)
            .field("detail", &self.detail)
            .field("service", &self.service)
            .field("ars", &self.ars)
            .field("destination", &self.destination)
            .field("dead_lettered_at", &self.dead_lettered_at)
            .field("content_type", &self.content_type)
            .field("message_id", &self.message_id)
            .field("headers", &self.headers)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// Where a stored dead letter stands. Only a `Pending` letter can be replayed or discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterState {
    Pending,
    Replayed,
    Discarded,
}

impl DeadLetterState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterState::Pending => "pending",
            DeadLetterState::Replayed => "replayed",
            DeadLetterState::Discarded => "discarded",
        }
    }
}

impl fmt::Display for DeadLetterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a [`DeadLetterState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dead-letter state {0:?}; expected pending, replayed or discarded")]
pub struct UnknownDeadLetterState(pub String);

impl FromStr for DeadLetterState {
    type Err = UnknownDeadLetterState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(DeadLetterState::Pending),
            "replayed" => Ok(DeadLetterState::Replayed),
            "discarded" => Ok(DeadLetterState::Discarded),
            other => Err(UnknownDeadLetterState(other.to_owned())),
        }
    }
}

/// A stored dead letter without its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: Uuid,
    pub submission_id: String,
    pub platform: String,
    pub reason: String,
    pub field: String,
    pub detail: String,
    pub service: String,
    pub ars: String,
    pub destination: String,
    pub dead_lettered_at: SystemTime,
    pub content_type: String,
    pub message_id: String,
    pub headers: String,
    pub body_bytes: u64,
    /// When the gateway stored it.
    pub stored_at: SystemTime,
    pub state: DeadLetterState,
    /// When it left `Pending`, and who moved it (`""` while pending).
    pub state_changed_at: Option<SystemTime>,
    pub state_changed_by: String,
    pub replays: u32,
}

/// What publishing a dead letter again needs.
#[derive(Clone, PartialEq, Eq)]
pub struct DeadLetterMessage {
    /// Personal data: never logged; `Debug` prints its length only.
    pub body: Vec<u8>,
    pub content_type: String,
    pub message_id: String,
    pub headers: String,
    pub platform: String,
}

impl fmt::Debug for DeadLetterMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterMessage")
            .field("body_bytes", &self.body.len())
            .field("content_type", &self.content_type)
            .field("message_id", &self.message_id)
            .field("headers", &self.headers)
            .field("platform", &self.platform)
            .finish()
    }
}

/// Whose rows a listing of dead letters or delivered submissions returns: every row, or
/// only those from the named platforms or for the named destinations (an admin token's
/// scope, resolved against the directory in use when it asks).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Visible {
    #[default]
    All,
    Only {
        platforms: Vec<String>,
        destinations: Vec<String>,
    },
}

impl Visible {
    /// The condition on the `platform` and `destination` columns; none for `All`.
    pub(in crate::store) fn condition(&self) -> Option<Condition> {
        match self {
            Visible::All => None,
            Visible::Only {
                platforms,
                destinations,
            } => Some(Condition::Subjects {
                platforms: platforms.clone(),
                destinations: destinations.clone(),
            }),
        }
    }
}

/// Which dead letters to list or count; every field that is set must match. `since` and
/// `until` bound `dead_lettered_at`: `since` inclusive, `until` exclusive.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeadLetterFilter {
    pub platform: Option<String>,
    pub reason: Option<String>,
    pub service: Option<String>,
    pub destination: Option<String>,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    pub state: Option<DeadLetterState>,
    pub submission_id: Option<String>,
    /// The letters the caller may see.
    pub visible: Visible,
}

impl DeadLetterFilter {
    /// The filter and the page start (after `(dead_lettered_at, id)`) as conditions.
    pub(in crate::store) fn conditions(&self, after: Option<(SystemTime, Uuid)>) -> Vec<Condition> {
        let mut out = Vec::new();
        out.extend(self.visible.condition());
        for (column, value) in [
            ("platform", &self.platform),
            ("reason", &self.reason),
            ("service", &self.service),
            ("destination", &self.destination),
            ("submission_id", &self.submission_id),
        ] {
            if let Some(value) = value {
                out.push(Condition::Equals(column, value.clone()));
            }
        }
        if let Some(state) = self.state {
            out.push(Condition::Equals("state", state.as_str().to_owned()));
        }
        push_period(&mut out, "dead_lettered_at", self.since, self.until);
        if let Some((at, id)) = after {
            out.push(Condition::DeadLetterAfter(to_micros(at), id));
        }
        out
    }
}

/// What dead letters are counted by in a summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterGroup {
    Reason,
    Platform,
    /// `""` for letters that found no destination.
    Destination,
}

impl DeadLetterGroup {
    pub(in crate::store) fn column(self) -> &'static str {
        match self {
            DeadLetterGroup::Reason => "reason",
            DeadLetterGroup::Platform => "platform",
            DeadLetterGroup::Destination => "destination",
        }
    }
}
