//! The agent's local certificate authority: one self-signed ECDSA P-256 CA per trust domain,
//! signing X.509-SVIDs with a fresh key each.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use spike_core::id::{SpiffeId, TrustDomain};
use time::OffsetDateTime;
use zeroize::{Zeroize, Zeroizing};

/// How long the CA certificate is valid. The CA lives only as long as the agent process, so
/// this only has to outlast any dev session.
const CA_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Certificates start a little in the past so a peer whose clock lags slightly does not see
/// a not-yet-valid certificate.
const BACKDATE: Duration = Duration::from_secs(10);
const ORGANIZATION: &str = "SPIKE dev agent";

/// Why the CA could not be created or could not issue a certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The requested SPIFFE ID belongs to another trust domain than the CA's.
    #[error("cannot issue an SVID for {id}: it is not in trust domain {trust_domain}")]
    ForeignId {
        /// The requested ID.
        id: String,
        /// The CA's trust domain.
        trust_domain: String,
    },
    /// `not_after` is not later than `not_before`, or the TTL is zero.
    #[error("invalid validity period: not_after must be later than not_before")]
    BadValidity,
    /// A validity bound cannot be expressed in an X.509 certificate.
    #[error("validity time is out of the range an X.509 certificate can express")]
    TimeOutOfRange,
    /// The SVID would expire after the CA certificate does.
    #[error("an SVID with this TTL would outlive the CA certificate")]
    OutlivesCa,
    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
    /// Key or certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A local, in-memory certificate authority for one trust domain.
///
/// The CA certificate has BasicConstraints `CA:true, pathlen:0`, KeyUsage `keyCertSign,
/// cRLSign` and the trust domain ID (`spiffe://<td>`) as its URI SAN. Leaf SVIDs carry exactly
/// one URI SAN, `CA:false`, KeyUsage `digitalSignature`, ExtendedKeyUsage `serverAuth,
/// clientAuth`, and a fresh P-256 key each.
///
/// Tests across the workspace use it directly to mint SVIDs (also already expired ones) without
/// running an agent.
pub struct CertificateAuthority {
    trust_domain: TrustDomain,
    issuer: Issuer<'static, KeyPair>,
    cert_der: Vec<u8>,
    cert_pem: String,
    not_after: SystemTime,
}

impl CertificateAuthority {
    /// Creates a CA with a new key for `trust_domain`, valid for a year.
    pub fn new(trust_domain: &TrustDomain) -> Result<Self, CaError> {
        let now = SystemTime::now();
        let not_before = to_x509_time(now - BACKDATE)?;
        let not_after = to_x509_time(now + CA_LIFETIME)?;

        let mut params = CertificateParams::default();
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial()?);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, ORGANIZATION);
        dn.push(
            DnType::CommonName,
            format!("SPIKE dev CA for {}", trust_domain.as_str()),
        );
        params.distinguished_name = dn;
        params.subject_alt_names =
            vec![SanType::URI(Ia5String::try_from(trust_domain.id_string())?)];
        // pathlen 0: this CA signs leaves only, never intermediates.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            trust_domain: trust_domain.clone(),
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            not_after: from_x509_time(not_after),
            issuer: Issuer::new(params, key),
        })
    }

    /// The trust domain this CA issues for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The trust bundle (the CA certificate) in DER.
    pub fn bundle_der(&self) -> Vec<u8> {
        self.cert_der.clone()
    }

    /// The trust bundle (the CA certificate) in PEM.
    pub fn bundle_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Issues an X.509-SVID for `id`, valid from now (less a few seconds of clock-skew margin)
    /// for `ttl`.
    pub fn issue(&self, id: &SpiffeId, ttl: Duration) -> Result<IssuedSvid, CaError> {
        if ttl.is_zero() {
            return Err(CaError::BadValidity);
        }
        let now = SystemTime::now();
        let not_after = now.checked_add(ttl).ok_or(CaError::TimeOutOfRange)?;
        if not_after > self.not_after {
            return Err(CaError::OutlivesCa);
        }
        self.issue_with_validity(id, now - BACKDATE, not_after)
    }

    /// Issues an X.509-SVID for `id` with an explicit validity period, which may lie wholly in
    /// the past (to test expiry handling) or the future. Times are truncated to whole seconds,
    /// as X.509 stores them.
    pub fn issue_with_validity(
        &self,
        id: &SpiffeId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedSvid, CaError> {
        if !id.is_member_of(&self.trust_domain) {
            return Err(CaError::ForeignId {
                id: id.to_string(),
                trust_domain: self.trust_domain.to_string(),
            });
        }
        let not_before = to_x509_time(not_before)?;
        let not_after = to_x509_time(not_after)?;
        if not_after <= not_before {
            return Err(CaError::BadValidity);
        }

        let mut params = CertificateParams::default();
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial()?);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, ORGANIZATION);
        params.distinguished_name = dn;
        // Exactly one URI SAN, as the X509-SVID specification requires.
        params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(id.as_str())?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;

        let mut key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let key_der = Zeroizing::new(key.serialize_der());
        // rcgen keeps a copy of the PKCS#8 bytes in the key pair; wipe it now that we hold ours.
        key.zeroize();
        let key_pem = pem_encode_secret("PRIVATE KEY", &key_der);

        Ok(IssuedSvid {
            spiffe_id: id.clone(),
            chain_pem: cert.pem(),
            chain_der: vec![cert.der().to_vec()],
            key_der,
            key_pem,
            bundle_der: self.cert_der.clone(),
            bundle_pem: self.cert_pem.clone(),
            not_before: from_x509_time(not_before),
            not_after: from_x509_time(not_after),
        })
    }

    /// Signs arbitrary certificate parameters with this CA's key and returns the DER
    /// certificate.
    ///
    /// This is an escape hatch for tests that need a certificate a correct SVID issuer would
    /// never produce (a leaf with two URI SANs, `CA:true`, no SAN at all, ...) but that still
    /// chains to this CA. Nothing in the agent uses it.
    pub fn sign_custom(
        &self,
        params: &CertificateParams,
        subject_key: &impl PublicKeyData,
    ) -> Result<Vec<u8>, CaError> {
        Ok(params.signed_by(subject_key, &self.issuer)?.der().to_vec())
    }
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// An X.509-SVID with its private key and the trust bundle it chains to.
#[derive(Clone)]
#[non_exhaustive]
pub struct IssuedSvid {
    /// The SPIFFE ID in the leaf's URI SAN.
    pub spiffe_id: SpiffeId,
    /// The certificate chain in PEM, leaf first.
    pub chain_pem: String,
    /// The certificate chain in DER, leaf first (today always just the leaf).
    pub chain_der: Vec<Vec<u8>>,
    /// The leaf's private key, PKCS#8 DER.
    pub key_der: Zeroizing<Vec<u8>>,
    /// The leaf's private key, PKCS#8 PEM (`PRIVATE KEY`).
    pub key_pem: Zeroizing<String>,
    /// The trust bundle (CA certificate) in DER.
    pub bundle_der: Vec<u8>,
    /// The trust bundle (CA certificate) in PEM.
    pub bundle_pem: String,
    /// Start of the validity period (whole seconds).
    pub not_before: SystemTime,
    /// End of the validity period (whole seconds).
    pub not_after: SystemTime,
}

/// Where [`IssuedSvid::write_pem_files`] wrote the SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PemFiles {
    /// The certificate chain, leaf first (`svid.pem`).
    pub cert: PathBuf,
    /// The private key, mode 0600 (`svid_key.pem`).
    pub key: PathBuf,
    /// The trust bundle (`bundle.pem`).
    pub bundle: PathBuf,
}

impl IssuedSvid {
    /// The leaf certificate in DER.
    pub fn leaf_der(&self) -> &[u8] {
        self.chain_der.first().map_or(&[], Vec::as_slice)
    }

    /// Writes `svid.pem`, `svid_key.pem` (mode 0600) and `bundle.pem` into `dir`, each replaced
    /// atomically (written beside and renamed), so a reader watching the files never sees a
    /// half-written one.
    pub fn write_pem_files(&self, dir: &Path) -> io::Result<PemFiles> {
        let files = PemFiles {
            cert: dir.join("svid.pem"),
            key: dir.join("svid_key.pem"),
            bundle: dir.join("bundle.pem"),
        };
        write_atomic(&files.cert, self.chain_pem.as_bytes(), 0o644)?;
        write_atomic(&files.key, self.key_pem.as_bytes(), 0o600)?;
        write_atomic(&files.bundle, self.bundle_pem.as_bytes(), 0o644)?;
        Ok(files)
    }
}

impl fmt::Debug for IssuedSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("key", &format_args!("[redacted]"))
            .finish_non_exhaustive()
    }
}

fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    // A leftover temp file could carry a looser mode than we want, and `mode` only applies on
    // creation: remove it and create afresh.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)
}

/// PEM-encodes secret bytes without leaving unzeroized copies behind in our own code.
fn pem_encode_secret(label: &str, der: &[u8]) -> Zeroizing<String> {
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut out = Zeroizing::new(String::with_capacity(
        b64.len() + b64.len() / 64 + 2 * label.len() + 40,
    ));
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        // Base64 output is ASCII, so any byte offset is a char boundary.
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// A random, positive 127-bit serial number (RFC 5280 allows up to 20 octets).
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| CaError::Random(e.to_string()))?;
    // Clear the sign bit so the DER INTEGER is positive, and set the next one so the encoding
    // is always exactly 16 octets.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Converts to the whole-second UTC time X.509 stores.
fn to_x509_time(t: SystemTime) -> Result<OffsetDateTime, CaError> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CaError::TimeOutOfRange)?
        .as_secs();
    let secs = i64::try_from(secs).map_err(|_| CaError::TimeOutOfRange)?;
    let t = OffsetDateTime::from_unix_timestamp(secs).map_err(|_| CaError::TimeOutOfRange)?;
    // GeneralizedTime in certificates cannot go past year 9999.
    if t.year() > 9999 {
        return Err(CaError::TimeOutOfRange);
    }
    Ok(t)
}

fn from_x509_time(t: OffsetDateTime) -> SystemTime {
    // `to_x509_time` only produces times at or after the epoch.
    UNIX_EPOCH + Duration::from_secs(u64::try_from(t.unix_timestamp()).unwrap_or(0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pem_encoding_round_trips() {
        let der: Vec<u8> = (0..=255u8).collect();
        let pem = pem_encode_secret("PRIVATE KEY", &der);
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(pem.ends_with("-----END PRIVATE KEY-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        assert_eq!(decoded, der);
    }

    #[test]
    fn serials_are_positive_and_distinct() {
        let a = random_serial().unwrap().to_bytes();
        let b = random_serial().unwrap().to_bytes();
        assert_eq!(a.len(), 16);
        assert_eq!(a[0] & 0x80, 0);
        assert_ne!(a, b);
    }

    #[test]
    fn rejects_bad_validity_and_foreign_ids() {
        let td = TrustDomain::new("spike.dev").unwrap();
        let ca = CertificateAuthority::new(&td).unwrap();
        let id = td.id("/app").unwrap();
        let now = SystemTime::now();
        assert!(matches!(
            ca.issue_with_validity(&id, now, now),
            Err(CaError::BadValidity)
        ));
        assert!(matches!(
            ca.issue(&id, Duration::ZERO),
            Err(CaError::BadValidity)
        ));
        assert!(matches!(
            ca.issue(&id, CA_LIFETIME * 2),
            Err(CaError::OutlivesCa)
        ));
        let foreign = SpiffeId::new("spiffe://evil.dev/app").unwrap();
        let err = ca.issue(&foreign, Duration::from_secs(60)).unwrap_err();
        assert!(
            err.to_string().contains("not in trust domain spike.dev"),
            "{err}"
        );
    }

    #[test]
    fn debug_output_hides_the_key() {
        let td = TrustDomain::new("spike.dev").unwrap();
        let ca = CertificateAuthority::new(&td).unwrap();
        let svid = ca
            .issue(&td.id("/app").unwrap(), Duration::from_secs(60))
            .unwrap();
        let dbg = format!("{svid:?} {ca:?}");
        assert!(!dbg.contains("PRIVATE KEY"));
        let key_b64 = svid.key_pem.lines().nth(1).unwrap();
        assert!(!dbg.contains(key_b64));
    }
}
