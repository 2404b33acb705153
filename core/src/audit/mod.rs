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
//!   reveal it: Nexus stores the latest [`Checkpoint`] (the last `seq` and its `mac`, itself
//!   unforgeable without the key) and checks with [`verify_against`].
//!
//! A line can never hold a secret value: [`AuditRecord`] has no field that could, its
//! `action` and `reason` are `&'static str` codes chosen in code, never caller data, and its
//! only free-form field is the (non-secret, length-capped) path.
//!
//! The MAC covers a domain-separated, length-prefixed encoding (`spike-audit-v1`) rather than
//! the JSON text, so JSON formatting never matters; a future format would add a `v` field and
//! a new domain tag, and lines without `v` stay version 1.
//!
//! Nexus's audit writer appends lines durably with group commit; this module is the format it
//! writes and the check that reads it back.

mod record;
mod verification;

pub use record::*;
pub use verification::*;
