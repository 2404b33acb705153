//! A secret's scope: its TTL, the SPIFFE-ID patterns allowed to use it, and the destinations
//! its reference tokens may be sent to. Stored inside the secret's authenticated metadata, so
//! editing the database cannot widen it.
//!
//! The TTL is per version write, like a lease: each version expires at its write time plus
//! the TTL in force then, and writing a new version starts it again. The allowed IDs narrow
//! direct reads (for every caller, the superuser included: a secret scoped to agents is not
//! readable by its administrator, who can still rewrite its scope) and bound every token's
//! agent; the allowed destinations bound every token's destinations.

use serde::{Deserialize, Serialize};
use spike_core::api::ScopeUpdate;
use spike_core::error::ErrorCode;
use spike_core::id::{SpiffeId, TrustDomain};
use spike_core::pattern::IdPattern;
use spike_core::token::Destination;

use crate::error::{AppError, AppResult};

/// Longest TTL a secret or token may have: ten years, far beyond any lease; a bound so that
/// expiry arithmetic cannot overflow.
pub(crate) const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;
/// Most allowed SPIFFE-ID patterns, or destinations, one secret or token may carry.
pub(crate) const MAX_SCOPE_ENTRIES: usize = 64;

/// The scope as stored in a secret's metadata. Every entry was validated when written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Scope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ttl: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) destinations: Vec<String>,
}

impl Scope {
    /// True when it restricts nothing (the stored form then leaves it out).
    pub(crate) fn is_unrestricted(&self) -> bool {
        *self == Self::default()
    }

    /// When a version written at `written` (unix seconds) expires.
    pub(crate) fn expiry(&self, written: i64) -> Option<i64> {
        // Bounded by MAX_TTL_SECS, so this fits.
        self.ttl
            .map(|t| written.saturating_add(i64::try_from(t).unwrap_or(i64::MAX)))
    }

    /// The allowed patterns, compiled. Stored ones were valid when written; one that no longer
    /// parses matches nothing (fail closed).
    pub(crate) fn patterns(&self) -> Vec<IdPattern> {
        self.ids
            .iter()
            .filter_map(|p| IdPattern::parse(p).ok())
            .collect()
    }

    /// True when `id` may use the secret: no patterns, or one matches.
    pub(crate) fn admits(&self, id: &SpiffeId) -> bool {
        self.ids.is_empty() || self.patterns().iter().any(|p| p.matches(id))
    }

    /// Refuses a direct read by `caller` outside the allowed IDs.
    pub(crate) fn check_reader(&self, caller: &SpiffeId, path: &str) -> AppResult<()> {
        if self.admits(caller) {
            return Ok(());
        }
        Err(AppError::new(
            ErrorCode::Forbidden,
            format!(
                "{caller} is not among the SPIFFE IDs allowed to read {path} (`spike secret metadata {path}` shows them){}",
                one_segment_hint(&self.patterns(), caller)
            ),
        ))
    }
}

/// When `id` falls outside every pattern only because a trailing `*` matches one segment, the
/// sentence that says so and names the `**` form to write (empty otherwise).
pub(crate) fn one_segment_hint(patterns: &[IdPattern], id: &SpiffeId) -> String {
    for p in patterns {
        let Some(stem) = p.as_str().strip_suffix("/*") else {
            continue;
        };
        let wider = format!("{stem}/**");
        if IdPattern::parse(&wider).is_ok_and(|w| w.matches(id)) && !p.matches(id) {
            return format!(
                "; `{}` matches one segment only: write `{wider}` to include {id}",
                p.as_str()
            );
        }
    }
    String::new()
}

/// A validated [`ScopeUpdate`]: each field is `None` to keep the current setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ScopeChange {
    ttl: Option<Option<u64>>,
    ids: Option<Vec<String>>,
    destinations: Option<Vec<String>>,
}

impl ScopeChange {
    /// Validates `update` for a Nexus serving `td`: TTLs within bounds, ID patterns that parse
    /// and name `td` (a pattern of another trust domain could never match a caller, as for
    /// policies), destinations that parse (kept normalized).
    pub(crate) fn parse(update: &ScopeUpdate, td: &TrustDomain) -> AppResult<Self> {
        let bad = |m: String| AppError::new(ErrorCode::BadRequest, m);
        let ttl = match update.ttl_seconds {
            None => None,
            Some(0) => Some(None),
            Some(t) => Some(Some(check_ttl(t)?)),
        };
        let ids = match &update.allowed_spiffe_ids {
            None => None,
            Some(list) => {
                check_count(list.len(), "allowed SPIFFE IDs")?;
                Some(
                    list.iter()
                        .map(|p| parse_id_pattern(p, td).map(|p| p.as_str().to_owned()))
                        .collect::<AppResult<Vec<_>>>()?,
                )
            }
        };
        let destinations = match &update.allowed_destinations {
            None => None,
            Some(list) => {
                check_count(list.len(), "allowed destinations")?;
                let mut out = list
                    .iter()
                    .map(|d| Destination::parse(d).map(|d| d.to_string()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(e.to_string()))?;
                out.sort();
                out.dedup();
                Some(out)
            }
        };
        Ok(Self {
            ttl,
            ids,
            destinations,
        })
    }

    /// `current` with this change applied.
    pub(crate) fn apply(&self, current: &Scope) -> Scope {
        Scope {
            ttl: self.ttl.unwrap_or(current.ttl),
            ids: self.ids.clone().unwrap_or_else(|| current.ids.clone()),
            destinations: self
                .destinations
                .clone()
                .unwrap_or_else(|| current.destinations.clone()),
        }
    }
}

/// A TTL in seconds within `1..=MAX_TTL_SECS`.
pub(crate) fn check_ttl(t: u64) -> AppResult<u64> {
    if t == 0 || t > MAX_TTL_SECS {
        return Err(AppError::new(
            ErrorCode::BadRequest,
            format!("a TTL must be 1 to {MAX_TTL_SECS} seconds (ten years)"),
        ));
    }
    Ok(t)
}

/// At most [`MAX_SCOPE_ENTRIES`] of `what`.
pub(crate) fn check_count(n: usize, what: &str) -> AppResult<()> {
    if n > MAX_SCOPE_ENTRIES {
        return Err(AppError::new(
            ErrorCode::TooLarge,
            format!("at most {MAX_SCOPE_ENTRIES} {what}"),
        ));
    }
    Ok(())
}

/// A SPIFFE-ID pattern (or exact ID) of the served trust domain.
pub(crate) fn parse_id_pattern(p: &str, td: &TrustDomain) -> AppResult<IdPattern> {
    spike_core::policy::check_pattern_trust_domain(p, td)
        .map_err(|e| AppError::new(ErrorCode::BadRequest, e.to_string()))?;
    IdPattern::parse(p)
        .map_err(|e| AppError::new(ErrorCode::BadRequest, format!("SPIFFE-ID pattern: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::new("poc.local").unwrap()
    }

    #[test]
    fn a_change_keeps_what_it_leaves_out_and_clears_with_zero_or_empty() {
        let set = ScopeChange::parse(
            &ScopeUpdate {
                ttl_seconds: Some(3600),
                allowed_spiffe_ids: Some(vec!["spiffe://poc.local/agents/**".into()]),
                allowed_destinations: Some(vec!["API.groq.com".into(), "api.groq.com:443".into()]),
            },
            &td(),
        )
        .unwrap();
        let s = set.apply(&Scope::default());
        assert_eq!(s.ttl, Some(3600));
        assert_eq!(s.destinations, ["api.groq.com:443"]);
        let kept = ScopeChange::parse(&ScopeUpdate::default(), &td())
            .unwrap()
            .apply(&s);
        assert_eq!(kept, s);
        let cleared = ScopeChange::parse(
            &ScopeUpdate {
                ttl_seconds: Some(0),
                allowed_spiffe_ids: Some(vec![]),
                allowed_destinations: None,
            },
            &td(),
        )
        .unwrap()
        .apply(&s);
        assert_eq!(cleared.ttl, None);
        assert!(cleared.ids.is_empty());
        assert_eq!(cleared.destinations, s.destinations);
    }

    #[test]
    fn bad_scopes_are_refused_with_what_to_write() {
        let e = |u: ScopeUpdate| ScopeChange::parse(&u, &td()).unwrap_err().0.message;
        let m = e(ScopeUpdate {
            allowed_spiffe_ids: Some(vec!["spiffe://spike.dev/agents/**".into()]),
            ..ScopeUpdate::default()
        });
        assert!(m.contains("serves poc.local"), "{m}");
        let m = e(ScopeUpdate {
            allowed_destinations: Some(vec!["https://api.groq.com".into()]),
            ..ScopeUpdate::default()
        });
        assert!(m.contains("no scheme"), "{m}");
        let m = e(ScopeUpdate {
            ttl_seconds: Some(MAX_TTL_SECS + 1),
            ..ScopeUpdate::default()
        });
        assert!(m.contains("ten years"), "{m}");
    }

    #[test]
    fn a_single_star_names_the_double_star_it_needed() {
        let s = Scope {
            ids: vec!["spiffe://poc.local/agents/*".into()],
            ..Scope::default()
        };
        let deep = SpiffeId::new("spiffe://poc.local/agents/mcp-client/dspy/dev").unwrap();
        let shallow = SpiffeId::new("spiffe://poc.local/agents/one").unwrap();
        let other = SpiffeId::new("spiffe://poc.local/web/one").unwrap();
        assert!(s.admits(&shallow));
        assert!(!s.admits(&deep));
        let m = s.check_reader(&deep, "ai/groq").unwrap_err().0.message;
        assert!(m.contains("write `spiffe://poc.local/agents/**`"), "{m}");
        let m = s.check_reader(&other, "ai/groq").unwrap_err().0.message;
        assert!(!m.contains("**"), "{m}");
        assert!(Scope::default().admits(&other));
    }
}
