//! TLS on the client port and on routes (rustls with the ring provider).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// TLS settings, of the client port or of routes (`cluster { tls { … } }`).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// Require and verify client certificates.
    pub verify: bool,
    /// Take the user from the client certificate (implies verify).
    pub verify_and_map: bool,
    /// Handshake timeout; defaults to 2 s.
    pub timeout: Option<Duration>,
}

impl TlsOptions {
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(2))
    }
}

/// Why TLS could not be set up, in the reference's words.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS Server certificate must be present and valid")]
    MissingCert,
    #[error("TLS Server private key must be present and valid")]
    MissingKey,
    #[error("error parsing X509 certificate/key pair: {}: {source}", path.display())]
    ReadPair { path: PathBuf, source: pem::Error },
    #[error("error parsing X509 certificate/key pair: no certificate in {}", .0.display())]
    NoCertificate(PathBuf),
    #[error("error parsing X509 certificate/key pair: {0}")]
    PairPem(pem::Error),
    #[error("error parsing X509 certificate/key pair: {0}")]
    Pair(rustls::Error),
    #[error("TLS verify requires a CA file (tls.ca_file / --tlscacert)")]
    VerifyNeedsCa,
    #[error("route TLS requires a CA file (cluster.tls.ca_file)")]
    RouteNeedsCa,
    #[error("failed to parse root ca certificate: {0}")]
    RootCaPem(pem::Error),
    #[error("failed to parse root ca certificate: {0}")]
    RootCa(rustls::Error),
    #[error("invalid client CA: {0}")]
    ClientCa(VerifierBuilderError),
    #[error("{0}")]
    Protocols(rustls::Error),
}

/// Builds the acceptor's configuration; errors read like the reference's.
pub fn server_config(tls: &TlsOptions) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_file = tls.cert_file.as_ref().ok_or(TlsError::MissingCert)?;
    let key_file = tls.key_file.as_ref().ok_or(TlsError::MissingKey)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|source| TlsError::ReadPair {
            path: cert_file.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_file.clone()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::ReadPair {
        path: key_file.clone(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocols)?;
    let builder = if tls.verify {
        let ca_file = tls.ca_file.as_ref().ok_or(TlsError::VerifyNeedsCa)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_file).map_err(TlsError::RootCaPem)? {
            roots
                .add(cert.map_err(TlsError::RootCaPem)?)
                .map_err(TlsError::RootCa)?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(TlsError::ClientCa)?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(TlsError::Pair)?;
    Ok(Arc::new(config))
}

/// The dialing side of a TLS route: trusts the configured CA and presents this server's
/// certificate as its client certificate.
pub fn client_config(tls: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let ca_file = tls.ca_file.as_ref().ok_or(TlsError::RouteNeedsCa)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(TlsError::RootCaPem)? {
        roots
            .add(cert.map_err(TlsError::RootCaPem)?)
            .map_err(TlsError::RootCa)?;
    }
    let cert_file = tls.cert_file.as_ref().ok_or(TlsError::MissingCert)?;
    let key_file = tls.key_file.as_ref().ok_or(TlsError::MissingKey)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(TlsError::PairPem)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(TlsError::PairPem)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(TlsError::Protocols)?
    .with_root_certificates(roots)
    .with_client_auth_cert(certs, key)
    .map_err(TlsError::Pair)?;
    Ok(Arc::new(config))
}
