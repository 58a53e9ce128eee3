//! Parsing and validating what users type. Every error names the bad value and
//! what is allowed; the CLI turns [`UsageError`] into one line and exit code 2.
use std::{fmt, net::IpAddr, str::FromStr};

use ipnet::IpNet;

/// Bad user input: reported as one line, exit code 2, and nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

macro_rules! usage {
    ($($arg:tt)*) => { $crate::input::UsageError(format!($($arg)*)) };
}
pub(crate) use usage;

/// A probability given as a percentage, as tc netem takes it: `10%`, `0.5%`,
/// or a bare `10` (also percent). Returns the fraction in [0, 1].
pub fn parse_percent(what: &str, s: &str) -> Result<f64, UsageError> {
    let t = s.trim();
    let num = t.strip_suffix('%').unwrap_or(t).trim();
    let v: f64 = num.parse().map_err(|_| {
        usage!("invalid {what} '{s}': expected a percentage such as 1%, 0.5% or 10%")
    })?;
    if !v.is_finite() || !(0.0..=100.0).contains(&v) {
        return Err(usage!("invalid {what} '{s}': must be between 0% and 100%"));
    }
    Ok(v / 100.0)
}

/// An address prefix; a bare address is a host prefix (/32 or /128).
pub fn parse_cidr(what: &str, s: &str) -> Result<IpNet, UsageError> {
    let t = s.trim();
    let net = if t.contains('/') {
        IpNet::from_str(t).map_err(|_| {
            usage!(
                "invalid {what} '{s}': expected ADDRESS/LENGTH such as 198.18.0.0/15 or \
                 2001:2::/48 (length 0-32 for IPv4, 0-128 for IPv6)"
            )
        })?
    } else {
        let a = IpAddr::from_str(t).map_err(|_| {
            usage!("invalid {what} '{s}': expected an IP address or a prefix such as 198.18.0.0/15")
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
pub fn parse_proto(s: &str) -> Result<Option<Proto>, UsageError> {
    let p = match s.trim().to_ascii_lowercase().as_str() {
        "any" | "all" => return Ok(None),
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" | "ipv6-icmp" => 58,
        "sctp" => 132,
        other => other.parse::<u8>().map_err(|_| {
            usage!("invalid protocol '{s}': expected tcp, udp, icmp, icmpv6, sctp, any or 0-255")
        })?,
    };
    Ok(Some(Proto(p)))
}

/// A port `N` or an inclusive range `A-B` with A ≤ B.
pub fn parse_port_range(what: &str, s: &str) -> Result<(u16, u16), UsageError> {
    let bad = || usage!("invalid {what} '{s}': expected a port 0-65535 or a range such as 5000-5010");
    let t = s.trim();
    let (lo, hi) = match t.split_once('-') {
        Some((a, b)) => (a.trim().parse::<u16>().map_err(|_| bad())?, b.trim().parse::<u16>().map_err(|_| bad())?),
        None => {
            let p = t.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(usage!("invalid {what} '{s}': the range is reversed ({lo} > {hi}); write {hi}-{lo}"));
    }
    Ok((lo, hi))
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
        assert!(parse_percent("loss", "150%").unwrap_err().0.contains("between 0% and 100%"));
    }

    #[test]
    fn cidr_forms() {
        assert_eq!(parse_cidr("dst", "198.18.2.7/24").unwrap().to_string(), "198.18.2.0/24");
        assert_eq!(parse_cidr("dst", "198.18.2.7").unwrap().to_string(), "198.18.2.7/32");
        assert_eq!(parse_cidr("dst", "2001:2::1/48").unwrap().to_string(), "2001:2::/48");
        for bad in ["198.18.0.0/33", "2001:2::/129", "nope", "1.2.3/8"] {
            assert!(parse_cidr("dst", bad).unwrap_err().0.contains(bad));
        }
    }

    #[test]
    fn ports_and_protocols() {
        assert_eq!(parse_port_range("dport", "53"), Ok((53, 53)));
        assert_eq!(parse_port_range("dport", "5000-5010"), Ok((5000, 5010)));
        assert!(parse_port_range("dport", "10-5").unwrap_err().0.contains("reversed"));
        assert!(parse_port_range("dport", "70000").is_err());
        assert_eq!(parse_proto("UDP"), Ok(Some(Proto(17))));
        assert_eq!(parse_proto("any"), Ok(None));
        assert!(parse_proto("quic").unwrap_err().0.contains("'quic'"));
    }
}
