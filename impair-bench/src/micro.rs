//! BPF_PROG_TEST_RUN per-path cost and rule scaling.
#[allow(clippy::wildcard_imports)]
use crate::*;
use impair::engine::Program;

#[derive(Serialize, Clone)]
pub(crate) struct Micro {
    pub(crate) case: String,
    pub(crate) rules: usize,
    pub(crate) ns_per_packet: f64,
}

/// The tc floor plus one `bpf_ktime_get_ns` (`floor::load_clock`).
pub(crate) const CLOCK_CASE: &str = "floor + one bpf_ktime_get_ns";

pub(crate) fn nomatch() -> MatchSpec {
    MatchSpec {
        dst: Some(parse_cidr("dst", "198.19.0.0/16").unwrap()),
        ..Default::default()
    }
}

/// The kernel's average ns per run of `impair_egress` on `frame`: the median
/// of five BPF_PROG_TEST_RUN calls of `repeat` runs each.
pub(crate) fn time_prog(l: &mut Loaded, frame: &[u8], repeat: u32) -> Result<f64> {
    time_hook(l, Program::TcEgress, frame, repeat)
}

/// [`time_prog`] for program `p` (tc egress, tc ingress or XDP).
fn time_hook(l: &mut Loaded, p: Program, frame: &[u8], repeat: u32) -> Result<f64> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut samples = Vec::new();
    for _ in 0..5 {
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        };
        let r = match p {
            Program::TcIngress => l.tc_ingress()?.test_run(opts)?,
            Program::Xdp => l.xdp()?.test_run(opts)?,
            _ => l.tc_egress()?.test_run(opts)?,
        };
        samples.push(r.duration.as_nanos() as f64);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[2])
}

/// The floor and the receive hooks: an empty program (`floor::load_empty`)
/// test-run the same way, so each path's cost can be read above the hook's
/// own (the test harness's loop and the context setup, which a virtual
/// machine makes dear), and impair's unmatched, matched, 1% loss and
/// blackhole paths at tc ingress and XDP.
fn hooks(frame: &[u8], repeat: u32) -> Result<Vec<Micro>> {
    let median = |fd: &std::os::fd::OwnedFd| -> Result<f64> {
        let mut samples = Vec::new();
        for _ in 0..5 {
            samples.push(crate::floor::test_run_ns(fd, frame, repeat)?);
        }
        samples.sort_by(f64::total_cmp);
        Ok(samples[2])
    };
    let mut out = Vec::new();
    for (name, prog) in [
        ("floor: empty tc program", crate::floor::load_empty(false)?),
        ("floor: empty XDP program", crate::floor::load_empty(true)?),
        (CLOCK_CASE, crate::floor::load_clock()?),
    ] {
        let ns = median(&prog)?;
        eprintln!("micro  {name:<42} {ns:7.1} ns/packet");
        out.push(Micro {
            case: name.into(),
            rules: 0,
            ns_per_packet: ns,
        });
    }
    let cases = [
        (
            "unmatched (1 rule)",
            RuleSpec {
                matcher: nomatch(),
                loss: Some(1.0),
                ..Default::default()
            },
        ),
        ("matched, no impairment", RuleSpec::default()),
        (
            "loss 1%",
            RuleSpec {
                loss: Some(0.01),
                ..Default::default()
            },
        ),
        (
            "blackhole",
            RuleSpec {
                blackhole: true,
                ..Default::default()
            },
        ),
    ];
    for (hook, p) in [
        ("tc egress", Program::TcEgress),
        ("tc ingress", Program::TcIngress),
        ("XDP", Program::Xdp),
    ] {
        for (case, rule) in &cases {
            if p == Program::TcEgress && *case != "blackhole" {
                continue; // measured above
            }
            let mut l = Loaded::new(&compile_all(std::slice::from_ref(rule))?, 7)?;
            let ns = time_hook(&mut l, p, frame, repeat)?;
            let name = format!("{hook}: {case}");
            eprintln!("micro  {name:<42} {ns:7.1} ns/packet");
            out.push(Micro {
                case: name,
                rules: 1,
                ns_per_packet: ns,
            });
        }
    }
    Ok(out)
}

pub(crate) fn micro(quick: bool) -> Result<Vec<Micro>> {
    pin_to_cpu0();
    let repeat = if quick { 20_000 } else { 1_000_000 };
    let frame = udp4(CLIENT_V4, SERVER_V4, 1000, 2000);
    let full = RuleSpec {
        loss: Some(0.01),
        corrupt: Some(0.01),
        corrupt_mode: CorruptMode::Silent,
        delay: Some(DelaySpec {
            delay_ns: 10_000_000,
            jitter_ns: 2_000_000,
            distribution: Some("normal".parse().unwrap()),
            in_order: true,
            ..Default::default()
        }),
        rate: Some(RateSpec {
            rate_bps: 100_000_000_000,
            ..Default::default()
        }),
        ..Default::default()
    };
    let cases: Vec<(&str, Vec<RuleSpec>)> = vec![
        ("empty rule set", vec![]),
        (
            "unmatched (1 rule)",
            vec![RuleSpec {
                matcher: nomatch(),
                loss: Some(1.0),
                ..Default::default()
            }],
        ),
        ("matched, no impairment", vec![RuleSpec::default()]),
        (
            "loss 1%",
            vec![RuleSpec {
                loss: Some(0.01),
                ..Default::default()
            }],
        ),
        (
            "Gilbert-Elliott",
            vec![RuleSpec {
                loss_model: Some(impair::model::units::parse_loss_model("ge:1%,30%").unwrap()),
                ..Default::default()
            }],
        ),
        (
            "corrupt 100% (silent)",
            vec![RuleSpec {
                corrupt: Some(1.0),
                corrupt_mode: CorruptMode::Silent,
                ..Default::default()
            }],
        ),
        (
            "delay 10ms",
            vec![RuleSpec {
                delay: Some(DelaySpec {
                    delay_ns: 10_000_000,
                    ..Default::default()
                }),
                ..Default::default()
            }],
        ),
        (
            "rate 100gbit",
            vec![RuleSpec {
                rate: Some(RateSpec {
                    rate_bps: 100_000_000_000,
                    ..Default::default()
                }),
                ..Default::default()
            }],
        ),
        (
            "full: loss+corrupt+jitter in-order+rate",
            vec![full.clone()],
        ),
    ];
    let mut out = hooks(&frame, repeat)?;
    for (name, rules) in cases {
        let mut l = Loaded::new(&compile_all(&rules)?, 7)?;
        let ns = time_prog(&mut l, &frame, repeat)?;
        eprintln!("micro  {name:<42} {ns:7.1} ns/packet");
        out.push(Micro {
            case: name.into(),
            rules: rules.len(),
            ns_per_packet: ns,
        });
    }
    for n in [1usize, 2, 4, 8, 16, 32, 64] {
        // Distinct prefixes, so the index has as many intervals as the rules
        // can make: the walk it saves is the whole list.
        let mut rules: Vec<RuleSpec> = (0..n - 1)
            .map(|i| RuleSpec {
                matcher: MatchSpec {
                    dst: Some(parse_cidr("dst", &format!("198.19.{i}.0/24")).unwrap()),
                    ..Default::default()
                },
                loss: Some(1.0),
                ..Default::default()
            })
            .collect();
        rules.push(RuleSpec {
            loss: Some(0.01),
            ..Default::default()
        });
        let mut l = Loaded::new(&compile_all(&rules)?, 7)?;
        let ns = time_prog(&mut l, &frame, repeat)?;
        eprintln!(
            "micro  {:<42} {ns:7.1} ns/packet",
            format!("{n} rules, last matches")
        );
        out.push(Micro {
            case: "rules".into(),
            rules: n,
            ns_per_packet: ns,
        });
    }
    out.extend(matrix_scaling(&frame, repeat)?);
    // Many flows: the in-order table holds 1 or 10 000 flows when timed.
    for flows in [1u16, 10_000] {
        let mut l = Loaded::new(&compile_all(std::slice::from_ref(&full))?, 7)?;
        for sport in 0..flows {
            let f = udp4(CLIENT_V4, SERVER_V4, 1024 + sport, 2000);
            time_prog(&mut l, &f, 1)?;
        }
        let ns = time_prog(&mut l, &frame, repeat)?;
        let name = format!("full, {flows} flows in the in-order table");
        eprintln!("micro  {name:<42} {ns:7.1} ns/packet");
        out.push(Micro {
            case: name,
            rules: 1,
            ns_per_packet: ns,
        });
    }
    Ok(out)
}

/// A latency matrix of 1 to 100,000 prefixes (distinct /32s in 10.0.0.0/8,
/// and the frame's destination with 1% loss): the cost of the one LPM trie
/// lookup a rule with a matrix adds, against the number of prefixes.
fn matrix_scaling(frame: &[u8], repeat: u32) -> Result<Vec<Micro>> {
    use impair::model::{matrix::Dest, Matrix};
    let mut out = Vec::new();
    for n in [1usize, 10, 100, 1_000, 10_000, 100_000] {
        let mut dests: Vec<Dest> = (0..n as u32 - 1)
            .map(|i| Dest {
                prefix: std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 | i)).into(),
                delay_ns: None,
                jitter_ns: None,
                loss: Some(0.5),
                rate_bps: None,
            })
            .collect();
        dests.push(Dest {
            prefix: std::net::IpAddr::from(SERVER_V4).into(),
            delay_ns: None,
            jitter_ns: None,
            loss: Some(0.01),
            rate_bps: None,
        });
        let rule = RuleSpec {
            matrix: Some(Arc::new(Matrix {
                source: "bench".into(),
                dests,
            })),
            ..Default::default()
        };
        let mut l = Loaded::new(&compile_all(&[rule])?, 7)?;
        let ns = time_prog(&mut l, frame, repeat)?;
        let name = format!("matrix, {n} prefixes");
        eprintln!("micro  {name:<42} {ns:7.1} ns/packet");
        out.push(Micro {
            case: name,
            rules: 1,
            ns_per_packet: ns,
        });
    }
    Ok(out)
}

/// What reading the clock costs here, measured from user space on CPU 0
/// right after the microbenchmarks: the data path's `bpf_ktime_get_ns`
/// reads the same clocksource, so a machine whose clock is dear (a VM
/// without a cheap TSC) makes every path that needs the time dear.
#[derive(Serialize, Clone)]
pub(crate) struct ClockCost {
    /// /sys/devices/system/clocksource/clocksource0/current_clocksource.
    pub(crate) clocksource: String,
    /// ns per `clock_gettime(CLOCK_MONOTONIC)` (the vDSO where it can).
    pub(crate) clock_gettime_ns: f64,
    /// ns per `lfence; rdtsc` (x86-64 only): the read the kernel's clock
    /// makes under a TSC or kvm-clock clocksource.
    pub(crate) rdtsc_ns: Option<f64>,
}

/// The median over five loops of `n` calls of `f`, in ns per call.
fn ns_per_call(n: u32, mut f: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[2]
}

pub(crate) fn clock_cost(quick: bool) -> ClockCost {
    let n = if quick { 100_000 } else { 1_000_000 };
    let clocksource =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
    let clock_gettime_ns = ns_per_call(n, || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec for the call to write.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        std::hint::black_box(ts);
    });
    #[cfg(target_arch = "x86_64")]
    let rdtsc_ns = Some(ns_per_call(n, || {
        // SAFETY: lfence and rdtsc exist on every x86-64 CPU and touch no
        // memory.
        let t = unsafe {
            std::arch::x86_64::_mm_lfence();
            std::arch::x86_64::_rdtsc()
        };
        std::hint::black_box(t);
    }));
    #[cfg(not(target_arch = "x86_64"))]
    let rdtsc_ns = None;
    eprintln!(
        "clock  clocksource {clocksource}: clock_gettime {clock_gettime_ns:.1} ns, lfence+rdtsc {}",
        rdtsc_ns.map_or("n/a".to_owned(), |v| format!("{v:.1} ns"))
    );
    ClockCost {
        clocksource,
        clock_gettime_ns,
        rdtsc_ns,
    }
}
