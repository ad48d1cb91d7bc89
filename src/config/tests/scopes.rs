//! Admin token scopes: how they are read, checked, warned about and what they cover.

use super::*;

/// A second Land's platform and destination beside VALID's Hessen, and a token with
/// the given scope keys.
fn with_token_scope(keys: &str, roles: &str) -> String {
    format!(
        "{VALID}
[[platforms]]
id = \"civento-th\"
land = \"TH\"
broker = \"he\"
ingress_queue = \"ozg.th.submissions\"
status_exchange = \"ozg.th.status\"

[[destinations]]
id = \"th-erfurt\"
name = \"Erfurt\"
kind = \"kreisfreie-stadt\"
land = \"16\"
broker = \"he\"
exchange = \"ozg.backoffice\"
routing_key = \"th-erfurt\"

[admin]
address = \"127.0.0.1:0\"
[[admin.tokens]]
name = \"ops\"
sha256 = \"{}\"
roles = [{roles}]
{keys}
",
        "0".repeat(64)
    )
}

#[test]
fn token_scopes_are_read_and_checked() {
    let he = Land::from_code(6).unwrap();
    let th = Land::from_code(16).unwrap();
    let scope = |laender: Option<Vec<Land>>, destinations: Option<&[&str]>| Scope {
        laender,
        destinations: destinations.map(|d| d.iter().map(|s| (*s).to_owned()).collect()),
    };
    // (scope keys, the scope, or the start of the error after "test.toml: ")
    let cases: Vec<(&str, Result<Scope, &str>)> = vec![
        ("", Ok(Scope::ALL)),
        ("laender = [\"*\"]", Ok(Scope::ALL)),
        ("laender = [\"HE\"]", Ok(scope(Some(vec![he]), None))),
        (
            "laender = [\"16\", \"he\", \"06\"]",
            Ok(scope(Some(vec![he, th]), None)),
        ),
        (
            "laender = [\"HE\"]\ndestinations = [\"he-darmstadt\"]",
            Ok(scope(Some(vec![he]), Some(&["he-darmstadt"]))),
        ),
        (
            "destinations = [\"th-erfurt\", \"he-darmstadt\"]",
            Ok(scope(None, Some(&["he-darmstadt", "th-erfurt"]))),
        ),
        (
            "laender = [\"HX\"]",
            Err("admin.tokens[0].laender: \"HX\" is not a Land code (01 … 16, or SH, HH"),
        ),
        (
            "laender = [\"17\"]",
            Err("admin.tokens[0].laender: \"17\" is not a Land code"),
        ),
        (
            "laender = []",
            Err("admin.tokens[0].laender: is empty: name the Länder"),
        ),
        (
            "laender = [\"*\", \"HE\"]",
            Err("admin.tokens[0].laender: \"*\" (every Land) stands alone"),
        ),
        (
            "destinations = []",
            Err("admin.tokens[0].destinations: is empty"),
        ),
        (
            "destinations = [\"he darmstadt\"]",
            Err("admin.tokens[0].destinations: \"he darmstadt\" is not an id"),
        ),
        (
            "laender = [\"HE\"]\ndestinations = [\"th-erfurt\"]",
            Err(
                "admin.tokens[0].destinations: destination \"th-erfurt\" is of Land 16 TH, which is not among laender",
            ),
        ),
    ];
    for (keys, want) in cases {
        let got = parse(&with_token_scope(keys, "\"operator\""));
        match (got, want) {
            (Ok(config), Ok(want)) => {
                let tokens = config.admin.unwrap().tokens;
                assert_eq!(tokens[0].scope, want, "{keys}");
            }
            (Err(errors), Err(start)) => {
                let text = errors.to_string();
                assert!(
                    text.contains(&format!("test.toml: {start}")),
                    "{keys}: missing {start:?} in\n{text}"
                );
            }
            (got, want) => panic!("{keys}: got {got:?}, wanted {want:?}"),
        }
    }
}

#[test]
fn an_operator_token_for_every_land_is_warned_about_only_when_it_is_not_said() {
    let warned = |keys: &str, roles: &str| {
        parse(&with_token_scope(keys, roles))
            .unwrap()
            .warnings
            .iter()
            .any(|w| w.contains("admin.tokens[0].laender: is not set"))
    };
    assert!(warned("", "\"operator\""));
    assert!(!warned("laender = [\"*\"]", "\"operator\""));
    assert!(!warned("laender = [\"HE\"]", "\"operator\""));
    // A viewer changes nothing; one Land's gateway has nothing to divide.
    assert!(!warned("", "\"viewer\""));
    let one_land = format!(
        "{VALID}\n[admin]\naddress = \"127.0.0.1:0\"\n[[admin.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nroles = [\"operator\"]\n",
        "0".repeat(64)
    );
    assert!(
        !parse(&one_land)
            .unwrap()
            .warnings
            .iter()
            .any(|w| w.contains("laender")),
    );
    // A destination not in the file may be one created through the admin API later.
    let later = parse(&with_token_scope(
        "laender = [\"HE\"]\ndestinations = [\"he-later\"]",
        "\"operator\"",
    ))
    .unwrap();
    assert!(
        later.warnings.iter().any(|w| w.contains(
            "destinations: destination \"he-later\" is not in this file: it counts once it is created"
        )),
        "{:?}",
        later.warnings
    );
}

#[test]
fn a_scope_says_what_it_covers() {
    let he = Land::from_code(6).unwrap();
    let th = Land::from_code(16).unwrap();
    let cases = [
        (Scope::ALL, "every Land"),
        (
            Scope {
                laender: Some(vec![he]),
                destinations: None,
            },
            "Land 06 HE",
        ),
        (
            Scope {
                laender: Some(vec![he, th]),
                destinations: None,
            },
            "Länder 06 HE, 16 TH",
        ),
        (
            Scope {
                laender: Some(vec![he]),
                destinations: Some(vec!["he-a".into(), "he-b".into()]),
            },
            "Land 06 HE; destinations he-a, he-b",
        ),
        (
            Scope {
                laender: None,
                destinations: Some(vec!["he-a".into()]),
            },
            "destination he-a",
        ),
    ];
    for (scope, text) in cases {
        assert_eq!(scope.to_string(), text);
    }
}
