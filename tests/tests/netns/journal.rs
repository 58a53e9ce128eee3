//! The files impair keeps in `/run/impair` are named for their network
//! namespace by its inode number, which the kernel gives again to a later
//! namespace once the first is deleted. A controller killed in a namespace
//! that was then deleted (a test lab, a container) leaves its journals
//! behind; they must not act on the next namespace with that number
//! (impair-user/src/engine/journal.rs: the namespace's cookie in
//! `netns-INODE`). The deleted namespace is staged: a marker naming another
//! cookie, and a dead controller's offload journal that says it turned GRO
//! off on the server's `s0` (so restoring it would turn GRO on).
use std::path::Path;

use impair::netns;
use impair_tests::ns::impair_in;
use impair_tools::lab::{self, Lab};

const DIR: &str = "/run/impair";

/// (inode, cookie) of namespace `ns`.
fn identity(ns: &str) -> (u64, u64) {
    netns::run_in(ns, || {
        (
            impair::sys::netns_ino().unwrap(),
            impair::sys::netns_cookie().expect("SO_NETNS_COOKIE (Linux 5.14)"),
        )
    })
    .unwrap()
}

fn gro_on(lab: &Lab) -> bool {
    let k = lab
        .exec(&lab.server, &["ethtool", "-k", lab::SERVER_IF])
        .unwrap();
    k.lines()
        .any(|l| l.starts_with("generic-receive-offload: on"))
}

/// Stages a dead controller's journal (`gro IFINDEX`: it turned GRO off on
/// `s0`) with `marker` as the cookie recorded for the namespace's inode,
/// then runs `impair detach s0` (which removes what dead controllers left);
/// returns whether GRO is on afterwards and whether the journal is gone.
fn stage_and_detach(lab: &Lab, marker: u64) -> (bool, bool) {
    let (ino, _) = identity(&lab.server);
    let ifindex = netns::run_in(&lab.server, || {
        impair::sys::ifindex(lab::SERVER_IF).unwrap()
    })
    .unwrap();
    assert!(!gro_on(lab), "a veth's GRO is off by default");
    std::fs::create_dir_all(DIR).unwrap();
    std::fs::write(format!("{DIR}/netns-{ino}"), marker.to_string()).unwrap();
    // No process has this pid (above the kernel's pid_max), so it is dead.
    let journal = format!("{DIR}/offload-{ino}-{ifindex}-4194305-1");
    std::fs::write(&journal, format!("gro {ifindex}\n")).unwrap();
    let _ = impair_in(&lab.server, &["detach", lab::SERVER_IF]);
    (gro_on(lab), !Path::new(&journal).exists())
}

#[test]
fn a_deleted_namespaces_journal_does_not_act_on_the_next_one() {
    impair_tests::require_privileges();
    let lab = impair_tests::ns::lab("jrnreuse");
    let (ino, cookie) = identity(&lab.server);
    // A marker with another cookie: the namespace that had this inode is gone.
    let (gro, gone) = stage_and_detach(&lab, cookie.wrapping_add(1));
    assert!(gone, "the deleted namespace's journal is removed");
    assert!(!gro, "and not acted on: s0's GRO stays off");
    let marker = std::fs::read_to_string(format!("{DIR}/netns-{ino}")).unwrap();
    assert_eq!(
        marker.trim(),
        cookie.to_string(),
        "the marker is this namespace's"
    );
}

/// The control: the same journal, recorded for this very namespace, is a
/// dead controller's in it and is restored.
#[test]
fn this_namespaces_dead_journal_is_restored() {
    impair_tests::require_privileges();
    let lab = impair_tests::ns::lab("jrnown");
    let (_, cookie) = identity(&lab.server);
    let (gro, gone) = stage_and_detach(&lab, cookie);
    assert!(gone, "the journal is done with");
    assert!(gro, "the dead controller's change is undone: GRO back on");
}
