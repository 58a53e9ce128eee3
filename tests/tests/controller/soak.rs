//! Issue 16's soak: many attach/update/detach cycles of the real `impair`
//! binary (tcx and netlink clsact, egress on the router's `r1` and ingress on
//! the server's `s0`, with and without a rule that needs sch_fq where the
//! kernel has it) while unrelated traffic flows client → server and another
//! thread runs `impair stats --json` all the time. Afterwards nothing is
//! left: no BPF program, map or link of any cycle, no qdisc or filter (the
//! interfaces' state equal), no extra device or namespace, and no unrelated
//! packet lost. A second test samples one long-running controller's RSS
//! across many `impair update`s.
//!
//! `IMPAIR_SOAK_CYCLES` (default [`DEFAULT_CYCLES`]) and
//! `IMPAIR_SOAK_UPDATES` (default [`DEFAULT_UPDATES`]) size them: the
//! defaults are CI's quick form, `cargo xtask soak` the full one (10,000).
use std::{
    net::UdpSocket,
    sync::{
        atomic::{AtomicBool, AtomicU8, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use impair_tests::{
    kernel::{has_qdisc, has_tcx},
    note,
    ns::{impair_in, lab, socket_pair, stdout_ok, Controller, Site},
};
use impair_tools::lab::Lab;

/// Cycles of the quick (CI) form: well under a minute on the host tier.
const DEFAULT_CYCLES: usize = 40;
/// Updates of the quick form of the memory test.
const DEFAULT_UPDATES: usize = 300;
/// The only port the soak's rules match; the unrelated traffic goes to
/// [`TRAFFIC_PORT`], which no rule matches, so every packet must arrive.
const RULE_PORT: &str = "5001";
const TRAFFIC_PORT: u16 = 5002;
/// How often the unrelated traffic sends a datagram.
const TRAFFIC_GAP: Duration = Duration::from_millis(2);

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the impair side was doing when an unrelated packet was sent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Phase {
    /// Nothing attached (between cycles).
    Idle = 0,
    /// A tcx attach or detach in progress.
    TcxChange = 1,
    /// A netlink (clsact) attach or detach at the router's egress in
    /// progress: the kernel adds or removes the clsact qdisc of `r1`.
    NetlinkEgressChange = 2,
    /// Attached, updates going on.
    Attached = 3,
    /// A netlink (clsact) attach or detach at the server's ingress in
    /// progress (the clsact qdisc of `s0`).
    NetlinkIngressChange = 4,
    /// An attach or detach that adds or removes impair's fq root qdisc at the
    /// router's egress (a delay): the kernel grafts the root qdisc, and
    /// packets in flight at that instant can be dropped, as with `tc qdisc
    /// replace root fq` by hand.
    RootQdiscChange = 5,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::TcxChange,
            2 => Phase::NetlinkEgressChange,
            3 => Phase::Attached,
            4 => Phase::NetlinkIngressChange,
            5 => Phase::RootQdiscChange,
            _ => Phase::Idle,
        }
    }
}

/// One kind of cycle.
#[derive(Clone, Copy, Debug)]
struct Variant {
    mode: &'static str,
    site: Site,
    fq: bool,
    /// An ingress rule that holds or copies packets (`--duplicate`, plus a
    /// delay where sch_fq exists): the instance creates its own ifb device,
    /// which must be gone after the cycle.
    ifb: bool,
}

impl Variant {
    fn change_phase(self) -> Phase {
        if self.fq && self.site == Site::RouterEgress {
            return Phase::RootQdiscChange;
        }
        match (self.mode, self.site) {
            ("tcx", _) => Phase::TcxChange,
            (_, Site::RouterEgress) => Phase::NetlinkEgressChange,
            (_, Site::ServerIngress) => Phase::NetlinkIngressChange,
        }
    }

    /// The rule of the attach (`gen` 0: it matches only [`RULE_PORT`]) and
    /// of each update (which keeps the match); with `fq` it delays (which
    /// needs sch_fq), else drops.
    /// A loss rule at egress decides per packet: its instance also has a
    /// segmenter, with its own program (impair-user/src/engine/segmenter.rs).
    fn has_segmenter(self) -> bool {
        self.site == Site::RouterEgress && !self.fq && !self.ifb
    }

    fn rule(self, gen: usize) -> Vec<String> {
        let mut v = Vec::new();
        if gen == 0 {
            v.extend(["--dport".to_owned(), RULE_PORT.to_owned()]);
        }
        if self.ifb {
            v.extend(["--duplicate".to_owned(), format!("{}%", 1 + gen % 10)]);
        }
        if self.fq {
            v.extend(["--delay".to_owned(), format!("{}ms", 5 + gen % 20)]);
        } else if !self.ifb {
            v.extend(["--loss".to_owned(), format!("{}%", 50 + gen % 50)]);
        }
        v
    }
}

/// The unrelated traffic: sequence-numbered datagrams client → server on
/// [`TRAFFIC_PORT`], each tagged with the phase it was sent in.
struct Traffic {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicU8>,
    sender: std::thread::JoinHandle<Vec<Phase>>,
    receiver: std::thread::JoinHandle<Vec<bool>>,
}

impl Traffic {
    fn start(lab: &Lab) -> Traffic {
        let (tx, rx, to) = socket_pair(lab, false, TRAFFIC_PORT);
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicU8::new(Phase::Idle as u8));
        let sender = {
            let (stop, phase) = (stop.clone(), phase.clone());
            std::thread::spawn(move || {
                let mut sent = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let p = Phase::from_u8(phase.load(Ordering::SeqCst));
                    let seq = sent.len() as u32;
                    // A send error is a loss like any other (seq not received).
                    let _ = tx.send_to(&seq.to_be_bytes(), to);
                    sent.push(p);
                    std::thread::sleep(TRAFFIC_GAP);
                }
                sent
            })
        };
        let receiver = {
            let stop = stop.clone();
            std::thread::spawn(move || receive(&rx, &stop))
        };
        Traffic {
            stop,
            phase,
            sender,
            receiver,
        }
    }

    fn set(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::SeqCst);
    }

    /// Stops sending, lets the last datagrams arrive, and returns the phase
    /// of every sent datagram and which arrived.
    fn finish(self) -> (Vec<Phase>, Vec<bool>) {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.sender.join().unwrap();
        let received = self.receiver.join().unwrap();
        (sent, received)
    }
}

fn receive(rx: &UdpSocket, stop: &AtomicBool) -> Vec<bool> {
    rx.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut got = Vec::new();
    let mut stopped_at: Option<Instant> = None;
    let mut buf = [0u8; 64];
    loop {
        if stop.load(Ordering::Relaxed) {
            let t = *stopped_at.get_or_insert_with(Instant::now);
            if t.elapsed() > Duration::from_millis(500) {
                return got;
            }
        }
        if let Ok((4, _)) = rx.recv_from(&mut buf) {
            let seq = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            if got.len() <= seq {
                got.resize(seq + 1, false);
            }
            got[seq] = true;
        }
    }
}

/// `impair stats IFACE --json` on both sites, over and over, until `stop`:
/// a run either succeeds with JSON or fails without a panic (nothing is
/// attached between cycles). Returns (successes, failures).
fn stats_loop(lab: Arc<Lab>, stop: Arc<AtomicBool>) -> (u64, u64) {
    let (mut ok, mut failed) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        for site in Site::BOTH {
            let out = impair_in(site.ns(&lab), &["stats", site.iface(), "--json"]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!err.contains("panicked"), "impair stats panicked: {err}");
            if out.status.success() {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                    .unwrap_or_else(|e| panic!("impair stats --json is no JSON ({e}): {out:?}"));
                assert!(v.is_object(), "{v}");
                ok += 1;
            } else {
                failed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (ok, failed)
}

/// The BPF objects an instance holds: its programs on `site`'s interface,
/// their maps, and the links attaching them.
#[derive(Default)]
struct BpfIds {
    progs: Vec<u32>,
    maps: Vec<u32>,
    links: Vec<u32>,
}

/// Records the programs of the instance attached at `site` (with an ingress
/// instance that owns an ifb device, the program on that device too: it
/// shares the instance's maps), their maps and links; returns how many
/// programs it found.
fn instance_ids(lab: &Lab, site: Site, ids: &mut BpfIds) -> usize {
    let iface = site.iface();
    let attached: Vec<u32> = impair::netns::run_in(site.ns(lab), move || {
        let ifindex = impair::sys::ifindex(iface).unwrap();
        impair::discover::on_interface(ifindex)
            .unwrap()
            .iter()
            .map(|i| i.prog_id)
            .collect::<Vec<u32>>()
    })
    .unwrap();
    assert!(!attached.is_empty(), "an attached instance on {iface}");
    let loaded: Vec<_> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| (p.id(), p.map_ids().ok().flatten().unwrap_or_default()))
        .collect();
    let instance_maps: Vec<u32> = loaded
        .iter()
        .filter(|(id, _)| attached.contains(id))
        .flat_map(|(_, maps)| maps.iter().copied())
        .collect();
    let progs: Vec<u32> = loaded
        .iter()
        .filter(|(id, maps)| {
            attached.contains(id) || maps.iter().any(|m| instance_maps.contains(m))
        })
        .map(|(id, _)| *id)
        .collect();
    for (id, maps) in &loaded {
        if progs.contains(id) {
            ids.maps.extend(maps.iter().copied());
        }
    }
    for l in aya::programs::loaded_links().filter_map(Result::ok) {
        if progs.contains(&l.program_id()) {
            ids.links.push(l.id());
        }
    }
    let found = progs.len();
    ids.progs.extend(progs);
    found
}

/// The ids of `ids` still loaded in the kernel.
fn still_loaded(ids: &BpfIds) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let progs = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .filter(|id| ids.progs.contains(id))
        .collect();
    let maps = aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .map(|m| m.id())
        .filter(|id| ids.maps.contains(id))
        .collect();
    let links = aya::programs::loaded_links()
        .filter_map(Result::ok)
        .map(|l| l.id())
        .filter(|id| ids.links.contains(id))
        .collect();
    (progs, maps, links)
}

/// Every BPF program, map and link in the kernel (all namespaces: other
/// processes of the machine count too, so this is reported, not compared).
fn bpf_counts() -> (usize, usize, usize) {
    (
        aya::programs::loaded_programs().count(),
        aya::maps::loaded_maps().count(),
        aya::programs::loaded_links().count(),
    )
}

/// The lab's namespaces and the devices in each (`ip -br link`).
fn topology(lab: &Lab) -> String {
    let prefix = lab.router.trim_end_matches("-r").to_owned();
    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let mut s: String = String::from_utf8_lossy(&netns.stdout)
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| format!("netns {}\n", l.split_whitespace().next().unwrap_or("")))
        .collect();
    for ns in [&lab.client, &lab.router, &lab.server] {
        s += &lab.exec(ns, &["ip", "-br", "link"]).unwrap();
    }
    s
}

/// Issue 16 item 1: N attach/update/detach cycles under traffic and
/// concurrent `impair stats`, then nothing of any of them is left.
#[test]
fn soak_attach_update_detach_leaves_nothing_and_loses_no_unrelated_packet() {
    let cycles = env_count("IMPAIR_SOAK_CYCLES", DEFAULT_CYCLES);
    let lab = Arc::new(lab("soak"));
    let mut variants = Vec::new();
    let mut modes = vec!["netlink"];
    if has_tcx() {
        modes.insert(0, "tcx");
    } else {
        note("soak: this kernel has no tcx (Linux < 6.6): netlink (clsact) cycles only");
    }
    let release = impair::engine::ifb::kernel_release();
    let ifb = impair::engine::ifb::redirects_to_ifb(&release);
    if !ifb {
        note(format!(
            "soak: Linux {release} cannot bpf_redirect to an ifb (6.4+): no ingress cycles \
             that hold packets (each would create an ifb device)"
        ));
    }
    let fq = has_qdisc(&lab, "fq");
    if !fq {
        note(
            "soak: this kernel has no sch_fq, so attaches with a delay are refused: \
             cycles without fq only (the VM tier's 6.12 kernel has it)",
        );
    }
    for &mode in &modes {
        for site in Site::BOTH {
            variants.push(Variant {
                mode,
                site,
                fq: false,
                ifb: false,
            });
            // The delay's sch_fq is an egress (root qdisc) matter: at the
            // router's egress, or on the ifb device an ingress instance owns.
            if fq && site == Site::RouterEgress {
                variants.push(Variant {
                    mode,
                    site,
                    fq: true,
                    ifb: false,
                });
            }
            if ifb && site == Site::ServerIngress {
                variants.push(Variant {
                    mode,
                    site,
                    fq,
                    ifb: true,
                });
            }
        }
    }
    let before: Vec<String> = Site::BOTH.iter().map(|s| s.state(&lab)).collect();
    let topo_before = topology(&lab);
    let bpf_before = bpf_counts();

    let traffic = Traffic::start(&lab);
    let stop_stats = Arc::new(AtomicBool::new(false));
    let stats = {
        let (lab, stop) = (lab.clone(), stop_stats.clone());
        std::thread::spawn(move || stats_loop(lab, stop))
    };
    std::thread::sleep(Duration::from_millis(200));

    let mut ids = BpfIds::default();
    let start = Instant::now();
    for i in 0..cycles {
        let v = variants[i % variants.len()];
        traffic.set(v.change_phase());
        let mut args: Vec<String> = vec!["--attach-mode".into(), v.mode.into()];
        args.extend(v.rule(0));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let ctl = v.site.attach(&lab, &argv);
        traffic.set(Phase::Attached);
        let progs = instance_ids(&lab, v.site, &mut ids);
        let segmenter = v.has_segmenter();
        assert_eq!(
            progs,
            1 + usize::from(v.ifb) + usize::from(segmenter),
            "cycle {i} ({v:?}): its programs (one more on the ifb device or the segmenter it owns)"
        );
        for gen in 1..=2 {
            let mut up = vec!["update".to_owned(), v.site.iface().to_owned()];
            up.extend(v.rule(i + gen));
            let upv: Vec<&str> = up.iter().map(String::as_str).collect();
            stdout_ok(&v.site.impair(&lab, &upv));
        }
        traffic.set(v.change_phase());
        // Half the cycles end by a signal, half by `impair detach` from
        // another process.
        let status = if i % 2 == 0 {
            ctl.signal_and_wait(libc::SIGTERM)
        } else {
            stdout_ok(&v.site.impair(&lab, &["detach", v.site.iface()]));
            ctl.wait()
        };
        assert!(status.success(), "cycle {i} ({v:?}): {status:?}");
        v.site.assert_restored(
            &lab,
            &before[Site::BOTH.iter().position(|&s| s == v.site).unwrap()],
        );
        // In-flight datagrams of the change are still counted with it.
        std::thread::sleep(Duration::from_millis(10));
        traffic.set(Phase::Idle);
        // Every cycle in a short run (the VM's is slow), every 100th in a
        // long one.
        if cycles <= 100 || (i + 1) % 100 == 0 {
            note(format!(
                "soak: {} cycles in {:.1} s (the last: {v:?})",
                i + 1,
                start.elapsed().as_secs_f64()
            ));
        }
    }
    let elapsed = start.elapsed();
    // The ifb device's program shares the instance's maps: count each once.
    ids.maps.sort_unstable();
    ids.maps.dedup();
    std::thread::sleep(Duration::from_millis(200));
    stop_stats.store(true, Ordering::Relaxed);
    let (stats_ok, stats_failed) = stats.join().unwrap();
    let (sent, received) = traffic.finish();

    // Nothing of any cycle is left in the kernel. A detached program is freed
    // after an RCU grace period: poll briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = still_loaded(&ids);
        if left == (vec![], vec![], vec![]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "BPF objects of the soak's instances still loaded (programs, maps, links): {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for (site, before) in Site::BOTH.iter().zip(&before) {
        site.assert_restored(&lab, before);
    }
    assert_eq!(topology(&lab), topo_before, "no extra device or namespace");
    let bpf_after = bpf_counts();

    let lost = |pred: &dyn Fn(Phase) -> bool| -> Vec<usize> {
        sent.iter()
            .enumerate()
            .filter(|&(seq, &p)| pred(p) && !received.get(seq).copied().unwrap_or(false))
            .map(|(seq, _)| seq)
            .collect()
    };
    let netlink = |p| {
        matches!(
            p,
            Phase::NetlinkEgressChange | Phase::NetlinkIngressChange | Phase::RootQdiscChange
        )
    };
    let lost_netlink_egress = lost(&|p| p == Phase::NetlinkEgressChange);
    let lost_netlink_ingress = lost(&|p| p == Phase::NetlinkIngressChange);
    let lost_root_qdisc = lost(&|p| p == Phase::RootQdiscChange);
    let lost_elsewhere = lost(&|p| !netlink(p));
    let received_n = received.iter().filter(|&&r| r).count();
    eprintln!(
        "soak: {cycles} cycles ({} variants: {variants:?}) in {:.1} s ({:.0} ms/cycle); \
         {} unrelated datagrams sent, {received_n} received, {} lost while a netlink \
         attach/detach was in progress at r1 egress, {} at s0 ingress, {} while impair's fq root \
         qdisc went in or out at r1, {} lost otherwise; impair stats ran {} times \
         ({stats_ok} with an instance, {stats_failed} without); {} programs, {} maps, \
         {} links of the soak's instances, all gone; whole kernel before/after \
         (programs, maps, links; other processes count too): {bpf_before:?} / {bpf_after:?}",
        variants.len(),
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3 / cycles.max(1) as f64,
        sent.len(),
        lost_netlink_egress.len(),
        lost_netlink_ingress.len(),
        lost_root_qdisc.len(),
        lost_elsewhere.len(),
        stats_ok + stats_failed,
        ids.progs.len(),
        ids.maps.len(),
        ids.links.len(),
    );
    let ifb_cycles = (0..cycles)
        .filter(|i| variants[i % variants.len()].ifb)
        .count();
    let segmenter_cycles = (0..cycles)
        .filter(|i| variants[i % variants.len()].has_segmenter())
        .count();
    assert_eq!(
        ids.progs.len(),
        cycles + ifb_cycles + segmenter_cycles,
        "one program per cycle, and one per ifb device or segmenter"
    );
    assert!(
        cycles < 10 || stats_ok > 0,
        "impair stats saw an instance at least once"
    );
    assert!(
        lost_elsewhere.is_empty(),
        "unrelated traffic lost outside a qdisc change (tcx changes, attached, idle): \
         {} of {}: seqs {:?}",
        lost_elsewhere.len(),
        sent.len(),
        &lost_elsewhere[..lost_elsewhere.len().min(50)]
    );
    let lost_netlink = lost_netlink_egress.len() + lost_netlink_ingress.len();
    if lost_netlink > 0 {
        // As in clsact::run_impairs_only_the_commands_traffic: adding or
        // removing the clsact qdisc deactivates the device's queues for an
        // instant (qdisc_graft → dev_deactivate), as `tc qdisc add/del
        // clsact` does; see docs/architecture.md.
        note(format!(
            "soak: the kernel dropped {lost_netlink} unrelated datagram(s) sent while a netlink \
             (clsact) attach or detach was in progress (the clsact qdisc added or removed): \
             {} at r1 egress, {} at s0 ingress",
            lost_netlink_egress.len(),
            lost_netlink_ingress.len()
        ));
    }
    if !lost_root_qdisc.is_empty() {
        // Adding or deleting a root qdisc grafts it the same way.
        note(format!(
            "soak: the kernel dropped {} unrelated datagram(s) sent while impair's fq root qdisc \
             was added or removed at r1 (an attach or detach with a delay)",
            lost_root_qdisc.len()
        ));
    }
}

/// The resident set of process `pid` in KiB (VmRSS of /proc/PID/status).
fn rss_kib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Growth allowed after warm-up. A controller keeps nothing per update (the
/// new rule set replaces the old one in the maps; the previous one is
/// dropped), so after warm-up its RSS moves only by allocator noise:
/// glibc's heap grows and trims in steps of its 128 KiB thresholds, and a
/// page here or there for the stats interval. 2 MiB is many such steps, yet
/// over 10,000 updates (`cargo xtask soak`) it catches any leak of 200 bytes
/// or more per update; the quick form's few hundred updates only catch gross
/// leaks (several KiB per update).
const RSS_GROWTH_BOUND_KIB: u64 = 2048;

/// A long-running controller's memory stays flat across many updates.
#[test]
fn soak_a_long_running_controllers_memory_stays_flat_across_updates() {
    let updates = env_count("IMPAIR_SOAK_UPDATES", DEFAULT_UPDATES).max(20);
    let lab = lab("soakrss");
    let ctl = Controller::start(&lab, &["--dport", RULE_PORT, "--loss", "1%"]);
    let pid = ctl.pid();
    let warmup = updates / 10;
    let mut samples = Vec::new();
    let start = Instant::now();
    for i in 1..=updates {
        let loss = format!("{}%", 1 + i % 90);
        stdout_ok(&impair_in(&lab.router, &["update", "r1", "--loss", &loss]));
        if i % (updates / 20).max(1) == 0 || i == warmup {
            samples.push((i, rss_kib(pid)));
        }
    }
    let elapsed = start.elapsed();
    let after_warmup = samples
        .iter()
        .find(|&&(i, _)| i >= warmup)
        .map(|&(_, kib)| kib)
        .unwrap();
    let max = samples.iter().map(|&(_, kib)| kib).max().unwrap();
    let last = samples.last().unwrap().1;
    eprintln!(
        "soak: controller RSS over {updates} updates ({:.1} s, {:.0} ms/update): \
         {after_warmup} KiB after {warmup} (warm-up), max {max} KiB, last {last} KiB; \
         samples (update, KiB): {samples:?}",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3 / updates as f64
    );
    assert!(
        max <= after_warmup + RSS_GROWTH_BOUND_KIB,
        "the controller's RSS grew by {} KiB after warm-up over {updates} updates \
         (bound {RSS_GROWTH_BOUND_KIB} KiB): {samples:?}",
        max - after_warmup
    );
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
}
