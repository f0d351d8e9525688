//! TLS termination: a listener's certificates loaded from their PEM files and
//! chosen by SNI, ALPN (h2, http/1.1), and optional client certificates (mTLS).

use std::collections::HashMap;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use tokio_rustls::TlsAcceptor;

use super::{PROTOCOL_VERSIONS, TlsError, file_error, read_certs, read_roots};
use crate::config::{CertFiles, TlsConfig};

/// The acceptor of a listener's TLS config.
pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut resolver = SniResolver::default();
    for files in &config.certs {
        let (key, names) = load_cert(files, &provider)?;
        resolver.add(Arc::new(key), &names);
    }
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|err| TlsError::Rustls(err.to_string()))?;
    let builder = match &config.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = read_roots(ca, "the client CA")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|err| TlsError::Rustls(err.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder.with_cert_resolver(Arc::new(resolver));
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// A certificate with its key, checked to match and not expired, and the DNS
/// names (SANs) it serves.
fn load_cert(
    files: &CertFiles,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, Vec<String>), TlsError> {
    let chain = read_certs(&files.cert, "the certificate")?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|err| file_error(&files.key, "the private key", err))?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0])
        .map_err(|err| file_error(&files.cert, "the certificate", err))?;
    if !leaf.validity().is_valid() {
        return Err(TlsError::Expired {
            path: files.cert.display().to_string(),
            not_after: leaf.validity().not_after.to_string(),
        });
    }
    let mut names = Vec::new();
    if let Ok(Some(sans)) = leaf.subject_alternative_name() {
        for name in &sans.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|err| match err {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: files.cert.display().to_string(),
            key: files.key.display().to_string(),
        },
        other => file_error(&files.key, "the private key", other),
    })?;
    Ok((certified, names))
}

/// Picks the certificate for a handshake: by exact SNI name, then by wildcard
/// (`*.example.com` covers one label), else the first certificate.
#[derive(Debug, Default)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the suffix after `*` (".example.com").
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    /// Adds `key` for `names`; the first certificate to claim a name keeps it.
    fn add(&mut self, key: Arc<CertifiedKey>, names: &[String]) {
        for name in names {
            match name.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') => {
                    self.wildcard
                        .entry(suffix.to_owned())
                        .or_insert(key.clone());
                }
                _ => {
                    self.exact.entry(name.clone()).or_insert(key.clone());
                }
            }
        }
        self.default.get_or_insert(key);
    }

    fn find(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let found = server_name.and_then(|name| {
            let name = name.to_ascii_lowercase();
            self.exact.get(&name).or_else(|| {
                let dot = name.find('.')?;
                self.wildcard.get(&name[dot..])
            })
        });
        found.or(self.default.as_ref()).cloned()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.find(hello.server_name())
    }
}
