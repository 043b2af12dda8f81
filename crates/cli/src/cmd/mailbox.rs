//! `correio mailbox check PATH [--format maildir|mbox] [--repair] [--json]`: finds (and
//! with `--repair` fixes) damage in an mbox or a Maildir. The work is done by
//! `correio_store::fsck`; this file parses arguments and prints.
//!
//! Output: one line per problem, `path[:line|:offset]: what`, then a summary line; with
//! `--repair`, what was done and what was left. With `--json`, one JSON object instead.
//! Exit status: 0 the mailbox is clean, 1 problems were found (with `--repair`: found
//! and repaired as far as possible, see the output), 2 it cannot be checked or
//! repaired (not a mailbox, unreadable, locked, in use).
use std::path::PathBuf;
use std::process::ExitCode;

use correio_store::fsck::{self, Finding, Format, RepairReport, Report};

/// Arguments of `correio mailbox`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check an mbox or a Maildir for damage (and repair it with --repair).
    ///
    /// mbox: missing or malformed From_ lines, unquoted `From ` lines splitting a
    /// message, truncated last message, mixed line ends, Content-Length that does not
    /// match, interrupted appends, stale locks. Maildir: duplicate or malformed names,
    /// wrong ,S=/,W= sizes, stale tmp/ files and locks, an index or dovecot-uidlist
    /// that disagrees with the files. Exit status: 0 clean, 1 problems found, 2 cannot
    /// check.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The mailbox: an mbox file or a Maildir directory.
    path: PathBuf,
    /// The format [default: a directory is a Maildir, a file an mbox].
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Repair what can be repaired without losing a byte of message data. mbox: writes
    /// PATH.repaired beside the original (kept unchanged), under the mail locks.
    /// Maildir: renames in place under the session lock; what is moved aside goes to
    /// PATH/correio-lost+found/.
    #[arg(long)]
    repair: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Maildir,
    Mbox,
}

/// Runs `correio mailbox`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Check(a) => Ok(check(a)),
    }
}

fn check(a: CheckArgs) -> ExitCode {
    let format = match a.format {
        Some(FormatArg::Maildir) => Ok(Format::Maildir),
        Some(FormatArg::Mbox) => Ok(Format::Mbox),
        None => fsck::detect(&a.path),
    };
    let result = format.and_then(|f| {
        if a.repair {
            fsck::repair_as(&a.path, f).map(|r| (r.found.clone(), Some(r)))
        } else {
            fsck::check_as(&a.path, f).map(|r| (r, None))
        }
    });
    let (report, repair) = match result {
        Ok(v) => v,
        Err(e) => {
            if a.json {
                let v = serde_json::json!({
                    "path": a.path.display().to_string(),
                    "error": e.to_string(),
                });
                println!("{v}");
            } else {
                let msg = e.to_string();
                let path = a.path.display().to_string();
                if msg.contains(&path) {
                    eprintln!("correio: mailbox check: {msg}");
                } else {
                    eprintln!("correio: mailbox check: {path}: {msg}");
                }
            }
            return ExitCode::from(2);
        }
    };
    if a.json {
        println!("{}", json(&report, repair.as_ref()));
    } else {
        print_text(&report, repair.as_ref());
    }
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_text(report: &Report, repair: Option<&RepairReport>) {
    for f in &report.findings {
        println!("{f}");
    }
    let n = report.findings.len();
    println!(
        "{}: {} ({}, {} message{})",
        report.path.display(),
        match n {
            0 => "clean".to_string(),
            1 => "1 problem".to_string(),
            n => format!("{n} problems"),
        },
        report.format,
        report.messages,
        if report.messages == 1 { "" } else { "s" }
    );
    let Some(r) = repair else { return };
    for a in &r.actions {
        println!("repaired: {a}");
    }
    for (f, why) in &r.not_repaired {
        println!("not repaired: {f} ({why})");
    }
    match (&r.repaired_copy, report.format) {
        (Some(copy), _) => println!(
            "repaired copy written to {}; the original is kept unchanged at {} (replace it \
             while no mail is delivered)",
            copy.display(),
            r.original.display()
        ),
        (None, Format::Mbox) if !report.is_clean() => println!(
            "no repaired copy needed; the original is at {}",
            r.original.display()
        ),
        (None, Format::Maildir) if !r.actions.is_empty() => println!(
            "repaired in place; anything moved aside is in {}",
            r.original.join("correio-lost+found").display()
        ),
        _ => {}
    }
}

fn finding_json(f: &Finding) -> serde_json::Value {
    serde_json::json!({
        "path": f.path.display().to_string(),
        "line": f.line,
        "offset": f.offset,
        "kind": f.problem.code(),
        "message": f.problem.message(),
        "text": f.problem.to_string(),
    })
}

fn json(report: &Report, repair: Option<&RepairReport>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "path": report.path.display().to_string(),
        "format": report.format.name(),
        "messages": report.messages,
        "clean": report.is_clean(),
        "findings": report.findings.iter().map(finding_json).collect::<Vec<_>>(),
    });
    if let Some(r) = repair {
        v["repair"] = serde_json::json!({
            "actions": r.actions.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "not_repaired": r.not_repaired.iter().map(|(f, why)| {
                let mut j = finding_json(f);
                j["why"] = serde_json::Value::from(*why);
                j
            }).collect::<Vec<_>>(),
            "repaired_copy": r.repaired_copy.as_ref().map(|p| p.display().to_string()),
            "original": r.original.display().to_string(),
        });
    }
    v
}
