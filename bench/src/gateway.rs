//! The gateway benchmark's setup: a real Nexus (from [`Stack`]), a secret whose value the
//! upstream expects, a token for one agent, and `spike-gateway` in sidecar mode on loopback
//! with a route to the upstream. The load itself comes from an independent client (`oha`),
//! the same for the gateway and for nginx as a reverse proxy to the same upstream.

use std::net::SocketAddr;

use http::Method;
use spike_core::api::{
    CreateTokenRequest, CreateTokenResponse, PutPolicyRequest, PutSecretRequest, ScopeUpdate,
};
use spike_core::id::SpiffeId;
use spike_core::policy::Permission;
use spike_core::secret::{SecretMap, SecretString};
use spike_core::token::TokenAction;
use spike_gateway::config::{GatewaySettings, RouteSettings};
use spike_gateway::ratelimit::RateLimits;
use spike_runtime::ratelimit::Rate;

use crate::Stack;

/// What a load client needs.
#[derive(Debug)]
pub struct GatewayBench {
    /// `http://127.0.0.1:PORT/r/up/`: the route to the upstream.
    pub base: String,
    /// Where the gateway listens.
    pub listen: SocketAddr,
    /// The agent's token.
    pub token: SecretString,
    /// The gateway's task (stops with the stack's shutdown signal).
    pub task: tokio::task::JoinHandle<()>,
}

/// The value the upstream is given (for nginx's upstream to check, as a real API would).
pub const UPSTREAM_KEY: &str = "sk-bench-0123456789abcdefghij";

/// What [`Stack::provision_gateway`] set up.
pub(crate) struct Provisioned {
    /// The agent the token is for.
    pub(crate) agent: SpiffeId,
    /// The gateway's identity, which may resolve it.
    pub(crate) gateway: SpiffeId,
    /// The token.
    pub(crate) token: SecretString,
}

impl Stack {
    /// Provisions a secret, a policy for the gateway and a token, and starts the gateway on
    /// `listen` in front of `upstream` (plain HTTP on loopback).
    pub async fn gateway(
        &self,
        upstream: SocketAddr,
        listen: SocketAddr,
    ) -> anyhow::Result<GatewayBench> {
        let p = self.provision_gateway(upstream).await?;
        let settings = GatewaySettings {
            listen,
            health_listen: SocketAddr::from((listen.ip(), 0)),
            nexus: self.nexus_addr().to_owned(),
            sidecar_agent: p.agent.to_string(),
            routes: vec![RouteSettings::loopback_chat("up", upstream)],
            rate_limits: unlimited(),
            audit_log: Some(self.data_dir.join("gateway-audit.log")),
            ..GatewaySettings::default()
        };
        let (bound, task) = self.start_gateway(&settings, &p.gateway).await?;
        Ok(GatewayBench {
            base: format!("http://{}/r/up", bound.listen),
            listen: bound.listen,
            token: p.token,
            task,
        })
    }

    /// Starts `spike-gateway` with `settings` as `gateway`, until the stack stops.
    pub(crate) async fn start_gateway(
        &self,
        settings: &GatewaySettings,
        gateway: &SpiffeId,
    ) -> anyhow::Result<(spike_gateway::server::Bound, tokio::task::JoinHandle<()>)> {
        let checked = settings.check()?;
        let (bound, task) =
            spike_gateway::server::start(checked, self.svid_source(gateway)?, self.stopped())
                .await?;
        // Until its audit log is open (its chain key comes from Nexus) the gateway refuses
        // every request: a run must not start before that.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while !is_ready(bound.health).await {
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("the gateway was not ready within 30 s (its audit log did not open)");
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok((bound, task))
    }

    /// A secret whose value `upstream` expects, a policy letting the gateway resolve it, and
    /// a token for one agent.
    pub(crate) async fn provision_gateway(
        &self,
        upstream: SocketAddr,
    ) -> anyhow::Result<Provisioned> {
        let td = self.trust_domain().clone();
        let agent = SpiffeId::new(&format!("spiffe://{td}/agents/bench"))?;
        let gateway = SpiffeId::new(&format!("spiffe://{td}/spike/gateway/bench"))?;
        let _: serde_json::Value = self
            .client
            .call(
                Method::PUT,
                "/v1/policies/bench-gateway",
                Some(&PutPolicyRequest {
                    spiffe_id_pattern: gateway.to_string(),
                    path_pattern: "bench-gw/**".into(),
                    permissions: vec![Permission::Resolve],
                    create_only: false,
                }),
            )
            .await?;
        let mut data = SecretMap::new();
        data.insert("value", SecretString::new(UPSTREAM_KEY.into()));
        let _: serde_json::Value = self
            .client
            .call(
                Method::PUT,
                "/v1/secrets/data/bench-gw/key",
                Some(&PutSecretRequest {
                    data,
                    cas: None,
                    scope: Some(ScopeUpdate {
                        ttl_seconds: None,
                        allowed_spiffe_ids: Some(vec![agent.to_string()]),
                        allowed_destinations: Some(vec![upstream.to_string()]),
                    }),
                }),
            )
            .await?;
        let minted: CreateTokenResponse = self
            .client
            .call(
                Method::POST,
                "/v1/tokens",
                Some(&CreateTokenRequest {
                    secret: "bench-gw/key".into(),
                    key: None,
                    spiffe_id: agent.to_string(),
                    destinations: Vec::new(),
                    ttl_seconds: 3600,
                    action: TokenAction::Read,
                    path_prefixes: Vec::new(),
                    locations: Vec::new(),
                    max_uses: None,
                }),
            )
            .await?;
        Ok(Provisioned {
            agent,
            gateway,
            token: minted.token,
        })
    }
}

/// Whether the gateway's `/readyz` on `health` answers 200.
async fn is_ready(health: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut conn) = tokio::net::TcpStream::connect(health).await else {
        return false;
    };
    let request = b"GET /readyz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n";
    let mut head = [0; 12];
    conn.write_all(request).await.is_ok()
        && conn.read_exact(&mut head).await.is_ok()
        && head.ends_with(b" 200")
}

/// Rate limits no load run reaches: the benchmark measures the gateway, not its limit.
pub(crate) fn unlimited() -> RateLimits {
    let rate = Rate {
        per_minute: u32::MAX,
        burst: u32::MAX,
    };
    RateLimits {
        agent: rate,
        unauthenticated: rate,
    }
}
