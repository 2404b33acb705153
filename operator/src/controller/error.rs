//! The controllers' one error type, with a bounded label for metrics and what the error policy
//! does with it.

use crate::nexus::SyncError;
use crate::validate::InvalidSpec;

/// Why a reconcile failed.
///
/// Refusals that only a spec change cures (an invalid spec, a tenancy escape, a refusal by
/// Nexus) are not errors: the controller reports them in the resource's conditions and waits.
/// What reaches the error policy is what retrying may cure, plus what the controller cannot
/// classify.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    /// Applying or deleting one object (`<Kind> <namespace>/<name>`) failed.
    #[error("{object}: {source}")]
    Object {
        /// Which object.
        object: String,
        /// What the API server (or the client) said.
        #[source]
        source: kube::Error,
    },
    /// A call to Nexus failed.
    #[error("{0}")]
    Sync(#[source] SyncError),
    /// A spec the controller refuses (reported in conditions; here when it stops a cleanup).
    #[error("{0}")]
    InvalidSpec(#[source] InvalidSpec),
    /// The resource's `SpikeCluster` is paused, so its cleanup waits (the finalizer stays).
    #[error("SpikeCluster {0} is paused: the operator changes nothing until spec.paused is false")]
    ClusterPaused(String),
    /// The finalizer machinery failed (adding or removing the finalizer, or the reconcile
    /// inside it). Boxed: it embeds this type.
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Self>>),
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Self::Kube(e)
    }
}

impl From<SyncError> for Error {
    fn from(e: SyncError) -> Self {
        Self::Sync(e)
    }
}

impl Error {
    /// The innermost error, through the finalizer's wrapping.
    fn inner(&self) -> &Self {
        use kube::runtime::finalizer::Error as F;
        match self {
            Self::Finalizer(f) => match &**f {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.inner(),
                _ => self,
            },
            _ => self,
        }
    }

    /// A short, bounded label for the errors metric (never a message, which is unbounded).
    pub fn reason(&self) -> &'static str {
        use kube::runtime::finalizer::Error as F;
        match self.inner() {
            Self::Kube(kube::Error::Api(_))
            | Self::Object {
                source: kube::Error::Api(_),
                ..
            } => "KubeApi",
            Self::Kube(_) | Self::Object { .. } => "KubeClient",
            Self::Sync(e) => e.reason(),
            Self::InvalidSpec(_) => "InvalidSpec",
            Self::ClusterPaused(_) => "Paused",
            Self::Finalizer(f) => match &**f {
                F::AddFinalizer(_) => "AddFinalizer",
                F::RemoveFinalizer(_) => "RemoveFinalizer",
                _ => "Finalizer",
            },
        }
    }

    /// True when retrying the same spec may succeed: everything but an invalid spec and a
    /// refusal by Nexus.
    pub fn is_transient(&self) -> bool {
        match self.inner() {
            Self::Sync(e) => e.is_transient(),
            Self::InvalidSpec(_) => false,
            Self::Kube(_) | Self::Object { .. } | Self::ClusterPaused(_) | Self::Finalizer(_) => {
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::finalizer::Error as F;

    fn unavailable() -> Error {
        Error::Sync(SyncError::Unavailable {
            reason: "connection refused".into(),
        })
    }

    #[test]
    fn the_reason_looks_through_the_finalizer() {
        let e = Error::Finalizer(Box::new(F::ApplyFailed(unavailable())));
        assert_eq!(e.reason(), "NexusUnavailable");
        assert!(e.is_transient());
        let e = Error::Finalizer(Box::new(F::CleanupFailed(Error::InvalidSpec(
            InvalidSpec::NoNamespace,
        ))));
        assert_eq!(e.reason(), "InvalidSpec");
        assert!(!e.is_transient());
        let e = Error::Finalizer(Box::new(F::<Error>::UnnamedObject));
        assert_eq!(e.reason(), "Finalizer");
    }

    #[test]
    fn a_failed_object_is_a_transient_kube_error() {
        let e = Error::Object {
            object: "Job spike-system/spike-bootstrap".into(),
            source: kube::Error::Api(
                kube::core::Status::failure("jobs is forbidden", "Forbidden")
                    .with_code(403)
                    .boxed(),
            ),
        };
        assert_eq!(e.reason(), "KubeApi");
        assert!(e.is_transient());
        assert!(
            e.to_string()
                .starts_with("Job spike-system/spike-bootstrap: "),
            "{e}"
        );
    }

    #[test]
    fn refusals_are_not_transient() {
        let e = Error::Sync(SyncError::Refused {
            code: spike_core::error::ErrorCode::Forbidden,
            message: "no".into(),
        });
        assert!(!e.is_transient());
        assert_eq!(e.reason(), "RefusedByNexus");
        assert!(unavailable().is_transient());
    }
}
