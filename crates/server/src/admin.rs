//! The admin control socket: a Unix socket (mode 0660, owned by the service user and
//! group, so root and that group may use it) on which `correio admin` asks the running
//! server about its sessions and mailboxes and tells it to act.
//!
//! The protocol is one request line per connection (at most [`MAX_REQUEST`] octets) and
//! one JSON object in reply, then the server closes:
//!
//! | request | reply |
//! |---|---|
//! | `who` | `{"sessions":[{"id","user","remote","since","tls","bytes"}]}` |
//! | `kick USER` | `{"kicked":N}`: USER's sessions end with `-ERR [SYS/TEMP]`, no UPDATE |
//! | `mailbox USER` | `{"user","messages","octets","oldest","uidls":[...]}` |
//! | `expunge USER BEFORE` | `{"deleted":N,"kept_undated":M}`: messages whose `Date:` is before BEFORE (Unix seconds) |
//! | `reload` | `{"reloaded":true,"changed":[...]}` or `{"error":...}` |
//! | `status` | `{"pid","listeners":{kind: [bound address]},"config":{key: value}}` |
//!
//! Errors are `{"error":"..."}`. A mailbox in use by a session answers an error instead
//! of waiting. `expunge` never deletes a message whose date it cannot read.

use std::collections::HashMap;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixListener;
use tracing::{info, warn};

use crate::Server;

/// Longest request line.
pub const MAX_REQUEST: usize = 1024;

/// What the registry knows of one live session.
#[derive(Debug)]
pub(crate) struct SessionView {
    pub(crate) id: u64,
    pub(crate) remote: SocketAddr,
    pub(crate) since: SystemTime,
    pub(crate) user: Mutex<Option<String>>,
    pub(crate) tls: AtomicBool,
    pub(crate) bytes: AtomicU64,
    /// Notified to end the session (no UPDATE).
    pub(crate) kick: tokio::sync::Notify,
}

/// Every live session, by connection number.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    sessions: Mutex<HashMap<u64, Arc<SessionView>>>,
}

impl Registry {
    /// Registers a session; it is removed when the guard drops.
    pub(crate) fn register(
        self: &Arc<Self>,
        id: u64,
        remote: SocketAddr,
        tls: bool,
    ) -> (Arc<SessionView>, Registered) {
        let view = Arc::new(SessionView {
            id,
            remote,
            since: SystemTime::now(),
            user: Mutex::new(None),
            tls: AtomicBool::new(tls),
            bytes: AtomicU64::new(0),
            kick: tokio::sync::Notify::new(),
        });
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Arc::clone(&view));
        (
            view,
            Registered {
                registry: Arc::clone(self),
                id,
            },
        )
    }

    fn all(&self) -> Vec<Arc<SessionView>> {
        let mut v: Vec<_> = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }
}

/// Removes a session from the registry when dropped.
#[derive(Debug)]
pub(crate) struct Registered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// What `reload` runs (the same as SIGHUP); returns the changed keys.
pub type ReloadFn = Arc<dyn Fn() -> Result<Vec<String>, String> + Send + Sync>;

/// Serves the control socket until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    server: Server,
    reload: ReloadFn,
    shutdown: impl std::future::Future,
) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let server = server.clone();
        let reload = Arc::clone(&reload);
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let read = tokio::time::timeout(
                Duration::from_secs(10),
                BufReader::new(r.take(MAX_REQUEST as u64)).read_line(&mut line),
            )
            .await;
            let reply = match read {
                Ok(Ok(_)) if line.ends_with('\n') => {
                    let request = line.trim_end().to_owned();
                    let server2 = server.clone();
                    // Mailbox work blocks (file I/O and locks).
                    tokio::task::spawn_blocking(move || handle(&server2, &request, &reload))
                        .await
                        .unwrap_or_else(|e| json!({"error": e.to_string()}))
                }
                _ => json!({"error": "one request line of at most 1024 octets, ending in LF"}),
            };
            let mut text = reply.to_string();
            text.push('\n');
            let _ = w.write_all(text.as_bytes()).await;
            let _ = w.shutdown().await;
        });
    }
}

/// Answers one request.
pub fn handle(server: &Server, request: &str, reload: &ReloadFn) -> Value {
    let mut words = request.split_whitespace();
    let verb = words.next().unwrap_or("");
    let args: Vec<&str> = words.collect();
    info!(target: "correio::admin", request = %verb, "admin request");
    match (verb, args.as_slice()) {
        ("who", []) => who(server),
        ("kick", [user]) => {
            let mut n = 0;
            for s in server.shared.registry.all() {
                let is_user = s
                    .user
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_deref()
                    .is_some_and(|u| u.eq_ignore_ascii_case(user));
                if is_user {
                    s.kick.notify_one();
                    n += 1;
                }
            }
            json!({ "kicked": n })
        }
        ("mailbox", [user]) => mailbox(server, user),
        ("expunge", [user, before]) => match before.parse::<u64>() {
            Ok(secs) => expunge(server, user, UNIX_EPOCH + Duration::from_secs(secs)),
            Err(_) => json!({"error": "BEFORE is Unix seconds"}),
        },
        ("reload", []) => match reload() {
            Ok(changed) => json!({"reloaded": true, "changed": changed}),
            Err(e) => json!({"error": e}),
        },
        ("status", []) => status(server),
        _ => {
            json!({"error": format!("unknown request {verb:?}; known: who, kick USER, mailbox USER, expunge USER BEFORE, reload, status")})
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn who(server: &Server) -> Value {
    let sessions: Vec<Value> = server
        .shared
        .registry
        .all()
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "user": *s.user.lock().unwrap_or_else(|p| p.into_inner()),
                "remote": s.remote.to_string(),
                "since": unix(s.since),
                "tls": s.tls.load(Ordering::Relaxed),
                "bytes": s.bytes.load(Ordering::Relaxed),
            })
        })
        .collect();
    json!({ "sessions": sessions })
}

fn status(server: &Server) -> Value {
    let c = server.config();
    let config: serde_json::Map<String, Value> = c
        .settings()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v)))
        .collect();
    let accounts = server.accounts();
    let cache = accounts.source().cache_stats();
    json!({
        "pid": std::process::id(),
        "sessions": server.shared.registry.all().len(),
        "users": {
            "backend": accounts.source().kind(),
            "cache_hits": cache.hits,
            "cache_misses": cache.misses,
        },
        "tls": server.has_tls(),
        "listeners": listeners(server, &c),
        "config": config,
    })
}

/// The POP3 listeners by kind: the addresses bound once the server runs (a port 0 of
/// the configuration resolved), else the configured ones.
fn listeners(server: &Server, c: &crate::config::Config) -> Value {
    let bound = server
        .shared
        .bound
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut out = serde_json::Map::new();
    for (name, configured) in [
        ("pop3", &c.pop3),
        ("pop3s", &c.pop3s),
        ("pop3_proxy", &c.pop3_proxy),
        ("pop3s_proxy", &c.pop3s_proxy),
    ] {
        let addrs: Vec<String> = match &bound {
            Some(b) => b
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, a)| a.to_string())
                .collect(),
            None => configured.iter().map(ToString::to_string).collect(),
        };
        out.insert(name.to_owned(), json!(addrs));
    }
    Value::Object(out)
}

/// Opens `user`'s maildrop (taking its session lock; a session holding it is an
/// error, not a wait).
fn open(server: &Server, user: &str) -> Result<(String, Box<dyn correio_store::Maildrop>), Value> {
    let accounts = server.accounts();
    let Some(record) = accounts.find(user) else {
        return Err(json!({"error": format!("unknown user {user:?}")}));
    };
    let config = server.config();
    let template = record
        .mail_location()
        .unwrap_or(&config.mail_location)
        .to_owned();
    let home = record.home_dir().map(std::path::PathBuf::from);
    let location = correio_store::MailboxRef::from_template(
        &template,
        &correio_store::TemplateVars {
            user: &record.name,
            home: home.as_deref(),
        },
    )
    .map_err(|e| json!({"error": e.to_string()}))?;
    match server.stores().open(&location) {
        Ok(md) => Ok((record.name, md)),
        Err(correio_store::StoreError::InUse) => Err(json!({
            "error": format!("the mailbox of {} is in use by a session (kick it first)", record.name)
        })),
        Err(e) => Err(json!({"error": format!("{location}: {e}")})),
    }
}

/// The `Date:` of message `i`, from its header (at most 64 KiB read).
fn message_date(md: &dyn correio_store::Maildrop, i: usize) -> Option<SystemTime> {
    let mut reader = md.open_message(i).ok()?;
    let mut head = vec![0u8; 64 * 1024];
    let mut n = 0;
    while n < head.len() {
        match reader.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
        if head[..n].windows(2).any(|w| w == b"\n\n")
            || head[..n].windows(4).any(|w| w == b"\r\n\r\n")
        {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head[..n]);
    let mut value: Option<String> = None;
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        if let Some(v) = &mut value {
            if line.starts_with([' ', '\t']) {
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            break;
        }
        if line.len() > 5 && line[..5].eq_ignore_ascii_case("date:") {
            value = Some(line[5..].trim().to_owned());
        }
    }
    let v = value?;
    // Comments such as "(UTC)" are not part of RFC 2822's grammar for the parser.
    let v = match v.find('(') {
        Some(i) => v[..i].trim().to_owned(),
        None => v,
    };
    let t = time::OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc2822).ok()?;
    let secs = u64::try_from(t.unix_timestamp()).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

fn mailbox(server: &Server, user: &str) -> Value {
    let (name, md) = match open(server, user) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let oldest = (0..md.messages().len())
        .filter_map(|i| message_date(md.as_ref(), i))
        .min()
        .map(unix);
    // Dropping the maildrop releases the lock and changes nothing.
    json!({
        "user": name,
        "messages": md.messages().len(),
        "octets": md.total_size(),
        "oldest": oldest,
        "uidls": md.messages().iter().map(|m| m.uidl.clone()).collect::<Vec<_>>(),
    })
}

fn expunge(server: &Server, user: &str, before: SystemTime) -> Value {
    let (name, md) = match open(server, user) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let mut doomed = Vec::new();
    let mut undated = 0;
    for i in 0..md.messages().len() {
        match message_date(md.as_ref(), i) {
            Some(t) if t < before => doomed.push(i),
            Some(_) => {}
            None => undated += 1,
        }
    }
    let n = doomed.len();
    match md.commit(&doomed) {
        Ok(_) => {
            info!(target: "correio::admin", user = %name, deleted = n, "expunged");
            json!({"user": name, "deleted": n, "kept_undated": undated})
        }
        Err(e) => json!({"error": e.to_string()}),
    }
}
