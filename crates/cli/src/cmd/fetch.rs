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
use correio_client::fetch::state::UidState;
use correio_client::fetch::{
    Account, ErrorClass, FetchError, Progress, Silent, Summary, fetch_account,
};
use correio_client::oauth::{OAuthError, OAuthSettings, Provider};

/// Arguments of `correio fetch` (boxed: they are many, and the subcommand enum should
/// stay small).
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    #[command(flatten)]
    flags: Box<FetchArgs>,
}

const AFTER_HELP: &str = "\
Exit status: 0 new messages stored (--check: new messages waiting); 1 nothing new;
2 usage error; 3 network (connect, TLS or certificate, timeout or deadline, connection
lost); 4 authentication; 5 protocol (the server broke it or sent values out of bounds);
6 destination (writing the target or the state file); 7 configuration. With several
accounts, the first failed account's status.

State: one file per account and destination in --state-dir
(USER@HOST_PORT.TAG.state); a new destination gets every message.

A refused server certificate is reported with its SHA-256 fingerprint and the
--fingerprint option that pins it. A self-signed certificate given with --ca is
trusted as itself (its name and dates are still checked).";

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
    /// Read timeout: the most a single read may wait (e.g. 30s; default 60s).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Response deadline: the most time one server response may take, a whole
    /// message included, however the bytes trickle in (default 10m; "none" for no limit).
    #[arg(long, value_name = "DURATION")]
    pub response_timeout: Option<String>,
    /// Session deadline: the most time one session may take, from connecting to QUIT;
    /// what was stored is kept (default 1h; "none" for no limit).
    #[arg(long, value_name = "DURATION")]
    pub session_timeout: Option<String>,
    /// Do not pipeline even if the server offers it.
    #[arg(long)]
    pub no_pipelining: bool,
    /// Allow sending a password without TLS to a host that is not loopback.
    #[arg(long)]
    pub allow_cleartext: bool,
    /// Fetch every message again, including those the state file records as already
    /// stored (what is fetched is recorded as usual).
    #[arg(long)]
    pub all: bool,
    /// Check only: print the number and size of new messages; download and delete
    /// nothing. Exit status 0 if there are new messages, 1 if none.
    #[arg(long, conflicts_with_all = ["all", "every", "show_state", "forget_state"])]
    pub check: bool,
    /// Print each selected account's state (state file, destination, messages recorded
    /// as stored) and exit; no connection is made.
    #[arg(long, conflicts_with_all = ["forget_state", "every"])]
    pub show_state: bool,
    /// Forget each selected account's state for its destination (the next run fetches
    /// every message again) and exit; no connection is made.
    #[arg(long, conflicts_with = "every")]
    pub forget_state: bool,
    /// Trace the protocol on standard error (passwords, AUTH payloads and OAuth2
    /// tokens masked; message bodies never shown).
    #[arg(long, short)]
    pub verbose: bool,
    /// Also append summary and error lines, with a UTC timestamp, to FILE.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Also send summary and error lines to syslog (facility mail).
    #[arg(long)]
    pub syslog: bool,
    /// The syslog socket (tests).
    #[arg(long, value_name = "PATH", hide = true, default_value = "/dev/log")]
    pub syslog_socket: PathBuf,
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
            response_timeout: self.response_timeout.clone(),
            session_timeout: self.session_timeout.clone(),
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

/// Exit statuses of `correio fetch` (documented in README.md and `--help`).
pub mod exit {
    /// New messages were stored (`--check`: new messages are waiting).
    pub const OK: u8 = 0;
    /// Nothing new (every account succeeded; none had a new message).
    pub const NOTHING_NEW: u8 = 1;
    /// A network failure: connecting, TLS or certificate, a timeout or deadline, a
    /// connection that broke.
    pub const NETWORK: u8 = 3;
    /// The server refused the login (or asked to wait before the next one).
    pub const AUTHENTICATION: u8 = 4;
    /// The server broke the protocol or sent values out of bounds.
    pub const PROTOCOL: u8 = 5;
    /// Writing the destination or the state file failed.
    pub const DESTINATION: u8 = 6;
    /// The configuration cannot work (bad account settings, no password, another
    /// fetch holds the account).
    pub const CONFIG: u8 = 7;
}

fn class_code(c: ErrorClass) -> u8 {
    match c {
        ErrorClass::Network => exit::NETWORK,
        ErrorClass::Authentication => exit::AUTHENTICATION,
        ErrorClass::Protocol => exit::PROTOCOL,
        ErrorClass::Destination => exit::DESTINATION,
        ErrorClass::Config => exit::CONFIG,
    }
}

/// Runs `correio fetch`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let args = *args.flags;
    let log = match Log::open(&args) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("correio fetch: {e:#}");
            return Ok(ExitCode::from(exit::CONFIG));
        }
    };
    match run_inner(&args, &log) {
        Ok(code) => Ok(code),
        Err(e) => {
            log.line(&format!("correio fetch: {e:#}"), true, true);
            Ok(ExitCode::from(exit::CONFIG))
        }
    }
}

fn run_inner(args: &FetchArgs, log: &Log) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if let Some(address) = &args.configure {
        return rt.block_on(configure(args, address));
    }
    let mut accts = accounts(args)?;
    if args.authorize {
        return rt.block_on(authorize(&accts));
    }
    for a in &mut accts {
        if let Some(n) = args.batch_messages {
            a.batch_messages = n.max(1);
        }
        a.fetch_all = args.all;
        a.check_only = args.check;
        a.trace = args.verbose;
    }
    if args.show_state || args.forget_state {
        return state_command(args, &accts);
    }
    passwords(&mut accts)?;
    let progress: Arc<dyn Progress> = if args.quiet || args.json || args.check {
        Arc::new(Silent)
    } else if std::io::stderr().is_terminal() && !args.verbose && args.every.is_none() {
        Arc::new(Bars::new())
    } else {
        Arc::new(Lines {
            timestamps: args.every.is_some(),
        })
    };
    match &args.every {
        None => rt.block_on(once(args, log, accts, progress)),
        Some(every) => {
            let every = correio_client::parse_duration(every)
                .map_err(|e| anyhow::anyhow!("--every {e}"))?;
            if every < Duration::from_secs(1) {
                bail!("--every must be at least 1s");
            }
            rt.block_on(daemon(args, log, accts, progress, every))
        }
    }
}

/// `--show-state` and `--forget-state`.
fn state_command(args: &FetchArgs, accts: &[Account]) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout();
    for a in accts {
        if args.forget_state {
            let n =
                UidState::forget(&a.state_file).with_context(|| format!("account {}", a.name))?;
            writeln!(
                out,
                "{}: forgot {n} messages recorded for {} ({}); the next run fetches every message again",
                a.name,
                a.target,
                a.state_file.display()
            )?;
            continue;
        }
        let exists = a.state_file.exists();
        let state = UidState::load(&a.state_file).with_context(|| format!("account {}", a.name))?;
        if args.json {
            writeln!(
                out,
                "{}",
                serde_json::json!({
                    "account": a.name,
                    "destination": a.target.to_string(),
                    "state_file": a.state_file,
                    "messages": state.seen,
                })
            )?;
            continue;
        }
        writeln!(
            out,
            "{}: {} messages recorded as stored in {} (state file {}{})",
            a.name,
            state.seen.len(),
            a.target,
            a.state_file.display(),
            if exists { "" } else { ", not created yet" }
        )?;
        for (key, first) in &state.seen {
            let when = time::OffsetDateTime::from_unix_timestamp(*first as i64)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| first.to_string());
            writeln!(out, "  {key}  first stored {when}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where summary and error lines go: standard error, and with `--log FILE` or
/// `--syslog` there too. Lines in the file (and on standard error with `--every`)
/// start with a UTC timestamp.
struct Log {
    file: Option<std::sync::Mutex<std::fs::File>>,
    syslog: Option<(std::os::unix::net::UnixDatagram, PathBuf)>,
    stamp_stderr: bool,
}

fn now_stamp() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

impl Log {
    fn open(args: &FetchArgs) -> anyhow::Result<Log> {
        let file = match &args.log {
            Some(p) => Some(std::sync::Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("cannot open the log file {}", p.display()))?,
            )),
            None => None,
        };
        let syslog = if args.syslog {
            let sock = std::os::unix::net::UnixDatagram::unbound()
                .context("creating the syslog socket")?;
            Some((sock, args.syslog_socket.clone()))
        } else {
            None
        };
        Ok(Log {
            file,
            syslog,
            stamp_stderr: args.every.is_some(),
        })
    }

    /// Writes one line; `to_stderr` false when a progress display showed it already.
    fn line(&self, text: &str, error: bool, to_stderr: bool) {
        let stamp = now_stamp();
        if to_stderr {
            let _ = if self.stamp_stderr {
                writeln!(std::io::stderr(), "{stamp} {text}")
            } else {
                writeln!(std::io::stderr(), "{text}")
            };
        }
        if let Some(f) = &self.file
            && let Ok(mut f) = f.lock()
        {
            let _ = writeln!(f, "{stamp} {text}");
        }
        if let Some((sock, path)) = &self.syslog {
            // RFC 3164: facility mail (2), severity err (3) or info (6).
            let pri = 2 * 8 + if error { 3 } else { 6 };
            let ts = time::OffsetDateTime::now_utc()
                .format(time::macros::format_description!(
                    "[month repr:short] [day padding:space] [hour]:[minute]:[second]"
                ))
                .unwrap_or_default();
            let msg = format!("<{pri}>{ts} correio-fetch[{}]: {text}", std::process::id());
            let _ = sock.send_to(msg.as_bytes(), path);
        }
    }
}

/// A failed account's run, as reported.
#[derive(Debug)]
struct Failed {
    class: ErrorClass,
    /// The error naming what it concerns ([`FetchError::describe`]).
    text: String,
}

impl Failed {
    fn new(e: &FetchError, acct: &Account) -> Failed {
        Failed {
            class: e.class(),
            text: e.describe(acct),
        }
    }
}

type Outcome = (String, Result<Summary, Failed>);

async fn run_all(accts: &[Account], progress: &Arc<dyn Progress>) -> Vec<Outcome> {
    let mut set = tokio::task::JoinSet::new();
    for (i, a) in accts.iter().enumerate() {
        let a = a.clone();
        let p = progress.clone();
        set.spawn(async move {
            let r = fetch_account(&a, &correio_client::sasl::factory, p.as_ref())
                .await
                .map_err(|e| Failed::new(&e, &a));
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
                Err(Failed {
                    class: ErrorClass::Config,
                    text: e.to_string(),
                }),
            )),
        }
    }
    results.sort_by_key(|r| r.0);
    results.into_iter().map(|(_, n, r)| (n, r)).collect()
}

fn json_result(name: &str, r: &Result<Summary, Failed>) -> serde_json::Value {
    match r {
        Ok(s) => serde_json::json!({"ok": true, "summary": s}),
        Err(e) => serde_json::json!({
            "ok": false,
            "account": name,
            "error": e.text,
            "class": e.class,
        }),
    }
}

/// The summary line of one account's run.
fn summary_line(name: &str, s: &Summary) -> String {
    if s.check_only {
        return format!(
            "{name}: {} new messages ({} octets), {} on server",
            s.new_messages, s.new_bytes, s.on_server
        );
    }
    let mut line = format!(
        "{name}: {} fetched ({} octets), {} deleted, {} on server",
        s.fetched, s.fetched_bytes, s.deleted, s.on_server
    );
    if s.skipped_oversize > 0 {
        line += &format!(", {} over the size limit skipped", s.skipped_oversize);
    }
    line
}

fn report(args: &FetchArgs, log: &Log, progress: &dyn Progress, results: &[Outcome]) {
    if args.json {
        let items: Vec<serde_json::Value> =
            results.iter().map(|(n, r)| json_result(n, r)).collect();
        let _ = writeln!(
            std::io::stdout(),
            "{}",
            serde_json::json!({ "accounts": items })
        );
    }
    for (name, r) in results {
        match r {
            Ok(s) if !args.quiet && (!args.json || args.log.is_some() || args.syslog) => {
                let line = summary_line(name, s);
                let shown = !args.json && progress.done(name, &line);
                log.line(&line, false, !shown && !args.json);
            }
            Ok(_) => {}
            Err(e) => {
                let line = format!("correio fetch: {name}: {}", e.text);
                let shown = progress.done(name, &line);
                log.line(&line, true, !shown);
            }
        }
    }
}

/// The exit status of a run: the first failed account's class, else whether anything
/// new was stored (or, with `--check`, is waiting).
fn exit_status(results: &[Outcome]) -> u8 {
    if let Some(e) = results.iter().find_map(|(_, r)| r.as_ref().err()) {
        return class_code(e.class);
    }
    let new = results.iter().any(|(_, r)| {
        r.as_ref().is_ok_and(|s| {
            if s.check_only {
                s.new_messages > 0
            } else {
                s.fetched > 0
            }
        })
    });
    if new { exit::OK } else { exit::NOTHING_NEW }
}

async fn once(
    args: &FetchArgs,
    log: &Log,
    accts: Vec<Account>,
    progress: Arc<dyn Progress>,
) -> anyhow::Result<ExitCode> {
    let results = run_all(&accts, &progress).await;
    report(args, log, progress.as_ref(), &results);
    Ok(ExitCode::from(exit_status(&results)))
}

/// Fetches every account on its own schedule: `every`, or longer when the server's
/// LOGIN-DELAY asks for it, doubling the wait after each failure (up to six hours).
/// Stops on Ctrl-C (SIGINT) or SIGTERM.
async fn daemon(
    args: &FetchArgs,
    log: &Log,
    accts: Vec<Account>,
    progress: Arc<dyn Progress>,
    every: Duration,
) -> anyhow::Result<ExitCode> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, bool)>();
    let mut set = tokio::task::JoinSet::new();
    for a in accts {
        let p = progress.clone();
        let json = args.json;
        let quiet = args.quiet;
        let tx = tx.clone();
        set.spawn(async move {
            let mut failures: u32 = 0;
            loop {
                let r = fetch_account(&a, &correio_client::sasl::factory, p.as_ref()).await;
                // Only a new authorisation helps: stop this account (the message names
                // the command), and keep the others running.
                if let Err(FetchError::OAuth(
                    e @ (OAuthError::Reauthorize { .. } | OAuthError::NotAuthorized { .. }),
                )) = &r
                {
                    let line = if json {
                        serde_json::json!({"ok": false, "account": a.name, "error": e.to_string(), "stopped": true})
                            .to_string()
                    } else {
                        format!("{}: stopped: {e}", a.name)
                    };
                    let _ = tx.send((line, true));
                    return;
                }
                let login_delay = matches!(r, Err(FetchError::LoginDelay(_)));
                let r = r.map_err(|e| Failed::new(&e, &a));
                let wait = match &r {
                    Ok(s) => {
                        failures = 0;
                        let delay = Duration::from_secs(s.login_delay.unwrap_or(0).into());
                        every.max(delay)
                    }
                    Err(_) if login_delay => {
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
                    _ if json => json_result(&a.name, &r).to_string(),
                    Ok(s) => format!(
                        "{}; next in {}",
                        summary_line(&a.name, s),
                        correio_client::format_duration(wait)
                    ),
                    Err(e) => format!(
                        "{}: {}; retrying in {}",
                        a.name,
                        e.text,
                        correio_client::format_duration(wait)
                    ),
                };
                if json || !quiet || r.is_err() {
                    let _ = tx.send((line, r.is_err()));
                }
                tokio::time::sleep(wait).await;
            }
        });
    }
    drop(tx);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let signal = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break "SIGINT",
            _ = term.recv() => break "SIGTERM",
            line = rx.recv() => match line {
                Some((line, _)) if args.json => println!("{line}"),
                Some((line, error)) => log.line(&line, error, true),
                None => break "",
            },
        }
    };
    // Tasks are dropped between or inside runs: what is recorded is safe (see the
    // fetcher's guarantee), nothing half-done is recorded.
    set.abort_all();
    if signal.is_empty() {
        // Every account stopped for want of an OAuth2 authorisation.
        return Ok(ExitCode::from(exit::AUTHENTICATION));
    }
    if !args.quiet {
        log.line(&format!("correio fetch: stopping on {signal}"), false, true);
    }
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
    // Atomically and durably; an existing file keeps its mode and (best effort) owner.
    correio_fsutil::AtomicWrite::new()
        .keep_owner_and_mode()
        .write(&path, text.as_bytes())
        .map_err(std::io::Error::from)?;
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
