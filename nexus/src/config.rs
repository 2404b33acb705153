//! Nexus configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use spike_core::id::TrustDomain;

use crate::ratelimit::RateLimits;
use crate::secrets::SecretLimits;

/// Everything Nexus needs to run besides its SVID source and listeners.
#[derive(Debug, Clone)]
pub struct NexusConfig {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Keeper API addresses; keeper `i` (1-based) is the `i`-th and must present
    /// `spiffe://<td>/spike/keeper/<i>`.
    pub keepers: Vec<String>,
    /// Persistent data directory (redb store). `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// The audit log file.
    pub audit_log: PathBuf,
    /// How often keepers are polled (while sealed) and checked (while open).
    pub keeper_interval: Duration,
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Secret limits.
    pub secret_limits: SecretLimits,
    /// Per-caller rate limits on the expensive or sensitive routes.
    pub rate_limits: RateLimits,
}

impl NexusConfig {
    /// A configuration with defaults for everything but the trust domain, keepers and audit log.
    pub fn new(trust_domain: TrustDomain, keepers: Vec<String>, audit_log: PathBuf) -> Self {
        Self {
            trust_domain,
            keepers,
            data_dir: None,
            audit_log,
            keeper_interval: Duration::from_secs(2),
            max_body: 1 << 20,
            secret_limits: SecretLimits::default(),
            rate_limits: RateLimits::default(),
        }
    }
}

/// Addresses Nexus listens on.
#[derive(Debug, Clone, Copy)]
pub struct NexusAddrs {
    /// The mTLS API.
    pub api: SocketAddr,
    /// Plain-HTTP `/healthz`, `/readyz`, `/metrics`.
    pub health: SocketAddr,
}
