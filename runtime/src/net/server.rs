//! The accept loop every SPIKE service uses ([`serve_mtls`]) and its limits ([`ConnLimits`]),
//! plus the plain-HTTP loop for health and metrics.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use http::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use rustls::pki_types::CertificateDer;

use crate::tls::{ClientAuth, OptionalClientAuth, PeerIdentity};

/// The smallest `max_header_bytes` hyper accepts (its read buffer cannot be smaller).
pub const MIN_HEADER_BYTES: usize = 8192;

/// Connection-level limits of a server: the `[server]` section of the Nexus and keeper
/// configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnLimits {
    /// Longest a TLS handshake may take; then the connection is closed.
    #[serde(with = "crate::config::duration")]
    pub handshake_timeout: Duration,
    /// Longest a client may take to send a request's headers (HTTP/1.1: also the longest a
    /// kept-alive connection waits for the next request); then the connection is closed.
    #[serde(with = "crate::config::duration")]
    pub header_timeout: Duration,
    /// A connection with no request in flight and no bytes moving for this long is closed.
    #[serde(with = "crate::config::duration")]
    pub idle_timeout: Duration,
    /// Most concurrent connections; further ones wait in the kernel backlog until one closes.
    pub max_connections: usize,
    /// Largest request head (request line and headers), bytes; larger answers
    /// `431 Request Header Fields Too Large`. At least 8192.
    pub max_header_bytes: usize,
    /// Most request headers; more answers `431 Request Header Fields Too Large`.
    pub max_headers: usize,
    /// At shutdown, how long in-flight requests may take to finish before the server stops
    /// waiting for them.
    #[serde(with = "crate::config::duration")]
    pub drain_timeout: Duration,
    /// Longest one request may take, body upload included; then it is answered
    /// `408 request_timeout` and its connection closed. Bounds a client that sends headers and
    /// then stalls its body, which the idle timeout (no request in flight) does not.
    #[serde(with = "crate::config::duration")]
    pub request_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            drain_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
        }
    }
}

impl ConnLimits {
    /// Checks every limit is usable; the message names the `[server]` key to fix.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("handshake_timeout", self.handshake_timeout),
            ("header_timeout", self.header_timeout),
            ("idle_timeout", self.idle_timeout),
            ("drain_timeout", self.drain_timeout),
            ("request_timeout", self.request_timeout),
        ];
        for (name, d) in positive {
            if d.is_zero() {
                return Err(format!("server.{name} must be longer than zero"));
            }
            // Deadlines are computed as `now + d`; an absurd value must be a config error,
            // not an overflow panic in every connection task.
            if d > MAX_TIMEOUT {
                return Err(format!("server.{name} must be at most 1 day"));
            }
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err("server.max_connections must be between 1 and 1000000".into());
        }
        if !(MIN_HEADER_BYTES..=16 << 20).contains(&self.max_header_bytes) {
            return Err(format!(
                "server.max_header_bytes must be between {MIN_HEADER_BYTES} and {}",
                16 << 20
            ));
        }
        if !(1..=10_000).contains(&self.max_headers) {
            return Err("server.max_headers must be between 1 and 10000".into());
        }
        Ok(())
    }
}

/// A refusal the serve loop answers itself, with the JSON error body every refusal carries.
/// The status is given, not taken from `code`: a head over the limits is `too_large` but 431.
fn refusal(
    status: http::StatusCode,
    code: spike_core::error::ErrorCode,
    message: String,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = spike_core::error::ApiError::new(code, message).to_body();
    (status, axum::Json(body)).into_response()
}

/// Applies `max_headers` and `max_header_bytes` here, on both protocols, where the answer can
/// carry the JSON body: hyper has no header-count limit on HTTP/2 and its own HTTP/1.1
/// refusals are bare. The protocol limits are set at twice ours (see `serve_connection`), so
/// only a head far over them is refused by hyper itself (still a 431, without the body).
/// Sizes are counted as each protocol sends them: HTTP/1.1 as the text of the request line
/// and header lines, HTTP/2 as RFC 9113 does (name, value and 32 bytes per field,
/// pseudo-headers included).
fn head_over_limits<B>(req: &Request<B>, limits: &ConnLimits) -> Option<String> {
    if req.headers().len() > limits.max_headers {
        return Some(format!(
            "{} headers, more than the {} allowed",
            req.headers().len(),
            limits.max_headers
        ));
    }
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let fields = |per_field: usize| {
        req.headers()
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + per_field)
            .sum::<usize>()
    };
    let bytes = if req.version() == http::Version::HTTP_2 {
        let pseudo = req.method().as_str().len()
            + target
            + req.uri().authority().map_or(0, |a| a.as_str().len())
            + req.uri().scheme_str().map_or(0, str::len)
            + 4 * 32;
        fields(32) + pseudo
    } else {
        // "METHOD TARGET HTTP/1.1\r\n", "name: value\r\n" per field, and the blank line.
        req.method().as_str().len() + 1 + target + 1 + 8 + 2 + fields(4) + 2
    };
    let max = limits.max_header_bytes.max(MIN_HEADER_BYTES);
    (bytes > max).then(|| format!("{bytes} bytes of headers, more than the {max} allowed"))
}

/// The longest timeout a server accepts.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// When a connection last moved bytes, and how many requests it has in flight.
struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last read or write.
    last: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// When the connection becomes idle for `idle`, if nothing happens before.
    fn idle_deadline(&self, idle: Duration) -> tokio::time::Instant {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        tokio::time::Instant::from_std(self.start + last + idle)
    }
}

/// Counts one request in flight while alive.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(a)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An I/O stream that records when bytes last moved.
struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves `app` over mutual TLS on `listener` until `shutdown` completes, then stops accepting
/// (the listener is closed, so new connections are refused) and waits up to
/// `limits.drain_timeout` for open connections to finish their requests.
pub async fn serve_mtls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    serve_tls(listener, tls, PeerCheck::AtHandshake, app, limits, shutdown).await;
}

/// Like [`serve_mtls`], but a client without a valid SVID still completes its handshake: each
/// request carries either the verified [`PeerIdentity`] or
/// [`Unauthenticated`](crate::tls::Unauthenticated), never both,
/// and the application refuses the latter itself. Only for the gateway, which must answer such
/// callers as it answers a stolen token; every other service refuses them at the handshake.
///
/// Unauthenticated connections may hold at most a quarter of `max_connections` at once (a
/// further one is closed after its handshake) and are closed after `header_timeout` without a
/// request rather than `idle_timeout`, so callers that are not agents cannot take the
/// agents' connection slots.
pub async fn serve_tls_optional_client_auth(
    listener: TcpListener,
    auth: Arc<OptionalClientAuth>,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let tls = auth.config();
    let unauthenticated = Arc::new(Semaphore::new((limits.max_connections / 4).max(1)));
    let check = PeerCheck::AfterHandshake {
        auth,
        unauthenticated,
    };
    serve_tls(listener, tls, check, app, limits, shutdown).await;
}

/// Where a listener checks its clients' certificates.
#[derive(Clone)]
enum PeerCheck {
    /// In the handshake (a refused certificate fails it): [`serve_mtls`].
    AtHandshake,
    /// Once the handshake is done: [`serve_tls_optional_client_auth`], with the slots of
    /// unauthenticated connections.
    AfterHandshake {
        auth: Arc<OptionalClientAuth>,
        unauthenticated: Arc<Semaphore>,
    },
}

impl PeerCheck {
    /// The peer of a completed handshake, with the slot an unauthenticated one holds while
    /// connected; `None` to close the connection.
    fn peer(
        &self,
        certs: Option<&[CertificateDer<'_>]>,
    ) -> Option<(ClientAuth, Option<OwnedSemaphorePermit>)> {
        match self {
            // The verifier has accepted the chain, so this only parses it.
            Self::AtHandshake => {
                PeerIdentity::from_certs(certs).map(|p| (ClientAuth::Verified(p), None))
            }
            Self::AfterHandshake {
                auth,
                unauthenticated,
            } => match auth.authenticate(certs) {
                verified @ ClientAuth::Verified(_) => Some((verified, None)),
                anon @ ClientAuth::Unauthenticated(_) => {
                    let slot = unauthenticated.clone().try_acquire_owned().ok()?;
                    Some((anon, Some(slot)))
                }
            },
        }
    }
}

async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    check: PeerCheck,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let acceptor = TlsAcceptor::from(tls);
    let max_connections = limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let check = check.clone();
        let app = app.clone();
        let stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(acceptor, check, tcp, remote, app, limits, stop_rx).await;
        });
    }
    // Refuse new connections at once rather than leaving them in the backlog while draining.
    drop(listener);
    let _ = stop_tx.send(true);
    // Wait for in-flight connections to drain, but never forever.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain_timeout, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            timeout = ?limits.drain_timeout,
            "connections still open after the drain timeout; stopping anyway"
        );
    }
}

/// One connection: handshake, then HTTP until it ends, idles out, the peer's certificate
/// expires, or the server stops.
async fn serve_connection(
    acceptor: TlsAcceptor,
    check: PeerCheck,
    tcp: TcpStream,
    remote: SocketAddr,
    app: Router,
    limits: ConnLimits,
    mut stop_rx: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            super::refusals::handshake_failed(remote, &e);
            return;
        }
        Err(_) => {
            super::refusals::handshake_timed_out(remote);
            return;
        }
    };
    let Some((peer, _slot)) = check.peer(tls.get_ref().1.peer_certificates()) else {
        tracing::debug!(%remote, "no slot for another unauthenticated connection; closing it");
        return;
    };
    // An unauthenticated peer has no certificate to outlive, and is let idle only as long as
    // a request head may take.
    let (expires_in, idle_timeout) = match &peer {
        ClientAuth::Verified(p) => (
            p.not_after
                .duration_since(SystemTime::now())
                .unwrap_or_default(),
            limits.idle_timeout,
        ),
        ClientAuth::Unauthenticated(_) => {
            (MAX_TIMEOUT, limits.idle_timeout.min(limits.header_timeout))
        }
    };
    let activity = Arc::new(Activity::new());
    let in_flight = activity.clone();
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        let refused = head_over_limits(&req, &limits);
        // One or the other, never both: an application that reads `PeerIdentity` never sees
        // an unverified peer.
        match &peer {
            ClientAuth::Verified(p) => {
                req.extensions_mut().insert(p.clone());
            }
            ClientAuth::Unauthenticated(u) => {
                req.extensions_mut().insert(*u);
            }
        }
        req.extensions_mut().insert(RemoteAddr(remote));
        let guard = InFlight::new(in_flight.clone());
        let call = app.clone().oneshot(req.map(axum::body::Body::new));
        let limit = limits.request_timeout;
        async move {
            let _guard = guard;
            if let Some(what) = refused {
                return Ok(refusal(
                    http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    spike_core::error::ErrorCode::TooLarge,
                    format!("the request has {what}; send fewer or smaller headers"),
                ));
            }
            match tokio::time::timeout(limit, call).await {
                Ok(r) => r,
                // Dropping the handler drops the half-read body, so hyper closes the
                // connection after this answer.
                Err(_) => Ok(refusal(
                    http::StatusCode::REQUEST_TIMEOUT,
                    spike_core::error::ErrorCode::RequestTimeout,
                    "the request took too long (a stalled upload?); send it again".into(),
                )),
            }
        }
    });
    let header_bytes = limits.max_header_bytes.max(MIN_HEADER_BYTES);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // Twice the limits, so a head somewhat over them still arrives whole and is answered
        // a JSON 431 by `head_over_limits`; beyond that hyper itself answers 431.
        .max_buf_size(header_bytes.saturating_mul(2))
        .max_headers(limits.max_headers.max(1).saturating_mul(2));
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        // Twice the limit, so a head somewhat over it still arrives whole and is answered a
        // JSON 431 by `head_over_limits`; beyond that h2 itself answers 431.
        .max_header_list_size(u32::try_from(header_bytes.saturating_mul(2)).unwrap_or(u32::MAX));
    let io = Tracked {
        inner: tls,
        activity: activity.clone(),
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let expiry = tokio::time::sleep(expires_in);
    tokio::pin!(expiry);
    let idle = tokio::time::sleep_until(activity.idle_deadline(idle_timeout));
    tokio::pin!(idle);
    let mut draining = false;
    // Set when the peer's certificate expires: the graceful close gets this long to finish
    // the requests in flight, then the connection is dropped, whatever the peer does.
    let cut_off = tokio::time::sleep(MAX_TIMEOUT);
    tokio::pin!(cut_off);
    let mut expired = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r { tracing::debug!(%remote, error = %e, "connection ended"); }
                break;
            }
            // A connection must not outlive the certificate that authenticated it.
            () = &mut expiry, if !expired => {
                tracing::debug!(%remote, "peer certificate expired; closing connection");
                expired = true;
                if !draining {
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
                cut_off.as_mut().reset(tokio::time::Instant::now() + limits.drain_timeout);
            }
            () = &mut cut_off, if expired => {
                tracing::debug!(%remote, "peer certificate expired and the connection did not close; dropping it");
                break;
            }
            () = &mut idle, if !draining => {
                let deadline = activity.idle_deadline(idle_timeout);
                if activity.in_flight.load(Ordering::Relaxed) == 0
                    && deadline <= tokio::time::Instant::now()
                {
                    tracing::debug!(%remote, "connection idle; closing it");
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                } else {
                    // Active since, or a request in flight: look again one idle period after
                    // the last bytes, and at least every quarter period while busy.
                    let recheck = (idle_timeout / 4).max(Duration::from_millis(50));
                    let next = deadline.max(tokio::time::Instant::now() + recheck);
                    idle.as_mut().reset(next);
                }
            }
            r = stop_rx.changed(), if !draining => {
                let _ = r;
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// The TCP address of the client, put into request extensions by [`serve_mtls`].
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// Serves `app` over plain HTTP (health and metrics only) until `shutdown` completes, then
/// waits for open connections to finish.
pub async fn serve_plain(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Like [`serve_plain`], but waits at most `drain` for open connections after `shutdown`.
pub async fn serve_plain_bounded(
    listener: TcpListener,
    app: Router,
    drain: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let signal = async move {
        shutdown.await;
        let _ = tx.send(true);
    };
    let serve = serve_plain(listener, app, stopped(rx.clone()));
    let bound = async move {
        stopped(rx).await;
        tokio::time::sleep(drain).await;
    };
    let run = async move {
        tokio::select! {
            r = serve => r,
            () = bound => Ok(()),
        }
    };
    let ((), r) = tokio::join!(signal, run);
    r
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_timeouts_are_config_errors_not_overflow_panics() {
        assert!(ConnLimits::default().validate().is_ok());
        for set in [
            |l: &mut ConnLimits| l.idle_timeout = Duration::from_secs(500_000_000_000),
            |l: &mut ConnLimits| l.handshake_timeout = Duration::MAX,
            |l: &mut ConnLimits| l.drain_timeout = MAX_TIMEOUT + Duration::from_secs(1),
            |l: &mut ConnLimits| l.header_timeout = Duration::ZERO,
        ] {
            let mut limits = ConnLimits::default();
            set(&mut limits);
            assert!(limits.validate().is_err(), "{limits:?}");
        }
        let limits = ConnLimits {
            idle_timeout: MAX_TIMEOUT,
            ..ConnLimits::default()
        };
        assert!(limits.validate().is_ok());
    }
}
