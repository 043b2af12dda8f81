//! `correio serve`: the POP3 server (and optionally the LMTP listener).
//!
//! With no config and no listener flags it does the first-run setup DESIGN.md asks
//! for: data under `./correio-data`, a self-signed pair created if missing, loopback
//! listeners on 110/995 when root or 1110/1995 otherwise (each falling back to the
//! other if taken), and a printed how-to. Signals: SIGTERM/SIGINT shut down gracefully
//! (no UPDATE for sessions that did not QUIT); SIGHUP reloads the certificate.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use correio_server::config::{Config, LmtpAddr, Overrides};
use correio_server::{Listeners, Server};
use tokio::net::TcpListener;
use tracing::{error, info, warn};

/// Arguments of `correio serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (TOML); see `correio check`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory: users file, TLS pair, mailboxes [default: ./correio-data].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Cleartext POP3 listener with STLS (repeatable), e.g. 0.0.0.0:110 or [::]:110.
    #[arg(long, value_name = "ADDR:PORT")]
    pop3: Vec<SocketAddr>,
    /// Implicit-TLS POP3 listener (repeatable), e.g. 0.0.0.0:995.
    #[arg(long, value_name = "ADDR:PORT")]
    pop3s: Vec<SocketAddr>,
    /// LMTP listener for the MTA: ADDR:PORT or unix:PATH.
    #[arg(long, value_name = "ADDR:PORT|unix:PATH", value_parser = parse_lmtp)]
    lmtp: Option<LmtpAddr>,
    /// Allow USER/PASS, PLAIN and LOGIN on cleartext connections from other hosts.
    #[arg(long)]
    allow_cleartext_login: bool,
    /// Set any config key (repeatable), e.g. `--set limits.max_connections=50`.
    #[arg(long, value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn parse_lmtp(s: &str) -> Result<LmtpAddr, String> {
    LmtpAddr::parse(s)
}

/// Runs `correio serve`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a log file or journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let overrides = Overrides {
        data_dir: args.data.clone(),
        pop3: args.pop3.clone(),
        pop3s: args.pop3s.clone(),
        lmtp: args.lmtp.clone(),
        allow_cleartext_login: args.allow_cleartext_login,
        set: args.set.clone(),
    };
    let config = Config::load(args.config.as_deref(), &overrides).map_err(anyhow::Error::msg)?;
    let first_run = config.pop3.is_empty() && config.pop3s.is_empty();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    ensure_certificate(&config)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config, first_run))
}

/// Creates the self-signed pair when it is missing at the data-dir default paths (an
/// explicitly configured pair is never invented).
fn ensure_certificate(config: &Config) -> anyhow::Result<()> {
    let (cert, key) = super::cert::pair_paths(&config.data_dir);
    if config.tls_cert == cert && config.tls_key == key && !cert.exists() && !key.exists() {
        super::cert::make_pair(&cert, &key, &super::cert::default_hosts(), false)?;
        eprintln!("created a self-signed certificate: {}", cert.display());
    }
    Ok(())
}

async fn bind_first_run(root: bool) -> anyhow::Result<Listeners> {
    let (p3, p3s) = if root {
        ([110, 1110], [995, 1995])
    } else {
        ([1110, 110], [1995, 995])
    };
    let mut l = Listeners::default();
    for (ports, out) in [(p3, &mut l.pop3), (p3s, &mut l.pop3s)] {
        let mut bound = None;
        for port in ports {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(x) => {
                    bound = Some(x);
                    break;
                }
                Err(e) => warn!(port, error = %e, "cannot listen; trying the next port"),
            }
        }
        let listener = bound.with_context(|| {
            format!("none of the loopback ports {ports:?} is free; use --pop3/--pop3s")
        })?;
        out.push(listener);
    }
    Ok(l)
}

async fn serve(mut config: Config, first_run: bool) -> anyhow::Result<ExitCode> {
    let listeners = if first_run {
        let l = bind_first_run(correio_server::is_root()).await?;
        let (p, s) = l.addrs();
        config.pop3 = p;
        config.pop3s = s;
        l
    } else {
        Listeners::default()
    };
    let server = Server::new(config).context("starting the server")?;
    let listeners = if first_run {
        listeners
    } else {
        server.bind().await?
    };
    let lmtp = match &server.config().lmtp {
        Some(addr) => {
            let l = correio_server::lmtp::LmtpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for LMTP on {addr:?}"))?;
            Some(l)
        }
        None => None,
    };
    if let Some(user) = &server.config().run_as_user {
        correio_server::drop_privileges(user, server.config().run_as_group.as_deref())?;
    }
    if first_run {
        print_howto(&server, &listeners);
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let lmtp_task = lmtp.map(|l| {
        let ctx = std::sync::Arc::new(correio_server::lmtp::LmtpContext::new(
            server.users(),
            server.config().mail_location.clone(),
        ));
        let mut rx = stop_rx.clone();
        tokio::spawn(correio_server::lmtp::run_lmtp(l, ctx, async move {
            let _ = rx.wait_for(|s| *s).await;
        }))
    });
    let signals = {
        let server = server.clone();
        tokio::spawn(async move {
            if let Err(e) = handle_signals(server).await {
                error!(error = %e, "cannot install signal handlers");
            }
            let _ = stop_tx.send(true);
        })
    };
    let mut rx = stop_rx.clone();
    server
        .run(listeners, async move {
            let _ = rx.wait_for(|s| *s).await;
        })
        .await;
    if let Some(t) = lmtp_task {
        let _ = t.await;
    }
    signals.abort();
    Ok(ExitCode::SUCCESS)
}

/// Returns when SIGTERM or SIGINT arrives; reloads TLS on SIGHUP meanwhile.
async fn handle_signals(server: Server) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM"); return Ok(()); }
            _ = int.recv() => { info!("SIGINT"); return Ok(()); }
            _ = hup.recv() => match server.reload_tls() {
                Ok(()) => info!("SIGHUP: certificate reloaded"),
                Err(e) => error!(error = %e, "SIGHUP: certificate not reloaded; keeping the old one"),
            },
        }
    }
}

fn print_howto(server: &Server, listeners: &Listeners) {
    let c = server.config();
    let (p3, p3s) = listeners.addrs();
    let data = c.data_dir.display();
    let port = p3s.first().map(|a| a.port()).unwrap_or(995);
    println!("Correio POP3 server running (first-run defaults; see `correio check --help`).");
    for a in &p3 {
        println!("  POP3 + STLS: {a}");
    }
    for a in &p3s {
        println!("  POP3S:       {a}");
    }
    println!("  data:        {data}");
    println!();
    println!("Add a user:         correio user add NAME --data {data}");
    println!("Deliver a message:  correio deliver --user NAME --data {data} < message.eml");
    println!(
        "Fetch it with curl: curl --cacert {} -u NAME:PASSWORD pop3s://localhost:{port}/1",
        c.tls_cert.display()
    );
    println!("Stop with Ctrl-C (or SIGTERM); SIGHUP reloads the certificate.");
}
