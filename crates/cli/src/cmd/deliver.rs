//! `correio deliver`: a local delivery agent (LDA) for Postfix's `mailbox_command`,
//! Exim's pipe transport and the like. Reads one message on standard input and stores
//! it in the user's mailbox durably before exiting.
//!
//! Exit codes are sendmail's (sysexits.h), which MTAs understand: 0 delivered;
//! 67 EX_NOUSER unknown user (bounce); 75 EX_TEMPFAIL try again later (full disk,
//! lock timeout, configuration problem); 69 EX_UNAVAILABLE / 73 EX_CANTCREAT for
//! permanent failures (message too big, permanent quota); 64 EX_USAGE bad arguments.
//!
//! It reads the same configuration as `correio serve` (`--config`, else
//! /etc/correio/correio.toml if it exists, else the `./correio-data` defaults): the
//! users file, `mail_location`, the name policy (`[auth]`) and `[delivery]` (size limit,
//! quotas), and finds the user as the LMTP listener does
//! (`correio_server::lmtp::resolve_recipient_with`). The envelope sender (`-f SENDER`,
//! as sendmail-style LDAs take it, or a leading mbox `From ` line on stdin, which
//! Postfix adds for `mailbox_command` and which is not stored) becomes the
//! `Return-Path:` header, as LMTP does, unless the message already starts with one.
//!
//! Run as root, it delivers as the mailbox's owner: the owner of an existing mailbox,
//! else the configured service user (`user =`), so the server can read what it wrote.
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use correio_server::config::{Config, Overrides, config_path};
use correio_server::lmtp::{Recipient, resolve_recipient_with};
use correio_server::ownership::ServiceAccount;
use correio_store::{DeliverOptions, MailLocation, MailboxRef};

/// sysexits.h codes.
const EX_NOUSER: u8 = 67;
const EX_TEMPFAIL: u8 = 75;

/// Arguments of `correio deliver`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The user to deliver to (a name of the users file; an address or `user+detail`
    /// also finds the user).
    #[arg(long, value_name = "NAME")]
    user: String,
    /// The server's configuration [default: /etc/correio/correio.toml if it exists].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory holding the users file and, by default, the mailboxes
    /// (overrides the configuration's `data_dir`) [default: ./correio-data].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Envelope sender: written as `Return-Path: <SENDER>` (and the mbox `From `
    /// line); default: from a leading `From ` line on stdin, else none.
    #[arg(long, short = 'f', value_name = "ADDRESS")]
    from: Option<String>,
    /// Refuse messages larger than this many octets (permanent failure) [default:
    /// `delivery.max_message_size`].
    #[arg(long, value_name = "OCTETS")]
    max_size: Option<u64>,
    /// Mailbox quota in octets (over quota: temporary failure, exit 75) [default:
    /// `delivery.quota_bytes`].
    #[arg(long, value_name = "OCTETS")]
    quota_bytes: Option<u64>,
    /// Mailbox quota in messages [default: `delivery.quota_messages`].
    #[arg(long, value_name = "COUNT")]
    quota_messages: Option<u64>,
}

/// The first line of stdin if it is an mbox `From ` line (bounded: a line longer
/// than 1000 octets is not one), and the bytes read so far.
fn split_from_line(mut input: impl Read) -> io::Result<(Option<String>, Vec<u8>)> {
    let mut head = Vec::with_capacity(1024);
    let mut byte = [0u8; 1];
    while head.len() < 1000 {
        match input.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {
                head.push(byte[0]);
                if byte[0] == b'\n' || !b"From ".starts_with(&head[..head.len().min(5)]) {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if head.starts_with(b"From ") && head.ends_with(b"\n") {
        let line = String::from_utf8_lossy(&head[5..]).into_owned();
        let sender = line.split_whitespace().next().map(str::to_string);
        return Ok((sender, Vec::new()));
    }
    Ok((None, head))
}

/// Runs `correio deliver`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        data_dir: args.data.clone(),
        ..Overrides::default()
    };
    let file = config_path(args.config.as_deref());
    let config = match Config::load(file.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            // A configuration problem is the admin's to fix: let the MTA keep the mail.
            eprintln!("correio deliver: {e}");
            return Ok(ExitCode::from(EX_TEMPFAIL));
        }
    };
    if matches!(
        config.user_backend,
        correio_users::BackendConfig::PasswdFile
    ) && let Err(e) = std::fs::metadata(&config.users_file)
    {
        // Without the users file we cannot tell who exists: let the MTA keep the mail.
        eprintln!(
            "correio deliver: cannot read the users file {}: {e}",
            config.users_file.display()
        );
        return Ok(ExitCode::from(EX_TEMPFAIL));
    }
    let users = match correio_server::Accounts::open(&config) {
        Ok(u) => u,
        Err(e) => {
            // Without the user database we cannot tell: let the MTA keep the mail.
            eprintln!("correio deliver: cannot open the user database: {e}");
            return Ok(ExitCode::from(EX_TEMPFAIL));
        }
    };
    let (location, quota) =
        match resolve_recipient_with(&users, &config.mail_location, &args.user, &config.username) {
            Recipient::Found {
                location, quota, ..
            } => (location, quota),
            Recipient::Unknown => {
                eprintln!("correio deliver: unknown user {:?}", args.user);
                return Ok(ExitCode::from(EX_NOUSER));
            }
            Recipient::Unusable(e) => {
                eprintln!("correio deliver: mailbox of {:?} unusable: {e}", args.user);
                return Ok(ExitCode::from(EX_TEMPFAIL));
            }
            Recipient::Temporary(e) => {
                eprintln!("correio deliver: user database unavailable: {e}");
                return Ok(ExitCode::from(EX_TEMPFAIL));
            }
        };
    if let MailboxRef::File(file) = &location
        && let Err(e) = become_mailbox_owner(&config, file)
    {
        eprintln!("correio deliver: {e:#}");
        return Ok(ExitCode::from(EX_TEMPFAIL));
    }
    let stdin = io::stdin().lock();
    let (sender_line, head) = match split_from_line(stdin) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("correio deliver: reading the message: {e}");
            return Ok(ExitCode::from(EX_TEMPFAIL));
        }
    };
    let sender = args.from.or(sender_line);
    let d = &config.delivery;
    let quota = quota.apply(DeliverOptions::default().quota(d.quota_bytes, d.quota_messages));
    let opts = DeliverOptions::default()
        .max_message_size(Some(args.max_size.unwrap_or(d.max_message_size)))
        .quota(
            args.quota_bytes.or(quota.quota_bytes),
            args.quota_messages.or(quota.quota_messages),
        )
        .quota_permanent(d.quota_permanent)
        .line_ends(d.line_ends)
        .envelope_sender(sender.clone());
    let (head, rest) = match with_return_path(sender.as_deref(), head, io::stdin().lock()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("correio deliver: reading the message: {e}");
            return Ok(ExitCode::from(EX_TEMPFAIL));
        }
    };
    let reader = io::Cursor::new(head).chain(rest);
    let stores = match super::store::open_stores(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("correio deliver: {e:#}");
            return Ok(ExitCode::from(EX_TEMPFAIL));
        }
    };
    match stores.deliver(&location, reader, &opts) {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!(
                "correio deliver: {} ({}, {})",
                e,
                e.enhanced_status(),
                if e.is_temporary() {
                    "temporary"
                } else {
                    "permanent"
                }
            );
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}

/// The first bytes of the message to store: `Return-Path: <sender>` when there is a
/// sender and the message does not already start with a Return-Path header, then what
/// was read so far. Reads at most a header name's worth ahead.
fn with_return_path<R: Read>(
    sender: Option<&str>,
    mut head: Vec<u8>,
    mut rest: R,
) -> io::Result<(Vec<u8>, R)> {
    let Some(sender) = sender else {
        return Ok((head, rest));
    };
    const NAME: &[u8] = b"return-path:";
    let mut byte = [0u8; 1];
    while head.len() < NAME.len() && NAME.starts_with(&head.to_ascii_lowercase()) {
        match rest.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if head.to_ascii_lowercase().starts_with(NAME) {
        return Ok((head, rest));
    }
    // Sender text comes from the MTA; keep it to one header line.
    let clean: String = sender
        .chars()
        .filter(|c| !c.is_control() && *c != '<' && *c != '>')
        .take(998)
        .collect();
    let mut out = format!("Return-Path: <{clean}>\n").into_bytes();
    out.extend_from_slice(&head);
    Ok((out, rest))
}

/// Run as root: become the mailbox's owner (an existing mailbox's, else the service
/// user's), creating missing parent directories for them first, so the server that
/// runs as that user can read and later delete what is delivered.
fn become_mailbox_owner(config: &Config, location: &MailLocation) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    if !correio_server::is_root() {
        return Ok(());
    }
    let path = location.path();
    let service = ServiceAccount::from_config(config)?;
    let (uid, gid) = match std::fs::metadata(path) {
        Ok(m) => (m.uid(), m.gid()),
        Err(_) => match &service {
            Some(s) => (s.uid, s.gid),
            // No service user configured: root's server reads root's files.
            None => return Ok(()),
        },
    };
    if uid == 0 {
        return Ok(());
    }
    let owner = ServiceAccount {
        name: uid.to_string(),
        uid,
        gid,
    };
    if let Some(parent) = path.parent() {
        correio_server::ownership::create_dir_all_owned(parent, 0o700, Some(&owner))
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    correio_server::ownership::become_user(uid, gid)
        .with_context(|| format!("becoming uid {uid} to deliver"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_line_is_split_off() {
        let (s, rest) =
            split_from_line(&b"From alice@example.org Thu Jan  1 00:00:00 1970\nSubject: x\n"[..])
                .unwrap();
        assert_eq!(s.as_deref(), Some("alice@example.org"));
        assert!(rest.is_empty());
        let (s, rest) = split_from_line(&b"Subject: x\n"[..]).unwrap();
        assert_eq!(s, None);
        assert_eq!(rest, b"S");
        let (s, rest) = split_from_line(&b"Fro"[..]).unwrap();
        assert_eq!(s, None);
        assert_eq!(rest, b"Fro");
        let (s, rest) = split_from_line(&b"From: header\n"[..]).unwrap();
        assert_eq!(s, None);
        assert_eq!(rest, b"From:");
    }
}
