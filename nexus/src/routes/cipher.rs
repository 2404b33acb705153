//! Cipher routes: encrypt and decrypt for workloads that keep their own data.
//!
//! `POST /v1/cipher/encrypt` and `POST /v1/cipher/decrypt` take either a JSON body (base64
//! data, the context in the body) or raw bytes (`application/octet-stream`, the context in the
//! query). The key is the data key's cipher subkey; the format and its binding to the context
//! (and optionally the caller) live in [`spike_core::crypto::CipherKey`]. The caller needs
//! `cipher` on the context; calls are rate limited per caller. See `docs/cipher.md`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use spike_core::api::{
    CIPHER_MAX_PLAINTEXT, CipherQuery, DecryptRequest, DecryptResponse, EncryptRequest,
    EncryptResponse,
};
use spike_core::crypto::{CIPHER_OVERHEAD, CipherAad, CipherBinding, CryptoError};
use spike_core::error::ErrorCode;
use spike_core::id::SpiffeId;
use spike_core::policy::Permission;
use spike_core::secret::SecretBytes;
use zeroize::Zeroizing;

use super::{N, query};
use crate::error::{AppError, AppResult};
use crate::extract::{Caller, parse_json};
use crate::ratelimit::RateClass;
use crate::state::Nexus;

/// Largest ciphertext a decrypt accepts: the largest plaintext plus the format's overhead.
const MAX_CIPHERTEXT: usize = CIPHER_MAX_PLAINTEXT + CIPHER_OVERHEAD;

/// Largest raw body.
const MAX_RAW_BODY: usize = MAX_CIPHERTEXT;

/// Largest JSON body: the base64 of the largest ciphertext plus room for the context, field
/// names and whitespace. These routes carry their own limit, above the router's general
/// `max_body`, so 1 MiB of data fits in either encoding.
const MAX_JSON_BODY: usize = 4 * MAX_CIPHERTEXT.div_ceil(3) + 4096;

/// The cipher routes, merged into the `/v1` router.
pub(super) fn routes() -> Router<Arc<Nexus>> {
    Router::new()
        .route("/v1/cipher/encrypt", post(encrypt))
        .route("/v1/cipher/decrypt", post(decrypt))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Encrypt,
    Decrypt,
}

impl Op {
    fn action(self) -> &'static str {
        match self {
            Self::Encrypt => "cipher.encrypt",
            Self::Decrypt => "cipher.decrypt",
        }
    }
}

/// How the body (and so the answer) is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Json,
    Raw,
}

/// One call's input, whatever its encoding.
struct Input {
    context: String,
    /// The plaintext (encrypt) or binary ciphertext (decrypt); wiped on drop.
    data: Zeroizing<Vec<u8>>,
    binding: CipherBinding,
}

async fn encrypt(
    State(n): N,
    Caller(c): Caller,
    q: Result<Query<CipherQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(&n, &c, Op::Encrypt, q, &headers, body).await
}

async fn decrypt(
    State(n): N,
    Caller(c): Caller,
    q: Result<Query<CipherQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(&n, &c, Op::Decrypt, q, &headers, body).await
}

async fn handle(
    n: &Nexus,
    c: &SpiffeId,
    op: Op,
    q: Result<Query<CipherQuery>, QueryRejection>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    // The audited path is the context, once it is known to be a valid path.
    let mut audited: Option<String> = None;
    let result = run(n, c, op, q, headers, body, &mut audited).await;
    n.finish(op.action(), c, audited.as_deref(), result).await
}

async fn run(
    n: &Nexus,
    c: &SpiffeId,
    op: Op,
    q: Result<Query<CipherQuery>, QueryRejection>,
    headers: &HeaderMap,
    body: Body,
    audited: &mut Option<String>,
) -> AppResult<Response> {
    let o = n.opened()?;
    // Before any work on the body: a caller over its rate costs as little as possible.
    n.limiter().check(RateClass::Cipher, c)?;
    let encoding = encoding_of(headers)?;
    let q = query(q)?;
    let input = read_input(op, encoding, q, body).await?;

    let context = n.parse_path(&input.context)?;
    *audited = Some(context.as_str().to_owned());
    n.authorize(c, &context, Permission::Cipher)?;

    // New messages use the current data key; a message opens under the generation its
    // header names, even one retired by a rotation.
    let key = match op {
        Op::Encrypt => o.keys.cipher_for_seal(),
        Op::Decrypt => o.keys.cipher_for_open(&input.data),
    }
    .map_err(|e| AppError::internal("cipher key", e))?;
    let aad = CipherAad {
        context: context.as_str(),
        caller: c,
    };
    match op {
        Op::Encrypt => {
            if input.data.len() > CIPHER_MAX_PLAINTEXT {
                return Err(too_large());
            }
            let sealed = key
                .seal(&aad, input.binding, &input.data)
                .map_err(|e| AppError::internal("cipher encrypt", e))?;
            Ok(match encoding {
                Encoding::Json => Json(EncryptResponse {
                    ciphertext: BASE64.encode(&sealed),
                })
                .into_response(),
                Encoding::Raw => raw(sealed),
            })
        }
        Op::Decrypt => {
            if input.data.len() > MAX_CIPHERTEXT {
                return Err(too_large());
            }
            let plaintext = key.open(&aad, &input.data).map_err(open_error)?;
            Ok(match encoding {
                Encoding::Json => Json(DecryptResponse { plaintext }).into_response(),
                Encoding::Raw => raw(plaintext.expose_secret().to_vec()),
            })
        }
    }
}

/// Audits the outcome (fail closed), meters it and answers, as [`Nexus::respond`] does for
/// JSON-only routes; cipher answers may be raw bytes.
fn encoding_of(headers: &HeaderMap) -> AppResult<Encoding> {
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    match mime.as_deref() {
        Some("application/json") => Ok(Encoding::Json),
        Some("application/octet-stream") => Ok(Encoding::Raw),
        _ => Err(AppError::new(
            ErrorCode::UnsupportedMediaType,
            "send JSON (Content-Type: application/json) or raw bytes \
             (Content-Type: application/octet-stream); see docs/cipher.md",
        )),
    }
}

async fn read_input(op: Op, encoding: Encoding, q: CipherQuery, body: Body) -> AppResult<Input> {
    let limit = match encoding {
        Encoding::Json => MAX_JSON_BODY,
        Encoding::Raw => MAX_RAW_BODY,
    };
    // Wiped on drop: for an encrypt it is (or encodes) the plaintext.
    let bytes = Zeroizing::new(Vec::from(
        axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| too_large())?,
    ));
    match encoding {
        Encoding::Raw => {
            let Some(context) = q.context else {
                return Err(bad_request(
                    "a raw cipher call needs the context in the query: ?context=PATH",
                ));
            };
            let binding = match (op, q.bind_caller) {
                (Op::Encrypt, Some(true)) => CipherBinding::ContextAndCaller,
                (Op::Encrypt, _) => CipherBinding::Context,
                (Op::Decrypt, None) => CipherBinding::Context,
                (Op::Decrypt, Some(_)) => {
                    return Err(bad_request(
                        "bindCaller applies to encrypt only: a ciphertext records its own binding",
                    ));
                }
            };
            Ok(Input {
                context,
                data: bytes,
                binding,
            })
        }
        Encoding::Json => {
            if q != CipherQuery::default() {
                return Err(bad_request(
                    "with a JSON body, put the context (and bindCaller) in the body, not the query",
                ));
            }
            match op {
                Op::Encrypt => {
                    let req: EncryptRequest = parse_json(&bytes)?;
                    Ok(Input {
                        context: req.context,
                        data: into_zeroizing(req.plaintext),
                        binding: if req.bind_caller {
                            CipherBinding::ContextAndCaller
                        } else {
                            CipherBinding::Context
                        },
                    })
                }
                Op::Decrypt => {
                    let req: DecryptRequest = parse_json(&bytes)?;
                    let data = BASE64
                        .decode(req.ciphertext.as_bytes())
                        .map_err(|_| bad_request("ciphertext is not valid standard base64"))?;
                    Ok(Input {
                        context: req.context,
                        data: Zeroizing::new(data),
                        binding: CipherBinding::Context,
                    })
                }
            }
        }
    }
}

/// Moves secret bytes into a buffer wiped on drop (a copy; the original is wiped on drop too).
fn into_zeroizing(s: SecretBytes) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(s.expose_secret().to_vec())
}

fn raw(bytes: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        bytes,
    )
        .into_response()
}

fn bad_request(message: &'static str) -> AppError {
    AppError::new(ErrorCode::BadRequest, message)
}

fn too_large() -> AppError {
    AppError::new(
        ErrorCode::TooLarge,
        "the cipher API takes at most 1 MiB (1048576 bytes) of data per call; for larger data, \
         encrypt it under a key of your own and encrypt that key here (see docs/cipher.md)",
    )
}

/// Decryption failures. A newer format and a foreign key get their own message, since the fix
/// differs (upgrade; use the installation that made it); every other failure, whether wrong
/// context, another caller's message, or altered bytes, gets one message that says nothing
/// about which part was wrong.
fn open_error(e: CryptoError) -> AppError {
    match e {
        CryptoError::UnsupportedFormat { found, supported } => AppError::new(
            ErrorCode::BadRequest,
            format!(
                "the ciphertext has format {found}, newer than this Nexus reads (up to \
                 {supported}); decrypt it with the newer SPIKE that made it"
            ),
        ),
        CryptoError::KeyMismatch { .. } => AppError::new(
            ErrorCode::BadRequest,
            "the ciphertext was made under another key: it comes from another SPIKE installation",
        ),
        _ => AppError::new(
            ErrorCode::BadRequest,
            "the ciphertext cannot be decrypted: wrong context, made for another caller, \
             or altered",
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use axum::http::{Method, Request, StatusCode};
    use spike_core::error::ErrorBody;

    use spike_runtime::tls::PeerIdentity;

    use tower::ServiceExt as _;

    use super::*;

    use crate::ratelimit::{Rate, RateLimits};

    const SUPER: &str = "spiffe://spike.test/spike/pilot/role/superuser";
    const APP: &str = "spiffe://spike.test/app/alice";
    const OTHER_APP: &str = "spiffe://spike.test/app/bob";
    const STRANGER: &str = "spiffe://spike.test/app/mallory";

    type Fixture = crate::fixtures::Served;

    async fn fixture(cipher: Rate, open: bool) -> Fixture {
        crate::fixtures::served(
            |config| {
                config.rate_limits = RateLimits {
                    cipher,
                    ..RateLimits::default()
                }
            },
            open,
        )
        .await
    }

    fn roomy() -> Rate {
        Rate {
            per_minute: 6000,
            burst: 1000,
        }
    }

    struct Answer {
        status: StatusCode,
        content_type: String,
        body: Vec<u8>,
    }

    impl Answer {
        fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).unwrap()
        }

        fn error(&self) -> (String, String) {
            let e: ErrorBody = serde_json::from_slice(&self.body).unwrap();
            (e.error.code.as_str().to_owned(), e.error.message)
        }
    }

    async fn call(
        f: &Fixture,
        caller: &str,
        uri: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Answer {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .extension(PeerIdentity {
                id: SpiffeId::new(caller).unwrap(),
                not_after: SystemTime::now() + Duration::from_secs(3600),
            });
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let resp = f
            .router
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        assert_eq!(
            resp.headers().get(header::CACHE_CONTROL).unwrap(),
            "no-store"
        );
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Answer {
            status,
            content_type,
            body,
        }
    }

    async fn json(f: &Fixture, caller: &str, op: &str, body: serde_json::Value) -> Answer {
        call(
            f,
            caller,
            &format!("/v1/cipher/{op}"),
            Some("application/json"),
            serde_json::to_vec(&body).unwrap(),
        )
        .await
    }

    async fn raw_call(f: &Fixture, caller: &str, op: &str, query: &str, body: Vec<u8>) -> Answer {
        call(
            f,
            caller,
            &format!("/v1/cipher/{op}?{query}"),
            Some("application/octet-stream"),
            body,
        )
        .await
    }

    async fn encrypt_json(f: &Fixture, caller: &str, context: &str, data: &[u8]) -> String {
        let a = json(
            f,
            caller,
            "encrypt",
            serde_json::json!({"context": context, "plaintext": BASE64.encode(data)}),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.error());
        a.json()["ciphertext"].as_str().unwrap().to_owned()
    }

    async fn allow_cipher(f: &Fixture, id_pattern: &str, path_pattern: &str) {
        let policy = serde_json::json!({
            "spiffeIdPattern": id_pattern,
            "pathPattern": path_pattern,
            "permissions": ["cipher"],
        });
        let req = Request::builder()
            .method(Method::PUT)
            .uri("/v1/policies/cipher-test")
            .header(header::CONTENT_TYPE, "application/json")
            .extension(PeerIdentity {
                id: SpiffeId::new(SUPER).unwrap(),
                not_after: SystemTime::now() + Duration::from_secs(3600),
            })
            .body(Body::from(serde_json::to_vec(&policy).unwrap()))
            .unwrap();
        let resp = f.router.clone().oneshot(req).await.unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
    }

    fn audit_log(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("audit.log")).unwrap()
    }

    #[tokio::test]
    async fn json_and_raw_round_trip_and_interoperate() {
        let f = fixture(roomy(), true).await;
        allow_cipher(&f, "spiffe://spike.test/app/*", "vault/**").await;
        let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();

        // JSON in, JSON out.
        let ct = encrypt_json(&f, APP, "vault/app", &data).await;
        let a = json(
            &f,
            APP,
            "decrypt",
            serde_json::json!({"context": "vault/app", "ciphertext": ct}),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.content_type, "application/json");
        assert_eq!(
            BASE64
                .decode(a.json()["plaintext"].as_str().unwrap())
                .unwrap(),
            data
        );

        // A JSON ciphertext is the base64 of the raw one: it decrypts raw.
        let a = raw_call(
            &f,
            APP,
            "decrypt",
            "context=vault/app",
            BASE64.decode(&ct).unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.content_type, "application/octet-stream");
        assert_eq!(a.body, data);

        // Raw in, raw out, and back through JSON.
        let a = raw_call(&f, APP, "encrypt", "context=vault/app", data.clone()).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.content_type, "application/octet-stream");
        assert_eq!(a.body.len(), data.len() + CIPHER_OVERHEAD);
        let a = json(
            &f,
            OTHER_APP,
            "decrypt",
            serde_json::json!({"context": "vault/app", "ciphertext": BASE64.encode(&a.body)}),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.error());

        // Audited with the context as the path, never the data.
        let log = audit_log(f.dir.path());
        assert!(log.contains("cipher.encrypt"), "{log}");
        assert!(log.contains("cipher.decrypt"), "{log}");
        assert!(log.contains("vault/app"), "{log}");
        assert!(!log.contains(&BASE64.encode(&data[..30])), "{log}");
        let metrics = f.nexus.metrics().render(false, &f.nexus.store().stats());
        assert!(metrics.contains("cipher.encrypt"), "{metrics}");
    }

    #[tokio::test]
    async fn caller_binding_keeps_data_to_one_identity() {
        let f = fixture(roomy(), true).await;
        allow_cipher(&f, "spiffe://spike.test/app/*", "vault/**").await;
        let a = json(
            &f,
            APP,
            "encrypt",
            serde_json::json!({"context": "vault/app", "plaintext": "c2VjcmV0", "bindCaller": true}),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        let ct = a.json()["ciphertext"].as_str().unwrap().to_owned();
        let dec = |who: &'static str| {
            json(
                &f,
                who,
                "decrypt",
                serde_json::json!({"context": "vault/app", "ciphertext": ct}),
            )
        };
        assert_eq!(dec(APP).await.status, StatusCode::OK);
        let other = dec(OTHER_APP).await;
        assert_eq!(other.status, StatusCode::BAD_REQUEST);
        // The same raw-mode flag.
        let a = raw_call(
            &f,
            APP,
            "encrypt",
            "context=vault/app&bindCaller=true",
            b"x".to_vec(),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        let b = raw_call(
            &f,
            OTHER_APP,
            "decrypt",
            "context=vault/app",
            a.body.clone(),
        )
        .await;
        assert_eq!(b.status, StatusCode::BAD_REQUEST);
        // Decrypt takes no binding option: the ciphertext carries it.
        let b = raw_call(
            &f,
            APP,
            "decrypt",
            "context=vault/app&bindCaller=false",
            a.body,
        )
        .await;
        assert_eq!(b.status, StatusCode::BAD_REQUEST);
        assert!(b.error().1.contains("encrypt only"), "{:?}", b.error());
    }

    #[tokio::test]
    async fn wrong_context_tampering_and_newer_formats_are_refused() {
        let f = fixture(roomy(), true).await;
        let ct = BASE64
            .decode(encrypt_json(&f, SUPER, "vault/one", b"payload").await)
            .unwrap();
        let dec = |context: &'static str, bytes: Vec<u8>| {
            json(
                &f,
                SUPER,
                "decrypt",
                serde_json::json!({"context": context, "ciphertext": BASE64.encode(bytes)}),
            )
        };
        let wrong_context = dec("vault/two", ct.clone()).await;
        assert_eq!(wrong_context.status, StatusCode::BAD_REQUEST);
        let mut tampered = ct.clone();
        tampered[CIPHER_OVERHEAD - 16] ^= 0x40;
        let altered = dec("vault/one", tampered).await;
        assert_eq!(altered.status, StatusCode::BAD_REQUEST);
        // One message for both, naming no part.
        assert_eq!(wrong_context.error(), altered.error());
        assert!(!altered.error().1.contains("payload"));
        let mut truncated = ct.clone();
        truncated.truncate(10);
        assert_eq!(dec("vault/one", truncated).await.error(), altered.error());

        let mut newer = ct.clone();
        newer[0] = 2;
        let a = dec("vault/one", newer).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert!(a.error().1.contains("format 2"), "{:?}", a.error());

        let mut foreign = ct;
        foreign[1] ^= 0xff;
        let a = dec("vault/one", foreign).await;
        assert!(a.error().1.contains("another key"), "{:?}", a.error());

        let a = json(
            &f,
            SUPER,
            "decrypt",
            serde_json::json!({"context": "vault/one", "ciphertext": "not base64!"}),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn permission_is_checked_on_the_context() {
        let f = fixture(roomy(), true).await;
        allow_cipher(&f, APP, "vault/alice/**").await;
        let enc = |who: &'static str, context: &'static str| {
            json(
                &f,
                who,
                "encrypt",
                serde_json::json!({"context": context, "plaintext": "AA=="}),
            )
        };
        assert_eq!(enc(APP, "vault/alice/x").await.status, StatusCode::OK);
        assert_eq!(enc(APP, "vault/bob").await.status, StatusCode::FORBIDDEN);
        assert_eq!(
            enc(STRANGER, "vault/alice/x").await.status,
            StatusCode::FORBIDDEN
        );
        // Other built-in identities hold no data permissions.
        assert_eq!(
            enc("spiffe://spike.test/spike/keeper/1", "vault/alice/x")
                .await
                .status,
            StatusCode::FORBIDDEN
        );
        // The superuser may use any context.
        assert_eq!(enc(SUPER, "vault/alice/x").await.status, StatusCode::OK);
        // A context must be a valid path.
        let a = enc(APP, "../etc").await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_eq!(a.error().0, "invalid_path");
        let log = audit_log(f.dir.path());
        assert!(log.contains("forbidden"), "{log}");
    }

    /// A bad request: URI, content type, body, expected status and code.
    type Case = (
        &'static str,
        Option<&'static str>,
        &'static [u8],
        StatusCode,
        &'static str,
    );

    #[tokio::test]
    async fn limits_and_bad_requests() {
        let f = fixture(roomy(), true).await;
        // Exactly the limit works in both encodings, also past the router's general 1 MiB
        // body limit (a raw ciphertext of 1 MiB of data is 1 MiB + 34 bytes).
        let max = vec![0x5au8; CIPHER_MAX_PLAINTEXT];
        let ct = encrypt_json(&f, SUPER, "vault/big", &max).await;
        let a = raw_call(
            &f,
            SUPER,
            "decrypt",
            "context=vault/big",
            BASE64.decode(&ct).unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.error());
        assert_eq!(a.body.len(), CIPHER_MAX_PLAINTEXT);
        let a = raw_call(&f, SUPER, "encrypt", "context=vault/big", max.clone()).await;
        assert_eq!(a.status, StatusCode::OK);

        // One byte more: 413, in both encodings, and for a too-long ciphertext.
        let over = vec![0x5au8; CIPHER_MAX_PLAINTEXT + 1];
        let a = json(
            &f,
            SUPER,
            "encrypt",
            serde_json::json!({"context": "vault/big", "plaintext": BASE64.encode(&over)}),
        )
        .await;
        assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(a.error().0, "too_large");
        let a = raw_call(&f, SUPER, "encrypt", "context=vault/big", over.clone()).await;
        assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
        let mut long_ct = BASE64.decode(&ct).unwrap();
        long_ct.push(0);
        let a = raw_call(&f, SUPER, "decrypt", "context=vault/big", long_ct).await;
        assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
        // A body far over the limit is cut off while reading.
        let a = raw_call(&f, SUPER, "encrypt", "context=x", vec![0; 3 << 20]).await;
        assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);

        let cases: [Case; 7] = [
            (
                "/v1/cipher/encrypt?context=x",
                None,
                b"x",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
            (
                "/v1/cipher/encrypt?context=x",
                Some("text/plain"),
                b"x",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
            (
                "/v1/cipher/encrypt",
                Some("application/octet-stream"),
                b"x",
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                "/v1/cipher/encrypt?context=x",
                Some("application/json"),
                br#"{"context":"x","plaintext":"AA=="}"#,
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                "/v1/cipher/encrypt",
                Some("application/json"),
                br#"{"context":"x","plaintext":"AA==","bogus":1}"#,
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                "/v1/cipher/encrypt",
                Some("application/json"),
                br#"{"context":"x","plaintext":"%%%"}"#,
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                "/v1/cipher/encrypt?nope=1",
                Some("application/octet-stream"),
                b"x",
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
        ];
        for (uri, ct, body, status, code) in cases {
            let a = call(&f, SUPER, uri, ct, body.to_vec()).await;
            assert_eq!(a.status, status, "{uri} {ct:?}");
            assert_eq!(a.error().0, code, "{uri} {ct:?}");
        }
        // Content types are case-insensitive and may carry parameters.
        let a = call(
            &f,
            SUPER,
            "/v1/cipher/encrypt?context=x",
            Some("Application/Octet-Stream; charset=binary"),
            b"x".to_vec(),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn rate_limited_per_caller() {
        let f = fixture(
            Rate {
                per_minute: 1,
                burst: 3,
            },
            true,
        )
        .await;
        allow_cipher(&f, "spiffe://spike.test/app/*", "vault/**").await;
        for _ in 0..3 {
            encrypt_json(&f, APP, "vault/x", b"d").await;
        }
        let a = json(
            &f,
            APP,
            "encrypt",
            serde_json::json!({"context": "vault/x", "plaintext": "AA=="}),
        )
        .await;
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(a.error().0, "rate_limited");
        // Decrypt shares the bucket; another caller has its own.
        let a = raw_call(&f, APP, "decrypt", "context=vault/x", vec![1; 40]).await;
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
        encrypt_json(&f, OTHER_APP, "vault/x", b"d").await;
        assert!(audit_log(f.dir.path()).contains("rate_limited"));
    }

    #[tokio::test]
    async fn sealed_nexus_answers_503() {
        let f = fixture(roomy(), false).await;
        let a = json(
            &f,
            SUPER,
            "encrypt",
            serde_json::json!({"context": "vault/x", "plaintext": "AA=="}),
        )
        .await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(a.error().0, "sealed");
    }
}
