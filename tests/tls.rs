//! Broker connections over TLS, against a RabbitMQ node of the test's own that has no plain
//! listener and requires client certificates (`verify_peer`, `fail_if_no_peer_cert`), with
//! a CA, server and client certificates the test generates. And secrets: the broker's and
//! the store's password, given by environment and file, never show in debug-level JSON logs,
//! check-config's output, failed connects' messages or the admin API's output; the admin
//! client takes its token from a file or the environment.
//!
//! One node for the whole binary, so everything runs in one test, step by step, with the
//! real binary. Needs rabbitmq-server (and PostgreSQL with trust authentication, as the
//! store tests): without them it fails, saying so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::node::{Listener, Node};
use common::pki::Pki;
use common::{message_count, postgres_admin, terminate, wait_exit};
use ozg_gateway::amqp::{self, Role};
use serde_json::Value;
use sqlx::Executor;

const BIN: &str = env!("CARGO_BIN_EXE_ozg-gateway");
/// The node's TLS listener; it has no other.
const TLS_PORT: u16 = 5690;
const BROKER_PASSWORD: &str = "br0ker-Pw-never-shown";
const STORE_PASSWORD: &str = "st0re-Pw-never-shown";
const WRONG_PASSWORD: &str = "wr0ng-Pw-never-shown";
const TOKEN: &str = "adm1n-T0ken-never-shown";

fn secrets() -> [&'static str; 4] {
    [BROKER_PASSWORD, STORE_PASSWORD, WRONG_PASSWORD, TOKEN]
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in secrets() {
        assert!(!text.contains(secret), "{what} shows a secret:\n{text}");
    }
}

/// The folder with the configurations, certificates and secret files.
struct Setup {
    dir: tempfile::TempDir,
    schema: String,
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, content: &str, mode: u32) {
        let path = self.path(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A configuration named `name` with `broker` (the `[brokers.land]` table and its
    /// `tls`) and `store` (lines of `[store]`), the admin API on `admin`; returns its path.
    fn config(&self, name: &str, broker: &str, store: &str, admin: u16) -> String {
        let text = format!(
            r#"
[gateway]
dead_letter_broker = "land"
store_dead_letters = false
confirm_timeout = "5s"
data_dir = "{data}"

{broker}

[store]
{store}

[admin]
address = "127.0.0.1:{admin}"
[[admin.tokens]]
name = "ops"
sha256_file = "token.sha256"
roles = ["viewer"]

[[platforms]]
id = "civento-he"
land = "06"
broker = "land"
ingress_queue = "submissions"
status_exchange = "status"

[[destinations]]
id = "darmstadt"
name = "Darmstadt"
kind = "kreisfreie-stadt"
land = "06"
broker = "land"
exchange = "backoffice"
routing_key = "darmstadt"

[[routes]]
service = "*"
region = "06411"
destination = "darmstadt"
"#,
            data = self.path("data").display()
        );
        self.write(name, &text, 0o644);
        self.path(name).display().to_string()
    }

    fn postgres(&self, port: u16) -> String {
        format!(
            "url = \"postgres://ozg@127.0.0.1:{port}/ozg_test?options=-csearch_path%3D{}\"\npassword_file = \"store-pw\"",
            self.schema
        )
    }
}

/// `[brokers.land]` over amqps with the given password lines and `tls` lines.
fn amqps(password: &str, tls: &str) -> String {
    format!(
        "[brokers.land]\nurl = \"amqps://gw@localhost:{TLS_PORT}/%2f\"\n{password}\n[brokers.land.tls]\n{tls}"
    )
}

const GOOD_TLS: &str =
    "ca_file = \"ca.pem\"\nclient_cert_file = \"client.pem\"\nclient_key_file = \"client-key.pem\"";
const FROM_ENV: &str = "password_env = \"OZG_TEST_BROKER_PASSWORD\"";
const FROM_FILE: &str = "password_file = \"broker-pw\"";

/// The binary with the broker password in its environment, and no admin token there.
fn gateway(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("OZG_TEST_BROKER_PASSWORD", BROKER_PASSWORD)
        .env_remove("OZG_ADMIN_TOKEN")
        .env_remove("OZG_ADMIN_TOKEN_FILE")
        .env_remove("OZG_ADMIN_ADDRESS")
        .env_remove("RUST_LOG")
        .env_remove("OZG_LOG");
    command
}

fn output(command: &mut Command) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().unwrap();
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `ozg-gateway run`, its stderr collected.
struct Running {
    child: Child,
    logs: std::thread::JoinHandle<Vec<String>>,
    admin: String,
}

impl Running {
    fn start(config: &str, admin: u16) -> Running {
        let mut child = gateway(&["--log-format", "json", "run", "--config", config])
            .env("OZG_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = std::thread::spawn(move || {
            BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        Running {
            child,
            logs,
            admin: format!("http://127.0.0.1:{admin}"),
        }
    }

    /// `ozg-gateway admin ARGS…` against it, the token from `--token-file`.
    fn admin(&self, token_file: &Path, args: &[&str]) -> (Option<i32>, String, String) {
        output(
            gateway(&["admin", "--address", &self.admin, "--token-file"])
                .arg(token_file)
                .args(args),
        )
    }

    /// Polls the overview until `done` holds for its broker links, at most `within`.
    fn overview_until(
        &self,
        token_file: &Path,
        within: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let (code, stdout, stderr) = self.admin(token_file, &["--json", "overview"]);
            assert_no_secret("admin overview", &stdout);
            assert_no_secret("admin overview", &stderr);
            if code == Some(0) {
                let overview: Value = serde_json::from_str(&stdout).unwrap();
                let links = overview["brokers"].as_array().cloned().unwrap_or_default();
                if done(&links) {
                    return links;
                }
                if Instant::now() > deadline {
                    panic!("overview did not get there within {within:?}: {stdout}");
                }
            } else if Instant::now() > deadline {
                panic!("admin overview failed: {stderr}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn stop(mut self) -> Vec<String> {
        let status = terminate(&mut self.child, Duration::from_secs(30));
        assert!(status.success(), "gateway exited with {status}");
        self.logs.join().unwrap()
    }
}

/// Messages waiting in `queue` on the node, counted through a connection of the test's
/// own (which goes through the gateway's connect, TLS and client certificate included).
async fn depth(config: &str, queue: &str) -> u32 {
    let config = ozg_gateway::Config::load(Path::new(config)).unwrap();
    let connection = amqp::connect(&config.brokers[0], 0, Role::Consume)
        .await
        .unwrap();
    let depth = message_count(&connection, queue).await;
    let _ = connection.close(200, "done".into()).await;
    depth
}

/// `ozg-gateway submit` of one sample for civento-he; its submission id.
fn submit(config: &str) -> String {
    let (code, stdout, stderr) = output(&mut gateway(&[
        "submit",
        "--config",
        config,
        "--platform",
        "civento-he",
    ]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    stdout.split_whitespace().nth(1).unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_only_broker_verified_both_ways_and_secrets_never_shown() {
    let started = Instant::now();
    let pki = Pki::new();
    let (server_cert, server_key) = pki.issue(&["localhost", "127.0.0.1"]);
    let (client_cert, client_key) = pki.issue(&["ozg-gateway"]);
    let conf = format!(
        "listeners.ssl.default = {TLS_PORT}\n\
         ssl_options.cacertfile = {{dir}}/ca.pem\n\
         ssl_options.certfile = {{dir}}/server.pem\n\
         ssl_options.keyfile = {{dir}}/server-key.pem\n\
         ssl_options.verify = verify_peer\n\
         ssl_options.fail_if_no_peer_cert = true\n"
    );
    let node = Node::create(
        "ozgtest-tls",
        Listener::TlsOnly(TLS_PORT),
        &conf,
        &[
            ("ca.pem", pki.ca.as_bytes()),
            ("server.pem", server_cert.as_bytes()),
            ("server-key.pem", server_key.as_bytes()),
        ],
    );
    node.boot();
    node.ctl_with_input(&["add_user", "gw"], BROKER_PASSWORD);
    node.ctl(&["set_permissions", "-p", "/", "gw", ".*", ".*", ".*"]);
    println!("TLS-only node ready after {:?}", started.elapsed());

    let mut pg = postgres_admin().await;
    let schema = format!("ozgtest_tls_{}", std::process::id());
    pg.execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .unwrap();
    let s = Setup {
        dir: tempfile::tempdir().unwrap(),
        schema: schema.clone(),
    };
    s.write("ca.pem", &pki.ca, 0o644);
    s.write("other-ca.pem", &Pki::new().ca, 0o644);
    s.write("client.pem", &client_cert, 0o644);
    s.write("client-key.pem", &client_key, 0o600);
    s.write("broker-pw", &format!("{BROKER_PASSWORD}\n"), 0o400);
    s.write("wrong-pw", WRONG_PASSWORD, 0o400);
    s.write("store-pw", &format!("{STORE_PASSWORD}\n"), 0o400);
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(TOKEN.as_bytes()));
    s.write("token.sha256", &format!("{hash}\n"), 0o400);
    s.write("token", &format!("{TOKEN}\n"), 0o600);
    let token_file = s.path("token");
    let sqlite = "url = \"sqlite://data/gw.db\"";

    // check-config reads every file and variable, and shows none of the secrets.
    let admin_port = free_port();
    let good = s.config(
        "good.toml",
        &amqps(FROM_ENV, GOOD_TLS),
        &s.postgres(5432),
        admin_port,
    );
    let (code, stdout, stderr) = output(&mut gateway(&["check-config", &good]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("valid (1 brokers"), "{stdout}");
    assert_eq!(stderr, "", "no warnings for secrets kept apart");
    assert_no_secret("check-config", &(stdout + &stderr));
    let (code, _, stderr) =
        output(gateway(&["check-config", &good]).env("OZG_TEST_BROKER_PASSWORD", ""));
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains(
            "brokers.land.password_env: environment variable OZG_TEST_BROKER_PASSWORD is empty"
        ),
        "{stderr}"
    );
    // The test's own connections take the password from a file.
    let mine = s.config(
        "mine.toml",
        &amqps(FROM_FILE, GOOD_TLS),
        sqlite,
        free_port(),
    );

    // The local helpers connect over TLS too: topology, then a submission, before any
    // gateway runs.
    let (code, stdout, stderr) = output(&mut gateway(&["declare-topology", "--config", &good]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let first = submit(&good);
    assert_eq!(depth(&mine, "submissions").await, 1);

    // Refused connections: each says why, names the node, and shows no secret.
    // Each case lists the reasons a user may see; with TLS 1.3 the node's CertificateRequired
    // alert can lose the race against its TCP reset, so either one proves the refusal.
    let refused: [(&str, String, &[&str]); 4] = [
        (
            "a CA that did not sign the node's certificate",
            amqps(
                FROM_ENV,
                &GOOD_TLS.replace("\"ca.pem\"", "\"other-ca.pem\""),
            ),
            &[
                "cannot connect to broker land (amqps://gw@localhost:5690/%2f): IO error: invalid peer certificate: UnknownIssuer",
            ],
        ),
        (
            "no client certificate, which the node requires",
            amqps(FROM_ENV, "ca_file = \"ca.pem\""),
            &[
                "cannot connect to broker land (amqps://gw@localhost:5690/%2f): IO error: received fatal alert: CertificateRequired",
                "cannot connect to broker land (amqps://gw@localhost:5690/%2f): IO error: Connection reset by peer",
            ],
        ),
        (
            "plain amqp:// to the TLS-only node",
            format!("[brokers.land]\nurl = \"amqp://gw@localhost:{TLS_PORT}/%2f\"\n{FROM_ENV}"),
            &["cannot connect to broker land (amqp://gw@localhost:5690/%2f)"],
        ),
        (
            "a wrong password",
            amqps("password_file = \"wrong-pw\"", GOOD_TLS),
            &["ACCESS_REFUSED"],
        ),
    ];
    for (what, broker, expected) in &refused {
        let config = s.config("refused.toml", broker, sqlite, free_port());
        let began = Instant::now();
        let (code, stdout, stderr) =
            output(&mut gateway(&["declare-topology", "--config", &config]));
        println!("{what}: {} ({:?})", stderr.trim(), began.elapsed());
        assert_eq!(code, Some(1), "{what}: {stdout}{stderr}");
        assert!(
            expected.iter().any(|reason| stderr.contains(reason)),
            "{what}: expected one of {expected:?}: {stderr}"
        );
        assert_no_secret(what, &stderr);
    }

    // A gateway with the wrong CA never connects: its links show the certificate error,
    // it is not SERVING, and the submission stays on its queue.
    let wrong_ca = s.config(
        "wrong-ca.toml",
        &refused[0].1,
        &s.postgres(5432),
        admin_port,
    );
    let running = Running::start(&wrong_ca, admin_port);
    let links = running.overview_until(&token_file, Duration::from_secs(20), |links| {
        !links.is_empty()
            && links.iter().all(|l| {
                l["lastError"]
                    .as_str()
                    .is_some_and(|e| e.contains("invalid peer certificate: UnknownIssuer"))
            })
    });
    assert!(
        links.iter().all(|l| l["connected"] != Value::Bool(true)),
        "{links:?}"
    );
    let (code, stdout, _) = running.admin(&token_file, &["health"]);
    assert_eq!((code, stdout.as_str()), (Some(1), "NOT_SERVING\n"));
    assert_eq!(depth(&mine, "submissions").await, 1, "nothing consumed");
    let logs = running.stop().join("\n");
    assert_no_secret("logs of the gateway with the wrong CA", &logs);
    assert!(logs.contains("UnknownIssuer"), "the logs say why");
    println!("wrong CA refused; {:?} so far", started.elapsed());

    // The right CA and client certificate: the waiting submission and a new one arrive over
    // amqps, the links name their node, and nothing shows a secret, not even at debug level.
    let running = Running::start(&good, admin_port);
    let links = running.overview_until(&token_file, Duration::from_secs(20), |links| {
        !links.is_empty() && links.iter().all(|l| l["connected"] == Value::Bool(true))
    });
    for link in &links {
        assert_eq!(link["node"], "localhost:5690", "{link}");
    }
    let second = submit(&good);
    let (code, received, stderr) = output(&mut gateway(&[
        "receive",
        "--config",
        &good,
        "--destination",
        "darmstadt",
        "--count",
        "2",
        "--wait",
        "20s",
    ]));
    assert_eq!(code, Some(0), "{stderr}");
    for id in [&first, &second] {
        assert!(
            received.contains(&format!("\"message_id\":\"{id}\"")),
            "{id} did not arrive: {received}"
        );
    }
    // The token from the environment, and from OZG_ADMIN_TOKEN_FILE.
    let (code, stdout, stderr) = output(
        gateway(&["admin", "--address", &running.admin, "health"]).env("OZG_ADMIN_TOKEN", TOKEN),
    );
    assert_eq!((code, stdout.as_str()), (Some(0), "SERVING\n"), "{stderr}");
    let (code, stdout, stderr) = output(
        gateway(&["admin", "--address", &running.admin, "overview"])
            .env("OZG_ADMIN_TOKEN_FILE", &token_file),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("localhost:5690"), "{stdout}");
    assert_no_secret("admin overview", &(stdout + &stderr));
    let logs = running.stop();
    assert!(logs.len() > 20, "debug logs were written: {}", logs.len());
    for line in &logs {
        assert_no_secret("a debug log line", line);
    }
    assert!(
        logs.iter()
            .any(|l| l.contains("\"node\":\"localhost:5690\"") && l.contains("connected")),
        "the logs name the node connected to"
    );

    // A store that cannot be opened: the message shows the URL without its password.
    let bad_store = s.config(
        "bad-store.toml",
        &amqps(FROM_ENV, GOOD_TLS),
        &s.postgres(1),
        free_port(),
    );
    let mut child = gateway(&["run", "--config", &bad_store])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(30)).expect("exits");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("postgres://ozg:***@127.0.0.1:1/"),
        "{stderr}"
    );
    assert_no_secret("a store that cannot be opened", &stderr);

    pg.execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
        .await
        .unwrap();
    drop(node);
    println!("whole test: {:?}", started.elapsed());
}
