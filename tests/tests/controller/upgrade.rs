//! Issue 16's upgrades: a pinned instance records the map ABI version of the
//! impair that attached it (`Owner::abi_version`); a later impair detaches
//! the versions it knows exactly and refuses others in one line naming the
//! version to use, changing nothing.
//!
//! Two forms. Here, in every run of the controller tier: the owner record of
//! a pinned instance is rewritten to another version (a version ahead of
//! this build, or none at all as written before versions were recorded).
//! And the real thing, two builds: `cargo xtask test --tier netns` (and
//! `cargo xtask upgrade`, which runs only this module) builds a second
//! `impair` with `IMPAIR_ABI_VERSION` one ahead and runs
//! `two_builds_of_different_abi_versions` with `IMPAIR_NEXT_ABI_BIN` naming
//! it; run without xtask, that test skips with a NOTE.
use std::{path::Path, process::Output};

use aya::{
    maps::{Array, Map, MapData, MapInfo},
    programs::loaded_programs,
};
use impair_common::{map_names, Owner, ABI_VERSION};
use impair_tests::{
    impair_bin,
    kernel::fq_or_note,
    note,
    ns::{assert_restored, lab, probe, router_state, stdout_ok},
};

/// `BIN ARGS` in namespace `ns`.
fn run_in(bin: &Path, ns: &str, args: &[&str]) -> Output {
    std::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(bin)
        .args(args)
        .output()
        .expect("running impair")
}

/// The owner map of the instance attached with `--seed seed` (the seeds
/// below are this file's own: concurrent tests never use them).
fn owner_map(seed: u64) -> Array<MapData, Owner> {
    for info in loaded_programs().flatten() {
        if info.name_as_str() != Some("impair_egress") {
            continue;
        }
        for id in info.map_ids().ok().flatten().unwrap_or_default() {
            let is_owner = MapInfo::from_id(id)
                .ok()
                .is_some_and(|m| m.name_as_str() == Some(map_names::OWNER));
            if !is_owner {
                continue;
            }
            let map: Array<MapData, Owner> =
                Array::try_from(Map::Array(MapData::from_id(id).unwrap())).unwrap();
            let o = map.get(&0, 0).unwrap();
            if o.seed == seed && o.pid != 0 {
                return map;
            }
        }
    }
    panic!("no impair instance with seed {seed}");
}

/// Rewrites the map ABI version in the owner record of instance `seed`.
fn forge_version(seed: u64, version: u32) {
    let mut map = owner_map(seed);
    let mut o = map.get(&0, 0).unwrap();
    o.abi_version = version;
    map.set(0, o, 0).unwrap();
}

/// Asserts `out` is the one-line refusal of an instance of map ABI
/// `version` (exit 2).
fn assert_abi_refusal(what: &str, out: &Output, version: u32) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line: {err}");
    for needle in [
        format!("map ABI version {version}"),
        format!("use an impair of map ABI version {version}"),
        "nothing was changed".to_owned(),
    ] {
        assert!(err.contains(&needle), "{what}: no '{needle}' in: {err}");
    }
}

/// Pins `--loss 100%` with `bin` (a clsact qdisc and filter), plus
/// `--delay 5ms` (an fq root) where the kernel has sch_fq: a blackhole the
/// probe sees, and every kind of change detach must undo.
fn pin(bin: &Path, lab: &impair_tools::lab::Lab, seed: u64) {
    let seed = seed.to_string();
    let mut args = vec!["attach", "r1", "--pin", "--loss", "100%", "--seed", &seed];
    if fq_or_note(lab, "upgrade", "pinning loss alone (no fq root to restore)") {
        args.extend(["--delay", "5ms"]);
    }
    stdout_ok(&run_in(bin, &lab.router, &args));
    assert_eq!(
        probe(lab, false, 0, 200, 200).received,
        0,
        "pinned blackhole"
    );
}

#[test]
fn an_instance_of_a_newer_abi_version_is_refused_in_one_line_and_left_untouched() {
    let lab = lab("abinew");
    let before = router_state(&lab);
    let bin = impair_bin();
    pin(&bin, &lab, 1_616_001);
    let newer = ABI_VERSION + 1;
    forge_version(1_616_001, newer);
    // `impair status` names it (a note on stderr) without reading it.
    let status = run_in(&bin, &lab.router, &["status"]);
    let note = String::from_utf8_lossy(&status.stderr);
    assert!(
        note.contains(&format!("map ABI version {newer}")),
        "status names it: {note}"
    );
    let pinned = router_state(&lab);
    for args in [
        &["detach", "r1"][..],
        &["attach", "r1", "--loss", "1%"],
        &["update", "r1", "--loss", "1%"],
    ] {
        let out = run_in(&bin, &lab.router, args);
        assert_abi_refusal(&args.join(" "), &out, newer);
        assert_eq!(router_state(&lab), pinned, "{args:?} changed nothing");
    }
    assert_eq!(
        probe(&lab, false, 0, 200, 200).received,
        0,
        "still the pinned blackhole"
    );
    // Its own version (as the newer impair would) detaches it.
    forge_version(1_616_001, ABI_VERSION);
    let out = stdout_ok(&run_in(&bin, &lab.router, &["detach", "r1"]));
    assert!(out.contains("removed the pinned instance"), "{out}");
    assert_restored(&lab, &before);
    assert_eq!(probe(&lab, false, 0, 500, 200).lost, 0);
}

#[test]
fn an_instance_without_a_version_record_is_version_1_and_refused_naming_it() {
    let lab = lab("abinone");
    let before = router_state(&lab);
    let bin = impair_bin();
    pin(&bin, &lab, 1_616_002);
    // What an impair from before versions were recorded wrote: version 1,
    // whose maps this build cannot open (ABI_VERSION_OLDEST).
    forge_version(1_616_002, 0);
    let pinned = router_state(&lab);
    for args in [&["detach", "r1"][..], &["attach", "r1", "--loss", "1%"]] {
        let out = run_in(&bin, &lab.router, args);
        assert_abi_refusal(&args.join(" "), &out, 1);
        assert_eq!(router_state(&lab), pinned, "{args:?} changed nothing");
    }
    // Its own impair (here: the record put back) detaches it exactly.
    forge_version(1_616_002, ABI_VERSION);
    let out = stdout_ok(&run_in(&bin, &lab.router, &["detach", "r1"]));
    assert!(out.contains("removed the pinned instance"), "{out}");
    assert_restored(&lab, &before);
    assert_eq!(probe(&lab, false, 0, 500, 200).lost, 0);
}

/// `cargo xtask upgrade` sets this to a second build of `impair` whose map
/// ABI version is one ahead of this tree's.
const NEXT_BIN_ENV: &str = "IMPAIR_NEXT_ABI_BIN";

#[test]
fn two_builds_of_different_abi_versions() {
    let Some(next) = std::env::var_os(NEXT_BIN_ENV) else {
        note(format!(
            "{NEXT_BIN_ENV} is not set: the two-build upgrade test runs in `cargo xtask upgrade`"
        ));
        return;
    };
    let next = Path::new(&next).to_owned();
    assert!(
        next.is_file(),
        "{NEXT_BIN_ENV}={} is missing",
        next.display()
    );
    let old = impair_bin();
    let lab = lab("abi2b");
    let before = router_state(&lab);

    // The older build pins; the newer one sees it and detaches it exactly.
    pin(&old, &lab, 1_616_003);
    assert_eq!(owner_map(1_616_003).get(&0, 0).unwrap().abi(), ABI_VERSION);
    let status = stdout_ok(&run_in(&next, &lab.router, &["status"]));
    assert!(
        status.contains("(pinned)"),
        "the newer build lists it: {status}"
    );
    let out = stdout_ok(&run_in(&next, &lab.router, &["detach", "r1"]));
    assert!(out.contains("removed the pinned instance"), "{out}");
    assert_restored(&lab, &before);
    assert_eq!(probe(&lab, false, 0, 500, 200).lost, 0);

    // The newer build pins; the older one refuses, changing nothing.
    pin(&next, &lab, 1_616_004);
    let newer = owner_map(1_616_004).get(&0, 0).unwrap().abi();
    assert_eq!(newer, ABI_VERSION + 1, "the second build's version");
    // (`impair status` in the state is the older build's.)
    let pinned = router_state(&lab);
    for args in [&["detach", "r1"][..], &["attach", "r1", "--loss", "1%"]] {
        let out = run_in(&old, &lab.router, args);
        assert_abi_refusal(&args.join(" "), &out, newer);
        assert_eq!(router_state(&lab), pinned, "{args:?} changed nothing");
    }
    assert_eq!(probe(&lab, false, 0, 200, 200).received, 0, "still pinned");
    stdout_ok(&run_in(&next, &lab.router, &["detach", "r1"]));
    assert_restored(&lab, &before);
    assert_eq!(probe(&lab, false, 0, 500, 200).lost, 0);
}
