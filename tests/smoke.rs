//! Smoke test for the harness itself: a node starts on --port 0 and answers.
mod common;
use common::*;

#[test]
fn node_starts_on_port_zero_and_answers() {
    // Goal: the harness finds the real port from the log and can talk to it.
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start("leader", dir.path(), &[]);
    assert_ne!(node.port(), 0);
    let mut c = node.client();
    assert_eq!(c.put(b"a", b"1").unwrap(), 1);
    assert_eq!(c.get(b"a").unwrap(), Some(b"1".to_vec()));
}
