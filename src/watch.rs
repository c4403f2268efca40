//! `kv_client watch`: the replication stream, decoded, as it flows
//! (lessons 3 and 5 made visible; like `redis-cli --replica` and
//! PostgreSQL's `pg_recvlogical`).
//!
//! The watcher is an **observer**: it opens a connection to the leader
//! and says OBSERVER_HELLO `[from_lsn]` instead of FOLLOWER_HELLO. The leader
//! answers LEADER_HELLO and then sends it exactly what a follower gets —
//! the records from `from_lsn` on (a catch-up from the WAL), then every new
//! batch as it is written, and a heartbeat when idle. The observer ACKs
//! each AppendEntries like a follower, so the leader can tell it is alive
//! and show its position; but it is no member: it never votes, and its ACKs
//! count toward no majority and no write concern. A leader serves at most
//! `--max-observers` of them and refuses the next with an ERROR.
//!
//! ```text
//! $ kv_client --port 9001 watch --from-lsn 1
//! LeaderHello term=1 last_lsn=2 keys=1 cluster=9c1d6e0a4b7f42d8a15e03c6b2f98e47 members=[127.0.0.1:9001 127.0.0.1:9002]
//! AppendEntries term=1 prev=(LSN 0, term 0) commit=2 records=2: [1 PUT k = "v"] [2 DEL k]
//! AppendEntries term=1 prev=(LSN 2, term 1) commit=2 records=0 (heartbeat)
//! ```
//!
//! Each message is one line ([`crate::protocol::describe`]); `--hex` adds
//! the frame's bytes under it (week 2's framing), `--json` makes it one
//! JSON object a line for tools.

use std::io::{BufReader, Write};
use std::time::Duration;

use crate::dial::Dialer;
use crate::error::{Error, ErrorCode, Result};
use crate::limits::{FRAME_BYTES_MAX, REPLICATION_TIMEOUT_MS};
use crate::protocol::describe::{self, Values};
use crate::protocol::frame::{read_frame, write_message, FRAME_HEADER_BYTES};
use crate::protocol::message::AppendEntries;
use crate::protocol::Message;
use crate::tls::Conn;
use crate::Lsn;

/// How long the watcher waits to connect.
const CONNECT_TIMEOUT_MS: u64 = 3_000;

/// What `kv_client watch` prints, and from where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// The first LSN to receive; 0: only records written from now on.
    pub from_lsn: Lsn,
    /// Print heartbeats (empty AppendEntries) too.
    pub heartbeats: bool,
    /// Print each frame's bytes under its line.
    pub hex: bool,
    /// One JSON object a line instead of text.
    pub json: bool,
    /// Bytes of each value shown (`--max-value-bytes`).
    pub value_bytes_max: usize,
}

/// One message as it came off the wire.
pub struct Received {
    pub message: Message,
    /// The whole frame, length prefix included.
    pub frame: Vec<u8>,
}

/// An observer's connection to a leader.
pub struct Observer {
    reader: BufReader<Conn>,
    writer: Conn,
    /// The LSN the next AppendEntries must continue from (`prev_lsn`), once known.
    next_prev: Option<Lsn>,
}

impl Observer {
    /// Connect to `address`, say OBSERVER_HELLO and read the answer: the
    /// leader's LEADER_HELLO, or its refusal as an error. With auth or TLS
    /// on, `dialer` opens the connection as for any client.
    pub fn connect(address: &str, dialer: &Dialer, from_lsn: Lsn) -> Result<(Observer, Received)> {
        let stream = dialer.dial_address(address, Duration::from_millis(CONNECT_TIMEOUT_MS))?;
        let setup = |e| Error::io("configuring the observer's socket", e);
        // The leader sends a heartbeat every 100 ms: silence means it is gone.
        let silence = Some(Duration::from_millis(REPLICATION_TIMEOUT_MS));
        stream.socket().set_read_timeout(silence).map_err(setup)?;
        stream.socket().set_write_timeout(silence).map_err(setup)?;
        let mut writer = stream.try_clone().map_err(setup)?;
        write_message(&mut writer, &Message::ObserverHello { from_lsn })?;
        let mut observer = Observer { reader: BufReader::new(stream), writer, next_prev: None };
        let hello = observer.receive()?;
        match &hello.message {
            Message::LeaderHello { .. } => Ok((observer, hello)),
            other => Err(Error::Unexpected(format!("{} instead of LEADER_HELLO", other.name()))),
        }
    }

    /// The next message from the leader. An AppendEntries is checked to
    /// continue the one before and ACKed; an ERROR ends the watch.
    pub fn next_message(&mut self) -> Result<Received> {
        let received = self.receive()?;
        match &received.message {
            Message::AppendEntries(ae) => self.ack(ae)?,
            Message::Error { code, .. } if *code == ErrorCode::Unhealthy as u16 => {}
            other => {
                return Err(Error::Unexpected(format!("{} on a replication link", other.name())))
            }
        }
        Ok(received)
    }

    /// Read one frame; an ERROR other than the corruption check's becomes `Err`.
    fn receive(&mut self) -> Result<Received> {
        let payload = match read_frame(&mut self.reader, FRAME_BYTES_MAX) {
            Ok(Some(payload)) => payload,
            Ok(None) => return Err(Error::Link("the leader closed the connection".into())),
            Err(e) if crate::protocol::frame::is_timeout(&e) => {
                return Err(Error::Link(format!(
                    "nothing from the leader for {REPLICATION_TIMEOUT_MS} ms"
                )))
            }
            Err(e) => return Err(e),
        };
        let message = Message::decode(&payload)?;
        if let Message::Error { code, message } = &message {
            if *code != ErrorCode::Unhealthy as u16 {
                let code = ErrorCode::from_u16(*code);
                return Err(Error::Server { code, message: message.clone() });
            }
        }
        let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&payload);
        Ok(Received { message, frame })
    }

    /// Check that `ae` continues the stream, and ACK it as a follower would.
    fn ack(&mut self, ae: &AppendEntries) -> Result<()> {
        if let Some(expected) = self.next_prev.filter(|p| *p != ae.prev_lsn) {
            return Err(Error::NotContiguous { expected: expected + 1, got: ae.prev_lsn + 1 });
        }
        let last_lsn = ae.prev_lsn + ae.records.len() as Lsn;
        self.next_prev = Some(last_lsn);
        let ack = Message::AppendEntriesAck { last_lsn, term: ae.term, digest_lsn: 0, digest: 0 };
        write_message(&mut self.writer, &ack)
    }
}

/// What to print for `received`: its line (or JSON object), and its bytes
/// with `--hex`; `None` for a heartbeat when heartbeats are hidden.
pub fn render(received: &Received, options: &WatchOptions) -> Option<String> {
    if !options.heartbeats && describe::is_heartbeat(&received.message) {
        return None;
    }
    let values = Values::Shown { bytes_max: options.value_bytes_max };
    if options.json {
        let mut object = describe::json(&received.message, values);
        if options.hex {
            let hex: String = received.frame.iter().map(|b| format!("{b:02x}")).collect();
            object["frame_hex"] = serde_json::Value::String(hex);
        }
        return Some(format!("{object}\n"));
    }
    let mut text = describe::line(&received.message, values);
    text.push('\n');
    if options.hex {
        text.push_str(&describe::hex_dump(&received.frame));
    }
    Some(text)
}

/// Watch the leader at `address`: print every message to `out` until the
/// link ends (an error) or `out` is closed (`Ok`, as for `| head`).
pub fn run(
    address: &str,
    dialer: &Dialer,
    options: &WatchOptions,
    out: &mut impl Write,
) -> Result<()> {
    let (mut observer, hello) = Observer::connect(address, dialer, options.from_lsn)?;
    let mut received = hello;
    loop {
        if let Some(text) = render(&received, options) {
            if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
                return Ok(()); // the reader went away
            }
        }
        received = observer.next_message()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::{Op, Record};

    fn received(message: Message) -> Received {
        let mut frame = Vec::new();
        message.encode_frame(&mut frame);
        Received { message, frame }
    }

    fn options() -> WatchOptions {
        WatchOptions { from_lsn: 0, heartbeats: true, hex: false, json: false, value_bytes_max: 32 }
    }

    fn append(records: Vec<Record>) -> Message {
        Message::AppendEntries(AppendEntries {
            term: 1,
            prev_lsn: 0,
            prev_term: 0,
            commit_lsn: 0,
            leader_last_lsn: records.len() as Lsn,
            records,
        })
    }

    #[test]
    fn heartbeats_can_be_hidden() {
        let heartbeat = received(append(vec![]));
        assert!(render(&heartbeat, &options()).is_some());
        let quiet = WatchOptions { heartbeats: false, ..options() };
        assert!(render(&heartbeat, &quiet).is_none());
        let put = Record { lsn: 1, term: 1, op: Op::Put { key: b"k".to_vec(), value: vec![] } };
        assert!(render(&received(append(vec![put])), &quiet).is_some());
    }

    #[test]
    fn hex_puts_the_frame_under_its_line() {
        // Goal: --hex shows the exact frame, length prefix first.
        let hex = WatchOptions { hex: true, ..options() };
        let text = render(&received(append(vec![])), &hex).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("AppendEntries term=1"), "{text}");
        assert_eq!(lines[1], "    0000  00 00 00 2d 20 00 00 00 00 00 00 00 01 00 00 00");
    }

    #[test]
    fn json_is_one_object_a_line() {
        let json = WatchOptions { json: true, hex: true, ..options() };
        let put = Record {
            lsn: 1,
            term: 1,
            op: Op::Put { key: b"k".to_vec(), value: b"line\nbreak".to_vec() },
        };
        let text = render(&received(append(vec![put])), &json).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        let object: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(object["type"], "AppendEntries");
        assert_eq!(object["records"][0]["value"], "line\\nbreak");
        assert!(object["frame_hex"].as_str().unwrap().starts_with("0000"));
    }
}
