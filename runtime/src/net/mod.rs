//! Serving and calling SPIKE's mTLS HTTP APIs.
//!
//! [`serve_mtls`] is the accept loop every SPIKE service uses: TLS handshake with a deadline,
//! the verified [`PeerIdentity`](crate::tls::PeerIdentity) put into each request's extensions, a connection cap, limits
//! on request heads, idle connections closed, the connection closed when the peer's
//! certificate expires, and graceful shutdown (bounded drain). [`ConnLimits`] holds every one
//! of these limits.
//! [`serve_tls_optional_client_auth`] is the same loop for the one listener (the gateway's)
//! that lets callers without a valid SVID complete the handshake, marked
//! [`Unauthenticated`](crate::tls::Unauthenticated), to refuse them per request.
//! [`MtlsClient`] is the matching client: it presents the caller's SVID and accepts only the
//! expected server identity. A refused handshake is logged once at WARN (rate-limited) and
//! counted; [`render_handshake_metrics`] renders the counter for a service's `/metrics`.

mod client;
mod connector;
mod refusals;
mod server;

pub use client::*;
pub use refusals::{handshake_failures, render_handshake_metrics};
pub use server::*;
