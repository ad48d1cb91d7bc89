//! The files in deploy/ as far as this machine can check them without a container engine
//! or a running systemd: generated definitions are what the configurations generate, every
//! configuration passes the real binary's check-config, `systemd-analyze` accepts the unit,
//! the compose file and the Containerfile name what exists, the alert rules parse, use only
//! metrics a running gateway exports (on the local broker) and each have a runbook section
//! in docs/operations.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use ozg_gateway::envelope::Encoding;
use promql_parser::parser::{Expr, VectorSelector};
use promql_parser::util::{ExprVisitor, walk_expr};
use yaml_rust2::{Yaml, YamlLoader};

const BIN: &str = env!("CARGO_BIN_EXE_ozg-gateway");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{path} is not YAML: {e}"));
    assert_eq!(docs.len(), 1, "{path}: one YAML document");
    docs.remove(0)
}

fn check_config(path: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Every *.toml under deploy/, as paths relative to the repository.
fn configurations() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "toml") {
                out.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&repo("deploy"), &mut found);
    let mut names: Vec<String> = found
        .iter()
        .map(|p| {
            p.strip_prefix(repo(""))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn the_committed_definitions_are_what_the_configurations_generate() {
    for (config, committed) in [
        (
            "deploy/config/example.toml",
            "deploy/rabbitmq/definitions.json",
        ),
        (
            "deploy/container/ozg-gateway.toml",
            "deploy/container/rabbitmq/definitions.d/20-topology.json",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["definitions", "--config"])
            .arg(repo(config))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout) == read(committed),
            "{committed} is not what `ozg-gateway definitions --config {config}` prints; \
             regenerate it: cargo run -- definitions --config {config} > {committed}"
        );
    }
}

#[test]
fn definitions_of_one_broker_hold_only_its_vhost() {
    let out = Command::new(BIN)
        .args(["definitions", "--broker", "th", "--config"])
        .arg(repo("deploy/config/example.toml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let definitions: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vhosts: BTreeSet<&str> = ["vhosts", "queues", "exchanges", "bindings", "permissions"]
        .iter()
        .flat_map(|kind| definitions[*kind].as_array().unwrap())
        .map(|e| {
            e.get("vhost")
                .or_else(|| e.get("name"))
                .and_then(|v| v.as_str())
                .unwrap()
        })
        .collect();
    assert_eq!(vhosts, BTreeSet::from(["ozg-th"]));
    let out = Command::new(BIN)
        .args(["definitions", "--broker", "xx", "--config"])
        .arg(repo("deploy/config/example.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no broker \"xx\""));
}

/// A copy of `text` whose files under /etc/ozg-gateway/ and /run/credentials/ are made up in
/// `dir`, as a production host has them (certificates and keys real PEM, token hashes 64 hex
/// digits, secrets readable by the owner only, as systemd hands them over).
fn with_local_files(text: &str, dir: &Path) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["ozg-gateway".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let pieces: BTreeSet<&str> = text
        .split('"')
        .filter(|piece| {
            ["/etc/ozg-gateway/", "/run/credentials/ozg-gateway.service/"]
                .iter()
                .any(|prefix| piece.starts_with(prefix))
        })
        .collect();
    let mut moved = text.to_owned();
    for piece in pieces {
        let local = dir.join(piece.trim_start_matches('/'));
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        let content = if piece.ends_with(".key") {
            key.serialize_pem()
        } else if piece.ends_with(".pem") {
            cert.pem()
        } else if piece.ends_with(".sha256") {
            "0".repeat(64)
        } else {
            "a-password".to_owned()
        };
        std::fs::write(&local, content).unwrap();
        if piece.starts_with("/run/credentials/") {
            std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o400)).unwrap();
        }
        moved = moved.replace(
            &format!("\"{piece}\""),
            &format!("{:?}", local.display().to_string()),
        );
    }
    moved
}

#[test]
fn every_configuration_in_deploy_passes_check_config() {
    let all = configurations();
    for expected in [
        "deploy/config/example.toml",
        "deploy/config/production.toml",
        "deploy/container/ozg-gateway.toml",
    ] {
        assert!(all.iter().any(|c| c == expected), "{expected} in {all:?}");
    }
    for config in &all {
        let dir = tempfile::tempdir().unwrap();
        let text = read(config);
        let local = with_local_files(&text, dir.path());
        // Checked where it lies when it names no such files: relative paths stay valid.
        let path = if local == text {
            repo(config)
        } else {
            let path = dir.path().join("config.toml");
            std::fs::write(&path, local).unwrap();
            path
        };
        let (valid, said) = check_config(&path);
        assert!(valid, "{config}: {said}");
        // Production secrets come from systemd, readable by the service alone: no warning.
        if config == "deploy/config/production.toml" {
            assert!(!said.contains("warning"), "{config}: {said}");
        }
    }
}

/// `Key=value` lines of a unit or ini-like file, repeated keys in order.
fn directives(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            out.entry(key.trim().to_owned())
                .or_default()
                .push(value.trim().to_owned());
        }
    }
    out
}

fn toml_duration(config: &str, table: &str, key: &str) -> Duration {
    let value: toml::Table = toml::from_str(&read(config)).unwrap();
    let text = value[table][key].as_str().unwrap();
    humantime::parse_duration(text).unwrap()
}

#[test]
fn systemd_analyze_accepts_the_unit_and_it_fits_the_production_configuration() {
    let unit = read("deploy/systemd/ozg-gateway.service");
    let installed = "/usr/local/bin/ozg-gateway";
    assert!(unit.contains(&format!(
        "ExecStart={installed} run --config /etc/ozg-gateway/"
    )));
    // `verify` insists that ExecStart's binary exists: verify a copy that starts the
    // freshly built one instead of the installed path.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ozg-gateway.service");
    std::fs::write(&copy, unit.replace(installed, BIN)).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze is needed for this test (apt-get install systemd)");
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify: {complaints}"
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&copy)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let overall = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in: {report}"));
    eprintln!("systemd-analyze security --offline=yes: {overall}");
    let exposure: f64 = overall
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(exposure <= 2.0, "sandbox weaker than intended: {overall}");

    let d = directives(&unit);
    let one = |key: &str| d.get(key).and_then(|v| v.last()).map(String::as_str);
    // The gateway tells systemd when it is ready and pings the watchdog
    // (tests/health.rs listens as systemd would); a reload is SIGHUP (tests/reload.rs).
    assert_eq!(one("Type"), Some("notify"));
    assert_eq!(one("NotifyAccess"), Some("main"));
    let watchdog = humantime::parse_duration(one("WatchdogSec").unwrap()).unwrap();
    assert!(
        watchdog >= 2 * ozg_gateway::health::RUNTIME_STALLED,
        "WatchdogSec {watchdog:?} must leave the heartbeat room"
    );
    assert_eq!(one("ExecReload"), Some("/bin/kill -HUP $MAINPID"));
    assert_eq!(one("Restart"), Some("on-failure"));
    assert_eq!(one("RestartPreventExitStatus"), Some("64"));
    let stop = humantime::parse_duration(one("TimeoutStopSec").unwrap()).unwrap();
    let grace = toml_duration("deploy/config/production.toml", "gateway", "shutdown_grace");
    assert!(
        stop > grace + Duration::from_secs(10),
        "TimeoutStopSec {stop:?} must leave shutdown_grace {grace:?} and the closing waits room"
    );
    // Every credential the unit loads is one the production configuration reads, and back.
    let loaded: BTreeSet<String> = d["LoadCredential"]
        .iter()
        .map(|v| v.split_once(':').unwrap().0.to_owned())
        .collect();
    let prefix = "/run/credentials/ozg-gateway.service/";
    let read_by_config: BTreeSet<String> = read("deploy/config/production.toml")
        .split('"')
        .filter_map(|p| p.strip_prefix(prefix))
        .map(str::to_owned)
        .collect();
    assert_eq!(loaded, read_by_config);
}

#[test]
fn the_compose_file_names_its_services_and_everything_it_mounts_exists() {
    let compose = yaml("deploy/container/compose.yaml");
    let services = compose["services"].as_hash().unwrap();
    let names: BTreeSet<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "gateway",
            "grafana",
            "jaeger",
            "otel-collector",
            "postgres",
            "prometheus",
            "rabbitmq"
        ])
    );
    let base = repo("deploy/container");
    let mut mounts = BTreeMap::new();
    for (name, service) in services {
        for volume in service["volumes"].as_vec().into_iter().flatten() {
            let spec = volume.as_str().unwrap();
            let (host, target) = spec.split_once(':').unwrap();
            let target = target.trim_end_matches(":ro");
            if host.starts_with('.') {
                assert!(base.join(host).exists(), "{name:?}: {host} does not exist");
                mounts.insert(host.to_owned(), target.to_owned());
            }
        }
    }
    for (name, secret) in compose["secrets"].as_hash().unwrap() {
        let file = secret["file"].as_str().unwrap();
        assert!(base.join(file).is_file(), "secret {name:?}: {file}");
    }
    let gateway = &compose["services"]["gateway"];
    let context = base.join(gateway["build"]["context"].as_str().unwrap());
    let containerfile = context.join(gateway["build"]["dockerfile"].as_str().unwrap());
    assert!(containerfile.is_file(), "{}", containerfile.display());
    // The mounts land where the other files expect them.
    let cmd_config = read("deploy/container/Containerfile")
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .map(|cmd| {
            cmd.split('"')
                .rfind(|p| p.starts_with('/'))
                .unwrap()
                .to_owned()
        })
        .unwrap();
    assert_eq!(mounts["./ozg-gateway.toml"], cmd_config);
    // Every secret compose gives the gateway lies where the configuration's password_file
    // keys (relative to it) name it, and holds the file that stands there in the repository.
    let config_dir = Path::new(&cmd_config).parent().unwrap();
    let given: BTreeMap<PathBuf, PathBuf> = gateway["secrets"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|s| {
            let source = s["source"].as_str().unwrap();
            let file = compose["secrets"][source]["file"].as_str().unwrap();
            (
                PathBuf::from(s["target"].as_str().unwrap()),
                base.join(file).canonicalize().unwrap(),
            )
        })
        .collect();
    let config: toml::Table = toml::from_str(&read("deploy/container/ozg-gateway.toml")).unwrap();
    let store = config["store"].as_table().into_iter();
    let brokers = config["brokers"].as_table().unwrap().values();
    let read_by_config: BTreeMap<PathBuf, PathBuf> = brokers
        .filter_map(|b| b.as_table())
        .chain(store)
        .filter_map(|t| t.get("password_file").and_then(|f| f.as_str()))
        .map(|f| (config_dir.join(f), base.join(f).canonicalize().unwrap()))
        .collect();
    assert_eq!(given, read_by_config);
    let load =
        directives(&read("deploy/container/rabbitmq/rabbitmq.conf"))["load_definitions"][0].clone();
    assert_eq!(mounts["./rabbitmq/definitions.d"], load);
    assert_eq!(
        mounts["../telemetry/alerts.yml"],
        yaml("deploy/container/prometheus.yml")["rule_files"][0]
            .as_str()
            .unwrap()
    );
    // The gateway's health check is its liveness, on the metrics port the configuration opens.
    let probe: Vec<&str> = gateway["healthcheck"]["test"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        probe,
        [
            "CMD",
            "/usr/local/bin/ozg-gateway",
            "probe",
            "live",
            "--address",
            "127.0.0.1:9464"
        ]
    );
    assert!(
        config["telemetry"]["metrics_address"]
            .as_str()
            .unwrap()
            .ends_with(":9464")
    );
    // Prometheus scrapes the gateway and RabbitMQ's own exporter, which the broker enables.
    let prometheus = yaml("deploy/container/prometheus.yml");
    let targets: BTreeSet<&str> = prometheus["scrape_configs"]
        .as_vec()
        .unwrap()
        .iter()
        .flat_map(|job| job["static_configs"][0]["targets"].as_vec().unwrap())
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(targets, BTreeSet::from(["gateway:9464", "rabbitmq:15692"]));
    assert!(read("deploy/container/rabbitmq/enabled_plugins").contains("rabbitmq_prometheus"));
    // Grafana's dashboard is the one in deploy/telemetry, on the data source provisioned.
    assert_eq!(
        mounts["../telemetry/grafana-dashboard.json"],
        format!(
            "{}/ozg-gateway.json",
            yaml("deploy/container/grafana/dashboards.yaml")["providers"][0]["options"]["path"]
                .as_str()
                .unwrap()
        )
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/telemetry/grafana-dashboard.json")).unwrap();
    let source = &yaml("deploy/container/grafana/datasources.yaml")["datasources"][0];
    assert_eq!(
        dashboard["panels"][1]["datasource"]["uid"].as_str(),
        source["uid"].as_str()
    );
    let stop = humantime::parse_duration(gateway["stop_grace_period"].as_str().unwrap()).unwrap();
    let grace = toml_duration(
        "deploy/container/ozg-gateway.toml",
        "gateway",
        "shutdown_grace",
    );
    assert!(
        stop > grace,
        "stop_grace_period {stop:?} ≤ shutdown_grace {grace:?}"
    );
    // The collector's configuration sends traces to the compose file's Jaeger.
    let collector = yaml("deploy/telemetry/otel-collector.yaml");
    let endpoint = collector["exporters"]["otlp/jaeger"]["endpoint"]
        .as_str()
        .unwrap();
    assert!(
        names.contains(endpoint.split(':').next().unwrap()),
        "{endpoint}"
    );
}

#[test]
fn the_containerfile_builds_in_stages_from_the_locked_sources_and_runs_unprivileged() {
    let file = read("deploy/container/Containerfile");
    let instructions: Vec<&str> = file
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    let froms: Vec<_> = instructions
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(file.contains("cargo build --release --locked"));
    let users: Vec<_> = instructions
        .iter()
        .filter(|l| l.starts_with("USER "))
        .collect();
    let user = users.last().expect("a USER instruction");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    // Liveness, not readiness: one Land's broker down must not get the container restarted.
    let healthcheck = file
        .split("HEALTHCHECK ")
        .nth(1)
        .expect("a HEALTHCHECK instruction");
    assert!(
        healthcheck.contains(r#""probe", "live""#),
        "HEALTHCHECK {healthcheck}"
    );
    // The runtime stage takes the binary from the build stage and nothing else.
    let last_from = instructions
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .unwrap();
    let runtime_copies: Vec<_> = instructions[last_from..]
        .iter()
        .filter(|l| l.starts_with("COPY "))
        .collect();
    assert_eq!(runtime_copies.len(), 1, "{runtime_copies:?}");
    assert!(runtime_copies[0].contains("--from=build /src/target/release/ozg-gateway"));

    // What the build stage copies exists, and is enough for cargo to know the package.
    let context = tempfile::tempdir().unwrap();
    for line in &instructions[..last_from] {
        let Some(args) = line.strip_prefix("COPY ") else {
            continue;
        };
        let parts: Vec<&str> = args.split_whitespace().collect();
        let (sources, target) = parts.split_at(parts.len() - 1);
        for source in sources {
            let from = repo(source);
            assert!(from.exists(), "COPY {source}: not in the repository");
            let to = if target[0].ends_with('/') && target[0] != "./" {
                context.path().join(target[0]).join(source)
            } else if target[0] == "./" {
                context.path().join(source)
            } else {
                context.path().join(target[0])
            };
            let status = Command::new("cp")
                .arg("-r")
                .arg(&from)
                .arg(&to)
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
    let metadata = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .current_dir(context.path())
        .output()
        .unwrap();
    assert!(
        metadata.status.success(),
        "the build stage's sources do not make a package: {}",
        String::from_utf8_lossy(&metadata.stderr)
    );
}

/// Metric names in a PromQL expression.
struct Selectors(BTreeSet<String>);

impl ExprVisitor for Selectors {
    type Error = ();
    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, ()> {
        let selector: Option<&VectorSelector> = match expr {
            Expr::VectorSelector(vs) => Some(vs),
            Expr::MatrixSelector(ms) => Some(&ms.vs),
            _ => None,
        };
        if let Some(name) = selector.and_then(|s| s.name.clone()) {
            self.0.insert(name);
        }
        Ok(true)
    }
}

/// The series a running gateway exports on /metrics once it has delivered one submission
/// and dead-lettered another (families without samples print nothing).
async fn exported_series() -> BTreeSet<String> {
    let port = free_port();
    let v = Vhosts::create("alerts", &["gw", "he"]);
    let config = TestConfig::new(&v)
        .telemetry(&format!("metrics_address = \"127.0.0.1:{port}\""))
        .telemetry(r#"backlog_interval = "100ms""#)
        .platform("civento-he", "06", "he", None)
        .destination("darmstadt", "06", "he", "Darmstadt")
        .route("*", "06411", "darmstadt")
        .build();
    let gateway = start_gateway(config).await;
    let he = connect(&v.url("he")).await;
    let channel = confirm_channel(&he).await;
    for service in ["99115005104000", "12345678901234"] {
        let s = sample_submission("civento-he", "06", service, "064110000000", 512);
        submit(&channel, &s, Encoding::Protobuf).await;
    }
    let read = he.create_channel().await.unwrap();
    let events = take_status(&read, "civento-he", 2, Duration::from_secs(20)).await;
    assert_eq!(events.len(), 2);
    // The backlog gauges are refreshed every backlog_interval.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = ureq::get(format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    gateway.stop().await;
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_uses_exported_metrics_and_has_a_runbook_section() {
    let exported = exported_series().await;
    assert!(exported.contains("ozg_messages_total"), "{exported:?}");
    let guide = read("docs/operations.md");
    let rules = yaml("deploy/telemetry/alerts.yml");
    let mut alerts = Vec::new();
    for group in rules["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            let name = rule["alert"].as_str().expect("alert rules only").to_owned();
            let expr = rule["expr"].as_str().unwrap();
            let parsed = promql_parser::parser::parse(expr)
                .unwrap_or_else(|e| panic!("{name}: {expr}: {e}"));
            let mut selectors = Selectors(BTreeSet::new());
            walk_expr(&mut selectors, &parsed).unwrap();
            assert!(!selectors.0.is_empty(), "{name}: no metric in {expr}");
            for metric in &selectors.0 {
                // `up` is Prometheus' own, for a target that does not answer.
                assert!(
                    exported.contains(metric)
                        || metric == "up"
                        || ONLY_AFTER_OTHER_PATHS.contains(&metric.as_str()),
                    "{name} uses {metric}, which the gateway does not export ({exported:?})"
                );
            }
            if let Some(f) = rule["for"].as_str() {
                promql_parser::util::parse_duration(f).unwrap();
            }
            let severity = rule["labels"]["severity"].as_str().unwrap();
            assert!(["critical", "warning"].contains(&severity), "{name}");
            assert!(
                guide.lines().any(|l| l == format!("### {name}")),
                "docs/operations.md has no runbook section \"### {name}\""
            );
            let runbook = rule["annotations"]["runbook"].as_str().unwrap();
            assert_eq!(
                runbook,
                format!("docs/operations.md#{}", name.to_lowercase())
            );
            alerts.push(name);
        }
    }
    assert!(alerts.len() >= 8, "{alerts:?}");
    let unique: BTreeSet<_> = alerts.iter().collect();
    assert_eq!(unique.len(), alerts.len(), "alert names repeat: {alerts:?}");
}

/// Metric names of the dashboard's queries that a short run does not produce but
/// tests/telemetry.rs's run through every path shows exported, and RabbitMQ's own.
const ONLY_AFTER_OTHER_PATHS: [&str; 6] = [
    "ozg_receipts_total",
    "ozg_overdue_total",
    "ozg_status_events_failed_total",
    "ozg_orphaned_total",
    "ozg_dead_letters_pending",
    "rabbitmq_queue_messages_unacked",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_parses_and_uses_exported_metrics() {
    let exported = exported_series().await;
    let telemetry_test = read("tests/telemetry.rs");
    for name in ONLY_AFTER_OTHER_PATHS {
        assert!(
            name.starts_with("rabbitmq_")
                || name == "ozg_orphaned_total"
                || telemetry_test.contains(&format!("\"{name}\"")),
            "{name} is not checked in tests/telemetry.rs"
        );
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/telemetry/grafana-dashboard.json")).unwrap();
    let mut queries = 0;
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap();
            // Grafana's own variables, as Prometheus would see them after substitution.
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5m")
                .replace("$instance", ".*");
            let parsed = promql_parser::parser::parse(&expr)
                .unwrap_or_else(|e| panic!("{title}: {expr}: {e}"));
            let mut selectors = Selectors(BTreeSet::new());
            walk_expr(&mut selectors, &parsed).unwrap();
            assert!(!selectors.0.is_empty(), "{title}: no metric in {expr}");
            for metric in selectors.0 {
                assert!(
                    exported.contains(&metric) || ONLY_AFTER_OTHER_PATHS.contains(&metric.as_str()),
                    "{title} uses {metric}, which the gateway does not export ({exported:?})"
                );
                used.insert(metric);
            }
            queries += 1;
        }
    }
    // What the dashboard is for: rates, backlog, latency, dead letters by reason, links.
    for needed in [
        "ozg_messages_total",
        "ozg_queue_ready_messages",
        "ozg_retry_backlog",
        "ozg_processing_seconds_bucket",
        "ozg_dead_letters_pending",
        "ozg_broker_connected",
        "ozg_consumer_up",
    ] {
        assert!(used.contains(needed), "the dashboard shows no {needed}");
    }
    println!("{queries} dashboard queries over {} metrics", used.len());
}
