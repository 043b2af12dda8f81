//! `correio`: one binary for the whole mail system. Each subcommand lives in its own
//! file under `cmd/` with its `Args` and a `run()` that calls library code; `main`
//! only parses the command line and maps errors to exit codes.
#![forbid(unsafe_code)]
// The subcommands' doc comments are their --help text (clap), where `HOST[:PORT]` is
// meant literally, not as a link.
#![allow(rustdoc::broken_intra_doc_links)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// Correio: a POP3 mail system. Server, delivery and fetcher in one binary.
#[derive(Debug, Parser)]
#[command(name = "correio", version = env!("CORREIO_VERSION"), about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the POP3 server (and optionally the LMTP listener).
    Serve(cmd::serve::Args),
    /// Manage users in the users file.
    User(cmd::user::Args),
    /// Deliver one message from standard input into a user's mailbox (an LDA).
    Deliver(cmd::deliver::Args),
    /// Fetch mail from POP3 servers into Maildir, mbox, EML files or a command.
    Fetch(cmd::fetch::Args),
    /// Create a self-signed TLS certificate and key for first runs.
    Cert(cmd::cert::Args),
    /// Validate a configuration file.
    Check(cmd::check::Args),
    /// Ask the running server: who, kick, mailbox, expunge, reload, status.
    Admin(cmd::admin::Args),
    /// Check (and repair) an mbox or a Maildir: `correio mailbox check PATH`.
    Mailbox(cmd::mailbox::Args),
    /// Stores shared by many frontends ([store.NAME]): migrate users in, collect
    /// unused bodies, show a mailbox.
    Store(cmd::store::Args),
    /// Translate another server's configuration (Dovecot) into correio.toml.
    Import(cmd::import::Args),
    /// POP3 load generator for any server (and its own ceiling, --self-test).
    Bench(Box<cmd::bench::Args>),
    /// Report on any POP3 server: offer, RFC conformance, exposure.
    Probe(Box<cmd::probe::Args>),
    /// Copy mail between Maildir, mbox, .eml folders (or from a POP3 server), resumably.
    Convert(Box<cmd::convert::Args>),
    /// Generate man pages and shell completions (for packagers).
    #[command(hide = true)]
    Gen(cmd::r#gen::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `correio deliver` is run by MTAs, which read sendmail's exit codes: a
            // usage error is EX_USAGE (64), not clap's 2.
            let _ = e.print();
            let is_deliver = std::env::args().nth(1).as_deref() == Some("deliver");
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ if is_deliver => ExitCode::from(64),
                _ => ExitCode::from(2),
            };
        }
    };
    let result = match cli.command {
        Command::Serve(a) => cmd::serve::run(a),
        Command::User(a) => cmd::user::run(a),
        Command::Deliver(a) => cmd::deliver::run(a),
        Command::Fetch(a) => cmd::fetch::run(a),
        Command::Cert(a) => cmd::cert::run(a),
        Command::Check(a) => cmd::check::run(a),
        Command::Mailbox(a) => cmd::mailbox::run(a),
        Command::Store(a) => cmd::store::run(a),
        Command::Import(a) => cmd::import::run(a),
        Command::Bench(a) => cmd::bench::run(*a),
        Command::Admin(a) => cmd::admin::run(a),
        Command::Probe(a) => cmd::probe::run(*a),
        Command::Convert(a) => cmd::convert::run(*a),
        Command::Gen(a) => cmd::r#gen::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("correio: {e:#}");
            ExitCode::FAILURE
        }
    }
}
