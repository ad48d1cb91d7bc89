//! Jurisdiction: which destination is responsible for a (service, region) pair.
//!
//! The walk: first the rules for the exact service key, from the Gemeinde (12 digits) up
//! through Gemeindeverband (9), Kreis (5), Regierungsbezirk (3) to the Land (2); only if none
//! matches, the `*` rules, walking up the same way. The first match wins.
//!
//! Architecture invariant: this module does no I/O and allocates nothing in [`RoutingTable::resolve`];
//! it is called once per submission on the hot path.

use std::collections::HashMap;

use crate::model::{Ars, Level, RegionPrefix, ServiceKey, ServiceSelector};
use crate::model::{DestinationIndex, Route};
use crate::municipalities::Municipalities;

/// The rules, indexed for lookups of (service selector, region prefix).
#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    rules: HashMap<(ServiceSelector, RegionPrefix), RouteIndex>,
    routes: Vec<Route>,
}

type RouteIndex = usize;

/// The rule that matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution {
    pub route: RouteIndex,
    pub destination: DestinationIndex,
    pub service: ServiceSelector,
    pub region: RegionPrefix,
}

/// One step of the walk, for operators asking "where would this go, and why?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub service: ServiceSelector,
    pub region: RegionPrefix,
    /// The unit's name when the municipality directory has one at this level (a Land without
    /// Regierungsbezirke has none at 3 digits).
    pub unit_name: Option<String>,
    pub matched: Option<Resolution>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub steps: Vec<Step>,
    pub resolution: Option<Resolution>,
}

impl RoutingTable {
    /// Routes must already be validated (no two for the same service and region).
    pub fn new(routes: Vec<Route>) -> RoutingTable {
        let rules = routes
            .iter()
            .enumerate()
            .map(|(i, r)| ((r.service, r.region), i))
            .collect();
        RoutingTable { rules, routes }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The rule for exactly this selector and region, if there is one.
    pub fn get(&self, service: ServiceSelector, region: RegionPrefix) -> Option<&Route> {
        self.rules.get(&(service, region)).map(|&i| &self.routes[i])
    }

    fn lookup(&self, service: ServiceSelector, region: RegionPrefix) -> Option<Resolution> {
        self.rules.get(&(service, region)).map(|&route| Resolution {
            route,
            destination: self.routes[route].destination,
            service,
            region,
        })
    }

    pub fn resolve(&self, service: ServiceKey, ars: Ars) -> Option<Resolution> {
        for selector in [ServiceSelector::Exact(service), ServiceSelector::Any] {
            for level in Level::WALK {
                if let Some(found) = self.lookup(selector, ars.prefix(level)) {
                    return Some(found);
                }
            }
        }
        None
    }

    /// The same walk as [`resolve`](Self::resolve), recording every step tried.
    pub fn explain(
        &self,
        service: ServiceKey,
        ars: Ars,
        municipalities: &Municipalities,
    ) -> Explanation {
        let mut steps = Vec::new();
        for selector in [ServiceSelector::Exact(service), ServiceSelector::Any] {
            for level in Level::WALK {
                let region = ars.prefix(level);
                let matched = self.lookup(selector, region);
                steps.push(Step {
                    service: selector,
                    region,
                    unit_name: municipalities.unit(region).map(|u| u.name.clone()),
                    matched,
                });
                if matched.is_some() {
                    return Explanation {
                        steps,
                        resolution: matched,
                    };
                }
            }
        }
        Explanation {
            steps,
            resolution: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(service: &str, region: &str, destination: DestinationIndex) -> Route {
        Route {
            service: service.parse().unwrap(),
            region: region.parse().unwrap(),
            destination,
        }
    }

    const MELDE: &str = "99115005104000"; // registration of residence
    const PASS: &str = "99008001011001"; // identity card address change
    const STAATS: &str = "99099002067003"; // citizenship matters

    // Destinations in the table below.
    const DARMSTADT: usize = 0;
    const KREIS_BERGSTRASSE: usize = 1;
    const HESSEN_OFFICE: usize = 2;
    const ABTSTEINACH: usize = 3;
    const RP_DARMSTADT: usize = 4;
    const VERBAND: usize = 5;
    const ERFURT: usize = 6;
    const DEFAULT_HE: usize = 7;

    fn table() -> RoutingTable {
        RoutingTable::new(vec![
            route(MELDE, "064110000000", DARMSTADT), // Gemeinde rule (kreisfreie Stadt)
            route(MELDE, "06431", KREIS_BERGSTRASSE), // Kreis rule
            route(STAATS, "06", HESSEN_OFFICE),      // Land rule
            route(MELDE, "064310001001", ABTSTEINACH), // Gemeinde in a Kreis
            route(PASS, "064", RP_DARMSTADT),        // Regierungsbezirk rule
            route(MELDE, "073355001", VERBAND),      // Verbandsgemeinde (RP)
            route("*", "16051", ERFURT),             // wildcard, kreisfreie Stadt
            route("*", "06", DEFAULT_HE),            // wildcard Land default
        ])
    }

    #[test]
    fn the_walk_takes_the_most_specific_rule_and_prefers_the_exact_service() {
        // (service, ARS, expected destination, matched region)
        let cases: &[(&str, &str, Option<usize>, &str)] = &[
            (MELDE, "064110000000", Some(DARMSTADT), "064110000000"), // Gemeinde rule
            (MELDE, "064310001001", Some(ABTSTEINACH), "064310001001"), // Gemeinde beats Kreis
            (MELDE, "064310002002", Some(KREIS_BERGSTRASSE), "06431"), // Kreis fallback
            (MELDE, "073355001003", Some(VERBAND), "073355001"),      // Verband fallback
            (PASS, "064310001001", Some(RP_DARMSTADT), "064"),        // Regierungsbezirk fallback
            (STAATS, "066330001001", Some(HESSEN_OFFICE), "06"),      // Land fallback
            (STAATS, "160510000000", Some(ERFURT), "16051"),          // exact none → wildcard Kreis
            (MELDE, "160510000000", Some(ERFURT), "16051"), // kreisfreie Stadt via its Kreis
            (PASS, "066330001001", Some(DEFAULT_HE), "06"), // exact none in RB Kassel → * Land
            (MELDE, "091620000000", None, ""),              // Bayern: no route
        ];
        let t = table();
        for &(service, ars, expected, region) in cases {
            let found = t.resolve(service.parse().unwrap(), ars.parse().unwrap());
            assert_eq!(found.map(|r| r.destination), expected, "{service} {ars}");
            if let Some(found) = found {
                assert_eq!(found.region.to_string(), region, "{service} {ars}");
            }
        }
    }

    #[test]
    fn exact_service_beats_a_more_specific_wildcard() {
        let t = RoutingTable::new(vec![route("*", "064110000000", 0), route(MELDE, "06", 1)]);
        let found = t.resolve(MELDE.parse().unwrap(), "064110000000".parse().unwrap());
        assert_eq!(found.map(|r| r.destination), Some(1));
    }

    #[test]
    fn the_explanation_lists_every_step_tried() {
        let municipalities = Municipalities::embedded().unwrap();
        let t = table();
        let e = t.explain(
            PASS.parse().unwrap(),
            "066330001001".parse().unwrap(),
            &municipalities,
        );
        let shown: Vec<String> = e
            .steps
            .iter()
            .map(|s| format!("{} {} {}", s.service, s.region, s.matched.is_some()))
            .collect();
        assert_eq!(
            shown,
            [
                "99008001011001 066330001001 false",
                "99008001011001 066330001 false",
                "99008001011001 06633 false",
                "99008001011001 066 false",
                "99008001011001 06 false",
                "* 066330001001 false",
                "* 066330001 false",
                "* 06633 false",
                "* 066 false",
                "* 06 true",
            ]
        );
        assert_eq!(e.resolution.map(|r| r.destination), Some(DEFAULT_HE));
        assert_eq!(e.steps[9].unit_name.as_deref(), Some("Hessen"));
        let none = t.explain(
            MELDE.parse().unwrap(),
            "091620000000".parse().unwrap(),
            &municipalities,
        );
        assert_eq!(none.steps.len(), 10);
        assert_eq!(none.resolution, None);
    }
}
