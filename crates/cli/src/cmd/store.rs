//! `correio store`: the stores beside the file backends (`[store.NAME]` tables), and
//! the one function every command uses to build them from the configuration, so
//! `serve`, `deliver`, `check` and the admin tools see the same stores.
//!
//! - `correio store migrate USER… --from TEMPLATE`: copies Maildir or mbox users into
//!   the store their `mail_location` names, keeping each message's UIDL (no client
//!   downloads again) and its first-retrieval date (EXPIRE keeps counting). The source
//!   is locked while it is read (no POP3 session can change it) and left in place;
//!   running it again skips what was copied.
//! - `correio store gc`: removes bodies no message points to (after `gc_grace`).
//! - `correio store stat USER…`: messages and octets, and who holds the mailbox.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use correio_server::config::{Config, Overrides, config_path};
use correio_store::{MailboxRef, Stores, TemplateVars};
use correio_store_pg::{PgStore, PgStoreConfig};

/// Builds every `[store.NAME]` of `config` (nothing connects yet).
pub fn open_stores(config: &Config) -> anyhow::Result<Stores> {
    let mut stores = Stores::new();
    for (name, table) in &config.stores {
        let kind = table.get("kind").and_then(|v| v.as_str()).unwrap_or("");
        match kind {
            "postgresql" | "postgres" | "pgsql" => {
                let c =
                    PgStoreConfig::from_table(table).with_context(|| format!("[store.{name}]"))?;
                let s = PgStore::open(name, c).with_context(|| format!("[store.{name}]"))?;
                stores.register(name, Arc::new(s));
            }
            "" => bail!("[store.{name}]: kind is missing (kind = \"postgresql\")"),
            other => bail!("[store.{name}]: unknown kind {other:?} (known: postgresql)"),
        }
    }
    Ok(stores)
}

/// The PostgreSQL stores of `config`, by name.
fn pg_stores(config: &Config) -> anyhow::Result<Vec<PgStore>> {
    let mut out = Vec::new();
    for (name, table) in &config.stores {
        let c = PgStoreConfig::from_table(table).with_context(|| format!("[store.{name}]"))?;
        out.push(PgStore::open(name, c).with_context(|| format!("[store.{name}]"))?);
    }
    Ok(out)
}

/// Arguments of `correio store`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's configuration [default: /etc/correio/correio.toml if it exists].
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Copy users' Maildir or mbox mail into the store their mail_location names,
    /// keeping UIDLs and retrieval dates. Safe to run again (copied messages are
    /// skipped); the source is left in place.
    Migrate(MigrateArgs),
    /// Remove message bodies no message points to any more.
    Gc(GcArgs),
    /// Show a mailbox: messages, octets, and the session holding it.
    Stat(StatArgs),
}

#[derive(Debug, clap::Args)]
struct MigrateArgs {
    /// Where the users' mail is now, as a template (`maildir:/var/mail/%u/Maildir`,
    /// `mbox:/var/mail/%u`, `maildir:~/Maildir`).
    #[arg(long)]
    from: String,
    /// The users (names as in the user database).
    #[arg(required = true)]
    users: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct GcArgs {
    /// Only bodies untouched this long [default: the store's gc_grace].
    #[arg(long, value_parser = humantime::parse_duration)]
    grace: Option<Duration>,
}

#[derive(Debug, clap::Args)]
struct StatArgs {
    /// The users.
    #[arg(required = true)]
    users: Vec<String>,
}

fn load(args: &Args) -> anyhow::Result<Config> {
    let file = config_path(args.config.as_deref());
    Config::load(file.as_deref(), &Overrides::default()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Runs `correio store`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = load(&args)?;
    match &args.command {
        Command::Migrate(m) => migrate(&config, m),
        Command::Gc(g) => {
            let stores = pg_stores(&config)?;
            if stores.is_empty() {
                bail!("the configuration has no [store.NAME] table");
            }
            for s in stores {
                let r = s.collect_garbage(g.grace)?;
                println!(
                    "{}: removed {} bodies ({} octets), kept {} in use",
                    s.name(),
                    r.bodies,
                    r.octets,
                    r.kept
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stat(st) => {
            let stores = open_stores(&config)?;
            let pg = pg_stores(&config)?;
            let users = correio_server::Accounts::open(&config)
                .map_err(|e| anyhow::anyhow!("opening the user database: {e}"))?;
            for user in &st.users {
                let (store, mailbox) = store_mailbox(&config, &stores, &users, user)?;
                let s = pg
                    .iter()
                    .find(|s| s.name() == store)
                    .context("store not found")?;
                let stat = s.stat(&mailbox)?;
                let holder = s.lease_holder(&mailbox)?;
                println!(
                    "{user}: {store}:{mailbox}: {} messages, {} octets{}",
                    stat.messages,
                    stat.wire_octets,
                    match holder {
                        Some((owner, left)) => format!(", held by {owner} for {left:.0}s more"),
                        None => String::new(),
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The store and mailbox `user`'s configured mail location names.
fn store_mailbox(
    config: &Config,
    stores: &Stores,
    users: &correio_server::Accounts,
    user: &str,
) -> anyhow::Result<(String, String)> {
    let record = users
        .find(user)
        .with_context(|| format!("unknown user {user:?}"))?;
    let template = record.mail_location().unwrap_or(&config.mail_location);
    let home = record.home_dir().map(PathBuf::from);
    let r = MailboxRef::from_template(
        template,
        &TemplateVars {
            user: &record.name,
            home: home.as_deref(),
        },
    )?;
    stores.knows(&r)?;
    match r {
        MailboxRef::Store { store, mailbox } => Ok((store, mailbox)),
        MailboxRef::File(l) => bail!(
            "{user}'s mail location is {l}, a file mailbox: point mail_location at a store first"
        ),
    }
}

fn migrate(config: &Config, m: &MigrateArgs) -> anyhow::Result<ExitCode> {
    let stores = open_stores(config)?;
    let pg = pg_stores(config)?;
    let users = correio_server::Accounts::open(config)
        .map_err(|e| anyhow::anyhow!("opening the user database: {e}"))?;
    let mut failed = false;
    for user in &m.users {
        let (store, mailbox) = store_mailbox(config, &stores, &users, user)?;
        let s = pg
            .iter()
            .find(|s| s.name() == store)
            .context("store not found")?;
        let record = users
            .find(user)
            .with_context(|| format!("unknown user {user:?}"))?;
        let home = record.home_dir().map(PathBuf::from);
        let from = correio_store::MailLocation::from_template(
            &m.from,
            &TemplateVars {
                user: &record.name,
                home: home.as_deref(),
            },
        )
        .with_context(|| format!("--from {:?}", m.from))?;
        match migrate_one(s, &mailbox, &from) {
            Ok((copied, skipped)) => println!(
                "{user}: {from} -> {store}:{mailbox}: {copied} copied, {skipped} already there"
            ),
            Err(e) => {
                eprintln!("correio store migrate: {user}: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn migrate_one(
    s: &PgStore,
    mailbox: &str,
    from: &correio_store::MailLocation,
) -> anyhow::Result<(usize, usize)> {
    let md = correio_store::open_maildrop(from).with_context(|| format!("opening {from}"))?;
    let dates = correio_store::expiry::read_retrievals(from).unwrap_or_default();
    let (mut copied, mut skipped) = (0, 0);
    for (i, m) in md.messages().iter().enumerate() {
        let mut r = md
            .open_message(i)
            .with_context(|| format!("reading message {} of {from}", i + 1))?;
        if s.import_message(mailbox, &m.uidl, dates.get(&m.uidl).copied(), &mut r)
            .with_context(|| format!("storing message {} ({})", i + 1, m.uidl))?
        {
            copied += 1;
        } else {
            skipped += 1;
        }
    }
    // The source stays locked until every message is checked in the store: no
    // session deletes one half-way. Dropping it without commit changes nothing there.
    let now: std::collections::HashSet<String> = s.uidls(mailbox)?.into_iter().collect();
    let missing = md
        .messages()
        .iter()
        .filter(|m| !now.contains(&m.uidl))
        .count();
    drop(md);
    if missing > 0 {
        bail!("{missing} messages of {from} are not in the store after the copy");
    }
    Ok((copied, skipped))
}
