//! A small OpenAI-style upstream for `spike dev --gateway` and for tests: it stands where an
//! inference API would, so the whole path (agent → gateway → upstream) runs on loopback.
//!
//! `POST /v1/chat/completions` answers only a request whose `Authorization` is
//! `Bearer <the real key>` (so a demo shows that the gateway substituted it), streaming
//! server-sent events when the body asks for `"stream": true` and a JSON completion otherwise.
//! Anything else is `404`; a wrong key is `401` with an OpenAI-style error. It never echoes
//! what it was sent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use zeroize::Zeroizing;

use crate::egress::{Body, BoxError};
use crate::refusal::json_response;

/// Words of the streamed answer, one event each.
const WORDS: [&str; 6] = ["The", " gateway", " kept", " the", " key", "."];

/// Largest request body read.
const MAX_BODY: usize = 1 << 20;

/// How the mock answers.
#[derive(Debug, Clone)]
pub struct DevUpstream {
    key: Arc<Zeroizing<String>>,
    /// Pause between streamed events, so a stream is visibly incremental.
    pub event_gap: Duration,
}

impl DevUpstream {
    /// A mock that accepts `key` as its API key.
    pub fn new(key: Zeroizing<String>) -> Self {
        Self {
            key: Arc::new(key),
            event_gap: Duration::from_millis(20),
        }
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let me = me.clone();
                    async move { Ok::<_, Infallible>(me.answer(req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    }

    /// Binds `addr` and serves in a task; returns the bound address.
    pub async fn spawn(self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        tokio::spawn(self.serve(listener));
        Ok(bound)
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        if req.method() != Method::POST || req.uri().path() != "/v1/chat/completions" {
            return error(StatusCode::NOT_FOUND, "not_found", "no such route");
        }
        let authorized = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(|k| bool::from(k.as_bytes().ct_eq(self.key.as_bytes())));
        if !authorized {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "Incorrect API key provided",
            );
        }
        let Ok(body) = Limited::new(req.into_body(), MAX_BODY).collect().await else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "unreadable body",
            );
        };
        let streamed = serde_json::from_slice::<serde_json::Value>(&body.to_bytes())
            .ok()
            .and_then(|v| v.get("stream").and_then(serde_json::Value::as_bool))
            .unwrap_or(false);
        if streamed {
            self.stream()
        } else {
            json_response(
                StatusCode::OK,
                &serde_json::json!({
                    "id": "chatcmpl-dev",
                    "object": "chat.completion",
                    "choices": [{
                        "index": 0,
                        "message": { "role": "assistant", "content": WORDS.concat() },
                        "finish_reason": "stop"
                    }]
                }),
            )
        }
    }

    fn stream(&self) -> Response<Body> {
        let gap = self.event_gap;
        let events = WORDS
            .iter()
            .map(|w| {
                let chunk = serde_json::json!({
                    "id": "chatcmpl-dev",
                    "object": "chat.completion.chunk",
                    "choices": [{ "index": 0, "delta": { "content": w } }]
                });
                format!("data: {chunk}\n\n")
            })
            .chain(std::iter::once("data: [DONE]\n\n".to_owned()))
            .collect::<Vec<_>>();
        let s = stream::unfold(events.into_iter().enumerate(), move |mut it| async move {
            let (i, e) = it.next()?;
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            Some((Ok::<_, BoxError>(Frame::data(Bytes::from(e))), it))
        });
        let mut resp = Response::new(StreamBody::new(s).boxed_unsync());
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        resp.headers_mut().insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        resp
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        &serde_json::json!({ "error": { "code": code, "message": message } }),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use http_body_util::Full;

    use super::*;
    use crate::egress::{
        AddressPolicy, Egress, EgressLimits, RoutePolicy, StaticResolver, Target, tls,
    };

    fn body(s: &str) -> Body {
        Full::new(Bytes::from(s.to_owned()))
            .map_err(|e| match e {})
            .boxed_unsync()
    }

    #[tokio::test]
    async fn it_streams_only_for_the_real_key() {
        let addr = DevUpstream::new(Zeroizing::new("sk-dev-real".into()))
            .spawn("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let egress = Egress::new(Arc::new(StaticResolver::new()), EgressLimits::default());
        let policy = RoutePolicy {
            addresses: AddressPolicy {
                allowed: vec!["127.0.0.1/32".parse().unwrap()],
            },
            tls: tls::client_config(rustls::RootCertStore::empty()).unwrap(),
        };
        let target = Target {
            host: "127.0.0.1",
            port: addr.port(),
            tls: false,
        };
        let call = |key: &str, stream: bool| {
            Request::post("/v1/chat/completions")
                .header("authorization", format!("Bearer {key}"))
                .body(body(&format!(r#"{{"stream":{stream}}}"#)))
                .unwrap()
        };
        let sent = egress
            .send(target, &policy, call("sk-dev-real", true))
            .await
            .unwrap();
        assert_eq!(sent.response.headers()["content-type"], "text/event-stream");
        let mut b = sent.response.into_body();
        let mut frames = 0;
        let mut all = String::new();
        while let Some(f) = b.frame().await {
            if let Ok(d) = f.unwrap().into_data() {
                frames += 1;
                all.push_str(std::str::from_utf8(&d).unwrap());
            }
        }
        assert!(frames >= WORDS.len(), "incremental: {frames} frames");
        assert!(all.ends_with("data: [DONE]\n\n"), "{all}");
        assert!(all.contains(r#""content":" gateway""#), "{all}");
        let sent = egress
            .send(target, &policy, call("$SPIKE{ref:00}", false))
            .await
            .unwrap();
        assert_eq!(sent.response.status(), StatusCode::UNAUTHORIZED);
    }
}
