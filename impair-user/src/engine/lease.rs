//! The lease: the data path impairs only while its deadline (in the control
//! map, CLOCK_MONOTONIC ns) lies ahead, and a thread of the controller keeps
//! pushing it forward. A controller that dies, or is stopped, stops renewing,
//! and the kernel passes everything within [`LEASE`]. `--duration` caps the
//! lease: it is never renewed past the end, so the kernel itself ends the run
//! on time even when the controller cannot.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{maps::Maps, sys};

/// How long the data path keeps impairing without hearing from the controller.
pub const LEASE: Duration = Duration::from_secs(2);
/// How often the controller renews the lease.
const LEASE_RENEW: Duration = Duration::from_millis(200);

/// The end of a run of `duration` starting now (CLOCK_MONOTONIC ns; never 0,
/// which means "no cap"), or 0 for none.
pub(crate) fn cap_ns(duration: Option<Duration>) -> u64 {
    duration.map_or(0, |d| {
        sys::monotonic_ns()
            .saturating_add(d.as_nanos() as u64)
            .max(1)
    })
}

/// The next lease deadline: [`LEASE`] from now, but never past `cap_ns`
/// (0 for no cap).
pub(crate) fn capped(cap_ns: u64) -> u64 {
    let next = sys::monotonic_ns() + LEASE.as_nanos() as u64;
    if cap_ns == 0 {
        next
    } else {
        next.min(cap_ns)
    }
}

/// The thread renewing an instance's lease; stopped (and joined) by
/// [`Lease::stop`] or on drop.
pub(crate) struct Lease {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    cap_ns: u64,
}

impl Lease {
    /// Starts renewing the lease in `maps`, never past `cap_ns` (0: no cap).
    pub(crate) fn start(maps: Arc<Mutex<Maps>>, cap_ns: u64) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("impair-lease".into())
                .spawn(move || renew(&maps, &stop, cap_ns))?
        };
        Ok(Self {
            stop,
            thread: Some(thread),
            cap_ns,
        })
    }

    /// Stops renewing; returns once the thread has ended (no renewal after).
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// The deadline an instance keeps once no process renews it (`--pin`):
    /// the cap, or never.
    pub(crate) fn unattended_deadline_ns(&self) -> u64 {
        if self.cap_ns == 0 {
            impair_common::LEASE_FOREVER
        } else {
            self.cap_ns
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop();
    }
}

fn renew(maps: &Mutex<Maps>, stop: &AtomicBool, cap_ns: u64) {
    let mut last = Instant::now() - LEASE_RENEW;
    while !stop.load(Ordering::Relaxed) {
        if last.elapsed() >= LEASE_RENEW {
            let deadline = capped(cap_ns);
            let mut m = maps
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Err(e) = m.set_lease_deadline_ns(deadline) {
                tracing::error!("renewing the lease: {e:#}");
            }
            last = Instant::now();
        }
        thread::sleep(Duration::from_millis(20));
    }
}
