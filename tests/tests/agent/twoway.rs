//! Two-way links through the agent: `uplink`/`downlink` rule lists (or a
//! two-way built-in profile) attach an egress and an ingress instance on
//! one interface, measured at the receiver each way; `flip` swaps them, an
//! update switches both sides, delete restores the interface exactly, and
//! the bad combinations are 400s naming their field.
use std::net::{SocketAddr, UdpSocket};

use impair::netns;
use impair_tests::{
    ns::{assert_restored, lab, probe, router_state},
    stats::assert_inside_suite,
};
use impair_tools::{
    lab::Lab,
    probe::{self, ProbeConfig, ProbeReport},
};
use serde_json::{json, Value};

use crate::{assert_error, Agent};

/// Sends `count` datagrams server → client: through the router's `r1`
/// ingress (the link's downlink), the reverse of [`probe`].
fn probe_back(lab: &Lab, count: u64) -> ProbeReport {
    let (src, dst) = (lab.server_v4(), lab.client_v4());
    let rx = netns::run_in(&lab.client, move || {
        UdpSocket::bind(SocketAddr::new(dst.into(), 0))
    })
    .unwrap()
    .unwrap();
    let tx = netns::run_in(&lab.server, move || {
        UdpSocket::bind(SocketAddr::new(src.into(), 0))
    })
    .unwrap()
    .unwrap();
    let to = rx.local_addr().unwrap();
    let cfg = ProbeConfig {
        count,
        rate_pps: 20_000,
        payload_len: 200,
        ..Default::default()
    };
    probe::run_pair(tx, rx, to, &cfg).unwrap()
}

/// Each side of a two-way view: its direction and configured loss.
fn sides(view: &Value) -> Vec<(String, f64)> {
    view["sides"]
        .as_array()
        .unwrap_or_else(|| panic!("a two-way view lists its sides: {view}"))
        .iter()
        .map(|s| {
            (
                s["direction"].as_str().unwrap_or_default().to_owned(),
                s["rules"][0]["loss"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect()
}

fn near(got: &[(String, f64)], want: &[(&str, f64)]) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|((d, l), (wd, wl))| d == wd && (l - wl).abs() < 1e-6)
}

#[test]
fn a_two_way_link_impairs_each_direction_flips_and_restores_exactly() {
    let lab: Lab = lab("agw");
    let before = router_state(&lab);
    let agent = Agent::start(&lab.router, &[]);
    let post = |v: Value| agent.req("POST", "/v1/impairments", Some(&v));
    let target = json!({"interface": "r1"});
    let link = json!({"uplink": [{"proto": "udp", "loss": "20%"}],
                      "downlink": [{"proto": "udp", "loss": "50%"}]});

    // The bad combinations change nothing and name their field.
    let with = |extra: Value| {
        let mut body = json!({"id": "bad", "target": target});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    assert_error(
        &post(with(json!({"rules": [{"loss": "1%"}], "flip": true}))),
        400,
        Some("flip"),
    );
    assert_error(
        &post(with(json!({"profile": "lossy", "flip": true}))),
        400,
        Some("flip"),
    );
    assert_error(
        &post(with(
            json!({"uplink": [{"loss": "1%"}], "direction": "ingress"}),
        )),
        400,
        Some("direction"),
    );
    assert_error(
        &post(with(
            json!({"rules": [{"loss": "1%"}], "uplink": [{"loss": "1%"}]}),
        )),
        400,
        Some("uplink"),
    );
    assert_error(
        &post(with(json!({"uplink": [], "downlink": []}))),
        400,
        Some("uplink"),
    );
    assert_error(
        &post(with(json!({"downlink": [{"loss": "150%"}]}))),
        400,
        Some("downlink[0].loss"),
    );
    let list = agent.req("GET", "/v1/impairments", None);
    assert_eq!(list.body["impairments"], json!([]), "{list:?}");
    assert_restored(&lab, &before);

    // Both sides: the uplink at egress (client → server leaves r1), the
    // downlink at ingress (server → client arrives on r1).
    let mut body = with(link.clone());
    body["id"] = json!("link");
    body["seed"] = json!(7);
    let r = post(body);
    assert_eq!(r.status, 201, "{r:?}");
    let s = sides(&r.body);
    assert!(
        near(&s, &[("egress", 0.2), ("ingress", 0.5)]),
        "{s:?}: {r:?}"
    );
    let up = probe(&lab, false, 0, 10_000, 200);
    assert_inside_suite(0.20, up.lost, up.sent);
    let down = probe_back(&lab, 10_000);
    assert_inside_suite(0.50, down.lost, down.sent);
    let got = agent.req("GET", "/v1/impairments/link", None);
    for (i, rep) in [up, down].iter().enumerate() {
        let rule = &got.body["sides"][i]["rules"][0];
        assert_eq!(
            rule["dropped_loss"].as_u64(),
            Some(rep.lost),
            "side {i}, configured vs measured: {got:?}"
        );
    }
    let metrics = agent.req("GET", "/metrics", None);
    for d in ["egress", "ingress"] {
        assert!(
            metrics.text.contains(&format!("direction=\"{d}\"")),
            "/metrics has the {d} side: {}",
            metrics.text
        );
    }
    // A two-way link takes two-way rules only.
    assert_error(
        &agent.req(
            "PUT",
            "/v1/impairments/link",
            Some(&json!({"rules": [{"loss": "1%"}]})),
        ),
        400,
        Some("rules"),
    );

    // Flipped: the same link seen from its other end, both sides switched
    // (each atomically).
    let mut flipped = link.clone();
    flipped["flip"] = json!(true);
    let f = agent.req("PUT", "/v1/impairments/link", Some(&flipped));
    assert_eq!(f.status, 200, "{f:?}");
    let s = sides(&f.body);
    assert!(
        near(&s, &[("egress", 0.5), ("ingress", 0.2)]),
        "{s:?}: {f:?}"
    );
    for i in 0..2 {
        assert_eq!(f.body["sides"][i]["generation"], 2, "{f:?}");
    }
    let up = probe(&lab, false, 0, 10_000, 200);
    assert_inside_suite(0.50, up.lost, up.sent);
    let down = probe_back(&lab, 10_000);
    assert_inside_suite(0.20, down.lost, down.sent);

    let del = agent.req("DELETE", "/v1/impairments/link", None);
    assert_eq!(del.status, 200, "{del:?}");
    assert_restored(&lab, &before);
    assert_eq!(probe(&lab, false, 0, 2_000, 200).lost, 0);
    assert_eq!(probe_back(&lab, 2_000).lost, 0);

    // `direction` picks one side of a two-way link; created flipped, the
    // uplink is the given downlink.
    let mut one = with(link.clone());
    one["id"] = json!("one");
    one["direction"] = json!("egress");
    one["flip"] = json!(true);
    let r = post(one);
    assert_eq!(r.status, 201, "{r:?}");
    let s = sides(&r.body);
    assert!(near(&s, &[("egress", 0.5)]), "{s:?}: {r:?}");
    assert_eq!(probe_back(&lab, 2_000).lost, 0, "no downlink attached");
    assert_eq!(agent.req("DELETE", "/v1/impairments/one", None).status, 200);
    assert_restored(&lab, &before);

    // A scenario with two-way steps plays both sides: step 2 switches each.
    let scenario = "[[step]]\nduration = \"1s\"\n[[step.uplink.rule]]\nloss = \"10%\"\n\
                    [[step.downlink.rule]]\nloss = \"30%\"\n\
                    [[step]]\nduration = \"10s\"\n[[step.uplink.rule]]\nloss = \"40%\"\n\
                    [[step.downlink.rule]]\nloss = \"60%\"\n";
    let r = post(json!({"id": "sc2", "target": target, "scenario": scenario}));
    assert_eq!(r.status, 201, "{r:?}");
    let s = sides(&r.body);
    assert!(
        near(&s, &[("egress", 0.1), ("ingress", 0.3)]),
        "{s:?}: {r:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let g = agent.req("GET", "/v1/impairments/sc2", None);
    let s = sides(&g.body);
    assert!(
        near(&s, &[("egress", 0.4), ("ingress", 0.6)]),
        "{s:?}: {g:?}"
    );
    for i in 0..2 {
        assert_eq!(g.body["sides"][i]["generation"], 2, "{g:?}");
    }
    assert_eq!(agent.req("DELETE", "/v1/impairments/sc2", None).status, 200);
    assert_restored(&lab, &before);
}
