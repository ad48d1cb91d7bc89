//! `declare-topology` and `definitions`: the one description of every exchange, queue and
//! binding ([`ozg_gateway::topology`]) declared on the brokers, or printed as a RabbitMQ
//! definitions file.

use std::path::Path;
use std::process::ExitCode;

use super::{fail, load};

/// `declare-topology`: everything, on every broker of the configuration.
pub async fn declare(config: &Path) -> Result<(), ExitCode> {
    let c = load(config)?;
    ozg_gateway::amqp::declare::declare(&c)
        .await
        .map_err(fail)?;
    println!("{}: topology declared", config.display());
    Ok(())
}

/// `definitions`: the same as a RabbitMQ definitions file, of the named brokers or all.
pub fn definitions(config: &Path, brokers: &[String]) -> Result<(), ExitCode> {
    let c = load(config)?;
    let text = ozg_gateway::topology::definitions::definitions(&c, brokers)
        .map_err(fail)?
        .to_json()
        .map_err(fail)?;
    print!("{text}");
    Ok(())
}
