//! Who is calling and what they may touch: roles say which kind of call, the scope which
//! Länder's part. Every such decision of the service layer is made here.
//!
//! A submission (a dead letter, a trace, an overdue delivery, a live event) is in a scope
//! when its origin platform is of one of the scope's Länder, or its destination is (as the
//! directory in use says now, so a destination created later counts at once). A scope
//! narrowed to destinations takes in what was sent to them, nothing else. A submission that
//! found no destination is in the scope of its platform's Land only.

use std::collections::BTreeSet;

use super::ServiceError;
use crate::config::{Config, Role, Scope};
use crate::model::Platform;
use crate::model::{Land, RegionPrefix};
use crate::routing::live::Snapshot;
use crate::store::{AuditVisible, Concerns, Visible};

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// The viewer role (or operator, which includes it).
    Read,
    /// The operator role.
    Change,
    /// The payload role.
    Payload,
}

/// Who is calling: a token's (or a console session's) name, roles and scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub roles: Vec<Role>,
    pub scope: Scope,
}

impl Principal {
    /// PERMISSION_DENIED when the roles lack `right`. Roles imply nothing but operator ⊇
    /// viewer: the payload role reads payloads only.
    pub fn require(&self, right: Right) -> Result<(), ServiceError> {
        let allowed = match right {
            Right::Read => {
                self.roles.contains(&Role::Viewer) || self.roles.contains(&Role::Operator)
            }
            Right::Change => self.roles.contains(&Role::Operator),
            Right::Payload => self.roles.contains(&Role::Payload),
        };
        if allowed {
            return Ok(());
        }
        let needed = match right {
            Right::Read => "viewer (or operator)",
            Right::Change => "operator",
            Right::Payload => "payload",
        };
        Err(ServiceError::PermissionDenied(format!(
            "token {:?} lacks the {needed} role",
            self.name
        )))
    }
}

/// A scope held against the configuration and the directory in use: which platforms and
/// destinations are its, and what it may change.
pub(super) struct Reach<'a> {
    scope: &'a Scope,
    config: &'a Config,
    snapshot: &'a Snapshot,
}

impl<'a> Reach<'a> {
    pub(super) fn new(scope: &'a Scope, config: &'a Config, snapshot: &'a Snapshot) -> Self {
        Reach {
            scope,
            config,
            snapshot,
        }
    }

    pub(super) fn is_all(&self) -> bool {
        self.scope.is_all()
    }

    fn land(&self, land: Land) -> bool {
        self.scope
            .laender
            .as_ref()
            .is_none_or(|l| l.contains(&land))
    }

    /// The platform's submissions are in scope (a scope narrowed to destinations takes in
    /// no platform as such).
    pub(super) fn platform(&self, id: &str) -> bool {
        self.is_all()
            || (self.scope.destinations.is_none()
                && self.config.platform(id).is_some_and(|p| self.land(p.land)))
    }

    /// What was sent to the destination is in scope.
    pub(super) fn destination(&self, id: &str) -> bool {
        if self.is_all() {
            return true;
        }
        if id.is_empty()
            || self
                .scope
                .destinations
                .as_ref()
                .is_some_and(|named| !named.iter().any(|n| n == id))
        {
            return false;
        }
        match &self.scope.laender {
            None => true,
            Some(laender) => self
                .snapshot
                .destination(id)
                .is_some_and(|d| laender.contains(&d.land)),
        }
    }

    /// A submission from `platform` to `destination` (either may be empty) is in scope.
    pub(super) fn submission(&self, platform: &str, destination: &str) -> bool {
        self.platform(platform) || self.destination(destination)
    }

    /// The same decision as [`submission`](Self::submission), for the store to make on
    /// every row of a listing, so that a page holds a page of the caller's rows.
    pub(super) fn visible(&self) -> Visible {
        if self.is_all() {
            return Visible::All;
        }
        let platforms = self
            .config
            .platforms
            .iter()
            .filter(|p| self.platform(&p.id))
            .map(|p| p.id.clone())
            .collect();
        Visible::Only {
            platforms,
            destinations: self.destinations(),
        }
    }

    /// The destinations in scope: with Länder, those of the directory in use; narrowed to
    /// destinations without Länder, the named ones (a deleted one keeps its history).
    fn destinations(&self) -> Vec<String> {
        match (&self.scope.laender, &self.scope.destinations) {
            (None, Some(named)) => named.clone(),
            _ => self
                .snapshot
                .destinations
                .iter()
                .filter(|d| self.destination(&d.id))
                .map(|d| d.id.clone())
                .collect(),
        }
    }

    /// The audit rows in scope: those about its Länder (unless narrowed to destinations),
    /// its destinations, or what every Land shares.
    pub(super) fn audit_visible(&self) -> AuditVisible {
        if self.is_all() {
            return AuditVisible::All;
        }
        let lands = match (&self.scope.laender, &self.scope.destinations) {
            (Some(laender), None) => laender.iter().map(Land::to_string).collect(),
            _ => Vec::new(),
        };
        AuditVisible::Only {
            lands,
            destinations: self.destinations(),
        }
    }

    /// The Land of a platform, as configured.
    pub(super) fn platform_land(&self, id: &str) -> Option<Land> {
        self.config.platform(id).map(|p| p.land)
    }

    /// The Land of a destination, as the directory in use says.
    pub(super) fn destination_land(&self, id: &str) -> Option<Land> {
        self.snapshot.destination(id).map(|d| d.land)
    }

    /// Whom an audit row about a submission from `platform` to `destination` concerns.
    pub(super) fn submission_concerns(&self, platform: &str, destination: &str) -> Concerns {
        concerns(
            [
                self.platform_land(platform),
                self.destination_land(destination),
            ]
            .into_iter()
            .flatten(),
            [destination],
        )
    }

    fn outside(&self) -> String {
        format!("outside the token's scope ({})", self.scope)
    }

    /// May the caller create, change or delete destination `id`, which is (or becomes) of
    /// the Länder `lands`?
    pub(super) fn change_destination(&self, id: &str, lands: &[Land]) -> Result<(), ServiceError> {
        if self.is_all() {
            return Ok(());
        }
        if let Some(land) = lands.iter().find(|l| !self.land(**l)) {
            return Err(ServiceError::PermissionDenied(format!(
                "destination {id:?} is of Land {land} {}, {}",
                land.abbreviation(),
                self.outside()
            )));
        }
        if let Some(named) = &self.scope.destinations
            && !named.iter().any(|n| n == id)
        {
            return Err(ServiceError::PermissionDenied(format!(
                "destination {id:?} is not among the token's destinations ({})",
                self.scope
            )));
        }
        Ok(())
    }

    /// May the caller create, change or delete the route for `region`, which points (or
    /// will point) at `destinations`? The region decides whose route it is; a token
    /// narrowed to destinations changes only routes to its own.
    pub(super) fn change_route(
        &self,
        region: RegionPrefix,
        destinations: &[&str],
    ) -> Result<(), ServiceError> {
        if self.is_all() {
            return Ok(());
        }
        if let Some(land) = region.land()
            && !self.land(land)
        {
            return Err(ServiceError::PermissionDenied(format!(
                "the route's region {region} lies in Land {land} {}, {}",
                land.abbreviation(),
                self.outside()
            )));
        }
        if self.scope.destinations.is_some()
            && let Some(id) = destinations.iter().find(|id| !self.destination(id))
        {
            return Err(ServiceError::PermissionDenied(format!(
                "the route points at destination {id:?}, which is not among the token's destinations ({})",
                self.scope
            )));
        }
        Ok(())
    }

    /// May the caller pause or resume the platform's ingress?
    pub(super) fn change_platform(&self, platform: &Platform) -> Result<(), ServiceError> {
        if self.platform(&platform.id) {
            return Ok(());
        }
        Err(ServiceError::PermissionDenied(
            if self.scope.destinations.is_some() {
                format!(
                    "the token is limited to destinations ({}); pausing or resuming platform {:?} needs a token for its Land",
                    self.scope, platform.id
                )
            } else {
                format!(
                    "platform {:?} is of Land {} {}, {}",
                    platform.id,
                    platform.land,
                    platform.land.abbreviation(),
                    self.outside()
                )
            },
        ))
    }

    /// May the caller change what every Land shares (`what`: the services catalogue)?
    pub(super) fn change_shared(&self, what: &str) -> Result<(), ServiceError> {
        if self.is_all() {
            return Ok(());
        }
        Err(ServiceError::PermissionDenied(format!(
            "{what} is shared by every Land: changing it needs a token for every Land (this one's scope: {})",
            self.scope
        )))
    }

    /// May the caller send a submission to destination `id` by hand (a replay to it)?
    pub(super) fn send_to(&self, id: &str) -> Result<(), ServiceError> {
        if self.destination(id) {
            return Ok(());
        }
        Err(ServiceError::PermissionDenied(format!(
            "destination: {id:?} is {}: a replay is sent only to a destination of its own",
            self.outside()
        )))
    }
}

/// Whom an audit row concerns: these Länder and destinations (empty ids are left out).
pub(super) fn concerns<'s>(
    lands: impl IntoIterator<Item = Land>,
    destinations: impl IntoIterator<Item = &'s str>,
) -> Concerns {
    let lands: BTreeSet<Land> = lands.into_iter().collect();
    let destinations: BTreeSet<&str> = destinations.into_iter().filter(|d| !d.is_empty()).collect();
    Concerns {
        everyone: false,
        lands: lands.iter().map(Land::to_string).collect(),
        destinations: destinations.into_iter().map(str::to_owned).collect(),
    }
}

/// An audit row about what every Land shares.
pub(super) fn concerns_everyone() -> Concerns {
    Concerns {
        everyone: true,
        ..Concerns::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Hessen and Thüringen, each with a platform and a destination; Bayern with a
    /// destination only.
    fn config() -> Config {
        let mut text = String::from(
            "[gateway]\ndead_letter_broker = \"b\"\n[brokers.b]\nurl = \"amqp://127.0.0.1/x\"\n",
        );
        for (id, land) in [("civento-he", "06"), ("civento-th", "16")] {
            text += &format!(
                "[[platforms]]\nid = \"{id}\"\nland = \"{land}\"\nbroker = \"b\"\n\
                 ingress_queue = \"{id}.in\"\nstatus_exchange = \"{id}.status\"\n"
            );
        }
        for (id, land) in [
            ("he-a", "06"),
            ("he-b", "06"),
            ("th-a", "16"),
            ("by-a", "09"),
        ] {
            text += &format!(
                "[[destinations]]\nid = \"{id}\"\nname = \"{id}\"\nkind = \"gemeinde\"\n\
                 land = \"{land}\"\nbroker = \"b\"\nexchange = \"x\"\nrouting_key = \"{id}\"\n"
            );
        }
        Config::parse(&text, "test.toml", Path::new(".")).unwrap()
    }

    fn land(code: u8) -> Land {
        Land::from_code(code).unwrap()
    }

    fn scopes() -> [(&'static str, Scope); 5] {
        let named = |ids: &[&str]| Some(ids.iter().map(|s| (*s).to_owned()).collect());
        [
            ("all", Scope::ALL),
            (
                "HE",
                Scope {
                    laender: Some(vec![land(6)]),
                    destinations: None,
                },
            ),
            (
                "HE+TH",
                Scope {
                    laender: Some(vec![land(6), land(16)]),
                    destinations: None,
                },
            ),
            (
                "HE/he-a",
                Scope {
                    laender: Some(vec![land(6)]),
                    destinations: named(&["he-a"]),
                },
            ),
            (
                "he-a,by-a",
                Scope {
                    laender: None,
                    destinations: named(&["by-a", "he-a"]),
                },
            ),
        ]
    }

    #[test]
    fn roles_imply_nothing_but_operator_over_viewer() {
        let who = |roles: &[Role]| Principal {
            name: "t".into(),
            roles: roles.to_vec(),
            scope: Scope::ALL,
        };
        let cases = [
            (vec![Role::Viewer], [true, false, false]),
            (vec![Role::Operator], [true, true, false]),
            (vec![Role::Viewer, Role::Payload], [true, false, true]),
            (vec![Role::Payload], [false, false, true]),
        ];
        for (roles, want) in cases {
            let got = [Right::Read, Right::Change, Right::Payload]
                .map(|right| who(&roles).require(right).is_ok());
            assert_eq!(got, want, "{roles:?}");
        }
        let refused = who(&[Role::Viewer]).require(Right::Change).unwrap_err();
        assert_eq!(
            refused,
            ServiceError::PermissionDenied("token \"t\" lacks the operator role".into())
        );
    }

    #[test]
    fn a_submission_is_in_scope_by_its_platform_or_its_destination() {
        let config = config();
        let snapshot = Snapshot::from_config(&config);
        // (platform, destination) → in scope for all, HE, HE+TH, HE/he-a, he-a,by-a
        let cases = [
            (("civento-he", "he-a"), [true, true, true, true, true]),
            (("civento-he", "th-a"), [true, true, true, false, false]),
            (("civento-th", "he-a"), [true, true, true, true, true]),
            (("civento-th", "he-b"), [true, true, true, false, false]),
            (("civento-th", "th-a"), [true, false, true, false, false]),
            (("civento-th", ""), [true, false, true, false, false]),
            (("civento-he", ""), [true, true, true, false, false]),
            (("civento-th", "by-a"), [true, false, true, false, true]),
            // A platform no longer configured, a destination no longer in the directory.
            (("gone", "he-a"), [true, true, true, true, true]),
            (("gone", "gone"), [true, false, false, false, false]),
            (("", ""), [true, false, false, false, false]),
        ];
        for ((platform, destination), want) in cases {
            let got = scopes().map(|(_, scope)| {
                Reach::new(&scope, &config, &snapshot).submission(platform, destination)
            });
            assert_eq!(got, want, "{platform} → {destination}");
        }
        // The store's condition is the same decision.
        let visible: Vec<Visible> = scopes()
            .iter()
            .map(|(_, scope)| Reach::new(scope, &config, &snapshot).visible())
            .collect();
        let only = |platforms: &[&str], destinations: &[&str]| Visible::Only {
            platforms: platforms.iter().map(|s| (*s).to_owned()).collect(),
            destinations: destinations.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert_eq!(
            visible,
            [
                Visible::All,
                only(&["civento-he"], &["he-a", "he-b"]),
                only(&["civento-he", "civento-th"], &["he-a", "he-b", "th-a"]),
                only(&[], &["he-a"]),
                only(&[], &["by-a", "he-a"]),
            ]
        );
    }

    #[test]
    fn changes_outside_the_scope_are_refused_with_the_reason() {
        let config = config();
        let snapshot = Snapshot::from_config(&config);
        fn region(r: &str) -> RegionPrefix {
            r.parse().unwrap()
        }
        type Check = fn(&Reach) -> Result<(), ServiceError>;
        // (what, check, allowed for all, HE, HE+TH, HE/he-a, he-a,by-a)
        let cases: [(&str, Check, [bool; 5]); 9] = [
            (
                "destination he-b of HE",
                |r| r.change_destination("he-b", &[land(6)]),
                [true, true, true, false, false],
            ),
            (
                "destination th-a of TH",
                |r| r.change_destination("th-a", &[land(16)]),
                [true, false, true, false, false],
            ),
            (
                "he-a moved to TH",
                |r| r.change_destination("he-a", &[land(6), land(16)]),
                [true, false, true, false, true],
            ),
            (
                "route in Darmstadt to he-a",
                |r| r.change_route(region("06411"), &["he-a"]),
                [true, true, true, true, true],
            ),
            (
                "route in Darmstadt from he-a to he-b",
                |r| r.change_route(region("06411"), &["he-a", "he-b"]),
                [true, true, true, false, false],
            ),
            (
                "route in Erfurt to he-a",
                |r| r.change_route(region("16051"), &["he-a"]),
                [true, false, true, false, true],
            ),
            (
                "pause civento-th",
                |r| r.change_platform(r.config.platform("civento-th").unwrap()),
                [true, false, true, false, false],
            ),
            (
                "the services catalogue",
                |r| r.change_shared("the services catalogue"),
                [true, false, false, false, false],
            ),
            (
                "replay to by-a",
                |r| r.send_to("by-a"),
                [true, false, false, false, true],
            ),
        ];
        for (what, check, want) in cases {
            let got = scopes().map(|(_, scope)| check(&Reach::new(&scope, &config, &snapshot)));
            for (((name, _), got), allowed) in scopes().iter().zip(&got).zip(want) {
                match got {
                    Ok(()) => assert!(allowed, "{what} allowed for {name}"),
                    Err(ServiceError::PermissionDenied(reason)) => {
                        assert!(!allowed, "{what} refused for {name}: {reason}")
                    }
                    Err(other) => panic!("{what} for {name}: {other:?}"),
                }
            }
        }
        let he = Scope {
            laender: Some(vec![land(6)]),
            destinations: None,
        };
        let reach = Reach::new(&he, &config, &snapshot);
        let reasons = [
            reach.change_route(region("16051"), &["th-a"]),
            reach.change_destination("th-a", &[land(16)]),
            reach.change_platform(config.platform("civento-th").unwrap()),
            reach.change_shared("the services catalogue"),
        ]
        .map(|r| r.unwrap_err().to_string());
        assert_eq!(
            reasons,
            [
                "the route's region 16051 lies in Land 16 TH, outside the token's scope (Land 06 HE)",
                "destination \"th-a\" is of Land 16 TH, outside the token's scope (Land 06 HE)",
                "platform \"civento-th\" is of Land 16 TH, outside the token's scope (Land 06 HE)",
                "the services catalogue is shared by every Land: changing it needs a token for every Land (this one's scope: Land 06 HE)",
            ]
        );
    }

    #[test]
    fn audit_rows_are_listed_by_the_lands_and_destinations_they_concern() {
        let config = config();
        let snapshot = Snapshot::from_config(&config);
        let visible: Vec<AuditVisible> = scopes()
            .iter()
            .map(|(_, scope)| Reach::new(scope, &config, &snapshot).audit_visible())
            .collect();
        let only = |lands: &[&str], destinations: &[&str]| AuditVisible::Only {
            lands: lands.iter().map(|s| (*s).to_owned()).collect(),
            destinations: destinations.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert_eq!(
            visible,
            [
                AuditVisible::All,
                only(&["06"], &["he-a", "he-b"]),
                only(&["06", "16"], &["he-a", "he-b", "th-a"]),
                only(&[], &["he-a"]),
                only(&[], &["by-a", "he-a"]),
            ]
        );
        let reach = Reach::new(&Scope::ALL, &config, &snapshot);
        assert_eq!(
            reach.submission_concerns("civento-th", "he-a"),
            Concerns {
                everyone: false,
                lands: vec!["06".into(), "16".into()],
                destinations: vec!["he-a".into()],
            }
        );
        assert_eq!(reach.submission_concerns("gone", ""), Concerns::default());
    }
}
