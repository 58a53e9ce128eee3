//! The other verbs: run, update, stats, status, detach, profiles, doctor,
//! man (completions are in main).
use std::{
    io::IsTerminal as _,
    sync::atomic::Ordering,
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::CommandFactory as _;
use impair::{discover, observe::snapshot::Snapshot, profile as profiles, sys};
use impair_tools::signals::stop_flag;

use crate::{
    args::{
        Cli, DetachArgs, DoctorArgs, ManArgs, ProfilesArgs, ProfilesCommand, RunArgs, StatsArgs,
        StatusArgs,
    },
    attach::redraw,
    convert::{profile_link, rules_from},
    instances::{at_side, instances_here, instances_on, link_pair, on_side, one_instance},
    usage,
};

pub(crate) fn run_cmd(a: RunArgs) -> Result<()> {
    // A profile's uplink is what CMD sends and its downlink what it
    // receives; flags impair both, with match fields seen from CMD (a
    // received packet's source is the peer).
    let (rules, received, label) = match &a.profile {
        Some(name) => {
            let (link, label) = profile_link(name, &a.impair, &a.matcher)?;
            (link.uplink, link.downlink, label)
        }
        None => {
            let (rules, label) = rules_from(None, &a.impair, &a.matcher)?;
            let received = impair_tools::run::received_rules(&rules);
            (rules, received, label)
        }
    };
    let ifaces = if a.ifaces.is_empty() {
        impair_tools::run::default_route_ifaces()?
    } else {
        a.ifaces.clone()
    };
    let stop = stop_flag()?;
    let status = impair_tools::run::run(
        impair_tools::run::RunOptions {
            ifaces,
            rules,
            received,
            label,
            seed: a.seed,
            mode: a.attach_mode,
            cmd: a.cmd.clone(),
            quiet: a.quiet,
        },
        &stop,
    )?;
    // Everything is restored by now; pass CMD's status on.
    std::process::exit(impair_tools::run::exit_code(status));
}

pub(crate) fn stats(a: StatsArgs) -> Result<()> {
    let read_all = || -> Result<Vec<Snapshot>> {
        match &a.iface {
            Some(iface) => {
                // Both instances of a two-way link, or the one named.
                if a.direction.is_none() {
                    if let Some(pair) = link_pair(iface)? {
                        return pair
                            .iter()
                            .map(|i| Snapshot::read(&i.maps, iface))
                            .collect();
                    }
                }
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

pub(crate) fn status(a: StatusArgs) -> Result<()> {
    let here = sys::netns_ino()?;
    let names = impair::netns::names_by_ino();
    let mut rows = Vec::new();
    let mut elsewhere = 0usize;
    for inst in discover::instances()? {
        if inst.attaching() {
            continue;
        }
        if inst.owner.netns_ino != here && !a.all_namespaces {
            elsewhere += 1;
            continue;
        }
        let iface = if inst.owner.netns_ino == here {
            sys::ifname(inst.owner.ifindex)
                .unwrap_or_else(|| format!("ifindex {}", inst.owner.ifindex))
        } else {
            match names.get(&inst.owner.netns_ino) {
                Some(ns) => format!(
                    "{} (netns {ns})",
                    impair::netns::ifname_in(ns, inst.owner.ifindex)
                        .unwrap_or_else(|| format!("ifindex {}", inst.owner.ifindex))
                ),
                None => format!(
                    "ifindex {} (unnamed netns {}: not in `ip netns`)",
                    inst.owner.ifindex, inst.owner.netns_ino
                ),
            }
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
    // Instances of a map ABI version this build cannot read (a newer
    // impair's): named, never read further.
    for e in discover::unknown_abi_here()? {
        eprintln!("impair: note: {e}");
    }
    if elsewhere > 0 {
        // On stderr: a note for people, not a row of the listing.
        eprintln!(
            "impair: {elsewhere} more in other network namespaces (impair status --all-namespaces)"
        );
    }
    for s in rows {
        let age = sys::unix_ns().saturating_sub(s.owner.attached_unix_ns) / 1_000_000_000;
        println!(
            "{} {}{}{}  {}  pid {}{}  since {} ({} ago)  generation {}  {}",
            s.interface,
            s.hook,
            s.owner
                .ifb
                .as_ref()
                .map_or(String::new(), |i| format!(" via ifb {i}")),
            s.owner
                .segmenter
                .as_ref()
                .map_or(String::new(), |i| format!(" segmenting through {i}")),
            s.owner.attach_mode,
            s.owner.pid,
            if !s.owner.alive {
                " (dead: leftover, traffic passes; `impair detach` removes it)"
            } else if s.owner.pinned {
                " (pinned)"
            } else {
                ""
            },
            impair::observe::snapshot::fmt_unix_time(s.owner.attached_unix_ns),
            impair::observe::snapshot::fmt_age_secs(age),
            s.generation,
            s.owner.label
        );
    }
    Ok(())
}

pub(crate) fn detach(a: DetachArgs) -> Result<()> {
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
        if let Some(e) = discover::unknown_abi_here()?.into_iter().next() {
            return Err(e.into());
        }
        if let Some(iface) = &a.iface {
            if impair::engine::remove_crash_leftovers(iface)? {
                println!("impair: removed what a killed impair left on {iface}");
                return Ok(());
            }
        }
        if a.if_exists {
            return Ok(());
        }
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
    // Both instances of a two-way link belong to one controller: stopping
    // it restores both, so it is signalled once.
    let mut stopped = std::collections::BTreeSet::new();
    for (iface, inst) in targets {
        if inst.alive
            && !inst.pinned()
            && !stopped.insert((inst.owner.pid, inst.owner.pid_start_ticks))
        {
            continue;
        }
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
pub(crate) fn detach_one(iface: &str, inst: discover::Instance) -> Result<()> {
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
    impair::engine::remove_leftover(iface, &inst)?;
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

pub(crate) fn profiles_cmd(a: ProfilesArgs) -> Result<()> {
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
                            "two_way": p.two_way,
                            "downlink_rules": p.downlink.len(),
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
            let sides: &[(&str, &[impair::model::RuleSpec])] = if p.two_way {
                &[
                    (" uplink (sent: egress)", &p.rules),
                    (" downlink (received: ingress)", &p.downlink),
                ]
            } else {
                &[("", &p.rules)]
            };
            for (side, rules) in sides {
                let set = impair::model::compile_all(rules)?;
                println!("# compiled{side}:");
                if set.rules.is_empty() {
                    println!("#   none: unimpaired");
                }
                for (i, r) in set.rules.iter().enumerate() {
                    let v = impair::model::RuleView::from_rule(r);
                    println!("#   rule {i} [{}] {}", v.matches, v.impairments);
                }
            }
        }
    }
    Ok(())
}

pub(crate) fn doctor(a: DoctorArgs) -> Result<()> {
    let checks = impair::observe::doctor::checks();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for l in impair::observe::doctor::render(&checks) {
            println!("{l}");
        }
    }
    Ok(())
}

pub(crate) fn man(a: ManArgs) -> Result<()> {
    let cmd = Cli::command();
    match a.out {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            crate::render::print_all(&page)?;
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

/// `--container NAME|ID`: resolves it through its runtime's API and moves
/// this thread (and every thread it starts) into its network namespace,
/// like `--netns PID`; fills in the interface `attach` and `detach` default
/// to (its only one but lo). Returns the namespace's path (for messages).
/// Every failure is a one-line usage error, before anything changed.
pub(crate) fn enter_container(
    name: &str,
    socket: Option<&std::path::Path>,
    command: &mut crate::args::Command,
) -> Result<String> {
    use crate::args::Command;
    if matches!(command, Command::Demo(_)) {
        return Err(
            usage!("--container does not apply to demo: it builds its own namespaces").into(),
        );
    }
    let c = impair::container::resolve(name, socket).map_err(|e| usage!("{e}"))?;
    if c.shares_caller_netns {
        // Its interfaces carry other processes' traffic too: scope the
        // rules to its cgroup (as `impair run` does) on a named interface.
        if let Command::Attach(a) = command {
            if a.iface.is_empty() {
                return Err(usage!(
                    "container '{}' shares this network namespace (host network): name the interface \
                     its traffic leaves by; impair then matches its cgroup only",
                    c.name
                )
                .into());
            }
            let Some(id) = c.cgroup_id else {
                return Err(usage!(
                    "container '{}' shares this network namespace and its cgroup v2 id cannot be read \
                     (cgroup {}): impair cannot tell its traffic from the host's",
                    c.name,
                    c.cgroup.as_deref().unwrap_or("unknown")
                )
                .into());
            };
            a.cgroup_scope = Some(id);
        }
    }
    let default_iface = || {
        c.default_interface()
            .map(str::to_owned)
            .map_err(|e| usage!("{e}"))
    };
    match command {
        Command::Attach(a) if a.iface.is_empty() => a.iface = default_iface()?,
        Command::Detach(a) if a.iface.is_none() && !a.all => a.iface = Some(default_iface()?),
        _ => {}
    }
    let file = std::fs::File::open(&c.netns).map_err(|e| {
        usage!(
            "container '{}' is gone: cannot open {} ({e})",
            c.name,
            c.netns.display()
        )
    })?;
    sys::setns_net(&file)?;
    Ok(c.netns.display().to_string())
}
