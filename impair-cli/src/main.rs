//! The `impair` command line: flags ([`args`]) → the model's builders
//! ([`convert`]) → the library and tools; rendering and the live view here.
//! Bad input is one line and exit code 2; other failures exit 1.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the command line: printing is its job"
)]
use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory as _, Parser as _};
use impair::sys;
use impair_tools::signals::stop_flag;

use crate::args::{Cli, Command};

mod agent;
mod args;
mod attach;
mod capture;
mod convert;
mod instances;
mod link;
mod render;
mod sweep_args;
mod update;
mod verbs;

/// A [`UsageError`] from a format string.
macro_rules! usage {
    ($($arg:tt)*) => { ::impair::input::UsageError(format!($($arg)*)) };
}
pub(crate) use usage;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IMPAIR_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(line) = render::usage_line(&e) {
                eprintln!("impair: error: {line}");
                ExitCode::from(2)
            } else {
                eprintln!("impair: error: {e:#}");
                ExitCode::from(1)
            }
        }
    }
}

fn run() -> Result<()> {
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
            // One line, like every other usage error (`--help` has the rest),
            // with clap's "did you mean" tip and a hint for syntax brought
            // from tc netem or comcast.
            let text = e.render().to_string();
            let msg: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            let msg = msg.join("; ");
            let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
            let args: Vec<String> = std::env::args().skip(1).collect();
            if let Some(hint) = render::hint_for_foreign_syntax(&args) {
                return Err(usage!("{msg}; {hint}").into());
            }
            return Err(usage!("{msg} (see impair --help)").into());
        }
    };
    let mut cli = cli;
    // `--container`: its network namespace, entered like `--netns PID`.
    if cli.container.is_some() && cli.netns.is_some() {
        return Err(usage!(
            "--container and --netns both choose the network namespace to work in: give one"
        )
        .into());
    }
    let container_ns = match cli.container.clone() {
        Some(c) => Some(verbs::enter_container(
            &c,
            cli.runtime_socket.as_deref(),
            &mut cli.command,
        )?),
        None => None,
    };
    if let Command::Attach(a) = &cli.command {
        if a.iface.is_empty() {
            return Err(usage!(
                "the following required arguments were not provided: <IFACE> (or --container NAME|ID; see impair --help)"
            )
            .into());
        }
    }
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
        for gone in impair::engine::sweep_expired_pins()? {
            eprintln!("impair: removed the pinned instance on {gone}: its --duration has passed");
        }
    }
    if !sys::is_root() {
        let verb = match &cli.command {
            Command::Status(_) => Some("status"),
            Command::Stats(_) => Some("stats"),
            Command::Detach(_) => Some("detach"),
            Command::Capture(_) => Some("capture"),
            _ => None,
        };
        if let Some(verb) = verb {
            // Unprivileged, the kernel shows no BPF program: "nothing
            // attached" would be a guess, not an answer.
            return Err(usage!(
                "permission denied: impair {verb} needs root to see impair's BPF programs and maps \
                 (CAP_SYS_ADMIN or CAP_BPF); run it with sudo"
            )
            .into());
        }
    }
    match cli.command {
        Command::Attach(a) => attach::attach(*a, cli.netns.as_deref().or(container_ns.as_deref())),
        Command::Update(a) => update::update(*a),
        Command::Run(a) => verbs::run_cmd(*a),
        Command::Sweep(a) => {
            let plan = sweep_args::parse(&a.args)?;
            let stop = stop_flag()?;
            impair_tools::sweep::run(&a.iface, &plan, &stop).map(|_| ())
        }
        Command::Stats(a) => verbs::stats(a),
        Command::Status(a) => verbs::status(a),
        Command::Detach(a) => verbs::detach(a),
        Command::Profiles(a) => verbs::profiles_cmd(a),
        Command::Doctor(a) => verbs::doctor(a),
        Command::Completions(a) => {
            let mut script = Vec::new();
            clap_complete::generate(a.shell, &mut Cli::command(), "impair", &mut script);
            render::print_all(&script)
        }
        Command::Man(a) => verbs::man(a),
        Command::Demo(a) => impair_tools::demo::run(&(&a).into()),
        Command::Agent(a) => agent::agent(a),
        Command::Capture(a) => capture::capture(a),
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
