//! Bad input gets a clear 4xx with a JSON error, echoes no value, and changes nothing.

use std::sync::Arc;

use http::Method;
use spike_core::error::ErrorBody;
use spike_core::id::Builtin;
use spike_e2e::{Cluster, text};
use spike_runtime::net::MtlsClient;
use spike_runtime::svid::{Identity, StaticSource};

/// One bad request: method, path, body, expected status and error code.
type Case = (Method, String, Option<Vec<u8>>, u16, &'static str);

fn client(c: &Cluster, files: &spike_agent::PemFiles) -> MtlsClient {
    let identity = Identity::from_pem(
        &c.pki.td,
        &std::fs::read(&files.cert).unwrap(),
        &std::fs::read(&files.key).unwrap(),
        &std::fs::read(&files.bundle).unwrap(),
    )
    .unwrap();
    let source = Arc::new(StaticSource::new(c.pki.td.clone(), identity));
    MtlsClient::new(
        format!("127.0.0.1:{}", c.nexus_port),
        Builtin::Nexus.id(&c.pki.td),
        source,
    )
    .unwrap()
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    spike_runtime::tls::install_crypto_provider();
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    let out = c.spike(&admin, &["secret", "put", "ok/path", "k=original"]);
    assert!(out.status.success(), "{}", text(&out));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = client(&c, &admin);
    let good = br#"{"data":{"k":"v"}}"#.to_vec();
    let long_path = "a".repeat(600);
    let deep_path = vec!["d"; 40].join("/");
    let big_value = format!(r#"{{"data":{{"k":"{}"}}}}"#, "x".repeat(70 * 1024));
    // Small values, but a body over the 1 MiB limit (JSON whitespace).
    let huge_body = format!(r#"{{"data":{{"k":"v"}}{}}}"#, " ".repeat(2 << 20));
    let many_keys = {
        let pairs: Vec<String> = (0..300).map(|i| format!(r#""k{i}":"v""#)).collect();
        format!(r#"{{"data":{{{}}}}}"#, pairs.join(","))
    };
    let cases: Vec<Case> = vec![
        (Method::PUT, "/v1/secrets/data/a//b".into(), Some(good.clone()), 400, "invalid_path"),
        (Method::PUT, "/v1/secrets/data/..%2Fok%2Fpath".into(), Some(good.clone()), 400, "invalid_path"),
        (Method::PUT, "/v1/secrets/data/ok/./path".into(), Some(good.clone()), 400, "invalid_path"),
        (Method::PUT, "/v1/secrets/data/has%20space".into(), Some(good.clone()), 400, "invalid_path"),
        (Method::PUT, format!("/v1/secrets/data/{long_path}"), Some(good.clone()), 400, "invalid_path"),
        (Method::PUT, format!("/v1/secrets/data/{deep_path}"), Some(good), 400, "invalid_path"),
        (Method::PUT, "/v1/secrets/data/ok/path".into(), Some(big_value.into_bytes()), 413, "too_large"),
        (Method::PUT, "/v1/secrets/data/ok/path".into(), Some(huge_body.into_bytes()), 413, "too_large"),
        (Method::PUT, "/v1/secrets/data/ok/path".into(), Some(many_keys.into_bytes()), 413, "too_large"),
        (Method::PUT, "/v1/secrets/data/ok/path".into(), Some(b"{\"data\":".to_vec()), 400, "bad_request"),
        (Method::PUT, "/v1/secrets/data/ok/path".into(), Some(br#"{"data":{"k":"s3cretvalue"},"bogus":1}"#.to_vec()), 400, "bad_request"),
        (Method::PUT, "/v1/secrets/data/ok/path".into(), Some(br#"{"data":{"k":["s3cretvalue"]}}"#.to_vec()), 400, "bad_request"),
        (Method::PUT, "/v1/secrets/data/ok/path".into(), Some(br#"{"data":{}}"#.to_vec()), 400, "bad_request"),
        (Method::PUT, "/v1/secrets/data/ok/path".into(), Some(br#"{"data":{"k":"v"},"cas":"one"}"#.to_vec()), 400, "bad_request"),
        (Method::GET, "/v1/secrets/data/ok/path?version=abc".into(), None, 400, "bad_request"),
        (Method::GET, "/v1/secrets/list?limit=-1".into(), None, 400, "bad_request"),
        (Method::PUT, "/v1/policies/bad%20name".into(), Some(br#"{"spiffeIdPattern":"spiffe://spike.test/**","pathPattern":"a/**","permissions":["read"]}"#.to_vec()), 400, "invalid_policy"),
        (Method::PUT, "/v1/policies/p".into(), Some(br#"{"spiffeIdPattern":"spiffe://spike.test/**","pathPattern":"a/b**","permissions":["read"]}"#.to_vec()), 400, "invalid_policy"),
        (Method::PUT, "/v1/policies/p".into(), Some(br#"{"spiffeIdPattern":"not-an-id","pathPattern":"a/**","permissions":["read"]}"#.to_vec()), 400, "invalid_policy"),
        (Method::PUT, "/v1/policies/p".into(), Some(br#"{"spiffeIdPattern":"spiffe://spike.test/**","pathPattern":"a/**","permissions":["fly"]}"#.to_vec()), 400, "bad_request"),
        (Method::PUT, "/v1/policies/p".into(), Some(br#"{"spiffeIdPattern":"spiffe://spike.test/**","pathPattern":"a/**","permissions":[]}"#.to_vec()), 400, "invalid_policy"),
        (Method::DELETE, "/v1/secrets/data/ok/path".into(), None, 405, "method_not_allowed"),
        (Method::GET, "/v1/nope".into(), None, 404, "not_found"),
    ];
    for (method, path, body, status, code) in cases {
        let label = format!("{method} {}", &path[..path.len().min(60)]);
        let oversized = body.as_ref().is_some_and(|b| b.len() > 1 << 20);
        let resp = match rt.block_on(http.send(method, &path, body)) {
            Ok(r) => r,
            // Nexus may answer 413 from the Content-Length alone and close the connection
            // while the client is still sending: a refusal too.
            Err(spike_runtime::net::ClientError::Http { .. }) if oversized => continue,
            Err(e) => panic!("{label}: {e}"),
        };
        assert_eq!(resp.status.as_u16(), status, "{label}: {:?}", resp.body);
        let err: ErrorBody = serde_json::from_slice(&resp.body)
            .unwrap_or_else(|_| panic!("{label}: not a JSON error: {:?}", resp.body));
        assert_eq!(
            err.error.code.as_str(),
            code,
            "{label}: {}",
            err.error.message
        );
        assert!(!err.error.message.is_empty());
        assert!(
            !err.error.message.contains("s3cretvalue"),
            "{label} echoes a value"
        );
    }
    // Nothing changed: still version 1 with the original value, no policy created.
    let out = c.spike(&admin, &["secret", "metadata", "ok/path", "-o", "json"]);
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(meta["currentVersion"], 1, "{}", text(&out));
    assert_eq!(meta["versions"].as_array().unwrap().len(), 1);
    let out = c.spike(&admin, &["secret", "get", "ok/path", "k"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "original");
    let out = c.spike(&admin, &["policy", "list", "-o", "json"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[]",
        "{}",
        text(&out)
    );
    let out = c.spike(&admin, &["secret", "list", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{}", text(&out));
}
