//! `spike-gateway`: the late-binding egress gateway.
//!
//! AI agents hold only opaque references (`$SPIKE{ref:…}`); the gateway resolves them with
//! Nexus and puts the real value into the request at the very last step before it leaves, then
//! takes it out of everything that comes back. This crate grows in layers:
//!
//! - [`egress`]: where a request may go (resolution, address checks, dialing exactly the
//!   checked address, upstream TLS, pooling).
//! - [`inbound`]: what an agent's request addresses (a named route or an absolute URI), with
//!   the checks that come before anything else (one destination, no tunnels, no ambiguous
//!   paths).
//! - [`locate`]: reference tokens in a request head (headers, `Basic` credentials, the query)
//!   and putting values in their place without injection.
//! - [`route`]: action rules of named routes.
//! - [`refusal`]: the JSON refusals with their reason codes.
//! - [`dev_upstream`]: an OpenAI-style mock upstream for `spike dev --gateway` and tests.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dev_upstream;
pub mod egress;
pub mod inbound;
pub mod locate;
pub mod refusal;
pub mod route;
