//! `correio deliver`: a local delivery agent (LDA) for Postfix's `mailbox_command`,
//! Exim's pipe transport and the like. Reads one message on standard input and stores
//! it in the user's mailbox durably before exiting.
//!
//! Exit codes are sendmail's (sysexits.h), which MTAs understand: 0 delivered;
//! 67 EX_NOUSER unknown user (bounce); 75 EX_TEMPFAIL try again later (full disk,
//! lock timeout, configuration problem); 69 EX_UNAVAILABLE / 73 EX_CANTCREAT for
//! permanent failures (message too big, permanent quota); 64 EX_USAGE bad arguments.
//!
//! The user is looked up in `<data>/users` (Dovecot passwd-file) as
//! `correio_server::lmtp::resolve_recipient` does; the mailbox is the user's
//! `userdb_mail=` or `maildir:<data>/mail/%u`. A leading mbox `From ` line on stdin
//! (Postfix adds one for `mailbox_command`) is taken as the envelope sender and not
//! stored, as Dovecot's LDA does.
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use correio_auth::{UserDb, default_users_path};
use correio_server::lmtp::{Recipient, resolve_recipient};
use correio_store::{DeliverOptions, deliver};

/// sysexits.h codes.
const EX_USAGE: u8 = 64;
const EX_NOUSER: u8 = 67;
const EX_TEMPFAIL: u8 = 75;

/// Arguments of `correio deliver`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The user to deliver to (a name of the users file; an address or `user+detail`
    /// also finds the user).
    #[arg(long, value_name = "NAME")]
    user: String,
    /// Data directory holding the users file and, by default, the mailboxes.
    #[arg(long, value_name = "DIR", default_value = "./correio-data")]
    data: PathBuf,
    /// Envelope sender (for the mbox `From ` line); default: from a leading `From `
    /// line on stdin, else MAILER-DAEMON.
    #[arg(long, short = 'f', value_name = "ADDRESS")]
    from: Option<String>,
    /// Refuse messages larger than this many octets (permanent failure).
    #[arg(long, value_name = "OCTETS")]
    max_size: Option<u64>,
    /// Mailbox quota in octets (over quota: temporary failure, exit 75).
    #[arg(long, value_name = "OCTETS")]
    quota_bytes: Option<u64>,
    /// Mailbox quota in messages.
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
    let data = match std::path::absolute(&args.data) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("correio deliver: bad --data {}: {e}", args.data.display());
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    let users_path = default_users_path(&data);
    let users = match UserDb::load(&users_path) {
        Ok(u) => u,
        Err(e) => {
            // Without the users file we cannot tell: let the MTA keep the mail.
            eprintln!("correio deliver: cannot read the users file: {e}");
            return Ok(ExitCode::from(EX_TEMPFAIL));
        }
    };
    let default_template = format!("maildir:{}/mail/%u", data.display());
    let location = match resolve_recipient(&users, &default_template, &args.user) {
        Recipient::Found { location, .. } => location,
        Recipient::Unknown => {
            eprintln!("correio deliver: unknown user {:?}", args.user);
            return Ok(ExitCode::from(EX_NOUSER));
        }
        Recipient::Unusable(e) => {
            eprintln!("correio deliver: mailbox of {:?} unusable: {e}", args.user);
            return Ok(ExitCode::from(EX_TEMPFAIL));
        }
    };
    let stdin = io::stdin().lock();
    let (sender_line, head) = match split_from_line(stdin) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("correio deliver: reading the message: {e}");
            return Ok(ExitCode::from(EX_TEMPFAIL));
        }
    };
    let opts = DeliverOptions::default()
        .max_message_size(args.max_size)
        .quota(args.quota_bytes, args.quota_messages)
        .envelope_sender(args.from.or(sender_line));
    let reader = io::Cursor::new(head).chain(io::stdin().lock());
    match deliver(&location, reader, &opts) {
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
