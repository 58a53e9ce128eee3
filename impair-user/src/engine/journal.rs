//! A journal for the one change no kernel object records: a clsact qdisc
//! impair is creating (or about to delete) while none of its filters holds
//! the program whose owner record says so. Before such a window the engine
//! writes a file in `/run/impair` naming the namespace, the interface and
//! itself; after it, the file goes. A file whose process died (pid and start
//! time) is a crash inside the window: the next impair command in that
//! namespace removes the clsact qdisc if no filter uses it, then the file.
//! `/run` is a tmpfs shared by `ip netns exec`'s mount namespaces.
//!
//! The same directory holds the update lock ([`UpdateLock`]): one rule-set
//! write at a time per instance, across processes.
//!
//! Every file here is named for its network namespace by the namespace's
//! inode number, and the kernel gives a deleted namespace's number to the
//! next one it makes: a controller killed in a namespace that was then
//! deleted (a test lab, a container) would leave files that a later
//! namespace took for its own, restoring offloads on, or deleting the
//! qdisc of, whatever device has that index there. So the first impair
//! command in a namespace records its cookie (`SO_NETNS_COOKIE`, never
//! reused) in `netns-INODE` ([`this_namespace`]); one that finds another
//! cookie there removes the files named for that inode without acting on
//! them, as what they name is gone.
use std::{fs, path::PathBuf};

use anyhow::{Context as _, Result};

use super::link::clsact;
use crate::sys;

const DIR: &str = "/run/impair";

/// The kinds of file named `KIND-INODE-...` here (the marker is `netns-INODE`).
const KINDS_NAMED_BY_NAMESPACE: &[&str] =
    &["clsact", "offload", "offloadrx", "ifb", "seg", "update"];

/// This thread's network namespace's inode number, for naming files here,
/// after making sure no file named for it is a deleted namespace's (the
/// module's doc). Checked once per namespace and process.
pub(crate) fn this_namespace() -> Result<u64> {
    use std::sync::Mutex;
    static CHECKED: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    let ino = sys::netns_ino()?;
    let Some(cookie) = sys::netns_cookie() else {
        return Ok(ino);
    };
    let mut checked = CHECKED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if checked.contains(&cookie) {
        return Ok(ino);
    }
    fs::create_dir_all(DIR).with_context(|| format!("creating {DIR}"))?;
    forget_deleted_namespace(ino, cookie)?;
    checked.push(cookie);
    Ok(ino)
}

/// Under a lock on `netns-INODE`: if it names another cookie, removes every
/// file named for `ino`; then records `cookie`.
fn forget_deleted_namespace(ino: u64, cookie: u64) -> Result<()> {
    use std::io::{Read as _, Seek as _, Write as _};
    use std::os::fd::AsRawFd as _;
    let path = PathBuf::from(DIR).join(format!("netns-{ino}"));
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock(2) on a descriptor this function owns; blocks until the
    // lock is ours, and the kernel releases it when the file closes.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("locking {}", path.display()));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    let recorded: Option<u64> = text.trim().parse().ok();
    if recorded == Some(cookie) {
        return Ok(());
    }
    if recorded.is_some() {
        let prefix = ino.to_string();
        for e in fs::read_dir(DIR).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if names_namespace(&name, &prefix) {
                let _ = fs::remove_file(e.path());
            }
        }
        tracing::debug!("removed the files of a deleted network namespace with inode {ino}");
    }
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(cookie.to_string().as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Whether `name` is a file of one of [`KINDS_NAMED_BY_NAMESPACE`] named for
/// the namespace whose inode number is `ino` (decimal).
fn names_namespace(name: &str, ino: &str) -> bool {
    let mut parts = name.split('-');
    matches!(
        (parts.next(), parts.next()),
        (Some(kind), Some(ns)) if KINDS_NAMED_BY_NAMESPACE.contains(&kind) && ns == ino
    )
}

/// An open window on (namespace, interface); closed by drop.
#[derive(Debug)]
pub(crate) struct ClsactWindow {
    path: PathBuf,
}

impl ClsactWindow {
    /// Opens a window for the clsact qdisc of `ifindex` in this namespace.
    pub(crate) fn open(ifindex: u32) -> Result<Self> {
        fs::create_dir_all(DIR).with_context(|| format!("creating {DIR}"))?;
        let pid = std::process::id();
        let ticks = sys::process_start_ticks(pid).unwrap_or(0);
        let path = PathBuf::from(DIR).join(format!(
            "clsact-{}-{ifindex}-{pid}-{ticks}",
            this_namespace()?
        ));
        fs::write(&path, b"").with_context(|| format!("writing {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for ClsactWindow {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A journal file of a process that died, in this namespace: named
/// `KIND-NETNS-IFINDEX-PID-TICKS` (the process's pid and start time, so a
/// reused pid is not taken for it).
pub(crate) struct DeadEntry {
    pub(crate) path: PathBuf,
    pub(crate) ifindex: u32,
    pub(crate) pid: u32,
}

/// The `kind` journal files in `/run/impair` that processes now dead left
/// in this network namespace (the clsact windows here, the ifb devices and
/// the offload changes in their own files).
pub(crate) fn dead_entries(kind: &str) -> Result<Vec<DeadEntry>> {
    let Ok(entries) = fs::read_dir(DIR) else {
        return Ok(Vec::new());
    };
    let here = this_namespace()?;
    let mut dead = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((ns, ifindex, pid, ticks)) = parse_entry(kind, &name) else {
            continue;
        };
        if ns == here && !sys::process_alive(pid, ticks) {
            dead.push(DeadEntry {
                path: e.path(),
                ifindex,
                pid,
            });
        }
    }
    Ok(dead)
}

/// `KIND-NETNS-IFINDEX-PID-TICKS` → its numbers, for files of `kind`.
fn parse_entry(kind: &str, name: &str) -> Option<(u64, u32, u32, u64)> {
    let parts: Vec<&str> = name.split('-').collect();
    let [k, ns, ifindex, pid, ticks] = parts[..] else {
        return None;
    };
    if k != kind {
        return None;
    }
    Some((
        ns.parse().ok()?,
        ifindex.parse().ok()?,
        pid.parse().ok()?,
        ticks.parse().ok()?,
    ))
}

/// Closes the windows dead processes left open in this namespace: each
/// interface's clsact qdisc goes if no filter uses it. Returns the
/// interfaces (by index) whose qdisc was removed.
pub(crate) fn recover() -> Result<Vec<u32>> {
    let mut removed = Vec::new();
    for e in dead_entries("clsact")? {
        if clsact::remove_if_unused_after_crash(e.ifindex)? {
            removed.push(e.ifindex);
        }
        let _ = fs::remove_file(&e.path);
    }
    Ok(removed)
}

/// An exclusive lock on the rule sets of the instance on (this namespace,
/// `ifindex`): two `impair update`s (or an update and a scenario step) never
/// write the inactive slot at once, which could activate a mix of both.
/// Held until dropped; the kernel releases it if the process dies. The lock
/// file stays (a few bytes in tmpfs): deleting lock files races.
#[derive(Debug)]
pub(crate) struct UpdateLock {
    _file: fs::File,
}

impl UpdateLock {
    pub(crate) fn take(ifindex: u32) -> Result<Self> {
        use std::os::fd::AsRawFd as _;
        fs::create_dir_all(DIR).with_context(|| format!("creating {DIR}"))?;
        let path = PathBuf::from(DIR).join(format!("update-{}-{ifindex}.lock", this_namespace()?));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock(2) on a descriptor this function owns; blocks until
        // the lock is ours.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("locking {}", path.display()));
        }
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::{names_namespace, parse_entry};

    #[test]
    fn a_namespaces_files_are_named_by_kind_and_inode() {
        for name in [
            "offload-4026531840-7-1234-98765",
            "offloadrx-4026531840-7-1234-98765",
            "clsact-4026531840-7-1234-98765",
            "ifb-4026531840-7-1234-98765",
            "seg-4026531840-7-1234-98765",
            "update-4026531840-7.lock",
        ] {
            assert!(names_namespace(name, "4026531840"), "{name}");
            assert!(!names_namespace(name, "402653184"), "{name}");
        }
        assert!(!names_namespace("netns-4026531840", "4026531840"));
        assert!(!names_namespace("other-4026531840-7", "4026531840"));
    }

    #[test]
    fn journal_names_parse_by_kind_and_others_are_ignored() {
        assert_eq!(
            parse_entry("offload", "offload-4026531840-7-1234-98765"),
            Some((4026531840, 7, 1234, 98765))
        );
        assert_eq!(
            parse_entry("ifb", "ifb-4026531840-7-1234-98765"),
            Some((4026531840, 7, 1234, 98765))
        );
        assert_eq!(
            parse_entry("offload", "clsact-4026531840-7-1234-98765"),
            None
        );
        assert_eq!(parse_entry("offload", "offload-x-7-1234-98765"), None);
        assert_eq!(parse_entry("clsact", "update-4026531840-7.lock"), None);
    }
}
