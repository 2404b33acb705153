//! Minting: a create request and the secret's newest version become a binding that is never
//! wider than the secret (its allowed IDs, destinations and TTL).

use spike_core::api::CreateTokenRequest;
use spike_core::error::ErrorCode;
use spike_core::id::TrustDomain;
use spike_core::policy::CallerClass;
use spike_core::token::{Destination, TokenLocation};

use super::Binding;
use crate::clock::rfc3339;
use crate::error::{AppError, AppResult};
use crate::scope::{check_count, check_ttl, one_segment_hint, parse_id_pattern};
use crate::secrets::LiveSecret;

/// Most locations one token may name.
const MAX_LOCATIONS: usize = 8;
/// Longest request path prefix.
const MAX_PREFIX_LEN: usize = 512;

fn bad(message: impl Into<String>) -> AppError {
    AppError::new(ErrorCode::BadRequest, message)
}

/// The binding `req` asks for, minted by `creator` at `at` (unix seconds) for the secret's
/// newest version `live`, or why it would be wider than the secret.
pub(crate) fn binding_for(
    req: &CreateTokenRequest,
    path: &str,
    live: &LiveSecret,
    td: &TrustDomain,
    creator: &str,
    at: i64,
) -> AppResult<Binding> {
    let key = match &req.key {
        Some(k) if live.data.contains_key(k) => k.clone(),
        Some(k) => {
            let keys: Vec<&str> = live.data.keys().collect();
            return Err(bad(format!(
                "{path} has no key `{k}`; its keys are {}",
                keys.join(", ")
            )));
        }
        None => match live.data.keys().collect::<Vec<_>>().as_slice() {
            [only] => (*only).to_owned(),
            keys => {
                return Err(bad(format!(
                    "{path} has {} keys ({}): name one with --secret {path}:KEY",
                    keys.len(),
                    keys.join(", ")
                )));
            }
        },
    };
    let agent = agent_within_scope(req, path, live, td)?;
    let destinations = destinations_within_scope(&req.destinations, path, live)?;
    let ttl = check_ttl(req.ttl_seconds)?;
    let expires = at.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
    if let Some(secret_expires) = live.expires
        && expires > secret_expires
    {
        return Err(bad(format!(
            "the token would outlive the secret's current version, which expires at {}: give a TTL of at most {} seconds",
            rfc3339(secret_expires),
            (secret_expires - at).max(0)
        )));
    }
    let path_prefixes = path_prefixes(&req.path_prefixes)?;
    let mut locations = req.locations.clone();
    if locations.is_empty() {
        locations.push(TokenLocation::default_header());
    }
    locations.dedup();
    if locations.len() > MAX_LOCATIONS {
        return Err(bad(format!("at most {MAX_LOCATIONS} locations")));
    }
    if req.max_uses == Some(0) {
        return Err(bad("--max-uses must be at least 1"));
    }
    Ok(Binding {
        secret: path.to_owned(),
        key,
        agent,
        destinations,
        action: req.action,
        path_prefixes,
        locations,
        created: crate::clock::now(),
        created_by: creator.to_owned(),
        expires,
        max_uses: req.max_uses,
        uses: 0,
        revoked: None,
    })
}

/// The agent ID or pattern, if the secret's allowed IDs cover it: an exact ID must match one
/// of them, a pattern must be one of them (a pattern is never checked for being narrower).
fn agent_within_scope(
    req: &CreateTokenRequest,
    path: &str,
    live: &LiveSecret,
    td: &TrustDomain,
) -> AppResult<String> {
    let pattern = parse_id_pattern(&req.spiffe_id, td)?;
    let is_pattern = req.spiffe_id.contains('*');
    let exact = spike_core::id::SpiffeId::new(&req.spiffe_id).ok();
    if exact
        .as_ref()
        .is_some_and(|id| CallerClass::of(id) != CallerClass::Workload)
        || pattern.literal_prefix().next() == Some("spike")
    {
        return Err(bad(
            "a token is for an agent (a workload), not for one of SPIKE's own identities",
        ));
    }
    let allowed = &live.scope.ids;
    if allowed.is_empty() {
        return Ok(pattern.as_str().to_owned());
    }
    let fits = match &exact {
        Some(id) if !is_pattern => live.scope.admits(id),
        _ => allowed.iter().any(|a| a == pattern.as_str()),
    };
    if fits {
        return Ok(pattern.as_str().to_owned());
    }
    let hint = exact
        .as_ref()
        .map(|id| one_segment_hint(&live.scope.patterns(), id))
        .unwrap_or_default();
    Err(bad(format!(
        "{} is outside the SPIFFE IDs {path} allows ({}): a token is never wider than its secret{hint}",
        req.spiffe_id,
        allowed.join(", ")
    )))
}

/// The token's destinations: those given (each one the secret allows, if it names any), or
/// else the secret's own. None at all is refused: a token must say where it may go.
fn destinations_within_scope(
    given: &[String],
    path: &str,
    live: &LiveSecret,
) -> AppResult<Vec<String>> {
    check_count(given.len(), "destinations")?;
    let allowed = &live.scope.destinations;
    let mut out = Vec::with_capacity(given.len().max(allowed.len()));
    for d in given {
        let d = Destination::parse(d)
            .map_err(|e| bad(e.to_string()))?
            .to_string();
        if !allowed.is_empty() && !allowed.contains(&d) {
            return Err(bad(format!(
                "destination {d} is not among those {path} allows ({}): a token is never wider than its secret",
                allowed.join(", ")
            )));
        }
        out.push(d);
    }
    if out.is_empty() {
        out.clone_from(allowed);
    }
    if out.is_empty() {
        return Err(bad(format!(
            "a token needs a destination: give --destination HOST[:PORT], or set {path}'s --allowed-destinations"
        )));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Request path prefixes: absolute, without query or fragment, a trailing `/` dropped.
fn path_prefixes(given: &[String]) -> AppResult<Vec<String>> {
    check_count(given.len(), "path prefixes")?;
    given
        .iter()
        .map(|p| {
            if !p.starts_with('/')
                || p.len() > MAX_PREFIX_LEN
                || p.contains(['?', '#'])
                || p.bytes().any(|b| b.is_ascii_control() || b == b' ')
            {
                return Err(bad(format!(
                    "path prefix `{}`: write an absolute request path such as /openai/v1/chat (at most {MAX_PREFIX_LEN} bytes, no query)",
                    p.escape_default()
                )));
            }
            let trimmed = p.trim_end_matches('/');
            Ok(if trimmed.is_empty() { "/" } else { trimmed }.to_owned())
        })
        .collect()
}
