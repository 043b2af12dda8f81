//! `correio serve`: the POP3 server (and optionally the LMTP listener).
//!
//! With no config and no listener flags it does the first-run setup a new user needs:
//! data under `./correio-data`, a self-signed pair created if missing, loopback
//! listeners on 110/995 when root or 1110/1995 otherwise (each falling back to the
//! other if taken), and a printed how-to. Signals: SIGTERM/SIGINT shut down gracefully
//! (no UPDATE for sessions that did not QUIT); SIGHUP re-reads the configuration file,
//! the users file and the certificate (see `correio_server::Server::reload`).
//!
//! Run as root with `user =` in the configuration, it binds its ports, starts the
//! privileged helper (`correio_server::privsep`: the only part that stays root, for
//! root-only TLS keys on reload), and drops to the service user before any session.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use correio_server::config::{Config, LmtpAddr, Overrides, config_path};
use correio_server::ownership::ServiceAccount;
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
    /// Internal: run as the privileged helper on the socket given as standard input.
    #[arg(long, hide = true)]
    privileged_helper: bool,
}

impl Args {
    fn overrides(&self) -> Overrides {
        Overrides {
            data_dir: self.data.clone(),
            pop3: self.pop3.clone(),
            pop3s: self.pop3s.clone(),
            lmtp: self.lmtp.clone(),
            allow_cleartext_login: self.allow_cleartext_login,
            set: self.set.clone(),
        }
    }

    /// The same command line for the privileged helper (it reads the same file).
    fn helper_args(&self, config: Option<&std::path::Path>) -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = vec!["serve".into(), "--privileged-helper".into()];
        if let Some(c) = config {
            v.push("--config".into());
            v.push(c.into());
        }
        if let Some(d) = &self.data {
            v.push("--data".into());
            v.push(d.into());
        }
        for s in &self.set {
            v.push("--set".into());
            v.push(s.into());
        }
        v
    }
}

fn parse_lmtp(s: &str) -> Result<LmtpAddr, String> {
    LmtpAddr::parse(s)
}

/// Runs `correio serve`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let overrides = args.overrides();
    let config_file = config_path(args.config.as_deref());
    if args.privileged_helper {
        init_logging(&correio_server::config::LogSettings::default());
        return run_helper(config_file, overrides);
    }
    let config = Config::load(config_file.as_deref(), &overrides).map_err(anyhow::Error::msg)?;
    init_logging(&config.log);
    let first_run = config.pop3.is_empty() && config.pop3s.is_empty();
    let service = ServiceAccount::for_files(&config)?;
    correio_server::ownership::create_dir_all_owned(&config.data_dir, 0o700, service.as_ref())
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    ensure_certificate(&config, service.as_ref())?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config, first_run, config_file, args))
}

/// Logging as `[log]` says: text or JSON on stderr, the level (unless `RUST_LOG` is
/// set). Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp of their own:
/// the journal adds one. Colour codes only for a person at a terminal.
fn init_logging(settings: &correio_server::config::LogSettings) {
    use correio_server::config::LogFormat;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.level));
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi && settings.format == LogFormat::Text);
    let _ = match (settings.format, journal) {
        (LogFormat::Text, false) => builder.try_init(),
        (LogFormat::Text, true) => builder.without_time().try_init(),
        (LogFormat::Json, false) => builder.json().flatten_event(true).try_init(),
        (LogFormat::Json, true) => builder.json().flatten_event(true).without_time().try_init(),
    };
}

/// The privileged helper: answers the server's requests on standard input (one end
/// of a socket pair) until the server closes it. It ignores SIGHUP (meant for the
/// server) and reads the configuration anew for each request.
fn run_helper(config_file: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<ExitCode> {
    use std::os::fd::AsFd as _;
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("the helper's socket")?;
    let stream = std::os::unix::net::UnixStream::from(fd);
    // SIGHUP to the process group must not end the helper: keep a handler installed.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _hup = rt.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    })?;
    let file = config_file.clone();
    // System passwords: the PAM service and the uid floor come from the configuration
    // this (root) process reads itself, never from the unprivileged side.
    let (pam_file, pam_overrides) = (config_file.clone(), overrides.clone());
    let pam: correio_server::privsep::PamFn = std::sync::Arc::new(move |user, password| {
        let c = Config::load(pam_file.as_deref(), &pam_overrides).map_err(|e| e.to_string())?;
        let correio_users::BackendConfig::System(system) = &c.user_backend else {
            return Err("system users are not configured (auth.backend)".into());
        };
        match nix::unistd::User::from_name(user) {
            Ok(Some(u)) if u.uid.as_raw() < system.first_valid_uid() => return Ok(false),
            Err(e) => return Err(format!("passwd database: {e}")),
            _ => {}
        }
        correio_users::system::pam_authenticate(&system.pam_service(), user, password)
            .map_err(|t| t.0)
    });
    correio_server::privsep::serve_helper(
        stream,
        file.as_deref(),
        move |sni| {
            let c = Config::load(config_file.as_deref(), &overrides).map_err(|e| e.to_string())?;
            match sni {
                None => Ok((c.tls_cert, c.tls_key)),
                Some(n) => c
                    .tls_sni
                    .get(usize::from(n))
                    .map(|s| (s.cert.clone(), s.key.clone()))
                    .ok_or_else(|| format!("no [tls] sni pair number {n}")),
            }
        },
        Some(pam),
    )
    .context("privileged helper")?;
    Ok(ExitCode::SUCCESS)
}

/// Starts the privileged helper: the same binary, still root, joined by a socket pair.
fn start_helper(
    args: &Args,
    config_file: Option<&std::path::Path>,
) -> anyhow::Result<(std::process::Child, std::os::unix::net::UnixStream)> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().context("socket pair")?;
    let exe = std::env::current_exe().context("finding the correio binary")?;
    let child = std::process::Command::new(exe)
        .args(args.helper_args(config_file))
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            theirs,
        )))
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting the privileged helper")?;
    Ok((child, ours))
}

/// Creates the self-signed pair when it is missing at the data-dir default paths (an
/// explicitly configured pair is never invented: a missing one is an error), owned by
/// the service user when root makes it.
fn ensure_certificate(config: &Config, service: Option<&ServiceAccount>) -> anyhow::Result<()> {
    if config.tls_explicit {
        // Fail now, naming the file, rather than start without STLS.
        for p in [&config.tls_cert, &config.tls_key] {
            if let Err(e) = std::fs::metadata(p) {
                anyhow::bail!(
                    "TLS: {}: cannot read: {e} (configured in [tls]; create it, e.g. `correio cert`, or fix the path)",
                    p.display()
                );
            }
        }
        return Ok(());
    }
    let (cert, key) = (&config.tls_cert, &config.tls_key);
    if !cert.exists() && !key.exists() {
        super::cert::make_pair(cert, key, &super::cert::default_hosts(), false, service)?;
        info!(cert = %cert.display(), "created a self-signed certificate");
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

async fn serve(
    mut config: Config,
    first_run: bool,
    config_file: Option<PathBuf>,
    args: Args,
) -> anyhow::Result<ExitCode> {
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
    // Stores beside the file backends ([store.NAME]): built once, at start (a change
    // to their tables takes a restart); nothing connects until a session needs it.
    server.set_stores(super::store::open_stores(&server.config())?);
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
            match addr {
                LmtpAddr::Tcp(_) => {
                    if let Some(a) = l.local_tcp_addr() {
                        info!(addr = %a, "listening for LMTP");
                    }
                }
                LmtpAddr::Unix(p) => info!(path = %p.display(), "listening for LMTP"),
            }
            if let LmtpAddr::Unix(path) = addr {
                // Like LMTP on 127.0.0.1, any local process (the MTA's user) may
                // connect: mode 0666, as Dovecot's lmtp socket. It belongs to the
                // service user, who removes it at shutdown.
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
                    .with_context(|| format!("setting the mode of {}", path.display()))?;
                if let Some(o) = ServiceAccount::for_files(&server.config())? {
                    o.give(path)
                        .with_context(|| format!("giving {} to {}", path.display(), o.name))?;
                }
            }
            Some(l)
        }
        None => None,
    };
    // Metrics: bound before the privilege drop (the port may be below 1024).
    let metrics_listener = match server.config().metrics_listen {
        Some(addr) => Some(
            correio_server::metrics::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?,
        ),
        None => None,
    };
    // The admin socket: made before the drop (its directory may be root's), 0660 and
    // given to the service user and group, so root and that group may use it.
    let admin_listener = match &server.config().admin_socket {
        Some(path) => Some(bind_admin(path, &server.config())?),
        None => None,
    };
    let config = server.config();
    let mut helper = None;
    let mut helper_client = None;
    if let Some(user) = &config.run_as_user
        && correio_server::is_root()
    {
        let (child, stream) = start_helper(&args, config_file.as_deref())?;
        let client = std::sync::Arc::new(correio_server::privsep::HelperClient::new(stream));
        server.set_tls_source(client.clone());
        server
            .set_pam_check(client.clone())
            .context("opening the user database")?;
        helper_client = Some(client);
        helper = Some(child);
        correio_server::drop_privileges(user, config.run_as_group.as_deref())?;
    }
    if first_run {
        print_howto(&server, &listeners);
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (lmtp_ctx_tx, lmtp_ctx_rx) = tokio::sync::watch::channel(lmtp_context(&server));
    let lmtp_task = lmtp.map(|l| {
        let mut rx = stop_rx.clone();
        tokio::spawn(correio_server::lmtp::run_lmtp_reloadable(
            l,
            lmtp_ctx_rx,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        ))
    });
    let metrics_task = metrics_listener.map(|l| {
        let mut rx = stop_rx.clone();
        tokio::spawn(correio_server::metrics::serve(
            l,
            server.metrics(),
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        ))
    });
    let reload = std::sync::Arc::new(Reloader {
        server: server.clone(),
        first_run,
        config_file,
        overrides: args.overrides(),
        lmtp: lmtp_ctx_tx,
        helper: helper_client,
    });
    let admin_task = admin_listener.map(|l| {
        let mut rx = stop_rx.clone();
        let r = std::sync::Arc::clone(&reload);
        let reload_fn: correio_server::admin::ReloadFn = std::sync::Arc::new(move || r.reload());
        tokio::spawn(correio_server::admin::serve(
            l,
            server.clone(),
            reload_fn,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        ))
    });
    let signals = {
        let reload = std::sync::Arc::clone(&reload);
        tokio::spawn(async move {
            if let Err(e) = handle_signals(reload).await {
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
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    if let Some(p) = &server.config().admin_socket {
        let _ = std::fs::remove_file(p);
    }
    signals.abort();
    if let Some(mut child) = helper {
        // Its socket closes with this process; reap it if it has already gone.
        let _ = child.try_wait();
    }
    Ok(ExitCode::SUCCESS)
}

/// Binds the admin control socket (replacing a stale one), mode 0660, owned by the
/// service user and group when root starts the server.
fn bind_admin(path: &std::path::Path, config: &Config) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.file_type().is_socket() {
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale {}", path.display()))?;
        } else {
            anyhow::bail!("{} exists and is not a socket", path.display());
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let l = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on the admin socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    if let Some(o) = ServiceAccount::for_files(config)? {
        o.give(path)
            .with_context(|| format!("giving {} to {}", path.display(), o.name))?;
    }
    info!(path = %path.display(), "admin socket listening");
    Ok(l)
}

/// The LMTP listener's view of the server's configuration.
fn lmtp_context(server: &Server) -> std::sync::Arc<correio_server::lmtp::LmtpContext> {
    let c = server.config();
    let limits = correio_server::lmtp::LmtpLimits {
        max_message_size: c.delivery.max_message_size,
        ..correio_server::lmtp::LmtpLimits::default()
    };
    let mut ctx = correio_server::lmtp::LmtpContext::new(server.users(), c.mail_location.clone())
        .with_limits(limits)
        .with_deliver_options(c.delivery.options())
        .with_username_policy(c.username.clone())
        .with_metrics(server.metrics());
    ctx.hostname = c.hostname.clone();
    ctx.stores = server.stores();
    std::sync::Arc::new(ctx)
}

/// What SIGHUP does: re-read the configuration file and apply it.
struct Reloader {
    server: Server,
    /// Listening on the first-run defaults (no listener in the file): a reload
    /// keeps them instead of reporting them as changed.
    first_run: bool,
    config_file: Option<PathBuf>,
    overrides: Overrides,
    lmtp: tokio::sync::watch::Sender<std::sync::Arc<correio_server::lmtp::LmtpContext>>,
    /// After the privilege drop the file is read through the helper: it may be
    /// readable by root only.
    helper: Option<std::sync::Arc<correio_server::privsep::HelperClient>>,
}

impl Reloader {
    /// Re-reads the configuration and applies it; the changed keys, or why nothing
    /// changed. Logged either way (SIGHUP and `correio admin reload` both call it).
    fn reload(&self) -> Result<Vec<String>, String> {
        let loaded = match &self.helper {
            Some(h) if self.config_file.is_some() => {
                h.config_text().map_err(|e| e.to_string()).and_then(|text| {
                    Config::load_text(self.config_file.as_deref(), &text, &self.overrides)
                        .map_err(|e| e.to_string())
                })
            }
            _ => Config::load(self.config_file.as_deref(), &self.overrides)
                .map_err(|e| e.to_string()),
        };
        let new = match loaded {
            Ok(mut c) => {
                if self.first_run && c.pop3.is_empty() && c.pop3s.is_empty() {
                    let running = self.server.config();
                    c.pop3 = running.pop3;
                    c.pop3s = running.pop3s;
                }
                c
            }
            Err(e) => {
                error!(error = %e, "SIGHUP: configuration not reloaded; keeping the old one");
                return Err(e);
            }
        };
        match self.server.reload(new) {
            Err(e) => {
                error!(error = %e, "SIGHUP: configuration not reloaded; keeping the old one");
                Err(e.to_string())
            }
            Ok(r) => {
                for (key, old, new) in &r.changed {
                    info!(key = %key, old = %old, new = %new, "SIGHUP: changed");
                }
                for key in &r.needs_restart {
                    warn!(key = %key, "SIGHUP: changed in the file, takes effect after a restart");
                }
                match &r.tls {
                    Ok(()) => info!("SIGHUP: certificate reloaded"),
                    Err(e) => {
                        error!(error = %e, "SIGHUP: certificate not reloaded; keeping the old one")
                    }
                }
                let _ = self.lmtp.send(lmtp_context(&self.server));
                info!(changed = r.changed.len(), "SIGHUP: configuration reloaded");
                Ok(r.changed.into_iter().map(|(k, _, _)| k).collect())
            }
        }
    }
}

/// Returns when SIGTERM or SIGINT arrives; reloads on SIGHUP meanwhile.
async fn handle_signals(reload: std::sync::Arc<Reloader>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM"); return Ok(()); }
            _ = int.recv() => { info!("SIGINT"); return Ok(()); }
            // File reads and the helper round trip block: keep them off the workers.
            _ = hup.recv() => {
                let _ = tokio::task::block_in_place(|| reload.reload());
            }
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
    println!("Stop with Ctrl-C (or SIGTERM); SIGHUP reloads the configuration and certificate.");
}
