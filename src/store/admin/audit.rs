//! The audit log: who changed what and when, and whom a row concerns.

use std::time::SystemTime;

use super::{Condition, push_period};

/// An audit row to write; the store adds the id and the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit {
    /// Who did it (the authenticated caller).
    pub actor: String,
    /// The caller's scope, as the admin API describes it ("every Land", "Land 06 HE").
    pub actor_scope: String,
    /// Whom the row concerns: who may list it.
    pub concerns: Concerns,
    /// What was done, e.g. "directory.put_route", "dead_letter.replay".
    pub action: String,
    /// What it was done to, e.g. "route/99000001/09162".
    pub object: String,
    /// JSON text of the object before and after, where that applies. Never payload.
    pub before: Option<String>,
    pub after: Option<String>,
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
    pub(in crate::store) fn columns(&self) -> (String, String) {
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

/// An audit row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: SystemTime,
    pub actor: String,
    /// The scope of the token that acted.
    pub actor_scope: String,
    pub action: String,
    pub object: String,
    pub before: Option<String>,
    pub after: Option<String>,
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
    pub(in crate::store) fn conditions(&self, before_id: Option<i64>) -> Vec<Condition> {
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
