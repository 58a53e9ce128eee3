//! impair's own UDP traffic probe: a paced sender, a receiver and exact
//! loss / duplication / reordering / corruption / one-way-delay accounting.
//!
//! Sender and receiver run on the same host (usually in different network
//! namespaces of a [`crate::lab::Lab`]), so both read the same
//! `CLOCK_MONOTONIC` and one-way delay is a plain difference of timestamps.
//!
//! # Payload format
//!
//! All integers are big-endian (network order). `len` is the UDP payload
//! length, [`MIN_PAYLOAD_LEN`]..=[`MAX_PAYLOAD_LEN`].
//!
//! | offset    | size | field                                                    |
//! |-----------|------|----------------------------------------------------------|
//! | 0         | 4    | magic `"IMPR"`                                           |
//! | 4         | 4    | run id (u32): tells concurrent or stale runs apart       |
//! | 8         | 8    | sequence number (u64), 0-based, one per datagram sent    |
//! | 16        | 8    | send time (u64), `CLOCK_MONOTONIC` ns, taken just before `sendto` |
//! | 24        | 2    | payload length (u16), must equal the datagram length     |
//! | 26        | len−34 | filler: splitmix64 stream seeded from (run id, seq), little-endian words |
//! | len−8     | 8    | FNV-1a 64 checksum of bytes `0..len−8`                   |
//!
//! The checksum is end to end: an impairment that flips payload bits and
//! fixes up the UDP checksum still yields a datagram that fails here. FNV-1a
//! folds in one byte at a time through a bijective step, so any change
//! confined to one byte (in particular any single bit flip) is always
//! detected; other corruptions escape with probability about 2⁻⁶⁴. The
//! seeded filler makes each datagram's contents differ, so corruption that
//! swaps bytes between packets does not go unnoticed either.
//!
//! # Classification
//!
//! A datagram whose checksum and length check out is *valid*: if its magic
//! and run id are ours and its seq is below the configured count it is
//! accounted, otherwise it is *foreign* (another run, another program). A
//! datagram failing the check is *corrupted* if its magic or its run id still
//! match (a single corruption cannot damage both, as they lie in different
//! bytes), else foreign. The seq of a corrupted datagram cannot be trusted,
//! so it is **not** a valid reception: it is counted in `corrupted`, and its
//! sequence number — unless an intact copy also arrived — remains in `lost`.
//! `lost` therefore means "did not arrive intact", which is what an
//! application with its own integrity check sees; when corruption is
//! configured, `lost − corrupted` (saturating) estimates pure drops.
use std::{
    io,
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread,
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use impair::sys::monotonic_ns;

/// The first four payload bytes.
pub const MAGIC: [u8; 4] = *b"IMPR";
/// Fixed fields before the filler: magic, run id, seq, send time, length.
pub const HEADER_LEN: usize = 26;
/// The trailing FNV-1a 64 checksum.
pub const CHECKSUM_LEN: usize = 8;
/// Smallest payload the sender emits.
pub const MIN_PAYLOAD_LEN: usize = 64;
/// Largest payload: a 9000-byte jumbo frame minus IPv4 and UDP headers.
pub const MAX_PAYLOAD_LEN: usize = 8972;
pub const DEFAULT_PAYLOAD_LEN: usize = 200;

const OFF_RUN_ID: usize = 4;
const OFF_SEQ: usize = 8;
const OFF_SEND_NS: usize = 16;
const OFF_LEN: usize = 24;

/// Receive buffer requested with SO_RCVBUFFORCE: enough to absorb a burst of
/// released delayed packets without the receiver's own socket dropping any.
pub const RCVBUF_BYTES: usize = 32 << 20;
/// The sender sleeps until this close to a departure time, then spins: a
/// sleep overshoots by scheduler latency, a spin does not.
const SPIN_NS: u64 = 50_000;
/// How often a blocked receiver re-checks its stop condition.
const RECV_POLL: Duration = Duration::from_millis(2);
/// Bound on draining the socket after the stop condition, so that a foreign
/// flood cannot keep the receiver alive.
const DRAIN_MAX_NS: u64 = 100_000_000;
/// Receptions pre-allocated before the first read (32 bytes each).
const PREALLOC_RECEPTIONS: u64 = 1 << 20;

/// What to send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeConfig {
    /// Datagrams to send (sequence numbers `0..count`).
    pub count: u64,
    /// Send rate in packets per second; 0 sends as fast as possible.
    pub rate_pps: u64,
    /// UDP payload bytes per datagram, [`MIN_PAYLOAD_LEN`]..=[`MAX_PAYLOAD_LEN`].
    pub payload_len: usize,
    /// Identifies this run's datagrams; anything else is `foreign`.
    pub run_id: u32,
    /// How long the receiver keeps reading after the sender's last datagram:
    /// must exceed the largest delay under test, or delayed packets count as
    /// lost.
    pub linger: Duration,
    /// Send from this CPU only (the calling thread's affinity is restored
    /// afterwards). A sender that migrates between CPUs while packets of its
    /// flow wait in the previous CPU's receive backlog (veth, deferred
    /// softirqs) lets the lab reorder them before any impairment; pinning
    /// keeps reordering measurements about the engine.
    pub sender_cpu: Option<usize>,
}

impl Default for ProbeConfig {
    /// 20 000 datagrams of 200 bytes at 20 000 pps, 500 ms linger, and a
    /// random run id so that two runs never mistake each other's packets.
    fn default() -> Self {
        ProbeConfig {
            count: 20_000,
            rate_pps: 20_000,
            payload_len: DEFAULT_PAYLOAD_LEN,
            run_id: rand::random(),
            linger: Duration::from_millis(500),
            sender_cpu: None,
        }
    }
}

impl ProbeConfig {
    pub fn validate(&self) -> Result<()> {
        if !(MIN_PAYLOAD_LEN..=MAX_PAYLOAD_LEN).contains(&self.payload_len) {
            bail!(
                "probe payload length {} out of range {MIN_PAYLOAD_LEN}..={MAX_PAYLOAD_LEN} bytes",
                self.payload_len
            );
        }
        Ok(())
    }

    /// Scheduled departure of datagram `seq`, in ns after the first one.
    /// Computed from `seq` itself (not by adding intervals), so rounding never
    /// accumulates into drift.
    pub fn departure_offset_ns(&self, seq: u64) -> u64 {
        if self.rate_pps == 0 {
            return 0;
        }
        let ns = u128::from(seq) * 1_000_000_000 / u128::from(self.rate_pps);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }
}

// ---------------------------------------------------------------------------
// Encoding and decoding

/// FNV-1a, 64-bit.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn check_len(len: usize) -> Result<()> {
    if !(MIN_PAYLOAD_LEN..=MAX_PAYLOAD_LEN).contains(&len) {
        bail!(
            "probe payload length {len} out of range {MIN_PAYLOAD_LEN}..={MAX_PAYLOAD_LEN} bytes"
        );
    }
    Ok(())
}

/// Writes everything except the send time and checksum (see [`seal`]); the
/// sender does this before waiting for the departure time so that only
/// [`seal`] lies between timestamp and `sendto`. `buf.len()` must already be
/// checked with [`check_len`].
fn fill(buf: &mut [u8], run_id: u32, seq: u64) {
    let len = buf.len();
    buf[..4].copy_from_slice(&MAGIC);
    buf[OFF_RUN_ID..OFF_SEQ].copy_from_slice(&run_id.to_be_bytes());
    buf[OFF_SEQ..OFF_SEND_NS].copy_from_slice(&seq.to_be_bytes());
    // len <= MAX_PAYLOAD_LEN < u16::MAX
    buf[OFF_LEN..HEADER_LEN].copy_from_slice(&(len as u16).to_be_bytes());
    let mut state = (u64::from(run_id) << 32) ^ seq.wrapping_mul(0xd6e8_feb8_6659_fd93);
    for chunk in buf[HEADER_LEN..len - CHECKSUM_LEN].chunks_mut(8) {
        let word = splitmix64(&mut state).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// Stamps the send time and writes the checksum over everything before it.
fn seal(buf: &mut [u8], send_ns: u64) {
    let end = buf.len() - CHECKSUM_LEN;
    buf[OFF_SEND_NS..OFF_LEN].copy_from_slice(&send_ns.to_be_bytes());
    let sum = fnv1a64(&buf[..end]);
    buf[end..].copy_from_slice(&sum.to_be_bytes());
}

/// Encodes a complete probe datagram of `buf.len()` bytes.
pub fn encode(buf: &mut [u8], run_id: u32, seq: u64, send_ns: u64) -> Result<()> {
    check_len(buf.len())?;
    fill(buf, run_id, seq);
    seal(buf, send_ns);
    Ok(())
}

/// How the receiver classified one datagram (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Intact, ours.
    Valid { seq: u64, send_ns: u64 },
    /// Ours (magic or run id match) but failed the checksum or length check.
    Corrupted,
    /// Not ours, or of another run.
    Foreign,
}

fn be_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_be_bytes(a)
}

/// Classifies a received datagram for run `run_id`.
pub fn decode(datagram: &[u8], run_id: u32) -> Verdict {
    let magic_ok = datagram.len() >= 4 && datagram[..4] == MAGIC;
    let run_ok = datagram.len() >= OFF_SEQ && be_u32(datagram, OFF_RUN_ID) == run_id;
    if datagram.len() < HEADER_LEN + CHECKSUM_LEN {
        return if magic_ok || run_ok {
            Verdict::Corrupted
        } else {
            Verdict::Foreign
        };
    }
    let end = datagram.len() - CHECKSUM_LEN;
    let len_ok = usize::from(u16::from_be_bytes([
        datagram[OFF_LEN],
        datagram[OFF_LEN + 1],
    ])) == datagram.len();
    let sum_ok = fnv1a64(&datagram[..end]) == be_u64(datagram, end);
    match (len_ok && sum_ok, magic_ok && run_ok) {
        (true, true) => Verdict::Valid {
            seq: be_u64(datagram, OFF_SEQ),
            send_ns: be_u64(datagram, OFF_SEND_NS),
        },
        (true, false) => Verdict::Foreign,
        (false, _) if magic_ok || run_ok => Verdict::Corrupted,
        (false, _) => Verdict::Foreign,
    }
}

// ---------------------------------------------------------------------------
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
fn is_fatal(e: &io::Error) -> bool {
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
struct TimerSlack(Option<libc::c_ulong>);

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
fn wait_until(target_ns: u64) -> u64 {
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

// ---------------------------------------------------------------------------
// Accounting

/// One received datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reception {
    /// `CLOCK_MONOTONIC` ns read right after `recv` returned.
    pub recv_ns: u64,
    pub verdict: Verdict,
}

/// One-way delay statistics over valid first copies, ns. Percentiles use the
/// nearest-rank method (an actual sample, no interpolation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DelayStats {
    pub samples: u64,
    pub min_ns: u64,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

impl DelayStats {
    /// Statistics of `delays_ns` (sorted in place); `None` when empty.
    pub fn from_samples(delays_ns: &mut [u64]) -> Option<DelayStats> {
        if delays_ns.is_empty() {
            return None;
        }
        delays_ns.sort_unstable();
        let n = delays_ns.len();
        let rank = |p: f64| {
            // Nearest rank: the smallest sample with at least p of all samples
            // at or below it, i.e. index ceil(p * n) - 1.
            let r = (p * n as f64).ceil() as usize;
            delays_ns[r.clamp(1, n) - 1]
        };
        let sum: u128 = delays_ns.iter().map(|&d| u128::from(d)).sum();
        Some(DelayStats {
            samples: n as u64,
            min_ns: delays_ns[0],
            mean_ns: sum as f64 / n as f64,
            p50_ns: rank(0.50),
            p90_ns: rank(0.90),
            p99_ns: rank(0.99),
            p999_ns: rank(0.999),
            max_ns: delays_ns[n - 1],
        })
    }
}

/// Turns a stream of receptions into counts, without sockets: the receiver
/// feeds it, and tests feed it synthetic sequences.
///
/// Reordering follows RFC 4737 §3.3: the receiver tracks NextExp, one more
/// than the highest sequence number seen so far; a new (non-duplicate) packet
/// with seq < NextExp is reordered, otherwise NextExp becomes seq + 1.
/// Duplicates (a seq seen before) are counted once per extra copy and take no
/// part in reordering or delay statistics.
#[derive(Clone, Debug)]
pub struct Accounting {
    count: u64,
    /// Bit per sequence number seen, grown on demand.
    seen: Vec<u64>,
    next_expected: u64,
    received: u64,
    duplicated: u64,
    reordered: u64,
    corrupted: u64,
    foreign: u64,
    delays_ns: Vec<u64>,
}

impl Accounting {
    /// Accounting for a run of `count` datagrams (seq `0..count`); larger
    /// sequence numbers are counted as foreign.
    pub fn new(count: u64) -> Accounting {
        Accounting {
            count,
            seen: Vec::new(),
            next_expected: 0,
            received: 0,
            duplicated: 0,
            reordered: 0,
            corrupted: 0,
            foreign: 0,
            delays_ns: Vec::new(),
        }
    }

    /// Accounts one reception.
    pub fn record(&mut self, r: &Reception) {
        match r.verdict {
            Verdict::Valid { seq, send_ns } => {
                self.record_valid(seq, r.recv_ns.saturating_sub(send_ns))
            }
            Verdict::Corrupted => self.corrupted += 1,
            Verdict::Foreign => self.foreign += 1,
        }
    }

    /// Accounts a valid datagram with sequence number `seq` that took
    /// `delay_ns` one way.
    pub fn record_valid(&mut self, seq: u64, delay_ns: u64) {
        if seq >= self.count {
            self.foreign += 1;
            return;
        }
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicated += 1;
            return;
        }
        self.seen[word] |= 1 << bit;
        self.received += 1;
        if seq < self.next_expected {
            self.reordered += 1;
        } else {
            self.next_expected = seq + 1;
        }
        self.delays_ns.push(delay_ns);
    }

    /// Unique valid sequence numbers so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// One-way delays of the valid first copies, in arrival order.
    pub fn delays_ns(&self) -> &[u64] {
        &self.delays_ns
    }

    /// The report for a run whose sender reported `sent`.
    pub fn report(&self, cfg: &ProbeConfig, sent: &SendReport) -> ProbeReport {
        let mut delays = self.delays_ns.clone();
        ProbeReport {
            run_id: cfg.run_id,
            payload_len: cfg.payload_len,
            sent: sent.sent,
            send_errors: sent.send_errors,
            received: self.received,
            lost: sent.sent.saturating_sub(self.received),
            duplicated: self.duplicated,
            reordered: self.reordered,
            corrupted: self.corrupted,
            foreign: self.foreign,
            send_duration_ns: sent.duration_ns(),
            max_send_lateness_ns: sent.max_lateness_ns,
            delay: DelayStats::from_samples(&mut delays),
        }
    }
}

/// The outcome of a probe run. See the module docs for how datagrams are
/// classified.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub run_id: u32,
    pub payload_len: usize,
    /// Datagrams the sender handed to the kernel.
    pub sent: u64,
    /// Datagrams the sender failed to send (not part of `sent`).
    pub send_errors: u64,
    /// Unique sequence numbers received intact.
    pub received: u64,
    /// `sent − received`: sequence numbers that never arrived intact.
    pub lost: u64,
    /// Extra copies of sequence numbers already received.
    pub duplicated: u64,
    /// RFC 4737 reordered packets (seq below the next expected one).
    pub reordered: u64,
    /// Datagrams of this run that failed the checksum or length check.
    pub corrupted: u64,
    /// Datagrams of other runs or programs, and seqs beyond `count`.
    pub foreign: u64,
    /// First to last send, ns.
    pub send_duration_ns: u64,
    /// Worst departure lateness against the pacing schedule, ns.
    pub max_send_lateness_ns: u64,
    /// One-way delay over valid first copies; `None` if nothing arrived.
    pub delay: Option<DelayStats>,
}

impl ProbeReport {
    /// `lost / sent` (0 when nothing was sent).
    pub fn loss_fraction(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.lost as f64 / self.sent as f64
        }
    }

    /// Wilson score interval of the loss fraction at `z` (1.96 ≈ 95 %).
    pub fn loss_interval(&self, z: f64) -> (f64, f64) {
        wilson_interval(self.lost, self.sent, z)
    }
}

pub use impair::statistics::wilson_interval;

// ---------------------------------------------------------------------------
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
fn setsockopt_int(
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
fn rcvbuf_of(sock: &UdpSocket) -> io::Result<usize> {
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
fn on_cpu<T>(cpu: usize, f: impl FnOnce() -> Result<T>) -> Result<T> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(count: u64, rate_pps: u64) -> ProbeConfig {
        ProbeConfig {
            count,
            rate_pps,
            run_id: 0x1234_5678,
            linger: Duration::from_millis(200),
            ..Default::default()
        }
    }

    #[test]
    fn loopback_run_without_loss() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = rx.local_addr().unwrap();
        // 4 kpps: without root the receive buffer is capped by rmem_max
        // (~200 datagrams), so leave a busy test machine ~50 ms of slack.
        let cfg = cfg(2000, 4_000);
        let r = run_pair(tx, rx, dst, &cfg).unwrap();
        assert_eq!(
            (r.sent, r.send_errors, r.received),
            (2000, 0, 2000),
            "{r:?}"
        );
        assert_eq!(
            (r.lost, r.reordered, r.duplicated, r.corrupted, r.foreign),
            (0, 0, 0, 0, 0),
            "{r:?}"
        );
        assert_eq!(r.loss_fraction(), 0.0);
        let d = r.delay.as_ref().unwrap();
        assert_eq!(d.samples, 2000);
        assert!(
            d.min_ns <= d.p50_ns && d.p50_ns <= d.p99_ns && d.p99_ns <= d.max_ns,
            "{d:?}"
        );
        // 2000 packets at 4 kpps: the last is due 499.75 ms after the first,
        // which may itself have left late.
        assert!(
            r.send_duration_ns + r.max_send_lateness_ns >= 499_750_000,
            "{r:?}"
        );
        assert!(r.send_duration_ns < 1_000_000_000, "{r:?}");
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<ProbeReport>(&json).unwrap(), r);
    }

    #[test]
    fn foreign_datagrams_are_counted_not_accounted() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = rx.local_addr().unwrap();
        // Queued before the run: garbage and a valid datagram of another run.
        tx.send_to(b"not a probe", dst).unwrap();
        let mut other = vec![0u8; 64];
        encode(&mut other, 7, 0, monotonic_ns()).unwrap();
        tx.send_to(&other, dst).unwrap();
        let r = run_pair(
            tx,
            rx,
            dst,
            &ProbeConfig {
                rate_pps: 0,
                ..cfg(100, 0)
            },
        )
        .unwrap();
        assert_eq!(
            (r.received, r.lost, r.foreign, r.corrupted),
            (100, 0, 2, 0),
            "{r:?}"
        );
    }

    #[test]
    fn round_trip_and_layout() {
        let mut buf = vec![0u8; 200];
        encode(&mut buf, 42, 9, 123_456).unwrap();
        assert_eq!(&buf[..4], b"IMPR");
        assert_eq!(&buf[4..8], &42u32.to_be_bytes());
        assert_eq!(&buf[24..26], &200u16.to_be_bytes());
        assert_eq!(
            decode(&buf, 42),
            Verdict::Valid {
                seq: 9,
                send_ns: 123_456
            }
        );
        assert_eq!(decode(&buf, 43), Verdict::Foreign);
        // Filler depends on (run id, seq).
        let mut other = vec![0u8; 200];
        encode(&mut other, 42, 10, 123_456).unwrap();
        assert_ne!(buf[HEADER_LEN..192], other[HEADER_LEN..192]);
        assert!(encode(&mut [0u8; 63], 1, 1, 1).is_err());
        assert!(encode(&mut vec![0u8; MAX_PAYLOAD_LEN + 1], 1, 1, 1).is_err());
        assert!(encode(&mut vec![0u8; MAX_PAYLOAD_LEN], 1, 1, 1).is_ok());
    }

    #[test]
    fn every_single_bit_flip_is_detected_as_corruption() {
        for len in [MIN_PAYLOAD_LEN, 200, 1473] {
            let mut buf = vec![0u8; len];
            encode(&mut buf, 0xdead_beef, 77, 1).unwrap();
            for bit in 0..len * 8 {
                buf[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(
                    decode(&buf, 0xdead_beef),
                    Verdict::Corrupted,
                    "len {len} bit {bit}"
                );
                buf[bit / 8] ^= 1 << (bit % 8);
            }
            assert!(matches!(
                decode(&buf, 0xdead_beef),
                Verdict::Valid { seq: 77, .. }
            ));
        }
    }

    #[test]
    fn truncation_and_garbage() {
        let mut buf = vec![0u8; 200];
        encode(&mut buf, 5, 1, 1).unwrap();
        assert_eq!(decode(&buf[..199], 5), Verdict::Corrupted);
        assert_eq!(decode(&buf[..10], 5), Verdict::Corrupted);
        let mut longer = buf.clone();
        longer.push(0);
        assert_eq!(decode(&longer, 5), Verdict::Corrupted);
        assert_eq!(decode(b"", 5), Verdict::Foreign);
        assert_eq!(decode(&[0xaa; 200], 5), Verdict::Foreign);
    }

    #[test]
    fn reorder_and_duplicate_accounting() {
        let mut acc = Accounting::new(10);
        for seq in [0, 1, 2, 5, 3, 4, 4, 6, 2, 7] {
            acc.record_valid(seq, 100 + seq);
        }
        // 3 and 4 arrive after 5 (NextExp 6): reordered. The second 4 and
        // the second 2 are duplicates, not reorderings.
        let sent = SendReport {
            sent: 10,
            ..Default::default()
        };
        let r = acc.report(&cfg(10, 0), &sent);
        assert_eq!(
            (r.received, r.lost, r.duplicated, r.reordered),
            (8, 2, 2, 2),
            "{r:?}"
        );
        assert_eq!(acc.delays_ns(), &[100, 101, 102, 105, 103, 104, 106, 107]);

        // A late packet after a gap is reordered once; an in-order stream is not.
        let mut acc = Accounting::new(100);
        for seq in [0, 2, 3, 1, 4] {
            acc.record_valid(seq, 0);
        }
        assert_eq!(acc.report(&cfg(100, 0), &sent).reordered, 1);

        // Out-of-range seqs, corrupted and foreign receptions.
        let mut acc = Accounting::new(3);
        acc.record_valid(3, 0);
        acc.record(&Reception {
            recv_ns: 0,
            verdict: Verdict::Corrupted,
        });
        acc.record(&Reception {
            recv_ns: 0,
            verdict: Verdict::Foreign,
        });
        acc.record(&Reception {
            recv_ns: 50,
            verdict: Verdict::Valid {
                seq: 0,
                send_ns: 20,
            },
        });
        let r = acc.report(
            &cfg(3, 0),
            &SendReport {
                sent: 3,
                ..Default::default()
            },
        );
        assert_eq!(
            (r.received, r.lost, r.corrupted, r.foreign),
            (1, 2, 1, 2),
            "{r:?}"
        );
        assert_eq!(r.delay.unwrap().max_ns, 30);
    }

    #[test]
    fn big_sequence_numbers_grow_the_bitmap() {
        let mut acc = Accounting::new(1 << 20);
        acc.record_valid((1 << 20) - 1, 0);
        acc.record_valid(0, 0);
        acc.record_valid((1 << 20) - 1, 0);
        assert_eq!((acc.received, acc.reordered, acc.duplicated), (2, 1, 1));
    }

    #[test]
    fn delay_percentiles_are_nearest_rank() {
        let mut d: Vec<u64> = (1..=1000).rev().collect();
        let s = DelayStats::from_samples(&mut d).unwrap();
        assert_eq!(
            (s.min_ns, s.p50_ns, s.p90_ns, s.p99_ns, s.p999_ns, s.max_ns),
            (1, 500, 900, 990, 999, 1000)
        );
        assert_eq!(s.mean_ns, 500.5);
        let s = DelayStats::from_samples(&mut [7]).unwrap();
        assert_eq!((s.min_ns, s.p50_ns, s.p999_ns, s.max_ns), (7, 7, 7, 7));
        assert!(DelayStats::from_samples(&mut []).is_none());
    }

    #[test]
    fn wilson_interval_known_values() {
        let close =
            |a: (f64, f64), b: (f64, f64)| (a.0 - b.0).abs() < 5e-5 && (a.1 - b.1).abs() < 5e-5;
        // Reference values (e.g. statsmodels proportion_confint(method="wilson")).
        assert!(
            close(wilson_interval(0, 10, 1.96), (0.0, 0.27754)),
            "{:?}",
            wilson_interval(0, 10, 1.96)
        );
        assert!(
            close(wilson_interval(5, 10, 1.96), (0.23659, 0.76341)),
            "{:?}",
            wilson_interval(5, 10, 1.96)
        );
        assert!(
            close(wilson_interval(10, 10, 1.96), (0.72247, 1.0)),
            "{:?}",
            wilson_interval(10, 10, 1.96)
        );
        assert!(
            close(wilson_interval(1, 100, 1.96), (0.00177, 0.05449)),
            "{:?}",
            wilson_interval(1, 100, 1.96)
        );
        let (lo, hi) = wilson_interval(0, 20_000, 1.96);
        assert_eq!(lo, 0.0);
        assert!((hi - 1.9204e-4).abs() < 1e-7, "{hi}");
        assert_eq!(wilson_interval(0, 0, 1.96), (0.0, 1.0));
        for n in 1..3000 {
            assert_eq!(wilson_interval(0, n, 1.96).0, 0.0, "n {n}");
            assert_eq!(wilson_interval(n, n, 1.96).1, 1.0, "n {n}");
        }
        // z = 0 collapses to the point estimate.
        assert_eq!(wilson_interval(3, 12, 0.0), (0.25, 0.25));
    }

    #[test]
    fn schedule_is_absolute() {
        let c = cfg(0, 3);
        assert_eq!(c.departure_offset_ns(1), 333_333_333);
        assert_eq!(c.departure_offset_ns(3), 1_000_000_000);
        assert_eq!(c.departure_offset_ns(3_000_000), 1_000_000_000_000_000);
        assert_eq!(cfg(0, 0).departure_offset_ns(5), 0);
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = rx.local_addr().unwrap();
        let bad = ProbeConfig {
            payload_len: 10,
            ..cfg(1, 0)
        };
        assert!(run_pair(tx, rx, dst, &bad).is_err());
    }
}
