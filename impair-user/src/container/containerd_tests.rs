//! A fake containerd: an HTTP/2 server on a unix socket in a temporary
//! directory that answers `Tasks/Get` the way containerd does (no daemon
//! runs on these machines).
use std::{
    collections::VecDeque,
    convert::Infallible,
    fs,
    path::{Path, PathBuf},
    pin::Pin,
    task::{Context, Poll},
};

use hyper::{
    body::{Bytes, Frame, Incoming},
    HeaderMap, Request, Response,
};

use super::*;
use crate::container::{cgroup_v2_path, resolve, ContainerError};

/// A reply body: its frames, data then trailers, in order.
struct Frames(VecDeque<Frame<Bytes>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

fn status_trailers(code: u32, message: &str) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", code.to_string().parse().unwrap());
    if !message.is_empty() {
        t.insert("grpc-message", message.parse().unwrap());
    }
    t
}

fn grpc(frames: Vec<Frame<Bytes>>) -> Response<Frames> {
    Response::builder()
        .header("content-type", "application/grpc")
        .body(Frames(frames.into()))
        .unwrap()
}

/// containerd's answer to `id` in namespace `ns`.
fn answer(ns: &str, id: &str) -> Response<Frames> {
    let process = |pid: u32, status: i32| {
        let reply = GetResponse {
            process: Some(Process {
                container_id: id.to_owned(),
                id: id.to_owned(),
                pid,
                status,
            }),
        };
        grpc(vec![
            Frame::data(Bytes::from(frame(&prost::Message::encode_to_vec(&reply)))),
            Frame::trailers(status_trailers(0, "")),
        ])
    };
    let not_found = || {
        // gRPC servers send errors "trailers-only": grpc-status in the headers.
        let mut r = grpc(vec![]);
        r.headers_mut().extend(status_trailers(
            5,
            &format!("no%20running%20task%20found:%20task%20{id}%20not%20found"),
        ));
        r
    };
    match (ns, id) {
        // Found only in the second namespace tried, like a Kubernetes pod's.
        ("k8s.io", "web") => process(std::process::id(), STATUS_RUNNING),
        ("default", "stopped") => process(0, STATUS_STOPPED),
        ("default", "garbled") => grpc(vec![
            Frame::data(Bytes::from_static(&[0, 0, 0, 0, 100, 8, 1])),
            Frame::trailers(status_trailers(0, "")),
        ]),
        ("default", "denied") => grpc(vec![Frame::trailers(status_trailers(
            7,
            "permission%20denied",
        ))]),
        // A NotFound as trailers after (empty) data.
        ("moby", _) => grpc(vec![Frame::trailers(status_trailers(5, "not found"))]),
        _ => not_found(),
    }
}

async fn serve(req: Request<Incoming>) -> Result<Response<Frames>, Infallible> {
    use http_body_util::BodyExt as _;
    let ns = req
        .headers()
        .get("containerd-namespace")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let grpc_ok = req.uri().path() == TASKS_GET
        && req.headers().get("content-type").map(|v| v.as_bytes()) == Some(b"application/grpc")
        && req.headers().get("te").map(|v| v.as_bytes()) == Some(b"trailers");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let request = unframe(&body)
        .ok()
        .and_then(|m| <GetRequest as prost::Message>::decode(m).ok());
    Ok(match request {
        Some(r) if grpc_ok && !ns.is_empty() && r.exec_id.is_empty() => {
            answer(&ns, &r.container_id)
        }
        _ => grpc(vec![Frame::trailers(status_trailers(3, "bad request"))]),
    })
}

/// Starts the fake containerd at `dir/containerd.sock` on its own thread.
fn fake_containerd(dir: &Path) -> PathBuf {
    let path = dir.join("containerd.sock");
    let _ = fs::remove_file(&path);
    let std_listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std_listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::UnixListener::from_std(std_listener).unwrap();
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(
                            hyper_util::rt::TokioIo::new(stream),
                            hyper::service::service_fn(serve),
                        ),
                );
            }
        });
    });
    path
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("impair-ctrd-{tag}-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn field_numbers_match_containerds_protos() {
    // GetRequest{container_id=1 "ab", exec_id=2 ""}: tag 1, length 2.
    let req = GetRequest {
        container_id: "ab".into(),
        exec_id: String::new(),
    };
    assert_eq!(prost::Message::encode_to_vec(&req), [0x0a, 2, b'a', b'b']);
    // Process{container_id=1, id=2, pid=3, status=4} inside GetResponse.process=1,
    // with an unknown field (stdout = 6) skipped.
    let wire = [
        0x0a, 12, 0x0a, 1, b'c', 0x12, 1, b'c', 0x18, 42, 0x20, 2, 0x32, 0,
    ];
    let r = <GetResponse as prost::Message>::decode(&wire[..]).unwrap();
    let p = r.process.unwrap();
    assert_eq!((p.container_id.as_str(), p.pid, p.status), ("c", 42, 2));
}

#[test]
fn frames_round_trip_and_bad_ones_are_refused() {
    let f = frame(b"hello");
    assert_eq!(f, [0, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']);
    assert_eq!(unframe(&f), Ok(&b"hello"[..]));
    assert!(unframe(&[0, 0, 0]).is_err());
    assert!(unframe(&[1, 0, 0, 0, 0])
        .unwrap_err()
        .contains("compressed"));
    assert!(unframe(&[0, 0, 0, 0, 9, 1])
        .unwrap_err()
        .contains("announcing 9"));
    assert_eq!(percent_decode("a%20b%zz%"), "a b%zz%");
}

#[test]
fn namespaces_come_from_the_environment_or_the_defaults() {
    assert_eq!(namespaces(None), ["default", "k8s.io", "moby"]);
    assert_eq!(namespaces(Some("")), ["default", "k8s.io", "moby"]);
    assert_eq!(namespaces(Some("buildkit")), ["buildkit"]);
    assert!(is_containerd(Path::new("/run/containerd/containerd.sock")));
    assert!(!is_containerd(Path::new("/var/run/docker.sock")));
}

#[test]
fn a_fake_containerd_resolves_a_task_through_its_namespaces() {
    let dir = temp_dir("found");
    let sock = fake_containerd(&dir);
    let c = resolve("web", Some(&sock)).unwrap();
    assert_eq!(c.id, "web");
    assert_eq!(c.name, "web");
    assert_eq!(c.pid, std::process::id());
    assert_eq!(c.socket, sock);
    assert_eq!(
        c.netns,
        PathBuf::from(format!("/proc/{}/ns/net", std::process::id()))
    );
    assert!(c.shares_caller_netns);
    assert!(c.interfaces.iter().any(|i| i == "lo"), "{:?}", c.interfaces);
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    assert_eq!(c.cgroup, cgroup_v2_path(&own));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_fake_containerd_not_found_stopped_and_errors() {
    let dir = temp_dir("errors");
    let sock = fake_containerd(&dir);
    let shown = sock.display().to_string();
    assert_eq!(
        resolve("nope", Some(&sock)),
        Err(ContainerError::NotFound {
            container: "nope".into(),
            sockets: vec![format!("{shown} (namespaces default, k8s.io, moby)")],
        })
    );
    assert_eq!(
        resolve("stopped", Some(&sock)),
        Err(ContainerError::NotRunning {
            container: "stopped".into(),
            status: "stopped".into(),
        })
    );
    match resolve("garbled", Some(&sock)) {
        Err(ContainerError::BadReply { socket, detail }) => {
            assert_eq!(socket, shown);
            assert!(detail.contains("announcing 100 bytes holds 2"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    match resolve("denied", Some(&sock)) {
        Err(e @ ContainerError::BadReply { .. }) => {
            let line = e.to_string();
            assert!(
                line.contains("namespace default: gRPC status 7: permission denied"),
                "{line}"
            );
            assert!(!line.contains('\n'), "{line}");
        }
        other => panic!("{other:?}"),
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_containerd_socket_that_is_not_grpc_is_no_runtime() {
    let dir = temp_dir("not-grpc");
    let path = dir.join("containerd.sock");
    let _ = fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            drop(s);
        }
    });
    let err = resolve("web", Some(&path)).unwrap_err();
    server.join().unwrap();
    let _ = fs::remove_dir_all(&dir);
    match err {
        ContainerError::NoRuntime { tried } => {
            assert_eq!(tried.len(), 1);
            assert!(tried[0].contains("containerd.sock: "), "{tried:?}");
        }
        other => panic!("{other:?}"),
    }
}
