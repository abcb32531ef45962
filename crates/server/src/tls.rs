//! TLS on the client port (rustls with the ring provider).

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::options::TlsOptions;

/// Builds the acceptor's configuration; errors read like the reference's.
pub fn server_config(tls: &TlsOptions) -> Result<Arc<rustls::ServerConfig>, String> {
    let cert_file = tls
        .cert_file
        .as_ref()
        .ok_or("TLS Server certificate must be present and valid")?;
    let key_file = tls
        .key_file
        .as_ref()
        .ok_or("TLS Server private key must be present and valid")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| {
            format!(
                "error parsing X509 certificate/key pair: {}: {e}",
                cert_file.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "error parsing X509 certificate/key pair: no certificate in {}",
            cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        format!(
            "error parsing X509 certificate/key pair: {}: {e}",
            key_file.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if tls.verify {
        let ca_file = tls
            .ca_file
            .as_ref()
            .ok_or("TLS verify requires a CA file (tls.ca_file / --tlscacert)")?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| format!("failed to parse root ca certificate: {e}"))?
        {
            let cert = cert.map_err(|e| format!("failed to parse root ca certificate: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("failed to parse root ca certificate: {e}"))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("invalid client CA: {e}"))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("error parsing X509 certificate/key pair: {e}"))?;
    Ok(Arc::new(config))
}

/// The dialing side of a TLS route: trusts the configured CA and presents this server's
/// certificate as its client certificate.
pub fn client_config(tls: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, String> {
    let ca_file = tls
        .ca_file
        .as_ref()
        .ok_or("route TLS requires a CA file (cluster.tls.ca_file)")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| format!("failed to parse root ca certificate: {e}"))?
    {
        roots
            .add(cert.map_err(|e| format!("failed to parse root ca certificate: {e}"))?)
            .map_err(|e| format!("failed to parse root ca certificate: {e}"))?;
    }
    let cert_file = tls
        .cert_file
        .as_ref()
        .ok_or("TLS Server certificate must be present and valid")?;
    let key_file = tls
        .key_file
        .as_ref()
        .ok_or("TLS Server private key must be present and valid")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("error parsing X509 certificate/key pair: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("error parsing X509 certificate/key pair: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_client_auth_cert(certs, key)
    .map_err(|e| format!("error parsing X509 certificate/key pair: {e}"))?;
    Ok(Arc::new(config))
}
