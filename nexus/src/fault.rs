//! A fault hook for crash tests: with `SPIKE_FAULT_PAUSE_AT=<step>` Nexus stops for good at
//! that named step of a root-key change (after logging it), so a test can SIGKILL it exactly
//! there. Steps: `change:committed` (the new split is in the init record, no keeper has it),
//! `change:pushed:<n>` (n keepers acknowledged), `change:finished` (the previous split is
//! dropped from the record); the same with `redo:` for a change redone after a crash, and
//! `unseal:`/`replenish:` for the pushes of those; and in re-encryption after a rotation,
//! `reencrypt:page` (one page of records moved and its cursor durable) and `reencrypt:retired`
//! (the older data keys removed from the init record, before the store is compacted). Unset, every step is a no-op. It only
//! pauses, never alters data, so a stray setting costs availability, not keys.

use std::sync::OnceLock;

/// The variable that arms the hook.
pub(crate) const VAR: &str = "SPIKE_FAULT_PAUSE_AT";

fn target() -> Option<&'static str> {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    AT.get_or_init(|| {
        let at = std::env::var(VAR).ok().filter(|s| !s.is_empty());
        if let Some(step) = &at {
            tracing::warn!(step = %step, "{VAR} is set: Nexus will pause at that step (tests only)");
        }
        at
    })
    .as_deref()
}

/// True when a pause step is configured.
pub(crate) fn armed() -> bool {
    target().is_some()
}

/// Pauses forever if `name` is the configured step.
pub(crate) async fn step(name: &str) {
    if target() == Some(name) {
        tracing::warn!(step = name, "fault hook: paused");
        std::future::pending::<()>().await;
    }
}
