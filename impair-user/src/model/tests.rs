//! Unit tests of the model as a whole: build, validate, compile, read back.
use super::*;
use units::{parse_cidr, parse_proto};

#[test]
fn compile_and_read_back() {
    let spec = RuleSpec {
        matcher: MatchSpec {
            dst: Some(parse_cidr("dst", "2001:2:0:2::/64").unwrap()),
            proto: parse_proto("udp").unwrap(),
            dport: Some((5000, 5010)),
            ..Default::default()
        },
        loss: Some(0.1),
        ..Default::default()
    };
    let r = spec.compile().unwrap();
    let v = RuleView::from_rule(&r);
    assert_eq!(v.matches, "dst 2001:2:0:2::/64 udp dport 5000-5010");
    assert_eq!(v.impairments, "loss 10%");
    assert!((v.loss.unwrap() - 0.1).abs() < 1e-9);
}

#[test]
fn rejects_mixed_families_and_ports_on_icmp() {
    let m = MatchSpec {
        src: Some(parse_cidr("src", "198.18.0.0/15").unwrap()),
        dst: Some(parse_cidr("dst", "2001:2::/48").unwrap()),
        ..Default::default()
    };
    assert!(m
        .compile()
        .unwrap_err()
        .to_string()
        .contains("different IP versions"));
    let m = MatchSpec {
        proto: parse_proto("icmp").unwrap(),
        dport: Some((1, 2)),
        ..Default::default()
    };
    assert!(m.compile().unwrap_err().to_string().contains("icmp"));
}

#[test]
fn every_impairment_round_trips_through_the_map_value() {
    let spec = RuleSpec {
        loss: Some(0.02),
        ecn: true,
        mtu_bytes: Some(1280),
        corrupt: Some(0.001),
        corrupt_mode: CorruptMode::Silent,
        duplicate: Some(0.05),
        ..Default::default()
    };
    let v = RuleView::from_rule(&spec.compile().unwrap());
    assert_eq!(
        v.impairments,
        "mtu 1280 loss 2% ecn corrupt 0.1% silent duplicate 5%"
    );
    assert_eq!(v.mtu_bytes, Some(1280));
    assert_eq!(v.corrupt_mode, CorruptMode::Silent);
}

#[test]
fn burst_models_report_their_mean_loss() {
    let spec = RuleSpec {
        loss_model: Some(units::parse_loss_model("ge:1%,30%").unwrap()),
        ..Default::default()
    };
    let v = RuleView::from_rule(&spec.compile().unwrap());
    // Simple Gilbert: p / (p + r) = 0.01 / 0.31.
    assert!((v.loss.unwrap() - 0.01 / 0.31).abs() < 1e-6, "{v:?}");
    assert!(
        v.impairments.starts_with("loss ge:1%,30%,100%,0%"),
        "{}",
        v.impairments
    );
    let both = RuleSpec {
        loss: Some(0.1),
        ..spec
    };
    assert!(both.compile().unwrap_err().to_string().contains("not both"));
}

#[test]
fn invalid_impairments_name_the_value() {
    let e = RuleSpec {
        mtu_bytes: Some(20),
        ..Default::default()
    }
    .compile()
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("mtu: 20 is out of range") && e.contains("MTU") && e.contains("68"),
        "{e}"
    );
    let e = RuleSpec {
        ecn: true,
        ..Default::default()
    }
    .compile()
    .unwrap_err();
    assert_eq!(e.field(), Field::Ecn);
    let flags = e.render(&|f: Field| format!("--{}", f.key()));
    assert!(
        flags.starts_with("--ecn ") && flags.contains("--loss"),
        "{flags}"
    );
    let e = RuleSpec {
        duplicate: Some(1.5),
        ..Default::default()
    }
    .compile()
    .unwrap_err()
    .to_string();
    assert!(e.contains("150%"), "{e}");
}

#[test]
fn delay_and_rate_compile_and_read_back() {
    let spec = RuleSpec {
        delay: Some(DelaySpec {
            delay_ns: 100_000_000,
            jitter_ns: 20_000_000,
            distribution: Some(Distribution::Normal),
            correlation: Some(0.25),
            in_order: true,
        }),
        rate: Some(RateSpec {
            rate_bps: 10_000_000,
            queue: Some(QueueLimit::Bytes { bytes: 12_500 }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let set = compile_all(std::slice::from_ref(&spec)).unwrap();
    assert!(set.needs_fq());
    let t = set.tables[0].as_ref().expect("a normal table");
    assert_eq!(t[4095], t[4096], "last knot repeated");
    assert!(t[0] < 0 && t[4095] > 0);
    let r = &set.rules[0];
    assert_eq!(
        r.queue_limit_ns, 10_000_000,
        "12500 bytes drain in 10 ms at 10 Mbit/s"
    );
    let v = RuleView::from_rule(r);
    assert_eq!(
        v.impairments,
        "delay 100ms jitter 20ms table corr 25% in-order rate 10mbit queue 10ms"
    );
    assert_eq!(v.rate_bps, Some(10_000_000));
    let no_delay = RuleSpec {
        reorder: Some(0.1),
        ..Default::default()
    };
    let e = no_delay.compile().unwrap_err();
    assert_eq!(
        e,
        ModelError::Requires {
            field: Field::Reorder,
            needs: Field::Delay
        }
    );
    assert!(e
        .render(&|f: Field| format!("--{}", f.key()))
        .contains("--delay"));
}

#[test]
fn percent_formatting() {
    assert_eq!(fmt_percent(0.1), "10%");
    assert_eq!(fmt_percent(0.005), "0.5%");
    assert_eq!(fmt_percent(0.0), "0%");
}

#[test]
fn the_flat_form_checks_what_only_it_can_get_wrong() {
    let both = Impairments {
        loss: Some(0.1),
        loss_model: Some(units::parse_loss_model("ge:1%").unwrap()),
        ..Default::default()
    };
    let e = both.rule(MatchSpec::default()).unwrap_err();
    assert_eq!(e.field(), Field::LossModel);
    let e = Impairments {
        queue: Some(QueueLimit::Packets { packets: 10 }),
        ..Default::default()
    }
    .rule(MatchSpec::default())
    .unwrap_err();
    assert_eq!(
        e,
        ModelError::Requires {
            field: Field::Queue,
            needs: Field::Rate
        }
    );
    let ok = Impairments {
        delay_ns: Some(10_000_000),
        jitter_ns: Some(1_000_000),
        in_order: true,
        rate_bps: Some(1_000_000),
        queue: Some(QueueLimit::Packets { packets: 10 }),
        ..Default::default()
    }
    .rule(MatchSpec::default())
    .unwrap();
    assert!(ok
        .delay
        .as_ref()
        .is_some_and(|d| d.in_order && d.jitter_ns == 1_000_000));
    assert_eq!(ok.rate.map(|r| r.rate_bps), Some(1_000_000));
}

#[test]
fn match_lists_make_one_match_per_combination_in_order() {
    let lists = MatchLists {
        dst: vec![
            parse_cidr("dst", "198.18.1.0/24").unwrap(),
            parse_cidr("dst", "2001:2::/48").unwrap(),
        ],
        src: vec![parse_cidr("src", "198.18.0.1").unwrap()],
        dport: vec![(53, 53), (853, 853)],
        ..Default::default()
    };
    let specs = lists.specs().unwrap();
    // The IPv6 destination cannot pair with an IPv4 source: left out.
    assert_eq!(specs.len(), 2);
    assert_eq!(specs[0].dport, Some((53, 53)));
    assert_eq!(specs[1].dport, Some((853, 853)));
    let none = MatchLists {
        src: vec![parse_cidr("src", "198.18.0.1").unwrap()],
        dst: vec![parse_cidr("dst", "2001:2::1").unwrap()],
        ..Default::default()
    };
    assert_eq!(none.specs().unwrap_err(), ModelError::NoFamilyPair);
}

#[test]
fn probabilities_read_back_as_given() {
    for p in [0.1, 0.25, 0.001, 0.000_001, 1.0, 0.0] {
        let spec = RuleSpec {
            loss: Some(p),
            ..Default::default()
        };
        let v = RuleView::from_rule(&spec.compile().unwrap());
        assert_eq!(v.loss, Some(p), "{p}");
    }
}

#[test]
fn rules_that_cannot_act_are_refused() {
    let e = Impairments {
        blackhole: true,
        loss: Some(0.05),
        ..Default::default()
    }
    .rule(MatchSpec::default())
    .unwrap_err();
    assert_eq!(
        e,
        ModelError::Redundant {
            field: Field::Loss,
            with: Field::Blackhole
        }
    );
    let flags = |e: &ModelError| e.render(&|f: Field| format!("--{}", f.key()));
    assert!(
        flags(&e).starts_with("--loss would never act: --blackhole"),
        "{}",
        flags(&e)
    );
    let e = Impairments {
        jitter_ns: Some(1_000_000),
        ..Default::default()
    }
    .rule(MatchSpec::default())
    .unwrap_err();
    assert!(
        flags(&e).starts_with("--jitter ") && flags(&e).contains("--delay"),
        "{}",
        flags(&e)
    );
    // An explicit zero delay keeps netem's jitter around no delay.
    assert!(Impairments {
        delay_ns: Some(0),
        jitter_ns: Some(1_000_000),
        ..Default::default()
    }
    .rule(MatchSpec::default())
    .is_ok());
    let e = Impairments {
        delay_ns: Some(10_000_000),
        in_order: true,
        ..Default::default()
    }
    .rule(MatchSpec::default())
    .unwrap_err();
    assert!(
        flags(&e).starts_with("--in-order ") && flags(&e).contains("--jitter"),
        "{}",
        flags(&e)
    );
}

/// Every rule read back from its map value compiles to the same map value,
/// so a live update that keeps a rule's other impairments keeps them exactly.
#[test]
fn rules_read_back_compile_to_the_same_map_value() {
    let m = MatchSpec {
        src: Some(parse_cidr("src", "198.18.1.0/24").unwrap()),
        dst: Some(parse_cidr("dst", "198.19.20.2/32").unwrap()),
        proto: parse_proto("udp").unwrap(),
        sport: Some((1000, 2000)),
        dport: Some((5000, 5010)),
        cgroup: None,
    };
    let specs = [
        Impairments {
            loss: Some(0.1),
            ecn: true,
            mtu_bytes: Some(1280),
            corrupt: Some(0.001),
            corrupt_mode: CorruptMode::Silent,
            duplicate: Some(0.05),
            ..Default::default()
        },
        Impairments {
            loss_model: Some(units::parse_loss_model("ge:1%,30%,80%,0.1%").unwrap()),
            delay_ns: Some(100_000_000),
            jitter_ns: Some(20_000_000),
            distribution: Some(Distribution::Normal),
            delay_corr: Some(0.25),
            in_order: true,
            rate_bps: Some(10_000_000),
            overhead_bytes: Some(14),
            cell: Some((48, 5)),
            queue: Some(QueueLimit::Packets { packets: 50 }),
            ..Default::default()
        },
        Impairments {
            loss_model: Some(units::parse_loss_model("state:2%,40%,5%,70%,0.5%").unwrap()),
            delay_ns: Some(30_000_000),
            reorder: Some(0.25),
            ..Default::default()
        },
    ];
    for imp in specs {
        let spec = imp.rule(m.clone()).unwrap();
        let rule = spec.compile().unwrap();
        let table = spec.table();
        let back = view::spec_of(&rule, table.as_ref().map(|t| &t[..]));
        assert_eq!(back.compile().unwrap(), rule, "{spec:?} → {back:?}");
        assert_eq!(back.table(), table);
        assert_eq!(back.matcher, spec.matcher);
    }
}

#[test]
fn an_update_keeps_what_it_does_not_set() {
    let running = Impairments {
        loss: Some(0.1),
        delay_ns: Some(10_000_000),
        ..Default::default()
    };
    let given = Impairments {
        loss: Some(0.25),
        ..Default::default()
    };
    let out = running.overlay(&given);
    assert_eq!((out.loss, out.delay_ns), (Some(0.25), Some(10_000_000)));
    let model = Impairments {
        loss_model: Some(units::parse_loss_model("ge:1%").unwrap()),
        ..Default::default()
    };
    let out = running.overlay(&model);
    assert!(out.loss.is_none() && out.loss_model.is_some());
    // A blackhole and the other impairments replace each other.
    let hole = running.overlay(&Impairments {
        blackhole: true,
        ..Default::default()
    });
    assert_eq!(
        hole,
        Impairments {
            blackhole: true,
            ..Default::default()
        }
    );
    let back = hole.overlay(&given);
    assert!(!back.blackhole && back.loss == Some(0.25));
}

#[test]
fn an_egress_rate_without_a_queue_gets_netems_default_limit() {
    let r = Impairments {
        rate_bps: Some(10_000_000),
        ..Default::default()
    }
    .rule(MatchSpec::default())
    .unwrap();
    assert_eq!(
        r.rate.unwrap().queue,
        None,
        "the model keeps what was given"
    );
    let d = r.with_default_queue();
    assert_eq!(
        d.rate.unwrap().queue,
        Some(QueueLimit::Packets {
            packets: rule::DEFAULT_QUEUE_PACKETS
        })
    );
    // 1000 frames of 1514 bytes at 10 Mbit/s: 1.2112 s.
    assert_eq!(d.compile().unwrap().queue_limit_ns, 1_211_200_000);
    let given = Impairments {
        rate_bps: Some(10_000_000),
        queue: Some(QueueLimit::Time { ns: 5_000_000 }),
        ..Default::default()
    }
    .rule(MatchSpec::default())
    .unwrap();
    assert_eq!(given.with_default_queue(), given, "a given limit stays");
}
