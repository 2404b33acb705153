//! Registration entries: which callers get which SPIFFE ID.
//!
//! The registration file is TOML with one `[[entry]]` table per entry:
//!
//! ```toml
//! [[entry]]
//! spiffe_id = "spiffe://spike.dev/spike/nexus"
//! uid = 1000                          # optional: the caller's user ID
//! gid = 1000                          # optional: the caller's (effective) group ID
//! exe = "/usr/local/bin/spike-nexus"  # optional: the caller's executable, exact path
//! hint = "internal"                   # optional: passed through to clients
//!
//! [[entry]]
//! spiffe_id = "spiffe://spike.dev/spike/keeper/1"
//! exe = "/usr/local/bin/spike-keeper"
//! env = { SPIKE_KEEPER_INDEX = "1" }  # optional: variables the caller was started with
//!
//! [[entry]]
//! spiffe_id = "spiffe://spike.dev/scratch"
//! any = true    # DANGER: every process that can reach the socket gets this ID
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use spike_core::id::{IdError, SpiffeId, TrustDomain};

/// One registration entry: a SPIFFE ID and the selectors a caller must match to receive it.
///
/// An entry matches a caller when *every* selector it names matches. An entry must name at
/// least one selector, unless it is built with [`Registration::any`] (`any = true` in the
/// file), which matches every caller that can reach the socket.
///
/// The `exe` selector compares the path the kernel reports for `/proc/<pid>/exe` (symlinks
/// resolved; a binary replaced on disk reads as `<path> (deleted)` and no longer matches) with
/// the configured path, byte for byte. The `env` selector compares variables of the caller's
/// environment as the kernel shows it (`/proc/<pid>/environ`: what the process was started
/// with); it tells apart cooperating processes of one binary, such as several keepers, and no
/// more, since a process can rewrite that memory itself.
///
/// What attestation can and cannot prove: the socket directory is `0700`, so only the agent's
/// own user (and root) can call at all. Within one user, the uid selector tells nothing apart,
/// and the exe selector guards against mix-ups, not against a hostile process of the same
/// user, which can ptrace the real workload or exec its binary after connecting.
#[derive(Clone, PartialEq, Eq)]
pub struct Registration {
    spiffe_id: SpiffeId,
    selectors: Selectors,
    any: bool,
    hint: Option<String>,
}

/// The selector set of an entry. Adding a selector kind means: a field here, a field in
/// [`RawEntry`], a line in [`Selectors::matches`] and in [`Selectors::is_empty`].
#[derive(Clone, Default, PartialEq, Eq)]
struct Selectors {
    uid: Option<u32>,
    gid: Option<u32>,
    exe: Option<PathBuf>,
    /// Required environment variables (all must be present with exactly these values).
    env: BTreeMap<String, String>,
}

/// What attestation established about a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) pid: i32,
    /// `None` when the executable could not be determined soundly; then no `exe` selector
    /// matches.
    pub(crate) exe: Option<PathBuf>,
    /// The caller's initial environment (`KEY=VALUE` entries, first one wins for a repeated
    /// key); `None` when it could not be read soundly, and then no `env` selector matches.
    pub(crate) env: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl Caller {
    fn env_var(&self, key: &str) -> Option<&[u8]> {
        self.env
            .as_ref()?
            .iter()
            .find(|(k, _)| k.as_slice() == key.as_bytes())
            .map(|(_, v)| v.as_slice())
    }
}

impl Selectors {
    fn is_empty(&self) -> bool {
        self.uid.is_none() && self.gid.is_none() && self.exe.is_none() && self.env.is_empty()
    }

    fn matches(&self, caller: &Caller) -> bool {
        self.uid.is_none_or(|uid| uid == caller.uid)
            && self.gid.is_none_or(|gid| gid == caller.gid)
            && self
                .exe
                .as_ref()
                .is_none_or(|exe| caller.exe.as_deref() == Some(exe.as_path()))
            && self
                .env
                .iter()
                .all(|(k, v)| caller.env_var(k) == Some(v.as_bytes()))
    }
}

impl Registration {
    /// An entry for `spiffe_id` with no selectors yet; add at least one with the `with_*`
    /// methods, or the agent refuses the entry.
    pub fn new(spiffe_id: SpiffeId) -> Self {
        Self {
            spiffe_id,
            selectors: Selectors::default(),
            any: false,
            hint: None,
        }
    }

    /// An entry that matches **every** caller that can reach the socket. For dev convenience
    /// only: any process of the agent's user then holds this identity.
    pub fn any(spiffe_id: SpiffeId) -> Self {
        Self {
            any: true,
            ..Self::new(spiffe_id)
        }
    }

    /// Requires the caller's user ID to be `uid`.
    #[must_use]
    pub fn with_uid(mut self, uid: u32) -> Self {
        self.selectors.uid = Some(uid);
        self
    }

    /// Requires the caller's effective group ID to be `gid`.
    #[must_use]
    pub fn with_gid(mut self, gid: u32) -> Self {
        self.selectors.gid = Some(gid);
        self
    }

    /// Requires the caller's executable to be exactly `exe` (an absolute path).
    #[must_use]
    pub fn with_exe(mut self, exe: impl Into<PathBuf>) -> Self {
        self.selectors.exe = Some(exe.into());
        self
    }

    /// Requires the caller to have been started with environment variable `key` set to
    /// exactly `value`. May be given several times; all must match.
    #[must_use]
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.selectors.env.insert(key.into(), value.into());
        self
    }

    /// Sets the hint passed to clients with this SVID (to tell several SVIDs apart).
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The SPIFFE ID this entry grants.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The required user ID, if any.
    pub fn uid(&self) -> Option<u32> {
        self.selectors.uid
    }

    /// The required group ID, if any.
    pub fn gid(&self) -> Option<u32> {
        self.selectors.gid
    }

    /// The required executable path, if any.
    pub fn exe(&self) -> Option<&Path> {
        self.selectors.exe.as_deref()
    }

    /// The required environment variables, if any.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.selectors.env
    }

    /// True for an entry that matches every caller.
    pub fn is_any(&self) -> bool {
        self.any
    }

    /// The hint, if any.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Checks that the entry is usable in trust domain `td`. `index` (0-based) only labels the
    /// error.
    pub(crate) fn validate(&self, index: usize, td: &TrustDomain) -> Result<(), RegistrationError> {
        let entry = index + 1;
        let id = || self.spiffe_id.to_string();
        if !self.spiffe_id.is_member_of(td) {
            return Err(RegistrationError::ForeignTrustDomain {
                entry,
                id: id(),
                trust_domain: td.to_string(),
            });
        }
        if self.any && !self.selectors.is_empty() {
            return Err(RegistrationError::AnyWithSelectors { entry, id: id() });
        }
        if !self.any && self.selectors.is_empty() {
            return Err(RegistrationError::NoSelectors { entry, id: id() });
        }
        if let Some(exe) = &self.selectors.exe
            && !exe.is_absolute()
        {
            return Err(RegistrationError::RelativeExe { entry, id: id() });
        }
        if let Some(key) = self.selectors.env.iter().find_map(|(k, v)| {
            let bad_key = k.is_empty() || k.contains(['=', '\0']);
            (bad_key || v.contains('\0')).then_some(k)
        }) {
            return Err(RegistrationError::BadEnv {
                entry,
                id: id(),
                key: key.chars().take(64).collect(),
            });
        }
        if let Some(hint) = &self.hint
            && (hint.len() > MAX_HINT_LEN || hint.chars().any(char::is_control))
        {
            return Err(RegistrationError::BadHint { entry, id: id() });
        }
        Ok(())
    }

    pub(crate) fn matches(&self, caller: &Caller) -> bool {
        self.any || self.selectors.matches(caller)
    }
}

const MAX_HINT_LEN: usize = 256;

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Registration");
        d.field("spiffe_id", &self.spiffe_id.as_str());
        if self.any {
            d.field("any", &true);
        }
        if let Some(uid) = self.selectors.uid {
            d.field("uid", &uid);
        }
        if let Some(gid) = self.selectors.gid {
            d.field("gid", &gid);
        }
        if let Some(exe) = &self.selectors.exe {
            d.field("exe", exe);
        }
        if !self.selectors.env.is_empty() {
            d.field("env", &self.selectors.env);
        }
        if let Some(hint) = &self.hint {
            d.field("hint", hint);
        }
        d.finish()
    }
}

/// Why a registration file or entry was refused. Entries are numbered from 1, in file order.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// The file could not be read.
    #[error("cannot read registration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has an unknown key or a value of the wrong type.
    #[error("invalid registration file: {0}")]
    Syntax(String),
    /// An entry's `spiffe_id` is not a valid SPIFFE ID.
    #[error("registration entry {entry}: invalid spiffe_id: {source}")]
    BadId {
        /// 1-based entry number.
        entry: usize,
        /// Why the ID is invalid.
        #[source]
        source: IdError,
    },
    /// An entry's ID belongs to another trust domain than the agent's.
    #[error(
        "registration entry {entry} ({id}): the ID is not in the agent's trust domain {trust_domain}"
    )]
    ForeignTrustDomain {
        /// 1-based entry number.
        entry: usize,
        /// The entry's ID.
        id: String,
        /// The agent's trust domain.
        trust_domain: String,
    },
    /// An entry names no selector and does not say `any = true`.
    #[error(
        "registration entry {entry} ({id}): no selectors; name at least one of uid, gid, exe, env \
         (or set any = true to hand this ID to every caller, for dev use only)"
    )]
    NoSelectors {
        /// 1-based entry number.
        entry: usize,
        /// The entry's ID.
        id: String,
    },
    /// An entry says `any = true` and also names selectors, which is contradictory.
    #[error("registration entry {entry} ({id}): any = true cannot be combined with selectors")]
    AnyWithSelectors {
        /// 1-based entry number.
        entry: usize,
        /// The entry's ID.
        id: String,
    },
    /// An entry's `exe` is a relative path.
    #[error("registration entry {entry} ({id}): exe must be an absolute path")]
    RelativeExe {
        /// 1-based entry number.
        entry: usize,
        /// The entry's ID.
        id: String,
    },
    /// An entry's `env` selector has an empty name, or a name or value that no environment
    /// can hold (`=` in the name, NUL anywhere).
    #[error("registration entry {entry} ({id}): env selector {key:?} is not a valid variable")]
    BadEnv {
        /// 1-based entry number.
        entry: usize,
        /// The entry's ID.
        id: String,
        /// The offending variable name.
        key: String,
    },
    /// An entry's hint is too long or has control characters.
    #[error(
        "registration entry {entry} ({id}): hint must be at most {MAX_HINT_LEN} bytes without control characters"
    )]
    BadHint {
        /// 1-based entry number.
        entry: usize,
        /// The entry's ID.
        id: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    entry: Vec<RawEntry>,
}

// Unknown keys are errors: a misspelt selector (`uuid = 1000`) must not silently widen or
// change what an entry matches.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    spiffe_id: String,
    uid: Option<u32>,
    gid: Option<u32>,
    exe: Option<PathBuf>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    any: bool,
    hint: Option<String>,
}

/// Parses a registration file's text and validates every entry for trust domain `td`.
pub fn parse_registrations(
    text: &str,
    td: &TrustDomain,
) -> Result<Vec<Registration>, RegistrationError> {
    let raw: RawFile =
        toml::from_str(text).map_err(|e| RegistrationError::Syntax(e.message().to_owned()))?;
    let mut out = Vec::with_capacity(raw.entry.len());
    for (index, e) in raw.entry.into_iter().enumerate() {
        let spiffe_id = SpiffeId::new(&e.spiffe_id).map_err(|source| RegistrationError::BadId {
            entry: index + 1,
            source,
        })?;
        let reg = Registration {
            spiffe_id,
            selectors: Selectors {
                uid: e.uid,
                gid: e.gid,
                exe: e.exe,
                env: e.env,
            },
            any: e.any,
            hint: e.hint,
        };
        reg.validate(index, td)?;
        out.push(reg);
    }
    Ok(out)
}

/// Reads and parses a registration file (see [`parse_registrations`]).
pub fn load_registrations(
    path: &Path,
    td: &TrustDomain,
) -> Result<Vec<Registration>, RegistrationError> {
    let text = std::fs::read_to_string(path).map_err(|source| RegistrationError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_registrations(&text, td)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::new("spike.dev").unwrap()
    }

    fn caller(uid: u32, gid: u32, exe: Option<&str>) -> Caller {
        Caller {
            uid,
            gid,
            pid: 42,
            exe: exe.map(PathBuf::from),
            env: None,
        }
    }

    fn with_env(mut c: Caller, vars: &[(&str, &str)]) -> Caller {
        c.env = Some(
            vars.iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        );
        c
    }

    #[test]
    fn every_named_selector_must_match() {
        let id = td().id("/app").unwrap();
        let r = Registration::new(id.clone())
            .with_uid(1000)
            .with_exe("/usr/bin/app");
        assert!(r.matches(&caller(1000, 5, Some("/usr/bin/app"))));
        assert!(!r.matches(&caller(1001, 5, Some("/usr/bin/app"))));
        assert!(!r.matches(&caller(1000, 5, Some("/usr/bin/app2"))));
        assert!(!r.matches(&caller(1000, 5, Some("/usr/bin/app (deleted)"))));
        // An unknown executable never satisfies an exe selector.
        assert!(!r.matches(&caller(1000, 5, None)));

        let g = Registration::new(id.clone()).with_gid(7);
        assert!(g.matches(&caller(1, 7, None)));
        assert!(!g.matches(&caller(1, 8, None)));

        assert!(Registration::any(id.clone()).matches(&caller(0, 0, None)));

        let k = Registration::new(id)
            .with_exe("/bin/keeper")
            .with_env("SPIKE_KEEPER_INDEX", "1");
        let base = caller(1, 1, Some("/bin/keeper"));
        assert!(k.matches(&with_env(
            base.clone(),
            &[("A", "b"), ("SPIKE_KEEPER_INDEX", "1")]
        )));
        // First occurrence wins, as for getenv.
        assert!(!k.matches(&with_env(
            base.clone(),
            &[("SPIKE_KEEPER_INDEX", "2"), ("SPIKE_KEEPER_INDEX", "1")]
        )));
        assert!(!k.matches(&with_env(base.clone(), &[("SPIKE_KEEPER_INDEX", "10")])));
        assert!(!k.matches(&with_env(base.clone(), &[])));
        // Unknown environment: no env selector matches.
        assert!(!k.matches(&base));
    }

    #[test]
    fn parses_a_valid_file() {
        let regs = parse_registrations(
            r#"
            [[entry]]
            spiffe_id = "spiffe://spike.dev/spike/nexus"
            uid = 1000
            exe = "/usr/local/bin/spike-nexus"
            hint = "internal"

            [[entry]]
            spiffe_id = "spiffe://spike.dev/spike/keeper/2"
            env = { SPIKE_KEEPER_INDEX = "2", MODE = "dev" }

            [[entry]]
            spiffe_id = "spiffe://spike.dev/dev/anyone"
            any = true
            "#,
            &td(),
        )
        .unwrap();
        assert_eq!(regs.len(), 3);
        assert_eq!(
            regs[0].spiffe_id().as_str(),
            "spiffe://spike.dev/spike/nexus"
        );
        assert_eq!(regs[0].uid(), Some(1000));
        assert_eq!(regs[0].gid(), None);
        assert_eq!(regs[0].exe(), Some(Path::new("/usr/local/bin/spike-nexus")));
        assert_eq!(regs[0].hint(), Some("internal"));
        assert!(!regs[0].is_any());
        assert_eq!(regs[1].env().len(), 2);
        assert_eq!(regs[1].env()["SPIKE_KEEPER_INDEX"], "2");
        assert!(regs[2].is_any());
        assert!(parse_registrations("", &td()).unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_entries_with_clear_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "[[entry]]\nspiffe_id = \"spiffe://spike.dev/a/../b\"\nuid = 1",
                "registration entry 1: invalid spiffe_id",
            ),
            (
                "[[entry]]\nspiffe_id = \"spike.dev/app\"\nuid = 1",
                "must start with \"spiffe://\"",
            ),
            (
                "[[entry]]\nspiffe_id = \"spiffe://spike.dev/ok\"\nuid = 1\n\
                 [[entry]]\nspiffe_id = \"spiffe://evil.dev/app\"\nuid = 1",
                "registration entry 2 (spiffe://evil.dev/app): the ID is not in the agent's trust domain spike.dev",
            ),
            (
                "[[entry]]\nspiffe_id = \"spiffe://spike.dev/app\"",
                "registration entry 1 (spiffe://spike.dev/app): no selectors",
            ),
            (
                "[[entry]]\nspiffe_id = \"spiffe://spike.dev/app\"\nany = true\nuid = 3",
                "any = true cannot be combined with selectors",
            ),
            (
                "[[entry]]\nspiffe_id = \"spiffe://spike.dev/app\"\nexe = \"bin/app\"",
                "exe must be an absolute path",
            ),
            (
                "[[entry]]\nspiffe_id = \"spiffe://spike.dev/app\"\nuuid = 1000",
                "unknown field `uuid`",
            ),
            (
                "[[entries]]\nspiffe_id = \"spiffe://spike.dev/app\"\nuid = 1000",
                "unknown field `entries`",
            ),
            (
                "[[entry]]\nspiffe_id = \"spiffe://spike.dev/app\"\nuid = -1",
                "invalid registration file",
            ),
            (
                "[[entry]]\nspiffe_id = \"spiffe://spike.dev/app\"\nuid = 1\nhint = \"a\\nb\"",
                "hint must be",
            ),
            (
                "[[entry]]\nspiffe_id = \"spiffe://spike.dev/app\"\nenv = { \"A=B\" = \"1\" }",
                "env selector \"A=B\" is not a valid variable",
            ),
            (
                "[[entry]]\nspiffe_id = \"spiffe://spike.dev/app\"\nenv = {}",
                "no selectors",
            ),
            ("[[entry]\n", "invalid registration file"),
        ];
        for (text, want) in cases {
            let err = parse_registrations(text, &td()).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "for {text:?}: got {err:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = load_registrations(Path::new("/nonexistent/regs.toml"), &td()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/regs.toml"), "{err}");
    }
}
