//! How the command line words the engine's refusals: with its flag names
//! and what to do instead. The engine's own `Display` names no flag; the
//! error printer in main downcasts [`Error`] and prints [`engine_error`] as
//! one line with exit code 2, like every other usage error.
use impair::engine::{EgressOnly, Error};

/// The refusal in the command line's words.
pub(crate) fn engine_error(e: &Error) -> String {
    {
        match e {
            Error::InvalidInterfaceName { iface } => {
                format!("invalid interface name '{iface}': 1-15 characters, no '/'")
            }
            Error::NoSuchInterface { iface } => {
                let elsewhere = impair::netns::holding_interface(iface);
                if elsewhere.is_empty() {
                    format!(
                        "unknown interface '{iface}': no such device in this network namespace (see `ip link`)"
                    )
                } else {
                    format!(
                        "unknown interface '{iface}' in this network namespace; it exists in network \
                         namespace {}: add --netns {} (e.g. impair --netns {} attach {iface} ...)",
                        elsewhere.join(", "),
                        elsewhere[0],
                        elsewhere[0]
                    )
                }
            }
            Error::NotRoot => {
                "permission denied: impair needs root (CAP_BPF and CAP_NET_ADMIN) to attach".into()
            }
            Error::PermissionDenied => {
                "permission denied: impair needs root (CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)".into()
            }
            Error::TcxUnsupported => {
                "--attach-mode tcx needs Linux 6.6 or newer; use netlink (clsact) or auto".into()
            }
            Error::CgroupAtIngress => "matching a cgroup (impair run) on received traffic needs --hook tc: XDP \
                                       programs have no bpf_sk_cgroup_id helper"
                .into(),
            Error::EgressOnlyAtIngress(what) => {
                let flag = match what {
                    EgressOnly::Delay => "--delay",
                    EgressOnly::Jitter => "--jitter",
                    EgressOnly::Distribution => "--distribution",
                    EgressOnly::DelayCorrelation => "--delay-corr",
                    EgressOnly::InOrder => "--in-order",
                    EgressOnly::Reorder => "--reorder",
                    EgressOnly::Duplicate => "--duplicate",
                    EgressOnly::Shaping => "--rate (shaping)",
                };
                format!(
                    "{flag} is impossible at ingress here (XDP, --direction both, or an ingress instance \
                     attached without an ifb): delay, jitter and reordering need a queue that holds packets, \
                     and duplicates are sent through one; use --hook tc with --direction ingress (received \
                     traffic then goes through an ifb device impair owns; Linux 6.4+), or detach and attach \
                     again to add them. XDP does loss, --ecn, --corrupt, --mtu, --blackhole and --rate (as a \
                     policer)"
                )
            }
            Error::IngressHoldNeedsLinux64 {
                what: EgressOnly::Shaping,
                release,
            } => format!(
                "--rate on received traffic shapes through an ifb device, which needs Linux 6.4 or newer \
                 (bpf_redirect to an ifb; this is {release}): add --police to drop what exceeds the rate's \
                 burst at the hook instead; nothing was changed"
            ),
            Error::IngressHoldNeedsLinux64 { .. } => e.to_string(),
            Error::RateInBothDirections => "--rate with --direction both would make the two directions share \
                                            one emulated link (egress pacing and ingress policing on the same \
                                            state): attach egress and ingress separately, one `impair attach` \
                                            each"
                .into(),
            Error::AlreadyImpaired {
                iface,
                hook,
                pid,
                pinned,
                label,
            } => format!(
                "{iface} is already impaired at {hook} by impair (pid {pid}{}, '{label}'): stop it or run \
                 `impair detach {iface}` first",
                if *pinned { ", pinned" } else { "" },
            ),
            Error::XdpBusy { iface } => format!(
                "{iface} already has an XDP program that is not this impair's: impair will not replace \
                 it (remove it, or use --hook tc); nothing was changed"
            ),
            Error::NoNativeXdp { iface } => format!(
                "the driver of {iface} has no native XDP support: use --xdp-mode generic or auto; \
                 nothing was changed"
            ),
            Error::ConfiguredRootQdisc {
                iface,
                kind,
                handle,
            } => format!(
                "{iface} has a configured root qdisc ({kind} {handle}); delay and rate need fq as the root and \
                 impair will not destroy your configuration: remove it (tc qdisc del dev {iface} root) or use fq"
            ),
            // Its own words name no flag: the engine's text is the line.
            e @ Error::UnknownAbi { .. } => e.to_string(),
            Error::NoFq { said } => {
                tracing::debug!("tc said: {said}");
                "delay and rate need the fq qdisc (sch_fq), which this kernel lacks: load its module \
                 (`modprobe sch_fq`) or use a kernel built with CONFIG_NET_SCH_FQ; nothing was changed. \
                 Loss, corruption, duplication, ECN and MTU work without it, and a --rate on received \
                 traffic with --police; `impair doctor` lists what this kernel supports"
                    .into()
            }
        }
    }
}

/// A model error in the command line's words (`--loss-model`, `--rate`).
pub(crate) fn flags(e: impair::model::ModelError) -> impair::input::UsageError {
    impair::input::UsageError(e.render(&|f: impair::model::Field| format!("--{}", f.key())))
}

/// The one line a usage-class error prints (exit code 2): bad input, or a
/// refusal of the engine; `None` for every other failure (exit code 1).
pub(crate) fn usage_line(e: &anyhow::Error) -> Option<String> {
    if let Some(u) = e.downcast_ref::<impair::input::UsageError>() {
        return Some(u.to_string());
    }
    if let Some(m) = e.downcast_ref::<impair::model::ModelError>() {
        return Some(flags(m.clone()).0);
    }
    e.downcast_ref::<Error>().map(engine_error)
}

/// Writes `bytes` to stdout. A reader that closed the pipe early
/// (`impair man | head`) has all it wanted: that ends the output quietly,
/// not with a panic or an error.
pub(crate) fn print_all(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// netem's keywords, which impair spells as flags.
const NETEM_WORDS: &[&str] = &[
    "delay",
    "loss",
    "rate",
    "corrupt",
    "duplicate",
    "reorder",
    "jitter",
    "distribution",
    "limit",
    "slot",
    "ecn",
    "gemodel",
    "state",
];

/// A hint for syntax users bring from tc netem or comcast, when `args` (the
/// command line without the program name) has it.
pub(crate) fn hint_for_foreign_syntax(args: &[String]) -> Option<String> {
    // Only the verbs that take impairments (after a global `--netns NS`).
    let verb = args
        .iter()
        .enumerate()
        .find(|(i, a)| {
            !a.starts_with('-')
                && (*i == 0
                    || !matches!(
                        args[i - 1].as_str(),
                        "--netns" | "--container" | "--runtime-socket"
                    ))
        })
        .map(|(i, a)| (i, a.as_str()));
    let Some((at, "attach" | "update" | "run")) = verb else {
        return None;
    };
    for (i, a) in args.iter().enumerate().skip(at + 1) {
        let next = args.get(i + 1).map(String::as_str).unwrap_or("");
        // netem's positional words: `impair attach eth0 delay 100ms`.
        if NETEM_WORDS.contains(&a.as_str()) && i >= at + 2 {
            return Some(
                format!(
                    "impair spells netem's words as flags: write --{a} {next}",
                    next = if next.starts_with('-') { "" } else { next }
                )
                .trim_end()
                .to_owned(),
            );
        }
        // netem's loss correlation: `--loss 10% 25%`.
        if a == "--loss"
            && args
                .get(i + 2)
                .is_some_and(|c| c.ends_with('%') && !c.starts_with('-'))
        {
            return Some(
                "impair has no loss correlation (netem's changes the loss rate itself): for bursts \
                 use --loss-model ge:P,R (Gilbert-Elliott), see impair attach --help"
                    .into(),
            );
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netem_and_comcast_syntax_gets_a_hint() {
        let v = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let h = hint_for_foreign_syntax(&v("attach eth0 delay 100ms")).unwrap();
        assert!(h.contains("--delay 100ms"), "{h}");
        let h = hint_for_foreign_syntax(&v("attach eth0 --loss 10% 25%")).unwrap();
        assert!(h.contains("--loss-model"), "{h}");
        assert_eq!(hint_for_foreign_syntax(&v("attach eth0 --loss 10%")), None);
        assert_eq!(hint_for_foreign_syntax(&v("profiles show loss")), None);
    }

    #[test]
    fn refusals_become_the_usage_lines_the_cli_printed_before() {
        assert_eq!(
            engine_error(&Error::TcxUnsupported),
            "--attach-mode tcx needs Linux 6.6 or newer; use netlink (clsact) or auto"
        );
        let e = anyhow::Error::new(Error::EgressOnlyAtIngress(EgressOnly::Jitter));
        let line = usage_line(&e).expect("a usage error");
        assert!(
            line.starts_with("--jitter is impossible at ingress"),
            "{line}"
        );
        let wrapped = e.context("attaching");
        assert!(usage_line(&wrapped).is_some(), "found through context");
        assert!(usage_line(&anyhow::anyhow!("netlink said no")).is_none());
        // The library's own wording names no flag.
        for e in [
            Error::TcxUnsupported,
            Error::RateInBothDirections,
            Error::EgressOnlyAtIngress(EgressOnly::InOrder),
            Error::NoNativeXdp { iface: "x".into() },
            Error::XdpBusy { iface: "x".into() },
        ] {
            assert!(!e.to_string().contains("--"), "{e}");
        }
    }
}
