//! Types shared by every SPIKE component.
//!
//! Identity (`id`, `svid`, `tls`), the HTTP API's request and response types (`api`),
//! secret paths and policy patterns (`path`, `pattern`, `policy`), the crypto envelope and
//! Shamir wrapper (`crypto`), redacting secret types (`secret`), the audit-chain format
//! (`audit`) and the error type that maps every failure to one HTTP status (`error`).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod config;
pub mod crypto;
pub mod error;
pub mod id;
pub mod net;
pub mod path;
pub mod pattern;
pub mod policy;
pub mod secret;
pub mod svid;
pub mod telemetry;
pub mod tls;
