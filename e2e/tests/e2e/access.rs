//! Who can read what: policies, foreign trust domains, missing, expired and self-signed certs.

use std::process::Command;
use std::time::Duration;

use spike_agent::CertificateAuthority;
use spike_core::id::TrustDomain;
use spike_e2e::{Cluster, text};

#[test]
fn only_policy_holders_read_and_strangers_are_refused() {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    let out = c.spike(
        &admin,
        &[
            "secret",
            "put",
            "apps/web/db",
            "user=alice",
            "pass=s3cret-e2e",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    let out = c.spike(
        &admin,
        &[
            "policy",
            "create",
            "web-read",
            "--spiffe-id-pattern",
            "spiffe://spike.test/ns/web/**",
            "--path-pattern",
            "apps/web/**",
            "--permissions",
            "read,list",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    // Allowed by the policy.
    let web = c.pki.svid("/ns/web/sa/frontend");
    let out = c.spike(&web, &["secret", "get", "apps/web/db", "pass"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "s3cret-e2e");
    let out = c.spike(&web, &["secret", "list", "-o", "json"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("apps/web/db"),
        "{}",
        text(&out)
    );
    // Read-only: a write is refused and changes nothing.
    let out = c.spike(&web, &["secret", "put", "apps/web/db", "pass=hacked"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));

    // A valid SVID with no policy: refused, and list shows nothing.
    let stranger = c.pki.svid("/ns/other/sa/app");
    let out = c.spike(&stranger, &["secret", "get", "apps/web/db"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret"));
    let out = c.spike(&stranger, &["secret", "list", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("apps/web"),
        "{}",
        text(&out)
    );
    // Nor may it manage policies or bootstrap.
    let out = c.spike(&stranger, &["policy", "list"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));

    // A keeper identity gets no data access either (built-ins never match policies).
    let keeper = c.pki.svid("/spike/keeper/1");
    let out = c.spike(&keeper, &["secret", "get", "apps/web/db"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));

    // Another trust domain's CA, even with a look-alike path: refused at the TLS layer.
    let evil_dir = c.dir.path().join("evil");
    std::fs::create_dir_all(&evil_dir).unwrap();
    let evil_td = TrustDomain::new("evil.test").unwrap();
    let evil_ca = CertificateAuthority::new(&evil_td).unwrap();
    let evil = evil_ca
        .issue(
            &evil_td.id("/spike/pilot/role/superuser").unwrap(),
            Duration::from_secs(600),
        )
        .unwrap()
        .write_pem_files(&evil_dir)
        .unwrap();
    // Present the foreign SVID but trust our real bundle, so only the server's check can fail.
    let mut foreign = evil;
    foreign.bundle = admin.bundle.clone();
    let out = c.spike(&foreign, &["secret", "get", "apps/web/db"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret"));

    // A certificate for our trust domain signed by a different CA (a forged superuser).
    let forged_dir = c.dir.path().join("forged");
    std::fs::create_dir_all(&forged_dir).unwrap();
    let forger = CertificateAuthority::new(&c.pki.td).unwrap();
    let mut forged = forger
        .issue(
            &c.pki.id("/spike/pilot/role/superuser"),
            Duration::from_secs(600),
        )
        .unwrap()
        .write_pem_files(&forged_dir)
        .unwrap();
    forged.bundle = admin.bundle;
    let out = c.spike(&forged, &["secret", "get", "apps/web/db"]);
    assert!(!out.status.success(), "{}", text(&out));

    // An expired SVID from the right CA.
    let expired_dir = c.dir.path().join("expired");
    std::fs::create_dir_all(&expired_dir).unwrap();
    let now = std::time::SystemTime::now();
    let expired = c
        .pki
        .ca
        .issue_with_validity(
            &c.pki.id("/spike/pilot/role/superuser"),
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
        )
        .unwrap()
        .write_pem_files(&expired_dir)
        .unwrap();
    let out = c.spike(&expired, &["secret", "get", "apps/web/db"]);
    assert!(!out.status.success(), "{}", text(&out));

    // Plain clients without an SVID: curl and openssl cannot read anything.
    let url = format!(
        "https://127.0.0.1:{}/v1/secrets/data/apps/web/db",
        c.nexus_port
    );
    if let Ok(out) = Command::new("curl")
        .args(["-sk", "--max-time", "5", &url])
        .output()
    {
        assert!(
            !out.status.success(),
            "curl without a cert must fail: {}",
            text(&out)
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret"));
    }
    // curl with a self-signed certificate carrying the superuser ID.
    let ss_dir = c.dir.path().join("selfsigned");
    std::fs::create_dir_all(&ss_dir).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://spike.test/spike/pilot/role/superuser"
            .try_into()
            .unwrap(),
    )];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(ss_dir.join("c.pem"), cert.pem()).unwrap();
    std::fs::write(ss_dir.join("k.pem"), key.serialize_pem()).unwrap();
    if let Ok(out) = Command::new("curl")
        .args(["-sk", "--max-time", "5", "--cert"])
        .arg(ss_dir.join("c.pem"))
        .arg("--key")
        .arg(ss_dir.join("k.pem"))
        .arg(&url)
        .output()
    {
        assert!(
            !out.status.success(),
            "self-signed cert must fail: {}",
            text(&out)
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret"));
    }
    if let Ok(mut child) = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", c.nexus_port),
            "-quiet",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(b"GET /v1/secrets/data/apps/web/db HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("s3cret"),
            "{}",
            text(&out)
        );
    }
    // The legitimate reader still works afterwards.
    let out = c.spike(&web, &["secret", "get", "apps/web/db", "pass"]);
    assert!(out.status.success(), "{}", text(&out));
}
