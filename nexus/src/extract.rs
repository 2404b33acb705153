//! Request extractors with uniform, value-free rejections.

use axum::RequestExt;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use spike_core::error::ErrorCode;
use spike_core::id::SpiffeId;
use spike_runtime::tls::PeerIdentity;

use crate::error::AppError;

/// The authenticated caller: the SPIFFE ID from the connection's verified client SVID.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub SpiffeId);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<PeerIdentity>()
            .map(|p| Self(p.id.clone()))
            .ok_or_else(|| AppError::new(ErrorCode::Unauthenticated, "no client SVID"))
    }
}

/// The route's one path parameter (a secret path, a policy name, a token id), percent-decoded.
/// A parameter that does not decode to UTF-8 gets the JSON error envelope like every other
/// refusal (axum's own rejection is plain text), and never echoes the input.
#[derive(Debug)]
pub(crate) struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(p)) => Ok(Self(p)),
            Err(_) => Err(AppError::new(
                ErrorCode::BadRequest,
                "the path parameter is not valid percent-encoded UTF-8",
            )),
        }
    }
}

/// A JSON body. Rejections never echo values from the body: serde's messages can quote the
/// offending input, which may be a secret, so only positions and field names are reported.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim() == "application/json")
            });
        if !is_json {
            return Err(AppError::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let too_large =
            || AppError::new(ErrorCode::TooLarge, "request body is larger than allowed");
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        // `into_limited_body` applies the router's `DefaultBodyLimit`; crossing it is an error
        // here, before the whole body is buffered.
        let body = req.into_limited_body();
        // The limited body's size hint is capped at the limit: a declared length above it is
        // answered at once instead of after waiting for a body that will be refused anyway.
        if declared
            .zip(axum::body::HttpBody::size_hint(&body).upper())
            .is_some_and(|(d, max)| d > max)
        {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .map_err(|_| too_large())?;
        parse_json(&bytes).map(Self)
    }
}

/// Parses JSON with a value-free error message.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    serde_json::from_slice(bytes).map_err(|e| AppError::new(ErrorCode::BadRequest, describe(&e)))
}

fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let at = format!("line {} column {}", e.line(), e.column());
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => format!("malformed JSON at {at}"),
        Category::Data => {
            let msg = e.to_string();
            // Field names are not secret; values might be.
            for marker in ["unknown field", "missing field", "duplicate field"] {
                if let Some(rest) = msg.strip_prefix(marker) {
                    let name = rest.split('`').nth(1).unwrap_or("?");
                    return format!("{marker} `{name}` at {at}");
                }
            }
            format!("a value has the wrong type or is invalid at {at}; see docs/api.md")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        a: String,
    }

    #[test]
    fn errors_never_echo_values() {
        for body in [
            r#"{"a": 12345678}"#,
            r#"{"a": ["s3cret-value"]}"#,
            r#"{"a": "s3cret-value", "b": 1}"#,
            r#"{"a": "s3cret-value""#,
        ] {
            let e = parse_json::<T>(body.as_bytes()).unwrap_err();
            assert!(!e.0.message.contains("s3cret"), "{}", e.0.message);
            assert!(!e.0.message.contains("12345678"), "{}", e.0.message);
        }
        let e = parse_json::<T>(br#"{"a":"x","bogus":1}"#).unwrap_err();
        assert!(
            e.0.message.contains("unknown field `bogus`"),
            "{}",
            e.0.message
        );
    }

    #[tokio::test]
    async fn a_path_parameter_that_is_not_utf8_gets_the_json_envelope() {
        use tower::ServiceExt as _;
        let router = axum::Router::new().route(
            "/p/{*rest}",
            axum::routing::get(|PathParam(p): PathParam| async move { p }),
        );
        let call = |uri: &'static str| {
            let router = router.clone();
            async move {
                let req = axum::http::Request::get(uri)
                    .body(axum::body::Body::empty())
                    .unwrap();
                let resp = router.oneshot(req).await.unwrap();
                let status = resp.status();
                let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
                    .await
                    .unwrap();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let (status, body) = call("/p/a%2Fb").await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "a/b"));
        let (status, body) = call("/p/%FF%FE").await;
        assert_eq!(status.as_u16(), 400, "{body}");
        let err: spike_core::error::ErrorBody = serde_json::from_str(&body).unwrap();
        assert_eq!(err.error.code, ErrorCode::BadRequest);
        assert!(!body.contains("FF"), "{body}");
    }
}
