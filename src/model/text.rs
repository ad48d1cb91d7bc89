//! Bounds on the text operators give (ids, names, AMQP names), shared by the configuration
//! file and the admin API's requests.

/// The longest id (of a destination, a dead letter, a platform in a filter …) anyone may
/// give: ids go into headers, logs, metrics labels and queue names.
pub const MAX_ID_CHARS: usize = 128;
/// The longest name of a destination or a service.
pub const MAX_NAME_CHARS: usize = 300;
/// AMQP's limit for exchange, queue and routing key names (a short string).
const MAX_AMQP_NAME_BYTES: usize = 255;

/// A value from outside, for a message: escaped, and cut after a few characters, so that
/// a message never carries much of what someone sent.
pub fn quoted(value: &str) -> String {
    const SHOWN: usize = 40;
    match value.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

/// Text of at most `max_chars` characters without control characters.
pub fn check_text(value: &str, max_chars: usize) -> Result<(), String> {
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(format!(
            "has {chars} characters, at most {max_chars} are allowed ({})",
            quoted(value)
        ));
    }
    match value.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, c)) => Err(format!(
            "contains a control character (U+{:04X}) at byte {at}",
            u32::from(c)
        )),
        None => Ok(()),
    }
}

/// An id: 1 to [`MAX_ID_CHARS`] letters, digits, `-`, `_`, `.` and `:`.
pub fn check_id(value: &str) -> Result<(), String> {
    check_text(value, MAX_ID_CHARS)?;
    match value
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        Some(c) => Err(format!(
            "{} is not an id: letters, digits, '-', '_', '.' and ':' only, not {c:?}",
            quoted(value)
        )),
        None => Ok(()),
    }
}

/// An exchange, queue or routing key name.
pub fn check_amqp_name(value: &str) -> Result<(), String> {
    check_text(value, MAX_AMQP_NAME_BYTES)?;
    if value.len() > MAX_AMQP_NAME_BYTES {
        return Err(format!(
            "has {} bytes, at most {MAX_AMQP_NAME_BYTES} are allowed in an AMQP name",
            value.len()
        ));
    }
    Ok(())
}
