//! SSE latency through the gateway against a direct connection to the same upstream.
//!
//! The upstream (in this process, on loopback) answers `POST /v1/chat/completions` for the
//! real key with a server-sent event stream: the first event at once, then one every `gap`,
//! each an OpenAI-style chunk that carries the time the upstream handed it to hyper. The
//! client reads each stream over a kept-alive HTTP/1.1 connection and records:
//!
//! - time to first byte: from sending the request to the first body byte;
//! - per-event latency: from the upstream's stamp to the moment the whole event (its blank
//!   line included) has arrived at the client.
//!
//! Streams alternate between the two paths (direct with the real key, through the gateway
//! with the agent's token), so both see the same machine load. Every stream is bounded in
//! events and in time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};

use crate::{Stack, UPSTREAM_KEY};

/// Options of [`sse`].
#[derive(Debug, Clone)]
pub struct SseOptions {
    /// Streams per path.
    pub streams: usize,
    /// Events per stream.
    pub events: usize,
    /// Pause between two events of a stream.
    pub gap: Duration,
}

/// The most streams or events per stream one run may ask for.
pub const MAX_SSE: usize = 100_000;

/// What one path measured, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct PathLatency {
    /// Streams read.
    pub streams: usize,
    /// Events received.
    pub events: usize,
    /// Time to first byte, median.
    pub ttfb_p50_us: f64,
    /// Time to first byte, 99th percentile.
    pub ttfb_p99_us: f64,
    /// Per-event latency, median.
    pub event_p50_us: f64,
    /// Per-event latency, 99th percentile.
    pub event_p99_us: f64,
}

/// Both paths, measured in one run.
#[derive(Debug, Clone, Serialize)]
pub struct SseReport {
    /// Client → upstream.
    pub direct: PathLatency,
    /// Client → spike-gateway → upstream.
    pub gateway: PathLatency,
}

/// The clock the upstream's stamps and the client's readings share (one process).
fn clock() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    u64::try_from(clock().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Starts the stamping SSE upstream on a loopback port.
async fn spawn_upstream(events: usize, gap: Duration) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(answer(req, events, gap).await)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

type UpBody = BoxBody<Bytes, Infallible>;

async fn answer(req: Request<Incoming>, events: usize, gap: Duration) -> Response<UpBody> {
    let authorized = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == format!("Bearer {UPSTREAM_KEY}").as_bytes());
    // Read the request to its end, as an API does before it answers.
    let _ = req.into_body().collect().await;
    if !authorized {
        let mut r = Response::new(Full::new(Bytes::from_static(b"{}")).boxed());
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return r;
    }
    let body = futures::stream::unfold(0usize, move |i| async move {
        if i >= events {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        let event = format!(
            "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1764633600,\"model\":\"bench\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" word\"}}}}],\"t\":{}}}\n\n",
            now_ns()
        );
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(event))), i + 1))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(body)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    r
}

/// One path's connection and what it sends.
struct Path {
    sender: http1::SendRequest<Full<Bytes>>,
    uri: String,
    authorization: String,
    ttfb: Vec<Duration>,
    latency: Vec<Duration>,
}

impl Path {
    async fn connect(addr: SocketAddr, uri: String, authorization: String) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            uri,
            authorization,
            ttfb: Vec::new(),
            latency: Vec::new(),
        })
    }

    /// Reads one whole stream of `events` events, within `deadline`.
    async fn stream(&mut self, events: usize, deadline: Duration) -> anyhow::Result<()> {
        let req = Request::post(&self.uri)
            .header(http::header::HOST, "127.0.0.1")
            .header(http::header::AUTHORIZATION, &self.authorization)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"model":"bench","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
            )))?;
        tokio::time::timeout(deadline, async {
            self.sender.ready().await?;
            let sent = Instant::now();
            let resp = self.sender.send_request(req).await?;
            if resp.status() != StatusCode::OK {
                bail!("the stream was answered {}", resp.status());
            }
            let mut body = resp.into_body();
            let (mut pending, mut seen, mut first) = (Vec::new(), 0usize, true);
            while let Some(frame) = body.frame().await {
                let Ok(data) = frame?.into_data() else {
                    continue;
                };
                let arrived = now_ns();
                if first && !data.is_empty() {
                    self.ttfb.push(sent.elapsed());
                    first = false;
                }
                pending.extend_from_slice(&data);
                while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                    let stamp = stamp_of(&pending[..end]).context("an event without a stamp")?;
                    self.latency
                        .push(Duration::from_nanos(arrived.saturating_sub(stamp)));
                    pending.drain(..end + 2);
                    seen += 1;
                }
            }
            if seen != events {
                bail!("{seen} of {events} events arrived");
            }
            Ok(())
        })
        .await
        .context("a stream took longer than its deadline")?
    }

    fn report(&self, streams: usize) -> PathLatency {
        PathLatency {
            streams,
            events: self.latency.len(),
            ttfb_p50_us: percentile_us(&self.ttfb, 50),
            ttfb_p99_us: percentile_us(&self.ttfb, 99),
            event_p50_us: percentile_us(&self.latency, 50),
            event_p99_us: percentile_us(&self.latency, 99),
        }
    }
}

/// The upstream's stamp in one event (`…"t":NANOS}`).
fn stamp_of(event: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(event).ok()?;
    let (_, t) = text.rsplit_once("\"t\":")?;
    t.trim_end_matches('}').parse().ok()
}

fn percentile_us(samples: &[Duration], pct: usize) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0.0;
    };
    sorted[last * pct / 100].as_secs_f64() * 1e6
}

/// Measures SSE through a gateway in front of a stamping upstream and directly to it.
pub async fn sse(stack: &Stack, opts: &SseOptions) -> anyhow::Result<SseReport> {
    if opts.streams == 0 || opts.streams > MAX_SSE || opts.events == 0 || opts.events > MAX_SSE {
        bail!("streams and events must each be between 1 and {MAX_SSE}");
    }
    clock();
    let upstream = spawn_upstream(opts.events, opts.gap).await?;
    let gw = stack
        .gateway(upstream, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await?;
    let mut direct = Path::connect(
        upstream,
        "/v1/chat/completions".into(),
        format!("Bearer {UPSTREAM_KEY}"),
    )
    .await?;
    let mut gateway = Path::connect(
        gw.listen,
        "/r/up/v1/chat/completions".into(),
        format!("Bearer {}", gw.token.expose_secret()),
    )
    .await?;
    let deadline =
        opts.gap * u32::try_from(opts.events).unwrap_or(u32::MAX) + Duration::from_secs(10);
    // One stream each to warm up (connections, the gateway's token cache), not recorded.
    direct.stream(opts.events, deadline).await?;
    gateway.stream(opts.events, deadline).await?;
    for p in [&mut direct, &mut gateway] {
        p.ttfb.clear();
        p.latency.clear();
    }
    for _ in 0..opts.streams {
        direct.stream(opts.events, deadline).await?;
        gateway.stream(opts.events, deadline).await?;
    }
    Ok(SseReport {
        direct: direct.report(opts.streams),
        gateway: gateway.report(opts.streams),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_is_read_from_the_end_of_an_event() {
        assert_eq!(stamp_of(br#"data: {"a":"\"t\":1","t":12345}"#), Some(12345));
        assert_eq!(stamp_of(b"data: {}"), None);
    }

    #[test]
    fn percentiles_of_known_samples() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert!((percentile_us(&s, 50) - 50.0).abs() < 1e-6);
        assert!((percentile_us(&s, 99) - 99.0).abs() < 1e-6);
        assert!((percentile_us(&[], 50)).abs() < 1e-9);
    }
}
