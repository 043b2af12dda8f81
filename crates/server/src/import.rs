//! `correio import dovecot`: reads a Dovecot 2.3 configuration and writes the
//! equivalent `correio.toml`, so a server moves from Dovecot to Correio on the same
//! mail, users file and certificate without its POP3 clients downloading anything
//! again.
//!
//! The configuration is read through `doveconf -n -P -c FILE` when `doveconf` is
//! there (Dovecot's own reading: includes, `$variables`, defaults left out), and
//! otherwise parsed here (`doveconf` has the syntax); when both work, warnings name
//! the file and line each setting was written on. Dovecot's defaults apply to what is
//! not set, as in Dovecot.
//!
//! What is translated (each value in the output names the Dovecot setting it came
//! from):
//!
//! | Dovecot | Correio |
//! |---|---|
//! | `passdb`/`userdb { driver = passwd-file  args = [scheme=S] [username_format=F] PATH }` | `users_file` (same format; `{SCHEME}` prefixes are read per line) |
//! | `userdb { driver = static  args = uid=U gid=G home=H }`, `mail_uid`, `mail_gid`, `mail_home` | `user`, `group`; `H` replaces `~`/`%h` in `mail_location` |
//! | the uid/gid fields of the users file, when all users share one | `user`, `group` |
//! | `mail_location = maildir:PATH` / `mbox:PATH[:INBOX=FILE]` | `mail_location` (`%u %n %d %h %L ~` kept; `maildir:...:INBOX=P` serves `P`) |
//! | `ssl_cert = <FILE`, `ssl_key = <FILE` | `[tls] cert`, `key` |
//! | `listen`, `service pop3-login { inet_listener NAME { address port ssl } }` | `[listen] pop3`, `pop3s` (Dovecot's default listeners 110 and 995 included) |
//! | `inet_listener { haproxy = yes }`, `haproxy_trusted_networks` | `[listen] pop3_proxy`, `pop3s_proxy`, `trusted_proxies` |
//! | `service lmtp { unix_listener /ABSOLUTE/PATH { } }` or `inet_listener` (with lmtp in `protocols`) | `[listen] lmtp` |
//! | `disable_plaintext_auth`, `ssl = required` | `allow_cleartext_login` |
//! | `login_trusted_networks` | `trusted_networks` |
//! | `auth_mechanisms` (`plain login cram-md5 scram-sha-256 apop`) | `[pop3] mechanisms`, `apop` |
//! | `auth_username_format` (with the passwd-file's `username_format`) | `[auth] username_format` (`%u %Lu %n %Ln`) |
//! | `auth_default_realm` | `[auth] default_domain` |
//! | `auth_failure_delay` | `[auth] failure_delay` |
//! | `login_greeting`, `hostname` | `[pop3] greeting`, `hostname` |
//! | `pop3_uidl_format = %08Xu%08Xv` (the default) | nothing to set: Correio serves the UIDs of `dovecot-uidlist` in that form, and a UIDL Dovecot stored for a message (`P` records: `pop3_save_uidl`, migrations) as it is |
//!
//! Everything else that changes what clients see is a warning (printed, and listed at
//! the top of the output): SQL, LDAP, PAM and system-user databases (Correio has only
//! the users file; SQL is issue #11), other `pop3_uidl_format`s, `CONTROL=` (the uidlist
//! is then elsewhere), mbox UIDLs (Dovecot's come from `X-UID` headers, Correio's from
//! the messages), mail storage formats other than Maildir and mbox, per-address
//! (`local`/`remote`) blocks, SNI certificates, client certificates. Settings with no
//! meaning for Correio (logging, Dovecot's own paths and processes, IMAP, Sieve) are
//! left out silently.

mod doveconf;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

pub use doveconf::{FsSource, Item, Location, ParseError, Section, Setting, Source};

use crate::config::{Config, Overrides};

/// The Dovecot configuration read when none is named.
pub const DEFAULT_DOVECOT_CONF: &str = "/etc/dovecot/dovecot.conf";
/// The data directory written into the translation when none is named.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/correio";

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The `data_dir` of the translation (Correio's own state).
    pub data_dir: PathBuf,
    /// Run this `doveconf` first (`doveconf -n -P -c FILE`); `None`: parse the file
    /// only.
    pub doveconf: Option<PathBuf>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            doveconf: Some(PathBuf::from("doveconf")),
        }
    }
}

/// The result: the TOML text and what could not be translated.
#[derive(Debug, Clone)]
pub struct Translation {
    /// A complete `correio.toml`.
    pub toml: String,
    /// Settings that change behaviour and were not translated (one line each, with
    /// the file and line when known).
    pub warnings: Vec<String>,
    /// Facts worth knowing that need no action (also in the file's header).
    pub notes: Vec<String>,
}

/// Why nothing could be translated.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file cannot be read or is not Dovecot's syntax.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// The translation did not load as a Correio configuration (a bug here).
    #[error("internal error: the translation is not a valid correio.toml: {0}")]
    Invalid(String),
}

/// What the translator may look up outside the configuration (the users file and
/// the system's accounts); replaced in tests and the fuzzer.
pub trait Env {
    /// The text of the users file at `path`, or why it cannot be read.
    fn read_users(&self, path: &Path) -> Result<String, String>;
    /// The name and primary gid of the account with this uid.
    fn user_by_uid(&self, uid: u32) -> Option<(String, u32)>;
    /// The uid and primary gid of the account with this name.
    fn user_by_name(&self, name: &str) -> Option<(u32, u32)>;
    /// The name of the group with this gid.
    fn group_by_gid(&self, gid: u32) -> Option<String>;
}

/// The real system.
#[derive(Debug, Default)]
pub struct SystemEnv;

impl Env for SystemEnv {
    fn read_users(&self, path: &Path) -> Result<String, String> {
        match std::fs::metadata(path) {
            Ok(m) if m.len() > correio_auth::userdb::MAX_USERS_FILE_BYTES => {
                return Err("too large".into());
            }
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        std::fs::read(path)
            .map_err(|e| e.to_string())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }
    fn user_by_uid(&self, uid: u32) -> Option<(String, u32)> {
        let u = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok()??;
        Some((u.name, u.gid.as_raw()))
    }
    fn user_by_name(&self, name: &str) -> Option<(u32, u32)> {
        let u = nix::unistd::User::from_name(name).ok()??;
        Some((u.uid.as_raw(), u.gid.as_raw()))
    }
    fn group_by_gid(&self, gid: u32) -> Option<String> {
        nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
            .ok()?
            .map(|g| g.name)
    }
}

/// Reads the Dovecot configuration at `path` (through `doveconf` when
/// `opts.doveconf` names one that works) and translates it.
pub fn import_dovecot(path: &Path, opts: &ImportOptions) -> Result<Translation, ImportError> {
    let own = doveconf::parse_file(path, &mut FsSource);
    let mut pre_warnings = Vec::new();
    let mut read_with = format!("read from {} directly", path.display());
    let mut items = None;
    if let Some(bin) = &opts.doveconf {
        match run_doveconf(bin, path) {
            DoveconfRun::Ok(text) => {
                let name = PathBuf::from(format!("doveconf -n -c {}", path.display()));
                match doveconf::parse_str(&text, &name, &mut NoFiles) {
                    Ok(mut dc) => {
                        if let Ok(own) = &own {
                            relocate(&mut dc, &index_locations(own));
                        }
                        read_with = format!("read through `doveconf -n -c {}`", path.display());
                        items = Some(dc);
                    }
                    Err(e) => pre_warnings.push(format!(
                        "cannot read doveconf's output ({e}); translated from the file as read"
                    )),
                }
            }
            DoveconfRun::Missing => {}
            DoveconfRun::Failed(msg) => {
                if own.is_ok() {
                    pre_warnings.push(format!(
                        "doveconf refused the file ({msg}); translated from the file as read"
                    ));
                }
            }
        }
    }
    let items = match items {
        Some(i) => i,
        None => own?,
    };
    let mut t = translate(&items, path, &opts.data_dir, &SystemEnv, &read_with);
    pre_warnings.append(&mut t.warnings);
    t.warnings = pre_warnings;
    // The header lists the warnings too: render again with all of them.
    t.toml = render_header(path, &read_with, &t.warnings, &t.notes) + body_of(&t.toml);
    Config::from_toml(&t.toml, &Overrides::default())
        .map_err(|e| ImportError::Invalid(e.to_string()))?;
    Ok(t)
}

enum DoveconfRun {
    Ok(String),
    Missing,
    Failed(String),
}

fn run_doveconf(bin: &Path, conf: &Path) -> DoveconfRun {
    let out = match Command::new(bin)
        .arg("-n")
        .arg("-P")
        .arg("-c")
        .arg(conf)
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return DoveconfRun::Missing,
        Err(e) => return DoveconfRun::Failed(format!("cannot run {}: {e}", bin.display())),
    };
    if out.status.success() {
        DoveconfRun::Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        DoveconfRun::Failed(format!("{}: {}", out.status, first.trim()))
    }
}

/// A source with no files (doveconf's output includes nothing).
struct NoFiles;

impl Source for NoFiles {
    fn read(&mut self, _: &Path) -> std::io::Result<String> {
        Err(std::io::ErrorKind::NotFound.into())
    }
    fn glob(&mut self, _: &Path) -> std::io::Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }
}

/// Path of every setting and section (`service pop3-login/inet_listener pop3/port`,
/// `passdb#1/args`) → where the file wrote it.
fn index_locations(items: &[Item]) -> HashMap<String, Location> {
    fn walk(items: &[Item], prefix: &str, out: &mut HashMap<String, Location>) {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for i in items {
            match i {
                Item::Setting(s) => {
                    out.insert(format!("{prefix}{}", s.key), s.at.clone());
                }
                Item::Section(s) => {
                    let head = section_head(s);
                    let n = seen.entry(head.clone()).or_default();
                    let path = format!("{prefix}{head}#{n}");
                    *n += 1;
                    out.entry(path.clone()).or_insert_with(|| s.at.clone());
                    walk(&s.items, &format!("{path}/"), out);
                }
            }
        }
    }
    let mut out = HashMap::new();
    walk(items, "", &mut out);
    out
}

fn section_head(s: &Section) -> String {
    match &s.name {
        Some(n) => format!("{} {n}", s.kind),
        None => s.kind.clone(),
    }
}

/// Gives doveconf's items the locations the file has for them.
fn relocate(items: &mut [Item], index: &HashMap<String, Location>) {
    fn walk(items: &mut [Item], prefix: &str, index: &HashMap<String, Location>) {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for i in items {
            match i {
                Item::Setting(s) => match index.get(&format!("{prefix}{}", s.key)) {
                    Some(at) => s.at = at.clone(),
                    // Not written in the file (a default doveconf shows): no line.
                    None => s.at.line = 0,
                },
                Item::Section(s) => {
                    let head = section_head(s);
                    let n = seen.entry(head.clone()).or_default();
                    let path = format!("{prefix}{head}#{n}");
                    *n += 1;
                    match index.get(&path) {
                        Some(at) => s.at = at.clone(),
                        None => s.at.line = 0,
                    }
                    walk(&mut s.items, &format!("{path}/"), index);
                }
            }
        }
    }
    walk(items, "", index);
}

// ---------------------------------------------------------------------------------
// The translation.

/// One value of the output, with the Dovecot setting it came from.
#[derive(Debug)]
struct Entry {
    key: &'static str,
    value: toml::Value,
    from: String,
}

#[derive(Debug, Default)]
struct Out {
    top: Vec<Entry>,
    listen: Vec<Entry>,
    tls: Vec<Entry>,
    pop3: Vec<Entry>,
    auth: Vec<Entry>,
    /// Lines written as comments where a value could not be (SQL passdb, ...).
    comments: Vec<String>,
}

/// The settings in force for POP3: the top level, then `protocol pop3 { }` on top.
struct Globals<'a> {
    map: BTreeMap<String, &'a Setting>,
    taken: HashSet<String>,
}

impl<'a> Globals<'a> {
    fn get(&mut self, key: &str) -> Option<&'a Setting> {
        let s = self.map.get(key).copied();
        if s.is_some() {
            self.taken.insert(key.to_owned());
        }
        s
    }
}

struct Tr<'a> {
    env: &'a dyn Env,
    conf_dir: PathBuf,
    warnings: Vec<String>,
    notes: Vec<String>,
    out: Out,
}

/// "`key = value` (file:line)" for comments and warnings.
/// A value as it may be printed: secrets (a key or value naming a password or secret,
/// a private key given inline) are hidden.
fn shown(key: &str, value: &str) -> String {
    let k = key.to_ascii_lowercase();
    if k.contains("password")
        || k.contains("secret")
        || k.contains("pass_")
        || (k.ends_with("_key") && !value.trim_start().starts_with('<'))
    {
        return "(hidden)".into();
    }
    value
        .split(' ')
        .map(|tok| match tok.split_once('=') {
            Some((tk, _)) if tk.to_ascii_lowercase().contains("password") => {
                format!("{tk}=(hidden)")
            }
            _ => one_line(tok),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn origin(s: &Setting) -> String {
    let v = shown(&s.key, &s.value);
    if s.at.line == 0 {
        format!("{} = {v}", s.key)
    } else {
        format!("{} = {v} ({})", s.key, s.at)
    }
}

fn one_line(s: &str) -> String {
    let mut v: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if v.chars().count() > 120 {
        v = v.chars().take(117).collect::<String>() + "...";
    }
    v
}

impl Tr<'_> {
    fn warn(&mut self, at: Option<&Location>, what: impl AsRef<str>) {
        let what = what.as_ref();
        // The location goes first, once.
        let w = match at {
            Some(l) if l.line > 0 => {
                format!("{l}: {}", what.replace(&format!(" ({l})"), ""))
            }
            _ => what.to_owned(),
        };
        self.warnings.push(one_line_long(&w));
    }
    fn warn_setting(&mut self, s: &Setting, why: impl AsRef<str>) {
        let w = format!("{} = {}: {}", s.key, shown(&s.key, &s.value), why.as_ref());
        self.warn(Some(&s.at), w);
    }
    fn note(&mut self, what: impl Into<String>) {
        self.notes.push(one_line_long(&what.into()));
    }
    fn path_value(&self, raw: &str) -> PathBuf {
        let p = PathBuf::from(raw);
        if p.is_absolute() {
            p
        } else {
            self.conf_dir.join(p)
        }
    }
}

fn one_line_long(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn entry(key: &'static str, value: impl Into<toml::Value>, from: impl Into<String>) -> Entry {
    Entry {
        key,
        value: value.into(),
        from: from.into(),
    }
}

/// Dovecot's defaults for the settings translated here (2.3).
const DEFAULTS: &[(&str, &str)] = &[
    ("ssl", "yes"),
    ("disable_plaintext_auth", "yes"),
    ("auth_mechanisms", "plain"),
    ("auth_username_format", "%Lu"),
    ("pop3_uidl_format", "%08Xu%08Xv"),
    ("listen", "*, ::"),
];

fn default_of(key: &str) -> &'static str {
    DEFAULTS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
        .unwrap_or("")
}

/// Settings that have no meaning for Correio (its own logging, Dovecot's paths,
/// processes and caches, IMAP, LDA, Sieve): left out without a warning.
fn is_irrelevant(key: &str) -> bool {
    const EXACT: &[&str] = &[
        "base_dir",
        "state_dir",
        "instance_name",
        "log_path",
        "info_log_path",
        "debug_log_path",
        "syslog_facility",
        "log_timestamp",
        "log_core_filter",
        "log_debug",
        "login_log_format",
        "login_log_format_elements",
        "login_trusted_networks_proxy",
        "mail_log_prefix",
        "mail_debug",
        "verbose_ssl",
        "verbose_proctitle",
        "shutdown_clients",
        "default_login_user",
        "default_internal_user",
        "default_internal_group",
        "default_client_limit",
        "default_process_limit",
        "default_vsz_limit",
        "default_idle_kill",
        "first_valid_uid",
        "last_valid_uid",
        "first_valid_gid",
        "last_valid_gid",
        "mail_privileged_group",
        "mail_access_groups",
        "mail_fsync",
        "mmap_disable",
        "dotlock_use_excl",
        "lock_method",
        "mail_temp_dir",
        "mail_server_admin",
        "mail_server_comment",
        "mailbox_idle_check_interval",
        "mail_max_keyword_length",
        "mail_always_cache_fields",
        "mail_never_cache_fields",
        "mail_cache_min_mail_count",
        "mail_prefetch_count",
        "maildir_very_dirty_syncs",
        "maildir_copy_with_hardlinks",
        "maildir_stat_dirs",
        "maildir_empty_new",
        "maildir_broken_filename_sizes",
        "mbox_read_locks",
        "mbox_write_locks",
        "mbox_lock_timeout",
        "mbox_dotlock_change_timeout",
        "mbox_dirty_syncs",
        "mbox_very_dirty_syncs",
        "mbox_lazy_writes",
        "mbox_min_index_size",
        "mbox_md5",
        "protocols",
        "postmaster_address",
        "recipient_delimiter",
        "quota_full_tempfail",
        "rejection_reason",
        "rejection_subject",
        "sendmail_path",
        "submission_host",
        "submission_relay_host",
        "import_environment",
        "auth_verbose",
        "auth_verbose_passwords",
        "auth_debug",
        "auth_debug_passwords",
        "auth_cache_size",
        "auth_cache_ttl",
        "auth_cache_negative_ttl",
        "auth_cache_verify_password_with_worker",
        "auth_worker_max_count",
        "auth_socket_path",
        "auth_realms",
        "auth_gssapi_hostname",
        "auth_krb5_keytab",
        "auth_winbind_helper_path",
        "auth_master_user_separator",
        "auth_anonymous_username",
        "ssl_client_ca_dir",
        "ssl_client_ca_file",
        "ssl_client_cert",
        "ssl_client_key",
        "ssl_crypto_device",
        "ssl_dh",
        "ssl_options",
        "ssl_min_protocol",
        "ssl_cipher_list",
        "ssl_cipher_suites",
        "ssl_curve_list",
        "ssl_prefer_server_ciphers",
        "pop3_lock_session",
        "pop3_fast_size_lookups",
        "pop3_save_uidl",
        "pop3_client_workarounds",
        "pop3_logout_format",
        "pop3_no_flag_updates",
        "pop3_delete_type",
        "mail_max_userip_connections",
        "mail_plugin_dir",
        "mail_cache_compress_delete_percentage",
        "stats_writer_socket_path",
        "haproxy_timeout",
        "director_servers",
        "director_mail_servers",
        "doveadm_port",
        "doveadm_password",
        "dict_db_config",
        "ssl_require_crl",
        "ssl_cert_username_field",
    ];
    const PREFIXES: &[&str] = &[
        "imap_",
        "imapc_",
        "lmtp_",
        "lda_",
        "submission_",
        "managesieve_",
        "sieve",
        "quota",
        "fts",
        "mail_attachment_",
        "mail_cache_",
        "mail_nfs_",
        "mail_attribute_",
        "doveadm_",
        "replication_",
        "director_",
        "old_stats_",
        "stats_",
        "metric",
        "event_",
        "log_",
        "auth_policy_",
        "auth_stats",
        "mail_shared_",
        "acl",
        "last_login",
        "mail_replica",
    ];
    EXACT.contains(&key) || PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Translates parsed Dovecot configuration items. `conf` is the file they came from
/// (relative paths are relative to its directory), `data_dir` goes into the output
/// as is.
pub fn translate(
    items: &[Item],
    conf: &Path,
    data_dir: &Path,
    env: &dyn Env,
    read_with: &str,
) -> Translation {
    let mut tr = Tr {
        env,
        conf_dir: conf.parent().map(Path::to_owned).unwrap_or_default(),
        warnings: Vec::new(),
        notes: Vec::new(),
        out: Out::default(),
    };
    // The settings the pop3 process sees: top level, then protocol pop3 { } blocks.
    let mut map: BTreeMap<String, &Setting> = BTreeMap::new();
    let mut sections: Vec<&Section> = Vec::new();
    for i in items {
        match i {
            Item::Setting(s) => {
                map.insert(s.key.clone(), s);
            }
            Item::Section(s) => sections.push(s),
        }
    }
    let mut pop3_sections: Vec<&Section> = Vec::new();
    for s in &sections {
        if s.kind == "protocol" {
            let applies = match s.name.as_deref() {
                Some(n) => n
                    .split_whitespace()
                    .any(|p| p == "pop3" || (p.starts_with('!') && p != "!pop3")),
                None => false,
            };
            if applies {
                for i in &s.items {
                    match i {
                        Item::Setting(st) => {
                            map.insert(st.key.clone(), st);
                        }
                        Item::Section(sub) => pop3_sections.push(sub),
                    }
                }
            }
        }
    }
    let mut g = Globals {
        map,
        taken: HashSet::new(),
    };
    sections.extend(pop3_sections);

    if let Some(v) = g.get("dovecot_config_version") {
        tr.warn_setting(
            v,
            "a Dovecot 2.4 configuration: its settings (mail_driver, mail_path, passwd_file_path, ...) are not translated, only Dovecot 2.3's",
        );
    }
    tr.out.top.push(entry(
        "data_dir",
        data_dir.display().to_string(),
        "Correio's own state (and its certificate if [tls] is not set); not a Dovecot setting",
    ));
    let users = users_and_homes(&mut tr, &mut g, &sections);
    mail_location(&mut tr, &mut g, &sections, &users);
    service_account(&mut tr, &users);
    tls(&mut tr, &mut g, &sections);
    listeners(&mut tr, &mut g, &sections);
    login_policy(&mut tr, &mut g);
    uidls(&mut tr, &mut g);
    other_sections(&mut tr, &sections);
    leftovers(&mut tr, &g);

    let body = render_body(&tr.out);
    let header = render_header(conf, read_with, &tr.warnings, &tr.notes);
    Translation {
        toml: header + &body,
        warnings: tr.warnings,
        notes: tr.notes,
    }
}

/// What the user database says, for the other steps.
#[derive(Debug, Default)]
struct Users {
    /// The passwd-file, if one was translated.
    file: Option<PathBuf>,
    /// Its text, when readable.
    text: Option<String>,
    /// `home=` of a static userdb or `mail_home` (a template).
    home_template: Option<(String, String)>,
    /// `mail=` of a static userdb.
    static_mail: Option<(String, String)>,
    /// uid/gid of a static userdb or mail_uid/mail_gid, with where they came from.
    uid: Option<(String, String)>,
    gid: Option<(String, String)>,
    /// Homes come from the system (userdb passwd).
    system_homes: bool,
}

fn args_of(s: &Section) -> Option<&Setting> {
    s.get("args")
}

fn driver_of(s: &Section) -> String {
    s.get("driver")
        .map(|d| d.value.trim().to_owned())
        .unwrap_or_default()
}

fn section_origin(s: &Section) -> String {
    let mut parts = Vec::new();
    if let Some(d) = s.get("driver") {
        parts.push(format!("driver = {}", d.value));
    }
    if let Some(a) = s.get("args") {
        parts.push(format!("args = {}", shown("args", &a.value)));
    }
    let at = if s.at.line > 0 {
        format!(" ({})", s.at)
    } else {
        String::new()
    };
    format!("{} {{ {} }}{at}", section_head(s), parts.join("  "))
}

/// passwd-file args: `[scheme=S] [username_format=F] PATH` (other `key=value`
/// options are returned too).
fn passwd_file_args(args: &str) -> (Option<String>, Vec<(String, String)>) {
    let mut path = None;
    let mut opts = Vec::new();
    for tok in args.split_whitespace() {
        match tok.split_once('=') {
            Some((k, v)) if !tok.starts_with('/') => opts.push((k.to_owned(), v.to_owned())),
            _ => path = Some(tok.to_owned()),
        }
    }
    (path, opts)
}

fn users_and_homes(tr: &mut Tr<'_>, g: &mut Globals<'_>, sections: &[&Section]) -> Users {
    let mut users = Users::default();
    let mut scheme: Option<String> = None;
    let mut file_format: Option<String> = None;
    let mut translated = false;
    for s in sections.iter().filter(|s| s.kind == "passdb") {
        let driver = driver_of(s);
        let here = section_origin(s);
        if s.get("deny").is_some_and(|d| is_yes(&d.value)) {
            tr.warn(
                Some(&s.at),
                format!(
                    "{here}: a deny list is not translated: remove those users from the users file instead"
                ),
            );
            continue;
        }
        if s.get("master").is_some_and(|d| is_yes(&d.value)) {
            tr.warn(
                Some(&s.at),
                format!("{here}: master users are not supported by Correio"),
            );
            continue;
        }
        match driver.as_str() {
            "passwd-file" if !translated => {
                let args = args_of(s).map(|a| a.value.clone()).unwrap_or_default();
                let (path, opts) = passwd_file_args(&args);
                for (k, v) in &opts {
                    match k.as_str() {
                        "scheme" => scheme = Some(v.clone()),
                        "username_format" => file_format = Some(v.clone()),
                        _ => tr.warn(
                            Some(&s.at),
                            format!("{here}: option {k}={v} is not translated"),
                        ),
                    }
                }
                match path {
                    Some(p) if p.contains('%') => tr.warn(
                        Some(&s.at),
                        format!(
                            "{here}: a users file per user or domain ({p}) is not supported: Correio reads one users file; concatenate them into one"
                        ),
                    ),
                    Some(p) => {
                        let path = tr.path_value(&p);
                        tr.out
                            .top
                            .push(entry("users_file", path.display().to_string(), here.clone()));
                        users.file = Some(path);
                        translated = true;
                    }
                    None => tr.warn(Some(&s.at), format!("{here}: no file named in args")),
                }
            }
            "passwd-file" => tr.warn(
                Some(&s.at),
                format!(
                    "{here}: only the first passwd-file passdb is used: Correio reads one users file; merge this one into it"
                ),
            ),
            "sql" => {
                tr.warn(
                    Some(&s.at),
                    format!(
                        "{here}: Correio has no SQL user database yet (issue #11): export the users into a passwd-file and set users_file"
                    ),
                );
                tr.out.comments.push(format!(
                    "NOT TRANSLATED: {here}: no SQL backend in Correio yet (issue #11)"
                ));
            }
            "" => tr.warn(Some(&s.at), format!("{here}: passdb without a driver")),
            other => {
                tr.warn(
                    Some(&s.at),
                    format!(
                        "{here}: passdb driver {other} is not supported: Correio authenticates from its users file (a Dovecot passwd-file)"
                    ),
                );
                tr.out
                    .comments
                    .push(format!("NOT TRANSLATED: {here}: driver {other}"));
            }
        }
    }
    if !sections.iter().any(|s| s.kind == "passdb") {
        tr.warn(
            None,
            "no passdb: Dovecot has no users; users_file stays Correio's default",
        );
    }
    // userdbs
    for s in sections.iter().filter(|s| s.kind == "userdb") {
        let driver = driver_of(s);
        let here = section_origin(s);
        let args = args_of(s).map(|a| a.value.clone()).unwrap_or_default();
        match driver.as_str() {
            "passwd-file" => {
                let (path, _) = passwd_file_args(&args);
                let path = path.map(|p| tr.path_value(&p));
                if path.is_some() && path != users.file {
                    tr.warn(
                        Some(&s.at),
                        format!(
                            "{here}: a userdb file other than the passdb's is not supported: Correio reads homes and userdb_mail from the users file itself"
                        ),
                    );
                }
            }
            "static" => {
                for tok in args.split_whitespace() {
                    let Some((k, v)) = tok.split_once('=') else {
                        continue;
                    };
                    match k {
                        "uid" => users.uid = Some((v.to_owned(), here.clone())),
                        "gid" => users.gid = Some((v.to_owned(), here.clone())),
                        "home" => users.home_template = Some((v.to_owned(), here.clone())),
                        "mail" => users.static_mail = Some((v.to_owned(), here.clone())),
                        "allow_all_users" => {}
                        other => {
                            tr.warn(Some(&s.at), format!("{here}: {other}= is not translated"))
                        }
                    }
                }
            }
            "prefetch" => {}
            "passwd" => {
                users.system_homes = true;
                tr.warn(
                    Some(&s.at),
                    format!(
                        "{here}: system accounts are not a Correio user database: put each user's home into the users file (its sixth field)"
                    ),
                );
            }
            other => tr.warn(
                Some(&s.at),
                format!("{here}: userdb driver {other} is not supported"),
            ),
        }
    }
    if let Some(h) = g.get("mail_home")
        && users.home_template.is_none()
    {
        users.home_template = Some((h.value.clone(), origin(h)));
    }
    if let Some(u) = g.get("mail_uid") {
        users.uid = Some((u.value.clone(), origin(u)));
    }
    if let Some(gid) = g.get("mail_gid") {
        users.gid = Some((gid.value.clone(), origin(gid)));
    }
    if let Some(path) = &users.file {
        match tr.env.read_users(path) {
            Ok(t) => users.text = Some(t),
            Err(e) => tr.warn(
                None,
                format!(
                    "cannot read the users file {} ({e}): its entries were not checked",
                    path.display()
                ),
            ),
        }
    }
    // The password scheme of lines without a {SCHEME} prefix.
    let scheme = scheme.unwrap_or_else(|| "CRYPT".into());
    // Correio reads a bare password as a crypt(3) string, recognised by its `$id$`
    // (MD5, SHA-256, SHA-512, bcrypt, Argon2): the same as Dovecot for those schemes.
    let up = scheme.to_ascii_uppercase();
    let crypt_like = up.ends_with("CRYPT") || up.starts_with("ARGON2");
    if let Some(text) = &users.text {
        let bare: Vec<usize> = text
            .lines()
            .enumerate()
            .filter_map(|(n, l)| {
                let rec = correio_auth::UserRecord::parse_line(l).ok()??;
                let pw = rec.password?;
                (!pw.as_stored().starts_with('{')).then_some(n + 1)
            })
            .collect();
        if !bare.is_empty() && !crypt_like {
            let lines: Vec<String> = bare.iter().take(10).map(ToString::to_string).collect();
            tr.warn(
                None,
                format!(
                    "{}: {} password(s) without a {{SCHEME}} prefix (line {}{}): Dovecot read them as {{{scheme}}} (passwd-file scheme={scheme}), Correio reads them as {{CRYPT}}: prefix each with {{{scheme}}}",
                    users.file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                    bare.len(),
                    lines.join(", "),
                    if bare.len() > 10 { ", ..." } else { "" },
                ),
            );
        } else if !crypt_like {
            tr.note(format!(
                "passwd-file scheme={scheme}: every password in the users file has its own {{SCHEME}} prefix, so Correio reads them all as Dovecot did"
            ));
        }
    }
    // The login name rewrite: auth_username_format, then the passwd-file's own.
    let global = g
        .get("auth_username_format")
        .map(|s| (s.value.clone(), origin(s)));
    let (gf, gfrom) = global.unwrap_or_else(|| {
        (
            default_of("auth_username_format").to_owned(),
            "auth_username_format = %Lu (Dovecot's default)".to_owned(),
        )
    });
    let parse_fmt = |f: &str| -> Option<(bool, bool)> {
        match f.trim() {
            "%u" | "%{user}" => Some((false, false)),
            "%Lu" | "%{user|lower}" | "%L{user}" => Some((true, false)),
            "%n" | "%{username}" => Some((false, true)),
            "%Ln" | "%L{username}" => Some((true, true)),
            _ => None,
        }
    };
    let mut from = gfrom;
    let mut rule = parse_fmt(&gf);
    if rule.is_none() {
        tr.warn(
            None,
            format!(
                "{from}: only %u, %Lu, %n and %Ln can be translated; Correio looks names up as sent (%u)"
            ),
        );
    }
    if let (Some((lower, strip)), Some(ff)) = (rule, &file_format) {
        match parse_fmt(ff) {
            Some((l2, s2)) => {
                rule = Some((lower || l2, strip || s2));
                from = format!("{from}, and the passwd-file's username_format={ff}");
            }
            None => tr.warn(
                None,
                format!(
                    "passwd-file username_format={ff}: only %u, %Lu, %n and %Ln can be translated"
                ),
            ),
        }
    }
    if let Some((lower, strip)) = rule {
        let f = match (lower, strip) {
            (false, false) => "%u",
            (true, false) => "%Lu",
            (false, true) => "%n",
            (true, true) => "%Ln",
        };
        tr.out.auth.push(entry("username_format", f, from));
    }
    if let Some(r) = g.get("auth_default_realm")
        && !r.value.trim().is_empty()
    {
        let d = r.value.trim().trim_start_matches('@').to_owned();
        if correio_auth::validate_username(&format!("u@{d}")).is_ok() && !d.contains('@') {
            tr.out.auth.push(entry("default_domain", d, origin(r)));
        } else {
            tr.warn_setting(r, "not a domain name Correio accepts");
        }
    }
    for key in ["auth_username_chars", "auth_username_translation"] {
        if let Some(s) = g.get(key)
            && !s.value.is_empty()
        {
            tr.warn_setting(s, "not supported by Correio");
        }
    }
    users
}

fn is_yes(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "yes" | "y" | "true" | "1"
    )
}

fn mail_location(tr: &mut Tr<'_>, g: &mut Globals<'_>, sections: &[&Section], users: &Users) {
    // The INBOX namespace may name its own location.
    let ns_location = sections
        .iter()
        .filter(|s| s.kind == "namespace")
        .filter(|s| s.get("inbox").is_some_and(|i| is_yes(&i.value)))
        .filter_map(|s| s.get("location"))
        .find(|l| !l.value.trim().is_empty());
    let (value, from, at) = if let Some((m, from)) = &users.static_mail {
        (m.clone(), from.clone(), None)
    } else if let Some(l) = ns_location {
        (l.value.clone(), origin(l), Some(l.at.clone()))
    } else if let Some(l) = g.get("mail_location") {
        (l.value.clone(), origin(l), Some(l.at.clone()))
    } else {
        (String::new(), String::new(), None)
    };
    g.get("mail_location");
    let value = value.trim().to_owned();
    if value.is_empty() {
        tr.warn(
            at.as_ref(),
            "mail_location is not set (Dovecot then looks for ~/Maildir, ~/mail, /var/mail/%u): set mail_location in the translation by hand",
        );
        return;
    }
    let Some((format, rest)) = value.split_once(':') else {
        tr.warn(
            at.as_ref(),
            format!(
                "{from}: no storage format (expected maildir:PATH or mbox:PATH): not translated"
            ),
        );
        return;
    };
    let format = format.to_ascii_lowercase();
    let mut parts = rest.split(':');
    let mut path = parts.next().unwrap_or("").to_owned();
    let mut inbox = None;
    for opt in parts {
        let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
        match k.to_ascii_uppercase().as_str() {
            "INBOX" => inbox = Some(v.to_owned()),
            "CONTROL" if format == "maildir" => tr.warn(
                at.as_ref(),
                format!(
                    "{from}: CONTROL={v} keeps dovecot-uidlist there, where Correio does not look: copy each user's dovecot-uidlist into the Maildir before switching, or every POP3 client downloads everything again"
                ),
            ),
            "INDEX" | "LAYOUT" | "DIRNAME" | "UTF-8" | "VOLATILEDIR" | "NO-NOSELECT"
            | "FULLDIRNAME" | "ALT" | "ITERINDEX" | "LISTINDEX" | "SUBSCRIPTIONS" | "" => {}
            other => tr.note(format!("{from}: option {other} ignored (Correio serves the INBOX only)")),
        }
    }
    let loc = match format.as_str() {
        "maildir" => {
            if let Some(i) = inbox {
                tr.note(format!(
                    "{from}: INBOX={i} is the Maildir POP3 serves; the translation uses it"
                ));
                path = i;
            }
            format!("maildir:{path}")
        }
        "mbox" => {
            tr.warn(
                at.as_ref(),
                format!(
                    "{from}: mbox UIDLs differ: Dovecot's come from X-UID/X-IMAPbase headers, Correio's from each message's content, so POP3 clients in keep mode download an mbox once more after the switch"
                ),
            );
            match inbox {
                Some(i) => format!("mbox:{path}:INBOX={i}"),
                None => format!("mbox:{path}"),
            }
        }
        other => {
            tr.warn(
                at.as_ref(),
                format!(
                    "{from}: the {other} storage format is not supported (Correio reads maildir and mbox): not translated"
                ),
            );
            return;
        }
    };
    // A home template (static userdb home=, mail_home) replaces ~ and %h.
    let mut loc = loc;
    let mut from = from;
    let uses_home = {
        let (_, p) = loc.split_once(':').unwrap_or(("", ""));
        p.starts_with('~') || p.contains("%h") || p.contains("%{home}")
    };
    if uses_home && let Some((h, hfrom)) = &users.home_template {
        let h = h.trim_end_matches('/');
        let (kind, p) = loc.split_once(':').unwrap_or(("", ""));
        let p = match p.strip_prefix('~') {
            Some(r) => format!("{h}{r}"),
            None => p.to_owned(),
        };
        let p = p.replace("%{home}", h).replace("%h", h);
        loc = format!("{kind}:{p}");
        from = format!("{from}, with home = {h} from {hfrom}");
    } else if uses_home && users.system_homes {
        tr.warn(
            None,
            format!(
                "{from}: homes come from system accounts: each user needs a home in the users file"
            ),
        );
    } else if uses_home && let Some(text) = &users.text {
        let homeless: Vec<String> = text
            .lines()
            .filter_map(|l| correio_auth::UserRecord::parse_line(l).ok()?)
            .filter(|r| r.home_dir().is_none() && r.mail_location().is_none())
            .map(|r| r.name)
            .take(10)
            .collect();
        if !homeless.is_empty() {
            tr.warn(
                None,
                format!(
                    "{from}: these users have no home in the users file, so their mailbox cannot be found: {}",
                    homeless.join(", ")
                ),
            );
        }
    }
    // Correio must be able to expand it.
    let probe = correio_store::TemplateVars {
        user: "user@example.org",
        home: Some(Path::new("/home/user")),
    };
    match correio_store::MailLocation::from_template(&loc, &probe) {
        Ok(_) => tr.out.top.push(entry("mail_location", loc, from)),
        Err(e) => tr.warn(
            at.as_ref(),
            format!(
                "{from}: cannot be translated ({e}); Correio expands %u %n %d %h, %L and ~ only: set mail_location by hand"
            ),
        ),
    }
}

fn service_account(tr: &mut Tr<'_>, users: &Users) {
    // Where the uid comes from: mail_uid / static userdb, else the users file when all
    // its lines agree.
    let mut uid: Option<(String, String)> = users.uid.clone();
    let mut gid: Option<(String, String)> = users.gid.clone();
    if uid.is_none()
        && let (Some(text), Some(file)) = (&users.text, &users.file)
    {
        let recs: Vec<correio_auth::UserRecord> = text
            .lines()
            .filter_map(|l| correio_auth::UserRecord::parse_line(l).ok()?)
            .collect();
        let uids: HashSet<&str> = recs.iter().map(|r| r.uid.as_str()).collect();
        let gids: HashSet<&str> = recs.iter().map(|r| r.gid.as_str()).collect();
        let from = format!("the uid field of every user in {}", file.display());
        if uids.len() == 1 {
            let u = recs[0].uid.clone();
            if !u.is_empty() {
                uid = Some((u, from.clone()));
            }
            if gids.len() == 1 && !recs[0].gid.is_empty() {
                gid = Some((
                    recs[0].gid.clone(),
                    format!("the gid field of every user in {}", file.display()),
                ));
            }
        } else if uids.len() > 1 {
            tr.warn(
                None,
                format!(
                    "{}: users have different uids (Dovecot switched to each one's uid): Correio accesses every mailbox as one service user; chown the mailboxes to one user and set user = \"...\"",
                    file.display()
                ),
            );
        }
    }
    let Some((u, ufrom)) = uid else {
        tr.note(
            "no mail uid found: set user = \"...\" (the owner of the mailboxes) if correio serve starts as root",
        );
        return;
    };
    let resolved = match u.parse::<u32>() {
        Ok(n) => tr.env.user_by_uid(n).map(|(name, pg)| (name, n, pg)),
        Err(_) => tr.env.user_by_name(&u).map(|(n, pg)| (u.clone(), n, pg)),
    };
    let Some((name, uid_n, primary)) = resolved else {
        tr.warn(
            None,
            format!("{ufrom}: uid {u} is no account on this system: set user = \"...\" by hand"),
        );
        return;
    };
    if uid_n == 0 {
        tr.warn(
            None,
            format!("{ufrom}: mail owned by root is not supported: leave user unset"),
        );
        return;
    }
    tr.out.top.push(entry("user", name, ufrom));
    if let Some((gv, gfrom)) = gid {
        let gname = match gv.parse::<u32>() {
            Ok(n) if n == primary => None,
            Ok(n) => match tr.env.group_by_gid(n) {
                Some(name) => Some(name),
                None => {
                    tr.warn(
                        None,
                        format!("{gfrom}: gid {n} is no group on this system: set group by hand"),
                    );
                    None
                }
            },
            Err(_) => Some(gv.clone()),
        };
        if let Some(gn) = gname {
            tr.out.top.push(entry("group", gn, gfrom));
        }
    }
}

fn tls(tr: &mut Tr<'_>, g: &mut Globals<'_>, sections: &[&Section]) {
    let ssl = g.get("ssl");
    let ssl_value = ssl
        .map(|s| s.value.trim().to_ascii_lowercase())
        .unwrap_or_else(|| default_of("ssl").to_owned());
    let cert = g.get("ssl_cert");
    let key = g.get("ssl_key");
    if ssl_value == "no" {
        tr.note("ssl = no: Dovecot offered no TLS; Correio offers STLS and creates a self-signed certificate in data_dir unless [tls] is set");
        return;
    }
    let pem_path = |s: &Setting| -> Option<String> {
        let v = s.value.trim();
        v.strip_prefix('<').map(|p| p.trim().to_owned())
    };
    match (cert, key) {
        (Some(c), Some(k)) => match (pem_path(c), pem_path(k)) {
            (Some(cp), Some(kp)) => {
                tr.out.tls.push(entry(
                    "cert",
                    tr.path_value(&cp).display().to_string(),
                    origin(c),
                ));
                let from = if k.value.len() > 200 {
                    format!("ssl_key ({})", k.at)
                } else {
                    origin(k)
                };
                tr.out
                    .tls
                    .push(entry("key", tr.path_value(&kp).display().to_string(), from));
            }
            _ => tr.warn(
                Some(&c.at),
                "ssl_cert/ssl_key hold the PEM text itself: write them to files and set [tls] cert and key",
            ),
        },
        (None, None) => tr.note(
            "no ssl_cert/ssl_key: Correio creates a self-signed certificate in data_dir",
        ),
        (c, k) => tr.warn(
            c.or(k).map(|s| &s.at),
            "only one of ssl_cert and ssl_key is set: [tls] not translated",
        ),
    }
    for key in [
        "ssl_key_password",
        "ssl_ca",
        "ssl_verify_client_cert",
        "auth_ssl_require_client_cert",
        "auth_ssl_username_from_cert",
        "ssl_alt_cert",
        "ssl_alt_key",
    ] {
        let flag = key.starts_with("auth_ssl") || key == "ssl_verify_client_cert";
        if let Some(s) = g.get(key)
            && !s.value.trim().is_empty()
            && (!flag || is_yes(&s.value))
        {
            let why = if key == "ssl_key_password" {
                "Correio reads unencrypted keys only: decrypt the key (openssl pkey -in KEY -out NEWKEY)"
            } else {
                "not supported by Correio"
            };
            tr.warn_setting(s, why);
        }
    }
    for s in sections.iter().filter(|s| s.kind == "local_name") {
        tr.warn(
            Some(&s.at),
            format!(
                "{}: certificates per server name (SNI) are not supported: Correio serves one certificate",
                section_head(s)
            ),
        );
    }
    if ssl_value == "required" {
        tr.note("ssl = required: see allow_cleartext_login");
    }
}

/// Parses Dovecot's `listen`: `*`, `::`, addresses, comma or space separated.
fn listen_addrs(tr: &mut Tr<'_>, value: &str, at: Option<&Location>) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for a in value.split([',', ' ', '\t']).filter(|a| !a.is_empty()) {
        let ip = match a {
            "*" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            "::" | "[::]" => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            other => {
                let o = other.trim_start_matches('[').trim_end_matches(']');
                match o.parse::<IpAddr>() {
                    Ok(ip) => ip,
                    Err(_) => {
                        tr.warn(
                            at,
                            format!("listen address {other:?} is not an IP address: left out"),
                        );
                        continue;
                    }
                }
            }
        };
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

#[derive(Debug, Clone)]
struct Listener {
    port: u16,
    ssl: bool,
    haproxy: bool,
    address: Option<(String, Location)>,
    from: Vec<String>,
    at: Option<Location>,
}

fn listeners(tr: &mut Tr<'_>, g: &mut Globals<'_>, sections: &[&Section]) {
    let listen = g.get("listen");
    let (listen_value, listen_from, listen_at) = match listen {
        Some(l) => (l.value.clone(), origin(l), Some(l.at.clone())),
        None => (
            default_of("listen").to_owned(),
            "listen = *, :: (Dovecot's default)".to_owned(),
            None,
        ),
    };
    if let Some(p) = g.get("protocols")
        && !p.value.split_whitespace().any(|x| x == "pop3")
    {
        tr.warn(
            Some(&p.at),
            format!(
                "protocols = {}: Dovecot did not serve POP3; the translation still has its POP3 listeners",
                p.value.trim()
            ),
        );
    }
    // Dovecot's built-in pop3-login listeners, then what the configuration says.
    let mut ls: BTreeMap<String, Listener> = BTreeMap::new();
    for (name, port, ssl) in [("pop3", 110u16, false), ("pop3s", 995, true)] {
        ls.insert(
            name.to_owned(),
            Listener {
                port,
                ssl,
                haproxy: false,
                address: None,
                from: vec![format!("Dovecot's default inet_listener {name}")],
                at: None,
            },
        );
    }
    for svc in sections
        .iter()
        .filter(|s| s.kind == "service" && s.name.as_deref() == Some("pop3-login"))
    {
        for st in svc.settings() {
            tr.note(format!(
                "service pop3-login {{ {} }}: not translated (Correio limits are in [limits])",
                origin(st)
            ));
        }
        for l in svc.sections() {
            if l.kind != "inet_listener" {
                continue;
            }
            let name = l.name.clone().unwrap_or_default();
            let e = ls.entry(name.clone()).or_insert_with(|| Listener {
                port: 0,
                ssl: false,
                haproxy: false,
                address: None,
                from: Vec::new(),
                at: None,
            });
            e.from = vec![format!("service pop3-login {{ inet_listener {name} }}")];
            e.at = Some(l.at.clone());
            for st in l.settings() {
                match st.key.as_str() {
                    "port" => match st.value.trim().parse::<u16>() {
                        Ok(p) => e.port = p,
                        Err(_) => tr.warn_setting(st, "not a port number"),
                    },
                    "ssl" => e.ssl = is_yes(&st.value),
                    "address" => e.address = Some((st.value.clone(), st.at.clone())),
                    "haproxy" => e.haproxy = is_yes(&st.value),
                    "reuse_port" => {}
                    _ => tr.warn_setting(st, "not translated"),
                }
            }
        }
    }
    // pop3, pop3s, pop3_proxy, pop3s_proxy: the addresses and where they came from.
    let mut lists: [(Vec<String>, Vec<String>); 4] = Default::default();
    for l in ls.values() {
        if l.port == 0 {
            continue;
        }
        let (addr_value, addr_from, addr_at) = match &l.address {
            Some((v, at)) => (v.clone(), format!("address = {v} ({at})"), Some(at.clone())),
            None => (listen_value.clone(), listen_from.clone(), listen_at.clone()),
        };
        let ips = listen_addrs(tr, &addr_value, addr_at.as_ref());
        let mut from = l.from.join(", ");
        if let Some(at) = &l.at {
            from = format!("{from} ({at})");
        }
        from = format!("{from}: port {}, {addr_from}", l.port);
        if l.haproxy {
            from.push_str(", haproxy = yes");
        }
        let (list, froms) = &mut lists[usize::from(l.ssl) + 2 * usize::from(l.haproxy)];
        for ip in ips {
            let a = SocketAddr::new(ip, l.port).to_string();
            if !list.contains(&a) {
                list.push(a);
            }
        }
        froms.push(from);
    }
    let ssl_off = g
        .map
        .get("ssl")
        .is_some_and(|s| s.value.trim().eq_ignore_ascii_case("no"));
    if ssl_off && !(lists[1].0.is_empty() && lists[3].0.is_empty()) {
        tr.note("ssl = no: Dovecot's POP3S listeners did not work; left out");
        lists[1] = Default::default();
        lists[3] = Default::default();
    }
    // Listeners behind HAProxy: Correio's *_proxy listeners, which need the proxies'
    // addresses (Dovecot's haproxy_trusted_networks).
    if !(lists[2].0.is_empty() && lists[3].0.is_empty()) {
        let mut nets = Vec::new();
        let trusted = g.get("haproxy_trusted_networks");
        if let Some(t) = trusted {
            for net in t.value.split([' ', ',', '\t']).filter(|x| !x.is_empty()) {
                if net.parse::<ipnet::IpNet>().is_ok() || net.parse::<IpAddr>().is_ok() {
                    nets.push(toml::Value::String(net.to_owned()));
                } else {
                    tr.warn(
                        Some(&t.at),
                        format!("haproxy_trusted_networks: {net:?} is not a network: left out"),
                    );
                }
            }
        }
        match trusted {
            Some(t) if !nets.is_empty() => {
                tr.out.top.push(entry(
                    "trusted_proxies",
                    toml::Value::Array(nets),
                    origin(t),
                ));
            }
            _ => {
                tr.warn(
                    None,
                    "inet_listener with haproxy = yes but no haproxy_trusted_networks: Correio accepts PROXY headers only from trusted_proxies; those listeners are left out",
                );
                lists[2] = Default::default();
                lists[3] = Default::default();
            }
        }
    }
    if lists.iter().all(|(l, _)| l.is_empty()) {
        tr.warn(
            None,
            "no POP3 listener: correio serve would use its first-run loopback listeners; set [listen] pop3/pop3s",
        );
    }
    let [pop3, pop3s, pop3_proxy, pop3s_proxy] = lists;
    for (key, (list, froms), always) in [
        ("pop3", pop3, true),
        ("pop3s", pop3s, true),
        ("pop3_proxy", pop3_proxy, false),
        ("pop3s_proxy", pop3s_proxy, false),
    ] {
        if always || !list.is_empty() {
            tr.out.listen.push(entry(
                key,
                toml::Value::Array(list.into_iter().map(toml::Value::String).collect()),
                froms.join("; "),
            ));
        }
    }
    lmtp_listener(tr, g, sections, &listen_value);
}

fn lmtp_listener(tr: &mut Tr<'_>, g: &mut Globals<'_>, sections: &[&Section], listen: &str) {
    let lmtp_on = g
        .map
        .get("protocols")
        .is_some_and(|p| p.value.split_whitespace().any(|x| x == "lmtp"));
    let mut unix: Vec<(String, String)> = Vec::new();
    let mut inet: Vec<(String, String)> = Vec::new();
    let mut relative: Vec<String> = Vec::new();
    for svc in sections
        .iter()
        .filter(|s| s.kind == "service" && s.name.as_deref() == Some("lmtp"))
    {
        for l in svc.sections() {
            let name = l.name.clone().unwrap_or_default();
            let from = format!(
                "service lmtp {{ {} {name} }}{}",
                l.kind,
                if l.at.line > 0 {
                    format!(" ({})", l.at)
                } else {
                    String::new()
                }
            );
            match l.kind.as_str() {
                "unix_listener" if name.starts_with('/') => unix.push((name, from)),
                "unix_listener" => relative.push(name),
                "inet_listener" => {
                    let port = l
                        .get("port")
                        .and_then(|p| p.value.trim().parse::<u16>().ok());
                    let addr = l.get("address").map(|a| a.value.clone());
                    let addr = addr.unwrap_or_else(|| listen.to_owned());
                    if let Some(port) = port.filter(|p| *p != 0) {
                        let at = Some(l.at.clone());
                        if let Some(ip) = listen_addrs(tr, &addr, at.as_ref()).first() {
                            inet.push((SocketAddr::new(*ip, port).to_string(), from));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if !lmtp_on {
        return;
    }
    let chosen = unix
        .first()
        .map(|(p, f)| (format!("unix:{p}"), f.clone()))
        .or_else(|| inet.first().cloned());
    match chosen {
        Some((v, from)) => {
            if unix.len() + inet.len() > 1 {
                tr.warn(
                    None,
                    format!(
                        "Dovecot's LMTP service has {} listeners; Correio has one: {v} (point the MTA at it)",
                        unix.len() + inet.len()
                    ),
                );
            }
            tr.out.listen.push(entry("lmtp", v, from));
        }
        None => tr.note(format!(
            "Dovecot's LMTP listens only on its own socket{} (relative to base_dir): set [listen] lmtp and point the MTA at it",
            if relative.is_empty() {
                String::new()
            } else {
                format!(" {}", relative.join(", "))
            }
        )),
    }
}

fn login_policy(tr: &mut Tr<'_>, g: &mut Globals<'_>) {
    let ssl = g.map.get("ssl").copied();
    let dpa = g.get("disable_plaintext_auth");
    let required = ssl.is_some_and(|s| s.value.trim().eq_ignore_ascii_case("required"));
    let (disabled, from) = match dpa {
        Some(s) => (is_yes(&s.value), origin(s)),
        None => (
            true,
            "disable_plaintext_auth = yes (Dovecot's default)".to_owned(),
        ),
    };
    let allow = !disabled && !required;
    let from = match (required, ssl) {
        (true, Some(s)) => format!("{}, {from}", origin(s)),
        _ => from,
    };
    tr.out.top.push(entry("allow_cleartext_login", allow, from));
    if let Some(n) = g.get("login_trusted_networks") {
        let mut nets = Vec::new();
        for net in n.value.split([' ', ',', '\t']).filter(|x| !x.is_empty()) {
            let ok = net.parse::<ipnet::IpNet>().is_ok() || net.parse::<IpAddr>().is_ok();
            if ok {
                nets.push(toml::Value::String(net.to_owned()));
            } else {
                tr.warn(
                    Some(&n.at),
                    format!("login_trusted_networks: {net:?} is not a network: left out"),
                );
            }
        }
        if !nets.is_empty() {
            tr.out.top.push(entry(
                "trusted_networks",
                toml::Value::Array(nets),
                origin(n),
            ));
        }
    }
    // Mechanisms.
    let mech = g.get("auth_mechanisms");
    let (mval, mfrom) = match mech {
        Some(m) => (m.value.clone(), origin(m)),
        None => (
            default_of("auth_mechanisms").to_owned(),
            "auth_mechanisms = plain (Dovecot's default)".to_owned(),
        ),
    };
    let mut list = Vec::new();
    let mut apop = false;
    for m in mval.split_whitespace() {
        match m.to_ascii_lowercase().as_str() {
            "plain" => list.push("PLAIN"),
            "login" => list.push("LOGIN"),
            "cram-md5" => list.push("CRAM-MD5"),
            "scram-sha-256" => list.push("SCRAM-SHA-256"),
            "apop" => apop = true,
            other => tr.warn(
                mech.map(|s| &s.at),
                format!(
                    "auth_mechanisms: {other} is not supported by Correio (it has PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-256 and APOP)"
                ),
            ),
        }
    }
    list.dedup();
    if list.is_empty() {
        tr.warn(
            mech.map(|s| &s.at),
            "auth_mechanisms: none that Correio has: Correio's default (PLAIN LOGIN) stays",
        );
    } else {
        tr.out.pop3.push(entry(
            "mechanisms",
            toml::Value::Array(
                list.iter()
                    .map(|m| toml::Value::String((*m).into()))
                    .collect(),
            ),
            mfrom.clone(),
        ));
    }
    if apop {
        tr.out.pop3.push(entry("apop", true, mfrom));
    }
    if required
        && list
            .iter()
            .any(|m| *m == "CRAM-MD5" || *m == "SCRAM-SHA-256")
            | apop
    {
        tr.warn(
            ssl.map(|s| &s.at),
            "ssl = required also refused CRAM-MD5/SCRAM/APOP without TLS; Correio allows them (they do not send the password)",
        );
    }
    if let Some(gr) = g.get("login_greeting") {
        let v = gr.value.trim();
        if !v.is_empty()
            && v.len() <= 200
            && !v.bytes().any(|b| b < 0x20 || b == 0x7f)
            && !v.contains('%')
        {
            tr.out
                .pop3
                .push(entry("greeting", v.to_owned(), origin(gr)));
        } else {
            tr.warn_setting(gr, "not translated (variables or more than 200 characters)");
        }
    }
    if let Some(h) = g.get("hostname") {
        let v = h.value.trim();
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic() && b != b'>') {
            tr.out.top.push(entry("hostname", v.to_owned(), origin(h)));
        } else {
            tr.warn_setting(h, "not a host name Correio accepts");
        }
    }
    if let Some(d) = g.get("auth_failure_delay") {
        match dovecot_duration(&d.value) {
            Some(ms) => {
                let ms = if ms > 60_000 {
                    tr.warn_setting(d, "Correio's longest delay is 60s: 60s written");
                    60_000
                } else {
                    ms
                };
                let text = if ms % 1000 == 0 {
                    format!("{}s", ms / 1000)
                } else {
                    format!("{ms}ms")
                };
                tr.out
                    .auth
                    .push(entry("failure_delay", text.clone(), origin(d)));
                if ms > 5000 {
                    tr.out.auth.push(entry(
                        "failure_delay_max",
                        text,
                        format!("{} (Correio's ceiling must not be lower)", origin(d)),
                    ));
                }
            }
            None => tr.warn_setting(d, "not a time Correio understands"),
        }
    }
}

/// Dovecot's time values (`2 secs`, `500 ms`, `1 min`) in milliseconds.
fn dovecot_duration(v: &str) -> Option<u64> {
    let v = v.trim();
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    let n: u64 = v[..digits].parse().ok()?;
    let unit = v[digits..].trim().to_ascii_lowercase();
    let mult = match unit.as_str() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1000,
        "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        "w" | "week" | "weeks" => 604_800_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn uidls(tr: &mut Tr<'_>, g: &mut Globals<'_>) {
    let f = g.get("pop3_uidl_format");
    let value = f
        .map(|s| s.value.trim().to_owned())
        .unwrap_or_else(|| default_of("pop3_uidl_format").to_owned());
    if value == "%08Xu%08Xv" {
        let from = match f {
            Some(s) => origin(s),
            None => "pop3_uidl_format = %08Xu%08Xv (Dovecot's default)".into(),
        };
        tr.note(format!(
            "{from}: Correio serves the same UIDLs from each Maildir's dovecot-uidlist (and any UIDL Dovecot stored per message), so POP3 clients download nothing again"
        ));
    } else if let Some(s) = f {
        tr.warn_setting(
            s,
            "Correio serves Dovecot's UIDLs in the default form %08Xu%08Xv only (plus UIDLs Dovecot stored per message with pop3_save_uidl): with this format every POP3 client in keep mode downloads every message once more after the switch",
        );
    }
    if let Some(s) = g.get("pop3_reuse_xuidl")
        && is_yes(&s.value)
    {
        tr.warn_setting(s, "X-UIDL headers are not read by Correio");
    }
    for key in ["pop3_deleted_flag", "pop3_enable_last"] {
        if let Some(s) = g.get(key)
            && !s.value.trim().is_empty()
            && s.value.trim() != "no"
        {
            tr.warn_setting(s, "not supported by Correio");
        }
    }
    if let Some(s) = g.get("mail_plugins") {
        for p in s.value.split_whitespace() {
            match p {
                "zlib" | "mail_compress" | "mail_crypt" => tr.warn_setting(
                    s,
                    format!("{p}: Correio reads mail files as they are: compressed or encrypted messages would be served unreadable"),
                ),
                "quota" | "imap_quota" => tr.note(format!(
                    "mail_plugins {p}: Dovecot's quota is not translated; Correio's is [delivery] quota_bytes / quota_messages"
                )),
                _ => {}
            }
        }
    }
}

fn other_sections(tr: &mut Tr<'_>, sections: &[&Section]) {
    for s in sections {
        match s.kind.as_str() {
            "passdb" | "userdb" | "namespace" | "plugin" | "protocol" | "dict" | "service"
            | "local_name" | "mail_attachment" | "auth_policy" | "metric" | "event_exporter" => {}
            "local" | "remote" => tr.warn(
                Some(&s.at),
                format!(
                    "{}: settings per address are not translated: check them by hand",
                    section_head(s)
                ),
            ),
            _ => tr.warn(
                Some(&s.at),
                format!("section {} is not translated", section_head(s)),
            ),
        }
    }
}

fn leftovers(tr: &mut Tr<'_>, g: &Globals<'_>) {
    let rest: Vec<&Setting> = g
        .map
        .iter()
        .filter(|(k, _)| !g.taken.contains(*k) && !is_irrelevant(k))
        .map(|(_, s)| *s)
        .collect();
    for s in rest {
        tr.warn_setting(s, "not translated");
    }
}

// ---------------------------------------------------------------------------------
// Output.

fn comment_lines(out: &mut String, text: &str) {
    for line in text.split('\n') {
        let _ = writeln!(out, "# {}", line.trim_end());
    }
}

fn render_header(conf: &Path, read_with: &str, warnings: &[String], notes: &[String]) -> String {
    let mut out = String::new();
    comment_lines(
        &mut out,
        &format!(
            "correio.toml translated from Dovecot's configuration by `correio import dovecot`.\n\
             Source: {} ({read_with}).\n\
             Each value names the Dovecot setting it came from. Check the file with\n  \
             correio check --config FILE\n\
             before `correio serve --config FILE`, after Dovecot has stopped.",
            conf.display()
        ),
    );
    if !warnings.is_empty() {
        out.push_str("#\n# Not translated (check these by hand):\n");
        for w in warnings {
            let _ = writeln!(out, "#   - {w}");
        }
    }
    if !notes.is_empty() {
        out.push_str("#\n# Notes:\n");
        for n in notes {
            let _ = writeln!(out, "#   - {n}");
        }
    }
    out.push_str(BODY_MARK);
    out
}

const BODY_MARK: &str = "\n# --- settings ---\n";

fn body_of(toml: &str) -> &str {
    toml.split_once(BODY_MARK).map(|(_, b)| b).unwrap_or(toml)
}

fn render_entries(out: &mut String, entries: &[Entry]) {
    for e in entries {
        out.push('\n');
        comment_lines(out, &format!("from {}", one_line_long(&e.from)));
        let _ = writeln!(out, "{} = {}", e.key, e.value);
    }
}

fn render_body(o: &Out) -> String {
    let mut out = String::new();
    render_entries(&mut out, &o.top);
    for c in &o.comments {
        out.push('\n');
        comment_lines(&mut out, &one_line_long(c));
    }
    for (name, entries) in [
        ("listen", &o.listen),
        ("tls", &o.tls),
        ("pop3", &o.pop3),
        ("auth", &o.auth),
    ] {
        if entries.is_empty() {
            continue;
        }
        let _ = write!(out, "\n[{name}]\n");
        render_entries(&mut out, entries);
    }
    out
}

// ---------------------------------------------------------------------------------
// Fuzzing.

/// An environment with no files and no accounts.
#[derive(Debug, Default)]
struct NoEnv;

impl Env for NoEnv {
    fn read_users(&self, _: &Path) -> Result<String, String> {
        Err("not read".into())
    }
    fn user_by_uid(&self, uid: u32) -> Option<(String, u32)> {
        (uid == 65534).then(|| ("nobody".to_owned(), 65534))
    }
    fn user_by_name(&self, name: &str) -> Option<(u32, u32)> {
        (name == "vmail").then_some((5000, 5000))
    }
    fn group_by_gid(&self, gid: u32) -> Option<String> {
        (gid == 8).then(|| "mail".to_owned())
    }
}

/// Files in memory for the fuzzer: the data is the main file, then NUL-separated
/// files `/fuzz/1.conf`, `/fuzz/2.conf`, ...
struct FuzzFiles(Vec<(PathBuf, String)>);

impl Source for FuzzFiles {
    fn read(&mut self, path: &Path) -> std::io::Result<String> {
        self.0
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }
    fn glob(&mut self, pattern: &Path) -> std::io::Result<Vec<PathBuf>> {
        let pat = pattern
            .file_name()
            .and_then(|p| p.to_str())
            .unwrap_or("")
            .as_bytes()
            .to_vec();
        let dir = pattern.parent().map(Path::to_owned);
        let mut v: Vec<PathBuf> = self
            .0
            .iter()
            .map(|(p, _)| p.clone())
            .filter(|p| {
                p.parent().map(Path::to_owned) == dir
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| doveconf::wildcard_match(&pat, n.as_bytes()))
            })
            .collect();
        v.sort();
        Ok(v)
    }
}

/// Fuzz body (`fuzz/fuzz_targets/server_import_dovecot.rs`): parse Dovecot
/// configuration text (NUL separates the included files `/fuzz/N.conf`), translate what
/// parses, and check that the translation is a valid correio.toml whose every value
/// names its origin. Must never panic.
#[doc(hidden)]
pub fn fuzz_dovecot_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let main = parts.next().unwrap_or("").to_owned();
    let files: Vec<(PathBuf, String)> = parts
        .enumerate()
        .map(|(i, t)| (PathBuf::from(format!("/fuzz/{}.conf", i + 1)), t.to_owned()))
        .collect();
    let main_path = Path::new("/fuzz/dovecot.conf");
    let mut src = FuzzFiles(files);
    match doveconf::parse_str(&main, main_path, &mut src) {
        Ok(items) => {
            let t = translate(
                &items,
                main_path,
                Path::new("/var/lib/correio"),
                &NoEnv,
                "fuzz",
            );
            if let Err(e) = Config::from_toml(&t.toml, &Overrides::default()) {
                panic!("translation is not a valid correio.toml: {e}\n{}", t.toml);
            }
            for w in t.warnings.iter().chain(&t.notes) {
                assert!(!w.contains('\n'), "multi-line warning {w:?}");
            }
            let parsed: toml::Table = t.toml.parse().expect("valid TOML");
            assert!(parsed.contains_key("data_dir"));
        }
        Err(e) => {
            // Every error names a file of the input.
            assert!(e.at.file.starts_with("/fuzz/"), "{e}");
        }
    }
}

#[cfg(test)]
mod tests;
