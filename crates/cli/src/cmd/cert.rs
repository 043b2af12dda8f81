//! `correio cert`: a self-signed certificate and key for first runs and tests, written
//! where the server's configuration looks for them (`[tls] cert`/`key`, by default
//! `<data>/tls/cert.pem` and `<data>/tls/key.pem`, mode 0600). Run as root with
//! `user =` in the configuration, the pair (and the directory made for it) belongs to
//! that service user. Real deployments point `tls.cert`/`tls.key` at a CA-issued pair.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use correio_server::ownership::ServiceAccount;

/// Arguments of `correio cert`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Server configuration whose `[tls]` paths (and `user =`) to use [default:
    /// /etc/correio/correio.toml if it exists].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory; the pair goes to `<DIR>/tls/` unless the configuration names
    /// other paths [default: ./correio-data].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
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

/// Writes a self-signed pair; refuses to overwrite unless `force`. With `owner`, the
/// files and any directory made for them are given to that account.
pub fn make_pair(
    cert: &Path,
    key: &Path,
    hosts: &[String],
    force: bool,
    owner: Option<&ServiceAccount>,
) -> anyhow::Result<()> {
    if !force && (cert.exists() || key.exists()) {
        anyhow::bail!(
            "{} or {} already exists (use --force to replace them)",
            cert.display(),
            key.display()
        );
    }
    for p in [cert, key] {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            correio_server::ownership::create_dir_all_owned(dir, 0o700, owner)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    correio_server::tls::write_self_signed(cert, key, hosts)
        .with_context(|| format!("creating {}", cert.display()))?;
    if let Some(o) = owner {
        for p in [cert, key] {
            o.give(p)
                .with_context(|| format!("giving {} to {}", p.display(), o.name))?;
        }
    }
    Ok(())
}

/// Runs `correio cert`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let hosts = if args.hosts.is_empty() {
        default_hosts()
    } else {
        args.hosts
    };
    let overrides = correio_server::config::Overrides {
        data_dir: args.data.clone(),
        ..Default::default()
    };
    let file = correio_server::config::config_path(args.config.as_deref());
    let config = correio_server::config::Config::load(file.as_deref(), &overrides)
        .map_err(anyhow::Error::msg)?;
    let owner = ServiceAccount::for_files(&config)?;
    let (cert, key) = (config.tls_cert.clone(), config.tls_key.clone());
    make_pair(&cert, &key, &hosts, args.force, owner.as_ref())?;
    if let Some(o) = &owner {
        println!("owner:       {} (the service user)", o.name);
    }
    let fp = correio_client::tls::fingerprint_hex(&correio_server::tls::first_certificate(&cert)?);
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
