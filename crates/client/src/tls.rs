//! The rustls client configuration (ring provider): trusted roots from PEM files or the
//! system's store, and an optional client certificate for mutual TLS.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{ConnectError, ConnectErrorKind};
use crate::options::TlsOptions;

fn tls_err(why: impl Into<String>) -> ConnectError {
    ConnectError::with_source(ConnectErrorKind::Tls, why.into())
}

fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, ConnectError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_err(format!("cannot read {what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(tls_err(format!(
            "no PEM certificate in {what} {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// The configuration to use: the one given, the cached one, or one built now (and cached).
pub(crate) fn client_config(opts: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, ConnectError> {
    if let Some(c) = &opts.config {
        return Ok(c.clone());
    }
    if let Some(c) = opts.cache.get() {
        return Ok(c.clone());
    }
    let built = Arc::new(build(opts)?);
    let _ = opts.cache.set(built.clone());
    Ok(built)
}

fn build(opts: &TlsOptions) -> Result<rustls::ClientConfig, ConnectError> {
    let mut roots = RootCertStore::empty();
    if opts.root_certs.is_empty() {
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(tls_err(
                "no trusted root certificates: the system store is empty; give a CA file",
            ));
        }
    } else {
        for path in &opts.root_certs {
            for cert in certs(path, "CA file")? {
                roots.add(cert).map_err(|e| {
                    tls_err(format!("bad CA certificate in {}: {e}", path.display()))
                })?;
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_root_certificates(roots);
    match &opts.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = certs(cert, "client certificate")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| tls_err(format!("cannot read client key {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_err(format!("client certificate and key: {e}")))
        }
    }
}
