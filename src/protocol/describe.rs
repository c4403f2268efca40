//! One decoded line per replication message: what `kv_client watch` prints
//! and what `--trace-replication` logs (lessons 3 and 5, made visible).
//!
//! ```text
//! LeaderHello term=2 last_lsn=44 keys=40 cluster=9c1d6e0a4b7f42d8a15e03c6b2f98e47 members=[127.0.0.1:9001 127.0.0.1:9002]
//! AppendEntries term=2 prev=(LSN 41, term 2) commit=40 records=3: [42 PUT user:7 = "alice"] [43 DEL cart:9] [44 NOOP]
//! AppendEntries term=2 prev=(LSN 44, term 2) commit=44 records=0 (heartbeat)
//! AppendEntriesAck last_lsn=44 term=2
//! ```
//!
//! A line starts with the message's name as [`Message`] spells its variant,
//! then its fields in wire order. A record is `[lsn OP key = value]`; its
//! term is shown only when it differs from the message's (a catch-up after
//! a failover sends records of older terms): `[3 (term 1) PUT k = "v"]`.
//!
//! ## Bytes a peer sent, shown safely
//!
//! Keys and values are arbitrary bytes. Each is escaped so that a line stays
//! one line and cannot move a terminal's cursor (`\n`, `\x1b`, `\"`), and cut
//! to a width, with the full length after the cut: `"aaaa"...(4096 bytes)`.
//! A key made only of printable characters that cannot be confused with
//! the line's own punctuation is shown bare (`user:7`); any other key is
//! quoted. Values are always quoted.
//!
//! Values are shown only where the reader is entitled to them: `kv_client
//! watch` shows them ([`Values::Shown`]); a node's log never does, at any
//! level, so `--trace-replication` gives only their size ([`Values::Sizes`]).

use std::fmt::Write as _;

use serde_json::{json, Value as Json};

use crate::error::ErrorCode;
use crate::protocol::message::{AppendEntries, Message};
use crate::wal::record::{Op, Record};

/// Longest part of a key a line shows, in bytes: a key is up to 64 KiB,
/// and one that long would fill a screen.
pub const KEY_SHOWN_BYTES_MAX: usize = 64;

/// Default width of a value in `kv_client watch` (`--max-value-bytes`).
pub const VALUE_SHOWN_BYTES_DEFAULT: usize = 32;

/// Most frame bytes shown under a line by `--hex`: a catch-up message can
/// hold 8 MiB, and the first kilobyte already shows its layout.
pub const HEX_SHOWN_BYTES_MAX: usize = 1024;

/// How values appear in a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Values {
    /// Escaped, at most this many bytes of each (`kv_client watch`).
    Shown { bytes_max: usize },
    /// Only their size, `(5 bytes)`: for logs, which never hold a value.
    Sizes,
}

/// True for an AppendEntries without records: a heartbeat (or a probe).
pub fn is_heartbeat(message: &Message) -> bool {
    matches!(message, Message::AppendEntries(ae) if ae.records.is_empty())
}

/// The one-line description of `message`.
pub fn line(message: &Message, values: Values) -> String {
    match message {
        Message::AppendEntries(ae) => append_entries_line(ae, values),
        Message::AppendEntriesAck { last_lsn, term, digest_lsn, digest } => {
            let mut s = format!("AppendEntriesAck last_lsn={last_lsn} term={term}");
            if *digest_lsn != 0 {
                let _ = write!(s, " digest=(LSN {digest_lsn}, {digest:016x})");
            }
            s
        }
        Message::AppendEntriesRefuse { term, last_lsn, conflict_lsn, conflict_term } => format!(
            "AppendEntriesRefuse term={term} last_lsn={last_lsn} conflict=(LSN {conflict_lsn}, \
             term {conflict_term})"
        ),
        Message::FollowerHello { last_lsn, last_term, term, listen_port, cluster_id } => format!(
            "FollowerHello last_lsn={last_lsn} last_term={last_term} term={term} listen_port={} \
             cluster={}",
            listen_port.unwrap_or(0),
            cluster_id.map_or_else(|| "none".to_string(), |id| id.to_string())
        ),
        Message::ObserverHello { from_lsn } => format!("ObserverHello from_lsn={from_lsn}"),
        Message::LeaderHello { cluster_id, term, last_lsn, keys, members } => format!(
            "LeaderHello term={term} last_lsn={last_lsn} keys={keys} cluster={cluster_id} members=[{}]",
            members.iter().map(|m| one_line(m)).collect::<Vec<_>>().join(" ")
        ),
        Message::Error { code, message } => {
            format!("Error code={code} ({:?}): {}", ErrorCode::from_u16(*code), one_line(message))
        }
        // Not replication messages; named only, should one ever appear.
        other => other.name().to_string(),
    }
}

fn append_entries_line(ae: &AppendEntries, values: Values) -> String {
    let mut s = format!(
        "AppendEntries term={} prev=(LSN {}, term {}) commit={} records={}",
        ae.term,
        ae.prev_lsn,
        ae.prev_term,
        ae.commit_lsn,
        ae.records.len()
    );
    if ae.records.is_empty() {
        s.push_str(" (heartbeat)");
        return s;
    }
    s.push(':');
    for record in &ae.records {
        s.push(' ');
        s.push_str(&record_text(record, ae.term, values));
    }
    s
}

/// `[lsn OP key = value]`, with `(term t)` after the LSN when it is not
/// the message's term.
pub fn record_text(record: &Record, message_term: u64, values: Values) -> String {
    let mut s = format!("[{}", record.lsn);
    if record.term != message_term {
        let _ = write!(s, " (term {})", record.term);
    }
    match &record.op {
        Op::Put { key, value } => {
            let _ = write!(s, " PUT {} = {}]", key_text(key), value_text(value, values));
        }
        Op::Delete { key } => {
            let _ = write!(s, " DEL {}]", key_text(key));
        }
        Op::Noop => s.push_str(" NOOP]"),
    }
    s
}

/// A key: bare when it is plain printable text, else quoted and escaped;
/// cut at [`KEY_SHOWN_BYTES_MAX`].
pub fn key_text(key: &[u8]) -> String {
    let plain = |b: &u8| b.is_ascii_graphic() && !b"\"\\[]=".contains(b);
    if !key.is_empty() && key.len() <= KEY_SHOWN_BYTES_MAX && key.iter().all(plain) {
        // Every byte is printable ASCII, so this is the key itself.
        return String::from_utf8_lossy(key).into_owned();
    }
    quoted(key, KEY_SHOWN_BYTES_MAX)
}

/// A value: quoted, escaped and cut, or only its size.
pub fn value_text(value: &[u8], values: Values) -> String {
    match values {
        Values::Shown { bytes_max } => quoted(value, bytes_max),
        Values::Sizes => format!("({} bytes)", value.len()),
    }
}

/// `"escaped bytes"`, at most `bytes_max` of them, then `...(N bytes)` if cut.
fn quoted(bytes: &[u8], bytes_max: usize) -> String {
    let shown = &bytes[..bytes.len().min(bytes_max)];
    let mut s = format!("\"{}\"", shown.escape_ascii());
    if shown.len() < bytes.len() {
        let _ = write!(s, "...({} bytes)", bytes.len());
    }
    s
}

/// Text a peer sent (an ERROR's message, an address), with every control
/// character escaped so it prints as one line.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The message as one JSON object (`kv_client watch --json`): the same
/// fields as [`line()`], and each key and value as the escaped text of
/// [`key_text`]'s and [`value_text`]'s cut, with its full length.
pub fn json(message: &Message, values: Values) -> Json {
    match message {
        Message::AppendEntries(ae) => json!({
            "type": "AppendEntries",
            "term": ae.term,
            "prev_lsn": ae.prev_lsn,
            "prev_term": ae.prev_term,
            "commit_lsn": ae.commit_lsn,
            "leader_last_lsn": ae.leader_last_lsn,
            "records": ae.records.iter().map(|r| record_json(r, values)).collect::<Vec<_>>(),
        }),
        Message::AppendEntriesAck { last_lsn, term, digest_lsn, digest } => json!({
            "type": "AppendEntriesAck",
            "last_lsn": last_lsn,
            "term": term,
            "digest_lsn": digest_lsn,
            "digest": format!("{digest:016x}"),
        }),
        Message::AppendEntriesRefuse { term, last_lsn, conflict_lsn, conflict_term } => json!({
            "type": "AppendEntriesRefuse",
            "term": term,
            "last_lsn": last_lsn,
            "conflict_lsn": conflict_lsn,
            "conflict_term": conflict_term,
        }),
        Message::FollowerHello { last_lsn, last_term, term, listen_port, cluster_id } => json!({
            "type": "FollowerHello",
            "last_lsn": last_lsn,
            "last_term": last_term,
            "term": term,
            "listen_port": listen_port,
            "cluster_id": cluster_id.map(|id| id.to_string()),
        }),
        Message::ObserverHello { from_lsn } => {
            json!({ "type": "ObserverHello", "from_lsn": from_lsn })
        }
        Message::LeaderHello { cluster_id, term, last_lsn, keys, members } => json!({
            "type": "LeaderHello",
            "cluster_id": cluster_id.to_string(),
            "term": term,
            "last_lsn": last_lsn,
            "keys": keys,
            "members": members,
        }),
        Message::Error { code, message } => json!({
            "type": "Error",
            "code": code,
            "message": message,
        }),
        other => json!({ "type": other.name() }),
    }
}

fn record_json(record: &Record, values: Values) -> Json {
    let key = |key: &[u8]| {
        let shown = &key[..key.len().min(KEY_SHOWN_BYTES_MAX)];
        (shown.escape_ascii().to_string(), key.len())
    };
    match &record.op {
        Op::Put { key: k, value } => {
            let (key, key_bytes) = key(k);
            let mut object = json!({
                "lsn": record.lsn,
                "term": record.term,
                "op": "PUT",
                "key": key,
                "key_bytes": key_bytes,
                "value_bytes": value.len(),
            });
            if let Values::Shown { bytes_max } = values {
                let shown = &value[..value.len().min(bytes_max)];
                object["value"] = Json::String(shown.escape_ascii().to_string());
            }
            object
        }
        Op::Delete { key: k } => {
            let (key, key_bytes) = key(k);
            json!({
                "lsn": record.lsn,
                "term": record.term,
                "op": "DEL",
                "key": key,
                "key_bytes": key_bytes,
            })
        }
        Op::Noop => json!({ "lsn": record.lsn, "term": record.term, "op": "NOOP" }),
    }
}

/// A frame's bytes as `--hex` shows them under its line: 16 bytes a row,
/// each row indented and led by its offset, at most
/// [`HEX_SHOWN_BYTES_MAX`] bytes, then how many were left out.
pub fn hex_dump(frame: &[u8]) -> String {
    let shown = &frame[..frame.len().min(HEX_SHOWN_BYTES_MAX)];
    let mut out = String::new();
    for (row, chunk) in shown.chunks(16).enumerate() {
        let _ = write!(out, "    {:04x} ", row * 16);
        for byte in chunk {
            let _ = write!(out, " {byte:02x}");
        }
        out.push('\n');
    }
    if shown.len() < frame.len() {
        let _ = writeln!(out, "    ... ({} more bytes)", frame.len() - shown.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterId;

    const SHOWN: Values = Values::Shown { bytes_max: VALUE_SHOWN_BYTES_DEFAULT };

    fn put(lsn: u64, term: u64, key: &[u8], value: &[u8]) -> Record {
        Record { lsn, term, op: Op::Put { key: key.to_vec(), value: value.to_vec() } }
    }

    fn append(records: Vec<Record>) -> Message {
        Message::AppendEntries(AppendEntries {
            term: 2,
            prev_lsn: 41,
            prev_term: 2,
            commit_lsn: 40,
            leader_last_lsn: 44,
            records,
        })
    }

    #[test]
    fn append_entries_reads_as_the_issue_shows_it() {
        // Goal: the line of issue 13's example, record by record.
        let message = append(vec![
            put(42, 2, b"user:7", b"alice"),
            Record { lsn: 43, term: 2, op: Op::Delete { key: b"cart:9".to_vec() } },
            Record { lsn: 44, term: 2, op: Op::Noop },
        ]);
        assert_eq!(
            line(&message, SHOWN),
            "AppendEntries term=2 prev=(LSN 41, term 2) commit=40 records=3: \
             [42 PUT user:7 = \"alice\"] [43 DEL cart:9] [44 NOOP]"
        );
    }

    #[test]
    fn a_heartbeat_says_so() {
        let message = append(vec![]);
        assert!(is_heartbeat(&message));
        assert_eq!(
            line(&message, SHOWN),
            "AppendEntries term=2 prev=(LSN 41, term 2) commit=40 records=0 (heartbeat)"
        );
    }

    #[test]
    fn a_record_of_an_older_term_shows_its_term() {
        // Goal: a catch-up after a failover sends records of older terms;
        // their term is shown, the message's own is not repeated.
        let message = append(vec![put(42, 1, b"k", b"v")]);
        assert!(line(&message, SHOWN).ends_with("records=1: [42 (term 1) PUT k = \"v\"]"));
    }

    #[test]
    fn keys_and_values_are_escaped_to_one_line() {
        // Goal: a newline, a quote or a terminal escape in a key or value
        // cannot break the line or move the cursor.
        let message = append(vec![put(42, 2, b"a b\n", b"say \"hi\"\x1b[2J\r\n")]);
        let text = line(&message, SHOWN);
        assert_eq!(
            text,
            "AppendEntries term=2 prev=(LSN 41, term 2) commit=40 records=1: \
             [42 PUT \"a b\\n\" = \"say \\\"hi\\\"\\x1b[2J\\r\\n\"]"
        );
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }

    #[test]
    fn keys_that_look_like_punctuation_are_quoted() {
        // Goal: a bare key never contains what delimits the line's parts.
        assert_eq!(key_text(b"user:7"), "user:7");
        for key in [&b""[..], b"a=b", b"a]", b"[a", b"a\"", b"a\\b", b"caf\xc3\xa9"] {
            let shown = key_text(key);
            assert!(shown.starts_with('"'), "{key:?} -> {shown}");
        }
    }

    #[test]
    fn long_values_and_keys_are_cut_with_their_length() {
        // Goal: --max-value-bytes cuts a value and says how long it was;
        // a key is cut at KEY_SHOWN_BYTES_MAX.
        let value = vec![b'v'; 100];
        assert_eq!(value_text(&value, Values::Shown { bytes_max: 4 }), "\"vvvv\"...(100 bytes)");
        assert_eq!(value_text(b"abc", Values::Shown { bytes_max: 4 }), "\"abc\"");
        let key = vec![b'k'; 65];
        assert_eq!(key_text(&key), format!("\"{}\"...(65 bytes)", "k".repeat(64)));
    }

    #[test]
    fn a_value_in_a_trace_line_is_only_its_size() {
        // Goal: logs never hold a value: Values::Sizes leaves only its length.
        let message = append(vec![put(42, 2, b"user:7", b"secret")]);
        let text = line(&message, Values::Sizes);
        assert!(text.ends_with("[42 PUT user:7 = (6 bytes)]"), "{text}");
        assert!(!text.contains("secret"));
        let object = json(&message, Values::Sizes);
        assert!(object["records"][0].get("value").is_none(), "{object}");
        assert_eq!(object["records"][0]["value_bytes"], 6);
    }

    #[test]
    fn the_other_link_messages_have_their_fields() {
        let id = ClusterId([0x9c; 16]);
        let hello = Message::LeaderHello {
            cluster_id: id,
            term: 2,
            last_lsn: 44,
            keys: 40,
            members: vec!["127.0.0.1:9001".into(), "127.0.0.1:9002".into()],
        };
        assert_eq!(
            line(&hello, SHOWN),
            format!("LeaderHello term=2 last_lsn=44 keys=40 cluster={id} members=[127.0.0.1:9001 127.0.0.1:9002]")
        );
        let ack = Message::AppendEntriesAck { last_lsn: 44, term: 2, digest_lsn: 0, digest: 0 };
        assert_eq!(line(&ack, SHOWN), "AppendEntriesAck last_lsn=44 term=2");
        let ack = Message::AppendEntriesAck { last_lsn: 44, term: 2, digest_lsn: 44, digest: 255 };
        assert_eq!(
            line(&ack, SHOWN),
            "AppendEntriesAck last_lsn=44 term=2 digest=(LSN 44, 00000000000000ff)"
        );
        assert_eq!(
            line(&Message::ObserverHello { from_lsn: 3 }, SHOWN),
            "ObserverHello from_lsn=3"
        );
        let error = Message::Error { code: 7, message: "too many\nobservers".into() };
        assert_eq!(line(&error, SHOWN), "Error code=7 (TooManyConnections): too many\\nobservers");
    }

    #[test]
    fn json_has_the_records_with_cut_values() {
        // Goal: --json is one object a line with every field of the line.
        let message = append(vec![put(42, 2, b"user:7", b"alice in wonderland")]);
        let object = json(&message, Values::Shown { bytes_max: 5 });
        assert_eq!(object["type"], "AppendEntries");
        assert_eq!(object["prev_lsn"], 41);
        assert_eq!(object["records"][0]["key"], "user:7");
        assert_eq!(object["records"][0]["value"], "alice");
        assert_eq!(object["records"][0]["value_bytes"], 19);
        assert!(!object.to_string().contains('\n'));
    }

    #[test]
    fn hex_dump_shows_sixteen_bytes_a_row_and_what_was_left_out() {
        let frame: Vec<u8> = (0..20).collect();
        assert_eq!(
            hex_dump(&frame),
            "    0000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f\n    0010  10 11 12 13\n"
        );
        let big = vec![0u8; HEX_SHOWN_BYTES_MAX + 5];
        assert!(hex_dump(&big).ends_with("    ... (5 more bytes)\n"));
    }
}
