//! The municipality directory searched by name part, ARS prefix or AGS, and Resolve: where
//! a submission would go, step by step. Open to every reader, whatever its scope.

use super::{DestinationView, Principal, Right, Service, ServiceError};
use crate::model::{Ags, Ars, RegionPrefix, ServiceKey};
use crate::routing::table::Explanation;

/// A unit of the municipality directory that a search found.
#[derive(Debug, Clone)]
pub struct RegionMatch {
    pub prefix: RegionPrefix,
    pub name: String,
    pub kind: crate::municipalities::UnitKind,
}

/// Where a submission for a service and region would go, and why.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub service: ServiceKey,
    pub service_name: String,
    /// The ARS the walk started from (an AGS converted).
    pub ars: Ars,
    pub region_name: String,
    pub explanation: Explanation,
    pub destination: Option<DestinationView>,
}

impl Service {
    /// Units of the municipality directory whose name contains `text` (any case) or
    /// whose ARS starts with it, and the municipality of an 8-digit AGS; at most `limit`,
    /// names that begin with `text` first, then higher levels and larger municipalities.
    pub fn find_regions(
        &self,
        who: &Principal,
        text: &str,
        limit: usize,
    ) -> Result<Vec<RegionMatch>, ServiceError> {
        who.require(Right::Read)?;
        let text = text.trim();
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let municipalities = &self.config.municipalities;
        let lower = text.to_lowercase();
        let digits = text.chars().all(|c| c.is_ascii_digit());
        let by_ags = text
            .parse::<Ags>()
            .ok()
            .and_then(|ags| municipalities.ars_for_ags(ags))
            .and_then(|ars| municipalities.gemeinde(ars));
        let mut found: Vec<&crate::municipalities::Unit> = municipalities
            .units()
            .filter(|u| {
                if digits {
                    u.prefix.to_string().starts_with(text)
                } else {
                    u.name.to_lowercase().contains(&lower)
                }
            })
            .collect();
        found.sort_by_key(|u| {
            (
                !u.name.to_lowercase().starts_with(&lower),
                u.prefix.level().digits(),
                std::cmp::Reverse(u.population),
                u.name.clone(),
            )
        });
        Ok(by_ags
            .into_iter()
            .chain(found)
            .take(limit)
            .map(|u| RegionMatch {
                prefix: u.prefix,
                name: u.name.clone(),
                kind: u.kind,
            })
            .collect())
    }

    /// Where a submission for `service` in `region` (a 12-digit ARS or an 8-digit AGS)
    /// would go, step by step, sending nothing.
    pub fn resolve(
        &self,
        who: &Principal,
        service: &str,
        region: &str,
    ) -> Result<Resolution, ServiceError> {
        who.require(Right::Read)?;
        let municipalities = &self.config.municipalities;
        let service = service
            .parse::<ServiceKey>()
            .map_err(|e| ServiceError::invalid("service", e.to_string()))?;
        let ars = match region.chars().count() {
            8 => {
                let ags = region
                    .parse::<Ags>()
                    .map_err(|e| ServiceError::invalid("region", e.to_string()))?;
                municipalities.ars_for_ags(ags).ok_or_else(|| {
                    ServiceError::NotFound(format!(
                        "region: AGS {ags} is not in the municipality directory"
                    ))
                })?
            }
            _ => region
                .parse::<Ars>()
                .map_err(|e| ServiceError::invalid("region", format!("{e}; or an 8-digit AGS")))?,
        };
        let snapshot = self.gateway.snapshot();
        let explanation = snapshot.table.explain(service, ars, municipalities);
        let destination = explanation.resolution.and_then(|found| {
            let id = &snapshot.destinations[found.destination].id;
            self.destination_view(&snapshot, id)
        });
        Ok(Resolution {
            service,
            service_name: snapshot
                .service_name(service)
                .unwrap_or_default()
                .to_owned(),
            ars,
            region_name: municipalities
                .gemeinde(ars)
                .map(|u| u.name.clone())
                .unwrap_or_default(),
            explanation,
            destination,
        })
    }
}
