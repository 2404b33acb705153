//! Generated SPIFFE Workload API types, tonic server and client (from `proto/workload.proto`).
//!
//! The schema declares no protobuf package, like the upstream one, so the service path is
//! `/SpiffeWorkloadAPI/<Method>` and every standard client reaches it. The client is exported
//! for tests that need to send calls a well-behaved SPIFFE library never would (for example one
//! without the security header).

#![allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::use_self,
    clippy::unwrap_used
)]

use std::fmt;

include!(concat!(env!("OUT_DIR"), "/_.rs"));

// Debug impls for the messages that carry a private key or a bearer token: the generator was
// told to skip them (build.rs), so secrets never reach a log line through `{:?}`.

impl fmt::Debug for X509svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509svid")
            .field("spiffe_id", &self.spiffe_id)
            .field(
                "x509_svid",
                &format_args!("[{} bytes]", self.x509_svid.len()),
            )
            .field("x509_svid_key", &format_args!("[redacted]"))
            .field("bundle", &format_args!("[{} bytes]", self.bundle.len()))
            .field("hint", &self.hint)
            .finish()
    }
}

impl fmt::Debug for Jwtsvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwtsvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("svid", &format_args!("[redacted]"))
            .field("hint", &self.hint)
            .finish()
    }
}

impl fmt::Debug for ValidateJwtsvidRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidateJwtsvidRequest")
            .field("audience", &self.audience)
            .field("svid", &format_args!("[redacted]"))
            .finish()
    }
}
