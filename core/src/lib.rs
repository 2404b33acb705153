//! SPIKE's pure types and rules: no async runtime, no HTTP, no CLI, no logging subscriber, so
//! fuzz targets, the operator's validation and every component can use them cheaply.
//!
//! SPIFFE IDs and trust domains (`id`); the HTTP API's request and response types (`api`) and
//! the error type that maps every failure to one HTTP status (`error`); secret paths, policy
//! patterns and policies (`path`, `pattern`, `policy`); the key hierarchy, the stored-value
//! envelope, record MACs and Shamir sharing (`crypto`); redacting secret types (`secret`); the
//! audit log's line format and its verification (`audit`); and the Kubernetes tenancy rules
//! (`tenancy`). What processes run on (SVID sources, TLS, the serve loop and client, settings)
//! is in `spike-runtime`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod admin_scope;
pub mod api;
pub mod audit;
pub mod backup;
pub mod crypto;
pub mod error;
pub mod id;
pub mod path;
pub mod pattern;
pub mod policy;
pub mod secret;
pub mod tenancy;
pub mod token;
