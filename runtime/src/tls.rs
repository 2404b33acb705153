//! rustls configurations that authenticate peers by X.509-SVID and authorize them by SPIFFE ID.
//!
//! Both sides of every SPIKE connection check the other. A certificate is accepted only if it
//! chains to the *current* trust bundle of the configured trust domain, is a valid X.509-SVID
//! leaf (one URI SAN, not a CA), and its SPIFFE ID passes the connection's [`PeerRule`]. Peers
//! from another trust domain fail at the TLS layer, before any HTTP is read. Own certificates
//! and trust anchors are read from the [`SvidSource`] at every handshake, so rotation needs no
//! restart. TLS 1.3 only, and no session resumption (a resumed session would skip these checks).
//!
//! A refusal says why: expiry and an unknown issuer keep rustls's own errors (and alerts), the
//! SPIFFE rules give a [`PeerRefusal`] naming the ID the peer presented, and
//! [`refusal_reason`] turns any handshake error into the bounded label the server logs and
//! counts.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use spike_core::id::{SpiffeId, TrustDomain};

use crate::svid::{SvidSource, leaf_identity};
/// The TLS error type of configuration builders.
pub use rustls::Error as TlsError;

/// Installs the process-wide rustls crypto provider (ring). Call first thing in `main`;
/// calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Which peer SPIFFE IDs a connection accepts (after the chain has been verified).
#[derive(Clone)]
pub enum PeerRule {
    /// Any SVID of the trust domain; the application authorizes per request.
    AnyInTrustDomain,
    /// Exactly one of these IDs (built-in identities are always matched exactly).
    OneOf(Vec<SpiffeId>),
}

impl fmt::Debug for PeerRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AnyInTrustDomain => f.write_str("AnyInTrustDomain"),
            Self::OneOf(ids) => f
                .debug_list()
                .entries(ids.iter().map(|i| i.as_str()))
                .finish(),
        }
    }
}

impl PeerRule {
    /// Exactly `id`.
    pub fn exactly(id: SpiffeId) -> Self {
        Self::OneOf(vec![id])
    }

    fn admits(&self, id: &SpiffeId, td: &TrustDomain) -> bool {
        id.is_member_of(td)
            && match self {
                Self::AnyInTrustDomain => true,
                Self::OneOf(ids) => ids.iter().any(|i| i == id),
            }
    }
}

/// The verified identity of the peer of a TLS connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The peer's SPIFFE ID.
    pub id: SpiffeId,
    /// When the peer's certificate expires; the connection must not outlive it.
    pub not_after: SystemTime,
}

impl PeerIdentity {
    /// Reads the peer identity from a completed handshake. The certificate was verified by
    /// this module's verifiers, so this only parses: never call it for a connection of
    /// [`OptionalClientAuth`], whose handshake verifies nothing (use
    /// [`OptionalClientAuth::authenticate`]).
    pub fn from_certs(certs: Option<&[CertificateDer<'_>]>) -> Option<Self> {
        let leaf = certs?.first()?;
        let (id, not_after) = leaf_identity(leaf).ok()?;
        Some(Self { id, not_after })
    }
}

struct SpiffeVerifier {
    source: Arc<dyn SvidSource>,
    rule: PeerRule,
    algs: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for SpiffeVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeVerifier")
            .field("trust_domain", self.source.trust_domain())
            .field("rule", &self.rule)
            .finish()
    }
}

/// Why a peer certificate was refused, beyond what [`CertificateError`]'s own variants say.
/// Carried inside `rustls::Error::Other`, so the rustls error's `Display` (what a client
/// shows, what the server logs) names the SPIFFE ID and the rule that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerRefusal {
    /// The certificate breaks the X.509-SVID profile (the text names the rule).
    #[error("the peer certificate is not an X.509-SVID: {0}")]
    NotSvid(String),
    /// The peer's SPIFFE ID is in another trust domain.
    #[error("the peer presented {id}, which is not in trust domain {expected}")]
    OtherTrustDomain {
        /// The ID the peer presented.
        id: SpiffeId,
        /// This side's trust domain.
        expected: TrustDomain,
    },
    /// The peer's SPIFFE ID is valid but not one this connection accepts.
    #[error("the peer presented {id}, expected {expected}")]
    NotAllowed {
        /// The ID the peer presented.
        id: SpiffeId,
        /// The IDs this connection accepts.
        expected: String,
    },
    /// The chain does not verify for another reason than time or issuer.
    #[error("the certificate of {id} does not verify: {detail}")]
    BadChain {
        /// The ID the peer presented.
        id: SpiffeId,
        /// What webpki reported.
        detail: String,
    },
}

impl PeerRefusal {
    /// A short, bounded label for metrics and log fields.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotSvid(_) => "not_svid",
            Self::OtherTrustDomain { .. } => "other_trust_domain",
            Self::NotAllowed { .. } => "id_not_allowed",
            Self::BadChain { .. } => "bad_certificate",
        }
    }

    // `Error::Other` is the one rustls variant whose `Display` shows our text (inside
    // `InvalidCertificate` it prints `Debug`); its alert is `handshake_failure`.
    fn into_error(self) -> rustls::Error {
        rustls::Error::Other(rustls::OtherError(Arc::new(self)))
    }
}

impl fmt::Display for PeerRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AnyInTrustDomain => f.write_str("any SVID of the trust domain"),
            Self::OneOf(ids) => {
                let ids: Vec<&str> = ids.iter().map(|i| i.as_str()).collect();
                f.write_str(&ids.join(" or "))
            }
        }
    }
}

impl SpiffeVerifier {
    fn new(source: Arc<dyn SvidSource>, rule: PeerRule) -> Self {
        Self {
            source,
            rule,
            algs: provider().signature_verification_algorithms,
        }
    }

    /// Verifies the chain and the SPIFFE ID. Expiry and an unknown issuer keep rustls's own
    /// variants, so the alert sent is `certificate_expired` or `unknown_ca`; SPIFFE rules go
    /// into [`PeerRefusal`] so the message names the ID.
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<(), rustls::Error> {
        let td = self.source.trust_domain();
        let (id, _) = leaf_identity(end_entity)
            .map_err(|detail| PeerRefusal::NotSvid(detail).into_error())?;
        if !id.is_member_of(td) {
            return Err(PeerRefusal::OtherTrustDomain {
                id,
                expected: td.clone(),
            }
            .into_error());
        }
        let identity = self.source.current();
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|e| {
            PeerRefusal::NotSvid(format!("unparsable certificate: {e}")).into_error()
        })?;
        cert.verify_for_usage(
            self.algs.all,
            identity.anchors(),
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(|e| match e {
            webpki::Error::CertExpired { time, not_after } => {
                rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
                    time,
                    not_after,
                })
            }
            webpki::Error::CertNotValidYet { time, not_before } => {
                rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext {
                    time,
                    not_before,
                })
            }
            // A leaf whose signature fails against the bundle's CA of the same name was issued
            // by another CA (a forger's, or an old one that left the bundle): to the operator
            // that is an unknown issuer, and `unknown_ca` is the alert that says so.
            webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
            }
            other => PeerRefusal::BadChain {
                id: id.clone(),
                detail: other.to_string(),
            }
            .into_error(),
        })?;
        if !self.rule.admits(&id, td) {
            return Err(PeerRefusal::NotAllowed {
                id,
                expected: self.rule.to_string(),
            }
            .into_error());
        }
        Ok(())
    }
}

/// The signature methods are the same for both directions; one body serves both traits.
macro_rules! tls13_signatures_only {
    () => {
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
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algs.supported_schemes()
        }
    };
}

impl ClientCertVerifier for SpiffeVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )?;
        Ok(ClientCertVerified::assertion())
    }

    tls13_signatures_only!();
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // SPIFFE authenticates the server by its SPIFFE ID, not by DNS name.
        self.verify(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )?;
        Ok(ServerCertVerified::assertion())
    }

    tls13_signatures_only!();
}

/// A bounded label for why a TLS handshake failed, for the refusal log line and the
/// `spike_tls_handshake_failures_total{reason}` counter.
pub fn refusal_reason(e: &rustls::Error) -> &'static str {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::UnknownIssuer => "unknown_issuer",
            _ => "bad_certificate",
        },
        E::Other(o) => {
            o.0.downcast_ref::<PeerRefusal>()
                .map_or("protocol_error", PeerRefusal::reason)
        }
        E::NoCertificatesPresented => "no_certificate",
        E::PeerIncompatible(_) => "protocol_version",
        E::AlertReceived(_) => "peer_alert",
        _ => "protocol_error",
    }
}

/// Serves the source's current certificate on every handshake.
struct CurrentCert(Arc<dyn SvidSource>);

impl fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurrentCert")
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified_key())
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A server configuration requiring a client SVID that passes `rule`.
pub fn server_config(
    source: Arc<dyn SvidSource>,
    rule: PeerRule,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let verifier = Arc::new(SpiffeVerifier::new(source.clone(), rule));
    build_server_config(verifier, source)
}

/// The server configuration of every listener, around its client-certificate verifier.
fn build_server_config(
    verifier: Arc<dyn ClientCertVerifier>,
    source: Arc<dyn SvidSource>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(CurrentCert(source)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // No session resumption: a resumed TLS 1.3 session restores the client certificate of the
    // first handshake without verifying it again, so an expired SVID, or one whose CA has left
    // the bundle, would keep getting in. Every connection makes a full handshake.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// What a listener with optional client authentication learned about a connection's peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// A certificate that verified as for [`server_config`]: the peer is this SPIFFE ID.
    Verified(PeerIdentity),
    /// No certificate, or one that does not verify.
    Unauthenticated(Unauthenticated),
}

/// A peer that presented no certificate, or one that did not verify. Nothing the certificate
/// claims is kept (not even its SPIFFE ID, which anyone can write into a self-signed one):
/// only the bounded label of why it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthenticated {
    /// [`refusal_reason`]'s label: `no_certificate`, `other_trust_domain`, `unknown_issuer`,
    /// `expired`, `not_svid`, ...
    pub reason: &'static str,
}

/// The server side of optional client authentication, for a listener that must answer
/// callers without a valid SVID itself (the gateway refuses them per request, the same way it
/// refuses a stolen token) instead of failing their handshake.
///
/// The handshake asks for a client certificate but accepts any, or none; rustls still checks
/// that the client holds the key of the certificate it presents. The chain and SPIFFE rules
/// are checked once the handshake is done, by [`OptionalClientAuth::authenticate`], with the
/// same verifier as [`server_config`], so the handshake does the same work whatever the
/// certificate, and the result is only ever a verified identity or a label. Its rustls
/// configuration is not exposed: a listener that verifies at the handshake cannot be given
/// one that does not.
pub struct OptionalClientAuth {
    config: Arc<rustls::ServerConfig>,
    verifier: Arc<SpiffeVerifier>,
}

impl fmt::Debug for OptionalClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OptionalClientAuth")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl OptionalClientAuth {
    /// A listener configuration that serves the source's SVID and authenticates clients
    /// whose SVID passes `rule`, and lets others through as [`Unauthenticated`].
    pub fn new(source: Arc<dyn SvidSource>, rule: PeerRule) -> Result<Self, rustls::Error> {
        let verifier = Arc::new(SpiffeVerifier::new(source.clone(), rule));
        let deferred = Arc::new(DeferredVerifier {
            algs: verifier.algs,
        });
        Ok(Self {
            config: Arc::new(build_server_config(deferred, source)?),
            verifier,
        })
    }

    /// The rustls configuration, for this crate's accept loop only.
    pub(crate) fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }

    /// Verifies the certificates a client presented in a completed handshake (`None` or
    /// empty: it presented none), against the current trust bundle and the rule.
    pub fn authenticate(&self, certs: Option<&[CertificateDer<'_>]>) -> ClientAuth {
        let unauthenticated = |reason| ClientAuth::Unauthenticated(Unauthenticated { reason });
        let Some((leaf, intermediates)) = certs.and_then(<[_]>::split_first) else {
            return unauthenticated("no_certificate");
        };
        let now = UnixTime::now();
        let verified =
            self.verifier
                .verify(leaf, intermediates, now, webpki::KeyUsage::client_auth());
        match verified {
            Err(e) => unauthenticated(refusal_reason(&e)),
            Ok(()) => match PeerIdentity::from_certs(certs) {
                Some(p) => ClientAuth::Verified(p),
                None => unauthenticated("not_svid"),
            },
        }
    }
}

/// The handshake half of [`OptionalClientAuth`]: asks for a certificate, accepts any or none
/// (the chain is checked after the handshake), and checks the handshake's signatures as usual.
#[derive(Debug)]
struct DeferredVerifier {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for DeferredVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Deliberately no check here: `OptionalClientAuth::authenticate` verifies the chain
        // once the handshake is done, and nothing reads this connection's peer identity
        // but it.
        Ok(ClientCertVerified::assertion())
    }

    tls13_signatures_only!();
}

/// A client configuration that presents the source's SVID and accepts only a server whose
/// SPIFFE ID passes `rule` (normally exactly one built-in identity).
pub fn client_config(
    source: Arc<dyn SvidSource>,
    rule: PeerRule,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let verifier = Arc::new(SpiffeVerifier::new(source.clone(), rule));
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(CurrentCert(source)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No session resumption, for the same reason as in `server_config`: a resumed session
    // skips verifying the server's current certificate.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose, SanType,
    };

    use super::*;
    use crate::svid::{Identity, StaticSource};

    fn leaf_params(id: &str) -> CertificateParams {
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p
    }

    /// A CA of `spike.test`, a verifier built on it, and a leaf it issued for `/agents/a`.
    fn setup() -> (OptionalClientAuth, CertificateDer<'static>) {
        let td = TrustDomain::new("spike.test").unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let issue = |id: &str| {
            let key = KeyPair::generate().unwrap();
            (leaf_params(id).signed_by(&key, &issuer).unwrap(), key)
        };
        let (own, own_key) = issue("spiffe://spike.test/spike/gateway/gw");
        let identity = Identity::from_pem(
            &td,
            own.pem().as_bytes(),
            own_key.serialize_pem().as_bytes(),
            ca_cert.pem().as_bytes(),
        )
        .unwrap();
        let auth = OptionalClientAuth::new(
            Arc::new(StaticSource::new(td, identity)),
            PeerRule::AnyInTrustDomain,
        )
        .unwrap();
        let (agent, _) = issue("spiffe://spike.test/agents/a");
        (auth, agent.der().clone())
    }

    #[test]
    fn only_a_verified_chain_gives_an_identity() {
        crate::tls::install_crypto_provider();
        let (auth, agent) = setup();
        let reason = |certs: Option<&[CertificateDer<'_>]>| match auth.authenticate(certs) {
            ClientAuth::Unauthenticated(u) => u.reason,
            ClientAuth::Verified(p) => panic!("verified as {}", p.id),
        };
        assert_eq!(reason(None), "no_certificate");
        assert_eq!(reason(Some(&[])), "no_certificate");
        // The same ID, self-signed: the claim is worth nothing.
        let key = KeyPair::generate().unwrap();
        let forged = leaf_params("spiffe://spike.test/agents/a")
            .self_signed(&key)
            .unwrap();
        assert_eq!(reason(Some(&[forged.der().clone()])), "unknown_issuer");
        let key = KeyPair::generate().unwrap();
        let foreign = leaf_params("spiffe://evil.test/agents/a")
            .self_signed(&key)
            .unwrap();
        assert_eq!(reason(Some(&[foreign.der().clone()])), "other_trust_domain");
        assert_eq!(
            reason(Some(&[CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])])),
            "not_svid"
        );
        match auth.authenticate(Some(&[agent])) {
            ClientAuth::Verified(p) => assert_eq!(p.id.as_str(), "spiffe://spike.test/agents/a"),
            other => panic!("{other:?}"),
        }
    }
}
