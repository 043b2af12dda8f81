//! `correio convert SOURCE DEST`: copies mail between a Maildir, an mbox file and a
//! folder of `.eml` files, or from a POP3 server into one of them. The work is done by
//! `correio_store::convert` (the formats, flags, dates, UIDLs and resuming are
//! described there) and, for a POP3 source, by `correio_client::fetch`; this file
//! parses the arguments, gets a POP3 password and prints the summary.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use correio_client::fetch::config::{AccountConfig, resolve};
use correio_client::fetch::{Silent, fetch_account};
use correio_store::convert::{self, Mailbox, Options, Report};

/// Arguments of `correio convert`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Messages are copied byte for byte, in order, with their flags (Maildir `:2,` letters \
and cur/ <-> mbox `Status:`/`X-Status:`), dates (file mtime <-> mbox From_ line) and, \
into a Maildir, their POP3 UIDLs. mbox files are written as mboxrd; mboxrd, mboxo, \
mboxcl2 and (with --mboxcl) mboxcl are read. An interrupted run, started again with the \
same SOURCE and DEST, copies the rest: never a message twice, never one lost (the \
state is in DEST: .correio-convert-state, or .NAME.correio-convert-state next to an \
mbox NAME). A message without a final line end, one with its own Status: field, or \
flags an mbox has no field for, get an `X-Correio-Convert:` field in an mbox, so that \
converting back gives the same bytes.")]
pub struct Args {
    /// Where to copy from: maildir:DIR, mbox:FILE, eml:DIR, an existing path (a
    /// directory with cur/ new/ tmp/ is a Maildir, one with *.eml files an EML folder,
    /// a file an mbox), or pop3://USER@HOST[:PORT] (STARTTLS) or
    /// pops://USER@HOST[:PORT] / pop3s://USER@HOST[:PORT] (TLS), which fetches the
    /// messages like `correio fetch` and leaves them on the server.
    #[arg(value_name = "SOURCE")]
    source: String,
    /// Where to copy to: maildir:DIR, mbox:FILE or eml:DIR (created if missing), or an
    /// existing path as for SOURCE.
    #[arg(value_name = "DEST")]
    dest: String,
    /// Read Content-Length bodies of an mbox SOURCE as mboxcl (`>From ` quoted, as mutt
    /// writes them) instead of mboxcl2 (verbatim).
    #[arg(long)]
    mboxcl: bool,
    /// Print a JSON summary on standard output.
    #[arg(long)]
    json: bool,
    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
    /// POP3 source: implicit, starttls or none [default: from the URL scheme].
    #[arg(long, value_name = "MODE", help_heading = "POP3 source")]
    tls: Option<String>,
    /// POP3 source: login method, as for `correio fetch --auth` [default: auto].
    #[arg(long, value_name = "METHOD", help_heading = "POP3 source")]
    auth: Option<String>,
    /// POP3 source: command printing the password on its first line [default: ask on
    /// the terminal].
    #[arg(long, value_name = "CMD", help_heading = "POP3 source")]
    password_command: Option<String>,
    /// POP3 source: trust this CA certificate file (PEM) too.
    #[arg(long, value_name = "FILE", help_heading = "POP3 source")]
    ca: Option<String>,
    /// POP3 source: pin the server certificate by its SHA-256 fingerprint.
    #[arg(long, value_name = "SHA256", help_heading = "POP3 source")]
    fingerprint: Option<String>,
    /// POP3 source: allow a password without TLS to a host that is not loopback.
    #[arg(long, help_heading = "POP3 source")]
    allow_cleartext: bool,
    /// POP3 source: read timeout (e.g. 30s) [default: 60s].
    #[arg(long, value_name = "DURATION", help_heading = "POP3 source")]
    timeout: Option<String>,
    /// Messages per batch (one state record and fsync round per batch).
    #[arg(long, value_name = "N", hide = true)]
    batch_messages: Option<usize>,
}

/// Runs `correio convert`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    for scheme in ["pop3://", "pop3s://", "pops://"] {
        if let Some(rest) = args.source.strip_prefix(scheme) {
            return pop3(&args, scheme != "pop3://", rest);
        }
    }
    let from = Mailbox::parse(&args.source).context("SOURCE")?;
    let to = Mailbox::parse(&args.dest).context("DEST")?;
    let mut opts = Options::default().mboxcl(args.mboxcl);
    if let Some(n) = args.batch_messages {
        opts = opts.batch_messages(n);
    }
    let live = !args.quiet && !args.json && std::io::stderr().is_terminal();
    let mut progress = |r: &Report| {
        if live {
            eprint!(
                "\r{} of {} copied",
                r.copied + r.already_done,
                r.source_messages
            );
        }
    };
    let result = convert::convert(&from, &to, &opts, &mut progress);
    if live {
        eprintln!();
    }
    let r = result.with_context(|| format!("converting {from} to {to}"))?;
    if args.json {
        let v = serde_json::json!({
            "ok": true,
            "source": from.to_string(),
            "dest": to.to_string(),
            "source_messages": r.source_messages,
            "copied": r.copied,
            "copied_bytes": r.copied_bytes,
            "already_done": r.already_done,
            "vanished": r.vanished,
            "recovered": r.recovered,
            "uidls_kept": r.uidls_kept,
            "uidls_not_kept": r.uidls_not_kept,
            "warnings": r.warnings,
        });
        writeln!(std::io::stdout(), "{v}")?;
    } else if !args.quiet {
        let mut line = format!(
            "{from} → {to}: {} copied ({} octets)",
            r.copied, r.copied_bytes
        );
        if r.already_done > 0 {
            line += &format!(", {} copied by an earlier run", r.already_done);
        }
        if r.vanished > 0 {
            line += &format!(", {} removed from the source meanwhile", r.vanished);
        }
        if r.recovered > 0 {
            line += &format!("; finished {} step(s) of an interrupted run", r.recovered);
        }
        if r.uidls_kept > 0 {
            line += &format!("; {} UIDLs kept", r.uidls_kept);
        }
        let mut err = std::io::stderr();
        writeln!(err, "{line}")?;
        for w in &r.warnings {
            writeln!(err, "note: {w}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Decodes `%XX` in the user part of a URL.
fn percent_decode(s: &str) -> anyhow::Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .with_context(|| format!("bad %-escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).with_context(|| format!("{s:?} is not UTF-8 once decoded"))
}

/// `USER@HOST[:PORT]` (the last `@` separates; `[v6]` hosts allowed).
fn parse_authority(rest: &str) -> anyhow::Result<(String, String, Option<u16>)> {
    let rest = rest.trim_end_matches('/');
    let Some((user, hostport)) = rest.rsplit_once('@') else {
        bail!("the POP3 URL needs a user: pop3s://USER@HOST[:PORT]");
    };
    if user.is_empty() || hostport.is_empty() {
        bail!("the POP3 URL needs a user and a host: pop3s://USER@HOST[:PORT]");
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .context("unclosed [ in the POP3 URL's host")?;
        match after.strip_prefix(':') {
            Some(p) => (h.to_owned(), Some(p)),
            None if after.is_empty() => (h.to_owned(), None),
            None => bail!("unexpected {after:?} after the host"),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (hostport.to_owned(), None),
        }
    };
    let port = port
        .map(|p| p.parse::<u16>().with_context(|| format!("bad port {p:?}")))
        .transpose()?;
    Ok((percent_decode(user)?, host, port))
}

/// A POP3 source: `correio fetch` (keep mode) into DEST, with its state file in DEST.
fn pop3(args: &Args, implicit: bool, rest: &str) -> anyhow::Result<ExitCode> {
    let (user, host, port) = parse_authority(rest)?;
    let to = Mailbox::parse(&args.dest).context("DEST")?;
    let tls = args
        .tls
        .clone()
        .unwrap_or_else(|| if implicit { "implicit" } else { "starttls" }.into());
    let cfg = AccountConfig {
        host: Some(host.clone()),
        port,
        user: Some(user.clone()),
        tls: Some(tls),
        auth: args.auth.clone(),
        password_command: args.password_command.clone(),
        fingerprint: args.fingerprint.clone(),
        ca: args.ca.clone(),
        keep: Some(true),
        to: Some(to.to_string()),
        timeout: args.timeout.clone(),
        allow_cleartext: args.allow_cleartext.then_some(true),
        ..AccountConfig::default()
    };
    let name = format!("{user}@{host}");
    let mut acct = resolve(&name, &cfg).map_err(anyhow::Error::msg)?;
    // The fetch state lives with DEST, like convert's own: another DEST starts afresh.
    let safe: String = format!("{user}@{host}_{}", acct.port)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut state = to.state_path().into_os_string();
    state.push(format!("-pop3-{safe}"));
    acct.state_file = state.into();
    if let Some(n) = args.batch_messages {
        acct.batch_messages = n.max(1);
    }
    let secret = match &acct.password_command {
        Some(cmd) => {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stderr(std::process::Stdio::inherit())
                .output()
                .context("running --password-command")?;
            if !out.status.success() {
                bail!("--password-command failed ({})", out.status);
            }
            let first = out.stdout.split(|&b| b == b'\n').next().unwrap_or_default();
            first.strip_suffix(b"\r").unwrap_or(first).to_vec()
        }
        None if std::io::stdin().is_terminal() => {
            rpassword::prompt_password(format!("Password for {user}@{host}: "))
                .context("reading the password")?
                .into_bytes()
        }
        None => bail!("no --password-command, and standard input is not a terminal to ask on"),
    };
    acct.password = Some(secret);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let s = rt
        .block_on(fetch_account(
            &acct,
            &correio_client::sasl::factory,
            &Silent,
        ))
        .with_context(|| format!("fetching {name} into {to}"))?;
    if args.json {
        let v = serde_json::json!({"ok": true, "source": args.source, "dest": to.to_string(), "fetch": s});
        writeln!(std::io::stdout(), "{v}")?;
    } else if !args.quiet {
        let mut err = std::io::stderr();
        writeln!(
            err,
            "{} → {to}: {} copied ({} octets), {} on the server",
            args.source, s.fetched, s.fetched_bytes, s.on_server
        )?;
        for w in &s.warnings {
            writeln!(err, "note: {w}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(
            parse_authority("me%40example.org@pop.example.org:1995/").unwrap(),
            (
                "me@example.org".into(),
                "pop.example.org".into(),
                Some(1995)
            )
        );
        assert_eq!(
            parse_authority("a@b@[::1]").unwrap(),
            ("a@b".into(), "::1".into(), None)
        );
        assert!(parse_authority("pop.example.org").is_err());
        assert!(parse_authority("u@h:x").is_err());
    }
}
