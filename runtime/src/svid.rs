//! Where a process gets its X.509-SVID and trust bundle.
//!
//! One trait, [`SvidSource`], with two production implementations: the SPIFFE Workload API
//! ([`WorkloadApiSource`], as SPIRE and the SPIFFE CSI driver provide) and PEM files reloaded
//! on change ([`PemFileSource`], for cert-manager's csi-driver-spiffe or plain PKI). Both keep
//! an immutable [`Identity`] snapshot behind a lock and swap it on rotation, so every new TLS
//! handshake sees the newest SVID without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, TrustAnchor};

use spike_core::id::{SpiffeId, TrustDomain};

/// Why an SVID or bundle could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SvidError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The PEM or DER content is unusable.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// Which part (certificate, key, bundle).
        what: &'static str,
        /// What is wrong (never key material).
        detail: String,
    },
    /// The SVID belongs to another trust domain than the one configured.
    #[error("SVID {id} is not in trust domain {expected}")]
    WrongTrustDomain {
        /// The SVID's ID.
        id: String,
        /// The configured trust domain.
        expected: String,
    },
    /// The Workload API could not be reached or gave no usable SVID.
    #[error("SPIFFE Workload API: {0}")]
    WorkloadApi(String),
    /// The SVID's validity period has ended.
    #[error("SVID {id} expired at {not_after} (now {now}); renew it")]
    Expired {
        /// The SVID's ID.
        id: String,
        /// Its notAfter, RFC 3339.
        not_after: String,
        /// The time of the check, RFC 3339.
        now: String,
    },
    /// The SVID's validity period has not begun (clock skew, or issued for later).
    #[error("SVID {id} is not valid before {not_before} (now {now}); check the clocks")]
    NotYetValid {
        /// The SVID's ID.
        id: String,
        /// Its notBefore, RFC 3339.
        not_before: String,
        /// The time of the check, RFC 3339.
        now: String,
    },
    /// The SVID names another workload than this component.
    #[error("SVID {id} is not this component's identity {expected}")]
    NotExpectedId {
        /// The SVID's ID.
        id: String,
        /// The ID this component must have.
        expected: String,
    },
    /// No Workload API endpoint is configured at all.
    #[error(
        "no SPIFFE Workload API socket: SPIFFE_ENDPOINT_SOCKET is not set and no \
         --spiffe-endpoint-socket or PEM files were given"
    )]
    NoEndpoint,
    /// The Workload API socket does not exist (the agent is not running, or the path is stale).
    #[error("no SPIFFE Workload API socket at {}", path.display())]
    NoSocket {
        /// The socket path.
        path: PathBuf,
    },
    /// The Workload API answered, and refused this process an identity.
    #[error("the SPIFFE Workload API refused this process an identity: {reason}")]
    Refused {
        /// The agent's reason, as it gave it.
        reason: String,
    },
    /// The PEM files did not all appear within the SVID timeout.
    #[error("SVID PEM files still missing after svid_timeout ({waited:?}): {files}")]
    Missing {
        /// The missing files, comma-separated.
        files: String,
        /// How long was waited.
        waited: Duration,
    },
}

/// One immutable snapshot of a process's identity: its SVID, key and trust anchors.
pub struct Identity {
    id: SpiffeId,
    certified: Arc<CertifiedKey>,
    anchors: Arc<Vec<TrustAnchor<'static>>>,
    bundle_der: Vec<CertificateDer<'static>>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .field("not_after", &self.not_after)
            .field("bundle_certs", &self.bundle_der.len())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Builds a snapshot from DER parts, checking that the leaf is a valid SVID of `td`.
    pub fn from_der(
        td: &TrustDomain,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        bundle: Vec<CertificateDer<'static>>,
    ) -> Result<Self, SvidError> {
        let leaf = chain.first().ok_or_else(|| SvidError::Invalid {
            what: "certificate",
            detail: "the chain is empty".into(),
        })?;
        let invalid = |detail| SvidError::Invalid {
            what: "certificate",
            detail,
        };
        let (id, _) = leaf_identity(leaf).map_err(invalid)?;
        let (not_before, not_after) = validity(leaf).map_err(invalid)?;
        if !id.is_member_of(td) {
            return Err(SvidError::WrongTrustDomain {
                id: id.to_string(),
                expected: td.to_string(),
            });
        }
        if bundle.is_empty() {
            return Err(SvidError::Invalid {
                what: "bundle",
                detail: format!("no CA certificates for trust domain {td}"),
            });
        }
        let anchors = bundle
            .iter()
            .map(|c| {
                webpki::anchor_from_trusted_cert(c)
                    .map(|a| a.to_owned())
                    .map_err(|e| SvidError::Invalid {
                        what: "bundle",
                        detail: format!("CA certificate: {e}"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let provider = rustls::crypto::ring::default_provider();
        let signing =
            provider
                .key_provider
                .load_private_key(key)
                .map_err(|_| SvidError::Invalid {
                    what: "private key",
                    detail: "not a supported PKCS#8, SEC1 or PKCS#1 key".into(),
                })?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(|_| SvidError::Invalid {
            what: "private key",
            detail: "it does not match the certificate".into(),
        })?;
        Ok(Self {
            id,
            certified: Arc::new(certified),
            anchors: Arc::new(anchors),
            bundle_der: bundle,
            not_before,
            not_after,
        })
    }

    /// Checks that this SVID may be used at `now` by a component whose identity is
    /// `expected` (if it knows it). The chain and key were checked when it was built.
    pub fn check_usable(
        &self,
        now: SystemTime,
        expected: Option<&SpiffeId>,
    ) -> Result<(), SvidError> {
        let stamp = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        if now >= self.not_after {
            return Err(SvidError::Expired {
                id: self.id.to_string(),
                not_after: stamp(self.not_after),
                now: stamp(now),
            });
        }
        if now < self.not_before {
            return Err(SvidError::NotYetValid {
                id: self.id.to_string(),
                not_before: stamp(self.not_before),
                now: stamp(now),
            });
        }
        match expected {
            Some(want) if want != &self.id => Err(SvidError::NotExpectedId {
                id: self.id.to_string(),
                expected: want.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Builds a snapshot from PEM text: the certificate chain (leaf first), the key, the bundle.
    pub fn from_pem(
        td: &TrustDomain,
        chain_pem: &[u8],
        key_pem: &[u8],
        bundle_pem: &[u8],
    ) -> Result<Self, SvidError> {
        let chain = parse_certs(chain_pem, "certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| SvidError::Invalid {
            what: "private key",
            detail: "no PEM private key found".into(),
        })?;
        let bundle = parse_certs(bundle_pem, "bundle")?;
        Self::from_der(td, chain, key, bundle)
    }

    /// The SVID's SPIFFE ID.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The certificate and signing key, as rustls wants them.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }

    /// The trust anchors of the trust domain.
    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// The bundle's CA certificates.
    pub fn bundle(&self) -> &[CertificateDer<'static>] {
        &self.bundle_der
    }

    /// When the SVID expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

fn parse_certs(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, SvidError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SvidError::Invalid {
            what,
            detail: format!("bad PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(SvidError::Invalid {
            what,
            detail: "no PEM certificate found".into(),
        });
    }
    Ok(certs)
}

/// Reads the SPIFFE ID and expiry of an X.509-SVID leaf, enforcing the SVID profile: exactly
/// one URI SAN holding a valid SPIFFE ID with a path, not a CA, digitalSignature usage.
pub fn leaf_identity(der: &[u8]) -> Result<(SpiffeId, SystemTime), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| "not a DER X.509 certificate".to_owned())?;
    let mut uris = Vec::new();
    for ext in cert.extensions() {
        if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) =
            ext.parsed_extension()
        {
            for name in &san.general_names {
                if let GeneralName::URI(u) = name {
                    uris.push(*u);
                }
            }
        }
    }
    let [uri] = uris.as_slice() else {
        return Err(format!(
            "an X.509-SVID has exactly one URI SAN, this certificate has {}",
            uris.len()
        ));
    };
    let id = SpiffeId::new(uri).map_err(|e| format!("URI SAN: {e}"))?;
    if id.path().is_empty() {
        return Err("an X.509-SVID's SPIFFE ID must have a path".into());
    }
    if let Ok(Some(bc)) = cert.basic_constraints()
        && bc.value.ca
    {
        return Err("an X.509-SVID leaf must not be a CA".into());
    }
    match cert.key_usage() {
        Ok(Some(ku)) if ku.value.digital_signature() && !ku.value.key_cert_sign() => {}
        _ => return Err("an X.509-SVID leaf needs KeyUsage digitalSignature only".into()),
    }
    Ok((id, validity_of(&cert).1))
}

/// The notBefore and notAfter of a DER certificate.
fn validity(der: &[u8]) -> Result<(SystemTime, SystemTime), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| "not a DER X.509 certificate".to_owned())?;
    Ok(validity_of(&cert))
}

fn validity_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> (SystemTime, SystemTime) {
    let at = |t: x509_parser::time::ASN1Time| {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
    };
    (
        at(cert.validity().not_before),
        at(cert.validity().not_after),
    )
}

/// A source of the current SVID and trust bundle.
pub trait SvidSource: Send + Sync + 'static {
    /// The newest identity snapshot. Cheap: called on every handshake.
    fn current(&self) -> Arc<Identity>;
    /// The trust domain this source serves.
    fn trust_domain(&self) -> &TrustDomain;
    /// Pins this component's identity: fails unless the current SVID is `id`, and (for the
    /// sources that reload) refuses every later SVID with another ID, keeping the previous
    /// one. The default only checks the current SVID.
    fn expect_id(&self, id: &SpiffeId) -> Result<(), SvidError> {
        self.current().check_usable(SystemTime::now(), Some(id))
    }
}

/// A fixed identity; rotation is done by calling [`StaticSource::replace`]. Used by tests.
pub struct StaticSource {
    td: TrustDomain,
    current: RwLock<Arc<Identity>>,
    expected: RwLock<Option<SpiffeId>>,
}

impl StaticSource {
    /// A source that always returns `identity` until replaced.
    pub fn new(td: TrustDomain, identity: Identity) -> Self {
        Self {
            td,
            current: RwLock::new(Arc::new(identity)),
            expected: RwLock::new(None),
        }
    }

    /// Swaps in a new identity; new handshakes use it. Unchecked: tests use it to serve
    /// expired or foreign SVIDs on purpose.
    pub fn replace(&self, identity: Identity) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(identity);
    }

    /// Swaps in `identity` only if it is usable now and is the pinned ID (see
    /// [`SvidSource::expect_id`]); otherwise the previous identity stays and the error says why.
    pub fn try_replace(&self, identity: Identity) -> Result<(), SvidError> {
        let expected = self
            .expected
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        identity.check_usable(SystemTime::now(), expected.as_ref())?;
        self.replace(identity);
        Ok(())
    }
}

impl SvidSource for StaticSource {
    fn current(&self) -> Arc<Identity> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    fn trust_domain(&self) -> &TrustDomain {
        &self.td
    }
    fn expect_id(&self, id: &SpiffeId) -> Result<(), SvidError> {
        let current = self.current();
        if current.id() != id {
            return Err(SvidError::NotExpectedId {
                id: current.id().to_string(),
                expected: id.to_string(),
            });
        }
        *self.expected.write().unwrap_or_else(|p| p.into_inner()) = Some(id.clone());
        Ok(())
    }
}

/// PEM files on disk (certificate chain, key, bundle), re-read when they change.
pub struct PemFileSource {
    inner: Arc<StaticSource>,
    task: tokio::task::JoinHandle<()>,
}

/// Paths of the three PEM files of a [`PemFileSource`].
#[derive(Debug, Clone)]
pub struct PemPaths {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// The trust bundle (CA certificates of the trust domain).
    pub bundle: PathBuf,
}

impl PemFileSource {
    /// Waits up to `timeout` for all three files to exist (a CSI volume is often populated
    /// just after the container starts), polling every `poll`, then [`start`](Self::start)s.
    pub async fn open(
        td: TrustDomain,
        paths: PemPaths,
        poll: Duration,
        timeout: Duration,
    ) -> Result<Self, SvidError> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Poll at least every 100 ms so a short timeout is not overshot by a long poll.
        let step = poll.min(Duration::from_millis(100));
        loop {
            let missing: Vec<String> = [&paths.cert, &paths.key, &paths.bundle]
                .into_iter()
                .filter(|f| !f.exists())
                .map(|f| f.display().to_string())
                .collect();
            if missing.is_empty() {
                return Self::start(td, paths, poll);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SvidError::Missing {
                    files: missing.join(", "),
                    waited: timeout,
                });
            }
            tokio::time::sleep(step).await;
        }
    }

    /// Loads the files now (an SVID that is expired or not yet valid is an error), then
    /// re-checks them every `poll` and swaps in a new identity when their content changes. A
    /// reload that fails or is refused keeps the previous identity and logs one WARN line
    /// per content of the files.
    pub fn start(td: TrustDomain, paths: PemPaths, poll: Duration) -> Result<Self, SvidError> {
        let (identity, mut stamp) = load_pem_files(&td, &paths)?;
        identity.check_usable(SystemTime::now(), None)?;
        let inner = Arc::new(StaticSource::new(td.clone(), identity));
        let weak = Arc::downgrade(&inner);
        let task = tokio::spawn(async move {
            let mut warned = None;
            loop {
                tokio::time::sleep(poll).await;
                let Some(src) = weak.upgrade() else { return };
                let now = file_stamp(&paths);
                if now == stamp {
                    continue;
                }
                let loaded = load_pem_files(&td, &paths).and_then(|(identity, new_stamp)| {
                    let id = identity.id().clone();
                    src.try_replace(identity).map(|()| (id, new_stamp))
                });
                match loaded {
                    Ok((id, new_stamp)) => {
                        tracing::info!(%id, "reloaded SVID from PEM files");
                        stamp = new_stamp;
                        warned = None;
                    }
                    // Files are often written one after another: keep the old identity, try
                    // again on the next tick, and say so once for this content.
                    Err(e) => {
                        if warned.as_ref() != Some(&now) {
                            tracing::warn!(
                                error = %e,
                                "SVID PEM files changed but are refused; keeping the previous SVID"
                            );
                            warned = Some(now);
                        }
                    }
                }
            }
        });
        Ok(Self { inner, task })
    }
}

impl Drop for PemFileSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SvidSource for PemFileSource {
    fn current(&self) -> Arc<Identity> {
        self.inner.current()
    }
    fn trust_domain(&self) -> &TrustDomain {
        self.inner.trust_domain()
    }
    fn expect_id(&self, id: &SpiffeId) -> Result<(), SvidError> {
        self.inner.expect_id(id)
    }
}

type Stamp = Vec<Option<(SystemTime, u64)>>;

fn file_stamp(p: &PemPaths) -> Stamp {
    [&p.cert, &p.key, &p.bundle]
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

fn load_pem_files(td: &TrustDomain, p: &PemPaths) -> Result<(Identity, Stamp), SvidError> {
    let stamp = file_stamp(p);
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| SvidError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let key = zeroize::Zeroizing::new(read(&p.key)?);
    let identity = Identity::from_pem(td, &read(&p.cert)?, &key, &read(&p.bundle)?)?;
    Ok((identity, stamp))
}

/// The SPIFFE Workload API (SPIRE agent, SPIFFE CSI driver, or SPIKE's dev agent).
pub struct WorkloadApiSource {
    inner: Arc<StaticSource>,
    source: spiffe::X509Source,
    task: tokio::task::JoinHandle<()>,
}

impl WorkloadApiSource {
    /// Connects to `endpoint` (`unix:///path/to/socket`; `None` reads `SPIFFE_ENDPOINT_SOCKET`)
    /// and waits up to `timeout` for the first SVID of trust domain `td`, as `patience` says.
    pub async fn connect(
        td: TrustDomain,
        endpoint: Option<&str>,
        timeout: Duration,
        patience: Patience,
    ) -> Result<Self, SvidError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let endpoint = match endpoint {
            Some(ep) => ep.to_owned(),
            None => std::env::var(spiffe::workload_api::endpoint::WORKLOAD_API_ENDPOINT_ENV)
                .ok()
                .filter(|ep| !ep.is_empty())
                .ok_or(SvidError::NoEndpoint)?,
        };
        let parsed = spiffe::transport::Endpoint::parse(&endpoint)
            .map_err(|e| SvidError::WorkloadApi(format!("{endpoint}: {e}")))?;
        if let spiffe::transport::Endpoint::Unix(path) = &parsed {
            wait_for_socket(path, deadline, patience).await?;
        }
        let build = spiffe::X509Source::builder().endpoint(&endpoint).build();
        tokio::pin!(build);
        // A command asks the agent directly once the source has not synced quickly: a refusal
        // is final for it, and the agent's reason is worth showing at once. (X509Source keeps
        // retrying refusals, which is right for a service whose registration entry may reach
        // the agent after it starts.)
        let quick = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + PROBE_AFTER),
            &mut build,
        )
        .await;
        let built = match quick {
            Ok(r) => Ok(r),
            Err(_) => {
                if patience == Patience::Command {
                    probe_refusal(&endpoint).await?;
                }
                tokio::time::timeout_at(deadline, build).await
            }
        };
        let source = built
            .map_err(|_| SvidError::WorkloadApi(format!("no SVID within {}s", timeout.as_secs())))?
            .map_err(|e| SvidError::WorkloadApi(e.to_string()))?;
        let identity = snapshot_from_source(&td, &source)?;
        identity.check_usable(SystemTime::now(), None)?;
        let inner = Arc::new(StaticSource::new(td.clone(), identity));
        let mut updates = source.updated();
        let weak = Arc::downgrade(&inner);
        let src = source.clone();
        let task = tokio::spawn(async move {
            while updates.changed().await.is_ok() {
                let Some(target) = weak.upgrade() else { return };
                let update = snapshot_from_source(&td, &src).and_then(|identity| {
                    let id = identity.id().clone();
                    target.try_replace(identity).map(|()| id)
                });
                match update {
                    Ok(id) => tracing::info!(%id, "SVID rotated via Workload API"),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "Workload API update is refused; keeping the previous SVID"
                    ),
                }
            }
        });
        Ok(Self {
            inner,
            source,
            task,
        })
    }

    /// Stops watching the Workload API.
    pub async fn shutdown(&self) {
        self.task.abort();
        self.source.shutdown().await;
    }
}

/// How long a command lets the Workload API source sync before asking the agent why not.
const PROBE_AFTER: Duration = Duration::from_millis(500);

/// What a Workload API source waits for before its first SVID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// A service: its socket may appear late (an agent restarting, a CSI volume being
    /// mounted) and its registration entry may reach the agent after it starts, so both are
    /// waited for, up to the timeout.
    Service,
    /// A command a person typed: a missing socket or a refusal is said at once; only a socket
    /// that exists and answers slowly is waited for.
    Command,
}

async fn wait_for_socket(
    path: &Path,
    deadline: tokio::time::Instant,
    patience: Patience,
) -> Result<(), SvidError> {
    let mut warned = false;
    loop {
        // Following symlinks, as connecting does: a dangling link is no socket.
        if std::fs::metadata(path).is_ok() {
            return Ok(());
        }
        if patience == Patience::Command || tokio::time::Instant::now() >= deadline {
            return Err(SvidError::NoSocket {
                path: path.to_owned(),
            });
        }
        if !warned {
            tracing::warn!(path = %path.display(), "no Workload API socket yet; waiting for it");
            warned = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// This process's real uid, as Unix attestation sees it: the owner of its `/proc` entry (no
/// libc call needed). `None` without `/proc`.
pub fn process_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// What Unix attestation sees of this process: its executable and uid (its own facts, so
/// nothing the agent knows is revealed by saying them).
fn this_process() -> String {
    let exe = std::env::current_exe().map_or_else(|_| "?".into(), |p| p.display().to_string());
    let uid = process_uid().map_or_else(|| "?".into(), |u| u.to_string());
    format!("executable {exe}, uid {uid}")
}

/// Fetches once, bounded, to learn whether the agent refuses this process; any other outcome
/// (success, a slow or failing agent) is left to the source's own wait.
async fn probe_refusal(endpoint: &str) -> Result<(), SvidError> {
    use spiffe::WorkloadApiError as E;
    let fetch = async {
        let client = spiffe::WorkloadApiClient::connect_to(endpoint).await?;
        client.fetch_x509_svid().await.map(drop)
    };
    match tokio::time::timeout(PROBE_AFTER, fetch).await {
        Ok(Err(E::NoIdentityIssued)) => Err(SvidError::Refused {
            reason: format!(
                "no identity issued: no registration entry matches this process ({})",
                this_process()
            ),
        }),
        Ok(Err(E::PermissionDenied(reason))) => Err(SvidError::Refused { reason }),
        _ => Ok(()),
    }
}

impl Drop for WorkloadApiSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SvidSource for WorkloadApiSource {
    fn current(&self) -> Arc<Identity> {
        self.inner.current()
    }
    fn trust_domain(&self) -> &TrustDomain {
        self.inner.trust_domain()
    }
    fn expect_id(&self, id: &SpiffeId) -> Result<(), SvidError> {
        self.inner.expect_id(id)
    }
}

fn snapshot_from_source(td: &TrustDomain, src: &spiffe::X509Source) -> Result<Identity, SvidError> {
    let svid = src
        .svid()
        .map_err(|e| SvidError::WorkloadApi(e.to_string()))?;
    let spiffe_td =
        spiffe::TrustDomain::new(td.as_str()).map_err(|e| SvidError::WorkloadApi(e.to_string()))?;
    let bundle = src
        .try_bundle_for_trust_domain(&spiffe_td)
        .ok_or_else(|| SvidError::WorkloadApi(format!("no bundle for trust domain {td}")))?;
    let chain = svid
        .cert_chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        svid.private_key().as_bytes().to_vec(),
    ));
    let roots = bundle
        .authorities()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    Identity::from_der(td, chain, key, roots)
}

/// Where a service gets its SVID: the Workload API, or PEM files. Parsed from flags/config.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// The SPIFFE Workload API at this endpoint (`unix:///...`); `None` reads
    /// `SPIFFE_ENDPOINT_SOCKET`.
    WorkloadApi(Option<String>),
    /// PEM files, re-read when they change.
    PemFiles(PemPaths),
}

impl SourceConfig {
    /// Opens the source, waiting up to `timeout` for a first SVID (or for the PEM files), as
    /// `patience` says.
    pub async fn open(
        &self,
        td: &TrustDomain,
        timeout: Duration,
        patience: Patience,
    ) -> Result<Arc<dyn SvidSource>, SvidError> {
        Ok(match self {
            Self::WorkloadApi(ep) => Arc::new(
                WorkloadApiSource::connect(td.clone(), ep.as_deref(), timeout, patience).await?,
            ),
            Self::PemFiles(paths) => Arc::new(
                PemFileSource::open(td.clone(), paths.clone(), Duration::from_secs(2), timeout)
                    .await?,
            ),
        })
    }
}

/// Command-line flags every service uses to find its identity. Each argument id is the key it
/// sets in the `[identity]` section ([`crate::config`]); whether the PEM files come together
/// is checked on the merged configuration, so a file, variable or flag may give each one.
#[derive(Debug, Clone, clap::Args)]
pub struct IdentityArgs {
    /// Trust domain of this deployment.
    #[arg(
        id = "identity.trust_domain",
        value_name = "TRUST_DOMAIN",
        long = "trust-domain",
        global = true,
        env = "SPIKE_TRUST_DOMAIN",
        default_value = "spike.dev"
    )]
    pub trust_domain: TrustDomain,
    /// SPIFFE Workload API endpoint (e.g. unix:///run/spire/agent.sock); ignored when PEM files
    /// are given.
    #[arg(
        id = "identity.spiffe_endpoint_socket",
        value_name = "URI",
        long = "spiffe-endpoint-socket",
        global = true,
        env = "SPIFFE_ENDPOINT_SOCKET"
    )]
    pub spiffe_endpoint_socket: Option<String>,
    /// X.509-SVID certificate chain (PEM). Use with --svid-key and --svid-bundle instead of the
    /// Workload API, e.g. with cert-manager's csi-driver-spiffe.
    #[arg(
        id = "identity.svid_cert",
        value_name = "FILE",
        long = "svid-cert",
        global = true,
        env = "SPIKE_SVID_CERT"
    )]
    pub svid_cert: Option<PathBuf>,
    /// X.509-SVID private key (PEM).
    #[arg(
        id = "identity.svid_key",
        value_name = "FILE",
        long = "svid-key",
        global = true,
        env = "SPIKE_SVID_KEY"
    )]
    pub svid_key: Option<PathBuf>,
    /// Trust bundle (PEM CA certificates of the trust domain).
    #[arg(
        id = "identity.svid_bundle",
        value_name = "FILE",
        long = "svid-bundle",
        global = true,
        env = "SPIKE_SVID_BUNDLE"
    )]
    pub svid_bundle: Option<PathBuf>,
    /// How long to wait at start for a first SVID: from the Workload API, or for the PEM files to appear.
    #[arg(
        id = "identity.svid_timeout",
        value_name = "DURATION",
        long = "svid-timeout",
        global = true,
        env = "SPIKE_SVID_TIMEOUT",
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    pub svid_timeout: Duration,
}

impl IdentityArgs {
    /// The SVID source these flags describe.
    pub fn source_config(&self) -> SourceConfig {
        match (&self.svid_cert, &self.svid_key, &self.svid_bundle) {
            (Some(cert), Some(key), Some(bundle)) => SourceConfig::PemFiles(PemPaths {
                cert: cert.clone(),
                key: key.clone(),
                bundle: bundle.clone(),
            }),
            _ => SourceConfig::WorkloadApi(self.spiffe_endpoint_socket.clone()),
        }
    }

    /// Opens the SVID source of a service (see [`Patience::Service`]).
    pub async fn open(&self) -> Result<Arc<dyn SvidSource>, SvidError> {
        self.open_with(Patience::Service).await
    }

    /// Opens the SVID source, waiting as `patience` says.
    pub async fn open_with(&self, patience: Patience) -> Result<Arc<dyn SvidSource>, SvidError> {
        self.source_config()
            .open(&self.trust_domain, self.svid_timeout, patience)
            .await
    }
}
