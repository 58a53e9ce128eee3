//! The fq root qdisc that releases packets at their departure time.
//!
//! Delay and rate work by setting `skb->tstamp`; only an EDT-aware qdisc (fq)
//! holds a packet until then. impair installs fq as the root qdisc (mq with
//! one fq per transmit queue on multiqueue devices) when a rule needs it, sized
//! for the longest hold, and on detach waits for fq to drain and deletes it,
//! which gives the device back its default qdisc.
//!
//! Only a kernel-default root (handle `0:`, e.g. `noqueue`, `mq`,
//! `pfifo_fast`, `fq_codel` from `net.core.default_qdisc`) is replaced: its
//! configuration is "none", so deleting impair's root restores it exactly. A
//! root someone configured (`htb 1:`…) is refused rather than destroyed, and a
//! root that is already fq is used as it is and left alone.
//!
//! iproute2's `tc` does the work: it is on every host that can run impair and
//! its error messages are the ones users know. (The clsact qdisc, by
//! contrast, is added and deleted through netlink: `link/clsact.rs`. fq
//! stays with `tc`: mq with one fq per queue, fq's options and the drain
//! wait's backlog are what `tc -j` already parses.)
use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};

use super::error::Error;

/// What impair did to the root qdisc, so detach can undo exactly that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FqState {
    /// impair replaced a kernel-default root with its fq (or mq + fq).
    Installed,
    /// The root was already fq: impair uses it and never touches it.
    Existing,
}

fn tc(args: &[&str]) -> Result<String> {
    let out = Command::new("tc")
        .args(args)
        .output()
        .context("running tc (iproute2)")?;
    if !out.status.success() {
        bail!(
            "tc {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The handle of the root qdisc impair installs (fq, or mq over one fq per
/// queue): 0x494d, "IM". The qdisc is its own record that impair put it
/// there, so a controller killed before it recorded anything else (with
/// tcx, nothing of it outlives it) still leaves a root the next impair
/// command recognises and removes ([`super::leftover::remove_orphan_fq`]).
pub const ROOT_HANDLE: &str = "494d:";

/// Whether `(kind, handle)` is a root qdisc impair installed.
pub fn is_impairs_root(kind: &str, handle: &str) -> bool {
    (kind == "fq" || kind == "mq") && handle == ROOT_HANDLE
}

/// The root qdisc of `iface`: (kind, handle).
pub fn root_qdisc(iface: &str) -> Result<(String, String)> {
    let json = tc(&["-j", "qdisc", "show", "dev", iface, "root"])?;
    let v: serde_json::Value =
        serde_json::from_str(json.trim()).context("parsing tc -j qdisc output")?;
    let root = v
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|q| q.get("root").and_then(|r| r.as_bool()) == Some(true))
                .or(a.first())
        })
        .ok_or_else(|| anyhow!("{iface} has no root qdisc"))?;
    let kind = root
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("")
        .to_owned();
    let handle = root
        .get("handle")
        .and_then(|k| k.as_str())
        .unwrap_or("")
        .to_owned();
    Ok((kind, handle))
}

/// Transmit queues of `iface` (from `ip -d link`, which works in any netns).
fn tx_queues(iface: &str) -> Result<u32> {
    let out = Command::new("ip")
        .args(["-j", "-d", "link", "show", "dev", iface])
        .output()
        .context("running ip")?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing ip -j link output")?;
    Ok(v.get(0)
        .and_then(|l| l.get("num_tx_queues"))
        .and_then(|n| n.as_u64())
        .unwrap_or(1) as u32)
}

/// fq parameters sized for packets held up to `max_hold_ns`: at an assumed
/// ceiling of 1 Mpps, everything held must fit in `limit`, and one flow may
/// hold all of it (fq's default flow_limit of 100 would silently drop); the
/// horizon covers the hold plus a second, and drops beyond it.
pub fn fq_params(max_hold_ns: u64) -> Vec<String> {
    let hold_s = max_hold_ns as f64 / 1e9;
    let limit = ((hold_s * 1_000_000.0 * 1.5) as u64).clamp(10_000, 1_000_000);
    let horizon_us = max_hold_ns / 1_000 + 1_000_000;
    vec![
        "limit".into(),
        limit.to_string(),
        "flow_limit".into(),
        limit.to_string(),
        "horizon".into(),
        format!("{horizon_us}us"),
        "horizon_drop".into(),
    ]
}

/// Makes fq the root qdisc of `iface` for packets held up to `max_hold_ns`.
/// Refuses (changing nothing) when the kernel has no sch_fq or the root is
/// someone's configuration.
pub fn ensure_fq(iface: &str, max_hold_ns: u64) -> Result<FqState> {
    let (kind, handle) = root_qdisc(iface)?;
    if kind == "fq" {
        tracing::warn!(iface, "using the existing fq root qdisc as it is; its limits may be too small for long delays");
        return Ok(FqState::Existing);
    }
    if handle != "0:" {
        return Err(Error::ConfiguredRootQdisc {
            iface: iface.to_owned(),
            kind,
            handle,
        }
        .into());
    }
    let params = fq_params(max_hold_ns);
    let p: Vec<&str> = params.iter().map(String::as_str).collect();
    let queues = tx_queues(iface)?;
    let result = if queues > 1 {
        tc(&[
            "qdisc",
            "replace",
            "dev",
            iface,
            "root",
            "handle",
            ROOT_HANDLE,
            "mq",
        ])
        .and_then(|_| {
            for q in 1..=queues {
                let parent = format!("{ROOT_HANDLE}{q:x}");
                let mut args = vec!["qdisc", "replace", "dev", iface, "parent", &parent, "fq"];
                args.extend(&p);
                tc(&args)?;
            }
            Ok(())
        })
    } else {
        let mut args = vec![
            "qdisc",
            "replace",
            "dev",
            iface,
            "root",
            "handle",
            ROOT_HANDLE,
            "fq",
        ];
        args.extend(&p);
        tc(&args).map(|_| ())
    };
    if let Err(e) = result {
        // Put the default back if mq went in but an fq did not.
        if root_qdisc(iface)
            .map(|(k, h)| k != kind || h != handle)
            .unwrap_or(false)
        {
            let _ = tc(&["qdisc", "del", "dev", iface, "root"]);
        }
        let text = format!("{e:#}");
        if text.contains("unknown") || text.contains("No such file") {
            return Err(anyhow!(Error::NoFq {
                said: text.lines().last().unwrap_or("").trim().to_owned(),
            }));
        }
        return Err(e.context(format!("installing fq on {iface}")));
    }
    Ok(FqState::Installed)
}

/// Resizes impair's fq (root or under mq) for packets held up to
/// `max_hold_ns`, in place (`tc qdisc change`: no packet is lost), when a live
/// update holds packets longer than the attach did.
pub fn resize_fq(iface: &str, max_hold_ns: u64) -> Result<()> {
    let params = fq_params(max_hold_ns);
    let p: Vec<&str> = params.iter().map(String::as_str).collect();
    let json = tc(&["-j", "qdisc", "show", "dev", iface])?;
    let v: serde_json::Value =
        serde_json::from_str(json.trim()).context("parsing tc -j qdisc output")?;
    for q in v.as_array().into_iter().flatten() {
        if q.get("kind").and_then(|k| k.as_str()) != Some("fq") {
            continue;
        }
        let mut args = vec!["qdisc", "change", "dev", iface];
        let parent;
        if q.get("root").and_then(|r| r.as_bool()) == Some(true) {
            args.push("root");
        } else if let Some(par) = q.get("parent").and_then(|p| p.as_str()) {
            parent = par.to_owned();
            args.extend(["parent", parent.as_str()]);
        } else {
            continue;
        }
        args.push("fq");
        args.extend(&p);
        tc(&args)?;
    }
    Ok(())
}

/// Undoes `ensure_fq`: waits (up to `drain`) for packets still held in fq to
/// leave, then deletes impair's root so the device gets its default back.
pub fn restore(iface: &str, state: &FqState, drain: Duration) -> Result<()> {
    if *state == FqState::Existing {
        return Ok(());
    }
    let deadline = Instant::now() + drain;
    while Instant::now() < deadline {
        let stats = tc(&["-j", "-s", "qdisc", "show", "dev", iface])?;
        let v: serde_json::Value = serde_json::from_str(stats.trim()).unwrap_or_default();
        let backlog: u64 = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|q| q.get("qlen").and_then(|b| b.as_u64()))
                    .sum()
            })
            .unwrap_or(0);
        if backlog == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tc(&["qdisc", "del", "dev", iface, "root"]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fq_is_sized_for_the_hold_and_never_below_defaults() {
        let p = fq_params(0);
        assert_eq!(p[1], "10000");
        assert_eq!(p[3], p[1], "one flow may hold everything");
        let p = fq_params(2_000_000_000);
        assert_eq!(p[1], "1000000", "capped");
        let p = fq_params(100_000_000);
        assert_eq!(p[1], "150000");
        assert_eq!(p[5], "1100000us");
        assert_eq!(p[6], "horizon_drop");
    }
}
