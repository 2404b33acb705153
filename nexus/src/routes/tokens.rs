//! Reference-token routes: create, list, inspect, revoke (callers holding `token` on the
//! secret's path) and resolve (gateway identities holding `resolve` on it).
//!
//! Every line these routes audit names the token by its id (a prefix of its keyed hash), never
//! by its reference. A resolution's line keeps the true reason of a refusal, which the answer
//! hides where it must (a token of another agent is `token_unknown` to the gateway).

use std::future::Future;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use spike_core::api::{
    CreateTokenRequest, CreateTokenResponse, ListTokensResponse, ResolveRequest, ResolveResponse,
    TokenLookupRequest,
};
use spike_core::audit::{AuditRecord, Decision};
use spike_core::error::ErrorCode;
use spike_core::id::SpiffeId;
use spike_core::path::SecretPath;
use spike_core::policy::{CallerClass, Permission};
use spike_core::token::Destination;

use super::{N, query};
use crate::clock::{rfc3339, unix_now};
use crate::error::{AppError, AppResult};
use crate::extract::{Caller, JsonBody, PathParam};
use crate::ratelimit::RateClass;
use crate::state::Nexus;
use crate::tokens::{Refusal, ResolveAsk, Tokens, binding_for};

/// The token routes, merged into the `/v1` router.
pub(super) fn routes() -> Router<Arc<Nexus>> {
    Router::new()
        .route("/v1/tokens", post(create).get(list))
        .route("/v1/tokens/resolve", post(resolve))
        .route("/v1/tokens/lookup", post(lookup))
        .route("/v1/tokens/{id}", get(inspect))
        .route("/v1/tokens/{id}/revoke", post(revoke))
}

/// `GET /v1/tokens` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListTokensQuery {
    /// Only tokens for this secret.
    secret: Option<String>,
}

impl Nexus {
    /// True when `caller` may mint (and so see and revoke) tokens for `path`.
    fn may_mint(&self, caller: &SpiffeId, path: &SecretPath) -> bool {
        self.authorize(caller, path, Permission::Token).is_ok()
    }

    /// Runs a token route's handler and answers, auditing its outcome with what it names
    /// (the caller over its refusal rate is answered before anything runs, as on every route).
    async fn token_answer<T: serde::Serialize>(
        &self,
        action: &'static str,
        caller: &SpiffeId,
        body: impl Future<Output = (Result<T, Refusal>, Subject)>,
    ) -> Response {
        if let Some(refused) = self.over_refusal_rate(action, caller) {
            return refused;
        }
        let (result, subject) = body.await;
        let outcome = result.as_ref().map(|_| ()).map_err(|r| r.error.code());
        let mut record = match &result {
            Ok(_) => AuditRecord::new(action, Decision::Allow, "ok"),
            Err(r) if r.error.code().denies_access() || is_token_refusal(r.error.code()) => {
                AuditRecord::new(action, Decision::Deny, r.reason)
            }
            Err(r) => AuditRecord::new(action, Decision::Error, r.reason),
        }
        .with_caller(caller.clone());
        record = match (subject.path, outcome) {
            // Caller data of any size and bytes: a short escaped prefix and a hash only.
            (Some(p), Err(ErrorCode::InvalidPath)) => record.with_raw_path(&p),
            (Some(p), _) => record.with_path(p),
            (None, _) => record,
        };
        let hidden = result.as_ref().err().and_then(|r| r.hidden_id.clone());
        record = record.with_token(subject.token.or(hidden), subject.agent);
        let result = result.map(|v| Json(v).into_response()).map_err(|r| r.error);
        self.finish_audited(action, result, record, &outcome).await
    }
}

/// What a token route's audit line names, as far as its handler got: the secret's path, the
/// token's id, the agent a gateway resolved for.
#[derive(Default)]
struct Subject {
    path: Option<String>,
    token: Option<String>,
    agent: Option<SpiffeId>,
}

/// The refusal codes of a resolution (a `deny`, not an error, in the audit log).
fn is_token_refusal(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::TokenUnknown
            | ErrorCode::TokenExpired
            | ErrorCode::TokenRevoked
            | ErrorCode::DestinationNotAllowed
            | ErrorCode::ActionNotAllowed
            | ErrorCode::LocationNotAllowed
            | ErrorCode::PathNotAllowed
            | ErrorCode::SecretUnavailable
            | ErrorCode::UsesExhausted
    )
}

async fn create(
    State(n): N,
    Caller(c): Caller,
    body: Result<JsonBody<CreateTokenRequest>, AppError>,
) -> Response {
    n.token_answer("token.create", &c, async {
        let mut subject = Subject::default();
        let result: AppResult<CreateTokenResponse> = async {
            let o = n.opened()?;
            let JsonBody(req) = body?;
            subject.path = Some(req.secret.clone());
            let path = n.parse_path(&req.secret)?;
            n.authorize(&c, &path, Permission::Token)?;
            if let Some(scope) = n.operator_scope_of(&c) {
                let agent = crate::scope::parse_id_pattern(&req.spiffe_id, n.trust_domain())?;
                scope
                    .check_agent(&agent)
                    .map_err(|e| AppError::outside_scope("the token", &e))?;
            }
            let at = unix_now();
            let live = n
                .secrets()
                .newest_live(&o.keys, &path, at)
                .await?
                .ok_or_else(|| {
                    AppError::new(
                        ErrorCode::NotFound,
                        format!(
                            "{path} has no readable version (missing, deleted, destroyed or expired): write one first"
                        ),
                    )
                })?;
            let binding =
                binding_for(&req, path.as_str(), &live, n.trust_domain(), c.as_str(), at)?;
            let (reference, key) = n.tokens().mint(&o.keys, &binding).await?;
            Ok(CreateTokenResponse {
                token: reference.to_token_string(),
                binding: binding.info(&key, at),
            })
        }
        .await;
        subject.token = result.as_ref().ok().map(|r| r.binding.id.clone());
        (result.map_err(Refusal::from), subject)
    })
    .await
}

async fn list(
    State(n): N,
    Caller(c): Caller,
    q: Result<Query<ListTokensQuery>, QueryRejection>,
) -> Response {
    n.token_answer("token.list", &c, async {
        let result: AppResult<ListTokensResponse> = async {
            let o = n.opened()?;
            let q = query(q)?;
            let only = q.secret.as_deref().map(|p| n.parse_path(p)).transpose()?;
            let tokens = n
                .tokens()
                .list(
                    &o.keys,
                    |p| only.as_ref().is_none_or(|o| o == p) && n.may_mint(&c, p),
                    unix_now(),
                )
                .await?;
            Ok(ListTokensResponse { tokens })
        }
        .await;
        (result.map_err(Refusal::from), Subject::default())
    })
    .await
}

async fn inspect(State(n): N, Caller(c): Caller, PathParam(id): PathParam) -> Response {
    by_id(n, c, Ok(Named::Id(id)), ByIdOp::Inspect).await
}

async fn revoke(State(n): N, Caller(c): Caller, PathParam(id): PathParam) -> Response {
    by_id(n, c, Ok(Named::Id(id)), ByIdOp::Revoke).await
}

/// `POST /v1/tokens/lookup`: inspect a token given by its reference, as `inspect` does by id
/// (same permission, same answers): how an operator holding a leaked token finds its binding.
async fn lookup(
    State(n): N,
    Caller(c): Caller,
    body: Result<JsonBody<TokenLookupRequest>, AppError>,
) -> Response {
    let named = body.map(|JsonBody(b)| Named::Reference(b.token));
    by_id(n, c, named, ByIdOp::Inspect).await
}

/// How a route names its token.
enum Named {
    /// By its id or a prefix of it.
    Id(String),
    /// By the reference itself.
    Reference(spike_core::secret::SecretString),
}

/// What a route on one token (by id) does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ByIdOp {
    Inspect,
    Revoke,
}

/// Finds the one token `named` names among those the caller may mint for, and shows or
/// revokes it; the audit line names its id and secret once found (never the reference).
async fn by_id(n: Arc<Nexus>, c: SpiffeId, named: AppResult<Named>, op: ByIdOp) -> Response {
    let action = match op {
        ByIdOp::Inspect => "token.inspect",
        ByIdOp::Revoke => "token.revoke",
    };
    n.token_answer(action, &c, async {
        let mut subject = Subject::default();
        let result: AppResult<_> = async {
            let o = n.opened()?;
            let id = match named? {
                Named::Id(id) => id,
                Named::Reference(r) => {
                    let r =
                        spike_core::token::TokenRef::parse(r.expose_secret()).map_err(|_| {
                            AppError::new(
                                ErrorCode::BadRequest,
                                "token: not a reference token ($SPIKE{ref:…})",
                            )
                        })?;
                    Tokens::id_of(&o.keys, &r)
                }
            };
            let (key, raw, binding) = n
                .tokens()
                .find_by_id(&o.keys, &id, |p| n.may_mint(&c, p))
                .await?;
            let at = unix_now();
            let info = binding.info(&key, at);
            subject.token = Some(info.id.clone());
            subject.path = Some(info.secret.clone());
            match op {
                ByIdOp::Inspect => Ok(info),
                ByIdOp::Revoke => n.tokens().revoke(&o.keys, &key, raw, binding, at).await,
            }
        }
        .await;
        (result.map_err(Refusal::from), subject)
    })
    .await
}

async fn resolve(
    State(n): N,
    Caller(c): Caller,
    body: Result<JsonBody<ResolveRequest>, AppError>,
) -> Response {
    n.token_answer("token.resolve", &c, async {
        let mut subject = Subject::default();
        let result = resolve_for(&n, &c, body, &mut subject).await;
        (result, subject)
    })
    .await
}

/// A resolution's checks, in the documented order, and the value if all pass.
async fn resolve_for(
    n: &Nexus,
    c: &SpiffeId,
    body: Result<JsonBody<ResolveRequest>, AppError>,
    subject: &mut Subject,
) -> Result<ResolveResponse, Refusal> {
    let o = n.opened()?;
    only_gateways(n, c)?;
    n.limiter().check(RateClass::Resolve, c)?;
    let JsonBody(req) = body?;
    let agent = SpiffeId::new(&req.agent_spiffe_id)
        .map_err(|e| AppError::new(ErrorCode::BadRequest, format!("agentSpiffeId: {e}")))?;
    subject.agent = Some(agent.clone());
    let destination = Destination::parse(&req.destination)
        .map_err(|e| AppError::new(ErrorCode::BadRequest, e.to_string()))?;
    let ask = ResolveAsk {
        agent: &agent,
        destination: &destination,
        action: req.action,
        path: &req.path,
        location: &req.location,
    };
    let found = n
        .tokens()
        .find_for_agent(&o.keys, &req.token, &agent)
        .await?;
    subject.token = Some(found.id());
    subject.path = Some(found.binding.secret.clone());
    let secret = n
        .parse_path(&found.binding.secret)
        .map_err(|_| AppError::internal("token binding", "stored secret path is invalid"))?;
    n.authorize(c, &secret, Permission::Resolve)?;
    let at = unix_now();
    Tokens::check(&found, &ask, at)?;
    let live = n.secrets().newest_live(&o.keys, &secret, at).await?;
    let (value, secret_expires) = Tokens::value_of(&found, live, &ask)?;
    n.tokens().count_use(&o.keys, &found).await?;
    let expires = secret_expires.map_or(found.binding.expires, |e| e.min(found.binding.expires));
    Ok(ResolveResponse {
        value,
        token_id: found.id(),
        expires_at: rfc3339(expires),
        cacheable: found.binding.max_uses.is_none(),
    })
}

/// Only gateway identities (`spiffe://<td>/spike/gateway/<name>`) resolve: a workload that
/// calls itself a gateway has no such SVID, and no workload policy grants `resolve`.
pub(super) fn only_gateways(n: &Nexus, caller: &SpiffeId) -> AppResult<()> {
    if caller.is_member_of(n.trust_domain()) && CallerClass::of(caller) == CallerClass::Gateway {
        return Ok(());
    }
    Err(AppError::not_admin(
        caller,
        &format!(
            "a gateway identity (spiffe://{}/spike/gateway/<name>)",
            n.trust_domain()
        ),
    ))
}
