//! examples/etcd-regions, run by the suite (the VM tier measures it as part
//! of `netns fq::`): a real three-node etcd cluster (Debian's etcd-server
//! 3.4) in three namespaces as three regions, each member's egress impaired
//! by its region's latency matrix (half of a published inter-region round
//! trip per destination). etcd's own client, `etcdctl put`, timed from each
//! region, measures write latency, which must follow the emulated round trip
//! to the quorum: with three members a write commits once the leader has
//! one other member's acknowledgement, so the leader's nearest other member
//! (a write sent to a follower adds the follower's round trip to the
//! leader, which it forwards the write to and learns the commit from).
//!
//! Each `etcdctl` run also pays for starting the client and connecting to
//! its local member; a serializable `etcdctl get` (answered by the local
//! member alone, no quorum) from the same region measures that share, and
//! the write's share is the difference of the two medians.
//!
//! Without sch_fq (this project's host kernel) the example still runs: the
//! cluster comes up across the namespaces and replicates a write, and
//! attaching the matrices is refused clearly (impair refuses delay without
//! fq); a NOTE says the VM tier measures the rest.
use std::{
    collections::BTreeMap,
    process::{Command, Output},
    time::Instant,
};

use impair_tests::{impair_bin, note, Scratch};

const SCRIPT: &str = include_str!("../../../examples/etcd-regions/run.sh");
const MATRICES: [(&str, &str); 3] = [
    (
        "us-east-1",
        include_str!("../../../examples/etcd-regions/us-east-1.csv"),
    ),
    (
        "eu-west-1",
        include_str!("../../../examples/etcd-regions/eu-west-1.csv"),
    ),
    (
        "ap-northeast-1",
        include_str!("../../../examples/etcd-regions/ap-northeast-1.csv"),
    ),
];
/// The emulated round trips (ms): twice the matrices' one-way delays.
const RTT_MS: [(&str, &str, f64); 3] = [
    ("us-east-1", "eu-west-1", 80.5),
    ("us-east-1", "ap-northeast-1", 145.3),
    ("eu-west-1", "ap-northeast-1", 212.4),
];
const TAG: &str = "etcdt";
/// Timed runs per region and kind.
const RUNS: usize = 7;
/// What an emulated (TCG) guest adds to a median write over the quorum's
/// round trip: the leader's disk write and its apply, scheduling of three
/// etcd processes, on top of noise in the client's start that the
/// serializable read does not cancel exactly.
const SLACK_MS: f64 = 60.0;

fn rtt_ms(a: &str, b: &str) -> f64 {
    RTT_MS
        .iter()
        .find(|(x, y, _)| (*x == a && *y == b) || (*x == b && *y == a))
        .map(|(_, _, ms)| *ms)
        .unwrap()
}

/// The leader's round trip to its quorum: its nearest other member.
fn quorum_rtt_ms(leader: &str) -> f64 {
    MATRICES
        .iter()
        .map(|(r, _)| *r)
        .filter(|r| *r != leader)
        .map(|r| rtt_ms(leader, r))
        .fold(f64::INFINITY, f64::min)
}

fn ns(region: &str) -> String {
    format!("{TAG}-{region}")
}

struct Example {
    scratch: Scratch,
}

impl Example {
    fn write() -> Example {
        let scratch = Scratch::new("etcd-regions");
        scratch.file("run.sh", SCRIPT);
        for (region, csv) in MATRICES {
            scratch.file(&format!("{region}.csv"), csv);
        }
        Example { scratch }
    }

    fn run(&self, verb: &str) -> Output {
        Command::new("sh")
            .arg(self.scratch.path().join("run.sh"))
            .arg(verb)
            .env("IMPAIR", impair_bin())
            .env("ETCD_REGIONS_TAG", TAG)
            .env("ETCD_REGIONS_DIR", self.scratch.path().join("state"))
            .env("ETCD_REGIONS_WAIT_S", "120")
            .output()
            .expect("running examples/etcd-regions/run.sh")
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.run("down");
    }
}

/// `etcdctl ARGS` against the local member of `region`.
fn etcdctl(region: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &ns(region), "etcdctl"])
        .args([
            "--endpoints",
            "http://127.0.0.1:2379",
            "--command-timeout",
            "20s",
        ])
        .args(args)
        .output()
        .expect("running etcdctl")
}

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Member name → id, and the current leader's name.
fn members(region: &str) -> (BTreeMap<String, u64>, String) {
    let text = ok(
        "endpoint status",
        etcdctl(region, &["endpoint", "status", "--cluster", "-w", "json"]),
    );
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut ids = BTreeMap::new();
    let mut leader_id = 0;
    for e in status.as_array().unwrap() {
        let ep = e["Endpoint"].as_str().unwrap();
        let region = match ep {
            e if e.contains("198.18.1.") => "us-east-1",
            e if e.contains("198.18.2.") => "eu-west-1",
            _ => "ap-northeast-1",
        };
        ids.insert(
            region.to_string(),
            e["Status"]["header"]["member_id"].as_u64().unwrap(),
        );
        leader_id = e["Status"]["leader"].as_u64().unwrap();
    }
    let leader = ids
        .iter()
        .find(|(_, id)| **id == leader_id)
        .map(|(r, _)| r.clone())
        .expect("a leader");
    (ids, leader)
}

/// Milliseconds each of `RUNS` runs of `etcdctl ARGS` took from `region`.
fn timed(region: &str, args: &[&str]) -> Vec<f64> {
    let mut ms: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            ok(
                &format!("etcdctl {args:?} in {region}"),
                etcdctl(region, args),
            );
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms
}

fn median(sorted: &[f64]) -> f64 {
    sorted[sorted.len() / 2]
}

#[test]
fn etcd_write_latency_follows_the_quorum_round_trip() {
    let which = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        which("etcd") && which("etcdctl"),
        "etcd and etcdctl are missing: Debian packages etcd-server and etcd-client \
         (`cargo xtask setup` installs them)"
    );
    let ex = Example::write();
    let _ = ex.run("down"); // a previous run's leftovers
    ok("run.sh cluster", ex.run("cluster"));
    // The cluster replicates: a write in one region, a linearizable read in
    // another.
    ok("put", etcdctl("us-east-1", &["put", "hello", "regions"]));
    let got = ok(
        "get",
        etcdctl("ap-northeast-1", &["get", "hello", "--print-value-only"]),
    );
    assert_eq!(got.trim(), "regions");

    let out = ex.run("matrices");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("sch_fq") && err.contains("nothing was changed"),
            "attaching the matrices fails only for want of sch_fq: {err}"
        );
        note(
            "fq::etcd::etcd_write_latency_follows_the_quorum_round_trip: this kernel has no \
             sch_fq: the cluster ran and replicated unimpaired, impair refused the matrices' \
             delays; the VM tier (cargo xtask vm --kernel 6.12) measures the write latency",
        );
        return;
    }

    // The client's own share: serializable reads, answered locally.
    let regions: Vec<&str> = MATRICES.iter().map(|(r, _)| *r).collect();
    let mut local = BTreeMap::new();
    for r in &regions {
        local.insert(*r, median(&timed(r, &["get", "hello", "--consistency=s"])));
    }
    let mut report = String::new();
    let mut failures = Vec::new();
    // Tokyo's nearest member is 145.3 ms away, N. Virginia's 80.5 ms.
    for want_leader in ["ap-northeast-1", "us-east-1"] {
        let (ids, leader) = members("us-east-1");
        if leader != want_leader {
            let id = format!("{:x}", ids[want_leader]);
            let all = "http://198.18.1.10:2379,http://198.18.2.10:2379,http://198.18.3.10:2379";
            ok(
                "move-leader",
                Command::new("ip")
                    .args(["netns", "exec", &ns("us-east-1"), "etcdctl"])
                    .args(["--endpoints", all, "--command-timeout", "30s"])
                    .args(["move-leader", &id])
                    .output()
                    .unwrap(),
            );
        }
        let (_, leader) = members("us-east-1");
        assert_eq!(leader, want_leader);
        let q = quorum_rtt_ms(&leader);
        for r in &regions {
            let puts = timed(r, &["put", "k", "v"]);
            let write = median(&puts) - local[r];
            // The leader commits once its nearest member has acknowledged
            // (one quorum round trip). A follower sends the write to the
            // leader and learns of its commit from it: their round trip
            // on top.
            let floor = if *r == leader {
                q
            } else {
                rtt_ms(r, &leader) + q
            };
            let ceiling = floor + SLACK_MS;
            let line = format!(
                "leader {leader} (quorum rtt {q} ms), put from {r}: min {:.1} ms, median {:.1} ms, \
                 local share {:.1} ms, write {write:.1} ms; bounds [{floor:.1}, {ceiling:.1}]",
                puts[0],
                median(&puts),
                local[r]
            );
            println!("IMPAIR-ETCD {line}");
            report += &format!("  {line}\n");
            // No write can be faster than its round trips: the fastest run
            // as a whole; the median's write share within the bounds.
            if puts[0] < floor || write < floor - 5.0 || write > ceiling {
                failures.push(line);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "etcd writes follow the emulated quorum round trip; out of bounds:\n{}\nall:\n{report}",
        failures.join("\n")
    );
}
