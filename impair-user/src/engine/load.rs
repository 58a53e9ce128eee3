//! Loading the embedded eBPF object: its programs verified, its maps bound
//! to every program and initialised, nothing attached yet.
use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    programs::{SchedClassifier, Xdp},
    Ebpf, EbpfLoader,
};
use impair_common::prog_names;

use super::{error::Error, hooks::Program};
use crate::{maps::Maps, model::RuleSet, sys};

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
        Self::load(rules, seed, programs)
    }

    pub(crate) fn load(rules: &RuleSet, seed: u64, programs: &[Program]) -> Result<Self> {
        ensure_real_object()?;
        let mut ebpf = EbpfLoader::new()
            .load(crate::ebpf::object())
            .context("loading the eBPF object")
            .map_err(permission_hint)?;
        for &p in programs {
            load_program(&mut ebpf, p)?;
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

/// Loads program `p` of `ebpf` into the kernel and binds the object's maps
/// to it ([`bind_maps`]). At load, or later for a program an attach did not
/// need then (the segmenter's, when an update first decides per packet).
pub(crate) fn load_program(ebpf: &mut Ebpf, p: Program) -> Result<()> {
    let what = || {
        format!(
            "loading the {} program into the kernel (verifier)",
            p.hook_name()
        )
    };
    match p {
        Program::TcEgress | Program::TcIngress | Program::Redirect | Program::Segmented => {
            tc_program_mut(ebpf, p)?
                .load()
                .with_context(what)
                .map_err(permission_hint)?
        }
        Program::Xdp => xdp_program_mut(ebpf)?
            .load()
            .with_context(what)
            .map_err(permission_hint)?,
    }
    bind_maps(ebpf, p)
}

pub(crate) fn tc_program_mut(ebpf: &mut Ebpf, p: Program) -> Result<&mut SchedClassifier> {
    Ok(ebpf
        .program_mut(p.name())
        .ok_or_else(|| anyhow!("the eBPF object has no program {}", p.name()))?
        .try_into()?)
}

pub(crate) fn xdp_program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    Ok(ebpf
        .program_mut(prog_names::XDP)
        .ok_or_else(|| anyhow!("the eBPF object has no program {}", prog_names::XDP))?
        .try_into()?)
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
        return anyhow!(Error::PermissionDenied);
    }
    e
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
            Map::Array(d)
            | Map::PerCpuArray(d)
            | Map::LruHashMap(d)
            | Map::HashMap(d)
            | Map::LpmTrie(d)
            | Map::RingBuf(d) => d,
            _ => bail!("map {name} has a type impair does not use"),
        };
        sys::bpf_prog_bind_map(prog_fd, data.fd().as_fd())
            .with_context(|| format!("binding map {name} to the {} program", p.hook_name()))?;
    }
    Ok(())
}
