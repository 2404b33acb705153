//! The wire error format and the one place that maps error codes to HTTP statuses.
//!
//! Every SPIKE service answers errors as `{"error":{"code":"...","message":"..."}}`. The code
//! is a stable, machine-readable string; the message is a hint for a human, never internal
//! detail and never secret material.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Stable error codes of the SPIKE HTTP APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request is malformed (bad JSON, unknown field, bad parameter).
    BadRequest,
    /// A secret path or prefix is invalid.
    InvalidPath,
    /// A policy or pattern is invalid.
    InvalidPolicy,
    /// The caller presented no usable identity.
    Unauthenticated,
    /// The caller is authenticated but not allowed to do this.
    Forbidden,
    /// A scoped policy administrator (the Kubernetes operator) asked for a policy, or
    /// touched an existing one, outside its path or SPIFFE-ID scope.
    OutsideScope,
    /// The secret, version or policy does not exist (or the caller may not know it exists).
    NotFound,
    /// The version asked for (or, without a version, the newest) is soft-deleted: undelete it,
    /// or ask for another version explicitly.
    Deleted,
    /// The version asked for (or, without a version, the newest) is destroyed: its value is
    /// gone for good.
    Destroyed,
    /// The version asked for (or, without a version, the newest) is past the secret's TTL:
    /// write a new version (each write starts the TTL again).
    Expired,
    /// A compare-and-set condition did not hold.
    CasMismatch,
    /// A create-only write found the object already there.
    AlreadyExists,
    /// The system is already initialized.
    AlreadyInitialized,
    /// The system has not been initialized yet.
    NotInitialized,
    /// The request took longer than the server allows (for example a stalled upload).
    RequestTimeout,
    /// The request body or a value in it is too large.
    TooLarge,
    /// Too many requests from this caller.
    RateLimited,
    /// The HTTP method is not supported on this route.
    MethodNotAllowed,
    /// The request's content type is not JSON.
    UnsupportedMediaType,
    /// Nexus holds no root key yet.
    Sealed,
    /// A keeper holds no share.
    NoShare,
    /// Something went wrong inside the server; details are in its log.
    Internal,
    /// A dependency (storage, audit log, keeper) is unavailable.
    Unavailable,
    /// Token resolution: no such token for this agent (also what a caller that is not the
    /// token's bound agent gets, whatever the token).
    TokenUnknown,
    /// Token resolution: the token is past its TTL.
    TokenExpired,
    /// Token resolution: the token was revoked.
    TokenRevoked,
    /// Token resolution: the destination is not one the token is bound to.
    DestinationNotAllowed,
    /// Token resolution: the request's action is not the token's.
    ActionNotAllowed,
    /// Token resolution: the token was found where its binding does not allow substitution.
    LocationNotAllowed,
    /// Token resolution: the request's path is outside the token's path prefixes.
    PathNotAllowed,
    /// Token resolution: the secret cannot be used (gone, deleted, expired, or the token no
    /// longer fits its scope).
    SecretUnavailable,
    /// Token resolution: the token's maximum uses are spent.
    UsesExhausted,
}

impl ErrorCode {
    /// True for a refusal of access (no policy grants it, or it lies outside the operator's
    /// scope): the audit log records it as `deny`, not as an error.
    pub fn denies_access(self) -> bool {
        matches!(self, Self::Forbidden | Self::OutsideScope)
    }

    /// The HTTP status for this code.
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest | Self::InvalidPath | Self::InvalidPolicy => 400,
            Self::Unauthenticated => 401,
            Self::Forbidden
            | Self::OutsideScope
            | Self::TokenUnknown
            | Self::TokenExpired
            | Self::TokenRevoked
            | Self::DestinationNotAllowed
            | Self::ActionNotAllowed
            | Self::LocationNotAllowed
            | Self::PathNotAllowed
            | Self::SecretUnavailable
            | Self::UsesExhausted => 403,
            Self::NotFound | Self::Deleted | Self::Destroyed | Self::Expired | Self::NoShare => 404,
            Self::MethodNotAllowed => 405,
            Self::RequestTimeout => 408,
            Self::CasMismatch
            | Self::AlreadyExists
            | Self::AlreadyInitialized
            | Self::NotInitialized => 409,
            Self::TooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::RateLimited => 429,
            Self::Internal => 500,
            Self::Sealed | Self::Unavailable => 503,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::InvalidPath => "invalid_path",
            Self::InvalidPolicy => "invalid_policy",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::OutsideScope => "outside_scope",
            Self::NotFound => "not_found",
            Self::CasMismatch => "cas_mismatch",
            Self::AlreadyExists => "already_exists",
            Self::AlreadyInitialized => "already_initialized",
            Self::NotInitialized => "not_initialized",
            Self::RequestTimeout => "request_timeout",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Sealed => "sealed",
            Self::NoShare => "no_share",
            Self::Deleted => "deleted",
            Self::Destroyed => "destroyed",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
            Self::Expired => "expired",
            Self::TokenUnknown => "token_unknown",
            Self::TokenExpired => "token_expired",
            Self::TokenRevoked => "token_revoked",
            Self::DestinationNotAllowed => "destination_not_allowed",
            Self::ActionNotAllowed => "action_not_allowed",
            Self::LocationNotAllowed => "location_not_allowed",
            Self::PathNotAllowed => "path_not_allowed",
            Self::SecretUnavailable => "secret_unavailable",
            Self::UsesExhausted => "uses_exhausted",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API error: a code and a message that is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(deny_unknown_fields)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable hint; never internal detail or secret material.
    pub message: String,
}

impl ApiError {
    /// A new error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status this error is sent with.
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The JSON body, `{"error":{...}}`.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody {
            error: self.clone(),
        }
    }
}

/// The JSON envelope of an error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// The error.
    pub error: ApiError,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_map_to_statuses() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::Forbidden,
            ErrorCode::OutsideScope,
            ErrorCode::NotFound,
            ErrorCode::CasMismatch,
            ErrorCode::TooLarge,
            ErrorCode::RateLimited,
            ErrorCode::Sealed,
            ErrorCode::Expired,
            ErrorCode::TokenUnknown,
            ErrorCode::UsesExhausted,
            ErrorCode::DestinationNotAllowed,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
            assert!((400..600).contains(&code.status()));
        }
        let body = ApiError::new(ErrorCode::Sealed, "nexus is sealed").to_body();
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":{"code":"sealed","message":"nexus is sealed"}}"#
        );
    }
}
