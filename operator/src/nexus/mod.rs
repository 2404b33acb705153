//! Declared secrets, policies and reference tokens, written to Nexus as `/spike/operator`.
//!
//! The `SpikeSecret` and `SpikePolicy` controllers fill the small input types here from their
//! custom resources ([`DesiredPolicy`], [`DesiredSecret`], [`DesiredToken`]); this module does not
//! know the CRDs. Every write is preceded by a read of what Nexus shows the operator (policies,
//! a secret's metadata: never a secret's values, which it may not read), so a reconcile that
//! changes nothing writes nothing, and secret writes carry compare-and-set on the version
//! read, so a concurrent writer makes the write fail with [`SyncError::Conflict`] (the
//! controller requeues) instead of being overwritten.
//!
//! All calls go through the one pooled, typed Nexus client of the `spike` CLI
//! ([`spike::client::Nexus`]).

mod client;
mod error;
mod generate;
mod policy;
mod secret;
mod token;

pub use client::NexusSync;
pub use error::SyncError;
pub use generate::{Alphabet, Generator, MAX_GENERATED_LEN};
pub use policy::{DesiredPolicy, PolicyOutcome, PolicyPlan};
pub use secret::{
    Applied, DesiredScope, DesiredSecret, SecretOutcome, SecretPlan, SecretSync, SecretValues,
    WritePolicy,
};
pub use token::{DesiredToken, MintedToken, needs_remint};

/// What happens in Nexus when the custom resource that declared something is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Leave it in Nexus.
    Retain,
    /// Remove it from Nexus (a policy is deleted; a secret's versions are soft-deleted).
    Delete,
}

/// What a deletion did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// `Retain`: nothing was touched.
    Retained,
    /// It was removed.
    Deleted,
    /// It was not there (or had no live version): nothing to do.
    AlreadyGone,
}
