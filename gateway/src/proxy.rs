//! The chain a request goes through, in order: size limits → the agent's identity → route
//! and action → checks on the request (no real value in it) → the agent's rate limit →
//! resolution of its tokens → substitution, the last step before the bytes leave → the
//! upstream → the response, scrubbed of every value resolved for this agent as it streams.
//!
//! Nothing before substitution holds a real value: the values live in the resolution answers
//! and the agent's [`ScrubSet`] (both wiped on drop), and go into the request only once every
//! check has passed. Refusals and log lines name tokens by nothing but their Nexus id.
//!
//! A caller without a valid SVID ([`Caller::Unauthenticated`]) goes through the same chain
//! as an agent up to resolution, where its tokens are resolved for an ID no token is bound
//! to, so it gets the answer a stolen token gets; it is never served. Without a token in the
//! request head it is refused `agent_identity_required` before the rate limit.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use spike_core::api::{ResolveRequest, ResolveResponse};
use spike_core::id::SpiffeId;
use spike_core::secret::SecretString;
use spike_core::token::{TokenAction, TokenLocation, TokenRef};
use zeroize::Zeroizing;

use crate::audit::{AuditTrail, Decision};
use crate::caller::Caller;
use crate::decode::{self, Decoder};
use crate::detect::Finder;
use crate::egress::{Body, BoxError, Egress, EgressError, RoutePolicy, Target};
use crate::inbound::{self, Addressed};
use crate::locate::{self, SubstituteError};
use crate::metrics::Metrics;
use crate::ratelimit::{RateLimiter, RateLimits};
use crate::refusal::{Reason, Refusal};
use crate::resolve::{ResolveError, ResolveTokens};
use crate::route::{ActionRule, classify};
use crate::{ScrubSet, Scrubber, scrub_header_value};

/// One named route, ready to serve.
#[derive(Debug, Clone)]
pub struct Route {
    /// Its name (`/r/<name>/…`).
    pub name: String,
    /// `https` (true) or plain `http`.
    pub tls: bool,
    /// The upstream host (normalized).
    pub host: String,
    /// The upstream port.
    pub port: u16,
    /// The upstream path the route's paths go below (no trailing `/`; empty for the root).
    pub base_path: String,
    /// Action rules.
    pub rules: Vec<ActionRule>,
    /// Where it may connect, and its TLS trust.
    pub policy: RoutePolicy,
    /// Substitute into plain-`http://` requests (only for upstreams on a trusted network).
    pub allow_plain_http: bool,
    /// Look for tokens in request bodies (bodies are then read whole, up to the limit).
    pub substitute_in_body: bool,
}

/// The gateway's limits.
#[derive(Debug, Clone, Copy)]
pub struct ProxyLimits {
    /// Largest request body read (every body is read whole and checked before it is sent).
    pub max_request_body: usize,
    /// Response decompression caps.
    pub decode: decode::Limits,
    /// Requests per agent, and of unauthenticated callers together.
    pub rate: RateLimits,
}

impl Default for ProxyLimits {
    fn default() -> Self {
        Self {
            max_request_body: 8 << 20,
            decode: decode::Limits::default(),
            rate: RateLimits::default(),
        }
    }
}

/// The gateway: routes, egress, resolution and each agent's scrub set.
pub struct Proxy {
    routes: HashMap<String, Route>,
    /// Absolute-form requests, when allowed: public addresses only, system roots.
    forward: Option<RoutePolicy>,
    egress: Egress,
    tokens: Arc<dyn ResolveTokens>,
    limits: ProxyLimits,
    /// Every value resolved for an agent, by agent ID, with the token it is replaced by.
    sets: Mutex<HashMap<String, Arc<ScrubSet>>>,
    rate: RateLimiter,
    metrics: Arc<Metrics>,
    audit: Arc<AuditTrail>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .field("forward", &self.forward.is_some())
            .finish_non_exhaustive()
    }
}

/// Where one request goes, after the inbound checks.
struct Plan<'a> {
    route: Option<&'a Route>,
    host: String,
    port: u16,
    tls: bool,
    policy: &'a RoutePolicy,
    path: PathAndQuery,
    action: TokenAction,
}

impl Plan<'_> {
    fn target(&self) -> Target<'_> {
        Target {
            host: &self.host,
            port: self.port,
            tls: self.tls,
        }
    }
}

/// A token found and resolved.
struct Resolved {
    token: TokenRef,
    /// The token as the agent wrote it (`$SPIKE{ref:…}`), formatted once.
    text: SecretString,
    location: TokenLocation,
    value: SecretString,
    token_id: String,
}

impl Proxy {
    /// A gateway serving `routes`, forwarding absolute-form requests under `forward` when
    /// given, resolving with `tokens`, recording every decision in `audit`.
    pub fn new(
        routes: Vec<Route>,
        forward: Option<RoutePolicy>,
        egress: Egress,
        tokens: Arc<dyn ResolveTokens>,
        limits: ProxyLimits,
        audit: Arc<AuditTrail>,
    ) -> Self {
        Self {
            routes: routes.into_iter().map(|r| (r.name.clone(), r)).collect(),
            forward,
            egress,
            tokens,
            limits,
            sets: Mutex::new(HashMap::new()),
            rate: RateLimiter::new(limits.rate),
            metrics: Arc::new(Metrics::default()),
            audit,
        }
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Serves one request of `caller`.
    pub async fn handle<B>(&self, caller: &Caller, req: Request<B>) -> Response<Body>
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (head, body) = req.into_parts();
        let mut decision = Decision::new(caller.resolves_as());
        // Nothing is served unaudited: not before the log is open, and a refusal whose line
        // cannot be written becomes `audit_unavailable`.
        let outcome = if self.audit.is_open() {
            self.serve(caller, head, body, &mut decision).await
        } else {
            Err(AuditTrail::unavailable())
        };
        let outcome = match outcome {
            Err(r) if r.reason != Reason::AuditUnavailable => {
                let recorded = caller.decision_reason(r.reason);
                match self.audit.refused(&decision, &r, recorded).await {
                    Ok(()) => Err(r),
                    Err(unaudited) => Err(unaudited),
                }
            }
            other => other,
        };
        let (verdict, reason, status) = match &outcome {
            Ok(resp) => ("allowed", "", resp.status().as_u16()),
            Err(r) => (
                "refused",
                caller.decision_reason(r.reason),
                r.reason.status().as_u16(),
            ),
        };
        self.metrics
            .decision(self.route_label(decision.route), verdict, reason);
        tracing::info!(
            target: "spike_gateway::decision",
            agent = decision.agent.as_str(),
            route = decision.route,
            destination = %decision.destination,
            action = decision.action.map(TokenAction::as_str),
            tokens = ?decision.tokens,
            status,
            decision = verdict,
            reason,
        );
        outcome.unwrap_or_else(|refusal| refusal.to_response())
    }

    async fn serve<'a, B>(
        &'a self,
        caller: &Caller,
        mut head: Parts,
        body: B,
        decision: &mut Decision<'a>,
    ) -> Result<Response<Body>, Refusal>
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let agent = caller.resolves_as();
        let plan = self.plan(&head)?;
        decision.route = plan.route.map_or("forward", |r| r.name.as_str());
        decision.destination = format!("{}:{}", plan.host, plan.port);
        decision.action = Some(plan.action);
        if head
            .headers
            .get(http::header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes() != b"identity")
        {
            return Err(Refusal::new(
                Reason::BadRequest,
                "send the request body uncompressed: the gateway checks every body before it leaves",
            ));
        }
        // Every body is read whole (up to the limit) and checked before anything is sent:
        // a body that carries a real value must not leave, even in part.
        let limit = self.limits.max_request_body;
        let body = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|_| {
                Refusal::new(
                    Reason::TooLarge,
                    format!("the request body is over the gateway's limit of {limit} bytes, or was cut off"),
                )
            })?
            .to_bytes();
        let body = Zeroizing::new(body.to_vec());
        // Any value the gateway resolved, for this agent or another: an agent holding one
        // means it leaked somewhere.
        let carried = self
            .all_sets()
            .iter()
            .any(|known| carries_known_value(&head, &body, known));
        if carried {
            tracing::warn!(
                target: "spike_gateway::decision",
                agent = agent.as_str(),
                "an agent's request carried a real value the gateway resolved",
            );
            return Err(Refusal::new(
                Reason::ValueInRequest,
                "the request carries a credential in clear: send its reference token ($SPIKE{ref:...}) instead; this was recorded",
            ));
        }
        let found = locate::tokens_in_head(&head)?;
        if !found.is_empty() && !plan.tls && !plan.route.is_some_and(|r| r.allow_plain_http) {
            return Err(Refusal::new(
                Reason::PlainHttp,
                "tokens are substituted only into https:// requests on this route",
            ));
        }
        if caller.agent().is_none() && found.is_empty() {
            return Err(no_agent());
        }
        self.rate.admit(caller)?;
        let dest = decision.destination.clone();
        let mut resolved = Vec::new();
        for f in found {
            let r = self
                .resolve(agent, &dest, &plan, f.token, f.location)
                .await
                .map_err(refusal_of)?;
            decision.tokens.push(r.token_id.clone());
            resolved.push(r);
        }
        // Nexus binds no token to the ID an unauthenticated caller resolves as, so the loop
        // above has refused it; were it ever to resolve one, nothing is sent all the same.
        if caller.agent().is_none() {
            return Err(no_agent());
        }
        // Body tokens only where the route looks for them; one the binding does not allow
        // in a body stays as it is (agents re-send histories that quote their references).
        let mut body_resolved = Vec::new();
        if plan.route.is_some_and(|r| r.substitute_in_body) {
            for (_, token) in locate::tokens_in(&body) {
                match self
                    .resolve(agent, &dest, &plan, token, TokenLocation::Body)
                    .await
                {
                    Ok(r) => {
                        decision.tokens.push(r.token_id.clone());
                        body_resolved.push(r);
                    }
                    Err(ResolveError::Refused { .. }) => {}
                    Err(e @ ResolveError::Unavailable(_)) => return Err(refusal_of(e)),
                }
            }
        }
        // Every value joins the agent's scrub set before any of them leaves.
        let set = self.remember(agent, resolved.iter().chain(&body_resolved))?;
        // Substitution: the last step.
        let mut path = plan.path.as_str().to_owned();
        for r in &resolved {
            match &r.location {
                TokenLocation::Header(name) => {
                    let name = HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| Refusal::new(Reason::BadRequest, "bad header name"))?;
                    let Some(v) = head.headers.get(&name) else {
                        continue;
                    };
                    let new = locate::substitute_header(v, &r.token, r.value.expose_secret().as_bytes())
                        .map_err(|e| match e {
                            SubstituteError::NotHeaderSafe => Refusal::new(
                                Reason::Token(spike_core::error::ErrorCode::SecretUnavailable),
                                "the secret's value cannot be sent in a header (it holds control characters)",
                            ),
                            SubstituteError::Gone => Refusal::new(Reason::BadRequest, "the token moved"),
                        })?;
                    head.headers.insert(name, new);
                }
                TokenLocation::Query(name) => {
                    if let Some((p, q)) = path.split_once('?') {
                        let q = locate::substitute_query(
                            q,
                            name,
                            &r.token,
                            r.value.expose_secret().as_bytes(),
                        );
                        path = format!("{p}?{}", q.as_str());
                    }
                }
                TokenLocation::Body => {}
            }
        }
        let body: Zeroizing<Vec<u8>> = body_resolved.iter().fold(body, |b, r| {
            Zeroizing::new(locate::replace_all(
                &b,
                r.text.expose_secret().as_bytes(),
                r.value.expose_secret().as_bytes(),
            ))
        });
        strip_hop_by_hop(&mut head.headers);
        head.headers.remove(http::header::CONTENT_LENGTH);
        head.uri = PathAndQuery::try_from(path)
            .map_err(|_| {
                Refusal::new(
                    Reason::BadRequest,
                    "the path is not valid after substitution",
                )
            })?
            .into();
        let out = Request::from_parts(
            head,
            Full::new(Bytes::from_owner(body))
                .map_err(|e| match e {})
                .boxed_unsync(),
        );
        // The decision, recorded before anything leaves.
        self.audit.allowed(decision).await?;
        let started = std::time::Instant::now();
        let sent = self
            .egress
            .send(plan.target(), plan.policy, out)
            .await
            .map_err(egress_refusal)?;
        self.metrics.upstream(started.elapsed());
        self.respond(sent.response, set)
    }

    /// A bounded metrics label: a configured route, `forward`, or `-`.
    fn route_label<'r>(&self, route: &'r str) -> &'r str {
        if route == "forward" || self.routes.contains_key(route) {
            route
        } else {
            "-"
        }
    }

    /// The route, destination, path and action of `head`.
    fn plan<'a>(&'a self, head: &Parts) -> Result<Plan<'a>, Refusal> {
        match inbound::addressed(head)? {
            Addressed::Route { name, rest } => {
                let route = self.routes.get(&name).ok_or_else(|| {
                    Refusal::new(
                        Reason::RouteUnknown,
                        format!(
                            "no route `{name}` here; the gateway's configuration lists its routes"
                        ),
                    )
                })?;
                let action = classify(&route.rules, &head.method, &rest);
                let path = PathAndQuery::try_from(format!("{}{}", route.base_path, rest)).map_err(
                    |_| Refusal::new(Reason::BadRequest, "the path is not a valid URI path"),
                )?;
                Ok(Plan {
                    route: Some(route),
                    host: route.host.clone(),
                    port: route.port,
                    tls: route.tls,
                    policy: &route.policy,
                    path,
                    action,
                })
            }
            Addressed::Forward {
                tls,
                host,
                port,
                path,
            } => {
                let policy = self.forward.as_ref().ok_or_else(|| {
                    Refusal::new(
                        Reason::RouteUnknown,
                        "this gateway forwards only named routes: address one as /r/<route>/<path>",
                    )
                })?;
                Ok(Plan {
                    route: None,
                    host,
                    port,
                    tls,
                    policy,
                    action: classify(&[], &head.method, &path),
                    path,
                })
            }
        }
    }

    async fn resolve(
        &self,
        agent: &SpiffeId,
        destination: &str,
        plan: &Plan<'_>,
        token: TokenRef,
        location: TokenLocation,
    ) -> Result<Resolved, ResolveError> {
        let text = token.to_token_string();
        let req = ResolveRequest {
            token: text.clone(),
            agent_spiffe_id: agent.as_str().to_owned(),
            destination: destination.to_owned(),
            action: plan.action,
            path: plan.path.path().to_owned(),
            location: location.clone(),
        };
        let ResolveResponse {
            value, token_id, ..
        } = self.tokens.resolve(req).await?;
        Ok(Resolved {
            token,
            text,
            location,
            value,
            token_id,
        })
    }

    /// Every agent's set (snapshots, scanned without the lock).
    fn all_sets(&self) -> Vec<Arc<ScrubSet>> {
        self.sets
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Adds the values to the agent's set; returns the set to scrub this response with.
    fn remember<'r>(
        &self,
        agent: &SpiffeId,
        resolved: impl Iterator<Item = &'r Resolved>,
    ) -> Result<Arc<ScrubSet>, Refusal> {
        let mut sets = self
            .sets
            .lock()
            .map_err(|_| Refusal::new(Reason::UpstreamUnavailable, "internal error"))?;
        let current = sets.get(agent.as_str()).cloned().unwrap_or_default();
        // The usual case, an agent using a token it used before: nothing to add, no copy.
        let fresh: Vec<&Resolved> = resolved
            .filter(|r| {
                current.replacement_of(r.value.expose_secret().as_bytes())
                    != Some(r.text.expose_secret())
            })
            .collect();
        if fresh.is_empty() {
            return Ok(current);
        }
        let mut set = (*current).clone();
        for r in fresh {
            set.insert(r.value.expose_secret().as_bytes(), r.text.expose_secret())
                .map_err(|e| {
                    Refusal::new(
                        Reason::Token(spike_core::error::ErrorCode::SecretUnavailable),
                        format!("the secret's value cannot be protected by the gateway ({e}); ask its owner for a longer value"),
                    )
                })?;
        }
        let set = Arc::new(set);
        sets.insert(agent.as_str().to_owned(), set.clone());
        Ok(set)
    }

    /// The upstream's response, its headers scrubbed now and its body as it streams.
    fn respond(
        &self,
        resp: Response<hyper::body::Incoming>,
        set: Arc<ScrubSet>,
    ) -> Result<Response<Body>, Refusal> {
        let (mut head, body) = resp.into_parts();
        strip_hop_by_hop(&mut head.headers);
        let decoder = match head.headers.remove(http::header::CONTENT_ENCODING) {
            None => Decoder::new(&[], self.limits.decode),
            Some(v) => Decoder::from_header(v.as_bytes(), self.limits.decode).map_err(|_| {
                Refusal::new(
                    Reason::Unscrubbable,
                    "the upstream answered in a Content-Encoding the gateway cannot decode, so it cannot be checked",
                )
            })?,
        };
        if !decoder.is_identity() {
            head.headers.remove(http::header::CONTENT_LENGTH);
        }
        scrub_headers(&mut head.headers, &set);
        // Scrubbing can change the length.
        head.headers.remove(http::header::CONTENT_LENGTH);
        let body = ScrubBody {
            inner: body,
            decoder: Some(decoder),
            scrubber: Some(Scrubber::new(set)),
            done: false,
            metrics: self.metrics.clone(),
        };
        Ok(Response::from_parts(head, body.boxed_unsync()))
    }
}

/// Whether a header value, the path and query, or the body carries a known value, each
/// scanned on its own.
fn carries_known_value(head: &Parts, body: &[u8], set: &ScrubSet) -> bool {
    if set.is_empty() {
        return false;
    }
    let mut finder = Finder::new(set);
    head.headers
        .values()
        .any(|v| finder.find(v.as_bytes()).is_some())
        || head
            .uri
            .path_and_query()
            .is_some_and(|p| finder.find(p.as_str().as_bytes()).is_some())
        || finder.find(body).is_some()
}

/// Replaces every known value in the header values. Most hold none: one scanner finds
/// those that do, and only they are scrubbed (which finds the same matches again).
fn scrub_headers(headers: &mut HeaderMap, set: &Arc<ScrubSet>) {
    if set.is_empty() {
        return;
    }
    let mut finder = Finder::new(set);
    for v in headers.values_mut() {
        if finder.find(v.as_bytes()).is_some()
            && let std::borrow::Cow::Owned(clean) = scrub_header_value(set, v.as_bytes())
            && let Ok(nv) = HeaderValue::from_bytes(&clean)
        {
            *v = nv;
        }
    }
}

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "keep-alive",
    "proxy-connection",
];

/// Removes the hop-by-hop headers and those the `Connection` header names. One pass over the
/// names finds those present (a message carries one or none, usually), rather than a
/// look-up for each name of the list.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present: Vec<HeaderName> = headers
        .keys()
        .filter(|n| HOP_BY_HOP.contains(&n.as_str()))
        .cloned()
        .collect();
    if present.is_empty() {
        return;
    }
    present.extend(
        headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
    );
    for n in present {
        headers.remove(n);
    }
}

/// The refusal of a caller without a valid SVID and without a token.
fn no_agent() -> Refusal {
    Refusal::new(
        Reason::AgentIdentityRequired,
        "this connection has no client certificate that verifies as an SVID of this trust domain: connect with the agent's SVID",
    )
}

fn refusal_of(e: ResolveError) -> Refusal {
    match e {
        ResolveError::Refused { code, message } => Refusal::new(Reason::Token(code), message),
        ResolveError::Unavailable(_) => Refusal::new(
            Reason::NexusUnavailable,
            "the gateway cannot reach Nexus to resolve the token; retry shortly",
        ),
    }
}

fn egress_refusal(e: EgressError) -> Refusal {
    match e {
        EgressError::AddressNotAllowed { host, addr, class } => Refusal::new(
            Reason::AddressNotAllowed,
            format!("{host} resolves to {addr}, a {class} address this route may not reach"),
        ),
        other => Refusal::new(Reason::UpstreamUnavailable, other.to_string()),
    }
}

/// A response body decoded and scrubbed as it streams.
struct ScrubBody {
    inner: hyper::body::Incoming,
    decoder: Option<Decoder>,
    scrubber: Option<Scrubber>,
    done: bool,
    metrics: Arc<Metrics>,
}

impl HttpBody for ScrubBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let this = &mut *self;
                        let (Some(d), Some(s)) = (this.decoder.as_mut(), this.scrubber.as_mut())
                        else {
                            return Poll::Ready(None);
                        };
                        let plain = match d.push(&data) {
                            Ok(p) => p,
                            Err(e) => return Poll::Ready(Some(Err(e.into()))),
                        };
                        let out = s.push_bytes(plain);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    // Trailers are dropped: they could carry a value, and agents need none.
                    Err(_trailers) => {}
                },
                Poll::Ready(None) => {
                    self.done = true;
                    let (Some(d), Some(s)) = (self.decoder.take(), self.scrubber.take()) else {
                        return Poll::Ready(None);
                    };
                    let mut s = s;
                    let tail = match d.finish() {
                        Ok(t) => s.push_bytes(t),
                        Err(e) => return Poll::Ready(Some(Err(e.into()))),
                    };
                    self.metrics.scrubbed(s.replacements());
                    let mut out = tail.to_vec();
                    out.extend_from_slice(&s.finish());
                    return Poll::Ready(if out.is_empty() {
                        None
                    } else {
                        Some(Ok(Frame::data(Bytes::from(out))))
                    });
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
