//! A development SPIFFE Workload API server.
//!
//! `spike-agent` serves the standard `SpiffeWorkloadAPI` gRPC service (`FetchX509SVID`,
//! `FetchX509Bundles`; the JWT calls answer `Unimplemented`) over a Unix socket, signs
//! X.509-SVIDs with a local in-memory CA, and maps callers to SPIFFE IDs by their Unix peer
//! credentials (uid, gid, and the executable behind the calling pid). Any standard SPIFFE client
//! (the `spiffe` crate, py-spiffe, go-spiffe) works against it unchanged.
//!
//! **It is a development and test tool, not a SPIRE replacement**: the CA key lives in memory
//! only, there is no node attestation, no federation, no JWT-SVIDs, and the attestation of
//! callers is only as strong as Unix credentials of a same-user process can be (see
//! [`Registration`]). Production deployments use SPIRE or cert-manager's csi-driver-spiffe.
//!
//! # In-process use
//!
//! ```no_run
//! # async fn example() -> Result<(), spike_agent::AgentError> {
//! use spike_agent::{AgentConfig, Registration};
//! use spike_core::id::TrustDomain;
//!
//! let td = TrustDomain::new("spike.dev").expect("valid trust domain");
//! let mut config = AgentConfig::new(td.clone(), "/tmp/spike-dev/agent/agent.sock");
//! config.registrations.push(
//!     Registration::new(td.id("/spike/nexus").expect("valid path")).with_uid(1000),
//! );
//! let agent = spike_agent::start(config).await?;
//! // Hand this to workloads as SPIFFE_ENDPOINT_SOCKET.
//! println!("{}", agent.endpoint());
//! agent.shutdown().await?;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod attest;
mod ca;
pub mod config;
mod hpack;
pub mod proto;
mod registration;
mod server;
mod socket;
mod uds_h2;

pub use ca::{CaError, CertificateAuthority, IssuedSvid, PemFiles};
pub use registration::{Registration, RegistrationError, load_registrations, parse_registrations};
pub use server::{AgentConfig, AgentError, AgentHandle, DEFAULT_SVID_TTL, start};

/// The gRPC metadata key every Workload API call must carry (with value `true`), so a
/// browser or a confused proxy cannot be tricked into calling the agent.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";
