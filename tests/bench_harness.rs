//! The benchmark harness (examples/bench_load, deploy/bench/run.sh, deploy/bench/drained.sh)
//! at tiny scale against the real broker, so that it cannot rot unnoticed: the benchmark
//! configuration, a fill across the 16 platforms routed by the gateway to the right back
//! offices, the latency run with its counts (and that a broken run reports itself broken),
//! and the in-broker clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[allow(dead_code)]
#[path = "../examples/bench_load/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use harness::{ConfigOptions, FillTarget, Mix, PacedOptions};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use ozg_gateway::Config;
use ozg_gateway::municipalities::UnitKind;

fn example() -> (String, &'static Path) {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/config"));
    (
        std::fs::read_to_string(dir.join("example.toml")).unwrap(),
        dir,
    )
}

/// The example's broker names: the benchmark puts each on a vhost `<prefix>-<name>`.
fn broker_names() -> Vec<String> {
    let (text, dir) = example();
    let config = Config::parse(&text, "example.toml", dir).unwrap();
    config.brokers.iter().map(|b| b.name.clone()).collect()
}

fn bench_config(vhosts: &common::Vhosts, data: &Path) -> (Config, harness::BenchConfig) {
    let prefix = vhosts.name("gateway").strip_suffix("-gateway").unwrap();
    let (text, dir) = example();
    let data_dir = data.display().to_string();
    let store = format!("sqlite://{}/store.db", data_dir);
    let made = harness::bench_config(
        &text,
        dir,
        &ConfigOptions {
            amqp: common::AMQP,
            vhost_prefix: prefix,
            data_dir: &data_dir,
            store_url: Some(&store),
            prefetch: Some(64),
        },
    )
    .unwrap_or_else(|e| panic!("bench_config: {e}"));
    let config = Config::parse(&made.text, "bench.toml", dir).unwrap();
    (config, made)
}

async fn verified(
    config: &Config,
    expected: &BTreeMap<String, u64>,
    within: Duration,
) -> harness::Verification {
    let deadline = Instant::now() + within;
    loop {
        let v = harness::verify(config, expected).await.unwrap();
        if v.problems.is_empty() || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_routes_across_16_platforms_and_the_latency_run_counts_every_submission() {
    let names = broker_names();
    let labels: Vec<&str> = names.iter().map(String::as_str).collect();
    let vhosts = common::Vhosts::create("bench", &labels);
    let data = tempfile::tempdir().unwrap();
    let (config, made) = bench_config(&vhosts, data.path());

    // The configuration: every vhost is the test's own, one destination and `*` route per
    // Kreis and kreisfreie Stadt besides the example's, 16 platforms, no admin port.
    let mut made_vhosts = made.vhosts.clone();
    made_vhosts.sort();
    let mut ours: Vec<String> = vhosts.names.values().cloned().collect();
    ours.sort();
    assert_eq!(made_vhosts, ours);
    let kreise = config
        .municipalities
        .units()
        .filter(|u| matches!(u.kind, UnitKind::Kreis { .. }))
        .count();
    assert!(kreise > 390, "{kreise} Kreise in the directory");
    assert_eq!(made.kreis_destinations, kreise);
    assert_eq!(config.platforms.len(), 16);
    assert!(config.destinations.len() >= kreise + 16);
    assert!(config.admin.is_none());
    assert!(config.telemetry.metrics_address.is_none());
    assert!(!config.gateway.store_dead_letters);
    assert!(config.platforms.iter().all(|p| p.prefetch == 64));
    common::declare(&config).await;

    // Fill 50 across the platforms; the gateway routes each where the configuration says.
    let mix = Mix::new(&config, 1024, 7).unwrap();
    let fill = harness::fill(&config, mix, 50, 1000, &FillTarget::Platforms)
        .await
        .unwrap();
    assert_eq!(fill.published, 50);
    assert_eq!(fill.unrouted, 0);
    assert_eq!(fill.expected.values().sum::<u64>(), 50);
    assert!(
        fill.per_platform.len() >= 10,
        "50 submissions came from only {} platforms: {:?}",
        fill.per_platform.len(),
        fill.per_platform
    );
    // Before the gateway runs, verify sees everything still in the platform queues.
    let before = harness::verify(&config, &fill.expected).await.unwrap();
    assert_eq!(before.arrived, 0);
    assert!(
        before
            .problems
            .iter()
            .any(|p| p.contains(" in ozg.submissions, expected 0"))
    );

    let gateway = common::RunningGateway::start(config.clone());
    let v = verified(&config, &fill.expected, Duration::from_secs(15)).await;
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!(v.arrived, 50);
    // One submission more expected somewhere than arrived: verify names that destination.
    let mut wrong = fill.expected.clone();
    let (first, _) = wrong.iter().next().map(|(d, n)| (d.clone(), *n)).unwrap();
    *wrong.get_mut(&first).unwrap() += 1;
    let v = harness::verify(&config, &wrong).await.unwrap();
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    assert!(
        v.problems[0].starts_with(&format!("{first}: ")),
        "{:?}",
        v.problems
    );

    // The latency run: every submission counted, latencies ordered.
    let mix = Mix::new(&config, 1024, 8).unwrap();
    let opts = PacedOptions {
        rate: 200.0,
        count: 100,
        grace: Duration::from_secs(10),
        window: 1000,
    };
    let report = harness::paced(&config, mix, &opts).await.unwrap();
    assert!(
        report.problems().is_empty(),
        "{:?}\n{}",
        report.problems(),
        report.lines()
    );
    assert_eq!(
        (
            report.published,
            report.arrived,
            report.missing,
            report.duplicated
        ),
        (100, 100, 0, 0)
    );
    assert_eq!((report.misrouted, report.unexpected), (0, 0));
    assert_eq!(report.latencies.len(), 100);
    let (p50, p99, p999) = (
        report.quantile(0.5),
        report.quantile(0.99),
        report.quantile(0.999),
    );
    assert!(
        Duration::ZERO < p50 && p50 <= p99 && p99 <= p999,
        "{}",
        report.lines()
    );
    assert_eq!(Some(&p999), report.latencies.last());
    // Paced, not bursting (a debug build on a busy machine may fall behind, never ahead).
    assert!(
        report.achieved_rate > 20.0 && report.achieved_rate < 1.05 * opts.rate,
        "{}",
        report.lines()
    );
    let lines = report.lines();
    for key in [
        "latency_p50_ms=",
        "latency_p999_ms=",
        "latency_missing=0",
        "latency_arrived=100",
    ] {
        assert!(lines.contains(key), "{key} not in\n{lines}");
    }
    gateway.stop().await;

    // Without a gateway nothing arrives: the run reports itself invalid, not fast.
    let mix = Mix::new(&config, 1024, 9).unwrap();
    let opts = PacedOptions {
        rate: 100.0,
        count: 20,
        grace: Duration::from_millis(500),
        window: 1000,
    };
    let broken = harness::paced(&config, mix, &opts).await.unwrap();
    assert_eq!(
        (broken.published, broken.arrived, broken.missing),
        (20, 0, 20)
    );
    assert!(
        broken.problems().iter().any(|p| p.contains("20 missing")),
        "{:?}",
        broken.problems()
    );

    // Purge empties what the runs left (20 in the platform queues, status events).
    assert!(harness::purge(&config).await.unwrap() >= 20);
    let after = harness::verify(&config, &BTreeMap::new()).await.unwrap();
    assert!(after.problems.is_empty(), "{:?}", after.problems);
}

#[test]
fn the_mix_draws_regions_by_population_and_platforms_evenly() {
    let (text, dir) = example();
    let config = Config::parse(&text, "example.toml", dir).unwrap();
    let mut mix = Mix::new(&config, 1024, 3).unwrap();
    let n = 20_000;
    let mut by_land: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_platform: BTreeMap<usize, u64> = BTreeMap::new();
    for _ in 0..n {
        let p = mix.next();
        *by_land
            .entry(p.region.to_string()[..2].to_owned())
            .or_default() += 1;
        *by_platform.entry(p.platform).or_default() += 1;
        assert!(p.destination.is_some(), "the example routes every Land");
    }
    // Nordrhein-Westfalen has 21.5 % of the population (2020), Bremen 0.8 %.
    let share = |land: &str| by_land.get(land).copied().unwrap_or(0) as f64 / n as f64;
    assert!((0.19..0.24).contains(&share("05")), "NW {}", share("05"));
    assert!(share("04") < 0.015, "HB {}", share("04"));
    assert_eq!(by_platform.len(), 16);
    assert!(
        by_platform.values().all(|&c| (1000..1500).contains(&c)),
        "{by_platform:?}"
    );
}

/// deploy/bench/drained.sh (run.sh's clock) sees a consumer come up and a queue drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_broker_clock_times_a_queue_draining() {
    let vhosts = common::Vhosts::create("bench-clock", &["gateway"]);
    let data = tempfile::tempdir().unwrap();
    let config = common::parse_config(&format!(
        "[gateway]\ndead_letter_broker = \"gateway\"\ndata_dir = \"{}\"\n\
         [brokers.gateway]\nurl = \"{}\"\n\
         [[platforms]]\nid = \"bench\"\nland = \"06\"\nbroker = \"gateway\"\n\
         ingress_queue = \"ozg.submissions\"\nstatus_exchange = \"ozg.status\"\n",
        data.path().display(),
        vhosts.url("gateway")
    ));
    let mix = Mix::new(&config, 1024, 1).unwrap();
    let target = FillTarget::Queue {
        broker: 0,
        queue: "bench.src".into(),
    };
    harness::fill(&config, mix, 30, 1000, &target)
        .await
        .unwrap();
    let src = ["bench.src".to_owned()];
    assert_eq!(harness::count(&config, 0, &src).await.unwrap(), 30);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/bench/drained.sh");
    // The broker (user rabbitmq) writes the ready file.
    let ready_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        ready_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let ready = ready_dir.path().join("ready");
    let mut clock = Command::new(script)
        .args(["30", "1", &format!("{}:bench.src", vhosts.name("gateway"))])
        .env("DRAINED_READY", &ready)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        if let Some(status) = clock.try_wait().unwrap() {
            let out = clock.wait_with_output().unwrap();
            panic!(
                "drained.sh ended ({status}) before it polled (it needs rabbitmqctl, as root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            Instant::now() < deadline,
            "drained.sh did not start polling within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let connection = common::connect(&vhosts.url("gateway")).await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_qos(10, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            "bench.src".into(),
            "clock-test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..30 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        // Slowly, so that the clock sees a queue that takes time to drain.
        tokio::time::sleep(Duration::from_millis(5)).await;
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
    }
    let out = tokio::task::spawn_blocking(move || clock.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let _ = connection.close(200, "done".into()).await;
    assert!(
        out.status.success(),
        "drained.sh failed (it needs rabbitmqctl, as root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<u64> = text
        .split_whitespace()
        .map(|x| {
            x.parse()
                .unwrap_or_else(|_| panic!("drained.sh printed {text:?}"))
        })
        .collect();
    let [ready, up, left, done] = f[..] else {
        panic!("drained.sh printed {text:?}");
    };
    assert!(
        ready > 0 && ready <= before,
        "ready {ready}, consumer started {before}"
    );
    assert!(up >= before, "up {up} before the consumer started {before}");
    assert!(
        (20..=30).contains(&left),
        "{left} left when the consumer came up"
    );
    assert!(
        done >= up + 100,
        "30 messages at 5 ms each took {} ms",
        done - up
    );
}
