//! Why a write to Nexus failed, classified by what the controller does next.
//!
//! No variant carries a secret value: Nexus's own messages never contain one, and answers the
//! operator cannot decode are reported without their text (a decoder's message may quote the
//! input).

use spike::client::CliError;
use spike_core::error::ErrorCode;

/// A failed sync with Nexus.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Nexus cannot be reached or cannot serve now (down, sealed, not bootstrapped, overloaded,
    /// or this process has no usable SVID): requeue with backoff, condition `Degraded`.
    #[error("Nexus is unavailable: {reason}")]
    Unavailable {
        /// What failed (addresses and codes, never values).
        reason: String,
    },
    /// Nexus refused the request for good (for example `403 forbidden` for a tenancy escape,
    /// or `400 invalid_policy`): retrying the same spec cannot help; the message goes into the
    /// resource's condition.
    #[error("Nexus refused it ({code}): {message}")]
    Refused {
        /// Nexus's error code.
        code: ErrorCode,
        /// Nexus's message.
        message: String,
    },
    /// Someone else changed the object between this reconcile's read and its write
    /// (`cas_mismatch`, or a create-only policy that now exists): requeue and read again.
    #[error("{what} changed concurrently in Nexus; it will be read again")]
    Conflict {
        /// The secret path or policy name.
        what: String,
    },
    /// The declared input is invalid; nothing was sent.
    #[error("{0}")]
    BadInput(String),
    /// The declared change cannot be made by an operator that may not read the secret (for
    /// example a generated key added to a live secret); nothing was written, and only a spec
    /// change (or an administrator) fixes it.
    #[error("{0}")]
    Unsupported(String),
    /// Nexus answered something unexpected (a bug on one side or the other).
    #[error("unexpected answer from Nexus: {0}")]
    Unexpected(String),
}

impl SyncError {
    /// True when the controller should requeue with backoff (and set `Degraded`), as opposed to
    /// reporting a refusal that only a spec change fixes.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Conflict { .. })
    }

    /// The `reason` of the resource's condition (Kubernetes wants a CamelCase word).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "NexusUnavailable",
            Self::Refused { .. } => "RefusedByNexus",
            Self::Conflict { .. } => "ConcurrentChange",
            Self::BadInput(_) => "InvalidSpec",
            Self::Unsupported(_) => "UnsupportedChange",
            Self::Unexpected(_) => "UnexpectedAnswer",
        }
    }

    /// Maps a client error; `what` names the object for a conflict.
    pub(crate) fn from_client(e: CliError, what: &str) -> Self {
        match e {
            CliError::Api { code, message } => match code {
                ErrorCode::CasMismatch | ErrorCode::AlreadyExists => Self::Conflict {
                    what: what.to_owned(),
                },
                ErrorCode::Sealed
                | ErrorCode::NotInitialized
                | ErrorCode::Unavailable
                | ErrorCode::RateLimited
                | ErrorCode::RequestTimeout
                | ErrorCode::Internal => Self::Unavailable {
                    reason: format!("{message} ({code})"),
                },
                _ => Self::Refused { code, message },
            },
            CliError::Transport(t) => Self::Unavailable {
                reason: t.to_string(),
            },
            CliError::OwnSvid(s) => Self::Unavailable {
                reason: format!("the operator's SVID cannot be used: {s}"),
            },
            // Local encoding and decoding failures: the text is dropped (see the module docs).
            CliError::Other(_) | CliError::Usage(_) | CliError::Denied(_) => Self::Unexpected(
                format!("a call about {what} could not be encoded or decoded"),
            ),
        }
    }

    /// True when Nexus answered that the object does not exist.
    pub(crate) fn is_not_found(e: &CliError) -> bool {
        matches!(
            e,
            CliError::Api {
                code: ErrorCode::NotFound,
                ..
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spike_runtime::net::ClientError;

    fn api(code: ErrorCode) -> CliError {
        CliError::Api {
            code,
            message: "m".into(),
        }
    }

    #[test]
    fn errors_are_classified_by_what_the_controller_does_next() {
        for code in [
            ErrorCode::Sealed,
            ErrorCode::NotInitialized,
            ErrorCode::Unavailable,
            ErrorCode::RateLimited,
            ErrorCode::Internal,
        ] {
            let e = SyncError::from_client(api(code), "secret a");
            assert!(matches!(e, SyncError::Unavailable { .. }), "{code}: {e:?}");
            assert!(e.is_transient(), "{code}");
            assert_eq!(e.reason(), "NexusUnavailable");
        }
        for code in [ErrorCode::CasMismatch, ErrorCode::AlreadyExists] {
            let e = SyncError::from_client(api(code), "secret a");
            assert!(
                matches!(&e, SyncError::Conflict { what } if what == "secret a"),
                "{e:?}"
            );
            assert!(e.is_transient());
        }
        for code in [
            ErrorCode::Forbidden,
            ErrorCode::InvalidPolicy,
            ErrorCode::InvalidPath,
            ErrorCode::TooLarge,
            ErrorCode::BadRequest,
        ] {
            let e = SyncError::from_client(api(code), "secret a");
            assert!(
                matches!(e, SyncError::Refused { code: c, .. } if c == code),
                "{e:?}"
            );
            assert!(!e.is_transient());
            assert_eq!(e.reason(), "RefusedByNexus");
        }
        let down = CliError::Transport(ClientError::Connect {
            addr: "127.0.0.1:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        });
        let e = SyncError::from_client(down, "secret a");
        assert!(
            matches!(e, SyncError::Unavailable { .. }) && e.is_transient(),
            "{e:?}"
        );
    }

    #[test]
    fn an_undecodable_answer_is_reported_without_its_text() {
        // A decoder's message can quote what it could not read, which may be a value.
        let e = CliError::Other(anyhow::anyhow!("invalid type: string \"hunter2\""));
        let e = SyncError::from_client(e, "secret a");
        assert!(matches!(e, SyncError::Unexpected(_)), "{e:?}");
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("secret a"), "{text}");
        }
    }
}
