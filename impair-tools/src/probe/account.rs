//! Receptions and their accounting: loss, duplicates, reordering, delay.
#[allow(clippy::wildcard_imports)]
use super::*;

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
    pub(super) received: u64,
    pub(super) duplicated: u64,
    pub(super) reordered: u64,
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
