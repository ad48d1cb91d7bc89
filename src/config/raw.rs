//! The file's raw form and the reading of the TOML tree into it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::validate::Validator;

// Raw form: what serde reads. Required strings default to empty so that validation can list
// every missing key instead of serde stopping at the first.

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) gateway: RawGateway,
    #[serde(default)]
    pub(super) brokers: BTreeMap<String, RawBroker>,
    #[serde(default)]
    pub(super) platforms: Vec<RawPlatform>,
    #[serde(default)]
    pub(super) destinations: Vec<RawDestination>,
    #[serde(default)]
    pub(super) routes: Vec<RawRoute>,
    #[serde(default)]
    pub(super) store: RawStore,
    #[serde(default)]
    pub(super) retry: RawRetry,
    #[serde(default)]
    pub(super) telemetry: RawTelemetry,
    #[serde(default)]
    pub(super) services: Vec<RawService>,
    #[serde(default)]
    pub(super) receipts: RawReceipts,
    #[serde(default)]
    pub(super) admin: Option<RawAdmin>,
    #[serde(default)]
    pub(super) console: Option<RawConsole>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsole {
    #[serde(default)]
    pub(super) address: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReceipts {
    #[serde(default, with = "humantime_serde")]
    pub(super) overdue_after: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) check_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) retention: Option<Duration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    #[serde(default)]
    pub(super) key: String,
    #[serde(default)]
    pub(super) name: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    #[serde(default)]
    pub(super) address: String,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) client_ca: Option<PathBuf>,
    #[serde(default)]
    pub(super) tokens: Vec<RawToken>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    #[serde(default)]
    pub(super) name: String,
    pub(super) sha256: Option<String>,
    pub(super) sha256_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) roles: Vec<String>,
    /// Land codes or abbreviations, or `["*"]`; absent: every Land.
    pub(super) laender: Option<Vec<String>>,
    /// Destination ids the token is narrowed to; absent: every destination of its Länder.
    pub(super) destinations: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    pub(super) otlp_endpoint: Option<String>,
    pub(super) otlp_protocol: Option<String>,
    pub(super) sampling_ratio: Option<f64>,
    pub(super) metrics_address: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub(super) backlog_interval: Option<Duration>,
    pub(super) log_level: Option<String>,
    pub(super) log_format: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub(super) delays: Option<Vec<humantime_serde::Serde<Duration>>>,
    pub(super) max_attempts: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub(super) max_age: Option<Duration>,
    pub(super) prefetch: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) url: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) password_env: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub(super) dedup_window: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) trace_retention: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) dead_letter_retention: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) directory_poll: Option<Duration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGateway {
    #[serde(default)]
    pub(super) dead_letter_broker: String,
    pub(super) dead_letter_exchange: Option<String>,
    pub(super) dead_letter_queue: Option<String>,
    pub(super) max_message_bytes: Option<u64>,
    pub(super) in_flight_bytes: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    pub(super) confirm_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) shutdown_grace: Option<Duration>,
    pub(super) verify_attachment_hashes: Option<bool>,
    /// The municipality directory's file (`gateway.directory`, a key operators already use).
    pub(super) directory: Option<PathBuf>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) store_dead_letters: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBroker {
    pub(super) url: Option<String>,
    /// The nodes of a cluster, instead of `url`.
    pub(super) urls: Option<Vec<String>>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) password_env: Option<String>,
    pub(super) tls: Option<RawBrokerTls>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBrokerTls {
    pub(super) ca_file: Option<PathBuf>,
    pub(super) client_cert_file: Option<PathBuf>,
    pub(super) client_key_file: Option<PathBuf>,
    pub(super) server_name: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlatform {
    #[serde(default)]
    pub(super) id: String,
    #[serde(default)]
    pub(super) land: String,
    #[serde(default)]
    pub(super) broker: String,
    #[serde(default)]
    pub(super) ingress_queue: String,
    #[serde(default)]
    pub(super) status_exchange: String,
    pub(super) status_routing_key: Option<String>,
    pub(super) status_format: Option<String>,
    pub(super) prefetch: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDestination {
    #[serde(default)]
    pub(super) id: String,
    #[serde(default)]
    pub(super) name: String,
    #[serde(default)]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) land: String,
    #[serde(default)]
    pub(super) broker: String,
    #[serde(default)]
    pub(super) exchange: String,
    #[serde(default)]
    pub(super) routing_key: String,
    pub(super) receipt_queue: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    #[serde(default)]
    pub(super) service: String,
    #[serde(default)]
    pub(super) region: String,
    #[serde(default)]
    pub(super) destination: String,
}
/// At most this many format-level problems are listed: past them, a file is more likely
/// not a gateway configuration at all.
const MAX_FORMAT_ERRORS: usize = 100;

/// Reads the TOML tree into the raw structs, listing every format-level problem (unknown
/// keys, wrong types, bad durations) instead of stopping at the first: each offending key is
/// reported and taken out, then the tree is read again. A bad element of an array of tables
/// is replaced by an empty table rather than removed, so that the entries after it keep
/// their numbers in every later message. What validation would then say about a key taken
/// out ("is missing") is suppressed. `None`: a problem that cannot be located (reported).
pub(super) fn read_raw(table: toml::Table, validator: &mut Validator) -> Option<RawConfig> {
    use serde_path_to_error::Segment;
    let mut tree = toml::Value::Table(table);
    // Original indices taken out of each array (by its path as reported), so that an error
    // after a removal still names the element as the file numbers it.
    let mut removed_indices: HashMap<String, Vec<usize>> = HashMap::new();
    // The key last replaced by an empty table: failing again, it is no table at all.
    let mut placeholder: Option<Vec<Segment>> = None;
    let mut reported = 0;
    loop {
        let error = match serde_path_to_error::deserialize::<_, RawConfig>(tree.clone()) {
            Ok(raw) => return Some(raw),
            Err(e) => e,
        };
        let path: Vec<Segment> = error.path().iter().cloned().collect();
        let (key, array_key, original) = original_key(&path, &removed_indices);
        let again = placeholder.take().is_some_and(|p| same_path(&p, &path));
        if !again {
            reported += 1;
            validator.format_error(&key, error.inner().message());
            if reported >= MAX_FORMAT_ERRORS {
                validator.format_error(
                    "",
                    format!("stopped after {MAX_FORMAT_ERRORS} problems at the format level"),
                );
                return None;
            }
        }
        // An error that names no key cannot be taken out: it is the last one listed.
        let (last, parents) = path.split_last()?;
        let parent = node(&mut tree, parents)?;
        match (last, parent) {
            (Segment::Map { key: name }, toml::Value::Table(t)) => {
                t.remove(name)?;
            }
            (Segment::Seq { index }, toml::Value::Array(a)) if *index < a.len() => {
                if again {
                    a.remove(*index);
                    let taken = removed_indices.entry(array_key).or_default();
                    taken.push(original.unwrap_or(*index));
                    taken.sort_unstable();
                } else {
                    a[*index] = toml::Value::Table(toml::Table::new());
                    placeholder = Some(path);
                }
            }
            _ => return None,
        }
    }
}

fn same_path(a: &[serde_path_to_error::Segment], b: &[serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    a.len() == b.len()
        && a.iter().zip(b).all(|pair| match pair {
            (Segment::Seq { index: x }, Segment::Seq { index: y }) => x == y,
            (Segment::Map { key: x }, Segment::Map { key: y }) => x == y,
            _ => false,
        })
}

/// The node at `path` in the tree.
fn node<'a>(
    tree: &'a mut toml::Value,
    path: &[serde_path_to_error::Segment],
) -> Option<&'a mut toml::Value> {
    use serde_path_to_error::Segment;
    path.iter()
        .try_fold(tree, |node, segment| match (segment, node) {
            (Segment::Map { key }, toml::Value::Table(t)) => t.get_mut(key),
            (Segment::Seq { index }, toml::Value::Array(a)) => a.get_mut(*index),
            _ => None,
        })
}

/// The key as the file numbers it (`platforms[2].prefetch`), with the indices removals
/// have shifted put back; also the key of the array the last index is in, and that
/// original index (for an element's own path).
fn original_key(
    path: &[serde_path_to_error::Segment],
    removed: &HashMap<String, Vec<usize>>,
) -> (String, String, Option<usize>) {
    use serde_path_to_error::Segment;
    let mut key = String::new();
    let mut array_key = String::new();
    let mut last_index = None;
    for segment in path {
        match segment {
            Segment::Seq { index } => {
                let mut original = *index;
                for taken in removed.get(&key).map(Vec::as_slice).unwrap_or_default() {
                    if *taken <= original {
                        original += 1;
                    }
                }
                array_key = key.clone();
                last_index = Some(original);
                key.push_str(&format!("[{original}]"));
            }
            Segment::Map { key: name } | Segment::Enum { variant: name } => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(name);
                last_index = None;
            }
            Segment::Unknown => {
                key.push_str(".?");
                last_index = None;
            }
        }
    }
    (key, array_key, last_index)
}
/// serde's message without the values it quotes (`invalid type: string "…", expected …`
/// → `invalid type: a string, expected …`).
pub(super) fn without_values(message: &str) -> String {
    let Some((what, rest)) = message.split_once(": ") else {
        return message.to_owned();
    };
    let expected = rest.find(", expected").map_or("", |at| &rest[at..]);
    let kind = rest.split([' ', ',']).next().unwrap_or("value");
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{what}: {article} {kind}{expected}")
}

/// serde's type names in the words of a TOML file.
pub(super) fn in_toml_words(message: &str) -> String {
    let mut out = message.to_owned();
    if let Some(at) = out.find("expected struct Raw") {
        let end = out[at..]
            .find(|c: char| !(c.is_alphanumeric() || c == ' '))
            .map_or(out.len(), |n| at + n);
        out.replace_range(at..end, "expected a table");
    }
    for (rust, toml) in [
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
    ] {
        out = out.replace(rust, toml);
    }
    out
}
