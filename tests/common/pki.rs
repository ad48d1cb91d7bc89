//! Certificates for TLS tests: a CA of the test's own and the certificates it issues, as PEM.

use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// Each CA gets a name of its own, as unrelated CAs have.
static CAS: AtomicUsize = AtomicUsize::new(0);

pub struct Pki {
    /// The CA's certificate.
    pub ca: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            DnType::CommonName,
            format!(
                "ozg-gateway test CA {}",
                CAS.fetch_add(1, Ordering::Relaxed)
            ),
        );
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki {
            ca: issuer.pem(),
            issuer,
        }
    }

    /// A certificate for `names` (DNS names or IP addresses) and its key. Its subject is
    /// the first name, not rcgen's default, which equals the CA's: OpenSSL and Erlang would
    /// take the certificate for a self-signed one.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}
