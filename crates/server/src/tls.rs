//! TLS for the server: certificate and key from PEM files into a rustls config (ring
//! provider, TLS 1.2 and 1.3), a reloadable holder so SIGHUP swaps the pair without
//! touching running sessions, and the self-signed pair `correio cert` makes.

use rustls_pki_types::pem::PemObject as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use correio_fsutil::AtomicWrite;
use rustls::ServerConfig as RustlsConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file holds no usable PEM item of the expected kind.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the pair (key does not match, unsupported key type...).
    #[error("certificate/key pair refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The self-signed certificate could not be made.
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    /// Writing the self-signed pair failed.
    #[error("{path}: cannot write: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Reads a certificate chain and key file (their PEM bytes), naming the path that
/// failed.
pub fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |p: &Path| {
        fs::read(p).map_err(|source| TlsError::Read {
            path: p.to_owned(),
            source,
        })
    };
    Ok((read(cert)?, read(key)?))
}

/// Loads a PEM certificate chain and private key into a rustls server config.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<RustlsConfig>, TlsError> {
    let (cert_pem, key_pem) = read_pair(cert, key)?;
    server_config_from_pem(&cert_pem, &key_pem, cert, key)
}

/// Builds a rustls server config from PEM bytes; `cert` and `key` name where they
/// came from, for errors.
pub fn server_config_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert: &Path,
    key: &Path,
) -> Result<Arc<RustlsConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert.to_owned(),
            reason: format!("bad PEM: {e}"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert.to_owned(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    let key_der: PrivateKeyDer<'static> =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
            path: key.to_owned(),
            reason: match e {
                rustls::pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY block found".into(),
                e => format!("bad PEM: {e}"),
            },
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = RustlsConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    Ok(Arc::new(config))
}

/// A certificate for one server name (SNI), with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniCert {
    /// The server name, lower case (`mail.example.org`).
    pub name: String,
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

/// PEM bytes of one SNI pair: (name, chain, key).
pub type SniPem = (String, Vec<u8>, Vec<u8>);

/// Picks the certificate by the name the client asked for (SNI), else the default.
#[derive(Debug)]
struct SniResolver {
    default: Arc<rustls::sign::CertifiedKey>,
    by_name: std::collections::HashMap<String, Arc<rustls::sign::CertifiedKey>>,
}

impl rustls::server::ResolvesServerCert for SniResolver {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let asked = hello.server_name().map(str::to_ascii_lowercase);
        Some(
            asked
                .and_then(|n| self.by_name.get(&n).cloned())
                .unwrap_or_else(|| Arc::clone(&self.default)),
        )
    }
}

fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert.to_owned(),
            reason: format!("bad PEM: {e}"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert.to_owned(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    let key_der: PrivateKeyDer<'static> =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
            path: key.to_owned(),
            reason: match e {
                rustls::pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY block found".into(),
                e => format!("bad PEM: {e}"),
            },
        })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)?;
    let ck = rustls::sign::CertifiedKey::new(chain, signing);
    // The key must belong to the certificate (rustls checks it for single certs).
    ck.keys_match().map_err(|e| TlsError::Pem {
        path: key.to_owned(),
        reason: format!("does not match {}: {e}", cert.display()),
    })?;
    Ok(Arc::new(ck))
}

/// A server config with a default pair and one pair per SNI name (PEM bytes given;
/// the paths name them in errors).
pub fn server_config_with_sni(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert: &Path,
    key: &Path,
    sni: &[SniPem],
    sni_paths: &[SniCert],
) -> Result<Arc<RustlsConfig>, TlsError> {
    if sni.is_empty() {
        return server_config_from_pem(cert_pem, key_pem, cert, key);
    }
    let default = certified_key(cert_pem, key_pem, cert, key)?;
    let mut by_name = std::collections::HashMap::new();
    for (i, (name, c, k)) in sni.iter().enumerate() {
        let (cp, kp) = sni_paths
            .get(i)
            .map(|s| (s.cert.clone(), s.key.clone()))
            .unwrap_or_default();
        by_name.insert(name.to_ascii_lowercase(), certified_key(c, k, &cp, &kp)?);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = RustlsConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { default, by_name }));
    Ok(Arc::new(config))
}

/// Reads every SNI pair's files.
pub fn read_sni(sni: &[SniCert]) -> Result<Vec<SniPem>, TlsError> {
    sni.iter()
        .map(|s| read_pair(&s.cert, &s.key).map(|(c, k)| (s.name.clone(), c, k)))
        .collect()
}

/// The current TLS config, swapped whole on reload. Sessions take an `Arc` at accept
/// time (or at STLS) and keep it, so a reload never disturbs them.
#[derive(Debug)]
pub struct TlsStore {
    paths: RwLock<(PathBuf, PathBuf)>,
    sni: RwLock<Vec<SniCert>>,
    current: RwLock<Option<Arc<RustlsConfig>>>,
}

impl TlsStore {
    /// Loads the pair now; fails if it cannot be used.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsStore, TlsError> {
        Self::load_with_sni(cert, key, &[])
    }

    /// Loads the default pair and one pair per SNI name; fails if any cannot be used.
    pub fn load_with_sni(cert: &Path, key: &Path, sni: &[SniCert]) -> Result<TlsStore, TlsError> {
        let store = TlsStore {
            paths: RwLock::new((cert.to_owned(), key.to_owned())),
            sni: RwLock::new(sni.to_vec()),
            current: RwLock::new(None),
        };
        store.reload()?;
        Ok(store)
    }

    /// A store without TLS (no STLS, no pop3s).
    pub fn none() -> TlsStore {
        Self::unloaded(Path::new(""), Path::new(""))
    }

    /// A store that knows where the pair will be but has none yet: STLS appears after
    /// a successful [`TlsStore::reload`] (SIGHUP once the files are in place).
    pub fn unloaded(cert: &Path, key: &Path) -> TlsStore {
        TlsStore {
            paths: RwLock::new((cert.to_owned(), key.to_owned())),
            sni: RwLock::new(Vec::new()),
            current: RwLock::new(None),
        }
    }

    /// The config for a new handshake.
    pub fn current(&self) -> Option<Arc<RustlsConfig>> {
        self.current.read().ok().and_then(|g| g.clone())
    }

    /// The certificate and key paths.
    pub fn paths(&self) -> (PathBuf, PathBuf) {
        self.paths.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// Points the store at other files (a reload whose `[tls]` changed); the pair in
    /// use stays until the next successful [`TlsStore::reload`].
    pub fn set_paths(&self, cert: &Path, key: &Path) {
        if let Ok(mut p) = self.paths.write() {
            *p = (cert.to_owned(), key.to_owned());
        }
    }

    /// Replaces the SNI pairs to load at the next reload.
    pub fn set_sni(&self, sni: &[SniCert]) {
        if let Ok(mut s) = self.sni.write() {
            *s = sni.to_vec();
        }
    }

    fn sni_paths(&self) -> Vec<SniCert> {
        self.sni.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Re-reads the files. On error the old pair stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (cert, key) = self.paths();
        if cert.as_os_str().is_empty() {
            return Ok(());
        }
        let (cert_pem, key_pem) = read_pair(&cert, &key)?;
        let paths = self.sni_paths();
        let sni = read_sni(&paths)?;
        let config = server_config_with_sni(&cert_pem, &key_pem, &cert, &key, &sni, &paths)?;
        if let Ok(mut g) = self.current.write() {
            *g = Some(config);
        }
        Ok(())
    }

    /// Installs a pair read elsewhere (by the privileged helper). On error the old
    /// pair stays in use.
    pub fn install_pem(
        &self,
        cert_pem: &[u8],
        key_pem: &[u8],
        sni: &[SniPem],
    ) -> Result<(), TlsError> {
        let (cert, key) = self.paths();
        let config =
            server_config_with_sni(cert_pem, key_pem, &cert, &key, sni, &self.sni_paths())?;
        if let Ok(mut g) = self.current.write() {
            *g = Some(config);
        }
        Ok(())
    }
}

/// The first certificate (DER) of a PEM file: what `correio cert` prints the
/// fingerprint of (formatted by `correio_client::tls::fingerprint_hex`, the one
/// formatter `correio fetch --fingerprint` parses back).
pub fn first_certificate(cert: &Path) -> Result<CertificateDer<'static>, TlsError> {
    let pem = fs::read(cert).map_err(|source| TlsError::Read {
        path: cert.to_owned(),
        source,
    })?;
    CertificateDer::pem_slice_iter(&pem)
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| TlsError::Pem {
            path: cert.to_owned(),
            reason: "no CERTIFICATE block found".into(),
        })
}

/// A self-signed certificate and key (PEM) for `hosts` (DNS names or IP addresses).
pub fn self_signed(hosts: &[String]) -> Result<(String, String), TlsError> {
    let certified = rcgen::generate_simple_self_signed(hosts.to_vec())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok((certified.cert.pem(), certified.key_pair.serialize_pem()))
}

/// Writes a self-signed pair to `cert` and `key` (key mode 0600), creating parent
/// directories. Existing files are replaced.
pub fn write_self_signed(cert: &Path, key: &Path, hosts: &[String]) -> Result<(), TlsError> {
    let (cert_pem, key_pem) = self_signed(hosts)?;
    for p in [cert, key] {
        if let Some(dir) = p.parent() {
            fs::create_dir_all(dir).map_err(|source| TlsError::Write {
                path: dir.to_owned(),
                source,
            })?;
        }
    }
    // Each file atomically (temporary file, fsync, rename, fsync of the directory), so
    // a server reloading them never reads half a file; the key is 0600 from the start.
    let write = |path: &Path, data: &[u8], options: AtomicWrite| {
        options.write(path, data).map_err(|e| TlsError::Write {
            path: path.to_owned(),
            source: e.into(),
        })
    };
    write(key, key_pem.as_bytes(), AtomicWrite::new().mode(0o600))?;
    write(cert, cert_pem.as_bytes(), AtomicWrite::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_pair_loads_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        write_self_signed(&c, &k, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let store = TlsStore::load(&c, &k).unwrap();
        let first = store.current().unwrap();
        write_self_signed(&c, &k, &["localhost".into()]).unwrap();
        store.reload().unwrap();
        assert!(!Arc::ptr_eq(&first, &store.current().unwrap()));
        // A broken file keeps the old pair.
        fs::write(&k, "garbage").unwrap();
        assert!(store.reload().is_err());
        assert!(store.current().is_some());
    }

    #[test]
    fn a_pair_added_later_is_picked_up_by_reload() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let store = TlsStore::unloaded(&c, &k);
        assert!(store.current().is_none());
        assert!(store.reload().is_err());
        write_self_signed(&c, &k, &["localhost".into()]).unwrap();
        store.reload().unwrap();
        assert!(store.current().is_some());
        assert!(TlsStore::none().reload().is_ok());
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("c.pem");
        fs::write(&c, "not pem").unwrap();
        let e = load_server_config(&c, &dir.path().join("missing.pem")).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let e = load_server_config(&c, &c).unwrap_err();
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
    }
}
