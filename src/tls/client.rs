//! TLS towards backends: the roots a backend's certificate is verified against
//! (a CA file, or the system's), the name it must carry, and ALPN for the
//! protocol the upstream speaks.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{PROTOCOL_VERSIONS, TlsError, read_roots};
use crate::config::{UpstreamProtocol, UpstreamTlsConfig};

/// How weir opens TLS to the backends of one upstream.
#[derive(Clone)]
pub struct UpstreamTls {
    connector: TlsConnector,
    /// The configured `sni`; without it each backend's IP address is the name.
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// Reads the roots of `config` and offers the ALPN name of `protocol`.
    pub fn new(config: &UpstreamTlsConfig, protocol: UpstreamProtocol) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(|err| TlsError::Rustls(err.to_string()))?;
        let mut client = if config.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(roots(config)?)
                .with_no_client_auth()
        };
        client.alpn_protocols = match protocol {
            UpstreamProtocol::H2 => vec![b"h2".to_vec()],
            UpstreamProtocol::Http1 | UpstreamProtocol::H2c => vec![b"http/1.1".to_vec()],
        };
        let server_name = match &config.sni {
            None => None,
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|err| TlsError::Rustls(format!("tls.sni {name:?}: {err}")))?,
            ),
        };
        Ok(UpstreamTls {
            connector: TlsConnector::from(Arc::new(client)),
            server_name,
        })
    }

    /// The TLS handshake with `backend` over `stream`. The name sent as SNI and
    /// verified is `tls.sni` when set, else the DNS name the backend was found
    /// by (`dns_name`), else its IP address.
    pub async fn handshake(
        &self,
        backend: SocketAddr,
        dns_name: Option<&str>,
        stream: TcpStream,
    ) -> io::Result<TlsStream<TcpStream>> {
        let name = match (&self.server_name, dns_name) {
            (Some(name), _) => name.clone(),
            (None, Some(dns_name)) => ServerName::try_from(dns_name.to_owned())
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?,
            (None, None) => ServerName::IpAddress(backend.ip().into()),
        };
        self.connector.connect(name, stream).await
    }
}

/// `ca` when set, else the system's roots.
fn roots(config: &UpstreamTlsConfig) -> Result<rustls::RootCertStore, TlsError> {
    match &config.ca {
        Some(ca) => read_roots(ca, "the CA"),
        None => {
            let mut roots = rustls::RootCertStore::empty();
            let system = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(system.certs);
            if added == 0 {
                let reason = system
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_owned(), |err| err.to_string());
                return Err(TlsError::Rustls(format!(
                    "no system root certificates ({reason}); set tls.ca"
                )));
            }
            Ok(roots)
        }
    }
}

/// `insecure_skip_verify`: any certificate for any name is accepted. Signatures
/// are still checked, so the handshake itself stays sound.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
