//! Nexus configuration: the runtime [`NexusConfig`], and the file format [`NexusSettings`]
//! with its flags ([`NexusArgs`]) and environment variables ([`spec`]).
//!
//! Every key, its environment variable, flag and default is listed in
//! `docs/configuration.md`; a test checks that page against these types.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spike_core::admin_scope::AdminScope;
use spike_core::id::TrustDomain;
use spike_core::path::{MAX_PATH_DEPTH_CEILING, MAX_PATH_LEN_CEILING, PathLimits};
use spike_runtime::config::service::ServerArgs;
use spike_runtime::config::{ConfigError, IdentityConfig, Spec};
use spike_runtime::net::ConnLimits;
use spike_runtime::svid::IdentityArgs;
use spike_runtime::telemetry::LogFormat;

use crate::ratelimit::RateLimits;
use crate::secrets::SecretLimits;

/// Everything Nexus needs to run besides its SVID source and listeners.
#[derive(Debug, Clone)]
pub struct NexusConfig {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Keeper API addresses; keeper `i` (1-based) is the `i`-th and must present
    /// `spiffe://<td>/spike/keeper/<i>`.
    pub keepers: Vec<String>,
    /// Persistent data directory (redb store). `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// The audit log file.
    pub audit_log: PathBuf,
    /// Audit log rotation, loss acceptance and refusal rate.
    pub audit: AuditSettings,
    /// Where audit checkpoints are shipped besides the store, if anywhere.
    pub audit_ship: Option<spike_runtime::audit_log::ShipTo>,
    /// How often keepers are polled (while sealed) and checked (while open).
    pub keeper_interval: Duration,
    /// Largest request body, bytes; larger answers `413 too_large`.
    pub max_body: usize,
    /// Secret limits.
    pub secret_limits: SecretLimits,
    /// Bounds on secret paths (length and depth); parse request paths with
    /// `SecretPath::parse_with(raw, &config.path_limits)`.
    pub path_limits: PathLimits,
    /// Most items in one `POST /v1/secrets/batch` (`413` beyond).
    pub max_batch_items: usize,
    /// Largest body of one batch request, bytes (`413` beyond); the batch route has its own
    /// limit instead of `max_body`.
    pub max_batch_bytes: usize,
    /// Per-caller rate limits on the expensive or sensitive routes.
    pub rate_limits: RateLimits,
    /// Connection limits of the mTLS API (timeouts, caps, header sizes, drain at shutdown).
    pub conn: ConnLimits,
    /// The Kubernetes operator's (`/spike/operator`) scope; `None` gives it nothing.
    pub operator_scope: Option<AdminScope>,
    /// Open a store at this generation even if it is older than the keepers remember (the
    /// rollback runbook).
    pub accept_store_generation: Option<u64>,
}

impl NexusConfig {
    /// A configuration with defaults for everything but the trust domain, keepers and audit log.
    pub fn new(trust_domain: TrustDomain, keepers: Vec<String>, audit_log: PathBuf) -> Self {
        let limits = LimitSettings::default();
        Self {
            trust_domain,
            keepers,
            data_dir: None,
            audit_log,
            audit: AuditSettings::default(),
            audit_ship: None,
            keeper_interval: Duration::from_secs(2),
            max_body: limits.max_body,
            secret_limits: SecretLimits::default(),
            path_limits: PathLimits::DEFAULT,
            max_batch_items: limits.max_batch_items,
            max_batch_bytes: limits.max_batch_bytes,
            rate_limits: RateLimits::default(),
            conn: ConnLimits::default(),
            operator_scope: None,
            accept_store_generation: None,
        }
    }
}

/// Addresses Nexus listens on.
#[derive(Debug, Clone, Copy)]
pub struct NexusAddrs {
    /// The mTLS API.
    pub api: SocketAddr,
    /// Plain-HTTP `/healthz`, `/readyz`, `/metrics`.
    pub health: SocketAddr,
}

/// The `spike-nexus` command line. Every flag overrides the configuration file and the
/// environment; `--set KEY=VALUE` reaches the keys without a flag of their own.
#[derive(Debug, clap::Parser)]
#[command(
    name = "spike-nexus",
    version,
    about = "SPIKE Nexus: the secret store. Starts sealed and opens itself once `threshold` \
             keepers hand back their shares of the root key.",
    after_help = "Configuration: --config FILE (or SPIKE_NEXUS_CONFIG), SPIKE_NEXUS_* variables and \
                  flags, in rising precedence. Every key: docs/configuration.md."
)]
pub struct NexusArgs {
    /// Identity, configuration and listener flags.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Keeper API addresses (host:port), in keeper-index order: the i-th must present
    /// spiffe://<td>/spike/keeper/<i>. Repeat the flag or separate with commas.
    #[arg(long = "keeper", value_name = "ADDR", value_delimiter = ',')]
    pub keepers: Vec<String>,
    /// Persistent data directory (redb). Without it, secrets live in memory only.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Audit log file [default: <data-dir>/audit.log; required without a data directory].
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// How often keepers are polled while sealed and checked while open.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub keeper_interval: Option<Duration>,
    /// Open a data directory at this store generation even though it is older than the
    /// keepers remember: give the generation the STORE ROLLED BACK refusal shows
    /// (docs/runbooks/data-directory-rolled-back.md). Remove it once Nexus is open.
    #[arg(long, value_name = "GENERATION")]
    pub accept_store_generation: Option<String>,
    /// Versions kept per secret.
    #[arg(id = "limits.max_versions", long = "max-versions", value_name = "N")]
    pub max_versions: Option<u32>,
    /// Accept, once, an audit log that does not reach its stored checkpoint: give the
    /// checkpoint's seq shown in the refusal (docs/runbooks/audit-log-loss.md).
    #[arg(
        id = "audit.accept_loss_at",
        long = "audit-accept-loss",
        value_name = "SEQ"
    )]
    pub audit_accept_loss: Option<u64>,
    /// Also ship signed audit checkpoints here: file:/PATH (appended, ideally on another
    /// volume) or syslog (or syslog:/SOCKET), at most once per audit.checkpoint_interval.
    /// `spike audit verify --checkpoints FILE` checks the log against them.
    #[arg(
        id = "audit.checkpoint_sink",
        long = "audit-checkpoint-sink",
        value_name = "SINK"
    )]
    pub audit_checkpoint_sink: Option<String>,
    /// The path pattern P within which the Kubernetes operator (spiffe://<td>/spike/operator)
    /// may write, delete, list and mint tokens, and create, replace and delete policies, e.g.
    /// "k8s/**". Set it with --operator-spiffe-id-scope; leave both unset to give the operator
    /// nothing. It is never a superuser: "**" is refused.
    #[arg(
        id = "operator.path_scope",
        long = "operator-path-scope",
        value_name = "PATTERN"
    )]
    pub operator_path_scope: Option<String>,
    /// The SPIFFE-ID pattern Q that every policy the operator writes must lie within, e.g.
    /// "spiffe://<td>/ns/**". A scope that can reach SPIKE's own IDs (spiffe://<td>/spike/...)
    /// is refused.
    #[arg(
        id = "operator.spiffe_id_scope",
        long = "operator-spiffe-id-scope",
        value_name = "PATTERN"
    )]
    pub operator_spiffe_id_scope: Option<String>,
}

/// The Nexus configuration file. Every key has a default; unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NexusSettings {
    /// mTLS API address.
    pub listen: SocketAddr,
    /// Plain-HTTP health and metrics address.
    pub health_listen: SocketAddr,
    /// Keeper API addresses, in keeper-index order.
    pub keepers: Vec<String>,
    /// Persistent data directory; empty keeps everything in memory.
    #[serde(with = "spike_runtime::config::opt_path")]
    pub data_dir: Option<PathBuf>,
    /// Audit log file; empty means `<data_dir>/audit.log`.
    #[serde(with = "spike_runtime::config::opt_path")]
    pub audit_log: Option<PathBuf>,
    /// Keeper poll interval.
    #[serde(with = "spike_runtime::config::duration")]
    pub keeper_interval: Duration,
    /// Log line format.
    #[serde(with = "spike_runtime::config::log_format")]
    pub log_format: LogFormat,
    /// Lock all memory (mlockall) before any key is held.
    pub mlock: bool,
    /// Open a store at this generation (a number) even if the keepers remember a newer one;
    /// empty accepts nothing.
    pub accept_store_generation: String,
    /// `[identity]`: where the SVID comes from.
    pub identity: IdentityConfig,
    /// `[server]`: connection limits of the mTLS API.
    pub server: ConnLimits,
    /// `[limits]`: request and secret limits.
    pub limits: LimitSettings,
    /// `[rate_limits.*]`: per-caller rate limits.
    pub rate_limits: RateLimits,
    /// `[audit]`: audit log rotation and loss acceptance.
    pub audit: AuditSettings,
    /// `[operator]`: the Kubernetes operator's scope.
    pub operator: OperatorSettings,
}

/// The `[operator]` section: what the Kubernetes operator (`/spike/operator`) may touch. Both
/// empty (the default) give it nothing; both set give it the data permissions of
/// [`spike_core::admin_scope::DATA_PERMISSIONS`] on `path_scope` and the administration of
/// the policies within both scopes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorSettings {
    /// The path scope P, e.g. `k8s/**`.
    pub path_scope: String,
    /// The SPIFFE-ID scope Q, e.g. `spiffe://<td>/ns/**`.
    pub spiffe_id_scope: String,
}

impl OperatorSettings {
    /// The checked scope, or `None` when both are empty.
    fn scope(&self, served: &TrustDomain) -> Result<Option<AdminScope>, ConfigError> {
        match (self.path_scope.is_empty(), self.spiffe_id_scope.is_empty()) {
            (true, true) => Ok(None),
            (false, false) => AdminScope::parse(&self.path_scope, &self.spiffe_id_scope, served)
                .map(Some)
                .map_err(|e| ConfigError::invalid(format!("operator: {e}"))),
            _ => Err(ConfigError::invalid(
                "set both operator.path_scope and operator.spiffe_id_scope, or neither",
            )),
        }
    }
}

/// The `[audit]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Rotate the live audit file once it holds this many bytes.
    pub max_file_bytes: u64,
    /// Accept a log that does not reach the stored checkpoint whose seq is this; 0 accepts
    /// nothing (the empty log's checkpoint cannot be lost).
    pub accept_loss_at: u64,
    /// Second sink of signed checkpoints (`file:/PATH`, `syslog`, `syslog:/SOCKET`); empty
    /// ships none.
    pub checkpoint_sink: String,
    /// Least time between two shipped checkpoints.
    #[serde(with = "spike_runtime::config::duration")]
    pub checkpoint_interval: Duration,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            max_file_bytes: crate::audit_log::DEFAULT_MAX_FILE_BYTES,
            accept_loss_at: 0,
            checkpoint_sink: String::new(),
            checkpoint_interval: Duration::from_secs(60),
        }
    }
}

impl AuditSettings {
    /// The checked second sink, if one is set.
    fn ship(&self) -> Result<Option<spike_runtime::audit_log::ShipTo>, ConfigError> {
        if self.checkpoint_sink.is_empty() {
            return Ok(None);
        }
        let sink = self
            .checkpoint_sink
            .parse()
            .map_err(|e| ConfigError::invalid(format!("audit.checkpoint_sink: {e}")))?;
        Ok(Some(spike_runtime::audit_log::ShipTo {
            sink,
            every: self.checkpoint_interval,
        }))
    }
}

impl Default for NexusSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8553)),
            health_listen: SocketAddr::from(([0, 0, 0, 0], 8554)),
            keepers: Vec::new(),
            data_dir: None,
            audit_log: None,
            keeper_interval: Duration::from_secs(2),
            log_format: LogFormat::Text,
            mlock: false,
            accept_store_generation: String::new(),
            identity: IdentityConfig::default(),
            server: ConnLimits::default(),
            limits: LimitSettings::default(),
            rate_limits: RateLimits::default(),
            audit: AuditSettings::default(),
            operator: OperatorSettings::default(),
        }
    }
}

/// The `[limits]` section: request and secret limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Largest request body, bytes (`413`).
    pub max_body: usize,
    /// Most keys in one secret (`413`).
    pub max_keys: usize,
    /// Longest key name in a secret, bytes (`400`).
    pub max_key_len: usize,
    /// Largest value of one key, bytes (`413`).
    pub max_value_len: usize,
    /// Versions kept per secret; older ones are dropped.
    pub max_versions: u32,
    /// Most entries in one list page; larger requested pages are cut to this.
    pub max_page: usize,
    /// Longest secret path, bytes (`400 invalid_path`).
    pub max_path_len: usize,
    /// Most segments in a secret path (`400 invalid_path`).
    pub max_path_depth: usize,
    /// Most items in one batch write (`413`).
    pub max_batch_items: usize,
    /// Largest body of one batch write, bytes (`413`).
    pub max_batch_bytes: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        let s = SecretLimits::default();
        Self {
            max_body: 1 << 20,
            max_keys: s.max_keys,
            max_key_len: s.max_key_len,
            max_value_len: s.max_value_len,
            max_versions: s.max_versions,
            max_page: s.max_page,
            max_path_len: PathLimits::DEFAULT.max_len(),
            max_path_depth: PathLimits::DEFAULT.max_depth(),
            max_batch_items: 500,
            max_batch_bytes: 4 << 20,
        }
    }
}

/// How the Nexus keys map to environment variables. `SPIKE_NEXUS_ADDR` starts with the
/// Nexus prefix but is the `spike` CLI's.
pub fn spec() -> Spec {
    Spec::service("spike-nexus", "SPIKE_NEXUS_")
        .env_alias("limits.max_versions", "SPIKE_NEXUS_MAX_VERSIONS")
        .path("data_dir")
        .path("audit_log")
        .foreign_env("SPIKE_NEXUS_ADDR")
}

/// A checked configuration, ready to start Nexus.
#[derive(Debug)]
pub struct Runtime {
    /// What Nexus runs with.
    pub config: NexusConfig,
    /// Where it listens.
    pub addrs: NexusAddrs,
    /// Where its SVID comes from.
    pub identity: IdentityArgs,
    /// Log format.
    pub log_format: LogFormat,
    /// Lock all memory before any key is held.
    pub mlock: bool,
}

fn positive(name: &str, v: usize) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(ConfigError::invalid(format!("{name} must be at least 1")));
    }
    Ok(())
}

impl NexusSettings {
    /// Checks every value and builds the runtime configuration.
    pub fn into_runtime(self) -> Result<Runtime, ConfigError> {
        if self.keepers.is_empty() || self.keepers.len() > 255 {
            return Err(ConfigError::invalid(
                "configure between 1 and 255 keepers: --keeper ADDR (repeat it), \
                 SPIKE_NEXUS_KEEPERS=a,b,c or `keepers = [...]` in the configuration file",
            ));
        }
        let audit_log = match (&self.audit_log, &self.data_dir) {
            (Some(p), _) => p.clone(),
            (None, Some(d)) => d.join("audit.log"),
            (None, None) => {
                return Err(ConfigError::invalid(
                    "give an audit log (--audit-log or `audit_log`), or a data directory \
                     (--data-dir or `data_dir`), which holds it",
                ));
            }
        };
        if self.keeper_interval.is_zero() {
            return Err(ConfigError::invalid(
                "keeper_interval must be longer than zero",
            ));
        }
        self.server.validate().map_err(ConfigError::Invalid)?;
        let l = self.limits;
        positive("limits.max_body", l.max_body)?;
        positive("limits.max_keys", l.max_keys)?;
        positive("limits.max_key_len", l.max_key_len)?;
        positive("limits.max_value_len", l.max_value_len)?;
        positive("limits.max_page", l.max_page)?;
        positive("limits.max_batch_items", l.max_batch_items)?;
        positive("limits.max_batch_bytes", l.max_batch_bytes)?;
        positive(
            "limits.max_versions",
            usize::try_from(l.max_versions).unwrap_or(usize::MAX),
        )?;
        let path_limits = PathLimits::new(l.max_path_len, l.max_path_depth).map_err(|_| {
            ConfigError::invalid(format!(
                "limits.max_path_len must be 1 to {MAX_PATH_LEN_CEILING} and \
                 limits.max_path_depth 1 to {MAX_PATH_DEPTH_CEILING}"
            ))
        })?;
        for (name, rate) in [
            ("cipher", self.rate_limits.cipher),
            ("resolve", self.rate_limits.resolve),
            ("restore", self.rate_limits.restore),
            ("recover", self.rate_limits.recover),
            ("refused", self.rate_limits.refused),
        ] {
            rate.validate(&format!("rate_limits.{name}"))?;
        }
        crate::audit_log::check_max_file_bytes("audit.max_file_bytes", self.audit.max_file_bytes)?;
        let audit_ship = self.audit.ship()?;
        let accept_store_generation = match self.accept_store_generation.trim() {
            "" => None,
            n => Some(n.parse::<u64>().map_err(|_| {
                ConfigError::invalid(format!(
                    "accept_store_generation must be a store generation (a whole number), not {n:?}"
                ))
            })?),
        };
        let identity = self.identity.to_args()?;
        let operator_scope = self.operator.scope(&self.identity.trust_domain)?;
        let config = NexusConfig {
            trust_domain: self.identity.trust_domain.clone(),
            keepers: self.keepers,
            data_dir: self.data_dir,
            audit_log,
            audit: self.audit,
            audit_ship,
            keeper_interval: self.keeper_interval,
            max_body: l.max_body,
            secret_limits: SecretLimits {
                max_keys: l.max_keys,
                max_key_len: l.max_key_len,
                max_value_len: l.max_value_len,
                max_versions: l.max_versions,
                max_page: l.max_page,
            },
            path_limits,
            max_batch_items: l.max_batch_items,
            max_batch_bytes: l.max_batch_bytes,
            rate_limits: self.rate_limits,
            conn: self.server,
            operator_scope,
            accept_store_generation,
        };
        Ok(Runtime {
            config,
            addrs: NexusAddrs {
                api: self.listen,
                health: self.health_listen,
            },
            identity,
            log_format: self.log_format,
            mlock: self.mlock,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use spike_runtime::config::Loaded;

    #[test]
    fn defaults_match_the_runtime_defaults() {
        let mut s = NexusSettings {
            keepers: vec!["k:1".into()],
            data_dir: Some("/d".into()),
            ..NexusSettings::default()
        };
        let rt = s.clone().into_runtime().unwrap();
        let new = NexusConfig::new(
            rt.config.trust_domain.clone(),
            vec!["k:1".into()],
            "/d/audit.log".into(),
        );
        assert_eq!(rt.config.max_body, new.max_body);
        assert_eq!(rt.config.path_limits, new.path_limits);
        assert_eq!(rt.config.rate_limits, new.rate_limits);
        assert_eq!(rt.config.conn, new.conn);
        assert_eq!(rt.config.keeper_interval, new.keeper_interval);
        let d = SecretLimits::default();
        let got = rt.config.secret_limits;
        assert_eq!(
            (
                got.max_keys,
                got.max_key_len,
                got.max_value_len,
                got.max_versions,
                got.max_page
            ),
            (
                d.max_keys,
                d.max_key_len,
                d.max_value_len,
                d.max_versions,
                d.max_page
            )
        );
        assert_eq!(rt.config.audit_log, PathBuf::from("/d/audit.log"));
        // Without a data dir and audit log, or without keepers: a clear refusal.
        s.data_dir = None;
        assert!(s.clone().into_runtime().is_err());
        s.audit_log = Some("/a.log".into());
        assert!(s.clone().into_runtime().is_ok());
        s.keepers.clear();
        let e = s.into_runtime().unwrap_err().to_string();
        assert!(e.contains("--keeper"), "{e}");
    }

    #[test]
    fn an_accepted_store_generation_is_a_whole_number_or_nothing() {
        let with = |v: &str| NexusSettings {
            keepers: vec!["k:1".into()],
            audit_log: Some("/a.log".into()),
            accept_store_generation: v.into(),
            ..NexusSettings::default()
        };
        assert_eq!(
            with("")
                .into_runtime()
                .unwrap()
                .config
                .accept_store_generation,
            None
        );
        assert_eq!(
            with(" 17 ")
                .into_runtime()
                .unwrap()
                .config
                .accept_store_generation,
            Some(17)
        );
        for bad in ["-1", "latest", "1e3"] {
            let e = with(bad).into_runtime().unwrap_err().to_string();
            assert!(e.contains("accept_store_generation"), "{e}");
        }
    }

    #[test]
    fn out_of_range_limits_are_refused() {
        let base = NexusSettings {
            keepers: vec!["k:1".into()],
            audit_log: Some("/a.log".into()),
            ..NexusSettings::default()
        };
        type Change = Box<dyn Fn(&mut NexusSettings)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "max_header_bytes",
                Box::new(|s| s.server.max_header_bytes = 100),
            ),
            (
                "max_connections",
                Box::new(|s| s.server.max_connections = 0),
            ),
            (
                "idle_timeout",
                Box::new(|s| s.server.idle_timeout = Duration::ZERO),
            ),
            ("max_body", Box::new(|s| s.limits.max_body = 0)),
            ("max_versions", Box::new(|s| s.limits.max_versions = 0)),
            (
                "max_path_len",
                Box::new(|s| s.limits.max_path_len = 100_000),
            ),
            (
                "rate_limits.cipher",
                Box::new(|s| s.rate_limits.cipher.burst = 0),
            ),
        ];
        for (name, change) in cases {
            let mut s = base.clone();
            change(&mut s);
            let e = s.into_runtime().unwrap_err().to_string();
            assert!(e.contains(name), "{name}: {e}");
        }
    }

    #[test]
    fn a_file_sets_every_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nexus.toml");
        std::fs::write(
            &path,
            r#"
keepers = ["127.0.0.1:1", "127.0.0.1:2"]
data_dir = "/var/lib/spike"
keeper_interval = "500ms"
log_format = "json"

[identity]
trust_domain = "example.org"

[server]
idle_timeout = "5s"
max_header_bytes = 16384

[limits]
max_body = 4096
max_path_depth = 4

[rate_limits.cipher]
per_minute = 60

[operator]
path_scope = "k8s/**"
spiffe_id_scope = "spiffe://example.org/ns/**"
"#,
        )
        .unwrap();
        let loaded: Loaded<NexusSettings> = spec().load(Some(&path), &[], &[]).unwrap();
        let rt = loaded.config.into_runtime().unwrap();
        assert_eq!(rt.config.keepers.len(), 2);
        assert_eq!(
            rt.config.audit_log,
            PathBuf::from("/var/lib/spike/audit.log")
        );
        assert_eq!(rt.config.keeper_interval, Duration::from_millis(500));
        assert_eq!(rt.log_format, LogFormat::Json);
        assert_eq!(rt.config.trust_domain.as_str(), "example.org");
        assert_eq!(rt.config.conn.idle_timeout, Duration::from_secs(5));
        assert_eq!(rt.config.conn.max_header_bytes, 16384);
        assert_eq!(rt.config.max_body, 4096);
        assert_eq!(rt.config.path_limits.max_depth(), 4);
        // A partial rate keeps the class's other default.
        assert_eq!(rt.config.rate_limits.cipher.per_minute, 60);
        assert_eq!(
            rt.config.rate_limits.cipher.burst,
            RateLimits::default().cipher.burst
        );
        let scope = rt.config.operator_scope.unwrap();
        assert_eq!(scope.path_scope().as_str(), "k8s/**");
        assert_eq!(scope.id_scope().as_str(), "spiffe://example.org/ns/**");
    }

    #[test]
    fn the_operator_scope_is_off_by_default_and_refused_when_unsound() {
        let base = NexusSettings {
            keepers: vec!["k:1".into()],
            audit_log: Some("/a.log".into()),
            ..NexusSettings::default()
        };
        assert!(
            base.clone()
                .into_runtime()
                .unwrap()
                .config
                .operator_scope
                .is_none()
        );
        let td = base.identity.trust_domain.to_string();
        for (paths, ids, expect) in [
            ("k8s/**", "", "or neither"),
            ("", &*format!("spiffe://{td}/ns/**"), "or neither"),
            ("**", &*format!("spiffe://{td}/ns/**"), "matches every path"),
            (
                "k8s/**",
                &*format!("spiffe://{td}/**"),
                "SPIKE's own identities",
            ),
            (
                "k8s/**",
                &*format!("spiffe://{td}/spike/**"),
                "SPIKE's own identities",
            ),
            ("k8s/**", "spiffe://evil.dev/ns/**", "trust domain"),
            (
                "/k8s",
                &*format!("spiffe://{td}/ns/**"),
                "invalid path scope",
            ),
        ] {
            let mut s = base.clone();
            s.operator = OperatorSettings {
                path_scope: paths.into(),
                spiffe_id_scope: ids.into(),
            };
            let e = s.into_runtime().unwrap_err().to_string();
            assert!(e.contains(expect), "{paths} {ids}: {e}");
        }
    }
}
