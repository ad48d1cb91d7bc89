//! What the admin API keeps in the store, beside the deduplication records: the routing
//! directory entries managed through the API (the configuration file has its own, which are
//! not stored), the audit log, dead letters taken off the gateway's dead-letter queue, and
//! the submission trace.
//!
//! This module holds the types and what both backends share: the statements that are the
//! same text for both (sqlx's SQLite driver understands PostgreSQL's `$N` placeholders) and
//! the list filters as a backend-neutral [`Condition`] list; rows.rs reads the rows of
//! either backend.
//!
//! The store does no domain validation (model/ and config/validate/ do): strings are stored as given.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use uuid::Uuid;

use super::{StoreError, to_micros};
use crate::model::{DestinationSpec, RouteSpec, ServiceSpec};

// ---------------------------------------------------------------------------------------
// Routing directory

/// Everything the directory tables hold, sorted by key (byte order), and the directory
/// version they belong to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredDirectory {
    pub destinations: Vec<DestinationSpec>,
    pub routes: Vec<RouteSpec>,
    pub services: Vec<ServiceSpec>,
    pub version: i64,
}

/// One change to the directory. Put inserts or replaces; Delete of an entry that is not
/// there fails with [`StoreError::NotFound`] and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryChange {
    PutDestination(DestinationSpec),
    DeleteDestination { id: String },
    PutRoute(RouteSpec),
    DeleteRoute { service: String, region: String },
    PutService(ServiceSpec),
    DeleteService { key: String },
}

impl DirectoryChange {
    /// The statement that applies this change and its parameters, for either backend.
    pub(super) fn statement(&self) -> (&'static str, Vec<&str>) {
        match self {
            DirectoryChange::PutDestination(d) => (
                "INSERT INTO directory_destinations \
                     (id, name, kind, land, broker, exchange, routing_key, receipt_queue) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (id) DO UPDATE SET \
                     name = excluded.name, kind = excluded.kind, land = excluded.land, \
                     broker = excluded.broker, exchange = excluded.exchange, \
                     routing_key = excluded.routing_key, receipt_queue = excluded.receipt_queue",
                vec![
                    d.id.as_str(),
                    d.name.as_str(),
                    d.kind.as_str(),
                    d.land.as_str(),
                    d.broker.as_str(),
                    d.exchange.as_str(),
                    d.routing_key.as_str(),
                    d.receipt_queue.as_str(),
                ],
            ),
            DirectoryChange::DeleteDestination { id } => (
                "DELETE FROM directory_destinations WHERE id = $1",
                vec![id.as_str()],
            ),
            DirectoryChange::PutRoute(r) => (
                "INSERT INTO directory_routes (service, region, destination) \
                 VALUES ($1, $2, $3) \
                 ON CONFLICT (service, region) DO UPDATE SET destination = excluded.destination",
                vec![
                    r.service.as_str(),
                    r.region.as_str(),
                    r.destination.as_str(),
                ],
            ),
            DirectoryChange::DeleteRoute { service, region } => (
                "DELETE FROM directory_routes WHERE service = $1 AND region = $2",
                vec![service.as_str(), region.as_str()],
            ),
            DirectoryChange::PutService(s) => (
                "INSERT INTO directory_services (key, name) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET name = excluded.name",
                vec![s.key.as_str(), s.name.as_str()],
            ),
            DirectoryChange::DeleteService { key } => (
                "DELETE FROM directory_services WHERE key = $1",
                vec![key.as_str()],
            ),
        }
    }

    /// The error for a Delete that found nothing to delete.
    pub(super) fn not_found(&self) -> StoreError {
        let what = match self {
            DirectoryChange::DeleteDestination { id } => format!("destination {id:?}"),
            DirectoryChange::DeleteRoute { service, region } => {
                format!("route for service {service:?} in region {region:?}")
            }
            DirectoryChange::DeleteService { key } => format!("service {key:?}"),
            // A Put always affects a row; named anyway so that the match stays total.
            DirectoryChange::PutDestination(d) => format!("destination {:?}", d.id),
            DirectoryChange::PutRoute(r) => {
                format!("route for service {:?} in region {:?}", r.service, r.region)
            }
            DirectoryChange::PutService(s) => format!("service {:?}", s.key),
        };
        StoreError::NotFound { what }
    }
}

/// Same text for both backends; sorted in Rust, not SQL, so that both sort by bytes
/// whatever the PostgreSQL database's collation.
pub(super) const SELECT_DESTINATIONS: &str = "SELECT id, name, kind, land, broker, exchange, routing_key, receipt_queue \
     FROM directory_destinations";
pub(super) const SELECT_ROUTES: &str = "SELECT service, region, destination FROM directory_routes";
pub(super) const SELECT_SERVICES: &str = "SELECT key, name FROM directory_services";
pub(super) const SELECT_VERSION: &str = "SELECT version FROM directory_version WHERE id = 1";
pub(super) const BUMP_VERSION: &str =
    "UPDATE directory_version SET version = version + 1 WHERE id = 1 RETURNING version";

impl StoredDirectory {
    /// Sorts every list by its key.
    pub(super) fn sorted(mut self) -> StoredDirectory {
        self.destinations.sort_by(|a, b| a.id.cmp(&b.id));
        self.routes
            .sort_by(|a, b| (&a.service, &a.region).cmp(&(&b.service, &b.region)));
        self.services.sort_by(|a, b| a.key.cmp(&b.key));
        self
    }
}

// ---------------------------------------------------------------------------------------
// Audit log

/// What an audit row says, the same whether it is written or read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Who did it (the authenticated caller).
    pub actor: String,
    /// The caller's scope, as the admin API describes it ("every Land", "Land 06 HE").
    pub actor_scope: String,
    /// What was done, e.g. "directory.put_route", "dead_letter.replay".
    pub action: String,
    /// What it was done to, e.g. "route/99000001/09162".
    pub object: String,
    /// JSON text of the object before and after, where that applies. Never payload.
    pub before: Option<String>,
    pub after: Option<String>,
}

/// An audit row to write; the store adds the id and the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit {
    pub record: AuditRecord,
    /// Whom the row concerns: who may list it.
    pub concerns: Concerns,
}

/// Whom an audit row concerns, so that a token limited to some Länder lists the rows about
/// its own part only. The default concerns nobody in particular: such a row is listed to
/// tokens for every Land only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Concerns {
    /// What every Land shares (the services catalogue): listed to every token.
    pub everyone: bool,
    /// Land codes ("06").
    pub lands: Vec<String>,
    /// Destination ids.
    pub destinations: Vec<String>,
}

impl Concerns {
    /// The columns `concerns_lands` and `concerns_destinations`: each item between spaces
    /// (ids and Land codes have none), '*' for everyone.
    pub(super) fn columns(&self) -> (String, String) {
        let delimited = |items: &[String]| {
            if items.is_empty() {
                String::new()
            } else {
                format!(" {} ", items.join(" "))
            }
        };
        let lands = if self.everyone {
            "*".to_owned()
        } else {
            delimited(&self.lands)
        };
        (lands, delimited(&self.destinations))
    }
}

/// An audit row as stored. Whom it concerns is not read back: the listing filters on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: SystemTime,
    pub record: AuditRecord,
}

/// Which audit rows to list; every field that is set must match. `since` is inclusive,
/// `until` exclusive.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action_prefix: Option<String>,
    pub object_prefix: Option<String>,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    /// The rows the caller may see.
    pub visible: AuditVisible,
}

/// Which audit rows a listing returns: all, or those concerning these Länder (codes) or
/// these destinations, and those that concern everyone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AuditVisible {
    #[default]
    All,
    Only {
        lands: Vec<String>,
        destinations: Vec<String>,
    },
}

impl AuditFilter {
    /// The filter and the page start (`id < before_id`) as conditions.
    pub(super) fn conditions(&self, before_id: Option<i64>) -> Vec<Condition> {
        let mut out = Vec::new();
        if let AuditVisible::Only {
            lands,
            destinations,
        } = &self.visible
        {
            out.push(Condition::Concerns {
                lands: lands.clone(),
                destinations: destinations.clone(),
            });
        }
        if let Some(actor) = &self.actor {
            out.push(Condition::Equals("actor", actor.clone()));
        }
        if let Some(prefix) = &self.action_prefix {
            out.push(Condition::StartsWith("action", prefix.clone()));
        }
        if let Some(prefix) = &self.object_prefix {
            out.push(Condition::StartsWith("object", prefix.clone()));
        }
        push_period(&mut out, "at", self.since, self.until);
        if let Some(id) = before_id {
            out.push(Condition::IdBelow(id));
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Dead letters

/// What a dead letter says, alike when stored and read back; never the body (personal data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterRecord {
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
}

/// A dead letter taken off the gateway's dead-letter queue, to be stored.
#[derive(Clone, PartialEq, Eq)]
pub struct NewDeadLetter {
    pub record: DeadLetterRecord,
    /// The message body: personal data. Never logged; `Debug` prints its length only.
    pub body: Vec<u8>,
}

impl fmt::Debug for NewDeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewDeadLetter")
            .field("record", &self.record)
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
    pub record: DeadLetterRecord,
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
    pub(super) fn condition(&self) -> Option<Condition> {
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
    pub(super) fn conditions(&self, after: Option<(SystemTime, Uuid)>) -> Vec<Condition> {
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
    pub(super) fn column(self) -> &'static str {
        match self {
            DeadLetterGroup::Reason => "reason",
            DeadLetterGroup::Platform => "platform",
            DeadLetterGroup::Destination => "destination",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Submission trace

/// Something that happened to a submission, for the trace an operator looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// As received: may be what an invalid submission carried, so text, not a UUID.
    pub submission_id: String,
    pub at: SystemTime,
    /// "received", "forwarded", "duplicate", "retrying", "dead-lettered", "replayed",
    /// "requeued", …
    pub event: String,
    pub platform: String,
    pub destination: String,
    /// A diagnostic; like every error detail, never payload.
    pub detail: String,
}

// ---------------------------------------------------------------------------------------
// Shared by the backends

/// One condition of a list query's WHERE clause; each backend renders it in its dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Condition {
    /// Text column equals the value.
    Equals(&'static str, String),
    /// Text column starts with the value (case-sensitive, no wildcards).
    StartsWith(&'static str, String),
    /// Time column at or after the microseconds.
    NotBefore(&'static str, i64),
    /// Time column before the microseconds.
    Before(&'static str, i64),
    /// The audit id is below the value.
    IdBelow(i64),
    /// `(dead_lettered_at, id)` is after the pair.
    DeadLetterAfter(i64, Uuid),
    /// The dead letter's id is this one.
    DeadLetterId(Uuid),
    /// `platform` is one of the platforms or `destination` one of the destinations.
    Subjects {
        platforms: Vec<String>,
        destinations: Vec<String>,
    },
    /// The audit row concerns everyone, one of the Länder or one of the destinations.
    Concerns {
        lands: Vec<String>,
        destinations: Vec<String>,
    },
}

fn push_period(
    out: &mut Vec<Condition>,
    column: &'static str,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
) {
    if let Some(since) = since {
        out.push(Condition::NotBefore(column, to_micros(since)));
    }
    if let Some(until) = until {
        out.push(Condition::Before(column, to_micros(until)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_its_name() {
        for state in [
            DeadLetterState::Pending,
            DeadLetterState::Replayed,
            DeadLetterState::Discarded,
        ] {
            assert_eq!(state.as_str().parse::<DeadLetterState>(), Ok(state));
            assert_eq!(state.to_string(), state.as_str());
        }
        assert_eq!(
            "Pending".parse::<DeadLetterState>(),
            Err(UnknownDeadLetterState("Pending".into()))
        );
    }

    #[test]
    fn debug_prints_body_length_not_content() {
        let letter = NewDeadLetter {
            record: DeadLetterRecord {
                id: Uuid::nil(),
                submission_id: "s".into(),
                platform: "p".into(),
                reason: "r".into(),
                field: String::new(),
                detail: String::new(),
                service: String::new(),
                ars: String::new(),
                destination: String::new(),
                dead_lettered_at: SystemTime::UNIX_EPOCH,
                content_type: "application/json".into(),
                message_id: "m".into(),
                headers: "{}".into(),
            },
            body: b"Erika Mustermann".to_vec(),
        };
        let text = format!("{letter:?}");
        assert!(!text.contains("Mustermann"), "{text}");
        assert!(text.contains("body_bytes: 16"), "{text}");

        let message = DeadLetterMessage {
            body: b"Erika Mustermann".to_vec(),
            content_type: "application/json".into(),
            message_id: "m".into(),
            headers: "{}".into(),
            platform: "p".into(),
        };
        let text = format!("{message:?} {message:#?}");
        assert!(!text.contains("Mustermann"), "{text}");
        assert!(text.contains("body_bytes: 16"), "{text}");
    }

    #[test]
    fn filters_become_conditions() {
        let filter = AuditFilter {
            actor: Some("alice".into()),
            action_prefix: Some("directory.".into()),
            object_prefix: None,
            since: Some(SystemTime::UNIX_EPOCH),
            until: None,
            visible: AuditVisible::default(),
        };
        assert_eq!(
            filter.conditions(Some(7)),
            [
                Condition::Equals("actor", "alice".into()),
                Condition::StartsWith("action", "directory.".into()),
                Condition::NotBefore("at", 0),
                Condition::IdBelow(7),
            ]
        );
        let filter = DeadLetterFilter {
            state: Some(DeadLetterState::Pending),
            reason: Some("no-route".into()),
            ..DeadLetterFilter::default()
        };
        assert_eq!(
            filter.conditions(None),
            [
                Condition::Equals("reason", "no-route".into()),
                Condition::Equals("state", "pending".into()),
            ]
        );
        assert_eq!(DeadLetterFilter::default().conditions(None), []);
        let filter = DeadLetterFilter {
            visible: Visible::Only {
                platforms: vec!["civento-he".into()],
                destinations: vec![],
            },
            ..DeadLetterFilter::default()
        };
        assert_eq!(
            filter.conditions(None),
            [Condition::Subjects {
                platforms: vec!["civento-he".into()],
                destinations: vec![],
            }]
        );
    }

    #[test]
    fn concerns_are_stored_between_spaces() {
        let cases = [
            (Concerns::default(), ("", "")),
            (
                Concerns {
                    everyone: true,
                    lands: vec!["06".into()],
                    destinations: vec![],
                },
                ("*", ""),
            ),
            (
                Concerns {
                    everyone: false,
                    lands: vec!["06".into(), "16".into()],
                    destinations: vec!["he-a".into()],
                },
                (" 06 16 ", " he-a "),
            ),
        ];
        for (concerns, (lands, destinations)) in cases {
            assert_eq!(
                concerns.columns(),
                (lands.to_owned(), destinations.to_owned()),
                "{concerns:?}"
            );
        }
    }
}
