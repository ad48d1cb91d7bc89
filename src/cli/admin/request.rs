//! The command line's arguments turned into request messages. Kept free of I/O so that the
//! edge cases (time bounds, the `--all` guard, partial updates) are tested without a server.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use ozg_gateway::outcome::Reason;
use ozg_gateway::wire::admin as api;
use pbjson_types::Timestamp;

/// `--state all`: every state, not only pending letters.
const DEAD_LETTER_STATE_ANY: i32 = api::DeadLetterState::Any as i32;

/// `--since` / `--until`: an RFC 3339 time in UTC, or how long ago ("90m", "2d").
pub fn parse_time(text: &str) -> Result<SystemTime, String> {
    parse_time_at(text, SystemTime::now())
}

/// Only UTC is accepted: a time without a zone would be read as UTC while a German operator
/// most likely means local time, and an hour off is worse than a refusal.
fn parse_time_at(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    if let Ok(time) = humantime::parse_rfc3339(text) {
        return Ok(time);
    }
    let Ok(ago) = humantime::parse_duration(text) else {
        return Err(format!(
            "{text:?} is neither an RFC 3339 time in UTC (2025-03-01T08:00:00Z) \
             nor a duration back from now (90m, 2d)"
        ));
    };
    now.checked_sub(ago)
        .filter(|t| *t >= UNIX_EPOCH)
        .ok_or_else(|| format!("{text:?} reaches back before 1970"))
}

pub fn timestamp(time: SystemTime) -> Result<Timestamp, String> {
    let since_epoch = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "a time before 1970".to_owned())?;
    Ok(Timestamp {
        seconds: i64::try_from(since_epoch.as_secs()).map_err(|e| e.to_string())?,
        nanos: i32::try_from(since_epoch.subsec_nanos()).map_err(|e| e.to_string())?,
    })
}

/// Both bounds as timestamps, refusing an empty window: the server would answer it with an
/// empty list, which looks like "nothing happened".
pub fn bounds(
    since: Option<SystemTime>,
    until: Option<SystemTime>,
) -> Result<(Option<Timestamp>, Option<Timestamp>), String> {
    if let (Some(s), Some(u)) = (since, until) {
        if s > u {
            return Err("--since is after --until".into());
        }
    }
    Ok((
        since.map(timestamp).transpose()?,
        until.map(timestamp).transpose()?,
    ))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    Pending,
    Replayed,
    Discarded,
    All,
}

fn state_value(state: Option<StateArg>) -> i32 {
    match state {
        // Unspecified lets the server apply its documented default (pending).
        None => api::DeadLetterState::Unspecified as i32,
        Some(StateArg::Pending) => api::DeadLetterState::Pending as i32,
        Some(StateArg::Replayed) => api::DeadLetterState::Replayed as i32,
        Some(StateArg::Discarded) => api::DeadLetterState::Discarded as i32,
        Some(StateArg::All) => DEAD_LETTER_STATE_ANY,
    }
}

/// Which dead letters: the filters shared by list, replay and discard.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct FilterArgs {
    /// Platform id.
    #[arg(long)]
    pub platform: Option<String>,
    /// Reason code, e.g. no-route, delivery-failed, unknown-region, invalid-field.
    #[arg(long, value_name = "REASON", value_parser = reasons())]
    pub reason: Option<String>,
    /// LeiKa key.
    #[arg(long)]
    pub service: Option<String>,
    /// Destination id.
    #[arg(long)]
    pub destination: Option<String>,
    /// Dead-lettered at or after: RFC 3339 in UTC, or a duration back from now (2h).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<SystemTime>,
    /// Dead-lettered before: RFC 3339 in UTC, or a duration back from now.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<SystemTime>,
    /// The submission's id (one submission may be dead-lettered more than once).
    #[arg(long)]
    pub submission_id: Option<String>,
}

/// `--reason`: the gateway's reason codes, each with its title, so that a misspelt one is
/// refused with the list rather than matching nothing.
fn reasons() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        Reason::ALL.map(|r| clap::builder::PossibleValue::new(r.code()).help(r.title())),
    )
}

pub fn dead_letter_filter(
    args: &FilterArgs,
    state: Option<StateArg>,
) -> Result<api::DeadLetterFilter, String> {
    let (since, until) = bounds(args.since, args.until)?;
    Ok(api::DeadLetterFilter {
        platform: args.platform.clone().unwrap_or_default(),
        reason: args.reason.clone().unwrap_or_default(),
        service: args.service.clone().unwrap_or_default(),
        destination: args.destination.clone().unwrap_or_default(),
        since,
        until,
        state: state_value(state),
        submission_id: args.submission_id.clone().unwrap_or_default(),
    })
}

/// What replay and discard act on: ids, a filter, or explicitly everything pending.
#[derive(Debug, PartialEq)]
pub struct Selection {
    pub ids: Vec<String>,
    pub filter: Option<api::DeadLetterFilter>,
    /// Every pending letter; the server insists on being told so too.
    pub all: bool,
}

/// An empty filter matches every pending letter, so asking for that takes `--all`: a
/// forgotten argument must not replay or discard the whole store.
pub fn selection(
    ids: Vec<String>,
    filter: api::DeadLetterFilter,
    all: bool,
) -> Result<Selection, String> {
    let filtered = filter != api::DeadLetterFilter::default();
    if ids.iter().any(|id| id.trim().is_empty()) {
        return Err("an empty dead-letter id".into());
    }
    match (ids.is_empty(), filtered, all) {
        (false, false, false) => Ok(Selection {
            ids,
            filter: None,
            all: false,
        }),
        (false, true, _) => Err("give either ids or filters, not both".into()),
        (false, false, true) => Err("give either ids or --all, not both".into()),
        (true, true, false) => Ok(Selection {
            ids,
            filter: Some(filter),
            all: false,
        }),
        (true, true, true) => Err("--all selects every pending dead letter; leave it out \
                                   to act on the filtered ones"
            .into()),
        (true, false, true) => Ok(Selection {
            ids,
            filter: None,
            all: true,
        }),
        (true, false, false) => Err("no ids and no filter: this would select every pending \
                                     dead letter; add --all if that is what you mean"
            .into()),
    }
}

/// `destinations create`: every field but the exchange and routing key is required.
#[derive(clap::Args, Clone, Debug)]
pub struct NewDestination {
    #[arg(long)]
    pub id: String,
    #[arg(long)]
    pub name: String,
    /// gemeinde | gemeindeverband | kreis | kreisfreie-stadt | land-office | federal-office |
    /// other
    #[arg(long)]
    pub kind: String,
    /// Land code ("06").
    #[arg(long)]
    pub land: String,
    /// Name of a broker from the configuration file.
    #[arg(long)]
    pub broker: String,
    /// Empty: the broker's default exchange, with the routing key naming the queue.
    #[arg(long, default_value = "")]
    pub exchange: String,
    #[arg(long, default_value = "")]
    pub routing_key: String,
    /// The back office's receipt queue on its broker (it must exist); empty: none.
    #[arg(long, default_value = "")]
    pub receipt_queue: String,
}

impl From<NewDestination> for api::Destination {
    fn from(d: NewDestination) -> Self {
        api::Destination {
            id: d.id,
            name: d.name,
            kind: d.kind,
            land: d.land,
            broker: d.broker,
            exchange: d.exchange,
            routing_key: d.routing_key,
            source: api::Source::Unspecified as i32,
            receipt_queue: d.receipt_queue,
        }
    }
}

/// The fields of `destinations update`; what is not given stays as it is.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct DestinationChanges {
    #[arg(long)]
    pub name: Option<String>,
    /// gemeinde | gemeindeverband | kreis | kreisfreie-stadt | land-office | federal-office |
    /// other
    #[arg(long)]
    pub kind: Option<String>,
    /// Land code ("06").
    #[arg(long)]
    pub land: Option<String>,
    /// Name of a broker from the configuration file.
    #[arg(long)]
    pub broker: Option<String>,
    #[arg(long)]
    pub exchange: Option<String>,
    #[arg(long)]
    pub routing_key: Option<String>,
    /// "" stops taking receipts.
    #[arg(long)]
    pub receipt_queue: Option<String>,
}

impl DestinationChanges {
    pub fn check(&self) -> Result<(), String> {
        let given = [
            &self.name,
            &self.kind,
            &self.land,
            &self.broker,
            &self.exchange,
            &self.routing_key,
            &self.receipt_queue,
        ];
        if given.iter().all(|v| v.is_none()) {
            return Err(
                "nothing to change: give at least one of --name --kind --land \
                        --broker --exchange --routing-key --receipt-queue"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The API replaces a destination whole, so an update that names one field is applied to the
/// current entry here. The source is the server's to decide, never the client's.
pub fn apply_changes(
    mut current: api::Destination,
    changes: &DestinationChanges,
) -> Result<api::Destination, String> {
    let DestinationChanges {
        name,
        kind,
        land,
        broker,
        exchange,
        routing_key,
        receipt_queue,
    } = changes.clone();
    changes.check()?;
    let fields = [
        (&mut current.name, name),
        (&mut current.kind, kind),
        (&mut current.land, land),
        (&mut current.broker, broker),
        (&mut current.exchange, exchange),
        (&mut current.routing_key, routing_key),
        (&mut current.receipt_queue, receipt_queue),
    ];
    for (field, value) in fields {
        if let Some(value) = value {
            *field = value;
        }
    }
    current.source = api::Source::Unspecified as i32;
    Ok(current)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const NOW: u64 = 1_750_000_000;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn times_are_utc_rfc3339_or_a_duration_back_from_now() {
        let cases: &[(&str, Result<u64, &str>)] = &[
            ("2025-06-15T15:06:40Z", Ok(NOW)),
            ("2025-06-15T15:06:40+00:00", Ok(NOW)),
            ("2h", Ok(NOW - 7200)),
            ("1d 30m", Ok(NOW - 86_400 - 1800)),
            ("0s", Ok(NOW)),
            // No zone or another zone: refused rather than guessed.
            ("2025-06-15T15:06:40", Err("neither")),
            ("2025-06-15 15:06:40", Err("neither")),
            ("2025-06-15T17:06:40+02:00", Err("neither")),
            ("2025-06-15", Err("neither")),
            ("yesterday", Err("neither")),
            ("", Err("neither")),
            ("100years", Err("before 1970")),
        ];
        for (text, expected) in cases {
            let got = parse_time_at(text, at(NOW));
            match expected {
                Ok(seconds) => assert_eq!(got, Ok(at(*seconds)), "{text:?}"),
                Err(part) => {
                    let message = got.expect_err(text);
                    assert!(message.contains(part), "{text:?}: {message}");
                }
            }
        }
    }

    #[test]
    fn timestamps_keep_nanoseconds() {
        let t = at(NOW) + Duration::from_nanos(123_456_789);
        assert_eq!(
            timestamp(t),
            Ok(Timestamp {
                seconds: NOW as i64,
                nanos: 123_456_789
            })
        );
        assert!(timestamp(UNIX_EPOCH - Duration::from_secs(1)).is_err());
    }

    #[test]
    fn bounds_refuse_an_empty_window() {
        let ts = |s: u64| Some(timestamp(at(s)).unwrap());
        assert_eq!(bounds(None, None), Ok((None, None)));
        assert_eq!(bounds(Some(at(5)), None), Ok((ts(5), None)));
        assert_eq!(bounds(None, Some(at(5))), Ok((None, ts(5))));
        assert_eq!(bounds(Some(at(5)), Some(at(5))), Ok((ts(5), ts(5))));
        assert_eq!(bounds(Some(at(5)), Some(at(9))), Ok((ts(5), ts(9))));
        assert!(bounds(Some(at(9)), Some(at(5))).is_err());
    }

    #[test]
    fn states_map_to_the_wire_values() {
        let cases = [
            (None, 0),
            (Some(StateArg::Pending), 1),
            (Some(StateArg::Replayed), 2),
            (Some(StateArg::Discarded), 3),
            (Some(StateArg::All), 4),
        ];
        for (state, wire) in cases {
            assert_eq!(state_value(state), wire, "{state:?}");
        }
    }

    #[test]
    fn every_filter_flag_lands_in_its_field() {
        let args = FilterArgs {
            platform: Some("he-portal".into()),
            reason: Some("no-route".into()),
            service: Some("99115005104000".into()),
            destination: Some("he-darmstadt".into()),
            since: Some(at(10)),
            until: Some(at(20)),
            submission_id: Some("s-1".into()),
        };
        let filter = dead_letter_filter(&args, Some(StateArg::Replayed)).unwrap();
        assert_eq!(
            filter,
            api::DeadLetterFilter {
                platform: "he-portal".into(),
                reason: "no-route".into(),
                service: "99115005104000".into(),
                destination: "he-darmstadt".into(),
                since: Some(timestamp(at(10)).unwrap()),
                until: Some(timestamp(at(20)).unwrap()),
                state: api::DeadLetterState::Replayed as i32,
                submission_id: "s-1".into(),
            }
        );
        assert_eq!(
            dead_letter_filter(&FilterArgs::default(), None).unwrap(),
            api::DeadLetterFilter::default()
        );
    }

    #[test]
    fn emptying_everything_takes_all() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let some_filter = api::DeadLetterFilter {
            reason: "no-route".into(),
            ..Default::default()
        };
        let none = api::DeadLetterFilter::default();
        // (ids, filter, --all) → Ok(what is sent) or Err(part of the message)
        type Case = (
            Vec<String>,
            api::DeadLetterFilter,
            bool,
            Result<Selection, &'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                ids(&["a", "b"]),
                none.clone(),
                false,
                Ok(Selection {
                    ids: ids(&["a", "b"]),
                    filter: None,
                    all: false,
                }),
            ),
            (
                vec![],
                some_filter.clone(),
                false,
                Ok(Selection {
                    ids: vec![],
                    filter: Some(some_filter.clone()),
                    all: false,
                }),
            ),
            (
                vec![],
                none.clone(),
                true,
                Ok(Selection {
                    ids: vec![],
                    filter: None,
                    all: true,
                }),
            ),
            (vec![], none.clone(), false, Err("add --all")),
            (vec![], some_filter.clone(), true, Err("leave it out")),
            (ids(&["a"]), some_filter.clone(), false, Err("not both")),
            (ids(&["a"]), some_filter.clone(), true, Err("not both")),
            (ids(&["a"]), none.clone(), true, Err("not both")),
            (ids(&["a", " "]), none.clone(), false, Err("empty")),
            // An empty string is no filter: it must not slip past the guard.
            (
                vec![],
                api::DeadLetterFilter {
                    platform: String::new(),
                    ..Default::default()
                },
                false,
                Err("add --all"),
            ),
        ];
        for (ids, filter, all, expected) in cases {
            let label = format!("{ids:?} {filter:?} all={all}");
            match (selection(ids, filter, all), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{label}"),
                (Err(got), Err(part)) => assert!(got.contains(part), "{label}: {got}"),
                (got, want) => panic!("{label}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn an_update_changes_only_what_is_given() {
        let current = api::Destination {
            id: "he-darmstadt".into(),
            name: "Stadt Darmstadt".into(),
            kind: "kreisfreie-stadt".into(),
            land: "06".into(),
            broker: "he".into(),
            exchange: "ozg.he".into(),
            routing_key: "darmstadt".into(),
            source: api::Source::Store as i32,
            receipt_queue: "receipts".into(),
        };
        let changes = DestinationChanges {
            name: Some("Wissenschaftsstadt Darmstadt".into()),
            routing_key: Some(String::new()),
            ..Default::default()
        };
        let updated = apply_changes(current.clone(), &changes).unwrap();
        assert_eq!(
            updated,
            api::Destination {
                name: "Wissenschaftsstadt Darmstadt".into(),
                routing_key: String::new(),
                source: api::Source::Unspecified as i32,
                ..current.clone()
            }
        );
        let every = DestinationChanges {
            name: Some("n".into()),
            kind: Some("k".into()),
            land: Some("l".into()),
            broker: Some("b".into()),
            exchange: Some("e".into()),
            routing_key: Some("r".into()),
            receipt_queue: Some("q".into()),
        };
        let updated = apply_changes(current.clone(), &every).unwrap();
        let got = [
            &updated.name,
            &updated.kind,
            &updated.land,
            &updated.broker,
            &updated.exchange,
            &updated.routing_key,
            &updated.receipt_queue,
        ];
        assert_eq!(got, ["n", "k", "l", "b", "e", "r", "q"]);
        assert_eq!(updated.id, "he-darmstadt");
        assert!(
            apply_changes(current, &DestinationChanges::default())
                .unwrap_err()
                .contains("nothing to change")
        );
    }
}
