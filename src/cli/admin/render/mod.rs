//! How responses look to a person: aligned tables and key-value blocks. Every value from the
//! server passes through [`clean`], because dead-letter headers and error texts come from
//! platforms and brokers and must not be able to move the cursor or recolour a terminal.

mod dead_letters;
mod directory;
mod operations;
mod overview;

use std::io::IsTerminal;
use std::time::{Duration, UNIX_EPOCH};

use ozg_gateway::wire::admin as api;
use pbjson_types::Timestamp;

pub use dead_letters::{
    dead_letter, dead_letters, discarded, outcome_tally, outcomes, replayed, summary,
};
pub use directory::{
    audit, destination, destinations, resolution, route, routes, service, services,
};
pub use operations::{event, ingress, overdue, trace};
pub use overview::overview;

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
enum Width {
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
    fn from_environment() -> Width {
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

    fn render_within(mut self, width: Width) -> String {
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

/// " (scope: Land 06 HE)": what a bulk change or a listing was limited to.
pub fn within(scope: &str) -> String {
    if scope.is_empty() {
        String::new()
    } else {
        format!(" (scope: {})", clean(scope))
    }
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
