//! Any byte stream through the frame reader: no panic, no frame over the limit.
#![no_main]

use kvstore::protocol::read_frame;
use libfuzzer_sys::fuzz_target;

/// A small limit, so the fuzzer reaches the "too large" path quickly.
const LIMIT: u32 = 4096;

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    while let Ok(Some(frame)) = read_frame(&mut input, LIMIT) {
        assert!(!frame.is_empty() && frame.len() <= LIMIT as usize);
    }
});
