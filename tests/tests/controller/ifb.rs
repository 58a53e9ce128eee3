//! Live updates and detach of an ingress instance that holds received
//! traffic through its ifb (`engine/ifb.rs`), from other processes; and an
//! ingress instance attached without an ifb refusing an update that would
//! need one. Duplication needs no fq, so this runs on every kernel.
use impair_tests::ns::{assert_refused, lab, probe, stdout_ok, Site};

const SITE: Site = Site::ServerIngress;

/// Whether this kernel takes received traffic through an ifb (6.4+); the
/// netns tier checks the refusal where it does not.
fn ifb_or_note(test: &str) -> bool {
    let release = impair::engine::ifb::kernel_release();
    let ok = impair::engine::ifb::redirects_to_ifb(&release);
    if !ok {
        impair_tests::note(format!(
            "{test}: Linux {release} cannot bpf_redirect to an ifb (6.4+); netns ifb:: checks the refusal"
        ));
    }
    ok
}

/// `impair update` from another process rewrites the rules on the ifb
/// (an MTU blackhole for the probe's 228-byte packets, then 0% loss, which
/// needs no ifb but runs on it all the same); `impair detach` then removes
/// the instance, its ifb included.
#[test]
fn update_and_detach_of_an_ifb_instance_from_another_process() {
    if !ifb_or_note("ifb::update_and_detach_of_an_ifb_instance_from_another_process") {
        return;
    }
    let lab = lab("cifbupd");
    let before = SITE.state(&lab);
    let ctl = SITE.attach(&lab, &["--duplicate", "100%"]);
    let r = probe(&lab, false, 0, 300, 200);
    assert_eq!((r.received, r.duplicated), (300, 300), "{r:?}");
    let upd = |args: &[&str]| {
        let all = [
            &["update", "s0", "--direction", "ingress", "--replace"][..],
            args,
        ]
        .concat();
        stdout_ok(&SITE.impair(&lab, &all));
    };
    upd(&["--mtu", "100", "--duplicate", "1%"]);
    assert_eq!(probe(&lab, false, 0, 300, 200).received, 0, "MTU blackhole");
    upd(&["--loss", "0%"]);
    let r = probe(&lab, false, 0, 300, 200);
    assert_eq!((r.lost, r.duplicated), (0, 0), "{r:?}");
    let stats = SITE.stats(&lab);
    assert_eq!(stats["generation"], 3, "{stats}");
    assert!(stats["owner"]["ifb"].is_string(), "the ifb stays: {stats}");
    stdout_ok(&SITE.impair(&lab, &["detach", "s0", "--direction", "ingress"]));
    let _ = ctl.wait();
    SITE.assert_restored(&lab, &before);
}

/// `state` without the "(3s ago)" of `impair status`, which moves on.
fn without_age(state: &str) -> String {
    state
        .lines()
        .map(|l| match (l.find(" ("), l.find(" ago)")) {
            (Some(a), Some(b)) if a < b => format!("{}{}", &l[..a], &l[b + 5..]),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// An ingress instance attached without an ifb (its rules held nothing)
/// refuses an update that would hold packets: one line, exit 2, no change.
#[test]
fn update_of_a_plain_ingress_instance_to_duplication_is_refused() {
    let lab = lab("cifbref");
    let before = SITE.state(&lab);
    let ctl = SITE.attach(&lab, &["--loss", "1%"]);
    let during = SITE.state(&lab);
    let out = SITE.impair(
        &lab,
        &[
            "update",
            "s0",
            "--direction",
            "ingress",
            "--duplicate",
            "5%",
        ],
    );
    assert_refused("update --duplicate", &out, &["--duplicate"]);
    assert_eq!(
        without_age(&SITE.state(&lab)),
        without_age(&during),
        "a refused update changes nothing"
    );
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    SITE.assert_restored(&lab, &before);
}
