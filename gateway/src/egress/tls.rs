//! TLS to upstreams: ordinary Web PKI verification of the name the gateway dialed for, against
//! the system's roots or a route's own CA file, offering HTTP/2 and HTTP/1.1.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why upstream trust could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The system store yielded no certificate.
    #[error(
        "no CA certificates found in the system store (install ca-certificates, or give the route a ca_file)"
    )]
    NoSystemRoots,
    /// A CA file could not be read or holds no usable certificate.
    #[error("CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The system's CA certificates.
pub fn system_roots() -> Result<RootCertStore, TrustError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    // Certificates the store holds but rustls cannot use are skipped, as browsers do.
    let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(TrustError::NoSystemRoots);
    }
    Ok(roots)
}

/// The CA certificates of a PEM file (for an upstream with a private CA).
pub fn roots_from_pem_file(path: &Path) -> Result<RootCertStore, TrustError> {
    let bad = |reason: String| TrustError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("no CERTIFICATE block".into()));
    }
    Ok(roots)
}

/// A client configuration verifying upstreams against `roots`, offering h2 and http/1.1.
pub fn client_config(roots: RootCertStore) -> Result<Arc<rustls::ClientConfig>, TrustError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
