//! The seed file: its model, parsing (errors never quote a value), and resolving it into
//! checked policies and batch items.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use spike_core::api::BatchPutItem;
use spike_core::path::SecretPath;
use spike_core::policy::{Permission, Policy};
use spike_core::secret::{SecretMap, SecretString};
use zeroize::Zeroizing;

use crate::client::{CliError, CliResult};

/// Largest seed file read, bytes (1 GiB: about ten million small secrets).
pub(super) const MAX_FILE_BYTES: u64 = 1 << 30;

/// The seed file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedFile {
    /// Schema version; only 1 exists.
    #[serde(default)]
    pub version: Option<u32>,
    /// Policies to create or update.
    #[serde(default)]
    pub policies: Vec<PolicySpec>,
    /// Secrets to create or update.
    #[serde(default)]
    pub secrets: Vec<SecretSpec>,
}

/// A policy, as in the API (`PUT /v1/policies/{name}`) plus its name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// The policy's name.
    pub name: String,
    /// Which callers it applies to.
    pub spiffe_id_pattern: String,
    /// Which paths it covers.
    pub path_pattern: String,
    /// What it allows: read, write, list, delete, token, resolve, cipher, super.
    pub permissions: Vec<String>,
}

/// A secret: its path and the key/value pairs of its current version.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSpec {
    /// The secret's path.
    pub path: String,
    /// Keys and their values (literal, or `valueFrom`).
    pub data: BTreeMap<String, SeedValue>,
    /// Each version's TTL: seconds (`3600`) or a duration (`30m`).
    #[serde(default)]
    pub ttl: Option<SeedTtl>,
    /// SPIFFE-ID patterns allowed to read it and be bound by its tokens.
    #[serde(default)]
    pub allowed_spiffe_ids: Option<Vec<String>>,
    /// Destinations its tokens may be sent to.
    #[serde(default)]
    pub allowed_destinations: Option<Vec<String>>,
}

/// A TTL as a seed file writes it: a number of seconds or a duration string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SeedTtl {
    /// Seconds.
    Seconds(u64),
    /// A duration such as `30m` (or seconds, quoted).
    Text(String),
}

impl SecretSpec {
    /// The scope the entry sets, if it sets any (what it leaves out is kept by Nexus).
    fn scope(&self, origin: &str) -> CliResult<Option<spike_core::api::ScopeUpdate>> {
        let ttl_seconds = match &self.ttl {
            None => None,
            Some(SeedTtl::Seconds(n)) => Some(crate::cli::ttl_seconds(&n.to_string())),
            Some(SeedTtl::Text(t)) => Some(crate::cli::ttl_seconds(t)),
        }
        .transpose()
        .map_err(|e| CliError::Usage(format!("{origin}: secret `{}` ttl {e}", self.path)))?;
        let u = spike_core::api::ScopeUpdate {
            ttl_seconds,
            allowed_spiffe_ids: self.allowed_spiffe_ids.clone(),
            allowed_destinations: self.allowed_destinations.clone(),
        };
        Ok((!u.is_empty()).then_some(u))
    }
}

/// One value of a seed file: a literal string, or where to read it from.
pub enum SeedValue {
    /// The value itself, in the file.
    Literal(SecretString),
    /// `valueFrom: {env: NAME}`: an environment variable of the `spike` process.
    Env(String),
    /// `valueFrom: {file: PATH}`: a file's whole content (UTF-8), relative to the seed file.
    File(PathBuf),
}

impl fmt::Debug for SeedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal(_) => f.write_str("Literal([redacted])"),
            Self::Env(n) => write!(f, "Env({n})"),
            Self::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

/// Marks our own deserialization messages, which never quote a value and so may be shown.
pub(super) const OWN: &str = "spike: ";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ValueFromWrapper {
    value_from: ValueFrom,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum ValueFrom {
    Env(String),
    File(PathBuf),
}

impl<'de> Deserialize<'de> for SeedValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        fn not_string<E: de::Error>() -> E {
            E::custom(format!(
                "{OWN}a value must be a string or `valueFrom: {{env: NAME}}` / `{{file: PATH}}`; \
                 quote numbers, booleans and empty values (\"5432\", \"true\", \"\") so they are kept exactly"
            ))
        }
        impl<'de> Visitor<'de> for V {
            type Value = SeedValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, or valueFrom with env or file")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SeedValue, E> {
                Ok(SeedValue::Literal(SecretString::new(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<SeedValue, E> {
                Ok(SeedValue::Literal(SecretString::new(s)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<SeedValue, E> {
                Err(not_string())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<SeedValue, E> {
                Err(not_string())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<SeedValue, E> {
                Err(not_string())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<SeedValue, E> {
                Err(not_string())
            }
            fn visit_unit<E: de::Error>(self) -> Result<SeedValue, E> {
                Err(not_string())
            }
            fn visit_none<E: de::Error>(self) -> Result<SeedValue, E> {
                Err(not_string())
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<SeedValue, A::Error> {
                Err(not_string())
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SeedValue, A::Error> {
                let w = ValueFromWrapper::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map_err(|_| {
                        de::Error::custom(format!(
                            "{OWN}a value given as a map must be exactly `valueFrom: {{env: NAME}}` or `valueFrom: {{file: PATH}}`"
                        ))
                    })?;
                Ok(match w.value_from {
                    ValueFrom::Env(n) => SeedValue::Env(n),
                    ValueFrom::File(p) => SeedValue::File(p),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses a seed file. Errors give the line and column and never quote a value from the file.
pub fn parse_seed(text: &str, origin: &str) -> CliResult<SeedFile> {
    let n = text.len();
    // Budgets scale with the file (which the operator chose to run), so a big seed file parses;
    // alias expansion stays bounded by the library's defaults.
    #[allow(deprecated)]
    let options = serde_saphyr::options! {
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(n.saturating_add(1)),
            max_events: n.max(1_000_000),
            max_nodes: n.max(250_000),
            max_total_scalar_bytes: n.max(1 << 20),
        },
    };
    let file: SeedFile = serde_saphyr::from_str_with_options(text, options)
        .map_err(|e| CliError::Usage(format!("{origin}: {}", safe_yaml_error(&e))))?;
    if let Some(v) = file.version
        && v != 1
    {
        return Err(CliError::Usage(format!(
            "{origin}: version {v} is not supported; this spike reads version 1"
        )));
    }
    Ok(file)
}

/// Describes a YAML error without quoting the input (which may hold secret values): the
/// position, and the message only when it cannot contain a value.
pub(super) fn safe_yaml_error(e: &serde_saphyr::Error) -> String {
    let at = e
        .location()
        .map(|l| format!("line {} column {}: ", l.line(), l.column()))
        .unwrap_or_default();
    let full = e.to_string();
    let first = full.lines().next().unwrap_or_default();
    // "error: line 3 column 3: <message>"
    let msg = match first.find(": ") {
        Some(_) if first.starts_with("error: line ") => first
            .splitn(3, ": ")
            .nth(2)
            .unwrap_or(first)
            .trim_start_matches("error: "),
        _ => first.trim_start_matches("error: "),
    };
    // The position is said once, in front: the library repeats it at the end.
    let msg = without_trailing_position(msg);
    if let Some(own) = msg.find(OWN) {
        return format!("{at}{}", &msg[own + OWN.len()..]);
    }
    if let Some(rest) = msg.strip_prefix("duplicate mapping key: ") {
        // "k, set DuplicateKeyPolicy in Options if acceptable": the advice is for the
        // library's callers, not for whoever wrote the file.
        let name = rest.split(", set ").next().unwrap_or(rest);
        let name: String = name.chars().take(64).collect();
        return format!("{at}duplicate key `{}`", name.escape_debug());
    }
    for marker in [
        "unknown field",
        "missing field",
        "duplicate field",
        "duplicate key",
    ] {
        if let Some(rest) = msg.strip_prefix(marker) {
            let name = rest.split('`').nth(1).unwrap_or("?");
            let hint = if marker == "unknown field" {
                " (fields are camelCase; see docs/seeding.md)"
            } else {
                ""
            };
            return format!("{at}{marker} `{name}`{hint}");
        }
    }
    if !msg.is_empty() && !msg.contains(['`', '"', '\'']) {
        // Structural parser messages ("did not find expected key") quote nothing.
        return format!("{at}{msg}");
    }
    format!("{at}a value has the wrong type or the YAML is malformed (see docs/seeding.md)")
}

/// `msg` without a trailing " at line N, column M".
fn without_trailing_position(msg: &str) -> &str {
    let Some(i) = msg.rfind(" at line ") else {
        return msg;
    };
    let tail = &msg[i + " at line ".len()..];
    let positional = tail.split_once(", column ").is_some_and(|(l, c)| {
        !l.is_empty()
            && !c.is_empty()
            && l.bytes().all(|b| b.is_ascii_digit())
            && c.bytes().all(|b| b.is_ascii_digit())
    });
    if positional { &msg[..i] } else { msg }
}

/// Reads the seed file (`-` = stdin) into a buffer wiped on drop.
pub fn read_input(path: &Path) -> CliResult<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    let read = if path == Path::new("-") {
        std::io::stdin()
            .take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
    };
    read.map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(CliError::Usage(format!(
            "{} is larger than {MAX_FILE_BYTES} bytes; split it into several files",
            path.display()
        )));
    }
    Ok(text)
}

/// Checks the policies of a file as Nexus will, so a bad one stops the run before any write.
pub fn check_policies(specs: &[PolicySpec], origin: &str) -> CliResult<Vec<Policy>> {
    let mut seen = HashMap::new();
    let mut out = Vec::with_capacity(specs.len());
    for (i, p) in specs.iter().enumerate() {
        if let Some(first) = seen.insert(p.name.as_str(), i) {
            return Err(CliError::Usage(format!(
                "{origin}: policy `{}` is defined twice (policies {} and {})",
                p.name,
                first + 1,
                i + 1
            )));
        }
        let perms = p
            .permissions
            .iter()
            .map(|s| {
                s.trim().parse::<Permission>().map_err(|_| {
                    CliError::Usage(format!(
                        "{origin}: policy `{}`: unknown permission `{s}`; use read, write, list, delete, token, resolve, cipher or super",
                        p.name
                    ))
                })
            })
            .collect::<CliResult<Vec<_>>>()?;
        let policy = Policy::parse(&p.name, &p.spiffe_id_pattern, &p.path_pattern, perms)
            .map_err(|e| CliError::Usage(format!("{origin}: policy `{}`: {e}", p.name)))?;
        out.push(policy);
    }
    Ok(out)
}

/// Resolves every secret of a file into batch items: paths checked, duplicates refused, each
/// `valueFrom` read (`env` from `env`, `file` relative to `base`). Any problem stops the run.
pub fn resolve_secrets(
    specs: Vec<SecretSpec>,
    base: &Path,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> CliResult<Vec<BatchPutItem>> {
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(specs.len());
    let mut out = Vec::with_capacity(specs.len());
    for (i, s) in specs.into_iter().enumerate() {
        let path = SecretPath::parse(&s.path).map_err(|e| {
            CliError::Usage(format!(
                "{origin}: secret {}: path `{}`: {e}",
                i + 1,
                s.path
            ))
        })?;
        if let Some(first) = seen.insert(path.as_str().to_owned(), i) {
            return Err(CliError::Usage(format!(
                "{origin}: secret `{}` is defined twice (secrets {} and {})",
                path.as_str(),
                first + 1,
                i + 1
            )));
        }
        if s.data.is_empty() {
            return Err(CliError::Usage(format!(
                "{origin}: secret `{}` has no data; give at least one key",
                path.as_str()
            )));
        }
        let scope = s.scope(origin)?;
        let mut data = SecretMap::new();
        for (k, v) in s.data {
            let where_ = || format!("{origin}: secret `{}` key `{k}`", path.as_str());
            if k.is_empty() {
                return Err(CliError::Usage(format!(
                    "{origin}: secret `{}` has an empty key name",
                    path.as_str()
                )));
            }
            let value = match v {
                SeedValue::Literal(v) => v,
                SeedValue::Env(name) => SecretString::new(env(&name).ok_or_else(|| {
                    CliError::Usage(format!(
                        "{}: environment variable {name} is not set (or not UTF-8)",
                        where_()
                    ))
                })?),
                SeedValue::File(p) => {
                    let full = if p.is_absolute() { p } else { base.join(p) };
                    let bytes = Zeroizing::new(std::fs::read(&full).map_err(|e| {
                        CliError::Usage(format!(
                            "{}: cannot read {}: {e}",
                            where_(),
                            full.display()
                        ))
                    })?);
                    let text = std::str::from_utf8(&bytes).map_err(|_| {
                        CliError::Usage(format!(
                            "{}: {} is not UTF-8 text (values are strings; base64-encode binary data)",
                            where_(),
                            full.display()
                        ))
                    })?;
                    SecretString::new(text.to_owned())
                }
            };
            data.insert(k, value);
        }
        out.push(BatchPutItem {
            path: path.as_str().to_owned(),
            data,
            cas: None,
            scope,
        });
    }
    Ok(out)
}

/// The directory `valueFrom: {file: ...}` paths are relative to.
pub(super) fn base_dir(file: &Path) -> PathBuf {
    if file == Path::new("-") {
        return PathBuf::from(".");
    }
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Reads, checks and resolves a seed file.
pub fn load(file: &Path) -> CliResult<Loaded> {
    let origin = file.display().to_string();
    let text = read_input(file)?;
    let seed = parse_seed(&text, &origin)?;
    drop(text);
    let parsed = check_policies(&seed.policies, &origin)?;
    let env = |name: &str| std::env::var(name).ok();
    let secrets = resolve_secrets(seed.secrets, &base_dir(file), &origin, &env)?;
    Ok(Loaded {
        specs: seed.policies,
        parsed,
        secrets,
    })
}

/// A seed file read and checked whole, ready to send.
#[derive(Debug)]
pub struct Loaded {
    /// The policies as written.
    pub specs: Vec<PolicySpec>,
    /// The same, parsed (one per spec).
    pub parsed: Vec<Policy>,
    /// The secrets, with every value source read.
    pub secrets: Vec<BatchPutItem>,
}
