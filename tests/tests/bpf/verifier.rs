//! What differs by kernel: each kernel's verifier must accept every program
//! (and stay far from its limit), and each path through them must run there.
//! The VM tier runs `bpf verifier::` on every kernel it boots; the host runs
//! it with everything else.
use impair::{
    engine::Program,
    model::{compile_all, CorruptMode, DelaySpec, RateSpec, RuleSpec},
    model::{units::parse_loss_model, QueueLimit},
};
use impair_common::RuleCounters;
use impair_tests::{
    bpf::{counters, load, run, run_out, ALL_HOOKS},
    packet::*,
    require_privileges, set_loopback_up, CLIENT_V4, SERVER_V4,
};

/// All three programs stay far from the verifier's 1M-instruction limit, so
/// added impairments cannot silently push one over on some kernel. The guard
/// was 150k until the 2026-12-02 round added wire counters, latency
/// matrices, delay/loss series, rate traces, capture and the ifb duplicate
/// check to tc egress (179k on 6.18): 250k keeps four times that headroom.
#[test]
fn verifier_complexity_has_headroom() {
    let mut l = load(&[RuleSpec::default()]);
    for (name, info) in [
        ("impair_egress", l.tc_egress().unwrap().info().unwrap()),
        ("impair_ingress", l.tc_ingress().unwrap().info().unwrap()),
        ("impair_xdp", l.xdp().unwrap().info().unwrap()),
    ] {
        let processed = info
            .verified_instruction_count()
            .expect("kernel reports verified_insns");
        eprintln!("{name}: verifier processed {processed} instructions");
        assert!(
            processed < 250_000,
            "{name}: verifier processed {processed} instructions (limit 1,000,000)"
        );
    }
}

/// One path through the programs: a rule, whether the packet passes, and the
/// counter that must count it once.
struct Path {
    name: &'static str,
    rule: RuleSpec,
    /// Only egress can hold or copy a packet.
    egress_only: bool,
    /// The verdict, where the path decides it alone (not a random draw).
    passes: Option<bool>,
    counted: fn(&RuleCounters) -> u64,
}

fn paths() -> Vec<Path> {
    let delay = DelaySpec {
        delay_ns: 10_000_000,
        jitter_ns: 1_000_000,
        ..Default::default()
    };
    let path = |name, rule, passes: bool, counted| Path {
        name,
        rule,
        egress_only: false,
        passes: Some(passes),
        counted,
    };
    vec![
        path("pass", RuleSpec::default(), true, |c| c.passed),
        path(
            "loss",
            RuleSpec {
                loss: Some(1.0),
                ..Default::default()
            },
            false,
            |c| c.dropped_loss,
        ),
        Path {
            passes: None,
            ..path(
                "gilbert-elliott",
                RuleSpec {
                    loss_model: Some(parse_loss_model("ge:5%,20%").unwrap()),
                    ..Default::default()
                },
                true,
                |c| c.packets,
            )
        },
        path(
            "ecn",
            RuleSpec {
                loss: Some(1.0),
                ecn: true,
                ..Default::default()
            },
            true,
            |c| c.ecn_marked,
        ),
        path(
            "mtu",
            RuleSpec {
                mtu_bytes: Some(68),
                ..Default::default()
            },
            false,
            |c| c.dropped_mtu,
        ),
        path(
            "blackhole",
            RuleSpec {
                blackhole: true,
                ..Default::default()
            },
            false,
            |c| c.dropped_loss,
        ),
        path(
            "corrupt",
            RuleSpec {
                corrupt: Some(1.0),
                ..Default::default()
            },
            true,
            |c| c.corrupted,
        ),
        path(
            "corrupt silent",
            RuleSpec {
                corrupt: Some(1.0),
                corrupt_mode: CorruptMode::Silent,
                ..Default::default()
            },
            true,
            |c| c.corrupted,
        ),
        path(
            "rate",
            RuleSpec {
                rate: Some(RateSpec {
                    rate_bps: 10_000,
                    queue: Some(QueueLimit::Time { ns: 500_000_000 }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            true,
            |c| c.passed,
        ),
        Path {
            egress_only: true,
            ..path(
                "delay",
                RuleSpec {
                    delay: Some(delay.clone()),
                    ..Default::default()
                },
                true,
                |c| c.delayed,
            )
        },
        Path {
            egress_only: true,
            ..path(
                "reorder",
                RuleSpec {
                    delay: Some(delay),
                    reorder: Some(1.0),
                    ..Default::default()
                },
                true,
                |c| c.reordered,
            )
        },
        Path {
            egress_only: true,
            ..path(
                "duplicate",
                RuleSpec {
                    duplicate: Some(1.0),
                    ..Default::default()
                },
                true,
                |c| c.duplicated,
            )
        },
        path(
            "matrix loss",
            RuleSpec {
                matrix: Some(std::sync::Arc::new(
                    impair::model::Matrix::parse_csv(
                        "verifier.csv",
                        "prefix,delay,jitter,loss,rate\n198.18.0.0/15,,,100%,\n",
                    )
                    .unwrap(),
                )),
                ..Default::default()
            },
            false,
            |c| c.dropped_loss,
        ),
        Path {
            egress_only: true,
            ..path(
                "matrix delay and rate",
                RuleSpec {
                    matrix: Some(std::sync::Arc::new(
                        impair::model::Matrix::parse_csv(
                            "verifier.csv",
                            "prefix,delay,jitter,loss,rate\n198.18.0.0/15,10ms,1ms,,100mbit\n",
                        )
                        .unwrap(),
                    )),
                    ..Default::default()
                },
                true,
                |c| c.delayed,
            )
        },
        path(
            "loss series",
            RuleSpec {
                loss_series: Some(std::sync::Arc::new(
                    impair::model::series::Series::parse(
                        "verifier.csv",
                        "0,100%\n",
                        impair::model::series::SeriesKind::Loss,
                        Default::default(),
                        Default::default(),
                    )
                    .unwrap(),
                )),
                ..Default::default()
            },
            false,
            |c| c.dropped_loss,
        ),
        Path {
            egress_only: true,
            ..path(
                "delay series",
                RuleSpec {
                    delay_series: Some(std::sync::Arc::new(
                        impair::model::series::Series::parse(
                            "verifier.csv",
                            "0,10ms\n100,20ms\n",
                            impair::model::series::SeriesKind::Delay,
                            Default::default(),
                            Default::default(),
                        )
                        .unwrap(),
                    )),
                    ..Default::default()
                },
                true,
                |c| c.delayed,
            )
        },
        Path {
            egress_only: true,
            ..path(
                "rate trace",
                RuleSpec {
                    rate_trace: Some(std::sync::Arc::new(
                        impair::model::trace::RateTrace::parse("verifier", "1\n1\n2\n").unwrap(),
                    )),
                    ..Default::default()
                },
                true,
                |c| c.passed,
            )
        },
    ]
}

/// One ECN-capable UDP/IPv4 packet with a payload and valid checksums through
/// every impairment's path at every hook that has it, each path's rule made
/// active in turn by a rule-set swap: the verdict, the one counter that path
/// keeps, and no data-path error. Then the expired lease, which bypasses
/// every rule. In a private network namespace with loopback up, where a
/// duplicate's clone goes.
#[test]
fn one_packet_through_each_path_at_every_hook() {
    require_privileges();
    std::thread::spawn(|| {
        // SAFETY: unshare affects only this thread's network namespace.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        set_loopback_up();
        let f = udp4_csum(CLIENT_V4, SERVER_V4, 1, 2, 0b10, &[7; 64]);
        let mut l = load(&[RuleSpec::default()]);
        for (i, path) in (1u32..).zip(paths()) {
            let rules = compile_all(std::slice::from_ref(&path.rule)).unwrap();
            l.maps
                .write_and_activate(i % 2, &rules, u64::from(i) + 1)
                .unwrap();
            let hooks: &[Program] = if path.egress_only {
                &[Program::TcEgress]
            } else {
                &ALL_HOOKS
            };
            for (n, &p) in (1u64..).zip(hooks) {
                let what = format!("{} at {p:?}", path.name);
                let (ok, _) = run_out(&mut l, p, &f);
                if let Some(passes) = path.passes {
                    assert_eq!(ok, passes, "{what}: verdict");
                }
                let c = counters(&l, 0);
                assert_eq!(c.packets, n, "{what}: {c:?}");
                assert_eq!((path.counted)(&c), n, "{what}: {c:?}");
                assert_eq!(l.maps.global_counters().unwrap().errors, 0, "{what}");
            }
        }
        l.maps.set_lease_deadline_ns(1).unwrap();
        let expired_before = l.maps.global_counters().unwrap().lease_expired;
        for (n, p) in (1u64..).zip(ALL_HOOKS) {
            assert!(run(&mut l, p, &f, 1), "expired lease at {p:?}");
            let g = l.maps.global_counters().unwrap();
            assert_eq!(
                (g.lease_expired - expired_before, g.errors),
                (n, 0),
                "{p:?}"
            );
        }
    })
    .join()
    .unwrap();
}
