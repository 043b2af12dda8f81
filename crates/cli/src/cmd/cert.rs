//! `correio cert`: a self-signed certificate and key for first runs and tests, written
//! to `<data>/tls/cert.pem` and `<data>/tls/key.pem` (mode 0600), where `correio serve`
//! looks by default. Real deployments point `tls.cert`/`tls.key` at a CA-issued pair.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

/// Arguments of `correio cert`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory; the pair goes to `<DIR>/tls/`.
    #[arg(long, value_name = "DIR", default_value = "./correio-data")]
    data: PathBuf,
    /// Host name or IP address the certificate is for (repeatable). Default: localhost,
    /// 127.0.0.1, ::1 and this machine's host name.
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
    /// Replace an existing pair.
    #[arg(long)]
    force: bool,
}

/// The default subject names: loopback plus the host name.
pub fn default_hosts() -> Vec<String> {
    let mut v = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let host = std::env::var_os("HOSTNAME")
        .and_then(|h| h.into_string().ok())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        });
    if let Some(h) = host
        && !v.contains(&h)
    {
        v.push(h);
    }
    v
}

/// The certificate and key paths under a data dir.
pub fn pair_paths(data: &Path) -> (PathBuf, PathBuf) {
    let tls = data.join("tls");
    (tls.join("cert.pem"), tls.join("key.pem"))
}

/// Writes a self-signed pair; refuses to overwrite unless `force`.
pub fn make_pair(cert: &Path, key: &Path, hosts: &[String], force: bool) -> anyhow::Result<()> {
    if !force && (cert.exists() || key.exists()) {
        anyhow::bail!(
            "{} or {} already exists (use --force to replace them)",
            cert.display(),
            key.display()
        );
    }
    correio_server::tls::write_self_signed(cert, key, hosts)
        .with_context(|| format!("creating {}", cert.display()))
}

/// Runs `correio cert`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let hosts = if args.hosts.is_empty() {
        default_hosts()
    } else {
        args.hosts
    };
    let (cert, key) = pair_paths(&args.data);
    make_pair(&cert, &key, &hosts, args.force)?;
    let fp = correio_server::tls::fingerprint_sha256(&cert)?;
    println!("certificate: {}", cert.display());
    println!("key:         {}", key.display());
    println!("names:       {}", hosts.join(", "));
    println!("SHA-256:     {fp}");
    println!(
        "Clients can trust it with e.g. `curl --cacert {}`.",
        cert.display()
    );
    Ok(ExitCode::SUCCESS)
}
