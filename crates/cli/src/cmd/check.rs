//! `correio check`: validates a server configuration the way `correio serve` would
//! load it, without binding anything, and says what is wrong and where (file, key or
//! line, reason). Exit status 0 when everything is usable, 1 otherwise.
use std::path::PathBuf;
use std::process::ExitCode;

use correio_server::config::{Config, Overrides};

/// Arguments of `correio check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file (TOML). Without it, the defaults are checked.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (overrides `data_dir`).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Set any config key (repeatable), as `correio serve --set` does.
    #[arg(long, value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// Every problem found; empty means the configuration is usable.
pub fn problems(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    // The users file: a missing file is fine (no users yet), a bad line is not.
    if config.users_file.exists() {
        if let Err(e) = correio_auth::UserDb::load(&config.users_file) {
            out.push(format!("users file: {e}"));
        }
    } else {
        out.push(format!(
            "note: users file {} does not exist yet (add users with `correio user add NAME`)",
            config.users_file.display()
        ));
    }
    // The mail location must expand for an ordinary user.
    let probe = correio_store::TemplateVars {
        user: "user@example.org",
        home: Some(std::path::Path::new("/home/user")),
    };
    if let Err(e) = correio_store::MailLocation::from_template(&config.mail_location, &probe) {
        out.push(format!("mail_location: {e}"));
    }
    // TLS: required for pop3s; if present, must load.
    let pair_present = config.tls_cert.exists() || config.tls_key.exists();
    if (pair_present || !config.pop3s.is_empty())
        && let Err(e) = correio_server::tls::load_server_config(&config.tls_cert, &config.tls_key)
    {
        out.push(format!("tls: {e}"));
    }
    if !pair_present && config.pop3s.is_empty() {
        out.push("note: no TLS certificate: STLS will not be offered".into());
    }
    if let Some(u) = &config.run_as_user
        && nix_user_exists(u) == Some(false)
    {
        out.push(format!("user: no such system user {u:?}"));
    }
    out
}

fn nix_user_exists(name: &str) -> Option<bool> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    Some(passwd.lines().any(|l| l.split(':').next() == Some(name)))
}

/// Runs `correio check`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        data_dir: args.data,
        set: args.set,
        ..Overrides::default()
    };
    let config = match Config::load(args.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let found = problems(&config);
    let mut failed = false;
    for p in &found {
        if p.starts_with("note: ") {
            println!("{p}");
        } else {
            failed = true;
            match &args.config {
                Some(f) => eprintln!("error: {}: {p}", f.display()),
                None => eprintln!("error: {p}"),
            }
        }
    }
    if failed {
        return Ok(ExitCode::FAILURE);
    }
    let list = |v: &Vec<std::net::SocketAddr>| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    println!("configuration OK");
    println!("  data dir:      {}", config.data_dir.display());
    println!("  users file:    {}", config.users_file.display());
    println!("  mail location: {}", config.mail_location);
    println!("  pop3:          {}", list(&config.pop3));
    println!("  pop3s:         {}", list(&config.pop3s));
    println!("  mechanisms:    {}", config.mechanisms.join(" "));
    Ok(ExitCode::SUCCESS)
}
