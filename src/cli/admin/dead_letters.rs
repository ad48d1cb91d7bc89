//! The dead-letter commands: list, inspect, payload, summary, replay, discard, outcomes.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use ozg_gateway::wire::admin as api;
use ozg_gateway::wire::admin::dead_letter_service_client::DeadLetterServiceClient;

use super::connect::Failure;
use super::request::{self, FilterArgs, StateArg};
use super::{Api, Authed, Output, Page, print, render};

#[derive(Subcommand)]
pub(super) enum DeadLettersCommand {
    /// Dead letters matching the filters, oldest first (pending ones unless --state).
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Which state; default pending.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        #[command(flatten)]
        page: Page,
        /// Follow next-page tokens to the end.
        #[arg(long, conflicts_with = "page_token")]
        all_pages: bool,
    },
    /// One dead letter's metadata and headers (not its content).
    #[command(visible_alias = "show")]
    Get { id: String },
    /// Write a dead letter's content to --out, or to stdout when that is not a terminal.
    /// Needs the payload right; every read is audited with the justification.
    Payload {
        id: String,
        /// Why you need to see it (goes into the audit log).
        #[arg(long)]
        justification: String,
        /// Write here (created readable by you only).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// How many dead letters there are, by reason, platform and destination (pending ones
    /// unless --state).
    Summary {
        #[command(flatten)]
        filter: FilterArgs,
        /// Which state; default pending.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
    },
    /// Send dead letters through the normal path again (deduplication included): the given
    /// ids, the pending ones matching the filters, or with --all every pending one; then
    /// show what became of each.
    ///
    /// A selection by filter or --all is counted first and needs a confirmation: answer the
    /// prompt, or give --yes or --expect N. The replay is refused, and nothing is sent, when
    /// the selection no longer holds the number confirmed.
    Replay {
        #[command(flatten)]
        select: Select,
        /// Deliver to this destination instead of the freshly resolved route.
        #[arg(long, value_name = "DESTINATION")]
        to: Option<String>,
        #[command(flatten)]
        confirm: Confirm,
        /// Wait up to this long (e.g. 30s) for every replayed letter to be delivered or
        /// dead-lettered again, then show the outcomes; without it they are shown at once.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "dry_run")]
        wait: Option<Duration>,
    },
    /// Mark dead letters discarded: the given ids, the pending ones matching the filters, or
    /// with --all every pending one.
    ///
    /// A selection by filter or --all is counted first and needs a confirmation: answer the
    /// prompt, or give --yes or --expect N.
    Discard {
        #[command(flatten)]
        select: Select,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// What became of replayed dead letters: delivered (where), dead-lettered again (the new
    /// letter and its reason), still retrying or waiting.
    Outcomes {
        /// Dead-letter ids (as `replay` printed them).
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Args)]
pub(super) struct Confirm {
    /// Only count the dead letters that would be touched and show some of their ids; touch
    /// none.
    #[arg(long, conflicts_with_all = ["yes", "expect"])]
    dry_run: bool,
    /// Go ahead without asking.
    #[arg(long, short = 'y', conflicts_with = "expect")]
    yes: bool,
    /// Go ahead only if exactly N dead letters are selected (the count a --dry-run showed);
    /// otherwise nothing is done.
    #[arg(long, value_name = "N")]
    expect: Option<u32>,
}

#[derive(Args)]
pub(super) struct Select {
    /// Dead-letter ids (not submission ids).
    ids: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Every pending dead letter; needed when neither ids nor filters are given.
    #[arg(long)]
    all: bool,
}

pub(super) async fn run(
    api: &Api,
    out: &Output,
    command: DeadLettersCommand,
) -> Result<(), Failure> {
    let mut client = api.dead_letters();
    match command {
        DeadLettersCommand::List {
            filter,
            state,
            page,
            all_pages,
        } => {
            let request = api::ListDeadLettersRequest {
                filter: Some(request::dead_letter_filter(&filter, state).map_err(Failure::Usage)?),
                page_size: page.limit.unwrap_or(0),
                page_token: page.page_token.unwrap_or_default(),
            };
            list_dead_letters(api, out, &mut client, request, all_pages).await
        }
        DeadLettersCommand::Get { id } => {
            let request = api.unary(api::GetDeadLetterRequest { id });
            let letter = client.get_dead_letter(request).await?.into_inner();
            out.show(&letter, render::dead_letter)
        }
        DeadLettersCommand::Payload {
            id,
            justification,
            out: file,
        } => payload(api, out, &mut client, id, justification, file).await,
        DeadLettersCommand::Summary { filter, state } => {
            let request = api.unary(api::SummarizeDeadLettersRequest {
                filter: Some(request::dead_letter_filter(&filter, state).map_err(Failure::Usage)?),
            });
            let summary = client.summarize_dead_letters(request).await?.into_inner();
            out.show(&summary, render::summary)
        }
        DeadLettersCommand::Replay {
            select,
            to,
            confirm,
            wait,
        } => replay(api, out, &mut client, select, to, confirm, wait).await,
        DeadLettersCommand::Discard { select, confirm } => {
            discard(api, out, &mut client, select, confirm).await
        }
        DeadLettersCommand::Outcomes { ids } => outcomes(api, out, &mut client, &ids, None).await,
    }
}

/// Writes one letter's content where the operator asked; the server audits the read.
async fn payload(
    api: &Api,
    out: &Output,
    client: &mut DeadLetterServiceClient<Authed>,
    id: String,
    justification: String,
    file: Option<PathBuf>,
) -> Result<(), Failure> {
    if justification.trim().is_empty() {
        return Err(Failure::Usage("--justification must say why".into()));
    }
    // Decided before asking: every read is audited, so a refused dump should not
    // leave a trace of a read nobody saw.
    if file.is_none() && std::io::stdout().is_terminal() {
        return Err(Failure::Usage(
            "not writing a payload to a terminal: give --out FILE or redirect stdout".into(),
        ));
    }
    let request = api.unary(api::GetDeadLetterPayloadRequest { id, justification });
    let payload = client.get_dead_letter_payload(request).await?.into_inner();
    write_payload(&payload, out.json, file.as_deref())
}

async fn replay(
    api: &Api,
    out: &Output,
    client: &mut DeadLetterServiceClient<Authed>,
    select: Select,
    to: Option<String>,
    confirm: Confirm,
    wait: Option<Duration>,
) -> Result<(), Failure> {
    let by_filter = select.ids.is_empty();
    let selection = select_letters(select)?;
    let request = api::ReplayDeadLettersRequest {
        ids: selection.ids,
        filter: selection.filter,
        destination: to.unwrap_or_default(),
        all: selection.all,
        dry_run: true,
        expected_count: None,
    };
    match confirmed(api, out, client, request, by_filter, confirm).await? {
        Some(replayed) => outcomes(api, out, client, &replayed.ids, wait).await,
        None => Ok(()),
    }
}

async fn discard(
    api: &Api,
    out: &Output,
    client: &mut DeadLetterServiceClient<Authed>,
    select: Select,
    confirm: Confirm,
) -> Result<(), Failure> {
    let by_filter = select.ids.is_empty();
    let selection = select_letters(select)?;
    let request = api::DiscardDeadLettersRequest {
        ids: selection.ids,
        filter: selection.filter,
        all: selection.all,
        dry_run: true,
        expected_count: None,
    };
    confirmed(api, out, client, request, by_filter, confirm).await?;
    Ok(())
}

/// A replay or a discard: asked once as a dry run to be counted, then for real.
trait Bulk: Clone {
    type Answer: serde::Serialize;
    const ACTION: &'static str;
    fn commit(&mut self, dry_run: bool, expected_count: Option<u32>);
    async fn send(
        self,
        api: &Api,
        client: &mut DeadLetterServiceClient<Authed>,
    ) -> Result<Self::Answer, Failure>;
    /// (letters to act on, letters matching, scope), as `confirmation` wants them.
    fn counted(answer: &Self::Answer) -> (u32, u64, String);
    fn render(answer: &Self::Answer) -> String;
}

/// `Bulk` for a request whose answer counts the letters acted on in `$counted`; the two
/// differ only in their names.
macro_rules! bulk {
    ($request:ident => $answer:ident, $action:literal, $call:ident, $counted:ident) => {
        impl Bulk for api::$request {
            type Answer = api::$answer;
            const ACTION: &'static str = $action;
            fn commit(&mut self, dry_run: bool, expected_count: Option<u32>) {
                (self.dry_run, self.expected_count) = (dry_run, expected_count);
            }
            async fn send(
                self,
                api: &Api,
                client: &mut DeadLetterServiceClient<Authed>,
            ) -> Result<Self::Answer, Failure> {
                let request = api.unary(self);
                Ok(client.$call(request).await?.into_inner())
            }
            fn counted(d: &Self::Answer) -> (u32, u64, String) {
                (d.$counted, d.matched, d.scope.clone())
            }
            fn render(d: &Self::Answer) -> String {
                render::$counted(d)
            }
        }
    };
}

bulk!(
    ReplayDeadLettersRequest => ReplayDeadLettersResponse,
    "replay",
    replay_dead_letters,
    replayed
);
bulk!(
    DiscardDeadLettersRequest => DiscardDeadLettersResponse,
    "discard",
    discard_dead_letters,
    discarded
);

/// Sends a replay or discard once its selection is confirmed (see `confirmation`), and
/// shows the answer; `None` when it did not go ahead.
async fn confirmed<R: Bulk>(
    api: &Api,
    out: &Output,
    client: &mut DeadLetterServiceClient<Authed>,
    mut request: R,
    by_filter: bool,
    confirm: Confirm,
) -> Result<Option<R::Answer>, Failure> {
    request.commit(true, None);
    let dry = {
        let (request, mut client) = (request.clone(), client.clone());
        || async move { request.send(api, &mut client).await }
    };
    let Some(expected) = confirmation(
        out,
        &confirm,
        by_filter,
        R::ACTION,
        dry,
        R::counted,
        R::render,
    )
    .await?
    else {
        return Ok(None);
    };
    request.commit(false, expected);
    let answer = request.send(api, client).await?;
    out.show(&answer, R::render)?;
    Ok(Some(answer))
}

/// The count a replay or discard goes ahead with (`Some(None)`: unguarded, for ids named
/// without `--expect`), or `None` when it is not to go ahead: it was a dry run, or nothing
/// is selected. A selection by filter or `--all` is counted by `dry_run` first and
/// confirmed (`confirm_count`); `counted` reads (letters to act on, letters matching, scope)
/// from the dry run's answer.
async fn confirmation<M, F, Fut>(
    out: &Output,
    confirm: &Confirm,
    bulk: bool,
    action: &str,
    dry_run: F,
    counted: impl FnOnce(&M) -> (u32, u64, String),
    render: fn(&M) -> String,
) -> Result<Option<Option<u32>>, Failure>
where
    M: serde::Serialize,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<M, Failure>>,
{
    if !confirm.dry_run && (!bulk || confirm.expect.is_some()) {
        return Ok(Some(confirm.expect));
    }
    let dry = dry_run().await?;
    if confirm.dry_run {
        out.show(&dry, render)?;
        return Ok(None);
    }
    let (n, matched, scope) = counted(&dry);
    if n == 0 {
        out.note(&format!("nothing to {action}{}", render::within(&scope)));
        return Ok(None);
    }
    confirm_count(confirm, action, n, matched, &scope)?;
    Ok(Some(Some(n)))
}

/// Asks the person at the terminal whether `n` letters are to be acted on, unless --yes
/// said so already; without a terminal, a confirmation must be given as an argument.
fn confirm_count(
    confirm: &Confirm,
    action: &str,
    n: u32,
    matched: u64,
    scope: &str,
) -> Result<(), Failure> {
    if confirm.yes {
        return Ok(());
    }
    let more = if matched > u64::from(n) {
        format!(" (of {matched} matching; one call takes at most {n})")
    } else {
        String::new()
    };
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Failure::Usage(format!(
            "this would {action} {n} dead letter(s){more}{}; confirm with --yes or --expect {n}, \
             or see them first with --dry-run",
            render::within(scope)
        )));
    }
    eprint!(
        "{action} {n} dead letter(s){more}{}? [y/N] ",
        render::within(scope)
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin
        .read_line(&mut answer)
        .map_err(|e| Failure::Local(format!("stdin: {e}")))?;
    if matches!(answer.trim().to_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        eprintln!("nothing done");
        Err(Failure::Quiet(1))
    }
}

/// Asks for the outcomes of `ids`, a page of ids at a time; with `wait`, again until every
/// one is settled or the time is up. Prints them and a tally.
async fn outcomes(
    api: &Api,
    out: &Output,
    client: &mut DeadLetterServiceClient<Authed>,
    ids: &[String],
    wait: Option<Duration>,
) -> Result<(), Failure> {
    if ids.is_empty() {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + wait.unwrap_or_default();
    loop {
        let mut all = api::GetReplayOutcomesResponse::default();
        for chunk in ids.chunks(1000) {
            let request = api.unary(api::GetReplayOutcomesRequest {
                ids: chunk.to_vec(),
            });
            let page = client.get_replay_outcomes(request).await?.into_inner();
            all.outcomes.extend(page.outcomes);
            all.scope = page.scope;
        }
        let settled = all.outcomes.iter().all(|o| o.settled);
        if settled || tokio::time::Instant::now() >= deadline {
            out.show(&all, render::outcomes)?;
            out.note(&render::outcome_tally(&all.outcomes));
            if !settled && wait.is_some() {
                out.note(
                    "not every replay settled in time: ask again with `dead-letters outcomes ID…`",
                );
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn select_letters(select: Select) -> Result<request::Selection, Failure> {
    // Replay and discard act on pending letters only, so the state is not the caller's.
    let filter = request::dead_letter_filter(&select.filter, None).map_err(Failure::Usage)?;
    request::selection(select.ids, filter, select.all).map_err(Failure::Usage)
}

async fn list_dead_letters(
    api: &Api,
    out: &Output,
    client: &mut DeadLetterServiceClient<Authed>,
    mut request: api::ListDeadLettersRequest,
    all_pages: bool,
) -> Result<(), Failure> {
    let mut letters = Vec::new();
    loop {
        let page = client
            .list_dead_letters(api.unary(request.clone()))
            .await?
            .into_inner();
        if out.json {
            out.show(&page, |_| String::new())?;
        }
        letters.extend(page.dead_letters);
        let next = page.next_page_token;
        // A server handing out the same token again would keep this loop going forever.
        let more = all_pages && !next.is_empty() && next != request.page_token;
        if !more {
            if !out.json {
                print(render::dead_letters(&letters).as_bytes(), false)?;
            }
            out.note(&format!(
                "{} of {} shown{}",
                letters.len(),
                page.total,
                render::within(&page.scope)
            ));
            out.next_page(&next);
            return Ok(());
        }
        request.page_token = next;
    }
}

/// The body as it is, or with --json the whole message (body in base64). A file gets mode
/// 0600 from the start: it holds a citizen's personal data.
fn write_payload(
    payload: &api::DeadLetterPayload,
    json: bool,
    file: Option<&Path>,
) -> Result<(), Failure> {
    let mut bytes = if json {
        serde_json::to_vec(payload)
            .map_err(|e| Failure::Local(format!("cannot write the payload as JSON: {e}")))?
    } else {
        payload.body.clone()
    };
    if json {
        bytes.push(b'\n');
    }
    let Some(path) = file else {
        return print(&bytes, false);
    };
    let written = (|| {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(&bytes)?;
        f.sync_all()
    })();
    written.map_err(|e| Failure::Local(format!("--out {}: {e}", path.display())))?;
    eprintln!(
        "wrote {} bytes ({}) of dead letter {} to {}",
        payload.body.len(),
        render::clean(&payload.content_type),
        render::clean(&payload.id),
        path.display()
    );
    Ok(())
}
