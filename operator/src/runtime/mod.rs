//! The operator's process runtime: leader election and the health and metrics server.
//!
//! How `main` wires them:
//!
//! 1. Bind and spawn the [`health`] server first ([`health::HealthServer::bind`] on
//!    `SPIKE_OPERATOR_HEALTH_LISTEN`, then `serve` with the shutdown signal), so the liveness
//!    probe answers from the start and a taken port fails the process at once. `/readyz` says
//!    `starting` until step 3.
//! 2. Build the [`leader::LeaderElector`] (Lease `spike-operator` in `POD_NAMESPACE`, holder
//!    `POD_NAME`), take its [`leader::LeaderElector::leadership`] receiver and spawn `run` with
//!    the same shutdown signal.
//! 3. Mark the operator ready ([`health::Readiness::set_ready`]) once it stands by; a standby
//!    is ready (see [`health`] for why). When leadership turns `true`, start the controllers;
//!    mark not ready until they have started, then ready again.
//! 4. When leadership turns `false` or `run` returns [`leader::LeaderError::LeadershipLost`],
//!    stop and exit non-zero: Kubernetes restarts the pod clean, as a standby. On SIGTERM, mark
//!    not ready (`shutting down`), stop the controllers, and let `run` release the Lease before
//!    the process exits, so a standby takes over within one retry period.
//!
//! The `/metrics` render closure appends [`leader::leadership_metric`] of the current
//! leadership to the reconcile metrics.

pub mod health;
pub mod leader;
