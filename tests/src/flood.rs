//! Saturating UDP load for rate tests: paced senders (one thread per flow,
//! each pinned to a CPU in turn, on an absolute schedule so a late wake-up
//! catches up instead of lowering the load), a receiver that timestamps every
//! datagram, and the delivered rate per window as the receiver saw it.
use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// CLOCK_REALTIME in ns: the clock of the kernel's receive timestamps
/// (SO_TIMESTAMPNS), which every namespace of the machine shares.
pub fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Ethernet, IPv4 and UDP headers: what a rate counts beside the payload.
pub const HEADERS_V4: usize = 14 + 20 + 8;

/// Pins the calling thread to CPU `cpu` (modulo the CPUs there are).
pub fn pin_to(cpu: usize) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it and
    // sched_setaffinity reads it for the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % n, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Gives `sock` a 16 MiB receive buffer (SO_RCVBUFFORCE): under TCG a
/// receiving thread can fall behind for a while, and a datagram its socket
/// dropped would look like a rate error.
pub fn big_receive_buffer(sock: &UdpSocket) {
    set_int(sock, libc::SO_RCVBUFFORCE, 16 << 20, "SO_RCVBUFFORCE");
}

/// `setsockopt(SOL_SOCKET, opt, value)` on `sock`, or a panic naming `what`.
fn set_int(sock: &UdpSocket, opt: libc::c_int, value: libc::c_int, what: &str) {
    // SAFETY: setsockopt on a socket the caller owns, with a c_int it reads.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "{what}: {}", std::io::Error::last_os_error());
}

/// A thread receiving on a socket until stopped, recording each datagram's
/// arrival as the kernel stamped it (SO_TIMESTAMPNS, CLOCK_REALTIME ns: when
/// it reached the receiving device, not when this thread got to run) and
/// its length.
pub struct Receiver {
    stop: Arc<AtomicBool>,
    received: Arc<std::sync::atomic::AtomicUsize>,
    handle: JoinHandle<Vec<(u64, usize)>>,
}

/// One datagram from `sock` with its kernel receive timestamp.
fn recv_stamped(sock: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(u64, usize)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: a zeroed msghdr is valid; it points at `iov` and `control`,
    // which outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: recvmsg writes at most the lengths `msg` gives.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut stamp = realtime_ns();
    // SAFETY: the CMSG_* macros walk the control buffer recvmsg filled, within
    // msg_controllen; SCM_TIMESTAMPNS carries a timespec.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                stamp = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((stamp, n as usize))
}

impl Receiver {
    pub fn start(sock: UdpSocket) -> Receiver {
        big_receive_buffer(&sock);
        set_int(&sock, libc::SO_TIMESTAMPNS, 1, "SO_TIMESTAMPNS");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (flag, n_rx) = (stop.clone(), received.clone());
        let handle = std::thread::spawn(move || {
            let mut arrivals = Vec::new();
            // Room for the largest datagram a test sends (jumbo frames
            // included): a shorter buffer truncates, and the length read
            // back would not be the datagram's.
            let mut buf = vec![0u8; 65_536];
            while !flag.load(Ordering::Relaxed) {
                if let Ok(a) = recv_stamped(&sock, &mut buf) {
                    arrivals.push(a);
                    n_rx.fetch_add(1, Ordering::Relaxed);
                }
            }
            arrivals
        });
        Receiver {
            stop,
            received,
            handle,
        }
    }

    /// Stops receiving once nothing has arrived for `quiet` (at most 10 s
    /// from now); returns every arrival.
    pub fn finish_when_quiet(self, quiet: Duration) -> Vec<(u64, usize)> {
        let count = || self.received.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = count();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            let now_seen = count();
            if now_seen != seen {
                (seen, since) = (now_seen, Instant::now());
            } else if since.elapsed() >= quiet {
                break;
            }
        }
        self.finish()
    }

    /// Stops receiving; returns every arrival.
    pub fn finish(self) -> Vec<(u64, usize)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// Watches for stalls of this machine's CPUs as threads see them: a thread
/// per CPU sleeps 1 ms at a time and records every wake-up more than
/// `threshold` late. Under TCG (the VM tier on a busy host) the guest can stop for
/// hundreds of milliseconds; fq then releases late and catches up, which
/// moves bytes between windows without any fault of the engine's.
pub struct StallWatch {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<Vec<(u64, Duration)>>>,
}

impl StallWatch {
    /// One watching thread per CPU, pinned to it: a TCG guest's virtual
    /// CPUs stop independently, and fq releases from every CPU's queues.
    pub fn start(threshold: Duration) -> StallWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let handles = (0..cpus)
            .map(|cpu| {
                let flag = stop.clone();
                std::thread::spawn(move || {
                    pin_to(cpu);
                    // Real-time priority: a late wake-up then means the
                    // (virtual) CPU stopped, not that the test's own threads
                    // had it.
                    let param = libc::sched_param { sched_priority: 50 };
                    // SAFETY: sched_setscheduler on the calling thread with a
                    // valid sched_param; failure leaves the default policy.
                    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
                    let mut stalls = Vec::new();
                    while !flag.load(Ordering::Relaxed) {
                        let (t0, i0) = (realtime_ns(), Instant::now());
                        std::thread::sleep(Duration::from_millis(1));
                        let late = i0.elapsed().saturating_sub(Duration::from_millis(1));
                        if late > threshold {
                            stalls.push((t0, late));
                        }
                    }
                    stalls
                })
            })
            .collect();
        StallWatch { stop, handles }
    }

    /// Stops watching; returns each stall's start and length (every CPU's,
    /// in time order).
    pub fn finish(self) -> Vec<(u64, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all: Vec<(u64, Duration)> = self
            .handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort_unstable();
        all
    }
}

/// Whether the window `[w0, w0 + window)` overlaps a stall or the `settle`
/// after one (while fq catches up).
pub fn window_stalled(
    stalls: &[(u64, Duration)],
    w0: u64,
    window: Duration,
    settle: Duration,
) -> bool {
    let ns = |d: Duration| d.as_nanos() as u64;
    stalls
        .iter()
        .any(|&(t, len)| t < w0 + ns(window) && t + ns(len) + ns(settle) > w0)
}

/// Paced senders, one thread per socket: together `offered_bps` (counting
/// [`HEADERS_V4`]) of `payload`-byte datagrams to `to`, from `start` for
/// `span`. Thread `i` is pinned to CPU `i`.
pub struct Senders {
    handles: Vec<JoinHandle<(u64, u64)>>,
}

impl Senders {
    pub fn start(
        socks: Vec<UdpSocket>,
        to: SocketAddr,
        payload: usize,
        offered_bps: f64,
        start: Instant,
        span: Duration,
    ) -> Senders {
        Self::start_on(0, socks, to, payload, offered_bps, start, span)
    }

    /// [`Senders::start`] with thread `i` pinned to CPU `first_cpu + i`
    /// (modulo the CPUs): two sets of senders that must not share a CPU.
    pub fn start_on(
        first_cpu: usize,
        socks: Vec<UdpSocket>,
        to: SocketAddr,
        payload: usize,
        offered_bps: f64,
        start: Instant,
        span: Duration,
    ) -> Senders {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let flows = socks.len();
        let gap = Duration::from_secs_f64(
            (payload + HEADERS_V4) as f64 * 8.0 / (offered_bps / flows as f64),
        );
        let handles = socks
            .into_iter()
            .enumerate()
            .map(|(flow, tx)| {
                std::thread::spawn(move || {
                    pin_to((first_cpu + flow) % cpus);
                    let data = vec![flow as u8; payload];
                    let mut next = start + gap.mul_f64(flow as f64 / flows as f64);
                    let end = start + span;
                    let (mut sent, mut last) = (0u64, realtime_ns());
                    while next < end {
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                        if tx.send_to(&data, to).is_ok() {
                            sent += 1;
                        }
                        last = realtime_ns();
                        next += gap;
                    }
                    (sent, last)
                })
            })
            .collect();
        Senders { handles }
    }

    /// Waits for every sender: datagrams sent, and when the first flow
    /// (CLOCK_REALTIME ns) stopped (the load is whole until then).
    pub fn finish(self) -> (u64, u64) {
        let ends: Vec<(u64, u64)> = self
            .handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        (
            ends.iter().map(|e| e.0).sum(),
            ends.iter().map(|e| e.1).min().unwrap(),
        )
    }
}

/// Delivered bit/s (payload + [`HEADERS_V4`] per datagram of `payload`
/// bytes) in whole windows of `window` from `from` until `until` (CLOCK_REALTIME
/// ns), each with its start.
pub fn windows_bps(
    arrivals: &[(u64, usize)],
    payload: usize,
    from: u64,
    until: u64,
    window: Duration,
) -> Vec<(u64, f64)> {
    let mut out = Vec::new();
    let mut w0 = from;
    let len = window.as_nanos() as u64;
    while w0 + len <= until {
        let w1 = w0 + len;
        let frames = arrivals
            .iter()
            .filter(|(t, n)| *t >= w0 && *t < w1 && *n == payload)
            .count();
        out.push((
            w0,
            frames as f64 * (payload + HEADERS_V4) as f64 * 8.0 / window.as_secs_f64(),
        ));
        w0 = w1;
    }
    out
}

/// How long after a stall fq is still catching up: windows within it are
/// not judged.
pub const SETTLE: Duration = Duration::from_millis(300);

/// The windows' rates, stalled ones marked.
pub fn describe_windows(
    windows: &[(u64, f64)],
    stalls: &[(u64, Duration)],
    window: Duration,
) -> String {
    windows
        .iter()
        .map(|&(w0, bps)| {
            let stalled = window_stalled(stalls, w0, window, SETTLE);
            format!("{bps:.0}{}", if stalled { " (stalled)" } else { "" })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that every window clear of a stall delivered `rate_bps` within
/// `tolerance` (a fraction), and that at least `min_judged` windows were
/// clear; returns a line describing all of them (stalled ones marked).
pub fn assert_windows(
    what: &str,
    windows: &[(u64, f64)],
    stalls: &[(u64, Duration)],
    window: Duration,
    rate_bps: f64,
    tolerance: f64,
    min_judged: usize,
) -> String {
    let marked: Vec<(bool, f64)> = windows
        .iter()
        .map(|&(w0, bps)| (window_stalled(stalls, w0, window, SETTLE), bps))
        .collect();
    let line = describe_windows(windows, stalls, window);
    let judged: Vec<f64> = marked.iter().filter(|m| !m.0).map(|m| m.1).collect();
    assert!(
        judged.len() >= min_judged,
        "{what}: only {} of {} windows free of a stall of this machine (stalls: {:?}); \
         per window: {line}",
        judged.len(),
        windows.len(),
        stalls.iter().map(|s| s.1).collect::<Vec<_>>()
    );
    for bps in judged {
        assert!(
            (bps - rate_bps).abs() / rate_bps <= tolerance,
            "{what}: a window delivered {bps:.0} bit/s vs {rate_bps:.0} (±{:.1}%): {line}",
            tolerance * 100.0
        );
    }
    line
}

/// What [`client_to_server`] measured.
pub struct Flow {
    /// Datagrams sent.
    pub sent: u64,
    /// When the last was sent (CLOCK_REALTIME ns).
    pub end_ns: u64,
    /// Each arrival: kernel receive time (CLOCK_REALTIME ns) and length.
    pub arrivals: Vec<(u64, usize)>,
    /// The machine's stalls over 50 ms while it ran ([`StallWatch`]).
    pub stalls: Vec<(u64, Duration)>,
}

/// One paced UDP flow from the lab's client to its server (IPv4):
/// `offered_bps` of `payload`-byte datagrams for `span`, received with
/// kernel timestamps while a [`StallWatch`] records the machine's stalls.
pub fn client_to_server(
    lab: &impair_tools::lab::Lab,
    payload: usize,
    offered_bps: f64,
    span: Duration,
) -> Flow {
    let bind = |ns: &str, addr: std::net::Ipv4Addr| {
        impair::netns::run_in(ns, move || UdpSocket::bind((addr, 0)))
            .unwrap()
            .unwrap()
    };
    let rx = bind(&lab.server, lab.server_v4());
    let to = rx.local_addr().unwrap();
    let receiver = Receiver::start(rx);
    let watch = StallWatch::start(Duration::from_millis(50));
    let start = Instant::now() + Duration::from_millis(100);
    let tx = vec![bind(&lab.client, lab.client_v4())];
    let (sent, end_ns) = Senders::start(tx, to, payload, offered_bps, start, span).finish();
    let arrivals = receiver.finish_when_quiet(Duration::from_millis(500));
    let stalls = watch.finish();
    Flow {
        sent,
        end_ns,
        arrivals,
        stalls,
    }
}
