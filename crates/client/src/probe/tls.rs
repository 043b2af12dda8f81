//! TLS for the probe: one rustls configuration per protocol version (so that each
//! version is tried on its own), and a certificate verifier that *records* what it
//! saw — the chain, whether it leads to a trusted root, whether it names the host —
//! and enforces that only where the probe is about to send a password.
//!
//! Handshake signatures are always verified, so the peer holds the certificate's key
//! even where an untrusted certificate is let through for inspection.

use rustls::pki_types::pem::PemObject as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The protocol versions a configuration allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    /// TLS 1.2 and 1.3 (what a client normally offers).
    Any,
    /// TLS 1.2 only.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// What the verifier saw in one handshake.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The chain as sent, end entity first (DER).
    pub chain: Vec<Vec<u8>>,
    /// `Ok` when the chain leads to a trusted root at the time of the handshake.
    pub chain_ok: Option<Result<(), String>>,
    /// `Ok` when the end-entity certificate is valid for the host name.
    pub name_ok: Option<Result<(), String>>,
}

/// The outcome of one handshake.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// `TLS 1.2` or `TLS 1.3`.
    pub version: String,
    /// The negotiated cipher suite, as rustls names it.
    pub cipher_suite: String,
    /// What the verifier saw.
    pub seen: Seen,
}

/// Roots and provider shared by every configuration of one probe run.
#[derive(Debug, Clone)]
pub struct TlsSetup {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    /// Where the trust came from, for the report.
    pub trust: String,
}

impl TlsSetup {
    /// The bundled Mozilla roots plus the system's, plus the CA certificates of `ca`.
    pub fn new(ca: Option<&Path>) -> Result<TlsSetup, String> {
        let mut roots = RootCertStore::empty();
        let mut trust = "system roots".to_owned();
        // A private CA is what the operator vouches for; the public roots stay in
        // too, so a server that moved to a public certificate still passes.
        if let Some(path) = ca {
            let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut added = 0;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&data) {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                added += 1;
            }
            if added == 0 {
                return Err(format!("{}: no PEM certificate in file", path.display()));
            }
            trust = format!("system roots and {}", path.display());
        }
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        Ok(TlsSetup {
            roots: Arc::new(roots),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            trust,
        })
    }

    /// A connector for `versions`. With `enforce`, a certificate that is not trusted
    /// or does not name the host fails the handshake; without, it is only recorded.
    pub fn connector(
        &self,
        versions: Versions,
        enforce: bool,
    ) -> Result<(TlsConnector, Arc<Mutex<Seen>>), String> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let verifier = Recorder {
            roots: self.roots.clone(),
            algorithms: self.provider.signature_verification_algorithms,
            seen: seen.clone(),
            enforce,
        };
        let v: &[&'static rustls::SupportedProtocolVersion] = match versions {
            Versions::Any => &[&rustls::version::TLS13, &rustls::version::TLS12],
            Versions::Tls12 => &[&rustls::version::TLS12],
            Versions::Tls13 => &[&rustls::version::TLS13],
        };
        let config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(v)
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok((TlsConnector::from(Arc::new(config)), seen))
    }
}

/// Runs a handshake with a bound on its duration.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    connector: &TlsConnector,
    seen: &Mutex<Seen>,
    host: &str,
    timeout: Duration,
) -> Result<(TlsStream<S>, Handshake), String> {
    let name = crate::tls::server_name(host).map_err(|e| e.to_string())?;
    let tls = match tokio::time::timeout(timeout, connector.connect(name, io)).await {
        Err(_) => return Err(format!("no TLS handshake within {timeout:?}")),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(tls)) => tls,
    };
    let conn = tls.get_ref().1;
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_owned(),
        Some(v) => format!("{v:?}"),
        None => "?".to_owned(),
    };
    let cipher_suite = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_else(|| "?".to_owned());
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    Ok((
        tls,
        Handshake {
            version,
            cipher_suite,
            seen,
        },
    ))
}

/// Records the chain and both verdicts; fails the handshake on them only when told.
#[derive(Debug)]
struct Recorder {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    seen: Arc<Mutex<Seen>>,
    enforce: bool,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity);
        let chain_ok = parsed.as_ref().map_err(|e| e.to_string()).and_then(|p| {
            verify_server_cert_signed_by_trust_anchor(
                p,
                &self.roots,
                intermediates,
                now,
                self.algorithms.all,
            )
            .map_err(|e| e.to_string())
        });
        let name_ok = parsed
            .as_ref()
            .map_err(|e| e.to_string())
            .and_then(|p| verify_server_name(p, server_name).map_err(|e| e.to_string()));
        let verdict = match (&chain_ok, &name_ok) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(e), _) | (_, Err(e)) => Err(e.clone()),
        };
        if let Ok(mut seen) = self.seen.lock() {
            seen.chain = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| c.as_ref().to_vec())
                .collect();
            seen.chain_ok = Some(chain_ok);
            seen.name_ok = Some(name_ok);
        }
        match verdict {
            Err(e) if self.enforce => Err(rustls::Error::General(format!(
                "certificate not accepted: {e}"
            ))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
