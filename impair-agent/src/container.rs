//! A container by name or id, resolved through its runtime's own API to
//! the network namespace it runs in (`/proc/PID/ns/net` of its first
//! process). Podman and Docker serve the same Docker-compatible endpoint,
//! `GET /containers/{name}/json`, on their Unix sockets; the first socket
//! that answers is asked. containerd speaks gRPC only and is not asked.
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper::{body::Bytes, Request};
use hyper_util::rt::TokioIo;

use crate::error::ApiError;

/// Where the runtimes listen, in the order asked.
pub const SOCKETS: &[&str] = &[
    "/run/podman/podman.sock",
    "/var/run/docker.sock",
    "/run/docker.sock",
];

const ALLOWED: &str = "the name or id of a running Podman or Docker container";

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg, Some("target.container".into()), Some(ALLOWED.into()))
}

/// A container name or id: what Docker and Podman accept.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(bad(format!("invalid container name {name:?}")))
    }
}

/// `GET path` on the Unix socket `sock`: status and body.
async fn get(sock: &str, path: &str) -> anyhow::Result<(u16, Bytes)> {
    let stream = tokio::net::UnixStream::connect(sock).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let req = Request::get(path)
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok((status, body))
}

/// The network namespace of container `name`, as a path.
pub async fn netns_of(name: &str) -> Result<String, ApiError> {
    check_name(name)?;
    let mut tried = Vec::new();
    for sock in SOCKETS {
        if !std::path::Path::new(sock).exists() {
            continue;
        }
        let path = format!("/containers/{name}/json");
        let answer = tokio::time::timeout(Duration::from_secs(5), get(sock, &path)).await;
        let (status, body) = match answer {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                tried.push(format!("{sock}: {e}"));
                continue;
            }
            Err(_) => {
                tried.push(format!("{sock}: no answer in 5 s"));
                continue;
            }
        };
        if status == 404 {
            return Err(bad(format!("no container '{name}' ({sock})")));
        }
        if status != 200 {
            tried.push(format!("{sock}: HTTP {status}"));
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                500,
                format!("{sock}: the runtime's answer is not JSON: {e}"),
            )
        })?;
        let pid = v["State"]["Pid"].as_u64().unwrap_or(0);
        if pid == 0 || v["State"]["Running"] != true {
            return Err(bad(format!("container '{name}' is not running ({sock})")));
        }
        return Ok(format!("/proc/{pid}/ns/net"));
    }
    let why = if tried.is_empty() {
        format!("no container runtime socket found ({})", SOCKETS.join(", "))
    } else {
        format!("no container runtime answered: {}", tried.join("; "))
    };
    Err(bad(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_are_checked() {
        assert!(check_name("web-1").is_ok());
        assert!(check_name("4f2a9c").is_ok());
        assert!(check_name("../x").is_err());
        assert!(check_name("").is_err());
    }
}
