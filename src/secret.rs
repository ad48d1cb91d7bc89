//! Secrets: broker and store passwords, admin token hashes, the admin client's token. They
//! come from a file (systemd's `LoadCredential`, a container secret) or an environment
//! variable, never from the command line, where every user sees them in the process list.
//!
//! A [`Secret`] has no `Display` and a `Debug` that prints nothing of it, so that it cannot
//! end up in a log line, an error message or admin output by accident; only
//! [`Secret::expose`] gives the text, at the one place that needs it. It is kept in
//! `secrecy`'s `SecretString`, which overwrites its memory with zeros when dropped
//! (`zeroize`), so a password does not linger in freed memory for a core dump or a swapped
//! page to show.

use std::fmt;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroize;

/// A password or token. Its text is reachable only through [`Secret::expose`]; zeroed
/// when dropped.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        let mut text = text.into();
        // Copied into an allocation of its exact size, the original zeroed: turning the
        // String into a box itself could move it and leave the old bytes behind.
        let exact: Box<str> = Box::from(text.as_str());
        text.zeroize();
        Secret(SecretString::from(exact))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a secret could not be had. Names the file or variable, never the content.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is empty")]
    EmptyFile { path: String },
    #[error("{path} is not UTF-8 text")]
    NotText { path: String },
    #[error("environment variable {name} is not set")]
    EnvMissing { name: String },
    #[error("environment variable {name} is empty")]
    EnvEmpty { name: String },
    #[error("environment variable {name} is not UTF-8 text")]
    EnvNotText { name: String },
    #[error("{name:?} is not an environment variable name (letters, digits and _)")]
    BadEnvName { name: String },
}

/// A secret read from a file, and a warning when the file is readable by every user.
#[derive(Debug)]
pub struct FromFile {
    pub secret: Secret,
    pub warning: Option<String>,
}

/// Reads a secret file: the whole content less one trailing newline (`echo` and editors add
/// one). An empty file is an error. A file every user may read is accepted with a warning
/// rather than refused: container secrets are mounted 0444 by default, and there every
/// user is the service's own; elsewhere it should be 0400 (what `LoadCredential` gives).
pub fn from_file(path: &Path) -> Result<FromFile, SecretError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
        path: shown.clone(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        // The bytes are the secret, however mangled: zeroed before they are dropped.
        e.into_bytes().zeroize();
        SecretError::NotText {
            path: shown.clone(),
        }
    })?;
    // Taken into the secret at once, so that every copy is zeroed when dropped.
    let secret = Secret::new(trim_one_newline(text));
    if secret.expose().is_empty() {
        return Err(SecretError::EmptyFile { path: shown });
    }
    Ok(FromFile {
        secret,
        warning: world_readable(path),
    })
}

/// The warning for a file that every user of the machine may read, if it is one.
pub fn world_readable(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o004 != 0).then(|| {
        format!(
            "{} is readable by every user (mode {:04o}); make it 0400 or 0600",
            path.display(),
            mode & 0o7777
        )
    })
}

/// Reads a secret from the environment variable `name`; unset or empty is an error.
pub fn from_env(name: &str) -> Result<Secret, SecretError> {
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(SecretError::BadEnvName {
            name: name.to_owned(),
        });
    }
    match std::env::var(name) {
        Ok(value) if value.is_empty() => Err(SecretError::EnvEmpty {
            name: name.to_owned(),
        }),
        Ok(value) => Ok(Secret::new(value)),
        Err(std::env::VarError::NotPresent) => Err(SecretError::EnvMissing {
            name: name.to_owned(),
        }),
        Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::EnvNotText {
            name: name.to_owned(),
        }),
    }
}

fn trim_one_newline(mut text: String) -> String {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file(content: &[u8], mode: u32) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), content).unwrap();
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        f
    }

    #[test]
    fn files_lose_one_trailing_newline_and_must_not_be_empty() {
        for (content, want) in [
            (&b"s3cret"[..], Ok("s3cret")),
            (b"s3cret\n", Ok("s3cret")),
            (b"s3cret\r\n", Ok("s3cret")),
            (b"s3cret\n\n", Ok("s3cret\n")),
            (b" spaced \n", Ok(" spaced ")),
            (b"", Err("is empty")),
            (b"\n", Err("is empty")),
            (b"\xff\xfe", Err("is not UTF-8 text")),
        ] {
            let f = file(content, 0o400);
            match (from_file(f.path()), want) {
                (Ok(got), Ok(want)) => {
                    assert_eq!(got.secret.expose(), want);
                    assert!(got.warning.is_none());
                }
                (Err(e), Err(part)) => {
                    let text = e.to_string();
                    assert!(text.contains(part), "{text}");
                    assert!(text.contains(&f.path().display().to_string()), "{text}");
                }
                (got, want) => panic!("{content:?}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn a_missing_file_names_the_path_and_a_world_readable_one_warns() {
        let e = from_file(Path::new("/nonexistent/secret")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot read /nonexistent/secret: No such file or directory (os error 2)"
        );
        // Not "pw": a temporary file's random name can contain that.
        let f = file(b"hunter2-secret\n", 0o644);
        let read = from_file(f.path()).unwrap();
        let warning = read.warning.unwrap();
        assert!(
            warning.contains("readable by every user (mode 0644)"),
            "{warning}"
        );
        assert!(!warning.contains("hunter2"), "{warning}");
        for mode in [0o400, 0o600, 0o640] {
            assert!(
                from_file(file(b"pw", mode).path())
                    .unwrap()
                    .warning
                    .is_none()
            );
        }
    }

    #[test]
    fn environment_variables_must_be_set_and_named_properly() {
        // The crate forbids unsafe code, so tests cannot set variables (set_var is unsafe);
        // PATH is always set. Empty variables are checked through the binary (tests/tls.rs).
        assert!(!from_env("PATH").unwrap().expose().is_empty());
        for (name, part) in [
            (
                "OZG_SECRET_TEST_NEVER_SET",
                "environment variable OZG_SECRET_TEST_NEVER_SET is not set",
            ),
            ("1ABC", "is not an environment variable name"),
            ("A-B", "is not an environment variable name"),
            ("", "is not an environment variable name"),
        ] {
            let text = from_env(name).unwrap_err().to_string();
            assert!(text.contains(part), "{name}: {text}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
    }
}
