//! A typed client of the Nexus API, and the CLI's error type with its exit codes.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use spike_core::error::{ErrorBody, ErrorCode};
use spike_core::id::Builtin;
use spike_runtime::net::{ClientError, MtlsClient};
use spike_runtime::svid::{SvidError, SvidSource};

/// A CLI failure, with the exit code a script can rely on.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Nexus refused or failed the request.
    #[error("{message} ({code})")]
    Api {
        /// The API error code.
        code: ErrorCode,
        /// Nexus's message.
        message: String,
    },
    /// Nexus could not be reached.
    #[error(transparent)]
    Transport(#[from] ClientError),
    /// This process has no usable SVID: none can be had from its agent, or its own is outside
    /// its validity window, so Nexus would refuse it.
    #[error("{}{}", own_prefix(.0), .0)]
    OwnSvid(SvidError),
    /// Bad input on the command line.
    #[error("{0}")]
    Usage(String),
    /// The answer to a question the command asked is "denied" (`policy test`).
    #[error("denied: {0}")]
    Denied(String),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Nexus's `host:port` from what a user gave: `https://host:port` (a Vault habit) and a
/// trailing `/` are accepted; `http://`, a path or a missing port are usage errors.
pub fn nexus_authority(given: &str) -> CliResult<String> {
    let usage = |why: &str| {
        CliError::Usage(format!(
            "Nexus address `{given}`: {why}; give host:port, e.g. 127.0.0.1:8553"
        ))
    };
    let lower = given.to_ascii_lowercase();
    if lower.starts_with("http://") {
        return Err(usage("Nexus speaks only mutual TLS, not http://"));
    }
    let rest = if lower.starts_with("https://") {
        &given["https://".len()..]
    } else {
        given
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err(usage("no path is needed"));
    }
    if rest.contains('@') {
        return Err(usage("no user name is needed"));
    }
    let authority: http::uri::Authority = rest.parse().map_err(|_| usage("not an address"))?;
    if authority.port_u16().is_none() {
        return Err(usage("the port is missing"));
    }
    Ok(authority.as_str().to_owned())
}

/// "this client's SVID … expired": the validity errors name an SVID, which is this client's.
fn own_prefix(e: &SvidError) -> &'static str {
    match e {
        SvidError::Expired { .. } | SvidError::NotYetValid { .. } => "this client's ",
        _ => "",
    }
}

impl CliError {
    /// The error for an SVID of this process that cannot be used: its validity window is the
    /// user's to fix (exit 5, with a hint); anything else about getting one is an error.
    pub fn own_svid(e: SvidError) -> Self {
        match e {
            SvidError::Expired { .. }
            | SvidError::NotYetValid { .. }
            | SvidError::NoEndpoint
            | SvidError::NoSocket { .. }
            | SvidError::Refused { .. } => Self::OwnSvid(e),
            other => Self::Other(anyhow::anyhow!("cannot get an SVID: {other}")),
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Self::Api { code, .. } => match code {
                ErrorCode::NotFound
                | ErrorCode::NoShare
                | ErrorCode::Deleted
                | ErrorCode::Destroyed
                | ErrorCode::Expired => 3,
                ErrorCode::Forbidden | ErrorCode::OutsideScope | ErrorCode::Unauthenticated => 4,
                ErrorCode::Sealed | ErrorCode::Unavailable | ErrorCode::NotInitialized => 5,
                ErrorCode::CasMismatch
                | ErrorCode::AlreadyExists
                | ErrorCode::AlreadyInitialized => 6,
                _ => 1,
            },
            Self::Transport(_) | Self::OwnSvid(_) => 5,
            Self::Denied(_) => 4,
            Self::Usage(_) => 2,
            Self::Other(_) => 1,
        })
    }

    /// A hint about what to do next, when there is a useful one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Api { code, message } => match code {
                // A route for administrators or one of SPIKE's own identities: no policy on a
                // path helps.
                ErrorCode::Forbidden if message.contains("SPIFFE IDs allowed to read") => Some(
                    "the secret's scope does not include your ID: `spike secret metadata PATH` shows its allowed IDs; a writer can change them with `spike secret put ... --allowed-spiffe-ids`",
                ),
                ErrorCode::Forbidden if message.starts_with("this needs ") => Some(
                    "run it with the identity the message names (`spike status` shows which one you have)",
                ),
                ErrorCode::Forbidden => Some(
                    "ask an admin for a policy (spike policy create NAME --spiffe-id-pattern ... --path-pattern ... --permissions ...); \
an admin can see what applies to you with `spike policy test YOUR_SPIFFE_ID PATH` (`spike status` shows your ID)",
                ),
                ErrorCode::OutsideScope => Some(
                    "the operator may touch only the paths and SPIFFE IDs Nexus's operator.path_scope and operator.spiffe_id_scope give it: the superuser handles anything wider",
                ),
                ErrorCode::Unauthenticated => Some(
                    "Nexus saw no valid client SVID: check SPIFFE_ENDPOINT_SOCKET, or --svid-cert/--svid-key/--svid-bundle",
                ),
                ErrorCode::Sealed => Some(
                    "Nexus is waiting for its keepers; check `spike status` and the keepers' /readyz",
                ),
                ErrorCode::NotInitialized => Some("run `spike bootstrap` once"),
                ErrorCode::CasMismatch => {
                    Some("read the current version with `spike secret metadata PATH` and retry")
                }
                ErrorCode::Deleted => Some(
                    "`spike secret undelete PATH` restores it, or read another version with --version N (`spike secret metadata PATH` lists them)",
                ),
                ErrorCode::Expired => Some(
                    "the version is past the secret's TTL: write a new version (`spike secret put`) to start it again; `spike secret metadata PATH` shows expiries",
                ),
                ErrorCode::Destroyed => Some(
                    "a destroyed version cannot be restored; `spike secret metadata PATH` lists the versions kept (read one with --version N)",
                ),
                ErrorCode::NotFound | ErrorCode::NoShare => Some(
                    "check the name: `spike secret list [PREFIX]` and `spike policy list` show what exists (and what you may see)",
                ),
                ErrorCode::InvalidPath => Some(
                    "a path is /-separated segments of letters, digits, `.`, `_` and `-`, e.g. apps/web/db",
                ),
                ErrorCode::InvalidPolicy => Some(
                    "patterns are segment globs (`*` one segment, `**` any number); see `spike policy create --help`",
                ),
                ErrorCode::TooLarge => Some(
                    "the request crosses a Nexus limit (the message says which): make it smaller, or raise the limit in Nexus's configuration",
                ),
                ErrorCode::RateLimited => {
                    Some("too many requests from this identity: wait a moment and retry")
                }
                ErrorCode::Internal | ErrorCode::Unavailable => Some(
                    "Nexus could not serve this; its log has the cause. Retrying is safe for every command: writes are idempotent or compare-and-set",
                ),
                _ => None,
            },
            Self::Transport(ClientError::Connect { .. }) => Some(
                "is Nexus running? Set SPIKE_NEXUS_ADDR, or start a local system with `spike dev`",
            ),
            Self::OwnSvid(SvidError::NoEndpoint | SvidError::NoSocket { .. }) => Some(
                "start a local system with `spike dev` and paste the export lines it prints, or point SPIFFE_ENDPOINT_SOCKET at your SPIRE agent's socket (or give --svid-cert/--svid-key/--svid-bundle)",
            ),
            Self::OwnSvid(SvidError::Refused { .. }) => Some(
                "the agent has no registration entry for this process: with `spike dev`, run the `spike` executable it names at start; with SPIRE, check this workload's registration entry and selectors",
            ),
            Self::OwnSvid(_) => Some(
                "renew the SVID: check the SPIRE agent behind SPIFFE_ENDPOINT_SOCKET, or the files given by --svid-cert/--svid-key/--svid-bundle, and this machine's clock",
            ),
            Self::Transport(e) if e.server_id_mismatch().is_some() => Some(
                "the address given as Nexus (SPIKE_NEXUS_ADDR or --nexus) answered with another identity (the line above says which): point it at this trust domain's Nexus",
            ),
            Self::Transport(ClientError::Tls { .. }) => Some(
                "the TLS handshake failed: check SPIFFE_ENDPOINT_SOCKET (or the SVID files) and the trust domain",
            ),
            Self::Transport(ClientError::Timeout { .. }) => Some(
                "Nexus did not answer in time: check its health, or raise --timeout for big requests",
            ),
            _ => None,
        }
    }
}

/// Result alias for commands.
pub type CliResult<T> = Result<T, CliError>;

/// Typed calls to Nexus. Cloning is cheap and clones share one connection pool, so one
/// `Nexus` serves many requests in flight (bootstrap, seeding, imports and every command).
#[derive(Clone)]
pub struct Nexus {
    http: MtlsClient,
    source: Arc<dyn SvidSource>,
}

impl Nexus {
    /// A client for Nexus at `addr`, which must present `/spike/nexus` of the source's domain.
    pub fn new(addr: &str, source: Arc<dyn SvidSource>, timeout: Duration) -> CliResult<Self> {
        let addr = nexus_authority(addr)?;
        let id = Builtin::Nexus.id(source.trust_domain());
        let http = MtlsClient::new(addr, id, source.clone())
            .map_err(|e| CliError::Other(anyhow::anyhow!("TLS configuration: {e}")))?
            .with_timeout(timeout);
        Ok(Self { http, source })
    }

    /// The address.
    pub fn addr(&self) -> &str {
        self.http.addr()
    }

    /// Sends a request and decodes the JSON answer (or the API error).
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> CliResult<T> {
        let bytes = self.call_raw(method, path, body).await?;
        let bytes = if bytes.is_empty() {
            b"null".to_vec()
        } else {
            bytes
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| CliError::Other(anyhow::anyhow!("unexpected answer from Nexus: {e}")))
    }

    /// Sends a request and returns the body of a 2xx answer.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> CliResult<Vec<u8>> {
        self.check_own_svid()?;
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| CliError::Other(e.into()))?;
        let resp = self.http.send(method, path, body).await?;
        if resp.status.is_success() {
            return Ok(resp.body.to_vec());
        }
        match serde_json::from_slice::<ErrorBody>(&resp.body) {
            Ok(b) => Err(CliError::Api {
                code: b.error.code,
                message: b.error.message,
            }),
            Err(_) => Err(CliError::Other(anyhow::anyhow!(
                "Nexus answered HTTP {} without an error body",
                resp.status
            ))),
        }
    }
}

impl Nexus {
    /// Refuses to call with an SVID that is expired or not yet valid: Nexus would refuse the
    /// handshake with nothing but an alert, and the user would see a bare TLS error. Read from
    /// the source's current certificate each time, so a rotated SVID is seen at once.
    fn check_own_svid(&self) -> CliResult<()> {
        self.source
            .current()
            .check_usable(SystemTime::now(), None)
            .map_err(CliError::own_svid)
    }
}

/// What a query value keeps as it is: unreserved characters and `/` (paths read better).
const QUERY_KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Percent-encodes a query value.
pub fn query_escape(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_KEEP).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nexus_addresses_accept_vault_habits_and_refuse_what_cannot_work() {
        for (given, want) in [
            ("127.0.0.1:8553", "127.0.0.1:8553"),
            ("https://nexus.example:8553", "nexus.example:8553"),
            ("HTTPS://nexus.example:8553/", "nexus.example:8553"),
            ("[::1]:8553", "[::1]:8553"),
        ] {
            assert_eq!(nexus_authority(given).unwrap(), want, "{given}");
        }
        for (given, why) in [
            ("http://127.0.0.1:8553", "only mutual TLS"),
            ("https://h:1/v1/secrets", "no path"),
            ("nexus.example", "port is missing"),
            ("https://u@h:1", "no user name"),
            ("a b:1", "not an address"),
        ] {
            let e = nexus_authority(given).unwrap_err();
            assert!(matches!(e, CliError::Usage(_)), "{given}: {e:?}");
            assert!(e.to_string().contains(why), "{given}: {e}");
            assert!(e.to_string().contains("host:port"), "{given}: {e}");
        }
    }
}
