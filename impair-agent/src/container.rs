//! A container by name or id, resolved through its runtime's own API to
//! the network namespace it runs in, by the library's resolver
//! (`impair::container`: Podman's and Docker's HTTP API, containerd's gRPC
//! API, each on its unix socket). This file turns its answer into the API's.
use crate::error::ApiError;

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

/// The network namespace of container `name`, as a path. The resolver
/// blocks (it runs its own small runtime), so it runs on a blocking thread.
pub async fn netns_of(name: &str) -> Result<String, ApiError> {
    check_name(name)?;
    let owned = name.to_owned();
    let found = tokio::task::spawn_blocking(move || impair::container::resolve(&owned, None))
        .await
        .map_err(|e| ApiError::new(500, format!("resolving container '{name}': {e}")))?;
    match found {
        Ok(c) => Ok(c.netns.to_string_lossy().into_owned()),
        Err(e) => Err(bad(e.to_string())),
    }
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
