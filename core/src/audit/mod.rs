//! The HMAC-chained JSON-lines audit log.
//!
//! Every Nexus request produces one line:
//!
//! ```json
//! {"seq":1,"time":"2025-01-01T00:00:00.000000Z","caller":"spiffe://spike.dev/app","action":"secret.get","path":"db/x","decision":"allow","reason":"ok","status":200,"prev":"00…00","mac":"3f…"}
//! ```
//!
//! - `seq` counts from 1 with no gaps; `time` is RFC 3339 UTC; `caller` is the caller's SPIFFE
//!   ID or `null`; `path` and `status` are left out when absent.
//! - `mac` is HMAC-SHA256, under a key derived for the audit chain, over the canonical bytes of
//!   every other field (see [`AuditLine::compute_mac`]); `prev` is the previous line's `mac`
//!   (64 zeros on the first line). Changing, removing, inserting, duplicating or reordering a
//!   line therefore breaks `seq` continuity or the chain at that line, which [`verify`]
//!   reports.
//! - Cutting lines off the end leaves a valid shorter chain. Only a head kept elsewhere can
//!   reveal it: Nexus stores the latest [`Checkpoint`] (the last `seq` and its `mac`, sealed
//!   with a tag under the key) with every durable audit write, and checks with
//!   [`verify_against`]; `spike audit verify` prints the head so it can be kept elsewhere too.
//! - A summary line (`counts`) stands for many refused items or requests, counted per reason
//!   code, so refusals cannot flood the log; an invalid raw path is kept as a short escaped
//!   prefix and a hash ([`AuditRecord::with_raw_path`]).
//! - The log may span several files (rotated by size); the chain simply continues, and
//!   [`ChainVerifier`] checks the files in order, streaming.
//!
//! - A gateway keeps a chain of its own, one line per decision, in the same format: `caller`
//!   is the gateway, `agent` the agent it acted for, `token` the ids of the tokens used
//!   (joined by `,`), `action` `gateway.read|write|admin|request`, and two fields of their
//!   own, `route` and `destination`. Its key is [`AuditKey::for_gateway`], which Nexus
//!   derives from its own, so Nexus verifies the chain ([`ChainOwner`]) and a line of
//!   another chain in it is found.
//!
//! A line can never hold a secret value: [`AuditRecord`] has no field that could, its
//! `action` and `reason` are `&'static str` codes chosen in code, never caller data, and its
//! only free-form field is the (non-secret, length-capped) path.
//!
//! The MAC covers a domain-separated, length-prefixed encoding (`spike-audit-v1`) rather than
//! the JSON text, so JSON formatting never matters; a future format would add a `v` field and
//! a new domain tag, and lines without `v` stay version 1.
//!
//! The audit writer (`spike_runtime::audit_log`, used by Nexus and each gateway) appends lines
//! with group commit; this module is the format it writes and the check that reads it back.

mod checkpoint;
mod record;
mod verification;

pub use checkpoint::*;
pub use record::*;
pub use verification::*;
