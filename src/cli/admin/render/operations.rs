//! Operations: ingress state, traces, overdue submissions and the live tail.

use std::fmt::Write as _;

use ozg_gateway::wire::admin as api;

use super::{Table, clean, or_dash, time};

pub fn ingress(s: &api::IngressState) -> String {
    format!(
        "{}: {} ({})\n",
        clean(&s.platform_id),
        if s.paused { "paused" } else { "not paused" },
        clean(or_dash(&s.consumer_state))
    )
}

pub fn trace(t: &api::SubmissionTrace) -> String {
    let mut table = Table::new(&["AT", "EVENT", "PLATFORM", "DESTINATION", "DETAIL"]);
    for e in &t.events {
        table.row(&[
            &time(e.at.as_ref()),
            &e.event,
            or_dash(&e.platform),
            or_dash(&e.destination),
            or_dash(&e.detail),
        ]);
    }
    format!(
        "submission {}\n\n{}",
        clean(&t.submission_id),
        table.render()
    )
}

pub fn overdue(list: &api::ListOverdueResponse) -> String {
    let mut table = Table::new(&[
        "SUBMISSION",
        "PLATFORM",
        "DESTINATION",
        "DELIVERED",
        "PLATFORM TOLD",
    ]);
    for s in &list.submissions {
        table.row(&[
            &s.submission_id,
            &s.platform,
            &s.destination,
            &time(s.delivered_at.as_ref()),
            &time(s.reported_at.as_ref()),
        ]);
    }
    table.render()
}

/// One line per event, fields in a fixed order so that `grep`/`awk` work on a live tail.
pub fn event(e: &api::RoutingEvent) -> String {
    let mut line = String::new();
    if e.missed > 0 {
        let _ = writeln!(line, "… {} events missed (reading too slowly)", e.missed);
    } else if e.lagged {
        let _ = writeln!(line, "… events missed (reading too slowly)");
    }
    let _ = write!(
        line,
        "{} {} {} {} → {}",
        time(e.at.as_ref()),
        clean(&e.outcome),
        clean(&e.submission_id),
        clean(or_dash(&e.platform)),
        clean(or_dash(&e.destination)),
    );
    if !e.reason.is_empty() {
        let _ = write!(line, " {}", clean(&e.reason));
    }
    line
}
