//! impair's own UDP traffic probe: a paced sender, a receiver and exact
//! loss / duplication / reordering / corruption / one-way-delay accounting;
//! and round trips through an echo server, each split into its two one-way
//! delays (`echo`).
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

mod account;
mod echo;
mod receive;
mod send;
mod wire;

pub use account::*;
pub use echo::*;
pub use receive::*;
pub use send::*;
pub use wire::*;
#[allow(unused_imports)]
use {account::*, echo::*, receive::*, send::*, wire::*};

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
        // which may itself have left late. Duration and lateness come from
        // separate clock reads around each send, so they may disagree by a
        // little (CI: 107 ns short of the bound); 50 µs is far below any
        // pacing mistake worth catching (one packet's interval is 250 µs).
        assert!(
            r.send_duration_ns + r.max_send_lateness_ns + 50_000 >= 499_750_000,
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
