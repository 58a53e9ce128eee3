//! A two-way profile naming a rate trace per direction (issue 15; the VM
//! tier: `controller fq::` selects this too, as `two_way_traces_fq::`). On
//! the server's `s0`, one `impair attach --profile FILE` gives what the host
//! sends one trace and what it receives another (through impair's ifb,
//! Linux 6.4+). Each instance shows its own trace in `impair stats --json`,
//! and each trace carries exactly its direction's datagrams at its own pace:
//! what it delivered is what that direction's receiver got, to the packet,
//! its queue drops are the rest, and it delivered no more than its capacity
//! over the time the datagrams took. Without sch_fq the attach is refused
//! (one line, exit code 2, nothing changed).
use std::time::Duration;

use impair::netns;
use impair_tests::{
    kernel::fq_or_note,
    note,
    ns::{assert_refused, impair_in, lab, stats_json_in, Controller, Site},
    Scratch,
};
use impair_tools::{
    lab::{Lab, SERVER_IF},
    probe::{run_pair, ProbeConfig, ProbeReport},
};

/// The payload of each datagram, and its bytes on the wire as impair counts
/// them (Ethernet 14 + IPv4 20 + UDP 8).
const PAYLOAD: usize = 1_000;
const FRAME: u64 = PAYLOAD as u64 + 8 + 20 + 14;
/// Datagrams per direction: far more than either trace carries in a
/// second (the queue limit).
const COUNT: u64 = 2_000;

/// `COUNT` datagrams server → client (`uplink`: what the host sends) or
/// client → server, at up to 20,000 a second, waiting 3 s for the queue.
fn flood(lab: &Lab, uplink: bool) -> ProbeReport {
    let (from, to, src, dst) = if uplink {
        (&lab.server, &lab.client, lab.server_v4(), lab.client_v4())
    } else {
        (&lab.client, &lab.server, lab.client_v4(), lab.server_v4())
    };
    let rx = netns::run_in(to, move || {
        std::net::UdpSocket::bind((std::net::IpAddr::from(dst), 0))
    })
    .unwrap()
    .unwrap();
    let tx = netns::run_in(from, move || {
        std::net::UdpSocket::bind((std::net::IpAddr::from(src), 0))
    })
    .unwrap()
    .unwrap();
    let addr = rx.local_addr().unwrap();
    let cfg = ProbeConfig {
        count: COUNT,
        rate_pps: 20_000,
        payload_len: PAYLOAD,
        linger: Duration::from_secs(3),
        ..Default::default()
    };
    run_pair(tx, rx, addr, &cfg).unwrap()
}

#[test]
fn a_two_way_profile_replays_a_rate_trace_each_way() {
    let test = "two_way_traces_fq::a_two_way_profile_replays_a_rate_trace_each_way";
    let lab = lab("2waytrfq");
    let dir = Scratch::new("2waytrfq");
    std::fs::create_dir_all(dir.path().join("traces")).unwrap();
    // Up: one opportunity every 10 ms (1.2 Mbit/s: 144 datagrams a second),
    // a 250 ms period. Down: one every 20 ms (0.6 Mbit/s), a 500 ms period.
    // 25 opportunities each. An emulated guest's sender on a loaded host
    // sent 4,000 datagrams through a 3 Mbit/s trace (360 a second) without
    // one queue drop, so no faster than that: these traces are well below.
    let up: String = (1..=25).map(|k| format!("{}\n", 10 * k)).collect();
    let down: String = (1..=25).map(|k| format!("{}\n", 20 * k)).collect();
    dir.file("traces/up.trace", &up);
    dir.file("traces/down.trace", &down);
    let profile = dir.file(
        "link.toml",
        "[[uplink.rule]]\nrate-trace = \"traces/up.trace\"\n\
         [[downlink.rule]]\nrate-trace = \"traces/down.trace\"\n",
    );
    let site = Site::ServerIngress;
    let before = site.state(&lab);
    // UDP only, both sides: each trace carries its direction's datagrams alone.
    let args = ["--profile", profile.as_str(), "--proto", "udp"];
    if !fq_or_note(
        &lab,
        test,
        "checking the refusal only; the VM tier runs the traces",
    ) {
        let out = impair_in(&lab.server, &[&["attach", SERVER_IF][..], &args].concat());
        let err = assert_refused("per-direction rate traces without fq", &out, &["fq"]);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert_eq!(site.state(&lab), before, "a refusal changes nothing");
        return;
    }
    let release = impair::engine::ifb::kernel_release();
    if !impair::engine::ifb::redirects_to_ifb(&release) {
        let out = impair_in(&lab.server, &[&["attach", SERVER_IF][..], &args].concat());
        assert_refused("a downlink rate trace before 6.4", &out, &["6.4"]);
        assert_eq!(site.state(&lab), before, "a refusal changes nothing");
        note(format!(
            "{test}: Linux {release} cannot shape received traffic (ifb redirect needs 6.4+): \
             checked the refusal only"
        ));
        return;
    }
    let ctl = Controller::start_in(&lab.server, SERVER_IF, &args);
    let stats = || -> Vec<serde_json::Value> {
        let v = stats_json_in(&lab.server, SERVER_IF, &[]);
        v.as_array()
            .unwrap_or_else(|| panic!("two instances: {v}"))
            .clone()
    };
    let s = stats();
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(s[0]["direction"], "egress", "{s:?}");
    assert_eq!(s[1]["direction"], "ingress", "{s:?}");
    // Each instance its own trace.
    assert_eq!(s[0]["rate_trace"]["period_ms"], 250, "{s:?}");
    assert_eq!(s[1]["rate_trace"]["period_ms"], 500, "{s:?}");
    for i in &s {
        assert_eq!(i["rate_trace"]["opportunities"], 25, "{i}");
    }

    let u = flood(&lab, true);
    let d = flood(&lab, false);
    let s = stats();
    let n = |t: &serde_json::Value, k: &str| t[k].as_u64().unwrap_or_else(|| panic!("{k}: {t}"));
    // (name, instance, report, ms between the trace's opportunities)
    for (what, inst, r, every_ms) in [("uplink", &s[0], &u, 10), ("downlink", &s[1], &d, 20)] {
        let t = &inst["rate_trace"];
        let (offered, delivered) = (n(t, "offered_bytes"), n(t, "delivered_bytes"));
        assert!(delivered <= offered, "{what}: {t}");
        assert!(r.received > 0, "{what}: {r:?}");
        // The trace carried exactly its direction's datagrams: what it
        // delivered is what the receiver got; the rest its queue dropped.
        assert_eq!(delivered % FRAME, 0, "{what}: whole datagrams: {t}");
        assert_eq!(delivered / FRAME, r.received, "{what}: {r:?} {t}");
        assert_eq!(
            n(t, "dropped_queue") + r.received,
            r.sent,
            "{what}: {r:?} {t}"
        );
        // At the trace's pace: every datagram left within the 1 s queue
        // limit of its arrival, so all left between the first send and 1 s
        // after the last (plus 0.5 s for the emulated guest's stalls), and
        // the trace offers one opportunity each `every_ms` in that span
        // (without the trace, 2,000 datagrams leave in a tenth of a second).
        let span_ms = r.send_duration_ns / 1_000_000 + 1_500;
        let capacity = 1_500 * (span_ms / every_ms + 1);
        eprintln!(
            "{what}: sent {}, received {}, queue drops {}, delivered {delivered} bytes of {capacity} \
             offered in {span_ms} ms",
            r.sent,
            r.received,
            n(t, "dropped_queue")
        );
        assert!(
            delivered <= capacity,
            "{what}: {delivered} bytes delivered, the trace offers {capacity} in {span_ms} ms: {r:?} {t}"
        );
    }
    // Both directions arrive faster than their trace carries them: the
    // forwarded downlink, and the uplink the host sends itself (a held
    // packet leaves as an unowned clone, so the sender is not slowed by its
    // socket's buffer), so each trace's queue limit drops the rest.
    for i in &s {
        assert!(n(&i["rate_trace"], "dropped_queue") > 0, "{i}");
    }
    // The uplink's trace offers twice the downlink's capacity per second;
    // each offered what its own trace holds over its instance's lifetime,
    // so the uplink's offer is the larger (they began within a second).
    assert!(
        n(&s[0]["rate_trace"], "offered_bytes") > n(&s[1]["rate_trace"], "offered_bytes"),
        "{s:?}"
    );
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    site.assert_restored(&lab, &before);
}
