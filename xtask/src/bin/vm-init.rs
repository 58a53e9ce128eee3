//! `vm-init`: PID 1 of the guest that `cargo xtask vm` boots (docs/vm.md).
//!
//! xtask copies this program to `/init` in the initramfs, with its shared
//! libraries, and writes the plan next to it ([`guest::PLAN_PATH`]). It:
//! 1. mounts what the tests expect of a Linux system (proc, sysfs, devtmpfs,
//!    devpts, bpffs, cgroup2, debugfs, tracefs, tmpfs on /run and /tmp);
//! 2. installs busybox's applets, names the host, brings `lo` up;
//! 3. loads the plan's kernel modules in order;
//! 4. runs each test binary with its arguments, between a start and a result
//!    marker line, reaping every orphan meanwhile (it is PID 1);
//! 5. prints the kernel log if a binary failed (`quiet` hides kernel warnings
//!    from the console), then the done marker, and powers off.
//!
//! It never exits: PID 1 exiting panics the kernel. On an error it prints
//! [`Marker::InitFailed`] and powers off, so the host reports why.
use std::{
    ffi::CString,
    fs,
    io::{self, Write as _},
    os::fd::AsRawFd as _,
    path::Path,
    process::Command,
};

use xtask::guest::{self, Marker, Plan, Run};

/// The environment of everything the init starts: iproute2's `ip`/`tc` in
/// /usr/sbin come before busybox's applets of the same names in /bin.
const ENV: &[(&str, &str)] = &[
    ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    ("HOME", "/root"),
    ("TMPDIR", "/tmp"),
    ("RUST_BACKTRACE", "1"),
    // Tests that read files with host-only tools (tshark) know where they are.
    ("IMPAIR_VM_GUEST", "1"),
];

/// Whether a failed mount is worth a line on the console.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    /// The tests rely on it: say so if it fails.
    Expected,
    /// Only for debugging by hand: fail silently.
    Optional,
}

/// A filesystem to mount: (type, where, need). In order: devpts lives in
/// devtmpfs, bpffs and cgroup2 in sysfs.
const MOUNTS: &[(&str, &str, Need)] = &[
    ("proc", "/proc", Need::Expected),
    ("sysfs", "/sys", Need::Expected),
    ("devtmpfs", "/dev", Need::Expected),
    ("devpts", "/dev/pts", Need::Expected),
    ("bpf", "/sys/fs/bpf", Need::Expected),
    ("cgroup2", "/sys/fs/cgroup", Need::Expected),
    ("debugfs", "/sys/kernel/debug", Need::Optional),
    ("tracefs", "/sys/kernel/tracing", Need::Optional),
    ("tmpfs", "/run", Need::Expected),
    ("tmpfs", "/tmp", Need::Expected),
];

fn main() {
    if let Err(e) = init() {
        say(&Marker::InitFailed.line(&[&e.to_string()]));
    }
    power_off();
}

fn init() -> io::Result<()> {
    for (key, value) in ENV {
        // Single-threaded: nothing reads the environment concurrently.
        std::env::set_var(key, value);
    }
    for dir in ["/proc", "/sys", "/dev", "/run", "/tmp", "/root"] {
        fs::create_dir_all(dir)?;
    }
    for &(fstype, target, need) in MOUNTS {
        if fstype == "devpts" {
            // Now that devtmpfs is mounted: the console through its node
            // there, as a shell's `exec </dev/console >/dev/console 2>&1`.
            if let Err(e) = console_on_stdio() {
                say(&format!("vm-init: reopening /dev/console: {e}"));
            }
            fs::create_dir_all("/dev/shm")?;
        }
        let _ = fs::create_dir_all(target);
        if let Err(e) = mount(fstype, target) {
            if need == Need::Expected {
                say(&format!(
                    "vm-init: could not mount {fstype} on {target}: {e}"
                ));
            }
        }
    }
    fs::create_dir_all("/run/netns")?;
    // The kernel runs this for request_module(); busybox's modprobe.
    fs::write("/proc/sys/kernel/modprobe", "/sbin/modprobe\n")?;
    fs::write("/proc/sys/kernel/hostname", "impair-vm\n")?;
    // Links every applet in /bin (and so /sbin, a link to it): sh, mount,
    // dmesg, modprobe, ... for the tests and for debugging by hand.
    run_quietly("/bin/busybox", &["--install", "-s", "/bin"]);
    run_quietly("ip", &["link", "set", "lo", "up"]);

    let release = read_trimmed("/proc/sys/kernel/osrelease");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    say(&Marker::Booted.line(&[
        &release,
        &cpus.to_string(),
        "cpus,",
        "uptime",
        &uptime(),
        "s",
    ]));

    let plan: Plan = serde_json::from_slice(&fs::read(guest::PLAN_PATH)?)
        .map_err(|e| io::Error::other(format!("{}: {e}", guest::PLAN_PATH)))?;
    if plan.kernel != release {
        say(&format!(
            "vm-init: this initramfs was built for {}, the kernel is {release}: modules will not load",
            plan.kernel
        ));
    }
    for module in &plan.modules {
        if let Err(e) = load_module(Path::new(module)) {
            say(&Marker::ModuleFailed.line(&[module, &e.to_string()]));
        }
    }
    let loaded: Vec<String> = read_trimmed("/proc/modules")
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    say(&format!("vm: modules loaded: {}", loaded.join(" ")));

    let mut failed = false;
    for run in &plan.runs {
        say(&Marker::Start.line(&[&run.name, "uptime", &uptime()]));
        let code = run_to_end(run);
        failed |= code != 0;
        say(&Marker::Result.line(&[&run.name, &code.to_string(), "uptime", &uptime()]));
    }
    if failed {
        say("vm: a test binary failed; the kernel log (dmesg) follows");
        run_quietly("dmesg", &[]);
        say("vm: end of the kernel log");
    }
    say(Marker::Done.text());
    Ok(())
}

/// A line on the console, flushed at once (the host reads markers as they come).
fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs a helper command to its end; a failure is printed, not fatal.
fn run_quietly(program: &str, args: &[&str]) {
    match Command::new(program).args(args).status() {
        Ok(st) if st.success() => {}
        Ok(st) => say(&format!(
            "vm-init: `{program} {}` failed ({st})",
            args.join(" ")
        )),
        Err(e) => say(&format!("vm-init: could not run {program}: {e}")),
    }
}

/// Cycles of the soak in the guest (tests/tests/controller/soak.rs: 40 on
/// the host): every kind of cycle once, sch_fq's included (a cycle takes
/// 8 to 16 s under TCG).
const GUEST_SOAK_CYCLES: &str = "8";

/// Runs one test binary in /tmp and returns its exit code (128 + the signal
/// if one killed it, 127 if it could not start, as a shell reports them).
fn run_to_end(run: &Run) -> i32 {
    let child = Command::new(&run.program)
        .args(&run.args)
        .current_dir("/tmp")
        // The soak's quick form, smaller: under TCG one cycle (three BPF
        // loads, each verified) takes seconds, not the host's half second.
        .env("IMPAIR_SOAK_CYCLES", GUEST_SOAK_CYCLES)
        .spawn();
    let pid = match child {
        // The Child is dropped without waiting: `wait_reaping` collects it.
        Ok(child) => child.id() as libc::pid_t,
        Err(e) => {
            say(&format!("vm-init: could not start {}: {e}", run.program));
            return 127;
        }
    };
    match wait_reaping(pid) {
        Ok(code) => code,
        Err(e) => {
            say(&format!("vm-init: waiting for {}: {e}", run.program));
            1
        }
    }
}

/// Waits for `pid`, reaping every other child on the way: orphans of the
/// tests (daemons, `ip netns exec` children) are re-parented to PID 1, and
/// unreaped they would stay zombies that `kill(pid, 0)` still finds.
fn wait_reaping(pid: libc::pid_t) -> io::Result<i32> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid place for the kernel to write the exit
        // status; -1 waits for any child of this process.
        let got = unsafe { libc::waitpid(-1, &mut status, 0) };
        if got == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if got != pid {
            continue;
        }
        if libc::WIFEXITED(status) {
            return Ok(libc::WEXITSTATUS(status));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(128 + libc::WTERMSIG(status));
        }
    }
}

fn mount(fstype: &str, target: &str) -> io::Result<()> {
    let source = CString::new(fstype)?;
    let target = CString::new(target)?;
    // SAFETY: source, target and type are NUL-terminated strings that live
    // across the call; no flags, and a null `data` (no mount options).
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            source.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes fds 0, 1 and 2 the console device.
fn console_on_stdio() -> io::Result<()> {
    let console = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")?;
    for fd in 0..=2 {
        // SAFETY: `console` is an open descriptor for the whole loop; dup2
        // atomically replaces `fd` (0, 1 or 2), which nothing else holds as
        // an owned File.
        if unsafe { libc::dup2(console.as_raw_fd(), fd) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Loads an uncompressed module file with finit_module(2). Loaded already
/// is fine.
fn load_module(path: &Path) -> io::Result<()> {
    let file = fs::File::open(path)?;
    let no_params = c"";
    // SAFETY: finit_module reads the module from the open descriptor, which
    // outlives the call, and takes a NUL-terminated parameter string; flags 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            no_params.as_ptr(),
            0,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EEXIST) {
        return Ok(());
    }
    Err(e)
}

/// Seconds since boot, as /proc/uptime has them ("12.34").
fn uptime() -> String {
    read_trimmed("/proc/uptime")
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn power_off() -> ! {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    loop {
        // SAFETY: reboot(2) with RB_POWER_OFF stops the machine; as PID 1
        // with CAP_SYS_BOOT it does not return on success.
        unsafe { libc::reboot(libc::RB_POWER_OFF) };
        say(&format!(
            "vm-init: power off failed: {}",
            io::Error::last_os_error()
        ));
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
