//! Small wrappers over the system calls and /proc files the controller needs.
use std::{ffi::CString, fs, time::SystemTime};

use anyhow::{Context as _, Result};

use crate::input::{usage, UsageError};

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Wall-clock nanoseconds since the Unix epoch.
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// One interface ioctl (`SIOCGIF*`) on interface `name` in this thread's
/// network namespace (sysfs would show the namespace it was mounted in):
/// the `ifreq` the kernel filled.
fn ifreq_ioctl(name: &str, request: libc::c_ulong, what: &str) -> anyhow::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        anyhow::bail!("invalid interface name '{name}'");
    }
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("opening a socket for reading {what}"));
    }
    // SAFETY: `fd` is a socket this function just opened and nothing else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: an all-zero ifreq is valid (a C struct of integers and arrays).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: the SIOCGIF* requests read the NUL-terminated name (shorter
    // than IFNAMSIZ, the rest zero) and write one member of the ifreq's
    // union, which lives across the call.
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&sock), request, &mut req) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("reading {what} of {name}"));
    }
    Ok(req)
}

/// The MTU of interface `name` in this thread's network namespace
/// (`SIOCGIFMTU`), for devices impair creates beside it.
pub fn mtu(name: &str) -> anyhow::Result<u32> {
    let req = ifreq_ioctl(name, libc::SIOCGIFMTU, "the MTU")?;
    // SAFETY: SIOCGIFMTU filled the union's ifru_mtu member.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    u32::try_from(mtu).with_context(|| format!("the MTU of {name}: {mtu}"))
}

/// The link type (`ARPHRD_*`: 1 Ethernet, 65534 none) of interface `name`
/// in this thread's network namespace (`SIOCGIFHWADDR`).
pub fn link_type(name: &str) -> anyhow::Result<u16> {
    let req = ifreq_ioctl(name, libc::SIOCGIFHWADDR, "the link type")?;
    // SAFETY: SIOCGIFHWADDR filled the union's ifru_hwaddr member.
    Ok(unsafe { req.ifr_ifru.ifru_hwaddr.sa_family })
}

/// Every interface of this thread's network namespace, as (index, name)
/// (`if_nameindex(3)`, which asks the kernel over netlink).
pub fn interfaces() -> std::io::Result<Vec<(u32, String)>> {
    // SAFETY: if_nameindex has no preconditions; a null result is an error.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut p = list;
    // SAFETY: the array ends with an entry whose index is 0 and name null;
    // each name is a NUL-terminated string owned by the array, which is
    // freed once, after the last read.
    unsafe {
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            let name = std::ffi::CStr::from_ptr((*p).if_name)
                .to_string_lossy()
                .into_owned();
            out.push(((*p).if_index, name));
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    Ok(out)
}

/// The index of interface `name` in this thread's network namespace.
pub fn ifindex(name: &str) -> Result<u32, UsageError> {
    let bad = || {
        usage!(
            "unknown interface '{name}': no such device in this network namespace (see `ip link`)"
        )
    };
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('/') {
        return Err(usage!(
            "invalid interface name '{name}': 1-15 characters, no '/'"
        ));
    }
    let c = CString::new(name).map_err(|_| bad())?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(bad());
    }
    Ok(idx)
}

/// The name of interface `index` in this thread's network namespace.
pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IFNAMSIZ];
    // SAFETY: `buf` has the IFNAMSIZ bytes if_indextoname may write.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(s.to_string_lossy().into_owned())
}

/// Inode of this thread's network namespace.
pub fn netns_ino() -> Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(fs::metadata("/proc/thread-self/ns/net")
        .context("reading /proc/thread-self/ns/net")?
        .ino())
}

/// This thread's network namespace's cookie (`SO_NETNS_COOKIE`, Linux
/// 5.14): unlike its inode number, never given to another namespace while
/// the machine runs. `None` where the kernel has none.
pub fn netns_cookie() -> Option<u64> {
    /// `SO_NETNS_COOKIE` (include/uapi/asm-generic/socket.h).
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: socket(2) with constant arguments; the result is checked. A
    // socket belongs to the creating thread's network namespace.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just opened here and nothing else owns it.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`, which is
    // that large, and `len` back.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    (rc == 0 && len as usize == std::mem::size_of::<u64>()).then_some(cookie)
}

/// A process's start time in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process that recorded (`pid`, `start_ticks`) still runs. A
/// zombie (exited, not yet reaped by its parent) is not running.
pub fn process_alive(pid: u32, start_ticks: u64) -> bool {
    if pid == 0 || process_start_ticks(pid) != Some(start_ticks) {
        return false;
    }
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X"))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// BPF_PROG_BIND_MAP (Linux 5.8): adds `map_fd` to the program's used maps
/// without the program referencing it, the way libbpf keeps metadata maps
/// alive. impair binds its owner map so another process finds it by program.
pub fn bpf_prog_bind_map(
    prog_fd: std::os::fd::BorrowedFd<'_>,
    map_fd: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    #[repr(C)]
    struct BindAttr {
        prog_fd: u32,
        map_fd: u32,
        flags: u32,
    }
    const BPF_PROG_BIND_MAP: libc::c_long = 35;
    let attr = BindAttr {
        prog_fd: prog_fd.as_raw_fd() as u32,
        map_fd: map_fd.as_raw_fd() as u32,
        flags: 0,
    };
    // SAFETY: `attr` is a valid bpf_attr prefix for BPF_PROG_BIND_MAP of the size
    // passed; both descriptors are borrowed and stay open for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_BIND_MAP,
            &attr as *const BindAttr,
            std::mem::size_of::<BindAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Moves the calling thread into the network namespace `ns` (an open
/// /proc/.../ns/net or /run/netns file). Only this thread changes namespace.
pub fn setns_net(ns: &std::fs::File) -> Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: setns on a valid namespace descriptor affects only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setns(CLONE_NEWNET)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_types_and_mtu_come_from_this_namespace_by_ioctl() {
        assert_eq!(link_type("lo").unwrap(), libc::ARPHRD_LOOPBACK);
        assert_eq!(mtu("lo").unwrap(), 65_536);
        assert!(link_type("imp-no-such0").is_err());
        assert!(mtu("a-name-far-too-long").is_err());
    }

    #[test]
    fn own_process_is_alive_and_start_ticks_mismatch_is_not() {
        let pid = std::process::id();
        let t = process_start_ticks(pid).unwrap();
        assert!(process_alive(pid, t));
        assert!(!process_alive(pid, t + 1));
        assert!(!process_alive(0, 0));
    }

    #[test]
    fn loopback_resolves_and_garbage_is_a_usage_error() {
        assert_eq!(ifname(ifindex("lo").unwrap()).as_deref(), Some("lo"));
        let e = ifindex("nope0").unwrap_err().0;
        assert!(e.contains("'nope0'") && e.contains("ip link"), "{e}");
        assert!(ifindex("a/b").is_err());
        assert!(ifindex("0123456789abcdefg").is_err());
    }
}
