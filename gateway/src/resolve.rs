//! Asking Nexus for a token's value (`POST /v1/tokens/resolve`), as the gateway identity.
//!
//! Answers may be cached for a few seconds ([`CachedResolver`]), except those of tokens with a
//! use limit, which Nexus counts on every use. The answer holds the value; it goes straight
//! into the agent's scrub set and the substitution, and is never logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

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

/// Resolutions remembered briefly, so a busy agent does not cost a Nexus round trip per
/// request. Only answers Nexus marks cacheable (never a token with a use limit, whose every
/// use Nexus must count), never refusals, and never past the token's expiry: a revocation
/// takes effect within `ttl`. Keys are hashes of everything the answer depends on (the token,
/// the agent, the destination, the action, the path and the location).
pub struct CachedResolver {
    inner: Arc<dyn ResolveTokens>,
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], (ResolveResponse, Instant)>>,
}

/// Most answers kept; past it the cache starts again empty (a bound, not an eviction policy:
/// the entries live seconds anyway).
const MAX_CACHED: usize = 10_000;

impl std::fmt::Debug for CachedResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedResolver")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl CachedResolver {
    /// Caches `inner`'s cacheable answers for at most `ttl` (zero: no caching).
    pub fn new(inner: Arc<dyn ResolveTokens>, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn key(req: &ResolveRequest) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for part in [
            req.token.expose_secret(),
            &req.agent_spiffe_id,
            &req.destination,
            req.action.as_str(),
            &req.path,
            &req.location.to_string(),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }
}

impl ResolveTokens for CachedResolver {
    fn resolve(&self, req: ResolveRequest) -> BoxFuture<'_, Result<ResolveResponse, ResolveError>> {
        Box::pin(async move {
            if self.ttl.is_zero() {
                return self.inner.resolve(req).await;
            }
            let key = Self::key(&req);
            let now = Instant::now();
            if let Ok(entries) = self.entries.lock()
                && let Some((resp, until)) = entries.get(&key)
                && *until > now
            {
                return Ok(resp.clone());
            }
            let resp = self.inner.resolve(req).await?;
            if resp.cacheable {
                let left = humantime::parse_rfc3339_weak(&resp.expires_at)
                    .ok()
                    .and_then(|t| t.duration_since(SystemTime::now()).ok())
                    .unwrap_or_default();
                let until = now + self.ttl.min(left);
                if let Ok(mut entries) = self.entries.lock() {
                    if entries.len() >= MAX_CACHED {
                        entries.retain(|_, (_, u)| *u > now);
                        if entries.len() >= MAX_CACHED {
                            entries.clear();
                        }
                    }
                    entries.insert(key, (resp.clone(), until));
                }
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use spike_core::secret::SecretString;
    use spike_core::token::{TokenAction, TokenLocation};

    use super::*;

    struct Counting {
        calls: AtomicUsize,
        cacheable: bool,
    }

    impl ResolveTokens for Counting {
        fn resolve(
            &self,
            _req: ResolveRequest,
        ) -> BoxFuture<'_, Result<ResolveResponse, ResolveError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let resp = ResolveResponse {
                value: SecretString::new("sk-cached-value".into()),
                token_id: "id".into(),
                expires_at: "2099-01-01T00:00:00Z".into(),
                cacheable: self.cacheable,
            };
            Box::pin(async move { Ok(resp) })
        }
    }

    fn req(path: &str) -> ResolveRequest {
        ResolveRequest {
            token: SecretString::new(format!("$SPIKE{{ref:{}}}", "ab".repeat(16))),
            agent_spiffe_id: "spiffe://t/agents/a".into(),
            destination: "api.test:443".into(),
            action: TokenAction::Read,
            path: path.into(),
            location: TokenLocation::default_header(),
        }
    }

    #[tokio::test]
    async fn cacheable_answers_are_reused_briefly_and_use_limited_ones_never() {
        let inner = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            cacheable: true,
        });
        let c = CachedResolver::new(inner.clone(), Duration::from_millis(300));
        for _ in 0..3 {
            c.resolve(req("/v1/x")).await.unwrap();
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
        // Another path is another question.
        c.resolve(req("/v1/y")).await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_millis(350)).await;
        c.resolve(req("/v1/x")).await.unwrap();
        assert_eq!(
            inner.calls.load(Ordering::SeqCst),
            3,
            "expired from the cache"
        );

        let limited = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            cacheable: false,
        });
        let c = CachedResolver::new(limited.clone(), Duration::from_secs(60));
        for _ in 0..3 {
            c.resolve(req("/v1/x")).await.unwrap();
        }
        assert_eq!(limited.calls.load(Ordering::SeqCst), 3);
    }
}
