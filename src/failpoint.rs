//! Failpoints: named places where a test can make the process die.
//!
//! A crash test must kill a node *inside* an operation (between the
//! `ftruncate` and the fsync of a divergence repair, say), which no signal
//! sent from outside can aim at. So such places call [`hit`] with a name;
//! when the environment variable `KVSTORE_FAILPOINT` names it, the process
//! logs one line and aborts on the spot, exactly like a power cut as far as
//! the process is concerned. Unset (always, in production), a hit costs one
//! load of a cached value.

use std::sync::OnceLock;

/// The environment variable that arms one failpoint.
pub const FAILPOINT_ENV: &str = "KVSTORE_FAILPOINT";

/// Abort the process here if `KVSTORE_FAILPOINT` is `name`.
pub fn hit(name: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var(FAILPOINT_ENV).ok());
    if armed.as_deref() == Some(name) {
        log::error!("[failpoint] {name}: aborting the process as {FAILPOINT_ENV} asks");
        std::process::abort();
    }
}
