//! Needs sch_fq (the VM tier runs it as part of `netns fq::`): a synthetic
//! step trace (10 → 2 → 20 Mbit/s, 2 s each) at saturating offered load;
//! the bytes delivered in every 100 ms window of the trace's own clock
//! against the capacity the trace offered in that window.
//!
//! Why the test is built the way it is (a first attempt with the probe did
//! not hold in the emulated VM):
//! - Timing: the probe stamps a packet when `recv` returns in user space,
//!   which a busy emulated guest delays by tens of ms (whole windows' worth
//!   of packets then land in the next window). Here the kernel stamps each
//!   packet when it is received (SO_TIMESTAMPNS), and the windows are the
//!   trace's own, from its time 0 (`impair stats --json`: `start_ns`).
//! - Granularity: one delivery opportunity is 1500 bytes, so at 2 Mbit/s a
//!   100 ms window holds 16 or 17 of them and one packet counted in the
//!   wrong window is already 6%. The reference is the trace's own count in
//!   each window, and the trace keeps 10 ms at each window edge free of
//!   opportunities, so a few ms of lateness moves nothing across an edge.
//!   Even so, measured on 6.12 under TCG with the host at a load of 10 on 2
//!   cores, the guest's kernel stamps jitter by ±10 ms and the guest
//!   sometimes stalls for 40 to 200 ms (its vCPUs are host threads): a
//!   deficit in one window and the same surplus in the next. A watcher
//!   thread (SCHED_FIFO, on CPU 0 with the whole packet path) records every
//!   stall over 5 ms; every window whose edges no stall crossed must be
//!   within 5%, each step must have at least 5 windows judged so, and the
//!   whole span (stalls included) within 1%.
//! - Load: 1500-byte packets (one opportunity each) at 23 Mbit/s, 1,917
//!   packets/s, rather than small probe packets at 20 Mbit/s (ten times the
//!   packet rate, more than the guest sends on time).
use std::{
    io, mem,
    net::UdpSocket,
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use impair_tests::{
    kernel::fq_or_note,
    ns::{lab, socket_pair, Site},
    pin_to_cpu0, Scratch,
};

/// (rate kbit/s, length ms) of the trace's steps.
const STEPS: [(u64, u64); 3] = [(10_000, 2_000), (2_000, 2_000), (20_000, 2_000)];
/// A delivery opportunity and each test packet: 1500 bytes on the wire
/// (Ethernet 14 + IPv4 20 + UDP 8 + payload), as impair counts them at tc.
const WIRE_BYTES: u64 = 1_500;
const PAYLOAD_BYTES: usize = 1_500 - 14 - 20 - 8;
/// Offered load: above the trace's highest step at every moment.
const OFFERED_BPS: u64 = 23_000_000;
const WINDOW_MS: u64 = 100;
const TOLERANCE: f64 = 0.05;
/// Milliseconds at each edge of a 100 ms window without an opportunity.
const EDGE_GAP_MS: u64 = 10;
/// A stall of the guest: the watcher (SCHED_FIFO on CPU 0, where the
/// sender, the router's forwarding, fq's timer and the receiver's stamps
/// all run) woke this much later than its 1 ms sleep asked. The emulated
/// guest's vCPUs are host threads, and on a loaded host one is sometimes
/// not run for tens of ms: the packets due meanwhile leave together when it
/// runs again. A stall that crosses a window's edge, from before the edge's
/// gap ([`EDGE_GAP_MS`]) to after the edge, moves bytes from one window to
/// the next (a deficit, then the same surplus); those two windows are not
/// judged. Other stalls delay packets within their window and change
/// nothing.
const STALL_NS: u64 = 5_000_000;
/// Judged windows (no stall across an edge) each step must have, or the run
/// cannot judge the trace: on the project's busy 2-core machine under TCG,
/// 32 of 70 windows were judged in one run.
const JUDGED_PER_STEP: usize = 5;
/// The whole measured span: delivered bytes within this of the capacity
/// (nothing lost, nothing invented, whatever the stalls).
const TOTAL_TOLERANCE: f64 = 0.01;
/// Sending time: one period (6 s) plus the first second, in which the queue
/// fills, and a margin.
const SEND_MS: u64 = 8_000;

/// The trace's opportunity times, ms from its start. Each 100 ms of a step
/// holds that step's capacity (`rate × 100 ms / 1500 bytes`, carried over
/// between windows so the step's rate is exact), spread evenly over its
/// middle 80 ms: no opportunity lies within [`EDGE_GAP_MS`] of a window's
/// edge, so a packet the emulated guest releases or stamps a few ms late
/// still counts in its own window.
fn opportunities_ms() -> Vec<u64> {
    let mut times = Vec::new();
    let mut start_ms = 0;
    for (kbps, len_ms) in STEPS {
        // Opportunities before `ms` into the step.
        let before = |ms: u64| kbps * ms / (WIRE_BYTES * 8);
        for w in 0..len_ms / WINDOW_MS {
            let n = before((w + 1) * WINDOW_MS) - before(w * WINDOW_MS);
            let span = WINDOW_MS - 2 * EDGE_GAP_MS;
            for j in 0..n {
                times.push(start_ms + w * WINDOW_MS + EDGE_GAP_MS + j * span / n);
            }
        }
        start_ms += len_ms;
    }
    times
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `CLOCK_REALTIME` minus `CLOCK_MONOTONIC`, from the tightest of a few
/// back-to-back readings.
fn realtime_minus_monotonic_ns() -> i128 {
    (0..16)
        .map(|_| {
            let m0 = clock_ns(libc::CLOCK_MONOTONIC);
            let r = clock_ns(libc::CLOCK_REALTIME);
            let m1 = clock_ns(libc::CLOCK_MONOTONIC);
            (m1 - m0, i128::from(r) - i128::from(m0 + (m1 - m0) / 2))
        })
        .min_by_key(|(gap, _)| *gap)
        .map(|(_, off)| off)
        .unwrap()
}

/// One datagram and the kernel's receive time (`CLOCK_REALTIME` ns), or
/// `None` on the read timeout.
fn recv_stamped(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Option<u64>> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: an all-zero msghdr is valid (no name, no buffers yet).
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control);
    // SAFETY: the msghdr points at our iovec and control buffer, both alive
    // for the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled,
    // within msg_controllen; the timestamp is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return Ok(Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Err(io::Error::other(
        "a datagram without its SO_TIMESTAMPNS stamp",
    ))
}

fn set_int(sock: &UdpSocket, opt: libc::c_int, value: libc::c_int) {
    // SAFETY: setsockopt with a c_int we own, its size given.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt {opt}: {}", io::Error::last_os_error());
}

/// Stalls of CPU 0 ([`STALL_NS`]) until `stop`: (from, to) monotonic ns.
fn watch_stalls(stop: &AtomicBool) -> Vec<(u64, u64)> {
    pin_to_cpu0();
    let param = libc::sched_param { sched_priority: 50 };
    // SAFETY: sched_setscheduler on the calling thread with a valid param.
    let fifo = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0;
    assert!(fifo, "SCHED_FIFO: {}", io::Error::last_os_error());
    let mut stalls = Vec::new();
    let mut prev = clock_ns(libc::CLOCK_MONOTONIC);
    while !stop.load(Ordering::Acquire) {
        thread::sleep(Duration::from_millis(1));
        let now = clock_ns(libc::CLOCK_MONOTONIC);
        if now - prev > STALL_NS {
            stalls.push((prev, now));
        }
        prev = now;
    }
    stalls
}

#[test]
fn step_trace_throughput_per_100ms_window() {
    step_trace(
        Site::RouterEgress,
        "fqrtrace",
        "fq::rate_trace::step_trace_throughput_per_100ms_window",
    );
}

/// The same trace on received traffic (issue 15's downlink trace): tc
/// ingress of the server sends it through the ifb impair owns, whose egress
/// replays the trace as egress does.
#[test]
fn step_trace_on_received_traffic_per_100ms_window() {
    let test = "fq::rate_trace::step_trace_on_received_traffic_per_100ms_window";
    if super::super::ifb::ifb_path_or_refused("fqrtri", test) {
        step_trace(Site::ServerIngress, "fqrtin", test);
    }
}

#[allow(
    clippy::print_stdout,
    reason = "the per-window report, captured by libtest unless the test fails"
)]
fn step_trace(site: Site, tag: &str, test: &str) {
    let lab = lab(tag);
    if !fq_or_note(
        &lab,
        test,
        "the rate trace's departures need sch_fq: the VM tier runs this",
    ) {
        return;
    }
    let times = opportunities_ms();
    let period_ms: u64 = STEPS.iter().map(|(_, ms)| ms).sum();
    let mut text = String::from("# synthetic step trace: 10, 2, 20 Mbit/s, 2 s each\n");
    for t in &times {
        text += &format!("{t}\n");
    }
    // Mahimahi's period is the last line's time: end on the period.
    text += &format!("{period_ms}\n");
    let scratch = Scratch::new(tag);
    let file = scratch.file("steps.trace", &text);
    // The line at the period's end is an opportunity at time 0 of the next
    // loop (time `period` is time 0 again).
    let mut capacity_ms = times.clone();
    capacity_ms.push(0);

    let before = site.state(&lab);
    let ctl = site.attach(&lab, &["--rate-trace", &file]);
    let stats = site.stats(&lab);
    let trace = &stats["rate_trace"];
    assert_eq!(trace["period_ms"], period_ms, "{stats}");
    let start_ns = trace["start_ns"].as_u64().expect("start_ns in stats");

    let (tx, rx, to) = socket_pair(&lab, false, 0);
    set_int(&rx, libc::SO_RCVBUFFORCE, 16 << 20);
    set_int(&rx, libc::SO_TIMESTAMPNS, 1);
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let done = AtomicBool::new(false);
    let watched = AtomicBool::new(false);
    let offset_ns = realtime_minus_monotonic_ns();
    let interval = Duration::from_nanos(1_000_000_000 * WIRE_BYTES * 8 / OFFERED_BPS);
    let (sent, first_send_ns, last_send_ns, stamps, stalls) = thread::scope(|s| {
        let watcher = s.spawn(|| watch_stalls(&watched));
        let receiver = s.spawn(|| {
            let mut buf = vec![0u8; 2048];
            let mut stamps = Vec::new();
            let mut idle_since = Instant::now();
            loop {
                match recv_stamped(&rx, &mut buf).unwrap() {
                    Some(real_ns) => {
                        stamps.push((i128::from(real_ns) - offset_ns) as u64);
                        idle_since = Instant::now();
                    }
                    // The queue holds up to 1 s after the last send.
                    None if done.load(Ordering::Acquire)
                        && idle_since.elapsed() > Duration::from_millis(1_500) =>
                    {
                        break stamps
                    }
                    None => {}
                }
            }
        });
        // The sender on CPU 0 keeps the whole path there (veth and the
        // router forward in its context; fq's timer fires where it was set).
        pin_to_cpu0();
        let payload = vec![0x5au8; PAYLOAD_BYTES];
        let t0 = Instant::now();
        let first = clock_ns(libc::CLOCK_MONOTONIC);
        let mut sent = 0u64;
        while t0.elapsed() < Duration::from_millis(SEND_MS) {
            let due = t0 + interval * sent as u32;
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            tx.send_to(&payload, to).unwrap();
            sent += 1;
        }
        let last = clock_ns(libc::CLOCK_MONOTONIC);
        done.store(true, Ordering::Release);
        let stamps = receiver.join().unwrap();
        watched.store(true, Ordering::Release);
        (sent, first, last, stamps, watcher.join().unwrap())
    });
    let stats = site.stats(&lab);
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    site.assert_restored(&lab, &before);

    // Windows of the trace's clock that lie after the first second of
    // sending (the queue fills) and before the sending stops.
    let window_ns = WINDOW_MS * 1_000_000;
    let first_w = (first_send_ns + 1_000_000_000 - start_ns).div_ceil(window_ns);
    let last_w = (last_send_ns - start_ns) / window_ns; // exclusive
    assert!(
        (last_w - first_w) * WINDOW_MS >= period_ms,
        "at least one whole period measured: windows {first_w}..{last_w}"
    );
    let mut delivered = vec![0u64; (last_w - first_w) as usize];
    for &t in &stamps {
        let Some(since) = t.checked_sub(start_ns) else {
            continue;
        };
        let w = since / window_ns;
        if (first_w..last_w).contains(&w) {
            delivered[(w - first_w) as usize] += WIRE_BYTES;
        }
    }
    let mut report = String::new();
    let (mut judged, mut within) = (0usize, 0usize);
    let mut judged_per_step = [0usize; STEPS.len()];
    let (mut total_got, mut total_want) = (0u64, 0u64);
    for (i, got) in delivered.iter().enumerate() {
        let w = first_w + i as u64;
        let from_ms = (w * WINDOW_MS) % period_ms;
        let opps = capacity_ms
            .iter()
            .filter(|&&t| (from_ms..from_ms + WINDOW_MS).contains(&t))
            .count() as u64;
        let want = opps * WIRE_BYTES;
        let err = (*got as f64 - want as f64) / want as f64;
        let (ws, we) = (start_ns + w * window_ns, start_ns + (w + 1) * window_ns);
        // A stall moves bytes across an edge only if it began before the
        // edge's gap (where the last opportunities lie) and ended after it.
        let gap_ns = EDGE_GAP_MS * 1_000_000;
        let crossing = |edge: u64| stalls.iter().find(|(a, b)| *a + gap_ns < edge && *b > edge);
        let stall = crossing(ws).or_else(|| crossing(we));
        let verdict = match stall {
            Some((a, b)) => format!("guest stalled {:.0} ms: not judged", (b - a) as f64 / 1e6),
            None => {
                judged += 1;
                let mut step_end_ms = 0;
                let step = STEPS.iter().position(|(_, len_ms)| {
                    step_end_ms += len_ms;
                    from_ms < step_end_ms
                });
                judged_per_step[step.unwrap_or(0)] += 1;
                if err.abs() <= TOLERANCE + 1e-9 {
                    within += 1;
                    String::new()
                } else {
                    "OUT".to_string()
                }
            }
        };
        total_got += got;
        total_want += want;
        report += &format!(
            "  window {w} (trace {from_ms} ms): delivered {got} bytes, capacity {want} ({:+.1}%) {verdict}\n",
            100.0 * err
        );
    }
    let windows = delivered.len();
    let total_err = (total_got as f64 - total_want as f64) / total_want as f64;
    let offered_mbps =
        sent as f64 * (WIRE_BYTES * 8) as f64 / ((last_send_ns - first_send_ns) as f64 / 1e3);
    let summary = format!(
        "sent {sent} packets ({offered_mbps:.1} Mbit/s offered), received {}, trace {}; \
         {} stalls of the guest over {STALL_NS} ns; {within} of {judged} judged windows \
         (of {windows}) within {:.0}%, the whole span {:+.2}%",
        stamps.len(),
        stats["rate_trace"],
        stalls.len(),
        100.0 * TOLERANCE,
        100.0 * total_err
    );
    println!("IMPAIR-RATE-TRACE {test}: {summary}\n{report}");
    assert!(
        judged_per_step.iter().all(|n| *n >= JUDGED_PER_STEP),
        "the guest stalled across too many window edges to judge each step \
         ({judged_per_step:?} judged windows per step): {summary}\n{report}"
    );
    assert_eq!(
        within,
        judged,
        "delivered bytes per {WINDOW_MS} ms window within {:.0}% of the trace's capacity in \
         every window whose edges no stall of the guest crossed: {summary}\n{report}",
        100.0 * TOLERANCE
    );
    assert!(
        total_err.abs() <= TOTAL_TOLERANCE,
        "delivered bytes over the whole span within {:.0}% of the capacity: {summary}",
        100.0 * TOTAL_TOLERANCE
    );
}
