//! Fidelity tier: delay, jitter, reordering and rate as the receiver sees them,
//! side by side with netem (and tbf for rate) on the same lab, kernel and run.
//!
//! These need sch_fq and sch_netem, which the project's host kernel lacks, so
//! every test here is `#[ignore]`d with that reason and runs in the kernel-VM
//! tier (`cargo xtask vm`, which passes `--include-ignored`). Each scenario
//! prints one `IMPAIR-FIDELITY {json}` line; `cargo xtask accuracy` collects
//! them into docs/accuracy.md.
use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use impair::{model::Distribution, statistics::ks_statistic};
use impair_tests::{
    kernel::has_qdisc,
    ns::{assert_restored, router_state, socket_pair, stats_json, Controller, Site},
    stats::{assert_inside, median, quantile, Z_SUITE},
};
use impair_tools::{
    lab::Lab,
    probe::{run_pair_with_log, ProbeConfig, ProbeReport, Verdict},
};
use serde_json::json;

const NEEDS: &str = "needs sch_fq and sch_netem: runs in the VM tier (cargo xtask vm)";

fn lab(tag: &str) -> Lab {
    let lab = impair_tests::ns::lab(tag);
    for q in ["fq", "netem"] {
        assert!(
            has_qdisc(&lab, q),
            "this kernel cannot run sch_{q}: the fidelity tier needs it (run it with cargo xtask vm)"
        );
    }
    lab
}

/// One measured run client → server.
struct Run {
    report: ProbeReport,
    /// One-way delays of intact packets, ns, in arrival order.
    delays_ns: Vec<u64>,
}

fn measure(lab: &Lab, count: u64, rate_pps: u64, payload_len: usize, linger: Duration) -> Run {
    let (tx, rx, to) = socket_pair(lab, false, 0);
    measure_on((tx, rx, to), count, rate_pps, payload_len, linger)
}

/// [`measure`] on a given socket pair (from [`socket_pair`]).
fn measure_on(
    (tx, rx, to): (UdpSocket, UdpSocket, SocketAddr),
    count: u64,
    rate_pps: u64,
    payload_len: usize,
    linger: Duration,
) -> Run {
    let cfg = ProbeConfig {
        count,
        rate_pps,
        payload_len,
        linger,
        // The lab must not reorder by itself (see ProbeConfig::sender_cpu).
        sender_cpu: Some(0),
        ..Default::default()
    };
    let (report, log) = run_pair_with_log(tx, rx, to, &cfg).unwrap();
    let mut delays_ns = Vec::new();
    for r in &log.receptions {
        if let Verdict::Valid { send_ns, .. } = r.verdict {
            delays_ns.push(r.recv_ns.saturating_sub(send_ns));
        }
    }
    Run { report, delays_ns }
}

fn summary(delays: &[u64]) -> serde_json::Value {
    let mut s = delays.to_vec();
    s.sort_unstable();
    if s.is_empty() {
        return json!(null);
    }
    json!({
        "samples": s.len(),
        "min_ms": s[0] as f64 / 1e6,
        "p10_ms": quantile(&s, 0.10) as f64 / 1e6,
        "p50_ms": quantile(&s, 0.50) as f64 / 1e6,
        "p90_ms": quantile(&s, 0.90) as f64 / 1e6,
        "p99_ms": quantile(&s, 0.99) as f64 / 1e6,
        "max_ms": s[s.len() - 1] as f64 / 1e6,
        // The distribution at every 5%, for the CDF plots in docs/accuracy.md.
        "cdf_ms": (0..=20)
            .map(|i| (quantile(&s, f64::from(i) / 20.0) as f64 / 1e3).round() / 1e3)
            .collect::<Vec<f64>>(),
    })
}

fn report(scenario: &str, configured: &str, impair: serde_json::Value, netem: serde_json::Value) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let line = json!({
        "scenario": scenario, "kernel": kernel.trim(), "configured": configured,
        "impair": impair, "netem": netem,
    });
    #[allow(
        clippy::print_stdout,
        reason = "the line `cargo xtask accuracy` reads from the VM's console"
    )]
    {
        println!("IMPAIR-FIDELITY {line}");
    }
}

/// The unimpaired path's median one-way delay (TCG makes it far from zero).
fn base_latency_ns(lab: &Lab) -> u64 {
    median(&measure(lab, 300, 300, 200, Duration::from_millis(300)).delays_ns)
}

/// Runs `f` with netem configured on the router's egress, then removes it.
fn with_netem<T>(lab: &Lab, netem_args: &[&str], f: impl FnOnce() -> T) -> T {
    let mut args = vec!["tc", "qdisc", "add", "dev", "r1", "root", "netem"];
    args.extend(netem_args);
    lab.exec(&lab.router, &args).unwrap();
    let out = f();
    lab.exec(&lab.router, &["tc", "qdisc", "del", "dev", "r1", "root"])
        .unwrap();
    out
}

#[test]
#[ignore = "needs sch_fq and sch_netem: runs in the VM tier (cargo xtask vm)"]
fn constant_delay() {
    let _ = NEEDS;
    constant_delay_case("fconst", false);
}

/// 20 ms of delay at the receiver beside netem's, at the router's egress or
/// (`ingress`) on the server's received traffic through impair's ifb beside
/// netem on an ifb: nothing early, the median within 2 ms of delay + base.
fn constant_delay_case(tag: &str, ingress: bool) {
    let lab = lab(tag);
    let site = if ingress {
        Site::ServerIngress
    } else {
        Site::RouterEgress
    };
    let before = site.state(&lab);
    let base = base_latency_ns(&lab);
    let ctl = attach_for(&lab, ingress, &["--delay", "20ms"]);
    let run = measure(&lab, 1000, 500, 200, Duration::from_millis(300));
    drop(ctl);
    site.assert_restored(&lab, &before);
    let netem_args = ["delay", "20ms", "limit", "100000"];
    let run_netem = || measure(&lab, 1000, 500, 200, Duration::from_millis(300));
    let (netem, scenario, configured) = if ingress {
        (
            with_netem_on_ifb(&lab, &netem_args, run_netem),
            "ingress delay (ifb)",
            "delay 20ms on received traffic; netem on an ifb",
        )
    } else {
        (
            with_netem(&lab, &netem_args, run_netem),
            "constant delay",
            "delay 20ms",
        )
    };
    report(
        scenario,
        configured,
        summary(&run.delays_ns),
        summary(&netem.delays_ns),
    );
    assert_eq!(run.report.lost, 0);
    let min = *run.delays_ns.iter().min().unwrap();
    assert!(
        min >= 20_000_000,
        "a packet arrived before its delay: {min} ns"
    );
    let excess = median(&run.delays_ns).saturating_sub(20_000_000 + base);
    assert!(
        excess < 2_000_000,
        "median delay exceeds 20 ms + base ({base} ns) by {excess} ns"
    );
}

/// The CDF of the interpolated quantile table impair samples from, in units
/// of the jitter: the exact target of the data path.
fn table_cdf(dist: &Distribution) -> impl Fn(f64) -> f64 {
    let knots: Vec<f64> = dist
        .table()
        .iter()
        .map(|&q| f64::from(q) / 65_536.0)
        .collect();
    move |x: f64| {
        let n = knots.len();
        if x <= knots[0] {
            return 0.0;
        }
        if x >= knots[n - 1] {
            return 1.0;
        }
        let i = knots.partition_point(|&k| k <= x) - 1;
        let (lo, hi) = (knots[i], knots[i + 1]);
        let frac = if hi > lo { (x - lo) / (hi - lo) } else { 0.0 };
        (i as f64 + frac) / (n - 1) as f64
    }
}

#[test]
#[ignore = "needs sch_fq and sch_netem: runs in the VM tier (cargo xtask vm)"]
fn jitter_distributions_pass_ks_at_the_receiver() {
    jitter_ks("fjit", false);
}

/// Issue 12: jitter on received traffic (through impair's ifb) passes the
/// same KS tests as at egress, beside netem on an ifb. The reference flow
/// runs beside the jittered one (see [`jitter_ks`]), so the ifb's lateness
/// it measures is the one the jittered packets met; CI's selective VM plan
/// runs this test (docs/vm.md has the measured D values).
#[test]
#[ignore = "needs sch_fq and sch_netem: runs in the VM tier (cargo xtask vm)"]
fn ingress_jitter_distributions_pass_ks_at_the_receiver() {
    if ingress_ifb_or_note("ingress_jitter_distributions_pass_ks_at_the_receiver") {
        jitter_ks("fijit", true);
    }
}

/// impair's attach: at the router's egress, or on the server's received
/// traffic (through the ifb it owns).
fn attach_for(lab: &Lab, ingress: bool, args: &[&str]) -> Controller {
    if ingress {
        Controller::start_in(
            &lab.server,
            "s0",
            &[&["--direction", "ingress"][..], args].concat(),
        )
    } else {
        Controller::start(lab, args)
    }
}

/// The CDF of `jitter + r`, `r` drawn from `path` (the path's own delays
/// beyond the configured one, in units of the jitter): the jitter `cdf`
/// convolved with the path's measured lateness.
fn on_path(cdf: impl Fn(f64) -> f64, path: Vec<f64>) -> impl Fn(f64) -> f64 {
    move |x: f64| path.iter().map(|r| cdf(x - r)).sum::<f64>() / path.len() as f64
}

/// Each jitter distribution against the CDF impair samples from (KS), at
/// the router's egress or on received traffic; netem beside it on the same
/// side.
fn jitter_ks(tag: &str, ingress: bool) {
    let lab = lab(tag);
    let scratch = impair_tests::Scratch::new(tag);
    // The reference is the same path with the constant delay alone, not the
    // bare path: packets held in fq leave when its watchdog timer fires,
    // under emulation a fraction of a millisecond late, and received
    // traffic then waits for the ifb's tasklet, by an amount that varies
    // with the emulator's load (over a run it drifts: a whole distribution
    // once came out 3-4 ms late, impair and netem alike) and with how fq's
    // releases bunch up. So what arrives is jitter + lateness, and the
    // measured delays are tested against the jitter's CDF convolved with
    // the lateness of a reference flow measured AT THE SAME TIME: one
    // attach with two rules, the reference flow's port with `--delay 300ms`
    // alone and the test flow's port with the jitter too, and two probes
    // sending at once, interleaved, both from CPU 0 (as every probe here:
    // ProbeConfig::sender_cpu), through the same path, the same fq (and on
    // received traffic the same ifb and its tasklet). Both samples then see
    // the same load, the same drift and the same batches of released
    // packets. (A reference measured in a run of its own before each
    // distribution passed three distributions on received traffic with
    // room and failed paretonormal once, D 0.057 against 0.053: a lateness
    // from another moment, with evenly spaced releases.) What is tested is
    // the jitter added on top of the delay.
    let names = ["uniform", "normal", "pareto", "paretonormal"];
    // All four must pass: 99% family-wise, so each KS test runs at
    // α = 1%/4 (Bonferroni). At 1% each, one in 25 runs of a perfect
    // sampler would fail somewhere.
    let alpha = 0.01 / names.len() as f64;
    // Both flows: 3000 datagrams at 500 pps (6 s), side by side.
    let (count, rate_pps, linger) = (3000, 500, Duration::from_secs(3));
    for name in names {
        let dist: Distribution = name.parse().unwrap();
        let reference_pair = socket_pair(&lab, false, 0);
        let test_pair = socket_pair(&lab, false, 0);
        let profile = scratch.file(
            &format!("{name}.toml"),
            &format!(
                "summary = \"fidelity: a reference flow and a jittered flow side by side\"\n\
                 source = \"tests/tests/fidelity.rs\"\n\
                 [[rule]]\nproto = \"udp\"\ndport = {}\ndelay = \"300ms\"\n\
                 [[rule]]\nproto = \"udp\"\ndport = {}\ndelay = \"300ms\"\n\
                 jitter = \"50ms\"\ndistribution = \"{name}\"\n",
                reference_pair.2.port(),
                test_pair.2.port(),
            ),
        );
        let ctl = attach_for(&lab, ingress, &["--profile", &profile, "--seed", "5"]);
        let (reference, run) = std::thread::scope(|s| {
            let reference = s.spawn(|| measure_on(reference_pair, count, rate_pps, 200, linger));
            let run = measure_on(test_pair, count, rate_pps, 200, linger);
            (reference.join().unwrap(), run)
        });
        drop(ctl);
        let mut path: Vec<f64> = reference
            .delays_ns
            .iter()
            .map(|&x| (x as f64 - 300e6) / 50e6)
            .collect();
        let path_median_ms = impair::statistics::median(&mut path).unwrap_or(f64::NAN) * 50.0;
        let path_len = path.len();
        let mut z: Vec<f64> = run
            .delays_ns
            .iter()
            .map(|&d| (d as f64 - 300e6) / 50e6)
            .collect();
        let cdf: Box<dyn Fn(f64) -> f64> = if name == "uniform" {
            Box::new(on_path(|x: f64| ((x + 1.0) / 2.0).clamp(0.0, 1.0), path))
        } else {
            Box::new(on_path(table_cdf(&dist), path))
        };
        let d = ks_statistic(&mut z, cdf);
        // The reference CDF is itself estimated from the reference flow's
        // samples (convolution never widens its error): the two-sample
        // critical value, at the effective size n·m/(n+m).
        let n_eff = z.len() * path_len / (z.len() + path_len);
        let crit = impair::statistics::ks_critical(n_eff, alpha);
        let netem_dist: Vec<&str> = if name == "uniform" {
            vec![]
        } else {
            vec!["distribution", name]
        };
        let mut args = vec!["delay", "300ms", "50ms"];
        args.extend(&netem_dist);
        args.extend(["limit", "100000"]);
        let run_netem = || measure(&lab, 2000, 500, 200, Duration::from_secs(3));
        let netem = if ingress {
            with_netem_on_ifb(&lab, &args, run_netem)
        } else {
            with_netem(&lab, &args, run_netem)
        };
        let mut imp = summary(&run.delays_ns);
        imp["ks_d"] = json!(d);
        imp["reference_offset_ms"] = json!(path_median_ms);
        imp["reference_samples"] = json!(path_len);
        imp["ks_crit_99_familywise"] = json!(crit);
        imp["reordered"] = json!(run.report.reordered);
        let mut net = summary(&netem.delays_ns);
        net["reordered"] = json!(netem.report.reordered);
        let side = if ingress { "ingress " } else { "" };
        report(
            &format!("{side}jitter {name}"),
            &format!(
                "delay 300ms jitter 50ms {name}{}",
                if ingress {
                    " on received traffic; netem on an ifb"
                } else {
                    ""
                }
            ),
            imp,
            net,
        );
        assert_eq!(run.report.lost, 0, "{name}");
        assert_eq!(reference.report.lost, 0, "{name}: the reference flow");
        assert!(
            d < crit,
            "{side}{name}: KS D = {d} ≥ {crit} (α = {alpha}: 99% over the four; \
             n = {}, reference m = {path_len})",
            z.len()
        );
    }
}

#[test]
#[ignore = "needs sch_fq and sch_netem: runs in the VM tier (cargo xtask vm)"]
fn in_order_jitter_never_reorders() {
    let lab = lab("forder");
    let ctl = Controller::start(
        &lab,
        &[
            "--delay",
            "100ms",
            "--jitter",
            "30ms",
            "--distribution",
            "normal",
            "--in-order",
        ],
    );
    let ordered = measure(&lab, 2000, 1000, 200, Duration::from_millis(800));
    drop(ctl);
    let ctl = Controller::start(
        &lab,
        &[
            "--delay",
            "100ms",
            "--jitter",
            "30ms",
            "--distribution",
            "normal",
        ],
    );
    let plain = measure(&lab, 2000, 1000, 200, Duration::from_millis(800));
    drop(ctl);
    let netem = with_netem(
        &lab,
        &[
            "delay",
            "100ms",
            "30ms",
            "distribution",
            "normal",
            "limit",
            "100000",
        ],
        || measure(&lab, 2000, 1000, 200, Duration::from_millis(800)),
    );
    report(
        "in-order jitter",
        "delay 100ms jitter 30ms normal in-order",
        json!({"reordered_in_order": ordered.report.reordered, "reordered_without": plain.report.reordered}),
        json!({"reordered": netem.report.reordered}),
    );
    assert_eq!(ordered.report.lost, 0);
    assert_eq!(
        ordered.report.reordered, 0,
        "in-order mode must not reorder"
    );
    assert!(
        plain.report.reordered > 0,
        "without it, this much jitter reorders"
    );
}

#[test]
#[ignore = "needs sch_fq and sch_netem: runs in the VM tier (cargo xtask vm)"]
fn reorder_fraction_skips_the_delay() {
    let lab = lab("freord");
    // A packet that skips the 100 ms delay arrives within a few ms even under
    // emulation; one that does not cannot arrive before 100 ms. Half the
    // delay separates the two with room for the VM's scheduling stalls.
    let ctl = Controller::start(
        &lab,
        &["--delay", "100ms", "--reorder", "10%", "--seed", "11"],
    );
    let run = measure(&lab, 4000, 1000, 200, Duration::from_millis(800));
    let engine = stats_json(&lab)["rules"][0]["reordered"].as_u64().unwrap();
    drop(ctl);
    let early = run.delays_ns.iter().filter(|&&d| d < 50_000_000).count() as u64;
    let netem = with_netem(
        &lab,
        &["delay", "100ms", "reorder", "10%", "limit", "100000"],
        || measure(&lab, 4000, 1000, 200, Duration::from_millis(800)),
    );
    let netem_early = netem.delays_ns.iter().filter(|&&d| d < 50_000_000).count();
    report(
        "reorder",
        "delay 100ms reorder 10%",
        json!({"early": early, "sent": run.report.sent, "engine_reordered": engine, "rfc4737_reordered": run.report.reordered}),
        json!({"early": netem_early, "sent": netem.report.sent, "rfc4737_reordered": netem.report.reordered}),
    );
    assert!(
        early <= engine,
        "only packets that skipped the delay arrive early ({early} early, {engine} skipped)"
    );
    // Kernels whose fq does not unthrottle a flow when an earlier packet
    // arrives (6.1) hold a skipped packet until the flow's earliest delayed
    // packet is due; that only happens while the flow's queue is young and
    // costs at most a few of the ~10 skips in the first delay's worth of
    // packets. 6.12's fq shows none (docs/accuracy.md).
    assert!(
        engine - early <= 10,
        "{} skipped packets did not arrive early",
        engine - early
    );
    assert_inside("packets early", Z_SUITE, 0.10, early, run.report.sent);
}

/// A rate at the router's egress per 1 s window at the receiver (kernel
/// receive times; windows in which the guest stalled are shown, not
/// judged: `flood`), offered 1.5× the rate, beside netem's rate and tbf.
fn rate_scenario(lab: &Lab, rate: &str, rate_bps: f64) {
    use impair_tests::flood;
    let window = Duration::from_secs(1);
    let ctl = Controller::start(lab, &["--rate", rate, "--queue", "100ms"]);
    let Flooded {
        sent,
        received,
        windows,
        stalls,
    } = flood_rate(lab, rate_bps * 1.5);
    let stats = stats_json(lab);
    drop(ctl);
    let netem = with_netem(lab, &["rate", rate, "limit", "100000"], || {
        flood_rate(lab, rate_bps * 1.5)
    });
    lab.exec(
        &lab.router,
        &[
            "tc", "qdisc", "add", "dev", "r1", "root", "tbf", "rate", rate, "burst", "10kb",
            "latency", "100ms",
        ],
    )
    .unwrap();
    let tbf = flood_rate(lab, rate_bps * 1.5);
    lab.exec(&lab.router, &["tc", "qdisc", "del", "dev", "r1", "root"])
        .unwrap();
    let bps = |w: &[(u64, f64)]| w.iter().map(|x| x.1).collect::<Vec<f64>>();
    report(
        &format!("rate {rate}"),
        &format!("rate {rate} queue 100ms, offered 1.5x"),
        json!({"window_bps": bps(&windows), "configured_bps": rate_bps,
               "windows": flood::describe_windows(&windows, &stalls, window),
               "dropped_queue": stats["rules"][0]["dropped_queue"], "lost": sent - received as u64}),
        json!({"netem_window_bps": bps(&netem.windows), "tbf_window_bps": bps(&tbf.windows)}),
    );
    flood::assert_windows(
        &format!("rate {rate}"),
        &windows,
        &stalls,
        window,
        rate_bps,
        0.01,
        2,
    );
    assert_eq!(
        stats["rules"][0]["dropped_queue"].as_u64().unwrap(),
        sent - received as u64,
        "queue drops are the receiver's losses"
    );
}

#[test]
#[ignore = "needs sch_fq and sch_netem: runs in the VM tier (cargo xtask vm)"]
fn rate_1mbit_and_10mbit_per_1s_window() {
    let lab = lab("frate");
    let before = router_state(&lab);
    rate_scenario(&lab, "1mbit", 1e6);
    rate_scenario(&lab, "10mbit", 1e7);
    assert_restored(&lab, &before);
}

#[test]
#[ignore = "needs sch_fq and sch_netem: runs in the VM tier (cargo xtask vm)"]
fn rate_and_delay_together() {
    let lab = lab("fratedelay");
    let ctl = Controller::start(&lab, &["--rate", "5mbit", "--delay", "30ms"]);
    let run = measure(&lab, 1000, 200, 500, Duration::from_millis(500));
    drop(ctl);
    let netem = with_netem(
        &lab,
        &["delay", "30ms", "rate", "5mbit", "limit", "100000"],
        || measure(&lab, 1000, 200, 500, Duration::from_millis(500)),
    );
    report(
        "rate and delay",
        "rate 5mbit delay 30ms (offered 0.8 Mbit/s)",
        summary(&run.delays_ns),
        summary(&netem.delays_ns),
    );
    assert_eq!(run.report.lost, 0);
    // 542-byte frames at 5 Mbit/s serialize in 0.87 ms.
    let min = *run.delays_ns.iter().min().unwrap();
    assert!(min >= 30_867_200, "delay plus serialization: {min} ns");
}

#[test]
#[ignore = "needs sch_fq and sch_netem: runs in the VM tier (cargo xtask vm)"]
fn queue_limit_drops_are_counted_and_bound_the_delay() {
    let lab = lab("fqueue");
    let ctl = Controller::start(&lab, &["--rate", "1mbit", "--queue", "20ms"]);
    // 3× the rate: the queue fills and stays at its limit.
    let run = measure(&lab, 1500, 375, 1000, Duration::from_millis(300));
    let dropped = stats_json(&lab)["rules"][0]["dropped_queue"]
        .as_u64()
        .unwrap();
    drop(ctl);
    report(
        "queue limit",
        "rate 1mbit queue 20ms, offered 3x",
        json!({"dropped_queue": dropped, "lost": run.report.lost, "delay": summary(&run.delays_ns)}),
        json!(null),
    );
    assert!(dropped > 0);
    assert_eq!(
        dropped, run.report.lost,
        "every queue drop, and only those, is lost"
    );
    // The limit bounds what the data path schedules; the receiver adds the
    // emulator's own lateness, which under TCG reaches a single packet now
    // and then (maxima of 26.7 to 37 ms were seen on 6.1 and 6.12 against
    // this 20 ms limit). So the bound is on the 99th percentile, with the
    // same 10 ms of slack; the exact accounting above checks every drop.
    let mut sorted = run.delays_ns.clone();
    sorted.sort_unstable();
    let p99 = impair_tests::stats::quantile(&sorted, 0.99);
    assert!(
        p99 < 20_000_000 + 10_000_000,
        "queueing delay bounded by the limit (+ slack for TCG) at the 99th percentile: {p99} ns"
    );
}

/// Runs `f` with the classic hand-made recipe for impairing received
/// traffic: an ifb in the server's namespace, `s0`'s ingress redirected to
/// it by `mirred`, and netem as the ifb's root; then removes all of it.
fn with_netem_on_ifb<T>(lab: &Lab, netem_args: &[&str], f: impl FnOnce() -> T) -> T {
    let s = lab.server.as_str();
    let ifb = "ifbnetem";
    for args in [
        &["ip", "link", "add", ifb, "type", "ifb"][..],
        &["ip", "link", "set", ifb, "up"],
        &[
            "tc", "qdisc", "add", "dev", "s0", "handle", "ffff:", "ingress",
        ],
        &[
            "tc", "filter", "add", "dev", "s0", "parent", "ffff:", "matchall", "action", "mirred",
            "egress", "redirect", "dev", ifb,
        ],
    ] {
        lab.exec(s, args).unwrap();
    }
    let mut args = vec!["tc", "qdisc", "add", "dev", ifb, "root", "netem"];
    args.extend(netem_args);
    lab.exec(s, &args).unwrap();
    let out = f();
    lab.exec(s, &["tc", "qdisc", "del", "dev", "s0", "ingress"])
        .unwrap();
    lab.exec(s, &["ip", "link", "del", ifb]).unwrap();
    out
}

/// Whether this kernel holds received traffic through impair's ifb (Linux
/// 6.4+); else a NOTE naming `test` (the netns tier checks the refusal).
fn ingress_ifb_or_note(test: &str) -> bool {
    let release = impair::engine::ifb::kernel_release();
    let ok = impair::engine::ifb::redirects_to_ifb(&release);
    if !ok {
        impair_tests::note(format!(
            "{test}: Linux {release} cannot bpf_redirect to an ifb (6.4+): nothing measured \
             (netns ifb:: checks the refusal)"
        ));
    }
    ok
}

/// Issue 12: delay on received traffic (impair through the ifb it owns)
/// beside netem on an ifb, the recipe people use by hand.
#[test]
#[ignore = "needs sch_fq and sch_netem: runs in the VM tier (cargo xtask vm)"]
fn ingress_delay_through_an_ifb_beside_netem_on_an_ifb() {
    if ingress_ifb_or_note("ingress_delay_through_an_ifb_beside_netem_on_an_ifb") {
        constant_delay_case("fidelay", true);
    }
}

/// What [`flood_rate`] measured.
struct Flooded {
    sent: u64,
    received: usize,
    /// Delivered bit/s per 1 s window, with each window's start.
    windows: Vec<(u64, f64)>,
    /// The guest's stalls (start, length).
    stalls: Vec<(u64, Duration)>,
}

/// Saturating UDP client → server at `offered_bps` for 6 s, timed by the
/// receiver's kernel (`flood`).
fn flood_rate(lab: &Lab, offered_bps: f64) -> Flooded {
    use impair_tests::flood;
    let flood::Flow {
        sent,
        end_ns: end,
        arrivals,
        stalls,
    } = flood::client_to_server(lab, FLOOD_PAYLOAD, offered_bps, Duration::from_secs(6));
    assert!(arrivals.len() > 100, "{} arrived of {sent}", arrivals.len());
    // From half a second after the first arrival (the queue has filled)
    // until the load stopped.
    let from = arrivals[0].0 + 500_000_000;
    let windows = flood::windows_bps(&arrivals, FLOOD_PAYLOAD, from, end, Duration::from_secs(1));
    Flooded {
        sent,
        received: arrivals.len(),
        windows,
        stalls,
    }
}

const FLOOD_PAYLOAD: usize = 1000;

/// Issue 12: a rate on received traffic (impair through its ifb) per 1 s
/// window at the receiver (kernel receive times; windows in which the guest
/// stalled are shown, not judged), beside netem's rate on an ifb.
#[test]
#[ignore = "needs sch_fq and sch_netem: runs in the VM tier (cargo xtask vm)"]
fn ingress_rate_through_an_ifb_beside_netem_on_an_ifb() {
    use impair_tests::flood;
    let test = "ingress_rate_through_an_ifb_beside_netem_on_an_ifb";
    if !ingress_ifb_or_note(test) {
        return;
    }
    let lab = lab("firate");
    let before = Site::ServerIngress.state(&lab);
    let (rate, rate_bps) = ("5mbit", 5e6);
    let window = Duration::from_secs(1);
    let ctl = Controller::start_in(
        &lab.server,
        "s0",
        // A rate on received traffic shapes through the ifb (EDT + fq, as
        // at egress; --police would drop at the hook instead).
        &["--direction", "ingress", "--rate", rate, "--queue", "100ms"],
    );
    let Flooded {
        sent,
        received,
        windows,
        stalls,
    } = flood_rate(&lab, rate_bps * 1.5);
    let stats = impair_tests::ns::stats_json_in(&lab.server, "s0", &[]);
    drop(ctl);
    Site::ServerIngress.assert_restored(&lab, &before);
    let netem = with_netem_on_ifb(&lab, &["rate", rate, "limit", "100000"], || {
        flood_rate(&lab, rate_bps * 1.5)
    });
    let bps = |w: &[(u64, f64)]| w.iter().map(|x| x.1).collect::<Vec<f64>>();
    report(
        &format!("ingress rate {rate} (ifb)"),
        &format!("rate {rate} queue 100ms on received traffic, offered 1.5x; netem on an ifb"),
        json!({"window_bps": bps(&windows), "configured_bps": rate_bps,
               "windows": flood::describe_windows(&windows, &stalls, window),
               "dropped_queue": stats["rules"][0]["dropped_queue"], "lost": sent - received as u64}),
        json!({"netem_window_bps": bps(&netem.windows),
               "windows": flood::describe_windows(&netem.windows, &netem.stalls, window)}),
    );
    flood::assert_windows(test, &windows, &stalls, window, rate_bps, 0.01, 2);
    assert_eq!(
        stats["rules"][0]["dropped_queue"].as_u64().unwrap(),
        sent - received as u64,
        "queue drops are the receiver's losses"
    );
}
