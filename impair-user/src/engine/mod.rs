//! The engine: loads the data path, attaches it, updates its rules live,
//! and detaches it leaving the interface as it was. One concept per file:
//!
//! - `hooks.rs`: where an attachment hooks in, and which rules can run there;
//! - `load.rs`: loading the eBPF object ([`Loaded`]);
//! - `link/`: one file per way of attaching (tcx, clsact filter, XDP) behind
//!   one interface; `link/clsact.rs` also adds and deletes the clsact qdisc;
//! - `fq.rs`: the fq root qdisc that delay and rate need;
//! - `offload.rs`: device offloads turned off while attached (restored);
//! - `ifb.rs`: the ifb device that gives received traffic a queue (an
//!   ingress instance whose rules hold or copy packets);
//! - `lease.rs`: the lease that makes a killed controller stop impairing;
//! - `owner.rs`: the owner record, and who removes the clsact and fq;
//! - `leftover.rs`: removing what dead controllers and expired pins left;
//! - `guard.rs`: undo-on-failure for every step of an attach;
//! - `error.rs`: the engine's refusals, `cli_compat.rs` their CLI wording.
mod error;
mod fault;
mod fq;
mod guard;
mod hooks;
pub mod ifb;
mod journal;
mod lease;
mod leftover;
mod link;
mod load;
mod offload;
mod owner;
pub mod segmenter;
// Two instances (egress + ingress) as one link: built on `Engine` only.
pub mod pair;

use std::{
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::Ebpf;
use impair_common::{loss_model, owner_flags, rule_flags, Owner};

pub use self::{
    error::{EgressOnly, Error},
    hooks::{AttachMode, Direction, HookOptions, IngressHook, Program, XdpMode},
    lease::LEASE,
    leftover::{remove_crash_leftovers, remove_leftover, sweep_expired_pins},
    load::{ensure_real_object, Loaded},
    owner::hooks_of,
};
use self::{
    fq::FqState,
    guard::Undo,
    ifb::Ifb,
    lease::Lease,
    link::{clsact, tcx, Link, Via},
    segmenter::Segmenter,
};
use crate::{discover, maps::Maps, model::RuleSpec, sys};

/// Grace period before a rule-set slot that was active is written again: every
/// program run that read the old slot index has finished long before (they run
/// for microseconds under RCU), so no packet sees a half-written rule set.
const SLOT_REUSE_GRACE: Duration = Duration::from_millis(20);

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
    /// `--keep-offloads`: change no device offload (by default, at egress,
    /// transmit checksumming goes off while a detectable corruption rule is
    /// attached, and per-packet decisions get one wire packet per skb; at
    /// tc ingress the device's GRO goes off for per-packet decisions; see
    /// `offload.rs`).
    pub keep_offloads: bool,
}

/// A running, attached instance. Dropping it detaches and restores the
/// interface as it was (also when unwinding from a panic).
pub struct Engine {
    // Field order matters for drop: the links (detached explicitly by
    // `teardown` before) go before the object whose programs they attach.
    links: Vec<Link>,
    /// The loaded object: holds the programs (and their descriptors) the
    /// links attach, for as long as the engine lives.
    ebpf: Ebpf,
    hooks: HookOptions,
    iface: String,
    ifindex: u32,
    mode: AttachMode,
    created_clsact: bool,
    maps: Arc<Mutex<Maps>>,
    lease: Lease,
    generation: u64,
    seed: u64,
    /// The network namespace attached in: netlink detach and `tc` must run
    /// there, whichever thread drops the engine.
    netns: std::fs::File,
    /// The fq root impair installed or uses (rules with delay or rate), on
    /// the interface or, with an ifb, on the ifb.
    fq: Option<FqState>,
    /// The ifb received traffic goes through (an ingress instance whose
    /// rules hold or copy packets); deleted on detach.
    ifb: Option<Ifb>,
    /// The veth pair that splits super-packets decided per packet (an
    /// egress instance that changes offloads); deleted on detach.
    segmenter: Option<Segmenter>,
    /// The longest a packet can be held (how long detach lets fq drain).
    max_hold: Duration,
    /// Device offloads changed while attached (restored on teardown).
    offloads: Option<offload::Offloads>,
    /// Set by the first teardown (`detach`, then `Drop`, must not undo twice:
    /// a second pass would delete a clsact qdisc someone added since).
    torn_down: bool,
}

/// The device offloads a rule set needs changed (offload.rs): transmit
/// checksumming off for detectable corruption (completed in software), and
/// one wire packet per skb for decisions made per packet (loss,
/// duplication, corruption, reordering, jitter, the MTU): sent skbs at
/// egress, and received ones at tc ingress (which runs after GRO; XDP runs
/// before it and needs nothing). A receive-only instance changes nothing
/// for sending.
fn offloads_wanted(rules: &crate::model::RuleSet, hooks: &HookOptions) -> offload::Wanted {
    let per_packet = rules.rules.iter().any(|r| {
        r.loss.model != loss_model::NONE
            || r.corrupt_u32 | r.duplicate_u32 | r.reorder_u32 | r.mtu_bytes != 0
            || r.jitter_ns != 0
    });
    let egress = hooks.direction.egress();
    offload::Wanted {
        tx_checksum_off: egress
            && rules
                .rules
                .iter()
                .any(|r| r.corrupt_u32 != 0 && r.flags & rule_flags::CORRUPT_SILENT == 0),
        per_wire_packet: egress && per_packet,
        received_per_wire: hooks.tc_ingress() && per_packet,
    }
}

/// Whether an instance with `hooks` manages offloads (unless
/// `--keep-offloads`): one that hooks egress or tc ingress.
fn manages_offloads(hooks: &HookOptions) -> bool {
    hooks.direction.egress() || hooks.tc_ingress()
}

/// Creates the segmenter of the instance on `iface` (journaled first, by
/// `Segmenter::create`), links `impair_segmented` (loaded) at its peer's tc
/// ingress, then sets `CONTROL[4]`: from then on `impair_egress` sends
/// super-packets there. The attach and an update that first decides per
/// packet (`Engine::add_segmenter`) both start it here.
fn start_segmenter(
    ebpf: &mut Ebpf,
    maps: &mut Maps,
    iface: &str,
    ifindex: u32,
    mode: AttachMode,
    xdp_mode: XdpMode,
) -> Result<(Segmenter, Link)> {
    let seg = Segmenter::create(ifindex, sys::mtu(iface)?)?;
    if mode == AttachMode::Netlink {
        clsact::ensure_qdisc(&seg.peer)?;
    }
    let p = Program::Segmented;
    let link = Link::attach(ebpf, &seg.peer, p, Via::of(p, mode), xdp_mode)?;
    maps.control.set(
        impair_common::CONTROL_SEGMENTER,
        segmenter::control_value(ifindex, seg.ifindex),
        0,
    )?;
    Ok((seg, link))
}

/// The index of `iface`, or why there is none.
fn interface_index(iface: &str) -> Result<u32, Error> {
    sys::ifindex(iface).map_err(|_| {
        if iface.is_empty() || iface.len() >= libc::IFNAMSIZ || iface.contains('/') {
            Error::InvalidInterfaceName {
                iface: iface.to_owned(),
            }
        } else {
            Error::NoSuchInterface {
                iface: iface.to_owned(),
            }
        }
    })
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
        Self::attach_here(opts, hooks)
    }

    fn attach_here(opts: AttachOptions, hooks: HookOptions) -> Result<Self> {
        ensure_real_object()?;
        let with_ifb = hooks.holds_at_ingress(&opts.rules);
        hooks.check_at(&opts.rules, with_ifb)?;
        if with_ifb && !ifb::redirects_to_ifb(&ifb::kernel_release()) {
            return Err(Error::IngressHoldNeedsLinux64 {
                what: hooks
                    .first_holding(&opts.rules)
                    .unwrap_or(EgressOnly::Delay),
                release: ifb::kernel_release(),
            }
            .into());
        }
        let rules = hooks.compile_at(&opts.rules, with_ifb)?;
        let iface = opts.iface.as_str();
        let ifindex = interface_index(iface)?;
        if !sys::is_root() {
            return Err(Error::NotRoot.into());
        }
        // Super-packets its rules decide per packet are split first
        // (segmenter.rs): an egress instance that may change offloads, whose
        // first rules decide per packet, not for received traffic's ifb.
        let with_segmenter = !opts.keep_offloads
            && hooks.direction.egress()
            && !with_ifb
            && offloads_wanted(&rules, &hooks).per_wire_packet;
        let mut programs = hooks.programs_to_load(with_ifb);
        if with_segmenter {
            programs.push(Program::Segmented);
        }
        let uses_tc = programs.iter().any(|p| *p != Program::Xdp);
        let mode = match opts.mode {
            AttachMode::Auto if tcx::supported() => AttachMode::Tcx,
            AttachMode::Auto => AttachMode::Netlink,
            AttachMode::Tcx if uses_tc && !tcx::supported() => {
                return Err(Error::TcxUnsupported.into())
            }
            m => m,
        };
        leftover::clear_for_attach(iface, ifindex, hooks.owner_hooks())?;

        // Load first: it changes nothing outside this process. Then record
        // who is attaching before the first change to the system, and keep
        // the record current after each one, so a controller killed at any
        // step is a leftover the next impair command finds and removes (the
        // fq root is its own record too: fq::ROOT_HANDLE).
        let seed = opts.seed.unwrap_or_else(rand::random);
        let Loaded { mut ebpf, mut maps } = Loaded::load(&rules, seed, &programs)?;
        let lease_cap_ns = lease::cap_ns(opts.duration);
        maps.set_lease_deadline_ns(lease::capped(lease_cap_ns))?;
        let mut attached = owner::Attached {
            ifindex,
            mode,
            hooks,
            created_clsact: false,
            installed_fq: false,
            ifb: with_ifb,
            segmenter: with_segmenter,
            seed,
            label: &opts.label,
        };
        maps.owner.set(0, owner::attaching(&attached)?, 0)?;
        fault::point("attach:recorded");

        // Each step below undoes itself if a later one fails (guard.rs; an
        // `Ifb` deletes itself when dropped).
        // The ifb that holds received traffic (recorded before: owner IFB
        // flag and its journal file), and its index for impair_redirect.
        let ifb = if with_ifb {
            let ifb = Ifb::create(ifindex)?;
            maps.control.set(
                impair_common::CONTROL_REDIRECT_IFINDEX,
                u64::from(ifb.ifindex),
                0,
            )?;
            Some(ifb)
        } else {
            None
        };
        fault::point("attach:ifb");
        // fq: if the kernel lacks it, refuse before anything else changed.
        // Only egress holds packets: the interface's, or the ifb's.
        let fq_iface = ifb.as_ref().map_or(iface, |i| i.name.as_str()).to_owned();
        let fq = Undo::new(
            if (hooks.direction.egress() || with_ifb) && rules.needs_fq() {
                Some(fq::ensure_fq(&fq_iface, rules.max_hold_ns())?)
            } else {
                None
            },
            |fq| {
                if let Some(fq) = fq {
                    if let Err(e) = fq::restore(&fq_iface, &fq, Duration::ZERO) {
                        tracing::warn!("undoing a partial attach: {e:#}");
                    }
                }
            },
        );
        // The ifb's fq goes with the ifb: only the interface's is recorded.
        attached.installed_fq = !with_ifb && *fq == Some(FqState::Installed);
        maps.owner.set(0, owner::attaching(&attached)?, 0)?;
        fault::point("attach:fq");

        // Offloads (offload.rs): detectable corruption is completed in
        // software; decisions made per packet (loss, duplication, corruption,
        // reordering, jitter, the MTU) act per wire packet, sent (egress)
        // and received (tc ingress, the ifb's path included). Journaled.
        // The journal file stays while attached, changes or not: `impair
        // update` adds what a new rule set needs to it.
        let offloads = Undo::new(
            if !opts.keep_offloads && manages_offloads(&hooks) {
                let _lock = journal::UpdateLock::take(ifindex)?;
                Some(offload::Offloads::apply(
                    iface,
                    ifindex,
                    offload::journal_kind(hooks.direction.egress()),
                    offloads_wanted(&rules, &hooks),
                )?)
            } else {
                None
            },
            |o| {
                if let Some(o) = o {
                    if let Err(e) = o.restore() {
                        tracing::warn!("undoing a partial attach: {e:#}");
                    }
                }
            },
        );

        // One clsact qdisc serves both tc directions; created only if there
        // is none (then recorded in the owner map, so it is removed again).
        // From creating the clsact qdisc until a filter holds the program
        // (whose owner record says it created it), only the journal knows.
        let window = if mode == AttachMode::Netlink && uses_tc {
            Some(journal::ClsactWindow::open(ifindex)?)
        } else {
            None
        };
        let created_clsact = Undo::new(
            mode == AttachMode::Netlink && uses_tc && clsact::ensure_qdisc(iface)?,
            |created| {
                if created {
                    if let Err(e) = clsact::delete_qdisc_if_unused(iface, ifindex) {
                        tracing::warn!("undoing a partial attach: {e:#}");
                    }
                }
            },
        );
        attached.created_clsact = *created_clsact;
        maps.owner.set(0, owner::attaching(&attached)?, 0)?;
        fault::point("attach:clsact");
        let mut links = Vec::with_capacity(programs.len());
        // The segmenter (recorded before: owner SEGMENTER flag and its
        // journal file), its return program, then its index: from then on
        // impair_egress sends super-packets there.
        let segmenter = if with_segmenter {
            let (seg, link) =
                start_segmenter(&mut ebpf, &mut maps, iface, ifindex, mode, hooks.xdp_mode)?;
            links.push(link);
            Some(seg)
        } else {
            None
        };
        fault::point("attach:segmenter");
        if let Some(ifb) = &ifb {
            // impair_egress on the ifb first (nothing reaches it yet), then
            // the redirect; detach removes the redirect first.
            if mode == AttachMode::Netlink {
                clsact::ensure_qdisc(&ifb.name)?;
            }
            let p = Program::TcEgress;
            let egress = Link::attach(&mut ebpf, &ifb.name, p, Via::of(p, mode), hooks.xdp_mode)?;
            let p = Program::Redirect;
            links.push(Link::attach(
                &mut ebpf,
                iface,
                p,
                Via::of(p, mode),
                hooks.xdp_mode,
            )?);
            links.push(egress);
        } else {
            // The segmenter's program is attached above, on its own device.
            for &p in programs.iter().filter(|&&p| p != Program::Segmented) {
                links.push(Link::attach(
                    &mut ebpf,
                    iface,
                    p,
                    Via::of(p, mode),
                    hooks.xdp_mode,
                )?);
            }
        }
        fault::point("attach:linked");
        // Attached: the record's attach time says so (status and stats show
        // an instance only from here on; cleanup finds it all along).
        maps.owner.set(0, owner::record(&attached)?, 0)?;
        drop(window);

        let maps = Arc::new(Mutex::new(maps));
        let lease = Lease::start(Arc::clone(&maps), lease_cap_ns)?;
        let netns = std::fs::File::open("/proc/thread-self/ns/net")
            .context("opening this thread's network namespace")?;
        Ok(Self {
            links,
            ebpf,
            hooks,
            ifindex,
            mode,
            created_clsact: created_clsact.keep(),
            maps,
            lease,
            generation: 1,
            seed,
            netns,
            fq: fq.keep(),
            offloads: offloads.keep(),
            ifb,
            segmenter,
            max_hold: Duration::from_nanos(rules.max_hold_ns()),
            torn_down: false,
            iface: opts.iface,
        })
    }

    /// The device offloads this engine changed while attached (restored on
    /// detach), one line each, for the attach message.
    pub fn offload_changes(&self) -> Vec<String> {
        self.offloads.iter().flat_map(|o| o.describe()).collect()
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

    /// The ifb device received traffic goes through, if this instance has one.
    pub fn ifb_name(&self) -> Option<&str> {
        self.ifb.as_ref().map(|i| i.name.as_str())
    }

    /// The segmenter's two ends, if this instance has one.
    pub fn segmenter_names(&self) -> Option<(&str, &str)> {
        self.segmenter
            .as_ref()
            .map(|s| (s.name.as_str(), s.peer.as_str()))
    }

    /// Where this instance's fq is (or would be): the ifb, or the interface.
    fn fq_iface(&self) -> String {
        self.ifb
            .as_ref()
            .map_or_else(|| self.iface.clone(), |i| i.name.clone())
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
        if self.links.iter().any(|l| l.via() != Via::Clsact) {
            bail!("only netlink (clsact) attachments can be pinned");
        }
        if self.ifb.is_some() {
            bail!(
                "an instance that holds received traffic (through an ifb device) cannot be pinned"
            );
        }
        // Nothing would remove the segmenter with the pinned instance: its
        // super-packets are decided whole from now on (`super_packets`).
        if let Some(seg) = self.segmenter.take() {
            self.maps()
                .control
                .set(impair_common::CONTROL_SEGMENTER, 0, 0)?;
            if let Some(i) = self
                .links
                .iter()
                .position(|l| l.program() == Program::Segmented)
            {
                self.links.remove(i).detach()?;
            }
            seg.delete()?;
            owner::clear_flags(&mut self.maps(), owner_flags::SEGMENTER)?;
        }
        self.lease.stop();
        {
            let deadline = self.lease.unattended_deadline_ns();
            let mut maps = self.maps();
            maps.set_lease_deadline_ns(deadline)?;
            owner::add_flags(&mut maps, owner_flags::PINNED)?;
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
        self.update_here(rules)
    }

    fn update_here(&mut self, rules: &[RuleSpec]) -> Result<()> {
        let with_ifb = self.ifb.is_some();
        self.hooks.check_at(rules, with_ifb)?;
        let rules = self.hooks.compile_at(rules, with_ifb)?;
        if (self.hooks.direction.egress() || with_ifb) && rules.needs_fq() && self.fq.is_none() {
            let fq = fq::ensure_fq(&self.fq_iface(), rules.max_hold_ns())?;
            if fq == FqState::Installed && !with_ifb {
                owner::add_flags(&mut self.maps(), owner_flags::INSTALLED_FQ)?;
            }
            self.fq = Some(fq);
        }
        self.max_hold = self.max_hold.max(Duration::from_nanos(rules.max_hold_ns()));
        // One writer at a time, across processes; then wait out the last
        // flip, whoever made it.
        let _lock = journal::UpdateLock::take(self.ifindex)?;
        // The offloads the new rules need, before they decide anything
        // (journaled with those of the attach; restored on detach).
        if let Some(o) = self.offloads.as_mut() {
            let wanted = offloads_wanted(&rules, &self.hooks);
            for change in o.apply_more(&self.iface, self.ifindex, wanted)? {
                tracing::info!("{change}; restored on detach");
            }
        }
        // The first rules that decide per packet: the segmenter too, as an
        // attach with them would have made it (deleted on detach).
        if self.segmenter.is_none()
            && self.offloads.is_some()
            && self.hooks.direction.egress()
            && self.ifb.is_none()
            && offloads_wanted(&rules, &self.hooks).per_wire_packet
        {
            self.add_segmenter()?;
            tracing::info!(
                "super-packets go through the segmenter {}; removed on detach",
                self.segmenter.as_ref().map_or("", |s| s.name.as_str())
            );
        }
        // The whole grace, not what is left of it since our own last flip:
        // another process may have flipped since.
        thread::sleep(SLOT_REUSE_GRACE);
        let generation = self.generation + 1;
        let mut maps = self.maps();
        // Another process (`impair update`) may have flipped slots meanwhile.
        let generation = generation.max(maps.active_rules()?.1.generation + 1);
        let next = 1 - maps.active_slot()?;
        fault::point("update:written");
        maps.write_and_activate(next, &rules, generation)?;
        drop(maps);
        self.generation = generation;
        Ok(())
    }

    /// Creates the segmenter of a running instance (an update's rules are
    /// the first to decide per packet): recorded first (owner flag, its
    /// journal), then its return program, then its index in CONTROL, the
    /// order of the attach. Undone if a step fails.
    fn add_segmenter(&mut self) -> Result<()> {
        owner::add_flags(&mut self.maps(), owner_flags::SEGMENTER)?;
        let maps = Arc::clone(&self.maps);
        let mut maps = maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let made = load::load_program(&mut self.ebpf, Program::Segmented).and_then(|()| {
            start_segmenter(
                &mut self.ebpf,
                &mut maps,
                &self.iface,
                self.ifindex,
                self.mode,
                self.hooks.xdp_mode,
            )
        });
        drop(maps);
        match made {
            Ok((seg, link)) => {
                self.links.push(link);
                self.segmenter = Some(seg);
                Ok(())
            }
            Err(e) => {
                // The pair (if made) is deleted as `seg` drops.
                let _ = owner::clear_flags(&mut self.maps(), owner_flags::SEGMENTER);
                Err(e.context("adding the segmenter for per-wire-packet decisions"))
            }
        }
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
        self.lease.stop();
        let mut result = Ok(());
        // Another impair instance on this interface may have handed us the
        // clsact qdisc it created (see `owner::release_clsact`).
        let own = self.maps().owner().ok();
        let created =
            self.created_clsact || own.is_some_and(|o| o.flags & owner_flags::CREATED_CLSACT != 0);
        // No super-packet goes to the segmenter from now on.
        if self.segmenter.is_some() {
            let _ = self
                .maps()
                .control
                .set(impair_common::CONTROL_SEGMENTER, 0, 0);
        }
        // Between removing the filters and releasing the clsact qdisc it
        // created, nothing but the journal records that qdisc.
        let window = if created {
            journal::ClsactWindow::open(self.ifindex).ok()
        } else {
            None
        };
        if let Err(e) = link::detach_all(&mut self.links) {
            result = Err(e.context(format!("detaching from {}", self.iface)));
        }
        fault::point("detach:unlinked");
        if created {
            self.created_clsact = false;
            if let Err(e) = owner::release_clsact(&self.iface, self.ifindex, own.as_ref()) {
                result = result.and(Err(e));
            }
        }
        drop(window);
        if let Some(o) = self.offloads.take() {
            // With the update lock: an `impair update` in another process
            // adds to the journal under it, and finds none once it is gone.
            let lock = journal::UpdateLock::take(self.ifindex);
            if let Err(e) = o.restore() {
                result = result.and(Err(e));
            }
            drop(lock);
        }
        // `impair update` from another process may have installed fq for us.
        if self.fq.is_none() && own.is_some_and(|o| o.flags & owner_flags::INSTALLED_FQ != 0) {
            self.fq = Some(FqState::Installed);
        }
        // On an ifb, `impair update` from another process may have put fq.
        if self.fq.is_none()
            && self.ifb.as_ref().is_some_and(|i| {
                fq::root_qdisc(&i.name).is_ok_and(|(k, h)| fq::is_impairs_root(&k, &h))
            })
        {
            self.fq = Some(FqState::Installed);
        }
        let fq_iface = self.fq_iface();
        if let Some(fq) = self.fq.take() {
            // Packets already scheduled leave on time; then the default qdisc returns.
            let drain = self.max_hold + Duration::from_millis(200);
            if let Err(e) = fq::restore(&fq_iface, &fq, drain) {
                result = result.and(Err(e));
            }
        }
        // The segmenter: nothing is sent there any more, and its link is gone.
        if let Some(seg) = self.segmenter.take() {
            if let Err(e) = seg.delete() {
                result = result.and(Err(e));
            }
        }
        // Nothing redirects to the ifb any more (its link is gone); the
        // index is cleared all the same before the device goes.
        if let Some(ifb) = self.ifb.take() {
            let _ = self
                .maps()
                .control
                .set(impair_common::CONTROL_REDIRECT_IFINDEX, 0, 0);
            if let Err(e) = ifb.delete() {
                result = result.and(Err(e));
            }
        }
        // Nothing of this instance is attached any more: it is no one's, so
        // the next `impair` does not mistake the program (which the kernel
        // frees a moment after this process exits) for a dead controller's
        // leftover. Kept when detaching failed: then it is a leftover.
        if result.is_ok() {
            if let Err(e) = owner::retire(&mut self.maps()) {
                result = Err(e);
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

/// What [`update_instance`] did beside the rules, one line each.
#[derive(Debug, Default)]
pub struct InstanceUpdate {
    /// Device offload changes made (restored on detach).
    pub offload_changes: Vec<String>,
    /// What another process's update cannot do (the segmenter).
    pub notes: Vec<String>,
}

/// `impair update`: replaces the rule set of a running instance (any
/// controller's) atomically, by writing the inactive slot and flipping the
/// active one. Checks the rules against the instance's hooks first; installs
/// fq (recording it in the owner map, so whoever detaches removes it) or
/// resizes impair's fq when the new rules hold packets longer; at egress,
/// makes the device offload changes the new rules need (offload.rs) in the
/// owner's journal, so its detach (or, after it died, the next impair
/// command) restores them. Returns those changes, and what it could not do.
pub fn update_instance(
    iface: &str,
    inst: &mut discover::Instance,
    rules: &[RuleSpec],
    label: &str,
) -> Result<InstanceUpdate> {
    update_instance_here(iface, inst, rules, label)
}

fn update_instance_here(
    iface: &str,
    inst: &mut discover::Instance,
    rules: &[RuleSpec],
    label: &str,
) -> Result<InstanceUpdate> {
    let hooks = hooks_of(&inst.owner);
    let ifb = ifb::of_owner(&inst.owner);
    hooks.check_at(rules, ifb.is_some())?;
    let set = hooks.compile_at(rules, ifb.is_some())?;
    let mut owner = inst.maps.owner()?;
    if let Some(ifb) = ifb.as_deref().filter(|_| set.needs_fq()) {
        // The ifb's fq goes with the ifb: nothing to record.
        if fq::root_qdisc(ifb).is_ok_and(|(k, h)| fq::is_impairs_root(&k, &h)) {
            fq::resize_fq(ifb, set.max_hold_ns())?;
        } else {
            fq::ensure_fq(ifb, set.max_hold_ns())?;
        }
    } else if hooks.direction.egress() && set.needs_fq() {
        let installed_here = owner.flags & owner_flags::INSTALLED_FQ != 0;
        if installed_here {
            fq::resize_fq(iface, set.max_hold_ns())?;
        } else if fq::ensure_fq(iface, set.max_hold_ns())? == FqState::Installed {
            owner.flags |= owner_flags::INSTALLED_FQ;
        }
    }
    // One writer at a time, across processes (journal::UpdateLock). A slot
    // the data path might still be reading is never rewritten: wait out a
    // flip the owner or another update may have made just before.
    let _lock = journal::UpdateLock::take(inst.owner.ifindex)?;
    // The offloads, before the new rules decide anything. None when the
    // instance leaves them alone (`--keep-offloads`, a pin) or is detaching.
    let (mut offload_changes, mut notes) = (Vec::new(), Vec::new());
    if manages_offloads(&hooks) {
        let wanted = offloads_wanted(&set, &hooks);
        if let Some(changes) = offload::apply_for_owner(&inst.owner, iface, wanted)? {
            offload_changes = changes;
            // The segmenter's return link would die with this process: only
            // the controller that attached can add one (its own updates and
            // scenario steps do).
            if wanted.per_wire_packet
                && ifb.is_none()
                && inst.owner.flags & owner_flags::SEGMENTER == 0
            {
                notes.push(format!(
                    "{iface}: no segmenter: super-packets the kernel does not split (UDP GSO, \
                     connections opened before the attach, what a veth carries in whole) are \
                     decided whole and counted as super_packets; attach with these rules (or a \
                     scenario) to split them"
                ));
            }
        }
    }
    thread::sleep(SLOT_REUSE_GRACE);
    let (_, header, _) = inst.maps.active_rules()?;
    let next = 1 - inst.maps.active_slot()?;
    fault::point("update:written");
    inst.maps
        .write_and_activate(next, &set, header.generation + 1)?;
    owner.set_label(label);
    inst.maps.owner.set(0, owner, 0)?;
    Ok(InstanceUpdate {
        offload_changes,
        notes,
    })
}

#[cfg(test)]
mod offload_tests {
    use super::*;

    fn wanted(spec: RuleSpec, hooks: HookOptions) -> offload::Wanted {
        offloads_wanted(&hooks.compile(&[spec]).unwrap(), &hooks)
    }

    fn hooks(direction: Direction, ingress_hook: IngressHook) -> HookOptions {
        HookOptions {
            direction,
            ingress_hook,
            ..Default::default()
        }
    }

    #[test]
    fn received_traffic_is_decided_per_wire_packet_at_tc_ingress_only() {
        let loss = || RuleSpec {
            loss: Some(0.0),
            corrupt: Some(0.01),
            ..Default::default()
        };
        // Egress: as before, nothing for received traffic.
        let w = wanted(loss(), hooks(Direction::Egress, IngressHook::Tc));
        assert!(w.tx_checksum_off && w.per_wire_packet && !w.received_per_wire);
        // tc ingress: GRO only; nothing for sending.
        let w = wanted(loss(), hooks(Direction::Ingress, IngressHook::Tc));
        assert!(!w.tx_checksum_off && !w.per_wire_packet && w.received_per_wire);
        let w = wanted(loss(), hooks(Direction::Both, IngressHook::Tc));
        assert!(w.tx_checksum_off && w.per_wire_packet && w.received_per_wire);
        // XDP runs before GRO.
        let w = wanted(loss(), hooks(Direction::Both, IngressHook::Xdp));
        assert!(w.per_wire_packet && !w.received_per_wire);
        assert!(!manages_offloads(&hooks(
            Direction::Ingress,
            IngressHook::Xdp
        )));
        // A rule that decides nothing per packet changes nothing.
        let w = wanted(
            RuleSpec::default(),
            hooks(Direction::Ingress, IngressHook::Tc),
        );
        assert!(!w.per_wire_packet && !w.received_per_wire);
    }
}
