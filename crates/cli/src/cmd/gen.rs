//! `correio gen` (hidden): the files a package installs beside the binary, generated
//! from the command-line definitions so that they cannot drift from `--help`.
//!
//! - `correio gen man DIR`: one man page (section 1) for `correio` and one for each
//!   subcommand, nested ones included: `correio.1`, `correio-serve.1`,
//!   `correio-user-add.1`, … Hidden subcommands and arguments get none.
//! - `correio gen completions DIR`: `correio.bash`, `_correio` (zsh) and
//!   `correio.fish`.
//!
//! Each written path is printed on its own line. `packaging/deb/build` runs both before
//! `cargo deb`.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;

/// Arguments of `correio gen`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Man pages for `correio` and every subcommand, into DIR (created if missing).
    Man {
        /// Output directory.
        dir: PathBuf,
    },
    /// Completion scripts for bash, zsh and fish, into DIR (created if missing).
    Completions {
        /// Output directory.
        dir: PathBuf,
    },
}

/// Writes the files and prints their paths.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (dir, written) = match args.what {
        What::Man { dir } => {
            let w = prepare(&dir).and_then(|()| man_pages(&dir))?;
            (dir, w)
        }
        What::Completions { dir } => {
            let w = prepare(&dir).and_then(|()| completions(&dir))?;
            (dir, w)
        }
    };
    if written.is_empty() {
        anyhow::bail!("nothing written to {}", dir.display());
    }
    for p in written {
        println!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn prepare(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))
}

/// The full command tree, as the binary parses it, without clap's `help` subcommand
/// (it would get a page of its own).
fn command() -> clap::Command {
    let mut cmd = crate::Cli::command().disable_help_subcommand(true);
    // Gives every subcommand its display name (`correio-user-add`), used as the
    // page's name and file name.
    cmd.build();
    cmd
}

fn man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(cmd: &clap::Command, dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        let man = clap_mangen::Man::new(cmd.clone())
            .source(format!("correio {}", env!("CARGO_PKG_VERSION")))
            .manual("Correio")
            .date(env!("CORREIO_COMMIT_DATE"));
        let path = man
            .generate_to(dir)
            .with_context(|| format!("write {}", dir.join(man.get_filename()).display()))?;
        out.push(path);
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, dir, out)?;
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(&command(), dir, &mut out)?;
    Ok(out)
}

fn completions(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    // clap_complete offers hidden subcommands too: rebuild the top level with the
    // visible ones only (`gen` is for packagers, not for the command line).
    let full = crate::Cli::command();
    let mut cmd = clap::Command::new("correio")
        .version(env!("CORREIO_VERSION"))
        .args(full.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
        .disable_help_subcommand(true);
    [Shell::Bash, Shell::Zsh, Shell::Fish]
        .into_iter()
        .map(|shell| {
            clap_complete::generate_to(shell, &mut cmd, "correio", dir)
                .with_context(|| format!("write the {shell} completions to {}", dir.display()))
        })
        .collect()
}
