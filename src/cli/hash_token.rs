//! `ozg-gateway hash-token`: prints the SHA-256 that `[[admin.tokens]]` expects for a token
//! (its `sha256`, or the content of its `sha256_file`). The token comes from a file or from
//! standard input, never from the command line, where every user of the machine can read it
//! in the process list; it is never printed.

use std::io::{IsTerminal, Read};
use std::path::Path;
use std::process::ExitCode;

use ozg_gateway::admin::auth::hash_token;
use ozg_gateway::secret;

/// Fewer characters than this are warned about: such a token is guessed too soon.
const SHORT: usize = 24;

/// `file`, or standard input; `on_command_line`: a token was given as an argument, which is
/// refused without repeating it.
pub fn run(file: Option<&Path>, on_command_line: bool) -> ExitCode {
    if on_command_line {
        eprintln!(
            "hash-token: a token on the command line is not accepted: every user can see a \
             process's arguments; give it on standard input or in a file (--file FILE)"
        );
        return ExitCode::from(2);
    }
    let token = match read(file) {
        Ok(token) => token,
        Err(message) => {
            eprintln!("hash-token: {message}");
            return ExitCode::FAILURE;
        }
    };
    // The gateway compares the token as it arrives in the header, trimmed; so is this.
    let token = token.trim();
    if token.is_empty() {
        eprintln!("hash-token: the token is empty");
        return ExitCode::FAILURE;
    }
    if let Some(at) = token.chars().position(|c| !c.is_ascii_graphic()) {
        eprintln!(
            "hash-token: the token's character {} is not printable ASCII: a token goes into an \
             HTTP header as it is, so letters, digits and punctuation only, no blanks",
            at + 1
        );
        return ExitCode::FAILURE;
    }
    let chars = token.chars().count();
    if chars < SHORT {
        eprintln!(
            "hash-token: warning: the token has {chars} characters; a random one of 32 or more \
             is not guessed (head -c 32 /dev/urandom | base64)"
        );
    }
    println!("{}", hex::encode(hash_token(token)));
    ExitCode::SUCCESS
}

fn read(file: Option<&Path>) -> Result<String, String> {
    if let Some(path) = file {
        let read = secret::from_file(path).map_err(|e| e.to_string())?;
        if let Some(warning) = read.warning {
            eprintln!("hash-token: warning: {warning}");
        }
        return Ok(read.secret.expose().to_owned());
    }
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("hash-token: reading the token from standard input (end with Ctrl-D)");
    }
    let mut text = String::new();
    stdin
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    Ok(text)
}
