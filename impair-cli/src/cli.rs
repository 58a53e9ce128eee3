//! Command-line interface (clap). Each subcommand is a thin layer over the
//! library: parsing and messages here, behaviour in the modules.
use std::{
    io::{IsTerminal as _, Write as _},
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::{Args, CommandFactory as _, Parser, Subcommand};
use ipnet::IpNet;

use crate::{
    discover,
    dist::Distribution,
    engine::{AttachMode, AttachOptions, Direction, Engine, HookOptions, IngressHook, XdpMode},
    input::{self, usage, LossModelSpec, Proto, QueueLimit, UsageError},
    metrics::{self, MetricsServer},
    profiles,
    rules::{CorruptMode, DelaySpec, MatchSpec, RateSpec, RuleSpec},
    scenario,
    stats::Snapshot,
    sys,
};

const EXAMPLES: &str = "\
Examples:
  impair attach eth1 --loss 10%                 drop 10% of everything leaving eth1
  impair attach eth1 --profile lte              a documented LTE downlink (impair profiles list)
  impair attach eth1 --profile ./my-link.toml   several rules from a TOML file
  impair attach eth1 --scenario outage.toml     lte for 30 s, blackhole for 5 s, looped
  impair attach eth1 --loss 1% --dst 198.18.2.0/24 --proto udp --dport 5000-5010
  impair attach eth1 --delay 100ms --jitter 10ms --distribution normal --in-order
  impair attach eth1 --rate 10mbit --queue 50ms  EDT pacing with a 50 ms queue
  impair attach eth1 --loss-model ge:1%,30%      Gilbert-Elliott bursts (mean 3.2% loss)
  impair attach eth1 --loss 5% --duration 30s   reverts by itself after 30 s
  impair attach eth1 --loss 1% --metrics 127.0.0.1:9464   Prometheus on /metrics
  impair attach eth1 --direction ingress --hook xdp --rate 2mbit
                                                an XDP policer with a 10 ms burst
  impair --netns lab attach veth0 --loss 2%     inside network namespace 'lab'
  impair update eth1 --loss 20%                 change a running instance atomically
  impair run --loss 5% -- curl http://198.18.2.1/   only curl's traffic is impaired
  impair sweep eth1 --loss 0%..30% --step 2% --repeat 5 -- ./client
                                                where does the client break?
  impair stats eth1 --watch                     live counters with rates and 95% intervals
  impair status                                 what is attached where, since when
  impair detach eth1                            stop it and restore eth1 (or --all)
  impair doctor                                 what this kernel supports
  impair demo                                   a 3-namespace lab, end to end";

#[derive(Parser, Debug)]
#[command(name = "impair", version, about = "Line-rate network impairment in eBPF: loss, delay, jitter, rate, corruption, duplication, reordering, ECN, MTU blackholes, per flow, with exact counters", after_help = EXAMPLES)]
pub struct Cli {
    /// Run in network namespace NAME (from `ip netns`) or that of process PID.
    #[arg(long, global = true, value_name = "NAME|PID")]
    pub netns: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Impair traffic leaving (or, with --direction, arriving on) IFACE until
    /// Ctrl-C/SIGTERM/SIGHUP or --duration, then restore it.
    Attach(Box<AttachArgs>),
    /// Replace the rules of a running instance atomically (from any shell).
    Update(Box<UpdateArgs>),
    /// Run CMD with only its own traffic (and its children's) impaired, by
    /// cgroup; exits with CMD's status.
    Run(Box<RunArgs>),
    /// Find the level of impairment where a command starts to fail: apply
    /// levels one after another (atomic updates), run CMD at each, report.
    Sweep(SweepArgs),
    /// Print the counters of the instance on IFACE, or of every instance.
    Stats(StatsArgs),
    /// List instances in this network namespace (--all-namespaces: everywhere):
    /// interface, owner, mode, since when, rules, and leftovers of dead controllers.
    Status(StatusArgs),
    /// Stop the instance on IFACE (signals its controller) or remove a leftover.
    Detach(DetachArgs),
    /// List the built-in profiles or show one.
    Profiles(ProfilesArgs),
    /// Probe this kernel (BPF, tcx, clsact, sch_fq, XDP, netem) and say what works.
    Doctor(DoctorArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Print the man page (or write all pages into a directory).
    Man(ManArgs),
    /// Build a client → router → server namespace lab, impair the router, measure, clean up.
    Demo(crate::demo::DemoArgs),
}

pub(crate) fn percent(s: &str) -> Result<f64, String> {
    input::parse_percent("percentage", s).map_err(|e| e.0)
}
pub(crate) fn delay(s: &str) -> Result<u64, String> {
    input::parse_duration_ns("time", s).map_err(|e| e.0)
}
pub(crate) fn rate(s: &str) -> Result<u64, String> {
    input::parse_rate_bps(s).map_err(|e| e.0)
}
pub(crate) fn queue(s: &str) -> Result<QueueLimit, String> {
    input::parse_queue(s).map_err(|e| e.0)
}
pub(crate) fn cell(s: &str) -> Result<(u32, i32), String> {
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
pub(crate) fn distribution(s: &str) -> Result<Distribution, String> {
    match s.parse::<Distribution>() {
        Ok(d) => Ok(d),
        Err(_) if std::path::Path::new(s).exists() => {
            Distribution::from_file(s).map_err(|e| format!("{e:#}"))
        }
        Err(e) => Err(format!("{e}")),
    }
}
pub(crate) fn loss_model(s: &str) -> Result<LossModelSpec, String> {
    input::parse_loss_model(s).map_err(|e| e.0)
}
pub(crate) fn cidr(s: &str) -> Result<IpNet, String> {
    input::parse_cidr("prefix", s).map_err(|e| e.0)
}
/// `--proto` as parsed: `any` is `ProtoArg(None)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtoArg(pub Option<Proto>);

pub(crate) fn proto(s: &str) -> Result<ProtoArg, String> {
    input::parse_proto(s).map(ProtoArg).map_err(|e| e.0)
}
pub(crate) fn ports(s: &str) -> Result<(u16, u16), String> {
    input::parse_port_range("port", s).map_err(|e| e.0)
}

/// Match flags. Each may be repeated: the rule then applies to every
/// combination (`--dst A --dst B --dport 53 --dport 853` is four rules with
/// the same impairments, tried in that order).
#[derive(Args, Debug, Clone, Default)]
pub struct MatchArgs {
    /// Only packets from this prefix (e.g. 198.18.1.0/24, 2001:2::/48); repeatable.
    #[arg(long, value_parser = cidr, value_name = "CIDR")]
    pub src: Vec<IpNet>,
    /// Only packets to this prefix; repeatable.
    #[arg(long, value_parser = cidr, value_name = "CIDR")]
    pub dst: Vec<IpNet>,
    /// Only this L4 protocol: tcp, udp, icmp, icmpv6, sctp, any, or a number; repeatable.
    #[arg(long, value_parser = proto, value_name = "PROTO")]
    pub proto: Vec<ProtoArg>,
    /// Only these source ports: N or A-B; repeatable.
    #[arg(long, value_parser = ports, value_name = "PORTS")]
    pub sport: Vec<(u16, u16)>,
    /// Only these destination ports: N or A-B; repeatable.
    #[arg(long, value_parser = ports, value_name = "PORTS")]
    pub dport: Vec<(u16, u16)>,
}

/// `v` as options: `[None]` when empty, so a product over it keeps one slot.
fn each<T: Copy>(v: &[T]) -> Vec<Option<T>> {
    if v.is_empty() {
        vec![None]
    } else {
        v.iter().copied().map(Some).collect()
    }
}

impl MatchArgs {
    /// One match per combination of the given values, in the order given
    /// (source outermost). Source/destination pairs of different IP versions
    /// cannot match a packet and are left out; if nothing is left, that is an
    /// error.
    pub fn specs(&self) -> Result<Vec<MatchSpec>, UsageError> {
        let mut out = Vec::new();
        for src in each(&self.src) {
            for dst in each(&self.dst) {
                if let (Some(s), Some(d)) = (src, dst) {
                    if s.addr().is_ipv4() != d.addr().is_ipv4() {
                        continue;
                    }
                }
                for proto in each(&self.proto) {
                    for sport in each(&self.sport) {
                        for dport in each(&self.dport) {
                            out.push(MatchSpec {
                                src,
                                dst,
                                proto: proto.and_then(|p| p.0),
                                sport,
                                dport,
                                cgroup: None,
                            });
                        }
                    }
                }
            }
        }
        if out.is_empty() {
            return Err(usage!(
                "no --src/--dst pair has one IP version: every source is IPv4 and every destination IPv6, or the reverse"
            ));
        }
        Ok(out)
    }

    fn given(&self) -> bool {
        !(self.src.is_empty()
            && self.dst.is_empty()
            && self.proto.is_empty()
            && self.sport.is_empty()
            && self.dport.is_empty())
    }

    /// The rules for `rule`'s impairments under every match.
    pub fn rules(&self, impair: &ImpairArgs) -> Result<Vec<RuleSpec>, UsageError> {
        Ok(self.specs()?.into_iter().map(|m| impair.rule(m)).collect())
    }
}

pub(crate) fn mtu(s: &str) -> Result<u32, String> {
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
    /// A built-in profile (`impair profiles list`) or a TOML profile file.
    #[arg(long, value_name = "NAME|FILE", conflicts_with = "scenario")]
    pub profile: Option<String>,
    /// A TOML scenario: a timeline of profiles, each held for a while, once
    /// or looped, switched by atomic updates (docs/profiles.md).
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<String>,
    #[command(flatten)]
    pub impair: ImpairArgs,
    #[command(flatten)]
    pub matcher: MatchArgs,
    /// Stop impairing after this long (e.g. 30s, 5m). The kernel enforces it
    /// through the lease: a killed or stopped controller cannot overrun it.
    #[arg(long, value_parser = delay, value_name = "TIME")]
    pub duration: Option<u64>,
    /// Keep the impairment after this command exits (it returns at once),
    /// until `impair detach IFACE` or --duration's end. Pinned instances use
    /// clsact filters, which the kernel keeps without a process; tc hooks only.
    #[arg(long, conflicts_with_all = ["scenario", "metrics", "json"])]
    pub pin: bool,
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
    /// Serve the counters in Prometheus text format on IP:PORT (GET /metrics).
    #[arg(long, value_parser = metrics_addr, value_name = "IP:PORT")]
    pub metrics: Option<SocketAddr>,
    /// Print the counters as one JSON object per line (each --interval-ms)
    /// instead of the live view.
    #[arg(long)]
    pub json: bool,
    /// Refresh period of the live counters, in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub interval_ms: u64,
}

fn metrics_addr(s: &str) -> Result<SocketAddr, String> {
    metrics::parse_addr(s).map_err(|e| e.0)
}

/// One direction of an interface, to pick an instance when an egress and an
/// ingress instance both run on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Side {
    Egress,
    Ingress,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Interface of the running instance.
    pub iface: String,
    /// The instance impairing this direction (needed when both run on IFACE).
    #[arg(long, value_enum)]
    pub direction: Option<Side>,
    /// Replace the rules with a built-in profile or a TOML profile file.
    #[arg(long, value_name = "NAME|FILE")]
    pub profile: Option<String>,
    #[command(flatten)]
    pub impair: ImpairArgs,
    #[command(flatten)]
    pub matcher: MatchArgs,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Interface CMD's traffic leaves by (repeatable; default: the
    /// interfaces of this namespace's default routes).
    #[arg(long = "iface", value_name = "IFACE")]
    pub ifaces: Vec<String>,
    /// A built-in profile or a TOML profile file.
    #[arg(long, value_name = "NAME|FILE")]
    pub profile: Option<String>,
    #[command(flatten)]
    pub impair: ImpairArgs,
    #[command(flatten)]
    pub matcher: MatchArgs,
    /// Seed of the data path's per-CPU generators (reproducible runs).
    #[arg(long)]
    pub seed: Option<u64>,
    /// tcx (Linux 6.6+), netlink (clsact filter), or auto.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach_mode: AttachMode,
    /// No messages from impair (CMD's output is untouched).
    #[arg(long)]
    pub quiet: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

const SWEEP_HELP: &str = "\
Axes (one or two ranged, others held at one value):
  --loss A..B --step S     --corrupt, --duplicate, --reorder: percentages
  --delay A..B --step S    --jitter: times (0ms..500ms --step 50ms)
  --rate A..B --step S     rates; may run downwards (10mbit..1mbit --step 1mbit)
  --loss 1%                a single value holds at every level
Run options:
  --repeat N               runs of CMD per level (default 1)
  --min-success P          a level passes when at least P of its runs succeed (default 100%)
  --stop-after K           stop after K consecutive failing levels (default: run all)
  --timeout T              a run longer than T is killed and fails (default 60s)
  --hold T                 keep each level at least T (with --probe: probe for T; default 2s)
  --out DIR                where report.json and plot.svg go (default ./impair-sweep)
  --seed N, --direction egress|ingress, --show-output
  --src/--dst CIDR, --proto P, --sport/--dport N|A-B   which packets are impaired
Target (one of):
  -- CMD ARGS...           exit status 0 is success
  --probe --probe-dst IP [--probe-src-netns NS] [--probe-dst-netns NS] [--probe-rate PPS]
                           the built-in probe measures the link at each level

Examples:
  impair sweep eth1 --loss 0%..30% --step 2% --repeat 5 --stop-after 2 -- ./client --check
  impair sweep eth1 --delay 0ms..500ms --step 50ms --timeout 20s -- curl -sf http://198.18.2.1/
  impair sweep eth1 --loss 0%..10% --step 2% --delay 0ms..200ms --step 100ms -- ./client
  impair --netns router sweep r1 --loss 0%..20% --step 5% --probe --probe-dst 198.18.2.1 \\
      --probe-src-netns client --probe-dst-netns server";

#[derive(Args, Debug)]
#[command(after_help = SWEEP_HELP)]
pub struct SweepArgs {
    /// Interface whose traffic is impaired (egress unless --direction ingress).
    pub iface: String,
    /// Axes, options and the target (see below).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Interface of the instance (default: every instance in this namespace).
    pub iface: Option<String>,
    /// The instance impairing this direction (needed when both run on IFACE).
    #[arg(long, value_enum)]
    pub direction: Option<Side>,
    /// Machine-readable output (with --watch: one JSON document per line).
    #[arg(long)]
    pub json: bool,
    /// Keep refreshing in place, with packet rates, until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Refresh period for --watch, in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub interval_ms: u64,
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
    /// Interface to restore.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub iface: Option<String>,
    /// Every instance in this network namespace (leftovers included).
    #[arg(long)]
    pub all: bool,
    /// Only the instance impairing this direction (default: every instance on IFACE).
    #[arg(long, value_enum)]
    pub direction: Option<Side>,
}

#[derive(Args, Debug)]
pub struct ProfilesArgs {
    #[command(subcommand)]
    pub command: Option<ProfilesCommand>,
}

#[derive(Subcommand, Debug)]
pub enum ProfilesCommand {
    /// The built-in profiles, with their summaries (the default).
    List {
        #[arg(long)]
        json: bool,
    },
    /// A profile's TOML (built-in or file), with its source.
    Show { name: String },
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write impair.1 and one page per subcommand (impair-attach.1, ...) into
    /// DIR instead of printing impair.1.
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
}

pub fn run() -> Result<()> {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // One line, like every other usage error (`--help` has the rest).
            let text = e.render().to_string();
            let msg: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
                .collect();
            let msg = msg.join(" ");
            let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
            return Err(usage!("{msg} (see impair --help)").into());
        }
    };
    if let Some(ns) = &cli.netns {
        if matches!(cli.command, Command::Demo(_)) {
            return Err(
                usage!("--netns does not apply to demo: it builds its own namespaces").into(),
            );
        }
        enter_netns(ns)?;
    }
    if sys::is_root()
        && matches!(
            cli.command,
            Command::Attach(_)
                | Command::Update(_)
                | Command::Detach(_)
                | Command::Status(_)
                | Command::Stats(_)
        )
    {
        for gone in crate::engine::sweep_expired_pins()? {
            eprintln!("impair: removed the pinned instance on {gone}: its --duration has passed");
        }
    }
    match cli.command {
        Command::Attach(a) => attach(*a),
        Command::Update(a) => update(*a),
        Command::Run(a) => run_cmd(*a),
        Command::Sweep(a) => {
            let plan = crate::sweep::parse(&a.args)?;
            let stop = stop_flag()?;
            crate::sweep::run(&a.iface, &plan, &stop).map(|_| ())
        }
        Command::Stats(a) => stats(a),
        Command::Status(a) => status(a),
        Command::Detach(a) => detach(a),
        Command::Profiles(a) => profiles_cmd(a),
        Command::Doctor(a) => doctor(a),
        Command::Completions(a) => {
            clap_complete::generate(
                a.shell,
                &mut Cli::command(),
                "impair",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man(a) => man(a),
        Command::Demo(a) => crate::demo::run(&a),
    }
}

/// `--netns NAME|PID`: this thread (and every thread it starts) moves into
/// `/run/netns/NAME` or the network namespace of process PID.
fn enter_netns(ns: &str) -> Result<()> {
    let path = if !ns.is_empty() && ns.bytes().all(|b| b.is_ascii_digit()) {
        format!("/proc/{ns}/ns/net")
    } else if !ns.is_empty() && !ns.contains('/') && ns != "." && ns != ".." {
        format!("/run/netns/{ns}")
    } else {
        return Err(usage!("invalid network namespace '{ns}': expected a name from `ip netns list` or a process id").into());
    };
    let file = std::fs::File::open(&path).map_err(|e| {
        usage!("unknown network namespace '{ns}': cannot open {path} ({e}); `ip netns list` shows the names")
    })?;
    sys::setns_net(&file)
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

/// Rules from `--profile`, or from the impairment and match flags; with a
/// label for `impair status`.
fn rules_from(
    profile: Option<&str>,
    impair: &ImpairArgs,
    matcher: &MatchArgs,
) -> Result<(Vec<RuleSpec>, String)> {
    if let Some(name) = profile {
        if impair.given() {
            return Err(usage!("--profile {name} sets the impairments itself: drop the impairment flags, or drop --profile").into());
        }
        let p = profiles::load(name)?;
        let mut rules = p.rules;
        if matcher.given() {
            if rules.iter().any(|r| r.matcher != MatchSpec::default()) {
                return Err(usage!(
                    "profile {name} has match fields of its own: drop --src/--dst/--proto/--sport/--dport, or edit the profile"
                )
                .into());
            }
            let specs = matcher.specs()?;
            rules = rules
                .into_iter()
                .flat_map(|r| {
                    specs.iter().map(move |m| RuleSpec {
                        matcher: m.clone(),
                        ..r.clone()
                    })
                })
                .collect();
        }
        return Ok((rules, format!("profile {name}")));
    }
    if !impair.given() {
        return Err(usage!(
            "nothing to do: give an impairment (--loss, --loss-model, --delay, --rate, --corrupt, --duplicate, --mtu, --blackhole), --profile NAME|FILE or --scenario FILE"
        )
        .into());
    }
    let rules = matcher.rules(impair)?;
    let label = crate::rules::RuleView::from_rule(&rules[0].compile()?).impairments;
    Ok((rules, label))
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

/// Redraws `lines` in place on a terminal (moving up over the previous
/// block), or appends them otherwise; returns how many lines were drawn.
fn redraw(lines: &[String], tty: bool, drawn: usize) -> Result<usize> {
    let mut out = std::io::stdout().lock();
    if tty && drawn > 0 {
        write!(out, "\x1b[{drawn}F\x1b[J")?;
    }
    for l in lines {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    Ok(lines.len())
}

fn attach(a: AttachArgs) -> Result<()> {
    let hooks = hooks_from(&a)?;
    let scenario = match &a.scenario {
        Some(path) => {
            if a.impair.given() || a.matcher.given() {
                return Err(usage!(
                    "--scenario {path} sets the rules itself: drop the impairment and match flags"
                )
                .into());
            }
            let s = scenario::load(path)?;
            for st in &s.steps {
                hooks.check_rules(&st.rules)?;
            }
            Some(s)
        }
        None => None,
    };
    let (rules, label) = match &scenario {
        Some(s) => (
            s.steps[0].rules.clone(),
            format!("scenario step 1: {}", s.steps[0].label),
        ),
        None => rules_from(a.profile.as_deref(), &a.impair, &a.matcher)?,
    };
    let duration = a.duration.map(Duration::from_nanos);
    if duration == Some(Duration::ZERO) {
        return Err(usage!("invalid duration '0': give a positive time such as 30s").into());
    }
    let mut mode = a.attach_mode;
    if a.pin {
        if hooks.direction.ingress() && hooks.ingress_hook == IngressHook::Xdp {
            return Err(usage!("--pin works with the tc hooks only: an XDP attachment ends with its process; use --hook tc").into());
        }
        if mode == AttachMode::Tcx {
            return Err(usage!("--pin uses clsact filters, which outlive the process; a tcx link would not: drop --attach-mode tcx").into());
        }
        mode = AttachMode::Netlink;
    }
    // Bind first: a taken port refuses before anything is attached.
    let metrics = a.metrics.map(MetricsServer::bind).transpose()?;
    let stop = stop_flag()?;
    let mut engine = Engine::attach_with(
        AttachOptions {
            iface: a.iface.clone(),
            mode,
            rules,
            seed: a.seed,
            label: label.clone(),
            duration,
        },
        hooks,
    )?;
    let started = Instant::now();
    if a.pin {
        let (iface, hook, seed) = (engine.iface().to_owned(), engine.hook_name(), engine.seed());
        engine.persist()?;
        println!(
            "impair: pinned on {iface} {hook} (netlink, {label}, seed {seed}){}; `impair detach {iface}` removes it",
            duration.map_or(String::new(), |d| format!(
                ", until {} from now (then the next impair command removes it)",
                crate::rules::fmt_duration_ns(d.as_nanos() as u64)
            )),
        );
        return Ok(());
    }
    let how = if hooks.direction.ingress()
        && hooks.ingress_hook == IngressHook::Xdp
        && !hooks.direction.egress()
    {
        format!("XDP {:?}", hooks.xdp_mode)
    } else {
        format!("{:?}", engine.mode())
    };
    if !a.json {
        println!(
            "impair: attached to {} {} ({how}, {label}, seed {}){}{}; Ctrl-C detaches",
            engine.iface(),
            engine.hook_name(),
            engine.seed(),
            duration.map_or(String::new(), |d| format!(
                ", for {}",
                crate::rules::fmt_duration_ns(d.as_nanos() as u64)
            )),
            metrics
                .as_ref()
                .and_then(|m| m.local_addr().ok())
                .map_or(String::new(), |m| format!(
                    ", metrics on http://{m}/metrics"
                )),
        );
    }
    let tty = std::io::stdout().is_terminal() && !a.json;
    let interval = Duration::from_millis(a.interval_ms.max(50));
    let mut drawn = 0usize;
    let mut next = Instant::now();
    let mut step = 0usize;
    let mut ended = false;
    let reason = loop {
        if stop.load(Ordering::Relaxed) {
            break "stopped";
        }
        if duration.is_some_and(|d| started.elapsed() >= d) {
            break "duration elapsed";
        }
        if let (Some(s), false) = (&scenario, ended) {
            let (now_step, over) = s.step_at(started.elapsed());
            ended = over;
            if now_step != step {
                step = now_step;
                let st = &s.steps[step];
                engine.update(&st.rules)?;
                let label = format!("scenario step {}: {}", step + 1, st.label);
                engine.set_label(&label)?;
                if !a.json {
                    drawn = 0;
                    println!(
                        "impair: step {}/{}: {} for {}",
                        step + 1,
                        s.steps.len(),
                        st.label,
                        crate::rules::fmt_duration_ns(st.duration.as_nanos() as u64)
                    );
                }
            }
        }
        if let Some(m) = &metrics {
            m.poll(|| match Snapshot::read(&engine.maps(), engine.iface()) {
                Ok(s) => metrics::render(&[s]),
                Err(e) => format!("# impair: reading counters: {e:#}\n"),
            });
        }
        if Instant::now() >= next {
            next += interval;
            let snap = Snapshot::read(&engine.maps(), engine.iface())?;
            if a.json {
                println!("{}", serde_json::to_string(&snap)?);
            } else {
                drawn = redraw(&snap.render(), tty, drawn)?;
            }
        }
        thread::sleep(Duration::from_millis(20));
    };
    let iface = engine.iface().to_owned();
    engine.detach()?;
    if !a.json {
        println!("impair: {reason}: detached from {iface}; interface restored");
    }
    Ok(())
}

/// The one instance `iface` (and `side`) names, or a usage error that says
/// why there is none or which to choose.
fn one_instance(iface: &str, side: Option<Side>) -> Result<discover::Instance> {
    let mut found = instances_on(iface, side)?;
    if found.is_empty() {
        return Err(usage!(
            "{iface} is not impaired{}: no impair instance is attached to it in this network namespace",
            at_side(side)
        )
        .into());
    }
    if found.len() > 1 {
        let list: Vec<String> = found
            .iter()
            .map(|i| format!("{} (pid {})", i.owner.hook_name(), i.owner.pid))
            .collect();
        return Err(usage!(
            "{iface} has {} impair instances ({}): choose one with --direction egress or --direction ingress",
            found.len(),
            list.join(", ")
        )
        .into());
    }
    found
        .pop()
        .ok_or_else(|| usage!("{iface} is not impaired").into())
}

fn run_cmd(a: RunArgs) -> Result<()> {
    let (rules, label) = rules_from(a.profile.as_deref(), &a.impair, &a.matcher)?;
    let ifaces = if a.ifaces.is_empty() {
        crate::run::default_route_ifaces()?
    } else {
        a.ifaces.clone()
    };
    let stop = stop_flag()?;
    let status = crate::run::run(
        crate::run::RunOptions {
            ifaces,
            rules,
            label,
            seed: a.seed,
            mode: a.attach_mode,
            cmd: a.cmd.clone(),
            quiet: a.quiet,
        },
        &stop,
    )?;
    // Everything is restored by now; pass CMD's status on.
    std::process::exit(crate::run::exit_code(status));
}

fn update(a: UpdateArgs) -> Result<()> {
    let (rules, label) = rules_from(a.profile.as_deref(), &a.impair, &a.matcher)?;
    if !sys::is_root() {
        return Err(usage!("permission denied: impair update needs root (CAP_BPF)").into());
    }
    let mut inst = one_instance(&a.iface, a.direction)?;
    if !inst.alive {
        return Err(usage!(
            "the instance on {} belongs to pid {}, which died (its traffic passes unimpaired): `impair detach {}` removes it",
            a.iface,
            inst.owner.pid,
            a.iface
        )
        .into());
    }
    crate::engine::update_instance(&a.iface, &mut inst, &rules, &label)?;
    println!(
        "impair: updated {} {} (pid {}): {label}",
        a.iface,
        inst.owner.hook_name(),
        inst.owner.pid
    );
    Ok(())
}

/// The instances on `iface` in direction `side` (every one when `None`).
fn instances_on(iface: &str, side: Option<Side>) -> Result<Vec<discover::Instance>> {
    let ifindex = sys::ifindex(iface)?;
    Ok(discover::on_interface(ifindex)?
        .into_iter()
        .filter(|i| on_side(i, side))
        .collect())
}

/// Every instance in this network namespace, with its interface name.
fn instances_here() -> Result<Vec<(String, discover::Instance)>> {
    let here = sys::netns_ino()?;
    Ok(discover::instances()?
        .into_iter()
        .filter(|i| i.owner.netns_ino == here)
        .map(|i| {
            let name = sys::ifname(i.owner.ifindex)
                .unwrap_or_else(|| format!("ifindex {}", i.owner.ifindex));
            (name, i)
        })
        .collect())
}

/// Whether `i` impairs direction `side` (any direction when `None`).
fn on_side(i: &discover::Instance, side: Option<Side>) -> bool {
    match side {
        None => true,
        Some(Side::Egress) => i.egress(),
        Some(Side::Ingress) => i.ingress(),
    }
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
    let read_all = || -> Result<Vec<Snapshot>> {
        match &a.iface {
            Some(iface) => {
                let inst = one_instance(iface, a.direction)?;
                Ok(vec![Snapshot::read(&inst.maps, iface)?])
            }
            None => instances_here()?
                .iter()
                .filter(|(_, i)| on_side(i, a.direction))
                .map(|(name, i)| Snapshot::read(&i.maps, name))
                .collect(),
        }
    };
    if !a.watch {
        let snaps = read_all()?;
        if a.json {
            match (&a.iface, snaps.as_slice()) {
                (Some(_), [one]) => println!("{}", serde_json::to_string_pretty(one)?),
                _ => println!("{}", serde_json::to_string_pretty(&snaps)?),
            }
        } else if snaps.is_empty() {
            println!("no impair instances in this network namespace");
        } else {
            for s in &snaps {
                for l in s.render() {
                    println!("{l}");
                }
            }
        }
        return Ok(());
    }
    let stop = stop_flag()?;
    let tty = std::io::stdout().is_terminal() && !a.json;
    let interval = Duration::from_millis(a.interval_ms.max(50));
    let mut prev: Option<(Instant, Vec<Snapshot>)> = None;
    let mut drawn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let snaps = read_all()?;
        if a.json {
            println!("{}", serde_json::to_string(&snaps)?);
        } else {
            let mut lines = Vec::new();
            if snaps.is_empty() {
                lines.push("no impair instances in this network namespace".to_owned());
            }
            for s in &snaps {
                lines.extend(s.render());
                let before = prev.as_ref().and_then(|(t, p)| {
                    p.iter()
                        .find(|o| o.interface == s.interface && o.hook == s.hook)
                        .map(|o| (now.duration_since(*t), o))
                });
                if let Some((dt, o)) = before {
                    lines.push(s.rates_line(o, dt));
                }
            }
            drawn = redraw(&lines, tty, drawn)?;
        }
        prev = Some((now, snaps));
        let until = now + interval;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(20));
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
        let age = sys::unix_ns().saturating_sub(s.owner.attached_unix_ns) / 1_000_000_000;
        println!(
            "{} {}  {}  pid {}{}  since {} ({} ago)  generation {}  {}",
            s.interface,
            s.hook,
            s.owner.attach_mode,
            s.owner.pid,
            if !s.owner.alive {
                " (dead: leftover, traffic passes; `impair detach` removes it)"
            } else if s.owner.pinned {
                " (pinned)"
            } else {
                ""
            },
            crate::stats::fmt_unix_time(s.owner.attached_unix_ns),
            crate::stats::fmt_age_secs(age),
            s.generation,
            s.owner.label
        );
    }
    Ok(())
}

fn detach(a: DetachArgs) -> Result<()> {
    let targets: Vec<(String, discover::Instance)> = match &a.iface {
        Some(iface) => instances_on(iface, a.direction)?
            .into_iter()
            .map(|i| (iface.clone(), i))
            .collect(),
        None => instances_here()?
            .into_iter()
            .filter(|(_, i)| on_side(i, a.direction))
            .collect(),
    };
    if targets.is_empty() {
        return Err(match &a.iface {
            Some(iface) => usage!(
                "{iface} is not impaired{}: nothing to detach",
                at_side(a.direction)
            ),
            None => usage!("no impair instances in this network namespace: nothing to detach"),
        }
        .into());
    }
    let mut result = Ok(());
    for (iface, inst) in targets {
        if let Err(e) = detach_one(&iface, inst) {
            eprintln!("impair: {iface}: {e:#}");
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
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
    if inst.pinned() {
        println!("impair: removed the pinned instance from {iface} {hook}; restored");
    } else {
        println!(
            "impair: removed the leftover of pid {} from {iface} {hook}",
            inst.owner.pid
        );
    }
    Ok(())
}

fn profiles_cmd(a: ProfilesArgs) -> Result<()> {
    match a.command.unwrap_or(ProfilesCommand::List { json: false }) {
        ProfilesCommand::List { json } => {
            let all: Vec<profiles::Profile> = profiles::names()
                .into_iter()
                .map(profiles::find)
                .collect::<Result<_, _>>()?;
            if json {
                let v: Vec<serde_json::Value> = all
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "name": p.name,
                            "summary": p.summary,
                            "source": p.source,
                            "rules": p.rules.len(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let w = all.iter().map(|p| p.name.len()).max().unwrap_or(0);
                for p in &all {
                    println!("{:w$}  {}", p.name, p.summary);
                }
                println!("\n`impair profiles show NAME` prints one with its source; docs/profiles.md has the format.");
            }
        }
        ProfilesCommand::Show { name } => {
            let p = profiles::load(&name)?;
            print!("{}", p.text);
            if !p.text.ends_with('\n') {
                println!();
            }
            let set = crate::rules::compile_all(&p.rules)?;
            println!("# compiled:");
            for (i, r) in set.rules.iter().enumerate() {
                let v = crate::rules::RuleView::from_rule(r);
                println!("#   rule {i} [{}] {}", v.matches, v.impairments);
            }
        }
    }
    Ok(())
}

fn doctor(a: DoctorArgs) -> Result<()> {
    let checks = crate::doctor::checks();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for l in crate::doctor::render(&checks) {
            println!("{l}");
        }
    }
    Ok(())
}

fn man(a: ManArgs) -> Result<()> {
    let cmd = Cli::command();
    match a.out {
        None => {
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| usage!("cannot create {}: {e}", dir.display()))?;
            let mut pages = vec![("impair".to_owned(), cmd.clone())];
            for sub in cmd.get_subcommands() {
                let name = format!("impair-{}", sub.get_name());
                // clap names are 'static; a man page per subcommand is made once.
                let leaked: &'static str = Box::leak(name.clone().into_boxed_str());
                pages.push((name, sub.clone().name(leaked)));
            }
            for (name, c) in pages {
                let path = dir.join(format!("{name}.1"));
                let mut f = std::fs::File::create(&path)?;
                clap_mangen::Man::new(c).render(&mut f)?;
                println!("{}", path.display());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(args: &[&str]) -> Result<Vec<MatchSpec>, UsageError> {
        let mut v = vec!["impair", "attach", "x", "--loss", "1%"];
        v.extend(args);
        match Cli::try_parse_from(v).unwrap().command {
            Command::Attach(a) => a.matcher.specs(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn repeated_match_flags_make_one_match_per_combination_in_order() {
        assert_eq!(m(&[]).unwrap(), vec![MatchSpec::default()]);
        let s = m(&[
            "--dst",
            "198.18.2.0/24",
            "--dst",
            "2001:2::/48",
            "--dport",
            "53",
            "--dport",
            "853",
        ])
        .unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].dport, Some((53, 53)));
        assert_eq!(s[1].dport, Some((853, 853)));
        assert!(s[2].dst.unwrap().addr().is_ipv6());
        // Mixed-version pairs are skipped; none left is an error.
        let s = m(&[
            "--src",
            "198.18.1.0/24",
            "--dst",
            "198.18.2.0/24",
            "--dst",
            "2001:2::/48",
        ])
        .unwrap();
        assert_eq!(s.len(), 1);
        let e = m(&["--src", "198.18.1.0/24", "--dst", "2001:2::/48"])
            .unwrap_err()
            .0;
        assert!(e.contains("IP version"), "{e}");
    }
}
