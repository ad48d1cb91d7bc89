//! The overview: the gateway, its platforms and their queues, destinations, broker links
//! and the instances sharing the store.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ozg_gateway::wire::admin as api;
use pbjson_types::Timestamp;

use super::{Table, block, or_dash, rates, sections, time};

/// The store's kind, and what fails while it does not answer.
fn store(o: &api::Overview) -> String {
    if o.store_up {
        return o.store.clone();
    }
    let since = match &o.store_down_since {
        Some(at) => format!(" since {}", time(Some(at))),
        None => String::new(),
    };
    format!(
        "{} NOT ANSWERING{since}: {} (no queue is consumed meanwhile)",
        o.store, o.store_problem
    )
}

pub fn overview(o: &api::Overview) -> String {
    let mut parts = vec![head(o)];
    // A filtered overview leaves out what it did not ask for rather than showing headings
    // over nothing.
    if !o.platforms.is_empty() {
        let (platforms, queues) = platforms(&o.platforms);
        parts.push(platforms);
        parts.push(queues);
    }
    if !o.destinations.is_empty() {
        parts.push(destinations(&o.destinations));
    }
    if !o.brokers.is_empty() {
        parts.push(brokers(&o.brokers));
    }
    if !o.instances.is_empty() {
        parts.push(instances(&o.instances));
    }
    sections(&parts)
}

fn head(o: &api::Overview) -> String {
    block(&[
        ("version", o.version.clone()),
        (
            "started",
            format!(
                "{} (up {})",
                time(o.started_at.as_ref()),
                humantime::format_duration(Duration::from_secs(o.uptime_seconds))
            ),
        ),
        ("store", store(o)),
        ("scope", or_dash(&o.scope).into()),
        ("directory version", o.directory_version.to_string()),
        (
            "dead letters",
            format!("{} pending", o.dead_letters_pending),
        ),
        (
            "consumed/s",
            rates(o.consumed.as_ref()) + "  (1, 5, 15 min)",
        ),
        (
            "rejected/s",
            rates(o.rejected.as_ref()) + "  (1, 5, 15 min)",
        ),
    ])
}

/// The platforms' counters, and their ingress queues as last counted.
fn platforms(list: &[api::PlatformStats]) -> (String, String) {
    let mut platforms = Table::new(&[
        "PLATFORM",
        "LAND",
        "STATE",
        "CONSUMED",
        "FORWARDED",
        "REJECTED",
        "CONSUMED/S",
    ])
    .right(&[3, 4, 5]);
    let mut queues = Table::new(&[
        "PLATFORM",
        "INGRESS QUEUE",
        "READY",
        "IN FLIGHT",
        "CONSUMERS",
        "COUNTED",
    ])
    .right(&[2, 3, 4]);
    let now = SystemTime::now();
    for p in list {
        platforms.row(&[
            &p.platform_id,
            &p.land,
            &p.consumer_state,
            &p.consumed.to_string(),
            &p.forwarded.to_string(),
            &p.rejected.to_string(),
            &rates(p.consumed_rate.as_ref()),
        ]);
        // Unknown until its broker has answered: "-", not a zero that reads as "empty".
        let (ready, consumers, counted) = match &p.queue_counted_at {
            Some(at) => (
                p.queue_ready.to_string(),
                p.queue_consumers.to_string(),
                ago(at, now),
            ),
            None => ("-".into(), "-".into(), "not yet".into()),
        };
        queues.row(&[
            &p.platform_id,
            or_dash(&p.ingress_queue),
            &ready,
            &p.in_flight.to_string(),
            &consumers,
            &counted,
        ]);
    }
    (platforms.render(), queues.render())
}

fn destinations(list: &[api::DestinationStats]) -> String {
    let mut destinations = Table::new(&[
        "DESTINATION",
        "NAME",
        "DELIVERED",
        "FAILED",
        "RETRY BACKLOG",
        "DELIVERED/S",
        "LAST ERROR",
    ])
    .right(&[2, 3, 4]);
    for d in list {
        let last_error = if d.last_error.is_empty() {
            "-".to_owned()
        } else {
            format!("{} {}", time(d.last_error_at.as_ref()), d.last_error)
        };
        destinations.row(&[
            &d.destination_id,
            &d.name,
            &d.delivered.to_string(),
            &d.failed.to_string(),
            &d.retrying.to_string(),
            &rates(d.delivered_rate.as_ref()),
            &last_error,
        ]);
    }
    destinations.render()
}

fn brokers(list: &[api::BrokerLink]) -> String {
    let mut brokers = Table::new(&["BROKER", "ROLE", "CONNECTED", "NODE / LAST ERROR"]);
    for b in list {
        let blocked;
        let (connected, detail) = if b.connected && !b.blocked.is_empty() {
            blocked = format!("{} (blocked: {})", b.node, b.blocked);
            ("yes", &blocked)
        } else if b.connected {
            ("yes", &b.node)
        } else {
            ("no", &b.last_error)
        };
        brokers.row(&[&b.broker, &b.role, connected, detail]);
    }
    brokers.render()
}

/// "12s ago", to the second; "just now" for a time at or after `now` (another clock).
fn ago(at: &Timestamp, now: SystemTime) -> String {
    let Some(then) = u64::try_from(at.seconds)
        .ok()
        .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)))
    else {
        return time(Some(at));
    };
    match now.duration_since(then) {
        Ok(d) if d.as_secs() > 0 => format!(
            "{} ago",
            humantime::format_duration(Duration::from_secs(d.as_secs()))
        ),
        _ => "just now".into(),
    }
}

/// The instances sharing the store; "*" marks the one that answered.
fn instances(list: &[api::Instance]) -> String {
    let mut table = Table::new(&[
        "INSTANCE",
        "HOST",
        "PID",
        "STATE",
        "LAST SEEN",
        "DIRECTORY",
        "CONSUMED",
        "FORWARDED",
        "REJECTED",
        "IN FLIGHT",
    ])
    .right(&[2, 5, 6, 7, 8, 9]);
    for i in list {
        let id = if i.current {
            format!("{} *", i.id)
        } else {
            i.id.clone()
        };
        table.row(&[
            &id,
            &i.host,
            &i.pid.to_string(),
            if i.alive { "running" } else { "gone" },
            &time(i.seen_at.as_ref()),
            &i.directory_version.to_string(),
            &i.consumed.to_string(),
            &i.forwarded.to_string(),
            &i.rejected.to_string(),
            &i.in_flight.to_string(),
        ]);
    }
    table.render()
}
