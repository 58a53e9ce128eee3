//! Chaos Mesh's host agent, chaosd: its network attack endpoints
//! (`POST /api/attack/network`, `DELETE /api/attack/{uid}`) with its JSON
//! field names, mapped onto impair rules, so a PhysicalMachineChaos drives
//! impair as it drives chaosd. What impair cannot do faithfully is refused
//! with a 400 that says why, rather than approximated:
//!
//! - `correlation` on loss, corruption or duplication: netem's correlated
//!   loss does not produce the burst lengths it promises (a known netem
//!   defect); impair's burst loss is a Gilbert-Elliott model instead
//!   (`loss_model` in the /v1 API);
//! - the `dns`, `occupied`, `down` and `flood` actions: they are not packet
//!   impairments (a fake DNS server, a process holding a port, a downed
//!   link, an iperf flood);
//! - `schedule` (chaosd's cron), `accept-tcp-flags`, `peakrate`, `minburst`.
//!
//! The attack's `uid` is the impairment's id: a repeated uid does not
//! stack (the same body returns the existing attack).
use serde::{Deserialize, Serialize};

use crate::{
    error::ApiError,
    request::{CreateRequest, Target},
    rule_json::{RuleJson, Text},
};

/// chaosd's `NetworkCommand` (pkg/core/network.go), the fields impair reads.
/// Unknown fields are ignored, as chaosd's JSON binding ignores them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct NetworkAttack {
    pub action: String,
    pub kind: String,
    pub uid: String,
    pub schedule: String,
    pub duration: String,
    pub latency: String,
    pub jitter: String,
    pub correlation: String,
    pub percent: String,
    pub device: String,
    pub source_port: String,
    pub egress_port: String,
    pub ip_address: String,
    pub ip_protocol: String,
    pub hostname: String,
    pub direction: String,
    pub dns_server: String,
    pub dns_ip: String,
    pub dns_domain_name: String,
    pub port: String,
    pub accept_tcp_flags: String,
    pub rate: String,
    pub limit: u32,
    pub buffer: u32,
    pub peakrate: Option<u64>,
    pub minburst: Option<u32>,
}

/// chaosd's success body (pkg/server/utils/response.go).
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub status: u16,
    pub message: String,
    pub uid: String,
}

fn bad(field: &str, msg: impl Into<String>, allowed: &str) -> ApiError {
    ApiError::bad_request(msg, Some(field.to_owned()), Some(allowed.to_owned()))
}

/// A Go duration (`time.ParseDuration`): `300ms`, `1.5h`, `2h45m`, `10us`.
pub fn go_duration_ns(s: &str) -> Option<u64> {
    let mut rest = s.trim();
    if rest == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&n| n > 0)?;
        let v: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += v * scale;
        rest = &rest[u..];
    }
    (total.is_finite() && total <= u64::MAX as f64).then_some(total.round() as u64)
}

/// A percent as chaosd takes it: a bare number from 0 to 100.
fn percent(field: &str, s: &str) -> Result<f64, ApiError> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(bad(
            field,
            format!("invalid percent '{s}'"),
            "a number from 0 to 100",
        )),
    }
}

/// chaosd's port list: `80,443,8000:8080` (ranges with ':').
fn ports(field: &str, s: &str) -> Result<Vec<String>, ApiError> {
    if s.trim().is_empty() {
        return Ok(vec![]);
    }
    s.split(',')
        .map(|p| {
            let parts: Vec<&str> = p.trim().split(':').collect();
            let ok =
                (1..=2).contains(&parts.len()) && parts.iter().all(|x| x.parse::<u16>().is_ok());
            if ok {
                Ok(parts.join("-"))
            } else {
                Err(bad(
                    field,
                    format!("invalid port '{p}'"),
                    "ports and ranges such as 80,443,8000:8080",
                ))
            }
        })
        .collect()
}

/// `ip-address` and `hostname` as prefixes; host names are resolved now, as
/// chaosd resolves them when the attack starts.
fn addresses(a: &NetworkAttack) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    for ip in a
        .ip_address
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let ok = if let Some((addr, len)) = ip.split_once('/') {
            addr.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok()
        } else {
            ip.parse::<std::net::IpAddr>().is_ok()
        };
        if !ok {
            return Err(bad(
                "ip-address",
                format!("invalid address '{ip}'"),
                "IP addresses or CIDRs, comma-separated",
            ));
        }
        out.push(ip.to_owned());
    }
    for host in a
        .hostname
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        use std::net::ToSocketAddrs as _;
        let resolved = (host, 0).to_socket_addrs().map_err(|e| {
            bad(
                "hostname",
                format!("cannot resolve '{host}': {e}"),
                "host names this machine resolves",
            )
        })?;
        for sa in resolved {
            let ip = sa.ip().to_string();
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    Ok(out)
}

impl NetworkAttack {
    /// The /v1 request this attack stands for, or why it has none.
    pub fn to_request(&self, uid: String) -> Result<CreateRequest, ApiError> {
        let action = self.action.as_str();
        let refuse = |why: &str| {
            bad(
                "action",
                format!("{action}: {why}"),
                "delay, loss, corrupt, duplicate, bandwidth, partition",
            )
        };
        match action {
            "delay" | "loss" | "corrupt" | "duplicate" | "bandwidth" | "partition" => {}
            "dns" => {
                return Err(refuse(
                    "impair impairs packets; it does not run a DNS server or rewrite answers",
                ))
            }
            "occupied" => {
                return Err(refuse(
                    "occupying a port is a process holding a socket, not a packet impairment",
                ))
            }
            "down" => {
                return Err(refuse(
                    "taking an interface down is not an impairment impair can undo exactly",
                ))
            }
            "flood" => return Err(refuse("a traffic flood (iperf) is load, not an impairment")),
            other => {
                return Err(bad(
                    "action",
                    format!("unknown network action '{other}'"),
                    "delay, loss, corrupt, duplicate, bandwidth, partition",
                ))
            }
        }
        if !self.schedule.is_empty() {
            return Err(bad(
                "schedule",
                "scheduled (cron) attacks are not supported: the caller schedules",
                "an empty schedule",
            ));
        }
        if !self.accept_tcp_flags.is_empty() {
            return Err(bad(
                "accept-tcp-flags",
                "impair's blackhole has no TCP-flag exception",
                "no accept-tcp-flags",
            ));
        }
        if self.device.is_empty() {
            return Err(bad("device", "device is required", "an interface name"));
        }
        let corr = if self.correlation.trim().is_empty() {
            0.0
        } else {
            percent("correlation", &self.correlation)?
        };
        if corr != 0.0 && matches!(action, "loss" | "corrupt" | "duplicate") {
            return Err(bad(
                "correlation",
                format!(
                    "{action} with correlation {corr}: netem's correlated {action} does not give the burst \
                     behaviour it promises (a known netem defect), so impair does not imitate it; use \
                     impair's Gilbert-Elliott burst loss (loss_model in POST /v1/impairments)"
                ),
                "0 or empty",
            ));
        }
        let proto = match self.ip_protocol.as_str() {
            "" | "all" => None,
            p @ ("tcp" | "udp" | "icmp") => Some(p.to_owned()),
            other => {
                return Err(bad(
                    "ip-protocol",
                    format!("invalid protocol '{other}'"),
                    "tcp, udp, icmp or all",
                ))
            }
        };
        let sports = ports("source-port", &self.source_port)?;
        let dports = ports("egress-port", &self.egress_port)?;
        if (!sports.is_empty() || !dports.is_empty())
            && !matches!(proto.as_deref(), Some("tcp" | "udp"))
        {
            return Err(bad(
                "ip-protocol",
                "ports need ip-protocol tcp or udp",
                "tcp or udp",
            ));
        }
        let addrs = addresses(self)?;
        let pct = |f: &str| -> Result<Text, ApiError> {
            if self.percent.trim().is_empty() {
                return Err(bad(
                    "percent",
                    "percent is required",
                    "a number from 0 to 100",
                ));
            }
            Ok(Text::Text(format!("{}%", percent(f, &self.percent)?)))
        };
        let mut base = RuleJson {
            proto: proto.clone(),
            ..RuleJson::default()
        };
        let mut direction = None;
        match action {
            "delay" => {
                let l = go_duration_ns(&self.latency).ok_or_else(|| {
                    bad(
                        "latency",
                        format!("invalid latency '{}'", self.latency),
                        "a Go duration such as 10ms",
                    )
                })?;
                base.delay = Some(Text::Text(format!("{l}ns")));
                if !self.jitter.is_empty() {
                    let j = go_duration_ns(&self.jitter).ok_or_else(|| {
                        bad(
                            "jitter",
                            format!("invalid jitter '{}'", self.jitter),
                            "a Go duration such as 2ms",
                        )
                    })?;
                    if j > 0 {
                        base.jitter = Some(Text::Text(format!("{j}ns")));
                    }
                }
                if corr > 0.0 {
                    base.delay_corr = Some(Text::Text(format!("{corr}%")));
                }
            }
            "loss" => base.loss = Some(pct("percent")?),
            "corrupt" => base.corrupt = Some(pct("percent")?),
            "duplicate" => base.duplicate = Some(pct("percent")?),
            "bandwidth" => {
                if self.rate.is_empty() || self.limit == 0 || self.buffer == 0 {
                    return Err(bad(
                        "rate",
                        "rate, limit and buffer are all required for bandwidth",
                        "rate such as 1mbps, limit and buffer in bytes",
                    ));
                }
                if self.peakrate.unwrap_or(0) != 0 || self.minburst.unwrap_or(0) != 0 {
                    return Err(bad(
                        "peakrate",
                        "a second (peak) bucket is not emulated by impair's pacing",
                        "0 or absent",
                    ));
                }
                let bps = impair::model::units::parse_rate_bps(&self.rate)
                    .map_err(|e| bad("rate", e.0, "a tc rate such as 1mbit or 1mbps (bytes/s)"))?;
                if bps == 0 {
                    return Err(bad(
                        "rate",
                        "rate 0 would stop all traffic; use partition",
                        "more than 0",
                    ));
                }
                // tbf's limit is the bytes that may wait; impair's queue limit
                // is the same backlog as a time at the rate.
                let queue_ns =
                    (u128::from(self.limit) * 8 * 1_000_000_000 / u128::from(bps)).max(1);
                base.rate = Some(Text::Text(format!("{bps}bit")));
                base.queue = Some(format!("{}us", queue_ns.div_ceil(1000)));
            }
            "partition" => {
                base.blackhole = true;
                base.proto = proto;
                direction = Some(match self.direction.as_str() {
                    "to" => "egress",
                    "from" => "ingress",
                    "both" => "both",
                    other => {
                        return Err(bad(
                            "direction",
                            format!("invalid direction '{other}'"),
                            "to, from or both",
                        ))
                    }
                });
            }
            _ => unreachable!("checked above"),
        }
        // One rule per address and port combination, sources for traffic
        // coming in ("from"), destinations for traffic going out.
        let mut rules = Vec::new();
        let each = |v: &[String]| -> Vec<Option<String>> {
            if v.is_empty() {
                vec![None]
            } else {
                v.iter().cloned().map(Some).collect()
            }
        };
        for addr in each(&addrs) {
            for sp in each(&sports) {
                for dp in each(&dports) {
                    let mut r = base.clone();
                    r.sport = sp.clone().map(Text::Text);
                    r.dport = dp.clone().map(Text::Text);
                    match direction {
                        Some("ingress") => r.src = addr.clone(),
                        Some("both") => {
                            let mut back = r.clone();
                            back.src = addr.clone();
                            r.dst = addr.clone();
                            rules.push(r);
                            if addr.is_none() {
                                continue;
                            }
                            rules.push(back);
                            continue;
                        }
                        _ => r.dst = addr.clone(),
                    }
                    rules.push(r);
                }
            }
        }
        let duration = if self.duration.is_empty() {
            None
        } else {
            let ns = go_duration_ns(&self.duration).ok_or_else(|| {
                bad(
                    "duration",
                    format!("invalid duration '{}'", self.duration),
                    "a Go duration such as 30s",
                )
            })?;
            Some(Text::Text(format!("{ns}ns")))
        };
        Ok(CreateRequest {
            id: uid,
            target: Target {
                interface: self.device.clone(),
                ..Target::default()
            },
            rules: Some(rules),
            direction: direction.map(str::to_owned),
            duration,
            ..CreateRequest::default()
        })
    }
}

/// A new uid when the caller gives none (chaosd makes a UUID).
pub fn new_uid() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read as _;
        let _ = f.read_exact(&mut b);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attack(v: serde_json::Value) -> NetworkAttack {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn go_durations_parse_like_go() {
        assert_eq!(go_duration_ns("10ms"), Some(10_000_000));
        assert_eq!(go_duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(go_duration_ns("1.5s"), Some(1_500_000_000));
        assert_eq!(go_duration_ns("10"), None);
        assert_eq!(go_duration_ns(""), None);
    }

    #[test]
    fn a_delay_attack_becomes_one_rule_per_address() {
        let a = attack(
            serde_json::json!({"action": "delay", "device": "eth0", "latency": "10ms", "jitter": "1ms",
            "ip-address": "198.18.0.1,198.18.0.2", "ip-protocol": "udp", "egress-port": "53,8000:8080"}),
        );
        let req = a.to_request("u1".into()).unwrap();
        let rules = req.rules.unwrap();
        assert_eq!(rules.len(), 4);
        assert_eq!(rules[1].dport, Some(Text::Text("8000-8080".into())));
        for (i, r) in rules.iter().enumerate() {
            r.to_spec(&format!("rules[{i}]")).unwrap();
        }
    }

    #[test]
    fn unfaithful_mappings_are_refused_with_the_reason() {
        let e = attack(serde_json::json!({"action": "loss", "device": "eth0", "percent": "10", "correlation": "25"}))
            .to_request("u".into())
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("correlation"));
        assert!(e.message.contains("netem"), "{e:?}");
        let e = attack(serde_json::json!({"action": "dns", "device": "eth0"}))
            .to_request("u".into())
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("action"));
        let ok = attack(
            serde_json::json!({"action": "loss", "device": "eth0", "percent": "10", "correlation": "0"}),
        );
        assert!(ok.to_request("u".into()).is_ok());
    }

    #[test]
    fn bandwidth_and_partition_map_onto_rate_and_blackhole() {
        let bw = attack(serde_json::json!({"action": "bandwidth", "device": "eth0", "rate": "1mbit", "limit": 12500, "buffer": 10000}))
            .to_request("u".into())
            .unwrap();
        let r = bw.rules.unwrap()[0].to_spec("rules[0]").unwrap();
        assert_eq!(r.rate.unwrap().rate_bps, 1_000_000);
        let p = attack(serde_json::json!({"action": "partition", "device": "eth0", "ip-address": "198.18.0.1", "direction": "both"}))
            .to_request("u".into())
            .unwrap();
        assert_eq!(p.direction.as_deref(), Some("both"));
        assert_eq!(p.rules.unwrap().len(), 2);
    }
}
