//! TLS for broker connections (amqps): the client configuration built once from the
//! configured files, when the configuration is loaded, so that `check-config` finds a bad
//! certificate before anything connects.
//!
//! The broker is verified against the configured CA only: no system roots, no switch to
//! turn verification off. The crypto provider is ring, chosen explicitly rather than taken
//! from the process default, like the admin API's: two providers linked into one binary
//! make rustls refuse to guess.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// What went wrong with one of the TLS files; `key` says which setting, for the
/// configuration's `file: key: message` form. Never carries file content.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TlsError {
    /// `ca_file`, `client_cert_file` or `client_key_file`.
    pub key: &'static str,
    pub message: String,
}

fn error(key: &'static str, message: impl Into<String>) -> TlsError {
    TlsError {
        key,
        message: message.into(),
    }
}

/// A broker's TLS settings, ready to connect with.
#[derive(Clone)]
pub struct BrokerTls {
    pub ca_file: PathBuf,
    pub client_cert_file: Option<PathBuf>,
    /// The name checked in the broker's certificate instead of each node's host.
    pub server_name: Option<String>,
    client: Arc<ClientConfig>,
}

impl fmt::Debug for BrokerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerTls")
            .field("ca_file", &self.ca_file)
            .field("client_cert_file", &self.client_cert_file)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl BrokerTls {
    /// Reads the CA and, if given, the client certificate and key (PEM), and builds the
    /// client configuration. `ca_file` must hold at least one certificate.
    pub fn load(
        ca_file: &Path,
        client: Option<(&Path, &Path)>,
        server_name: Option<String>,
    ) -> Result<BrokerTls, TlsError> {
        let roots = trust_anchors(ca_file)?;
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| error("ca_file", format!("TLS versions: {e}")))?
                .with_root_certificates(roots);
        let (config, client_cert_file) = match client {
            None => (builder.with_no_client_auth(), None),
            Some((cert_file, key_file)) => {
                let chain = certificates(
                    "client_cert_file",
                    cert_file,
                    &read("client_cert_file", cert_file)?,
                )?;
                let key = PrivateKeyDer::from_pem_slice(&read("client_key_file", key_file)?)
                    .map_err(|e| {
                        error(
                            "client_key_file",
                            format!(
                                "{} holds no usable PEM private key: {e}",
                                key_file.display()
                            ),
                        )
                    })?;
                let config = builder.with_client_auth_cert(chain, key).map_err(|e| {
                    error(
                        "client_key_file",
                        format!(
                            "{} does not go with {}: {e}",
                            key_file.display(),
                            cert_file.display()
                        ),
                    )
                })?;
                (config, Some(cert_file.to_owned()))
            }
        };
        Ok(BrokerTls {
            ca_file: ca_file.to_owned(),
            client_cert_file,
            server_name,
            client: Arc::new(config),
        })
    }

    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    /// The name to verify the certificate of the node at `host` against.
    pub fn name_for<'a>(&'a self, host: &'a str) -> &'a str {
        self.server_name.as_deref().unwrap_or(host)
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| error(key, format!("cannot read {}: {e}", path.display())))
}

/// The PEM certificates in `pem` (read from `path`), at least one.
fn certificates(
    key: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            error(
                key,
                format!("{} is not PEM certificates: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(error(
            key,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

/// The certificates of `ca_file`, each one a trust anchor.
fn trust_anchors(ca_file: &Path) -> Result<RootCertStore, TlsError> {
    let ca_pem = read("ca_file", ca_file)?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in certificates("ca_file", ca_file, &ca_pem)?
        .into_iter()
        .enumerate()
    {
        roots.add(cert).map_err(|e| {
            error(
                "ca_file",
                format!(
                    "certificate {} in {} cannot be a trust anchor: {e}",
                    i + 1,
                    ca_file.display()
                ),
            )
        })?;
    }
    Ok(roots)
}

/// Whether `name` can be checked against a certificate (a DNS name or an IP address).
pub fn valid_server_name(name: &str) -> bool {
    ServerName::try_from(name).is_ok()
}
