//! Any bytes as the first frames of a connection to a node with
//! `--auth-file`: the server's side of the handshake never panics, and
//! never accepts a proof it did not compute. The input is split in two:
//! the would-be AUTH_HELLO and the would-be AUTH_PROOF (`src/auth.rs`).
#![no_main]

use std::sync::Arc;

use kvstore::auth::{Secret, ServerHandshake, ServerKeys};
use kvstore::protocol::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let secret = Secret::from_bytes(b"correct horse battery staple").unwrap();
    let keys = ServerKeys::new(Arc::new(secret), None);
    let Some((&cut, rest)) = data.split_first() else { return };
    let (hello, proof) = rest.split_at(usize::from(cut).min(rest.len()));
    let Ok(hello) = Message::decode(hello) else { return };
    let Ok((handshake, _challenge)) = ServerHandshake::start(&hello, [7; 32]) else { return };
    if let Ok(proof) = Message::decode(proof) {
        // Guessing a 32-byte HMAC is not something a fuzzer does: a proof
        // made up from the input must always be refused.
        assert!(handshake.finish(&keys, &proof).is_err());
    }
});
