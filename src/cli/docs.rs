//! `ozg-gateway completions` and `ozg-gateway man`: shell completions and manual pages made
//! from the command line's own definitions, so they name exactly the commands, flags and
//! values (reason codes, states) this build accepts.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Command;
use clap_complete::Shell;

/// The binary's name, as completions register it and manual pages are called.
const NAME: &str = "ozg-gateway";

/// The completion script for `shell` on stdout.
pub fn completions(command: Command, shell: Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut shown_only(&command), NAME, &mut script);
    if shell == Shell::Bash {
        script = bash_states_agree(&String::from_utf8_lossy(&script)).into_bytes();
    }
    write_stdout(&script)
}

/// clap_complete's bash script names the state of `ozg-gateway admin` two ways when the
/// program's name has a hyphen: the loop that reads the words arrives at
/// `ozg__gateway__subcmd__admin`, the arms that complete it are labelled
/// `ozg__subcmd__gateway__subcmd__admin`, so nothing after the first word would complete.
/// The arms are given the loop's spelling.
fn bash_states_agree(script: &str) -> String {
    let escaped = |separator: &str| NAME.replace('-', separator);
    script.replace(&escaped("__subcmd__"), &escaped("__"))
}

/// `command` without its hidden commands and arguments, which clap_complete offers like any
/// other: here they are traps (`admin --token`, a token given to `hash-token` as an
/// argument) that refuse what they catch, and a completion must not suggest them. What
/// completions use is kept: names, aliases, help texts, and every visible argument whole.
fn shown_only(command: &Command) -> Command {
    let mut shown = Command::new(command.get_name().to_owned())
        .args(
            command
                .get_arguments()
                .filter(|a| !a.is_hide_set())
                .cloned(),
        )
        .subcommands(
            command
                .get_subcommands()
                .filter(|c| !c.is_hide_set())
                .map(shown_only),
        )
        .visible_aliases(command.get_visible_aliases().map(str::to_owned));
    if let Some(about) = command.get_about() {
        shown = shown.about(about.clone());
    }
    if let Some(version) = command.get_version() {
        shown = shown.version(version.to_owned());
    }
    shown
}

/// The manual page of `path` (a subcommand such as `admin dead-letters`; empty: the whole
/// program's) on stdout, or with `dir` a page for every command and subcommand written
/// there, each file named as `man` looks it up (`ozg-gateway-admin-overview.1`).
pub fn man(command: Command, path: &[String], dir: Option<&Path>) -> ExitCode {
    let mut command = command.disable_help_subcommand(true);
    command.build();
    if let Some(dir) = dir {
        return match pages_to(&command, dir) {
            Ok(written) => {
                for file in written {
                    println!("{}", file.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ozg-gateway man: {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        };
    }
    let mut page = &command;
    for (i, name) in path.iter().enumerate() {
        match page.find_subcommand(name).filter(|c| !c.is_hide_set()) {
            Some(sub) => page = sub,
            None => {
                let within = std::iter::once(NAME)
                    .chain(path[..i].iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(" ");
                let known: Vec<&str> = page
                    .get_subcommands()
                    .filter(|c| !c.is_hide_set())
                    .map(Command::get_name)
                    .collect();
                eprintln!(
                    "ozg-gateway man: {within} has no command {name:?}{}",
                    if known.is_empty() {
                        String::new()
                    } else {
                        format!(" (it has: {})", known.join(", "))
                    }
                );
                return ExitCode::from(2);
            }
        }
    }
    let mut roff = Vec::new();
    match page_of(page).render(&mut roff) {
        Ok(()) => write_stdout(ascii(&roff).as_bytes()),
        Err(e) => {
            eprintln!("ozg-gateway man: {e}");
            ExitCode::FAILURE
        }
    }
}

fn page_of(command: &Command) -> clap_mangen::Man {
    clap_mangen::Man::new(command.clone())
        .date(env!("OZG_COMMIT_DATE"))
        .source(format!("{NAME} {}", env!("CARGO_PKG_VERSION")))
        .manual("ozg-gateway manual")
}

/// troff reads its input as Latin-1 unless a preprocessor converts it (man-db's preconv
/// does, groff alone and other formatters do not): every character beyond ASCII (the
/// help's "…", "Länder") becomes the named-Unicode escape `\[uXXXX]`, which groff and
/// mandoc both know.
fn ascii(roff: &[u8]) -> String {
    let text = String::from_utf8_lossy(roff);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    out
}

/// Every visible command's page in `dir` (created if missing), parents before children.
fn pages_to(command: &Command, dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let mut pending = vec![command.clone()];
    while let Some(page) = pending.pop() {
        let man = page_of(&page);
        let mut roff = Vec::new();
        man.render(&mut roff)?;
        let file = dir.join(man.get_filename());
        std::fs::write(&file, ascii(&roff))?;
        written.push(file);
        let mut children: Vec<Command> = page
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
            .cloned()
            .collect();
        children.reverse();
        pending.extend(children);
    }
    Ok(written)
}

fn write_stdout(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // `… | head`: the reader has what it wanted.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ozg-gateway: stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roff_keeps_ascii_and_escapes_the_rest() {
        let cases = [
            ("plain \\fBbold\\fR", "plain \\fBbold\\fR"),
            ("Länder", "L\\[u00E4]nder"),
            ("(submit, …)", "(submit, \\[u2026])"),
            (
                "Leistungsschlüssel ß",
                "Leistungsschl\\[u00FC]ssel \\[u00DF]",
            ),
        ];
        for (text, roff) in cases {
            assert_eq!(ascii(text.as_bytes()), roff, "{text}");
        }
    }
}
