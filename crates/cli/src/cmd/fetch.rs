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
use correio_client::oauth::{OAuthError, OAuthSettings, Provider};

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
    /// Where to store: maildir:DIR, mbox:FILE, eml:DIR, mda:CMD,
    /// lmtp:HOST:PORT:RECIPIENT, imaps://USER@HOST[:PORT]/FOLDER (IMAP APPEND;
    /// imap://… with STARTTLS), or smtp://HOST[:PORT] / smtps://HOST[:PORT] (relay to
    /// --to-recipient).
    #[arg(long, value_name = "TARGET")]
    pub to: Option<String>,
    /// IMAP/SMTP destination: command printing its password on its first line.
    #[arg(long, value_name = "CMD")]
    pub to_password_command: Option<String>,
    /// IMAP/SMTP destination login: auto (AUTHENTICATE PLAIN, else LOGIN), plain,
    /// login, xoauth2 or oauthbearer (these two use this account's OAuth2 tokens).
    #[arg(long, value_name = "METHOD")]
    pub to_auth: Option<String>,
    /// SMTP destination: the envelope recipient.
    #[arg(long, value_name = "ADDRESS")]
    pub to_recipient: Option<String>,
    /// IMAP destination: store messages as read (\Seen).
    #[arg(long)]
    pub to_seen: bool,
    /// IMAP destination: allow imap:// without STARTTLS (the password crosses the
    /// network in cleartext).
    #[arg(long)]
    pub to_insecure: bool,
    /// IMAP/SMTP destination: trust this CA certificate file (PEM) too.
    #[arg(long, value_name = "FILE")]
    pub to_ca: Option<String>,
    /// IMAP/SMTP destination: pin its certificate by SHA-256 fingerprint.
    #[arg(long, value_name = "SHA256")]
    pub to_fingerprint: Option<String>,
    /// SMTP destination: what a permanent (5xx) refusal does with the message: keep
    /// (default: it stays on the POP3 server and is reported) or delete.
    #[arg(long, value_name = "ACTION")]
    pub to_rejected: Option<String>,
    /// (Re)authorise the selected OAuth2 accounts: runs the account's flow (browser,
    /// device or client-credentials) and stores new tokens; fetches nothing.
    #[arg(long)]
    pub authorize: bool,
    /// OAuth2 provider: google, microsoft or custom (then give the endpoints).
    /// Makes the account an OAuth2 one (with --configure, or a one-off account).
    #[arg(long, value_name = "NAME")]
    pub oauth2_provider: Option<String>,
    /// OAuth2 client ID of the application you registered (see README).
    #[arg(long, value_name = "ID")]
    pub oauth2_client_id: Option<String>,
    /// OAuth2 client secret, when the provider issued one.
    #[arg(long, value_name = "SECRET")]
    pub oauth2_client_secret: Option<String>,
    /// Microsoft tenant: common (default), consumers, organizations or a tenant ID.
    #[arg(long, value_name = "TENANT")]
    pub oauth2_tenant: Option<String>,
    /// How to authorise: browser (PKCE with a loopback redirect; default), device
    /// (a code to enter on another machine; Microsoft) or client-credentials
    /// (unattended Microsoft 365 application access).
    #[arg(long, value_name = "FLOW")]
    pub oauth2_flow: Option<String>,
    /// Override the OAuth2 authorization endpoint.
    #[arg(long, value_name = "URL")]
    pub oauth2_authorization_url: Option<String>,
    /// Override the OAuth2 token endpoint.
    #[arg(long, value_name = "URL")]
    pub oauth2_token_url: Option<String>,
    /// Override the OAuth2 device authorization endpoint.
    #[arg(long, value_name = "URL")]
    pub oauth2_device_url: Option<String>,
    /// Override the OAuth2 scopes (repeatable).
    #[arg(long, value_name = "SCOPE")]
    pub oauth2_scope: Vec<String>,
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
    /// Discover the settings for ADDRESS (DNS SRV, then autoconfig, then MX for
    /// Microsoft 365 / Google Workspace), confirm them with the server, and add the
    /// account to the config file. Gmail, Outlook.com and Microsoft 365 accounts are
    /// set up for OAuth2 (give --oauth2-client-id) and authorised at once.
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
            // Laid over the file's table key by key, in `with_oauth_flags`.
            oauth2: None,
            to_password_command: self.to_password_command.clone(),
            to_auth: self.to_auth.clone(),
            to_recipient: self.to_recipient.clone(),
            to_seen: self.to_seen.then_some(true),
            to_insecure: self.to_insecure.then_some(true),
            to_ca: self.to_ca.clone(),
            to_fingerprint: self.to_fingerprint.clone(),
            to_rejected: self.to_rejected.clone(),
        }
    }

    /// The OAuth2 settings the flags give, if any flag was given.
    fn oauth_flags(&self) -> Option<OAuthSettings> {
        let o = OAuthSettings {
            provider: self.oauth2_provider.clone(),
            client_id: self.oauth2_client_id.clone(),
            client_secret: self.oauth2_client_secret.clone(),
            client_secret_command: None,
            tenant: self.oauth2_tenant.clone(),
            flow: self.oauth2_flow.clone(),
            authorization_url: self.oauth2_authorization_url.clone(),
            token_url: self.oauth2_token_url.clone(),
            device_url: self.oauth2_device_url.clone(),
            scopes: (!self.oauth2_scope.is_empty()).then(|| self.oauth2_scope.clone()),
        };
        (o != OAuthSettings::default()).then_some(o)
    }

    /// `c` with the OAuth2 flags laid over its `oauth2` table.
    fn with_oauth_flags(&self, mut c: AccountConfig) -> AccountConfig {
        if let Some(f) = self.oauth_flags() {
            let base = c.oauth2.take().unwrap_or_default();
            c.oauth2 = Some(OAuthSettings {
                provider: f.provider.or(base.provider),
                client_id: f.client_id.or(base.client_id),
                client_secret: f.client_secret.or(base.client_secret),
                client_secret_command: base.client_secret_command,
                tenant: f.tenant.or(base.tenant),
                flow: f.flow.or(base.flow),
                authorization_url: f.authorization_url.or(base.authorization_url),
                token_url: f.token_url.or(base.token_url),
                device_url: f.device_url.or(base.device_url),
                scopes: f.scopes.or(base.scopes),
            });
        }
        c
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
                let merged = args.with_oauth_flags(flags.merged(&acct.merged(&file.defaults)));
                let mut a = resolve(name, &merged).map_err(anyhow::Error::msg)?;
                if let Some(o) = a.oauth.as_mut() {
                    o.reauthorize_command = format!(
                        "correio fetch --authorize --config {} --account {name}",
                        path.display()
                    );
                }
                out.push(a);
            }
        }
        Some(path) => {
            // --host with --config: a one-off account using the file's defaults.
            let file = ConfigFile::load(&path).map_err(anyhow::Error::msg)?;
            let merged = args.with_oauth_flags(flags.merged(&file.defaults));
            out.push(one_off(args, &merged)?);
        }
        None => {
            if args.host.is_none() {
                bail!(
                    "nothing to fetch: give --host and --user, or --config FILE (default {}), or --configure ADDRESS",
                    default_config().display()
                );
            }
            out.push(one_off(args, &args.with_oauth_flags(flags))?);
        }
    }
    Ok(out)
}

/// A one-off account from flags; its re-authorisation command repeats them.
fn one_off(args: &FetchArgs, merged: &AccountConfig) -> anyhow::Result<Account> {
    let mut a = resolve(&one_off_name(args), merged).map_err(anyhow::Error::msg)?;
    if let Some(o) = a.oauth.as_mut() {
        o.reauthorize_command = "correio fetch --authorize with the same --host, --user, --state-dir and --oauth2-* flags".into();
    }
    Ok(a)
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
        if a.oauth.is_some() {
            // The OAuth2 access token, taken (and refreshed) by the fetcher per run.
            continue;
        }
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
    if args.authorize {
        return rt.block_on(authorize(&accts));
    }
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
                // Only a new authorisation helps: stop this account (the message
                // names the command), and keep the others running.
                if let Err(FetchError::OAuth(e @ (OAuthError::Reauthorize { .. } | OAuthError::NotAuthorized { .. }))) = &r {
                    let line = format!("{}: stopped: {e}", a.name);
                    if json {
                        println!("{}", serde_json::json!({"ok": false, "account": a.name, "error": e.to_string(), "stopped": true}));
                    } else {
                        eprintln!("{line}");
                    }
                    return false;
                }
                if json {
                    println!("{line}");
                } else if !quiet || r.is_err() {
                    eprintln!("{line}");
                }
                tokio::time::sleep(wait).await;
            }
        });
    }
    let mut all_stopped = false;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { while set.join_next().await.is_some() {} } => { all_stopped = true; }
    }
    if all_stopped {
        // Every account stopped for want of an OAuth2 authorisation.
        return Ok(ExitCode::FAILURE);
    }
    // Tasks are dropped between or inside runs: what is recorded is safe (see the
    // fetcher's guarantee), nothing half-done is recorded.
    Ok(ExitCode::SUCCESS)
}

/// Prints what the user must do to authorise (a URL to open, or a code to enter).
fn show_to_user(account: &str) -> impl FnMut(&str) + Send + use<> {
    let account = account.to_owned();
    move |what: &str| {
        let text = if what.starts_with("http://") || what.starts_with("https://") {
            format!(
                "Account {account}: open this URL in a browser on this machine and allow access\n(correio waits for the redirect to 127.0.0.1):\n\n  {what}\n"
            )
        } else {
            format!("Account {account}: {what}")
        };
        let _ = writeln!(std::io::stderr(), "{text}");
    }
}

/// `--authorize`: runs each OAuth2 account's flow and stores its tokens.
async fn authorize(accts: &[Account]) -> anyhow::Result<ExitCode> {
    let mut any = false;
    for a in accts {
        let Some(o) = &a.oauth else {
            continue;
        };
        any = true;
        let mut show = show_to_user(&a.name);
        let t = correio_client::oauth::flows::authorize(o, Some(&a.user), &mut show)
            .await
            .with_context(|| format!("authorising account {}", a.name))?;
        writeln!(
            std::io::stderr(),
            "Account {}: authorised; tokens stored in {} (valid until {}, then refreshed automatically).",
            a.name,
            o.token_file.display(),
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_secs(t.expires_at)
            )
        )?;
    }
    if !any {
        bail!(
            "no OAuth2 account selected (an account needs an [account.NAME.oauth2] table or --oauth2-provider)"
        );
    }
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
    // OAuth2 when the address or the server belongs to a provider that requires it
    // (Google, Microsoft), or when asked for by --oauth2-provider.
    let detected = Provider::detect(address, s.host.as_deref());
    let mut oauth = args.oauth_flags();
    if let Some(p) = detected {
        writeln!(
            out,
            "  {} requires OAuth2: the account will log in with XOAUTH2",
            p.label()
        )?;
        let o = oauth.get_or_insert_with(OAuthSettings::default);
        o.provider.get_or_insert_with(|| p.key().to_owned());
    }
    let mut merged = args.overrides().merged(s);
    merged.oauth2 = oauth.clone();
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
    if let Some(o) = &oauth {
        entry.oauth2 = Some(o.clone());
        entry.auth = Some("xoauth2".into());
    }
    let flags = args.overrides();
    entry.to_password_command = flags.to_password_command;
    entry.to_auth = flags.to_auth;
    entry.to_recipient = flags.to_recipient;
    entry.to_seen = flags.to_seen;
    entry.to_insecure = flags.to_insecure;
    entry.to_ca = flags.to_ca;
    entry.to_fingerprint = flags.to_fingerprint;
    entry.to_rejected = flags.to_rejected;
    if args.state_dir.is_some() {
        entry.state_dir = args.state_dir.clone();
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
        args.state_dir
            .as_deref()
            .map(correio_client::fetch::target::expand_home)
            .unwrap_or_else(default_state_dir)
            .display()
    )?;
    if let Some(o) = &acct.oauth {
        let mut o = o.clone();
        o.reauthorize_command = format!(
            "correio fetch --authorize --config {} --account {name}",
            path.display()
        );
        let mut show = show_to_user(&name);
        correio_client::oauth::flows::authorize(&o, Some(&acct.user), &mut show)
            .await
            .with_context(|| {
                format!(
                    "authorising {name}; the account is saved, run `{}` to try again",
                    o.reauthorize_command
                )
            })?;
        writeln!(
            out,
            "Authorised: tokens stored in {} (mode 0600). Fetch with: correio fetch --config {} --account {name}",
            o.token_file.display(),
            path.display()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
