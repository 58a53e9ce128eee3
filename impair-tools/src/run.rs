//! `impair run [flags] -- CMD ARGS...`: impairs only the traffic of CMD and
//! its children, what they send and what they receive. CMD starts in a new
//! cgroup v2; on each interface impair attaches a two-way link
//! (`engine::pair`) whose rules match that cgroup, so every other process's
//! packets pass untouched:
//!
//! - sent traffic at tc egress, where the packet carries its socket
//!   (`bpf_skb_cgroup_id`);
//! - received traffic at tc ingress, where it has none yet: the data path
//!   looks up the socket the stack will deliver it to
//!   (`bpf_sk_lookup_tcp/udp` with the packet's addresses and ports;
//!   impair-ebpf/src/socket.rs) and reads its mark, which a cgroup program
//!   gave every socket of the run's cgroup (`sockmark`: tc cannot read a
//!   socket's cgroup). Delay, jitter, rate,
//!   duplication and reordering of received traffic go through the ifb
//!   impair owns (`engine/ifb.rs`), as for any ingress instance.
//!
//! Where the kernel cannot hold received packets (before Linux 6.4, or no
//! ifb), only sent traffic is impaired and the start line says so, naming
//! the kernel feature. When CMD exits (or impair is stopped), impair
//! detaches, removes the cgroup (killing stragglers CMD left in it), and
//! exits with CMD's status.
use std::{
    fs,
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::PathBuf,
    process::{Command, ExitStatus},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context as _, Result};

use impair::{
    engine::{
        pair::{EnginePair, PairOptions, SideOptions},
        AttachMode, Error as EngineError, IngressHook,
    },
    input::UsageError,
    model::{MatchSpec, RuleSpec},
    observe::snapshot::Snapshot,
    sys,
};

use impair_common::SOCKET_MARK_ID_BIT;

use crate::{sockmark, usage};

/// A cgroup v2 made for one run; removed on drop.
pub struct RunCgroup {
    pub dir: PathBuf,
    pub id: u64,
    /// A cgroup2 mount impair made itself (none was visible, e.g. under
    /// `ip netns exec`, which remounts /sys); unmounted on drop.
    own_mount: Option<PathBuf>,
}

/// Where cgroup2 is mounted in this mount namespace, if anywhere.
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| PathBuf::from(f[1]))
}

impl RunCgroup {
    pub fn create() -> Result<Self> {
        let (root, own_mount) = match cgroup2_mount() {
            Some(m) => (m, None),
            None => {
                let m = PathBuf::from(format!("/run/impair-cgroup2-{}", std::process::id()));
                fs::create_dir_all(&m).with_context(|| format!("creating {}", m.display()))?;
                let out = Command::new("mount")
                    .args(["-t", "cgroup2", "none"])
                    .arg(&m)
                    .output()
                    .context("running mount")?;
                if !out.status.success() {
                    let _ = fs::remove_dir(&m);
                    return Err(anyhow!(UsageError(format!(
                        "impair run needs cgroup v2, which this system does not offer (mount -t cgroup2: {})",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))));
                }
                (m.clone(), Some(m))
            }
        };
        let dir = root.join(format!("impair-run-{}", std::process::id()));
        let made =
            fs::create_dir(&dir).with_context(|| format!("creating cgroup {}", dir.display()));
        let id = made.and_then(|()| Ok(std::os::unix::fs::MetadataExt::ino(&fs::metadata(&dir)?)));
        let id = match id {
            Ok(id) => id,
            Err(e) => {
                if let Some(m) = &own_mount {
                    let _ = Command::new("umount").arg(m).status();
                    let _ = fs::remove_dir(m);
                }
                return Err(e);
            }
        };
        Ok(Self { dir, id, own_mount })
    }

    /// Kills whatever is still in the cgroup (CMD's daemons), then removes it.
    fn remove(&self) -> Result<()> {
        let kill = self.dir.join("cgroup.kill");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match fs::remove_dir(&self.dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(_) if Instant::now() < deadline => {
                    if kill.exists() {
                        let _ = fs::write(&kill, "1");
                    } else if let Ok(procs) = fs::read_to_string(self.dir.join("cgroup.procs")) {
                        for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                            // SAFETY: kill(2) on processes CMD left in its own cgroup.
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                        }
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("removing cgroup {}", self.dir.display()))
                }
            }
        }
        if let Some(m) = &self.own_mount {
            let _ = Command::new("umount").arg(m).status();
            let _ = fs::remove_dir(m);
        }
        Ok(())
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("impair: {e:#}");
        }
    }
}

/// The interfaces of this namespace's default routes (IPv4 and IPv6).
pub fn default_route_ifaces() -> Result<Vec<String>> {
    let mut out = Vec::new();
    for fam in ["-4", "-6"] {
        let o = Command::new("ip")
            .args(["-j", fam, "route", "show", "default"])
            .output()
            .context("running ip route")?;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        for r in v.as_array().into_iter().flatten() {
            if let Some(dev) = r.get("dev").and_then(|d| d.as_str()) {
                if !out.iter().any(|d| d == dev) {
                    out.push(dev.to_owned());
                }
            }
        }
    }
    Ok(out)
}

pub struct RunOptions {
    pub ifaces: Vec<String>,
    /// What CMD sends (tc egress); none: sent traffic is not impaired.
    pub rules: Vec<RuleSpec>,
    /// What CMD receives (tc ingress), with match fields as the received
    /// packets carry them (see [`received_rules`]); none: not impaired.
    pub received: Vec<RuleSpec>,
    pub label: String,
    pub seed: Option<u64>,
    pub mode: AttachMode,
    pub cmd: Vec<String>,
    pub quiet: bool,
}

/// Runs CMD impaired; returns its exit status.
pub fn run(opts: RunOptions, stop: &AtomicBool) -> Result<ExitStatus> {
    let Some((prog, args)) = opts.cmd.split_first() else {
        return Err(usage!("impair run needs a command after `--`, e.g. impair run --loss 5% -- curl http://198.18.2.1/").into());
    };
    if opts.ifaces.is_empty() {
        return Err(usage!(
            "impair run: this namespace has no default route to find CMD's interface from: give --iface IFACE"
        )
        .into());
    }
    for i in &opts.ifaces {
        sys::ifindex(i)?;
    }
    if !executable_exists(prog) {
        return Err(usage!(
            "cannot run '{prog}': no such executable{}",
            if prog.contains('/') { "" } else { " on PATH" }
        )
        .into());
    }
    if !sys::is_root() {
        return Err(usage!(
            "permission denied: impair run needs root (cgroups, CAP_BPF, CAP_NET_ADMIN)"
        )
        .into());
    }
    let cg = RunCgroup::create()?;
    let owned_by = |rules: &[RuleSpec], id: u64| -> Vec<RuleSpec> {
        rules
            .iter()
            .cloned()
            .map(|mut r| {
                r.matcher.cgroup = Some(id);
                r
            })
            .collect()
    };
    let sent = owned_by(&opts.rules, cg.id);
    // Received packets are told apart by their socket's mark (`sockmark`).
    let mut why_not_received = None;
    let received = if opts.received.is_empty() {
        Vec::new()
    } else {
        let mark = sockmark::mark_for(cg.id);
        match sockmark::attach(&cg.dir, mark) {
            Ok(()) => owned_by(&opts.received, SOCKET_MARK_ID_BIT | u64::from(mark)),
            Err(e) => {
                why_not_received = Some(format!("{e:#}"));
                Vec::new()
            }
        }
    };
    let label = format!("run {}: {}", prog, opts.label);
    let mut links = Vec::with_capacity(opts.ifaces.len());
    for iface in &opts.ifaces {
        // An error drops (detaches) the links made so far, then the cgroup.
        let (link, why) = attach_link(iface, &opts, &sent, &received, &label)?;
        why_not_received = why_not_received.or(why);
        links.push(link);
    }
    let procs = cg.dir.join("cgroup.procs");
    let mut command = Command::new(prog);
    command.args(args);
    // SAFETY: the closure runs in the forked child before exec and only
    // performs async-signal-safe work: open/write/close of one file.
    unsafe {
        command.pre_exec(move || {
            fs::write(&procs, b"0")?;
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| anyhow!(UsageError(format!("cannot run '{prog}': {e}"))))?;
    if !opts.quiet {
        let what = match (
            sent.is_empty(),
            received.is_empty() || why_not_received.is_some(),
        ) {
            (false, false) => "sends and receives",
            (false, true) => "sends",
            (true, _) => "receives",
        };
        eprintln!(
            "impair: impairing the traffic `{}` {what} (cgroup {}) on {}: {}",
            opts.cmd.join(" "),
            cg.id,
            opts.ifaces.join(", "),
            opts.label
        );
        if let Some(why) = &why_not_received {
            eprintln!("impair: what it receives is not impaired: {why}");
        }
    }
    let mut signalled_at: Option<Instant> = None;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if stop.load(Ordering::Relaxed) {
            match signalled_at {
                None => {
                    // SAFETY: kill(2) on our own child.
                    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                    signalled_at = Some(Instant::now());
                }
                Some(t) if t.elapsed() > Duration::from_secs(10) => {
                    let _ = child.kill();
                }
                Some(_) => {}
            }
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut result = Ok(());
    for link in links {
        if !opts.quiet {
            for e in link.engines() {
                if let Ok(s) = Snapshot::read(&e.maps(), e.iface()) {
                    for l in s.render() {
                        eprintln!("{l}");
                    }
                }
            }
        }
        if let Err(err) = link.detach() {
            result = Err(err);
        }
    }
    drop(cg);
    result?;
    Ok(status)
}

/// Attaches CMD's two-way link on `iface`: `sent` at tc egress, `received`
/// at tc ingress. When this kernel cannot hold received packets (the rules
/// delay, shape, duplicate or reorder them), attaches the sent side alone
/// and returns why, naming the kernel feature.
fn attach_link(
    iface: &str,
    opts: &RunOptions,
    sent: &[RuleSpec],
    received: &[RuleSpec],
    label: &str,
) -> Result<(EnginePair, Option<String>)> {
    let side = |rules: &[RuleSpec]| {
        (!rules.is_empty()).then(|| SideOptions {
            rules: rules.to_vec(),
            label: label.to_owned(),
        })
    };
    let pair = PairOptions {
        iface: iface.to_owned(),
        mode: opts.mode,
        seed: opts.seed,
        duration: None,
        uplink: side(sent),
        downlink: side(received),
        ingress_hook: IngressHook::Tc,
        ..PairOptions::default()
    };
    match EnginePair::attach(pair.clone()) {
        Ok(link) => Ok((link, None)),
        Err(e) => {
            let Some(why) = pair.downlink.as_ref().and(kernel_cannot_receive(&e)) else {
                return Err(e);
            };
            if pair.uplink.is_none() {
                return Err(e);
            }
            let link = EnginePair::attach(PairOptions {
                downlink: None,
                ..pair
            })?;
            Ok((link, Some(why)))
        }
    }
}

/// Why this kernel cannot impair received traffic as asked, if that is what
/// `e` says: holding received packets needs bpf_redirect to an ifb (Linux
/// 6.4) and the ifb device (CONFIG_IFB).
fn kernel_cannot_receive(e: &anyhow::Error) -> Option<String> {
    if let Some(EngineError::IngressHoldNeedsLinux64 { what, release }) = e.downcast_ref() {
        return Some(format!(
            "{what} on received traffic needs Linux 6.4 or newer (bpf_redirect to an ifb device; this is {release})"
        ));
    }
    let text = format!("{e:#}");
    text.contains("CONFIG_IFB").then(|| {
        "delay, rate, duplication and reordering of received traffic need the kernel's ifb device \
         (CONFIG_IFB, module ifb), which this kernel cannot create"
            .to_owned()
    })
}

/// The rules for what CMD receives, from the rules for what it sends: the
/// same impairments, with the match fields seen from the other end (a
/// received packet's source is the peer CMD sent to), so `--dst 198.18.2.1
/// --dport 53` covers the queries CMD sends and the answers it receives.
pub fn received_rules(sent: &[RuleSpec]) -> Vec<RuleSpec> {
    sent.iter()
        .map(|r| RuleSpec {
            matcher: MatchSpec {
                src: r.matcher.dst,
                dst: r.matcher.src,
                sport: r.matcher.dport,
                dport: r.matcher.sport,
                ..r.matcher.clone()
            },
            ..r.clone()
        })
        .collect()
}

/// Whether `prog` names an executable file (a path, or a name on PATH).
fn executable_exists(prog: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let is_exe = |p: &std::path::Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if prog.contains('/') {
        return is_exe(std::path::Path::new(prog));
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| is_exe(&d.join(prog))))
        .unwrap_or(false)
}

/// The exit code `impair run` passes on: CMD's, or 128 + signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}
