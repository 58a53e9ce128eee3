//! A 1,000-prefix latency matrix at the router's egress: the loss each
//! sampled destination's entry gives, measured at the receiver (inside the
//! 99% Wilson interval) and exactly the entry's own counters; a destination
//! with no loss loses nothing; `impair update --matrix` swaps the matrix
//! while traffic to an unrelated destination flows, and that traffic loses
//! nothing. (Delay per destination needs sch_fq: the BPF tier checks the
//! departure times.)
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

use impair::netns;
use impair_tests::{
    ns::{lab, stdout_ok, Site},
    stats::assert_inside_suite,
    Scratch,
};
use impair_tools::{
    lab::{Lab, SERVER_IF},
    probe::{self, ProbeConfig, ProbeReport},
};

/// The sampled destinations (on the server) and their loss.
const SAMPLE: [(u8, f64); 4] = [(10, 0.0), (11, 0.05), (12, 0.20), (13, 0.50)];

/// 1,000 prefixes: 198.18.2.0-255 (/32 each; the sampled ones with their
/// loss, the server's own address and the rest with none), and 744 /32s
/// in 198.19.0.0/16 with losses of 1-50%. No delay or rate: the host has
/// no sch_fq (the VM tier and the BPF tier cover departure times).
fn matrix_csv(server_loss: &str) -> String {
    let mut s = String::from("prefix,delay,jitter,loss,rate\n");
    for host in 0..=255u8 {
        let loss = match SAMPLE.iter().find(|(h, _)| *h == host) {
            Some((_, p)) => format!("{}%", p * 100.0),
            None if host == 1 => server_loss.to_owned(),
            None => String::new(),
        };
        s += &format!("198.18.2.{host}/32,,,{loss},\n");
    }
    for i in 0..744u32 {
        s += &format!("198.19.{}.{}/32,,,{}%,\n", i / 256, i % 256, 1 + i % 50);
    }
    s
}

/// `count` probe datagrams from the client to `dst` (an address of the
/// server), at 20,000 packets/s.
pub(crate) fn probe_to(lab: &Lab, dst: Ipv4Addr, count: u64) -> ProbeReport {
    let src = lab.client_v4();
    let rx = netns::run_in(&lab.server, move || {
        UdpSocket::bind(SocketAddr::new(IpAddr::V4(dst), 0))
    })
    .unwrap()
    .unwrap();
    let tx = netns::run_in(&lab.client, move || {
        UdpSocket::bind(SocketAddr::new(IpAddr::V4(src), 0))
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

/// The per-destination counters `impair stats --json` shows for `prefix`.
fn dest_stats(stats: &serde_json::Value, prefix: &str) -> serde_json::Value {
    stats["matrix_top"]
        .as_array()
        .unwrap_or_else(|| panic!("stats shows the matrix's destinations: {stats}"))
        .iter()
        .find(|d| d["prefix"] == prefix)
        .unwrap_or_else(|| panic!("{prefix} among the busiest: {stats}"))
        .clone()
}

#[test]
fn thousand_prefix_matrix_loss_per_destination_and_update_under_traffic() {
    let lab = lab("matrix");
    for (host, _) in SAMPLE {
        lab.exec(
            &lab.server,
            &[
                "ip",
                "addr",
                "add",
                &format!("198.18.2.{host}/32"),
                "dev",
                SERVER_IF,
            ],
        )
        .unwrap();
    }
    let scratch = Scratch::new("matrix");
    let first = scratch.file("regions.csv", &matrix_csv(""));
    let site = Site::RouterEgress;
    let before = site.state(&lab);
    let ctl = site.attach(&lab, &["--matrix", &first, "--seed", "42"]);
    assert!(ctl.first_line.contains("matrix"), "{}", ctl.first_line);

    let n = 4_000;
    let mut reports = Vec::new();
    for (host, loss) in SAMPLE {
        let r = probe_to(&lab, Ipv4Addr::new(198, 18, 2, host), n);
        assert_eq!(r.sent, n);
        if loss == 0.0 {
            assert_eq!(r.lost, 0, "198.18.2.{host}: no loss in its entry");
        } else {
            assert_inside_suite(loss, r.lost, r.sent);
        }
        reports.push((host, r));
    }
    let stats = site.stats(&lab);
    assert_eq!(stats["matrix_prefixes"], 1000, "{stats}");
    for (host, r) in &reports {
        let d = dest_stats(&stats, &format!("198.18.2.{host}/32"));
        assert_eq!(d["packets"], r.sent, "the entry saw every probe: {d}");
        assert_eq!(
            d["dropped_loss"], r.lost,
            "entry drops == sent - received: {d}"
        );
    }
    assert_eq!(stats["errors"], 0, "{stats}");

    // Swap in a matrix where the server's own address loses everything,
    // while traffic to a sampled address without loss (in both) flows.
    let second = scratch.file("regions2.csv", &matrix_csv("100%"));
    let lab_ref = &lab;
    let during = std::thread::scope(|s| {
        let traffic = s.spawn(move || probe_to(lab_ref, Ipv4Addr::new(198, 18, 2, 10), 20_000));
        std::thread::sleep(std::time::Duration::from_millis(200));
        let out = site.impair(lab_ref, &["update", SERVER_IF_ROUTER, "--matrix", &second]);
        stdout_ok(&out);
        traffic.join().unwrap()
    });
    assert_eq!(during.sent, 20_000);
    assert_eq!(
        during.lost, 0,
        "the update lost nothing unrelated: {during:?}"
    );
    let after = probe_to(&lab, lab.server_v4(), 500);
    assert_eq!(after.received, 0, "the new matrix is in force: {after:?}");
    let stats = site.stats(&lab);
    assert_eq!(stats["matrix_prefixes"], 1000, "{stats}");
    assert_eq!(stats["generation"], 2, "{stats}");

    let status = ctl.signal_and_wait(libc::SIGTERM);
    assert!(status.success(), "{status:?}");
    site.assert_restored(&lab, &before);
}

/// The router's interface toward the server, where the matrix is attached.
const SERVER_IF_ROUTER: &str = impair_tools::lab::ROUTER_EGRESS;
