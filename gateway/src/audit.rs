//! The gateway's audit chain: one HMAC-chained line per decision, in the format of Nexus's
//! log (`spike_core::audit`), under a key Nexus derives for this gateway alone, so
//! `spike audit verify --file` checks it through Nexus.
//!
//! - The key comes from Nexus (`POST /v1/audit/chain-key`) at start; [`open_when_keyed`]
//!   retries while Nexus is sealed or unreachable, then opens the log (continuing the chain
//!   after its last line, which must verify under the key).
//! - Until the log is open, and whenever a line cannot be written, requests are refused with
//!   `503 audit_unavailable`: nothing is served unaudited.
//! - An allowed request's line is written after its last check and before anything leaves
//!   (the upstream's status is not known then and is not in the line; the operational log
//!   and metrics have it). A refused request's line is written when it is refused; a request
//!   allowed and then failing upstream gets a second line, `error`, with its reason.
//! - A line names the agent, the token ids (Nexus's hash prefixes, never a reference), the
//!   route, the destination, the action, the decision and the true reason code: never a
//!   value. Its fields come from the request's plan and static codes only.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{Method, StatusCode};
use spike_core::api::AuditChainKeyResponse;
use spike_core::audit::{AuditKey, AuditRecord, Decision as Verdict};
use spike_core::error::ErrorCode;
use spike_core::id::SpiffeId;
use spike_core::token::TokenAction;
use spike_runtime::audit_log::{AuditWriter, WriterOptions};
use spike_runtime::net::MtlsClient;

use crate::refusal::{Reason, Refusal};

/// What was decided about one request, filled in as it goes through the chain.
#[derive(Debug)]
pub(crate) struct Decision<'a> {
    pub(crate) agent: &'a SpiffeId,
    /// The route name (`forward` for absolute-form requests); empty before it is known.
    pub(crate) route: &'a str,
    /// `host:port`; empty before it is known.
    pub(crate) destination: String,
    pub(crate) action: Option<TokenAction>,
    /// Ids of the tokens resolved, in order.
    pub(crate) tokens: Vec<String>,
    /// The allow line was written.
    pub(crate) allowed: bool,
}

impl<'a> Decision<'a> {
    pub(crate) fn new(agent: &'a SpiffeId) -> Self {
        Self {
            agent,
            route: "",
            destination: String::new(),
            action: None,
            tokens: Vec::new(),
            allowed: false,
        }
    }

    fn record(&self, verdict: Verdict, reason: &'static str) -> AuditRecord {
        let action = match self.action {
            None => "gateway.request",
            Some(TokenAction::Read) => "gateway.read",
            Some(TokenAction::Write) => "gateway.write",
            Some(TokenAction::Admin) => "gateway.admin",
        };
        let mut r = AuditRecord::new(action, verdict, reason)
            .with_tokens(self.tokens.iter().map(String::as_str), self.agent.clone());
        if !self.route.is_empty() {
            r = r.with_route(self.route);
        }
        if !self.destination.is_empty() {
            r = r.with_destination(self.destination.as_str());
        }
        r
    }
}

/// The gateway's audit log, once open. Requests are refused until it is.
#[derive(Debug)]
pub struct AuditTrail {
    gateway: SpiffeId,
    writer: OnceLock<AuditWriter>,
}

impl AuditTrail {
    /// The trail of `gateway` (the caller of every line), not open yet.
    pub fn new(gateway: SpiffeId) -> Self {
        Self {
            gateway,
            writer: OnceLock::new(),
        }
    }

    /// Whether lines can be written (the log is open).
    pub fn is_open(&self) -> bool {
        self.writer.get().is_some()
    }

    /// Writes lines to `writer` from now on. Only the first call counts.
    pub fn attach(&self, writer: AuditWriter) {
        let _ = self.writer.set(writer);
    }

    /// Writes what is left and closes the log (a batched log is synced).
    pub async fn close(&self) {
        if let Some(w) = self.writer.get() {
            w.close().await;
        }
    }

    /// The refusal of a request while the log is not open.
    pub(crate) fn unavailable() -> Refusal {
        Refusal::new(
            Reason::AuditUnavailable,
            "the gateway cannot record requests right now, so it serves none; retry shortly",
        )
    }

    /// Writes the allow line of `d`, before anything leaves.
    pub(crate) async fn allowed(&self, d: &mut Decision<'_>) -> Result<(), Refusal> {
        self.write(d.record(Verdict::Allow, "ok")).await?;
        d.allowed = true;
        Ok(())
    }

    /// Writes the line of `refusal` with the true `reason` (its own code, or what a
    /// `token_unknown` of an unauthenticated caller really was: see
    /// [`Caller::decision_reason`](crate::caller::Caller::decision_reason)): `error` for a
    /// failure (after an allow line, or when a service the gateway needs is down), `deny`
    /// otherwise. If it cannot be written, the answer becomes `503 audit_unavailable`.
    pub(crate) async fn refused(
        &self,
        d: &Decision<'_>,
        refusal: &Refusal,
        reason: &'static str,
    ) -> Result<(), Refusal> {
        let failure = matches!(
            refusal.reason,
            Reason::UpstreamUnavailable
                | Reason::NexusUnavailable
                | Reason::Unscrubbable
                | Reason::AuditUnavailable
                | Reason::Token(ErrorCode::Sealed | ErrorCode::Internal | ErrorCode::Unavailable)
        );
        let verdict = if d.allowed || failure {
            Verdict::Error
        } else {
            Verdict::Deny
        };
        let record = d
            .record(verdict, reason)
            .with_status(refusal.reason.status().as_u16());
        self.write(record).await
    }

    async fn write(&self, record: AuditRecord) -> Result<(), Refusal> {
        let Some(w) = self.writer.get() else {
            return Err(Self::unavailable());
        };
        match w.append(record.with_caller(self.gateway.clone())).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // The error names the file and the OS's reason, never a line's content.
                tracing::error!(error = %e, "cannot write the gateway's audit log; refusing requests");
                Err(Self::unavailable())
            }
        }
    }
}

/// Why the chain key could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainKeyError {
    /// Nexus could not be reached.
    #[error("cannot reach Nexus: {0}")]
    Unreachable(String),
    /// Nexus answered, but with no key (sealed, or this identity is not a gateway).
    #[error("Nexus refused the audit chain key ({0})")]
    Refused(StatusCode),
    /// The answer is not a key for this gateway.
    #[error("Nexus answered something that is not this gateway's chain key")]
    BadAnswer,
}

/// Asks Nexus for this gateway's chain key.
pub async fn fetch_chain_key(
    nexus: &MtlsClient,
    gateway: &SpiffeId,
) -> Result<AuditKey, ChainKeyError> {
    let resp = nexus
        .send_secret(
            Method::POST,
            "/v1/audit/chain-key",
            zeroize::Zeroizing::new(Vec::new()),
        )
        .await
        .map_err(|e| ChainKeyError::Unreachable(e.to_string()))?;
    if resp.status != StatusCode::OK {
        return Err(ChainKeyError::Refused(resp.status));
    }
    let answer: AuditChainKeyResponse =
        serde_json::from_slice(&resp.body).map_err(|_| ChainKeyError::BadAnswer)?;
    if answer.gateway != gateway.as_str() {
        return Err(ChainKeyError::BadAnswer);
    }
    AuditKey::from_hex(answer.key.expose_secret()).map_err(|_| ChainKeyError::BadAnswer)
}

/// Longest wait between two attempts to fetch the key or open the log.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Fetches the chain key (retrying while Nexus is sealed or unreachable), opens the log at
/// `path` with it and attaches it to `trail`. Retries until it succeeds: a log that cannot
/// be continued (locked, a torn or forged last line) keeps the gateway refusing, with the
/// reason in its log, until an operator fixes it.
pub async fn open_when_keyed(
    trail: Arc<AuditTrail>,
    nexus: MtlsClient,
    path: PathBuf,
    options: WriterOptions,
) {
    let mut wait = Duration::from_millis(100);
    loop {
        let opened = match fetch_chain_key(&nexus, &trail.gateway).await {
            Ok(key) => AuditWriter::open_with(&path, key, options.clone(), None)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match opened {
            Ok(writer) => {
                trail.attach(writer);
                tracing::info!(path = %path.display(), "gateway audit log open");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?wait, "gateway audit log not open yet; refusing requests");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refusals_are_deny_and_failures_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let trail = AuditTrail::new(SpiffeId::new("spiffe://t.test/spike/gateway/g").unwrap());
        trail.attach(
            AuditWriter::open(&path, AuditKey::new(&[1; 32]))
                .await
                .unwrap(),
        );
        let agent = SpiffeId::new("spiffe://t.test/agents/a").unwrap();
        let d = Decision::new(&agent);
        for reason in [
            Reason::Token(ErrorCode::TokenUnknown),
            Reason::Token(ErrorCode::Sealed),
            Reason::Token(ErrorCode::Unavailable),
            Reason::NexusUnavailable,
            Reason::BadPath,
        ] {
            trail
                .refused(&d, &Refusal::new(reason, "hint"), reason.as_str())
                .await
                .unwrap();
        }
        // After an allow line, any refusal is a failure of what was allowed.
        let mut allowed = Decision::new(&agent);
        trail.allowed(&mut allowed).await.unwrap();
        trail
            .refused(
                &allowed,
                &Refusal::new(Reason::BadRequest, "hint"),
                "bad_request",
            )
            .await
            .unwrap();
        trail.close().await;
        let text = std::fs::read_to_string(&path).unwrap();
        let got: Vec<(String, String)> = text
            .lines()
            .map(|l| {
                let l = spike_core::audit::AuditLine::parse(l).unwrap();
                (l.decision.as_str().to_owned(), l.reason)
            })
            .collect();
        let want = [
            ("deny", "token_unknown"),
            ("error", "sealed"),
            ("error", "unavailable"),
            ("error", "nexus_unavailable"),
            ("deny", "bad_path"),
            ("allow", "ok"),
            ("error", "bad_request"),
        ];
        assert_eq!(
            got,
            want.map(|(d, r)| (d.to_owned(), r.to_owned())),
            "{text}"
        );
        // The hint an agent sees is not in the line; the line names the gateway as caller.
        assert!(!text.contains("hint"));
        assert!(text.contains(r#""caller":"spiffe://t.test/spike/gateway/g""#));
    }
}
