//! TLS for listeners (rustls with the aws-lc-rs provider) and for the WebSocket client.
//!
//! `cert` and `key` are PEM: the text itself, as upstream takes it, or the path of a file that
//! holds it (anything without a `-----BEGIN` line is read as a path). The server offers h2 and
//! HTTP/1.1 through ALPN. The provider is named explicitly rather than taken from the process
//! default, so a dependency that enables another provider cannot make configuration panic.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// PEM text given inline, or read from the file it names.
fn pem(text_or_path: &str) -> Result<Vec<u8>, String> {
    if text_or_path.contains("-----BEGIN") {
        return Ok(text_or_path.as_bytes().to_vec());
    }
    let path = text_or_path.trim();
    std::fs::read(path)
        .map_err(|e| format!("cannot read `{path}`: {e} (give PEM text or a file path)"))
}

/// The certificate chain in `cert`.
///
/// # Errors
/// Unreadable file, or no certificate in the PEM.
pub(crate) fn certificates(cert: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = pem(cert)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the PEM".into());
    }
    Ok(certs)
}

/// The private key in `key`.
///
/// # Errors
/// Unreadable file, or no private key in the PEM.
pub(crate) fn private_key(key: &str) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = pem(key)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("no usable private key in the PEM: {e}"))
}

/// A server configuration offering h2 and HTTP/1.1.
///
/// # Errors
/// A key that does not match the certificate, or an unsupported key type.
pub(crate) fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the key does not fit the certificate: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client configuration for `wss://` URLs: the platform's root certificates, loaded once.
pub(crate) fn client_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "cannot load a platform root certificate");
        }
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "loaded platform root certificates");
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the aws-lc-rs provider supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }))
}
