//! The channel to the admin API (plain or TLS), the bearer token on every call, and how a
//! failure becomes one line on stderr and an exit code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

pub const EXIT_CALL_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_DENIED: u8 = 3;
const EXIT_NOT_FOUND: u8 = 4;
const EXIT_UNREACHABLE: u8 = 5;

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  ok
  1  the call failed (any other gRPC status, or a local error such as writing --out)
  2  usage: bad arguments
  3  UNAUTHENTICATED or PERMISSION_DENIED: no, an unknown or an insufficient token
  4  NOT_FOUND
  5  the admin API is unreachable (transport error, UNAVAILABLE)";

#[derive(Debug)]
pub enum Failure {
    /// Wrong arguments, found before anything was sent.
    Usage(String),
    Status(Status),
    /// No answer from the admin API: connecting, TLS or the connection failed (the text
    /// says which).
    Unreachable(String),
    /// Something on this machine: a file, stdout.
    Local(String),
    /// Already reported (on stdout): only the exit code is left to give.
    Quiet(u8),
}

impl From<Status> for Failure {
    /// tonic reports a connection that broke (say, a TLS handshake the server ended) as
    /// UNKNOWN, yet for a script it is the same as a server that is not there.
    fn from(status: Status) -> Self {
        let mut cause = std::error::Error::source(&status);
        let mut transport = false;
        while let Some(error) = cause {
            transport |= error.is::<tonic::transport::Error>();
            cause = error.source();
        }
        if transport || status.code() == Code::Unavailable {
            Failure::Unreachable(status_text(&status))
        } else {
            Failure::Status(status)
        }
    }
}

/// Scripts branch on these, so a denied token and a missing entry each get their own.
pub fn exit_code(code: Code) -> u8 {
    match code {
        Code::Ok => 0,
        Code::Unauthenticated | Code::PermissionDenied => EXIT_DENIED,
        Code::NotFound => EXIT_NOT_FOUND,
        Code::Unavailable => EXIT_UNREACHABLE,
        _ => EXIT_CALL_FAILED,
    }
}

/// The names in the gRPC specification, which tonic's `Display` does not give.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => EXIT_USAGE,
            Failure::Status(status) => exit_code(status.code()),
            Failure::Unreachable(_) => EXIT_UNREACHABLE,
            Failure::Local(_) => EXIT_CALL_FAILED,
            Failure::Quiet(code) => *code,
        }
    }

    /// One line for stderr, without the token even if a server or a library echoed it.
    pub fn message(&self, address: &str, token: Option<&str>) -> Option<String> {
        let line = match self {
            Failure::Usage(text) | Failure::Local(text) => text.clone(),
            Failure::Status(status) => {
                let text = status_text(status);
                let code = code_name(status.code());
                if text.is_empty() {
                    code.to_owned()
                } else {
                    format!("{code}: {text}")
                }
            }
            Failure::Unreachable(text) => format!("UNAVAILABLE: admin API at {address}: {text}"),
            Failure::Quiet(_) => return None,
        };
        let line = super::render::clean(&line);
        Some(match token.filter(|t| !t.is_empty()) {
            Some(token) => line.replace(token, "<token>"),
            None => line,
        })
    }
}

/// The status message and, for a transport failure, its causes: tonic's own message is just
/// "transport error", while the cause ("Connection refused", a certificate problem) is what
/// an operator can act on.
fn status_text(status: &Status) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !status.message().is_empty() {
        parts.push(status.message().to_owned());
    }
    let mut cause = std::error::Error::source(status);
    while let Some(error) = cause {
        let text = error.to_string();
        // tonic's wrapper says nothing its own cause does not say better.
        if text != "transport error" && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = error.source();
    }
    parts.join(": ")
}

#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub address: String,
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub timeout: Duration,
}

/// Whether the address asks for TLS, and whether the TLS flags fit it. No roots are built
/// into tonic here (only tls-ring), so https without --ca-cert could never verify a server.
fn wants_tls(target: &Target) -> Result<bool, String> {
    let tls_flags = target.ca_cert.is_some() || target.client_cert.is_some();
    let scheme = target
        .address
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("http") if tls_flags => {
            Err("--ca-cert, --client-cert and --client-key need an https:// address".into())
        }
        Some("http") => Ok(false),
        Some("https") if target.ca_cert.is_none() => Err(
            "an https:// address needs --ca-cert FILE (the CA that signed the admin API's certificate)"
                .into(),
        ),
        Some("https") => Ok(true),
        _ => Err(format!(
            "--address {:?} must start with http:// or https://",
            target.address
        )),
    }
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::Usage(format!("{flag} {}: {e}", path.display())))
}

/// The endpoint connects on the first call, so arguments are checked before anything is
/// sent and an unreachable server shows as that call's UNAVAILABLE.
pub fn endpoint(target: &Target) -> Result<Endpoint, Failure> {
    let tls = wants_tls(target).map_err(Failure::Usage)?;
    let endpoint = Endpoint::from_shared(target.address.clone())
        .map_err(|e| Failure::Usage(format!("--address {:?}: {e}", target.address)))?
        .connect_timeout(target.timeout)
        // Small requests, each waiting for its answer: Nagle's algorithm would hold them.
        .tcp_nodelay(true)
        // Notices a vanished server during a long `watch` instead of waiting forever.
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(target.timeout);
    if !tls {
        return Ok(endpoint);
    }
    ozg_gateway::admin::install_crypto_provider();
    let mut config = ClientTlsConfig::new();
    if let Some(ca) = &target.ca_cert {
        config = config.ca_certificate(Certificate::from_pem(read("--ca-cert", ca)?));
    }
    if let (Some(cert), Some(key)) = (&target.client_cert, &target.client_key) {
        config = config.identity(Identity::from_pem(
            read("--client-cert", cert)?,
            read("--client-key", key)?,
        ));
    }
    endpoint
        .tls_config(config)
        .map_err(|e| Failure::Usage(format!("TLS settings: {e}")))
}

/// `authorization: Bearer <token>` on every call. No Debug: nothing may print it.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Result<Self, Failure> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Ok(Bearer(None));
        };
        let mut value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
            Failure::Usage("the token has characters that cannot go into a header".into())
        })?;
        // Keeps it out of HPACK tables and hyper's debug output.
        value.set_sensitive(true);
        Ok(Bearer(Some(value)))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_status_code() {
        let cases = [
            (Code::Ok, 0),
            (Code::Cancelled, 1),
            (Code::Unknown, 1),
            (Code::InvalidArgument, 1),
            (Code::DeadlineExceeded, 1),
            (Code::NotFound, 4),
            (Code::AlreadyExists, 1),
            (Code::PermissionDenied, 3),
            (Code::ResourceExhausted, 1),
            (Code::FailedPrecondition, 1),
            (Code::Aborted, 1),
            (Code::OutOfRange, 1),
            (Code::Unimplemented, 1),
            (Code::Internal, 1),
            (Code::Unavailable, 5),
            (Code::DataLoss, 1),
            (Code::Unauthenticated, 3),
        ];
        for (code, exit) in cases {
            assert_eq!(exit_code(code), exit, "{code:?}");
            assert_eq!(
                Failure::from(Status::new(code, "x")).exit_code(),
                exit,
                "{code:?}"
            );
            let name = code_name(code);
            assert!(
                name.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{name}"
            );
        }
        let names: std::collections::BTreeSet<_> =
            cases.iter().map(|(c, _)| code_name(*c)).collect();
        assert_eq!(names.len(), 17);
        assert_eq!(Failure::Usage("x".into()).exit_code(), 2);
        assert_eq!(Failure::Local("x".into()).exit_code(), 1);
        assert_eq!(Failure::Quiet(0).exit_code(), 0);
    }

    #[test]
    fn messages_are_one_line_and_never_show_the_token() {
        let address = "http://127.0.0.1:50051";
        let token = Some("s3cr3t-t0ken");
        let cases = [
            (
                Failure::Status(Status::not_found("no destination \"x\"")),
                "NOT_FOUND: no destination \"x\"",
            ),
            (
                Failure::Status(Status::new(Code::PermissionDenied, "")),
                "PERMISSION_DENIED",
            ),
            (
                Failure::Status(Status::unauthenticated("unknown token s3cr3t-t0ken")),
                "UNAUTHENTICATED: unknown token <token>",
            ),
            (
                Failure::from(Status::unavailable("connection refused")),
                "UNAVAILABLE: admin API at http://127.0.0.1:50051: connection refused",
            ),
            (
                Failure::Status(Status::internal("line one\nline two")),
                "INTERNAL: line one\\nline two",
            ),
            (
                Failure::Usage("--since is after --until".into()),
                "--since is after --until",
            ),
        ];
        for (failure, expected) in cases {
            assert_eq!(failure.message(address, token).as_deref(), Some(expected));
        }
        assert_eq!(Failure::Quiet(1).message(address, token), None);
    }

    fn target(address: &str, ca: bool, client: bool) -> Target {
        Target {
            address: address.into(),
            ca_cert: ca.then(|| "ca.pem".into()),
            client_cert: client.then(|| "cert.pem".into()),
            client_key: client.then(|| "key.pem".into()),
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn tls_follows_the_scheme_and_needs_a_ca() {
        let cases = [
            ("http://127.0.0.1:50051", false, false, Ok(false)),
            ("HTTP://127.0.0.1:50051", false, false, Ok(false)),
            ("https://gw.example:50051", true, false, Ok(true)),
            ("https://gw.example:50051", true, true, Ok(true)),
            ("https://gw.example:50051", false, false, Err("--ca-cert")),
            ("https://gw.example:50051", false, true, Err("--ca-cert")),
            ("http://127.0.0.1:50051", true, false, Err("https://")),
            ("http://127.0.0.1:50051", false, true, Err("https://")),
            ("127.0.0.1:50051", false, false, Err("must start with")),
            (
                "grpc://127.0.0.1:50051",
                false,
                false,
                Err("must start with"),
            ),
        ];
        for (address, ca, client, expected) in cases {
            let got = wants_tls(&target(address, ca, client));
            match (got, expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{address}"),
                (Err(got), Err(part)) => assert!(got.contains(part), "{address}: {got}"),
                (got, want) => panic!("{address} ca={ca} client={client}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn a_missing_certificate_file_is_a_usage_error_naming_the_flag() {
        let mut t = target("https://gw.example:50051", true, false);
        t.ca_cert = Some("/nonexistent/ca.pem".into());
        match endpoint(&t) {
            Err(Failure::Usage(text)) => {
                assert!(text.starts_with("--ca-cert /nonexistent/ca.pem"), "{text}")
            }
            _ => panic!("expected a usage error"),
        }
    }

    #[test]
    fn the_token_goes_into_the_authorization_header() {
        let mut bearer = Bearer::new(Some("abc")).unwrap();
        let request = bearer.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer abc"
        );
        for none in [None, Some("")] {
            let request = Bearer::new(none).unwrap().call(Request::new(())).unwrap();
            assert!(request.metadata().get("authorization").is_none());
        }
        assert!(matches!(
            Bearer::new(Some("line\nbreak")),
            Err(Failure::Usage(_))
        ));
    }
}
