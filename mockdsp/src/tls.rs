//! A throwaway certificate authority for mocks served over TLS: generated at start with
//! `rcgen`, it signs a certificate for `127.0.0.1`, `::1` and `localhost`, and hands its own
//! certificate out as PEM for the client side to trust (`[tls] ca_files` of the exchange).

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::Error;

/// A CA made for this process, and the loopback certificate it signed. Cheap to clone: every
/// mock of a fleet can share one, so one CA file covers them all.
#[derive(Clone)]
pub struct TestCa {
    inner: Arc<Inner>,
}

struct Inner {
    ca_pem: String,
    leaf_pem: String,
    leaf_der: CertificateDer<'static>,
    key_pem: String,
    key_der: Vec<u8>,
}

impl TestCa {
    /// A new CA and a certificate for `127.0.0.1`, `::1` and `localhost`, valid from now on.
    pub fn generate() -> Result<Self, Error> {
        let fail = |e: rcgen::Error| Error::Tls(e.to_string());
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "mockdsp test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca =
            CertifiedIssuer::self_signed(ca, KeyPair::generate().map_err(fail)?).map_err(fail)?;
        let mut leaf = CertificateParams::new(vec![
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
            "localhost".to_owned(),
        ])
        .map_err(fail)?;
        leaf.distinguished_name.push(DnType::CommonName, "mockdsp");
        let key = KeyPair::generate().map_err(fail)?;
        let cert = leaf.signed_by(&key, &ca).map_err(fail)?;
        Ok(Self {
            inner: Arc::new(Inner {
                ca_pem: ca.pem(),
                leaf_pem: cert.pem(),
                leaf_der: cert.der().clone(),
                key_pem: key.serialize_pem(),
                key_der: key.serialize_der(),
            }),
        })
    }

    /// The CA's certificate, PEM: what a client trusts.
    pub fn ca_pem(&self) -> &str {
        &self.inner.ca_pem
    }

    /// The loopback certificate, PEM (a server's `cert_file`).
    pub fn cert_pem(&self) -> &str {
        &self.inner.leaf_pem
    }

    /// The loopback certificate's private key, PKCS#8 PEM (a server's `key_file`).
    pub fn key_pem(&self) -> &str {
        &self.inner.key_pem
    }

    /// Writes the CA's certificate to `path`.
    pub fn write_ca(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.ca_pem())
    }

    /// The server side: the loopback certificate, offering HTTP/2 and HTTP/1.1 by ALPN.
    pub(crate) fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, Error> {
        #[allow(deprecated)] // ring: see exchange/src/tls.rs
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.inner.key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![self.inner.leaf_der.clone()], key)
            .map_err(|e| Error::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}
