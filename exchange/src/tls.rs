//! TLS on both sides: the trust of every outbound HTTPS call (the bundled web roots plus
//! `[tls] ca_files`) and the optional publisher-side acceptor (`[server.tls]`). rustls with the
//! ring provider, named explicitly so another crate's provider feature cannot change it.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::{ServerTlsConfig, TlsConfig};
use crate::Error;

// rustls 0.23.48 deprecates ring's provider for lacking post-quantum key exchange; ring is kept
// because it builds with the C compiler alone (aws-lc-rs needs cmake or a long aws-lc build).
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of one PEM file; a file that cannot be read or holds none is an error.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// What every outbound HTTPS call trusts: Mozilla's root set as bundled by `webpki-roots`
/// (the same on every machine, no system store needed in a container) plus each certificate
/// of `tls.ca_files`. ALPN is left to the connector.
pub fn client_config(tls: &TlsConfig) -> Result<ClientConfig, Error> {
    let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut problems = Vec::new();
    for path in &tls.ca_files {
        match read_certs(path) {
            Ok(certs) => {
                for cert in certs {
                    if let Err(e) = roots.add(cert) {
                        problems.push(format!("tls.ca_files: {}: {e}", path.display()));
                    }
                }
            }
            Err(e) => problems.push(format!("tls.ca_files: {e}")),
        }
    }
    if !problems.is_empty() {
        return Err(Error::Config(problems));
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(vec![format!("tls: {e}")]))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The publisher-side acceptor of `[server.tls]`: HTTP/1.1 only, as the server speaks.
pub fn acceptor(tls: &ServerTlsConfig) -> Result<TlsAcceptor, Error> {
    let problem = |e: String| Error::Config(vec![format!("server.tls: {e}")]);
    let certs = read_certs(&tls.cert_file).map_err(problem)?;
    let key = read_key(&tls.key_file).map_err(problem)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| problem(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| problem(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Checks `[tls]` and `[server.tls]` the way the start will use them, for `Config::validate`.
pub(crate) fn validate(tls: &TlsConfig, server: Option<&ServerTlsConfig>) -> Vec<String> {
    let mut errors = match client_config(tls) {
        Err(Error::Config(problems)) => problems,
        Err(e) => vec![format!("tls: {e}")],
        Ok(_) => Vec::new(),
    };
    if let Some(server) = server {
        if let Err(Error::Config(problems)) = acceptor(server) {
            errors.extend(problems);
        }
    }
    errors
}
