//! `[brokers.NAME]`: nodes, passwords and TLS.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use lapin::uri::{AMQPScheme, AMQPUri};

use super::Validator;
use crate::config::raw::{RawBroker, RawBrokerTls};
use crate::model::{Broker, BrokerNode};
use crate::secret::{self, Secret};
use crate::tls::{self, BrokerTls};

impl Validator {
    /// `[brokers.NAME]`: the brokers that are valid; the others are remembered as invalid.
    pub(super) fn brokers(
        &mut self,
        raw: &BTreeMap<String, RawBroker>,
        base: &Path,
    ) -> Vec<Broker> {
        let mut brokers = Vec::new();
        if raw.is_empty() {
            self.error(
                "brokers",
                "no broker is configured ([brokers.NAME] with url = \"amqp://…\")",
            );
        }
        for (name, broker) in raw {
            match self.broker(name, broker, base) {
                Some(broker) => brokers.push(broker),
                None => {
                    self.invalid_brokers.insert(name.clone());
                }
            }
        }
        brokers
    }

    fn broker(&mut self, name: &str, raw: &RawBroker, base: &Path) -> Option<Broker> {
        let key = |field: &str| format!("brokers.{name}.{field}");
        let urls = self.broker_urls(name, raw)?;
        let password = self.password(
            &format!("brokers.{name}."),
            raw.password_file.as_ref(),
            raw.password_env.as_ref(),
            base,
        );
        let mut valid = password.is_ok();
        let password = password.ok().flatten();
        let mut nodes: Vec<BrokerNode> = Vec::new();
        for (k, text) in &urls {
            if let Some((node, ok)) =
                self.broker_node(name, raw, k, text, password.as_ref(), &nodes)
            {
                valid &= ok;
                nodes.push(node);
            } else {
                valid = false;
            }
        }
        let amqps = nodes
            .first()
            .is_some_and(|n| n.uri().scheme == AMQPScheme::AMQPS);
        let tls = match &raw.tls {
            Some(tls) if amqps => {
                let loaded = self.broker_tls(name, tls, base, &nodes);
                valid &= loaded.is_some();
                loaded
            }
            Some(_) => {
                if !nodes.is_empty() {
                    self.error(
                        key("tls"),
                        "is set, but the broker's URL is amqp:// (plain): use amqps:// for TLS",
                    );
                }
                valid = false;
                None
            }
            None if amqps => {
                self.error(
                    key("tls.ca_file"),
                    "is missing: amqps:// needs the CA that signed the broker's certificate \
                     ([brokers.NAME.tls] ca_file = …; for a public CA the system bundle, \
                     e.g. /etc/ssl/certs/ca-certificates.crt)",
                );
                valid = false;
                None
            }
            None => None,
        };
        if !valid || nodes.is_empty() {
            return None;
        }
        let display = cluster_display(&nodes);
        Some(Broker {
            name: name.to_owned(),
            nodes,
            tls,
            display,
        })
    }

    /// The URLs of `[brokers.NAME]`, each with its key: `url`, or `urls` for a cluster.
    fn broker_urls<'a>(
        &mut self,
        name: &str,
        raw: &'a RawBroker,
    ) -> Option<Vec<(String, &'a str)>> {
        let key = |field: &str| format!("brokers.{name}.{field}");
        Some(match (&raw.url, &raw.urls) {
            (Some(url), None) => vec![(key("url"), url.as_str())],
            (None, Some(urls)) if urls.is_empty() => {
                self.error(key("urls"), "is empty (one URL per node of the cluster)");
                return None;
            }
            (None, Some(urls)) => urls
                .iter()
                .enumerate()
                .map(|(i, u)| (format!("brokers.{name}.urls[{i}]"), u.as_str()))
                .collect(),
            (None, None) => {
                self.error(
                    key("url"),
                    "is missing (or urls = [\"amqps://node1…\", …] for the nodes of a cluster)",
                );
                return None;
            }
            (Some(_), Some(_)) => {
                self.error(
                    format!("brokers.{name}"),
                    "has url and urls: give one (urls for the nodes of a cluster)",
                );
                return None;
            }
        })
    }

    /// One node of a broker with the password put in; `None` when its URL is none, and
    /// `false` beside a node that is reported (kept, so that later nodes compare with it).
    fn broker_node(
        &mut self,
        name: &str,
        raw: &RawBroker,
        k: &str,
        text: &str,
        password: Option<&Secret>,
        nodes: &[BrokerNode],
    ) -> Option<(BrokerNode, bool)> {
        let separate_password = raw.password_file.is_some() || raw.password_env.is_some();
        let mut valid = true;
        if text.trim().is_empty() {
            self.error(k, "is missing");
            return None;
        }
        let Ok(mut uri) = AMQPUri::from_str(text) else {
            // The parser's message may quote the URL, which may hold a password.
            self.error(
                k,
                "is not a valid AMQP URI (amqp://user@host:port/vhost or amqps://…)",
            );
            return None;
        };
        let has_password = url::Url::parse(text).is_ok_and(|u| u.password().is_some());
        if has_password && separate_password {
            self.error(
                k,
                format!(
                    "has a password, and brokers.{name}.password_{} gives one too: leave it out of the URL",
                    if raw.password_file.is_some() { "file" } else { "env" }
                ),
            );
            valid = false;
        } else if has_password && !is_guest(&uri) {
            self.warn(
                k,
                "holds the password; prefer password_file or password_env (the URL then has none)",
            );
        }
        if let Some(password) = &password {
            uri.authority.userinfo.password = password.expose().to_owned();
        }
        let node = BrokerNode::new(uri);
        if let Some(first) = nodes.first() {
            let (a, b) = (first.uri(), node.uri());
            if a.scheme != b.scheme
                || a.vhost != b.vhost
                || a.authority.userinfo.username != b.authority.userinfo.username
            {
                self.error(
                    k,
                    format!(
                        "{} differs from {} in scheme, user or vhost: the nodes of one broker are one cluster",
                        node.display, first.display
                    ),
                );
                valid = false;
            }
        }
        if nodes.iter().any(|n| n.address == node.address) {
            self.error(k, format!("node {} is listed twice", node.address));
            valid = false;
        }
        Some((node, valid))
    }

    fn broker_tls(
        &mut self,
        name: &str,
        raw: &RawBrokerTls,
        base: &Path,
        nodes: &[BrokerNode],
    ) -> Option<BrokerTls> {
        let key = |field: &str| format!("brokers.{name}.tls.{field}");
        let Some(ca_file) = &raw.ca_file else {
            self.error(
                key("ca_file"),
                "is missing (the CA that signed the broker's certificate)",
            );
            return None;
        };
        let client = match (&raw.client_cert_file, &raw.client_key_file) {
            (Some(cert), Some(key_file)) => Some((base.join(cert), base.join(key_file))),
            (None, None) => None,
            (Some(_), None) => {
                self.error(
                    key("client_key_file"),
                    "is missing (client_cert_file is set)",
                );
                return None;
            }
            (None, Some(_)) => {
                self.error(
                    key("client_cert_file"),
                    "is missing (client_key_file is set)",
                );
                return None;
            }
        };
        match &raw.server_name {
            Some(server_name) if !tls::valid_server_name(server_name) => {
                self.error(
                    key("server_name"),
                    format!("{server_name:?} is not a DNS name or IP address"),
                );
                return None;
            }
            Some(_) => {}
            None => {
                let bad: Vec<&str> = nodes
                    .iter()
                    .map(|n| n.uri().authority.host.as_str())
                    .filter(|host| !tls::valid_server_name(host))
                    .collect();
                if !bad.is_empty() {
                    self.error(
                        key("server_name"),
                        format!(
                            "is needed: {} cannot be checked against a certificate",
                            bad.join(", ")
                        ),
                    );
                    return None;
                }
            }
        }
        if let Some((_, key_file)) = &client
            && let Some(warning) = secret::world_readable(key_file)
        {
            self.warn(key("client_key_file"), warning);
        }
        let client = client.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        match BrokerTls::load(&base.join(ca_file), client, raw.server_name.clone()) {
            Ok(tls) => Some(tls),
            Err(e) => {
                self.error(key(e.key), e.message);
                None
            }
        }
    }
}

/// RabbitMQ's default user: its password is public, and the broker lets it in only over
/// loopback, so local set-ups may write it into the URL without a warning.
fn is_guest(uri: &AMQPUri) -> bool {
    let user = &uri.authority.userinfo;
    user.username == "guest" && user.password == "guest"
}

/// The nodes' URIs without password, for logs and admin output
/// (`amqps://user@n1:5671,n2:5671/vhost` for a cluster).
fn cluster_display(nodes: &[BrokerNode]) -> String {
    match nodes {
        [one] => one.display.clone(),
        [first, ..] => {
            let uri = first.uri();
            let addresses: Vec<&str> = nodes.iter().map(|n| n.address.as_str()).collect();
            let (_, path) = first
                .display
                .split_once(&format!("@{}", first.address))
                .unwrap_or(("", ""));
            format!(
                "{}://{}@{}{path}",
                uri.scheme,
                uri.authority.userinfo.username,
                addresses.join(",")
            )
        }
        [] => String::new(),
    }
}
