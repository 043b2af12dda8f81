//! TLS for the client: which certificates to trust.
//!
//! Three ways, chosen by [`Trust`]: the usual web PKI (the bundled Mozilla roots plus the
//! operating system's roots), that plus an extra CA file (a private CA), or a pinned
//! SHA-256 fingerprint of the server's own certificate (self-signed servers). With a
//! pin, the chain and the host name are not checked — the pin is stronger than both —
//! but the handshake signatures still are, so the peer must hold the pinned key.
//!
//! A self-signed server certificate given as its own CA (`--ca cert.pem`, where
//! `openssl req -x509` made a certificate with `CA:TRUE`) is refused by web PKI rules
//! (a CA certificate cannot be an end entity), but it is exactly the certificate the
//! user said to trust, as mpop and OpenSSL accept it: when the server presents a
//! certificate byte-identical to one in the CA file, it is accepted if it is within
//! its validity period and names the host (a subjectAltName DNS or IP entry, or the
//! subject's CN when it has no subjectAltName, `*.` wildcards matching one label).
//! The handshake signature is checked as always.
//!
//! Any refused certificate is reported with its SHA-256 fingerprint and the exact
//! option that pins it.

use rustls::pki_types::pem::PemObject as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsConnector;

/// Which server certificates to accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Web PKI: bundled roots plus the system's roots, host name checked.
    System,
    /// The system roots plus the CA certificates in this PEM file.
    ExtraCa(PathBuf),
    /// Exactly the server certificate with this SHA-256 fingerprint.
    Fingerprint([u8; 32]),
}

/// Errors while building a TLS configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The CA file could not be read or held no certificate.
    #[error("CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The fingerprint is not 32 bytes of hex.
    #[error("fingerprint must be 64 hex digits (colons allowed): {0}")]
    BadFingerprint(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Parses a SHA-256 fingerprint written as hex, with or without colons, any case
/// (what `openssl x509 -fingerprint -sha256` prints after the `=`).
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], TlsSetupError> {
    let hex: String = s
        .trim()
        .trim_start_matches("sha256:")
        .trim_start_matches("SHA256:")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    let bad = || TlsSetupError::BadFingerprint(s.to_owned());
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// The SHA-256 fingerprint of a DER certificate, as colon-separated upper-case hex.
pub fn fingerprint_hex(cert_der: &[u8]) -> String {
    Sha256::digest(cert_der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a connector for `trust`.
pub fn connector(trust: &Trust) -> Result<TlsConnector, TlsSetupError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let config = match trust {
        Trust::System => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PkiVerifier::new(
                system_roots(),
                Vec::new(),
            )?))
            .with_no_client_auth(),
        Trust::ExtraCa(path) => {
            let mut roots = system_roots();
            let certs = add_ca_file(&mut roots, path)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PkiVerifier::new(roots, certs)?))
                .with_no_client_auth()
        }
        Trust::Fingerprint(fp) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCert {
                fingerprint: *fp,
                algorithms: provider().signature_verification_algorithms,
            }))
            .with_no_client_auth(),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // System roots are a bonus (corporate CAs); a machine without them still has the
    // bundled set, so errors here are not fatal.
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    roots
}

fn add_ca_file(
    roots: &mut RootCertStore,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let err = |reason: String| TlsSetupError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let data = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut added = Vec::new();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&data) {
        let cert = cert.map_err(|e| err(e.to_string()))?;
        roots.add(cert.clone()).map_err(|e| err(e.to_string()))?;
        added.push(cert);
    }
    if added.is_empty() {
        return Err(err("no PEM certificate in file".into()));
    }
    Ok(added)
}

/// Web PKI verification (see the module docs) that also accepts a server certificate
/// byte-identical to one of `exact` (from the CA file), and says how to pin a refused
/// one.
#[derive(Debug)]
struct PkiVerifier {
    inner: Arc<WebPkiServerVerifier>,
    exact: Vec<CertificateDer<'static>>,
}

impl PkiVerifier {
    fn new(
        roots: RootCertStore,
        exact: Vec<CertificateDer<'static>>,
    ) -> Result<PkiVerifier, TlsSetupError> {
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsSetupError::Rustls(rustls::Error::General(e.to_string())))?;
        Ok(PkiVerifier { inner, exact })
    }
}

/// Why a certificate was refused, with its fingerprint and the option that pins it.
#[derive(Debug)]
struct Refused {
    why: String,
    subject: String,
    fingerprint: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; the server's certificate ({}) has the SHA-256 fingerprint {fp}; if you have \
             checked that it is your server's, trust exactly it with `--fingerprint {fp}` \
             (or `fingerprint = \"{fp}\"` in the account file), or give its CA with `--ca FILE`",
            self.why,
            self.subject,
            fp = self.fingerprint
        )
    }
}

impl std::error::Error for Refused {}

fn refused(why: String, end_entity: &CertificateDer<'_>) -> rustls::Error {
    let subject = crate::probe::x509::parse(end_entity.as_ref())
        .map(|i| format!("subject {}, issuer {}", i.subject, i.issuer))
        .unwrap_or_else(|| "unreadable".into());
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(Refused {
            why,
            subject,
            fingerprint: fingerprint_hex(end_entity.as_ref()),
        }),
    )))
}

/// A TLS handshake failure as the user should read it: a refused certificate with its
/// fingerprint and the option that pins it (see `Refused`), else rustls' own words.
pub fn describe_handshake_error(e: &std::io::Error) -> String {
    let refused = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|r| match r {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)) => {
                o.0.downcast_ref::<Refused>().map(|r| r.to_string())
            }
            _ => None,
        });
    match refused {
        Some(text) => format!("server certificate refused: {text}"),
        None => e.to_string(),
    }
}

/// Whether `pattern` (a certificate name) matches `host`: case-insensitive, a leading
/// `*.` matching exactly one label.
fn name_matches(pattern: &str, host: &str) -> bool {
    let (p, h) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    let (p, h) = (p.trim_end_matches('.'), h.trim_end_matches('.'));
    match p.strip_prefix("*.") {
        Some(rest) => h
            .split_once('.')
            .is_some_and(|(label, tail)| !label.is_empty() && tail == rest),
        None => p == h,
    }
}

/// The checks for a certificate trusted as itself: validity period and name.
fn check_exact(
    end_entity: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), String> {
    let info = crate::probe::x509::parse(end_entity.as_ref())
        .ok_or_else(|| "the certificate cannot be read".to_owned())?;
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if now < info.not_before {
        return Err(format!(
            "the certificate is not valid before {}",
            crate::probe::x509::format_time(info.not_before)
        ));
    }
    if now > info.not_after {
        return Err(format!(
            "the certificate expired on {}",
            crate::probe::x509::format_time(info.not_after)
        ));
    }
    let host = match server_name {
        ServerName::DnsName(d) => d.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => String::new(),
    };
    let is_ip = matches!(server_name, ServerName::IpAddress(_));
    let names: Vec<&str> = info
        .san
        .iter()
        .filter_map(|n| {
            if is_ip {
                n.strip_prefix("IP:")
            } else {
                n.strip_prefix("DNS:")
            }
        })
        .collect();
    let cn: Vec<&str> = if info.san.is_empty() {
        info.subject
            .split(", ")
            .filter_map(|a| a.strip_prefix("CN="))
            .collect()
    } else {
        Vec::new()
    };
    let ok = names.iter().chain(&cn).any(|n| {
        if is_ip {
            n.parse::<std::net::IpAddr>().ok() == host.parse().ok()
        } else {
            name_matches(n, &host)
        }
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the certificate does not name {host} (names: {})",
            if info.san.is_empty() {
                info.subject.clone()
            } else {
                info.san.join(", ")
            }
        ))
    }
}

#[doc(hidden)]
pub fn fuzz_check_exact(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 32).min(rest.len());
    let (host, der) = rest.split_at(n);
    let host = String::from_utf8_lossy(host);
    let der = CertificateDer::from(der.to_vec());
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_750_000_000));
    for name in [host.as_ref(), "localhost", "127.0.0.1", "::1"] {
        if let Ok(sn) = ServerName::try_from(name.to_owned()) {
            let _ = check_exact(&der, &sn, now);
        }
    }
    let _ = name_matches(&host, "pop.example.org");
}

impl ServerCertVerifier for PkiVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(v) => Ok(v),
            Err(e) => {
                if self.exact.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
                    return check_exact(end_entity, server_name, now)
                        .map(|()| ServerCertVerified::assertion())
                        .map_err(|why| refused(why, end_entity));
                }
                match e {
                    rustls::Error::InvalidCertificate(c) => {
                        let why = match c {
                            rustls::CertificateError::UnknownIssuer => {
                                "unknown issuer (not signed by a CA this client trusts)".to_owned()
                            }
                            // webpki checks basic constraints before the issuer: a
                            // self-signed CA:TRUE certificate nobody trusts lands here.
                            other if format!("{other:?}").contains("CaUsedAsEndEntity") => {
                                "unknown issuer (a self-signed CA certificate this client does not trust)"
                                    .to_owned()
                            }
                            other => format!("{other:?}"),
                        };
                        Err(refused(why, end_entity))
                    }
                    other => Err(other),
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts exactly one certificate, by SHA-256 of its DER encoding.
#[derive(Debug)]
struct PinnedCert {
    fingerprint: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate fingerprint {} does not match the pinned one",
                fingerprint_hex(end_entity.as_ref())
            )))
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

/// The server name to check the certificate against: a DNS name or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsSetupError> {
    ServerName::try_from(host.to_owned())
        .map_err(|_| TlsSetupError::Rustls(rustls::Error::General(format!("bad host name {host}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse() {
        let hex = "AB".repeat(32);
        assert_eq!(parse_fingerprint(&hex).unwrap(), [0xab; 32]);
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(parse_fingerprint(&colons).unwrap(), [0xab; 32]);
        assert!(parse_fingerprint("abcd").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
        assert_eq!(fingerprint_hex(b"").len(), 32 * 3 - 1);
    }

    #[test]
    fn certificate_names_match_like_rfc_6125() {
        assert!(name_matches("localhost", "LocalHost"));
        assert!(name_matches("*.example.org", "pop.example.org"));
        assert!(!name_matches("*.example.org", "a.pop.example.org"));
        assert!(!name_matches("*.example.org", "example.org"));
        assert!(!name_matches("pop.example.org", "imap.example.org"));
    }
}
