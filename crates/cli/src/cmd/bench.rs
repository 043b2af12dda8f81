//! `correio bench`: a POP3 load generator for any server (the library is
//! `correio-bench`). Prints a summary, or one JSON object with `--json`.
//!
//! ```text
//! correio bench download --port 1110 --users-file users.txt -c 20 --pipeline --duration 30s
//! correio bench login-storm --host mail.example.org --tls implicit --ca ca.pem --user a:pw ...
//! correio bench idle -c 10000 --users-file users.txt --server-pid 1234 --duration 60s
//! correio bench --self-test          # this tool's own ceiling against a canned server
//! correio bench --loopback 100000000 # the same bytes through plain TCP on loopback
//! ```
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use correio_bench::{Credential, Scenario, Settings, Target, TlsMode};
use correio_client::tls::{Trust, connector, parse_fingerprint, server_name};

/// Scenario names on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ScenarioName {
    /// Log in, STAT, UIDL, LIST, RETR every message, QUIT (see --pipeline).
    Download,
    /// Log in, STAT, UIDL, LIST, QUIT: the cost of opening a maildrop.
    Open,
    /// Log in and QUIT, repeatedly.
    LoginStorm,
    /// Hold --concurrency authenticated sessions for --duration, NOOP now and then.
    Idle,
    /// RETR + DELE up to --batch messages, QUIT, then deliver as many over --lmtp.
    Mixed,
}

/// How to secure the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TlsArg {
    /// Cleartext.
    None,
    /// STLS after the greeting.
    Starttls,
    /// TLS from the first byte (POP3S).
    Implicit,
}

/// Arguments of `correio bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What each session does.
    #[arg(value_enum, required_unless_present_any = ["self_test", "loopback"])]
    scenario: Option<ScenarioName>,
    /// Server host name or address.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Server port [default: 110, or 995 with --tls implicit].
    #[arg(long)]
    port: Option<u16>,
    /// Connection security.
    #[arg(long, value_enum, default_value = "none")]
    tls: TlsArg,
    /// Accept any server certificate (handshake signatures are still checked).
    #[arg(long, conflicts_with_all = ["ca", "fingerprint"])]
    insecure: bool,
    /// Trust the CA certificates in this PEM file (besides the system's).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Accept exactly the server certificate with this SHA-256 fingerprint.
    #[arg(long, value_name = "SHA256")]
    fingerprint: Option<String>,
    /// Name to check the certificate against [default: --host].
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// File of `user:password` lines.
    #[arg(long, value_name = "FILE")]
    users_file: Option<PathBuf>,
    /// A `user:password` (repeatable; added to --users-file's).
    #[arg(long = "user", value_name = "USER:PASS")]
    users: Vec<String>,
    /// Sessions at once (each needs its own user).
    #[arg(short = 'c', long, default_value_t = 10)]
    concurrency: usize,
    /// Sessions to start at most (all together); `idle` ignores it.
    #[arg(long)]
    count: Option<u64>,
    /// No new session (or RETR) after this; `idle` holds sessions this long.
    #[arg(long, default_value = "30s", value_parser = correio_client::parse_duration)]
    duration: Duration,
    /// Bound on each connect, read and write.
    #[arg(long, default_value = "30s", value_parser = correio_client::parse_duration)]
    timeout: Duration,
    /// download: send RETRs ahead of the replies (pipelining, RFC 2449).
    #[arg(long)]
    pipeline: bool,
    /// download --pipeline: outstanding RETRs at most.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// idle: interval between one session's NOOPs.
    #[arg(long, default_value = "30s", value_parser = correio_client::parse_duration)]
    noop_every: Duration,
    /// idle: logins in progress at once while ramping up.
    #[arg(long, default_value_t = 64)]
    ramp: usize,
    /// mixed: the LMTP server (ADDR:PORT).
    #[arg(long, value_name = "ADDR:PORT")]
    lmtp: Option<SocketAddr>,
    /// mixed: messages retrieved, deleted and delivered per session.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// mixed: size of each delivered message, bytes.
    #[arg(long, default_value_t = 4096)]
    message_size: usize,
    /// mixed: domain for RCPT TO (user@DOMAIN) [default: the bare user name].
    #[arg(long, default_value = "")]
    rcpt_domain: String,
    /// Measure this server process and all its descendants (repeatable): CPU time
    /// per message / MB / session and resident memory (idle: per held session).
    #[arg(long = "server-pid", value_name = "PID")]
    server_pids: Vec<u32>,
    /// A label for the report, e.g. the server's name.
    #[arg(long, default_value = "")]
    label: String,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
    /// Measure this tool's ceiling: download --pipeline against a canned in-process
    /// server (-c sessions of --self-test-messages × --message-size bytes).
    #[arg(long, conflicts_with = "loopback")]
    self_test: bool,
    /// --self-test: messages per canned maildrop.
    #[arg(long, default_value_t = 500)]
    self_test_messages: usize,
    /// Send this many bytes through plain loopback TCP (-c streams) and time it.
    #[arg(long, value_name = "BYTES")]
    loopback: Option<u64>,
    /// Runtime worker threads [default: one per CPU].
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs `correio bench`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(t) = args.threads {
        rt.worker_threads(t.max(1));
    }
    let rt = rt.build().context("starting the async runtime")?;
    rt.block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(bytes) = args.loopback {
        let limit = args.duration.max(Duration::from_secs(1));
        let r = correio_bench::loopback(bytes, args.concurrency, limit).await?;
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "loopback: {} bytes over {} TCP streams in {:.3} s = {:.1} MB/s",
                r.bytes, r.streams, r.elapsed_s, r.mb_per_s
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = if args.self_test {
        correio_bench::self_test(
            args.concurrency,
            args.self_test_messages,
            args.message_size,
            args.count,
            args.duration,
        )
        .await?
    } else {
        correio_bench::run(settings(&args)?).await?
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    // Errors are part of the result, but a run where nothing worked is a failure.
    let worked = report.sessions > 0 || report.held.is_some_and(|h| h > 0);
    Ok(if worked {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn settings(args: &Args) -> anyhow::Result<Settings> {
    let Some(scenario) = args.scenario else {
        bail!("a scenario is required");
    };
    let tls = match args.tls {
        TlsArg::None => TlsMode::None,
        TlsArg::Starttls => TlsMode::Starttls,
        TlsArg::Implicit => TlsMode::Implicit,
    };
    let port = args
        .port
        .unwrap_or(if tls == TlsMode::Implicit { 995 } else { 110 });
    let addr = (args.host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", args.host))?
        .next()
        .with_context(|| format!("{} has no address", args.host))?;
    let connector = match tls {
        TlsMode::None => None,
        _ => Some(if args.insecure {
            correio_bench::insecure_connector()?
        } else if let Some(fp) = &args.fingerprint {
            connector(&Trust::Fingerprint(parse_fingerprint(fp)?))?
        } else if let Some(ca) = &args.ca {
            connector(&Trust::ExtraCa(ca.clone()))?
        } else {
            connector(&Trust::System)?
        }),
    };
    let name = args.server_name.as_deref().unwrap_or(&args.host);
    let mut users = match &args.users_file {
        Some(p) => Credential::read_file(p)?,
        None => Vec::new(),
    };
    for u in &args.users {
        users.push(Credential::parse(u)?);
    }
    if users.is_empty() {
        bail!("no users: give --users-file FILE (user:password lines) or --user USER:PASS");
    }
    let scenario = match scenario {
        ScenarioName::Download => Scenario::Download {
            pipeline: args.pipeline,
            window: args.window,
        },
        ScenarioName::Open => Scenario::Open,
        ScenarioName::LoginStorm => Scenario::LoginStorm,
        ScenarioName::Idle => Scenario::Idle {
            noop_every: args.noop_every,
            ramp: args.ramp,
        },
        ScenarioName::Mixed => Scenario::Mixed {
            lmtp: args
                .lmtp
                .context("mixed needs --lmtp ADDR:PORT (the LMTP server to deliver to)")?,
            batch: args.batch,
            message_size: args.message_size,
            domain: args.rcpt_domain.clone(),
        },
    };
    Ok(Settings {
        target: Target {
            addr,
            tls,
            connector,
            server_name: server_name(name)?,
            io_timeout: args.timeout,
        },
        users,
        scenario,
        concurrency: args.concurrency,
        count: args.count,
        duration: args.duration,
        server_pids: args.server_pids.clone(),
        label: args.label.clone(),
    })
}
