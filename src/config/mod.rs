//! Configuration: TOML file → raw serde structs → validated [`Config`].
//!
//! Only the validated form is used by the rest of the gateway. Validation collects every
//! problem it finds (file, key, what is wrong) instead of stopping at the first, so an
//! operator fixes a file in one round. Nothing connects before validation has passed.

mod raw;
mod settings;
#[cfg(test)]
pub(crate) mod tests;
mod validate;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use lapin::uri::AMQPUri;

use crate::model::{
    Broker, BrokerIndex, BrokerNode, Destination, DestinationIndex, DestinationRules, Platform,
    Route, ServiceName,
};
use crate::municipalities::{Municipalities, MunicipalitiesError};

pub use settings::*;

use raw::read_raw;
use validate::Validator;

/// Exit code for invalid configuration (EX_USAGE), as operators' scripts expect.
pub const EXIT_INVALID_CONFIG: u8 = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
    #[error("{path}: gateway.directory: {source}")]
    Municipalities {
        path: String,
        source: MunicipalitiesError,
    },
}

/// Every problem found in one configuration, in file order.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "invalid configuration: {n} error{}",
            if n == 1 { "" } else { "s" }
        )?;
        for error in &self.0 {
            writeln!(f, "  {error}")?;
        }
        Ok(())
    }
}
impl std::error::Error for ConfigErrors {}

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from, for messages.
    pub source: String,
    /// What is allowed but unwise (a password in a URL, a secret file every user may
    /// read), as `file: key: message`; `check-config` prints them, `run` logs them.
    pub warnings: Vec<String>,
    pub gateway: GatewaySettings,
    pub store: StoreSettings,
    pub retry: RetrySettings,
    pub telemetry: TelemetrySettings,
    pub brokers: Vec<Broker>,
    pub platforms: Vec<Platform>,
    pub destinations: Vec<Destination>,
    pub routes: Vec<Route>,
    pub services: Vec<ServiceName>,
    pub receipts: ReceiptSettings,
    pub admin: Option<AdminSettings>,
    pub console: Option<ConsoleSettings>,
    pub municipalities: Arc<Municipalities>,
}

/// A section of a configuration file that takes effect only when the gateway starts.
pub const RESTART_ONLY: [&str; 10] = [
    "gateway",
    "gateway.directory",
    "store",
    "retry",
    "telemetry",
    "brokers",
    "platforms",
    "receipts",
    "admin",
    "console",
];

impl Config {
    /// The sections of [`RESTART_ONLY`] in which `new` differs from `self` (secrets
    /// included: a changed password counts, without being shown).
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let broker_name = |c: &Config, i: BrokerIndex| c.brokers[i].name.clone();
        let gateway = |c: &Config| {
            let g = &c.gateway;
            format!(
                "{} {} {} {} {} {:?} {:?} {} {}",
                broker_name(c, g.dead_letter_broker),
                g.dead_letter_exchange,
                g.dead_letter_queue,
                g.max_message_bytes,
                g.in_flight_bytes,
                g.confirm_timeout,
                g.shutdown_grace,
                g.verify_attachment_hashes,
                g.store_dead_letters
            )
        };
        let store = |c: &Config| (c.store.url.clone(), format!("{:?}", c.store));
        let brokers = |c: &Config| {
            c.brokers
                .iter()
                .map(|b| {
                    let uris: Vec<&AMQPUri> = b.nodes.iter().map(BrokerNode::uri).collect();
                    (b.name.clone(), format!("{uris:?} {:?}", b.tls))
                })
                .collect::<Vec<_>>()
        };
        let platforms = |c: &Config| {
            c.platforms
                .iter()
                .map(|p| format!("{p:?} on {}", broker_name(c, p.broker)))
                .collect::<Vec<_>>()
        };
        let admin = |c: &Config| {
            c.admin.as_ref().map(|a| {
                let tokens: Vec<_> = a
                    .tokens
                    .iter()
                    .map(|t| (t.name.clone(), t.sha256, t.roles.clone()))
                    .collect();
                (a.address, format!("{:?}", a.tls), tokens)
            })
        };
        let municipalities = |c: &Config| {
            (
                c.municipalities.n_gemeinden(),
                c.municipalities.units().count(),
            )
        };
        let mut changed = Vec::new();
        for (section, differs) in [
            ("gateway", gateway(self) != gateway(new)),
            (
                "gateway.directory",
                municipalities(self) != municipalities(new),
            ),
            ("store", store(self) != store(new)),
            ("retry", self.retry != new.retry),
            ("telemetry", self.telemetry != new.telemetry),
            ("brokers", brokers(self) != brokers(new)),
            ("platforms", platforms(self) != platforms(new)),
            ("receipts", self.receipts != new.receipts),
            ("admin", admin(self) != admin(new)),
            ("console", self.console != new.console),
        ] {
            if differs {
                changed.push(section);
            }
        }
        changed
    }

    /// This configuration with the routing directory of `new` (its destinations, routes and
    /// services): what a reload of the configuration file puts in use. A destination on a
    /// broker this configuration does not have cannot be: brokers change with a restart.
    pub fn with_directory_of(&self, new: &Config) -> Result<Config, Vec<String>> {
        let mut problems = Vec::new();
        let mut destinations = new.destinations.clone();
        for (i, d) in destinations.iter_mut().enumerate() {
            let name = &new.brokers[d.broker].name;
            match self.broker_index(name) {
                Some(index) => d.broker = index,
                None => problems.push(format!(
                    "{}: destinations[{i}].broker: {name:?} is not a broker of the running gateway; a new broker takes a restart",
                    new.source
                )),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut merged = self.clone();
        merged.destinations = destinations;
        merged.routes = new.routes.clone();
        merged.services = new.services.clone();
        Ok(merged)
    }

    /// Reads and validates a configuration file. A relative `gateway.directory` is taken
    /// relative to the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| {
            ConfigErrors(vec![ConfigError::Read {
                path: shown.clone(),
                source,
            }])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, &shown, base)
    }

    /// Validates configuration text; `source` names it in messages, `base` resolves
    /// relative paths.
    pub fn parse(text: &str, source: &str, base: &Path) -> Result<Config, ConfigErrors> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigErrors(vec![ConfigError::Syntax {
                path: source.to_owned(),
                message: e.to_string().trim_end().replace('\n', "\n    "),
            }])
        })?;
        let mut validator = Validator::new(source);
        let raw =
            read_raw(table, &mut validator).ok_or_else(|| ConfigErrors(validator.take_errors()))?;
        let municipalities = match &raw.gateway.directory {
            None => Municipalities::embedded(),
            Some(p) => match Municipalities::load(&base.join(p)) {
                Ok(municipalities) => Ok(municipalities),
                Err(e) => {
                    validator.errors.push(ConfigError::Municipalities {
                        path: source.to_owned(),
                        source: e,
                    });
                    // The rest is still checked, against the embedded one; which
                    // regions exist is not known, so that is not reported.
                    validator.unknown_municipalities = true;
                    Municipalities::embedded()
                }
            },
        }
        .map_err(|e| {
            ConfigErrors(vec![ConfigError::Municipalities {
                path: source.to_owned(),
                source: e,
            }])
        })?;
        validator.validate(raw, Arc::new(municipalities), base)
    }

    pub fn broker(&self, index: BrokerIndex) -> &Broker {
        &self.brokers[index]
    }

    pub fn broker_index(&self, name: &str) -> Option<BrokerIndex> {
        self.brokers.iter().position(|b| b.name == name)
    }

    pub fn platform(&self, id: &str) -> Option<&Platform> {
        self.platforms.iter().find(|p| p.id == id)
    }

    pub fn destination_index(&self, id: &str) -> Option<DestinationIndex> {
        self.destinations.iter().position(|d| d.id == id)
    }
}

impl Config {
    /// The rules for destinations, for entries that come from elsewhere than the file.
    pub fn destination_rules(&self) -> DestinationRules<'_> {
        DestinationRules::new(
            &self.brokers,
            Some((
                self.gateway.dead_letter_broker,
                self.gateway.dead_letter_exchange.as_str(),
                self.gateway.dead_letter_queue.as_str(),
            )),
            &self.platforms,
        )
    }
}
