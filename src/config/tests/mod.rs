use std::path::Path;
use std::time::Duration;

use super::*;
use crate::model::{Land, quoted};

mod files;
mod scopes;

/// A valid file: one broker, platform, destination and route in Hessen.
pub(crate) const VALID: &str = r#"
[gateway]
dead_letter_broker = "he"

[brokers.he]
url = "amqp://guest:secret@127.0.0.1:5672/ozg-he"

[[platforms]]
id = "civento-he"
land = "HE"
broker = "he"
ingress_queue = "ozg.he.submissions"
status_exchange = "ozg.he.status"

[[destinations]]
id = "he-darmstadt"
name = "Wissenschaftsstadt Darmstadt"
kind = "kreisfreie-stadt"
land = "06"
broker = "he"
exchange = "ozg.backoffice"
routing_key = "he-darmstadt"

[[routes]]
service = "*"
region = "06411"
destination = "he-darmstadt"
"#;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(text, "test.toml", Path::new("."))
}

#[test]
fn a_valid_file_gives_defaults_and_hides_the_password() {
    let config = parse(VALID).unwrap();
    assert_eq!(config.platforms[0].land.code(), 6);
    assert_eq!(config.platforms[0].prefetch, 256);
    assert_eq!(config.gateway.in_flight_bytes, 16 * 1024 * 1024);
    assert_eq!(config.platforms[0].status_routing_key, "civento-he");
    assert_eq!(
        config.gateway.dead_letter_exchange,
        DEFAULT_DEAD_LETTER_EXCHANGE
    );
    assert_eq!(
        config.brokers[0].display,
        "amqp://guest@127.0.0.1:5672/ozg-he"
    );
    assert!(!format!("{config:?}").contains("secret"));
}

#[test]
fn every_error_is_listed_with_file_and_key() {
    let text = VALID
        .replace("land = \"HE\"", "land = \"XX\"")
        .replace("region = \"06411\"", "region = \"0641\"")
        .replace(
            "destination = \"he-darmstadt\"",
            "destination = \"nowhere\"",
        )
        + r#"
[[routes]]
service = "12345"
region = "06411"
destination = "he-darmstadt"

[[routes]]
service = "99115005104000"
region = "064119999999"
destination = "he-darmstadt"

[[routes]]
service = "*"
region = "06411"
destination = "he-darmstadt"

[[routes]]
service = "*"
region = "06411"
destination = "he-darmstadt"
"#;
    let errors = parse(&text).unwrap_err().to_string();
    for expected in [
        "test.toml: platforms[0].land: \"XX\" is not a Land code",
        "test.toml: routes[0].region: \"0641\" has 4 characters, expected 2, 3, 5, 9 or 12 digits",
        "test.toml: routes[0].destination: unknown destination \"nowhere\"",
        "test.toml: routes[1].service: \"12345\" has 5 characters, expected 14 digits",
        "test.toml: routes[2].region: 064119999999 is not a Gemeinde in the municipality directory",
        "test.toml: routes[4]: a second route for service * and region 06411 (the first is routes[3])",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
    assert!(
        errors.starts_with("invalid configuration: 6 errors"),
        "{errors}"
    );
}

#[test]
fn the_directory_is_polled_every_two_seconds_unless_configured() {
    assert_eq!(
        parse(VALID).unwrap().store.directory_poll,
        DEFAULT_DIRECTORY_POLL
    );
    let polled = |every: &str| parse(&format!("{VALID}\n[store]\ndirectory_poll = \"{every}\"\n"));
    assert_eq!(
        polled("500ms").unwrap().store.directory_poll,
        Duration::from_millis(500)
    );
    let errors = polled("10ms").unwrap_err().to_string();
    assert!(
        errors.contains("test.toml: store.directory_poll: must be at least 100ms"),
        "{errors}"
    );
}

#[test]
fn routes_to_a_destination_left_out_for_its_broker_add_no_error() {
    let text = VALID.replace(
        "url = \"amqp://guest:secret@127.0.0.1:5672/ozg-he\"",
        "url = \"amqp://gw@127.0.0.1:5672/ozg-he\"\npassword_file = \"/nonexistent/pw\"",
    );
    let errors = parse(&text).unwrap_err().to_string();
    assert!(
        errors.starts_with("invalid configuration: 1 error")
            && errors.contains("brokers.he.password_file: cannot read /nonexistent/pw"),
        "{errors}"
    );
}

#[test]
fn missing_keys_and_unknown_references() {
    let text = r#"
[gateway]
dead_letter_broker = "nope"
[brokers.a]
url = "http://[::1"
[[platforms]]
id = "p"
[[destinations]]
id = "d"
kind = "castle"
"#;
    let errors = parse(text).unwrap_err().to_string();
    for expected in [
        "brokers.a.url: is not a valid AMQP URI",
        "gateway.dead_letter_broker: unknown broker \"nope\"",
        "platforms[0].land: is missing",
        "platforms[0].broker: is missing",
        "platforms[0].ingress_queue: is missing",
        "platforms[0].status_exchange: is missing",
        "destinations[0].name: is missing",
        "destinations[0].kind: unknown kind \"castle\"",
        "destinations[0].routing_key: is missing",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
}

#[test]
fn syntax_errors_name_the_line_and_unknown_keys_are_refused() {
    let errors = parse("[gateway\n").unwrap_err().to_string();
    assert!(
        errors.contains("test.toml: TOML parse error at line 1"),
        "{errors}"
    );
    let errors = parse(
        &VALID
            .replace("prefetch", "x")
            .replace("[gateway]", "[gateway]\ndead_leter_broker = 1"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("unknown field `dead_leter_broker`"),
        "{errors}"
    );
}

#[test]
fn every_problem_at_once_also_at_the_format_level() {
    let text = "routes = [5, { service = \"*\", region = \"0641\", destination = \"he-darmstadt\", colour = \"red\" }, { service = \"*\", region = \"06411\", destination = \"he-darmstadt\" }]\n".to_owned()
        + &VALID
        .replace(
            "dead_letter_broker = \"he\"",
            "dead_letter_broker = \"he\"\nconfirm_timout = \"5s\"\nshutdown_grace = \"30 parsecs\"\nmax_message_bytes = \"big\"",
        )
        .replace("land = \"HE\"", "land = \"XX\"\nprefetch = \"many\"")
        .replace("kind = \"kreisfreie-stadt\"", "kind = 5")
        .replace(
            "[[routes]]\nservice = \"*\"\nregion = \"06411\"\ndestination = \"he-darmstadt\"\n",
            "",
        )
        + "[retry]\ndelays = [\"1s\", \"soon\", \"5s\", 7, \"later\"]\n[telemetery]\nlog_level = \"debug\"\n[brokers.th]\nurl = 5\n";
    let errors = parse(&text).unwrap_err().to_string();
    println!("{errors}");
    let lines: Vec<&str> = errors.lines().skip(1).map(str::trim).collect();
    let expected = [
        "test.toml: brokers.th.url: invalid type: an integer, expected a string",
        "test.toml: destinations[0].kind: invalid type: integer `5`, expected a string",
        "test.toml: gateway.confirm_timout: unknown field `confirm_timout`, expected one of",
        "test.toml: gateway.max_message_bytes: invalid type: string \"big\", expected a whole number",
        "test.toml: gateway.shutdown_grace: ",
        "test.toml: platforms[0].prefetch: invalid type: string \"many\", expected a whole number",
        "test.toml: retry.delays[1]: ",
        "test.toml: retry.delays[3]: invalid type: integer `7`",
        "test.toml: retry.delays[4]: ",
        "test.toml: routes[0]: invalid type: integer `5`, expected a table",
        "test.toml: routes[1].colour: unknown field `colour`",
        "test.toml: telemetery: unknown field `telemetery`",
        // And what validation finds besides, with the numbering of the file.
        "test.toml: platforms[0].land: \"XX\" is not a Land code",
        "test.toml: routes[1].region: \"0641\" has 4 characters",
    ];
    for want in expected {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in:\n{errors}"
        );
    }
    assert_eq!(lines.len(), expected.len(), "{errors}");
    assert!(
        !errors.contains("is missing"),
        "consequences are not reported: {errors}"
    );
    assert!(!errors.contains("secret"), "{errors}");
}

#[test]
fn a_console_needs_admin_tokens_and_is_warned_about_off_loopback() {
    let admin = "[admin]\naddress = \"127.0.0.1:0\"\n[[admin.tokens]]\nname = \"ops\"\n\
                 sha256 = \"0e0f32b32f222d209c23da5994f02cd3caf03a883ad8c0f491339d3f058bf34a\"\n\
                 roles = [\"operator\"]\n";
    let config = parse(&format!(
        "{VALID}\n{admin}\n[console]\naddress = \"127.0.0.1:8080\"\n"
    ))
    .unwrap();
    assert_eq!(
        config.console.map(|c| c.address.port()),
        Some(8080),
        "{:?}",
        config.warnings
    );
    assert!(parse(VALID).unwrap().console.is_none());
    let errors = parse(&format!(
        "{VALID}\n[console]\naddress = \"127.0.0.1:8080\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("test.toml: console: operators log in with an admin token"),
        "{errors}"
    );
    let errors = parse(&format!(
        "{VALID}\n{admin}\n[console]\naddress = \"localhost\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("console.address: \"localhost\" is not an address"),
        "{errors}"
    );
    let open = parse(&format!(
        "{VALID}\n{admin}\n[console]\naddress = \"0.0.0.0:8080\"\n"
    ))
    .unwrap();
    assert!(
        open.warnings
            .iter()
            .any(|w| w.contains("console.address: 0.0.0.0:8080 is reachable")),
        "{:?}",
        open.warnings
    );
}

#[test]
fn an_admin_api_for_other_machines_without_tls_is_warned_about() {
    for (address, warned) in [
        ("127.0.0.1:0", false),
        ("[::1]:50051", false),
        ("0.0.0.0:50051", true),
        ("[::]:50051", true),
        ("10.1.2.3:50051", true),
    ] {
        let config = parse(&format!("{VALID}\n[admin]\naddress = \"{address}\"\n")).unwrap();
        let warning = config.warnings.iter().find(|w| w.contains("admin.address"));
        assert_eq!(
            warning.is_some(),
            warned,
            "{address}: {:?}",
            config.warnings
        );
        if let Some(warning) = warning {
            assert!(
                warning.starts_with(&format!(
                    "test.toml: admin.address: {address} is reachable from other machines, without TLS"
                )),
                "{warning}"
            );
        }
    }
}

#[test]
fn destinations_are_refused_with_bad_ids_long_names_and_the_gateways_own_targets() {
    let long_name = "x".repeat(1 << 20);
    let long_key = "k".repeat(256);
    // (what replaces a line of the destination, the error expected)
    let cases: Vec<(&str, String, String)> = vec![
        (
            "id = \"he-darmstadt\"",
            "id = \"he\\u0007x\"".into(),
            "destinations[0].id: contains a control character (U+0007) at byte 2".into(),
        ),
        (
            "id = \"he-darmstadt\"",
            "id = \"he darmstadt\"".into(),
            "destinations[0].id: \"he darmstadt\" is not an id: letters, digits, '-', '_', '.' and ':' only, not ' '".into(),
        ),
        (
            "id = \"he-darmstadt\"",
            format!("id = \"{}\"", "d".repeat(129)),
            "destinations[0].id: has 129 characters, at most 128 are allowed (\"dddddddddddddddddddddddddddddddddddddddd\"…)".into(),
        ),
        (
            "name = \"Wissenschaftsstadt Darmstadt\"",
            format!("name = \"{long_name}\""),
            format!("destinations[0].name: has 1048576 characters, at most 300 are allowed (\"{}\"…)", "x".repeat(40)),
        ),
        (
            "name = \"Wissenschaftsstadt Darmstadt\"",
            "name = \"Darmstadt\\nBürgeramt\"".into(),
            "destinations[0].name: contains a control character (U+000A) at byte 9".into(),
        ),
        (
            "routing_key = \"he-darmstadt\"",
            format!("routing_key = \"{long_key}\""),
            "destinations[0].routing_key: has 256 characters, at most 255 are allowed".into(),
        ),
        (
            "exchange = \"ozg.backoffice\"",
            "exchange = \"ozg.gateway.retry\"".into(),
            "destinations[0].exchange: \"ozg.gateway.retry\" is the gateway's own (names starting with ozg.gateway. are): a destination cannot use it".into(),
        ),
        (
            "exchange = \"ozg.backoffice\"\nrouting_key = \"he-darmstadt\"",
            "exchange = \"\"\nrouting_key = \"ozg.gateway.replay\"".into(),
            "destinations[0].routing_key: \"ozg.gateway.replay\" is the gateway's own queue (names starting with ozg.gateway. are): a destination cannot use it".into(),
        ),
        (
            "exchange = \"ozg.backoffice\"\nrouting_key = \"he-darmstadt\"",
            "exchange = \"\"\nrouting_key = \"ozg.he.submissions\"".into(),
            "destinations[0].routing_key: \"ozg.he.submissions\" is the ingress queue of platform \"civento-he\": a destination cannot use it".into(),
        ),
        (
            "routing_key = \"he-darmstadt\"",
            "routing_key = \"he-darmstadt\"\nreceipt_queue = \"ozg.gateway.dead-letters\"".into(),
            "destinations[0].receipt_queue: \"ozg.gateway.dead-letters\" is the gateway's own queue (names starting with ozg.gateway. are): a destination cannot use it".into(),
        ),
        (
            "exchange = \"ozg.backoffice\"\nrouting_key = \"he-darmstadt\"",
            "exchange = \"\"\nrouting_key = \"bo.darmstadt\"\nreceipt_queue = \"bo.darmstadt\"".into(),
            "destinations[0].receipt_queue: \"bo.darmstadt\" is the queue this destination's submissions are delivered to: a destination cannot use it".into(),
        ),
        (
            "exchange = \"ozg.backoffice\"",
            "exchange = \"dead\"".into(),
            "destinations[0].exchange: \"dead\" is the gateway's dead-letter exchange: a destination cannot use it".into(),
        ),
    ];
    for (line, replacement, expected) in cases {
        assert!(VALID.contains(line), "{line}");
        let text = VALID.replace(line, &replacement).replace(
            "dead_letter_broker = \"he\"",
            "dead_letter_broker = \"he\"\ndead_letter_exchange = \"dead\"",
        );
        let errors = parse(&text).unwrap_err().to_string();
        assert!(
            errors.contains(&expected),
            "missing {expected:?} in:\n{}",
            quoted(&errors)
        );
        assert!(
            errors.len() < 2_000,
            "nothing long is echoed: {}",
            errors.len()
        );
    }
    // A back office queue on another broker may have any name but the namespace's.
    let valid = VALID.replace(
        "exchange = \"ozg.backoffice\"\nrouting_key = \"he-darmstadt\"",
        "exchange = \"\"\nrouting_key = \"ozg.gateway-de.darmstadt\"",
    );
    parse(&valid).unwrap();
}

#[test]
fn a_missing_municipality_directory_file_is_reported() {
    let text = VALID
        .replace(
            "[gateway]",
            "[gateway]\ndirectory = \"/nonexistent/gv.csv\"",
        )
        .replace("land = \"HE\"", "land = \"XX\"")
        .replace("region = \"06411\"", "region = \"069\"");
    let errors = parse(&text).unwrap_err().to_string();
    assert!(
        errors.contains("gateway.directory: /nonexistent/gv.csv: cannot read"),
        "{errors}"
    );
    // The rest is still checked; regions only for their form, the directory unknown.
    assert!(errors.contains("platforms[0].land: \"XX\""), "{errors}");
    assert!(
        errors.starts_with("invalid configuration: 2 errors"),
        "{errors}"
    );
}

#[test]
fn the_in_flight_budget_must_hold_a_few_messages() {
    let with = |value: &str| {
        VALID.replacen(
            "[gateway]\n",
            &format!("[gateway]\nin_flight_bytes = {value}\n"),
            1,
        )
    };
    assert_eq!(
        parse(&with("1048576")).unwrap().gateway.in_flight_bytes,
        1024 * 1024
    );
    let errors = parse(&with("1000")).unwrap_err().to_string();
    assert!(
        errors.contains("gateway.in_flight_bytes: 1000 is out of range"),
        "{errors}"
    );
}
