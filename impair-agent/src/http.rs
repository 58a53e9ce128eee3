//! The HTTP API: routes, bodies in and out, authentication. Handlers parse
//! and check everything first and hand the registry (blocking engine work)
//! to tokio's blocking pool; every error is an [`ApiError`] in JSON.
use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, DefaultBodyLimit, Path, Request, State},
    http::{header, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    Json, Router,
};
use serde::de::DeserializeOwned;

use crate::{
    chaosd,
    error::{from_json_error, ApiError},
    registry::Registry,
    request::{check_id, CreateRequest, UpdateRequest},
};

/// The OpenAPI document, kept in docs/ and served as is.
pub const OPENAPI: &str = include_str!("../../docs/agent-openapi.json");

pub struct AppState {
    pub registry: Arc<Registry>,
    /// The bearer token every request must carry, when one is configured.
    pub token: Option<String>,
    /// What the startup cleanup removed.
    pub removed_at_start: Vec<String>,
    pub started_unix_ns: u64,
}

type Shared = Arc<AppState>;

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(st): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(token) = &st.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
            let mut r = ApiError::new(
                401,
                "a bearer token is required (Authorization: Bearer ...)",
            )
            .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("static header"),
            );
            return r;
        }
    }
    next.run(req).await
}

/// The body as `T`, or a 400 naming the field (413 when too large).
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| ApiError::new(r.status().as_u16(), r.body_text()))?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    let value = serde_path_to_error::deserialize(de).map_err(from_json_error)?;
    Ok(value)
}

/// Runs registry work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ApiError::new(
            500,
            format!("the request's worker failed: {e}"),
        ))
    })
}

async fn create(State(st): State<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    let req: CreateRequest = match parse(body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let container_netns = match &req.target.container {
        Some(name) => match crate::container::netns_of(name).await {
            Ok(ns) => Some(ns),
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    let reg = Arc::clone(&st.registry);
    match blocking(move || reg.create(req, container_netns)).await {
        Ok((view, true)) => (StatusCode::CREATED, Json(view)).into_response(),
        Ok((view, false)) => (StatusCode::OK, Json(view)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list(State(st): State<Shared>) -> Response {
    let reg = Arc::clone(&st.registry);
    match blocking(move || Ok(reg.list())).await {
        Ok(v) => Json(serde_json::json!({ "impairments": v })).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn get_one(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    let reg = Arc::clone(&st.registry);
    match blocking(move || reg.get(&id)).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn update(
    State(st): State<Shared>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let req: UpdateRequest = match parse(body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let reg = Arc::clone(&st.registry);
    match blocking(move || reg.update(&id, req)).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn remove(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    let reg = Arc::clone(&st.registry);
    let id2 = id.clone();
    match blocking(move || reg.delete(&id2)).await {
        Ok(()) => Json(serde_json::json!({ "id": id, "deleted": true })).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn profiles() -> Response {
    Json(serde_json::json!({ "profiles": impair::profile::names() })).into_response()
}

async fn agent_info(State(st): State<Shared>) -> Response {
    Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "started_unix_ns": st.started_unix_ns,
        "removed_at_start": st.removed_at_start,
    }))
    .into_response()
}

async fn metrics(State(st): State<Shared>) -> Response {
    let reg = Arc::clone(&st.registry);
    match blocking(move || Ok(impair::observe::metrics::render(&reg.snapshots()))).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// chaosd's error body (its `APIError`) with the agent's own fields.
fn chaosd_error(e: ApiError) -> Response {
    let e = e.complete();
    let code = match e.status {
        400 => "error.api.invalid_request",
        404 => "error.api.resource_not_found",
        401 => "error.api.auth",
        _ => "error.api.other",
    };
    let body = serde_json::json!({
        "error": e.message,
        "field": e.field,
        "allowed": e.allowed,
        "message": e.to_string(),
        "code": code,
        "full_text": e.to_string(),
    });
    (e.status(), Json(body)).into_response()
}

async fn chaosd_network(State(st): State<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    let attack: chaosd::NetworkAttack = match parse(body) {
        Ok(r) => r,
        Err(e) => return chaosd_error(e),
    };
    let uid = if attack.uid.is_empty() {
        chaosd::new_uid()
    } else {
        attack.uid.clone()
    };
    if let Err(e) = check_id(&uid, "uid") {
        return chaosd_error(e);
    }
    let req = match attack.to_request(uid.clone()) {
        Ok(r) => r,
        Err(e) => return chaosd_error(e),
    };
    let reg = Arc::clone(&st.registry);
    match blocking(move || reg.create(req, None)).await {
        Ok(_) => Json(chaosd::Response {
            status: 200,
            message: "attack successfully".into(),
            uid,
        })
        .into_response(),
        Err(e) => chaosd_error(e),
    }
}

async fn chaosd_recover(State(st): State<Shared>, Path(uid): Path<String>) -> Response {
    let reg = Arc::clone(&st.registry);
    let u = uid.clone();
    match blocking(move || reg.delete(&u)).await {
        Ok(()) => Json(chaosd::Response {
            status: 200,
            message: "attack recover successfully".into(),
            uid,
        })
        .into_response(),
        Err(e) => chaosd_error(e),
    }
}

async fn not_found() -> Response {
    ApiError::not_found("no such endpoint (see /openapi.json)").into_response()
}

async fn not_allowed() -> Response {
    ApiError::new(
        405,
        "method not allowed on this endpoint (see /openapi.json)",
    )
    .into_response()
}

/// Every route, behind the token check when one is configured.
pub fn router(state: Shared, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/v1/agent", get(agent_info))
        .route("/v1/profiles", get(profiles))
        .route("/v1/impairments", post(create).get(list))
        .route(
            "/v1/impairments/{id}",
            get(get_one).put(update).patch(update).delete(remove),
        )
        .route("/api/attack/network", post(chaosd_network))
        .route("/api/attack/{uid}", delete(chaosd_recover))
        .fallback(not_found)
        .method_not_allowed_fallback(not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), auth))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The router's paths, as `router` registers them (schemathesis, in the
    /// namespace tier, finds a documented path that is not routed).
    const PATHS: &[&str] = &[
        "/openapi.json",
        "/metrics",
        "/v1/agent",
        "/v1/profiles",
        "/v1/impairments",
        "/v1/impairments/{id}",
        "/api/attack/network",
        "/api/attack/{uid}",
    ];

    #[test]
    fn the_openapi_document_describes_every_route_and_no_other() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let mut documented: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        documented.sort_unstable();
        let mut served = PATHS.to_vec();
        served.sort_unstable();
        assert_eq!(documented, served);
    }
}
