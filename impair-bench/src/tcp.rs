//! The TCP arms: iperf3 (Debian's, a client no one here wrote) through a lab
//! with the kernel's default offloads (TSO/GSO/GRO on), one connection at
//! full speed, with the same interleaved rounds and per-round ratios as the
//! UDP arms. A [`Sample`] of these arms carries bytes/s in `sent_pps` and
//! `delivered_pps` (what the receiver got) and CPU ns per byte in
//! `cpu_ns_per_packet`: busy time of all CPUs over the run (/proc/stat, as
//! the UDP arms count it) divided by the bytes received.
#[allow(clippy::wildcard_imports)]
use crate::*;
use std::process::{Child, Command, Stdio};

/// The iperf3 port (the lab's namespaces are private, so any port is free).
const PORT: &str = "5201";

/// iperf3's server in the lab's server namespace, killed on drop.
pub(crate) struct Iperf3Server(Child);

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether iperf3 is installed (`cargo xtask setup` installs it).
pub(crate) fn have_iperf3() -> bool {
    Command::new("iperf3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The lab the TCP arms run through (the kernel's default offloads), or
/// `None` with `what` recorded as not run when iperf3 is missing (`why`
/// says where it would come from).
pub(crate) fn tcp_lab(
    not_run: &mut Vec<(String, String)>,
    what: &str,
    why: &str,
) -> Result<Option<Lab>> {
    if !have_iperf3() {
        not_run.push((what.to_owned(), why.to_owned()));
        return Ok(None);
    }
    Ok(Some(Lab::create_with(
        "benchtcp",
        LabOptions { offloads: true },
    )?))
}

pub(crate) fn iperf3_server(lab: &Lab) -> Result<Iperf3Server> {
    let addr = lab.server_v4().to_string();
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.server, "iperf3", "-s", "-p", PORT])
        .args(["-B", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s")?;
    let server = Iperf3Server(child);
    // An emulated guest starts programs slowly: wait until the port listens
    // (/proc/net/tcp of the server's namespace: local port in hex, state
    // 0A), at most 20 s.
    let port = format!(":{:04X} ", PORT.parse::<u16>().unwrap_or(5201));
    for _ in 0..200 {
        let tcp = lab
            .exec(&lab.server, &["cat", "/proc/net/tcp"])
            .unwrap_or_default();
        if tcp
            .lines()
            .any(|l| l.contains(&port) && l.split_whitespace().nth(3) == Some("0A"))
        {
            return Ok(server);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("iperf3 -s did not listen within 20 s")
}

/// One iperf3 run of `secs` seconds: (received bytes/s, CPU ns per byte).
pub(crate) fn iperf3_run(lab: &Lab, secs: u32) -> Result<(f64, f64)> {
    let addr = lab.server_v4().to_string();
    let t = secs.to_string();
    let j0 = busy_jiffies();
    // `timeout` inside the namespace: in the VM, busybox's `timeout` would
    // run busybox's own `ip` applet rather than iproute2's.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client,
            "timeout",
            "60",
            "iperf3",
            "-c",
        ])
        .args([&addr, "-p", PORT, "-t", &t, "-J"])
        .output()
        .context("running iperf3 -c")?;
    let j1 = busy_jiffies();
    if !out.status.success() {
        bail!(
            "iperf3 -c: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
    let recv = &v["end"]["sum_received"];
    let bytes = recv["bytes"]
        .as_f64()
        .context("iperf3: no end.sum_received.bytes")?;
    let seconds = recv["seconds"].as_f64().unwrap_or(f64::from(secs));
    let cpu_ns = j1.saturating_sub(j0) as f64 / clock_ticks() * 1e9;
    Ok((bytes / seconds.max(1e-3), cpu_ns / bytes.max(1.0)))
}

/// Interleaved TCP rounds: every arm once per round, in random order.
pub(crate) fn run_tcp_rounds(
    lab: &Lab,
    arms: &[Arm],
    rounds: usize,
    secs: u32,
    rng: &mut rand::rngs::StdRng,
) -> Result<Vec<Sample>> {
    let _server = iperf3_server(lab)?;
    // Warm-up: one unmeasured baseline (ARP, route caches, the server).
    let _ = iperf3_run(lab, 1)?;
    let mut samples = Vec::new();
    for round in 0..rounds {
        let mut order = arms.to_vec();
        order.shuffle(rng);
        for arm in order {
            let s = setup(lab, arm)?;
            let measured = iperf3_run(lab, secs);
            teardown(lab, s)?;
            let (bps, cpu) = measured?;
            eprintln!(
                "tcp round {round} {:<36} {:>8.0} Mbit/s {cpu:>6.3} CPU ns/byte",
                arm.name(),
                bps * 8.0 / 1e6
            );
            samples.push(Sample {
                arm,
                round,
                senders: 1,
                sent_pps: bps,
                delivered_pps: bps,
                cpu_ns_per_packet: cpu,
            });
        }
    }
    Ok(samples)
}
