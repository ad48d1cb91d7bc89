//! How responses look to a person: aligned tables and key-value blocks. Every value from the
//! server passes through [`clean`], because dead-letter headers and error texts come from
//! platforms and brokers and must not be able to move the cursor or recolour a terminal.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ozg_gateway::wire::admin as api;
use pbjson_types::Timestamp;

/// Control characters (newlines, escapes, C1) shown escaped, so one value stays one cell.
pub fn clean(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// Which columns a table keeps whole (none wraps) and at what width, for a table at most
/// `width` wide: the first column (it names the row: an id to copy) and the numbers, best
/// under unbroken header words, while every other column keeps ten characters; in a
/// narrower terminal without the header words; narrower still, the first column alone
/// while the others keep four; else none. Widths are without padding.
fn kept_whole(
    widest: &[usize],
    header_words: &[usize],
    numbers: &[usize],
    paddings: &[usize],
    width: Option<usize>,
) -> Vec<Option<usize>> {
    let columns = paddings.len();
    let widest = |i: usize| widest.get(i).copied().unwrap_or(0);
    let word = |i: usize| header_words.get(i).copied().unwrap_or(0);
    let whole = |i: usize| i == 0 || numbers.contains(&i);
    // (the width kept whole, or None; the least a wrapped column keeps)
    type Level<'a> = (&'a dyn Fn(usize) -> Option<usize>, usize);
    let levels: [Level; 3] = [
        (&|i| whole(i).then(|| widest(i).max(word(i))), 10),
        (&|i| whole(i).then(|| widest(i)), 10),
        (&|i| (i == 0).then(|| widest(i)), 4),
    ];
    for (keep, least) in levels {
        let needed: usize = (0..columns)
            .map(|i| paddings[i] + keep(i).unwrap_or_else(|| widest(i).min(least)))
            .sum();
        if width.is_none_or(|width| needed <= width) {
            return (0..columns).map(keep).collect();
        }
    }
    vec![None; columns]
}

/// How wide a table may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// At most this many columns: cells wrap to fit.
    Columns(u16),
    /// The terminal's width when stdout is one; unlimited otherwise (a pipe or a file).
    Terminal,
    /// Every cell on one line, however wide.
    Unlimited,
}

impl Width {
    /// `COLUMNS` when it holds a width (so `COLUMNS=80 … | less` and scripts can ask for
    /// one), else the terminal's; into a pipe or a file, whole lines for `grep` and `awk`.
    pub fn from_environment() -> Width {
        let columns = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.trim().parse::<u16>().ok())
            .filter(|c| *c > 0);
        match columns {
            Some(columns) => Width::Columns(columns),
            None if std::io::stdout().is_terminal() => Width::Terminal,
            None => Width::Unlimited,
        }
    }
}

/// Columns two spaces apart, numbers right-aligned where asked, no borders. When the table
/// would be wider than [`Width`] allows, the cells of text columns wrap (at spaces where they
/// can); the first column and the numbers stay whole.
pub struct Table {
    table: comfy_table::Table,
    right: Vec<usize>,
    /// The widest cell of each column below the header.
    widest: Vec<usize>,
    /// The longest word of each column's header.
    header_words: Vec<usize>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        let mut table = comfy_table::Table::new();
        table
            .load_style(comfy_table::presets::NOTHING)
            .set_header(headers.iter().map(|h| clean(h)).collect::<Vec<_>>());
        Table {
            table,
            right: Vec::new(),
            widest: vec![0; headers.len()],
            header_words: headers
                .iter()
                .map(|h| h.split(' ').map(|w| w.chars().count()).max().unwrap_or(0))
                .collect(),
        }
    }

    /// Numbers read best right-aligned.
    pub fn right(mut self, columns: &[usize]) -> Self {
        self.right = columns.to_vec();
        self
    }

    pub fn row(&mut self, cells: &[&str]) {
        let cells: Vec<String> = cells.iter().map(|c| clean(c)).collect();
        for (i, cell) in cells.iter().enumerate() {
            let width = cell.chars().count();
            match self.widest.get_mut(i) {
                Some(widest) => *widest = (*widest).max(width),
                None => self.widest.push(width),
            }
        }
        self.table.add_row(cells);
    }

    /// As wide as `COLUMNS` or the terminal allow.
    pub fn render(self) -> String {
        self.render_within(Width::from_environment())
    }

    pub fn render_within(mut self, width: Width) -> String {
        use comfy_table::{CellAlignment, ColumnConstraint, ContentArrangement};
        match width {
            Width::Columns(columns) => {
                self.table
                    .set_width(columns)
                    .set_content_arrangement(ContentArrangement::Dynamic);
            }
            Width::Terminal => {
                self.table
                    .set_content_arrangement(ContentArrangement::Dynamic);
            }
            Width::Unlimited => {
                self.table.force_no_tty();
            }
        }
        let columns = self.table.column_count();
        let padding = |i: usize| -> u16 { if i + 1 == columns { 0 } else { 2 } };
        let paddings: Vec<usize> = (0..columns).map(|i| usize::from(padding(i))).collect();
        let whole = kept_whole(
            &self.widest,
            &self.header_words,
            &self.right,
            &paddings,
            self.table.width().map(usize::from),
        );
        // comfy-table counts a column's padding in its bounds.
        let lower: Vec<Option<u16>> =
            (0..columns)
                .map(|i| {
                    whole.get(i).copied().flatten().map(|w| {
                        u16::try_from(w).map_or(u16::MAX, |w| w.saturating_add(padding(i)))
                    })
                })
                .collect();
        for (i, column) in self.table.column_iter_mut().enumerate() {
            column.set_padding((0, padding(i)));
            if self.right.contains(&i) {
                column.set_cell_alignment(CellAlignment::Right);
            }
            if let Some(Some(lower)) = lower.get(i) {
                column.set_constraint(ColumnConstraint::LowerBoundary(comfy_table::Width::Fixed(
                    *lower,
                )));
            }
        }
        let mut out = String::new();
        for line in self.table.lines() {
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key  value` lines with the values in one column.
pub fn block(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let line = format!("{key:<width$}  {}", clean(value));
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// RFC 3339 in UTC to the second; "-" for none. A value humantime cannot show (before 1970,
/// after 9999) is given in raw seconds rather than failing the whole output.
pub fn time(at: Option<&Timestamp>) -> String {
    let Some(at) = at else {
        return "-".into();
    };
    let shown = u64::try_from(at.seconds)
        .ok()
        .filter(|s| *s < 253_402_300_800)
        .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)));
    match shown {
        Some(t) => humantime::format_rfc3339_seconds(t).to_string(),
        None => format!("{}s since 1970", at.seconds),
    }
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

fn rates(rates: Option<&api::Rates>) -> String {
    rates.map_or_else(
        || "-".into(),
        |r| format!("{:.2} {:.2} {:.2}", r.m1, r.m5, r.m15),
    )
}

pub fn source(value: i32) -> &'static str {
    match api::Source::try_from(value) {
        Ok(api::Source::Config) => "config",
        Ok(api::Source::Store) => "store",
        _ => "-",
    }
}

pub fn state(value: i32) -> String {
    match api::DeadLetterState::try_from(value) {
        Ok(api::DeadLetterState::Pending) => "pending".into(),
        Ok(api::DeadLetterState::Replayed) => "replayed".into(),
        Ok(api::DeadLetterState::Discarded) => "discarded".into(),
        _ => format!("state {value}"),
    }
}

/// Blocks and tables separated by one empty line.
fn sections(parts: &[String]) -> String {
    parts.join("\n")
}

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
    let head = block(&[
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
    ]);
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
    for p in &o.platforms {
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
    for d in &o.destinations {
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
    let mut brokers = Table::new(&["BROKER", "ROLE", "CONNECTED", "NODE / LAST ERROR"]);
    for b in &o.brokers {
        let (connected, detail) = if b.connected {
            ("yes", &b.node)
        } else {
            ("no", &b.last_error)
        };
        brokers.row(&[&b.broker, &b.role, connected, detail]);
    }
    let mut parts = vec![head];
    // A filtered overview leaves out what it did not ask for rather than showing headings
    // over nothing.
    if !o.platforms.is_empty() {
        parts.push(platforms.render());
        parts.push(queues.render());
    }
    if !o.destinations.is_empty() {
        parts.push(destinations.render());
    }
    if !o.brokers.is_empty() {
        parts.push(brokers.render());
    }
    if !o.instances.is_empty() {
        parts.push(instances(&o.instances));
    }
    sections(&parts)
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

pub fn destinations(list: &[api::Destination]) -> String {
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "KIND",
        "LAND",
        "BROKER",
        "EXCHANGE",
        "ROUTING KEY",
        "SOURCE",
    ]);
    for d in list {
        table.row(&[
            &d.id,
            &d.name,
            &d.kind,
            &d.land,
            &d.broker,
            or_dash(&d.exchange),
            or_dash(&d.routing_key),
            source(d.source),
        ]);
    }
    table.render()
}

pub fn destination(d: &api::Destination) -> String {
    block(&[
        ("id", d.id.clone()),
        ("name", d.name.clone()),
        ("kind", d.kind.clone()),
        ("land", d.land.clone()),
        ("broker", d.broker.clone()),
        ("exchange", or_dash(&d.exchange).into()),
        ("routing key", or_dash(&d.routing_key).into()),
        ("source", source(d.source).into()),
    ])
}

pub fn routes(list: &[api::Route]) -> String {
    let mut table = Table::new(&[
        "SERVICE",
        "REGION",
        "DESTINATION",
        "SOURCE",
        "SERVICE NAME",
        "REGION NAME",
        "DESTINATION NAME",
    ]);
    for r in list {
        table.row(&[
            &r.service,
            &r.region,
            &r.destination,
            source(r.source),
            or_dash(&r.service_name),
            or_dash(&r.region_name),
            or_dash(&r.destination_name),
        ]);
    }
    table.render()
}

pub fn route(r: &api::Route) -> String {
    block(&[
        ("service", named(&r.service, &r.service_name)),
        ("region", named(&r.region, &r.region_name)),
        ("destination", named(&r.destination, &r.destination_name)),
        ("source", source(r.source).into()),
    ])
}

fn named(key: &str, name: &str) -> String {
    if name.is_empty() {
        key.to_owned()
    } else {
        format!("{key} ({name})")
    }
}

pub fn services(list: &[api::Service]) -> String {
    let mut table = Table::new(&["KEY", "NAME", "SOURCE"]);
    for s in list {
        table.row(&[&s.key, &s.name, source(s.source)]);
    }
    table.render()
}

pub fn service(s: &api::Service) -> String {
    block(&[
        ("key", s.key.clone()),
        ("name", s.name.clone()),
        ("source", source(s.source).into()),
    ])
}

pub fn audit(entries: &[api::AuditEntry]) -> String {
    let mut table = Table::new(&[
        "ID", "AT", "ACTOR", "SCOPE", "ACTION", "OBJECT", "BEFORE", "AFTER",
    ])
    .right(&[0]);
    for e in entries {
        table.row(&[
            &e.id.to_string(),
            &time(e.at.as_ref()),
            &e.actor,
            or_dash(&e.actor_scope),
            &e.action,
            &e.object,
            or_dash(&e.before),
            or_dash(&e.after),
        ]);
    }
    table.render()
}

pub fn resolution(r: &api::ResolveResponse) -> String {
    let head = block(&[
        ("service", named(&r.service, &r.service_name)),
        ("region", named(&r.ars, &r.region_name)),
    ]);
    let mut steps = Table::new(&["SERVICE", "REGION", "LEVEL", "UNIT", "MATCHED"]);
    for s in &r.steps {
        steps.row(&[
            &s.service,
            &s.region,
            &s.level,
            or_dash(&s.unit_name),
            if s.matched { "yes" } else { "no" },
        ]);
    }
    let verdict = match r.destination.as_ref().filter(|d| !d.id.is_empty()) {
        Some(d) => format!(
            "→ {} ({}, {}) by rule {}\n",
            clean(&d.id),
            clean(&d.name),
            clean(&d.kind),
            clean(&r.matched_rule)
        ),
        None => "→ no route: a submission would be dead-lettered with reason no-route\n".into(),
    };
    sections(&[head, steps.render() + &verdict])
}

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

/// " (scope: Land 06 HE)": what a bulk change or a listing was limited to.
pub fn within(scope: &str) -> String {
    if scope.is_empty() {
        String::new()
    } else {
        format!(" (scope: {})", clean(scope))
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_line_ends() {
        // (headers, right-aligned columns, rows, rendered)
        type Case = (
            &'static [&'static str],
            &'static [usize],
            &'static [&'static [&'static str]],
            &'static str,
        );
        let cases: &[Case] = &[
            (&["A", "B"], &[], &[], "A  B\n"),
            (
                &["ID", "NAME", "N"],
                &[2],
                &[&["a", "Darmstadt", "7"], &["long-id", "", "1234"]],
                "ID       NAME          N\n\
                 a        Darmstadt     7\n\
                 long-id             1234\n",
            ),
            // Width counts characters, not bytes.
            (
                &["ORT", "X"],
                &[],
                &[&["Gießen", "1"], &["Fulda", "2"]],
                "ORT     X\nGießen  1\nFulda   2\n",
            ),
            // A newline or an escape from the server stays inside its cell.
            (
                &["K", "V"],
                &[],
                &[&["a\nb", "\u{1b}[31mred"]],
                "K     V\na\\nb  \\u{1b}[31mred\n",
            ),
        ];
        for (headers, right, rows, expected) in cases {
            let mut table = Table::new(headers).right(right);
            for row in *rows {
                table.row(row);
            }
            assert_eq!(
                table.render_within(Width::Unlimited),
                *expected,
                "{headers:?}"
            );
        }
    }

    #[test]
    fn a_narrow_width_wraps_text_and_keeps_numbers_whole() {
        let table = || {
            let mut table =
                Table::new(&["DESTINATION", "NAME", "DELIVERED", "LAST ERROR"]).right(&[2]);
            table.row(&[
                "he-darmstadt",
                "Wissenschaftsstadt Darmstadt, Bürgeramt",
                "1234567",
                "2025-06-15T15:06:40Z connection refused by broker he",
            ]);
            table
        };
        for columns in [40, 60] {
            let shown = table().render_within(Width::Columns(columns));
            for line in shown.lines() {
                assert!(
                    line.chars().count() <= usize::from(columns),
                    "{columns}: {line:?} in\n{shown}"
                );
            }
            for whole in ["he-darmstadt", "1234567"] {
                assert!(shown.contains(whole), "{columns}: {whole} in\n{shown}");
            }
        }
        let shown = table().render_within(Width::Columns(60));
        for word in ["Bürgeramt", "refused"] {
            assert!(shown.contains(word), "{word} in\n{shown}");
        }
        // Without a limit every row stays on one line.
        assert_eq!(table().render_within(Width::Unlimited).lines().count(), 2);
    }

    #[test]
    fn what_is_kept_whole_depends_on_the_width() {
        // ID (12 wide), NAME (38), DELIVERED (a 1-digit number under a 9-letter header),
        // LAST ERROR (1): paddings 2, 2, 2, 0.
        let widest = [12, 38, 1, 1];
        let words = [11, 4, 9, 5];
        let paddings = [2, 2, 2, 0];
        // (width, kept whole)
        let cases: [(Option<usize>, [Option<usize>; 4]); 6] = [
            (None, [Some(12), None, Some(9), None]),
            (Some(200), [Some(12), None, Some(9), None]),
            (Some(38), [Some(12), None, Some(9), None]),
            (Some(37), [Some(12), None, Some(1), None]),
            (Some(24), [Some(12), None, None, None]),
            (Some(23), [None, None, None, None]),
        ];
        for (width, want) in cases {
            assert_eq!(
                kept_whole(&widest, &words, &[2], &paddings, width),
                want,
                "{width:?}"
            );
        }
    }

    #[test]
    fn blocks_align_values() {
        let shown = block(&[
            ("id", "x".into()),
            ("routing key", "".into()),
            ("detail", "two\nlines".into()),
        ]);
        assert_eq!(
            shown,
            "id           x\nrouting key\ndetail       two\\nlines\n"
        );
    }

    #[test]
    fn times_are_rfc3339_utc_seconds() {
        let ts = |seconds, nanos| Timestamp { seconds, nanos };
        let cases = [
            (None, "-"),
            (Some(ts(0, 0)), "1970-01-01T00:00:00Z"),
            (Some(ts(1_750_000_000, 999_999_999)), "2025-06-15T15:06:40Z"),
            (Some(ts(-1, 0)), "-1s since 1970"),
            (Some(ts(253_402_300_800, 0)), "253402300800s since 1970"),
            (Some(ts(i64::MAX, 0)), "9223372036854775807s since 1970"),
        ];
        for (at, expected) in cases {
            assert_eq!(time(at.as_ref()), expected, "{at:?}");
        }
    }

    #[test]
    fn enums_read_as_words() {
        assert_eq!(source(1), "config");
        assert_eq!(source(2), "store");
        assert_eq!(source(0), "-");
        assert_eq!(source(99), "-");
        assert_eq!(state(1), "pending");
        assert_eq!(state(2), "replayed");
        assert_eq!(state(3), "discarded");
        assert_eq!(state(7), "state 7");
    }

    #[test]
    fn a_resolution_without_destination_says_no_route() {
        let r = api::ResolveResponse {
            service: "99115005104000".into(),
            ars: "064110000000".into(),
            region_name: "Darmstadt".into(),
            steps: vec![api::ResolveStep {
                service: "*".into(),
                region: "06".into(),
                level: "Land".into(),
                unit_name: "Hessen".into(),
                matched: false,
            }],
            ..Default::default()
        };
        let shown = resolution(&r);
        assert!(
            shown.contains("region   064110000000 (Darmstadt)"),
            "{shown}"
        );
        assert!(
            shown.contains("*        06      Land   Hessen  no"),
            "{shown}"
        );
        assert!(
            shown.ends_with(
                "→ no route: a submission would be dead-lettered with reason no-route\n"
            )
        );
        let matched = api::ResolveResponse {
            destination: Some(api::Destination {
                id: "he-darmstadt".into(),
                name: "Stadt Darmstadt".into(),
                kind: "kreisfreie-stadt".into(),
                ..Default::default()
            }),
            matched_rule: "service * region 06411".into(),
            ..r
        };
        assert!(resolution(&matched).ends_with(
            "→ he-darmstadt (Stadt Darmstadt, kreisfreie-stadt) by rule service * region 06411\n"
        ));
    }

    #[test]
    fn events_are_one_line_and_report_missed_ones() {
        let e = api::RoutingEvent {
            at: Some(Timestamp {
                seconds: 1_750_000_000,
                nanos: 0,
            }),
            submission_id: "s-1".into(),
            platform: "he-portal".into(),
            destination: String::new(),
            outcome: "dead-lettered".into(),
            reason: "no-route".into(),
            missed: 0,
            lagged: false,
        };
        assert_eq!(
            event(&e),
            "2025-06-15T15:06:40Z dead-lettered s-1 he-portal → - no-route"
        );
        let missed = event(&api::RoutingEvent {
            missed: 3,
            lagged: true,
            ..e.clone()
        });
        assert!(missed.starts_with("… 3 events missed"), "{missed}");
        assert_eq!(missed.lines().count(), 2);
        // A token limited to some Länder learns that it lagged, not how much.
        let lagged = event(&api::RoutingEvent { lagged: true, ..e });
        assert!(lagged.starts_with("… events missed"), "{lagged}");
        assert_eq!(lagged.lines().count(), 2);
    }
}
