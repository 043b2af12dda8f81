//! `correio check`: validates a server configuration the way `correio serve` would
//! load it, without binding anything, and says what is wrong and where (file, key or
//! line, reason). Exit status 0 when everything is usable, 1 otherwise.
use std::path::PathBuf;
use std::process::ExitCode;

use correio_server::config::{Config, Overrides};

/// Arguments of `correio check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file (TOML) [default: /etc/correio/correio.toml if it exists,
    /// else the ./correio-data defaults].
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
    if !matches!(
        config.user_backend,
        correio_users::BackendConfig::PasswdFile
    ) {
        out.extend(backend_problems(config));
    }
    // The users file: a missing file is fine (no users yet), a bad line is not.
    // (A file that cannot be stat'ed for another reason than "not there", e.g. a
    // directory this user may not enter, is an error, not a missing file.)
    let missing = matches!(
        std::fs::metadata(&config.users_file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound
    );
    let passwd_file = matches!(
        config.user_backend,
        correio_users::BackendConfig::PasswdFile
    );
    if !passwd_file {
        // Not used.
    } else if !missing {
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
    if let Err(e) = correio_store::MailboxRef::from_template(&config.mail_location, &probe) {
        out.push(format!("mail_location: {e}"));
    }
    // Stores beside the file backends must be buildable and answer now.
    match super::store::open_stores(config) {
        Err(e) => out.push(format!("{e:#}")),
        Ok(stores) => {
            for name in stores.names() {
                let started = std::time::Instant::now();
                if let Some(s) = stores.get(name) {
                    match s.check() {
                        Ok(()) => out.push(format!(
                            "note: store {name} answered in {} ms",
                            started.elapsed().as_millis()
                        )),
                        Err(e) => out.push(format!("store.{name}: the store does not answer: {e}")),
                    }
                }
            }
        }
    }
    // TLS: a pair the configuration names must load; so must a pair present at the
    // default paths. A missing default pair is what `correio serve` creates on its
    // first run, so it is a note, not an error.
    let pair_present = config.tls_cert.exists() || config.tls_key.exists();
    if config.tls_explicit || pair_present {
        if let Err(e) = correio_server::tls::TlsStore::load_with_sni(
            &config.tls_cert,
            &config.tls_key,
            &config.tls_sni,
        ) {
            out.push(format!("tls: {e}"));
        }
    } else {
        out.push(format!(
            "note: no TLS certificate yet: `correio serve` will create a self-signed one at {}",
            config.tls_cert.display()
        ));
    }
    match correio_server::ownership::ServiceAccount::from_config(config) {
        Err(e) => out.push(format!("{e}")),
        Ok(Some(service)) => out.extend(service_access_problems(config, &service)),
        Ok(None) => {}
    }
    out
}

/// A user database other than the passwd-file: it must open, and answer a lookup
/// (of a name nobody has) now — the database reachable, the query valid, the search
/// account accepted.
fn backend_problems(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let accounts = match correio_server::Accounts::open(config) {
        Ok(a) => a,
        Err(e) => return vec![format!("auth.backend: {e}")],
    };
    match config.user_backend {
        correio_users::BackendConfig::Sql(_) | correio_users::BackendConfig::Ldap(_) => {
            let started = std::time::Instant::now();
            match accounts.source().lookup("correio-check-no-such-user") {
                Ok(_) => out.push(format!(
                    "note: user database ({}) answered a lookup in {} ms",
                    accounts.source().kind(),
                    started.elapsed().as_millis()
                )),
                Err(e) => out.push(format!(
                    "auth.{}: the user database does not answer: {e}",
                    accounts.source().kind()
                )),
            }
        }
        correio_users::BackendConfig::Checkpassword(ref c) => {
            if let Err(e) = std::fs::metadata(&c.program) {
                out.push(format!(
                    "auth.checkpassword.program: {}: {e}",
                    c.program.display()
                ));
            }
        }
        _ => {}
    }
    out
}

/// What the service user (`user =`) could not use after the server drops to it:
/// the users file, the data directory, each user's mailbox. Checked from the owners
/// and modes, so `check` run as root sees what the server will see. The TLS key may
/// stay root-only: the privileged helper reads it on reload.
fn service_access_problems(
    config: &Config,
    service: &correio_server::ownership::ServiceAccount,
) -> Vec<String> {
    use correio_server::ownership::{Access, access_problem};
    let mut out = Vec::new();
    let who = format!("service user {:?}", service.name);
    let mut check = |what: &str, path: &std::path::Path, want: Access| {
        if let Some(p) = access_problem(path, service.uid, service.gid, want) {
            out.push(format!(
                "{what}: the {who} {p} (fix: chown -R {}: it, or run the admin commands with --config so they do)",
                service.name
            ));
        }
    };
    if matches!(
        config.user_backend,
        correio_users::BackendConfig::PasswdFile
    ) {
        check("users file", &config.users_file, Access::Read);
    }
    check("data_dir", &config.data_dir, Access::Modify);
    if let Ok(db) = correio_auth::UserDb::load(&config.users_file) {
        for r in db.records() {
            let template = r.mail_location().unwrap_or(&config.mail_location);
            let home = r.home_dir().map(std::path::PathBuf::from);
            let vars = correio_store::TemplateVars {
                user: &r.name,
                home: home.as_deref(),
            };
            if let Ok(loc) = correio_store::MailLocation::from_template(template, &vars) {
                let path = loc.path().to_owned();
                let want = if path.is_dir() {
                    Access::Modify
                } else {
                    Access::Read
                };
                check(&format!("mailbox of {}", r.name), &path, want);
                if path.is_dir() {
                    for sub in ["cur", "new", "tmp"] {
                        check(
                            &format!("mailbox of {}", r.name),
                            &path.join(sub),
                            Access::Modify,
                        );
                    }
                }
            }
        }
    }
    out
}

/// Runs `correio check`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        data_dir: args.data,
        set: args.set,
        ..Overrides::default()
    };
    let file = correio_server::config::config_path(args.config.as_deref());
    let config = match Config::load(file.as_deref(), &overrides) {
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
            match &file {
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
    println!("  users:         {}", config.user_backend.name());
    if let Some(u) = &config.run_as_user {
        println!("  service user:  {u}");
    }
    Ok(ExitCode::SUCCESS)
}
