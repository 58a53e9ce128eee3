//! Thread-level network namespace helpers.
//!
//! `setns(2)` with `CLONE_NEWNET` switches the network namespace of the
//! *calling thread* only, so a process can work in several namespaces at once
//! without forking or re-executing itself through `ip netns exec`. These
//! helpers use the named namespaces that `ip netns add NAME` bind-mounts at
//! `/run/netns/NAME`.
//!
//! # Sockets outlive the thread that made them
//!
//! A socket belongs to the namespace its creating thread was in at `socket(2)`
//! time, for its whole life. A socket created inside [`run_in`] therefore
//! stays in that namespace after the helper thread has exited, and may be
//! returned, moved and used from any thread (including one in another
//! namespace). This is how tests get a client socket in one namespace and a
//! server socket in another and drive both from the test thread:
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use std::net::UdpSocket;
//! let rx = impair::netns::run_in("imp-demo-s", || UdpSocket::bind("198.18.2.1:9000"))??;
//! let tx = impair::netns::run_in("imp-demo-c", || UdpSocket::bind("198.18.1.1:0"))??;
//! tx.send_to(b"hello", "198.18.2.1:9000")?; // routed in the client's namespace
//! # drop(rx); Ok(()) }
//! ```
//!
//! A socket also holds a reference on its namespace: after `ip netns del`
//! the namespace (and its interfaces) lives on, invisible, until the last such
//! socket is closed.
use std::{
    fs::File,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::PathBuf,
    thread,
};

use anyhow::{bail, Context as _, Result};

/// Where `ip netns add` bind-mounts named network namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// The path of named namespace `name`, after checking the name cannot escape
/// [`NETNS_RUN_DIR`] (`ip netns` applies the same rules).
fn ns_path(name: &str) -> Result<PathBuf> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        bail!("invalid network namespace name {name:?}: must be non-empty, not '.' or '..', without '/' or NUL");
    }
    Ok(PathBuf::from(NETNS_RUN_DIR).join(name))
}

/// Moves the calling thread into network namespace `name` (`/run/netns/NAME`).
///
/// Only this thread changes namespace; other threads of the process are not
/// affected. There is no way back short of entering the old namespace again,
/// so call this on a thread you own (see [`run_in`]), not on a test harness or
/// runtime thread.
pub fn enter(name: &str) -> Result<()> {
    let path = ns_path(name)?;
    let file = File::open(&path).with_context(|| {
        format!(
            "opening {} (does network namespace '{name}' exist? see `ip netns list`)",
            path.display()
        )
    })?;
    // SAFETY: `file` is an open descriptor that stays valid for the duration of
    // the call; setns only reads it and does not take ownership.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!(
            "setns({}, CLONE_NEWNET) failed: {err} (needs CAP_SYS_ADMIN; is it a network namespace?)",
            path.display()
        );
    }
    Ok(())
}

/// Runs `f` on a new thread inside network namespace `name` and returns its
/// value.
///
/// The caller's thread never changes namespace. Sockets and other
/// namespace-bound objects that `f` creates stay in `name` and may be used
/// from any thread afterwards (see the module docs). A panic in `f` is
/// returned as an error carrying the panic message.
pub fn run_in<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let owned = name.to_owned();
    let handle = thread::Builder::new()
        // Linux keeps 15 bytes of a thread name; the tail of a lab name is the
        // distinguishing part, so keep that.
        .name(format!("ns:{}", tail(name, 12)))
        .spawn(move || -> Result<T> {
            enter(&owned)?;
            Ok(f())
        })
        .with_context(|| format!("spawning a thread for network namespace '{name}'"))?;
    match handle.join() {
        Ok(result) => result,
        Err(payload) => bail!(
            "closure run in network namespace '{name}' panicked: {}",
            panic_message(&*payload)
        ),
    }
}

/// The last `n` characters of `s` (whole characters).
fn tail(s: &str, n: usize) -> &str {
    let count = s.chars().count();
    match s.char_indices().nth(count.saturating_sub(n)) {
        Some((i, _)) => &s[i..],
        None => s,
    }
}

/// The message of a panic payload (`&str` or `String`), or a placeholder.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

/// Inode number of the calling thread's network namespace
/// (`/proc/thread-self/ns/net`); equal inodes mean the same namespace.
pub fn current_ino() -> Result<u64> {
    Ok(std::fs::metadata("/proc/thread-self/ns/net")
        .context("reading /proc/thread-self/ns/net")?
        .ino())
}

/// Whether named network namespace `name` exists (`/run/netns/NAME`).
pub fn exists(name: &str) -> bool {
    ns_path(name).map(|p| p.exists()).unwrap_or(false)
}

/// The named network namespaces (`ip netns`), by their namespace inode.
pub fn names_by_ino() -> std::collections::BTreeMap<u64, String> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // The bind mount's inode is the namespace's (nsfs).
        if let Ok(m) = std::fs::metadata(e.path()) {
            out.insert(m.ino(), name);
        }
    }
    out
}

/// The named network namespaces that have an interface called `iface`.
pub fn holding_interface(iface: &str) -> Vec<String> {
    let here = current_ino().ok();
    let mut found = Vec::new();
    for (ino, name) in names_by_ino() {
        if Some(ino) == here {
            continue;
        }
        let probe = iface.to_owned();
        if run_in(&name, move || crate::sys::ifindex(&probe).is_ok()).unwrap_or(false) {
            found.push(name);
        }
    }
    found
}

/// The name of interface `ifindex` in the named namespace `ns`.
pub fn ifname_in(ns: &str, ifindex: u32) -> Option<String> {
    run_in(ns, move || crate::sys::ifname(ifindex))
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_rejected_without_touching_the_system() {
        for bad in ["", ".", "..", "a/b", "../x", "a\0b"] {
            assert!(ns_path(bad).is_err(), "{bad:?}");
            assert!(!exists(bad), "{bad:?}");
            assert!(enter(bad).is_err(), "{bad:?}");
        }
        assert!(!exists("imp-surely-not-there-0"));
    }

    #[test]
    fn run_in_a_missing_namespace_fails_and_leaves_this_thread_alone() {
        let before = current_ino().unwrap();
        let err = run_in("imp-surely-not-there-0", || 1).unwrap_err();
        assert!(
            format!("{err:#}").contains("imp-surely-not-there-0"),
            "{err:#}"
        );
        assert_eq!(current_ino().unwrap(), before);
    }

    #[test]
    fn thread_names_keep_the_tail() {
        assert_eq!(tail("imp-x-123-4-c", 5), "3-4-c");
        assert_eq!(tail("ab", 5), "ab");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn panic_messages_are_extracted() {
        let p = std::panic::catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(panic_message(&*p), "boom 1");
        let p = std::panic::catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_message(&*p), "static");
    }
}
