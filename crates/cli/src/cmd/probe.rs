//! `correio probe URL`: a report on any POP3 server — what it offers, what it gets
//! wrong against the RFCs, and its exposure. The work is done by
//! `correio_client::probe`; this file turns flags into options, gets the test
//! account's password and prints the report.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use correio_client::probe::{self, Options, ProbeError};

/// Arguments of `correio probe`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 no finding, 3 findings (failed checks), 1 the server \
could not be probed, 2 usage error.\n\nRead-only unless --allow-delete: a session that \
retrieved messages ends without QUIT, and with EXPIRE 0 nothing is retrieved. The \
failed-login checks make 2 x --samples failed logins (half for --user), which may trip \
an account lockout."
)]
pub struct Args {
    /// pop3://HOST[:PORT] (STLS) or pop3s://HOST[:PORT] (implicit TLS).
    #[arg(value_name = "URL")]
    url: String,
    /// A test account, for the checks that need a login.
    #[arg(long, value_name = "U")]
    user: Option<String>,
    /// Command printing the test account's password on its first line (else it is
    /// asked for on the terminal).
    #[arg(long, value_name = "CMD", requires = "user")]
    password_command: Option<String>,
    /// Trust this CA certificate file (PEM) besides the system's roots.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure_skip_verify")]
    ca: Option<PathBuf>,
    /// Send the test account's password even when the certificate is not trusted or
    /// does not name the host (the report still says so).
    #[arg(long)]
    insecure_skip_verify: bool,
    /// Send the test account's password without TLS to a host that is not loopback.
    #[arg(long)]
    allow_cleartext: bool,
    /// Run the DELE/RSET checks: deletes one message (the last) of the test account.
    #[arg(long, requires = "user")]
    allow_delete: bool,
    /// Print the report as JSON (schema correio-probe/1).
    #[arg(long)]
    json: bool,
    /// Timeout of each connection attempt and each read.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    timeout: String,
    /// Failed-login samples per user for the enumeration and delay checks (0: none).
    #[arg(long, value_name = "N", default_value_t = 5)]
    samples: u32,
    /// Most messages retrieved for the size and format checks.
    #[arg(long, value_name = "N", default_value_t = 50)]
    max_messages: usize,
}

fn password(args: &Args, user: &str) -> anyhow::Result<Vec<u8>> {
    let secret = match &args.password_command {
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
            rpassword::prompt_password(format!("Password for {user}: "))
                .context("reading password")?
                .into_bytes()
        }
        None => bail!("--user needs --password-command when standard input is not a terminal"),
    };
    if secret.contains(&0) {
        bail!("the password contains a NUL byte");
    }
    Ok(secret)
}

/// Runs `correio probe`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut opts = Options::new(&args.url);
    opts.timeout = correio_client::parse_duration(&args.timeout)
        .map_err(|e| anyhow::anyhow!("--timeout {e}"))?;
    opts.ca.clone_from(&args.ca);
    opts.insecure_skip_verify = args.insecure_skip_verify;
    opts.allow_cleartext = args.allow_cleartext;
    opts.allow_delete = args.allow_delete;
    opts.samples = args.samples;
    opts.max_messages = args.max_messages;
    if let Some(user) = &args.user {
        if user.is_empty() || user.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            bail!("--user must be a name without spaces or control characters");
        }
        opts.password = Some(password(&args, user)?);
        opts.user = Some(user.clone());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = match rt.block_on(probe::probe(&opts)) {
        Ok(r) => r,
        Err(ProbeError::Usage(e)) => {
            eprintln!("correio probe: {e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    let out = if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        report.to_text()
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(anyhow::Error::new(e).context("writing the report"));
    }
    if let Some(e) = &report.account_error {
        eprintln!("correio probe: the checks that need --user did not run: {e}");
    }
    Ok(if report.summary.failed > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
