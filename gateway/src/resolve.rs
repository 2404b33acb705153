//! Asking Nexus for a token's value (`POST /v1/tokens/resolve`), as the gateway identity.
//!
//! Every request resolves its tokens anew: a revoked token stops working at once, and a use
//! limit is counted by Nexus on every use. The answer holds the value; it goes straight into
//! the agent's scrub set and the substitution, and is never logged.

use futures::future::BoxFuture;
use http::{Method, StatusCode};
use spike_core::api::{ResolveRequest, ResolveResponse};
use spike_core::error::{ErrorBody, ErrorCode};
use spike_runtime::net::MtlsClient;

/// Why a resolution gave no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Nexus refused: the code and a hint for the agent.
    #[error("{code}: {message}")]
    Refused {
        /// Nexus's code (`token_unknown`, `destination_not_allowed`, ...).
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// Nexus could not be reached or answered something unreadable.
    #[error("Nexus unavailable: {0}")]
    Unavailable(String),
}

/// Resolves tokens: Nexus in production, a table in tests.
pub trait ResolveTokens: Send + Sync + 'static {
    /// The value of `req.token` for this request, or why not.
    fn resolve(&self, req: ResolveRequest) -> BoxFuture<'_, Result<ResolveResponse, ResolveError>>;
}

/// Resolution through Nexus's API with the gateway's SVID.
#[derive(Debug, Clone)]
pub struct NexusResolver {
    client: MtlsClient,
}

impl NexusResolver {
    /// Resolves with `client` (a client of Nexus, authenticated as the gateway).
    pub fn new(client: MtlsClient) -> Self {
        Self { client }
    }
}

impl ResolveTokens for NexusResolver {
    fn resolve(&self, req: ResolveRequest) -> BoxFuture<'_, Result<ResolveResponse, ResolveError>> {
        Box::pin(async move {
            let body = zeroize::Zeroizing::new(
                serde_json::to_vec(&req).map_err(|e| ResolveError::Unavailable(e.to_string()))?,
            );
            drop(req);
            let resp = self
                .client
                .send_secret(Method::POST, "/v1/tokens/resolve", body)
                .await
                .map_err(|e| ResolveError::Unavailable(e.to_string()))?;
            if resp.status == StatusCode::OK {
                return serde_json::from_slice(&resp.body).map_err(|_| {
                    ResolveError::Unavailable(
                        "Nexus answered a resolution the gateway cannot read".into(),
                    )
                });
            }
            match serde_json::from_slice::<ErrorBody>(&resp.body) {
                Ok(e) => Err(ResolveError::Refused {
                    code: e.error.code,
                    message: e.error.message,
                }),
                Err(_) => Err(ResolveError::Unavailable(format!(
                    "Nexus answered {} without an error body",
                    resp.status
                ))),
            }
        })
    }
}
