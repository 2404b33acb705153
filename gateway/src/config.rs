//! `spike-gateway`'s settings: its command line, its settings file and their checks.
//!
//! Routes live in the settings file as `[[routes]]` tables:
//!
//! ```toml
//! [[routes]]
//! name = "groq"
//! upstream = "https://api.groq.com/openai/v1"
//! rules = [{ method = "POST", path_prefix = "/chat/completions", action = "read" }]
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use spike_core::id::SpiffeId;
use spike_core::token::Destination;
use spike_runtime::audit_log::{self, Durability, WriterOptions};
use spike_runtime::config::service::ServerArgs;
use spike_runtime::config::{ConfigError, IdentityConfig, Spec};
use spike_runtime::net::ConnLimits;
use spike_runtime::telemetry::LogFormat;

use crate::egress::{AddressPolicy, RoutePolicy, tls};
use crate::proxy::{ProxyLimits, Route};
use crate::ratelimit::RateLimits;
use crate::route::ActionRule;

/// The `spike-gateway` command line. Every flag overrides the configuration file and the
/// environment; `--set KEY=VALUE` reaches the keys without a flag of their own.
#[derive(Debug, clap::Parser)]
#[command(
    name = "spike-gateway",
    version,
    about = "SPIKE's egress gateway: agents send reference tokens, the gateway substitutes the real value last and scrubs it from responses.",
    after_help = "Configuration: --config FILE (or SPIKE_GATEWAY_CONFIG), SPIKE_GATEWAY_* variables and \
                  flags, in rising precedence. Every key: docs/configuration.md; routes: docs/gateway.md."
)]
pub struct GatewayArgs {
    /// Identity, configuration and listener flags.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Nexus address (host:port).
    #[arg(long, value_name = "ADDR")]
    pub nexus: Option<String>,
}

/// One route as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    /// `/r/<name>/…`.
    pub name: String,
    /// The upstream base URL: `https://host[:port][/base/path]`.
    pub upstream: String,
    /// Action rules, first match wins.
    #[serde(default)]
    pub rules: Vec<ActionRule>,
    /// Networks (CIDR) the upstream may resolve to beyond public addresses, e.g.
    /// `["127.0.0.1/32"]` for an upstream on this host.
    #[serde(default)]
    pub allow_networks: Vec<String>,
    /// A PEM file of the CA certificates the upstream's certificate must chain to (default:
    /// the system's roots).
    #[serde(default)]
    pub ca_file: String,
    /// Substitute into a plain `http://` upstream (only on a network you trust).
    #[serde(default)]
    pub allow_plain_http: bool,
    /// Look for tokens in request bodies too (for tokens whose binding allows `body`).
    #[serde(default)]
    pub substitute_in_body: bool,
}

impl RouteSettings {
    /// A route `name` to a plain-HTTP, OpenAI-style upstream at `upstream` on this host,
    /// whose chat completions are `read` (what `spike dev --gateway` and the benchmark use).
    pub fn loopback_chat(name: &str, upstream: SocketAddr) -> Self {
        Self {
            name: name.into(),
            upstream: format!("http://{upstream}"),
            rules: vec![ActionRule {
                method: "POST".into(),
                path_prefix: "/v1/chat/completions".into(),
                action: spike_core::token::TokenAction::Read,
            }],
            allow_networks: vec![format!("{}/32", upstream.ip())],
            ca_file: String::new(),
            // On this host: no network between the gateway and the upstream.
            allow_plain_http: true,
            substitute_in_body: false,
        }
    }
}

/// The gateway's settings file. Every key has a default; unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// Where agents connect: mTLS with their SVID, or plain HTTP on loopback in sidecar mode.
    pub listen: SocketAddr,
    /// Plain-HTTP health address.
    pub health_listen: SocketAddr,
    /// Nexus's address.
    pub nexus: String,
    /// Sidecar mode: the one agent SPIFFE ID this gateway serves, on a loopback `listen`
    /// without TLS. Empty: shared mode, every agent presents its SVID.
    pub sidecar_agent: String,
    /// Forward absolute-form requests (`GET https://host/...`) to public addresses, besides
    /// the named routes.
    pub forward_proxy: bool,
    /// Largest request body, bytes: every body is read whole and checked before it leaves.
    pub max_request_body: usize,
    /// How long a resolution may be reused (never for tokens with a use limit); a revocation
    /// takes effect within it. `0s`: every request asks Nexus.
    #[serde(with = "spike_runtime::config::duration")]
    pub resolve_cache: std::time::Duration,
    /// Log line format.
    #[serde(with = "spike_runtime::config::log_format")]
    pub log_format: LogFormat,
    /// `[identity]`: where the gateway's SVID comes from.
    pub identity: IdentityConfig,
    /// `[server]`: connection limits of the agent listener.
    pub server: ConnLimits,
    /// `[rate_limits]`: requests per agent, and of callers without a valid SVID together.
    pub rate_limits: RateLimits,
    /// The gateway's audit log (one chained line per decision). Required: the gateway
    /// serves nothing unaudited.
    #[serde(with = "spike_runtime::config::opt_path")]
    pub audit_log: Option<PathBuf>,
    /// `[audit]`: the audit log's rotation and syncing.
    pub audit: AuditSettings,
    /// `[[routes]]`.
    pub routes: Vec<RouteSettings>,
}

/// The `[audit]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Rotate the live audit file once it holds this many bytes.
    pub max_file_bytes: u64,
    /// Longest time a written line waits to be synced to disk (requests do not wait for
    /// it); `0s` makes every request wait for its line's `fdatasync`.
    #[serde(with = "spike_runtime::config::duration")]
    pub sync_interval: std::time::Duration,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            max_file_bytes: audit_log::DEFAULT_MAX_FILE_BYTES,
            sync_interval: std::time::Duration::from_millis(100),
        }
    }
}

/// Longest `audit.sync_interval`: it bounds what a machine crash can lose.
const MAX_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8480)),
            health_listen: SocketAddr::from(([0, 0, 0, 0], 8481)),
            nexus: "127.0.0.1:8553".into(),
            sidecar_agent: String::new(),
            forward_proxy: false,
            max_request_body: ProxyLimits::default().max_request_body,
            resolve_cache: std::time::Duration::from_secs(2),
            log_format: LogFormat::Text,
            identity: IdentityConfig::default(),
            server: ConnLimits {
                // Streams (SSE) may run for minutes; the head must still come quickly.
                idle_timeout: std::time::Duration::from_secs(300),
                ..ConnLimits::default()
            },
            rate_limits: RateLimits::default(),
            audit_log: None,
            audit: AuditSettings::default(),
            routes: Vec::new(),
        }
    }
}

/// How the gateway's keys map to environment variables.
pub fn spec() -> Spec {
    Spec::service("spike-gateway", "SPIKE_GATEWAY_").path("audit_log")
}

/// What the gateway starts with, checked.
#[derive(Debug)]
pub struct Checked {
    /// Agent and health addresses.
    pub listen: SocketAddr,
    /// Health address.
    pub health_listen: SocketAddr,
    /// Nexus's address.
    pub nexus: String,
    /// The sidecar's one agent, or `None` in shared mode.
    pub sidecar_agent: Option<SpiffeId>,
    /// The routes.
    pub routes: Vec<Route>,
    /// Forward-proxy egress, when enabled.
    pub forward: Option<RoutePolicy>,
    /// Proxy limits.
    pub limits: ProxyLimits,
    /// How long resolutions are reused.
    pub resolve_cache: std::time::Duration,
    /// The agent listener's limits.
    pub server: ConnLimits,
    /// Where the SVID comes from.
    pub identity: spike_runtime::svid::IdentityArgs,
    /// The audit log file.
    pub audit_log: PathBuf,
    /// How it is written.
    pub audit: WriterOptions,
}

impl GatewaySettings {
    /// Checks the settings.
    pub fn check(&self) -> Result<Checked, ConfigError> {
        self.server.validate().map_err(ConfigError::Invalid)?;
        self.rate_limits.validate()?;
        let sidecar_agent = match self.sidecar_agent.as_str() {
            "" => None,
            id => {
                let id = SpiffeId::new(id).map_err(|e| {
                    ConfigError::invalid(format!("sidecar_agent: not a SPIFFE ID: {e}"))
                })?;
                if !self.listen.ip().is_loopback() {
                    return Err(ConfigError::invalid(
                        "sidecar_agent is set, so agents connect without TLS: listen must be a loopback address (127.0.0.1:PORT)",
                    ));
                }
                Some(id)
            }
        };
        if self.resolve_cache > std::time::Duration::from_secs(60) {
            return Err(ConfigError::invalid(
                "resolve_cache is at most 1m: it bounds how long a revoked token keeps working",
            ));
        }
        let audit_log = self.audit_log.clone().ok_or_else(|| {
            ConfigError::invalid(
                "give an audit log (`audit_log`, SPIKE_GATEWAY_AUDIT_LOG): the gateway serves nothing unaudited",
            )
        })?;
        audit_log::check_max_file_bytes("audit.max_file_bytes", self.audit.max_file_bytes)?;
        if self.audit.sync_interval > MAX_SYNC_INTERVAL {
            return Err(ConfigError::invalid(
                "audit.sync_interval is at most 10s: it bounds what a machine crash can lose",
            ));
        }
        let audit = WriterOptions {
            max_file_bytes: self.audit.max_file_bytes,
            durability: if self.audit.sync_interval.is_zero() {
                Durability::Synced
            } else {
                Durability::Batched(self.audit.sync_interval)
            },
            ..WriterOptions::default()
        };
        if self.max_request_body == 0 {
            return Err(ConfigError::invalid("max_request_body must be at least 1"));
        }
        let mut system_roots = None;
        let mut roots = |ca_file: &str| -> Result<Arc<rustls::ClientConfig>, ConfigError> {
            let store = if ca_file.is_empty() {
                if system_roots.is_none() {
                    system_roots =
                        Some(tls::system_roots().map_err(|e| ConfigError::invalid(e.to_string()))?);
                }
                system_roots
                    .clone()
                    .unwrap_or_else(rustls::RootCertStore::empty)
            } else {
                tls::roots_from_pem_file(&PathBuf::from(ca_file))
                    .map_err(|e| ConfigError::invalid(e.to_string()))?
            };
            tls::client_config(store).map_err(|e| ConfigError::invalid(e.to_string()))
        };
        let mut routes = Vec::new();
        for r in &self.routes {
            if routes.iter().any(|x: &Route| x.name == r.name) {
                return Err(ConfigError::invalid(format!(
                    "routes: `{}` is defined twice",
                    r.name
                )));
            }
            routes.push(route(r, &mut roots)?);
        }
        let forward = if self.forward_proxy {
            Some(RoutePolicy {
                addresses: AddressPolicy::default(),
                tls: roots("")?,
            })
        } else {
            None
        };
        Ok(Checked {
            listen: self.listen,
            health_listen: self.health_listen,
            nexus: self.nexus.clone(),
            sidecar_agent,
            routes,
            forward,
            limits: ProxyLimits {
                max_request_body: self.max_request_body,
                rate: self.rate_limits,
                ..ProxyLimits::default()
            },
            resolve_cache: self.resolve_cache,
            server: self.server,
            identity: self.identity.to_args()?,
            audit_log,
            audit,
        })
    }
}

fn route(
    r: &RouteSettings,
    roots: &mut impl FnMut(&str) -> Result<Arc<rustls::ClientConfig>, ConfigError>,
) -> Result<Route, ConfigError> {
    let bad = |what: String| ConfigError::invalid(format!("route `{}`: {what}", r.name));
    let valid_name = !r.name.is_empty()
        && r.name.len() <= 64
        && r.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !valid_name {
        return Err(bad("the name must be 1 to 64 of A-Z a-z 0-9 . _ -".into()));
    }
    let uri: http::Uri = r
        .upstream
        .parse()
        .map_err(|_| bad(format!("upstream `{}` is not a URL", r.upstream)))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(bad("upstream must start with https:// (or http://)".into())),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| bad("upstream has no host".into()))?;
    if authority.as_str().contains('@') || uri.query().is_some() {
        return Err(bad(
            "upstream must be scheme://host[:port][/path], without user or query".into(),
        ));
    }
    let default_port = if tls { 443 } else { 80 };
    let dest = Destination::parse(&format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(default_port)
    ))
    .map_err(|e| bad(e.to_string()))?;
    let allowed = r
        .allow_networks
        .iter()
        .map(|n| {
            n.parse::<ipnet::IpNet>()
                .or_else(|_| n.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| bad(format!("allow_networks: `{n}` is not a CIDR network")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for rule in &r.rules {
        if !rule.path_prefix.starts_with('/') {
            return Err(bad(format!(
                "rule path_prefix `{}` must start with /",
                rule.path_prefix
            )));
        }
        if !rule.method.is_empty() && http::Method::from_bytes(rule.method.as_bytes()).is_err() {
            return Err(bad(format!(
                "rule method `{}` is not an HTTP method",
                rule.method
            )));
        }
    }
    Ok(Route {
        name: r.name.clone(),
        tls,
        host: dest.host().to_owned(),
        port: dest.port(),
        base_path: uri.path().trim_end_matches('/').to_owned(),
        rules: r.rules.clone(),
        policy: RoutePolicy {
            addresses: AddressPolicy { allowed },
            // Plain-HTTP routes verify nothing; no trust store is loaded for them.
            tls: if tls {
                roots(&r.ca_file)?
            } else {
                tls::client_config(rustls::RootCertStore::empty())
                    .map_err(|e| ConfigError::invalid(e.to_string()))?
            },
        },
        allow_plain_http: r.allow_plain_http,
        substitute_in_body: r.substitute_in_body,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn with_route(r: RouteSettings) -> GatewaySettings {
        GatewaySettings {
            routes: vec![r],
            ..audited()
        }
    }

    fn audited() -> GatewaySettings {
        GatewaySettings {
            audit_log: Some("gw-audit.log".into()),
            ..GatewaySettings::default()
        }
    }

    #[test]
    fn the_audit_log_is_required_and_its_settings_bounded() {
        let e = GatewaySettings::default().check().unwrap_err().to_string();
        assert!(e.contains("audit_log"), "{e}");
        let c = audited().check().unwrap();
        assert_eq!(
            c.audit.durability,
            Durability::Batched(std::time::Duration::from_millis(100))
        );
        let mut s = audited();
        s.audit.sync_interval = std::time::Duration::ZERO;
        assert_eq!(s.check().unwrap().audit.durability, Durability::Synced);
        s.audit.sync_interval = std::time::Duration::from_secs(11);
        assert!(s.check().unwrap_err().to_string().contains("sync_interval"));
        s.audit.sync_interval = std::time::Duration::from_secs(1);
        s.audit.max_file_bytes = 10;
        assert!(
            s.check()
                .unwrap_err()
                .to_string()
                .contains("max_file_bytes")
        );
    }

    fn route(upstream: &str) -> RouteSettings {
        RouteSettings {
            name: "llm".into(),
            upstream: upstream.into(),
            rules: Vec::new(),
            allow_networks: vec!["127.0.0.1".into()],
            ca_file: String::new(),
            allow_plain_http: true,
            substitute_in_body: false,
        }
    }

    #[test]
    fn routes_are_checked_and_normalized() {
        let c = with_route(route("http://LOCALHOST.:8080/v1/"))
            .check()
            .unwrap();
        let r = &c.routes[0];
        assert_eq!((r.host.as_str(), r.port, r.tls), ("localhost", 8080, false));
        assert_eq!(r.base_path, "/v1");
        for bad in [
            "ftp://x/",
            "https://u@x/",
            "https://x/?q=1",
            "not a url",
            "/path",
        ] {
            let e = with_route(route(bad)).check().unwrap_err().to_string();
            assert!(e.contains("route `llm`"), "{bad}: {e}");
        }
        let mut r = route("http://127.0.0.1:1/");
        r.allow_networks = vec!["10.0.0.0/33".into()];
        assert!(with_route(r).check().is_err());
        let mut s = with_route(route("http://127.0.0.1:1/"));
        s.routes.push(route("http://127.0.0.1:2/"));
        assert!(s.check().unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn a_sidecar_listens_on_loopback_only() {
        let mut s = GatewaySettings {
            sidecar_agent: "spiffe://poc.local/agents/a".into(),
            ..audited()
        };
        assert!(s.check().unwrap_err().to_string().contains("loopback"));
        s.listen = "127.0.0.1:8480".parse().unwrap();
        assert!(s.check().unwrap().sidecar_agent.is_some());
        s.sidecar_agent = "not-an-id".into();
        assert!(s.check().is_err());
    }
}
