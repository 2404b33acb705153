//! `spike dev --gateway`: the egress gateway beside the rest, in sidecar mode for one dev
//! agent, with a route to an OpenAI-style mock upstream on loopback that streams SSE and
//! accepts only the real key, so the whole late-binding path runs on one machine.
//!
//! It stores that key as the secret `dev/llm` (the dev agent may use it, tokens may go only
//! to the mock's address), lets the gateway resolve tokens under `dev/`, and prints the two
//! commands that mint a token and call the mock through the gateway with it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use http::Method;
use spike_core::api::{PutPolicyRequest, PutSecretRequest, ScopeUpdate};
use spike_core::id::{SpiffeId, TrustDomain};
use spike_core::policy::Permission;
use spike_core::secret::{SecretMap, SecretString};
use spike_gateway::config::{GatewaySettings, RouteSettings};
use spike_gateway::dev_upstream::DevUpstream;
use spike_runtime::svid::SvidSource;
use zeroize::Zeroizing;

use crate::client::{CliError, CliResult, Nexus};

/// The gateway's audit log, in the dev data directory (beside Nexus's).
pub const AUDIT_LOG: &str = "gateway-audit.log";

/// The secret holding the mock's key.
pub const SECRET: &str = "dev/llm";

/// What `spike dev` prints about the gateway.
#[derive(Debug)]
pub struct DevGateway {
    /// Agents connect here (plain HTTP on loopback: sidecar mode).
    pub listen: SocketAddr,
    /// The one agent it serves.
    pub agent: SpiffeId,
    /// The mock upstream.
    pub upstream: SocketAddr,
    /// The gateway's audit log.
    pub audit_log: PathBuf,
    /// The gateway's task.
    pub task: tokio::task::JoinHandle<()>,
}

/// The dev agent the sidecar gateway serves.
pub fn agent_id(td: &TrustDomain) -> CliResult<SpiffeId> {
    SpiffeId::new(&format!("spiffe://{td}/agents/dev")).map_err(|e| other(&e))
}

/// The dev gateway's own identity.
pub fn gateway_id(td: &TrustDomain) -> CliResult<SpiffeId> {
    SpiffeId::new(&format!("spiffe://{td}/spike/gateway/dev")).map_err(|e| other(&e))
}

/// Starts the mock upstream and the gateway on `listen`, auditing to `audit_log`, after
/// provisioning the secret and the gateway's policy through `admin` (a superuser client of
/// Nexus at `nexus_addr`).
pub async fn start(
    admin: &Nexus,
    nexus_addr: &str,
    td: &TrustDomain,
    listen: SocketAddr,
    audit_log: PathBuf,
    source: Arc<dyn SvidSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> CliResult<DevGateway> {
    let agent = agent_id(td)?;
    let mut raw = Zeroizing::new([0u8; 24]);
    spike_core::crypto::fill_random(&mut raw[..]).map_err(|e| other(&e))?;
    let key = Zeroizing::new(format!("sk-dev-{}", hex::encode(&raw[..])));
    let upstream = DevUpstream::new(key.clone())
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| other(&format!("cannot start the mock upstream: {e}")))?;
    // The gateway may resolve tokens of secrets under dev/.
    let policy = PutPolicyRequest {
        spiffe_id_pattern: gateway_id(td)?.to_string(),
        path_pattern: "dev/**".into(),
        permissions: vec![Permission::Resolve],
        create_only: false,
    };
    let _: serde_json::Value = admin
        .call(Method::PUT, "/v1/policies/dev-gateway", Some(&policy))
        .await?;
    let mut data = SecretMap::new();
    data.insert("value", SecretString::new(key.to_string()));
    let put = PutSecretRequest {
        data,
        cas: None,
        scope: Some(ScopeUpdate {
            ttl_seconds: None,
            allowed_spiffe_ids: Some(vec![agent.to_string()]),
            allowed_destinations: Some(vec![upstream.to_string()]),
        }),
    };
    let _: serde_json::Value = admin
        .call(
            Method::PUT,
            &format!("/v1/secrets/data/{SECRET}"),
            Some(&put),
        )
        .await?;
    let settings = GatewaySettings {
        listen,
        health_listen: SocketAddr::from((listen.ip(), listen.port().saturating_add(1))),
        nexus: nexus_addr.to_owned(),
        sidecar_agent: agent.to_string(),
        routes: vec![RouteSettings::loopback_chat("llm", upstream)],
        audit_log: Some(audit_log.clone()),
        ..GatewaySettings::default()
    };
    let checked = settings.check().map_err(|e| other(&e))?;
    let (bound, task) = spike_gateway::server::start(checked, source, shutdown)
        .await
        .map_err(|e| other(&e))?;
    Ok(DevGateway {
        listen: bound.listen,
        agent,
        upstream,
        audit_log,
        task,
    })
}

impl DevGateway {
    /// The lines `spike dev` prints.
    pub fn instructions(&self) -> String {
        format!(
            "Gateway (sidecar mode, for agent {agent}): http://{listen}/r/llm/ -> a mock LLM at {up} that accepts only the key in {SECRET}.\n\
             \n  TOKEN=$(spike token create --secret {SECRET} --spiffe-id {agent} --ttl 30m --action read)\n  \
             curl -sN http://{listen}/r/llm/v1/chat/completions -H \"Authorization: Bearer $TOKEN\" -d '{{\"stream\":true}}'\n\
             \nIts audit log (one chained line per decision): spike audit verify --file {log}\n",
            agent = self.agent,
            listen = self.listen,
            up = self.upstream,
            log = self.audit_log.display(),
        )
    }
}

fn other(e: &dyn std::fmt::Display) -> CliError {
    CliError::Other(anyhow::anyhow!("{e}"))
}
