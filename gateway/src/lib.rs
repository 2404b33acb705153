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
//! - [`caller`]: who sent a request, an agent or an unauthenticated caller (no valid SVID),
//!   which never acts as one.
//! - [`route`]: action rules of named routes.
//! - [`proxy`]: the chain every request goes through, ending in substitution, and the
//!   streamed, scrubbed response.
//! - [`ratelimit`]: the per-agent rate limit, before resolution.
//! - [`resolve`]: asking Nexus for a token's value.
//! - [`audit`]: the HMAC-chained audit line of every decision, under a key from Nexus.
//! - [`refusal`]: the JSON refusals with their reason codes.
//! - [`config`] and [`server`]: the `spike-gateway` binary's settings and listeners.
//! - [`dev_upstream`]: an OpenAI-style mock upstream for `spike dev --gateway` and tests.
//! - Scrubbing ([`ScrubSet`], [`Scrubber`], [`Detector`], [`decode`]): keeping real values
//!   out of what reaches the agent, and refusing requests that carry one; below. These parts
//!   do no I/O: the proxy feeds them headers and body chunks.
//!
//! # Scrubbing
//!
//! ## The pieces
//!
//! - [`ScrubSet`]: the real values resolved for one agent (each ≥ [`MIN_VALUE_LEN`] bytes,
//!   in zeroizing buffers), each with its replacement, the reference token the agent holds.
//! - [`Scrubber`]: scrubs a response body as it streams; every value is replaced by its
//!   token, so the agent sees its own reference. [`scrub_header_value`] does the same for a
//!   header value, and tells whether it changed.
//! - [`find_known_value`] and [`Detector`]: find a real value in an agent's request, which
//!   the gateway then refuses and audits.
//! - [`decode`]: undoes `Content-Encoding` (gzip, deflate, brotli, zstd) with caps on size
//!   and expansion, so compressed bodies are scrubbed too; the proxy serves the result
//!   uncompressed, or refuses what cannot be decoded. Nothing passes unscanned.
//!
//! ## What is found
//!
//! A value is found written in any of these [`Encoding`]s: raw, standard and URL-safe base64
//! at each of the three byte alignments it can have inside a longer base64 string (padded or
//! not), and hex in any case. Each of them is found under any of these [`Escaping`]s:
//! none, percent-encoding, JSON string escapes (`\uXXXX` and surrogate pairs included) and
//! HTML character references, each escaping possibly partial (any character may or may not
//! be escaped, in either hex case). Matching is incremental, so a value split across chunks
//! is found whatever the split; see `scan` for how, and `views` for exactly which
//! escapes are decoded.
//!
//! ## Limits, stated exactly
//!
//! - **Held-back bytes.** The scrubber holds back only input that is still a possible
//!   partial match, plus the last character if it is a base64 character (a base64 form
//!   starting right after it would take it as its boundary character). After an SSE event,
//!   which ends in a blank line, nothing is held, so events are passed on as they arrive.
//!   The worst case is [`ScrubSet::max_held_back`]: `2 · (L + 2) · 12` bytes, `L` being the
//!   longest pattern (a value's hex form, twice its length), 12 the longest escape sequence;
//!   1,968 bytes for a 40-byte key.
//! - **Minimum length.** Values shorter than [`MIN_VALUE_LEN`] (8) bytes are refused with
//!   [`ScrubSetError::ValueTooShort`]; the gateway must not substitute them. Values are at
//!   most [`MAX_VALUE_LEN`] (4 KiB), and a set holds at most [`MAX_SET_BYTES`] (16 KiB).
//! - **Base64 boundaries.** Inside a longer base64 string a value's encoding begins and ends
//!   with characters that mix its bits with its neighbours'. The replacement covers those
//!   boundary characters too, so no remaining character carries any bit of the value; only
//!   padding (`=`, no bits) may remain next to the replacement. A boundary character is any
//!   character of either alphabet, so at worst one neighbouring `+ / - _` that was not part
//!   of the encoding is replaced along with it.
//! - **Escapes decoded.** One layer at a time; HTML references of at most 12 bytes (leading
//!   zeros included) with their `;`, and a fixed list of named ones (see `views`).
//!
//! ## What scrubbing cannot catch
//!
//! An upstream that transforms a value in any other way (encrypts it, reverses it, splits it
//! with separators, wraps base64 across lines, escapes it twice, compresses it inside the
//! body) defeats matching. Scrubbing is a safety net for echoes of a credential (error
//! messages, debug output), which is why substitution locations are narrow by default.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod caller;
pub mod config;
pub mod decode;
mod detect;
pub mod dev_upstream;
pub mod egress;
pub mod inbound;
pub mod locate;
mod matcher;
pub mod metrics;
mod patterns;
pub mod proxy;
pub mod ratelimit;
pub mod refusal;
pub mod resolve;
pub mod route;
mod scan;
mod scrub;
pub mod server;
mod set;
mod views;

pub use detect::{Detector, Match, find_known_value};
pub use patterns::Encoding;
pub use scrub::{Scrubber, scrub, scrub_header_value};
pub use set::{
    MAX_REPLACEMENT_LEN, MAX_SET_BYTES, MAX_VALUE_LEN, MIN_VALUE_LEN, ScrubSet, ScrubSetError,
};
pub use views::Escaping;
