//! Values as people type them, in tc's units: percentages, times, rates,
//! queue limits, loss models, prefixes, protocols and ports. Every front end
//! (flags, TOML, JSON) parses text through these, so a value means the same
//! everywhere; each error names the text and what is allowed.
use std::{net::IpAddr, str::FromStr};

use ipnet::IpNet;

use super::error::ValueError;

macro_rules! value_error {
    ($($arg:tt)*) => { ValueError::one_line(format!($($arg)*)) };
}

/// A probability given as a percentage, as tc netem takes it: `10%`, `0.5%`,
/// or a bare `10` (also percent). Returns the fraction in [0, 1].
pub fn parse_percent(what: &str, s: &str) -> Result<f64, ValueError> {
    let t = s.trim();
    let num = t.strip_suffix('%').unwrap_or(t).trim();
    let v: f64 = num.parse().map_err(|_| {
        value_error!("invalid {what} '{s}': expected a percentage such as 1%, 0.5% or 10%")
    })?;
    if !v.is_finite() || !(0.0..=100.0).contains(&v) {
        return Err(value_error!(
            "invalid {what} '{s}': must be between 0% and 100%"
        ));
    }
    Ok(v / 100.0)
}

/// Splits `12.5ms` into (12.5, "ms").
fn number_and_unit(s: &str) -> Option<(f64, String)> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().ok()?;
    v.is_finite().then(|| (v, unit.trim().to_ascii_lowercase()))
}

/// A time as tc writes it: `100ms`, `1.5s`, `250us`, `20ns` (also `usec`,
/// `msec`, `sec`). A unit is required except for 0. Returns nanoseconds.
pub fn parse_duration_ns(what: &str, s: &str) -> Result<u64, ValueError> {
    let bad =
        || value_error!("invalid {what} '{s}': expected a time such as 100ms, 1.5s, 250us or 0");
    let (v, unit) = number_and_unit(s).ok_or_else(bad)?;
    let scale = match unit.as_str() {
        "" if v == 0.0 => 1.0,
        "ns" | "nsec" => 1.0,
        "us" | "usec" | "µs" => 1e3,
        "ms" | "msec" => 1e6,
        "s" | "sec" | "secs" => 1e9,
        "m" | "min" => 60e9,
        _ => return Err(bad()),
    };
    let ns = v * scale;
    if ns > 3600e9 {
        return Err(value_error!("invalid {what} '{s}': at most 1 hour"));
    }
    Ok(ns.round() as u64)
}

/// A rate as tc writes it: `bit`, `kbit`, `mbit`, `gbit`, `tbit` (powers of
/// 1000), `kibit`… (powers of 1024), or bytes per second with `bps`, `kbps`,
/// `mbps`, `gbps`, `tbps` (and `kibps`…); a bare number is bits per second.
/// Returns bits per second.
pub fn parse_rate_bps(s: &str) -> Result<u64, ValueError> {
    let bad = || {
        value_error!("invalid rate '{s}': expected a number with a unit: bit, kbit, mbit, gbit (bits/s) or bps, kbps, mbps, gbps (bytes/s), e.g. 10mbit")
    };
    let (v, unit) = number_and_unit(s).ok_or_else(bad)?;
    let (prefix, bytes) = if let Some(p) = unit.strip_suffix("bit") {
        (p.to_owned(), false)
    } else if let Some(p) = unit.strip_suffix("bps") {
        (p.to_owned(), true)
    } else if unit.is_empty() {
        // tc reads a bare number as bit/s, comcast as kbit/s: refuse to guess.
        return Err(value_error!(
            "invalid rate '{s}': a unit is required (a bare number means bit/s to tc and \
             kbit/s to comcast): write {t}kbit, {t}mbit or {t}bit (bits/s), or {t}kbps (bytes/s)",
            t = s.trim()
        ));
    } else {
        return Err(bad());
    };
    let mult = match prefix.as_str() {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "ki" => 1024.0,
        "mi" => 1024.0 * 1024.0,
        "gi" => 1024.0 * 1024.0 * 1024.0,
        "ti" => 1024.0f64.powi(4),
        _ => return Err(bad()),
    };
    let bps = v * mult * if bytes { 8.0 } else { 1.0 };
    if !(1.0..=1e13).contains(&bps) {
        return Err(value_error!(
            "invalid rate '{s}': must be between 1bit and 10tbit"
        ));
    }
    Ok(bps.round() as u64)
}

/// A queue limit for a rate: a time (`50ms`), bytes (`64kb`, `1500b`, `1mb`)
/// or packets (`100p`, counted as 1514-byte frames).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QueueLimit {
    Time { ns: u64 },
    Bytes { bytes: u64 },
    Packets { packets: u64 },
}

/// The frame size a packet-count queue limit assumes (Ethernet MTU + header).
pub const QUEUE_PACKET_BYTES: u64 = 1514;

pub fn parse_queue(s: &str) -> Result<QueueLimit, ValueError> {
    let bad = || {
        value_error!(
            "invalid queue '{s}': expected a time (50ms), bytes (64kb, 1500b) or packets (100p)"
        )
    };
    let (v, unit) = number_and_unit(s).ok_or_else(bad)?;
    let q = match unit.as_str() {
        "b" => QueueLimit::Bytes { bytes: v as u64 },
        "k" | "kb" => QueueLimit::Bytes {
            bytes: (v * 1024.0) as u64,
        },
        "m" | "mb" => QueueLimit::Bytes {
            bytes: (v * 1024.0 * 1024.0) as u64,
        },
        "p" | "pkt" | "pkts" | "packets" => QueueLimit::Packets { packets: v as u64 },
        // A bare number could be packets, bytes or time: say which forms exist.
        "" if v != 0.0 => return Err(bad()),
        _ => QueueLimit::Time {
            ns: parse_duration_ns("queue", s)?,
        },
    };
    if matches!(
        q,
        QueueLimit::Time { ns: 0 }
            | QueueLimit::Bytes { bytes: 0 }
            | QueueLimit::Packets { packets: 0 }
    ) {
        return Err(value_error!(
            "invalid queue '{s}': must be greater than zero"
        ));
    }
    Ok(q)
}

/// A burst-loss model, as tc netem's `gemodel` and `state` take it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossModelSpec {
    /// Gilbert-Elliott: GOOD→BAD with `p`, BAD→GOOD with `r`; loss `1-h` in
    /// BAD and `1-k` in GOOD.
    GilbertElliott {
        p: f64,
        r: f64,
        one_minus_h: f64,
        one_minus_k: f64,
    },
    /// 4-state Markov (gap-received 1, burst-received 2, lost-in-burst 3,
    /// isolated-loss 4).
    FourState {
        p13: f64,
        p31: f64,
        p32: f64,
        p23: f64,
        p14: f64,
    },
}

/// `ge:P[,R[,1-H[,1-K]]]` or `state:P13[,P31[,P32[,P23[,P14]]]]`, percentages.
/// Omitted values take netem's defaults: `r = 1-p`, `1-h = 100%`, `1-k = 0%`;
/// `p31 = 1-p13`, `p32 = 0%`, `p23 = 100%`, `p14 = 0%`.
pub fn parse_loss_model(s: &str) -> Result<LossModelSpec, ValueError> {
    let form = "expected ge:P[,R[,1-H[,1-K]]] or state:P13[,P31[,P32[,P23[,P14]]]] with percentages, e.g. ge:1%,30%";
    let (kind, rest) = s
        .trim()
        .split_once(':')
        .ok_or_else(|| value_error!("invalid loss model '{s}': {form}"))?;
    let vals: Vec<f64> = rest
        .split(',')
        .map(|v| parse_percent("loss-model parameter", v))
        .collect::<Result<_, _>>()
        .map_err(|e| value_error!("invalid loss model '{s}': {}", e))?;
    let at = |i: usize, default: f64| vals.get(i).copied().unwrap_or(default);
    match kind.trim().to_ascii_lowercase().as_str() {
        "ge" | "gemodel" | "gilbert-elliott" if (1..=4).contains(&vals.len()) => {
            let p = vals[0];
            Ok(LossModelSpec::GilbertElliott {
                p,
                r: at(1, 1.0 - p),
                one_minus_h: at(2, 1.0),
                one_minus_k: at(3, 0.0),
            })
        }
        "state" | "4state" if (1..=5).contains(&vals.len()) => {
            let p13 = vals[0];
            let m = LossModelSpec::FourState {
                p13,
                p31: at(1, 1.0 - p13),
                p32: at(2, 0.0),
                p23: at(3, 1.0),
                p14: at(4, 0.0),
            };
            if let LossModelSpec::FourState {
                p13, p31, p32, p14, ..
            } = m
            {
                if p13 + p14 > 1.0 + 1e-12 {
                    return Err(value_error!(
                        "invalid loss model '{s}': p13 + p14 must not exceed 100%"
                    ));
                }
                if p31 + p32 > 1.0 + 1e-12 {
                    return Err(value_error!(
                        "invalid loss model '{s}': p31 + p32 must not exceed 100%"
                    ));
                }
            }
            Ok(m)
        }
        _ => Err(value_error!("invalid loss model '{s}': {form}")),
    }
}

/// An address prefix; a bare address is a host prefix (/32 or /128).
pub fn parse_cidr(what: &str, s: &str) -> Result<IpNet, ValueError> {
    let t = s.trim();
    let net = if t.contains('/') {
        IpNet::from_str(t).map_err(|_| {
            value_error!(
                "invalid {what} '{s}': expected ADDRESS/LENGTH such as 198.18.0.0/15 or \
                 2001:2::/48 (length 0-32 for IPv4, 0-128 for IPv6)"
            )
        })?
    } else {
        let a = IpAddr::from_str(t).map_err(|_| {
            value_error!(
                "invalid {what} '{s}': expected an IP address or a prefix such as 198.18.0.0/15"
            )
        })?;
        IpNet::from(a)
    };
    Ok(net.trunc())
}

/// An L4 protocol name or number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proto(pub u8);

impl Proto {
    pub fn name(self) -> String {
        match self.0 {
            1 => "icmp".into(),
            6 => "tcp".into(),
            17 => "udp".into(),
            58 => "icmpv6".into(),
            132 => "sctp".into(),
            n => format!("proto {n}"),
        }
    }
}

/// `tcp|udp|icmp|icmpv6|sctp|any` or a protocol number 0-255; `any` is `None`.
pub fn parse_proto(s: &str) -> Result<Option<Proto>, ValueError> {
    let p = match s.trim().to_ascii_lowercase().as_str() {
        "any" | "all" => return Ok(None),
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" | "ipv6-icmp" => 58,
        "sctp" => 132,
        other => other.parse::<u8>().map_err(|_| {
            value_error!(
                "invalid protocol '{s}': expected tcp, udp, icmp, icmpv6, sctp, any or 0-255"
            )
        })?,
    };
    Ok(Some(Proto(p)))
}

/// A port `N` or an inclusive range `A-B` with A ≤ B.
pub fn parse_port_range(what: &str, s: &str) -> Result<(u16, u16), ValueError> {
    let bad = || {
        value_error!("invalid {what} '{s}': expected a port 0-65535 or a range such as 5000-5010")
    };
    let t = s.trim();
    if t.contains(',') {
        return Err(value_error!(
            "invalid {what} '{s}': one port or range per value; for several, give each \
             separately (repeat the flag: one rule per port)"
        ));
    }
    if let Some((a, b)) = t.split_once(':') {
        return Err(value_error!(
            "invalid {what} '{s}': a range is written A-B, e.g. {}-{}",
            a.trim(),
            b.trim()
        ));
    }
    let (lo, hi) = match t.split_once('-') {
        Some((a, b)) => (
            a.trim().parse::<u16>().map_err(|_| bad())?,
            b.trim().parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = t.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(value_error!(
            "invalid {what} '{s}': the range is reversed ({lo} > {hi}); write {hi}-{lo}"
        ));
    }
    Ok((lo, hi))
}

/// A rate's cell: `SIZE` or `SIZE/OVERHEAD` in bytes (ATM: `48/5`).
pub fn parse_cell(s: &str) -> Result<(u32, i32), ValueError> {
    let bad = || {
        value_error!(
            "invalid cell '{s}': expected SIZE or SIZE/OVERHEAD in bytes, e.g. 48/5 for ATM"
        )
    };
    let (size, over) = match s.split_once('/') {
        Some((a, b)) => (
            a.trim().parse::<u32>().map_err(|_| bad())?,
            b.trim().parse::<i32>().map_err(|_| bad())?,
        ),
        None => (s.trim().parse::<u32>().map_err(|_| bad())?, 0),
    };
    if size == 0 {
        return Err(bad());
    }
    Ok((size, over))
}

/// An MTU in bytes (its range is the model's to check).
pub fn parse_mtu(s: &str) -> Result<u32, ValueError> {
    s.trim()
        .parse::<u32>()
        .map_err(|_| value_error!("invalid MTU '{s}': expected a size in bytes such as 1280"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_forms_and_bounds() {
        assert_eq!(parse_percent("loss", "10%"), Ok(0.1));
        assert_eq!(parse_percent("loss", "10"), Ok(0.1));
        assert_eq!(parse_percent("loss", " 0.5 % "), Ok(0.005));
        assert_eq!(parse_percent("loss", "100%"), Ok(1.0));
        for bad in ["150%", "-1%", "abc", "", "nan", "inf%", "10%%"] {
            let e = parse_percent("loss", bad).unwrap_err().0;
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
        assert!(parse_percent("loss", "150%")
            .unwrap_err()
            .0
            .contains("between 0% and 100%"));
    }

    #[test]
    fn cidr_forms() {
        assert_eq!(
            parse_cidr("dst", "198.18.2.7/24").unwrap().to_string(),
            "198.18.2.0/24"
        );
        assert_eq!(
            parse_cidr("dst", "198.18.2.7").unwrap().to_string(),
            "198.18.2.7/32"
        );
        assert_eq!(
            parse_cidr("dst", "2001:2::1/48").unwrap().to_string(),
            "2001:2::/48"
        );
        for bad in ["198.18.0.0/33", "2001:2::/129", "nope", "1.2.3/8"] {
            assert!(parse_cidr("dst", bad).unwrap_err().0.contains(bad));
        }
    }

    #[test]
    fn loss_models_with_netem_defaults() {
        assert_eq!(
            parse_loss_model("ge:1%"),
            Ok(LossModelSpec::GilbertElliott {
                p: 0.01,
                r: 0.99,
                one_minus_h: 1.0,
                one_minus_k: 0.0
            })
        );
        assert_eq!(
            parse_loss_model("ge:1%,30%,80%,0.1%"),
            Ok(LossModelSpec::GilbertElliott {
                p: 0.01,
                r: 0.3,
                one_minus_h: 0.8,
                one_minus_k: 0.001
            })
        );
        assert_eq!(
            parse_loss_model("state:5%"),
            Ok(LossModelSpec::FourState {
                p13: 0.05,
                p31: 0.95,
                p32: 0.0,
                p23: 1.0,
                p14: 0.0
            })
        );
        for bad in [
            "ge",
            "ge:",
            "ge:150%",
            "mm:1%",
            "ge:1,2,3,4,5",
            "state:60%,50%,60%",
            "state:60%,1%,1%,1%,50%",
        ] {
            let e = parse_loss_model(bad).unwrap_err().0;
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
    }

    #[test]
    fn durations_rates_and_queues_in_tc_units() {
        assert_eq!(parse_duration_ns("delay", "100ms"), Ok(100_000_000));
        assert_eq!(parse_duration_ns("delay", "1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration_ns("delay", "250us"), Ok(250_000));
        assert_eq!(parse_duration_ns("delay", "0"), Ok(0));
        for bad in ["100", "10parsecs", "-5ms", "2h", "ms"] {
            assert!(
                parse_duration_ns("delay", bad)
                    .unwrap_err()
                    .0
                    .contains(&format!("'{bad}'")),
                "{bad}"
            );
        }
        assert_eq!(parse_rate_bps("10mbit"), Ok(10_000_000));
        assert_eq!(parse_rate_bps("1gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate_bps("1kibit"), Ok(1024));
        assert_eq!(parse_rate_bps("2mbps"), Ok(16_000_000));
        // A bare number is refused (tc means bit/s, comcast kbit/s); the
        // error offers both spellings.
        let e = parse_rate_bps("1000").unwrap_err().0;
        assert!(e.contains("1000kbit") && e.contains("1000bit"), "{e}");
        for bad in ["10mb", "fast", "0bit", "99tbit"] {
            assert!(
                parse_rate_bps(bad)
                    .unwrap_err()
                    .0
                    .contains(&format!("'{bad}'")),
                "{bad}"
            );
        }
        assert_eq!(parse_queue("50ms"), Ok(QueueLimit::Time { ns: 50_000_000 }));
        assert_eq!(parse_queue("64kb"), Ok(QueueLimit::Bytes { bytes: 65_536 }));
        assert_eq!(
            parse_queue("100p"),
            Ok(QueueLimit::Packets { packets: 100 })
        );
        assert!(parse_queue("0ms").is_err());
        // A bare number lists every form, not just times.
        let e = parse_queue("100").unwrap_err().0;
        assert!(
            e.contains("100p") && e.contains("64kb") && e.contains("50ms"),
            "{e}"
        );
        assert!(parse_queue("lots").unwrap_err().0.contains("'lots'"));
    }

    #[test]
    fn ports_and_protocols() {
        let e = parse_port_range("port", "80,443").unwrap_err().0;
        assert!(e.contains("repeat the flag"), "{e}");
        let e = parse_port_range("port", "5000:5010").unwrap_err().0;
        assert!(e.contains("5000-5010"), "{e}");
        assert_eq!(parse_port_range("dport", "53"), Ok((53, 53)));
        assert_eq!(parse_port_range("dport", "5000-5010"), Ok((5000, 5010)));
        assert!(parse_port_range("dport", "10-5")
            .unwrap_err()
            .0
            .contains("reversed"));
        assert!(parse_port_range("dport", "70000").is_err());
        assert_eq!(parse_proto("UDP"), Ok(Some(Proto(17))));
        assert_eq!(parse_proto("any"), Ok(None));
        assert!(parse_proto("quic").unwrap_err().0.contains("'quic'"));
    }
}
