//! `spike-bench gateway-refusals`: how long a shared gateway takes to refuse a token, for
//! each kind of caller that must not get it, against one gateway and one real Nexus.
//!
//! The four cases are the ones the gateway must not tell apart: a token stolen by another
//! agent (a valid SVID), the same token with no client certificate, with a certificate of
//! another trust domain, and a made-up token from the bound agent. Every case uses the same
//! client code; requests go round-robin over the cases, so drift on a shared machine touches
//! all of them alike. Two phases: requests on one kept-alive connection per case (the
//! request's own path), then a new connection per request (the handshake and the
//! certificate check once it is done). Each answer must be `403 token_unknown` with the same
//! body, or the run fails.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use spike_agent::CertificateAuthority;
use spike_core::id::{SpiffeId, TrustDomain};
use spike_gateway::config::{GatewaySettings, RouteSettings};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::Stack;
use crate::gateway::unlimited;

/// Options of [`gateway_refusals`].
#[derive(Debug, Clone)]
pub struct RefusalOptions {
    /// Requests per case on a kept-alive connection.
    pub requests: usize,
    /// Requests per case on a new connection each.
    pub connections: usize,
    /// Stop starting new rounds after this long.
    pub max_time: Duration,
}

/// Latencies of one case in one phase, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Distribution {
    /// The case.
    pub case: &'static str,
    /// Requests measured.
    pub count: usize,
    /// Percentiles and extremes.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Fastest.
    pub min_us: u64,
    /// Slowest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: u64,
}

/// What [`gateway_refusals`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct RefusalReport {
    /// Requests on kept-alive connections.
    pub kept_alive: Vec<Distribution>,
    /// One new connection (TLS handshake) per request.
    pub new_connection: Vec<Distribution>,
    /// The answer every case got.
    pub body: String,
}

/// One way of calling the gateway.
struct Case {
    name: &'static str,
    connector: TlsConnector,
    token: String,
}

/// Starts a Nexus and a shared gateway, and measures the refusals. Every loop is bounded by
/// its count and by `opts.max_time`.
pub async fn gateway_refusals(opts: &RefusalOptions) -> anyhow::Result<RefusalReport> {
    let stack = Stack::start(None).await?;
    let r = measure(&stack, opts).await;
    stack.stop().await;
    r
}

async fn measure(stack: &Stack, opts: &RefusalOptions) -> anyhow::Result<RefusalReport> {
    let upstream = spike_gateway::dev_upstream::DevUpstream::new(zeroize::Zeroizing::new(
        crate::UPSTREAM_KEY.into(),
    ))
    .spawn("127.0.0.1:0".parse()?)
    .await?;
    let p = stack.provision_gateway(upstream).await?;
    let settings = GatewaySettings {
        listen: "127.0.0.1:0".parse()?,
        health_listen: "127.0.0.1:0".parse()?,
        nexus: stack.nexus_addr().to_owned(),
        routes: vec![RouteSettings::loopback_chat("up", upstream)],
        // Every answer is a refusal: none may be reused.
        resolve_cache: Duration::ZERO,
        rate_limits: unlimited(),
        audit_log: Some(stack.data_dir.join("gateway-refusals-audit.log")),
        ..GatewaySettings::default()
    };
    let (bound, _task) = stack.start_gateway(&settings, &p.gateway).await?;
    let td = stack.trust_domain();
    let thief = SpiffeId::new(&format!("spiffe://{td}/agents/thief"))?;
    let foreign_td = TrustDomain::new("elsewhere.bench")?;
    let foreign = CertificateAuthority::new(&foreign_td)?
        .issue(&foreign_td.id(p.agent.path())?, Duration::from_secs(3600))?;
    let stolen = p.token.expose_secret().to_owned();
    let made_up = format!("$SPIKE{{ref:{}}}", "ab".repeat(16));
    let cases = [
        Case {
            name: "stolen token (another agent's SVID)",
            connector: connector(Some(stack.svid_chain(&thief)?))?,
            token: stolen.clone(),
        },
        Case {
            name: "no client certificate",
            connector: connector(None)?,
            token: stolen.clone(),
        },
        Case {
            name: "another trust domain",
            connector: connector(Some((foreign.chain_der.clone(), foreign.key_der.to_vec())))?,
            token: stolen,
        },
        Case {
            name: "unknown token (the agent's own SVID)",
            connector: connector(Some(stack.svid_chain(&p.agent)?))?,
            token: made_up,
        },
    ];
    let deadline = Instant::now() + opts.max_time;
    let mut body = None;
    let mut check = |got: Bytes| -> anyhow::Result<()> {
        match &body {
            None => body = Some(got),
            Some(b) if *b == got => {}
            Some(b) => bail!(
                "two cases got different answers: {} and {}",
                String::from_utf8_lossy(b),
                String::from_utf8_lossy(&got)
            ),
        }
        Ok(())
    };
    // Phase 1: one kept-alive connection per case.
    let mut senders = Vec::new();
    for c in &cases {
        senders.push(open(&c.connector, bound.listen).await?);
    }
    let mut kept: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    for _ in 0..opts.requests {
        if Instant::now() > deadline {
            break;
        }
        for (i, c) in cases.iter().enumerate() {
            let started = Instant::now();
            let got = send(&mut senders[i], &c.token).await?;
            kept[i].push(started.elapsed());
            check(got).with_context(|| c.name)?;
        }
    }
    drop(senders);
    // Phase 2: a new connection per request.
    let mut fresh: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    for _ in 0..opts.connections {
        if Instant::now() > deadline {
            break;
        }
        for (i, c) in cases.iter().enumerate() {
            let started = Instant::now();
            let mut sender = open(&c.connector, bound.listen).await?;
            let got = send(&mut sender, &c.token).await?;
            fresh[i].push(started.elapsed());
            check(got).with_context(|| c.name)?;
        }
    }
    let body = body.context("no request was measured")?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    if v["error"]["code"] != "token_unknown" {
        bail!("the refusal is not token_unknown: {v}");
    }
    let dist = |all: &[Vec<Duration>]| {
        cases
            .iter()
            .zip(all)
            .map(|(c, d)| distribution(c.name, d))
            .collect()
    };
    Ok(RefusalReport {
        kept_alive: dist(&kept),
        new_connection: dist(&fresh),
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

pub(crate) fn distribution(case: &'static str, samples: &[Duration]) -> Distribution {
    let mut us: Vec<u64> = samples
        .iter()
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .collect();
    us.sort_unstable();
    let at = |q: f64| {
        let i = ((us.len() as f64 - 1.0) * q).round() as usize;
        us.get(i).copied().unwrap_or_default()
    };
    let total: u128 = us.iter().map(|&u| u128::from(u)).sum();
    Distribution {
        case,
        count: us.len(),
        p50_us: at(0.5),
        p90_us: at(0.9),
        p99_us: at(0.99),
        min_us: us.first().copied().unwrap_or_default(),
        max_us: us.last().copied().unwrap_or_default(),
        mean_us: u64::try_from(total / u128::from(us.len().max(1) as u64)).unwrap_or(u64::MAX),
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A TLS connection to the gateway and an HTTP/1.1 client on it.
async fn open(connector: &TlsConnector, addr: SocketAddr) -> anyhow::Result<Sender> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let tls = connector
        .connect(ServerName::try_from("gateway.bench")?, tcp)
        .await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One chat completion carrying `token`; the answer's body (which must be a 403).
async fn send(sender: &mut Sender, token: &str) -> anyhow::Result<Bytes> {
    let req = http::Request::post("/r/up/v1/chat/completions")
        .header(http::header::HOST, "gateway.bench")
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(br#"{"model":"bench"}"#)))?;
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if status != http::StatusCode::FORBIDDEN {
        bail!(
            "expected 403, got {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(body)
}

/// A TLS 1.3 client presenting `cert` (chain in DER, PKCS#8 key), or none.
fn connector(cert: Option<(Vec<Vec<u8>>, Vec<u8>)>) -> anyhow::Result<TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(
            provider.signature_verification_algorithms,
        )));
    let config = match cert {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder.with_client_auth_cert(
            chain.into_iter().map(CertificateDer::from).collect(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )?,
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Accepts the gateway's certificate unchecked (loopback, a benchmark): every case must use
/// the same client, and the foreign one has no bundle of ours. The handshake's signature is
/// still checked.
#[derive(Debug)]
struct AnyServer(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
