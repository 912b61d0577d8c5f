//! TLS in the real `crm serve`: with `--tls-cert` and `--tls-key` it prints an `https://`
//! address and answers HTTPS (a client trusting the self-signed certificate reads
//! `/healthz`); half the pair, or a key that is not the certificate's, is refused before it
//! listens, naming what to fix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;

use common::crm;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for `localhost`, written as PEM files in `dir`.
fn self_signed(dir: &std::path::Path) -> (CertificateDer<'static>, String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (
        certified.cert.der().clone(),
        cert.to_str().unwrap().to_owned(),
        key.to_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn serve_with_a_certificate_answers_https() {
    let dir = tempfile::tempdir().unwrap();
    let (der, cert, key) = self_signed(dir.path());
    let mut child = crm(&dir.path().join("data"))
        .args(["serve", "--listen", "127.0.0.1:0", "--no-projections"])
        .args(["--tls-cert", &cert, "--tls-key", &key])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kept open while the server runs: it writes more lines.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    stdout.read_line(&mut banner).unwrap();
    let address = banner
        .split("listening on https://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no https address in {banner:?}"))
        .to_owned();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn half_a_pair_or_a_foreign_key_is_refused_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, _) = self_signed(dir.path());
    let out = crm(&dir.path().join("data"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert", &cert])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tls_key_file") && stderr.contains("--tls-key"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());

    let other = tempfile::tempdir().unwrap();
    let (_, _, foreign_key) = self_signed(other.path());
    let out = crm(&dir.path().join("data"))
        .args(["serve", "--listen", "127.0.0.1:0", "--no-projections"])
        .env("CRM_TLS_CERT_FILE", &cert)
        .env("CRM_TLS_KEY_FILE", &foreign_key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tls.crt") && stderr.contains("the key is the certificate's own"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
}
