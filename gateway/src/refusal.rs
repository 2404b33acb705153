//! The gateway's refusals: `403` (or another status) with
//! `{ "error": { "code": "<reason>", "message": "<a hint an agent can act on>" } }`.
//!
//! A refusal's message is written for the agent (or the person reading its logs): it says what
//! to change, never a value, a reference, or why a token failed beyond what the agent sent.

use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::egress::Body;

/// Why the gateway refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The request is malformed: conflicting `Host`, `:authority` and URI, a bad route path.
    BadRequest,
    /// A path with dot segments or encoded separators, which the upstream could read
    /// differently from the gateway's checks.
    BadPath,
    /// No route of that name.
    RouteUnknown,
    /// `CONNECT` (TLS interception is not supported).
    ConnectNotSupported,
    /// `Upgrade` / WebSocket.
    UpgradeNotSupported,
    /// The request head or body is over a limit.
    TooLarge,
    /// The host resolves to an address the route may not reach.
    AddressNotAllowed,
    /// The upstream could not be reached or failed.
    UpstreamUnavailable,
    /// The agent's request carries a real value the gateway knows: the agent should never
    /// have it.
    ValueInRequest,
    /// A token would be substituted into plain `http://`, which the route does not allow.
    PlainHttp,
    /// The response could not be scrubbed (an unknown or broken `Content-Encoding`).
    Unscrubbable,
    /// The connection presented no SVID that verifies, and the request has no token to refuse
    /// (a caller that is not an agent is never served).
    AgentIdentityRequired,
    /// The agent (or, together, the callers without a valid SVID) is over its rate.
    RateLimited,
    /// Nexus refused the token (`token_unknown`, `destination_not_allowed`, ...).
    Token(spike_core::error::ErrorCode),
    /// Nexus could not be asked.
    NexusUnavailable,
    /// The gateway's audit log is not open or cannot be written: nothing is served unaudited.
    AuditUnavailable,
}

impl Reason {
    /// The code on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::BadPath => "bad_path",
            Self::RouteUnknown => "route_unknown",
            Self::ConnectNotSupported => "connect_not_supported",
            Self::UpgradeNotSupported => "upgrade_not_supported",
            Self::TooLarge => "too_large",
            Self::AddressNotAllowed => "address_not_allowed",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::ValueInRequest => "value_in_request",
            Self::PlainHttp => "plain_http_not_allowed",
            Self::Unscrubbable => "response_not_scrubbable",
            Self::AgentIdentityRequired => "agent_identity_required",
            Self::RateLimited => "rate_limited",
            Self::Token(code) => code.as_str(),
            Self::NexusUnavailable => "nexus_unavailable",
            Self::AuditUnavailable => "audit_unavailable",
        }
    }

    /// The status it is sent with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest | Self::BadPath => StatusCode::BAD_REQUEST,
            Self::RouteUnknown => StatusCode::NOT_FOUND,
            Self::ConnectNotSupported => StatusCode::METHOD_NOT_ALLOWED,
            Self::UpgradeNotSupported => StatusCode::NOT_IMPLEMENTED,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::AddressNotAllowed
            | Self::ValueInRequest
            | Self::PlainHttp
            | Self::AgentIdentityRequired
            | Self::Token(_) => StatusCode::FORBIDDEN,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::UpstreamUnavailable | Self::Unscrubbable => StatusCode::BAD_GATEWAY,
            Self::NexusUnavailable | Self::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: its reason and a hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Refusal {
    /// Why.
    pub reason: Reason,
    /// What to do about it.
    pub message: String,
    /// Seconds after which a retry may succeed (`Retry-After`), for refusals that pass.
    pub retry_after: Option<u64>,
}

impl Refusal {
    /// A refusal for `reason` with `message`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same refusal, telling the client to retry after `seconds` (at least 1).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// The HTTP response.
    pub fn to_response(&self) -> Response<Body> {
        let mut resp = json_response(
            self.reason.status(),
            &serde_json::json!({
                "error": { "code": self.reason.as_str(), "message": self.message }
            }),
        );
        if let Some(seconds) = self.retry_after {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        resp
    }
}

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(v.to_string()))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refusal_is_json_with_its_code_and_hint() {
        let r = Refusal::new(Reason::BadPath, "remove the `..` segment");
        let resp = r.to_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "bad_path");
        assert_eq!(v["error"]["message"], "remove the `..` segment");
    }
}
