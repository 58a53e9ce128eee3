//! The engine's refusals: what a caller asked for that cannot be done here,
//! detected before anything changed. Each front end renders them in its own
//! words (the command line names its flags; see `cli_compat.rs`); the texts
//! here name no flag of any front end.
//!
//! Failures of the system (a netlink or bpf(2) call that failed) stay
//! `anyhow` errors with context: nothing but a person reading them acts on them.

/// A request the engine refuses, changing nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid interface name '{iface}': 1-15 characters, no '/'")]
    InvalidInterfaceName { iface: String },
    #[error("unknown interface '{iface}': no such device in this network namespace")]
    NoSuchInterface { iface: String },
    /// Attaching needs CAP_BPF and CAP_NET_ADMIN.
    #[error("permission denied: attaching needs root (CAP_BPF and CAP_NET_ADMIN)")]
    NotRoot,
    /// The kernel refused to load a program and this process is not root.
    #[error("permission denied: loading the programs needs root (CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)")]
    PermissionDenied,
    /// tcx links need Linux 6.6.
    #[error("tcx needs Linux 6.6 or newer; attach through a clsact filter (netlink) instead")]
    TcxUnsupported,
    /// A rule matches a cgroup at XDP (tc finds received packets' sockets).
    #[error("matching a cgroup needs tc: XDP has no helper that reads a socket's cgroup (bpf_sk_cgroup_id)")]
    CgroupAtIngress,
    /// A rule holds or duplicates packets at a receive hook.
    #[error(
        "{0} is impossible here at ingress (XDP, one rule set for both directions, or an ingress instance attached without an \
         ifb): it needs a queue that holds packets"
    )]
    EgressOnlyAtIngress(EgressOnly),
    /// A rate in both directions would make the two share one emulated link.
    #[error(
        "a rate in both directions would make the two directions share one emulated link (egress pacing \
         and ingress policing on the same state): attach egress and ingress separately"
    )]
    RateInBothDirections,
    /// A live controller (or a pinned instance) already impairs this
    /// interface in an overlapping direction.
    #[error("{iface} is already impaired at {hook} by impair (pid {pid}{}, '{label}')", if *pinned { ", pinned" } else { "" })]
    AlreadyImpaired {
        iface: String,
        hook: &'static str,
        pid: u32,
        pinned: bool,
        label: String,
    },
    /// Someone else's XDP program is attached; impair never replaces it.
    #[error("{iface} already has an XDP program that is not this impair's; nothing was changed")]
    XdpBusy { iface: String },
    /// Native XDP was asked for and the driver has none.
    #[error("the driver of {iface} has no native XDP support; nothing was changed")]
    NoNativeXdp { iface: String },
    /// The root qdisc is someone's configuration, which fq would destroy.
    #[error(
        "{iface} has a configured root qdisc ({kind} {handle}); delay and rate need fq as the root and impair \
         will not destroy that configuration"
    )]
    ConfiguredRootQdisc {
        iface: String,
        kind: String,
        handle: String,
    },
    /// Received traffic needs an ifb, and this kernel's bpf_redirect does
    /// not reach one (`engine::ifb::REDIRECT_TO_IFB_SINCE`).
    #[error(
        "{what} on received traffic needs Linux 6.4 or newer (bpf_redirect to an ifb device; this is \
         {release}); nothing was changed"
    )]
    IngressHoldNeedsLinux64 { what: EgressOnly, release: String },
    /// An instance on the interface was attached by an impair whose map ABI
    /// version this one does not know (`impair_common::ABI_VERSION`):
    /// nothing of it is touched.
    #[error("{iface} is impaired at {hook} by an instance of map ABI version {found} (pid {pid}{}), which this impair (map ABI versions {oldest} to {newest}) cannot read: use an impair of map ABI version {found}{} to detach or change it; nothing was changed", if *pinned { ", pinned" } else { "" }, if found > newest { " or newer" } else { "" })]
    UnknownAbi {
        iface: String,
        hook: &'static str,
        pid: u32,
        pinned: bool,
        found: u32,
        oldest: u32,
        newest: u32,
    },
    /// The kernel has no sch_fq (delay and rate need it).
    #[error("delay and rate need the fq qdisc (sch_fq), which this kernel does not have or cannot load (tc said: {said}); nothing was changed")]
    NoFq { said: String },
}

/// What a rule asks for that only tc egress can do, in the order the checks
/// report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressOnly {
    Delay,
    Jitter,
    Distribution,
    DelayCorrelation,
    InOrder,
    Reorder,
    Duplicate,
    /// A rate (or rate trace) that queues what exceeds it: tc ingress
    /// shapes through an ifb unless the rate polices.
    Shaping,
}

impl std::fmt::Display for EgressOnly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EgressOnly::Delay => "delay",
            EgressOnly::Jitter => "jitter",
            EgressOnly::Distribution => "a delay distribution",
            EgressOnly::DelayCorrelation => "delay correlation",
            EgressOnly::InOrder => "keeping delayed packets in order",
            EgressOnly::Reorder => "reordering",
            EgressOnly::Duplicate => "duplication",
            EgressOnly::Shaping => "shaping to a rate (a queue behind it)",
        })
    }
}

/// Whether any error in `e`'s source chain is the OS error `errno`.
pub(crate) fn chain_has_errno(e: &(dyn std::error::Error + 'static), errno: i32) -> bool {
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

impl Error {
    /// [`Error::UnknownAbi`] for the owner record `o` found on `iface`.
    pub fn unknown_abi(iface: &str, o: &impair_common::Owner) -> Self {
        Error::UnknownAbi {
            iface: iface.to_owned(),
            hook: o.hook_name(),
            pid: o.pid,
            pinned: o.flags & impair_common::owner_flags::PINNED != 0,
            found: o.abi(),
            oldest: impair_common::ABI_VERSION_OLDEST,
            newest: impair_common::ABI_VERSION,
        }
    }
}
