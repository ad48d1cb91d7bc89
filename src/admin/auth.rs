//! Bearer tokens with roles. Tokens are configured as SHA-256 hashes, compared in constant
//! time, and never logged: only a token's configured name appears in logs and the audit.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::config::{AdminToken, Role};

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Any role.
    Read,
    /// The operator role.
    Change,
    /// The payload role.
    Payload,
}

/// Who is calling: the token's configured name and roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub roles: Vec<Role>,
}

#[derive(Debug, Clone)]
pub struct Authenticator {
    tokens: Vec<AdminToken>,
}

/// The SHA-256 of a token as configured (`ozg-gateway hash-token`).
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Authenticator {
    pub fn new(tokens: Vec<AdminToken>) -> Authenticator {
        Authenticator { tokens }
    }

    /// UNAUTHENTICATED without a known token, PERMISSION_DENIED when its roles lack the
    /// right.
    pub fn check(&self, metadata: &MetadataMap, right: Right) -> Result<Principal, Status> {
        let presented = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("missing bearer token (authorization: Bearer <token>)")
            })?;
        let hash = hash_token(presented);
        // Every configured hash is compared, match or not, so the time taken says nothing
        // about which or how many bytes matched.
        let mut found: Option<&AdminToken> = None;
        for token in &self.tokens {
            if bool::from(token.sha256.ct_eq(&hash)) {
                found = Some(token);
            }
        }
        let token = found.ok_or_else(|| Status::unauthenticated("unknown bearer token"))?;
        let allowed = match right {
            Right::Read => !token.roles.is_empty(),
            Right::Change => token.roles.contains(&Role::Operator),
            Right::Payload => token.roles.contains(&Role::Payload),
        };
        if !allowed {
            let needed = match right {
                Right::Read => "viewer",
                Right::Change => "operator",
                Right::Payload => "payload",
            };
            return Err(Status::permission_denied(format!(
                "token {:?} lacks the {needed} role",
                token.name
            )));
        }
        Ok(Principal {
            name: token.name.clone(),
            roles: token.roles.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        let token = |name: &str, secret: &str, roles: &[Role]| AdminToken {
            name: name.to_owned(),
            sha256: hash_token(secret),
            roles: roles.to_vec(),
        };
        Authenticator::new(vec![
            token("viewer", "v-secret", &[Role::Viewer]),
            token("operator", "o-secret", &[Role::Operator]),
            token("auditor", "p-secret", &[Role::Viewer, Role::Payload]),
        ])
    }

    fn request(header: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(h) = header {
            m.insert("authorization", h.parse().unwrap());
        }
        m
    }

    #[test]
    fn access_matrix() {
        use tonic::Code::{Ok as Allowed, PermissionDenied, Unauthenticated};
        let cases = [
            (None, Right::Read, Unauthenticated),
            (Some("Bearer "), Right::Read, Unauthenticated),
            (Some("Basic v-secret"), Right::Read, Unauthenticated),
            (Some("Bearer wrong"), Right::Read, Unauthenticated),
            (Some("Bearer v-secret"), Right::Read, Allowed),
            (Some("Bearer v-secret"), Right::Change, PermissionDenied),
            (Some("Bearer v-secret"), Right::Payload, PermissionDenied),
            (Some("Bearer o-secret"), Right::Read, Allowed),
            (Some("Bearer o-secret"), Right::Change, Allowed),
            (Some("Bearer o-secret"), Right::Payload, PermissionDenied),
            (Some("Bearer p-secret"), Right::Payload, Allowed),
            (Some("Bearer p-secret"), Right::Change, PermissionDenied),
        ];
        let auth = auth();
        for (header, right, want) in cases {
            let got = match auth.check(&request(header), right) {
                Ok(_) => Allowed,
                Err(status) => {
                    assert!(!status.message().contains("secret"), "{status:?}");
                    status.code()
                }
            };
            assert_eq!(got, want, "{header:?} {right:?}");
        }
        let who = auth.check(&request(Some("Bearer o-secret")), Right::Change);
        assert_eq!(who.map(|p| p.name).ok(), Some("operator".to_owned()));
    }
}
