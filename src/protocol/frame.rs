//! Length-prefixed frames: `[length u32 big-endian][payload]` (week 2).
//!
//! TCP is a byte stream, not a message stream: one `read` may return half a
//! message or three. The length prefix restores the message boundaries. Two
//! rules make it safe against a hostile or broken peer:
//!
//! 1. The length is checked against the limit **before** anything is
//!    allocated for the payload, so a prefix of `0xFFFFFFFF` costs nothing.
//! 2. End of stream exactly between frames is a clean close (`Ok(None)`);
//!    end of stream inside a frame is an error ([`Error::UnexpectedEof`]).
//!
//! A zero length is refused too: every payload starts with its type byte.
//!
//! [`read_frame`] is for blocking sockets: it waits inside `read` until the
//! whole frame is there. A reader on a non-blocking socket (the event-loop
//! load generator, `examples/kv_bench/event_loop.rs`) gathers bytes itself
//! and asks [`split_frame`] whether they hold a complete frame yet; the same
//! two checks apply, on the length prefix, before the payload has arrived.

use std::io::{ErrorKind, Read, Write};

use crate::error::{Error, Result};
use crate::protocol::message::Message;

/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Read one frame's payload. `Ok(None)` means the peer closed cleanly.
pub fn read_frame<R: Read>(reader: &mut R, frame_bytes_max: u32) -> Result<Option<Vec<u8>>> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut filled = 0;
    while filled < FRAME_HEADER_BYTES {
        match reader.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(Error::UnexpectedEof),
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading frame header", e)),
        }
    }
    let len = u32::from_be_bytes(header);
    check_length(len, frame_bytes_max)?;
    let mut payload = vec![0u8; len as usize];
    reader.read_exact(&mut payload).map_err(|e| match e.kind() {
        ErrorKind::UnexpectedEof => Error::UnexpectedEof,
        _ => Error::io("reading frame payload", e),
    })?;
    Ok(Some(payload))
}

/// The first frame in `buffer`, if all of it is there: `Ok(Some((payload,
/// frame_bytes)))`, where `frame_bytes` (4 + the payload's length) is how much
/// of `buffer` the frame used. `Ok(None)` means more bytes are needed: the
/// buffer is cut inside the length prefix or inside the payload.
///
/// The length prefix is checked as soon as its 4 bytes are there, so an
/// oversized or empty frame is refused before the caller waits for (or
/// buffers) its payload.
pub fn split_frame(buffer: &[u8], frame_bytes_max: u32) -> Result<Option<(&[u8], usize)>> {
    let Some(header) = buffer.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*header);
    check_length(len, frame_bytes_max)?;
    let frame_bytes = FRAME_HEADER_BYTES + len as usize;
    match buffer.get(FRAME_HEADER_BYTES..frame_bytes) {
        Some(payload) => Ok(Some((payload, frame_bytes))),
        None => Ok(None),
    }
}

/// The two rules on a length prefix: not zero, not above the limit.
fn check_length(len: u32, frame_bytes_max: u32) -> Result<()> {
    if len == 0 {
        return Err(Error::Malformed("empty frame: a payload starts with its type byte".into()));
    }
    if len > frame_bytes_max {
        return Err(Error::FrameTooLarge { len: u64::from(len), max: u64::from(frame_bytes_max) });
    }
    Ok(())
}

/// Encode `message` as one frame and write it (the caller flushes).
pub fn write_message<W: Write>(writer: &mut W, message: &Message) -> Result<()> {
    let mut out = Vec::with_capacity(64);
    message.encode_frame(&mut out);
    writer.write_all(&out).map_err(|e| Error::io("writing frame", e))
}

/// Start a frame in `out`: reserve the length prefix and return where it is.
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    at
}

/// Finish the frame begun at `at`: write the payload length into its prefix.
pub fn end_frame(out: &mut [u8], at: usize) {
    let len = (out.len() - at - FRAME_HEADER_BYTES) as u32;
    out[at..at + FRAME_HEADER_BYTES].copy_from_slice(&len.to_be_bytes());
}

/// True if `err` is a socket read or write timeout (not a broken peer).
pub fn is_timeout(err: &Error) -> bool {
    matches!(err, Error::Io { source, .. }
        if matches!(source.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn clean_eof_between_frames_is_none() {
        let mut input: &[u8] = &[];
        assert!(read_frame(&mut input, 1024).unwrap().is_none());
    }

    #[test]
    fn eof_inside_header_or_payload_is_an_error() {
        let mut input: &[u8] = &[0, 0];
        assert!(matches!(read_frame(&mut input, 1024), Err(Error::UnexpectedEof)));
        let mut input: &[u8] = &[0, 0, 0, 5, 1, 2];
        assert!(matches!(read_frame(&mut input, 1024), Err(Error::UnexpectedEof)));
    }

    #[test]
    fn oversize_length_is_refused_before_allocation() {
        // Goal: a 4 GiB length prefix is refused without allocating; the
        // payload bytes are never even looked at.
        let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        match read_frame(&mut input, 1024) {
            Err(Error::FrameTooLarge { len, max }) => assert_eq!((len, max), (0xffff_ffff, 1024)),
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
    }

    #[test]
    fn zero_length_is_refused() {
        let mut input: &[u8] = &[0, 0, 0, 0];
        assert!(matches!(read_frame(&mut input, 1024), Err(Error::Malformed(_))));
    }

    #[test]
    fn split_frame_waits_for_the_whole_frame() {
        // Goal: a frame arriving in pieces is reported only once complete,
        // and a following frame's first bytes are left alone. Method: feed
        // every prefix of two encoded frames.
        let mut wire = Vec::new();
        Message::Get { key: b"k".to_vec() }.encode_frame(&mut wire);
        let first_bytes = wire.len();
        Message::NotFound.encode_frame(&mut wire);
        for cut in 0..first_bytes {
            assert_eq!(split_frame(&wire[..cut], 1024).unwrap(), None, "cut at {cut}");
        }
        for cut in first_bytes..=wire.len() {
            let (payload, used) = split_frame(&wire[..cut], 1024).unwrap().unwrap();
            assert_eq!(used, first_bytes);
            assert_eq!(Message::decode(payload).unwrap(), Message::Get { key: b"k".to_vec() });
        }
    }

    #[test]
    fn split_frame_refuses_a_bad_length_before_its_payload() {
        // Goal: the same two rules as read_frame, applied on the prefix alone.
        assert!(matches!(
            split_frame(&[0xff, 0xff, 0xff, 0xff], 1024),
            Err(Error::FrameTooLarge { len: 0xffff_ffff, max: 1024 })
        ));
        assert!(matches!(split_frame(&[0, 0, 0, 0], 1024), Err(Error::Malformed(_))));
    }

    proptest! {
        // Goal: a stream of frames cut into reads of any sizes decodes to the
        // same messages as the blocking reader gives. Method: split the
        // encoded stream at random points, append piece by piece to a buffer
        // and take frames off its front as split_frame finds them.
        #[test]
        fn split_frame_reassembles_any_cuts(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8),
            cuts in proptest::collection::vec(1usize..30, 1..64),
        ) {
            let sent: Vec<Message> = values.into_iter().map(|value| Message::Value { value }).collect();
            let mut wire = Vec::new();
            for message in &sent {
                message.encode_frame(&mut wire);
            }
            let mut received = Vec::new();
            let mut buffer = Vec::new();
            let mut at = 0;
            for step in cuts.iter().cycle() {
                if at == wire.len() {
                    break;
                }
                let end = (at + step).min(wire.len());
                buffer.extend_from_slice(&wire[at..end]);
                at = end;
                while let Some((payload, used)) = split_frame(&buffer, 1024).unwrap() {
                    received.push(Message::decode(payload).unwrap());
                    buffer.drain(..used);
                }
            }
            prop_assert!(buffer.is_empty());
            prop_assert_eq!(received, sent);
        }

        // Goal: arbitrary bytes never panic the frame reader.
        #[test]
        fn frame_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut input: &[u8] = &bytes;
            while let Ok(Some(_)) = read_frame(&mut input, 16) {}
        }
    }
}
