//! The CA as other crates' tests use it: PEM output, files on disk, expired SVIDs, foreign CAs.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

use common::{id, td};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use spike_agent::{CertificateAuthority, IssuedSvid};
use spike_core::id::TrustDomain;

fn verify_at(svid: &IssuedSvid, ca_der: &[u8], at: SystemTime) -> Result<(), webpki::Error> {
    let ca = CertificateDer::from(ca_der.to_vec());
    let anchors = [webpki::anchor_from_trusted_cert(&ca).unwrap().to_owned()];
    let leaf = CertificateDer::from(svid.leaf_der().to_vec());
    let ee = webpki::EndEntityCert::try_from(&leaf).unwrap();
    let at = UnixTime::since_unix_epoch(at.duration_since(SystemTime::UNIX_EPOCH).unwrap());
    ee.verify_for_usage(
        &[webpki::ring::ECDSA_P256_SHA256],
        &anchors,
        &[],
        at,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map(|_| ())
}

#[test]
fn pem_and_der_forms_agree() {
    let ca = CertificateAuthority::new(&td()).unwrap();
    let svid = ca.issue(&id("/app"), Duration::from_secs(600)).unwrap();
    assert_eq!(svid.spiffe_id, id("/app"));

    let chain: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(svid.chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(chain.len(), svid.chain_der.len());
    assert_eq!(chain[0].as_ref(), svid.leaf_der());

    let key = PrivateKeyDer::from_pem_slice(svid.key_pem.as_bytes()).unwrap();
    assert_eq!(key.secret_der(), svid.key_der.as_slice());
    assert!(matches!(key, PrivateKeyDer::Pkcs8(_)));

    let bundle = CertificateDer::from_pem_slice(ca.bundle_pem().as_bytes()).unwrap();
    assert_eq!(bundle.as_ref(), ca.bundle_der().as_slice());
    assert_eq!(svid.bundle_der, ca.bundle_der());

    // Validity: whole seconds, TTL honoured (start backdated a little for clock skew).
    let lifetime = svid.not_after.duration_since(svid.not_before).unwrap();
    assert!(lifetime >= Duration::from_secs(600), "{lifetime:?}");
    assert!(lifetime <= Duration::from_secs(600 + 60), "{lifetime:?}");
    verify_at(&svid, &ca.bundle_der(), SystemTime::now()).unwrap();
}

#[test]
fn every_svid_has_a_fresh_key_and_serial() {
    let ca = CertificateAuthority::new(&td()).unwrap();
    let a = ca.issue(&id("/app"), Duration::from_secs(60)).unwrap();
    let b = ca.issue(&id("/app"), Duration::from_secs(60)).unwrap();
    assert_ne!(a.key_der.as_slice(), b.key_der.as_slice());
    let (_, ca_) = x509_parser::parse_x509_certificate(a.leaf_der()).unwrap();
    let (_, cb) = x509_parser::parse_x509_certificate(b.leaf_der()).unwrap();
    assert_ne!(ca_.raw_serial(), cb.raw_serial());
}

#[test]
fn expired_svid_does_not_verify() {
    let ca = CertificateAuthority::new(&td()).unwrap();
    let now = SystemTime::now();
    let svid = ca
        .issue_with_validity(
            &id("/old"),
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
        )
        .unwrap();
    let err = verify_at(&svid, &ca.bundle_der(), now).unwrap_err();
    assert!(matches!(err, webpki::Error::CertExpired { .. }), "{err:?}");
    // It was valid back then: only time makes it fail.
    verify_at(&svid, &ca.bundle_der(), now - Duration::from_secs(5400)).unwrap();
}

#[test]
fn svid_of_another_ca_does_not_verify() {
    let ours = CertificateAuthority::new(&td()).unwrap();
    // Same trust domain name, different key: still not ours.
    let rogue = CertificateAuthority::new(&td()).unwrap();
    let svid = rogue.issue(&id("/app"), Duration::from_secs(60)).unwrap();
    assert!(verify_at(&svid, &ours.bundle_der(), SystemTime::now()).is_err());

    let foreign_td = TrustDomain::new("other.example").unwrap();
    let foreign = CertificateAuthority::new(&foreign_td).unwrap();
    let svid = foreign
        .issue(&foreign_td.id("/app").unwrap(), Duration::from_secs(60))
        .unwrap();
    assert!(verify_at(&svid, &ours.bundle_der(), SystemTime::now()).is_err());
    verify_at(&svid, &foreign.bundle_der(), SystemTime::now()).unwrap();
}

#[test]
fn custom_certificates_chain_to_the_ca() {
    let ca = CertificateAuthority::new(&td()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    // A leaf a correct issuer would never produce: no SAN at all.
    let params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let der = ca.sign_custom(&params, &key).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let ca_der = ca.bundle_der();
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert_eq!(cert.issuer(), ca_cert.subject());
    assert!(cert.subject_alternative_name().unwrap().is_none());
}

#[test]
fn pem_files_are_written_with_a_private_key_file() {
    let ca = CertificateAuthority::new(&td()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let svid = ca.issue(&id("/files"), Duration::from_secs(60)).unwrap();
    let files = svid.write_pem_files(dir.path()).unwrap();
    assert_eq!(fs::read_to_string(&files.cert).unwrap(), svid.chain_pem);
    assert_eq!(
        fs::read_to_string(&files.key).unwrap(),
        svid.key_pem.as_str()
    );
    assert_eq!(fs::read_to_string(&files.bundle).unwrap(), ca.bundle_pem());
    assert_eq!(fs::metadata(&files.key).unwrap().mode() & 0o777, 0o600);

    // Rewriting replaces the files in place and keeps the key private.
    let next = ca.issue(&id("/files"), Duration::from_secs(60)).unwrap();
    let again = next.write_pem_files(dir.path()).unwrap();
    assert_eq!(again, files);
    assert_eq!(fs::read_to_string(&files.cert).unwrap(), next.chain_pem);
    assert_eq!(fs::metadata(&files.key).unwrap().mode() & 0o777, 0o600);
    // No temp files left behind.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
}
