//! Nexus's one error type and its mapping to HTTP responses.
//!
//! Handlers return [`AppError`]. The client sees only the code and a safe message; internal
//! causes (storage, audit, crypto failures) are logged here once, with a correlation-free
//! generic message on the wire.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use spike_core::error::{ApiError, ErrorCode};

/// An error a handler returns.
#[derive(Debug)]
pub(crate) struct AppError(pub ApiError);

impl AppError {
    /// A client-facing error.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(ApiError::new(code, message))
    }

    /// An internal failure: the cause is logged, the client gets a generic 500.
    pub(crate) fn internal(context: &str, cause: impl std::fmt::Display) -> Self {
        tracing::error!(%context, error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error; see the Nexus log")
    }

    /// `caller` may not use `perm` on `path`. Names only what the caller sent (its own ID, the
    /// path) and what the route needs, never which policies exist.
    pub(crate) fn forbidden_on(
        caller: &spike_core::id::SpiffeId,
        perm: spike_core::policy::Permission,
        path: &spike_core::path::SecretPath,
    ) -> Self {
        Self::new(
            ErrorCode::Forbidden,
            format!("{caller} may not `{perm}` {path}: no policy grants it"),
        )
    }

    /// `caller` is not one of SPIKE's own identities allowed here, or not an administrator:
    /// no policy on a path would help, so the message does not suggest one.
    pub(crate) fn not_admin(caller: &spike_core::id::SpiffeId, who: &str) -> Self {
        Self::new(
            ErrorCode::Forbidden,
            format!("this needs {who}; {caller} is not"),
        )
    }

    /// `what` lies outside the operator's scope (P, Q).
    pub(crate) fn outside_scope(what: &str, e: &spike_core::admin_scope::OutsideScope) -> Self {
        Self::new(
            ErrorCode::OutsideScope,
            format!("{what} is outside the operator's scope: {e}"),
        )
    }

    /// The code.
    pub(crate) fn code(&self) -> ErrorCode {
        self.0.code
    }
}

impl From<ApiError> for AppError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0.to_body())).into_response()
    }
}

/// Result alias for handlers.
pub(crate) type AppResult<T> = Result<T, AppError>;
