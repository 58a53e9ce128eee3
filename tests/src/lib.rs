//! Shared fixtures for impair's privileged test tiers (BPF_PROG_TEST_RUN and
//! network-namespace tests), each defined once: crafted frames (`packet`),
//! the BPF programs at each hook (`bpf`), labs, controllers and probes
//! (`ns`), a connection's last TCP counters (`ss`), what the running kernel
//! can do (`kernel`), and the statistics every assertion uses (`stats`).
//! These tests need root, the real eBPF object and the `impair` binary; when
//! any is missing they fail with the reason rather than pass silently.
use std::{net::Ipv4Addr, net::Ipv6Addr, path::PathBuf};

pub mod bpf;
pub mod flood;
pub mod kernel;
pub mod ns;
pub mod packet;
pub mod ss;
pub mod stats;

/// Says what a passing test could not check on this machine and where it is
/// checked instead. libtest swallows `eprintln!` of passing tests; a direct
/// write to the process's stderr is never captured, so the note is seen in
/// every run (and in the VM's console log).
pub fn note(msg: impl std::fmt::Display) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "NOTE: {msg}");
}

/// Fails the test loudly unless we can do privileged BPF and netns work.
pub fn require_privileges() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "this test needs root (BPF programs, network namespaces); run it as root, e.g. `sudo cargo xtask test`"
    );
    assert!(
        !impair::ebpf::is_stub(),
        "impair was built without its eBPF object (no BPF toolchain found at build time): run `cargo xtask setup` \
         and test through `cargo xtask test` (it builds with IMPAIR_EBPF=require)"
    );
}

/// The `impair` binary of this build (target/<profile>/impair), which the
/// namespace tests run as users do.
pub fn impair_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("impair");
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build --bin impair` (`cargo xtask test` does)",
        bin.display()
    );
    bin
}

/// Pins the calling thread to CPU 0, so BPF_PROG_TEST_RUN always uses the
/// same per-CPU generator state and seeded runs are exactly reproducible.
pub fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it and
    // sched_setaffinity reads it for the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1);
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 1);

/// Brings up `lo` in the calling thread's network namespace (SIOCSIFFLAGS),
/// for tests that unshare a private namespace.
pub fn set_loopback_up() {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq with a NUL-terminated
    // name; the socket is closed before returning.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[..3].copy_from_slice(&[b'l' as libc::c_char, b'o' as libc::c_char, 0]);
        assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr), 0);
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr), 0);
        libc::close(fd);
    }
}

/// A scratch directory for profile, scenario and report files, created
/// fresh and removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    /// `$TMPDIR/impair-test-TAG-PID`, emptied if a previous run left it.
    pub fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("impair-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// Writes `text` to the file `name` in the directory; returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }

    /// Leaves the directory in place (to read what a test wrote); returns it.
    pub fn keep(self) -> PathBuf {
        let d = self.0.clone();
        std::mem::forget(self);
        d
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
