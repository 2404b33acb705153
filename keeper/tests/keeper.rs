//! The keeper in-process over real sockets: its share API over mTLS (Nexus only), its health
//! endpoints, and what it refuses. SVIDs come from the dev agent's `CertificateAuthority`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use spike_agent::CertificateAuthority;
use spike_core::id::{SpiffeId, TrustDomain};
use spike_keeper::{KeeperError, KeeperHandle, KeeperListeners};
use spike_runtime::net::{ClientError, MtlsClient, Response};
use spike_runtime::svid::{Identity, StaticSource, SvidSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Upper bound of every wait in these tests.
const WAIT: Duration = Duration::from_secs(20);
const HOUR: Duration = Duration::from_secs(3600);
/// The keeper's request body limit.
const LIMIT: usize = 64 * 1024;

fn td() -> TrustDomain {
    TrustDomain::new("spike.test").unwrap()
}

fn id(path: &str) -> SpiffeId {
    td().id(path).unwrap()
}

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

fn source(ca: &CertificateAuthority, path: &str) -> Arc<dyn SvidSource> {
    let svid = ca.issue(&id(path), HOUR).unwrap();
    let identity = Identity::from_pem(
        &td(),
        svid.chain_pem.as_bytes(),
        svid.key_pem.as_bytes(),
        svid.bundle_pem.as_bytes(),
    )
    .unwrap();
    Arc::new(StaticSource::new(td(), identity))
}

struct Keeper {
    handle: KeeperHandle,
    api: SocketAddr,
    health: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Keeper {
    async fn start(src: Arc<dyn SvidSource>) -> Result<Self, KeeperError> {
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let health = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (api_addr, health_addr) = (api.local_addr().unwrap(), health.local_addr().unwrap());
        let (stop, rx) = oneshot::channel::<()>();
        let (handle, task) = spike_keeper::start(src, KeeperListeners { api, health }, async {
            let _ = rx.await;
        })?;
        Ok(Self {
            handle,
            api: api_addr,
            health: health_addr,
            stop: Some(stop),
            task,
        })
    }

    /// A client to this keeper (keeper 1 unless `index` says otherwise) with `src`'s SVID.
    fn client(&self, src: Arc<dyn SvidSource>) -> MtlsClient {
        let index = self.handle.index();
        MtlsClient::new(
            self.api.to_string(),
            id(&format!("/spike/keeper/{index}")),
            src,
        )
        .unwrap()
        .with_timeout(Duration::from_secs(10))
    }

    /// `GET <path>` on the plain health listener: status and body.
    async fn health_get(&self, path: &str) -> (u16, String) {
        bounded("health request", async {
            let mut tcp = TcpStream::connect(self.health).await.unwrap();
            let req = format!("GET {path} HTTP/1.1\r\nhost: keeper\r\nconnection: close\r\n\r\n");
            tcp.write_all(req.as_bytes()).await.unwrap();
            let mut raw = Vec::new();
            tcp.read_to_end(&mut raw).await.unwrap();
            let text = String::from_utf8(raw).unwrap();
            let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
            let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
            (status, body)
        })
        .await
    }

    async fn readyz(&self) -> u16 {
        self.health_get("/readyz").await.0
    }

    async fn shutdown(mut self) {
        drop(self.stop.take());
        bounded("keeper shutdown", &mut self.task).await.unwrap();
    }
}

/// A share body for `index` whose 32 value bytes are all `byte`.
fn share(index: u8, byte: u8, epoch: u32) -> Value {
    json!({
        "share": { "index": index, "value": format!("{byte:02x}").repeat(32) },
        "epoch": epoch,
    })
}

async fn put(c: &MtlsClient, body: &Value) -> Response {
    put_raw(c, serde_json::to_vec(body).unwrap()).await
}

async fn put_raw(c: &MtlsClient, body: Vec<u8>) -> Response {
    c.send(Method::PUT, "/v1/share", Some(body)).await.unwrap()
}

async fn get(c: &MtlsClient) -> Response {
    c.send(Method::GET, "/v1/share", None).await.unwrap()
}

fn json_of(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn error_code(r: &Response) -> String {
    json_of(r)["error"]["code"].as_str().unwrap().to_owned()
}

/// Asserts the keeper holds exactly `expected`, as Nexus sees it.
async fn assert_holds(k: &Keeper, nexus: &MtlsClient, expected: &Value) {
    let r = get(nexus).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&json_of(&r), expected);
    assert!(k.handle.has_share());
    assert_eq!(k.readyz().await, 200);
}

#[tokio::test]
async fn keeper_holds_the_share_nexus_pushes() {
    let ca = CertificateAuthority::new(&td()).unwrap();
    let k = Keeper::start(source(&ca, "/spike/keeper/1")).await.unwrap();
    assert_eq!(k.handle.index(), 1);
    let nexus = k.client(source(&ca, "/spike/nexus"));

    // Empty: alive, not ready, and GET says there is no share.
    assert_eq!(k.health_get("/healthz").await, (200, "ok".to_owned()));
    assert_eq!(k.readyz().await, 503);
    let r = get(&nexus).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&r), "no_share");

    // A share for another index is refused and changes nothing.
    let r = put(&nexus, &share(2, 0xaa, 1)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(!String::from_utf8_lossy(&r.body).contains("aaaa"));
    assert!(!k.handle.has_share());
    assert_eq!(k.readyz().await, 503);

    // Nexus pushes the keeper's own share: stored, ready, and served back.
    let first = share(1, 0x11, 1);
    let r = put(&nexus, &first).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.body.is_empty());
    assert_holds(&k, &nexus, &first).await;
    let held = k.handle.share().unwrap();
    assert_eq!((held.share.index(), held.epoch), (1, 1));
    assert_eq!(held.share.expose_secret(), &[0x11; 32]);

    // Another wrong-index share still changes nothing.
    let r = put(&nexus, &share(3, 0x33, 2)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&r), "bad_request");
    assert_holds(&k, &nexus, &first).await;

    // A new share of its own index (a new epoch) replaces the old one.
    let second = share(1, 0x22, 2);
    assert_eq!(put(&nexus, &second).await.status, StatusCode::NO_CONTENT);
    assert_holds(&k, &nexus, &second).await;

    // Other routes and methods.
    let r = nexus.send(Method::GET, "/v1/other", None).await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = nexus.send(Method::DELETE, "/v1/share", None).await.unwrap();
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_holds(&k, &nexus, &second).await;

    k.shutdown().await;
}

#[tokio::test]
async fn a_keeper_accepts_only_its_own_index() {
    let ca = CertificateAuthority::new(&td()).unwrap();
    let k = Keeper::start(source(&ca, "/spike/keeper/3")).await.unwrap();
    assert_eq!(k.handle.index(), 3);
    let nexus = k.client(source(&ca, "/spike/nexus"));
    for wrong in [1, 2, 4, 255] {
        let r = put(&nexus, &share(wrong, 0x44, 1)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "index {wrong}");
    }
    assert!(!k.handle.has_share());
    let own = share(3, 0x44, 1);
    assert_eq!(put(&nexus, &own).await.status, StatusCode::NO_CONTENT);
    assert_holds(&k, &nexus, &own).await;

    // The in-process preload has the same check.
    let other: spike_core::api::ShareBody = serde_json::from_value(share(1, 0x55, 2)).unwrap();
    assert!(matches!(
        k.handle.preload(other),
        Err(KeeperError::WrongIndex)
    ));
    assert_holds(&k, &nexus, &own).await;
    k.shutdown().await;
}

#[tokio::test]
async fn only_nexus_can_read_or_write_the_share() {
    let ca = CertificateAuthority::new(&td()).unwrap();
    let k = Keeper::start(source(&ca, "/spike/keeper/1")).await.unwrap();
    let nexus = k.client(source(&ca, "/spike/nexus"));
    let (status, metrics) = k.health_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("spike_keeper_has_share 0\n"), "{metrics}");
    let held = share(1, 0x11, 1);
    assert_eq!(put(&nexus, &held).await.status, StatusCode::NO_CONTENT);
    let refused_before = spike_runtime::net::handshake_failures("id_not_allowed");

    let forger = CertificateAuthority::new(&td()).unwrap();
    let forged_nexus = {
        // A Nexus SVID from another CA of the same trust domain, with our real bundle so the
        // client trusts the keeper: only the keeper's check can stop it.
        let forged = forger.issue(&id("/spike/nexus"), HOUR).unwrap();
        let identity = Identity::from_pem(
            &td(),
            forged.chain_pem.as_bytes(),
            forged.key_pem.as_bytes(),
            ca.bundle_pem().as_bytes(),
        )
        .unwrap();
        Arc::new(StaticSource::new(td(), identity)) as Arc<dyn SvidSource>
    };
    let strangers = [
        ("bootstrap", source(&ca, "/spike/bootstrap")),
        ("keeper 2", source(&ca, "/spike/keeper/2")),
        ("keeper 1 itself", source(&ca, "/spike/keeper/1")),
        ("superuser", source(&ca, "/spike/pilot/role/superuser")),
        ("workload", source(&ca, "/ns/web/sa/frontend")),
        ("nexus look-alike", source(&ca, "/spike/nexus/x")),
        ("forged nexus", forged_nexus),
    ];
    for (who, src) in strangers {
        let c = k.client(src);
        for (method, body) in [
            (Method::GET, None),
            (
                Method::PUT,
                Some(serde_json::to_vec(&share(1, 0x66, 9)).unwrap()),
            ),
        ] {
            match c.send(method.clone(), "/v1/share", body).await {
                Err(ClientError::Tls { .. } | ClientError::Http { .. }) => {}
                other => panic!("{who} {method}: expected a TLS refusal, got {other:?}"),
            }
        }
    }
    assert_holds(&k, &nexus, &held).await;
    // The refusals are counted and shown on the keeper's /metrics (the counter is per process,
    // and other tests of this binary run in their own processes under nextest, so it only
    // grows by ours; `>` keeps it right under `cargo test` too).
    assert!(spike_runtime::net::handshake_failures("id_not_allowed") > refused_before);
    let (_, metrics) = k.health_get("/metrics").await;
    assert!(metrics.contains("spike_keeper_has_share 1\n"), "{metrics}");
    assert!(
        metrics.contains("spike_tls_handshake_failures_total{reason=\"id_not_allowed\"}"),
        "{metrics}"
    );
    k.shutdown().await;
}

#[tokio::test]
async fn a_keeper_with_a_non_keeper_svid_refuses_to_start() {
    let ca = CertificateAuthority::new(&td()).unwrap();
    for path in [
        "/spike/nexus",
        "/spike/keeper",
        "/spike/keeper/0",
        "/spike/keeper/01",
        "/spike/keeper/256",
        "/spike/keeper/1/x",
        "/app/spike/keeper/1",
    ] {
        match Keeper::start(source(&ca, path)).await {
            Err(KeeperError::NotAKeeper(who)) => {
                assert_eq!(who, format!("spiffe://spike.test{path}"));
            }
            Err(e) => panic!("{path}: unexpected error {e}"),
            Ok(_) => panic!("{path}: a keeper started with a non-keeper SVID"),
        }
    }
}

#[tokio::test]
async fn bad_bodies_are_refused_and_change_nothing() {
    let ca = CertificateAuthority::new(&td()).unwrap();
    let k = Keeper::start(source(&ca, "/spike/keeper/1")).await.unwrap();
    let nexus = k.client(source(&ca, "/spike/nexus"));
    let held = share(1, 0x11, 1);
    assert_eq!(put(&nexus, &held).await.status, StatusCode::NO_CONTENT);

    let hex = "77".repeat(32);
    let bad: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"not json".to_vec(),
        b"{".to_vec(),
        b"[]".to_vec(),
        b"null".to_vec(),
        vec![0xff, 0xfe, 0x00],
        format!(r#"{{"share":{{"index":1,"value":"{hex}"}}}}"#).into_bytes(),
        format!(r#"{{"share":{{"index":1,"value":"{hex}"}},"epoch":-1}}"#).into_bytes(),
        format!(r#"{{"share":{{"index":1,"value":"{hex}"}},"epoch":1,"x":1}}"#).into_bytes(),
        format!(r#"{{"share":{{"index":1,"value":"{hex}","x":1}},"epoch":1}}"#).into_bytes(),
        format!(r#"{{"share":{{"index":0,"value":"{hex}"}},"epoch":1}}"#).into_bytes(),
        format!(r#"{{"share":{{"index":256,"value":"{hex}"}},"epoch":1}}"#).into_bytes(),
        format!(r#"{{"share":{{"index":"1","value":"{hex}"}},"epoch":1}}"#).into_bytes(),
        br#"{"share":{"index":1,"value":"7777"},"epoch":1}"#.to_vec(),
        format!(r#"{{"share":{{"index":1,"value":"{hex}77"}},"epoch":1}}"#).into_bytes(),
        format!(
            r#"{{"share":{{"index":1,"value":"{}"}},"epoch":1}}"#,
            "zz".repeat(32)
        )
        .into_bytes(),
        format!(
            r#"{{"share":{{"index":1,"value":"{}"}},"epoch":1}}"#,
            "77".repeat(31) + "7g"
        )
        .into_bytes(),
        format!(r#"{{"share":{{"index":1,"value":{hex}}},"epoch":1}}"#).into_bytes(),
    ];
    for body in bad {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let r = put_raw(&nexus, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{shown}");
        assert_eq!(error_code(&r), "bad_request", "{shown}");
        // The refusal never echoes what might be share material.
        let text = String::from_utf8_lossy(&r.body);
        assert!(!text.contains("7777") && !text.contains("zzzz"), "{text}");
        assert_holds(&k, &nexus, &held).await;
    }

    // Exactly at the limit (a valid share padded with spaces) is accepted; one byte more is not.
    let mut at_limit = serde_json::to_vec(&share(1, 0x12, 2)).unwrap();
    at_limit.resize(LIMIT, b' ');
    assert_eq!(
        put_raw(&nexus, at_limit).await.status,
        StatusCode::NO_CONTENT
    );
    let now_held = share(1, 0x12, 2);
    assert_holds(&k, &nexus, &now_held).await;

    let mut over = serde_json::to_vec(&share(1, 0x13, 3)).unwrap();
    over.resize(LIMIT + 1, b' ');
    let r = put_raw(&nexus, over).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&r), "too_large");
    // Much larger bodies too (the keeper stops reading at the limit).
    let r = nexus
        .send(Method::PUT, "/v1/share", Some(vec![b' '; 4 * LIMIT]))
        .await;
    match r {
        Ok(r) => assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE),
        // The keeper may close the connection before the whole body was sent.
        Err(ClientError::Http { .. }) => {}
        Err(e) => panic!("unexpected error {e}"),
    }
    assert_holds(&k, &nexus, &now_held).await;
    k.shutdown().await;
}

async fn put_keep(c: &MtlsClient, body: &Value, keep: u32) -> Response {
    let path = format!("/v1/share?keep={keep}");
    c.send(Method::PUT, &path, Some(serde_json::to_vec(body).unwrap()))
        .await
        .unwrap()
}

async fn get_previous(c: &MtlsClient) -> Response {
    c.send(Method::GET, "/v1/share/previous", None)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_keeper_keeps_the_share_nexus_names_until_a_push_without_keep() {
    let ca = CertificateAuthority::new(&td()).unwrap();
    let k = Keeper::start(source(&ca, "/spike/keeper/1")).await.unwrap();
    let nexus = k.client(source(&ca, "/spike/nexus"));
    let (e1, e2, e3) = (share(1, 0x11, 1), share(1, 0x22, 2), share(1, 0x33, 3));

    // Nothing to keep yet: no previous share.
    assert_eq!(
        put_keep(&nexus, &e1, 7).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(get_previous(&nexus).await.status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&get_previous(&nexus).await), "no_share");

    // A rotation: the new share is current, the named old one is kept.
    assert_eq!(
        put_keep(&nexus, &e2, 1).await.status,
        StatusCode::NO_CONTENT
    );
    assert_holds(&k, &nexus, &e2).await;
    let r = get_previous(&nexus).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(json_of(&r), e1);
    assert_eq!(k.handle.previous_epoch(), Some(1));

    // The rotation is redone (a crash lost split 2): split 1 is still kept, 2 is dropped.
    assert_eq!(
        put_keep(&nexus, &e3, 1).await.status,
        StatusCode::NO_CONTENT
    );
    assert_holds(&k, &nexus, &e3).await;
    assert_eq!(json_of(&get_previous(&nexus).await), e1);

    // A bad `keep` is refused with the JSON error body and changes nothing.
    let r = nexus
        .send(
            Method::PUT,
            "/v1/share?keep=x",
            Some(serde_json::to_vec(&e2).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&r), "bad_request");
    assert_holds(&k, &nexus, &e3).await;

    // Nexus confirms split 3: a push without `keep` drops the previous share.
    assert_eq!(put(&nexus, &e3).await.status, StatusCode::NO_CONTENT);
    assert_holds(&k, &nexus, &e3).await;
    assert_eq!(get_previous(&nexus).await.status, StatusCode::NOT_FOUND);
    assert_eq!(k.handle.previous_epoch(), None);

    // Keeping the split being pushed keeps nothing (it would be a stale copy).
    assert_eq!(
        put_keep(&nexus, &e3, 3).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(get_previous(&nexus).await.status, StatusCode::NOT_FOUND);

    k.shutdown().await;
}
