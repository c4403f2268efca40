//! What may go into a log line, and in what form.
//!
//! Logs are read by people who may not read the data: operators, support,
//! whoever the log files are shipped to. So two rules:
//!
//! - **A value is never logged**, at any level. Errors that travel with a
//!   request name fields and sizes, never contents.
//! - **A key is logged only at `debug`**, and then through [`key`]:
//!   escaped (so binary keys read as text) and cut to
//!   [`LOG_KEY_BYTES_MAX`] bytes (so a 64 KiB key does not fill a screen).
//!
//! And one line per event: text a peer sent — an ERROR's message, a
//! member's address — can hold a newline or a terminal escape, which would
//! let it forge log lines or rewrite a terminal. [`one_line`] escapes every
//! control character; the `kvstore` binary passes every log line through
//! it, whatever its source.

use std::borrow::Cow;

/// Longest part of a key shown in a debug line, in bytes.
pub const LOG_KEY_BYTES_MAX: usize = 64;

/// `text` with every control character escaped (`\n`, `\u{1b}`, ...), so
/// that it prints as exactly one line and moves no terminal cursor.
pub fn one_line(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A key as a debug line shows it: quoted, non-printable bytes escaped,
/// at most [`LOG_KEY_BYTES_MAX`] bytes of it, with the full length if cut.
pub fn key(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(LOG_KEY_BYTES_MAX)];
    let mut text = format!("\"{}\"", shown.escape_ascii());
    if shown.len() < bytes.len() {
        text.push_str(&format!("...({} bytes)", bytes.len()));
    }
    text
}

/// A count with thousands separators, as log lines print LSNs and key
/// counts: `5,000,001`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A size in decimal units, one decimal: `812 B`, `1.2 MB`, `3.4 GB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_sizes_read_like_the_issue_says() {
        assert_eq!(count(5_000_001), "5,000,001");
        assert_eq!((count(0), count(999), count(1000)), ("0".into(), "999".into(), "1,000".into()));
        assert_eq!(bytes(1_200_000), "1.2 MB");
        assert_eq!(
            (bytes(812), bytes(1000), bytes(3_400_000_000)),
            ("812 B".into(), "1.0 kB".into(), "3.4 GB".into())
        );
    }

    #[test]
    fn a_peer_cannot_forge_a_log_line_or_move_the_cursor() {
        let forged = "refused\n2026-01-01 INFO  [server] all is well\x1b[2J";
        let line = one_line(forged);
        assert!(!line.contains('\n') && !line.contains('\x1b'), "{line}");
        assert_eq!(line, "refused\\n2026-01-01 INFO  [server] all is well\\u{1b}[2J");
        assert!(matches!(one_line("plain text"), Cow::Borrowed(_)), "no copy when clean");
    }

    #[test]
    fn keys_are_escaped_and_cut() {
        assert_eq!(key(b"user:1\n"), "\"user:1\\n\"");
        let long = vec![b'k'; 100];
        assert_eq!(key(&long), format!("\"{}\"...(100 bytes)", "k".repeat(64)));
    }
}
