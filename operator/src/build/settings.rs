//! The settings files of every component, in the project's TOML format (the keys of
//! `docs/configuration.md`), which the ConfigMap carries. They hold addresses, the trust
//! domain, the identity source and scopes: never a secret (key material is never
//! configuration).

use std::fmt::Write as _;

use crate::crd::{GatewayRoute, GatewaySpec, TokenAction};

/// The Nexus data directory, on its PersistentVolumeClaim. The audit log is
/// `<data_dir>/audit.log`, on the same volume.
pub const NEXUS_DATA_DIR: &str = "/var/lib/spike";
/// The gateway's audit log directory (an emptyDir: see the gateway builder).
pub const GATEWAY_AUDIT_DIR: &str = "/var/lib/spike-gateway";
/// Where a route's upstream CA bundle is mounted: `<dir>/<route>/ca.pem`.
pub const GATEWAY_CA_DIR: &str = "/etc/spike-upstream-ca";
/// The file name of a mounted upstream CA bundle.
pub const GATEWAY_CA_FILE: &str = "ca.pem";
/// Where the settings ConfigMap is mounted.
pub const SETTINGS_DIR: &str = "/etc/spike";
/// The file names in the ConfigMap.
pub const NEXUS_FILE: &str = "nexus.toml";
/// The keepers' file.
pub const KEEPER_FILE: &str = "keeper.toml";
/// The bootstrap Job's file (the `spike` CLI's settings).
pub const BOOTSTRAP_FILE: &str = "bootstrap.toml";
/// The gateway's file.
pub const GATEWAY_FILE: &str = "gateway.toml";

/// A TOML document written key by key. Strings are written as JSON strings, whose escapes
/// (`\"`, `\\`, `\n`, `\uXXXX`, ...) are all valid in TOML basic strings.
#[derive(Default)]
struct Toml(String);

impl Toml {
    fn str(&mut self, key: &str, value: &str) -> &mut Self {
        let _ = writeln!(self.0, "{key} = {}", quote(value));
        self
    }

    fn strs(&mut self, key: &str, values: &[String]) -> &mut Self {
        let items: Vec<String> = values.iter().map(|v| quote(v)).collect();
        let _ = writeln!(self.0, "{key} = [{}]", items.join(", "));
        self
    }

    fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        let _ = writeln!(self.0, "{key} = {value}");
        self
    }

    fn table(&mut self, name: &str) -> &mut Self {
        let _ = writeln!(self.0, "\n[{name}]");
        self
    }

    /// One more table of the array `name` (`[[name]]`).
    fn array_table(&mut self, name: &str) -> &mut Self {
        let _ = writeln!(self.0, "\n[[{name}]]");
        self
    }

    /// A route's `rules`, an array of inline tables.
    fn rules(&mut self, rules: &[crate::crd::RouteRule]) -> &mut Self {
        let items: Vec<String> = rules
            .iter()
            .map(|r| {
                let action = match r.action {
                    TokenAction::Read => "read",
                    TokenAction::Write => "write",
                    TokenAction::Admin => "admin",
                };
                format!(
                    "{{ method = {}, path_prefix = {}, action = {} }}",
                    quote(r.method.as_deref().unwrap_or("")),
                    quote(&r.path_prefix),
                    quote(action)
                )
            })
            .collect();
        let _ = writeln!(self.0, "rules = [{}]", items.join(", "));
        self
    }

    fn route(&mut self, r: &GatewayRoute) -> &mut Self {
        self.array_table("routes")
            .str("name", &r.name)
            .str("upstream", &r.upstream)
            .rules(&r.rules)
            .strs("allow_networks", &r.allow_networks)
            .bool("allow_plain_http", r.allow_plain_http)
            .bool("substitute_in_body", r.substitute_in_body);
        if r.ca.is_some() {
            self.str("ca_file", &upstream_ca_file(&r.name));
        }
        self
    }

    fn identity(&mut self, trust_domain: &str, socket: &str) -> &mut Self {
        self.table("identity")
            .str("trust_domain", trust_domain)
            .str("spiffe_endpoint_socket", socket)
    }

    fn done(&mut self) -> String {
        std::mem::take(&mut self.0)
    }
}

fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// `host:port` on every interface.
fn any(port: u16) -> String {
    format!("0.0.0.0:{port}")
}

/// What the settings are made from.
pub struct SettingsInput<'a> {
    /// The trust domain.
    pub trust_domain: &'a str,
    /// The Workload API socket the SVID comes from (`unix:///…`).
    pub identity_socket: &'a str,
    /// Keeper addresses in keeper-id order.
    pub keepers: &'a [String],
    /// Nexus's API address.
    pub nexus: &'a str,
    /// The operator's path scope P (`<pathRoot>/**`).
    pub operator_path_scope: &'a str,
    /// The operator's SPIFFE-ID scope Q (`spiffe://<td>/<idRoot>/**`).
    pub operator_id_scope: &'a str,
}

/// Nexus: its keepers, its data on the volume, and the operator's scopes.
pub fn nexus(i: &SettingsInput<'_>) -> String {
    use crate::names::{NEXUS_API_PORT, NEXUS_HEALTH_PORT};
    Toml::default()
        .str("listen", &any(NEXUS_API_PORT))
        .str("health_listen", &any(NEXUS_HEALTH_PORT))
        .strs("keepers", i.keepers)
        .str("data_dir", NEXUS_DATA_DIR)
        .str("log_format", "json")
        .identity(i.trust_domain, i.identity_socket)
        .table("operator")
        .str("path_scope", i.operator_path_scope)
        .str("spiffe_id_scope", i.operator_id_scope)
        .done()
}

/// A keeper: it learns its id from its own SPIFFE ID, so every keeper reads the same file.
pub fn keeper(i: &SettingsInput<'_>) -> String {
    use crate::names::{KEEPER_API_PORT, KEEPER_HEALTH_PORT};
    Toml::default()
        .str("listen", &any(KEEPER_API_PORT))
        .str("health_listen", &any(KEEPER_HEALTH_PORT))
        .str("log_format", "json")
        .identity(i.trust_domain, i.identity_socket)
        .done()
}

/// The bootstrap Job's `spike` CLI: where Nexus is.
pub fn bootstrap(i: &SettingsInput<'_>) -> String {
    Toml::default()
        .str("nexus", i.nexus)
        .identity(i.trust_domain, i.identity_socket)
        .done()
}

/// Where the CA bundle of route `route` is mounted in the gateway's pod.
pub fn upstream_ca_file(route: &str) -> String {
    format!("{GATEWAY_CA_DIR}/{route}/{GATEWAY_CA_FILE}")
}

/// The gateway: where Nexus is, its audit log, and its routes.
pub fn gateway(i: &SettingsInput<'_>, spec: &GatewaySpec) -> String {
    use crate::names::{GATEWAY_HEALTH_PORT, GATEWAY_PORT};
    let mut t = Toml::default();
    t.str("listen", &any(GATEWAY_PORT))
        .str("health_listen", &any(GATEWAY_HEALTH_PORT))
        .str("nexus", i.nexus)
        .str("audit_log", &format!("{GATEWAY_AUDIT_DIR}/audit.log"))
        .str("log_format", "json")
        .bool("forward_proxy", spec.forward_proxy)
        .identity(i.trust_domain, i.identity_socket);
    for r in &spec.routes {
        t.route(r);
    }
    t.done()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn input<'a>(identity_socket: &'a str, keepers: &'a [String]) -> SettingsInput<'a> {
        SettingsInput {
            trust_domain: "spike.dev",
            identity_socket,
            keepers,
            nexus: "prod-nexus.spike.svc:8553",
            operator_path_scope: "k8s/**",
            operator_id_scope: "spiffe://spike.dev/ns/**",
        }
    }

    const SOCKET: &str = "unix:///run/spiffe/workload-api/agent.sock";

    fn keepers() -> Vec<String> {
        (1..=3)
            .map(|i| format!("prod-keeper-{i}.prod-keeper.spike.svc:8443"))
            .collect()
    }

    /// Writes `text` to a fresh file, for the components' own loaders.
    fn file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "spike-operator-settings-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn nexus_settings_parse_with_nexus_own_loader_and_pass_its_checks() {
        let ks = keepers();
        let text = nexus(&input(SOCKET, &ks));
        let path = file("nexus.toml", &text);
        let loaded = spike_nexus::config::spec()
            .load::<spike_nexus::NexusSettings>(Some(&path), &[], &[])
            .unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let s = loaded.config;
        assert_eq!(s.keepers, ks);
        assert_eq!(s.data_dir, Some(PathBuf::from(NEXUS_DATA_DIR)));
        assert_eq!(s.listen.port(), 8553);
        assert_eq!(s.health_listen.port(), 8554);
        assert_eq!(s.identity.trust_domain.as_str(), "spike.dev");
        assert_eq!(s.operator.path_scope, "k8s/**");
        assert_eq!(s.operator.spiffe_id_scope, "spiffe://spike.dev/ns/**");
        // Nexus's own checks: keepers, audit log on the data dir, the operator scope.
        s.into_runtime().unwrap();
    }

    #[test]
    fn keeper_settings_parse_with_the_keeper_loader() {
        let text = keeper(&input(SOCKET, &[]));
        let path = file("keeper.toml", &text);
        let s = spike_keeper::spec()
            .load::<spike_keeper::KeeperSettings>(Some(&path), &[], &[])
            .unwrap()
            .config;
        assert_eq!(s.listen.port(), 8443);
        assert_eq!(s.health_listen.port(), 8444);
        assert_eq!(
            s.identity.spiffe_endpoint_socket.as_deref(),
            Some("unix:///run/spiffe/workload-api/agent.sock")
        );
        s.check().unwrap();
    }

    #[test]
    fn bootstrap_settings_parse_with_the_cli_loader() {
        let text = bootstrap(&input(SOCKET, &[]));
        let path = file("bootstrap.toml", &text);
        let s = spike::settings::spec()
            .load::<spike::settings::CliSettings>(Some(&path), &[], &[])
            .unwrap()
            .config;
        assert_eq!(s.nexus, "prod-nexus.spike.svc:8553");
        assert_eq!(s.identity.spiffe_endpoint_socket.as_deref(), Some(SOCKET));
    }

    #[test]
    fn gateway_settings_parse_with_the_gateway_loader_and_pass_its_checks() {
        let plain: GatewaySpec = serde_json::from_value(serde_json::json!({})).unwrap();
        let text = gateway(&input(SOCKET, &[]), &plain);
        let path = file("gateway.toml", &text);
        let s = spike_gateway::config::spec()
            .load::<spike_gateway::config::GatewaySettings>(Some(&path), &[], &[])
            .unwrap()
            .config;
        assert_eq!(s.nexus, "prod-nexus.spike.svc:8553");
        assert!(s.routes.is_empty() && !s.forward_proxy);
        s.check().unwrap();
    }

    #[test]
    fn gateway_routes_reach_the_gateway_as_declared() {
        let spec: GatewaySpec = serde_json::from_value(serde_json::json!({
            "forwardProxy": true,
            "routes": [
                {"name": "groq", "upstream": "https://api.groq.com/openai/v1",
                 "rules": [{"method": "POST", "pathPrefix": "/chat/completions", "action": "read"},
                           {"pathPrefix": "/files", "action": "write"}]},
                {"name": "internal", "upstream": "http://llm.ai.svc:8080",
                 "allowNetworks": ["10.0.0.0/8"], "allowPlainHttp": true,
                 "substituteInBody": true, "ca": {"name": "ca", "key": "ca.pem"}}
            ]
        }))
        .unwrap();
        let text = gateway(&input(SOCKET, &[]), &spec);
        let path = file("gateway-routes.toml", &text);
        let s = spike_gateway::config::spec()
            .load::<spike_gateway::config::GatewaySettings>(Some(&path), &[], &[])
            .unwrap()
            .config;
        assert!(s.forward_proxy);
        let groq = &s.routes[0];
        assert_eq!(
            (groq.name.as_str(), groq.upstream.as_str()),
            ("groq", "https://api.groq.com/openai/v1")
        );
        assert_eq!(groq.rules.len(), 2);
        assert_eq!(
            (
                groq.rules[0].method.as_str(),
                groq.rules[0].path_prefix.as_str()
            ),
            ("POST", "/chat/completions")
        );
        assert_eq!(groq.rules[1].method, "");
        assert!(groq.ca_file.is_empty() && !groq.allow_plain_http);
        let internal = &s.routes[1];
        assert_eq!(internal.allow_networks, ["10.0.0.0/8"]);
        assert!(internal.allow_plain_http && internal.substitute_in_body);
        assert_eq!(internal.ca_file, "/etc/spike-upstream-ca/internal/ca.pem");
    }

    #[test]
    fn strings_are_escaped() {
        let doc = Toml::default().str("k", "a\"b\\c\n").done();
        assert_eq!(doc, "k = \"a\\\"b\\\\c\\n\"\n");
    }
}
