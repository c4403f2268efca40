//! Event-loop mode (`--threads T`): the `-c` connections are dealt out to T
//! threads (connection i to thread i mod T), and each thread drives all of
//! its connections from one `mio` poll loop over non-blocking sockets, the
//! way `redis-benchmark` drives all of its clients from one thread. The
//! client then runs T threads however many connections it opens, so its own
//! scheduling no longer stretches the tail it measures.
//!
//! ## One turn of the loop
//!
//! 1. `poll` waits until some socket is readable or writable, or a tick
//!    ([`POLL_TICK`]) passes so that the loop looks at the abort flag and
//!    the reply deadline.
//! 2. For each ready connection: read what the socket holds, a chunk at a
//!    time, until it would block. After each chunk, take every complete
//!    frame off the front of the connection's input buffer: each is the
//!    reply to the oldest request in flight (the server answers in order).
//! 3. Then, for each ready connection again: top up its window with new
//!    requests, encoded into its output buffer, and write as much of that
//!    buffer as the socket takes.
//!
//! Reading every ready connection before writing to any is what keeps the
//! loop fair, and it is what `redis-benchmark` does (it writes a client's
//! next request in the loop turn after the one that read its reply). A loop
//! that wrote a connection's next request as soon as it had read a reply,
//! and then read that connection again, would find the reply already there
//! whenever the server thread was still on a core: one connection could
//! ping-pong with the server while the others waited. Measured on 2 cores,
//! that loop reported a p50 of about 25 us at `-c 256` (the ping-pongs)
//! beside a mean of 6 ms and a worse p99: a client artefact, not the
//! server's latency.
//!
//! ## Bytes arrive and leave in pieces
//!
//! A non-blocking socket gives and takes what it can at that moment:
//!
//! - A `read` may stop inside a reply's length prefix or payload. The bytes
//!   wait in the input buffer until [`split_frame`] (`src/protocol/frame.rs`)
//!   finds the frame whole; it checks the length prefix as soon as its 4
//!   bytes are there, before waiting for the payload.
//! - A `write` may take only part of the output buffer (the kernel's send
//!   buffer is full because the server is not reading fast enough). The
//!   rest stays in the buffer and is written when the socket becomes
//!   writable again; new requests are appended behind it.
//!
//! mio's readiness is edge-triggered: an event says the state *changed*,
//! not that it lasts. So a connection reads until `WouldBlock` (bytes left
//! in the socket would never be announced again), and a connection with
//! output left over waits for the writable event that comes when the send
//! buffer drains.
//!
//! ## Timing
//!
//! A request's clock starts just before the write that sends it (the
//! requests added to a window in one turn share one start) and stops when
//! its reply has been decoded. If the send buffer is full, the wait for it
//! to drain is counted: the request has been issued and the server has not
//! taken it. `redis-benchmark` starts its clock the same way.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream, ToSocketAddrs};
use std::sync::atomic::AtomicU64;
use std::thread::{self, Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use kvstore::limits::FRAME_BYTES_MAX;
use kvstore::protocol::frame::split_frame;
use kvstore::protocol::Message;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::{
    count_progress, drive_thread, BenchResult, Driver, Op, Phase, Shared, Stats, WorkerOutcome,
    CONNECT_TIMEOUT, REPLY_TIMEOUT,
};

/// Bytes asked for per `read`: 64 KiB holds several hundred small replies,
/// so a full window of them is usually one system call, and it is small
/// enough to sit on each loop thread without thought.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The longest `poll` waits before the loop looks at the abort flag and the
/// reply deadline again: short beside [`REPLY_TIMEOUT`], long enough that an
/// idle loop costs nothing.
const POLL_TICK: Duration = Duration::from_millis(100);

/// Connect all `-c` connections, deal them out to `threads` event loops and
/// start one thread per loop. Every thread waits at `shared.ready` once set
/// up.
pub fn start<'scope>(
    scope: &'scope Scope<'scope, '_>,
    shared: &'scope Shared,
    threads: usize,
) -> BenchResult<Vec<ScopedJoinHandle<'scope, BenchResult<WorkerOutcome>>>> {
    let args = shared.args;
    let port = args.port.ok_or("event-loop mode needs --port")?;
    let address = resolve(&args.host, port)?;
    let mut shares: Vec<Vec<(usize, StdTcpStream)>> = (0..threads).map(|_| Vec::new()).collect();
    for id in 0..args.connections {
        let stream = StdTcpStream::connect_timeout(&address, CONNECT_TIMEOUT)
            .map_err(|e| format!("connection {id}: connecting to {address}: {e}"))?;
        shares[id % threads].push((id, stream));
    }

    // Every loop is built before any thread starts: a thread started
    // before a later loop failed would wait at the barrier for ever.
    let mut event_loops = Vec::with_capacity(threads);
    for (index, share) in shares.into_iter().enumerate() {
        event_loops
            .push(EventLoop::new(share).map_err(|e| format!("event-loop thread {index}: {e}"))?);
    }
    let mut handles = Vec::with_capacity(threads);
    for (index, mut event_loop) in event_loops.into_iter().enumerate() {
        let handle = thread::Builder::new().name(format!("bench-loop-{index}")).spawn_scoped(
            scope,
            move || -> BenchResult<WorkerOutcome> {
                drive_thread(shared, &mut event_loop)
                    .map_err(|e| format!("event-loop thread {index}: {e}").into())
            },
        )?;
        handles.push(handle);
    }
    Ok(handles)
}

/// `host:port` as the first address it resolves to.
fn resolve(host: &str, port: u16) -> BenchResult<SocketAddr> {
    let mut addresses =
        (host, port).to_socket_addrs().map_err(|e| format!("resolving {host}:{port}: {e}"))?;
    addresses.next().ok_or_else(|| format!("{host}:{port} resolves to no address").into())
}

/// One thread's share of the connections and the poll that watches them.
struct EventLoop {
    poll: Poll,
    events: Events,
    /// Indexed by the [`Token`] each socket was registered with.
    connections: Vec<Connection>,
    /// Where each `read` lands before its bytes join a connection's input.
    scratch: Vec<u8>,
}

impl EventLoop {
    /// Make the sockets non-blocking and register each for both readiness
    /// events, once: edge-triggered registration never needs renewing.
    fn new(share: Vec<(usize, StdTcpStream)>) -> BenchResult<EventLoop> {
        let poll = Poll::new().map_err(|e| format!("creating the poll: {e}"))?;
        let mut connections = Vec::with_capacity(share.len());
        for (index, (id, stream)) in share.into_iter().enumerate() {
            let setup = |e| format!("connection {id}: setting up the socket: {e}");
            stream.set_nodelay(true).map_err(setup)?;
            stream.set_nonblocking(true).map_err(setup)?;
            let mut stream = TcpStream::from_std(stream);
            poll.registry()
                .register(&mut stream, Token(index), Interest::READABLE | Interest::WRITABLE)
                .map_err(setup)?;
            connections.push(Connection::new(id, stream));
        }
        // At most one event per connection per poll.
        let events = Events::with_capacity(connections.len());
        Ok(EventLoop { poll, events, connections, scratch: vec![0; READ_CHUNK_BYTES] })
    }
}

impl Driver for EventLoop {
    fn run_phase(&mut self, shared: &Shared, phase: Phase, stats: &mut Stats) -> BenchResult<()> {
        let window = phase.window(shared.args);
        let progress = shared.progress(phase);
        // ops[i] is what connections[i] still has to send.
        let mut ops: Vec<_> =
            self.connections.iter().map(|c| shared.args.ops(phase, c.id)).collect();

        // Every connection starts by filling its window: no event is needed
        // for that.
        for (connection, ops) in self.connections.iter_mut().zip(&mut ops) {
            connection.ops_done = false;
            connection.send(ops, window, shared).map_err(|e| connection.label(e))?;
        }
        let mut deadlines_checked_at = Instant::now();
        // A scan of a few hundred flags per turn costs far less than the
        // turn's system calls.
        while !self.connections.iter().all(|c| c.is_finished(shared)) {
            match self.poll.poll(&mut self.events, Some(POLL_TICK)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("polling the sockets: {e}").into()),
            }
            // Step 2 (module docs): the replies of every ready connection.
            for event in self.events.iter() {
                if !(event.is_readable() || event.is_read_closed() || event.is_error()) {
                    continue;
                }
                let Some(connection) = self.connections.get_mut(event.token().0) else {
                    continue; // only tokens of our own connections are registered
                };
                connection
                    .receive(&mut self.scratch, stats, progress)
                    .map_err(|e| connection.label(e))?;
            }
            // Step 3: then their next requests (and any output left over).
            for event in self.events.iter() {
                let index = event.token().0;
                let (Some(connection), Some(ops)) =
                    (self.connections.get_mut(index), ops.get_mut(index))
                else {
                    continue;
                };
                connection.send(ops, window, shared).map_err(|e| connection.label(e))?;
            }
            if deadlines_checked_at.elapsed() >= POLL_TICK {
                for connection in &self.connections {
                    connection.check_deadline().map_err(|e| connection.label(e))?;
                }
                deadlines_checked_at = Instant::now();
            }
        }
        Ok(())
    }
}

/// One connection's buffers and the requests it has in flight.
struct Connection {
    /// The connection's number, 0..c: it picks the connection's keys.
    id: usize,
    stream: TcpStream,
    /// Encoded requests; `output[written..]` is not written yet.
    output: Vec<u8>,
    written: usize,
    /// Bytes received that do not make a whole frame yet.
    input: Vec<u8>,
    /// Requests written (or being written) and not answered, oldest first,
    /// with the moment their write began.
    in_flight: VecDeque<(Op, Instant)>,
    /// This phase's operations have all been handed out.
    ops_done: bool,
}

impl Connection {
    fn new(id: usize, stream: TcpStream) -> Connection {
        Connection {
            id,
            stream,
            output: Vec::new(),
            written: 0,
            input: Vec::new(),
            in_flight: VecDeque::new(),
            ops_done: false,
        }
    }

    /// Nothing left to send (or the run is aborting) and nothing to wait for.
    fn is_finished(&self, shared: &Shared) -> bool {
        self.in_flight.is_empty() && (self.ops_done || shared.aborted())
    }

    fn label(&self, e: impl std::fmt::Display) -> String {
        format!("connection {}: {e}", self.id)
    }

    /// Top up the window with new requests (unless the run is aborting) and
    /// write what the socket takes.
    fn send(
        &mut self,
        ops: &mut dyn Iterator<Item = Op>,
        window: usize,
        shared: &Shared,
    ) -> BenchResult<()> {
        if self.in_flight.len() < window && !self.ops_done && !shared.aborted() {
            let sent_at = Instant::now();
            while self.in_flight.len() < window {
                let Some(op) = ops.next() else {
                    self.ops_done = true;
                    break;
                };
                op.request(&shared.value).encode_frame(&mut self.output);
                self.in_flight.push_back((op, sent_at));
            }
        }
        self.flush()
    }

    /// Write the output buffer until it is empty or the socket is full.
    fn flush(&mut self) -> BenchResult<()> {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err("the socket took no bytes of a request".into()),
                Ok(n) => self.written += n,
                // Full: the rest goes when the socket is writable again.
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("writing requests: {e}").into()),
            }
        }
        self.output.clear();
        self.written = 0;
        Ok(())
    }

    /// Read everything the socket holds and count every complete reply.
    fn receive(
        &mut self,
        scratch: &mut [u8],
        stats: &mut Stats,
        progress: Option<&AtomicU64>,
    ) -> BenchResult<()> {
        while self.read_chunk(scratch)? {
            self.take_replies(stats, progress)?;
        }
        Ok(())
    }

    /// Read one chunk from the socket onto the input buffer: `Ok(false)`
    /// once the socket is empty (the edge-triggered poll announces the next
    /// bytes that arrive).
    fn read_chunk(&mut self, scratch: &mut [u8]) -> BenchResult<bool> {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => {
                    self.input.extend_from_slice(&scratch[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading replies: {e}").into()),
            }
        }
    }

    /// Take every complete frame off the front of the input buffer: each is
    /// the reply to the oldest request in flight. A partial frame stays.
    fn take_replies(&mut self, stats: &mut Stats, progress: Option<&AtomicU64>) -> BenchResult<()> {
        let mut used = 0;
        while let Some((payload, frame_bytes)) = split_frame(&self.input[used..], FRAME_BYTES_MAX)?
        {
            let reply = Message::decode(payload)?;
            let Some((op, sent_at)) = self.in_flight.pop_front() else {
                return Err(format!("a {} reply to no request", reply.name()).into());
            };
            stats.record_latency(sent_at)?;
            stats.tally(op, Ok(reply))?;
            count_progress(progress);
            used += frame_bytes;
        }
        self.input.drain(..used);
        Ok(())
    }

    /// Fail if the oldest request has waited longer than [`REPLY_TIMEOUT`].
    fn check_deadline(&self) -> BenchResult<()> {
        match self.in_flight.front() {
            Some((op, sent_at)) if sent_at.elapsed() > REPLY_TIMEOUT => {
                Err(format!("no reply to {op:?} within {} s", REPLY_TIMEOUT.as_secs()).into())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream as StdTcpStream};
    use std::thread::{self, JoinHandle};

    use clap::Parser;
    use kvstore::limits::VALUE_BYTES_MAX;
    use kvstore::protocol::read_frame;

    use super::*;
    use crate::{measure, Args};

    /// Requests a stand-in server answered: (PUTs, GETs).
    type Served = (u64, u64);

    /// A stand-in for kvstore on `listener`, for `connections` connections:
    /// it answers PUT with OK and GET with NOT_FOUND, in order, and writes
    /// every reply one byte per `write` so that the client's reads end at
    /// every possible point inside a frame.
    fn stand_in_server(listener: TcpListener, connections: usize) -> JoinHandle<Served> {
        thread::spawn(move || {
            let mut servers = Vec::new();
            for _ in 0..connections {
                let (stream, _) = listener.accept().unwrap();
                servers.push(thread::spawn(move || serve_byte_by_byte(stream)));
            }
            servers
                .into_iter()
                .map(|s| s.join().unwrap())
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        })
    }

    fn serve_byte_by_byte(mut stream: StdTcpStream) -> Served {
        stream.set_nodelay(true).unwrap();
        let mut served = (0, 0);
        while let Some(payload) = read_frame(&mut stream, FRAME_BYTES_MAX).unwrap() {
            let reply = match Message::decode(&payload).unwrap() {
                Message::Put { .. } => {
                    served.0 += 1;
                    Message::Ok { lsn: served.0 }
                }
                Message::Get { .. } => {
                    served.1 += 1;
                    Message::NotFound
                }
                other => panic!("the load generator sent {}", other.name()),
            };
            let mut frame = Vec::new();
            reply.encode_frame(&mut frame);
            for byte in frame {
                stream.write_all(&[byte]).unwrap();
            }
        }
        served
    }

    #[test]
    fn every_reply_is_counted_when_bytes_move_in_pieces() {
        // Goal: the loop pairs every reply with its request however the
        // bytes are cut. Method: replies arrive a byte at a time (partial
        // reads), and a window of four PUTs of the largest value (4 MiB each)
        // is more than loopback's socket buffers take at once (short
        // writes); three connections on two loop threads, mixed PUTs and
        // GETs, every count checked.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let server = stand_in_server(listener, 3);
        let value_bytes = VALUE_BYTES_MAX.to_string();
        let args = Args::try_parse_from([
            "kv_bench",
            "--port",
            &port,
            "-c",
            "3",
            "--threads",
            "2",
            "-n",
            "30",
            "--pipeline",
            "4",
            "-d",
            &value_bytes,
            "-t",
            "mixed",
            "--warmup",
            "2",
            "--quiet",
        ])
        .unwrap();
        args.check().unwrap();

        let (total, _) = measure(&args).unwrap();
        let (puts, gets) = server.join().unwrap();

        assert_eq!(total.count, 30, "measured replies");
        assert_eq!(puts + gets, 30 + 3 * 2, "requests served, warm-up included");
        assert_eq!(total.errors, 0);
        assert_eq!(total.latency_us.len(), 30, "one latency per measured reply");
        assert!(total.not_found > 0 && total.not_found < 30, "a mix: {} GETs", total.not_found);
    }
}
