//! Round trips: an echo server and the client that measures through it.
//!
//! The client sends ordinary probe datagrams (paced by [`send`]); the server
//! returns each one to its sender unchanged with its own receive time
//! appended ([`ECHO_STAMP_LEN`] bytes, `CLOCK_MONOTONIC` ns, big-endian).
//! For every sequence number that comes back intact the client has three
//! times: its send time (in the datagram), the server's receive time (the
//! stamp) and its own return time, so each round trip splits into its two
//! one-way delays: forward = stamp − send, reverse = return − stamp, and
//! forward + reverse = the round trip exactly.
//!
//! One-way delays need one clock at both ends: the lab's namespaces share
//! the host's `CLOCK_MONOTONIC`, as the one-way probe already relies on.
//! Between two hosts only the round trip is meaningful.
#[allow(clippy::wildcard_imports)]
use super::*;

/// Bytes the server appends to each datagram it returns: its receive time.
pub const ECHO_STAMP_LEN: usize = 8;

/// What a round-trip run measured, over the first intact copy of each
/// returned sequence number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EchoReport {
    pub sent: u64,
    /// Datagrams the server read and returned (any run, any state).
    pub server_echoed: u64,
    /// Distinct sequence numbers that came back intact.
    pub returned: u64,
    /// `sent − returned`: lost on the way out or back (or corrupted).
    pub lost: u64,
    /// Client send → server receive.
    pub forward: Option<DelayStats>,
    /// Server receive → client receive.
    pub reverse: Option<DelayStats>,
    /// Client send → client receive.
    pub round_trip: Option<DelayStats>,
}

/// Returns every datagram read on `sock` to its sender with the receive time
/// appended, until `stop` says so (checked at least every 50 ms); returns
/// how many it echoed.
pub fn echo_serve(sock: &UdpSocket, stop: impl Fn() -> bool) -> Result<u64> {
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .context("setting the echo server's read timeout")?;
    let mut buf = vec![0u8; MAX_PAYLOAD_LEN + ECHO_STAMP_LEN];
    let mut echoed = 0u64;
    while !stop() {
        let (n, from) = match sock.recv_from(&mut buf[..MAX_PAYLOAD_LEN]) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) if is_fatal(&e) => return Err(e).context("echo server receive"),
            Err(_) => continue,
        };
        let stamp_ns = monotonic_ns();
        buf[n..n + ECHO_STAMP_LEN].copy_from_slice(&stamp_ns.to_be_bytes());
        // A failed reply is the return path's loss; the client counts it.
        if sock.send_to(&buf[..n + ECHO_STAMP_LEN], from).is_ok() {
            echoed += 1;
        }
    }
    Ok(echoed)
}

/// Per sequence number: (send, server receive, return) times, ns.
#[derive(Default)]
struct Returns {
    seen: std::collections::HashSet<u64>,
    forward: Vec<u64>,
    reverse: Vec<u64>,
    round_trip: Vec<u64>,
}

impl Returns {
    /// Records one returned datagram read at `return_ns`.
    fn record(&mut self, datagram: &[u8], run_id: u32, return_ns: u64) {
        let Some(split) = datagram.len().checked_sub(ECHO_STAMP_LEN) else {
            return;
        };
        let (original, stamp) = datagram.split_at(split);
        let Verdict::Valid { seq, send_ns } = decode(original, run_id) else {
            return;
        };
        if !self.seen.insert(seq) {
            return;
        }
        let mut b = [0u8; ECHO_STAMP_LEN];
        b.copy_from_slice(stamp);
        let stamp_ns = u64::from_be_bytes(b);
        self.forward.push(stamp_ns.saturating_sub(send_ns));
        self.reverse.push(return_ns.saturating_sub(stamp_ns));
        self.round_trip.push(return_ns.saturating_sub(send_ns));
    }
}

/// Runs `cfg` through an echo server on `server` (bound at `server_addr`)
/// from `client`, both in this process (each socket may live in its own
/// network namespace); waits `cfg.linger` after the last send for the last
/// returns.
pub fn run_echo(
    client: UdpSocket,
    server: UdpSocket,
    server_addr: SocketAddr,
    cfg: &ProbeConfig,
) -> Result<EchoReport> {
    cfg.validate()?;
    if cfg.payload_len + ECHO_STAMP_LEN > MAX_PAYLOAD_LEN {
        bail!(
            "echo payloads are at most {} bytes (the reply adds {ECHO_STAMP_LEN})",
            MAX_PAYLOAD_LEN - ECHO_STAMP_LEN
        );
    }
    // 0 while sending; afterwards the time both threads may stop.
    let stop_at_ns = Arc::new(AtomicU64::new(0));
    let stopped = {
        let stop_at_ns = Arc::clone(&stop_at_ns);
        move || {
            let at = stop_at_ns.load(Ordering::Acquire);
            at != 0 && monotonic_ns() >= at
        }
    };
    let server_thread = {
        let stopped = stopped.clone();
        thread::Builder::new()
            .name("probe-echo".into())
            .spawn(move || echo_serve(&server, stopped))
            .context("spawning the echo server thread")?
    };
    let rx = client.try_clone().context("cloning the client socket")?;
    rx.set_read_timeout(Some(Duration::from_millis(50)))
        .context("setting the client's read timeout")?;
    let run_id = cfg.run_id;
    let receiver = thread::Builder::new()
        .name("probe-echo-rx".into())
        .spawn(move || {
            let mut returns = Returns::default();
            let mut buf = vec![0u8; MAX_PAYLOAD_LEN + ECHO_STAMP_LEN];
            while !stopped() {
                if let Ok(n) = rx.recv(&mut buf) {
                    returns.record(&buf[..n], run_id, monotonic_ns());
                }
            }
            returns
        })
        .context("spawning the echo client's receiver")?;
    let sent = send(&client, server_addr, cfg);
    let linger_ns = u64::try_from(cfg.linger.as_nanos()).unwrap_or(u64::MAX);
    stop_at_ns.store(
        monotonic_ns().saturating_add(linger_ns).max(1),
        Ordering::Release,
    );
    let mut returns = receiver.join().map_err(|p| {
        anyhow!(
            "echo receiver panicked: {}",
            impair::netns::panic_message(&*p)
        )
    })?;
    let server_echoed = server_thread.join().map_err(|p| {
        anyhow!(
            "echo server panicked: {}",
            impair::netns::panic_message(&*p)
        )
    })??;
    let sent = sent?.sent;
    let returned = returns.seen.len() as u64;
    Ok(EchoReport {
        sent,
        server_echoed,
        returned,
        lost: sent.saturating_sub(returned),
        forward: DelayStats::from_samples(&mut returns.forward),
        reverse: DelayStats::from_samples(&mut returns.reverse),
        round_trip: DelayStats::from_samples(&mut returns.round_trip),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_round_trips_split_into_two_one_way_delays() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let cfg = ProbeConfig {
            count: 300,
            rate_pps: 3000,
            run_id: 0x4543_484f,
            linger: Duration::from_millis(200),
            ..Default::default()
        };
        let r = run_echo(client, server, addr, &cfg).unwrap();
        assert_eq!((r.sent, r.returned, r.lost), (300, 300, 0), "{r:?}");
        assert!(r.server_echoed >= 300, "{r:?}");
        let (f, b, t) = (
            r.forward.unwrap(),
            r.reverse.unwrap(),
            r.round_trip.unwrap(),
        );
        assert_eq!((f.samples, b.samples, t.samples), (300, 300, 300));
        // Per sample forward + reverse is the round trip, so the means add up.
        assert!(
            (f.mean_ns + b.mean_ns - t.mean_ns).abs() < 1.0,
            "{f:?} {b:?} {t:?}"
        );
        assert!(t.min_ns >= f.min_ns.max(b.min_ns), "{f:?} {b:?} {t:?}");
    }

    #[test]
    fn returns_keep_the_first_intact_copy_and_drop_the_rest() {
        let mut buf = vec![0u8; 64 + ECHO_STAMP_LEN];
        encode(&mut buf[..64], 9, 4, 1_000).unwrap();
        buf[64..].copy_from_slice(&1_700u64.to_be_bytes());
        let mut r = Returns::default();
        r.record(&buf, 9, 2_000);
        r.record(&buf, 9, 2_500); // a duplicate
        r.record(&buf, 8, 2_000); // another run
        r.record(&buf[..5], 9, 2_000); // truncated
        buf[10] ^= 1; // corrupted
        r.record(&buf, 9, 2_000);
        assert_eq!(r.seen.len(), 1);
        assert_eq!(
            (r.forward[0], r.reverse[0], r.round_trip[0]),
            (700, 300, 1_000)
        );
    }
}
