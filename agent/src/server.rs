//! The agent: configuration, the Workload API service, SVID rotation and the handle that runs
//! it in-process.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::{Stream, StreamExt};
use spike_core::id::{SpiffeId, TrustDomain};
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::SECURITY_HEADER;
use crate::attest::{self, AttestedStream, PeerInfo};
use crate::ca::{CaError, CertificateAuthority, IssuedSvid};
use crate::proto::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};
use crate::proto::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svid, X509svidRequest,
    X509svidResponse,
};
use crate::registration::{Caller, Registration, RegistrationError};
use crate::socket::{self, SocketFileId};

/// The default lifetime of an X.509-SVID. SVIDs are re-issued at half their lifetime.
pub const DEFAULT_SVID_TTL: Duration = Duration::from_secs(60 * 60);
const MIN_SVID_TTL: Duration = Duration::from_secs(1);
/// Longest the agent waits for open connections to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Retry delay when re-issuing an SVID failed (the old one stays in use meanwhile).
const ROTATION_RETRY: Duration = Duration::from_secs(1);

/// What to run: trust domain, socket, SVID lifetime and initial registrations.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AgentConfig {
    /// The trust domain the agent's CA issues for.
    pub trust_domain: TrustDomain,
    /// Where to listen. Its directory is created with mode 0700 if missing, and refused if it
    /// exists with a looser mode or another owner.
    pub socket_path: PathBuf,
    /// Lifetime of each X.509-SVID; they are re-issued (new key, new certificate) at half of it.
    pub svid_ttl: Duration,
    /// Initial registration entries (replace them later with
    /// [`AgentHandle::set_registrations`]).
    pub registrations: Vec<Registration>,
}

impl AgentConfig {
    /// A configuration with the default SVID lifetime and no registrations.
    pub fn new(trust_domain: TrustDomain, socket_path: impl Into<PathBuf>) -> Self {
        Self {
            trust_domain,
            socket_path: socket_path.into(),
            svid_ttl: DEFAULT_SVID_TTL,
            registrations: Vec::new(),
        }
    }
}

/// Why the agent could not start or could not apply a change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The socket path is unusable (no file name, too long, not UTF-8, or a non-socket file
    /// is in the way).
    #[error("socket path {}: {reason}", path.display())]
    SocketPath {
        /// The offending path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The socket's directory is not private to the agent's user.
    #[error("socket directory {}: {reason}", path.display())]
    SocketDir {
        /// The directory.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// Another agent is serving on the socket.
    #[error("socket {} is in use by a running agent; stop it or choose another path", path.display())]
    SocketInUse {
        /// The socket.
        path: PathBuf,
    },
    /// An I/O error on the socket or its directory.
    #[error("socket {}: {source}", path.display())]
    Socket {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A registration entry was refused.
    #[error(transparent)]
    Registration(#[from] RegistrationError),
    /// The CA failed to start or to issue.
    #[error("certificate authority: {0}")]
    Ca(#[from] CaError),
    /// The SVID lifetime is out of range.
    #[error("invalid SVID TTL {}: it must be at least 1s and shorter than the CA's lifetime", humantime::format_duration(*.0))]
    InvalidTtl(Duration),
    /// The gRPC server stopped with an error.
    #[error("workload API server failed: {0}")]
    Server(String),
}

/// Starts the agent: creates the CA, issues SVIDs for the registrations, binds the socket and
/// serves in background tasks on the current tokio runtime. Returns once the socket accepts
/// connections.
///
/// Nothing is created on disk if the configuration is refused.
pub async fn start(config: AgentConfig) -> Result<AgentHandle, AgentError> {
    tracing::warn!(
        "spike-agent is a development and test tool, NOT a SPIRE replacement: its CA key lives \
         in memory, it attests callers only by Unix credentials, and it serves no JWT-SVIDs. \
         Use SPIRE or cert-manager's csi-driver-spiffe in production."
    );
    let AgentConfig {
        trust_domain,
        socket_path,
        svid_ttl,
        registrations,
    } = config;
    if svid_ttl < MIN_SVID_TTL {
        return Err(AgentError::InvalidTtl(svid_ttl));
    }
    validate_all(&registrations, &trust_domain)?;
    let ca = CertificateAuthority::new(&trust_domain)?;
    if std::time::SystemTime::now()
        .checked_add(svid_ttl)
        .is_none_or(|end| end >= ca.not_after())
    {
        return Err(AgentError::InvalidTtl(svid_ttl));
    }

    let (updates, _) = watch::channel(0u64);
    let shared = Arc::new(Shared {
        td_id: trust_domain.id_string(),
        ca,
        ttl: svid_ttl,
        state: Mutex::new(State {
            registrations: Arc::from(Vec::new()),
            svids: HashMap::new(),
        }),
        updates,
        cancel: CancellationToken::new(),
        seq: AtomicU64::new(0),
    });
    shared.replace_registrations(registrations)?;

    let socket_path = socket::prepare(&socket_path)?;
    let listener = UnixListener::bind(&socket_path).map_err(|source| AgentError::Socket {
        path: socket_path.clone(),
        source,
    })?;
    let socket_id = SocketFileId::of(&socket_path).map_err(|source| AgentError::Socket {
        path: socket_path.clone(),
        source,
    })?;

    let server = tokio::spawn(serve(listener, shared.clone()));
    let rotation = tokio::spawn(rotation_loop(shared.clone()));
    tracing::info!(
        socket = %socket_path.display(),
        trust_domain = %trust_domain,
        svid_ttl = %humantime::format_duration(svid_ttl),
        "SPIFFE Workload API listening; export SPIFFE_ENDPOINT_SOCKET=unix://{}",
        socket_path.display()
    );
    Ok(AgentHandle {
        trust_domain,
        shared,
        socket_path,
        socket_id,
        server: Some(server),
        rotation: Some(rotation),
    })
}

/// A running agent. Dropping it stops the agent and removes the socket without waiting; call
/// [`AgentHandle::shutdown`] to wait for it to finish.
#[derive(Debug)]
pub struct AgentHandle {
    trust_domain: TrustDomain,
    shared: Arc<Shared>,
    socket_path: PathBuf,
    socket_id: SocketFileId,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    rotation: Option<JoinHandle<()>>,
}

impl AgentHandle {
    /// The absolute path of the socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The socket as a Workload API endpoint URI (`unix:///…`), the value for
    /// `SPIFFE_ENDPOINT_SOCKET`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket_path.display())
    }

    /// The trust domain served.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The agent's CA (for its bundle, or to mint extra SVIDs in tests).
    pub fn ca(&self) -> &CertificateAuthority {
        &self.shared.ca
    }

    /// The SVID currently served for `id`, if an entry registers it.
    pub fn current_svid(&self, id: &SpiffeId) -> Option<IssuedSvid> {
        self.shared
            .lock()
            .svids
            .get(id)
            .map(|current| current.svid.clone())
    }

    /// The registration entries in force.
    pub fn registrations(&self) -> Vec<Registration> {
        self.shared.lock().registrations.to_vec()
    }

    /// Replaces all registration entries. Every entry is validated first; if any is refused,
    /// nothing changes. Open streams get the new state at once, and callers that no longer
    /// match any entry get `PermissionDenied` on their streams.
    pub fn set_registrations(&self, registrations: Vec<Registration>) -> Result<(), AgentError> {
        self.shared.replace_registrations(registrations)
    }

    /// Adds one registration entry to those in force.
    pub fn add_registration(&self, registration: Registration) -> Result<(), AgentError> {
        let mut all = self.registrations();
        all.push(registration);
        self.shared.replace_registrations(all)
    }

    /// Re-issues every SVID now (new keys, new certificates) and pushes them to open streams.
    pub fn rotate_now(&self) -> Result<(), AgentError> {
        self.shared.rotate_all()?;
        Ok(())
    }

    /// Stops accepting, ends open streams, waits (bounded) for connections to close and
    /// removes the socket.
    pub async fn shutdown(mut self) -> Result<(), AgentError> {
        self.shared.cancel.cancel();
        let mut result = Ok(());
        if let Some(mut server) = self.server.take() {
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => result = Err(AgentError::Server(e.to_string())),
                Ok(Err(e)) => result = Err(AgentError::Server(e.to_string())),
                Err(_) => {
                    tracing::warn!("connections still open after the shutdown grace period");
                    server.abort();
                }
            }
        }
        if let Some(rotation) = self.rotation.take() {
            // Cancelled above; it exits at its next await point.
            let _ = rotation.await;
        }
        socket::remove_if_ours(&self.socket_path, self.socket_id);
        tracing::info!(socket = %self.socket_path.display(), "agent stopped");
        result
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
        if self.server.is_some() {
            // Not shut down explicitly: the tasks end on their own after the cancel.
            socket::remove_if_ours(&self.socket_path, self.socket_id);
        }
    }
}

struct Shared {
    td_id: String,
    ca: CertificateAuthority,
    ttl: Duration,
    state: Mutex<State>,
    /// Bumped on every change of served material; streams and the rotation loop watch it.
    updates: watch::Sender<u64>,
    cancel: CancellationToken,
    /// Source of [`Current::seq`].
    seq: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("trust_domain", &self.td_id)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

struct State {
    registrations: Arc<[Registration]>,
    svids: HashMap<SpiffeId, Arc<Current>>,
}

/// The SVID served for one ID, and when to replace it.
struct Current {
    svid: IssuedSvid,
    rotate_at: Instant,
    /// Unique per issuance, so a stream can tell whether what it would send has changed.
    seq: u64,
}

/// What one caller is entitled to right now, in registration order (first = default).
type Entitlement = Vec<(Arc<Current>, Option<String>)>;

fn validate_all(registrations: &[Registration], td: &TrustDomain) -> Result<(), AgentError> {
    for (i, r) in registrations.iter().enumerate() {
        r.validate(i, td)?;
    }
    Ok(())
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated (every update is a
        // single assignment), so a poisoned lock is safe to keep using.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn issue(&self, id: &SpiffeId) -> Result<Arc<Current>, CaError> {
        let svid = self.ca.issue(id, self.ttl)?;
        Ok(Arc::new(Current {
            svid,
            rotate_at: Instant::now() + self.ttl / 2,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        }))
    }

    fn notify(&self) {
        self.updates.send_modify(|g| *g = g.wrapping_add(1));
    }

    fn replace_registrations(&self, registrations: Vec<Registration>) -> Result<(), AgentError> {
        validate_all(&registrations, self.ca.trust_domain())?;
        let mut state = self.lock();
        let mut svids = HashMap::new();
        for r in &registrations {
            let id = r.spiffe_id();
            if svids.contains_key(id) {
                continue;
            }
            // Keep the SVID of an ID that stays registered; issue one for a new ID.
            let current = match state.svids.get(id) {
                Some(c) => c.clone(),
                None => self.issue(id)?,
            };
            svids.insert(id.clone(), current);
        }
        for r in registrations.iter().filter(|r| r.is_any()) {
            tracing::warn!(
                spiffe_id = %r.spiffe_id(),
                "registration with any = true: EVERY process that can reach the socket gets this identity"
            );
        }
        if registrations.is_empty() {
            tracing::warn!("no registration entries: every caller will be denied");
        }
        tracing::info!(entries = registrations.len(), "registrations in force");
        *state = State {
            registrations: Arc::from(registrations),
            svids,
        };
        drop(state);
        self.notify();
        Ok(())
    }

    fn rotate_all(&self) -> Result<(), CaError> {
        let mut state = self.lock();
        let mut svids = HashMap::with_capacity(state.svids.len());
        for id in state.svids.keys() {
            svids.insert(id.clone(), self.issue(id)?);
        }
        state.svids = svids;
        drop(state);
        tracing::info!("all SVIDs re-issued on request");
        self.notify();
        Ok(())
    }

    /// Re-issues every SVID that reached half its lifetime.
    fn rotate_due(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        let mut changed = false;
        for (id, current) in &mut state.svids {
            if current.rotate_at > now {
                continue;
            }
            match self.issue(id) {
                Ok(fresh) => {
                    tracing::debug!(spiffe_id = %id, "SVID rotated");
                    *current = fresh;
                    changed = true;
                }
                Err(e) => {
                    tracing::error!(spiffe_id = %id, error = %e, "cannot rotate SVID; retrying");
                    *current = Arc::new(Current {
                        svid: current.svid.clone(),
                        rotate_at: now + ROTATION_RETRY,
                        seq: current.seq,
                    });
                }
            }
        }
        drop(state);
        if changed {
            self.notify();
        }
    }

    fn next_rotation(&self) -> Option<Instant> {
        self.lock().svids.values().map(|c| c.rotate_at).min()
    }

    /// Attests the caller and collects the SVIDs it is entitled to.
    fn entitlement(&self, peer: &PeerInfo) -> Result<Entitlement, Status> {
        let caller = attest::attest(peer).map_err(|e| {
            tracing::warn!(error = %e, "caller could not be attested");
            Status::permission_denied("caller could not be attested")
        })?;
        let state = self.lock();
        let mut out: Entitlement = Vec::new();
        for r in state.registrations.iter().filter(|r| r.matches(&caller)) {
            if out.iter().any(|(c, _)| &c.svid.spiffe_id == r.spiffe_id()) {
                continue;
            }
            if let Some(current) = state.svids.get(r.spiffe_id()) {
                out.push((current.clone(), r.hint().map(str::to_owned)));
            }
        }
        drop(state);
        if out.is_empty() {
            log_denied(&caller);
            return Err(Status::permission_denied("no identity issued"));
        }
        tracing::debug!(
            pid = caller.pid,
            uid = caller.uid,
            exe = ?caller.exe,
            ids = ?out.iter().map(|(c, _)| c.svid.spiffe_id.as_str()).collect::<Vec<_>>(),
            "serving SVIDs"
        );
        Ok(out)
    }

    fn svid_message(&self, peer: &PeerInfo) -> Result<(X509svidResponse, Vec<u64>), Status> {
        let entitlement = self.entitlement(peer)?;
        let key = entitlement.iter().map(|(c, _)| c.seq).collect();
        let svids = entitlement
            .into_iter()
            .map(|(c, hint)| X509svid {
                spiffe_id: c.svid.spiffe_id.to_string(),
                x509_svid: c.svid.chain_der.concat(),
                // prost needs an owned Vec; it lives only until the message is encoded.
                x509_svid_key: c.svid.key_der.to_vec(),
                bundle: c.svid.bundle_der.clone(),
                hint: hint.unwrap_or_default(),
            })
            .collect();
        Ok((
            X509svidResponse {
                svids,
                crl: Vec::new(),
                federated_bundles: HashMap::new(),
            },
            key,
        ))
    }

    fn bundles_message(&self, peer: &PeerInfo) -> Result<(X509BundlesResponse, u64), Status> {
        // Like SPIRE, bundles go only to callers entitled to some identity.
        self.entitlement(peer)?;
        let generation = *self.updates.borrow();
        Ok((
            X509BundlesResponse {
                crl: Vec::new(),
                bundles: HashMap::from([(self.td_id.clone(), self.ca.bundle_der())]),
            },
            generation,
        ))
    }
}

fn log_denied(caller: &Caller) {
    tracing::info!(
        pid = caller.pid,
        uid = caller.uid,
        gid = caller.gid,
        exe = ?caller.exe,
        "no registration entry matches the caller; no identity issued"
    );
}

async fn serve(listener: UnixListener, shared: Arc<Shared>) -> Result<(), tonic::transport::Error> {
    let cancel = shared.cancel.clone();
    let incoming = futures::stream::unfold(listener, |listener| async move {
        match listener.accept().await {
            Ok((stream, _)) => Some((Ok::<_, io::Error>(AttestedStream::new(stream)), listener)),
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning on the error.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((Err(e), listener))
            }
        }
    });
    tonic::transport::Server::builder()
        .add_service(SpiffeWorkloadApiServer::new(WorkloadApi { shared }))
        .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
        .await
}

async fn rotation_loop(shared: Arc<Shared>) {
    let mut updates = shared.updates.subscribe();
    loop {
        let next = shared.next_rotation();
        let due = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            // Registrations changed or rotate_now ran: recompute the next deadline.
            changed = updates.changed() => if changed.is_err() { return },
            () = due => shared.rotate_due(),
        }
    }
}

struct WorkloadApi {
    shared: Arc<Shared>,
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;
type Builder<T, K> = fn(&Shared, &PeerInfo) -> Result<(T, K), Status>;

/// Checks the security header and returns the caller's connection info.
fn admit<T>(request: &Request<T>) -> Result<PeerInfo, Status> {
    let ok = request
        .metadata()
        .get(SECURITY_HEADER)
        .is_some_and(|v| v.as_bytes() == b"true");
    if !ok {
        return Err(Status::invalid_argument(
            "security header missing from request",
        ));
    }
    request
        .extensions()
        .get::<PeerInfo>()
        .cloned()
        .ok_or_else(|| {
            tracing::warn!("request without connection info");
            Status::permission_denied("caller could not be attested")
        })
}

/// A stream that sends the current message at once, then a new one whenever the served
/// material changes (re-attesting the caller each time), until the client goes away, the
/// caller loses its entitlement (one error, then the end) or the agent shuts down.
fn update_stream<T, K>(
    shared: Arc<Shared>,
    peer: PeerInfo,
    build: Builder<T, K>,
) -> Result<ResponseStream<T>, Status>
where
    T: Send + 'static,
    K: PartialEq + Send + 'static,
{
    let mut updates = shared.updates.subscribe();
    // Subscribe before building the first message, so no change in between is missed.
    updates.borrow_and_update();
    let (first, key) = build(&shared, &peer)?;

    struct St<T, K> {
        shared: Arc<Shared>,
        peer: PeerInfo,
        updates: watch::Receiver<u64>,
        last: K,
        build: Builder<T, K>,
        done: bool,
    }
    let st = St {
        shared,
        peer,
        updates,
        last: key,
        build,
        done: false,
    };
    let rest = futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            tokio::select! {
                () = st.shared.cancel.cancelled() => return None,
                changed = st.updates.changed() => if changed.is_err() { return None },
            }
            match (st.build)(&st.shared, &st.peer) {
                Ok((msg, key)) => {
                    if key != st.last {
                        st.last = key;
                        return Some((Ok(msg), st));
                    }
                }
                Err(status) => {
                    st.done = true;
                    return Some((Err(status), st));
                }
            }
        }
    });
    Ok(Box::pin(
        futures::stream::once(std::future::ready(Ok(first))).chain(rest),
    ))
}

fn jwt_unimplemented() -> Status {
    Status::unimplemented("JWT-SVIDs are not supported by the SPIKE dev agent")
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = ResponseStream<X509svidResponse>;
    type FetchX509BundlesStream = ResponseStream<X509BundlesResponse>;
    type FetchJWTBundlesStream = ResponseStream<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let peer = admit(&request)?;
        let stream = update_stream(self.shared.clone(), peer, Shared::svid_message)?;
        Ok(Response::new(stream))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let peer = admit(&request)?;
        let stream = update_stream(self.shared.clone(), peer, Shared::bundles_message)?;
        Ok(Response::new(stream))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        admit(&request)?;
        Err(jwt_unimplemented())
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        admit(&request)?;
        Err(jwt_unimplemented())
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        admit(&request)?;
        Err(jwt_unimplemented())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_can_be_shared_across_tasks() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<AgentHandle>();
        assert_send_sync::<CertificateAuthority>();
        assert_send_sync::<IssuedSvid>();
        assert_send_sync::<AgentError>();
    }
}
