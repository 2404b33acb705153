//! Who sent a request: an agent, known by the SPIFFE ID of its verified SVID (or the one agent
//! of a sidecar), or an unauthenticated caller, whose connection presented no certificate or
//! one that did not verify against the gateway's trust bundle.
//!
//! An unauthenticated caller never acts as any agent, and nothing its certificate claims is
//! used: the listener keeps only why it failed. A token it sends is resolved as for
//! [`NO_AGENT`], an ID no token can be bound to, so Nexus refuses it `token_unknown` through
//! the same code path, with the same answer and the same work, as a token stolen by another
//! agent. Only the decision line, the audit line and the metrics say what really happened.

use std::sync::LazyLock;

use http::Extensions;
use spike_core::id::SpiffeId;
use spike_runtime::tls::{PeerIdentity, Unauthenticated};

use crate::refusal::Reason;

/// The agent ID an unauthenticated caller's tokens are resolved for: in a trust domain under
/// the reserved `.invalid` name (RFC 2606), which no deployment is, while Nexus binds tokens
/// only to IDs of its own trust domain, so no token ever matches it.
pub static NO_AGENT: LazyLock<SpiffeId> = LazyLock::new(|| {
    SpiffeId::new("spiffe://unauthenticated.invalid/no-agent").expect("a valid SPIFFE ID")
});

/// The sender of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An agent, by its verified SPIFFE ID.
    Agent(SpiffeId),
    /// A caller without a valid SVID, with the listener's label of why.
    Unauthenticated(Unauthenticated),
}

impl From<SpiffeId> for Caller {
    fn from(id: SpiffeId) -> Self {
        Self::Agent(id)
    }
}

impl Caller {
    /// The caller of a request on the shared listener, from what the accept loop put into its
    /// extensions; `None` when it put neither or both (which it never does).
    pub fn of(extensions: &Extensions) -> Option<Self> {
        match (
            extensions.get::<PeerIdentity>(),
            extensions.get::<Unauthenticated>(),
        ) {
            (Some(p), None) => Some(Self::Agent(p.id.clone())),
            (None, Some(u)) => Some(Self::Unauthenticated(*u)),
            _ => None,
        }
    }

    /// The agent, if the caller is one.
    pub fn agent(&self) -> Option<&SpiffeId> {
        match self {
            Self::Agent(id) => Some(id),
            Self::Unauthenticated(_) => None,
        }
    }

    /// The agent ID tokens are resolved for: the agent's own, or [`NO_AGENT`].
    pub fn resolves_as(&self) -> &SpiffeId {
        self.agent().unwrap_or(&NO_AGENT)
    }

    /// The reason the decision line and the metrics record for a refusal: the refusal's own,
    /// except that a token refused as unknown to an unauthenticated caller is recorded as
    /// what it was (`unauthenticated`: no certificate; `foreign_trust_domain`; or
    /// `unverified_certificate`: self-signed, another CA, expired, not an SVID, ...).
    pub fn decision_reason(&self, refused: Reason) -> &'static str {
        match self {
            Self::Unauthenticated(u)
                if refused == Reason::Token(spike_core::error::ErrorCode::TokenUnknown) =>
            {
                match u.reason {
                    "no_certificate" => "unauthenticated",
                    "other_trust_domain" => "foreign_trust_domain",
                    _ => "unverified_certificate",
                }
            }
            _ => refused.as_str(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use spike_core::error::ErrorCode;
    use spike_core::id::TrustDomain;

    use super::*;

    #[test]
    fn no_agent_is_outside_every_trust_domain_a_deployment_can_have() {
        assert_eq!(NO_AGENT.trust_domain_name(), "unauthenticated.invalid");
        let td = TrustDomain::new("spike.dev").unwrap();
        assert!(!NO_AGENT.is_member_of(&td));
    }

    #[test]
    fn an_unauthenticated_caller_is_no_agent_and_its_true_reason_is_recorded() {
        let anon = |reason| Caller::Unauthenticated(Unauthenticated { reason });
        let unknown = Reason::Token(ErrorCode::TokenUnknown);
        for (label, recorded) in [
            ("no_certificate", "unauthenticated"),
            ("other_trust_domain", "foreign_trust_domain"),
            ("unknown_issuer", "unverified_certificate"),
            ("expired", "unverified_certificate"),
        ] {
            let c = anon(label);
            assert_eq!(c.agent(), None);
            assert_eq!(c.resolves_as(), &*NO_AGENT);
            assert_eq!(c.decision_reason(unknown), recorded);
            assert_eq!(c.decision_reason(Reason::RateLimited), "rate_limited");
        }
        let agent = Caller::from(SpiffeId::new("spiffe://spike.dev/agents/a").unwrap());
        assert_eq!(agent.decision_reason(unknown), "token_unknown");
        assert_eq!(agent.resolves_as().as_str(), "spiffe://spike.dev/agents/a");
    }

    #[test]
    fn a_request_carries_exactly_one_kind_of_caller() {
        let mut ext = Extensions::new();
        assert_eq!(Caller::of(&ext), None);
        ext.insert(Unauthenticated {
            reason: "no_certificate",
        });
        assert!(matches!(Caller::of(&ext), Some(Caller::Unauthenticated(_))));
        ext.insert(PeerIdentity {
            id: SpiffeId::new("spiffe://spike.dev/agents/a").unwrap(),
            not_after: std::time::SystemTime::now(),
        });
        // Both: refused, whichever would win.
        assert_eq!(Caller::of(&ext), None);
    }
}
