//! A two-way profile that names a series file per direction (issue 15):
//! one `impair attach s0 --profile FILE` gives what the host sends (the
//! uplink, tc egress) one loss series and what it receives (the downlink,
//! tc ingress) another, each file relative to the profile. Loss series act
//! at every hook without sch_fq, so this runs on the host; rate and delay
//! traces need fq (the VM tier's). A profile naming a missing or invalid
//! file is refused before anything is attached or updated.
use impair_tests::{
    ns::{assert_refused, impair_in, lab, stdout_ok, Controller, Site},
    stats::assert_inside_suite,
    Scratch,
};
use impair_tools::lab::SERVER_IF;

use super::two_way::{link_stats, probe_downlink, probe_uplink};

/// Each side's loss comes from its own series alone (no `loss` key): the
/// uplink 30% (a 500 ms series, then held), the downlink 5% (a 2 s series,
/// looped). Constant values, so what the receivers measure does not depend
/// on how long attaching takes (seconds on a loaded machine, more under
/// emulation); `netns series::` checks a series' steps over time.
const LINK: &str = "summary = \"a traced link\"\nsource = \"test\"\n\
     [[uplink.rule]]\nloss-trace = \"series/up.csv\"\ntrace-end = \"hold\"\n\
     [[downlink.rule]]\nloss-trace = \"series/down.csv\"\n";
const UP: &str = "time,value\n0,30%\n500,30%\n";
const DOWN: &str = "time,value\n0,5%\n2000,5%\n";

/// Writes the link profile and its series (in a subdirectory) to `dir`;
/// the profile's path.
fn write_link(dir: &Scratch) -> String {
    std::fs::create_dir_all(dir.path().join("series")).unwrap();
    dir.file("series/up.csv", UP);
    dir.file("series/down.csv", DOWN);
    dir.file("link.toml", LINK)
}

/// A loss series' value in force, as `impair stats --json` reports it for
/// one instance; asserts the instance has exactly one series, a loss series.
fn loss_in_force(instance: &serde_json::Value) -> (f64, &serde_json::Value) {
    let series = instance["series"]
        .as_array()
        .unwrap_or_else(|| panic!("no series: {instance}"));
    assert_eq!(series.len(), 1, "{instance}");
    assert_eq!(series[0]["kind"], "loss", "{instance}");
    (series[0]["loss"].as_f64().unwrap(), &series[0])
}

#[test]
fn a_two_way_profile_gives_each_direction_its_own_loss_series() {
    let lab = lab("2wayser");
    let dir = Scratch::new("2wayser");
    let path = write_link(&dir);
    let site = Site::ServerIngress;
    let before = site.state(&lab);

    // `--proto udp` on both sides: only the probes count (ARP and neighbour
    // discovery are not UDP), so the engine's drops equal the receivers' losses.
    let ctl = Controller::start_in(
        &lab.server,
        SERVER_IF,
        &["--profile", &path, "--proto", "udp", "--seed", "5"],
    );
    assert!(
        ctl.first_line.contains("uplink (sent) at tc-egress")
            && ctl.first_line.contains("downlink (received) at tc-ingress"),
        "{}",
        ctl.first_line
    );

    // Each instance reports its own series.
    let stats = link_stats(&lab);
    assert_eq!(stats.len(), 2, "{stats:?}");
    assert_eq!(stats[0]["direction"], "egress");
    assert_eq!(stats[1]["direction"], "ingress");
    let (up, at) = loss_in_force(&stats[0]);
    assert!((up - 0.30).abs() < 1e-6, "the uplink's series: {at}");
    assert_eq!(at["looped"], false, "trace-end = \"hold\": {at}");
    assert_eq!(
        at["length_ms"], 501,
        "a held series: to its last point: {at}"
    );
    let (down, at) = loss_in_force(&stats[1]);
    assert!((down - 0.05).abs() < 1e-6, "the downlink's series: {at}");
    assert_eq!(at["looped"], true, "{at}");
    assert_eq!(at["length_ms"], 2_000, "a looped series: its period: {at}");

    // Each direction loses what its own series says.
    let u = probe_uplink(&lab, 10_000);
    assert_inside_suite(0.30, u.lost, u.sent);
    let d = probe_downlink(&lab, 10_000);
    assert_inside_suite(0.05, d.lost, d.sent);

    let stats = link_stats(&lab);
    let (up, at) = loss_in_force(&stats[0]);
    assert!((up - 0.30).abs() < 1e-6, "{at}");
    // Past its 500 ms (two probes of 0.5 s later) the uplink's series holds.
    assert_eq!(at["held"], true, "{at}");
    let (down, at) = loss_in_force(&stats[1]);
    assert!((down - 0.05).abs() < 1e-6, "{at}");
    assert_eq!(at["held"], false, "a looped series never holds: {at}");
    // The engine's drops are the receivers' losses, each on its own side.
    assert_eq!(stats[0]["rules"][0]["dropped_loss"], u.lost);
    assert_eq!(stats[1]["rules"][0]["dropped_loss"], d.lost);

    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    site.assert_restored(&lab, &before);
}

/// A missing or invalid series file: exit code 2, one line naming the
/// profile's line and key, the file and why; nothing attached, and a
/// running link's update refused with both sides left as they were.
#[test]
fn a_profile_whose_series_file_is_missing_is_refused_and_changes_nothing() {
    let lab = lab("2wayserbad");
    let dir = Scratch::new("2wayserbad");
    let good = write_link(&dir);
    let missing = dir.file(
        "missing.toml",
        "[[uplink.rule]]\nloss-trace = \"series/up.csv\"\n\
         [[downlink.rule]]\nloss-trace = \"series/gone.csv\"\n",
    );
    dir.file("series/bad.csv", "time,value\n0,5%\n100,lots\n");
    let invalid = dir.file(
        "invalid.toml",
        "[[uplink.rule]]\nloss = \"1%\"\n[[downlink.rule]]\nloss-trace = \"series/bad.csv\"\n",
    );
    let gone = dir.path().join("series/gone.csv").display().to_string();
    let bad = dir.path().join("series/bad.csv").display().to_string();
    let site = Site::ServerIngress;
    let before = site.state(&lab);

    let missing_at = format!("{missing}:4: loss-trace: {gone}: cannot read the series: ");
    let invalid_at = format!("{invalid}:4: loss-trace: {bad}:3: ");
    let cases: [(&str, &[&str]); 2] = [
        (&missing, &[&missing_at, "No such file"]),
        (&invalid, &[&invalid_at, "lots"]),
    ];
    for (profile, needles) in cases {
        let args = ["attach", SERVER_IF, "--profile", profile];
        let err = assert_refused(
            &format!("{args:?}"),
            &impair_in(&lab.server, &args),
            needles,
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert_eq!(site.state(&lab), before, "a refused attach changes nothing");
    }

    // A running link keeps both sides when an update names a missing file.
    let ctl = Controller::start_in(&lab.server, SERVER_IF, &["--profile", &good]);
    let running = link_stats(&lab);
    let args = ["update", SERVER_IF, "--profile", &missing];
    let err = assert_refused(
        &format!("{args:?}"),
        &impair_in(&lab.server, &args),
        &[&missing_at],
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let after = link_stats(&lab);
    for (a, b) in running.iter().zip(&after) {
        assert_eq!(a["generation"], 1, "{a}");
        assert_eq!(b["generation"], 1, "the update wrote nothing: {b}");
        assert_eq!(
            a["series"][0]["length_ms"], b["series"][0]["length_ms"],
            "{b}"
        );
    }
    stdout_ok(&impair_in(&lab.server, &["detach", SERVER_IF]));
    assert!(ctl.wait().success());
    site.assert_restored(&lab, &before);
}
