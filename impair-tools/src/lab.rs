//! A disposable three-namespace lab: client → router → server.
//!
//! ```text
//!   client ns            router ns                       server ns
//!  ┌──────────┐   ┌──────────────────────────┐   ┌──────────────┐
//!  │ c0       ├───┤ r0               r1 ─────├───┤ s0           │
//!  │ .1.1     │   │ .1.254       .2.254      │   │ .2.1         │
//!  └──────────┘   └──────────────────────────┘   └──────────────┘
//!   198.18.1.0/24, 2001:2:0:1::/64    198.18.2.0/24, 2001:2:0:2::/64
//! ```
//!
//! Impairments are attached on the router's interface toward the server,
//! [`ROUTER_EGRESS`] (`r1`), so client → server traffic is impaired on
//! egress there while the client and server stacks stay untouched.
//!
//! Safety: everything is created inside namespaces the lab owns — the veths
//! are created directly in them (`ip -n NS link add … peer … netns NS2`), so
//! nothing ever appears in the host namespace — and [`Lab`]'s `Drop` deletes
//! the namespaces (also when a test panics). Addresses come only from the
//! benchmarking ranges 198.18.0.0/15 and 2001:2::/48.
//!
//! The links are kept silent so tests can count packets exactly: every hop
//! has PERMANENT neighbour entries (no ARP or neighbour discovery, even when
//! the impairment drops packets), IPv6 link-local addresses, DAD and router
//! solicitations are disabled, and [`Lab::create`] returns only after the
//! unavoidable MLD reports that follow link-up have been sent (see
//! `wait_quiet`).
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};

use impair::netns;

/// The client's interface (client namespace), peer of [`ROUTER_INGRESS`].
pub const CLIENT_IF: &str = "c0";
/// The router's interface toward the client (router namespace).
pub const ROUTER_INGRESS: &str = "r0";
/// The router's interface toward the server (router namespace): where
/// impairments are attached.
pub const ROUTER_EGRESS: &str = "r1";
/// The server's interface (server namespace), peer of [`ROUTER_EGRESS`].
pub const SERVER_IF: &str = "s0";

pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const ROUTER_INGRESS_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 254);
pub const ROUTER_EGRESS_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 254);
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
pub const PREFIX_LEN_V4: u8 = 24;

pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1);
pub const ROUTER_INGRESS_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0xfe);
pub const ROUTER_EGRESS_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 0xfe);
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 1);
pub const PREFIX_LEN_V6: u8 = 64;

/// Distinguishes labs created by one process (parallel tests).
static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Longest accepted tag: keeps namespace names short and readable.
const MAX_TAG_LEN: usize = 32;

/// Per-namespace sysctls applied before any interface exists, so the new
/// veths inherit them from `conf/default`. They make the links silent:
/// no IPv6 link-local address (so no link-local DAD, deferred MLD or router
/// solicitations), no DAD at all, no RA processing, MLD retransmissions 10 ms
/// apart instead of up to 1 s, and no gratuitous ARP on link-up (IPv4
/// defaults are inherited from the host, which might enable `arp_notify`).
const QUIET_SYSCTLS: &[&str] = &[
    "net.ipv6.conf.default.addr_gen_mode=1",
    "net.ipv6.conf.default.accept_dad=0",
    "net.ipv6.conf.default.dad_transmits=0",
    "net.ipv6.conf.default.router_solicitations=0",
    "net.ipv6.conf.default.accept_ra=0",
    "net.ipv6.conf.default.mldv1_unsolicited_report_interval=10",
    "net.ipv6.conf.default.mldv2_unsolicited_report_interval=10",
    "net.ipv4.conf.default.arp_notify=0",
];

/// How long all four veths must send nothing before [`Lab::create`] returns.
const QUIET_WINDOW: Duration = Duration::from_millis(250);
/// Upper bound on waiting for the links to fall silent.
const QUIET_MAX_WAIT: Duration = Duration::from_secs(5);

/// Options for [`Lab::create_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabOptions {
    /// Keep the veths' TSO/GSO/GRO offloads (the kernel default). `false`
    /// turns them off with `ethtool -K` so every packet crosses the data path
    /// at its wire size (skipped with a warning if ethtool is not installed).
    pub offloads: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions { offloads: true }
    }
}

/// Three named network namespaces wired client → router → server, deleted on
/// drop. See the module docs for the topology.
#[derive(Debug)]
pub struct Lab {
    /// Client namespace name (`imp-TAG-PID-N-c`), holds [`CLIENT_IF`].
    pub client: String,
    /// Router namespace name (`imp-TAG-PID-N-r`), holds [`ROUTER_INGRESS`]
    /// and [`ROUTER_EGRESS`]; forwards IPv4 and IPv6.
    pub router: String,
    /// Server namespace name (`imp-TAG-PID-N-s`), holds [`SERVER_IF`].
    pub server: String,
    /// Namespaces this lab created and must delete (a prefix of the three
    /// while creation is in progress).
    owned: Vec<String>,
}

impl Lab {
    /// Creates a lab with default options (offloads left on).
    pub fn create(tag: &str) -> Result<Lab> {
        Lab::create_with(tag, LabOptions::default())
    }

    /// Creates a lab whose namespaces are named `imp-{tag}-{pid}-{n}-{c|r|s}`;
    /// `tag` is 1-32 characters of `[A-Za-z0-9_-]`. Whatever was created is
    /// deleted again if a step fails.
    pub fn create_with(tag: &str, opts: LabOptions) -> Result<Lab> {
        validate_tag(tag)?;
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let base = format!("imp-{tag}-{}-{n}", std::process::id());
        let mut lab = Lab {
            client: format!("{base}-c"),
            router: format!("{base}-r"),
            server: format!("{base}-s"),
            owned: Vec::with_capacity(3),
        };
        // From here on, an early return drops `lab`, which deletes `owned`.
        for name in [lab.client.clone(), lab.router.clone(), lab.server.clone()] {
            run("ip", &["netns", "add", &name])?;
            lab.owned.push(name);
        }
        lab.setup(opts)
            .with_context(|| format!("setting up lab {base}"))?;
        Ok(lab)
    }

    fn setup(&self, opts: LabOptions) -> Result<()> {
        let (c, r, s) = (
            self.client.as_str(),
            self.router.as_str(),
            self.server.as_str(),
        );

        for ns in [c, r, s] {
            let mut args = vec!["sysctl", "-qw"];
            args.extend_from_slice(QUIET_SYSCTLS);
            self.exec(ns, &args)?;
        }
        self.exec(
            r,
            &[
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
            ],
        )?;

        // Created inside the namespaces, peers moved straight into the other
        // namespace: no interface ever exists in the host namespace.
        run(
            "ip",
            &[
                "-n",
                c,
                "link",
                "add",
                CLIENT_IF,
                "type",
                "veth",
                "peer",
                "name",
                ROUTER_INGRESS,
                "netns",
                r,
            ],
        )?;
        run(
            "ip",
            &[
                "-n",
                r,
                "link",
                "add",
                ROUTER_EGRESS,
                "type",
                "veth",
                "peer",
                "name",
                SERVER_IF,
                "netns",
                s,
            ],
        )?;
        let links = [
            (c, CLIENT_IF),
            (r, ROUTER_INGRESS),
            (r, ROUTER_EGRESS),
            (s, SERVER_IF),
        ];

        if !opts.offloads {
            self.disable_offloads(&links)?;
        }

        for ns in [c, r, s] {
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        let addrs: [(&str, &str, Ipv4Addr, Ipv6Addr); 4] = [
            (c, CLIENT_IF, CLIENT_V4, CLIENT_V6),
            (r, ROUTER_INGRESS, ROUTER_INGRESS_V4, ROUTER_INGRESS_V6),
            (r, ROUTER_EGRESS, ROUTER_EGRESS_V4, ROUTER_EGRESS_V6),
            (s, SERVER_IF, SERVER_V4, SERVER_V6),
        ];
        for (ns, dev, v4, v6) in addrs {
            let v4 = format!("{v4}/{PREFIX_LEN_V4}");
            let v6 = format!("{v6}/{PREFIX_LEN_V6}");
            run("ip", &["-n", ns, "addr", "add", &v4, "dev", dev])?;
            run(
                "ip",
                &["-n", ns, "-6", "addr", "add", &v6, "dev", dev, "nodad"],
            )?;
        }
        for (ns, dev) in links {
            run("ip", &["-n", ns, "link", "set", dev, "up"])?;
        }

        let routes: [(&str, &str, String, String); 2] = [
            (
                c,
                CLIENT_IF,
                ROUTER_INGRESS_V4.to_string(),
                ROUTER_INGRESS_V6.to_string(),
            ),
            (
                s,
                SERVER_IF,
                ROUTER_EGRESS_V4.to_string(),
                ROUTER_EGRESS_V6.to_string(),
            ),
        ];
        for (ns, dev, gw4, gw6) in &routes {
            run(
                "ip",
                &[
                    "-n", ns, "route", "replace", "default", "via", gw4, "dev", dev,
                ],
            )?;
            run(
                "ip",
                &[
                    "-n", ns, "-6", "route", "replace", "default", "via", gw6, "dev", dev,
                ],
            )?;
        }

        // PERMANENT entries: tests drop packets, and a dropped ARP/ND exchange
        // would turn into loss the test did not ask for (and extra packets it
        // did not send).
        let mac_c0 = mac_of(c, CLIENT_IF)?;
        let mac_r0 = mac_of(r, ROUTER_INGRESS)?;
        let mac_r1 = mac_of(r, ROUTER_EGRESS)?;
        let mac_s0 = mac_of(s, SERVER_IF)?;
        let neighbours: [(&str, &str, String, String, &str); 4] = [
            (
                c,
                CLIENT_IF,
                ROUTER_INGRESS_V4.to_string(),
                ROUTER_INGRESS_V6.to_string(),
                &mac_r0,
            ),
            (
                r,
                ROUTER_INGRESS,
                CLIENT_V4.to_string(),
                CLIENT_V6.to_string(),
                &mac_c0,
            ),
            (
                r,
                ROUTER_EGRESS,
                SERVER_V4.to_string(),
                SERVER_V6.to_string(),
                &mac_s0,
            ),
            (
                s,
                SERVER_IF,
                ROUTER_EGRESS_V4.to_string(),
                ROUTER_EGRESS_V6.to_string(),
                &mac_r1,
            ),
        ];
        for (ns, dev, v4, v6, mac) in &neighbours {
            for addr in [v4, v6] {
                run(
                    "ip",
                    &[
                        "-n",
                        ns,
                        "neigh",
                        "replace",
                        addr,
                        "lladdr",
                        mac,
                        "dev",
                        dev,
                        "nud",
                        "permanent",
                    ],
                )?;
            }
        }

        self.wait_quiet(&links)
    }

    /// Turns TSO/GSO/GRO off on every veth, or warns once if ethtool is missing.
    fn disable_offloads(&self, links: &[(&str, &str)]) -> Result<()> {
        for (ns, dev) in links {
            match self.exec(
                ns,
                &[
                    "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off",
                ],
            ) {
                Ok(_) => {}
                Err(e) if e.downcast_ref::<ToolMissing>().is_some() => {
                    tracing::warn!(
                        "ethtool is not installed: leaving veth offloads on in lab namespaces"
                    );
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Waits until none of the veths has transmitted for [`QUIET_WINDOW`],
    /// after each has sent at least one packet.
    ///
    /// Joining IPv6 multicast groups (solicited-node, all-routers) sends MLD
    /// reports that no sysctl can switch off; they follow link-up after a
    /// link-watch delay of up to ~1 s. Each veth carries IPv6 addresses, so
    /// each sends at least one report; once all have and the counters stand
    /// still, the links stay silent (no querier, permanent neighbours). A
    /// test that attaches an impairment after `create` then counts only its
    /// own packets.
    fn wait_quiet(&self, links: &[(&str, &str)]) -> Result<()> {
        let start = Instant::now();
        let mut last = self.tx_packets(links)?;
        let mut last_change = Instant::now();
        loop {
            thread::sleep(Duration::from_millis(20));
            let now = self.tx_packets(links)?;
            if now != last {
                last = now;
                last_change = Instant::now();
            }
            if last.iter().all(|&p| p > 0) && last_change.elapsed() >= QUIET_WINDOW {
                tracing::debug!(elapsed_ms = start.elapsed().as_millis() as u64, tx = ?last, "lab links are quiet");
                return Ok(());
            }
            if start.elapsed() >= QUIET_MAX_WAIT {
                tracing::warn!(tx = ?last, "lab links did not fall silent within {QUIET_MAX_WAIT:?}; continuing");
                return Ok(());
            }
        }
    }

    /// TX packet counters of `links`, read from `/proc/thread-self/net/dev`
    /// on a thread inside each namespace (cheaper than running `ip -s`).
    fn tx_packets(&self, links: &[(&str, &str)]) -> Result<Vec<u64>> {
        links
            .iter()
            .map(|(ns, dev)| tx_packets_in(ns, dev))
            .collect()
    }

    /// The three namespace names: client, router, server.
    pub fn namespaces(&self) -> [&str; 3] {
        [&self.client, &self.router, &self.server]
    }

    /// Runs `ip netns exec NS args…` and returns its stdout. `ns` must be one
    /// of this lab's namespaces, so a typo cannot run a command in the host's.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Result<String> {
        if !self.namespaces().contains(&ns) {
            bail!(
                "namespace '{ns}' is not part of this lab ({}, {}, {})",
                self.client,
                self.router,
                self.server
            );
        }
        if args.is_empty() {
            bail!("no command given to run in namespace '{ns}'");
        }
        let mut full = vec!["netns", "exec", ns];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    pub fn client_v4(&self) -> Ipv4Addr {
        CLIENT_V4
    }
    pub fn server_v4(&self) -> Ipv4Addr {
        SERVER_V4
    }
    pub fn client_v6(&self) -> Ipv6Addr {
        CLIENT_V6
    }
    pub fn server_v6(&self) -> Ipv6Addr {
        SERVER_V6
    }
    /// The router's address on the client link (the client's gateway).
    pub fn router_ingress_v4(&self) -> Ipv4Addr {
        ROUTER_INGRESS_V4
    }
    /// The router's address on the server link (the server's gateway).
    pub fn router_egress_v4(&self) -> Ipv4Addr {
        ROUTER_EGRESS_V4
    }
    pub fn router_ingress_v6(&self) -> Ipv6Addr {
        ROUTER_INGRESS_V6
    }
    pub fn router_egress_v6(&self) -> Ipv6Addr {
        ROUTER_EGRESS_V6
    }
}

impl Drop for Lab {
    /// Deletes the namespaces this lab created. Never panics: errors are
    /// logged. Sockets still open in a namespace keep it (and its veths)
    /// alive, unnamed, until they close.
    fn drop(&mut self) {
        for name in self.owned.drain(..).rev() {
            if let Err(e) = run("ip", &["netns", "del", &name]) {
                tracing::warn!("deleting lab namespace {name}: {e:#}");
            }
        }
    }
}

/// Namespaces (as listed by `ip netns list`, i.e. entries of
/// `/run/netns`) named `imp-{tag}-{pid}-…` for this process: what labs
/// with `tag` left behind. Tests assert this is empty after dropping labs.
pub fn leftovers(tag: &str) -> Vec<String> {
    let prefix = format!("imp-{tag}-{}-", std::process::id());
    let Ok(dir) = std::fs::read_dir(netns::NETNS_RUN_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    names.sort();
    names
}

fn validate_tag(tag: &str) -> Result<()> {
    let ok_chars = tag
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-');
    if tag.is_empty() || tag.len() > MAX_TAG_LEN || !ok_chars {
        bail!("invalid lab tag {tag:?}: use 1-{MAX_TAG_LEN} characters of [A-Za-z0-9_-]");
    }
    Ok(())
}

/// The program to run was not found (lets callers treat optional tools
/// such as ethtool as optional).
#[derive(Debug, thiserror::Error)]
#[error("`{0}` failed: command not found")]
struct ToolMissing(String);

/// Runs `program args…` and returns its stdout; the error names the command
/// line, its exit status and its stderr.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let line = || {
        std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let out = match Command::new(program).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ToolMissing(line()).into())
        }
        Err(e) => return Err(anyhow!("`{}` could not be started: {e}", line())),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // `ip netns exec` reports a missing program on stderr with status 255
        // rather than failing to spawn.
        if stderr.contains("No such file or directory") && stderr.contains("exec of") {
            return Err(ToolMissing(line()).into());
        }
        bail!("`{}` failed ({}): {}", line(), out.status, stderr.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The MAC address of `dev` in namespace `ns`, from `ip -j link show`.
fn mac_of(ns: &str, dev: &str) -> Result<String> {
    let json = run("ip", &["-n", ns, "-j", "link", "show", "dev", dev])?;
    let value: serde_json::Value = serde_json::from_str(&json)
        .with_context(|| format!("parsing `ip -n {ns} -j link show dev {dev}` output"))?;
    value
        .get(0)
        .and_then(|l| l.get("address"))
        .and_then(|a| a.as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("`ip -n {ns} -j link show dev {dev}` printed no address: {json}"))
}

/// TX packet counter of `dev` in namespace `ns`.
fn tx_packets_in(ns: &str, dev: &str) -> Result<u64> {
    let (ns_owned, dev_owned) = (ns.to_owned(), dev.to_owned());
    // /proc/thread-self/net follows the reading thread's namespace, unlike
    // /sys/class/net, which shows the namespace sysfs was mounted in.
    let text = netns::run_in(ns, || std::fs::read_to_string("/proc/thread-self/net/dev"))?
        .with_context(|| format!("reading /proc/thread-self/net/dev in namespace {ns_owned}"))?;
    parse_tx_packets(&text, &dev_owned)
        .ok_or_else(|| anyhow!("no counters for {dev} in /proc/net/dev of namespace {ns}"))
}

/// The TX packet count of `dev` in `/proc/net/dev` text: after `dev:` come 8
/// receive counters, then TX bytes and TX packets.
fn parse_tx_packets(text: &str, dev: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, counters) = line.split_once(':')?;
        if name.trim() != dev {
            return None;
        }
        counters.split_whitespace().nth(9)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_validated() {
        for good in ["a", "lab_1", "x-y", &"a".repeat(MAX_TAG_LEN)] {
            assert!(validate_tag(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a/b", "é", &"a".repeat(MAX_TAG_LEN + 1)] {
            assert!(validate_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn proc_net_dev_tx_packets() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:     100       2    0    0    0     0          0         0      300       4    0    0    0     0       0          0\n    \
r1: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n";
        assert_eq!(parse_tx_packets(text, "lo"), Some(4));
        assert_eq!(parse_tx_packets(text, "r1"), Some(20));
        assert_eq!(parse_tx_packets(text, "r0"), None);
    }

    #[test]
    fn addresses_are_in_the_benchmarking_ranges() {
        for a in [CLIENT_V4, ROUTER_INGRESS_V4, ROUTER_EGRESS_V4, SERVER_V4] {
            assert_eq!(a.octets()[0], 198);
            assert!(a.octets()[1] == 18 || a.octets()[1] == 19);
        }
        for a in [CLIENT_V6, ROUTER_INGRESS_V6, ROUTER_EGRESS_V6, SERVER_V6] {
            assert_eq!(&a.segments()[..3], &[0x2001, 2, 0]);
        }
    }

    #[test]
    fn exec_refuses_foreign_namespaces_and_leftovers_is_empty_for_unused_tags() {
        // A Lab value that owns nothing: dropping it runs no command.
        let lab = Lab {
            client: "imp-t-c".into(),
            router: "imp-t-r".into(),
            server: "imp-t-s".into(),
            owned: vec![],
        };
        let err = lab.exec("host", &["true"]).unwrap_err();
        assert!(format!("{err}").contains("not part of this lab"), "{err}");
        assert!(leftovers("never-used-tag").is_empty());
    }
}
