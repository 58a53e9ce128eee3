//! Command-line interface (clap). Each subcommand is a thin layer over the
//! library: parsing and messages here, behaviour in the modules.
use std::{
    io::{IsTerminal as _, Write as _},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;

use crate::{
    discover,
    dist::Distribution,
    engine::{AttachMode, AttachOptions, Direction, Engine, HookOptions, IngressHook, XdpMode},
    input::{self, usage, LossModelSpec, Proto, QueueLimit},
    profiles,
    rules::{CorruptMode, DelaySpec, MatchSpec, RateSpec, RuleSpec},
    stats::Snapshot,
    sys,
};

const EXAMPLES: &str = "\
Examples:
  impair attach eth1 --loss 10%                 drop 10% of everything leaving eth1
  impair attach eth1 --loss 1% --dst 198.18.2.0/24 --proto udp --dport 5000-5010
  impair attach eth1 --corrupt 0.1% --corrupt-mode silent --duplicate 1%
  impair attach eth1 --mtu 1280 --proto tcp     an MTU blackhole for TCP
  impair attach eth1 --loss-model ge:1%,30%      Gilbert-Elliott bursts (mean 3.2% loss)
  impair attach eth1 --delay 100ms --jitter 10ms --distribution normal --in-order
  impair attach eth1 --rate 10mbit --queue 50ms  EDT pacing with a 50 ms queue
  impair attach eth1 --profile lossy
  impair attach eth1 --direction ingress --loss 5%  traffic arriving on eth1
  impair attach eth1 --direction ingress --hook xdp --rate 2mbit
                                                an XDP policer with a 10 ms burst
  impair stats eth1 --json                      counters of the running instance
  impair status                                 what is attached where
  impair demo                                   a 3-namespace lab, end to end";

#[derive(Parser, Debug)]
#[command(name = "impair", version, about = "Line-rate network impairment in eBPF: loss, corruption, duplication, ECN, MTU blackholes, per flow, with exact counters", after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Impair traffic leaving (or, with --direction, arriving on) IFACE until
    /// Ctrl-C/SIGTERM/SIGHUP, then restore it.
    Attach(Box<AttachArgs>),
    /// Print the counters of the instance on IFACE (from any shell).
    Stats(StatsArgs),
    /// List instances in this network namespace (--all-namespaces: everywhere):
    /// interface, owner, mode, and leftovers of dead controllers.
    Status(StatusArgs),
    /// Stop the instance on IFACE (signals its controller) or remove a leftover.
    Detach(DetachArgs),
    /// Build a client → router → server namespace lab, impair the router, measure, clean up.
    Demo(crate::demo::DemoArgs),
}

fn percent(s: &str) -> Result<f64, String> {
    input::parse_percent("percentage", s).map_err(|e| e.0)
}
fn delay(s: &str) -> Result<u64, String> {
    input::parse_duration_ns("time", s).map_err(|e| e.0)
}
fn rate(s: &str) -> Result<u64, String> {
    input::parse_rate_bps(s).map_err(|e| e.0)
}
fn queue(s: &str) -> Result<QueueLimit, String> {
    input::parse_queue(s).map_err(|e| e.0)
}
fn cell(s: &str) -> Result<(u32, i32), String> {
    let bad = || {
        format!("invalid cell '{s}': expected SIZE or SIZE/OVERHEAD in bytes, e.g. 48/5 for ATM")
    };
    let (size, over) = match s.split_once('/') {
        Some((a, b)) => (
            a.trim().parse::<u32>().map_err(|_| bad())?,
            b.trim().parse::<i32>().map_err(|_| bad())?,
        ),
        None => (s.trim().parse::<u32>().map_err(|_| bad())?, 0),
    };
    if size == 0 {
        return Err(bad());
    }
    Ok((size, over))
}
fn distribution(s: &str) -> Result<Distribution, String> {
    match s.parse::<Distribution>() {
        Ok(d) => Ok(d),
        Err(_) if std::path::Path::new(s).exists() => {
            Distribution::from_file(s).map_err(|e| format!("{e:#}"))
        }
        Err(e) => Err(format!("{e}")),
    }
}
fn loss_model(s: &str) -> Result<LossModelSpec, String> {
    input::parse_loss_model(s).map_err(|e| e.0)
}
fn cidr(s: &str) -> Result<IpNet, String> {
    input::parse_cidr("prefix", s).map_err(|e| e.0)
}
/// `--proto` as parsed: `any` is `ProtoArg(None)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtoArg(pub Option<Proto>);

fn proto(s: &str) -> Result<ProtoArg, String> {
    input::parse_proto(s).map(ProtoArg).map_err(|e| e.0)
}
fn ports(s: &str) -> Result<(u16, u16), String> {
    input::parse_port_range("port", s).map_err(|e| e.0)
}

#[derive(Args, Debug, Clone, Default)]
pub struct MatchArgs {
    /// Only packets from this prefix (e.g. 198.18.1.0/24, 2001:2::/48).
    #[arg(long, value_parser = cidr, value_name = "CIDR")]
    pub src: Option<IpNet>,
    /// Only packets to this prefix.
    #[arg(long, value_parser = cidr, value_name = "CIDR")]
    pub dst: Option<IpNet>,
    /// Only this L4 protocol: tcp, udp, icmp, icmpv6, sctp, any, or a number.
    #[arg(long, value_parser = proto, value_name = "PROTO")]
    pub proto: Option<ProtoArg>,
    /// Only these source ports: N or A-B.
    #[arg(long, value_parser = ports, value_name = "PORTS")]
    pub sport: Option<(u16, u16)>,
    /// Only these destination ports: N or A-B.
    #[arg(long, value_parser = ports, value_name = "PORTS")]
    pub dport: Option<(u16, u16)>,
}

impl MatchArgs {
    pub fn spec(&self) -> MatchSpec {
        MatchSpec {
            src: self.src,
            dst: self.dst,
            proto: self.proto.and_then(|p| p.0),
            sport: self.sport,
            dport: self.dport,
        }
    }

    fn given(&self) -> bool {
        self.spec() != MatchSpec::default()
    }
}

fn mtu(s: &str) -> Result<u32, String> {
    s.trim()
        .parse::<u32>()
        .map_err(|_| format!("invalid MTU '{s}': expected a size in bytes such as 1280"))
}

/// Impairment flags, shared by the commands that set a rule.
#[derive(Args, Debug, Clone, Default)]
pub struct ImpairArgs {
    /// Independent loss probability, e.g. 10% or 0.5%.
    #[arg(long, value_parser = percent, value_name = "PERCENT", allow_hyphen_values = true)]
    pub loss: Option<f64>,
    /// Burst loss: ge:P[,R[,1-H[,1-K]]] (Gilbert-Elliott) or
    /// state:P13[,P31[,P32[,P23[,P14]]]] (4-state Markov), as tc netem's
    /// gemodel and state.
    #[arg(long, value_parser = loss_model, value_name = "MODEL", conflicts_with = "loss", allow_hyphen_values = true)]
    pub loss_model: Option<LossModelSpec>,
    /// CE-mark ECN-capable packets instead of dropping them (needs a loss).
    #[arg(long)]
    pub ecn: bool,
    /// Drop everything matched: a network partition.
    #[arg(long)]
    pub blackhole: bool,
    /// Drop IP packets longer than BYTES (broken path-MTU discovery).
    #[arg(long, value_parser = mtu, value_name = "BYTES")]
    pub mtu: Option<u32>,
    /// Probability of flipping one random payload bit.
    #[arg(long, value_parser = percent, value_name = "PERCENT", allow_hyphen_values = true)]
    pub corrupt: Option<f64>,
    /// detectable: the receiver's checksum drops it; silent: it reaches the application.
    #[arg(long, value_enum, default_value_t = CorruptMode::Detectable)]
    pub corrupt_mode: CorruptMode,
    /// Probability of sending one extra, clean copy.
    #[arg(long, value_parser = percent, value_name = "PERCENT", allow_hyphen_values = true)]
    pub duplicate: Option<f64>,
    /// Delay every packet, e.g. 100ms (needs the fq qdisc; impair installs it).
    #[arg(long, value_parser = delay, value_name = "TIME", allow_hyphen_values = true)]
    pub delay: Option<u64>,
    /// Jitter: half-width for uniform, one standard deviation for tables.
    #[arg(long, value_parser = delay, value_name = "TIME", allow_hyphen_values = true)]
    pub jitter: Option<u64>,
    /// Jitter distribution: uniform, normal, pareto, paretonormal, or a table
    /// file (iproute2 .dist, or one sample per line).
    #[arg(long, value_parser = distribution, value_name = "NAME|FILE")]
    pub distribution: Option<Distribution>,
    /// Delay correlation: the chance a packet repeats the previous jitter draw.
    #[arg(long, value_parser = percent, value_name = "PERCENT", allow_hyphen_values = true)]
    pub delay_corr: Option<f64>,
    /// Keep each flow in order despite jitter (departure times never decrease).
    #[arg(long)]
    pub in_order: bool,
    /// Probability that a packet skips the delay and overtakes (needs --delay).
    #[arg(long, value_parser = percent, value_name = "PERCENT", allow_hyphen_values = true)]
    pub reorder: Option<f64>,
    /// Rate limit: bit, kbit, mbit, gbit (or bps, kbps, mbps for bytes/s).
    #[arg(long, value_parser = rate, value_name = "RATE")]
    pub rate: Option<u64>,
    /// Bytes added to each packet for the rate (framing), may be negative.
    #[arg(
        long,
        value_name = "BYTES",
        allow_hyphen_values = true,
        requires = "rate"
    )]
    pub overhead: Option<i32>,
    /// Cell size for the rate, and per-cell overhead: SIZE[/OVERHEAD] (ATM: 48/5).
    #[arg(long, value_parser = cell, value_name = "SIZE[/OVERHEAD]", requires = "rate")]
    pub cell: Option<(u32, i32)>,
    /// Rate queue limit: a time (50ms), bytes (64kb) or packets (100p);
    /// beyond it packets are dropped and counted.
    #[arg(long, value_parser = queue, value_name = "LIMIT", requires = "rate")]
    pub queue: Option<QueueLimit>,
}

impl ImpairArgs {
    pub fn rule(&self, matcher: MatchSpec) -> RuleSpec {
        RuleSpec {
            matcher,
            loss: self.loss,
            loss_model: self.loss_model,
            ecn: self.ecn,
            blackhole: self.blackhole,
            mtu_bytes: self.mtu,
            corrupt: self.corrupt,
            corrupt_mode: self.corrupt_mode,
            duplicate: self.duplicate,
            delay: (self.delay.is_some()
                || self.jitter.is_some()
                || self.distribution.is_some()
                || self.in_order)
                .then(|| DelaySpec {
                    delay_ns: self.delay.unwrap_or(0),
                    jitter_ns: self.jitter.unwrap_or(0),
                    distribution: self.distribution.clone(),
                    correlation: self.delay_corr,
                    in_order: self.in_order,
                }),
            reorder: self.reorder,
            rate: self.rate.map(|rate_bps| RateSpec {
                rate_bps,
                overhead_bytes: self.overhead.unwrap_or(0),
                cell_bytes: self.cell.map_or(0, |c| c.0),
                cell_overhead_bytes: self.cell.map_or(0, |c| c.1),
                queue: self.queue,
            }),
        }
    }

    fn given(&self) -> bool {
        self.rule(MatchSpec::default()).impairs() || self.ecn || self.reorder.is_some()
    }
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Interface whose traffic is impaired (outgoing unless --direction says otherwise).
    pub iface: String,
    /// A built-in profile (see docs/profiles.md).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    #[command(flatten)]
    pub impair: ImpairArgs,
    #[command(flatten)]
    pub matcher: MatchArgs,
    /// Seed of the data path's per-CPU generators (reproducible runs).
    #[arg(long)]
    pub seed: Option<u64>,
    /// tcx (Linux 6.6+), netlink (clsact filter), or auto; for the tc hooks.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach_mode: AttachMode,
    /// Which traffic to impair. egress: leaving IFACE, every impairment.
    /// ingress: arriving on IFACE; loss, --ecn, --corrupt, --mtu, --blackhole
    /// and --rate, which polices there: a packet that would wait more than
    /// --queue behind the rate (default 10ms of burst) is dropped, the rest pass
    /// at once. Delay, jitter, reorder and duplicate are refused at ingress:
    /// received packets pass no qdisc that could hold them. both: one rule set
    /// on both directions; its counters then count both directions together
    /// (--rate is refused: the directions would share one link).
    #[arg(long, value_enum, default_value_t = Direction::Egress)]
    pub direction: Direction,
    /// The receive-side hook for --direction ingress/both: tc (tc ingress) or
    /// xdp (before the stack; same impairments).
    #[arg(long, value_enum, default_value_t = IngressHook::Tc)]
    pub hook: IngressHook,
    /// XDP attach mode with --hook xdp: auto (native where the driver has it,
    /// else generic), native, or generic.
    #[arg(long, value_enum, value_name = "MODE")]
    pub xdp_mode: Option<XdpMode>,
    /// Refresh period of the live counters, in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub interval_ms: u64,
}

/// One direction of an interface, to pick an instance when an egress and an
/// ingress instance both run on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Side {
    Egress,
    Ingress,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    pub iface: String,
    /// The instance impairing this direction (needed when both run on IFACE).
    #[arg(long, value_enum)]
    pub direction: Option<Side>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
    /// Also list instances in other network namespaces.
    #[arg(long)]
    pub all_namespaces: bool,
}

#[derive(Args, Debug)]
pub struct DetachArgs {
    pub iface: String,
    /// Only the instance impairing this direction (default: every instance on IFACE).
    #[arg(long, value_enum)]
    pub direction: Option<Side>,
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Attach(a) => attach(*a),
        Command::Stats(a) => stats(a),
        Command::Status(a) => status(a),
        Command::Detach(a) => detach(a),
        Command::Demo(a) => crate::demo::run(&a),
    }
}

/// SIGINT, SIGTERM and SIGHUP all mean "detach and exit".
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, Arc::clone(&flag))?;
    }
    Ok(flag)
}

fn rules_from(a: &AttachArgs) -> Result<(Vec<RuleSpec>, String)> {
    if let Some(name) = &a.profile {
        if a.impair.given() {
            return Err(usage!("--profile {name} sets the impairments itself: drop the impairment flags, or drop --profile").into());
        }
        let p = profiles::find(name)?;
        let mut rules = (p.rules)();
        if a.matcher.given() {
            for r in &mut rules {
                r.matcher = a.matcher.spec();
            }
        }
        return Ok((rules, format!("profile {name}")));
    }
    if !a.impair.given() {
        return Err(usage!(
            "nothing to do: give an impairment (--loss, --loss-model, --delay, --rate, --corrupt, --duplicate, --mtu, --blackhole) or --profile NAME"
        )
        .into());
    }
    let rule = a.impair.rule(a.matcher.spec());
    let label = crate::rules::RuleView::from_rule(&rule.compile()?).impairments;
    Ok((vec![rule], label))
}

/// The hooks `a` asks for; refuses combinations that make no sense.
fn hooks_from(a: &AttachArgs) -> Result<HookOptions> {
    if a.hook == IngressHook::Xdp && !a.direction.ingress() {
        return Err(usage!(
            "--hook xdp chooses the receive-side hook: XDP sees only arriving traffic, so it needs --direction \
             ingress or both"
        )
        .into());
    }
    if a.xdp_mode.is_some() && a.hook != IngressHook::Xdp {
        return Err(usage!(
            "--xdp-mode applies to the XDP hook: add --hook xdp (and --direction ingress or both)"
        )
        .into());
    }
    Ok(HookOptions {
        direction: a.direction,
        ingress_hook: a.hook,
        xdp_mode: a.xdp_mode.unwrap_or_default(),
    })
}

fn attach(a: AttachArgs) -> Result<()> {
    let hooks = hooks_from(&a)?;
    let (rules, label) = rules_from(&a)?;
    let stop = stop_flag()?;
    let engine = Engine::attach_with(
        AttachOptions {
            iface: a.iface.clone(),
            mode: a.attach_mode,
            rules,
            seed: a.seed,
            label: label.clone(),
        },
        hooks,
    )?;
    let how = if hooks.direction.ingress()
        && hooks.ingress_hook == IngressHook::Xdp
        && !hooks.direction.egress()
    {
        format!("XDP {:?}", hooks.xdp_mode)
    } else {
        format!("{:?}", engine.mode())
    };
    println!(
        "impair: attached to {} {} ({how}, {label}, seed {}); Ctrl-C detaches",
        engine.iface(),
        engine.hook_name(),
        engine.seed()
    );
    let tty = std::io::stdout().is_terminal();
    let interval = Duration::from_millis(a.interval_ms.max(50));
    let mut drawn = 0usize;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next {
            next += interval;
            let lines = Snapshot::read(&engine.maps(), engine.iface())?.render();
            let mut out = std::io::stdout().lock();
            if tty && drawn > 0 {
                // Move up over the previous block and clear it: the view updates in place.
                write!(out, "\x1b[{drawn}F\x1b[J")?;
            }
            for l in &lines {
                writeln!(out, "{l}")?;
            }
            out.flush()?;
            drawn = lines.len();
        }
        thread::sleep(Duration::from_millis(20));
    }
    let iface = engine.iface().to_owned();
    engine.detach()?;
    println!("impair: detached from {iface}; interface restored");
    Ok(())
}

/// The instances on `iface` in direction `side` (every one when `None`).
fn instances_on(iface: &str, side: Option<Side>) -> Result<Vec<discover::Instance>> {
    let ifindex = sys::ifindex(iface)?;
    Ok(discover::on_interface(ifindex)?
        .into_iter()
        .filter(|i| match side {
            None => true,
            Some(Side::Egress) => i.egress(),
            Some(Side::Ingress) => i.ingress(),
        })
        .collect())
}

/// " at egress", " at ingress" or nothing, for messages.
fn at_side(side: Option<Side>) -> &'static str {
    match side {
        None => "",
        Some(Side::Egress) => " at egress",
        Some(Side::Ingress) => " at ingress",
    }
}

fn stats(a: StatsArgs) -> Result<()> {
    let mut found = instances_on(&a.iface, a.direction)?;
    if found.is_empty() {
        return Err(usage!(
            "{} is not impaired{}: no impair instance is attached to it in this network namespace",
            a.iface,
            at_side(a.direction)
        )
        .into());
    }
    if found.len() > 1 {
        let list: Vec<String> = found
            .iter()
            .map(|i| format!("{} (pid {})", i.owner.hook_name(), i.owner.pid))
            .collect();
        return Err(usage!(
            "{} has {} impair instances ({}): choose one with --direction egress or --direction ingress",
            a.iface,
            found.len(),
            list.join(", ")
        )
        .into());
    }
    let Some(inst) = found.pop() else {
        return Err(usage!("{} is not impaired", a.iface).into());
    };
    let snap = Snapshot::read(&inst.maps, &a.iface)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&snap)?);
    } else {
        for l in snap.render() {
            println!("{l}");
        }
    }
    Ok(())
}

fn status(a: StatusArgs) -> Result<()> {
    let here = sys::netns_ino()?;
    let mut rows = Vec::new();
    for inst in discover::instances()? {
        if inst.owner.netns_ino != here && !a.all_namespaces {
            continue;
        }
        let iface = if inst.owner.netns_ino == here {
            sys::ifname(inst.owner.ifindex)
                .unwrap_or_else(|| format!("ifindex {}", inst.owner.ifindex))
        } else {
            format!(
                "ifindex {} (netns {})",
                inst.owner.ifindex, inst.owner.netns_ino
            )
        };
        let snap = Snapshot::read(&inst.maps, &iface)?;
        rows.push(snap);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no impair instances");
    }
    for s in rows {
        println!(
            "{} {}  {}  pid {}{}  {}",
            s.interface,
            s.hook,
            s.owner.attach_mode,
            s.owner.pid,
            if s.owner.alive {
                ""
            } else {
                " (dead: leftover, traffic passes; `impair detach` removes it)"
            },
            s.owner.label
        );
    }
    Ok(())
}

fn detach(a: DetachArgs) -> Result<()> {
    let found = instances_on(&a.iface, a.direction)?;
    if found.is_empty() {
        return Err(usage!(
            "{} is not impaired{}: nothing to detach",
            a.iface,
            at_side(a.direction)
        )
        .into());
    }
    for inst in found {
        detach_one(&a.iface, inst)?;
    }
    Ok(())
}

/// Stops the controller of `inst` (which restores the interface), or removes
/// the leftover of a dead one.
fn detach_one(iface: &str, inst: discover::Instance) -> Result<()> {
    let hook = inst.owner.hook_name();
    if inst.alive && !inst.pinned() {
        let pid = inst.owner.pid;
        // SAFETY: kill(2) with a pid we verified (pid + start time) is our controller.
        if unsafe { libc::kill(pid as i32, libc::SIGTERM) } != 0 {
            return Err(anyhow::anyhow!(
                "signalling impair pid {pid}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while sys::process_alive(pid, inst.owner.pid_start_ticks) {
            if Instant::now() > deadline {
                return Err(anyhow::anyhow!(
                    "impair pid {pid} did not exit within 10 s of SIGTERM"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
        println!("impair: stopped pid {pid}; {iface} {hook} restored");
        return Ok(());
    }
    crate::engine::remove_leftover(iface, &inst)?;
    println!(
        "impair: removed the leftover of pid {} from {iface} {hook}",
        inst.owner.pid
    );
    Ok(())
}
