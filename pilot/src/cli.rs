//! Command-line definitions (clap). Parsing only; behaviour lives in `commands/`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use spike_runtime::svid::IdentityArgs;

/// SPIKE: a SPIFFE-native secrets manager.
///
/// Every call authenticates with this process's X.509-SVID (from the SPIFFE Workload API at
/// $SPIFFE_ENDPOINT_SOCKET, or PEM files) over mutual TLS; Nexus authorizes by SPIFFE ID.
/// Start a local system with `spike dev`, then paste the `export` lines it prints.
#[derive(Debug, Parser)]
#[command(name = "spike", version)]
#[command(
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 not found (or deleted), 4 forbidden, \
5 unavailable or sealed, 6 conflict (compare-and-set failed, or the name exists). \
Logs go to stderr at level warn (RUST_LOG changes it). Details: docs/cli.md."
)]
pub struct Cli {
    /// Global options.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command (optional only so that `spike --print-config` works on its own).
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// Parses a command line and records which configuration flags were typed on it: the
    /// loader needs that besides the values, since a clap default or environment value must
    /// not beat the configuration file.
    pub fn try_parse_recording<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut cmd = crate::settings::command()
            .map_err(|e| clap::Error::raw(clap::error::ErrorKind::InvalidValue, e))?;
        let matches = cmd.try_get_matches_from_mut(args)?;
        let mut cli = <Self as clap::FromArgMatches>::from_arg_matches(&matches)
            .map_err(|e| e.format(&mut cmd))?;
        cli.global.given = crate::settings::GivenFlags::from_matches(&cmd, &matches)
            .map_err(|e| cmd.error(clap::error::ErrorKind::InvalidValue, e))?;
        Ok(cli)
    }
}

/// Options every command takes. They are the command line only: the effective settings
/// (with the configuration file) come from [`crate::settings::load`], and the defaults
/// `--help` shows from [`crate::settings::CliSettings`]'s `Default`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Which of the flags below were typed (not defaulted or taken from the environment);
    /// filled in by [`Cli::try_parse_recording`].
    #[arg(skip)]
    pub given: crate::settings::GivenFlags,
    /// TOML configuration file (see docs/configuration.md); also `SPIKE_CLI_CONFIG` (never a
    /// service's `SPIKE_CONFIG`). Environment variables and flags override it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long, global = true)]
    pub print_config: bool,
    /// Set any configuration key, e.g. `--set timeout=1m`; repeatable.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Nexus address (host:port; https://host:port is accepted too).
    #[arg(long, global = true, env = "SPIKE_NEXUS_ADDR", value_name = "ADDR")]
    pub nexus: Option<String>,
    /// Output format of every command that prints a result (not `dev` or `completions`;
    /// `cipher` takes only json).
    #[arg(short, long, global = true, value_enum)]
    pub output: Option<Output>,
    /// Identity flags.
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Per-request timeout.
    #[arg(long, global = true, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// For scripts: one JSON document.
    Json,
    /// For scripts and people: one YAML document (same fields as JSON).
    Yaml,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read and write secrets.
    #[command(subcommand)]
    Secret(SecretCmd),
    /// Manage access policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Check the audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Mint, list, inspect and revoke reference tokens: opaque stand-ins for a secret that an
    /// agent can hold instead of the credential (a gateway puts the value in).
    #[command(subcommand)]
    Token(crate::commands::token::TokenCmd),
    /// Encrypt and decrypt data with Nexus's cipher key (for workloads that keep their own data).
    #[command(subcommand)]
    Cipher(crate::commands::cipher::CipherCmd),
    /// Root-key operations: break-glass recover/restore, rotate, rekey.
    #[command(subcommand)]
    Operator(crate::commands::operator::OperatorCmd),
    /// Initialize a new system once: Nexus creates the root key and hands its shares to the
    /// keepers. Safe to run again: against an initialized system it changes nothing, exits 0.
    Bootstrap(BootstrapArgs),
    /// Show whether Nexus is initialized and unsealed, and who you are to it.
    Status,
    /// Run a complete local system (dev agent, Nexus, 3 keepers, bootstrap) in the foreground.
    Dev(DevArgs),
    /// Write the secrets and policies of a YAML seed file; idempotent (see docs/seeding.md).
    Seed(SeedArgs),
    /// Copy secrets from another secrets manager into SPIKE.
    #[command(subcommand)]
    Import(ImportCmd),
    /// Print a shell completion script: `source <(spike completions bash)`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Show this CLI's version and build, and Nexus's when it is reachable.
    Version,
}

/// `spike seed`
#[derive(Debug, Args)]
pub struct SeedArgs {
    /// The seed file (YAML; `-` reads stdin). Schema: docs/seeding.md.
    #[arg(short, long)]
    pub file: PathBuf,
    /// How the items are written.
    #[command(flatten)]
    pub upload: UploadArgs,
}

/// How `spike seed` and `spike import` write what they read: in batches, several at once.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// Only show what would change (create, update, unchanged per item); write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print only failures: no line per item and no summary (the exit code still says whether
    /// everything was applied).
    #[arg(short, long)]
    pub quiet: bool,
    /// No progress line (shown on a terminal's stderr for 10,000 secrets or more), with or
    /// without --quiet.
    #[arg(long)]
    pub no_progress: bool,
    /// Secrets per batch request (Nexus refuses more than its `max_batch_items`, 500 by default).
    #[arg(long, default_value_t = spike_core::api::DEFAULT_MAX_BATCH_ITEMS, value_parser = at_least_one())]
    pub batch_size: usize,
    /// Batch requests in flight at once (over one pooled client; HTTP/2 carries them on one connection).
    #[arg(long, default_value_t = 4, value_parser = at_least_one())]
    pub parallel: usize,
}

/// A secret path, checked here so a typo is a usage error, not a failed request. Lengths
/// are left to Nexus (its limits are configurable), only the characters are checked.
fn secret_path(s: &str) -> Result<String, spike_core::path::PathError> {
    spike_core::path::SecretPath::parse_with(s, &spike_core::path::PathLimits::CEILING)
        .map(|p| p.as_str().to_owned())
}

/// A list prefix; a trailing `/` (a habit from other tools) is accepted and dropped.
fn path_prefix(s: &str) -> Result<String, spike_core::path::PathError> {
    let trimmed = s.strip_suffix('/').filter(|t| !t.is_empty()).unwrap_or(s);
    secret_path(trimmed)
}

/// One SPIFFE ID, checked here.
fn spiffe_id(s: &str) -> Result<String, spike_core::id::IdError> {
    spike_core::id::SpiffeId::new(s).map(|id| id.to_string())
}

/// `NAME=SPIFFE_ID` of `spike dev --workload`.
fn dev_workload(s: &str) -> Result<(String, String), String> {
    let (name, id) = s
        .split_once('=')
        .ok_or("write NAME=SPIFFE_ID, e.g. frontend=spiffe://spike.dev/ns/web/sa/frontend")?;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "workload name `{name}`: use only A-Z, a-z, 0-9, '.', '_' and '-'"
        ));
    }
    let id = spike_core::id::SpiffeId::new(id).map_err(|e| e.to_string())?;
    if spike_core::policy::CallerClass::of(&id) != spike_core::policy::CallerClass::Workload {
        return Err(format!(
            "{id} is one of SPIKE's own identities (under /spike), not a workload"
        ));
    }
    Ok((name.to_owned(), id.to_string()))
}

/// A policy name, checked here like a path.
fn policy_name(s: &str) -> Result<String, spike_core::policy::PolicyError> {
    spike_core::policy::PolicyName::new(s).map(|n| n.to_string())
}

/// A count that must be at least 1 (clap refuses 0 as a usage error, exit status 2).
fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

/// `spike import ...`
#[derive(Debug, Subcommand)]
pub enum ImportCmd {
    /// Import an OpenBao or HashiCorp Vault KV version 2 mount, with its versions.
    ///
    /// Reads every secret under --prefix, every version that still exists, oldest first, and
    /// writes them to the same paths in SPIKE (under --into if given). A secret that already
    /// exists in SPIKE only gets the source's current version, and only if it differs, so
    /// running the import again changes nothing. The token comes from BAO_TOKEN or VAULT_TOKEN.
    /// See docs/seeding.md for how versions map.
    #[command(verbatim_doc_comment)]
    Openbao(ImportArgs),
}

impl ImportCmd {
    /// True when the command only reads the source into an export file.
    pub fn needs_no_nexus(&self) -> bool {
        match self {
            Self::Openbao(a) => a.export_to.is_some() && a.from_file.is_none(),
        }
    }
}

/// `spike import openbao`
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// OpenBao/Vault address (http:// or https://).
    #[arg(long, env = "BAO_ADDR", default_value = "http://127.0.0.1:8200")]
    pub addr: String,
    /// PEM CA certificate(s) to verify an https:// server with.
    #[arg(long, env = "BAO_CACERT")]
    pub ca_cert: Option<PathBuf>,
    /// The KV v2 mount.
    #[arg(long, default_value = "secret")]
    pub mount: String,
    /// Import only secrets under this path within the mount.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Write under this SPIKE path prefix instead of the same paths.
    #[arg(long)]
    pub into: Option<String>,
    /// Read a KV v2 export file (JSON, see docs/seeding.md) instead of a live server.
    #[arg(long, conflicts_with_all = ["ca_cert"])]
    pub from_file: Option<PathBuf>,
    /// Write what was read to this export file (mode 0600; it holds the values) instead of
    /// importing it.
    #[arg(long, conflicts_with = "from_file")]
    pub export_to: Option<PathBuf>,
    /// How the secrets are written.
    #[command(flatten)]
    pub upload: UploadArgs,
}

/// `spike secret ...`
#[derive(Debug, Subcommand)]
pub enum SecretCmd {
    /// Write a new version of a secret.
    ///
    /// Examples:
    ///   spike secret put db/creds user=alice pass=s3cret
    ///   spike secret put db/creds --key user --value alice --key pass --value s3cret
    ///   spike secret put db/creds pass=new --cas 3     # only if version 3 is current
    ///   spike secret put db/password s3cret            # one bare value, under key "value"
    ///   spike secret put --name groq-api-key --value gsk_... --ttl 3600 \
    ///     --allowed-spiffe-ids 'spiffe://poc.local/agents/**' --allowed-destinations api.groq.com
    ///
    /// `--name NAME` is the secret's path (like the positional PATH) and a lone `--value` is
    /// its one value, under the key `value`. Writing the same content and scope as the current
    /// version changes nothing ("unchanged"). The scope flags (--ttl, --allowed-spiffe-ids,
    /// --allowed-destinations) are kept by later writes that leave them out.
    /// Values given as arguments are visible in the process list: for real credentials
    /// prefer stdin (`KEY=-` or `--value -` reads that value from stdin).
    #[command(verbatim_doc_comment)]
    Put {
        /// Secret path, e.g. `apps/web/db` (or give it with --name).
        #[arg(value_parser = secret_path, required_unless_present = "name")]
        path: Option<String>,
        /// KEY=VALUE pairs; VALUE `-` reads the value from stdin. One bare VALUE (no `=`) is
        /// stored under the key `value`, and `get` prints it back bare.
        pairs: Vec<String>,
        /// The secret's path, as the positional PATH.
        #[arg(long, value_parser = secret_path, conflicts_with = "path")]
        name: Option<String>,
        /// A key name (pair each with a --value).
        #[arg(long = "key")]
        keys: Vec<String>,
        /// A value: paired with each --key, or alone the secret's one value (key `value`).
        #[arg(long = "value")]
        values: Vec<String>,
        /// Write only if this version is current (0: only if the secret does not exist).
        #[arg(long)]
        cas: Option<u64>,
        /// The secret's scope.
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Change a secret's scope and nothing else: a new version with the current values, which
    /// stay in Nexus (only `write` is needed, not `read`). Setting the scope it already has
    /// changes nothing, for a caller that may read or list the secret.
    ///
    /// Example:
    ///   spike secret scope db/creds --ttl 1h --allowed-destinations api.example.com
    ///   spike secret scope db/creds --no-ttl --allowed-spiffe-ids '' --cas 4
    #[command(verbatim_doc_comment)]
    Scope {
        /// Secret path.
        #[arg(value_parser = secret_path)]
        path: String,
        /// Change it only if this version is current.
        #[arg(long)]
        cas: Option<u64>,
        /// The scope to set (at least one flag).
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Change some keys of the current version and keep the rest: a new version, written
    /// only if the version read is still current (compare-and-set).
    ///
    /// Example:
    ///   spike secret patch db/creds pass=new       # user= and every other key stay
    #[command(verbatim_doc_comment)]
    Patch {
        /// Secret path.
        #[arg(value_parser = secret_path)]
        path: String,
        /// KEY=VALUE pairs to set; VALUE `-` reads the value from stdin.
        #[arg(required = true)]
        pairs: Vec<String>,
        /// Patch only if this version is current (default: the version just read).
        #[arg(long)]
        cas: Option<u64>,
    },
    /// Make version N's content current again, as a new version (nothing is rewritten; the
    /// versions after N stay, and can still be read by number).
    Rollback {
        /// Secret path.
        #[arg(value_parser = secret_path)]
        path: String,
        /// The version whose content to bring back.
        #[arg(long, value_name = "N")]
        to: u64,
    },
    /// Read a secret (the current version, or --version N). With KEY, print only that value.
    #[command(alias = "read")]
    Get {
        /// Secret path.
        #[arg(value_parser = secret_path)]
        path: String,
        /// Print only this key's value.
        key: Option<String>,
        /// The version to read.
        #[arg(long)]
        version: Option<u64>,
    },
    /// List secret paths you may list, under an optional prefix (all pages).
    #[command(alias = "ls")]
    List {
        /// Only paths equal to or under this prefix.
        #[arg(value_parser = path_prefix)]
        prefix: Option<String>,
        /// Page size per request.
        #[arg(long, default_value_t = 500)]
        page_size: usize,
    },
    /// Show a secret's versions, timestamps and scope (TTL, allowed SPIFFE IDs and
    /// destinations); never values.
    Metadata {
        /// Secret path.
        #[arg(value_parser = secret_path)]
        path: String,
    },
    /// Soft-delete versions (default: the current one). Undo with `undelete`.
    Delete {
        /// Secret path.
        #[arg(value_parser = secret_path)]
        path: String,
        /// Comma-separated versions.
        #[arg(long, value_delimiter = ',')]
        versions: Vec<u64>,
    },
    /// Restore soft-deleted versions (default: the newest deleted one).
    Undelete {
        /// Secret path.
        #[arg(value_parser = secret_path)]
        path: String,
        /// Comma-separated versions.
        #[arg(long, value_delimiter = ',')]
        versions: Vec<u64>,
    },
    /// Destroy versions for good: their values are removed from the live store (not from
    /// backups of the data directory made earlier); numbers are never reused.
    Destroy {
        /// Secret path.
        #[arg(value_parser = secret_path)]
        path: String,
        /// Comma-separated versions (required: destruction is never implicit).
        #[arg(long, value_delimiter = ',', required = true)]
        versions: Vec<u64>,
    },
}

/// A secret's scope, as `secret put` sets it; each flag left out keeps what is set.
#[derive(Debug, Clone, Default, Args)]
pub struct ScopeArgs {
    /// Each version expires this long after it is written (seconds, or a duration such as
    /// 30m or 1h); reads and token resolutions fail after it. A new version starts it again.
    #[arg(long, value_name = "DURATION", value_parser = ttl_seconds)]
    pub ttl: Option<u64>,
    /// Remove the TTL.
    #[arg(long, conflicts_with = "ttl")]
    pub no_ttl: bool,
    /// SPIFFE-ID patterns that may read the secret and be bound by its tokens (they narrow
    /// what policies grant); comma-separated or repeated; '' removes the restriction.
    #[arg(long, value_name = "PATTERNS", value_delimiter = ',')]
    pub allowed_spiffe_ids: Option<Vec<String>>,
    /// Hosts (host or host:port; a bare host means port 443) that tokens for the secret may
    /// be sent to; comma-separated or repeated; '' removes them.
    #[arg(long, value_name = "HOSTS", value_delimiter = ',')]
    pub allowed_destinations: Option<Vec<String>>,
}

impl ScopeArgs {
    /// The scope change these flags ask for, if any.
    pub fn update(&self) -> Option<spike_core::api::ScopeUpdate> {
        let list = |l: &Option<Vec<String>>| {
            l.as_ref()
                .map(|v| v.iter().filter(|s| !s.is_empty()).cloned().collect())
        };
        let u = spike_core::api::ScopeUpdate {
            ttl_seconds: if self.no_ttl { Some(0) } else { self.ttl },
            allowed_spiffe_ids: list(&self.allowed_spiffe_ids),
            allowed_destinations: list(&self.allowed_destinations),
        };
        (!u.is_empty()).then_some(u)
    }
}

/// A TTL: whole seconds (`3600`) or a duration (`30m`, `1h30m`); at least one second.
pub fn ttl_seconds(s: &str) -> Result<u64, String> {
    let secs = match s.parse::<u64>() {
        Ok(n) => n,
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("`{s}`: give seconds or a duration such as 30m ({e})"))?
            .as_secs(),
    };
    if secs == 0 {
        return Err(format!("`{s}`: a TTL must be at least one second"));
    }
    Ok(secs)
}

/// `spike policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Create a policy; one of that name must not exist yet unless --replace is given
    /// (`policy apply` is the idempotent way to keep policies as declared).
    ///
    /// Patterns are segment-aware globs: `*` matches within one segment, `**` matches zero or
    /// more whole segments. Example:
    ///   spike policy create web-read --spiffe-id-pattern 'spiffe://spike.dev/ns/web/**' \
    ///     --path-pattern 'apps/web/**' --permissions read,list
    #[command(verbatim_doc_comment)]
    Create {
        /// Policy name ([A-Za-z0-9._-], at most 128).
        #[arg(value_parser = policy_name)]
        name: String,
        /// Which callers it applies to.
        #[arg(long)]
        spiffe_id_pattern: String,
        /// Which secret paths it covers.
        #[arg(long)]
        path_pattern: String,
        /// Comma-separated: read, write, list, delete, token, resolve, cipher, super.
        #[arg(long, value_delimiter = ',', required = true)]
        permissions: Vec<String>,
        /// Replace a policy of the same name instead of failing (exit 6) when one exists.
        #[arg(long)]
        replace: bool,
    },
    /// Show one policy.
    Get {
        /// Policy name.
        #[arg(value_parser = policy_name)]
        name: String,
    },
    /// List every policy, or with SPIFFE_ID only those whose ID pattern matches it.
    List {
        /// Only the policies that apply to this caller, e.g. spiffe://spike.dev/ns/web/sa/api.
        #[arg(value_parser = spiffe_id)]
        spiffe_id: Option<String>,
    },
    /// Let one SPIFFE ID use the paths of a pattern: a shorthand for `create` that names the
    /// policy itself and prints the name. Running it again changes nothing.
    ///
    /// Example:
    ///   spike policy attach spiffe://spike.dev/service/api-server to 'database/*'
    ///   spike policy attach spiffe://spike.dev/service/api-server to 'database/*' --permissions read,write
    #[command(verbatim_doc_comment)]
    Attach {
        /// The caller (one SPIFFE ID, not a pattern).
        #[arg(value_parser = spiffe_id)]
        spiffe_id: String,
        /// The word `to`.
        #[arg(value_parser = ["to"], hide_possible_values = true)]
        to: String,
        /// Which secret paths (a path pattern, e.g. 'database/*').
        path_pattern: String,
        /// Comma-separated permissions (read, write, list, delete, ...).
        #[arg(long, value_delimiter = ',', default_value = "read")]
        permissions: Vec<String>,
        /// The policy's name (default: made from the ID and the pattern).
        #[arg(long, value_parser = policy_name)]
        name: Option<String>,
    },
    /// Delete a policy.
    Delete {
        /// Policy name.
        #[arg(value_parser = policy_name)]
        name: String,
    },
    /// Create or update the policies of a YAML file (the `policies:` of a seed file); never
    /// deletes. Idempotent: identical policies are reported `unchanged`.
    Apply {
        /// The file (YAML; `-` reads stdin).
        #[arg(short, long)]
        file: PathBuf,
        /// Only show what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show which policies apply to SPIFFE_ID on PATH, what they grant, and why.
    ///
    /// Example:
    ///   spike policy test spiffe://spike.dev/ns/web/sa/api apps/web/db
    #[command(verbatim_doc_comment)]
    Test {
        /// The caller, e.g. spiffe://spike.dev/ns/web/sa/api.
        spiffe_id: String,
        /// The secret path, e.g. apps/web/db.
        #[arg(value_parser = secret_path)]
        path: String,
    },
}

/// `spike audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Verify an audit log's HMAC chain. Without --file, Nexus checks its own log (superuser).
    Verify {
        /// Have Nexus verify this copy of its log, or a gateway's log (under that gateway's key).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Also check the log against the signed checkpoints Nexus shipped to this file (its
        /// audit.checkpoint_sink, or a syslog file that holds them): each must verify, and
        /// the log must pass through every one, so a log and data directory rolled back
        /// together are caught. The newest 512 in the file are checked.
        #[arg(long, value_name = "FILE")]
        checkpoints: Option<PathBuf>,
    },
}

/// `spike bootstrap`
#[derive(Debug, Args)]
pub struct BootstrapArgs {
    /// Number of keeper shares (must equal the keepers Nexus is configured with).
    #[arg(long, env = "SPIKE_BOOTSTRAP_SHARES", default_value_t = 3)]
    pub shares: u8,
    /// Shares needed to rebuild the root key.
    #[arg(long, env = "SPIKE_BOOTSTRAP_THRESHOLD", default_value_t = 2)]
    pub threshold: u8,
    /// Keep retrying an unreachable Nexus for this long.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

/// `spike dev`
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Keep data here across restarts (also keeps an INSECURE share file so a full restart
    /// unseals by itself). Without it, everything is in memory and gone on exit.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Nexus mTLS port on 127.0.0.1.
    #[arg(long, default_value_t = 8553)]
    pub port: u16,
    /// Register a workload identity: processes of your user started with
    /// SPIKE_DEV_WORKLOAD=NAME in their environment (any executable: the CLI, a Python
    /// program, ...) get SPIFFE_ID. Repeatable.
    #[arg(long = "workload", value_name = "NAME=SPIFFE_ID", value_parser = dev_workload)]
    pub workloads: Vec<(String, String)>,
    /// Directory for the agent socket and runtime files (default: DATA_DIR/run with
    /// --data-dir, so the socket path and the export lines stay the same across restarts;
    /// else a fresh temp dir, removed on exit).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Also start the egress gateway on 127.0.0.1:PORT+2 (health PORT+3), in sidecar mode for
    /// the dev agent, with a route `llm` to a mock LLM on loopback that streams SSE; prints how
    /// to call it with a reference token. See docs/gateway.md.
    #[arg(long)]
    pub gateway: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// An option the environment (or the configuration file) can give must not look required
    /// in a usage line: whoever set `SPIKE_NEXUS_ADDR` would think they still have to pass it.
    #[test]
    fn no_usage_line_demands_an_option_the_environment_gives() {
        fn walk(cmd: &clap::Command, path: &str, found: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                if a.get_env().is_some() && a.is_required_set() {
                    found.push(format!("{path} --{}", a.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), found);
            }
        }
        let cmd = crate::settings::command().unwrap();
        let mut found = Vec::new();
        walk(&cmd, "spike", &mut found);
        assert!(found.is_empty(), "{found:?}");
        let usage = cmd
            .find_subcommand("secret")
            .and_then(|c| c.find_subcommand("get"))
            .unwrap()
            .clone()
            .render_usage()
            .to_string();
        assert!(!usage.contains("--nexus"), "{usage}");
    }

    #[test]
    fn seed_and_import_share_the_upload_flags_and_refuse_zero() {
        for cmd in [&["seed", "-f", "x.yaml"][..], &["import", "openbao"][..]] {
            let args = |extra: &[&'static str]| {
                ["spike"]
                    .into_iter()
                    .chain(cmd.iter().copied())
                    .chain(extra.iter().copied())
                    .collect::<Vec<_>>()
            };
            let cli = Cli::try_parse_from(args(&[
                "--batch-size",
                "7",
                "--parallel",
                "2",
                "-q",
                "--dry-run",
                "--no-progress",
            ]))
            .unwrap();
            let upload = match cli.command {
                Some(Command::Seed(a)) => a.upload,
                Some(Command::Import(ImportCmd::Openbao(a))) => a.upload,
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!((upload.batch_size, upload.parallel), (7, 2));
            assert!(upload.quiet && upload.dry_run && upload.no_progress);
            for zero in [["--batch-size", "0"], ["--parallel", "0"]] {
                let e = Cli::try_parse_from(args(&zero)).unwrap_err();
                assert_eq!(e.exit_code(), 2, "{e}");
            }
        }
    }

    #[test]
    fn both_put_forms_parse() {
        let cli = Cli::try_parse_from([
            "spike",
            "secret",
            "put",
            "db/creds",
            "user=alice",
            "--key",
            "pass",
            "--value",
            "x",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Secret(SecretCmd::Put {
                path,
                pairs,
                keys,
                values,
                ..
            })) => {
                assert_eq!(path.as_deref(), Some("db/creds"));
                assert_eq!(pairs, ["user=alice"]);
                assert_eq!(keys, ["pass"]);
                assert_eq!(values, ["x"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        // The agent-platform form: --name is the secret, --value its one value, with a scope.
        let cli = Cli::try_parse_from([
            "spike",
            "secret",
            "put",
            "--name",
            "groq-api-key",
            "--value",
            "gsk",
            "--ttl",
            "1h",
            "--allowed-spiffe-ids",
            "spiffe://poc.local/agents/**",
            "--allowed-destinations",
            "api.groq.com",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Secret(SecretCmd::Put {
                path, name, scope, ..
            })) => {
                assert_eq!((path, name.as_deref()), (None, Some("groq-api-key")));
                let u = scope.update().unwrap();
                assert_eq!(u.ttl_seconds, Some(3600));
                assert_eq!(u.allowed_destinations.unwrap(), ["api.groq.com"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        for bad in [
            &["put"][..],
            &["put", "a", "--name", "b", "--value", "v"],
            &["put", "a", "v", "--ttl", "0"],
            &["put", "a", "v", "--ttl", "soon"],
        ] {
            let args = ["spike", "secret"].into_iter().chain(bad.iter().copied());
            assert_eq!(
                Cli::try_parse_from(args).unwrap_err().exit_code(),
                2,
                "{bad:?}"
            );
        }
        let cli =
            Cli::try_parse_from(["spike", "secret", "scope", "a/b", "--no-ttl", "--cas", "4"])
                .unwrap();
        match cli.command {
            Some(Command::Secret(SecretCmd::Scope { path, cas, scope })) => {
                assert_eq!((path.as_str(), cas), ("a/b", Some(4)));
                assert_eq!(scope.update().unwrap().ttl_seconds, Some(0));
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli =
            Cli::try_parse_from(["spike", "secret", "get", "a/b", "k", "--version", "3"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Secret(SecretCmd::Get {
                version: Some(3),
                ..
            }))
        ));
    }
}
