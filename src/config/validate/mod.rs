//! Validation of the raw form: one method per section, every problem collected.

mod admin;
mod brokers;
mod network;
mod sections;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::raw::{RawConfig, in_toml_words, without_values};
use super::*;
use crate::model::{BrokerIndex, DestinationRules, Land};
use crate::municipalities::Municipalities;
use crate::secret::{self, Secret};

pub(super) struct Validator {
    path: String,
    pub(super) errors: Vec<ConfigError>,
    warnings: Vec<String>,
    /// Brokers configured but invalid: references to them are not reported again.
    invalid_brokers: HashSet<String>,
    /// Keys reported at the format level and taken out of the file: what validation would
    /// say about them next ("is missing") is a consequence, not another problem.
    taken_out: Vec<String>,
    /// `gateway.directory` could not be read: which regions exist is unknown.
    pub(super) unknown_municipalities: bool,
}

impl Validator {
    pub(super) fn new(path: &str) -> Validator {
        Validator {
            path: path.to_owned(),
            errors: Vec::new(),
            warnings: Vec::new(),
            invalid_brokers: HashSet::new(),
            taken_out: Vec::new(),
            unknown_municipalities: false,
        }
    }

    pub(super) fn take_errors(&mut self) -> Vec<ConfigError> {
        std::mem::take(&mut self.errors)
    }

    /// A problem found reading the file's structure; the key is taken out of the file.
    pub(super) fn format_error(&mut self, key: &str, message: impl Into<String>) {
        let message = in_toml_words(&message.into());
        // serde quotes the offending value; under these keys it may be a secret.
        let last = key.rsplit(['.', '[']).next().unwrap_or(key);
        let message = if ["url", "urls", "sha256"].contains(&last) || key.contains(".urls[") {
            without_values(&message)
        } else {
            message
        };
        if let Some(name) = key
            .strip_prefix("brokers.")
            .filter(|name| !name.contains('.'))
        {
            self.invalid_brokers.insert(name.to_owned());
        }
        self.errors.push(ConfigError::Invalid {
            path: self.path.clone(),
            key: if key.is_empty() {
                "(file)".to_owned()
            } else {
                key.to_owned()
            },
            message,
        });
        self.taken_out.push(key.to_owned());
    }

    /// Whether `key` is one taken out at the format level, or inside one.
    fn is_taken_out(&self, key: &str) -> bool {
        self.taken_out.iter().any(|out| {
            key == out
                || key
                    .strip_prefix(out.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
    }

    fn warn(&mut self, key: impl fmt::Display, message: impl fmt::Display) {
        self.warnings
            .push(format!("{}: {key}: {message}", self.path));
    }

    /// The secret named by `<prefix>password_file` (relative to the configuration's folder)
    /// or `<prefix>password_env`, at most one of them. `Err(())`: reported already.
    fn password(
        &mut self,
        prefix: &str,
        file: Option<&PathBuf>,
        env: Option<&String>,
        base: &Path,
    ) -> Result<Option<Secret>, ()> {
        match (file, env) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => {
                self.error(
                    format!("{prefix}password_env"),
                    format!("and {prefix}password_file are both set: give one"),
                );
                Err(())
            }
            (Some(file), None) => {
                let key = format!("{prefix}password_file");
                match secret::from_file(&base.join(file)) {
                    Ok(read) => {
                        if let Some(warning) = read.warning {
                            self.warn(&key, warning);
                        }
                        Ok(Some(read.secret))
                    }
                    Err(e) => {
                        self.error(key, e.to_string());
                        Err(())
                    }
                }
            }
            (None, Some(name)) => match secret::from_env(name) {
                Ok(secret) => Ok(Some(secret)),
                Err(e) => {
                    self.error(format!("{prefix}password_env"), e.to_string());
                    Err(())
                }
            },
        }
    }

    fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        if self.is_taken_out(&key) {
            return;
        }
        self.errors.push(ConfigError::Invalid {
            path: self.path.clone(),
            key,
            message: message.into(),
        });
    }

    fn required<'a>(&mut self, key: &str, value: &'a str) -> Option<&'a str> {
        if value.trim().is_empty() {
            self.error(key, "is missing");
            None
        } else {
            Some(value)
        }
    }

    fn land(&mut self, key: &str, value: &str) -> Option<Land> {
        let value = self.required(key, value)?;
        match value.parse() {
            Ok(land) => Some(land),
            Err(e) => {
                self.error(key, e.to_string());
                None
            }
        }
    }

    fn broker_ref(
        &mut self,
        key: &str,
        value: &str,
        names: &HashMap<&str, BrokerIndex>,
    ) -> Option<BrokerIndex> {
        let value = self.required(key, value)?;
        match names.get(value) {
            Some(i) => Some(*i),
            // Declared, but reported invalid already: one error is enough.
            None if self.invalid_brokers.contains(value) => None,
            None => {
                let mut known: Vec<_> = names.keys().copied().collect();
                known.sort_unstable();
                self.error(
                    key,
                    format!(
                        "unknown broker {value:?} (configured: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                None
            }
        }
    }

    pub(super) fn validate(
        mut self,
        raw: RawConfig,
        municipalities: Arc<Municipalities>,
        base: &Path,
    ) -> Result<Config, ConfigErrors> {
        let brokers = self.brokers(&raw.brokers, base);
        let broker_names: HashMap<&str, BrokerIndex> = brokers
            .iter()
            .enumerate()
            .map(|(i, b)| (b.name.as_str(), i))
            .collect();
        let gateway = self.gateway(&raw.gateway, &broker_names);
        let store = self.store(&raw.store, raw.gateway.data_dir.as_ref(), base);
        let retry = self.retry(&raw.retry);
        let telemetry = self.telemetry(&raw.telemetry);
        let platforms = self.platforms(&raw.platforms, &broker_names);
        let rules = DestinationRules::new(
            &brokers,
            gateway.as_ref().map(|g| {
                (
                    g.dead_letter_broker,
                    g.dead_letter_exchange.as_str(),
                    g.dead_letter_queue.as_str(),
                )
            }),
            &platforms,
        );
        let (destinations, destination_ids) = self.destinations(&raw.destinations, &rules);
        let services = self.services(&raw.services);
        let admin = raw
            .admin
            .as_ref()
            .and_then(|a| self.admin(a, base, &platforms, &destinations));
        let has_tokens = raw.admin.as_ref().is_some_and(|a| !a.tokens.is_empty());
        let console = raw
            .console
            .as_ref()
            .and_then(|c| self.console(c, has_tokens));
        let receipts = self.receipts(&raw.receipts);
        let routes = self.routes(&raw, &destination_ids, &municipalities);
        match gateway {
            Some(gateway) if self.errors.is_empty() => Ok(Config {
                source: self.path,
                warnings: self.warnings,
                gateway,
                retry,
                telemetry,
                store,
                brokers,
                platforms,
                destinations,
                routes,
                services,
                receipts,
                admin,
                console,
                municipalities,
            }),
            _ => Err(ConfigErrors(self.errors)),
        }
    }
}
