//! `correio fetch`: download mail from POP3 accounts into Maildir, mbox, EML files,
//! an MDA or LMTP, keeping or deleting it on the server. The work is done by
//! `correio_client::fetch`; this file turns flags and the config file into accounts,
//! gets passwords, picks the progress display and runs once or as a daemon.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use correio_client::fetch::config::{AccountConfig, ConfigFile, default_state_dir, resolve};
use correio_client::fetch::report::{Bars, Lines};
use correio_client::fetch::{Account, FetchError, Progress, Silent, Summary, fetch_account};

/// Arguments of `correio fetch` (boxed: they are many, and the subcommand enum should
/// stay small).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    flags: Box<FetchArgs>,
}

/// The flags of `correio fetch`.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Accounts file (TOML). Default: ~/.config/correio/fetch.toml when it exists.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Fetch only this account of the config file (repeatable).
    #[arg(long, value_name = "NAME")]
    pub account: Vec<String>,
    /// Server host (a one-off account, or overrides the config file).
    #[arg(long, value_name = "H")]
    pub host: Option<String>,
    /// Server port (default 995 with implicit TLS, else 110).
    #[arg(long, value_name = "P")]
    pub port: Option<u16>,
    /// Login name.
    #[arg(long, value_name = "U")]
    pub user: Option<String>,
    /// implicit (default), starttls or none.
    #[arg(long, value_name = "MODE")]
    pub tls: Option<String>,
    /// auto (default), user, apop, plain, login, cram-md5, scram-sha-256, xoauth2,
    /// oauthbearer. auto over TLS: plain, else user, else login (they work whatever
    /// form the server stores the password in); without TLS: scram-sha-256, else
    /// cram-md5, else apop.
    #[arg(long, value_name = "METHOD")]
    pub auth: Option<String>,
    /// Command printing the password or OAuth2 access token on its first line.
    #[arg(long, value_name = "CMD")]
    pub password_command: Option<String>,
    /// Pin the server certificate by its SHA-256 fingerprint.
    #[arg(long, value_name = "SHA256")]
    pub fingerprint: Option<String>,
    /// Trust this CA certificate file (PEM) too.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<String>,
    /// Leave messages on the server (the default).
    #[arg(long, conflicts_with_all = ["delete", "delete_after_days"])]
    pub keep: bool,
    /// Delete messages on the server once stored.
    #[arg(long)]
    pub delete: bool,
    /// Delete messages N days after they were first stored.
    #[arg(long, value_name = "N", conflicts_with = "delete")]
    pub delete_after_days: Option<u32>,
    /// Skip messages larger than this many bytes.
    #[arg(long, value_name = "BYTES")]
    pub max_size: Option<u64>,
    /// What to do with messages over --max-size: skip (default) or delete.
    #[arg(long, value_name = "ACTION")]
    pub oversize: Option<String>,
    /// Fetch only the headers (TOP n 0).
    #[arg(long)]
    pub headers_only: bool,
    /// Where to store: maildir:DIR, mbox:FILE, eml:DIR, mda:CMD or
    /// lmtp:HOST:PORT:RECIPIENT.
    #[arg(long, value_name = "TARGET")]
    pub to: Option<String>,
    /// Directory for the per-account state files.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<String>,
    /// Read timeout (e.g. 30s).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Do not pipeline even if the server offers it.
    #[arg(long)]
    pub no_pipelining: bool,
    /// Allow sending a password without TLS to a host that is not loopback.
    #[arg(long)]
    pub allow_cleartext: bool,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print a JSON summary on standard output.
    #[arg(long)]
    pub json: bool,
    /// Run forever, fetching every DURATION (e.g. 5m), honouring LOGIN-DELAY and
    /// backing off on errors.
    #[arg(long, value_name = "DURATION")]
    pub every: Option<String>,
    /// Discover the settings for ADDRESS (DNS SRV, then autoconfig), confirm them with
    /// the server, and add the account to the config file.
    #[arg(long, value_name = "ADDRESS")]
    pub configure: Option<String>,
    /// DNS server for --configure (IP:PORT), instead of the system's.
    #[arg(long, value_name = "IP:PORT", hide = true)]
    pub dns_server: Option<String>,
    /// Base URL replacing the ISP's autoconfig host for --configure (tests).
    #[arg(long, value_name = "URL", hide = true)]
    pub autoconfig_url: Option<String>,
    /// Base URL of the ISPDB for --configure.
    #[arg(long, value_name = "URL", hide = true)]
    pub ispdb_url: Option<String>,
    /// Group commit size: messages per fsync/record/DELE batch.
    #[arg(long, value_name = "N", hide = true)]
    pub batch_messages: Option<usize>,
}

impl FetchArgs {
    /// The settings the flags give, to lay over the config file.
    fn overrides(&self) -> AccountConfig {
        AccountConfig {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            tls: self.tls.clone(),
            auth: self.auth.clone(),
            password_command: self.password_command.clone(),
            fingerprint: self.fingerprint.clone(),
            ca: self.ca.clone(),
            keep: self.keep.then_some(true),
            delete: self.delete.then_some(true),
            delete_after_days: self.delete_after_days,
            max_size: self.max_size,
            oversize: self.oversize.clone(),
            headers_only: self.headers_only.then_some(true),
            to: self.to.clone(),
            pipelining: self.no_pipelining.then_some(false),
            timeout: self.timeout.clone(),
            allow_cleartext: self.allow_cleartext.then_some(true),
            state_dir: self.state_dir.clone(),
        }
    }
}

fn default_config() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| correio_client::fetch::target::expand_home("~/.config"));
    base.join("correio").join("fetch.toml")
}

fn accounts(args: &FetchArgs) -> anyhow::Result<Vec<Account>> {
    let flags = args.overrides();
    let path = args.config.clone().or_else(|| {
        let p = default_config();
        (args.host.is_none() && p.exists()).then_some(p)
    });
    let mut out = Vec::new();
    match path {
        Some(path) if args.host.is_none() || !args.account.is_empty() => {
            let file = ConfigFile::load(&path).map_err(anyhow::Error::msg)?;
            if file.account.is_empty() {
                bail!("{} defines no [account.NAME]", path.display());
            }
            for name in &args.account {
                if !file.account.contains_key(name) {
                    bail!("no account {name:?} in {}", path.display());
                }
            }
            for (name, acct) in &file.account {
                if !args.account.is_empty() && !args.account.contains(name) {
                    continue;
                }
                let merged = flags.merged(&acct.merged(&file.defaults));
                out.push(resolve(name, &merged).map_err(anyhow::Error::msg)?);
            }
        }
        Some(path) => {
            // --host with --config: a one-off account using the file's defaults.
            let file = ConfigFile::load(&path).map_err(anyhow::Error::msg)?;
            let merged = flags.merged(&file.defaults);
            out.push(resolve(&one_off_name(args), &merged).map_err(anyhow::Error::msg)?);
        }
        None => {
            if args.host.is_none() {
                bail!(
                    "nothing to fetch: give --host and --user, or --config FILE (default {}), or --configure ADDRESS",
                    default_config().display()
                );
            }
            out.push(resolve(&one_off_name(args), &flags).map_err(anyhow::Error::msg)?);
        }
    }
    Ok(out)
}

fn one_off_name(args: &FetchArgs) -> String {
    format!(
        "{}@{}",
        args.user.as_deref().unwrap_or("?"),
        args.host.as_deref().unwrap_or("?")
    )
}

/// Fills in each account's password: from its command, else by asking on the terminal.
fn passwords(accounts: &mut [Account]) -> anyhow::Result<()> {
    for a in accounts {
        let secret = match &a.password_command {
            Some(cmd) => {
                let out = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .stderr(std::process::Stdio::inherit())
                    .output()
                    .with_context(|| format!("account {}: running password_command", a.name))?;
                if !out.status.success() {
                    bail!(
                        "account {}: password_command failed ({})",
                        a.name,
                        out.status
                    );
                }
                let first = out.stdout.split(|&b| b == b'\n').next().unwrap_or_default();
                first.strip_suffix(b"\r").unwrap_or(first).to_vec()
            }
            None if std::io::stdin().is_terminal() => {
                rpassword::prompt_password(format!("Password for {}@{}: ", a.user, a.host))
                    .context("reading password")?
                    .into_bytes()
            }
            None => bail!(
                "account {}: no password_command and standard input is not a terminal to ask on",
                a.name
            ),
        };
        a.password = Some(secret);
    }
    Ok(())
}

/// Runs `correio fetch`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let args = *args.flags;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if let Some(address) = &args.configure {
        return rt.block_on(configure(&args, address));
    }
    let mut accts = accounts(&args)?;
    if let Some(n) = args.batch_messages {
        for a in &mut accts {
            a.batch_messages = n.max(1);
        }
    }
    passwords(&mut accts)?;
    let progress: Arc<dyn Progress> = if args.quiet || args.json {
        Arc::new(Silent)
    } else if std::io::stderr().is_terminal() {
        Arc::new(Bars::new())
    } else {
        Arc::new(Lines)
    };
    match &args.every {
        None => rt.block_on(once(&args, accts, progress)),
        Some(every) => {
            let every = correio_client::parse_duration(every)
                .map_err(|e| anyhow::anyhow!("--every {e}"))?;
            if every < Duration::from_secs(1) {
                bail!("--every must be at least 1s");
            }
            rt.block_on(daemon(&args, accts, progress, every))
        }
    }
}

async fn run_all(
    accts: &[Account],
    progress: &Arc<dyn Progress>,
) -> Vec<(String, Result<Summary, FetchError>)> {
    let mut set = tokio::task::JoinSet::new();
    for (i, a) in accts.iter().enumerate() {
        let a = a.clone();
        let p = progress.clone();
        set.spawn(async move {
            let r = fetch_account(&a, &correio_client::sasl::factory, p.as_ref()).await;
            (i, a.name.clone(), r)
        });
    }
    let mut results = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(x) => results.push(x),
            Err(e) => results.push((
                usize::MAX,
                "?".into(),
                Err(FetchError::Config(e.to_string())),
            )),
        }
    }
    results.sort_by_key(|r| r.0);
    results.into_iter().map(|(_, n, r)| (n, r)).collect()
}

fn report(args: &FetchArgs, results: &[(String, Result<Summary, FetchError>)]) {
    if args.json {
        let items: Vec<serde_json::Value> = results
            .iter()
            .map(|(name, r)| match r {
                Ok(s) => serde_json::json!({"ok": true, "summary": s}),
                Err(e) => serde_json::json!({"ok": false, "account": name, "error": e.to_string()}),
            })
            .collect();
        let _ = writeln!(
            std::io::stdout(),
            "{}",
            serde_json::json!({ "accounts": items })
        );
        return;
    }
    for (name, r) in results {
        match r {
            Ok(s) if !args.quiet => {
                let mut line = format!(
                    "{name}: {} fetched ({} octets), {} deleted, {} on server",
                    s.fetched, s.fetched_bytes, s.deleted, s.on_server
                );
                if s.skipped_oversize > 0 {
                    line += &format!(", {} over the size limit skipped", s.skipped_oversize);
                }
                let _ = writeln!(std::io::stderr(), "{line}");
            }
            Ok(_) => {}
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "correio fetch: {name}: {e}");
            }
        }
    }
}

async fn once(
    args: &FetchArgs,
    accts: Vec<Account>,
    progress: Arc<dyn Progress>,
) -> anyhow::Result<ExitCode> {
    let results = run_all(&accts, &progress).await;
    report(args, &results);
    Ok(if results.iter().all(|(_, r)| r.is_ok()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Fetches every account on its own schedule: `every`, or longer when the server's
/// LOGIN-DELAY asks for it, doubling the wait after each failure (up to six hours).
async fn daemon(
    args: &FetchArgs,
    accts: Vec<Account>,
    progress: Arc<dyn Progress>,
    every: Duration,
) -> anyhow::Result<ExitCode> {
    let mut set = tokio::task::JoinSet::new();
    for a in accts {
        let p = progress.clone();
        let json = args.json;
        let quiet = args.quiet;
        set.spawn(async move {
            let mut failures: u32 = 0;
            loop {
                let r = fetch_account(&a, &correio_client::sasl::factory, p.as_ref()).await;
                let wait = match &r {
                    Ok(s) => {
                        failures = 0;
                        let delay = Duration::from_secs(s.login_delay.unwrap_or(0).into());
                        every.max(delay)
                    }
                    Err(FetchError::LoginDelay(_)) => {
                        failures = failures.saturating_add(1);
                        every.max(Duration::from_secs(300))
                    }
                    Err(_) => {
                        failures = failures.saturating_add(1);
                        let factor = 1u32 << failures.min(10);
                        (every * factor).min(Duration::from_secs(6 * 3600))
                    }
                };
                let line = match &r {
                    Ok(s) if json => serde_json::json!({"ok": true, "summary": s}).to_string(),
                    Err(e) if json => {
                        serde_json::json!({"ok": false, "account": a.name, "error": e.to_string()})
                            .to_string()
                    }
                    Ok(s) => format!(
                        "{}: {} fetched, {} deleted; next in {}",
                        a.name,
                        s.fetched,
                        s.deleted,
                        correio_client::format_duration(wait)
                    ),
                    Err(e) => format!(
                        "{}: {e}; retrying in {}",
                        a.name,
                        correio_client::format_duration(wait)
                    ),
                };
                if json {
                    println!("{line}");
                } else if !quiet || r.is_err() {
                    eprintln!("{line}");
                }
                tokio::time::sleep(wait).await;
            }
        });
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { while set.join_next().await.is_some() {} } => {}
    }
    // Tasks are dropped between or inside runs: what is recorded is safe (see the
    // fetcher's guarantee), nothing half-done is recorded.
    Ok(ExitCode::SUCCESS)
}

async fn configure(args: &FetchArgs, address: &str) -> anyhow::Result<ExitCode> {
    use correio_client::discover::{Discovery, discover};
    let opts = Discovery {
        dns_server: args
            .dns_server
            .as_deref()
            .map(|s| s.parse())
            .transpose()
            .context("--dns-server must be IP:PORT")?,
        autoconfig_base: args.autoconfig_url.clone(),
        ispdb_base: args.ispdb_url.clone(),
        timeout: Duration::from_secs(10),
    };
    let found = discover(address, &opts).await?;
    let mut out = std::io::stderr();
    writeln!(out, "Found for {address}:")?;
    for line in &found.notes {
        writeln!(out, "  {line}")?;
    }
    let s = &found.settings;
    writeln!(
        out,
        "  server {}:{} ({}), user {}",
        s.host.as_deref().unwrap_or("?"),
        s.port.unwrap_or(0),
        s.tls.as_deref().unwrap_or("?"),
        s.user.as_deref().unwrap_or("?")
    )?;
    // Confirm with a live CAPA (certificate verified as configured).
    let mut merged = args.overrides().merged(s);
    merged.host = s.host.clone();
    merged.port = s.port;
    merged.tls = s.tls.clone();
    merged.user = args.user.clone().or(s.user.clone());
    let acct = resolve(address, &merged).map_err(anyhow::Error::msg)?;
    let (client, caps) = correio_client::fetch::connect(&acct)
        .await
        .with_context(|| format!("confirming {}:{}", acct.host, acct.port))?;
    drop(client);
    writeln!(
        out,
        "  confirmed: server answered CAPA{}{}",
        if caps.uidl { ", UIDL" } else { "" },
        if caps.pipelining { ", PIPELINING" } else { "" }
    )?;
    let path = args.config.clone().unwrap_or_else(default_config);
    let name = address.to_owned();
    let mut file = if path.exists() {
        ConfigFile::load(&path).map_err(anyhow::Error::msg)?
    } else {
        ConfigFile::default()
    };
    if file.account.contains_key(&name) {
        bail!("{} already has an account {name:?}", path.display());
    }
    let mut entry = AccountConfig {
        host: Some(acct.host.clone()),
        port: Some(acct.port),
        user: Some(acct.user.clone()),
        tls: s.tls.clone(),
        ..Default::default()
    };
    if let Some(to) = &args.to {
        entry.to = Some(to.clone());
    }
    if let Some(pc) = &args.password_command {
        entry.password_command = Some(pc.clone());
    }
    if let Some(fp) = &args.fingerprint {
        entry.fingerprint = Some(fp.clone());
    }
    if let Some(ca) = &args.ca {
        entry.ca = Some(ca.clone());
    }
    file.account.insert(name.clone(), entry);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = toml::to_string_pretty(&file).context("writing the config")?;
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    writeln!(
        out,
        "Wrote account {name:?} to {}. State files go to {}.",
        path.display(),
        default_state_dir().display()
    )?;
    Ok(ExitCode::SUCCESS)
}
