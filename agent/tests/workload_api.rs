//! The agent against independent clients: the `spiffe` crate (what SPIKE's components use) and
//! a raw tonic client for the calls a SPIFFE library never makes.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{bounded, id, me, own_uid, raw_client, start, td, with_header};
use futures::StreamExt;
use rustls_pki_types::{CertificateDer, UnixTime};
use spiffe::{WorkloadApiClient, WorkloadApiError, X509Source};
use spike_agent::Registration;
use spike_agent::proto::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, X509BundlesRequest, X509svidRequest,
};
use x509_parser::prelude::*;

const HOUR: Duration = Duration::from_secs(3600);

fn spiffe_td() -> spiffe::TrustDomain {
    spiffe::TrustDomain::new("spike.dev").unwrap()
}

/// Verifies `chain` (leaf first) to `ca_der` for both TLS client and server use.
fn verify_chain(chain: &[&[u8]], ca_der: &[u8]) -> Result<(), webpki::Error> {
    let ca = CertificateDer::from(ca_der.to_vec());
    let anchors = [webpki::anchor_from_trusted_cert(&ca).unwrap().to_owned()];
    let leaf = CertificateDer::from(chain[0].to_vec());
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|c| CertificateDer::from(c.to_vec()))
        .collect();
    let ee = webpki::EndEntityCert::try_from(&leaf).unwrap();
    for usage in [
        webpki::KeyUsage::client_auth(),
        webpki::KeyUsage::server_auth(),
    ] {
        ee.verify_for_usage(
            &[webpki::ring::ECDSA_P256_SHA256],
            &anchors,
            &intermediates,
            UnixTime::now(),
            usage,
            None,
            None,
        )?;
    }
    Ok(())
}

fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Some(san) = cert.subject_alternative_name().unwrap() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn spiffe_client_gets_a_valid_svid_and_bundle() {
    let dir = common::private_tempdir();
    let agent = start(dir.path(), vec![me("/app")], HOUR).await;
    assert!(agent.endpoint().starts_with("unix:///"));

    let client = bounded("connect", WorkloadApiClient::connect_to(agent.endpoint()))
        .await
        .unwrap();
    let svid = bounded("svid", client.fetch_x509_svid()).await.unwrap();
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://spike.dev/app");

    let bundles = bounded("bundles", client.fetch_x509_bundles())
        .await
        .unwrap();
    assert_eq!(bundles.len(), 1);
    let bundle = bundles.get(&spiffe_td()).unwrap();
    let authorities = bundle.authorities();
    assert_eq!(authorities.len(), 1);
    let ca_der = authorities[0].as_bytes();
    assert_eq!(ca_der, agent.ca().bundle_der().as_slice());

    // The chain verifies to the bundle.
    let chain: Vec<&[u8]> = svid.cert_chain().iter().map(|c| c.as_bytes()).collect();
    verify_chain(&chain, ca_der).unwrap();

    // Leaf: one URI SAN, CA:false, digitalSignature (and no CA usages), server+client auth.
    let (_, leaf) = X509Certificate::from_der(chain[0]).unwrap();
    assert_eq!(uri_sans(&leaf), ["spiffe://spike.dev/app"]);
    assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature());
    assert!(!ku.key_cert_sign() && !ku.crl_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);

    // The private key belongs to the leaf.
    let key = rcgen::KeyPair::try_from(svid.private_key().as_bytes()).unwrap();
    assert_eq!(
        key.public_key_raw(),
        leaf.public_key().subject_public_key.data.as_ref()
    );

    // CA: CA:true, keyCertSign + cRLSign, URI SAN = trust domain ID.
    let (_, ca) = X509Certificate::from_der(ca_der).unwrap();
    assert!(ca.basic_constraints().unwrap().unwrap().value.ca);
    let ku = ca.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    assert_eq!(uri_sans(&ca), ["spiffe://spike.dev"]);

    // What the handle reports is what the client got.
    let current = agent.current_svid(&id("/app")).unwrap();
    assert_eq!(current.leaf_der(), chain[0]);

    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn caller_matching_several_entries_gets_all_default_first() {
    let dir = common::private_tempdir();
    let regs = vec![
        Registration::new(id("/first"))
            .with_uid(own_uid())
            .with_hint("primary"),
        Registration::new(id("/never")).with_exe("/nonexistent/bin"),
        me("/second"),
        // Same ID twice: served once.
        Registration::new(id("/first")).with_exe(std::env::current_exe().unwrap()),
    ];
    let agent = start(dir.path(), regs, HOUR).await;
    let client = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .unwrap();
    let all = bounded("svids", client.fetch_all_x509_svids())
        .await
        .unwrap();
    let ids: Vec<String> = all.iter().map(|s| s.spiffe_id().to_string()).collect();
    assert_eq!(
        ids,
        ["spiffe://spike.dev/first", "spiffe://spike.dev/second"]
    );
    assert_eq!(all[0].hint(), Some("primary"));
    let default = client.fetch_x509_svid().await.unwrap();
    assert_eq!(default.spiffe_id().to_string(), "spiffe://spike.dev/first");
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn open_stream_observes_half_life_rotation() {
    let dir = common::private_tempdir();
    // 4s TTL: a new SVID (new key, new certificate) after about 2s.
    let agent = start(dir.path(), vec![me("/rotating")], Duration::from_secs(4)).await;
    let client = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .unwrap();
    let mut stream = client.stream_x509_svids().await.unwrap();
    let first = bounded("first svid", stream.next()).await.unwrap().unwrap();
    let second = bounded("rotated svid", stream.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.spiffe_id(), first.spiffe_id());
    assert_ne!(second.leaf().as_bytes(), first.leaf().as_bytes());
    assert_ne!(
        second.private_key().as_bytes(),
        first.private_key().as_bytes()
    );
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn x509_source_follows_rotation_without_reconnecting() {
    let dir = common::private_tempdir();
    let agent = start(dir.path(), vec![me("/source")], HOUR).await;
    let source = bounded(
        "source",
        X509Source::builder().endpoint(agent.endpoint()).build(),
    )
    .await
    .unwrap();
    let before = source.svid().unwrap();
    assert_eq!(before.spiffe_id().to_string(), "spiffe://spike.dev/source");
    let mut updates = source.updated();

    agent.rotate_now().unwrap();
    let current = agent.current_svid(&id("/source")).unwrap();
    assert_ne!(current.leaf_der(), before.leaf().as_bytes());
    bounded(
        "source update",
        updates.wait_for(|_| {
            source
                .svid()
                .is_ok_and(|s| s.leaf().as_bytes() == current.leaf_der())
        }),
    )
    .await
    .unwrap();
    source.shutdown().await;
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn unregistered_caller_is_denied() {
    let dir = common::private_tempdir();
    // Right uid, other executable: every named selector must match.
    let regs = vec![
        Registration::new(id("/other"))
            .with_uid(own_uid())
            .with_exe("/usr/local/bin/some-other-binary"),
    ];
    let agent = start(dir.path(), regs, HOUR).await;
    let client = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .unwrap();
    let err = bounded("svid", client.fetch_x509_svid()).await.unwrap_err();
    assert!(matches!(err, WorkloadApiError::NoIdentityIssued), "{err:?}");
    let err = bounded("bundles", client.fetch_x509_bundles())
        .await
        .unwrap_err();
    assert!(matches!(err, WorkloadApiError::NoIdentityIssued), "{err:?}");

    // The raw status is PermissionDenied, as SPIRE answers.
    let mut raw = raw_client(agent.socket_path()).await;
    let status = raw
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(status.message(), "no identity issued");
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn registration_changes_apply_at_runtime() {
    let dir = common::private_tempdir();
    let agent = start(dir.path(), Vec::new(), HOUR).await;
    let client = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .unwrap();
    assert!(matches!(
        client.fetch_x509_svid().await,
        Err(WorkloadApiError::NoIdentityIssued)
    ));

    agent.set_registrations(vec![me("/late")]).unwrap();
    let mut stream = client.stream_x509_svids().await.unwrap();
    let svid = bounded("svid", stream.next()).await.unwrap().unwrap();
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://spike.dev/late");

    // A refused set changes nothing.
    let bad = vec![Registration::new(id("/x")), me("/late")];
    let err = agent.set_registrations(bad).unwrap_err();
    assert!(err.to_string().contains("no selectors"), "{err}");
    assert_eq!(agent.registrations().len(), 1);

    // Adding an entry pushes the larger set to the open stream.
    agent.add_registration(me("/extra")).unwrap();
    let ctx_stream = client.stream_x509_contexts().await.unwrap();
    futures::pin_mut!(ctx_stream);
    let ctx = bounded("context", ctx_stream.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ctx.svids().len(), 2);

    // Taking the entries away ends the stream with PermissionDenied.
    agent
        .set_registrations(vec![
            Registration::new(id("/gone")).with_exe("/nonexistent"),
        ])
        .unwrap();
    let end = bounded("denial", async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await;
    assert!(
        matches!(end, Some(Err(WorkloadApiError::NoIdentityIssued))),
        "{end:?}"
    );
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn missing_security_header_is_invalid_argument() {
    let dir = common::private_tempdir();
    let agent = start(dir.path(), vec![me("/app")], HOUR).await;
    let mut raw = raw_client(agent.socket_path()).await;

    let status = raw.fetch_x509svid(X509svidRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "security header missing from request");

    let status = raw
        .fetch_x509_bundles(X509BundlesRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let mut req = tonic::Request::new(X509svidRequest {});
    req.metadata_mut()
        .insert(spike_agent::SECURITY_HEADER, "false".parse().unwrap());
    let status = raw.fetch_x509svid(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // With the header the same registered caller is served.
    let resp = raw
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap();
    let mut stream = resp.into_inner();
    let msg = bounded("message", stream.message()).await.unwrap().unwrap();
    assert_eq!(msg.svids.len(), 1);
    assert_eq!(msg.svids[0].spiffe_id, "spiffe://spike.dev/app");
    assert!(msg.crl.is_empty() && msg.federated_bundles.is_empty());
    // Debug output never shows the key.
    assert!(format!("{:?}", msg.svids[0]).contains("[redacted]"));
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn bundles_response_is_keyed_by_trust_domain_id() {
    let dir = common::private_tempdir();
    let agent = start(dir.path(), vec![me("/app")], HOUR).await;
    let mut raw = raw_client(agent.socket_path()).await;
    let mut stream = raw
        .fetch_x509_bundles(with_header(X509BundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let msg = bounded("bundles", stream.message()).await.unwrap().unwrap();
    assert_eq!(msg.bundles.len(), 1);
    assert_eq!(
        msg.bundles.get("spiffe://spike.dev"),
        Some(&agent.ca().bundle_der())
    );
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn jwt_calls_are_unimplemented() {
    let dir = common::private_tempdir();
    let agent = start(dir.path(), vec![me("/app")], HOUR).await;
    let mut raw = raw_client(agent.socket_path()).await;

    let status = raw
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["x".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    let status = raw
        .fetch_jwt_bundles(with_header(JwtBundlesRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    let status = raw
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "x".into(),
            svid: "a.b.c".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_ends_streams_and_removes_the_socket() {
    let dir = common::private_tempdir();
    let agent = start(dir.path(), vec![me("/app")], HOUR).await;
    let socket = agent.socket_path().to_owned();
    let client = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .unwrap();
    let mut stream = client.stream_x509_svids().await.unwrap();
    bounded("first", stream.next()).await.unwrap().unwrap();

    bounded("shutdown", agent.shutdown()).await.unwrap();
    assert!(!socket.exists());
    // The open stream ends instead of hanging.
    let rest = bounded("stream end", async {
        let mut n = 0;
        while let Some(item) = stream.next().await {
            if item.is_err() {
                break;
            }
            n += 1;
        }
        n
    })
    .await;
    assert_eq!(rest, 0);
}

#[tokio::test]
async fn refused_config_touches_nothing_and_live_socket_is_kept() {
    let dir = common::private_tempdir();
    let nested = dir.path().join("not-yet");

    // A foreign trust domain entry: refused before the directory is created.
    let foreign = Registration::new(spike_core::id::SpiffeId::new("spiffe://evil.dev/x").unwrap())
        .with_uid(own_uid());
    let mut config = spike_agent::AgentConfig::new(td(), nested.join("agent.sock"));
    config.registrations = vec![foreign];
    let err = spike_agent::start(config).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("not in the agent's trust domain spike.dev"),
        "{err}"
    );
    assert!(!nested.exists());

    let mut config = spike_agent::AgentConfig::new(td(), nested.join("agent.sock"));
    config.svid_ttl = Duration::from_millis(10);
    let err = spike_agent::start(config).await.unwrap_err();
    assert!(err.to_string().contains("invalid SVID TTL"), "{err}");
    assert!(!nested.exists());

    // A running agent's socket is never taken over.
    let first = start(&nested, vec![me("/app")], HOUR).await;
    let mut config = spike_agent::AgentConfig::new(td(), nested.join("agent.sock"));
    config.registrations = vec![me("/app")];
    let err = spike_agent::start(config).await.unwrap_err();
    assert!(
        err.to_string().contains("in use by a running agent"),
        "{err}"
    );
    let client = WorkloadApiClient::connect_to(first.endpoint())
        .await
        .unwrap();
    client.fetch_x509_svid().await.unwrap();
    first.shutdown().await.unwrap();
}

#[tokio::test]
async fn dropped_handle_cleans_up() {
    let dir = common::private_tempdir();
    let agent = start(dir.path(), vec![me("/app")], HOUR).await;
    let socket = agent.socket_path().to_owned();
    drop(agent);
    assert!(!socket.exists());
    // The path is free for a new agent right away.
    let again = start(dir.path(), vec![me("/app")], HOUR).await;
    let client = WorkloadApiClient::connect_to(again.endpoint())
        .await
        .unwrap();
    client.fetch_x509_svid().await.unwrap();
    again.shutdown().await.unwrap();
}

/// Run by `env_selector_tells_processes_of_one_binary_apart` in a child process of this test
/// binary; does nothing when run on its own.
#[tokio::test]
#[ignore = "helper: runs only as a child process of another test"]
async fn helper_print_svid_id() {
    let Ok(endpoint) = std::env::var("SPIKE_AGENT_TEST_ENDPOINT") else {
        return;
    };
    let client = WorkloadApiClient::connect_to(endpoint).await.unwrap();
    match bounded("svid", client.fetch_all_x509_svids()).await {
        Ok(svids) => {
            for s in svids {
                println!("SVID-ID {}", s.spiffe_id());
            }
        }
        Err(e) => println!("SVID-ERROR {e}"),
    }
}

fn run_helper(endpoint: &str, keeper_index: Option<&str>) -> Vec<String> {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "helper_print_svid_id",
        "--ignored",
        "--nocapture",
    ])
    .env("SPIKE_AGENT_TEST_ENDPOINT", endpoint)
    .env_remove("SPIKE_KEEPER_INDEX");
    if let Some(i) = keeper_index {
        cmd.env("SPIKE_KEEPER_INDEX", i);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("SVID-"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn env_selector_tells_processes_of_one_binary_apart() {
    let dir = common::private_tempdir();
    let exe = std::env::current_exe().unwrap();
    let regs = (1..=2)
        .map(|i| {
            Registration::new(id(&format!("/spike/keeper/{i}")))
                .with_exe(&exe)
                .with_env("SPIKE_KEEPER_INDEX", i.to_string())
        })
        .collect();
    let agent = start(dir.path(), regs, HOUR).await;
    let endpoint = agent.endpoint();
    let (one, two, none) = tokio::task::spawn_blocking(move || {
        (
            run_helper(&endpoint, Some("1")),
            run_helper(&endpoint, Some("2")),
            run_helper(&endpoint, None),
        )
    })
    .await
    .unwrap();
    assert_eq!(one, ["SVID-ID spiffe://spike.dev/spike/keeper/1"]);
    assert_eq!(two, ["SVID-ID spiffe://spike.dev/spike/keeper/2"]);
    assert_eq!(none, ["SVID-ERROR no identity issued"]);
    agent.shutdown().await.unwrap();
}
