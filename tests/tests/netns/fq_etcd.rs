//! examples/etcd-regions, run by the suite (the VM tier measures it as part
//! of `netns fq::`): a real three-node etcd cluster (Debian's etcd-server
//! 3.4) in three namespaces as three regions, each member's egress impaired
//! by its region's latency matrix (half of a published inter-region round
//! trip per destination). Writes and etcd's own client measure from each
//! region, and both must follow the emulated round trip to the quorum: with
//! three members the leader commits (and confirms a linearizable read) once
//! one other member has answered, so its nearest other member; a request
//! sent to a follower adds the follower's round trip to the leader, which
//! it forwards the request to and learns the outcome from.
//!
//! Two measurements, each timed inside its process: `etcdctl endpoint
//! health`'s `took` (etcd's own client: a linearizable read, one quorum
//! round), and writes (`/v3/kv/put` through the member's HTTP gateway, one
//! kept-alive connection, timed by the test): no request is faster than its
//! emulated round trips, and the fastest lies within [`FASTEST_ABOVE_MS`]
//! above them (the emulated guest's own work). Timing whole `etcdctl put`
//! runs does not work in the emulated guest: starting the client took 0.7
//! to 2.1 s there, its median varying by a second between regions, more
//! than the round trips measured.
//!
//! Without sch_fq (this project's host kernel) the example still runs: the
//! cluster comes up across the namespaces and replicates a write, and
//! attaching the matrices is refused clearly (impair refuses delay without
//! fq); a NOTE says the VM tier measures the rest.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Output},
    time::{Duration, Instant},
};

use impair::netns;
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
/// Timed requests per region, leader and kind.
const RUNS: usize = 7;
/// How far the fastest of a region's requests may lie above its emulated
/// round trips. In the emulated (TCG) guest on the project's busy 2-core
/// machine, etcd's own work is slow and unsteady: the same requests took
/// 26 to 646 ms (medians) on the unimpaired cluster, and with the matrices
/// the fastest lay 46 to 346 ms above the round trips, the medians up to
/// 890 ms. The medians are reported, not judged.
const FASTEST_ABOVE_MS: f64 = 400.0;

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

/// `took` of `RUNS` runs of `etcdctl endpoint health` in `region`
/// (a linearizable read, timed by etcdctl itself), ms, sorted.
fn health_took_ms(region: &str) -> Vec<f64> {
    let mut ms: Vec<f64> = (0..RUNS)
        .map(|_| {
            // etcdctl 3.4 prints the verdict on stderr.
            let out = etcdctl(region, &["endpoint", "health"]);
            let text = format!(
                "{}{}",
                ok("endpoint health", out.clone()),
                String::from_utf8_lossy(&out.stderr)
            );
            let took = text
                .split("took = ")
                .nth(1)
                .and_then(|t| t.split_whitespace().next())
                .unwrap_or_else(|| panic!("no 'took = ' in {text}"));
            go_duration_ms(took).unwrap_or_else(|| panic!("took {took}"))
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms
}

/// A Go duration as etcdctl prints it ("145.2ms", "1.2s", "950µs"), in ms.
fn go_duration_ms(s: &str) -> Option<f64> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (v, unit) = s.split_at(split);
    let v: f64 = v.parse().ok()?;
    Some(match unit {
        "ns" => v / 1e6,
        "µs" | "us" => v / 1e3,
        "ms" => v,
        "s" => v * 1e3,
        _ => return None,
    })
}

/// One HTTP/1.1 response from `s`: its status line and body.
fn http_response(s: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).expect("reading the gateway's response");
        assert!(n > 0, "the gateway closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let done = |buf: &[u8]| {
        if let Some(len) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            buf.len() >= head_end + len
        } else {
            buf.ends_with(b"0\r\n\r\n") // chunked
        }
    };
    while !done(&buf) {
        let n = s.read(&mut chunk).expect("reading the gateway's response");
        assert!(n > 0, "the gateway closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
    let status = head.lines().next().unwrap_or_default().to_string();
    (
        status,
        String::from_utf8_lossy(&buf[head_end..]).into_owned(),
    )
}

/// `RUNS` writes (`/v3/kv/put`, key "k") through `region`'s member's HTTP
/// gateway on one kept-alive connection, each timed, ms, sorted.
fn gateway_put_ms(region: &str) -> Vec<f64> {
    netns::run_in(&ns(region), || {
        let mut s = TcpStream::connect("127.0.0.1:2379").expect("connecting to the gateway");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        // {"key": "k", "value": "v"}, base64 as the gateway wants bytes.
        let body = r#"{"key":"aw==","value":"dg=="}"#;
        let req = format!(
            "POST /v3/kv/put HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut ms: Vec<f64> = (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                s.write_all(req.as_bytes()).unwrap();
                let (status, reply) = http_response(&mut s);
                let took = t.elapsed().as_secs_f64() * 1e3;
                assert!(
                    status.contains(" 200") && reply.contains("revision"),
                    "put through the gateway: {status} {reply}"
                );
                took
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        ms
    })
    .expect("entering the region's namespace")
}

fn median(sorted: &[f64]) -> f64 {
    sorted[sorted.len() / 2]
}

/// Per (leader, region, kind): with the leader moved to Tokyo, then to
/// N. Virginia, `RUNS` gateway writes and `RUNS` `etcdctl endpoint health`
/// runs from each region, ms, sorted.
fn measure() -> BTreeMap<(String, &'static str, &'static str), Vec<f64>> {
    let mut out = BTreeMap::new();
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
        for (region, _) in MATRICES {
            out.insert(
                (leader.clone(), region, "put (gateway)"),
                gateway_put_ms(region),
            );
            out.insert(
                (leader.clone(), region, "etcdctl endpoint health took"),
                health_took_ms(region),
            );
        }
    }
    out
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
    // The shipped matrices hold half of each round trip, to each other
    // region's /24 (198.18.INDEX.0/24), and nothing else.
    for (region, csv) in MATRICES {
        let m = impair::model::matrix::Matrix::parse_csv(region, csv).unwrap();
        assert_eq!(m.dests.len(), 2, "{region}");
        for d in &m.dests {
            let other = match d.prefix.to_string().as_str() {
                "198.18.1.0/24" => "us-east-1",
                "198.18.2.0/24" => "eu-west-1",
                "198.18.3.0/24" => "ap-northeast-1",
                p => panic!("{region}: unexpected prefix {p}"),
            };
            let half_ns = (rtt_ms(region, other) * 1e6 / 2.0).round() as u64;
            assert_eq!(d.delay_ns, Some(half_ns), "{region} -> {other}");
            assert!(d.jitter_ns.is_none() && d.loss.is_none() && d.rate_bps.is_none());
        }
    }
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

    let fq = Command::new("ip")
        .args(["netns", "exec", &ns("us-east-1")])
        .args(["tc", "qdisc", "add", "dev", "eth0", "root", "fq"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !fq {
        let out = ex.run("matrices");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("sch_fq") && err.contains("nothing was changed"),
            "without sch_fq attaching the matrices is refused for want of it: {err}"
        );
        note(
            "fq::etcd::etcd_write_latency_follows_the_quorum_round_trip: this kernel has no \
             sch_fq: the cluster ran and replicated unimpaired, impair refused the matrices' \
             delays; the VM tier (cargo xtask vm --kernel 6.12) measures the write latency",
        );
        return;
    }
    let del = ["tc", "qdisc", "del", "dev", "eth0", "root"];
    ok(
        "tc qdisc del",
        Command::new("ip")
            .args(["netns", "exec", &ns("us-east-1")])
            .args(del)
            .output()
            .unwrap(),
    );

    ok("run.sh matrices", ex.run("matrices"));
    let impaired = measure();
    let mut report = String::new();
    let mut failures = Vec::new();
    for ((leader, region, kind), ms) in &impaired {
        let q = quorum_rtt_ms(leader);
        // The leader: one quorum round trip. A follower: its round trip to
        // the leader on top.
        let floor = if region == leader {
            q
        } else {
            rtt_ms(region, leader) + q
        };
        let line = format!(
            "leader {leader} (quorum rtt {q} ms), {kind} from {region}: min {:.1} ms, median \
             {:.1} ms, max {:.1} ms; emulated round trips {floor:.1} ms, the fastest \
             {:+.1} ms over them",
            ms[0],
            median(ms),
            ms[ms.len() - 1],
            ms[0] - floor
        );
        println!("IMPAIR-ETCD {line}");
        report += &format!("  {line}\n");
        // None faster than its round trips; the fastest, the least
        // disturbed by the guest's stalls, within the slack above them.
        if ms[0] < floor || ms[0] > floor + FASTEST_ABOVE_MS {
            failures.push(line);
        }
    }
    assert!(
        failures.is_empty(),
        "etcd writes follow the emulated quorum round trip; out of bounds:\n{}\nall:\n{report}",
        failures.join("\n")
    );
}
