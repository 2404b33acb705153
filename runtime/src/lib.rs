//! What every SPIKE process runs on, over the pure types of `spike-core`.
//!
//! - Identity: SVID sources ([`svid`]: the SPIFFE Workload API and PEM files, reloaded on
//!   change) and rustls configs that verify peers against the trust bundle and authorize them
//!   by SPIFFE ID ([`tls`]).
//! - The network: the mTLS serve loop with its limits and the one mTLS client ([`net`]), and
//!   per-key token buckets ([`ratelimit`]).
//! - The audit log writer ([`audit_log`]): group commit, rotation, locking, an optional
//!   checkpoint anchor, for Nexus and each gateway.
//! - Hardening before any key is held ([`hardening`]: no core dumps).
//! - Settings: one TOML format for every binary, with environment and flag overrides
//!   ([`config`]), and logging ([`telemetry`]).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod audit_log;
pub mod config;
pub mod hardening;
pub mod net;
pub mod ratelimit;
pub mod svid;
pub mod telemetry;
pub mod tls;
