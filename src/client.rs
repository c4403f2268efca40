//! A small blocking client: used by `kv_client`, the tests and the examples.
//!
//! One request, one reply, on a persistent connection:
//!
//! ```no_run
//! let mut client = kvstore::client::Client::connect("127.0.0.1:9001")?;
//! client.put(b"hello", b"world")?;
//! assert_eq!(client.get(b"hello")?, Some(b"world".to_vec()));
//! # Ok::<(), kvstore::error::Error>(())
//! ```
//!
//! An ERROR reply becomes [`Error::Server`] with the server's code and text.
//!
//! A node started with `--auth-file` takes only authenticated connections:
//! [`Client::connect_with`] runs the handshake of [`crate::auth`] first,
//! and refuses to go on unless the server proves it knows the secret too.

use std::io::{BufReader, BufWriter, Write};
use std::net::ToSocketAddrs;
use std::time::Duration;

use crate::dial::Dialer;
use crate::error::{Error, ErrorCode, Result};
use crate::limits::FRAME_BYTES_MAX;
use crate::protocol::{read_frame, write_message, Consistency, Message};
use crate::status::StatusReport;
use crate::tls::Conn;
use crate::Lsn;

/// How long the client waits to connect, and for each step of the TLS and
/// auth handshakes.
const CONNECT_TIMEOUT_MS: u64 = 3_000;

/// A connection to one kvstore node.
pub struct Client {
    reader: BufReader<Conn>,
    writer: BufWriter<Conn>,
}

impl Client {
    /// Connect to `address` (`host:port`): plain TCP, no authentication.
    pub fn connect(address: impl ToSocketAddrs + std::fmt::Display) -> Result<Client> {
        Client::connect_with(address, &Dialer::plain())
    }

    /// Connect to `address` through `dialer`: TLS if it has a CA, and the
    /// auth handshake if it has a secret (both sides prove they know it)
    /// before any request.
    pub fn connect_with(
        address: impl ToSocketAddrs + std::fmt::Display,
        dialer: &Dialer,
    ) -> Result<Client> {
        let ctx = format!("connecting to {address}");
        let stream = dialer.dial_address(address, Duration::from_millis(CONNECT_TIMEOUT_MS))?;
        stream.socket().set_read_timeout(None).map_err(|e| Error::io(&ctx, e))?;
        stream.socket().set_write_timeout(None).map_err(|e| Error::io(&ctx, e))?;
        let reader = BufReader::new(stream.try_clone().map_err(|e| Error::io(&ctx, e))?);
        Ok(Client { reader, writer: BufWriter::new(stream) })
    }

    /// Give up on a reply after `timeout` (None waits forever).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        self.writer.get_ref().set_read_timeout(timeout).map_err(|e| Error::io("set timeout", e))
    }

    /// PUT: returns the LSN the write was logged at.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<Lsn> {
        match self.request(&Message::Put { key: key.to_vec(), value: value.to_vec() })? {
            Message::Ok { lsn } => Ok(lsn),
            other => Err(unexpected("PUT", &other)),
        }
    }

    /// GET: `None` if the key does not exist.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.request(&Message::Get { key: key.to_vec() })? {
            Message::Value { value } => Ok(Some(value)),
            Message::NotFound => Ok(None),
            other => Err(unexpected("GET", &other)),
        }
    }

    /// READ: a GET with a chosen consistency, after the node has applied
    /// `min_lsn` (0: no wait). `None` if the key does not exist.
    pub fn read(
        &mut self,
        key: &[u8],
        consistency: Consistency,
        min_lsn: Lsn,
    ) -> Result<Option<Vec<u8>>> {
        let request = Message::Read { consistency, min_lsn, key: key.to_vec() };
        match self.request(&request)? {
            Message::Value { value } => Ok(Some(value)),
            Message::NotFound => Ok(None),
            other => Err(unexpected("READ", &other)),
        }
    }

    /// TRANSFER_LEADERSHIP to `target` (empty: the most up-to-date
    /// follower); returns what the leader did.
    pub fn transfer_leadership(&mut self, target: &str) -> Result<String> {
        match self.request(&Message::TransferLeadership { target: target.to_string() })? {
            Message::Done { message } => Ok(message),
            other => Err(unexpected("TRANSFER_LEADERSHIP", &other)),
        }
    }

    /// SNAPSHOT: take a snapshot now and compact the WAL; returns what the
    /// node did, once the snapshot is written.
    pub fn snapshot(&mut self) -> Result<String> {
        match self.request(&Message::Snapshot)? {
            Message::Done { message } => Ok(message),
            other => Err(unexpected("SNAPSHOT", &other)),
        }
    }

    /// DELETE: returns the LSN the delete was logged at.
    pub fn delete(&mut self, key: &[u8]) -> Result<Lsn> {
        match self.request(&Message::Delete { key: key.to_vec() })? {
            Message::Ok { lsn } => Ok(lsn),
            other => Err(unexpected("DELETE", &other)),
        }
    }

    /// PROMOTE: make the node leader of a new term; returns what it did.
    pub fn promote(&mut self, force: bool) -> Result<String> {
        match self.request(&Message::Promote { force })? {
            Message::Done { message } => Ok(message),
            other => Err(unexpected("PROMOTE", &other)),
        }
    }

    /// FOLLOW: make the node a follower of `leader` (`host:port` or a port).
    pub fn follow(&mut self, leader: &str) -> Result<String> {
        match self.request(&Message::Follow { leader: leader.to_string() })? {
            Message::Done { message } => Ok(message),
            other => Err(unexpected("FOLLOW", &other)),
        }
    }

    /// STATUS, parsed.
    pub fn status(&mut self) -> Result<StatusReport> {
        let json = self.status_json()?;
        serde_json::from_str(&json).map_err(|e| Error::Malformed(format!("status json: {e}")))
    }

    /// STATUS, as the JSON text the server sent.
    pub fn status_json(&mut self) -> Result<String> {
        match self.request(&Message::Status)? {
            Message::StatusReply { json } => Ok(json),
            other => Err(unexpected("STATUS", &other)),
        }
    }

    /// Send one message and read one reply; an ERROR reply is an `Err`.
    pub fn request(&mut self, message: &Message) -> Result<Message> {
        self.send(message)?;
        self.receive()
    }

    /// Send without waiting (for pipelining); pair with [`Client::receive`].
    pub fn send(&mut self, message: &Message) -> Result<()> {
        write_message(&mut self.writer, message)?;
        self.writer.flush().map_err(|e| Error::io("sending request", e))
    }

    /// Read one reply; an ERROR reply is an `Err`.
    pub fn receive(&mut self) -> Result<Message> {
        let frame = read_frame(&mut self.reader, FRAME_BYTES_MAX)?
            .ok_or_else(|| Error::Link("the server closed the connection".into()))?;
        match Message::decode(&frame)? {
            Message::Error { code, message } => {
                Err(Error::Server { code: ErrorCode::from_u16(code), message })
            }
            reply => Ok(reply),
        }
    }
}

fn unexpected(request: &str, reply: &Message) -> Error {
    Error::Unexpected(format!("{} in reply to {request}", reply.name()))
}
