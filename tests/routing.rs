//! End to end over a real RabbitMQ: six Länder of the seed cooperation, each platform on its
//! own vhost (as its own broker), submitting for regions in the other Länder.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use ozg_gateway::Config;
use ozg_gateway::envelope::Encoding;
use ozg_gateway::sample;
use ozg_gateway::wire::v1 as wire;

const MELDE: &str = "99115005104000";

/// What a submission must look like on arrival: (platform, land, city, city's label, body,
/// encoding, traceparent).
type Expected = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Vec<u8>,
    Encoding,
    Option<String>,
);

/// (label, land code, platform id, city destination, city ARS)
const LANDER: [(&str, &str, &str, &str, &str); 6] = [
    ("he", "06", "civento-he", "he-darmstadt", "064110000000"),
    ("rp", "07", "civento-rp", "rp-mainz", "073150000000"),
    ("sl", "10", "civento-sl", "sl-saarbruecken", "100410100100"),
    ("th", "16", "civento-th", "th-erfurt", "160510000000"),
    ("by", "09", "bayernportal", "by-muenchen", "091620000000"),
    ("ni", "03", "nds-portal", "ni-hannover", "032410001001"),
];

/// Per Land: its platform; its city, reached by the registration of residence; its Land
/// office, reached by every service anywhere in the Land.
fn six_lander_config(v: &Vhosts) -> Config {
    let mut config = TestConfig::new(v).gateway(r#"confirm_timeout = "5s""#);
    for (label, land, platform, city, ars) in LANDER {
        let office = format!("{label}-land-office");
        config = config
            .platform(platform, land, label, Some(50))
            .destination_with(
                city,
                land,
                label,
                &format!("Bürgeramt {city}"),
                "gemeinde",
                "backoffice",
            )
            .destination_with(
                &office,
                land,
                label,
                &format!("Land office {label}"),
                "land-office",
                "backoffice",
            )
            .route(MELDE, ars, city)
            .route("*", land, &office);
    }
    config.build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_lander_submit_across_borders_and_each_arrives_at_the_right_back_office() {
    let labels: Vec<&str> = ["gw"]
        .into_iter()
        .chain(LANDER.iter().map(|l| l.0))
        .collect();
    let v = Vhosts::create("six", &labels);
    let gateway = start_gateway(six_lander_config(&v)).await;

    // Every platform submits a registration of residence for each other Land's city; every
    // second one as JSON, every third with a W3C trace context.
    let mut expected: HashMap<String, Expected> = HashMap::new();
    let mut n = 0;
    for (label, land, platform, _, _) in LANDER {
        let connection = connect(&v.url(label)).await;
        let channel = confirm_channel(&connection).await;
        for (to_label, _, _, city, ars) in LANDER {
            if to_label == label {
                continue;
            }
            n += 1;
            let encoding = if n % 2 == 0 {
                Encoding::Json
            } else {
                Encoding::Protobuf
            };
            let s = sample_submission(platform, land, MELDE, ars, 2048);
            let body = sample::encode(&s, encoding);
            let traceparent =
                (n % 3 == 0).then(|| format!("00-{:032x}-{:016x}-01", n * 7919, n * 31));
            let headers = traceparent.as_ref().map(|tp| {
                let mut h = FieldTable::default();
                // As bytes, the way some AMQP clients send it: the trace must continue.
                h.insert(
                    "traceparent".into(),
                    AMQPValue::LongString(LongString::from(tp.as_str())),
                );
                h.insert("tracestate".into(), AMQPValue::LongString("ozg=1".into()));
                h
            });
            publish(
                &channel,
                "submissions",
                &body,
                Some(encoding.content_type()),
                None,
                headers,
            )
            .await;
            expected.insert(
                s.submission_id.clone(),
                (platform, land, city, to_label, body, encoding, traceparent),
            );
        }
        connection.close(200, "done".into()).await.unwrap();
    }
    assert_eq!(expected.len(), 30);

    // Each back office receives exactly the submissions for its city.
    let mut seen = HashSet::new();
    for (label, _, _, city, ars) in LANDER {
        let connection = connect(&v.url(label)).await;
        let channel = connection.create_channel().await.unwrap();
        let got = take_backoffice(&channel, city, 5, Duration::from_secs(30)).await;
        assert_eq!(
            got.len(),
            5,
            "{city} should receive one submission from each other Land"
        );
        for m in got {
            let id = m.message_id().expect("message id = submission id");
            let (platform, land, dest, to_label, body, encoding, traceparent) = expected
                .get(&id)
                .unwrap_or_else(|| panic!("{city} got an unexpected message {id}"));
            assert_eq!(*to_label, label);
            assert_eq!(dest, &city);
            assert!(seen.insert(id.clone()), "{id} delivered twice");
            assert_eq!(&m.body, body, "the body passes through unchanged");
            assert_eq!(
                m.properties.delivery_mode(),
                &Some(2),
                "persistent delivery"
            );
            assert_eq!(
                m.properties
                    .content_type()
                    .as_ref()
                    .map(|c| c.to_string())
                    .as_deref(),
                Some(encoding.content_type())
            );
            assert_eq!(
                m.header("x-ozg-origin-platform").as_deref(),
                Some(*platform)
            );
            assert_eq!(m.header("x-ozg-origin-land").as_deref(), Some(*land));
            assert_eq!(m.header("x-ozg-service-key").as_deref(), Some(MELDE));
            assert_eq!(m.header("x-ozg-ars").as_deref(), Some(ars));
            assert_eq!(m.header("x-ozg-destination").as_deref(), Some(city));
            // The destination continues the platform's trace: same trace id and flags,
            // the gateway's hop as the new parent; a trace of its own when none came.
            let sent_on = m
                .header("traceparent")
                .expect("a traceparent for the back office");
            let parts: Vec<&str> = sent_on.split('-').collect();
            assert_eq!(parts.len(), 4, "W3C traceparent: {sent_on}");
            assert_eq!(parts[0], "00");
            assert_eq!(parts[1].len(), 32);
            assert_eq!(parts[2].len(), 16);
            assert_ne!(parts[1], "0".repeat(32), "a valid trace id");
            match traceparent {
                Some(tp) => {
                    let came: Vec<&str> = tp.split('-').collect();
                    assert_eq!(parts[1], came[1], "same trace");
                    assert_ne!(parts[2], came[2], "the gateway's hop is the parent");
                    assert_eq!(parts[3], came[3], "same flags");
                    assert_eq!(m.header("tracestate").as_deref(), Some("ozg=1"));
                }
                None => assert!(m.header("tracestate").is_none()),
            }
        }
        // Nothing went to the Land office: the city rule matched.
        assert_eq!(
            take_backoffice(
                &channel,
                &format!("{label}-land-office"),
                1,
                Duration::from_millis(200)
            )
            .await
            .len(),
            0
        );
    }
    assert_eq!(seen.len(), 30);

    // Each platform hears `forwarded` for each of its five submissions.
    for (label, _, platform, _, _) in LANDER {
        let connection = connect(&v.url(label)).await;
        let channel = connection.create_channel().await.unwrap();
        let events = take_status(&channel, platform, 5, Duration::from_secs(10)).await;
        assert_eq!(events.len(), 5, "{platform} status events");
        for e in events {
            assert_eq!(e.header("x-ozg-status").as_deref(), Some("forwarded"));
            let event: wire::StatusEvent = serde_json::from_slice(&e.body).unwrap();
            assert_eq!(event.status, wire::Status::Forwarded as i32);
            assert_eq!(event.platform_id, platform);
            let (_, _, city, ..) = &expected[&event.submission_id];
            assert_eq!(&event.destination_id, city);
            assert!(event.problem.is_none());
        }
    }
    assert_eq!(v.queue_depth("gw", "ozg.gateway.dead-letters").await, 0);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ags_is_converted_and_fallbacks_reach_the_land_office() {
    let labels: Vec<&str> = ["gw"]
        .into_iter()
        .chain(LANDER.iter().map(|l| l.0))
        .collect();
    let v = Vhosts::create("ags", &labels);
    let gateway = start_gateway(six_lander_config(&v)).await;

    let connection = connect(&v.url("th")).await;
    let channel = confirm_channel(&connection).await;
    // AGS of Darmstadt → ARS 064110000000 → the city; Kassel (no city rule) → Hessen's Land
    // office; another service in Darmstadt → Land office too (exact service has no rule).
    let cases = [
        (MELDE, "06411000", "he-darmstadt", "064110000000"),
        (MELDE, "066110000000", "he-land-office", "066110000000"),
        (
            "99099002067003",
            "064110000000",
            "he-land-office",
            "064110000000",
        ),
    ];
    let mut ids = HashMap::new();
    for (service, region, destination, ars) in cases {
        let s = sample_submission("civento-th", "16", service, region, 1024);
        submit(&channel, &s, Encoding::Json).await;
        ids.insert(s.submission_id, (destination, ars));
    }
    let he = connect(&v.url("he")).await;
    let he_channel = he.create_channel().await.unwrap();
    let city = take_backoffice(&he_channel, "he-darmstadt", 1, Duration::from_secs(20)).await;
    let office = take_backoffice(&he_channel, "he-land-office", 2, Duration::from_secs(20)).await;
    assert_eq!(city.len() + office.len(), 3);
    for (m, destination) in city
        .iter()
        .map(|m| (m, "he-darmstadt"))
        .chain(office.iter().map(|m| (m, "he-land-office")))
    {
        let (expected_destination, ars) = ids[&m.message_id().unwrap()];
        assert_eq!(destination, expected_destination);
        assert_eq!(
            m.header("x-ozg-ars").as_deref(),
            Some(ars),
            "the AGS arrives as the full ARS"
        );
    }
    gateway.stop().await;
}
