//! The receiver, and a sender/receiver pair run together.
#[allow(clippy::wildcard_imports)]
use super::*;

// Receiver

/// Everything a [`Receiver`] saw.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReceiveLog {
    pub run_id: u32,
    pub count: u64,
    /// Every datagram read, in arrival order.
    pub receptions: Vec<Reception>,
    /// Transient receive errors skipped (e.g. ECONNREFUSED on a connected
    /// socket).
    pub recv_errors: u64,
    /// Effective SO_RCVBUF of the socket, bytes.
    pub rcvbuf_bytes: usize,
}

impl ReceiveLog {
    pub fn accounting(&self) -> Accounting {
        let mut acc = Accounting::new(self.count);
        for r in &self.receptions {
            acc.record(r);
        }
        acc
    }
}

/// Reads probe datagrams from a bound socket and timestamps them.
pub struct Receiver {
    sock: UdpSocket,
    run_id: u32,
    count: u64,
    rcvbuf_bytes: usize,
}

/// Sets a socket option taking an `int`.
pub(super) fn setsockopt_int(
    sock: &UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the descriptor is open for the call; `value` is a valid c_int
    // and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads the effective SO_RCVBUF.
pub(super) fn rcvbuf_of(sock: &UdpSocket) -> io::Result<usize> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the descriptor is open; `value` and `len` are valid, writable
    // and `len` holds the size of `value`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &mut value as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if rc == 0 {
        Ok(usize::try_from(value).unwrap_or(0))
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Receiver {
    /// Prepares `sock` (already bound) for run `cfg`: asks for a
    /// [`RCVBUF_BYTES`] receive buffer with SO_RCVBUFFORCE (needs
    /// CAP_NET_ADMIN; falls back to SO_RCVBUF, capped by `net.core.rmem_max`)
    /// so that the probe's own socket is not a source of loss.
    pub fn new(sock: UdpSocket, cfg: &ProbeConfig) -> Result<Receiver> {
        cfg.validate()?;
        let want = RCVBUF_BYTES as libc::c_int;
        if let Err(e) = setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, want) {
            tracing::debug!("SO_RCVBUFFORCE failed ({e}); falling back to SO_RCVBUF");
            setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_RCVBUF, want)
                .context("setting SO_RCVBUF")?;
        }
        let rcvbuf_bytes = rcvbuf_of(&sock).context("reading SO_RCVBUF")?;
        sock.set_nonblocking(false)
            .context("making the probe socket blocking")?;
        sock.set_read_timeout(Some(RECV_POLL))
            .context("setting the probe socket read timeout")?;
        Ok(Receiver {
            sock,
            run_id: cfg.run_id,
            count: cfg.count,
            rcvbuf_bytes,
        })
    }

    /// Effective SO_RCVBUF (the kernel reports twice the requested value).
    pub fn rcvbuf_bytes(&self) -> usize {
        self.rcvbuf_bytes
    }

    /// Reads datagrams until `stop()` returns true, then drains what is
    /// already queued (for at most 100 ms): those arrived before the stop
    /// and were only waiting for this thread. `stop` is checked after every
    /// datagram and at least every 2 ms while idle.
    pub fn run(self, stop: impl Fn() -> bool) -> Result<ReceiveLog> {
        let mut buf = vec![0u8; 65_536];
        let mut log = ReceiveLog {
            run_id: self.run_id,
            count: self.count,
            // Pre-sized so that growing the log never stalls a read.
            receptions: Vec::with_capacity(
                usize::try_from(self.count.min(PREALLOC_RECEPTIONS)).unwrap_or(0) + 1024,
            ),
            recv_errors: 0,
            rcvbuf_bytes: self.rcvbuf_bytes,
        };
        while !stop() {
            self.read_one(&mut buf, &mut log)?;
        }
        self.sock
            .set_nonblocking(true)
            .context("making the probe socket non-blocking to drain it")?;
        let drain_end_ns = monotonic_ns().saturating_add(DRAIN_MAX_NS);
        while self.read_one(&mut buf, &mut log)? && monotonic_ns() < drain_end_ns {}
        Ok(log)
    }

    /// Reads and logs one datagram; Ok(false) when none was ready in time.
    fn read_one(&self, buf: &mut [u8], log: &mut ReceiveLog) -> Result<bool> {
        match self.sock.recv(buf) {
            Ok(n) => {
                let recv_ns = monotonic_ns();
                log.receptions.push(Reception {
                    recv_ns,
                    verdict: decode(&buf[..n], self.run_id),
                });
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                log.recv_errors += 1;
                Ok(true)
            }
            Err(e) => Err(e).context("receiving probe datagrams"),
        }
    }
}

/// Runs a whole probe: starts a [`Receiver`] on `rx` in its own thread, sends
/// from `tx` to `dst` on the calling thread, lets the receiver linger for
/// `cfg.linger` after the last send, and merges both sides into a report.
///
/// The sockets may live in different network namespaces (create them with
/// [`impair::netns::run_in`]). Sending starts only once the receiver thread is
/// reading, so the first datagrams' delays do not include thread start-up.
pub fn run_pair(
    tx: UdpSocket,
    rx: UdpSocket,
    dst: SocketAddr,
    cfg: &ProbeConfig,
) -> Result<ProbeReport> {
    run_pair_with_log(tx, rx, dst, cfg).map(|(report, _)| report)
}

/// [`run_pair`], also returning every reception (arrival times, for rate and
/// delay-distribution measurements).
pub fn run_pair_with_log(
    tx: UdpSocket,
    rx: UdpSocket,
    dst: SocketAddr,
    cfg: &ProbeConfig,
) -> Result<(ProbeReport, ReceiveLog)> {
    cfg.validate()?;
    let receiver = Receiver::new(rx, cfg)?;
    // 0 while sending; afterwards the time the receiver may stop.
    let stop_at_ns = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let handle = {
        let stop_at_ns = Arc::clone(&stop_at_ns);
        thread::Builder::new()
            .name("probe-rx".into())
            .spawn(move || {
                // The receiver is about to read; a failed send only means the
                // caller stopped waiting.
                let _ = ready_tx.send(());
                receiver.run(|| {
                    let at = stop_at_ns.load(Ordering::Acquire);
                    at != 0 && monotonic_ns() >= at
                })
            })
            .context("spawning the probe receiver thread")?
    };
    let _ = ready_rx.recv();
    let sent = match cfg.sender_cpu {
        Some(cpu) => on_cpu(cpu, || send(&tx, dst, cfg)),
        None => send(&tx, dst, cfg),
    };
    let linger_ns = u64::try_from(cfg.linger.as_nanos()).unwrap_or(u64::MAX);
    // Always release the receiver, even if sending failed.
    stop_at_ns.store(
        monotonic_ns().saturating_add(linger_ns).max(1),
        Ordering::Release,
    );
    let log = match handle.join() {
        Ok(log) => log?,
        Err(payload) => {
            return Err(anyhow!(
                "probe receiver panicked: {}",
                impair::netns::panic_message(&*payload)
            ));
        }
    };
    let sent = sent?;
    let report = log.accounting().report(cfg, &sent);
    Ok((report, log))
}

/// Runs `f` with the calling thread pinned to `cpu`, then restores its
/// previous affinity.
pub(super) fn on_cpu<T>(cpu: usize, f: impl FnOnce() -> Result<T>) -> Result<T> {
    // SAFETY: zeroed cpu_set_t values are valid; the calls read and write only
    // them, for the calling thread (pid 0).
    unsafe {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size, &mut old) != 0 {
            bail!("sched_getaffinity: {}", std::io::Error::last_os_error());
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size, &set) != 0 {
            bail!(
                "pinning the probe sender to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
        let out = f();
        libc::sched_setaffinity(0, size, &old);
        out
    }
}
