//! Accounts: the TOML configuration file and its resolution into [`Account`]s.
//!
//! ```toml
//! [defaults]                  # applies to every account unless it says otherwise
//! tls = "implicit"            # implicit | starttls | none
//! to = "maildir:~/Mail"
//! keep = true
//!
//! [account.work]
//! host = "pop.example.org"
//! user = "me@example.org"
//! password_command = "pass show mail/work"
//! delete_after_days = 30
//! ```
//!
//! Every key can appear in `[defaults]` or in an account. Modes: `keep = true`
//! (default), `delete = true`, or `delete_after_days = N`. Size limit: `max_size`
//! (bytes) with `oversize = "skip" | "delete"`. `headers_only = true` fetches
//! `TOP n 0`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::target::{TargetSpec, expand_home};
use super::{Account, AuthMethod, Mode, Oversize, TlsMode};
use crate::Window;
use crate::tls::{Trust, parse_fingerprint};

/// One account's settings as written in the file (all optional: merged with
/// `[defaults]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// Server host name.
    pub host: Option<String>,
    /// Port (default 995 for implicit TLS, else 110).
    pub port: Option<u16>,
    /// Login name.
    pub user: Option<String>,
    /// `implicit`, `starttls` or `none`.
    pub tls: Option<String>,
    /// `auto` (default; see [`auto_method`](super::auto_method)), `user`, `apop`, or
    /// a SASL mechanism name (`plain`, `login`, `cram-md5`, `scram-sha-256`,
    /// `xoauth2`, `oauthbearer`). Also `--auth` on the command line.
    pub auth: Option<String>,
    /// A command whose first output line is the password (or OAuth2 access token).
    pub password_command: Option<String>,
    /// Pinned SHA-256 certificate fingerprint.
    pub fingerprint: Option<String>,
    /// Extra CA certificate file (PEM).
    pub ca: Option<String>,
    /// Leave messages on the server (the default).
    pub keep: Option<bool>,
    /// Delete messages once they are stored.
    pub delete: Option<bool>,
    /// Delete messages this many days after they were first stored.
    pub delete_after_days: Option<u32>,
    /// Messages larger than this (bytes, by LIST) are not downloaded.
    pub max_size: Option<u64>,
    /// `skip` (default) or `delete` for messages over `max_size`.
    pub oversize: Option<String>,
    /// Fetch only headers (`TOP n 0`).
    pub headers_only: Option<bool>,
    /// Target: `maildir:DIR`, `mbox:FILE`, `eml:DIR`, `mda:CMD`, `lmtp:ADDR:RCPT`.
    pub to: Option<String>,
    /// Use PIPELINING when offered (default true).
    pub pipelining: Option<bool>,
    /// Read timeout, e.g. `60s`.
    pub timeout: Option<String>,
    /// Most time one response (a whole message) may take (default 10m).
    pub response_timeout: Option<String>,
    /// Most time a whole session may take (default 1h).
    pub session_timeout: Option<String>,
    /// Allow a password over an unencrypted connection to a non-loopback host.
    pub allow_cleartext: Option<bool>,
    /// Where state files live (default `~/.local/state/correio`).
    pub state_dir: Option<String>,
    /// OAuth2 settings (`[account.NAME.oauth2]`); see `crate::oauth`.
    pub oauth2: Option<crate::oauth::OAuthSettings>,
    /// IMAP/SMTP destination: command printing its password.
    pub to_password_command: Option<String>,
    /// IMAP/SMTP destination: `auto`, `plain`, `login`, `xoauth2`, `oauthbearer`
    /// (the last two use this account's OAuth2 tokens).
    pub to_auth: Option<String>,
    /// SMTP destination: the recipient.
    pub to_recipient: Option<String>,
    /// IMAP destination: store messages as read (`\Seen`).
    pub to_seen: Option<bool>,
    /// IMAP destination: allow `imap://` without STARTTLS.
    pub to_insecure: Option<bool>,
    /// IMAP/SMTP destination: extra CA file (PEM).
    pub to_ca: Option<String>,
    /// IMAP/SMTP destination: pinned SHA-256 certificate fingerprint.
    pub to_fingerprint: Option<String>,
    /// SMTP destination: on a permanent (5xx) refusal `keep` the message on the
    /// server (default) or `delete` it.
    pub to_rejected: Option<String>,
}

impl AccountConfig {
    /// Fields of `self`, falling back to `defaults`.
    pub fn merged(&self, defaults: &AccountConfig) -> AccountConfig {
        macro_rules! pick {
            ($($f:ident),*) => { AccountConfig { $($f: self.$f.clone().or_else(|| defaults.$f.clone()),)* } };
        }
        pick!(
            host,
            port,
            user,
            tls,
            auth,
            password_command,
            fingerprint,
            ca,
            keep,
            delete,
            delete_after_days,
            max_size,
            oversize,
            headers_only,
            to,
            pipelining,
            timeout,
            response_timeout,
            session_timeout,
            allow_cleartext,
            state_dir,
            oauth2,
            to_password_command,
            to_auth,
            to_recipient,
            to_seen,
            to_insecure,
            to_ca,
            to_fingerprint,
            to_rejected
        )
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Settings shared by all accounts.
    #[serde(default)]
    pub defaults: AccountConfig,
    /// Accounts by name.
    #[serde(default)]
    pub account: BTreeMap<String, AccountConfig>,
}

impl ConfigFile {
    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<ConfigFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The default state directory.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("correio");
    }
    expand_home("~/.local/state/correio")
}

/// Resolves merged settings into an account, checking every value.
/// The state file's tag for a destination: the first 12 hex digits of the SHA-256 of
/// its canonical form (`maildir:/home/me/Mail`), so each destination of an account has
/// its own state and a new destination gets every message.
pub fn destination_tag(target: &TargetSpec) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(target.to_string().as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The state file an account had before state files were per destination
/// (`USER@HOST_PORT.state`), for the state file `USER@HOST_PORT.TAG.state`.
pub fn legacy_state_file(state_file: &Path) -> Option<PathBuf> {
    let name = state_file.file_name()?.to_str()?;
    let stem = name.strip_suffix(".state")?;
    let (base, tag) = stem.rsplit_once('.')?;
    (tag.len() == 12 && tag.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| state_file.with_file_name(format!("{base}.state")))
}

pub fn resolve(name: &str, c: &AccountConfig) -> Result<Account, String> {
    let err = |m: String| format!("account {name}: {m}");
    let host = c.host.clone().ok_or_else(|| err("no host".into()))?;
    let user = c.user.clone().ok_or_else(|| err("no user".into()))?;
    let tls = match c.tls.as_deref().unwrap_or("implicit") {
        "implicit" | "tls" | "pop3s" => TlsMode::Implicit,
        "starttls" | "stls" => TlsMode::StartTls,
        "none" | "plain" => TlsMode::None,
        other => {
            return Err(err(format!(
                "tls must be implicit, starttls or none, not {other:?}"
            )));
        }
    };
    let port = c
        .port
        .unwrap_or(if tls == TlsMode::Implicit { 995 } else { 110 });
    let trust = match (&c.fingerprint, &c.ca) {
        (Some(_), Some(_)) => return Err(err("give fingerprint or ca, not both".into())),
        (Some(fp), None) => {
            Trust::Fingerprint(parse_fingerprint(fp).map_err(|e| err(e.to_string()))?)
        }
        (None, Some(ca)) => Trust::ExtraCa(expand_home(ca)),
        (None, None) => Trust::System,
    };
    let auth = match c
        .auth
        .as_deref()
        .unwrap_or("auto")
        .to_ascii_lowercase()
        .as_str()
    {
        "auto" => AuthMethod::Auto,
        "user" | "pass" => AuthMethod::User,
        "apop" => AuthMethod::Apop,
        m @ ("plain" | "login" | "cram-md5" | "scram-sha-256" | "xoauth2" | "oauthbearer") => {
            AuthMethod::Sasl(m.to_ascii_uppercase())
        }
        other => return Err(err(format!("unknown auth method {other:?}"))),
    };
    let mode = match (c.delete, c.delete_after_days, c.keep) {
        (Some(true), Some(_), _) => {
            return Err(err("delete and delete_after_days exclude each other".into()));
        }
        (Some(true), None, Some(true)) => {
            return Err(err("keep and delete exclude each other".into()));
        }
        (Some(true), None, _) => Mode::Delete,
        (_, Some(0), _) => Mode::Delete,
        (_, Some(n), _) => Mode::DeleteAfterDays(n),
        _ => Mode::Keep,
    };
    let oversize = match c.oversize.as_deref().unwrap_or("skip") {
        "skip" => Oversize::Skip,
        "delete" => Oversize::Delete,
        other => {
            return Err(err(format!(
                "oversize must be skip or delete, not {other:?}"
            )));
        }
    };
    let to = c.to.clone().unwrap_or_else(|| "maildir:~/Maildir".into());
    let mut target = TargetSpec::parse(&to).map_err(err)?;
    let timeout = match &c.timeout {
        Some(t) => humantime::parse_duration(t).map_err(|e| err(format!("timeout: {e}")))?,
        None => crate::DEFAULT_TIMEOUT,
    };
    if timeout < Duration::from_millis(100) {
        return Err(err("timeout is too short".into()));
    }
    let deadline = |key: &str, v: &Option<String>, default: Duration| match v.as_deref() {
        None => Ok(Some(default)),
        Some("none") => Ok(None),
        Some(t) => match humantime::parse_duration(t) {
            Ok(d) if d >= Duration::from_millis(100) => Ok(Some(d)),
            Ok(_) => Err(err(format!("{key} is too short"))),
            Err(e) => Err(err(format!("{key}: {e}"))),
        },
    };
    let response_deadline = deadline(
        "response_timeout",
        &c.response_timeout,
        super::DEFAULT_RESPONSE_DEADLINE,
    )?;
    let session_deadline = deadline(
        "session_timeout",
        &c.session_timeout,
        super::DEFAULT_SESSION_DEADLINE,
    )?;
    let state_dir = c
        .state_dir
        .as_deref()
        .map(expand_home)
        .unwrap_or_else(default_state_dir);
    let safe: String = format!("{user}@{host}:{port}")
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || "@._-".contains(ch) {
                ch
            } else {
                '_'
            }
        })
        .collect();
    // State per account and destination (a new destination gets every message);
    // OAuth2 tokens per account.
    let state_file = state_dir.join(format!("{safe}.{}.state", destination_tag(&target)));
    let mut uses = vec![crate::oauth::Use::Pop3];
    if let TargetSpec::Remote(r) = &mut target {
        let tls_none = c.to_insecure == Some(true) && r.tls == super::remote::RemoteTls::StartTls;
        if tls_none && r.kind == super::remote::RemoteKind::Imap {
            r.tls = super::remote::RemoteTls::None;
        }
        r.insecure = c.to_insecure.unwrap_or(false);
        r.password_command = c.to_password_command.clone();
        if let Some(a) = &c.to_auth {
            r.auth = a.to_ascii_lowercase();
        }
        if let Some(rc) = &c.to_recipient {
            r.recipient = Some(rc.clone());
        }
        r.seen = c.to_seen.unwrap_or(false);
        r.ca = c.to_ca.clone();
        r.fingerprint = c.to_fingerprint.clone();
        if let Some(x) = &c.to_rejected {
            r.rejected = x.clone();
        }
        r.uid_log = Some(state_file.with_extension("imap-uids"));
        r.validate().map_err(err)?;
        if r.uses_oauth() {
            if c.oauth2.is_none() {
                return Err(err(format!(
                    "to_auth = {:?} needs the account's [oauth2] settings",
                    r.auth
                )));
            }
            uses.push(match r.kind {
                super::remote::RemoteKind::Imap => crate::oauth::Use::Imap,
                super::remote::RemoteKind::Smtp => crate::oauth::Use::Smtp,
            });
        }
    }
    let oauth = match &c.oauth2 {
        Some(o) => Some(
            crate::oauth::OAuth::resolve(
                name,
                o,
                state_dir.join(format!("{safe}.oauth2.json")),
                &uses,
            )
            .map_err(err)?,
        ),
        None => None,
    };
    Ok(Account {
        oauth,
        name: name.to_owned(),
        host,
        port,
        user,
        tls,
        trust,
        auth,
        password_command: c.password_command.clone(),
        password: None,
        mode,
        max_size: c.max_size,
        oversize,
        headers_only: c.headers_only.unwrap_or(false),
        target,
        state_file,
        pipelining: c.pipelining.unwrap_or(true),
        window: Window::default(),
        timeout,
        response_deadline,
        session_deadline,
        allow_cleartext: c.allow_cleartext.unwrap_or(false),
        fetch_all: false,
        check_only: false,
        trace: false,
        batch_messages: 64,
        batch_bytes: 32 << 20,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_merge_and_resolve() {
        let f: ConfigFile = toml::from_str(
            r#"
            [defaults]
            tls = "starttls"
            to = "mbox:/tmp/x"
            state_dir = "/tmp/st"
            [account.a]
            host = "h"
            user = "u"
            delete_after_days = 7
            [account.b]
            host = "h2"
            user = "u2"
            tls = "implicit"
            to = "eml:/tmp/e"
            "#,
        )
        .unwrap();
        let a = resolve("a", &f.account["a"].merged(&f.defaults)).unwrap();
        assert_eq!(a.tls, TlsMode::StartTls);
        assert_eq!(a.port, 110);
        assert_eq!(a.mode, Mode::DeleteAfterDays(7));
        assert_eq!(a.target, TargetSpec::Mbox("/tmp/x".into()));
        let tag = destination_tag(&TargetSpec::Mbox("/tmp/x".into()));
        assert_eq!(
            a.state_file,
            PathBuf::from(format!("/tmp/st/u@h_110.{tag}.state"))
        );
        assert_eq!(
            legacy_state_file(&a.state_file),
            Some(PathBuf::from("/tmp/st/u@h_110.state"))
        );
        let b = resolve("b", &f.account["b"].merged(&f.defaults)).unwrap();
        assert_eq!(b.port, 995);
        assert_eq!(b.mode, Mode::Keep);
    }

    #[test]
    fn bad_values_are_errors() {
        let base = AccountConfig {
            host: Some("h".into()),
            user: Some("u".into()),
            ..Default::default()
        };
        for bad in [
            AccountConfig {
                tls: Some("ssl3".into()),
                ..base.clone()
            },
            AccountConfig {
                delete: Some(true),
                keep: Some(true),
                ..base.clone()
            },
            AccountConfig {
                to: Some("nowhere".into()),
                ..base.clone()
            },
            AccountConfig {
                fingerprint: Some("12".into()),
                ..base.clone()
            },
            AccountConfig {
                host: None,
                ..base.clone()
            },
        ] {
            assert!(resolve("x", &bad).is_err(), "{bad:?}");
        }
        assert!(toml::from_str::<ConfigFile>("[account.x]\nhots = 'h'\n").is_err());
    }
}
