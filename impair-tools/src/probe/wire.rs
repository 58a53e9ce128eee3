//! The probe's datagram format: header, payload and checksum.
#[allow(clippy::wildcard_imports)]
use super::*;

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

pub(super) const OFF_RUN_ID: usize = 4;
pub(super) const OFF_SEQ: usize = 8;
pub(super) const OFF_SEND_NS: usize = 16;
pub(super) const OFF_LEN: usize = 24;

/// Receive buffer requested with SO_RCVBUFFORCE: enough to absorb a burst of
/// released delayed packets without the receiver's own socket dropping any.
pub const RCVBUF_BYTES: usize = 32 << 20;
/// The sender sleeps until this close to a departure time, then spins: a
/// sleep overshoots by scheduler latency, a spin does not.
pub(super) const SPIN_NS: u64 = 50_000;
/// How often a blocked receiver re-checks its stop condition.
pub(super) const RECV_POLL: Duration = Duration::from_millis(2);
/// Bound on draining the socket after the stop condition, so that a foreign
/// flood cannot keep the receiver alive.
pub(super) const DRAIN_MAX_NS: u64 = 100_000_000;
/// Receptions pre-allocated before the first read (32 bytes each).
pub(super) const PREALLOC_RECEPTIONS: u64 = 1 << 20;

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

pub(super) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub(super) fn check_len(len: usize) -> Result<()> {
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
pub(super) fn fill(buf: &mut [u8], run_id: u32, seq: u64) {
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
pub(super) fn seal(buf: &mut [u8], send_ns: u64) {
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

pub(super) fn be_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_be_bytes(a)
}

pub(super) fn be_u64(b: &[u8], off: usize) -> u64 {
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
