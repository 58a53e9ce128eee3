//! Loading, attaching and detaching the data path, live rule-set updates, and
//! the lease that makes a killed controller stop impairing.
use std::{
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    programs::{
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions},
        xdp::XdpLinkId,
        LinkOrder, SchedClassifier, TcAttachType, Xdp,
    },
    Ebpf, EbpfLoader,
};
use impair_common::{owner_flags, prog_names, Owner};

use crate::{
    discover,
    input::{usage, UsageError},
    maps::Maps,
    model::{compile_all, RuleSet, RuleSpec},
    qdisc,
    qdisc::FqState,
    sys,
};

/// How long the data path keeps impairing without hearing from the controller.
pub const LEASE: Duration = Duration::from_secs(2);
/// How often the controller renews the lease.
const LEASE_RENEW: Duration = Duration::from_millis(200);
/// Grace period before a rule-set slot that was active is written again: every
/// program run that read the old slot index has finished long before (they run
/// for microseconds under RCU), so no packet sees a half-written rule set.
const SLOT_REUSE_GRACE: Duration = Duration::from_millis(20);

/// How the tc program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// tcx where the kernel has it (6.6+), netlink clsact otherwise.
    #[default]
    Auto,
    /// A tcx link: the kernel drops it when the controller's descriptors close.
    Tcx,
    /// A clsact qdisc filter (kernels before 6.6); the lease covers a killed controller.
    Netlink,
}

/// Which traffic of the interface is impaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Leaving the interface (tc egress): every impairment.
    #[default]
    Egress,
    /// Arriving on the interface (tc ingress or XDP): loss, ECN, corruption,
    /// MTU, blackhole and rate policing; no delay, jitter, reordering or
    /// duplication (nothing can hold a received packet back).
    Ingress,
    /// Both, with one rule set and one set of counters for the two directions.
    Both,
}

impl Direction {
    pub fn egress(self) -> bool {
        matches!(self, Direction::Egress | Direction::Both)
    }

    pub fn ingress(self) -> bool {
        matches!(self, Direction::Ingress | Direction::Both)
    }
}

/// The hook that sees received traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IngressHook {
    /// tc ingress (tcx or a clsact filter, as --attach-mode says).
    #[default]
    Tc,
    /// XDP: before the kernel allocates an skb (native) or right after (generic).
    Xdp,
}

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native where the driver supports it, generic otherwise (the kernel chooses).
    #[default]
    Auto,
    /// In the driver (fails where the driver has no XDP support).
    Native,
    /// In the core stack, on the skb (works on every device; slower).
    Generic,
}

impl XdpMode {
    pub fn aya(self) -> aya::programs::XdpMode {
        match self {
            XdpMode::Auto => aya::programs::XdpMode::Default,
            XdpMode::Native => aya::programs::XdpMode::Driver,
            XdpMode::Generic => aya::programs::XdpMode::Skb,
        }
    }
}

/// Where an attachment hooks in; the default is tc egress, as before receive
/// hooks existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HookOptions {
    pub direction: Direction,
    /// The receive-side hook (with [`Direction::Ingress`] or [`Direction::Both`]).
    pub ingress_hook: IngressHook,
    pub xdp_mode: XdpMode,
}

impl HookOptions {
    /// The programs this attachment loads and attaches.
    pub fn programs(&self) -> Vec<Program> {
        let mut p = Vec::with_capacity(2);
        if self.direction.egress() {
            p.push(Program::TcEgress);
        }
        if self.direction.ingress() {
            p.push(match self.ingress_hook {
                IngressHook::Tc => Program::TcIngress,
                IngressHook::Xdp => Program::Xdp,
            });
        }
        p
    }

    /// The owner-map hook bits of this attachment.
    pub fn owner_hooks(&self) -> u32 {
        self.programs()
            .iter()
            .fold(0, |acc, p| acc | p.owner_hook())
    }

    /// Checks that the rules can run at these hooks, before anything changes.
    /// Delay, jitter, reordering and duplication need a queue that holds
    /// packets (fq at egress); the receive path has none, in tc ingress and
    /// XDP alike, so they are refused there with the way around it.
    pub fn check_rules(&self, rules: &[RuleSpec]) -> Result<(), UsageError> {
        if self.direction.ingress() && rules.iter().any(|r| r.matcher.cgroup.is_some()) {
            return Err(usage!(
                "matching a cgroup (impair run) works at egress only: received packets have no sending socket"
            ));
        }
        if self.direction.ingress() {
            for r in rules {
                if let Some(flag) = egress_only_flag(r) {
                    return Err(usage!(
                        "{flag} is impossible at ingress (tc ingress or XDP): delay, jitter and reordering need \
                         a queue that holds packets, and duplicates are sent through one, but received packets \
                         pass no qdisc; to impair arriving traffic with it, redirect that traffic through an ifb \
                         or veth device and attach impair at that device's egress, or attach at the sender's \
                         egress. At ingress impair does loss, --ecn, --corrupt, --mtu, --blackhole and --rate \
                         (as a policer)"
                    ));
                }
            }
        }
        if self.direction == Direction::Both && rules.iter().any(|r| r.rate.is_some()) {
            return Err(usage!(
                "--rate with --direction both would make the two directions share one emulated link (egress \
                 pacing and ingress policing on the same state): attach egress and ingress separately, one \
                 `impair attach` each"
            ));
        }
        Ok(())
    }
}

/// The first flag of `r` that only tc egress can do, as the user wrote it.
fn egress_only_flag(r: &RuleSpec) -> Option<&'static str> {
    if let Some(d) = &r.delay {
        return Some(if d.delay_ns != 0 {
            "--delay"
        } else if d.jitter_ns != 0 {
            "--jitter"
        } else if d.distribution.is_some() {
            "--distribution"
        } else if d.correlation.is_some() {
            "--delay-corr"
        } else if d.in_order {
            "--in-order"
        } else {
            "--delay"
        });
    }
    if r.reorder.is_some() {
        return Some("--reorder");
    }
    if r.duplicate.is_some() {
        return Some("--duplicate");
    }
    None
}

/// The programs of the eBPF object (one object serves every hook).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    TcEgress,
    TcIngress,
    Xdp,
}

impl Program {
    pub const ALL: [Program; 3] = [Program::TcEgress, Program::TcIngress, Program::Xdp];

    pub fn name(self) -> &'static str {
        match self {
            Program::TcEgress => prog_names::TC_EGRESS,
            Program::TcIngress => prog_names::TC_INGRESS,
            Program::Xdp => prog_names::XDP,
        }
    }

    fn owner_hook(self) -> u32 {
        match self {
            Program::TcEgress => owner_flags::HOOK_TC_EGRESS,
            Program::TcIngress => owner_flags::HOOK_TC_INGRESS,
            Program::Xdp => owner_flags::HOOK_XDP,
        }
    }

    /// The hook as `impair status` names it.
    pub fn hook_name(self) -> &'static str {
        match self {
            Program::TcEgress => "tc-egress",
            Program::TcIngress => "tc-ingress",
            Program::Xdp => "xdp",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    pub iface: String,
    pub mode: AttachMode,
    pub rules: Vec<RuleSpec>,
    /// Seed of the per-CPU generators; random when `None`.
    pub seed: Option<u64>,
    /// Shown by `impair status/stats` (profile name or flag summary).
    pub label: String,
    /// `--duration`: the data path stops impairing this long after attach,
    /// enforced by the kernel through the lease (even if the controller is
    /// killed or stopped).
    pub duration: Option<Duration>,
}

/// The object loaded and its programs verified, maps initialised, nothing
/// attached: the start of an attach, and what BPF_PROG_TEST_RUN tests and
/// micro-benchmarks run.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub maps: Maps,
}

impl Loaded {
    /// Loads the embedded object with all three programs (tests and
    /// benchmarks run any of them), `rules` active in slot 0, generators
    /// seeded from `seed`, and a lease that never expires (callers that attach
    /// set a real one before attaching).
    pub fn new(rules: &RuleSet, seed: u64) -> Result<Self> {
        Self::with_programs(rules, seed, &Program::ALL)
    }

    /// [`Loaded::new`] with only `programs` loaded into the kernel (an attach
    /// loads what it attaches, so no idle program lingers in the kernel).
    pub fn with_programs(rules: &RuleSet, seed: u64, programs: &[Program]) -> Result<Self> {
        ensure_real_object()?;
        let mut ebpf = EbpfLoader::new()
            .load(crate::ebpf::object())
            .context("loading the eBPF object")
            .map_err(permission_hint)?;
        for &p in programs {
            let what = || {
                format!(
                    "loading the {} program into the kernel (verifier)",
                    p.hook_name()
                )
            };
            match p {
                Program::TcEgress | Program::TcIngress => tc_program_mut(&mut ebpf, p)?
                    .load()
                    .with_context(what)
                    .map_err(permission_hint)?,
                Program::Xdp => xdp_program_mut(&mut ebpf)?
                    .load()
                    .with_context(what)
                    .map_err(permission_hint)?,
            }
            bind_maps(&mut ebpf, p)?;
        }
        let mut maps = Maps::take(&mut ebpf)?;
        maps.seed_rng(seed)?;
        maps.set_lease_deadline_ns(impair_common::LEASE_FOREVER)?;
        maps.write_and_activate(0, rules, 1)?;
        Ok(Self { ebpf, maps })
    }

    pub fn tc_egress(&mut self) -> Result<&mut SchedClassifier> {
        tc_program_mut(&mut self.ebpf, Program::TcEgress)
    }

    pub fn tc_ingress(&mut self) -> Result<&mut SchedClassifier> {
        tc_program_mut(&mut self.ebpf, Program::TcIngress)
    }

    pub fn xdp(&mut self) -> Result<&mut Xdp> {
        xdp_program_mut(&mut self.ebpf)
    }
}

fn tc_program_mut(ebpf: &mut Ebpf, p: Program) -> Result<&mut SchedClassifier> {
    Ok(ebpf
        .program_mut(p.name())
        .ok_or_else(|| anyhow!("the eBPF object has no program {}", p.name()))?
        .try_into()?)
}

fn xdp_program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    Ok(ebpf
        .program_mut(prog_names::XDP)
        .ok_or_else(|| anyhow!("the eBPF object has no program {}", prog_names::XDP))?
        .try_into()?)
}

/// One attachment made by an engine, detached on teardown.
enum AttachedLink {
    Tc(Program, SchedClassifierLinkId),
    Xdp(XdpLinkId),
}

/// A running, attached instance. Dropping it detaches and restores the
/// interface as it was (also when unwinding from a panic).
pub struct Engine {
    // Field order matters for drop: the links are detached explicitly first.
    ebpf: Ebpf,
    links: Vec<AttachedLink>,
    hooks: HookOptions,
    iface: String,
    ifindex: u32,
    mode: AttachMode,
    created_clsact: bool,
    maps: Arc<Mutex<Maps>>,
    lease_stop: Arc<AtomicBool>,
    lease_thread: Option<thread::JoinHandle<()>>,
    /// `--duration`'s end (CLOCK_MONOTONIC ns), 0 for none.
    lease_cap_ns: u64,
    generation: u64,
    last_flip: Instant,
    seed: u64,
    /// The network namespace attached in: netlink detach and `tc` must run
    /// there, whichever thread drops the engine.
    netns: std::fs::File,
    /// The fq root impair installed or uses (rules with delay or rate).
    fq: Option<qdisc::FqState>,
    /// The longest a packet can be held (how long detach lets fq drain).
    max_hold: Duration,
    /// Set by the first teardown (`detach`, then `Drop`, must not undo twice:
    /// a second pass would delete a clsact qdisc someone added since).
    torn_down: bool,
}

/// Removes an fq root installed during an attach that then failed.
struct FqGuard {
    iface: String,
    state: Option<qdisc::FqState>,
    armed: bool,
}

impl Drop for FqGuard {
    fn drop(&mut self) {
        if let (true, Some(state)) = (self.armed, &self.state) {
            let _ = qdisc::restore(&self.iface, state, Duration::ZERO);
        }
    }
}

/// Refuses with a clear message when this binary carries no data path.
pub fn ensure_real_object() -> Result<()> {
    if crate::ebpf::is_stub() {
        bail!(
            "this impair binary was built without its eBPF programs (no BPF toolchain was found \
             at build time); run `cargo xtask setup` and rebuild, e.g. `cargo xtask build`"
        );
    }
    Ok(())
}

fn permission_hint(e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    if !sys::is_root() && (text.contains("Operation not permitted") || text.contains("EPERM")) {
        return anyhow!(UsageError(
            "permission denied: impair needs root (CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)".into()
        ));
    }
    e
}

impl Engine {
    /// Attaches at tc egress (see [`Engine::attach_with`]).
    pub fn attach(opts: AttachOptions) -> Result<Self> {
        Self::attach_with(opts, HookOptions::default())
    }

    /// Validates everything, then loads one object, attaches the programs
    /// `hooks` names, and starts the lease. Refuses (changing nothing) when
    /// an instance of a live controller already impairs the same interface
    /// in the same direction; egress and ingress instances may coexist.
    pub fn attach_with(opts: AttachOptions, hooks: HookOptions) -> Result<Self> {
        ensure_real_object()?;
        hooks.check_rules(&opts.rules)?;
        let rules = compile_all(&opts.rules).map_err(UsageError::from)?;
        let ifindex = sys::ifindex(&opts.iface)?;
        if !sys::is_root() {
            return Err(usage!(
                "permission denied: impair needs root (CAP_BPF and CAP_NET_ADMIN) to attach"
            )
            .into());
        }
        let programs = hooks.programs();
        let uses_tc = programs
            .iter()
            .any(|p| matches!(p, Program::TcEgress | Program::TcIngress));
        let tcx_supported = aya::util::KernelVersion::current()
            .map(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
            .unwrap_or(false);
        let mode = match opts.mode {
            AttachMode::Auto if tcx_supported => AttachMode::Tcx,
            AttachMode::Auto => AttachMode::Netlink,
            AttachMode::Tcx if !tcx_supported && uses_tc => {
                return Err(usage!(
                    "--attach-mode tcx needs Linux 6.6 or newer; use netlink (clsact) or auto"
                )
                .into())
            }
            m => m,
        };
        let wanted = hooks.owner_hooks();

        for existing in discover::on_interface(ifindex)? {
            if !overlaps(existing.owner.hooks(), wanted) {
                continue; // the other direction: both may run
            }
            if existing.alive {
                let o = &existing.owner;
                return Err(usage!(
                    "{} is already impaired at {} by impair (pid {}{}, '{}'): stop it or run `impair detach {}` first",
                    opts.iface,
                    o.hook_name(),
                    o.pid,
                    if existing.pinned() { ", pinned" } else { "" },
                    o.label_str(),
                    opts.iface
                )
                .into());
            }
            tracing::warn!(
                pid = existing.owner.pid,
                "removing a leftover from a controller that died"
            );
            remove_leftover(&opts.iface, &existing)?;
        }

        // fq first: if the kernel lacks it, refuse before anything changed.
        // Only egress holds packets; the receive side never needs it.
        let fq = if hooks.direction.egress() && rules.needs_fq() {
            Some(qdisc::ensure_fq(&opts.iface, rules.max_hold_ns())?)
        } else {
            None
        };
        let fq_guard = FqGuard {
            iface: opts.iface.clone(),
            state: fq.clone(),
            armed: true,
        };
        let seed = opts.seed.unwrap_or_else(rand::random);
        let Loaded { mut ebpf, mut maps } = Loaded::with_programs(&rules, seed, &programs)?;
        let lease_cap_ns = Arc::new(AtomicU64::new(opts.duration.map_or(0, |d| {
            sys::monotonic_ns()
                .saturating_add(d.as_nanos() as u64)
                .max(1)
        })));
        maps.set_lease_deadline_ns(capped_lease(lease_cap_ns.load(Ordering::Relaxed)))?;

        let mut created_clsact = false;
        let mut links = Vec::with_capacity(programs.len());
        let attached = attach_all(
            &mut ebpf,
            &opts.iface,
            mode,
            &hooks,
            &programs,
            &mut created_clsact,
            &mut links,
        );
        if let Err(e) = attached {
            if let Err(d) = detach_links(&mut ebpf, &mut links) {
                tracing::warn!("undoing a partial attach: {d:#}");
            }
            if created_clsact {
                let _ = delete_clsact_if_empty(&opts.iface);
            }
            return Err(e);
        }

        let xdp_mode_flag = match (
            hooks.direction.ingress() && hooks.ingress_hook == IngressHook::Xdp,
            hooks.xdp_mode,
        ) {
            (true, XdpMode::Generic) => owner_flags::XDP_GENERIC,
            (true, XdpMode::Native) => owner_flags::XDP_NATIVE,
            _ => 0,
        };
        let mut owner = Owner {
            pid: std::process::id(),
            ifindex,
            flags: if mode == AttachMode::Netlink && uses_tc {
                owner_flags::NETLINK
            } else {
                0
            } | if created_clsact {
                owner_flags::CREATED_CLSACT
            } else {
                0
            } | if fq == Some(FqState::Installed) {
                owner_flags::INSTALLED_FQ
            } else {
                0
            } | wanted
                | xdp_mode_flag,
            netns_ino: sys::netns_ino()?,
            pid_start_ticks: sys::process_start_ticks(std::process::id()).unwrap_or(0),
            attached_unix_ns: sys::unix_ns(),
            seed,
            ..Default::default()
        };
        owner.set_label(&opts.label);
        maps.owner.set(0, owner, 0)?;

        let mut fq_guard = fq_guard;
        fq_guard.armed = false;
        let maps = Arc::new(Mutex::new(maps));
        let lease_stop = Arc::new(AtomicBool::new(false));
        let lease_thread = {
            let maps = Arc::clone(&maps);
            let stop = Arc::clone(&lease_stop);
            // CLOCK_MONOTONIC time after which the lease is never renewed (0: none).
            let cap = Arc::clone(&lease_cap_ns);
            thread::Builder::new()
                .name("impair-lease".into())
                .spawn(move || renew_lease(&maps, &stop, &cap))?
        };
        Ok(Self {
            ebpf,
            links,
            hooks,
            iface: opts.iface,
            ifindex,
            mode,
            created_clsact,
            maps,
            lease_stop,
            lease_thread: Some(lease_thread),
            lease_cap_ns: lease_cap_ns.load(Ordering::Relaxed),
            generation: 1,
            last_flip: Instant::now(),
            seed,
            netns: std::fs::File::open("/proc/thread-self/ns/net")
                .context("opening this thread's network namespace")?,
            fq,
            max_hold: Duration::from_nanos(rules.max_hold_ns()),
            torn_down: false,
        })
    }

    /// Where this engine is attached.
    pub fn hooks(&self) -> HookOptions {
        self.hooks
    }

    /// The hooks as `impair status` names them (e.g. `tc-ingress`).
    pub fn hook_name(&self) -> &'static str {
        Owner {
            flags: self.hooks.owner_hooks(),
            ..Default::default()
        }
        .hook_name()
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Shared access to the maps (counters, rules) for display.
    pub fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `--pin`: leaves the instance attached when this process exits. The
    /// lease becomes the `--duration` deadline (or never expires), the owner
    /// map says PINNED, and the engine is forgotten instead of dropped, so
    /// nothing detaches: the kernel keeps the clsact filters (and through
    /// them the programs and maps) without any process or bpffs pin, like
    /// `tc filter add ... bpf`. `impair detach` removes it; an expired one is
    /// removed by the next `impair` invocation.
    pub fn persist(mut self) -> Result<()> {
        if self.links.iter().any(|l| matches!(l, AttachedLink::Xdp(_)))
            || self.mode != AttachMode::Netlink
        {
            bail!("only netlink (clsact) attachments can be pinned");
        }
        self.lease_stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.lease_thread.take() {
            let _ = t.join();
        }
        {
            let mut maps = self.maps();
            maps.set_lease_deadline_ns(if self.lease_cap_ns == 0 {
                impair_common::LEASE_FOREVER
            } else {
                self.lease_cap_ns
            })?;
            let mut o = maps.owner()?;
            o.flags |= owner_flags::PINNED;
            maps.owner.set(0, o, 0)?;
        }
        // The links, programs and maps stay with the kernel; this process's
        // descriptors close when it exits.
        std::mem::forget(self);
        Ok(())
    }

    /// Changes the label `impair status` shows (scenario steps).
    pub fn set_label(&self, label: &str) -> Result<()> {
        let mut maps = self.maps();
        let mut o = maps.owner()?;
        o.set_label(label);
        maps.owner.set(0, o, 0)?;
        Ok(())
    }

    /// Replaces the whole rule set atomically while traffic flows.
    pub fn update(&mut self, rules: &[RuleSpec]) -> Result<()> {
        self.hooks.check_rules(rules)?;
        let rules = compile_all(rules).map_err(UsageError::from)?;
        if self.hooks.direction.egress() && rules.needs_fq() && self.fq.is_none() {
            let fq = qdisc::ensure_fq(&self.iface, rules.max_hold_ns())?;
            if fq == FqState::Installed {
                let mut maps = self.maps();
                let mut o = maps.owner()?;
                o.flags |= owner_flags::INSTALLED_FQ;
                maps.owner.set(0, o, 0)?;
            }
            self.fq = Some(fq);
        }
        self.max_hold = self.max_hold.max(Duration::from_nanos(rules.max_hold_ns()));
        let since = self.last_flip.elapsed();
        if since < SLOT_REUSE_GRACE {
            thread::sleep(SLOT_REUSE_GRACE - since);
        }
        let generation = self.generation + 1;
        let mut maps = self
            .maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Another process (`impair update`) may have flipped slots meanwhile.
        let generation = generation.max(maps.active_rules()?.1.generation + 1);
        let next = 1 - maps.active_slot()?;
        maps.write_and_activate(next, &rules, generation)?;
        drop(maps);
        self.generation = generation;
        self.last_flip = Instant::now();
        Ok(())
    }

    /// Detaches and restores the interface; errors are reported, not hidden.
    pub fn detach(mut self) -> Result<()> {
        self.teardown()
    }

    /// Runs `teardown_here` in the namespace the engine attached in (on a
    /// helper thread when the caller's thread is elsewhere).
    fn teardown(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.torn_down, true) {
            return Ok(());
        }
        if sys::netns_ino().ok()
            == std::os::unix::fs::MetadataExt::ino(&self.netns.metadata()?).into()
        {
            return self.teardown_here();
        }
        let netns = self.netns.try_clone()?;
        thread::scope(|s| {
            s.spawn(|| {
                crate::sys::setns_net(&netns)?;
                self.teardown_here()
            })
            .join()
            .unwrap_or_else(|_| Err(anyhow!("detach thread panicked")))
        })
    }

    fn teardown_here(&mut self) -> Result<()> {
        self.lease_stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.lease_thread.take() {
            let _ = t.join();
        }
        let mut result = Ok(());
        if !self.links.is_empty() {
            if let Err(e) = detach_links(&mut self.ebpf, &mut self.links) {
                result = Err(e.context(format!("detaching from {}", self.iface)));
            }
        }
        // Another impair instance on this interface may have handed us the
        // clsact qdisc it created (see `release_clsact`).
        let own = self.maps().owner().ok();
        let created =
            self.created_clsact || own.is_some_and(|o| o.flags & owner_flags::CREATED_CLSACT != 0);
        if created {
            self.created_clsact = false;
            if let Err(e) = release_clsact(&self.iface, self.ifindex, own.as_ref()) {
                result = result.and(Err(e));
            }
        }
        // `impair update` from another process may have installed fq for us.
        if self.fq.is_none() && own.is_some_and(|o| o.flags & owner_flags::INSTALLED_FQ != 0) {
            self.fq = Some(FqState::Installed);
        }
        if let Some(fq) = self.fq.take() {
            // Packets already scheduled leave on time; then the default qdisc returns.
            let drain = self.max_hold + Duration::from_millis(200);
            if let Err(e) = qdisc::restore(&self.iface, &fq, drain) {
                result = result.and(Err(e));
            }
        }
        result
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::error!("detaching from {}: {e:#}", self.iface);
        }
    }
}

/// Whether any error in `e`'s source chain is the OS error `errno`.
fn error_chain_has_errno(e: &(dyn std::error::Error + 'static), errno: i32) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.raw_os_error() == Some(errno) {
                return true;
            }
        }
        if format!("{err}").contains(&format!("(os error {errno})")) {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Binds every map of the object to program `p` (BPF_PROG_BIND_MAP; maps the
/// program already uses are skipped by the kernel), so that `discover` finds
/// all of an instance's maps through whichever of its programs is attached:
/// the owner map, which no program reads, and the delay maps, which the
/// receive-side programs never touch.
fn bind_maps(ebpf: &mut Ebpf, p: Program) -> Result<()> {
    use aya::maps::Map;
    use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd};
    let prog_fd = ebpf
        .program(p.name())
        .ok_or_else(|| anyhow!("the eBPF object has no program {}", p.name()))?
        .fd()?
        .as_fd()
        .as_raw_fd();
    // SAFETY: `prog_fd` belongs to a program owned by `ebpf`, which outlives this call.
    let prog_fd = unsafe { BorrowedFd::borrow_raw(prog_fd) };
    for (name, map) in ebpf.maps() {
        let data = match map {
            Map::Array(d) | Map::PerCpuArray(d) | Map::LruHashMap(d) | Map::HashMap(d) => d,
            _ => bail!("map {name} has a type impair does not use"),
        };
        sys::bpf_prog_bind_map(prog_fd, data.fd().as_fd())
            .with_context(|| format!("binding map {name} to the {} program", p.hook_name()))?;
    }
    Ok(())
}

/// Whether two sets of owner hook bits impair the same direction.
fn overlaps(a: u32, b: u32) -> bool {
    let dirs = |h: u32| {
        (if h & owner_flags::HOOK_TC_EGRESS != 0 {
            1
        } else {
            0
        }) | (if h & (owner_flags::HOOK_TC_INGRESS | owner_flags::HOOK_XDP) != 0 {
            2
        } else {
            0
        })
    };
    dirs(a) & dirs(b) != 0
}

/// Attaches `programs` to `iface`, pushing each link as it is made (so the
/// caller can undo a partial attach). tc programs use tcx or a clsact filter
/// (`mode`); one clsact qdisc serves both tc directions, created only if
/// there is none and then recorded in `created_clsact`.
fn attach_all(
    ebpf: &mut Ebpf,
    iface: &str,
    mode: AttachMode,
    hooks: &HookOptions,
    programs: &[Program],
    created_clsact: &mut bool,
    links: &mut Vec<AttachedLink>,
) -> Result<()> {
    for &p in programs {
        match p {
            Program::TcEgress | Program::TcIngress => {
                let (attach_type, dir) = if p == Program::TcEgress {
                    (TcAttachType::Egress, "egress")
                } else {
                    (TcAttachType::Ingress, "ingress")
                };
                let prog = tc_program_mut(ebpf, p)?;
                let link = match mode {
                    AttachMode::Tcx | AttachMode::Auto => prog
                        .attach_with_options(
                            iface,
                            attach_type,
                            TcAttachOptions::TcxOrder(LinkOrder::default()),
                        )
                        .with_context(|| format!("attaching a tcx link at {iface} {dir}"))?,
                    AttachMode::Netlink => {
                        if !*created_clsact {
                            match tc::qdisc_add_clsact(iface) {
                                Ok(()) => *created_clsact = true,
                                // Someone's clsact is already there: use it, never remove it.
                                Err(tc::TcError::AlreadyAttached) => {}
                                Err(e) if error_chain_has_errno(&e, libc::EEXIST) => {}
                                Err(e) => {
                                    return Err(anyhow!(e)
                                        .context(format!("adding a clsact qdisc to {iface}")))
                                }
                            }
                        }
                        prog.attach_with_options(
                            iface,
                            attach_type,
                            TcAttachOptions::Netlink(NlOptions::default()),
                        )
                        .with_context(|| format!("attaching a clsact filter at {iface} {dir}"))?
                    }
                };
                links.push(AttachedLink::Tc(p, link));
            }
            Program::Xdp => {
                let link = xdp_program_mut(ebpf)?.attach(iface, hooks.xdp_mode.aya()).map_err(|e| {
                    let busy = error_chain_has_errno(&e, libc::EBUSY) || error_chain_has_errno(&e, libc::EEXIST);
                    let unsupported = error_chain_has_errno(&e, libc::EOPNOTSUPP);
                    let e = anyhow!(e);
                    if busy {
                        anyhow!(UsageError(format!(
                            "{iface} already has an XDP program that is not this impair's: impair will not replace \
                             it (remove it, or use --hook tc); nothing was changed"
                        )))
                    } else if unsupported && hooks.xdp_mode == XdpMode::Native {
                        anyhow!(UsageError(format!(
                            "the driver of {iface} has no native XDP support: use --xdp-mode generic or auto; \
                             nothing was changed"
                        )))
                    } else {
                        e.context(format!("attaching XDP to {iface}"))
                    }
                })?;
                links.push(AttachedLink::Xdp(link));
            }
        }
    }
    Ok(())
}

/// Detaches every link in `links` (emptying it); keeps going after an error
/// and returns the first.
fn detach_links(ebpf: &mut Ebpf, links: &mut Vec<AttachedLink>) -> Result<()> {
    let mut result = Ok(());
    for link in links.drain(..) {
        let r = match link {
            AttachedLink::Tc(p, id) => tc_program_mut(ebpf, p).and_then(|prog| {
                prog.detach(id)
                    .with_context(|| format!("detaching {}", p.hook_name()))
            }),
            AttachedLink::Xdp(id) => {
                xdp_program_mut(ebpf).and_then(|prog| prog.detach(id).context("detaching xdp"))
            }
        };
        if let Err(e) = r {
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}

/// The next lease deadline: [`LEASE`] from now, but never past `cap_ns`
/// (`--duration`'s end; 0 for none).
fn capped_lease(cap_ns: u64) -> u64 {
    let next = sys::monotonic_ns() + LEASE.as_nanos() as u64;
    if cap_ns == 0 {
        next
    } else {
        next.min(cap_ns)
    }
}

fn renew_lease(maps: &Mutex<Maps>, stop: &AtomicBool, cap_ns: &AtomicU64) {
    let mut last = Instant::now() - LEASE_RENEW;
    while !stop.load(Ordering::Relaxed) {
        if last.elapsed() >= LEASE_RENEW {
            let deadline = capped_lease(cap_ns.load(Ordering::Relaxed));
            let mut m = maps
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Err(e) = m.set_lease_deadline_ns(deadline) {
                tracing::error!("renewing the lease: {e:#}");
            }
            last = Instant::now();
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Removes what a controller that died left: its netlink filters (egress
/// and ingress), and the clsact qdisc if it had created it and nothing else
/// uses it. tcx and XDP links die with their controller, so nothing of
/// theirs remains.
pub fn remove_leftover(iface: &str, inst: &discover::Instance) -> Result<()> {
    if inst.netlink() {
        let hooks = inst.owner.hooks();
        for (bit, attach_type, name) in [
            (
                owner_flags::HOOK_TC_EGRESS,
                TcAttachType::Egress,
                prog_names::TC_EGRESS,
            ),
            (
                owner_flags::HOOK_TC_INGRESS,
                TcAttachType::Ingress,
                prog_names::TC_INGRESS,
            ),
        ] {
            if hooks & bit != 0 {
                tc::qdisc_detach_program(iface, attach_type, name).with_context(|| {
                    format!("removing the leftover clsact filter {name} from {iface}")
                })?;
            }
        }
        if inst.owner.flags & owner_flags::CREATED_CLSACT != 0 {
            release_clsact(iface, inst.owner.ifindex, Some(&inst.owner))?;
        }
    }
    if inst.owner.flags & owner_flags::INSTALLED_FQ != 0
        && qdisc::root_qdisc(iface).is_ok_and(|(k, _)| k == "fq" || k == "mq")
    {
        // Its delays ended with its lease; whatever fq still holds leaves
        // within the longest delay fq accepts (its horizon).
        qdisc::restore(iface, &FqState::Installed, Duration::from_secs(2))
            .with_context(|| format!("removing the fq root qdisc a dead impair left on {iface}"))?;
    }
    Ok(())
}

/// Removes pinned instances in this network namespace whose `--duration`
/// has passed (their data path already passes everything: the lease ended).
/// Every `impair` invocation that touches instances runs this first: the
/// "next invocation" that enforces a pinned run's deadline. Returns what was
/// removed, as `IFACE HOOK` strings.
pub fn sweep_expired_pins() -> Result<Vec<String>> {
    let here = sys::netns_ino()?;
    let now = sys::monotonic_ns();
    let mut removed = Vec::new();
    for inst in discover::instances()? {
        if !inst.pinned() || inst.owner.netns_ino != here {
            continue;
        }
        let deadline = inst.maps.lease_deadline_ns()?;
        if deadline == impair_common::LEASE_FOREVER || deadline > now {
            continue;
        }
        let Some(iface) = sys::ifname(inst.owner.ifindex) else {
            continue;
        };
        remove_leftover(&iface, &inst)?;
        removed.push(format!("{iface} {}", inst.owner.hook_name()));
    }
    Ok(removed)
}

/// The hooks an instance's owner map records.
pub fn hooks_of(o: &Owner) -> HookOptions {
    let h = o.hooks();
    let egress = h & owner_flags::HOOK_TC_EGRESS != 0;
    let xdp = h & owner_flags::HOOK_XDP != 0;
    let ingress = xdp || h & owner_flags::HOOK_TC_INGRESS != 0;
    HookOptions {
        direction: match (egress, ingress) {
            (true, true) => Direction::Both,
            (false, true) => Direction::Ingress,
            _ => Direction::Egress,
        },
        ingress_hook: if xdp {
            IngressHook::Xdp
        } else {
            IngressHook::Tc
        },
        xdp_mode: if o.flags & owner_flags::XDP_GENERIC != 0 {
            XdpMode::Generic
        } else if o.flags & owner_flags::XDP_NATIVE != 0 {
            XdpMode::Native
        } else {
            XdpMode::Auto
        },
    }
}

/// `impair update`: replaces the rule set of a running instance (any
/// controller's) atomically, by writing the inactive slot and flipping the
/// active one. Checks the rules against the instance's hooks first; installs
/// fq (recording it in the owner map, so whoever detaches removes it) or
/// resizes impair's fq when the new rules hold packets longer.
pub fn update_instance(
    iface: &str,
    inst: &mut discover::Instance,
    rules: &[RuleSpec],
    label: &str,
) -> Result<()> {
    let hooks = hooks_of(&inst.owner);
    hooks.check_rules(rules)?;
    let set = compile_all(rules).map_err(UsageError::from)?;
    let mut owner = inst.maps.owner()?;
    if hooks.direction.egress() && set.needs_fq() {
        let installed_here = owner.flags & owner_flags::INSTALLED_FQ != 0;
        if installed_here {
            qdisc::resize_fq(iface, set.max_hold_ns())?;
        } else if qdisc::ensure_fq(iface, set.max_hold_ns())? == FqState::Installed {
            owner.flags |= owner_flags::INSTALLED_FQ;
        }
    }
    // A slot the data path might still be reading is never rewritten: wait
    // out a flip the owner may have made just before.
    thread::sleep(SLOT_REUSE_GRACE);
    let (_, header, _) = inst.maps.active_rules()?;
    let next = 1 - inst.maps.active_slot()?;
    inst.maps
        .write_and_activate(next, &set, header.generation + 1)?;
    owner.set_label(label);
    inst.maps.owner.set(0, owner, 0)?;
    Ok(())
}

/// Gives up the clsact qdisc impair created on `iface` (`me` is the owner
/// that created it): deleted when no filter uses it any more; when filters
/// remain and another impair instance on the interface attached through
/// netlink uses it (egress and ingress instances may share one clsact),
/// that instance inherits the duty (its owner map gets `CREATED_CLSACT`),
/// so the last impair instance to leave removes it. Filters of anyone else
/// keep it in place for good: impair never removes what others use.
fn release_clsact(iface: &str, ifindex: u32, me: Option<&Owner>) -> Result<()> {
    if delete_clsact_if_empty(iface)? {
        return Ok(());
    }
    let heir = discover::on_interface(ifindex)?.into_iter().find(|i| {
        i.netlink()
            && me.is_none_or(|m| {
                (i.owner.pid, i.owner.attached_unix_ns) != (m.pid, m.attached_unix_ns)
            })
    });
    if let Some(mut heir) = heir {
        let mut o = heir.owner;
        o.flags |= owner_flags::CREATED_CLSACT;
        heir.maps
            .owner
            .set(0, o, 0)
            .context("handing the clsact qdisc over to the other impair instance")?;
        tracing::debug!(
            iface,
            pid = o.pid,
            "the other impair instance on this interface will remove the clsact qdisc"
        );
    } else {
        tracing::warn!(
            iface,
            "leaving the clsact qdisc in place: other filters use it"
        );
    }
    Ok(())
}

/// Deletes the clsact qdisc from `iface` unless filters remain on it (someone
/// else's, added after ours): never remove what impair did not create.
/// Returns whether it was deleted.
fn delete_clsact_if_empty(iface: &str) -> Result<bool> {
    for dir in ["ingress", "egress"] {
        let out = Command::new("tc")
            .args(["filter", "show", "dev", iface, dir])
            .output()
            .context("running tc")?;
        if !out.stdout.is_empty() {
            tracing::debug!(
                iface,
                dir,
                "leaving the clsact qdisc in place: other filters use it"
            );
            return Ok(false);
        }
    }
    let out = Command::new("tc")
        .args(["qdisc", "del", "dev", iface, "clsact"])
        .output()
        .context("running tc")?;
    if !out.status.success() {
        bail!(
            "tc qdisc del dev {iface} clsact: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(true)
}
