//! [`NexusSync`]: the operator's handle on Nexus, pinned to the `/spike/operator` identity.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use spike::client::{CliError, Nexus};
use spike_core::id::Builtin;
use spike_runtime::svid::SvidSource;

use super::error::SyncError;

/// Calls Nexus as `/spike/operator` over the CLI's pooled mTLS client. Cloning is cheap and
/// clones share the pool, so every controller uses one.
#[derive(Clone)]
pub struct NexusSync {
    nexus: Nexus,
}

impl std::fmt::Debug for NexusSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NexusSync")
            .field("addr", &self.nexus.addr())
            .finish()
    }
}

impl NexusSync {
    /// A client of Nexus at `addr` (`host:port`) as `/spike/operator`: the source must hold
    /// that SVID and is pinned to it, so the controllers never write with another identity and
    /// what Nexus grants `/spike/operator` is exactly what they can do.
    pub fn connect(
        addr: &str,
        source: Arc<dyn SvidSource>,
        timeout: Duration,
    ) -> Result<Self, SyncError> {
        let operator = Builtin::Operator.id(source.trust_domain());
        source.expect_id(&operator).map_err(|e| {
            SyncError::BadInput(format!("the operator's SVID must be {operator}: {e}"))
        })?;
        let nexus = Nexus::new(addr, source, timeout).map_err(|e| match e {
            CliError::Usage(m) => SyncError::BadInput(m),
            other => SyncError::from_client(other, "the connection"),
        })?;
        Ok(Self { nexus })
    }

    /// Nexus's address.
    pub fn addr(&self) -> &str {
        self.nexus.addr()
    }

    /// A call whose error is mapped for `what` (a path or policy name).
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        route: &str,
        body: Option<&impl Serialize>,
        what: &str,
    ) -> Result<T, SyncError> {
        self.call_raw(method, route, body)
            .await
            .map_err(|e| SyncError::from_client(e, what))
    }

    /// A read that answers `None` for `404 not_found`.
    pub(crate) async fn get_optional<T: DeserializeOwned>(
        &self,
        route: &str,
        what: &str,
    ) -> Result<Option<T>, SyncError> {
        match self.call_raw(Method::GET, route, None::<&()>).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if SyncError::is_not_found(&e) => Ok(None),
            Err(e) => Err(SyncError::from_client(e, what)),
        }
    }

    /// The unmapped call, for the callers that treat some API errors as answers.
    pub(crate) async fn call_raw<T: DeserializeOwned>(
        &self,
        method: Method,
        route: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, CliError> {
        self.nexus.call(method, route, body).await
    }
}
