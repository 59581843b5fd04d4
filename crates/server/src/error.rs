//! Errors as HTTP responses: every error the routers return goes through [`ApiError`], so the
//! status codes and the JSON error shape (`{"error": "..."}`) are decided here and only here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is wrong (bad parameter); the message names the offending value.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// One of rtap's own queries failed: a bug or an overload, never the caller's fault.
    #[error("query failed: {0}")]
    Query(#[from] sql::SqlError),
    /// The Pinot broker of `--olap` gave no rows (unreachable, busy, slow, or it refused).
    #[error(transparent)]
    Olap(#[from] crate::olap::OlapError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Store(e) if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Query(
                sql::SqlError::Timeout(_)
                | sql::SqlError::Busy(_)
                | sql::SqlError::ResourceLimit(_),
            ) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Query(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Olap(e) if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Olap(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}
