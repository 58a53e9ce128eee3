//! Every error the API returns, as JSON: `{"error": "...", "field":
//! "rules[0].loss", "allowed": "..."}` with the status that says what kind
//! (400 bad input, 401 no credentials, 404, 409 conflicts, 413 too large,
//! 500 a failure of the system). Nothing has changed when one is returned.
use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    /// What is wrong, in a sentence.
    #[serde(rename = "error")]
    pub message: String,
    /// The JSON path of the field at fault (`rules[0].loss`), when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What that field allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            field: None,
            allowed: None,
        }
    }

    pub fn bad_request(
        message: impl Into<String>,
        field: Option<String>,
        allowed: Option<String>,
    ) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
            field,
            allowed,
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(404, what)
    }

    pub fn conflict(what: impl Into<String>) -> Self {
        ApiError::new(409, what)
    }

    pub fn internal(e: &anyhow::Error) -> Self {
        ApiError::new(500, format!("{e:#}"))
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The field of an error about the whole body (JSON's root).
pub const ROOT: &str = "$";

impl ApiError {
    /// Every 400 names a field (the root, `$`, for a body that is not
    /// JSON at all) and what it allows.
    pub fn complete(mut self) -> Self {
        if self.status == 400 {
            self.field.get_or_insert_with(|| ROOT.to_owned());
            self.allowed
                .get_or_insert_with(|| "see the schema at /openapi.json".to_owned());
        }
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.complete();
        (e.status(), Json(e)).into_response()
    }
}

/// A JSON body that does not parse or does not fit the schema, with the
/// path serde reached (`rules[0].loss`).
pub fn from_json_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let field = if path == "." || path.is_empty() {
        ROOT.to_owned()
    } else {
        path
    };
    let allowed = match inner.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            Some("a JSON object (see /openapi.json)".to_owned())
        }
        _ => Some("see the schema at /openapi.json".to_owned()),
    };
    ApiError::bad_request(format!("invalid JSON: {inner}"), Some(field), allowed)
}
