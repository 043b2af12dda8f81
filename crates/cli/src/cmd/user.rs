//! `correio user`: add, change, remove and list users in the users file (a
//! Dovecot-compatible passwd-file, `<data>/users` by default). Edits are atomic and
//! locked (see `correio_auth::userdb`), so concurrent runs never lose an update.
use std::io::{self, BufRead as _, IsTerminal as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use correio_auth::{
    HashParams, Scheme, StoredSecret, UserDb, UserDbError, UserDbOptions, UserRecord,
    default_users_path, hash_password, validate_username,
};
use correio_server::ownership::ServiceAccount;

/// Arguments of `correio user`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    /// Data directory holding the users file (`<DIR>/users`); default ./correio-data,
    /// or the config file's `data_dir`.
    #[arg(long, global = true, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Server configuration (TOML) whose `users_file` / `data_dir` to use.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Users file to edit, overriding everything else (e.g. a Dovecot passwd-file).
    #[arg(long, global = true, value_name = "FILE")]
    users: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Add a user (asks for the password twice, or reads one line with --password-stdin).
    Add(SetArgs),
    /// Change a user's password.
    Passwd(SetArgs),
    /// Remove a user from the users file (their mail is left where it is).
    Del {
        /// The user (`name` or `name@domain`).
        name: String,
    },
    /// List users and their password schemes (never the secrets).
    List {
        /// Only show this user.
        name: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct SetArgs {
    /// The user (`name` or `name@domain`).
    name: String,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
    /// Password scheme: ARGON2ID (default for `add`; `passwd` keeps the user's
    /// current scheme), ARGON2I, SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT, SSHA512, SSHA256,
    /// SSHA, SHA512, SHA256, SHA, PLAIN, PLAIN-MD5, CRAM-MD5, SCRAM-SHA-256. PLAIN also
    /// allows APOP, CRAM-MD5 and SCRAM-SHA-256 logins; CRAM-MD5 and SCRAM-SHA-256 allow
    /// their own mechanism.
    #[arg(long, value_name = "S")]
    scheme: Option<String>,
    /// Where this user's mail lives (stored as `userdb_mail=`), e.g.
    /// `maildir:/var/mail/alice` or `mbox:/var/mail/alice`.
    #[arg(long, value_name = "LOCATION")]
    mail: Option<String>,
    /// The user's home directory (the passwd-file home field).
    #[arg(long, value_name = "DIR")]
    home: Option<String>,
}

/// Runs `correio user`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (path, config) = users_file(&args)?;
    // Root editing for a server that runs as `user =`: what we create is theirs.
    let owner = match &config {
        Some(c) => ServiceAccount::for_files(c)?,
        None => None,
    };
    let policy = config
        .as_ref()
        .map(|c| c.username.clone())
        .unwrap_or_default();
    // With `auth.username_format = "%Lu"` logins are folded to lower case, so the
    // stored name is too (the file then reads the same way the server matches it).
    let fold = |n: String| {
        if policy.lowercase {
            n.to_lowercase()
        } else {
            n
        }
    };
    let result = match args.action {
        Action::Add(mut set) => {
            set.name = fold(set.name);
            add(&path, set, owner.as_ref())
        }
        Action::Passwd(mut set) => {
            set.name = fold(set.name);
            passwd(&path, set)
        }
        Action::Del { name } => {
            let name = fold(name);
            check_name(&name)?;
            correio_auth::delete_user(&path, &name).map_err(explain)?;
            eprintln!(
                "deleted user {name} from {} (mail left in place)",
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Action::List { name } => list(
            &path,
            name.as_deref().map(|n| fold(n.to_owned())).as_deref(),
        ),
    };
    // The users file keeps its owner across edits (see `correio_auth::userdb`); a
    // new one made by root is given to the service user here.
    if let Some(o) = &owner
        && result.is_ok()
    {
        // The lock file too: the service user may edit the file later.
        let mut lock = path.clone().into_os_string();
        lock.push(".lock");
        for p in [path.clone(), PathBuf::from(lock)] {
            if p.exists() {
                o.give(&p)
                    .with_context(|| format!("giving {} to {}", p.display(), o.name))?;
            }
        }
    }
    result
}

/// `--users`, else the config's `users_file` (with `--data` overriding `data_dir`;
/// the config is `--config`, else /etc/correio/correio.toml if it exists), else
/// `<--data or ./correio-data>/users`, as `correio serve` resolves it. Also returns the
/// configuration, for its service user and name policy.
fn users_file(args: &Args) -> anyhow::Result<(PathBuf, Option<correio_server::config::Config>)> {
    let overrides = correio_server::config::Overrides {
        data_dir: args.data.clone(),
        ..Default::default()
    };
    let file = correio_server::config::config_path(args.config.as_deref());
    let config = match &file {
        Some(cfg) => Some(
            correio_server::config::Config::load(Some(cfg), &overrides)
                .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    if let Some(u) = &args.users {
        return Ok((u.clone(), config));
    }
    if let Some(c) = config {
        return Ok((c.users_file.clone(), Some(c)));
    }
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from("./correio-data"));
    Ok((default_users_path(&data), None))
}

fn check_name(name: &str) -> anyhow::Result<()> {
    validate_username(name).map_err(|e| anyhow::anyhow!("{e}"))
}

fn explain(e: UserDbError) -> anyhow::Error {
    match e {
        UserDbError::Exists(n) => {
            anyhow::anyhow!("user {n} already exists (use `correio user passwd {n}`)")
        }
        UserDbError::NotFound(n) => {
            anyhow::anyhow!("user {n} does not exist (use `correio user add {n}`)")
        }
        e => e.into(),
    }
}

fn parse_scheme(s: &str) -> anyhow::Result<Scheme> {
    let scheme = Scheme::from_name(s);
    if !scheme.can_generate() {
        bail!(
            "unknown password scheme {s:?}; choose one of: {}",
            Scheme::GENERATABLE.join(", ")
        );
    }
    Ok(scheme)
}

/// Refuses values that would break the passwd-file line they go into.
fn check_field(what: &str, v: &str, forbid_space: bool) -> anyhow::Result<()> {
    if v.is_empty()
        || v.chars()
            .any(|c| c.is_control() || (forbid_space && c.is_whitespace()))
    {
        bail!(
            "{what} must be non-empty, without control characters{}",
            if forbid_space { " or spaces" } else { "" }
        );
    }
    Ok(())
}

fn make_secret(set: &SetArgs, scheme: &Scheme) -> anyhow::Result<StoredSecret> {
    let password = read_password(set.password_stdin, &set.name)?;
    hash_password(scheme, password.as_bytes(), &HashParams::default())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn add(path: &Path, set: SetArgs, owner: Option<&ServiceAccount>) -> anyhow::Result<ExitCode> {
    check_name(&set.name)?;
    let scheme = parse_scheme(set.scheme.as_deref().unwrap_or("ARGON2ID"))?;
    if let Some(m) = &set.mail {
        check_field("--mail", m, true)?;
    }
    if let Some(h) = &set.home {
        check_field("--home", h, false)?;
        if h.contains(':') {
            bail!("--home cannot contain ':'");
        }
    }
    // Refuse a duplicate before asking for a password (the locked edit checks again).
    // Names differing only in case count as taken (a server may match them that way).
    let any_case = UserDbOptions {
        case_insensitive: true,
    };
    if let Ok(db) = UserDb::load_or_empty(path, any_case)
        && let Some(existing) = db.lookup_cached(&set.name)
    {
        return Err(explain(UserDbError::Exists(existing.name)));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        correio_server::ownership::create_dir_all_owned(dir, 0o700, owner)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
    }
    let secret = make_secret(&set, &scheme)?;
    let mut rec = UserRecord::new(&set.name, Some(secret));
    if let Some(h) = &set.home {
        rec.home = h.clone();
    }
    if let Some(m) = &set.mail {
        rec.set_field("userdb_mail", Some(m));
    }
    correio_auth::add_user(path, &rec).map_err(explain)?;
    eprintln!("added user {} ({scheme}) to {}", set.name, path.display());
    Ok(ExitCode::SUCCESS)
}

fn passwd(path: &Path, set: SetArgs) -> anyhow::Result<ExitCode> {
    check_name(&set.name)?;
    let db = UserDb::load(path).map_err(explain)?;
    let Some(current) = db.lookup_cached(&set.name) else {
        return Err(explain(UserDbError::NotFound(set.name.clone())));
    };
    let (mail, home) = (set.mail.clone(), set.home.clone());
    if let Some(m) = &mail {
        check_field("--mail", m, true)?;
    }
    if let Some(h) = &home {
        check_field("--home", h, false)?;
        if h.contains(':') {
            bail!("--home cannot contain ':'");
        }
    }
    // Keep the current scheme unless told otherwise: a PLAIN or CRAM-MD5 user may rely
    // on APOP or CRAM-MD5, which a silent switch to ARGON2ID would break.
    let scheme = match &set.scheme {
        Some(s) => parse_scheme(s)?,
        None => current
            .password
            .as_ref()
            .map(|p| p.scheme().clone())
            .filter(Scheme::can_generate)
            .unwrap_or_default(),
    };
    let secret = make_secret(&set, &scheme)?;
    correio_auth::update_user(path, &set.name, move |r| {
        r.password = Some(secret);
        if let Some(m) = &mail {
            r.set_field("userdb_mail", Some(m));
        }
        if let Some(h) = home {
            r.home = h;
        }
    })
    .map_err(explain)?;
    eprintln!("changed the password of {} ({scheme})", set.name);
    Ok(ExitCode::SUCCESS)
}

fn list(path: &Path, only: Option<&str>) -> anyhow::Result<ExitCode> {
    let db = match UserDb::load(path) {
        Err(UserDbError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            eprintln!(
                "no users file at {} yet (add one with `correio user add NAME`)",
                path.display()
            );
            return Ok(if only.is_some() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
        other => other.map_err(explain)?,
    };
    let mut found = false;
    for r in db.records() {
        if only.is_some_and(|n| n != r.name) {
            continue;
        }
        found = true;
        let scheme = match &r.password {
            Some(p) => p.scheme().name().to_owned(),
            None if r.nopassword() => "(nopassword)".to_owned(),
            None => "(no password)".to_owned(),
        };
        let mut line = format!("{}\t{scheme}", r.name);
        if let Some(m) = r.mail_location() {
            line.push_str(&format!("\tmail={m}"));
        }
        println!("{line}");
    }
    if let Some(n) = only
        && !found
    {
        return Err(explain(UserDbError::NotFound(n.to_owned())));
    }
    Ok(ExitCode::SUCCESS)
}

/// Longest password we accept (bounded read; Dovecot's limit is 4096 too).
const MAX_PASSWORD: usize = 4096;

fn read_password(from_stdin: bool, name: &str) -> anyhow::Result<String> {
    let pw = if from_stdin {
        let mut line = String::new();
        let n = io::Read::take(io::stdin().lock(), MAX_PASSWORD as u64 + 2)
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        if n == 0 {
            bail!("no password on standard input");
        }
        let pw = line.strip_suffix('\n').unwrap_or(&line);
        pw.strip_suffix('\r').unwrap_or(pw).to_owned()
    } else {
        if !io::stdin().is_terminal() {
            bail!(
                "standard input is not a terminal: pass --password-stdin to read the password from it"
            );
        }
        let first = rpassword::prompt_password(format!("Password for {name}: "))
            .context("reading the password")?;
        let second = rpassword::prompt_password("Again: ").context("reading the password")?;
        if first != second {
            bail!("the passwords do not match");
        }
        first
    };
    if pw.is_empty() {
        bail!("empty password refused");
    }
    if pw.len() > MAX_PASSWORD {
        bail!("password longer than {MAX_PASSWORD} bytes refused");
    }
    Ok(pw)
}
