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
}

/// One immutable snapshot of a process's identity: its SVID, key and trust anchors.
pub struct Identity {
    id: SpiffeId,
    certified: Arc<CertifiedKey>,
    anchors: Arc<Vec<TrustAnchor<'static>>>,
    bundle_der: Vec<CertificateDer<'static>>,
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
        let (id, not_after) = leaf_identity(leaf).map_err(|detail| SvidError::Invalid {
            what: "certificate",
            detail,
        })?;
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
            not_after,
        })
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
    let secs = cert.validity().not_after.timestamp();
    let not_after = UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    Ok((id, not_after))
}

/// A source of the current SVID and trust bundle.
pub trait SvidSource: Send + Sync + 'static {
    /// The newest identity snapshot. Cheap: called on every handshake.
    fn current(&self) -> Arc<Identity>;
    /// The trust domain this source serves.
    fn trust_domain(&self) -> &TrustDomain;
}

/// A fixed identity; rotation is done by calling [`StaticSource::replace`]. Used by tests.
pub struct StaticSource {
    td: TrustDomain,
    current: RwLock<Arc<Identity>>,
}

impl StaticSource {
    /// A source that always returns `identity` until replaced.
    pub fn new(td: TrustDomain, identity: Identity) -> Self {
        Self {
            td,
            current: RwLock::new(Arc::new(identity)),
        }
    }

    /// Swaps in a new identity; new handshakes use it.
    pub fn replace(&self, identity: Identity) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(identity);
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
    /// Loads the files now, then re-checks them every `poll` and swaps in a new identity when
    /// their content changes. A reload that fails keeps the previous identity and logs why.
    pub fn start(td: TrustDomain, paths: PemPaths, poll: Duration) -> Result<Self, SvidError> {
        let (identity, mut stamp) = load_pem_files(&td, &paths)?;
        let inner = Arc::new(StaticSource::new(td.clone(), identity));
        let weak = Arc::downgrade(&inner);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(poll).await;
                let Some(src) = weak.upgrade() else { return };
                let now = file_stamp(&paths);
                if now == stamp {
                    continue;
                }
                match load_pem_files(&td, &paths) {
                    Ok((identity, new_stamp)) => {
                        tracing::info!(id = %identity.id(), "reloaded SVID from PEM files");
                        src.replace(identity);
                        stamp = new_stamp;
                    }
                    // Files are often written one after another; keep the old identity and
                    // try again on the next tick.
                    Err(e) => tracing::warn!(error = %e, "SVID PEM files changed but do not load"),
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
    /// and waits up to `timeout` for the first SVID of trust domain `td`.
    pub async fn connect(
        td: TrustDomain,
        endpoint: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, SvidError> {
        let mut builder = spiffe::X509Source::builder();
        if let Some(ep) = endpoint {
            builder = builder.endpoint(ep);
        }
        let source = tokio::time::timeout(timeout, builder.build())
            .await
            .map_err(|_| SvidError::WorkloadApi(format!("no SVID within {}s", timeout.as_secs())))?
            .map_err(|e| SvidError::WorkloadApi(e.to_string()))?;
        let identity = snapshot_from_source(&td, &source)?;
        let inner = Arc::new(StaticSource::new(td.clone(), identity));
        let mut updates = source.updated();
        let weak = Arc::downgrade(&inner);
        let src = source.clone();
        let task = tokio::spawn(async move {
            while updates.changed().await.is_ok() {
                let Some(target) = weak.upgrade() else { return };
                match snapshot_from_source(&td, &src) {
                    Ok(identity) => {
                        tracing::info!(id = %identity.id(), "SVID rotated via Workload API");
                        target.replace(identity);
                    }
                    Err(e) => tracing::warn!(error = %e, "Workload API update is unusable"),
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
    /// Opens the source, waiting up to `timeout` for a first SVID from the Workload API.
    pub async fn open(
        &self,
        td: &TrustDomain,
        timeout: Duration,
    ) -> Result<Arc<dyn SvidSource>, SvidError> {
        Ok(match self {
            Self::WorkloadApi(ep) => {
                Arc::new(WorkloadApiSource::connect(td.clone(), ep.as_deref(), timeout).await?)
            }
            Self::PemFiles(paths) => Arc::new(PemFileSource::start(
                td.clone(),
                paths.clone(),
                Duration::from_secs(2),
            )?),
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
    /// How long to wait for a first SVID at start.
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

    /// Opens the SVID source.
    pub async fn open(&self) -> Result<Arc<dyn SvidSource>, SvidError> {
        self.source_config()
            .open(&self.trust_domain, self.svid_timeout)
            .await
    }
}
