//! Dead letters: lists, details, replays and discards, summaries and replay outcomes.

use std::fmt::Write as _;

use ozg_gateway::wire::admin as api;

use super::{Table, block, clean, or_dash, sections, state, time, within};

pub fn dead_letters(list: &[api::DeadLetter]) -> String {
    let mut table = Table::new(&[
        "ID",
        "SUBMISSION",
        "DEAD-LETTERED",
        "PLATFORM",
        "REASON",
        "SERVICE",
        "ARS",
        "DESTINATION",
        "STATE",
        "BYTES",
    ])
    .right(&[9]);
    for d in list {
        table.row(&[
            &d.id,
            &d.submission_id,
            &time(d.dead_lettered_at.as_ref()),
            &d.platform,
            &d.reason,
            or_dash(&d.service),
            or_dash(&d.ars),
            or_dash(&d.destination),
            &state(d.state),
            &d.body_bytes.to_string(),
        ]);
    }
    table.render()
}

pub fn dead_letter(d: &api::DeadLetter) -> String {
    let changed = if d.state_changed_by.is_empty() {
        time(d.state_changed_at.as_ref())
    } else {
        format!(
            "{} by {}",
            time(d.state_changed_at.as_ref()),
            d.state_changed_by
        )
    };
    let mut pairs = vec![
        ("id", d.id.clone()),
        ("submission", d.submission_id.clone()),
        ("platform", d.platform.clone()),
        ("reason", d.reason.clone()),
        ("field", or_dash(&d.field).into()),
        ("detail", or_dash(&d.detail).into()),
        ("service", or_dash(&d.service).into()),
        ("ars", or_dash(&d.ars).into()),
        ("destination", or_dash(&d.destination).into()),
        ("dead-lettered", time(d.dead_lettered_at.as_ref())),
        ("content type", d.content_type.clone()),
        ("body bytes", d.body_bytes.to_string()),
        ("state", state(d.state)),
        ("state changed", changed),
        ("replays", d.replays.to_string()),
    ];
    let mut headers: Vec<_> = d.headers.iter().collect();
    headers.sort();
    let headers: Vec<(String, String)> = headers
        .into_iter()
        .map(|(k, v)| (format!("header {}", clean(k)), v.clone()))
        .collect();
    pairs.extend(headers.iter().map(|(k, v)| (k.as_str(), v.clone())));
    block(&pairs)
}

/// How many ids a dry run shows; `--json` has them all.
const SAMPLE_IDS: usize = 10;

pub fn replayed(r: &api::ReplayDeadLettersResponse) -> String {
    let mut out = if r.dry_run {
        format!(
            "would replay {}{}{} (dry run: nothing sent)\n",
            r.replayed,
            of_matched(r.replayed, r.matched),
            within(&r.scope)
        )
    } else {
        format!("replayed {}{}\n", r.replayed, within(&r.scope))
    };
    if r.dry_run {
        out += &sample(&r.ids);
    }
    if !r.skipped.is_empty() {
        let _ = writeln!(
            out,
            "skipped (not pending, or a refused receipt): {}",
            clean(&r.skipped.join(", "))
        );
    }
    out
}

pub fn discarded(d: &api::DiscardDeadLettersResponse) -> String {
    if !d.dry_run {
        return format!("discarded {}{}\n", d.discarded, within(&d.scope));
    }
    format!(
        "would discard {}{}{} (dry run: nothing changed)\n{}",
        d.discarded,
        of_matched(d.discarded, d.matched),
        within(&d.scope),
        sample(&d.ids)
    )
}

/// " of 25000 matching" when one call takes fewer than match.
fn of_matched(taken: u32, matched: u64) -> String {
    if matched > u64::from(taken) {
        format!(" of {matched} matching")
    } else {
        String::new()
    }
}

/// The first ids, one a line, and how many more there are.
fn sample(ids: &[String]) -> String {
    let mut out = String::new();
    for id in ids.iter().take(SAMPLE_IDS) {
        let _ = writeln!(out, "  {}", clean(id));
    }
    if ids.len() > SAMPLE_IDS {
        let _ = writeln!(out, "  … and {} more", ids.len() - SAMPLE_IDS);
    }
    out
}

pub fn summary(s: &api::DeadLetterSummary) -> String {
    let group = |title: &str, counts: &[api::DeadLetterCount]| {
        let mut table = Table::new(&[title, "COUNT"]).right(&[1]);
        for c in counts {
            table.row(&[or_dash(&c.key), &c.count.to_string()]);
        }
        table.render()
    };
    sections(&[
        format!("{} dead letter(s){}\n", s.total, within(&s.scope)),
        group("REASON", &s.by_reason),
        group("PLATFORM", &s.by_platform),
        group("DESTINATION", &s.by_destination),
    ])
}

fn outcome_word(outcome: i32) -> &'static str {
    use api::ReplayOutcomeKind as Kind;
    match Kind::try_from(outcome) {
        Ok(Kind::NotReplayed) => "not replayed",
        Ok(Kind::Discarded) => "discarded",
        Ok(Kind::Waiting) => "waiting",
        Ok(Kind::Delivered) => "delivered",
        Ok(Kind::Duplicate) => "duplicate",
        Ok(Kind::Retrying) => "retrying",
        Ok(Kind::DeadLettered) => "dead-lettered",
        Ok(Kind::Unspecified) | Err(_) => "?",
    }
}

pub fn outcomes(r: &api::GetReplayOutcomesResponse) -> String {
    let mut table = Table::new(&[
        "ID",
        "SUBMISSION",
        "OUTCOME",
        "AT",
        "DESTINATION",
        "REASON",
        "NEW DEAD LETTER",
        "DETAIL",
    ]);
    for o in &r.outcomes {
        table.row(&[
            &o.id,
            or_dash(&o.submission_id),
            outcome_word(o.outcome),
            &time(o.at.as_ref()),
            or_dash(&o.destination),
            or_dash(&o.reason),
            or_dash(&o.dead_letter_id),
            or_dash(&o.detail),
        ]);
    }
    table.render()
}

/// "2 delivered, 1 dead-lettered; 0 still pending".
pub fn outcome_tally(outcomes: &[api::ReplayOutcome]) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for o in outcomes {
        *counts.entry(outcome_word(o.outcome)).or_default() += 1;
    }
    let open = outcomes.iter().filter(|o| !o.settled).count();
    let words: Vec<String> = counts.iter().map(|(w, n)| format!("{n} {w}")).collect();
    format!("{}; {open} not settled yet", words.join(", "))
}
