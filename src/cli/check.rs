//! `check-config` and `resolve`: what a configuration says, without connecting.

use std::path::PathBuf;
use std::process::ExitCode;

use ozg_gateway::model::{Ags, Ars, ServiceKey};
use ozg_gateway::routing::table::RoutingTable;

use super::{fail, load};

/// `check-config`: every problem of the file, or a line that it is valid and its warnings.
pub fn check_config(config: Option<PathBuf>, file: Option<PathBuf>) -> Result<(), ExitCode> {
    let file = check_config_file(config, file)?;
    let c = load(&file)?;
    for warning in &c.warnings {
        eprintln!("warning: {warning}");
    }
    println!(
        "{}: valid ({} brokers, {} platforms, {} destinations, {} routes)",
        file.display(),
        c.brokers.len(),
        c.platforms.len(),
        c.destinations.len(),
        c.routes.len()
    );
    Ok(())
}

/// The file `check-config` checks: `--config FILE` (or `OZG_CONFIG`) like every command,
/// or a plain `FILE` as older scripts give it, which wins over `OZG_CONFIG`.
fn check_config_file(config: Option<PathBuf>, file: Option<PathBuf>) -> Result<PathBuf, ExitCode> {
    let from_env = std::env::var_os("OZG_CONFIG").map(PathBuf::from);
    match (config, file) {
        (Some(config), Some(file)) if config != file && Some(&config) != from_env.as_ref() => {
            eprintln!(
                "ozg-gateway check-config: two files given ({} and {}): give one, as --config FILE",
                config.display(),
                file.display()
            );
            Err(ExitCode::from(2))
        }
        (_, Some(file)) | (Some(file), None) => Ok(file),
        (None, None) => {
            eprintln!(
                "ozg-gateway check-config: which file? Give --config FILE (or set OZG_CONFIG)"
            );
            Err(ExitCode::from(2))
        }
    }
}

pub fn resolve(path: &std::path::Path, service: &str, region: &str) -> Result<(), ExitCode> {
    let config = load(path)?;
    let service: ServiceKey = service.parse().map_err(|e| fail(format!("service {e}")))?;
    let ars: Ars = if region.len() == 8 {
        let ags: Ags = region.parse().map_err(|e| fail(format!("region {e}")))?;
        config
            .municipalities
            .ars_for_ags(ags)
            .ok_or_else(|| fail(format!("AGS {ags} is not in the municipality directory")))?
    } else {
        region.parse().map_err(|e| fail(format!("region {e}")))?
    };
    let Some(gemeinde) = config.municipalities.gemeinde(ars) else {
        return Err(fail(format!(
            "ARS {ars} is not in the municipality directory"
        )));
    };
    println!("service {service}, region {ars} ({})", gemeinde.name);
    let table = RoutingTable::new(config.routes.clone());
    let explanation = table.explain(service, ars, &config.municipalities);
    for step in &explanation.steps {
        let unit = step
            .unit_name
            .as_deref()
            .unwrap_or("(no unit at this level)");
        let level = step.region.level().name();
        match step.matched {
            Some(m) => println!(
                "  {:<14} {:<12} {level:<16} {unit}  → route matched: {}",
                step.service.to_string(),
                step.region.to_string(),
                config.destinations[m.destination].id
            ),
            None => println!(
                "  {:<14} {:<12} {level:<16} {unit}  – no route",
                step.service.to_string(),
                step.region.to_string()
            ),
        }
    }
    match explanation.resolution {
        Some(m) => {
            let d = &config.destinations[m.destination];
            println!("→ {} ({}, {})", d.id, d.name, d.kind.as_str());
            Ok(())
        }
        None => {
            println!("→ no route: a submission would be dead-lettered with reason no-route");
            Err(ExitCode::from(2))
        }
    }
}
