//! What the controller tests against a real Nexus share: a started stack with the operator's
//! scope as the chart configures it (the tenants' paths `k8s/**` and IDs `ns/**`), the
//! operator's client of it, a context on a scripted API server, and the way one reconcile
//! runs against a script.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use spike_bench::Stack;
use spike_core::admin_scope::AdminScope;
use spike_core::id::Builtin;
use spike_operator::controller::{Context, NexusConnector};
use spike_operator::crd::SpikeCluster;
use spike_operator::fixtures::{self, ApiServerVerifier, cluster_for};
use spike_operator::nexus::NexusSync;

/// How long one reconcile, or one client call, may take.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// A stack, a context and the scripted API server.
pub(crate) struct Setup {
    /// Keepers, Nexus and a superuser client.
    pub(crate) stack: Stack,
    /// The controllers' context, its Nexus client the operator's.
    pub(crate) ctx: Arc<Context>,
    /// The scripted API server, lent to each reconcile's script.
    pub(crate) api: Option<ApiServerVerifier>,
    /// The stack's trust domain.
    pub(crate) td: String,
}

/// A started stack and a context on a scripted API server; `unreachable` points the context's
/// Nexus client at a closed port instead.
pub(crate) async fn setup_with(unreachable: bool) -> Setup {
    let stack = Stack::start_with(None, |c| {
        let ids = format!("spiffe://{}/ns/**", c.trust_domain);
        c.operator_scope = Some(AdminScope::parse("k8s/**", &ids, &c.trust_domain).expect("scope"));
    })
    .await
    .expect("stack");
    let td = stack.trust_domain().clone();
    let source = stack
        .svid_source(&Builtin::Operator.id(&td))
        .expect("the operator's SVID");
    let addr = if unreachable {
        // Nothing listens on port 1.
        "127.0.0.1:1".to_owned()
    } else {
        stack.nexus_addr().to_owned()
    };
    let sync = NexusSync::connect(&addr, source, TIMEOUT).expect("client");
    let (ctx, api) = fixtures::context(NexusConnector::fixed(sync));
    Setup {
        stack,
        ctx: Arc::new(ctx),
        api: Some(api),
        td: td.to_string(),
    }
}

/// [`setup_with`] a reachable Nexus.
pub(crate) async fn setup() -> Setup {
    setup_with(false).await
}

impl Setup {
    /// The sample cluster, in the stack's trust domain.
    pub(crate) fn cluster(&self) -> SpikeCluster {
        cluster_for(&self.td)
    }

    /// Runs `reconcile` while `script` answers its API requests; fails on a request the script
    /// does not expect, on a hang, and on any request left over.
    pub(crate) async fn scripted<R, F, T>(
        &mut self,
        reconcile: R,
        script: impl FnOnce(ApiServerVerifier) -> F,
    ) -> (R::Output, T)
    where
        R: Future,
        F: Future<Output = (ApiServerVerifier, T)> + Send + 'static,
        T: Send + 'static,
    {
        let api = self.api.take().expect("one reconcile at a time");
        let server = tokio::spawn(script(api));
        let result = tokio::time::timeout(TIMEOUT, reconcile)
            .await
            .expect("the reconcile made a request the script does not expect, or hung");
        let (mut api, seen) = server.await.expect("the script's assertions");
        api.no_more_requests().await;
        self.api = Some(api);
        (result, seen)
    }
}
