//! TLS with rustls and the ring provider: the server's configuration from PEM files,
//! and the client side of `agentid-server healthcheck`.
//!
//! The health check does not validate names or chains: it trusts exactly the
//! certificate the server is configured with (the first one in
//! `AGENTID_TLS_CERT`), compared byte for byte, and checks the handshake signature
//! with it. It talks only to this machine's own server.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// A TLS problem, naming the variable whose file is at fault.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct TlsError {
    pub var: &'static str,
    pub reason: String,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the certificate chain (leaf first) from a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError {
        var: "AGENTID_TLS_CERT",
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            err(format!(
                "{} is not a PEM certificate file: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(err(format!("{} holds no certificate", path.display())));
    }
    Ok(certs)
}

/// The server's TLS configuration (TLS 1.2 and 1.3, ring, no client certificates).
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let certs = load_certs(cert)?;
    let key_err = |reason: String| TlsError {
        var: "AGENTID_TLS_KEY",
        reason,
    };
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        key_err(format!(
            "cannot read a PEM private key from {}: {e}",
            key.display()
        ))
    })?;
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| key_err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(|e| {
            key_err(format!(
                "the key does not fit the certificate or is not supported: {e}"
            ))
        })
}

/// Trusts one certificate, whatever name it carries.
#[derive(Debug)]
struct PinnedCertificate {
    certificate: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.certificate.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server presented another certificate than AGENTID_TLS_CERT".to_owned(),
            ))
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration that trusts exactly the leaf certificate in `cert`.
pub fn pinned_client_config(cert: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let certificate = load_certs(cert)?.swap_remove(0);
    let provider = provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            var: "AGENTID_TLS_CERT",
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
            certificate,
            provider,
        }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}
