//! Optional TLS termination in `crm serve`, for setups without a proxy in front: a
//! certificate chain and its private key, both PEM files, become the [`rustls::ServerConfig`]
//! that [`crate::ServeOptions::tls`] carries. The crypto provider is *ring*, named
//! explicitly (no process-wide default is installed or needed); TLS 1.2 and 1.3 with rustls'
//! safe defaults; ALPN offers `http/1.1` only, the one protocol the server speaks.
//!
//! The handshake is part of the connection layer (see [`crate::connections`]): it must finish
//! within the header-read timeout, and a failed or unfinished handshake is counted in
//! `crm_http_refused_total{reason="tls_handshake"}`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file is unreadable or not PEM.
    #[error("could not read the TLS certificate file {path}: {source}; set tls_cert_file (CRM_TLS_CERT_FILE, --tls-cert) to a readable PEM file")]
    CertificateFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("the TLS certificate file {path} holds no certificate; give a PEM file with `-----BEGIN CERTIFICATE-----` blocks, the server's certificate first, then its intermediates")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file is unreadable, not PEM, or holds no private key.
    #[error("could not read a private key from the TLS key file {path}: {source}; set tls_key_file (CRM_TLS_KEY_FILE, --tls-key) to a readable PEM file with one PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: pem::Error,
    },
    /// rustls refused the pair (the key does not match the certificate, an unsupported key).
    #[error("the TLS certificate {cert} and key {key} cannot be used: {source}; check that the key is the certificate's own and of a supported type (RSA, ECDSA P-256/P-384, Ed25519)")]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
}

/// ALPN protocols offered: HTTP/1.1 only.
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// Loads the certificate chain in `cert_file` and the private key in `key_file` (both PEM)
/// into a server configuration (ring provider, safe default protocol versions, no client
/// authentication, ALPN `http/1.1`).
///
/// # Errors
/// [`TlsError`] naming the file at fault and what to fix.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certificate_error = |source| TlsError::CertificateFile {
        path: cert_file.to_owned(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(cert_file)
        .map_err(certificate_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(certificate_error)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_file.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::KeyFile {
        path: key_file.to_owned(),
        source,
    })?;
    let unusable = |source| TlsError::Unusable {
        cert: cert_file.to_owned(),
        key: key_file.to_owned(),
        source,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(unusable)?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(unusable)?;
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn a_certificate_and_its_key_make_a_config_offering_http_1_1() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        let config = server_config(&cert, &key).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn errors_name_the_file_at_fault_and_what_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        let missing = dir.path().join("missing.pem");

        let err = server_config(&missing, &key).unwrap_err().to_string();
        assert!(
            err.contains("missing.pem") && err.contains("tls_cert_file"),
            "{err}"
        );
        // The key file holds no certificate; the certificate file holds no key.
        let err = server_config(&key, &key).unwrap_err().to_string();
        assert!(
            err.contains("key.pem") && err.contains("no certificate"),
            "{err}"
        );
        let err = server_config(&cert, &cert).unwrap_err().to_string();
        assert!(
            err.contains("cert.pem") && err.contains("tls_key_file"),
            "{err}"
        );
        // A key of another certificate.
        let other = tempfile::tempdir().unwrap();
        let (_, other_key) = self_signed(other.path());
        let err = server_config(&cert, &other_key).unwrap_err().to_string();
        assert!(err.contains("the key is the certificate's own"), "{err}");
    }
}
