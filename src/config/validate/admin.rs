//! `[admin]`: address, TLS and tokens with their roles and scopes; `[console]`, whose
//! operators log in with those tokens.

use std::collections::HashSet;
use std::path::Path;

use super::Validator;
use crate::config::raw::{RawAdmin, RawConsole, RawToken};
use crate::config::{AdminSettings, AdminTls, AdminToken, ConsoleSettings, Role, Scope};
use crate::model::{Destination, Land, Platform, check_id};
use crate::secret::{self, Secret};

impl Validator {
    pub(super) fn console(
        &mut self,
        raw: &RawConsole,
        has_tokens: bool,
    ) -> Option<ConsoleSettings> {
        let a = self.required("console.address", &raw.address)?;
        let Ok(address) = a.parse::<std::net::SocketAddr>() else {
            self.error(
                "console.address",
                format!("{a:?} is not an address like 127.0.0.1:8080"),
            );
            return None;
        };
        if !has_tokens {
            self.error(
                "console",
                "operators log in with an admin token: configure [admin] with [[admin.tokens]]",
            );
            return None;
        }
        if !address.ip().is_loopback() {
            self.warn(
                "console.address",
                format!(
                    "{address} is reachable from other machines over plain HTTP: tokens and \
                     session cookies cross the network readable; put a TLS-terminating proxy \
                     in front, or listen on loopback"
                ),
            );
        }
        Some(ConsoleSettings { address })
    }

    pub(super) fn admin(
        &mut self,
        raw: &RawAdmin,
        base: &Path,
        platforms: &[Platform],
        destinations: &[Destination],
    ) -> Option<AdminSettings> {
        let address = match self.required("admin.address", &raw.address) {
            Some(a) => match a.parse::<std::net::SocketAddr>() {
                Ok(address) => Some(address),
                Err(_) => {
                    self.error(
                        "admin.address",
                        format!("{a:?} is not an address like 127.0.0.1:50051"),
                    );
                    None
                }
            },
            None => None,
        };
        let tls = self.admin_tls(raw, base, address);
        let mut tokens: Vec<AdminToken> = Vec::new();
        for (i, t) in raw.tokens.iter().enumerate() {
            if let Some(token) = self.admin_token(i, t, &tokens, base, platforms, destinations) {
                tokens.push(token);
            }
        }
        Some(AdminSettings {
            address: address?,
            tls,
            tokens,
        })
    }

    /// The scope of `admin.tokens[i]`; `None` after reporting what is wrong with it.
    fn token_scope(
        &mut self,
        i: usize,
        t: &RawToken,
        destinations: &[Destination],
    ) -> Option<Scope> {
        let key = |field: &str| format!("admin.tokens[{i}].{field}");
        let mut valid = true;
        let laender = self.token_laender(i, t, &mut valid);
        let named = match &t.destinations {
            None => None,
            Some(ids) if ids.is_empty() => {
                self.error(
                    key("destinations"),
                    "is empty: name destinations, or leave the key out for every destination of the token's Länder",
                );
                valid = false;
                None
            }
            Some(ids) => {
                let mut named: Vec<String> = Vec::new();
                for id in ids {
                    let id = id.trim();
                    if let Err(message) = check_id(id) {
                        self.error(key("destinations"), message);
                        valid = false;
                        continue;
                    }
                    match destinations.iter().find(|d| d.id == id) {
                        Some(d) if laender.as_ref().is_some_and(|l| !l.contains(&d.land)) => {
                            self.error(
                                key("destinations"),
                                format!(
                                    "destination {id:?} is of Land {} {}, which is not among laender",
                                    d.land,
                                    d.land.abbreviation()
                                ),
                            );
                            valid = false;
                        }
                        Some(_) => {}
                        None => self.warn(
                            key("destinations"),
                            format!(
                                "destination {id:?} is not in this file: it counts once it is created through the admin API"
                            ),
                        ),
                    }
                    named.push(id.to_owned());
                }
                named.sort();
                named.dedup();
                Some(named)
            }
        };
        valid.then_some(Scope {
            laender,
            destinations: named,
        })
    }

    /// `admin.tls_cert`, `admin.tls_key` and `admin.client_ca`; warns about an address other
    /// machines reach without TLS.
    fn admin_tls(
        &mut self,
        raw: &RawAdmin,
        base: &Path,
        address: Option<std::net::SocketAddr>,
    ) -> Option<AdminTls> {
        let tls = match (&raw.tls_cert, &raw.tls_key) {
            (Some(cert), Some(key)) => Some(AdminTls {
                cert: base.join(cert),
                key: base.join(key),
                client_ca: raw.client_ca.as_ref().map(|ca| base.join(ca)),
            }),
            (None, None) => {
                if raw.client_ca.is_some() {
                    self.error(
                        "admin.client_ca",
                        "needs TLS: set admin.tls_cert and admin.tls_key too",
                    );
                }
                None
            }
            (Some(_), None) => {
                self.error("admin.tls_key", "is missing (admin.tls_cert is set)");
                None
            }
            (None, Some(_)) => {
                self.error("admin.tls_cert", "is missing (admin.tls_key is set)");
                None
            }
        };
        if let Some(tls) = &tls {
            for (key, path) in [
                ("admin.tls_cert", Some(&tls.cert)),
                ("admin.tls_key", Some(&tls.key)),
                ("admin.client_ca", tls.client_ca.as_ref()),
            ] {
                if let Some(path) = path
                    && !path.is_file()
                {
                    self.error(key, format!("{} is not a readable file", path.display()));
                }
            }
        }
        if let Some(address) = address
            && tls.is_none()
            && !address.ip().is_loopback()
        {
            self.warn(
                "admin.address",
                format!(
                    "{address} is reachable from other machines, without TLS: bearer tokens and \
                     dead-letter payloads would cross the network in clear text; set \
                     admin.tls_cert and admin.tls_key, or listen on 127.0.0.1"
                ),
            );
        }
        tls
    }

    /// `admin.tokens[i]`: its name, hash, roles and scope.
    fn admin_token(
        &mut self,
        i: usize,
        t: &RawToken,
        tokens: &[AdminToken],
        base: &Path,
        platforms: &[Platform],
        destinations: &[Destination],
    ) -> Option<AdminToken> {
        let key = |field: &str| format!("admin.tokens[{i}].{field}");
        let name = self.required(&key("name"), &t.name).map(str::to_owned);
        if let Some(name) = &name
            && tokens.iter().any(|other| &other.name == name)
        {
            self.error(key("name"), format!("token name {name:?} is used twice"));
        }
        let sha256 = self.token_hash(i, t, base);
        let mut roles = Vec::new();
        if t.roles.is_empty() {
            self.error(
                key("roles"),
                format!("is missing (one or more of {})", Role::NAMES.join(", ")),
            );
        }
        for r in &t.roles {
            match r.as_str() {
                "viewer" => roles.push(Role::Viewer),
                "operator" => roles.push(Role::Operator),
                "payload" => roles.push(Role::Payload),
                other => self.error(
                    key("roles"),
                    format!("unknown role {other:?} (one of {})", Role::NAMES.join(", ")),
                ),
            }
        }
        let scope = self.token_scope(i, t, destinations);
        let lands: HashSet<Land> = platforms
            .iter()
            .map(|p| p.land)
            .chain(destinations.iter().map(|d| d.land))
            .collect();
        if t.laender.is_none() && roles.contains(&Role::Operator) && lands.len() > 1 {
            self.warn(
                key("laender"),
                "is not set: this operator token sees and changes every Land's part; \
                 name its Länder (laender = [\"HE\"]), or write laender = [\"*\"] to say so",
            );
        }
        Some(AdminToken {
            name: name?,
            sha256: sha256?,
            roles,
            scope: scope?,
        })
    }

    /// `admin.tokens[i].laender`; `None`: every Land. Clears `valid` after a problem.
    fn token_laender(&mut self, i: usize, t: &RawToken, valid: &mut bool) -> Option<Vec<Land>> {
        let key = |field: &str| format!("admin.tokens[{i}].{field}");
        match &t.laender {
            None => None,
            Some(codes) if codes.iter().any(|c| c.trim() == "*") => {
                if codes.len() > 1 {
                    self.error(
                        key("laender"),
                        "\"*\" (every Land) stands alone: give it, or the Länder",
                    );
                    *valid = false;
                }
                None
            }
            Some(codes) if codes.is_empty() => {
                self.error(
                    key("laender"),
                    "is empty: name the Länder (codes like \"06\" or abbreviations like \"HE\"), or \"*\" for every Land",
                );
                *valid = false;
                None
            }
            Some(codes) => {
                let mut laender = Vec::new();
                for code in codes {
                    match code.trim().parse::<Land>() {
                        Ok(land) => laender.push(land),
                        Err(e) => {
                            self.error(key("laender"), e.to_string());
                            *valid = false;
                        }
                    }
                }
                laender.sort();
                laender.dedup();
                Some(laender)
            }
        }
    }

    /// The SHA-256 of `admin.tokens[i]`, from `sha256` or `sha256_file`.
    fn token_hash(&mut self, i: usize, t: &RawToken, base: &Path) -> Option<[u8; 32]> {
        let key = |field: &str| format!("admin.tokens[{i}].{field}");
        let text = match (&t.sha256, &t.sha256_file) {
            (Some(text), None) => Some((key("sha256"), Secret::new(text.clone()))),
            (None, Some(file)) => match secret::from_file(&base.join(file)) {
                Ok(read) => {
                    if let Some(warning) = read.warning {
                        self.warn(key("sha256_file"), warning);
                    }
                    Some((key("sha256_file"), read.secret))
                }
                Err(e) => {
                    self.error(key("sha256_file"), e.to_string());
                    None
                }
            },
            (None, None) => {
                self.error(key("sha256"), "is missing (or sha256_file)");
                None
            }
            (Some(_), Some(_)) => {
                self.error(key("sha256_file"), "and sha256 are both set: give one");
                None
            }
        };
        // Never quote the value: someone may have pasted the token itself here.
        text.and_then(|(field, text)| {
            let hash = hex::decode(text.expose().trim())
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok());
            if hash.is_none() {
                let what = if field.ends_with("_file") { "hold" } else { "be" };
                self.error(
                    field,
                    format!("must {what} the SHA-256 of the token as 64 hex digits (ozg-gateway hash-token prints it)"),
                );
            }
            hash
        })
    }
}
