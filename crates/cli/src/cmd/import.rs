//! `correio import dovecot`: translates a Dovecot 2.3 configuration into a
//! `correio.toml` (library: [`correio_server::import`]). The translation goes to
//! standard output or `--out FILE`; what could not be translated is printed on standard
//! error as warnings (exit status 0). A file that cannot be read or parsed: exit
//! status 1, with the file and line.
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use correio_server::import::{self, ImportOptions};

/// Arguments of `correio import`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    from: From,
}

#[derive(Debug, clap::Subcommand)]
enum From {
    /// Translate a Dovecot 2.3 configuration into correio.toml.
    ///
    /// Reads passdb/userdb (passwd-file), mail_location, ssl_cert/ssl_key, listeners,
    /// auth settings and pop3_uidl_format (through `doveconf -n` when it is installed)
    /// and writes the equivalent correio.toml, each value commented with the Dovecot
    /// setting it came from. POP3 clients keep their UIDLs: Correio serves the ones in
    /// dovecot-uidlist. What cannot be translated is printed as warnings (exit status
    /// 0); a file that cannot be read or parsed is an error naming file and line (exit
    /// status 1).
    Dovecot(DovecotArgs),
}

/// Arguments of `correio import dovecot`.
#[derive(Debug, clap::Args)]
struct DovecotArgs {
    /// Dovecot's main configuration file.
    #[arg(long, value_name = "FILE", default_value = import::DEFAULT_DOVECOT_CONF)]
    from: PathBuf,
    /// Where to write correio.toml; `-` is standard output. An existing file is kept
    /// unless --force.
    #[arg(long, value_name = "FILE|-", default_value = "-")]
    out: String,
    /// Replace an existing --out file.
    #[arg(long)]
    force: bool,
    /// The data_dir written into the translation (Correio's own state).
    #[arg(long, value_name = "DIR", default_value = import::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Read the file directly instead of through `doveconf -n` (by default doveconf is
    /// used when it is installed and accepts the file).
    #[arg(long)]
    no_doveconf: bool,
    /// The doveconf program to run.
    #[arg(long, value_name = "PATH", default_value = "doveconf")]
    doveconf: PathBuf,
    /// Print no warnings.
    #[arg(short, long)]
    quiet: bool,
}

/// Runs `correio import`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.from {
        From::Dovecot(a) => dovecot(a),
    }
}

fn dovecot(a: DovecotArgs) -> anyhow::Result<ExitCode> {
    let opts = ImportOptions {
        data_dir: a.data_dir,
        doveconf: (!a.no_doveconf).then_some(a.doveconf),
    };
    let t = match import::import_dovecot(&a.from, &opts) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if a.out == "-" {
        std::io::stdout()
            .write_all(t.toml.as_bytes())
            .context("writing to standard output")?;
    } else {
        write_new(Path::new(&a.out), &t.toml, a.force)?;
    }
    if !a.quiet {
        for w in &t.warnings {
            eprintln!("warning: {w}");
        }
        if a.out != "-" {
            eprintln!(
                "wrote {} ({} warning{}); next: correio check --config {}",
                a.out,
                t.warnings.len(),
                if t.warnings.len() == 1 { "" } else { "s" },
                a.out
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to `path` through a temporary file and a rename (mode 0644: the
/// translation holds no secret), refusing to replace a file unless `force`.
fn write_new(path: &Path, text: &str, force: bool) -> anyhow::Result<()> {
    if !force && path.exists() {
        anyhow::bail!(
            "{} exists: not replaced (--force replaces it)",
            path.display()
        );
    }
    if path.file_name().is_none() {
        anyhow::bail!("{}: not a file name", path.display());
    }
    // Temporary file in the same directory, fsync, rename, fsync of the directory.
    correio_fsutil::write_atomic(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
