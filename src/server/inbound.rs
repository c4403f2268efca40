//! Reading frames from a connection someone else opened: with a deadline
//! per frame and a shared memory budget.
//!
//! [`crate::protocol::frame::read_frame`] trusts its reader to deliver;
//! a server cannot trust a stranger to. Two things go wrong with a peer
//! that starts a frame and then crawls (slow loris): it holds a thread for
//! as long as it likes, and, if its length prefix is large, it makes the
//! server hold a buffer for bytes that never come. So [`Inbound::read_frame`]
//! differs from `read_frame` in two ways:
//!
//! 1. **A deadline per frame.** Between frames a connection may wait as
//!    long as its caller allows (forever, for a pooled client connection).
//!    Once the first byte of a frame has arrived, the whole frame must be
//!    in within `--frame-timeout-ms`, or the connection is closed
//!    ([`Error::TooSlow`]). The socket's read timeout is set to what is left
//!    before each read that must wait, and only then: a frame that arrives
//!    whole costs no extra system call.
//! 2. **A buffer that grows as bytes arrive**, never from the length prefix
//!    alone, in steps of [`PARTIAL_FRAME_STEP_BYTES`]. The first step of
//!    every frame is the connection's own (like its read buffer, it is
//!    bounded by the number of connections), so ordinary requests — nearly
//!    all smaller than a step — never wait on the others; every further
//!    step is charged to the server-wide partial-frame budget
//!    ([`crate::admission`]) until the frame is complete. When the budget
//!    is spent, the frame that needed more is refused ([`Error::Busy`]). A
//!    flood of large prefixes costs the server what the flood actually
//!    sent, and no more than one step per connection plus the budget.
//!
//! Like `read_frame`, a zero length and a length above the caller's limit
//! are refused before anything is allocated, and end of stream between
//! frames is a clean close (`Ok(None)`).

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::time::{Duration, Instant};

use crate::admission::ByteBudget;
use crate::error::{Error, Result};
use crate::limits::PARTIAL_FRAME_STEP_BYTES;
use crate::protocol::frame::FRAME_HEADER_BYTES;
use crate::tls::Conn;

/// The read side of one incoming connection.
pub struct Inbound<'a> {
    reader: BufReader<Conn>,
    /// The read timeout now set on the socket, to skip redundant calls.
    timeout_set: Option<Duration>,
    frame_timeout: Duration,
    budget: &'a ByteBudget,
}

/// Bytes charged to the budget for the frame being read; given back when
/// the frame is complete or abandoned.
struct Charge<'a> {
    budget: &'a ByteBudget,
    bytes: usize,
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

impl<'a> Inbound<'a> {
    pub fn new(
        stream: Conn,
        buffer_bytes: usize,
        frame_timeout: Duration,
        budget: &'a ByteBudget,
    ) -> Inbound<'a> {
        Inbound {
            reader: BufReader::with_capacity(buffer_bytes, stream),
            timeout_set: None,
            frame_timeout,
            budget,
        }
    }

    /// True if bytes of a next frame are already buffered (a pipelining
    /// client: its reply can wait to be flushed with the next one).
    pub fn has_buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// True if a whole next frame is already buffered: reading it cannot
    /// block (a pipelining client's next request).
    pub fn has_whole_frame(&self) -> bool {
        let buffered = self.reader.buffer();
        match buffered.get(..FRAME_HEADER_BYTES) {
            Some(header) => {
                let mut len = [0u8; FRAME_HEADER_BYTES];
                len.copy_from_slice(header);
                buffered.len() - FRAME_HEADER_BYTES >= u32::from_be_bytes(len) as usize
            }
            None => false,
        }
    }

    /// Read one frame's payload of at most `frame_bytes_max` bytes.
    ///
    /// `wait_until` bounds the wait for the frame's first byte (`None`:
    /// forever); running out of it is an I/O timeout ([`is_timeout`]).
    /// From the first byte on, the frame must be complete within the frame
    /// timeout and before `wait_until`: else [`Error::TooSlow`].
    ///
    /// [`is_timeout`]: crate::protocol::frame::is_timeout
    pub fn read_frame(
        &mut self,
        frame_bytes_max: u32,
        wait_until: Option<Instant>,
    ) -> Result<Option<Vec<u8>>> {
        // 1. Wait for the first byte; end of stream here is a clean close.
        if self.reader.buffer().is_empty() {
            self.set_timeout(wait_until.map(remaining).transpose()?)?;
            let available = loop {
                match self.reader.fill_buf() {
                    Ok(bytes) => break bytes.len(),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io("reading frame header", e)),
                }
            };
            if available == 0 {
                return Ok(None);
            }
        }
        // 2. The frame has begun: it has until `deadline`.
        let started = Instant::now();
        let mut deadline = started + self.frame_timeout;
        if let Some(until) = wait_until {
            deadline = deadline.min(until.max(started));
        }
        let mut header = [0u8; FRAME_HEADER_BYTES];
        self.read_exact_by(&mut header, deadline)?;
        let len = u32::from_be_bytes(header);
        if len == 0 {
            return Err(Error::Malformed(
                "empty frame: a payload starts with its type byte".into(),
            ));
        }
        if len > frame_bytes_max {
            return Err(Error::FrameTooLarge {
                len: u64::from(len),
                max: u64::from(frame_bytes_max),
            });
        }
        // 3. The payload, in steps; every step after the first is charged
        // to the shared budget.
        let len = len as usize;
        let mut charge = Charge { budget: self.budget, bytes: 0 };
        let mut payload = Vec::new();
        while payload.len() < len {
            let step = (len - payload.len()).min(PARTIAL_FRAME_STEP_BYTES);
            if !payload.is_empty() {
                if !self.budget.try_take(step) {
                    return Err(Error::Busy(
                        "the server holds as many bytes of partial frames as it may".into(),
                    ));
                }
                charge.bytes += step;
            }
            let from = payload.len();
            payload.resize(from + step, 0);
            self.read_exact_by(&mut payload[from..], deadline)?;
        }
        drop(charge);
        Ok(Some(payload))
    }

    /// Fill `buf` from the buffer and the socket, by `deadline`.
    fn read_exact_by(&mut self, mut buf: &mut [u8], deadline: Instant) -> Result<()> {
        while !buf.is_empty() {
            if self.reader.buffer().is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(self.too_slow());
                }
                self.set_timeout(Some(left))?;
            }
            match self.reader.read(buf) {
                Ok(0) => return Err(Error::UnexpectedEof),
                Ok(n) => buf = &mut buf[n..],
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(self.too_slow())
                }
                Err(e) => return Err(Error::io("reading frame", e)),
            }
        }
        Ok(())
    }

    fn too_slow(&self) -> Error {
        Error::TooSlow { timeout_ms: self.frame_timeout.as_millis() as u64 }
    }

    /// Set the socket's read timeout, unless it already is `timeout`.
    fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        if self.timeout_set != timeout {
            self.reader
                .get_ref()
                .set_read_timeout(timeout)
                .map_err(|e| Error::io("setting the read timeout", e))?;
            self.timeout_set = timeout;
        }
        Ok(())
    }
}

/// Time left until `until`; an already passed deadline is a timeout.
fn remaining(until: Instant) -> Result<Duration> {
    let left = until.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::io("waiting for a frame", std::io::Error::from(ErrorKind::TimedOut)));
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    /// (the server's side, the client's side).
    fn pair() -> (Conn, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (Conn::plain(server), client)
    }

    #[test]
    fn whole_frames_are_read_and_a_clean_close_is_none() {
        let (server, mut client) = pair();
        let budget = ByteBudget::new(1 << 20);
        let mut inbound = Inbound::new(server, 1024, Duration::from_secs(5), &budget);
        client.write_all(&[0, 0, 0, 3, 1, 2, 3]).unwrap();
        assert_eq!(inbound.read_frame(16, None).unwrap(), Some(vec![1, 2, 3]));
        drop(client);
        assert_eq!(inbound.read_frame(16, None).unwrap(), None);
        assert_eq!(budget.used(), 0, "the budget is given back");
    }

    #[test]
    fn a_frame_that_stalls_after_its_first_byte_is_too_slow() {
        // Goal: slow loris. Method: send one byte of a header and stop;
        // the read ends with TooSlow after the frame timeout, although the
        // caller would have waited forever for a frame to begin.
        let (server, mut client) = pair();
        let budget = ByteBudget::new(1 << 20);
        let mut inbound = Inbound::new(server, 1024, Duration::from_millis(200), &budget);
        client.write_all(&[0]).unwrap();
        let started = Instant::now();
        assert!(matches!(inbound.read_frame(16, None), Err(Error::TooSlow { .. })));
        assert!(started.elapsed() >= Duration::from_millis(150));
    }

    #[test]
    fn a_spent_budget_refuses_the_frame_and_an_abandoned_frame_gives_bytes_back() {
        // Goal: the first step of a frame is free, a further step that does
        // not fit the shared budget refuses the frame, and a frame cut off
        // by its deadline gives back what it took. Method: a 1 MiB prefix
        // and one step and a bit of payload; first with a budget smaller
        // than a step, then with one of two steps (the frame then stalls).
        let budget = ByteBudget::new(PARTIAL_FRAME_STEP_BYTES - 1);
        let (server, mut client) = pair();
        let mut inbound = Inbound::new(server, 1024, Duration::from_millis(300), &budget);
        client.write_all(&(1u32 << 20).to_be_bytes()).unwrap();
        client.write_all(&vec![7; PARTIAL_FRAME_STEP_BYTES + 100]).unwrap();
        assert!(matches!(inbound.read_frame(2 << 20, None), Err(Error::Busy(_))));
        assert_eq!(budget.used(), 0);

        let budget = ByteBudget::new(2 * PARTIAL_FRAME_STEP_BYTES);
        let (server, mut client) = pair();
        let mut inbound = Inbound::new(server, 1024, Duration::from_millis(200), &budget);
        client.write_all(&(1u32 << 20).to_be_bytes()).unwrap();
        client.write_all(&vec![7; PARTIAL_FRAME_STEP_BYTES + 100]).unwrap();
        assert!(matches!(inbound.read_frame(2 << 20, None), Err(Error::TooSlow { .. })));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_wait_for_a_first_byte_is_bounded_by_the_caller() {
        let (server, _client) = pair();
        let budget = ByteBudget::new(1 << 20);
        let mut inbound = Inbound::new(server, 1024, Duration::from_secs(5), &budget);
        let until = Instant::now() + Duration::from_millis(100);
        let err = inbound.read_frame(16, Some(until)).unwrap_err();
        assert!(crate::protocol::frame::is_timeout(&err), "{err}");
    }
}
