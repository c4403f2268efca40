//! Short scheduler slices for the threads that answer requests.
//!
//! ## Why
//!
//! One thread per connection means every request wakes a thread, and on a
//! machine with fewer cores than runnable threads the woken thread waits
//! for a core. Linux's scheduler (EEVDF, since 6.6) runs the runnable
//! thread with the earliest *virtual deadline*: roughly, when it became
//! eligible plus its **slice**, the time it asks to run — by default about
//! a millisecond, more on machines with more cores. A connection thread
//! needs 10 to 30 µs per request but, scheduled as if it needed a whole
//! default slice, it lands behind every thread that woke just before it.
//!
//! Measured at 16 connections on 2 cores (`docs/BENCHMARKS.md`, "Tails"):
//! the server's own time for a PUT had a p99 of 4.4 ms, about a timeslice,
//! while the p50 was 3 µs. `perf sched` showed the connection threads
//! preempted in 5% of their switches and waiting for a core up to 13 ms;
//! taking the group commit's lock out of the path moved the wait elsewhere
//! but did not shorten it. Asking for 100 µs slices cut the client's p99
//! from 4–7 ms to about 1.5 ms on the same machine.
//!
//! Since Linux 6.12 a normal (`SCHED_OTHER`) thread may ask for its own
//! slice, between 100 µs and 100 ms, through `sched_setattr(2)`'s
//! `sched_runtime`; no privilege is needed. A shorter slice means an earlier
//! deadline after each wake-up (the thread runs sooner) and that it is
//! asked to yield sooner if it runs long (fair to the others). Older
//! kernels accept the call and ignore the value; other systems skip it.
//!
//! `--request-slice-us` sets the slice (default 100); 0 leaves the
//! scheduler's default. It applies to the threads on a request's path:
//! connection threads (including a follower's sender on the leader), the
//! leader's ACK readers, and a follower's replication thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The slice connection threads ask for, in µs (`--request-slice-us`).
pub const REQUEST_SLICE_US_DEFAULT: u64 = 100;

/// The slice to ask for, in ns; 0: leave the default.
static SLICE_NS: AtomicU64 = AtomicU64::new(REQUEST_SLICE_US_DEFAULT * 1000);

/// Whether a refusal was logged already (once per process is enough).
static REFUSAL_LOGGED: AtomicBool = AtomicBool::new(false);

/// Set the slice every request thread asks for from now on (0: none).
pub fn set_request_slice_us(us: u64) {
    SLICE_NS.store(us.saturating_mul(1000), Ordering::Relaxed);
}

/// Ask the scheduler for the configured slice for the calling thread.
/// A refusal is logged once and otherwise ignored: the thread still works,
/// only with the default slice.
pub fn request_thread() {
    let ns = SLICE_NS.load(Ordering::Relaxed);
    if ns == 0 {
        return;
    }
    if let Err(e) = set_own_slice(ns) {
        if !REFUSAL_LOGGED.swap(true, Ordering::Relaxed) {
            log::warn!(
                "[server] the scheduler refused a {} µs slice for request threads ({e}); they \
                 keep the default",
                ns / 1000
            );
        }
    }
}

/// The nice value of background threads (the snapshot writer): under
/// load, request threads get about ten times their share of a core.
pub const BACKGROUND_NICE: i32 = 10;

/// Lower the calling thread's priority to [`BACKGROUND_NICE`]: it is
/// background work (writing a snapshot) that should give way to requests
/// on a busy machine, and it still runs at full speed on an idle one.
/// A refusal is ignored: the thread only keeps the default priority.
pub fn background_thread() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain integers; on Linux the nice value is a per-thread
        // attribute, and `gettid` names the calling thread.
        let _ = unsafe {
            libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, BACKGROUND_NICE)
        };
    }
}

#[cfg(target_os = "linux")]
mod linux {
    /// `struct sched_attr` of `sched_setattr(2)`, version 1 (56 bytes).
    #[repr(C)]
    #[derive(Default)]
    pub struct SchedAttr {
        pub size: u32,
        pub sched_policy: u32,
        pub sched_flags: u64,
        pub sched_nice: i32,
        pub sched_priority: u32,
        /// For a normal thread: the slice it asks for, in ns.
        pub sched_runtime: u64,
        pub sched_deadline: u64,
        pub sched_period: u64,
        pub sched_util_min: u32,
        pub sched_util_max: u32,
    }

    /// `SCHED_OTHER` and `SCHED_BATCH`: the fair classes a slice applies to.
    pub const FAIR_POLICIES: [u32; 2] = [0, 3];
}

/// Read the calling thread's attributes, change only the slice, write
/// them back (its policy and nice value stay as the operator set them).
#[cfg(target_os = "linux")]
fn set_own_slice(ns: u64) -> std::io::Result<()> {
    use linux::{SchedAttr, FAIR_POLICIES};
    let size = std::mem::size_of::<SchedAttr>() as u32;
    let mut attr = SchedAttr::default();
    // SAFETY: `attr` is a valid, writable `struct sched_attr` of `size`
    // bytes; pid 0 is the calling thread; flags must be 0.
    let got =
        unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr as *mut SchedAttr, size, 0) };
    if got != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if !FAIR_POLICIES.contains(&attr.sched_policy) {
        return Ok(()); // a real-time policy chosen by the operator: leave it
    }
    attr.size = size;
    attr.sched_flags = 0;
    attr.sched_runtime = ns;
    // SAFETY: as above; the kernel only reads `attr`.
    let set = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if set != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_own_slice(_ns: u64) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_struct_has_the_kernels_size() {
        #[cfg(target_os = "linux")]
        assert_eq!(std::mem::size_of::<linux::SchedAttr>(), 56);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_thread_can_ask_for_a_short_slice_and_keeps_its_policy() {
        std::thread::spawn(|| {
            set_own_slice(100_000).expect("sched_setattr");
            let mut attr = linux::SchedAttr::default();
            let size = std::mem::size_of::<linux::SchedAttr>() as u32;
            // SAFETY: as in `set_own_slice`.
            let got =
                unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr as *mut _, size, 0) };
            assert_eq!(got, 0);
            assert!(linux::FAIR_POLICIES.contains(&attr.sched_policy));
        })
        .join()
        .unwrap();
    }
}
