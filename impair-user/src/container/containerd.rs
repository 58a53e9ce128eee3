//! containerd: a container id → its task's pid, asked of containerd's gRPC
//! API (`containerd.services.tasks.v1.Tasks/Get`) over its unix socket.
//!
//! containerd has no HTTP/JSON API, only gRPC. impair links no gRPC stack
//! (no protoc, no generated code): the call is one HTTP/2 POST with hyper's
//! client, framed by hand (gRPC's 5-byte prefix: a compressed flag 0 and a
//! big-endian length, then the protobuf message), and the messages it needs
//! are declared below with `prost`'s derive, field numbers as in containerd's
//! `api/services/tasks/v1/tasks.proto` and `api/types/task/task.proto`. The
//! call's outcome is in the `grpc-status` and `grpc-message` trailers (or in
//! the headers of a "trailers-only" reply, which is how gRPC servers
//! usually send errors).
//!
//! containerd has no container names: the id is the name (`ctr run IMAGE ID`;
//! under Kubernetes the 64-hex-digit id `crictl ps` shows). Ids live in
//! namespaces; [`NAMESPACE_ENV`] names the one to use, else
//! [`DEFAULT_NAMESPACES`] are tried in order: `default` (`ctr`, nerdctl),
//! `k8s.io` (the CRI plugin: Kubernetes) and `moby` (Docker's own containerd).
//! A container whose task is not started has no task: containerd answers
//! NotFound and so does impair.
use std::path::Path;

use super::{Inspect, InspectState, MAX_REPLY_BYTES};

/// Environment variable naming the one containerd namespace to look in.
pub const NAMESPACE_ENV: &str = "IMPAIR_CONTAINERD_NAMESPACE";

/// The containerd namespaces tried when [`NAMESPACE_ENV`] is unset, in order.
pub const DEFAULT_NAMESPACES: &[&str] = &["default", "k8s.io", "moby"];

/// The gRPC method asked: one task (the container's init process).
pub const TASKS_GET: &str = "/containerd.services.tasks.v1.Tasks/Get";

/// gRPC status codes read (google.rpc.Code).
const GRPC_OK: u32 = 0;
const GRPC_NOT_FOUND: u32 = 5;

/// `containerd.services.tasks.v1.GetRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
    /// Empty: the task's init process, not an exec'd one.
    #[prost(string, tag = "2")]
    pub exec_id: String,
}

/// `containerd.services.tasks.v1.GetResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetResponse {
    #[prost(message, optional, tag = "1")]
    pub process: Option<Process>,
}

/// `containerd.v1.types.Process`, the fields impair reads (the others,
/// 5-11, are skipped by the decoder).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Process {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(string, tag = "2")]
    pub id: String,
    /// The host pid of the process.
    #[prost(uint32, tag = "3")]
    pub pid: u32,
    /// `containerd.v1.types.Status`; see [`status_name`].
    #[prost(int32, tag = "4")]
    pub status: i32,
}

/// `containerd.v1.types.Status` values.
pub const STATUS_CREATED: i32 = 1;
pub const STATUS_RUNNING: i32 = 2;
pub const STATUS_STOPPED: i32 = 3;
pub const STATUS_PAUSED: i32 = 4;
pub const STATUS_PAUSING: i32 = 5;

/// The lower-case name of a `containerd.v1.types.Status` value.
pub fn status_name(status: i32) -> &'static str {
    match status {
        STATUS_CREATED => "created",
        STATUS_RUNNING => "running",
        STATUS_STOPPED => "stopped",
        STATUS_PAUSED => "paused",
        STATUS_PAUSING => "pausing",
        _ => "unknown",
    }
}

/// Whether `socket` is taken for containerd's (gRPC) rather than a Docker
/// compatible one: its path names containerd, like
/// `/run/containerd/containerd.sock` or Docker's own
/// `/run/docker/containerd/containerd.sock`.
pub fn is_containerd(socket: &Path) -> bool {
    socket.to_string_lossy().contains("containerd")
}

/// The namespaces to look in: `from_env` (the value of [`NAMESPACE_ENV`])
/// alone if set and not empty, else [`DEFAULT_NAMESPACES`].
pub fn namespaces(from_env: Option<&str>) -> Vec<String> {
    match from_env.map(str::trim) {
        Some(ns) if !ns.is_empty() => vec![ns.to_owned()],
        _ => DEFAULT_NAMESPACES.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// Why a lookup failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// Nothing speaking gRPC answered there: the next socket may.
    Unreachable(String),
    /// containerd answered with an error or an unreadable reply.
    Reply(String),
}

/// Asks containerd at `socket` for the task of container `id`, in each of
/// `namespaces` in turn: `Ok(None)` when none has it. The task comes back in
/// the shape of a Docker inspect, so the rest is the same for both.
pub fn lookup(socket: &Path, id: &str, namespaces: &[String]) -> Result<Option<Inspect>, Failure> {
    let request = GetRequest {
        container_id: id.to_owned(),
        exec_id: String::new(),
    };
    let body = frame(&prost::Message::encode_to_vec(&request));
    super::block_on(lookup_async(socket, body, namespaces))
        .and_then(|r| r)
        .map_err(Failure::Unreachable)
        .and_then(|r| r)
}

async fn lookup_async(
    socket: &Path,
    body: Vec<u8>,
    namespaces: &[String],
) -> Result<Result<Option<Inspect>, Failure>, String> {
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let driver = tokio::spawn(conn);
    let mut out = Ok(None);
    for ns in namespaces {
        // Not gRPC at all (e.g. an HTTP/1 server): like an absent socket.
        let reply = match call(&mut sender, ns, body.clone()).await {
            Ok(r) => r,
            Err(e) => {
                driver.abort();
                return Err(e);
            }
        };
        match parse_reply(&reply) {
            Ok(Some(process)) => {
                out = Ok(Some(to_inspect(process)));
                break;
            }
            Ok(None) => {}
            Err(detail) => {
                out = Err(Failure::Reply(format!("namespace {ns}: {detail}")));
                break;
            }
        }
    }
    driver.abort();
    Ok(out)
}

/// One gRPC reply as received: HTTP status, headers, body, trailers.
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
    pub trailers: Option<hyper::HeaderMap>,
}

type Sender = hyper::client::conn::http2::SendRequest<http_body_util::Full<hyper::body::Bytes>>;

/// `Tasks/Get` in namespace `ns` with the framed request `body`.
async fn call(sender: &mut Sender, ns: &str, body: Vec<u8>) -> Result<Reply, String> {
    use http_body_util::{BodyExt as _, Full, Limited};
    use hyper::{body::Bytes, header, Request};

    let req = Request::post(format!("http://localhost{TASKS_GET}"))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .header("containerd-namespace", ns)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("building the request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("not a gRPC API ({e})"))?;
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let collected = Limited::new(body, MAX_REPLY_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the reply: {e}"))?;
    let trailers = collected.trailers().cloned();
    Ok(Reply {
        status,
        headers: parts.headers,
        body: collected.to_bytes().to_vec(),
        trailers,
    })
}

/// A reply → the task's process, `None` for NotFound, or what was wrong.
pub fn parse_reply(reply: &Reply) -> Result<Option<Process>, String> {
    if reply.status != 200 {
        return Err(format!("HTTP {} instead of a gRPC reply", reply.status));
    }
    // grpc-status is a trailer, or a header in a trailers-only reply.
    let field = |name: &str| {
        reply
            .trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .or_else(|| reply.headers.get(name))
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let code = match field("grpc-status") {
        None => return Err("no grpc-status in the reply".to_owned()),
        Some(c) => c
            .trim()
            .parse::<u32>()
            .map_err(|_| format!("grpc-status {c:?} is not a number"))?,
    };
    match code {
        GRPC_OK => {}
        GRPC_NOT_FOUND => return Ok(None),
        other => {
            let message = field("grpc-message")
                .map(|m| percent_decode(&m))
                .unwrap_or_default();
            return Err(format!("gRPC status {other}: {message}"));
        }
    }
    let message = unframe(&reply.body)?;
    let response = <GetResponse as prost::Message>::decode(message)
        .map_err(|e| format!("not a Tasks/Get reply: {e}"))?;
    response
        .process
        .map(Some)
        .ok_or_else(|| "a Tasks/Get reply without a process".to_owned())
}

/// A protobuf message in gRPC's length-prefixed framing (uncompressed).
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    // Messages here are a few bytes; the length is a u32 on the wire.
    let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// The one message of a unary reply body, checked against its prefix.
pub fn unframe(body: &[u8]) -> Result<&[u8], String> {
    let Some((head, rest)) = body.split_first_chunk::<5>() else {
        return Err(format!("a gRPC frame of {} bytes (under 5)", body.len()));
    };
    if head[0] != 0 {
        return Err(format!(
            "a compressed gRPC message (flag {}), not asked for",
            head[0]
        ));
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if u32::try_from(rest.len()).ok() != Some(len) {
        return Err(format!(
            "a gRPC frame announcing {len} bytes holds {}",
            rest.len()
        ));
    }
    Ok(rest)
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (c, hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A task in the shape of a Docker inspect: containerd's id is its name;
/// a paused task keeps its namespace (Docker too calls it running).
fn to_inspect(p: Process) -> Inspect {
    Inspect {
        name: p.container_id.clone(),
        id: p.container_id,
        state: InspectState {
            running: matches!(p.status, STATUS_RUNNING | STATUS_PAUSED | STATUS_PAUSING),
            status: status_name(p.status).to_owned(),
            pid: i64::from(p.pid),
        },
    }
}

#[cfg(test)]
#[path = "containerd_tests.rs"]
mod tests;
