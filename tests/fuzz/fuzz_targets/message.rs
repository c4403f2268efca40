//! Any payload through the message decoder: no panic, and whatever decodes
//! re-encodes to the same bytes — except FOLLOWER_HELLO (a port of 0 or an
//! all-zero cluster id mean "absent" and are re-encoded in the short form)
//! and ERROR (invalid UTF-8 in its text is replaced when decoded).
#![no_main]

use kvstore::protocol::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data) {
        let mut again = Vec::new();
        message.encode_payload(&mut again);
        if !matches!(message, Message::FollowerHello { .. } | Message::Error { .. }) {
            assert_eq!(again, data);
        }
        assert_eq!(Message::decode(&again).unwrap(), message);
    }
});
