//! Containers as targets: `NAME|ID` → the container's init process, its
//! network namespace, its cgroup (v2) and its interfaces, asked of the
//! container runtime's own API over its unix socket.
//!
//! # Which runtimes
//!
//! Docker's Engine API and Podman's compatible API answer the same request,
//! `GET /containers/{name-or-id}/json`, with `Id`, `Name`, `State.Running`,
//! `State.Status` and `State.Pid` (the container's first process, as the
//! host's pid namespace numbers it). That one request is all impair needs:
//! the rest comes from `/proc/PID` (`ns/net` and `cgroup`), so impair never
//! guesses a runtime's on-disk layout.
//!
//! Sockets are tried in order: the one given by the caller (`--runtime-socket`
//! or the agent's request), else [`SOCKET_ENV`], else [`DEFAULT_SOCKETS`]
//! (Podman's `podman system service` socket, Docker's, containerd's). The first
//! runtime that knows the container answers. containerd speaks gRPC only
//! (no HTTP/JSON API): a socket whose path names containerd is asked
//! `Tasks/Get` over HTTP/2 instead ([`containerd`]), and its task is read as
//! an inspect reply, so what follows the pid is one code path for all three.
//! Docker running on containerd is resolved through Docker's socket as usual.
//!
//! # The HTTP client
//!
//! hyper 1 (HTTP/1.1 for Docker and Podman, HTTP/2 for containerd) over a
//! tokio `UnixStream`, on a
//! current-thread runtime made for the call: callers of this module are
//! synchronous (the command line) or run it on a blocking thread (the agent).
//! Replies are bounded in size and time, so a runtime that hangs or floods
//! cannot hang impair.
use std::{
    fs::{self, File},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use serde::Deserialize;

pub mod containerd;

/// Environment variable naming the runtime socket to use (only that one).
pub const SOCKET_ENV: &str = "IMPAIR_CONTAINER_SOCKET";

/// The sockets tried when none is given, in order.
pub const DEFAULT_SOCKETS: &[&str] = &[
    "/run/podman/podman.sock",
    "/var/run/docker.sock",
    "/run/containerd/containerd.sock",
];

/// How long one runtime may take to connect and answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest inspect reply read (Docker's are a few KiB).
const MAX_REPLY_BYTES: usize = 4 << 20;
/// The longest name or id accepted (Docker ids are 64 hex digits).
const MAX_NAME_LEN: usize = 253;

/// A running container, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The runtime's full id.
    pub id: String,
    /// Its name, without Docker's leading '/'.
    pub name: String,
    /// The host pid of its first process.
    pub pid: u32,
    /// The socket of the runtime that answered.
    pub socket: PathBuf,
    /// Its network namespace: `/proc/PID/ns/net`.
    pub netns: PathBuf,
    /// That namespace's inode (equal inodes: the same namespace).
    pub netns_ino: u64,
    /// Whether it shares the caller's network namespace (`--network host`).
    pub shares_caller_netns: bool,
    /// Its cgroup v2 path (the `0::` line of `/proc/PID/cgroup`).
    pub cgroup: Option<String>,
    /// That cgroup's id (its directory's inode on the cgroup2 mount), what
    /// `bpf_skb_cgroup_id` returns; `None` without a visible cgroup2 mount.
    pub cgroup_id: Option<u64>,
    /// The interfaces in its network namespace, loopback included.
    pub interfaces: Vec<String>,
}

impl Container {
    /// The interfaces other than loopback.
    pub fn non_loopback(&self) -> Vec<&str> {
        self.interfaces
            .iter()
            .map(String::as_str)
            .filter(|i| *i != "lo")
            .collect()
    }

    /// Its only non-loopback interface: the default target of `attach`.
    pub fn default_interface(&self) -> Result<&str, ContainerError> {
        match self.non_loopback().as_slice() {
            [one] => Ok(one),
            [] => Err(ContainerError::NoInterface {
                container: self.name.clone(),
            }),
            many => Err(ContainerError::AmbiguousInterface {
                container: self.name.clone(),
                interfaces: many.join(", "),
            }),
        }
    }
}

/// Why a container could not be resolved. Each renders as one line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContainerError {
    #[error("invalid container {0:?}: a name or id is 1-253 letters, digits, '_', '.' or '-'")]
    InvalidName(String),
    #[error(
        "no container runtime answered ({}): start Docker or `podman system service`, \
         or give its socket with --runtime-socket or {SOCKET_ENV}",
        tried.join("; ")
    )]
    NoRuntime { tried: Vec<String> },
    #[error("no container '{container}' in the runtime at {}", sockets.join(", "))]
    NotFound {
        container: String,
        sockets: Vec<String>,
    },
    #[error("container '{container}' is not running (status {status}): start it first")]
    NotRunning { container: String, status: String },
    #[error("the runtime at {socket} gave an unexpected reply: {detail}")]
    BadReply { socket: String, detail: String },
    #[error("container '{container}' (pid {pid}) cannot be entered: {detail}")]
    Process {
        container: String,
        pid: u32,
        detail: String,
    },
    #[error("container '{container}' has no interface but lo: give it a network first")]
    NoInterface { container: String },
    #[error("container '{container}' has several interfaces ({interfaces}): name one")]
    AmbiguousInterface {
        container: String,
        interfaces: String,
    },
}

/// The sockets to try: `explicit`, else [`SOCKET_ENV`], else the defaults.
pub fn sockets(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_owned()];
    }
    match std::env::var_os(SOCKET_ENV) {
        Some(v) if !v.is_empty() => vec![PathBuf::from(v)],
        _ => DEFAULT_SOCKETS.iter().map(PathBuf::from).collect(),
    }
}

/// Resolves `container` (a name or an id, full or a unique prefix, as the
/// runtime accepts) through the runtime at `socket`, or the first of
/// [`sockets`] that knows it. Reads only; changes nothing.
pub fn resolve(container: &str, socket: Option<&Path>) -> Result<Container, ContainerError> {
    check_name(container)?;
    let mut tried = Vec::new();
    let mut answered = Vec::new();
    for sock in sockets(socket) {
        let shown = sock.display().to_string();
        if !sock.exists() {
            tried.push(format!("{shown}: absent"));
            continue;
        }
        if containerd::is_containerd(&sock) {
            let env = std::env::var(containerd::NAMESPACE_ENV).ok();
            let namespaces = containerd::namespaces(env.as_deref());
            match containerd::lookup(&sock, container, &namespaces) {
                Ok(Some(inspect)) => return from_inspect(inspect, sock),
                Ok(None) => {
                    answered.push(format!("{shown} (namespaces {})", namespaces.join(", ")))
                }
                Err(containerd::Failure::Unreachable(e)) => tried.push(format!("{shown}: {e}")),
                Err(containerd::Failure::Reply(detail)) => {
                    return Err(ContainerError::BadReply {
                        socket: shown,
                        detail,
                    })
                }
            }
            continue;
        }
        let (status, body) = match get(&sock, &format!("/containers/{container}/json")) {
            Ok(r) => r,
            Err(e) => {
                tried.push(format!("{shown}: {e}"));
                continue;
            }
        };
        match status {
            200 => {}
            404 => {
                answered.push(shown);
                continue;
            }
            other => {
                return Err(ContainerError::BadReply {
                    socket: shown,
                    detail: format!("HTTP {other}: {}", reply_message(&body)),
                })
            }
        }
        let inspect = parse_inspect(&body).map_err(|detail| ContainerError::BadReply {
            socket: shown.clone(),
            detail,
        })?;
        return from_inspect(inspect, sock);
    }
    if answered.is_empty() {
        Err(ContainerError::NoRuntime { tried })
    } else {
        Err(ContainerError::NotFound {
            container: container.to_owned(),
            sockets: answered,
        })
    }
}

/// Names and ids go into a URL path: only the characters runtimes allow.
fn check_name(c: &str) -> Result<(), ContainerError> {
    let ok = !c.is_empty()
        && c.len() <= MAX_NAME_LEN
        && !c.starts_with(['.', '-'])
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ContainerError::InvalidName(c.to_owned()))
    }
}

/// The fields of an inspect reply impair reads (Docker and Podman alike).
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Inspect {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "State")]
    pub state: InspectState,
}

/// `State` of an inspect reply.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct InspectState {
    #[serde(rename = "Running", default)]
    pub running: bool,
    #[serde(rename = "Status", default)]
    pub status: String,
    #[serde(rename = "Pid", default)]
    pub pid: i64,
}

/// Parses a `GET /containers/{id}/json` reply.
pub fn parse_inspect(body: &[u8]) -> Result<Inspect, String> {
    serde_json::from_slice(body).map_err(|e| format!("not a container inspect reply: {e}"))
}

/// The `message` of a runtime's JSON error, or the start of the body.
fn reply_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Msg {
        message: String,
    }
    match serde_json::from_slice::<Msg>(body) {
        Ok(m) => m.message,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_owned(),
    }
}

/// An inspect reply → a [`Container`], from `/proc/PID`.
fn from_inspect(i: Inspect, socket: PathBuf) -> Result<Container, ContainerError> {
    let name = i.name.trim_start_matches('/').to_owned();
    let shown = if name.is_empty() {
        i.id.clone()
    } else {
        name.clone()
    };
    let pid = match u32::try_from(i.state.pid) {
        Ok(p) if i.state.running && p > 0 => p,
        _ => {
            return Err(ContainerError::NotRunning {
                container: shown,
                status: if i.state.status.is_empty() {
                    "unknown".to_owned()
                } else {
                    i.state.status
                },
            })
        }
    };
    let process = |detail: String| ContainerError::Process {
        container: shown.clone(),
        pid,
        detail,
    };
    let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let netns_ino = fs::metadata(&netns)
        .map_err(|e| process(format!("{}: {e}", netns.display())))?
        .ino();
    let here = fs::metadata("/proc/thread-self/ns/net")
        .map(|m| m.ino())
        .map_err(|e| process(format!("/proc/thread-self/ns/net: {e}")))?;
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|t| cgroup_v2_path(&t));
    let cgroup_id = cgroup.as_deref().and_then(cgroup_id);
    let interfaces = interfaces_in(&netns).map_err(process)?;
    Ok(Container {
        id: i.id,
        name,
        pid,
        socket,
        netns,
        netns_ino,
        shares_caller_netns: netns_ino == here,
        cgroup,
        cgroup_id,
        interfaces,
    })
}

/// The cgroup v2 path in a `/proc/PID/cgroup` text (its `0::PATH` line).
pub fn cgroup_v2_path(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
}

/// The id of cgroup v2 `path` (its directory's inode). Read on the cgroup2
/// mount if one is visible; on hybrid hosts that show only v1 hierarchies,
/// on a private cgroup2 mount made for the look and removed at once (the
/// unified hierarchy exists in the kernel either way).
fn cgroup_id(path: &str) -> Option<u64> {
    let rel = path.trim_start_matches('/');
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    if let Some(root) = mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| PathBuf::from(f[1]))
    {
        return fs::metadata(root.join(rel)).ok().map(|m| m.ino());
    }
    cgroup_id_on_private_mount(rel)
}

/// [`cgroup_id`] of `rel` (relative to the cgroup2 root) on a cgroup2 mount
/// made for the look and removed at once.
fn cgroup_id_on_private_mount(rel: &str) -> Option<u64> {
    let dir = PathBuf::from(format!(
        "/run/impair-cgroup2-resolve-{}-{:?}",
        std::process::id(),
        thread::current().id()
    ));
    fs::create_dir_all(&dir).ok()?;
    let target = std::ffi::CString::new(dir.to_str()?).ok()?;
    // SAFETY: NUL-terminated strings that outlive the call; mount(2) only
    // reads them. The mount is removed below whatever the stat finds.
    let mounted = unsafe {
        libc::mount(
            c"none".as_ptr(),
            target.as_ptr(),
            c"cgroup2".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    } == 0;
    let id = mounted
        .then(|| fs::metadata(dir.join(rel)).ok().map(|m| m.ino()))
        .flatten();
    if mounted {
        // SAFETY: unmounts the mount made just above, by its path.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = fs::remove_dir(&dir);
    id
}

/// The interfaces of network namespace `netns` (a `/proc/PID/ns/net` path),
/// listed from a thread that enters it (the caller's thread stays).
fn interfaces_in(netns: &Path) -> Result<Vec<String>, String> {
    let file = File::open(netns).map_err(|e| format!("{}: {e}", netns.display()))?;
    let lister = thread::Builder::new()
        .name("container-ifs".into())
        .spawn(move || -> Result<Vec<String>, String> {
            crate::sys::setns_net(&file).map_err(|e| format!("{e:#}"))?;
            // A segmenter impair made there is impair's, not the container's.
            Ok(interface_names()
                .into_iter()
                .filter(|n| !crate::engine::segmenter::is_segmenter_name(n))
                .collect())
        })
        .map_err(|e| format!("spawning a thread: {e}"))?;
    lister
        .join()
        .map_err(|_| "listing its interfaces panicked".to_owned())?
}

/// The names of this thread's network namespace's interfaces
/// (`if_nameindex(3)`), in index order.
fn interface_names() -> Vec<String> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns NULL or an array ending with an entry
    // whose if_index is 0; each if_name is a NUL-terminated string owned by
    // the array, read here before if_freenameindex frees it, once.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            out.push(
                std::ffi::CStr::from_ptr((*p).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

/// `GET path` on the HTTP API at unix socket `socket`: status and body.
fn get(socket: &Path, path: &str) -> Result<(u16, Vec<u8>), String> {
    block_on(get_async(socket, path))?
}

/// Runs `fut` on a current-thread runtime made for the call, bounded by
/// [`TIMEOUT`]; `Err` if it cannot start or takes longer.
fn block_on<T>(fut: impl std::future::Future<Output = T>) -> Result<T, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("starting an I/O runtime: {e}"))?;
    rt.block_on(async {
        tokio::time::timeout(TIMEOUT, fut)
            .await
            .map_err(|_| format!("no answer within {} s", TIMEOUT.as_secs()))
    })
}

async fn get_async(socket: &Path, path: &str) -> Result<(u16, Vec<u8>), String> {
    use http_body_util::{BodyExt as _, Empty, Limited};
    use hyper::{body::Bytes, header, Request};
    use hyper_util::rt::TokioIo;

    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let driver = tokio::spawn(conn);
    let req = Request::get(path)
        .header(header::HOST, "localhost")
        .header(header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building the request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("not an HTTP API ({e})"))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_REPLY_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the reply: {e}"))?
        .to_bytes()
        .to_vec();
    driver.abort();
    Ok((status, body))
}

#[cfg(test)]
mod tests;
