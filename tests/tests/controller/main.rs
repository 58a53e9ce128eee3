//! Namespace tier for the controller's verbs: update, duration, scenarios,
//! profile files, stats/status/detach --all, metrics, --netns, doctor, run,
//! signals, completions and man pages. The real `impair` binary runs in the
//! lab's router namespace; what matters is measured at the receiver with the
//! probe, and every test checks the router is restored exactly.
//!
//! Modules: `verbs` holds what every kernel does alike; what differs by
//! kernel is in `clsact` (the lease enforcing `--duration`, pinned instances
//! on netlink clsact and their cleanup, and `impair run`'s attach and detach,
//! which go through clsact before Linux 6.6) and `fq` (updates that install
//! sch_fq). The VM tier runs `controller clsact::` and `controller fq::`
//! (`cargo xtask vm`). `soak` is issue 16's soak (`cargo xtask soak` runs its
//! full form); `upgrade` its upgrades of pinned instances (`cargo xtask
//! upgrade` runs the two-build form); `capture` its record of impaired
//! packets, read back with tshark. `container`: `--container` against
//! real Podman. `two_way_traces`: a two-way profile naming a loss series
//! per direction (issue 15); `two_way_traces_fq` (VM) a rate trace per
//! direction.
use std::{process::Command, time::Duration};

mod capture;
mod clsact;
mod container;
mod echo_fq;
mod fq;
mod ifb;
mod newcomer;
mod run_fq;
mod run_received;
mod soak;
mod two_way;
mod two_way_fq;
mod two_way_traces;
mod two_way_traces_fq;
mod upgrade;
mod verbs;

/// Not a test of its own: `impair run` starts this test binary as CMD (see
/// `run_impairs_only_the_commands_traffic`). With `IMPAIR_TEST_SEND=ADDR,N`
/// it starts itself again as a child (children share the cgroup), which
/// sends N datagrams `cmd` to ADDR; the parent then exits with status 3.
#[test]
#[ignore = "a helper that `impair run` starts as CMD"]
fn helper_udp_sender() {
    let Ok(spec) = std::env::var("IMPAIR_TEST_SEND") else {
        return;
    };
    if std::env::var_os("IMPAIR_TEST_CHILD").is_none() {
        // CMD's lifetime, marked for the test: impair is attached throughout.
        let marks = std::env::var_os("IMPAIR_TEST_MARKS").map(std::path::PathBuf::from);
        if let Some(m) = &marks {
            std::fs::write(m.join("start"), b"").unwrap();
        }
        let st = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "helper_udp_sender", "--ignored", "--quiet"])
            .env("IMPAIR_TEST_CHILD", "1")
            .status()
            .unwrap();
        assert!(st.success());
        if let Some(m) = &marks {
            std::fs::write(m.join("end"), b"").unwrap();
        }
        std::process::exit(3);
    }
    let (addr, n) = spec.split_once(',').unwrap();
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..n.parse::<u32>().unwrap() {
        sock.send_to(b"cmd", addr).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
}
