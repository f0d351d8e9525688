//! TLS with rustls (ring provider), TLS 1.2 and 1.3 only: termination on
//! listeners ([`acceptor`]) and origination towards backends ([`UpstreamTls`]).
//! Every file problem is found at load time, so `--check`, start-up and reload all
//! refuse a bad set alike.

mod client;
mod server;

use std::path::Path;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

pub use client::UpstreamTls;
pub use server::acceptor;

/// rustls' safe defaults, without anything older than TLS 1.2.
const PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read {what}: {reason}")]
    File {
        path: String,
        what: &'static str,
        reason: String,
    },
    #[error("{cert}: the key in {key} does not belong to this certificate")]
    KeyMismatch { cert: String, key: String },
    #[error("{path}: the certificate expired ({not_after})")]
    Expired { path: String, not_after: String },
    #[error("{0}")]
    Rustls(String),
}

pub(crate) fn file_error(path: &Path, what: &'static str, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        what,
        reason: reason.to_string(),
    }
}

pub(crate) fn read_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| file_error(path, what, err))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| file_error(path, what, err))?;
    if certs.is_empty() {
        return Err(file_error(path, what, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The CA bundle in `path` as a root store, for verifying peers (`what` names
/// the file's role in errors).
pub(crate) fn read_roots(
    path: &Path,
    what: &'static str,
) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(path, what)? {
        roots.add(cert).map_err(|err| file_error(path, what, err))?;
    }
    Ok(roots)
}
