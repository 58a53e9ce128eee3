//! The paced sender.
#[allow(clippy::wildcard_imports)]
use super::*;

// Sender

/// What [`send`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReport {
    /// Datagrams handed to the kernel successfully.
    pub sent: u64,
    /// Datagrams given up after a failed retry (ENOBUFS, EPERM from a
    /// firewall, …); their sequence numbers are never received.
    pub send_errors: u64,
    /// Failed first attempts that were retried (successfully or not).
    pub retries: u64,
    /// `CLOCK_MONOTONIC` ns of the first and last successful send (0 if none).
    pub first_send_ns: u64,
    pub last_send_ns: u64,
    /// Worst lateness of a departure against its schedule, ns: how well the
    /// pacing held (scheduler hiccups, slow sends).
    pub max_lateness_ns: u64,
}

impl SendReport {
    /// Time from the first to the last successful send, ns.
    pub fn duration_ns(&self) -> u64 {
        self.last_send_ns.saturating_sub(self.first_send_ns)
    }
}

/// Errors that retrying cannot fix: the caller's setup is wrong.
pub(super) fn is_fatal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EINVAL
                | libc::EAFNOSUPPORT
                | libc::EMSGSIZE
                | libc::EDESTADDRREQ
                | libc::EBADF
                | libc::ENOTSOCK
                | libc::EOPNOTSUPP
                | libc::EFAULT
        )
    )
}

/// Lowers the calling thread's timer slack to 1 ns (default 50 µs) so the
/// sleep before the final spin ends on time; restores it on drop.
pub(super) struct TimerSlack(Option<libc::c_ulong>);

impl TimerSlack {
    fn tighten() -> TimerSlack {
        // SAFETY: PR_GET_TIMERSLACK takes no pointer arguments and only returns
        // the calling thread's slack.
        let old = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
        if old < 0 {
            return TimerSlack(None);
        }
        // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only the
        // calling thread.
        let rc = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
        TimerSlack((rc == 0).then_some(old as libc::c_ulong))
    }
}

impl Drop for TimerSlack {
    fn drop(&mut self) {
        if let Some(old) = self.0 {
            // SAFETY: as in `tighten`; restores the value read there.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, old, 0, 0, 0) };
        }
    }
}

/// Sleeps, then spins, until `CLOCK_MONOTONIC` reaches `target_ns`; returns
/// the time it observed on leaving.
pub(super) fn wait_until(target_ns: u64) -> u64 {
    loop {
        let now = monotonic_ns();
        if now >= target_ns {
            return now;
        }
        let remaining = target_ns - now;
        if remaining > SPIN_NS {
            thread::sleep(Duration::from_nanos(remaining - SPIN_NS));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Sends `cfg.count` probe datagrams to `dst`, paced at `cfg.rate_pps`.
///
/// Departures follow an absolute schedule, `start + seq / rate`: a late
/// datagram does not push the later ones back, so the average rate is exact
/// and bursts after a hiccup catch up. The thread sleeps until ~50 µs before
/// each departure and busy-waits the rest. A failed send is retried once
/// immediately, then counted in `send_errors`; errors that indicate a wrong
/// setup (EINVAL, EMSGSIZE, EAFNOSUPPORT, …) abort with an error.
pub fn send(sock: &UdpSocket, dst: SocketAddr, cfg: &ProbeConfig) -> Result<SendReport> {
    cfg.validate()?;
    let _slack = TimerSlack::tighten();
    let mut buf = vec![0u8; cfg.payload_len];
    let mut report = SendReport::default();
    let start_ns = monotonic_ns();
    for seq in 0..cfg.count {
        fill(&mut buf, cfg.run_id, seq);
        let due_ns = start_ns.saturating_add(cfg.departure_offset_ns(seq));
        let now = if cfg.rate_pps == 0 {
            monotonic_ns()
        } else {
            wait_until(due_ns)
        };
        report.max_lateness_ns = report.max_lateness_ns.max(now.saturating_sub(due_ns));
        let send_ns = monotonic_ns();
        seal(&mut buf, send_ns);
        let mut ok = false;
        for attempt in 0..2 {
            match sock.send_to(&buf, dst) {
                Ok(n) if n == buf.len() => {
                    ok = true;
                    break;
                }
                Ok(n) => bail!(
                    "short send of probe datagram {seq} to {dst}: {n} of {} bytes",
                    buf.len()
                ),
                Err(e) if is_fatal(&e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "sending probe datagram {seq} ({} bytes) to {dst}",
                            buf.len()
                        )
                    });
                }
                Err(e) => {
                    if attempt == 0 {
                        report.retries += 1;
                    }
                    tracing::trace!(seq, "probe send failed: {e}");
                }
            }
        }
        if ok {
            if report.sent == 0 {
                report.first_send_ns = send_ns;
            }
            report.last_send_ns = send_ns;
            report.sent += 1;
        } else {
            report.send_errors += 1;
        }
    }
    Ok(report)
}
