//! The controllers and what they share.
//!
//! Each controller is a module with a `run(ctx, shutdown)` and its reconcile as methods on its
//! resource (controller-rs' shape); [`run`] runs them all on one [`Context`]. The parts every
//! controller uses: [`conditions`] (pure condition bookkeeping), [`Error`] (with a bounded
//! metric label and what retrying can cure) and the [`Context`] (client, events, metrics,
//! Nexus, backoff).
//!
//! Adding a controller (`SpikeSecret`): a module like [`policy`] or [`cluster`], with its own
//! `FINALIZER`, `reconcile`, `error_policy` and `run`, and one more future in [`run`].

pub mod cluster;
pub mod conditions;
mod context;
mod error;
pub mod finalizers;
pub mod policy;
pub mod secret;

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;

pub use context::{Backoff, Context, MANAGER, NEXUS_TIMEOUT, NexusConnector, ServiceConnector};
pub use error::Error;

/// Runs every controller on `ctx` until `shutdown` completes, each finishing its running
/// reconciles before it returns. The first controller that cannot start (the CRDs are not
/// installed, say) ends the whole: the pod restarts rather than half-working.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    // Each kind's CRD, one after the other, before any watch starts.
    installed::<crate::crd::SpikePolicy>(&ctx).await?;
    installed::<crate::crd::SpikeSecret>(&ctx).await?;
    installed::<crate::crd::SpikeCluster>(&ctx).await?;
    // One signal, seen by every controller.
    let shutdown = shutdown.boxed().shared();
    futures::try_join!(
        policy::run(ctx.clone(), shutdown.clone()),
        secret::run(ctx.clone(), shutdown.clone()),
        cluster::run(ctx.clone(), shutdown.clone()),
    )?;
    Ok(())
}

/// Fails early, with a hint, when the CRD of `K` is not installed: the first controller that
/// cannot start ends the whole.
async fn installed<K>(ctx: &Context) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let api = kube::Api::<K>::all(ctx.client.clone());
    if let Err(e) = api.list(&kube::api::ListParams::default().limit(1)).await {
        let kind = K::kind(&());
        tracing::error!(error = %e, %kind, "cannot list the resources: are the CRDs installed (crds/ or the chart)?");
        return Err(e.into());
    }
    Ok(())
}
