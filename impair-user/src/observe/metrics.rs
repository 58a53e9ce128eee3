//! `--metrics ADDR`: the counters in Prometheus' text exposition format,
//! served over plain HTTP by the controller's own loop (a non-blocking
//! listener polled between redraws: no runtime, no extra thread touching the
//! maps).
use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::{
    input::{usage, UsageError},
    observe::snapshot::Snapshot,
};

pub struct MetricsServer {
    listener: TcpListener,
}

/// `--metrics` values: HOST:PORT with a literal address.
pub fn parse_addr(s: &str) -> Result<SocketAddr, UsageError> {
    s.parse::<SocketAddr>().map_err(|_| {
        usage!("invalid metrics address '{s}': expected IP:PORT, e.g. 127.0.0.1:9464 or [::1]:9464")
    })
}

impl MetricsServer {
    /// Binds before anything is attached, so a taken port changes nothing.
    pub fn bind(addr: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            usage!("cannot serve metrics on {addr}: {e} (choose another --metrics address)")
        })?;
        listener
            .set_nonblocking(true)
            .context("making the metrics listener non-blocking")?;
        Ok(Self { listener })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Answers every connection waiting now; `body` renders the metrics.
    pub fn poll(&self, body: impl Fn() -> String) {
        while let Ok((stream, _)) = self.listener.accept() {
            if let Err(e) = answer(stream, &body) {
                tracing::debug!("metrics request: {e:#}");
            }
        }
    }
}

fn answer(mut stream: TcpStream, body: &impl Fn() -> String) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.set_write_timeout(Some(Duration::from_millis(500)))?;
    let mut req = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&req);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, text) = if method == "GET" && (path == "/metrics" || path == "/") {
        ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body())
    } else {
        (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "impair serves GET /metrics\n".to_owned(),
        )
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    Ok(())
}

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text for `snaps` (one per instance).
pub fn render(snaps: &[Snapshot]) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    // `direction` (egress: sent, a two-way link's uplink; ingress: received,
    // its downlink; both) tells the two instances of a two-way link apart.
    let inst = |s: &Snapshot| {
        format!(
            "interface=\"{}\",hook=\"{}\",direction=\"{}\"",
            label(&s.interface),
            s.hook,
            s.direction
        )
    };
    let global = |f: fn(&Snapshot) -> f64| snaps.iter().map(|s| (inst(s), f(s))).collect();
    family(
        "impair_packets_total",
        "counter",
        "Packets the data path saw.",
        global(|s| s.packets as f64),
    );
    family(
        "impair_unmatched_packets_total",
        "counter",
        "Packets no rule matched (passed untouched).",
        global(|s| s.unmatched as f64),
    );
    family(
        "impair_errors_total",
        "counter",
        "Data-path errors (the packet passed: fail open).",
        global(|s| s.errors as f64),
    );
    family(
        "impair_errors_by_cause_total",
        "counter",
        "Data-path errors by cause (map_lookup, set_tstamp, clone_redirect, load_bytes, store_bytes, csum); they sum to impair_errors_total.",
        snaps
            .iter()
            .flat_map(|s| {
                s.error_causes
                    .iter()
                    .map(move |(cause, n)| (format!("{},cause=\"{cause}\"", inst(s)), *n as f64))
            })
            .collect(),
    );
    family(
        "impair_lease_valid",
        "gauge",
        "1 while the controller's lease is current; 0: the data path passes everything.",
        global(|s| f64::from(u8::from(s.lease_valid))),
    );
    family(
        "impair_ruleset_generation",
        "gauge",
        "Rule-set generation: 1 at attach, +1 per atomic update.",
        global(|s| s.generation as f64),
    );
    type RuleField = fn(&crate::observe::snapshot::RuleStats) -> Option<f64>;
    let per_rule: &[(&str, &str, &str, RuleField)] = &[
        (
            "impair_rule_packets_total",
            "counter",
            "Packets matched by the rule.",
            |r| Some(r.packets as f64),
        ),
        (
            "impair_rule_bytes_total",
            "counter",
            "Bytes matched by the rule.",
            |r| Some(r.bytes as f64),
        ),
        (
            "impair_rule_passed_total",
            "counter",
            "Packets the rule let through (maybe delayed or marked).",
            |r| Some(r.passed as f64),
        ),
        (
            "impair_rule_dropped_loss_total",
            "counter",
            "Packets dropped by the loss process (and blackholes).",
            |r| Some(r.dropped_loss as f64),
        ),
        (
            "impair_rule_dropped_queue_total",
            "counter",
            "Packets dropped by the rate's queue limit or policer.",
            |r| Some(r.dropped_queue as f64),
        ),
        (
            "impair_rule_dropped_mtu_total",
            "counter",
            "Packets dropped by the MTU blackhole.",
            |r| Some(r.dropped_mtu as f64),
        ),
        (
            "impair_rule_ecn_marked_total",
            "counter",
            "Packets CE-marked instead of dropped.",
            |r| Some(r.ecn_marked as f64),
        ),
        (
            "impair_rule_corrupted_total",
            "counter",
            "Packets with a flipped bit.",
            |r| Some(r.corrupted as f64),
        ),
        (
            "impair_rule_duplicated_total",
            "counter",
            "Extra copies sent.",
            |r| Some(r.duplicated as f64),
        ),
        (
            "impair_rule_reordered_total",
            "counter",
            "Packets that skipped the delay.",
            |r| Some(r.reordered as f64),
        ),
        (
            "impair_rule_delayed_total",
            "counter",
            "Packets given a departure time.",
            |r| Some(r.delayed as f64),
        ),
        (
            "impair_rule_wire_packets_total",
            "counter",
            "Wire packets matched by the rule (a GSO/GRO super-packet counts as its segments; impair_rule_packets_total counts skbs).",
            |r| Some(r.wire_packets as f64),
        ),
        (
            "impair_rule_wire_bytes_total",
            "counter",
            "Wire bytes matched by the rule (each segment of a super-packet with its own headers).",
            |r| Some(r.wire_bytes as f64),
        ),
        (
            "impair_rule_dropped_wire_packets_total",
            "counter",
            "Wire packets in the skbs the rule dropped (loss, blackhole, MTU, queue limit).",
            |r| Some(r.dropped_wire_packets as f64),
        ),
        (
            "impair_rule_super_packets_total",
            "counter",
            "Super-packets (gso_segs > 1) that got one decision for all their wire packets.",
            |r| Some(r.super_packets as f64),
        ),
        (
            "impair_rule_loss_configured_ratio",
            "gauge",
            "Configured loss rate (stationary rate for burst models).",
            |r| r.rule.loss,
        ),
        (
            "impair_rule_loss_measured_ratio",
            "gauge",
            "Measured loss: dropped by loss / packets.",
            |r| r.measured_loss,
        ),
        (
            "impair_rule_loss_measured_ci95_low_ratio",
            "gauge",
            "Lower end of the measured loss's 95% Wilson interval.",
            |r| r.measured_loss_ci95.map(|c| c.0),
        ),
        (
            "impair_rule_loss_measured_ci95_high_ratio",
            "gauge",
            "Upper end of the measured loss's 95% Wilson interval.",
            |r| r.measured_loss_ci95.map(|c| c.1),
        ),
    ];
    for (name, kind, help, f) in per_rule {
        let mut samples = Vec::new();
        for s in snaps {
            for r in &s.rules {
                if let Some(v) = f(r) {
                    samples.push((
                        format!(
                            "{},rule=\"{}\",match=\"{}\"",
                            inst(s),
                            r.index,
                            label(&r.rule.matches)
                        ),
                        v,
                    ));
                }
            }
        }
        family(name, kind, help, samples);
    }
    // Where a rate trace is, and what it offered and delivered.
    let traced = |f: fn(&super::trace::TraceStats) -> f64| -> Vec<(String, f64)> {
        snaps
            .iter()
            .filter_map(|s| s.rate_trace.as_ref().map(|t| (inst(s), f(t))))
            .collect()
    };
    family(
        "impair_rate_trace_position_seconds",
        "gauge",
        "Where the rate trace is within its period (ms resolution).",
        traced(|t| t.position_ms as f64 / 1e3),
    );
    family(
        "impair_rate_trace_loops_total",
        "counter",
        "Whole periods of the rate trace since it started.",
        traced(|t| t.loops as f64),
    );
    family(
        "impair_rate_trace_offered_bytes_total",
        "counter",
        "Capacity the rate trace offered since it started, bytes.",
        traced(|t| t.offered_bytes as f64),
    );
    family(
        "impair_rate_trace_delivered_bytes_total",
        "counter",
        "Wire bytes the rate trace carried (packets it gave a departure time).",
        traced(|t| t.delivered_bytes as f64),
    );
    family(
        "impair_rate_trace_load_bytes_total",
        "counter",
        "Wire bytes the rules with the rate trace matched (the offered load).",
        traced(|t| t.load_wire_bytes as f64),
    );
    // Where the delay and loss series are.
    let series = |f: fn(&super::series::SeriesStats) -> Option<f64>| -> Vec<(String, f64)> {
        snaps
            .iter()
            .flat_map(|s| {
                s.series.iter().filter_map(move |x| {
                    f(x).map(|v| (format!("{},series=\"{}\"", inst(s), x.kind), v))
                })
            })
            .collect()
    };
    family(
        "impair_series_position_seconds",
        "gauge",
        "Where the delay or loss series is within its current pass (ms resolution).",
        series(|x| Some(x.position_ms as f64 / 1e3)),
    );
    family(
        "impair_series_loops_total",
        "counter",
        "Whole passes of a looping series since it started.",
        series(|x| Some(x.loops as f64)),
    );
    family(
        "impair_series_held",
        "gauge",
        "1 once a series that does not loop has ended and holds its last value.",
        series(|x| Some(f64::from(u8::from(x.held)))),
    );
    family(
        "impair_series_delay_seconds",
        "gauge",
        "The delay series' value in force.",
        series(|x| x.delay_ns.map(|d| d as f64 / 1e9)),
    );
    family(
        "impair_series_loss_ratio",
        "gauge",
        "The loss series' value in force.",
        series(|x| x.loss),
    );
    // The record of impaired packets (`impair capture`, `attach --capture`).
    let captured = |f: fn(&super::capture::CaptureStats) -> f64| -> Vec<(String, f64)> {
        snaps
            .iter()
            .filter_map(|s| s.capture.as_ref().map(|c| (inst(s), f(c))))
            .collect()
    };
    family(
        "impair_capture_active",
        "gauge",
        "1 while a capture records the impaired packets.",
        captured(|c| f64::from(u8::from(c.active))),
    );
    family(
        "impair_capture_recorded_total",
        "counter",
        "Impaired packets recorded (written to the capture's ring and file).",
        captured(|c| c.recorded as f64),
    );
    family(
        "impair_capture_not_recorded_total",
        "counter",
        "Impaired packets not recorded, by cause (over_budget: the per-CPU budget was spent; ring_full: the reader fell behind).",
        snaps
            .iter()
            .filter_map(|s| s.capture.as_ref().map(|c| (s, c)))
            .flat_map(|(s, c)| {
                [("over_budget", c.over_budget), ("ring_full", c.ring_full)]
                    .into_iter()
                    .map(move |(cause, n)| (format!("{},cause=\"{cause}\"", inst(s)), n as f64))
            })
            .collect(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_addresses_are_usage_errors() {
        assert!(parse_addr("127.0.0.1:9464").is_ok());
        assert!(parse_addr("[::1]:9464").is_ok());
        let e = parse_addr("localhost").unwrap_err().0;
        assert!(e.contains("'localhost'") && e.contains("IP:PORT"), "{e}");
    }

    #[test]
    fn serves_get_metrics_and_404s_the_rest() {
        let srv = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = srv.local_addr().unwrap();
        let get = |path: &'static str| {
            std::thread::spawn(move || {
                let mut c = TcpStream::connect(addr).unwrap();
                write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                let mut s = String::new();
                c.read_to_string(&mut s).unwrap();
                s
            })
        };
        let ok = get("/metrics");
        let missing = get("/nope");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !(ok.is_finished() && missing.is_finished()) && std::time::Instant::now() < deadline {
            srv.poll(|| "impair_packets_total{interface=\"x\"} 1\n".into());
            std::thread::sleep(Duration::from_millis(5));
        }
        let ok = ok.join().unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(
            ok.contains("version=0.0.4") && ok.ends_with("} 1\n"),
            "{ok}"
        );
        assert!(missing.join().unwrap().starts_with("HTTP/1.1 404"));
    }

    #[test]
    fn a_taken_port_is_a_usage_error() {
        let a = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let e = MetricsServer::bind(a.local_addr().unwrap()).err().unwrap();
        assert!(e.downcast_ref::<UsageError>().is_some(), "{e:#}");
    }
}
