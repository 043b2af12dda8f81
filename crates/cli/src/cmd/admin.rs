//! `correio admin`: asks the running server over its control socket (`[admin]
//! socket`, default `<data_dir>/admin.sock`; root and the service group may use it):
//! who is logged in, end a user's sessions, a mailbox's summary, delete a user's
//! messages older than a date, reload, and the state of the listeners and the
//! configuration in force. One request, one JSON reply (see
//! `correio_server::admin`); printed readably, or raw with `--json`.
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use correio_server::config::{Config, Overrides, config_path};
use serde_json::Value;

/// Arguments of `correio admin`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    /// The server's configuration (for `[admin] socket`) [default:
    /// /etc/correio/correio.toml if it exists].
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (overrides `data_dir`).
    #[arg(long, global = true, value_name = "DIR")]
    data: Option<PathBuf>,
    /// The control socket, overriding the configuration.
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print the server's JSON reply as it is.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Sessions open now: user, address, since, TLS, bytes sent.
    Who,
    /// End every session of USER (no UPDATE: nothing is deleted).
    Kick {
        /// The user.
        user: String,
    },
    /// A mailbox's summary: messages, octets, oldest Date:, UIDLs.
    Mailbox {
        /// The user.
        user: String,
    },
    /// Delete USER's messages whose Date: header is before DATE (messages without a
    /// readable date are kept).
    Expunge {
        /// The user.
        user: String,
        /// `YYYY-MM-DD` (midnight UTC) or Unix seconds.
        #[arg(long)]
        before: String,
    },
    /// Reload the configuration, as SIGHUP does.
    Reload,
    /// Listeners, sessions and the configuration in force.
    Status,
}

fn before_seconds(s: &str) -> anyhow::Result<u64> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(s, &fmt)
        .with_context(|| format!("--before {s:?} is not YYYY-MM-DD or Unix seconds"))?;
    let t = d.midnight().assume_utc().unix_timestamp();
    u64::try_from(t).map_err(|_| anyhow::anyhow!("--before {s:?} is before 1970"))
}

/// Runs `correio admin`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let socket = match &args.socket {
        Some(s) => s.clone(),
        None => {
            let overrides = Overrides {
                data_dir: args.data.clone(),
                ..Overrides::default()
            };
            let file = config_path(args.config.as_deref());
            let c = Config::load(file.as_deref(), &overrides).map_err(anyhow::Error::msg)?;
            c.admin_socket
                .context("the configuration turns the admin socket off ([admin] socket = \"\")")?
        }
    };
    let request = match &args.action {
        Action::Who => "who".to_owned(),
        Action::Kick { user } => format!("kick {user}"),
        Action::Mailbox { user } => format!("mailbox {user}"),
        Action::Expunge { user, before } => format!("expunge {user} {}", before_seconds(before)?),
        Action::Reload => "reload".to_owned(),
        Action::Status => "status".to_owned(),
    };
    if request.contains(['\n', '\r']) || request.split_whitespace().count() > 3 {
        anyhow::bail!("a user name cannot contain spaces or line ends");
    }
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).with_context(|| {
        format!(
            "connecting to {} (is `correio serve` running, and are you root or in its group?)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let reply: Value = serde_json::from_str(&line).context("the server's reply is not JSON")?;
    if args.json {
        println!("{}", line.trim_end());
    } else {
        print_human(&args.action, &reply);
    }
    Ok(if reply.get("error").is_some() {
        if !args.json {
            eprintln!(
                "correio admin: {}",
                reply["error"].as_str().unwrap_or("error")
            );
        }
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_human(action: &Action, r: &Value) {
    if r.get("error").is_some() {
        return;
    }
    match action {
        Action::Who => {
            println!(
                "{:<6} {:<28} {:<24} {:>10} {:<5} {:>10}",
                "ID", "USER", "REMOTE", "SINCE", "TLS", "BYTES"
            );
            for s in r["sessions"].as_array().into_iter().flatten() {
                println!(
                    "{:<6} {:<28} {:<24} {:>10} {:<5} {:>10}",
                    s["id"],
                    s["user"].as_str().unwrap_or("-"),
                    s["remote"].as_str().unwrap_or(""),
                    s["since"],
                    s["tls"],
                    s["bytes"]
                );
            }
        }
        Action::Kick { user } => println!("ended {} session(s) of {user}", r["kicked"]),
        Action::Mailbox { .. } => {
            println!("user:     {}", r["user"].as_str().unwrap_or(""));
            println!("messages: {}", r["messages"]);
            println!("octets:   {}", r["octets"]);
            println!("oldest:   {}", r["oldest"]);
            for u in r["uidls"].as_array().into_iter().flatten() {
                println!("  {}", u.as_str().unwrap_or(""));
            }
        }
        Action::Expunge { .. } => println!(
            "deleted {} message(s) of {}; {} without a readable date kept",
            r["deleted"],
            r["user"].as_str().unwrap_or(""),
            r["kept_undated"]
        ),
        Action::Reload => println!("reloaded; changed: {}", r["changed"]),
        Action::Status => println!("{}", serde_json::to_string_pretty(r).unwrap_or_default()),
    }
}
