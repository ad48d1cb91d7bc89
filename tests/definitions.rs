//! The RabbitMQ side of deploy/ against RabbitMQ nodes of the tests' own (ports 5700–5702,
//! distribution 25700–25702): the committed definitions import into a fresh node, the
//! gateway's own declarations and `declare-topology` agree with them argument for argument,
//! and a submission goes end to end through the imported topology; the compose broker
//! boots from its definitions folder; the dead-letter queue's migration from classic to
//! quorum keeps every letter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::node::{Listener, Node};
use common::*;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use ozg_gateway::amqp::OwnedTopology;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ozg-gateway");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn entries<'a>(definitions: &'a Value, kind: &str) -> &'a [Value] {
    definitions[kind].as_array().map_or(&[], Vec::as_slice)
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

/// What of `wanted` the node's own export lacks or has differently: vhosts, permissions,
/// policies, queues (type, durability, arguments), exchanges (type), bindings.
fn missing(wanted: &Value, exported: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let find = |kind: &str, keys: &[&str], w: &Value| -> Option<Value> {
        entries(exported, kind)
            .iter()
            .find(|e| keys.iter().all(|k| e[*k] == w[*k]))
            .cloned()
    };
    // Entries that must be there with these fields equal.
    let identified_by: [(&str, &[&str]); 5] = [
        ("vhosts", &["name"]),
        (
            "permissions",
            &["user", "vhost", "configure", "write", "read"],
        ),
        (
            "policies",
            &["vhost", "name", "pattern", "apply-to", "definition"],
        ),
        ("exchanges", &["vhost", "name", "type", "durable"]),
        (
            "bindings",
            &[
                "vhost",
                "source",
                "destination",
                "destination_type",
                "routing_key",
            ],
        ),
    ];
    for (kind, keys) in identified_by {
        for w in entries(wanted, kind) {
            if find(kind, keys, w).is_none() {
                out.push(format!("{kind}: {w}"));
            }
        }
    }
    // Queues also by type, which the export states apart from the arguments.
    for w in entries(wanted, "queues") {
        let expected_type = w["arguments"]["x-queue-type"].as_str().unwrap_or("classic");
        match find("queues", &["vhost", "name"], w) {
            None => out.push(format!("queue {} on {}", w["name"], w["vhost"])),
            Some(e) => {
                if e["arguments"] != w["arguments"] || e["durable"] != w["durable"] {
                    out.push(format!("queue {w}: {e} on the node"));
                }
                if text(&e, "type") != expected_type {
                    out.push(format!(
                        "queue {} is {} on the node, not {expected_type}",
                        w["name"], e["type"]
                    ));
                }
            }
        }
    }
    out
}

/// Waits (the import runs asynchronously) until the node holds everything `wanted` names.
fn assert_node_holds(node: &Node, wanted: &Value) {
    let export = node.dir.join("export.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        node.ctl(&["export_definitions", export.to_str().unwrap()]);
        let lacking = missing(wanted, &read_json(&export));
        if lacking.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the node lacks {} entries of the definitions, e.g. {:?}",
            lacking.len(),
            &lacking[..lacking.len().min(5)]
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn run_ok(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ozg-gateway {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A copy of a configuration of deploy/ in `dir`, with `replacements` made (each must apply).
fn rewritten(from: &str, dir: &Path, replacements: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(repo(from)).unwrap();
    for (old, new) in replacements {
        assert!(text.contains(old), "{from} no longer contains {old:?}");
        text = text.replace(old, new);
    }
    let path = dir.join(Path::new(from).file_name().unwrap());
    std::fs::write(&path, text).unwrap();
    path
}

async fn consumers(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("queue {queue}: {e}"))
        .consumer_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_definitions_import_cleanly_and_carry_a_submission_end_to_end() {
    let node = Node::start("ozgtest-defs", 5700, &[]);
    let definitions = repo("deploy/rabbitmq/definitions.json");
    let copy = node.copy_in(&definitions, "definitions.json");
    node.ctl(&["import_definitions", copy.to_str().unwrap()]);
    let wanted = read_json(&definitions);
    assert_eq!(
        entries(&wanted, "vhosts").len(),
        17,
        "16 Länder and the gateway"
    );
    assert_node_holds(&node, &wanted);

    let dir = tempfile::tempdir().unwrap();
    let data_dir = format!("[gateway]\ndata_dir = {:?}", dir.path().join("data"));
    let config = rewritten(
        "deploy/config/example.toml",
        dir.path(),
        &[
            ("127.0.0.1:5672/", "127.0.0.1:5700/"),
            ("address = \"127.0.0.1:50051\"", "address = \"127.0.0.1:0\""),
            ("[gateway]", &data_dir),
        ],
    );
    let cfg = config.to_str().unwrap();
    // Everything declare-topology declares exists already: same arguments, or the broker
    // would close the channel with PRECONDITION_FAILED.
    run_ok(&["declare-topology", "--config", cfg]);
    let parsed = ozg_gateway::Config::load(&config).unwrap();
    let gateway_vhost = connect(&node.url("ozg-gateway")).await;
    let g = &parsed.gateway;
    for owned in [
        OwnedTopology::DeadLetter {
            exchange: g.dead_letter_exchange.clone(),
            queue: g.dead_letter_queue.clone(),
        },
        OwnedTopology::Retry {
            delays: parsed.retry.delays.clone(),
        },
        OwnedTopology::Replay,
    ] {
        let channel = gateway_vhost.create_channel().await.unwrap();
        owned
            .declare(&channel)
            .await
            .unwrap_or_else(|e| panic!("the gateway's {owned:?} against the import: {e}"));
    }

    let log = dir.path().join("gateway.log");
    let mut gateway = Command::new(BIN)
        .args(["run", "--config", cfg])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The gateway declares its own queues before it subscribes to them.
    let channel = gateway_vhost.create_channel().await.unwrap();
    let th = connect(&node.url("ozg-th")).await;
    let th_channel = th.create_channel().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut up = Vec::new();
        for queue in [
            "ozg.gateway.retry.ready",
            "ozg.gateway.replay",
            "ozg.gateway.dead-letters",
        ] {
            up.push(consumers(&channel, queue).await);
        }
        up.push(consumers(&th_channel, "ozg.submissions").await);
        if up.iter().all(|&n| n > 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not subscribe everywhere ({up:?}): {}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    run_ok(&[
        "submit",
        "--config",
        cfg,
        "--platform",
        "civento-th",
        "--region",
        "064110000000",
    ]);
    let he = connect(&node.url("ozg-he")).await;
    let he_channel = he.create_channel().await.unwrap();
    let delivered = take(
        &he_channel,
        "backoffice.he-darmstadt",
        1,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(delivered.len(), 1, "the submission did not reach Darmstadt");
    assert_eq!(
        delivered[0].header("x-ozg-origin-platform").as_deref(),
        Some("civento-th")
    );
    // Bad input: dead-lettered through the gateway's own (imported) dead-letter exchange.
    run_ok(&[
        "submit",
        "--config",
        cfg,
        "--platform",
        "civento-th",
        "--service",
        "12345678901234",
    ]);
    let events = take(&th_channel, "civento-th.status", 2, Duration::from_secs(20)).await;
    let statuses: Vec<_> = events.iter().map(|e| e.header("x-ozg-status")).collect();
    assert_eq!(
        statuses,
        [Some("forwarded".to_owned()), Some("rejected".to_owned())]
    );

    let status = terminate(&mut gateway, Duration::from_secs(30));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}: {logged}");
    assert!(!logged.contains("PRECONDITION_FAILED"), "{logged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_broker_boots_from_its_definitions_folder() {
    let folder = repo("deploy/container/rabbitmq/definitions.d");
    let mut files: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let copies: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|file| {
            let name = file.file_name().unwrap().to_str().unwrap();
            (
                format!("definitions.d/{name}"),
                std::fs::read(file).unwrap(),
            )
        })
        .collect();
    let copies: Vec<(&str, &[u8])> = copies
        .iter()
        .map(|(name, content)| (name.as_str(), content.as_slice()))
        .collect();
    let conf = std::fs::read_to_string(repo("deploy/container/rabbitmq/rabbitmq.conf")).unwrap();
    let mounted = "/etc/rabbitmq/definitions.d";
    assert!(conf.contains(mounted), "{conf}");
    let node = Node::create(
        "ozgtest-compose",
        Listener::Plain(5701),
        &conf.replace(mounted, "{dir}/definitions.d"),
        &copies,
    );
    node.boot();
    for file in &files {
        assert_node_holds(&node, &read_json(file));
    }
    let users = node.ctl(&["list_users", "--quiet", "--no-table-headers"]);
    let names: BTreeSet<_> = users.lines().filter_map(|l| l.split('\t').next()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["ozg-gateway", "ozg-operator"]),
        "a node that loads definitions at boot seeds no guest"
    );

    // The compose gateway's user and password open its vhosts, and everything it and
    // declare-topology declare agrees with what the node loaded.
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "url = \"sqlite://{}\"",
        dir.path().join("store.db").display()
    );
    let secrets = repo("deploy/container/secrets");
    let config = rewritten(
        "deploy/container/ozg-gateway.toml",
        dir.path(),
        &[
            ("@rabbitmq:5672/", "@127.0.0.1:5701/"),
            (
                "url = \"postgres://ozg@postgres:5432/ozg\"\n\
                 password_file = \"secrets/postgres-password\"",
                &store,
            ),
            // The copy lies elsewhere: the secrets relative to the original.
            ("\"secrets/", &format!("\"{}/", secrets.display())),
        ],
    );
    run_ok(&["declare-topology", "--config", config.to_str().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_a_classic_dead_letter_queue_to_quorum_keeps_every_letter_in_order() {
    const QUEUE: &str = "ozg.gateway.dead-letters";
    const EXCHANGE: &str = "ozg.gateway.dead-letter";
    let node = Node::start("ozgtest-migrate", 5702, &["rabbitmq_shovel"]);
    // What gateways before the quorum change declared: a classic queue.
    let old = serde_json::json!({
        "vhosts": [{"name": "ozg-gateway"}],
        "permissions": [{"user": "guest", "vhost": "ozg-gateway",
                         "configure": ".*", "write": ".*", "read": ".*"}],
        "exchanges": [{"name": EXCHANGE, "vhost": "ozg-gateway", "type": "topic",
                       "durable": true, "auto_delete": false, "internal": false,
                       "arguments": {}}],
        "queues": [{"name": QUEUE, "vhost": "ozg-gateway", "durable": true,
                    "auto_delete": false, "arguments": {}}],
        "bindings": [{"source": EXCHANGE, "vhost": "ozg-gateway", "destination": QUEUE,
                      "destination_type": "queue", "routing_key": "#", "arguments": {}}],
    });
    let file = node.dir.join("old-gateway.json");
    std::fs::write(&file, old.to_string()).unwrap();
    node.ctl(&["import_definitions", file.to_str().unwrap()]);
    assert_node_holds(&node, &old);
    let connection = connect(&node.url("ozg-gateway")).await;
    let channel = confirm_channel(&connection).await;
    let letters: Vec<(String, Vec<u8>)> = (0..30)
        .map(|i| (format!("dead-letter-{i:02}"), vec![i as u8; 100 + i]))
        .collect();
    for (id, body) in &letters {
        let mut headers = FieldTable::default();
        headers.insert(
            "x-ozg-reason".into(),
            AMQPValue::LongString(id.clone().into()),
        );
        let confirm = channel
            .basic_publish(
                EXCHANGE.into(),
                "no-route".into(),
                Default::default(),
                body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(id.as_str().into())
                    .with_headers(headers),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }
    let dead_letter = OwnedTopology::DeadLetter {
        exchange: EXCHANGE.to_owned(),
        queue: QUEUE.to_owned(),
    };
    let refused = dead_letter
        .declare(&connection.create_channel().await.unwrap())
        .await
        .expect_err("a quorum declaration of the classic queue must fail");
    assert!(
        refused.to_string().contains("PRECONDITION_FAILED"),
        "{refused}"
    );

    let out = Command::new(repo("deploy/rabbitmq/migrate-dead-letter-queue.sh"))
        .env("RABBITMQ_NODENAME", &node.name)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("quorum queue with 30 dead letters"), "{said}");

    let channel = connection.create_channel().await.unwrap();
    dead_letter
        .declare(&channel)
        .await
        .unwrap_or_else(|e| panic!("the gateway's declaration after the migration: {e}"));
    let moved = take(&channel, QUEUE, 31, Duration::from_secs(5)).await;
    let got: Vec<_> = moved
        .iter()
        .map(|m| {
            (
                m.message_id().unwrap(),
                m.body.clone(),
                m.header("x-ozg-reason"),
            )
        })
        .collect();
    let expected: Vec<_> = letters
        .iter()
        .map(|(id, body)| (id.clone(), body.clone(), Some(id.clone())))
        .collect();
    assert_eq!(
        got, expected,
        "every letter, once, in order, with its headers"
    );
    // Run again: nothing left to do.
    let again = Command::new(repo("deploy/rabbitmq/migrate-dead-letter-queue.sh"))
        .env("RABBITMQ_NODENAME", &node.name)
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to do"));
}
