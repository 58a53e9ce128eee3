//! Loading, attaching and detaching the data path, live rule-set updates, and
//! the lease that makes a killed controller stop impairing.
use std::{
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    programs::{
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions},
        LinkOrder, SchedClassifier, TcAttachType,
    },
    Ebpf, EbpfLoader,
};
use impair_common::{owner_flags, prog_names, Owner};

use crate::{
    discover,
    input::{usage, UsageError},
    maps::Maps,
    qdisc,
    rules::{compile_all, RuleSet, RuleSpec},
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

#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    pub iface: String,
    pub mode: AttachMode,
    pub rules: Vec<RuleSpec>,
    /// Seed of the per-CPU generators; random when `None`.
    pub seed: Option<u64>,
    /// Shown by `impair status/stats` (profile name or flag summary).
    pub label: String,
}

/// The object loaded and its programs verified, maps initialised, nothing
/// attached: the start of an attach, and what BPF_PROG_TEST_RUN tests and
/// micro-benchmarks run.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub maps: Maps,
}

impl Loaded {
    /// Loads the embedded object with `rules` active in slot 0, generators
    /// seeded from `seed`, and a lease that never expires (callers that attach
    /// set a real one before attaching).
    pub fn new(rules: &RuleSet, seed: u64) -> Result<Self> {
        ensure_real_object()?;
        let mut ebpf = EbpfLoader::new().load(crate::ebpf::object()).context("loading the eBPF object").map_err(permission_hint)?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(prog_names::TC_EGRESS)
            .ok_or_else(|| anyhow!("the eBPF object has no program {}", prog_names::TC_EGRESS))?
            .try_into()?;
        prog.load().context("loading the tc egress program into the kernel (verifier)").map_err(permission_hint)?;
        bind_owner_map(&mut ebpf)?;
        let mut maps = Maps::take(&mut ebpf)?;
        maps.seed_rng(seed)?;
        maps.set_lease_deadline_ns(impair_common::LEASE_FOREVER)?;
        maps.write_and_activate(0, rules, 1)?;
        Ok(Self { ebpf, maps })
    }

    pub fn tc_egress(&mut self) -> Result<&mut SchedClassifier> {
        Ok(self
            .ebpf
            .program_mut(prog_names::TC_EGRESS)
            .ok_or_else(|| anyhow!("the eBPF object has no program {}", prog_names::TC_EGRESS))?
            .try_into()?)
    }
}

/// A running, attached instance. Dropping it detaches and restores the
/// interface as it was (also when unwinding from a panic).
pub struct Engine {
    // Field order matters for drop: the link is detached explicitly first.
    ebpf: Ebpf,
    link: Option<SchedClassifierLinkId>,
    iface: String,
    ifindex: u32,
    mode: AttachMode,
    created_clsact: bool,
    maps: Arc<Mutex<Maps>>,
    lease_stop: Arc<AtomicBool>,
    lease_thread: Option<thread::JoinHandle<()>>,
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
    pub fn attach(opts: AttachOptions) -> Result<Self> {
        ensure_real_object()?;
        let rules = compile_all(&opts.rules)?;
        let ifindex = sys::ifindex(&opts.iface)?;
        if !sys::is_root() {
            return Err(usage!("permission denied: impair needs root (CAP_BPF and CAP_NET_ADMIN) to attach").into());
        }
        let tcx_supported = aya::util::KernelVersion::current().map(|v| v >= aya::util::KernelVersion::new(6, 6, 0)).unwrap_or(false);
        let mode = match opts.mode {
            AttachMode::Auto if tcx_supported => AttachMode::Tcx,
            AttachMode::Auto => AttachMode::Netlink,
            AttachMode::Tcx if !tcx_supported => {
                return Err(usage!("--attach-mode tcx needs Linux 6.6 or newer; use netlink (clsact) or auto").into())
            }
            m => m,
        };

        if let Some(existing) = discover::on_interface(ifindex)? {
            if existing.alive {
                let o = &existing.owner;
                return Err(usage!(
                    "{} is already impaired by impair (pid {}{}, '{}'): stop it or run `impair detach {}` first",
                    opts.iface,
                    o.pid,
                    if existing.pinned() { ", pinned" } else { "" },
                    o.label_str(),
                    opts.iface
                )
                .into());
            }
            tracing::warn!(pid = existing.owner.pid, "removing a leftover from a controller that died");
            remove_leftover(&opts.iface, &existing)?;
        }

        // fq first: if the kernel lacks it, refuse before anything changed.
        let fq = if rules.needs_fq() { Some(qdisc::ensure_fq(&opts.iface, rules.max_hold_ns())?) } else { None };
        let fq_guard = FqGuard { iface: opts.iface.clone(), state: fq.clone(), armed: true };
        let seed = opts.seed.unwrap_or_else(rand::random);
        let Loaded { mut ebpf, mut maps } = Loaded::new(&rules, seed)?;
        maps.set_lease_deadline_ns(sys::monotonic_ns() + LEASE.as_nanos() as u64)?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(prog_names::TC_EGRESS)
            .ok_or_else(|| anyhow!("the eBPF object has no program {}", prog_names::TC_EGRESS))?
            .try_into()?;

        let mut created_clsact = false;
        let link = match mode {
            AttachMode::Tcx | AttachMode::Auto => prog
                .attach_with_options(&opts.iface, TcAttachType::Egress, TcAttachOptions::TcxOrder(LinkOrder::default()))
                .with_context(|| format!("attaching a tcx link at {} egress", opts.iface))?,
            AttachMode::Netlink => {
                match tc::qdisc_add_clsact(&opts.iface) {
                    Ok(()) => created_clsact = true,
                    // Someone's clsact is already there: use it, never remove it.
                    Err(tc::TcError::AlreadyAttached) => {}
                    Err(e) if error_chain_has_errno(&e, libc::EEXIST) => {}
                    Err(e) => return Err(anyhow!(e).context(format!("adding a clsact qdisc to {}", opts.iface))),
                }
                match prog.attach_with_options(&opts.iface, TcAttachType::Egress, TcAttachOptions::Netlink(NlOptions::default())) {
                    Ok(l) => l,
                    Err(e) => {
                        if created_clsact {
                            let _ = delete_clsact_if_empty(&opts.iface);
                        }
                        return Err(anyhow!(e).context(format!("attaching a clsact filter at {} egress", opts.iface)));
                    }
                }
            }
        };

        let mut owner = Owner {
            pid: std::process::id(),
            ifindex,
            flags: if mode == AttachMode::Netlink { owner_flags::NETLINK } else { 0 }
                | if created_clsact { owner_flags::CREATED_CLSACT } else { 0 },
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
            thread::Builder::new().name("impair-lease".into()).spawn(move || renew_lease(&maps, &stop))?
        };
        Ok(Self {
            ebpf,
            link: Some(link),
            iface: opts.iface,
            ifindex,
            mode,
            created_clsact,
            maps,
            lease_stop,
            lease_thread: Some(lease_thread),
            generation: 1,
            last_flip: Instant::now(),
            seed,
            netns: std::fs::File::open("/proc/thread-self/ns/net").context("opening this thread's network namespace")?,
            fq,
            max_hold: Duration::from_nanos(rules.max_hold_ns()),
        })
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
        self.maps.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the whole rule set atomically while traffic flows.
    pub fn update(&mut self, rules: &[RuleSpec]) -> Result<()> {
        let rules = compile_all(rules)?;
        if rules.needs_fq() && self.fq.is_none() {
            self.fq = Some(qdisc::ensure_fq(&self.iface, rules.max_hold_ns())?);
        }
        self.max_hold = self.max_hold.max(Duration::from_nanos(rules.max_hold_ns()));
        let since = self.last_flip.elapsed();
        if since < SLOT_REUSE_GRACE {
            thread::sleep(SLOT_REUSE_GRACE - since);
        }
        let generation = self.generation + 1;
        let mut maps = self.maps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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
        if sys::netns_ino().ok() == std::os::unix::fs::MetadataExt::ino(&self.netns.metadata()?).into() {
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
        if let Some(link) = self.link.take() {
            let prog: Result<&mut SchedClassifier> = self
                .ebpf
                .program_mut(prog_names::TC_EGRESS)
                .ok_or_else(|| anyhow!("program vanished"))
                .and_then(|p| p.try_into().map_err(Into::into));
            result = prog.and_then(|p| p.detach(link).with_context(|| format!("detaching from {}", self.iface)));
        }
        if self.created_clsact {
            self.created_clsact = false;
            if let Err(e) = delete_clsact_if_empty(&self.iface) {
                result = result.and(Err(e));
            }
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
            eprintln!("impair: detaching from {}: {e:#}", self.iface);
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

/// Binds the owner map (which the programs never read) to the tc program, so
/// `discover` finds it through the program's map ids.
fn bind_owner_map(ebpf: &mut Ebpf) -> Result<()> {
    use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd};
    let prog_fd = {
        let prog: &SchedClassifier = ebpf
            .program(prog_names::TC_EGRESS)
            .ok_or_else(|| anyhow!("the eBPF object has no program {}", prog_names::TC_EGRESS))?
            .try_into()?;
        prog.fd()?.as_fd().as_raw_fd()
    };
    let Some(aya::maps::Map::Array(owner)) = ebpf.map(impair_common::map_names::OWNER) else {
        bail!("the eBPF object has no array map {}", impair_common::map_names::OWNER);
    };
    // SAFETY: `prog_fd` belongs to a program owned by `ebpf`, which outlives this call.
    let prog_fd = unsafe { BorrowedFd::borrow_raw(prog_fd) };
    sys::bpf_prog_bind_map(prog_fd, owner.fd().as_fd()).context("binding the owner map to the program")
}

fn renew_lease(maps: &Mutex<Maps>, stop: &AtomicBool) {
    let mut last = Instant::now() - LEASE_RENEW;
    while !stop.load(Ordering::Relaxed) {
        if last.elapsed() >= LEASE_RENEW {
            let deadline = sys::monotonic_ns() + LEASE.as_nanos() as u64;
            let mut m = maps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Err(e) = m.set_lease_deadline_ns(deadline) {
                tracing::error!("renewing the lease: {e:#}");
            }
            last = Instant::now();
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Removes what a controller that died left: its netlink filter, and the
/// clsact qdisc if it had created it and nothing else uses it.
pub fn remove_leftover(iface: &str, inst: &discover::Instance) -> Result<()> {
    if inst.pinned() {
        bail!("refusing to remove the pinned instance on {iface} implicitly; use `impair detach {iface}`");
    }
    if inst.netlink() {
        tc::qdisc_detach_program(iface, TcAttachType::Egress, prog_names::TC_EGRESS)
            .with_context(|| format!("removing the leftover clsact filter from {iface}"))?;
        if inst.owner.flags & owner_flags::CREATED_CLSACT != 0 {
            delete_clsact_if_empty(iface)?;
        }
    }
    Ok(())
}

/// Deletes the clsact qdisc from `iface` unless filters remain on it (someone
/// else's, added after ours): never remove what impair did not create.
fn delete_clsact_if_empty(iface: &str) -> Result<()> {
    for dir in ["ingress", "egress"] {
        let out = Command::new("tc").args(["filter", "show", "dev", iface, dir]).output().context("running tc")?;
        if !out.stdout.is_empty() {
            tracing::warn!(iface, dir, "leaving the clsact qdisc in place: other filters use it");
            return Ok(());
        }
    }
    let out = Command::new("tc").args(["qdisc", "del", "dev", iface, "clsact"]).output().context("running tc")?;
    if !out.status.success() {
        bail!("tc qdisc del dev {iface} clsact: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
