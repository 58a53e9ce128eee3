//! The command line's flags (clap). Each front end of the model turns its
//! own types into the model's: [`MatchArgs::lists`] and
//! [`ImpairArgs::impairments`]; value parsers call the model's
//! [`impair::model::units`] so a value means the same in flags and in TOML.
use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};
use impair::{
    engine::{AttachMode, Direction, IngressHook, XdpMode},
    model::{
        dist::parse_distribution,
        units::{
            parse_cell, parse_cidr, parse_duration_ns, parse_loss_model, parse_mtu, parse_percent,
            parse_port_range, parse_proto, parse_queue, parse_rate_bps,
        },
        CorruptMode, Distribution, Impairments, LossModelSpec, MatchLists, Proto, QueueLimit,
    },
    observe::metrics,
};
use ipnet::IpNet;

const EXAMPLES: &str = "\
Examples:
  impair attach eth1 --loss 10%                 drop 10% of everything leaving eth1
  impair attach eth1 --profile lte              LTE as a client sees it: downloads 50 Mbit/s 50 ms,
                                                uploads 10 Mbit/s 65 ms (impair profiles list)
  impair attach eth1 --profile lte --flip       the same link from the router/server feeding the client
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
  impair attach --container web --loss 2%       inside container 'web' (Podman/Docker), on its eth0
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
    /// Work in the network namespace of container NAME|ID, resolved through
    /// its runtime's API (Podman or Docker socket; docs/containers.md).
    #[arg(long, global = true, value_name = "NAME|ID", conflicts_with = "netns")]
    pub container: Option<String>,
    /// The container runtime's API socket (default: $IMPAIR_CONTAINER_SOCKET,
    /// else /run/podman/podman.sock, /var/run/docker.sock).
    #[arg(long, global = true, value_name = "PATH", requires = "container")]
    pub runtime_socket: Option<std::path::PathBuf>,
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
    /// Run CMD with only its own traffic (and its children's) impaired, both
    /// what it sends (by cgroup) and what it receives (by its sockets' mark);
    /// exits with CMD's status.
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
    Demo(DemoArgs),
    /// Serve impair's HTTP API (and chaosd's network attack endpoints) until
    /// SIGTERM/SIGINT, then detach everything.
    Agent(crate::agent::AgentArgs),
    /// Write the packets a running instance drops, corrupts, duplicates,
    /// reorders or delays to a pcapng file, each with its decision as the
    /// packet's comment, until Ctrl-C.
    Capture(CaptureArgs),
}

pub(crate) fn percent(s: &str) -> Result<f64, String> {
    parse_percent("percentage", s).map_err(|e| e.0)
}
pub(crate) fn matrix(s: &str) -> Result<std::sync::Arc<impair::model::Matrix>, String> {
    impair::model::Matrix::load(std::path::Path::new(s))
        .map(std::sync::Arc::new)
        .map_err(|e| e.to_string())
}
fn series_file(
    s: &str,
    kind: impair::model::series::SeriesKind,
) -> Result<std::sync::Arc<impair::model::series::Series>, String> {
    impair::model::series::Series::load(
        std::path::Path::new(s),
        kind,
        Default::default(),
        Default::default(),
    )
    .map_err(|e| e.to_string())
}
pub(crate) fn delay_trace(
    s: &str,
) -> Result<std::sync::Arc<impair::model::series::Series>, String> {
    series_file(s, impair::model::series::SeriesKind::Delay)
}
pub(crate) fn loss_trace(s: &str) -> Result<std::sync::Arc<impair::model::series::Series>, String> {
    series_file(s, impair::model::series::SeriesKind::Loss)
}
pub(crate) fn rate_trace(
    s: &str,
) -> Result<std::sync::Arc<impair::model::trace::RateTrace>, String> {
    impair::model::trace::RateTrace::load(std::path::Path::new(s)).map_err(|e| e.to_string())
}
pub(crate) fn delay(s: &str) -> Result<u64, String> {
    parse_duration_ns("time", s).map_err(|e| e.0)
}
/// `--rate` as given: the rate and the text it was written as (to echo a
/// bytes-per-second unit back unambiguously).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateArg {
    pub bps: u64,
    pub text: String,
}

pub(crate) fn rate(s: &str) -> Result<RateArg, String> {
    parse_rate_bps(s)
        .map(|bps| RateArg {
            bps,
            text: s.trim().to_owned(),
        })
        .map_err(|e| e.0)
}
pub(crate) fn queue(s: &str) -> Result<QueueLimit, String> {
    parse_queue(s).map_err(|e| e.0)
}
pub(crate) fn cell(s: &str) -> Result<(u32, i32), String> {
    parse_cell(s).map_err(|e| e.0)
}
pub(crate) fn distribution(s: &str) -> Result<Distribution, String> {
    parse_distribution(s).map_err(|e| e.0)
}
pub(crate) fn loss_model(s: &str) -> Result<LossModelSpec, String> {
    parse_loss_model(s).map_err(|e| e.0)
}
pub(crate) fn cidr(s: &str) -> Result<IpNet, String> {
    parse_cidr("prefix", s).map_err(|e| e.0)
}
/// `--proto` as parsed: `any` is `ProtoArg(None)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtoArg(pub Option<Proto>);

pub(crate) fn proto(s: &str) -> Result<ProtoArg, String> {
    parse_proto(s).map(ProtoArg).map_err(|e| e.0)
}
pub(crate) fn ports(s: &str) -> Result<(u16, u16), String> {
    parse_port_range("port", s).map_err(|e| e.0)
}
pub(crate) fn mtu(s: &str) -> Result<u32, String> {
    parse_mtu(s).map_err(|e| e.0)
}
/// One of the engine's named choices (`auto`, `tcx`, ...), listed in the
/// help and completions; the engine parses the name.
fn choice<T>(names: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(names).try_map(|s| s.parse::<T>())
}

pub(crate) fn corrupt_mode(s: &str) -> Result<CorruptMode, String> {
    s.parse::<CorruptMode>().map_err(|e| e.0)
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

impl MatchArgs {
    /// The model's match lists (one match per combination).
    pub fn lists(&self) -> MatchLists {
        MatchLists {
            src: self.src.clone(),
            dst: self.dst.clone(),
            proto: self.proto.iter().map(|p| p.0).collect(),
            sport: self.sport.clone(),
            dport: self.dport.clone(),
        }
    }

    pub fn given(&self) -> bool {
        self.lists().given()
    }
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
    #[arg(long, value_parser = loss_model, value_name = "MODEL", allow_hyphen_values = true)]
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
    #[arg(long, value_parser = corrupt_mode, default_value = "detectable", value_name = "detectable|silent")]
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
    pub rate: Option<RateArg>,
    /// Bytes added to each packet for the rate (framing), may be negative.
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true)]
    pub overhead: Option<i32>,
    /// Cell size for the rate, and per-cell overhead: SIZE[/OVERHEAD] (ATM: 48/5).
    #[arg(long, value_parser = cell, value_name = "SIZE[/OVERHEAD]")]
    pub cell: Option<(u32, i32)>,
    /// Rate queue limit: a time (50ms), bytes (64kb) or packets (100p);
    /// beyond it packets are dropped and counted. Default at egress: 1000
    /// packets (netem's limit); at ingress: a 10ms burst.
    #[arg(long, value_parser = queue, value_name = "LIMIT")]
    pub queue: Option<QueueLimit>,
    /// Latency matrix: per-destination delay, jitter, loss and rate after
    /// the rule's own, CSV with the header prefix,delay,jitter,loss,rate
    /// (or TOML [[dest]] tables in a .toml file); the most specific prefix
    /// wins (docs/traces.md).
    #[arg(long, value_parser = matrix, value_name = "FILE")]
    pub matrix: Option<std::sync::Arc<impair::model::Matrix>>,
    /// Delay series: lines TIME,DELAY (time in ms or with a unit, e.g.
    /// `1500,40ms`); its value for now replaces --delay (docs/traces.md).
    #[arg(long, value_parser = delay_trace, value_name = "FILE")]
    pub delay_trace: Option<std::sync::Arc<impair::model::series::Series>>,
    /// Loss series: lines TIME,LOSS (e.g. `2000,5%`); replaces --loss.
    #[arg(long, value_parser = loss_trace, value_name = "FILE")]
    pub loss_trace: Option<std::sync::Arc<impair::model::series::Series>>,
    /// Between a series' points: hold the value (step) or interpolate (linear).
    #[arg(long, value_name = "step|linear")]
    pub trace_mode: Option<impair::model::series::TraceMode>,
    /// After a series' last time: start again (loop) or keep the last value (hold).
    #[arg(long, value_name = "loop|hold")]
    pub trace_end: Option<impair::model::series::TraceEnd>,
    /// Rate trace in Mahimahi's format: one line per 1500-byte delivery
    /// opportunity, ms from the start; loops (docs/traces.md).
    #[arg(long, value_parser = rate_trace, value_name = "FILE")]
    pub rate_trace: Option<std::sync::Arc<impair::model::trace::RateTrace>>,
}

impl ImpairArgs {
    /// The model's flat impairments.
    pub fn impairments(&self) -> Impairments {
        Impairments {
            loss: self.loss,
            loss_model: self.loss_model,
            ecn: self.ecn,
            blackhole: self.blackhole,
            mtu_bytes: self.mtu,
            corrupt: self.corrupt,
            corrupt_mode: self.corrupt_mode,
            duplicate: self.duplicate,
            delay_ns: self.delay,
            jitter_ns: self.jitter,
            distribution: self.distribution.clone(),
            delay_corr: self.delay_corr,
            in_order: self.in_order,
            reorder: self.reorder,
            rate_bps: self.rate.as_ref().map(|r| r.bps),
            overhead_bytes: self.overhead,
            cell: self.cell,
            queue: self.queue,
            matrix: self.matrix.clone(),
            delay_series: self.series(&self.delay_trace),
            loss_series: self.series(&self.loss_trace),
            rate_trace: self.rate_trace.clone(),
        }
    }

    /// A series flag's file with --trace-mode and --trace-end applied.
    fn series(
        &self,
        s: &Option<std::sync::Arc<impair::model::series::Series>>,
    ) -> Option<std::sync::Arc<impair::model::series::Series>> {
        s.as_ref().map(|s| {
            std::sync::Arc::new(impair::model::series::Series {
                mode: self.trace_mode.unwrap_or_default(),
                end: self.trace_end.unwrap_or_default(),
                ..(**s).clone()
            })
        })
    }

    pub fn given(&self) -> bool {
        self.impairments().given()
    }

    /// Values whose unit readers from elsewhere take for another: a rate in
    /// bytes per second (tc's `mbps`, which NLC and comcast users read as
    /// megabits), echoed in bits.
    pub fn unit_notes(&self) -> Vec<String> {
        let Some(r) = &self.rate else {
            return Vec::new();
        };
        if !r.text.to_ascii_lowercase().ends_with("bps") {
            return Vec::new();
        }
        vec![format!(
            "--rate {} is bytes per second (tc's unit): {} Mbit/s; write mbit for megabits",
            r.text,
            r.bps as f64 / 1e6
        )]
    }
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Interface whose traffic is impaired (outgoing unless --direction says
    /// otherwise); with --container, default: its only interface but lo.
    #[arg(default_value = "", hide_default_value = true)]
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
    /// Change no device offload. By default, at egress, impair makes local
    /// TCP send one wire packet per skb while a rule decides per packet
    /// (IFACE's gso_max_segs 1; GRO off on the namespace's other devices if
    /// it forwards), and turns transmit checksumming off on IFACE while a
    /// `detectable` corruption rule is attached; at tc ingress it turns
    /// IFACE's GRO off while a rule decides per packet, so received traffic
    /// is decided per wire packet; each restored on detach.
    /// With this flag super-packets are decided whole (counted in stats) and
    /// a receiver that trusts partial checksums may accept corrupted data.
    #[arg(long)]
    pub keep_offloads: bool,
    /// Seed of the data path's per-CPU generators (reproducible runs).
    #[arg(long)]
    pub seed: Option<u64>,
    /// tcx (Linux 6.6+), netlink (clsact filter), or auto; for the tc hooks.
    #[arg(long, value_parser = choice::<AttachMode>(AttachMode::NAMES), default_value = "auto")]
    pub attach_mode: AttachMode,
    /// Which traffic to impair. egress: leaving IFACE, every impairment.
    /// ingress: arriving on IFACE, every impairment: loss, --ecn, --corrupt,
    /// --mtu and --blackhole at the hook; delay, jitter, reorder, duplicate
    /// and --rate (shaped with its --queue, as at egress) at tc ingress send
    /// the received traffic through an ifb device impair creates (Linux
    /// 6.4+) whose egress holds them. XDP refuses delay, jitter, reorder and
    /// duplicate, and polices --rate (see --police). both: one rule set
    /// on both directions; its counters then count both directions together
    /// (--rate is refused: the directions would share one link). Default:
    /// egress for flags and one-direction profiles. With a two-way profile
    /// (an uplink and a downlink) the default is both sides, each its own
    /// instance (uplink at egress, downlink at ingress); egress or ingress
    /// applies that side only.
    #[arg(long, value_parser = choice::<Direction>(Direction::NAMES))]
    pub direction: Option<Direction>,
    /// Apply a two-way profile or scenario as seen from the other end of the
    /// link (a router or server feeding the client): its downlink leaves
    /// IFACE (egress) and its uplink arrives (ingress).
    #[arg(long)]
    pub flip: bool,
    /// The receive-side hook for --direction ingress/both: tc (tc ingress) or
    /// xdp (before the stack; same impairments).
    #[arg(long, value_parser = choice::<IngressHook>(IngressHook::NAMES), default_value = "tc")]
    pub hook: IngressHook,
    /// On received traffic, --rate polices instead of shaping: a packet that
    /// would wait more than --queue behind the rate (default a 10ms burst)
    /// is dropped at the hook and the rest pass at once, as tc's police
    /// action does; no ifb and no fq needed. XDP always polices.
    #[arg(long)]
    pub police: bool,
    /// XDP attach mode with --hook xdp: auto (native where the driver has it,
    /// else generic), native, or generic.
    #[arg(long, value_parser = choice::<XdpMode>(XdpMode::NAMES), value_name = "MODE")]
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
    /// Set by `--container` for a container on this namespace's network:
    /// every rule then matches only its cgroup (v2 id), like `impair run`.
    #[arg(skip)]
    pub cgroup_scope: Option<u64>,
    /// Also write the packets this instance impairs, each with its decision,
    /// to this pcapng file (as `impair capture` does), until it detaches.
    #[arg(long, value_name = "FILE", conflicts_with = "pin")]
    pub capture: Option<std::path::PathBuf>,
    /// With --capture: at most this many records per second on each CPU.
    #[arg(long, default_value_t = impair::observe::capture::DEFAULT_PER_CPU_PER_SEC, value_name = "N", requires = "capture")]
    pub capture_max_pps: u64,
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
    /// Replace the rules with a built-in profile or a TOML profile file (a
    /// two-way profile updates the egress instance with its uplink and the
    /// ingress instance with its downlink).
    #[arg(long, value_name = "NAME|FILE")]
    pub profile: Option<String>,
    /// With a two-way --profile: as seen from the other end (see attach --flip).
    #[arg(long)]
    pub flip: bool,
    /// Replace the whole rule set with the rule these flags describe
    /// (without it, each running rule keeps its match and every impairment
    /// the flags do not set).
    #[arg(long, conflicts_with = "profile")]
    pub replace: bool,
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
    #[arg(long, value_parser = choice::<AttachMode>(AttachMode::NAMES), default_value = "auto")]
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
    #[arg(required_unless_present_any = ["all", "container"], conflicts_with = "all")]
    pub iface: Option<String>,
    /// Every instance in this network namespace (leftovers included).
    #[arg(long)]
    pub all: bool,
    /// Only the instance impairing this direction (default: every instance on IFACE).
    #[arg(long, value_enum)]
    pub direction: Option<Side>,
    /// Nothing attached is success (exit 0), not a usage error (exit 2): for
    /// scripts that clean up whether or not impair is running.
    #[arg(long)]
    pub if_exists: bool,
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

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Profile to attach on the router: a built-in (`impair profiles`) or a TOML file.
    #[arg(long, default_value = "lossy")]
    pub profile: String,
    /// Probe datagrams to send from the client to the server.
    #[arg(long, default_value_t = 20_000)]
    pub count: u64,
    /// Probe send rate, packets per second.
    #[arg(long, default_value_t = 20_000)]
    pub rate_pps: u64,
    /// Seed of the data path's generators (random if omitted).
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, value_parser = choice::<AttachMode>(AttachMode::NAMES), default_value = "auto")]
    pub attach_mode: AttachMode,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

impl From<&DemoArgs> for impair_tools::demo::DemoArgs {
    fn from(a: &DemoArgs) -> Self {
        impair_tools::demo::DemoArgs {
            profile: a.profile.clone(),
            count: a.count,
            rate_pps: a.rate_pps,
            seed: a.seed,
            attach_mode: a.attach_mode,
            json: a.json,
        }
    }
}

/// `impair capture` (impair-cli/src/capture.rs).
#[derive(Args, Debug)]
pub struct CaptureArgs {
    /// Interface of the running instance.
    pub iface: String,
    /// The pcapng file to write (replaced if it exists).
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub file: std::path::PathBuf,
    /// The instance impairing this direction (needed when both run on IFACE).
    #[arg(long, value_enum)]
    pub direction: Option<Side>,
    /// At most this many records per second on each CPU (a second's worth
    /// may come at once); the packets beyond it are counted, not recorded.
    #[arg(long, default_value_t = impair::observe::capture::DEFAULT_PER_CPU_PER_SEC, value_name = "N")]
    pub max_pps: u64,
    /// Stop after this long (e.g. 10s); default: until Ctrl-C or the
    /// instance ends.
    #[arg(long, value_parser = delay, value_name = "TIME")]
    pub duration: Option<u64>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}
