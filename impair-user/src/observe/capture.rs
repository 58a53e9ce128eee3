//! The record of impaired packets, read: turns capture on in a running
//! instance (its record cost in `CONTROL`), drains its `IMPAIR_CAPTURE` ring
//! buffer into a pcapng file, one packet per record with the decision as the
//! packet's comment, and turns it off again, reporting what the data path
//! recorded and what its budget or a full ring made it skip
//! (`impair_common::capture`, docs/map-abi.md "Capture").
//!
//! Works on any instance `discover` finds (the controller's own, another
//! process's, a pinned one): the maps are opened by name through the
//! instance's program. An instance of an impair without capture has no ring:
//! [`Capture::start`] says so.
//!
//! A two-way link is two instances (uplink at egress, downlink at ingress),
//! each with its own ring: [`Capture::start`] takes both and writes one
//! file, one pcapng interface per instance (`if_description` names its
//! direction), and every record's comment says `direction=egress` (sent
//! traffic) or `direction=ingress` (received). Received traffic that goes
//! through an ifb is decided at the ifb's egress: its hook reads
//! `hook=ifb-egress`.
//!
//! The data path's counters of the record (what it wrote, what the budget
//! or a full ring made it skip) are also read by `impair stats`
//! ([`stats`]): since the instance was attached, over every capture.
use std::{fs::File, io::BufWriter, path::Path};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{Array, Map, MapData, MapInfo, PerCpuArray, RingBuf},
    programs::loaded_programs,
};
use impair_common::{
    capture::{self, action, Counters, Record, SNAP_BYTES},
    map_names, owner_flags, CONTROL_CAPTURE_COST_NS,
};

use super::pcapng::{Interface, PcapngWriter, LINKTYPE_ETHERNET, LINKTYPE_RAW};
use crate::{discover::Instance, maps::Maps, sys};

/// The default budget: records per second per CPU.
pub const DEFAULT_PER_CPU_PER_SEC: u64 = 10_000;

/// What a capture recorded, from the data path's counters over the capture
/// (summed over CPUs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Records written to the file.
    pub written: u64,
    /// Impaired packets the data path recorded (equals `written` unless a
    /// record was malformed).
    pub recorded: u64,
    /// Impaired packets not recorded: the per-CPU budget was spent.
    pub over_budget: u64,
    /// Impaired packets not recorded: the ring was full.
    pub ring_full: u64,
}

impl Summary {
    pub fn not_recorded(&self) -> u64 {
        self.over_budget + self.ring_full
    }
}

/// The record's counters of one instance, for `impair stats`: summed over
/// CPUs, since the instance was attached (every capture of it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CaptureStats {
    /// A capture is recording now (`impair capture` or `attach --capture`).
    pub active: bool,
    /// Its budget, records per second per CPU (0 while none records).
    pub max_per_cpu_per_sec: u64,
    /// Impaired packets written to the ring (and from there to the file).
    pub recorded: u64,
    /// Impaired packets not recorded: the per-CPU budget was spent.
    pub over_budget: u64,
    /// Impaired packets not recorded: the ring was full.
    pub ring_full: u64,
}

impl CaptureStats {
    pub fn not_recorded(&self) -> u64 {
        self.over_budget + self.ring_full
    }
}

/// The instance's record counters, or `None` when no capture has run on it
/// (capture off and nothing counted).
pub fn stats(maps: &Maps) -> Result<Option<CaptureStats>> {
    let cost_ns = maps.control.get(&CONTROL_CAPTURE_COST_NS, 0)?;
    let c = sum(&maps.capture_counters)?;
    if cost_ns == 0 && c == Counters::default() {
        return Ok(None);
    }
    Ok(Some(CaptureStats {
        active: cost_ns != 0,
        max_per_cpu_per_sec: 1_000_000_000u64.checked_div(cost_ns).unwrap_or(0),
        recorded: c.recorded,
        over_budget: c.over_budget,
        ring_full: c.ring_full,
    }))
}

/// The line `impair stats` prints for it.
pub fn render(s: &CaptureStats) -> String {
    format!(
        "  capture: {}; recorded {}  not recorded {} (over the per-CPU budget {}, ring full {})",
        if s.active {
            format!("on, at most {} per second per CPU", s.max_per_cpu_per_sec)
        } else {
            "off".to_owned()
        },
        s.recorded,
        s.not_recorded(),
        s.over_budget,
        s.ring_full
    )
}

/// Which traffic a source instance impairs: its records' `direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Sent traffic only (tc egress).
    Egress,
    /// Received traffic only (tc ingress, XDP, or an ifb's egress).
    Ingress,
    /// One instance on both hooks: each record's hook says which.
    Both,
}

impl Side {
    fn of(inst: &Instance) -> Self {
        match (inst.egress(), inst.ingress()) {
            (true, true) => Side::Both,
            (false, true) => Side::Ingress,
            _ => Side::Egress,
        }
    }

    fn description(self) -> &'static str {
        match self {
            Side::Egress => "impair egress (sent traffic)",
            Side::Ingress => "impair ingress (received traffic)",
            Side::Both => "impair egress and ingress",
        }
    }
}

/// One instance being captured: its maps, and its interface in the file.
struct Source {
    ring: RingBuf<MapData>,
    control: Array<MapData, u64>,
    counters: PerCpuArray<MapData, Counters>,
    base: Counters,
    side: Side,
    /// Received traffic goes through an ifb: records of hook tc-egress are
    /// the ifb's.
    ifb: bool,
    stopped: bool,
}

/// A capture in progress.
pub struct Capture {
    sources: Vec<Source>,
    out: PcapngWriter<BufWriter<File>>,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC, ns: the records' clock to the file's.
    unix_minus_mono_ns: i128,
    written: u64,
}

/// The maps named `names` of the program with id `prog_id`, in that order.
fn maps_of(prog_id: u32, names: &[&str]) -> Result<Vec<Map>> {
    let info = loaded_programs()
        .flatten()
        .find(|p| p.id() == prog_id)
        .ok_or_else(|| anyhow!("the instance's program {prog_id} is gone"))?;
    let ids = info
        .map_ids()
        .context("listing the program's maps")?
        .unwrap_or_default();
    let mut found: Vec<Option<Map>> = names.iter().map(|_| None).collect();
    for id in ids {
        let Some(name) = MapInfo::from_id(id)
            .ok()
            .and_then(|i| i.name_as_str().map(str::to_owned))
        else {
            continue;
        };
        if let Some(i) = names.iter().position(|n| *n == name) {
            let data = MapData::from_id(id).with_context(|| format!("opening map {name}"))?;
            found[i] = Some(Map::from_map_data(data)?);
        }
    }
    found
        .into_iter()
        .zip(names)
        .map(|(m, n)| {
            m.ok_or_else(|| {
                anyhow!("the instance has no map {n}: it was attached by an impair without capture")
            })
        })
        .collect()
}

fn sum(counters: &PerCpuArray<MapData, Counters>) -> Result<Counters> {
    let mut total = Counters::default();
    for c in counters.get(&0, 0)?.iter() {
        total.add(c);
    }
    Ok(total)
}

/// The file's link type for `iface`: Ethernet unless the device has no
/// link-layer header (ARPHRD_NONE, tun: frames start at IP).
fn linktype(iface: &str) -> u16 {
    // The device in this thread's namespace (an ioctl; /sys would show the
    // namespace sysfs was mounted in). Unknown reads as Ethernet.
    match crate::sys::link_type(iface) {
        Ok(t) if t != libc::ARPHRD_ETHER => LINKTYPE_RAW,
        _ => LINKTYPE_ETHERNET,
    }
}

/// The direction a record of an instance impairing `side` is in.
fn direction(r: &Record, side: Side) -> &'static str {
    match side {
        Side::Egress => "egress",
        Side::Ingress => "ingress",
        Side::Both if r.hook == capture::hook::TC_EGRESS => "egress",
        Side::Both => "ingress",
    }
}

/// The comment a record's packet carries in the file: the record of an
/// instance impairing `side` (`ifb`: through an ifb).
pub fn comment(r: &Record, side: Side, ifb: bool, unix_minus_mono_ns: i128) -> String {
    let actions: Vec<&str> = action::NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| r.actions & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect();
    let hook = match r.hook {
        capture::hook::TC_EGRESS if ifb => "ifb-egress",
        capture::hook::TC_EGRESS => "tc-egress",
        capture::hook::TC_INGRESS => "tc-ingress",
        capture::hook::XDP => "xdp",
        _ => "unknown",
    };
    let mut s = format!(
        "impair rule={} actions={} hook={hook} direction={}",
        r.rule,
        actions.join(","),
        direction(r, side)
    );
    if r.departure_ns != 0 {
        let delay_ns = r.departure_ns.saturating_sub(r.decided_ns);
        let departure_unix_ns = (r.departure_ns as i128 + unix_minus_mono_ns).max(0);
        s += &format!(" delay_ns={delay_ns} departure_unix_ns={departure_unix_ns}");
    }
    s
}

/// A record from the ring's bytes (`None` if it is too short).
fn parse(bytes: &[u8]) -> Option<Record> {
    if bytes.len() < std::mem::size_of::<Record>() {
        return None;
    }
    // SAFETY: `bytes` holds at least one Record, which is plain old data
    // (integers and bytes; every bit pattern valid); read_unaligned copes
    // with any alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Record>()) })
}

impl Source {
    fn open(inst: &Instance) -> Result<Self> {
        let mut maps = maps_of(
            inst.prog_id,
            &[capture::MAP_RING, capture::MAP_COUNTERS, map_names::CONTROL],
        )?
        .into_iter();
        let (Some(ring), Some(counters), Some(control)) = (maps.next(), maps.next(), maps.next())
        else {
            bail!("the instance's capture maps are incomplete");
        };
        let ring = RingBuf::try_from(ring).context("the capture ring")?;
        let counters = PerCpuArray::try_from(counters).context("the capture counters")?;
        let control: Array<MapData, u64> = Array::try_from(control).context("the control map")?;
        Ok(Self {
            ring,
            control,
            base: Counters::default(),
            counters,
            side: Side::of(inst),
            ifb: inst.owner.flags & owner_flags::IFB != 0,
            stopped: true,
        })
    }

    fn stop(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.stopped, true) {
            return Ok(());
        }
        self.control
            .set(CONTROL_CAPTURE_COST_NS, 0, 0)
            .context("turning capture off")?;
        Ok(())
    }
}

impl Capture {
    /// Starts recording the impaired packets of `insts` (on `iface`: one
    /// instance, or both of a two-way link) into a new pcapng file at
    /// `path`, at most `per_cpu_per_sec` records per second on each CPU of
    /// each instance (with a burst of one second's worth).
    pub fn start(
        insts: &[&Instance],
        iface: &str,
        path: &Path,
        per_cpu_per_sec: u64,
    ) -> Result<Self> {
        if per_cpu_per_sec == 0 {
            bail!("the capture budget must be at least 1 packet per second");
        }
        if insts.is_empty() {
            bail!("no instance to capture on {iface}");
        }
        let mut sources = insts
            .iter()
            .map(|i| Source::open(i))
            .collect::<Result<Vec<_>>>()?;
        for s in &sources {
            if s.control.get(&CONTROL_CAPTURE_COST_NS, 0)? != 0 {
                // A capture that was killed leaves its cost set; a live one
                // would share the ring with us, so records would go missing.
                tracing::warn!(
                    iface,
                    "capture was already on (another `impair capture`, or one that was killed): taking it over"
                );
            }
        }
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let linktype = linktype(iface);
        let interfaces: Vec<Interface<'_>> = sources
            .iter()
            .map(|s| Interface {
                name: iface,
                description: s.side.description(),
                linktype,
            })
            .collect();
        let out = PcapngWriter::new(BufWriter::new(file), &interfaces, SNAP_BYTES)
            .with_context(|| format!("writing {}", path.display()))?;
        let unix_minus_mono_ns = sys::unix_ns() as i128 - sys::monotonic_ns() as i128;
        let cost_ns = capture::cost_ns(per_cpu_per_sec);
        for s in &mut sources {
            // Records a previous capture left are not this one's.
            while s.ring.next().is_some() {}
            s.base = sum(&s.counters)?;
        }
        let mut cap = Self {
            sources,
            out,
            unix_minus_mono_ns,
            written: 0,
        };
        for s in &mut cap.sources {
            s.control
                .set(CONTROL_CAPTURE_COST_NS, cost_ns, 0)
                .context("turning capture on")?;
            s.stopped = false;
        }
        Ok(cap)
    }

    /// Moves the records in the rings to the file; returns how many.
    pub fn poll(&mut self) -> Result<u64> {
        let mut n = 0;
        for (if_id, s) in self.sources.iter_mut().enumerate() {
            while let Some(item) = s.ring.next() {
                let Some(r) = parse(&item) else {
                    continue;
                };
                drop(item);
                let snap = (r.snap_len as usize).min(r.data.len());
                let ts = (r.decided_ns as i128 + self.unix_minus_mono_ns).max(0) as u64;
                self.out
                    .packet(
                        if_id as u32,
                        ts,
                        &r.data[..snap],
                        r.frame_len,
                        &comment(&r, s.side, s.ifb, self.unix_minus_mono_ns),
                    )
                    .context("writing the capture file")?;
                n += 1;
            }
        }
        self.written += n;
        Ok(n)
    }

    /// Turns capture off, writes what is left and closes the file.
    pub fn finish(mut self) -> Result<Summary> {
        self.stop()?;
        self.poll()?;
        self.out.flush().context("writing the capture file")?;
        let mut s = Summary {
            written: self.written,
            ..Summary::default()
        };
        for src in &self.sources {
            let now = sum(&src.counters)?;
            s.recorded += now.recorded - src.base.recorded;
            s.over_budget += now.over_budget - src.base.over_budget;
            s.ring_full += now.ring_full - src.base.ring_full;
        }
        Ok(s)
    }

    fn stop(&mut self) -> Result<()> {
        let mut was_on = false;
        let mut first_err = None;
        for s in &mut self.sources {
            was_on |= !s.stopped;
            if let Err(e) = s.stop() {
                first_err.get_or_insert(e);
            }
        }
        if was_on {
            // A program that read the cost before it changed may still be
            // writing its record: give it time to land (programs run in
            // microseconds).
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Capture {
    /// Never leaves capture on (an error path, a panic unwinding).
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!("turning capture off: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_name_the_decision() {
        let r = Record {
            decided_ns: 1_000,
            departure_ns: 11_000,
            rule: 2,
            actions: action::DELAY | action::DUPLICATE,
            hook: capture::hook::TC_EGRESS,
            frame_len: 60,
            snap_len: 60,
            _pad: 0,
            data: [0; SNAP_BYTES as usize],
        };
        assert_eq!(
            comment(&r, Side::Egress, false, 5),
            "impair rule=2 actions=duplicate,delay hook=tc-egress direction=egress delay_ns=10000 departure_unix_ns=11005"
        );
        // Received traffic through an ifb is decided at the ifb's egress.
        assert!(comment(&r, Side::Ingress, true, 5).contains(" hook=ifb-egress direction=ingress "));
        let r = Record {
            departure_ns: 0,
            actions: action::DROP_LOSS,
            hook: capture::hook::XDP,
            ..r
        };
        assert_eq!(
            comment(&r, Side::Ingress, false, 5),
            "impair rule=2 actions=drop-loss hook=xdp direction=ingress"
        );
        // One instance on both hooks: the record's hook says which.
        assert!(comment(&r, Side::Both, false, 5).ends_with(" direction=ingress"));
        let r = Record {
            hook: capture::hook::TC_EGRESS,
            ..r
        };
        assert!(comment(&r, Side::Both, false, 5).ends_with(" direction=egress"));
    }
}
