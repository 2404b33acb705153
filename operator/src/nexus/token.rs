//! Reference tokens for named agents: minted by the operator, handed to the agent's pod in a
//! Kubernetes Secret, and minted again before they expire.

use std::time::{Duration, SystemTime};

use http::Method;
use spike_core::api::{CreateTokenRequest, CreateTokenResponse, TokenInfo};
use spike_core::secret::SecretString;
use spike_core::token::{TokenAction, TokenLocation};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::client::NexusSync;
use super::error::SyncError;

/// A token as a `SpikeSecret` declares it for one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredToken {
    /// The secret's path.
    pub secret: String,
    /// The key the token stands for; `None` when the secret has one key.
    pub key: Option<String>,
    /// The agent's SPIFFE ID.
    pub agent_id: String,
    /// How long each token lives.
    pub ttl: Duration,
    /// The one action it allows.
    pub action: TokenAction,
    /// Where it may be sent; empty: the secret's allowed destinations.
    pub destinations: Vec<String>,
    /// Request path prefixes it is limited to; empty: any.
    pub path_prefixes: Vec<String>,
    /// Where the gateway may substitute it; empty: the `Authorization` header.
    pub locations: Vec<TokenLocation>,
}

/// A minted token: the reference (shown once by Nexus, wiped when dropped, redacted in Debug)
/// and its lifetime.
#[derive(Debug)]
pub struct MintedToken {
    /// `$SPIKE{ref:…}`, for the agent's pod only.
    pub reference: SecretString,
    /// Its id (not secret), to revoke it once its successor is in place.
    pub id: String,
    /// When Nexus minted it.
    pub issued_at: SystemTime,
    /// When it stops resolving.
    pub expires_at: SystemTime,
}

/// True once a token is two thirds through its life (or past it, or its times make no sense):
/// the last third is left for the new token to reach the pod before the old one stops
/// working.
pub fn needs_remint(issued_at: SystemTime, expires_at: SystemTime, now: SystemTime) -> bool {
    let Ok(life) = expires_at.duration_since(issued_at) else {
        return true;
    };
    if life.is_zero() {
        return true;
    }
    now >= issued_at + life * 2 / 3
}

fn instant(what: &str, s: &str) -> Result<SystemTime, SyncError> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(SystemTime::from)
        .map_err(|_| SyncError::Unexpected(format!("the token's {what} is not an RFC 3339 time")))
}

/// The revocation route of token `id`, checked so a bad id never becomes a URL.
fn revoke_route(id: &str) -> Result<String, SyncError> {
    if id.len() < 6 || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SyncError::BadInput(format!(
            "token id `{id}`: 6 to 64 hex digits"
        )));
    }
    Ok(format!("/v1/tokens/{id}/revoke"))
}

impl DesiredToken {
    fn request(&self) -> Result<CreateTokenRequest, SyncError> {
        if self.ttl.as_secs() == 0 || self.ttl.subsec_nanos() != 0 {
            return Err(SyncError::BadInput(
                "a token's TTL is a whole number of seconds, at least 1".into(),
            ));
        }
        Ok(CreateTokenRequest {
            secret: self.secret.clone(),
            key: self.key.clone(),
            spiffe_id: self.agent_id.clone(),
            destinations: self.destinations.clone(),
            ttl_seconds: self.ttl.as_secs(),
            action: self.action,
            path_prefixes: self.path_prefixes.clone(),
            locations: self.locations.clone(),
            max_uses: None,
        })
    }
}

impl NexusSync {
    /// Mints a token for `desired`'s agent. The operator must hold `token` on the path.
    pub async fn mint_token(&self, desired: &DesiredToken) -> Result<MintedToken, SyncError> {
        let body = desired.request()?;
        let what = format!("a token for {} on {}", desired.agent_id, desired.secret);
        let resp: CreateTokenResponse = self
            .call(Method::POST, "/v1/tokens", Some(&body), &what)
            .await?;
        Ok(MintedToken {
            issued_at: instant("creation time", &resp.binding.created_at)?,
            expires_at: instant("expiry", &resp.binding.expires_at)?,
            id: resp.binding.id,
            reference: resp.token,
        })
    }

    /// Revokes token `id` (once its successor has reached the pod).
    pub async fn revoke_token(&self, id: &str) -> Result<(), SyncError> {
        let route = revoke_route(id)?;
        let _: TokenInfo = self
            .call(Method::POST, &route, None::<&()>, &format!("token {id}"))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_reminted_at_two_thirds_of_its_life() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let exp = t0 + Duration::from_secs(900);
        assert!(!needs_remint(t0, exp, t0));
        assert!(!needs_remint(t0, exp, t0 + Duration::from_secs(599)));
        assert!(needs_remint(t0, exp, t0 + Duration::from_secs(600)));
        assert!(needs_remint(t0, exp, exp + Duration::from_secs(1)));
        // Nonsense lifetimes are reminted at once.
        assert!(needs_remint(exp, t0, t0));
        assert!(needs_remint(t0, t0, t0));
    }

    #[test]
    fn token_ttls_must_be_whole_seconds() {
        let mut d = DesiredToken {
            secret: "k8s/a/key".into(),
            key: None,
            agent_id: "spiffe://td/ns/a/agent".into(),
            ttl: Duration::ZERO,
            action: TokenAction::Read,
            destinations: vec![],
            path_prefixes: vec![],
            locations: vec![],
        };
        assert!(matches!(d.request(), Err(SyncError::BadInput(_))));
        d.ttl = Duration::from_millis(2500);
        assert!(matches!(d.request(), Err(SyncError::BadInput(_))));
        d.ttl = Duration::from_secs(60);
        assert_eq!(d.request().unwrap().ttl_seconds, 60);
    }

    #[test]
    fn bad_token_ids_never_become_urls() {
        for bad in ["", "abc12", "3f1a9c/../x", "3f1a9c?x=1", &"a".repeat(65)] {
            assert!(
                matches!(revoke_route(bad), Err(SyncError::BadInput(_))),
                "{bad}"
            );
        }
        assert_eq!(revoke_route("3f1a9c").unwrap(), "/v1/tokens/3f1a9c/revoke");
    }

    #[test]
    fn token_times_are_read_as_rfc3339() {
        assert!(instant("expiry", "soon").is_err());
        let t = instant("expiry", "1970-01-01T00:16:40Z").unwrap();
        assert_eq!(t, SystemTime::UNIX_EPOCH + Duration::from_secs(1000));
    }
}
