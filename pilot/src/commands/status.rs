//! `spike status` and `spike version`.

use http::Method;
use serde::Serialize;
use spike_core::api::StatusResponse;

use crate::cli::Output;
use crate::client::{CliError, CliResult, Nexus};
use crate::output::print_structured;
use spike_core::error::ErrorCode;

/// Prints Nexus's state and the caller's identity.
pub async fn run(nexus: &Nexus, out: Output) -> CliResult<()> {
    let s: StatusResponse = nexus.call(Method::GET, "/v1/status", None::<&()>).await?;
    match out {
        Output::Text => {
            // Nexus tells only administrators whether (and why not) it is initialized.
            if let Some(i) = s.initialized {
                println!("initialized: {i}");
            }
            println!("sealed:      {}", s.sealed);
            if let Some(r) = &s.reason {
                println!("reason:      {r}");
            }
            println!("you are:     {}", s.caller);
            if let Some(r) = &s.reencryption {
                if r.older_generations == 0 {
                    println!("data key:    {} (no older data key held)", r.generation);
                } else {
                    println!(
                        "data key:    {} ({} older still held: re-encrypting, {} moved, {} left \
                         to check{})",
                        r.generation,
                        r.older_generations,
                        r.done,
                        r.remaining,
                        r.waiting_for
                            .as_ref()
                            .map(|w| format!("; waiting for {w}"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        _ => print_structured(out, &s),
    }
    // Like a health check: a script can tell a serving Nexus by the exit status.
    if s.sealed {
        return Err(CliError::Api {
            code: ErrorCode::Sealed,
            message: "Nexus is sealed".into(),
        });
    }
    Ok(())
}

/// This build of the CLI.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    /// The crate version.
    pub version: &'static str,
    /// `os-arch`.
    pub target: String,
    /// `debug` or `release`.
    pub profile: &'static str,
}

impl BuildInfo {
    /// This binary's build.
    pub fn current() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION"),
            target: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        }
    }
}

/// What `spike version` learned about Nexus.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    /// The address asked.
    pub address: String,
    /// True when Nexus answered.
    pub reachable: bool,
    /// Nexus's version, when it reports one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Sealed or not, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sealed: Option<bool>,
    /// Why it could not be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `spike version`: always succeeds; Nexus is asked only when an identity is available.
pub async fn version(nexus: Result<Nexus, String>, addr: &str, out: Output) -> CliResult<()> {
    let client = BuildInfo::current();
    let server = match nexus {
        Err(e) => ServerInfo {
            address: addr.to_owned(),
            reachable: false,
            version: None,
            sealed: None,
            error: Some(e),
        },
        Ok(n) => {
            // Decoded loosely: a Nexus that reports its version has a `version` field.
            let r: CliResult<serde_json::Value> =
                n.call(Method::GET, "/v1/status", None::<&()>).await;
            match r {
                Ok(v) => ServerInfo {
                    address: addr.to_owned(),
                    reachable: true,
                    version: v.get("version").and_then(|v| v.as_str()).map(str::to_owned),
                    sealed: v.get("sealed").and_then(serde_json::Value::as_bool),
                    error: None,
                },
                Err(e) => ServerInfo {
                    address: addr.to_owned(),
                    reachable: false,
                    version: None,
                    sealed: None,
                    error: Some(e.to_string()),
                },
            }
        }
    };
    match out {
        Output::Text => {
            println!(
                "spike {} ({}, {} build)",
                client.version, client.target, client.profile
            );
            match (&server.reachable, &server.version, &server.error) {
                (true, Some(v), _) => println!("nexus {v} at {}", server.address),
                (true, None, _) => println!(
                    "nexus at {}: reachable (it does not report its version)",
                    server.address
                ),
                (false, _, Some(e)) => println!("nexus at {}: not reachable ({e})", server.address),
                (false, _, None) => println!("nexus at {}: not reachable", server.address),
            }
        }
        _ => print_structured(
            out,
            &serde_json::json!({ "client": client, "server": server }),
        ),
    }
    Ok(())
}
