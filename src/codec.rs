//! Checked reading of untrusted bytes, big-endian (network order) throughout.
//!
//! Every decoder in kvstore — frames, messages, WAL records — reads through a
//! [`Decoder`]. It never panics and never allocates a byte string before
//! checking that the bytes are really there: a length field that claims more
//! than remains is an error, not an allocation.

use crate::error::{Error, Result};

/// A cursor over a byte slice that a peer (or a disk) gave us.
pub struct Decoder<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(bytes: &'a [u8]) -> Decoder<'a> {
        Decoder { bytes, offset: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    /// Read the next `count` bytes, or fail naming `what` was cut short.
    pub fn take(&mut self, count: usize, what: &str) -> Result<&'a [u8]> {
        if count > self.remaining() {
            return Err(Error::Malformed(format!(
                "{what}: needs {count} bytes, only {} remain",
                self.remaining()
            )));
        }
        let slice = &self.bytes[self.offset..self.offset + count];
        self.offset += count;
        Ok(slice)
    }

    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u16(&mut self, what: &str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// Read `[len u32][bytes]`, refusing a length above `max` before copying.
    pub fn bytes_u32(&mut self, what: &'static str, max: u32) -> Result<Vec<u8>> {
        let len = self.u32(what)?;
        if len > max {
            return Err(Error::TooLarge { what, len: u64::from(len), max: u64::from(max) });
        }
        Ok(self.take(len as usize, what)?.to_vec())
    }

    /// Fail if any bytes are left over: a length field and the frame disagree.
    pub fn finish(&self, what: &str) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(Error::Malformed(format!("{what}: {extra} unexpected trailing bytes"))),
        }
    }
}
