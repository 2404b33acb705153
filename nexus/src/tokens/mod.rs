//! Reference tokens: bindings stored under the keyed hash of a reference Nexus never keeps.
//!
//! Table `tokens` maps the hex of `HMAC(token-hash key, reference)` to the binding, an
//! authenticated record (kind `TokenBinding`, bound to that key), so editing the database
//! (widening a binding, resetting its uses, moving it under another hash) fails closed. The
//! token-hash key is fixed for the life of the store (see `KeyRing`), so bindings outlive
//! rotations; re-encryption re-tags them under the current generation like any record.
//!
//! Resolution checks a request against the binding. A token that is not found and a token
//! bound to another agent take the same path and give the same refusal (`token_unknown`);
//! only the audit line tells them apart. Uses of a token with a limit are counted under the
//! token's stripe lock with a compare-and-set on the record, so concurrent resolutions (even
//! from several Nexus processes on one store) never exceed the limit.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use spike_core::api::{TokenInfo, TokenState};
use spike_core::error::ErrorCode;
use spike_core::id::SpiffeId;
use spike_core::path::SecretPath;
use spike_core::pattern::IdPattern;
use spike_core::secret::SecretString;
use spike_core::token::{
    Destination, MIN_ID_PREFIX, TOKEN_ID_LEN, TokenAction, TokenLocation, TokenRef,
};
use spike_store::{Batch, Store, StoreError, Table};

use crate::clock::rfc3339;
use crate::error::{AppError, AppResult};
use crate::keys::OpenKeys;
use crate::records::{self, Kind};
use crate::secrets::LiveSecret;
use crate::stripes::Stripes;

mod mint;
pub(crate) use mint::binding_for;

/// Token bindings, keyed by the hex of the reference's keyed hash.
pub(crate) const TOKENS: Table = Table::new("tokens");

/// Most bindings read for one id prefix; a prefix matching this many is too short.
const ID_SCAN: usize = 64;

/// Most times a use is counted again after losing a compare-and-set to a concurrent writer.
const USE_ATTEMPTS: usize = 16;

/// A token's binding as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Binding {
    pub(crate) secret: String,
    pub(crate) key: String,
    /// The agent's SPIFFE ID or pattern.
    pub(crate) agent: String,
    pub(crate) destinations: Vec<String>,
    pub(crate) action: TokenAction,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) path_prefixes: Vec<String>,
    pub(crate) locations: Vec<TokenLocation>,
    pub(crate) created: String,
    pub(crate) created_by: String,
    /// Unix seconds.
    pub(crate) expires: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_uses: Option<u64>,
    #[serde(default)]
    pub(crate) uses: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) revoked: Option<String>,
}

impl Binding {
    fn state(&self, at: i64) -> TokenState {
        if self.revoked.is_some() {
            TokenState::Revoked
        } else if at >= self.expires {
            TokenState::Expired
        } else if self.max_uses.is_some_and(|m| self.uses >= m) {
            TokenState::Exhausted
        } else {
            TokenState::Active
        }
    }

    pub(crate) fn info(&self, key: &[u8], at: i64) -> TokenInfo {
        TokenInfo {
            id: token_id(key),
            secret: self.secret.clone(),
            key: self.key.clone(),
            spiffe_id: self.agent.clone(),
            destinations: self.destinations.clone(),
            action: self.action,
            path_prefixes: self.path_prefixes.clone(),
            locations: self.locations.clone(),
            max_uses: self.max_uses,
            uses: self.uses,
            created_by: self.created_by.clone(),
            created_at: self.created.clone(),
            expires_at: rfc3339(self.expires),
            revoked_at: self.revoked.clone(),
            state: self.state(at),
        }
    }

    /// True when `agent` is the bound agent (an exact ID or a match of the bound pattern).
    fn binds(&self, agent: &SpiffeId) -> bool {
        IdPattern::parse(&self.agent).is_ok_and(|p| p.matches(agent))
    }

    /// True when a request path is within the prefixes (segment-wise: `/v1/chat` covers
    /// `/v1/chat/completions`, not `/v1/chatter`).
    fn covers_path(&self, path: &str) -> bool {
        self.path_prefixes.is_empty()
            || self.path_prefixes.iter().any(|p| {
                path == p
                    || path
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| p.ends_with('/') || rest.starts_with('/'))
            })
    }
}

/// Where a token's binding is stored: the hex of its reference's keyed hash.
fn stored_key(keys: &OpenKeys, reference: &TokenRef) -> Vec<u8> {
    hex::encode(keys.token_hash(reference)).into_bytes()
}

/// The token id: the first [`TOKEN_ID_LEN`] hex digits of the stored key.
fn token_id(key: &[u8]) -> String {
    String::from_utf8_lossy(&key[..key.len().min(TOKEN_ID_LEN)]).into_owned()
}

/// What a resolution asks, as the gateway sent it (validated).
pub(crate) struct ResolveAsk<'a> {
    pub(crate) agent: &'a SpiffeId,
    pub(crate) destination: &'a Destination,
    pub(crate) action: TokenAction,
    pub(crate) path: &'a str,
    pub(crate) location: &'a TokenLocation,
}

/// Why a resolution was refused: the code the gateway gets and the true reason for the audit
/// line (they differ only where the answer must not tell, as for a token of another agent).
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) error: AppError,
    pub(crate) reason: &'static str,
    /// The id of the token refused as unknown though it exists (for the audit line only).
    pub(crate) hidden_id: Option<String>,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            reason: code.as_str(),
            error: AppError::new(code, message),
            hidden_id: None,
        }
    }

    /// Unknown to this agent: no such token, a malformed one, or one bound to another agent.
    pub(crate) fn unknown(reason: &'static str) -> Self {
        Self {
            reason,
            hidden_id: None,
            error: AppError::new(
                ErrorCode::TokenUnknown,
                "no such token for this agent; mint one with `spike token create`",
            ),
        }
    }
}

impl From<AppError> for Refusal {
    fn from(error: AppError) -> Self {
        Self {
            reason: error.code().as_str(),
            error,
            hidden_id: None,
        }
    }
}

/// A binding found for a resolution, with what is needed to count a use.
pub(crate) struct Found {
    key: Vec<u8>,
    pub(crate) binding: Binding,
}

impl Found {
    pub(crate) fn id(&self) -> String {
        token_id(&self.key)
    }
}

fn store_err(e: StoreError) -> AppError {
    AppError::internal("store", e)
}

/// The token engine: one per Nexus.
pub(crate) struct Tokens {
    store: Arc<dyn Store>,
    locks: Stripes,
}

impl Tokens {
    /// The id of the token `reference` is (whether or not such a token exists).
    pub(crate) fn id_of(keys: &OpenKeys, reference: &TokenRef) -> String {
        token_id(&stored_key(keys, reference))
    }

    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            locks: Stripes::new(),
        }
    }

    /// Stores `binding` under a fresh reference and returns the reference.
    pub(crate) async fn mint(
        &self,
        keys: &OpenKeys,
        binding: &Binding,
    ) -> AppResult<(TokenRef, Vec<u8>)> {
        let reference = TokenRef::generate().map_err(|e| AppError::internal("randomness", e))?;
        let key = stored_key(keys, &reference);
        let mut batch = Batch::new();
        // 128 random bits never collide in practice; if they did, refusing is the safe answer.
        batch.require_absent(TOKENS, key.clone());
        batch.put(
            TOKENS,
            key.clone(),
            records::tag(keys, Kind::TokenBinding, &key, binding),
        );
        self.store.commit(batch).await.map_err(store_err)?;
        Ok((reference, key))
    }

    /// The binding of `token` if it is bound to `agent`. Not found, malformed and bound to
    /// another agent all give [`Refusal::unknown`] from this one function, so the answers
    /// (and the work done) are alike.
    pub(crate) async fn find_for_agent(
        &self,
        keys: &OpenKeys,
        token: &SecretString,
        agent: &SpiffeId,
    ) -> Result<Found, Refusal> {
        let Ok(reference) = TokenRef::parse(token.expose_secret()) else {
            return Err(Refusal::unknown("token_malformed"));
        };
        let key = stored_key(keys, &reference);
        let raw = self.store.get(TOKENS, &key).await.map_err(store_err)?;
        let binding = match raw {
            Some(raw) => Some(
                records::verify::<Binding>(keys, Kind::TokenBinding, &key, &raw)
                    .map_err(|e| AppError::internal("token binding", e))?,
            ),
            None => {
                // An HMAC over a record-sized body, as verifying a found binding computes, so
                // a miss is not markedly quicker than a hit for another agent.
                let _ = keys.record_tag(
                    spike_core::crypto::RecordType::TokenBinding,
                    &key,
                    MISS_BODY,
                );
                None
            }
        };
        match binding {
            Some(b) if b.binds(agent) => Ok(Found { key, binding: b }),
            Some(_) => Err(Refusal {
                hidden_id: Some(token_id(&key)),
                ..Refusal::unknown("token_agent_mismatch")
            }),
            None => Err(Refusal::unknown(ErrorCode::TokenUnknown.as_str())),
        }
    }

    /// Checks `ask` against the binding (not the secret), in the documented order.
    pub(crate) fn check(found: &Found, ask: &ResolveAsk<'_>, at: i64) -> Result<(), Refusal> {
        let b = &found.binding;
        if b.revoked.is_some() {
            return Err(Refusal::new(
                ErrorCode::TokenRevoked,
                "this token was revoked; ask for a new one",
            ));
        }
        if at >= b.expires {
            return Err(Refusal::new(
                ErrorCode::TokenExpired,
                "this token has expired; ask for a new one",
            ));
        }
        let dest = ask.destination.to_string();
        if !b.destinations.contains(&dest) {
            return Err(Refusal::new(
                ErrorCode::DestinationNotAllowed,
                format!(
                    "this token may not be sent to {dest}; it is for {}",
                    b.destinations.join(", ")
                ),
            ));
        }
        if ask.action != b.action {
            return Err(Refusal::new(
                ErrorCode::ActionNotAllowed,
                format!(
                    "this request is a `{}`; this token allows only `{}`",
                    ask.action, b.action
                ),
            ));
        }
        if !b.locations.contains(ask.location) {
            let allowed: Vec<String> = b.locations.iter().map(ToString::to_string).collect();
            return Err(Refusal::new(
                ErrorCode::LocationNotAllowed,
                format!(
                    "this token may not be used in {}; put it in {}",
                    ask.location,
                    allowed.join(" or ")
                ),
            ));
        }
        if !b.covers_path(ask.path) {
            return Err(Refusal::new(
                ErrorCode::PathNotAllowed,
                format!(
                    "this token is not for this path; it is limited to {}",
                    b.path_prefixes.join(", ")
                ),
            ));
        }
        if b.max_uses.is_some_and(|m| b.uses >= m) {
            return Err(uses_exhausted());
        }
        Ok(())
    }

    /// The value the token stands for, if the secret still has a readable version whose
    /// scope still covers the token.
    pub(crate) fn value_of(
        found: &Found,
        live: Option<LiveSecret>,
        ask: &ResolveAsk<'_>,
    ) -> Result<(SecretString, Option<i64>), Refusal> {
        let unavailable = |why: &str| {
            Refusal::new(
                ErrorCode::SecretUnavailable,
                format!("the secret behind this token {why}; ask its owner"),
            )
        };
        let live = live.ok_or_else(|| {
            unavailable("has no readable version (deleted, destroyed or expired)")
        })?;
        // The scope may have narrowed since the token was minted: it binds every use.
        let dest = ask.destination.to_string();
        if !live.scope.admits(ask.agent)
            || (!live.scope.destinations.is_empty() && !live.scope.destinations.contains(&dest))
        {
            return Err(unavailable("no longer allows this agent or destination"));
        }
        let value = live
            .data
            .get(&found.binding.key)
            .cloned()
            .ok_or_else(|| unavailable("no longer has the key it stood for"))?;
        Ok((value, live.expires))
    }

    /// Counts one use of a token with a limit (a token without one is not written): under
    /// the token's lock, re-read, re-checked and committed with a compare-and-set, so the
    /// limit holds under concurrent resolutions.
    pub(crate) async fn count_use(&self, keys: &OpenKeys, found: &Found) -> Result<(), Refusal> {
        if found.binding.max_uses.is_none() {
            return Ok(());
        }
        let _guard = self.locks.for_key(&found.key).lock().await;
        for _ in 0..USE_ATTEMPTS {
            let raw = self
                .store
                .get(TOKENS, &found.key)
                .await
                .map_err(store_err)?
                .ok_or_else(|| Refusal::unknown("token_gone"))?;
            let mut b: Binding = records::verify(keys, Kind::TokenBinding, &found.key, &raw)
                .map_err(|e| AppError::internal("token binding", e))?;
            if b.max_uses.is_some_and(|m| b.uses >= m) {
                return Err(uses_exhausted());
            }
            if b.revoked.is_some() {
                return Err(Refusal::new(
                    ErrorCode::TokenRevoked,
                    "this token was revoked; ask for a new one",
                ));
            }
            b.uses += 1;
            let mut batch = Batch::new();
            batch.require_value(TOKENS, found.key.clone(), raw);
            batch.put(
                TOKENS,
                found.key.clone(),
                records::tag(keys, Kind::TokenBinding, &found.key, &b),
            );
            match self.store.commit(batch).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(store_err(e).into()),
            }
        }
        Err(AppError::new(
            ErrorCode::Unavailable,
            "the token is in heavy concurrent use; retry",
        )
        .into())
    }

    /// Every binding whose secret `visible` admits, by id.
    pub(crate) async fn list(
        &self,
        keys: &OpenKeys,
        visible: impl Fn(&SecretPath) -> bool,
        at: i64,
    ) -> AppResult<Vec<TokenInfo>> {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self
                .store
                .scan(TOKENS, b"", after.as_deref(), 256)
                .await
                .map_err(store_err)?;
            for (key, raw) in &page {
                let b: Binding = records::verify(keys, Kind::TokenBinding, key, raw)
                    .map_err(|e| AppError::internal("token binding", e))?;
                if SecretPath::parse(&b.secret).is_ok_and(|p| visible(&p)) {
                    out.push(b.info(key, at));
                }
            }
            match page.last() {
                Some((k, _)) if page.len() == 256 => after = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }

    /// The one binding whose id starts with `prefix` among those `visible` admits. None, or
    /// only invisible ones, is `404` (a caller learns nothing of tokens it may not see).
    pub(crate) async fn find_by_id(
        &self,
        keys: &OpenKeys,
        prefix: &str,
        visible: impl Fn(&SecretPath) -> bool,
    ) -> AppResult<(Vec<u8>, Vec<u8>, Binding)> {
        if prefix.len() < MIN_ID_PREFIX
            || prefix.len() > TOKEN_ID_LEN
            || !prefix
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(AppError::new(
                ErrorCode::BadRequest,
                format!(
                    "a token id is {MIN_ID_PREFIX} to {TOKEN_ID_LEN} lowercase hex digits (the ID column of `spike token list`)"
                ),
            ));
        }
        let rows = self
            .store
            .scan(TOKENS, prefix.as_bytes(), None, ID_SCAN)
            .await
            .map_err(store_err)?;
        if rows.len() == ID_SCAN {
            return Err(AppError::new(
                ErrorCode::BadRequest,
                format!("many tokens have ids starting with {prefix}; give more digits"),
            ));
        }
        let mut hits = Vec::new();
        for (key, raw) in rows {
            let b: Binding = records::verify(keys, Kind::TokenBinding, &key, &raw)
                .map_err(|e| AppError::internal("token binding", e))?;
            if SecretPath::parse(&b.secret).is_ok_and(|p| visible(&p)) {
                hits.push((key, raw, b));
            }
        }
        match hits.len() {
            0 => Err(AppError::new(
                ErrorCode::NotFound,
                format!("no token {prefix} that you may see"),
            )),
            1 => Ok(hits.remove(0)),
            n => Err(AppError::new(
                ErrorCode::BadRequest,
                format!("{n} tokens have ids starting with {prefix}; give more digits"),
            )),
        }
    }

    /// Revokes the token stored under `key` (read as `raw`): kept, so its resolutions say
    /// `token_revoked`, until it would have expired anyway.
    pub(crate) async fn revoke(
        &self,
        keys: &OpenKeys,
        key: &[u8],
        raw: Vec<u8>,
        mut binding: Binding,
        at: i64,
    ) -> AppResult<TokenInfo> {
        let _guard = self.locks.for_key(key).lock().await;
        if binding.revoked.is_none() {
            binding.revoked = Some(crate::clock::now());
            let mut batch = Batch::new();
            batch.require_value(TOKENS, key.to_vec(), raw);
            batch.put(
                TOKENS,
                key.to_vec(),
                records::tag(keys, Kind::TokenBinding, key, &binding),
            );
            self.store.commit(batch).await.map_err(|e| match e {
                StoreError::Conflict { .. } => AppError::new(
                    ErrorCode::CasMismatch,
                    "the token changed meanwhile (a use was counted); retry",
                ),
                e => store_err(e),
            })?;
        }
        Ok(binding.info(key, at))
    }

    /// Re-encryption: the binding under `key` re-tagged under the current generation (under
    /// its lock, compare-and-set); true unless it already was.
    pub(crate) async fn retag(&self, keys: &OpenKeys, key: &[u8]) -> AppResult<bool> {
        let _guard = self.locks.for_key(key).lock().await;
        let Some(raw) = self.store.get(TOKENS, key).await.map_err(store_err)? else {
            return Ok(false);
        };
        let Some(retagged) = records::retag(keys, Kind::TokenBinding, key, &raw)
            .map_err(|e| AppError::internal("token binding", e))?
        else {
            return Ok(false);
        };
        let mut batch = Batch::new();
        batch.require_value(TOKENS, key.to_vec(), raw);
        batch.put(TOKENS, key.to_vec(), retagged);
        match self.store.commit(batch).await {
            Ok(()) | Err(StoreError::Conflict { .. }) => Ok(true),
            Err(e) => Err(store_err(e)),
        }
    }
}

/// What a miss computes a tag over instead of a found record's body (a typical body's size).
const MISS_BODY: &[u8] = &[0u8; 384];

fn uses_exhausted() -> Refusal {
    Refusal::new(
        ErrorCode::UsesExhausted,
        "this token's uses are spent; ask for a new one",
    )
}

#[cfg(test)]
pub(crate) mod tests;
