//! The users file: a Dovecot-compatible passwd-file.
//!
//! One user per line, `user:{SCHEME}secret:uid:gid:gecos:home:shell:extra_fields`.
//! Trailing fields may be missing and any field may be empty; everything after the
//! seventh `:` is the extra-fields part (it may contain `:`, as in
//! `userdb_mail=maildir:~/Maildir`), a space-separated list of `key=value` or bare `key`
//! (`nopassword`, `nologin`, `userdb_mail=...`, `userdb_home=...`). `#` starts a comment
//! line; blank lines are ignored. The first line for a name wins (Dovecot does the same).
//!
//! [`UserDb`] is the read side the server uses: lookups by name (exact by default, as
//! Dovecot's passwd-file), reloaded when the file changes (inode, size or mtime), and a
//! file that fails to parse keeps the previous good version in service. The edit side
//! ([`add_user`], [`set_password`], [`delete_user`]) rewrites the file atomically (temp
//! file, fsync, rename, directory fsync) under an exclusive lock on `<file>.lock`, keeping
//! every other line (comments included) byte for byte.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use correio_fsutil::AtomicWrite;

use crate::scheme::StoredSecret;
use crate::username::{UsernameError, validate_username};

/// The users file inside a data directory: `<data>/users`.
pub fn default_users_path(data_dir: &Path) -> PathBuf {
    data_dir.join("users")
}

/// Users files larger than this are refused (memory bound; ~100k users fit easily).
pub const MAX_USERS_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// One extra field: `key=value`, or a bare `key` (value `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraField {
    /// The key, e.g. `userdb_mail` or `nopassword`.
    pub key: String,
    /// The value after `=`, if there was one.
    pub value: Option<String>,
}

/// One user line of the passwd-file. `Debug` never prints the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The login name (`user` or `user@domain`).
    pub name: String,
    /// The stored secret; `None` when the password field is empty.
    pub password: Option<StoredSecret>,
    /// The uid field as written (numeric or a system user name); may be empty.
    pub uid: String,
    /// The gid field as written; may be empty.
    pub gid: String,
    /// The gecos field (ignored by Correio, kept for round trips).
    pub gecos: String,
    /// The home field; may be empty.
    pub home: String,
    /// The shell field (ignored by Correio, kept for round trips).
    pub shell: String,
    /// The extra fields, in file order.
    pub extra: Vec<ExtraField>,
}

/// A line that is not a valid user entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// The user name field is empty.
    #[error("empty user name")]
    EmptyName,
    /// The user name fails [`validate_username`].
    #[error("invalid user name: {0}")]
    BadName(UsernameError),
    /// The line contains a control character other than TAB (e.g. a stray CR or NUL).
    #[error("control character in the line")]
    ControlChar,
}

impl UserRecord {
    /// A record with a name and a secret and every other field empty.
    pub fn new(name: &str, password: Option<StoredSecret>) -> UserRecord {
        UserRecord {
            name: name.to_owned(),
            password,
            uid: String::new(),
            gid: String::new(),
            gecos: String::new(),
            home: String::new(),
            shell: String::new(),
            extra: Vec::new(),
        }
    }

    /// Parses one line. `Ok(None)` for comments and blank lines.
    pub fn parse_line(line: &str) -> Result<Option<UserRecord>, LineError> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            return Ok(None);
        }
        // A stray CR or NUL inside a line is corruption, and a field ending in CR could
        // not be written back unambiguously (it would read as a CRLF line end).
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Err(LineError::ControlChar);
        }
        let mut parts = line.splitn(8, ':');
        let mut next = || parts.next().unwrap_or("").to_owned();
        let name = next();
        if name.is_empty() {
            return Err(LineError::EmptyName);
        }
        validate_username(&name).map_err(LineError::BadName)?;
        let password = next();
        let (uid, gid, gecos, home, shell, extra) =
            (next(), next(), next(), next(), next(), next());
        let extra = extra
            .split([' ', '\t'])
            .filter(|f| !f.is_empty())
            .map(|f| match f.split_once('=') {
                Some((k, v)) => ExtraField {
                    key: k.to_owned(),
                    value: Some(v.to_owned()),
                },
                None => ExtraField {
                    key: f.to_owned(),
                    value: None,
                },
            })
            .collect();
        Ok(Some(UserRecord {
            name,
            password: (!password.is_empty()).then(|| StoredSecret::parse(&password)),
            uid,
            gid,
            gecos,
            home,
            shell,
            extra,
        }))
    }

    /// Formats the record as one line (without the newline). Trailing empty fields are
    /// written out as empty (`name:{SCHEME}x::::::`) so other tools see every column.
    pub fn to_line(&self) -> String {
        let mut s = format!(
            "{}:{}:{}:{}:{}:{}:{}",
            self.name,
            self.password
                .as_ref()
                .map(StoredSecret::as_stored)
                .unwrap_or(""),
            self.uid,
            self.gid,
            self.gecos,
            self.home,
            self.shell
        );
        if !self.extra.is_empty() {
            s.push(':');
            let fields: Vec<String> = self
                .extra
                .iter()
                .map(|f| match &f.value {
                    Some(v) => format!("{}={v}", f.key),
                    None => f.key.clone(),
                })
                .collect();
            s.push_str(&fields.join(" "));
        }
        s
    }

    /// The value of extra field `key` (`Some("")` for a bare key or `key=`).
    pub fn field(&self, key: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|f| f.key == key)
            .map(|f| f.value.as_deref().unwrap_or(""))
    }

    /// Sets (or with `None` removes) extra field `key`.
    pub fn set_field(&mut self, key: &str, value: Option<&str>) {
        self.extra.retain(|f| f.key != key);
        if let Some(v) = value {
            self.extra.push(ExtraField {
                key: key.to_owned(),
                value: Some(v.to_owned()),
            });
        }
    }

    /// Whether a boolean extra field is set (`key`, `key=y`, `key=yes`; Dovecot style).
    pub fn flag(&self, key: &str) -> bool {
        match self.field(key) {
            Some(v) => !matches!(v.to_ascii_lowercase().as_str(), "n" | "no" | "0" | "false"),
            None => false,
        }
    }

    /// The mail location (`userdb_mail=`), if the line sets one.
    pub fn mail_location(&self) -> Option<&str> {
        self.field("userdb_mail").filter(|v| !v.is_empty())
    }

    /// The home directory: `userdb_home=` if set, else the home field.
    pub fn home_dir(&self) -> Option<&str> {
        self.field("userdb_home")
            .filter(|v| !v.is_empty())
            .or((!self.home.is_empty()).then_some(self.home.as_str()))
    }

    /// Dovecot's `nopassword`: any password is accepted. Only honoured when the
    /// password field is empty, as Dovecot requires.
    pub fn nopassword(&self) -> bool {
        self.password.is_none() && self.flag("nopassword")
    }

    /// Dovecot's `nologin`: the user may not log in (the `reason=` field says why).
    pub fn nologin(&self) -> bool {
        self.flag("nologin")
    }
}

/// How names are matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserDbOptions {
    /// Match names case-insensitively (ASCII), like Dovecot with
    /// `auth_username_format = %Lu`. Default: exact match, Dovecot's default.
    pub case_insensitive: bool,
}

/// Errors reading or writing the users file. Messages name the file and line, never a
/// secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserDbError {
    /// An I/O error on the file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A line does not parse.
    #[error("{path}:{line}: {error}")]
    Line {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong.
        error: LineError,
    },
    /// The file is not UTF-8.
    #[error("{path}: not valid UTF-8")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// The file is larger than [`MAX_USERS_FILE_BYTES`].
    #[error("{path}: larger than {MAX_USERS_FILE_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// `add` for a name that exists.
    #[error("user {0} already exists")]
    Exists(String),
    /// `passwd`/`del` for a name that does not exist.
    #[error("user {0} does not exist")]
    NotFound(String),
    /// The name fails [`validate_username`].
    #[error("invalid user name: {0}")]
    BadName(UsernameError),
    /// A field of the record cannot be written into a passwd-file line (`:`, a newline,
    /// a space in an extra field's value...).
    #[error("user {0}: a field contains a character the users file cannot hold")]
    BadRecord(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> UserDbError + '_ {
    move |source| UserDbError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What identifies one version of the file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileStamp {
    fn of(meta: &fs::Metadata) -> FileStamp {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

#[derive(Debug, Default)]
struct Snapshot {
    users: HashMap<String, Arc<UserRecord>>,
    order: Vec<Arc<UserRecord>>,
    stamp: Option<FileStamp>,
}

/// Splits a file into lines at LF only (each line keeps a CR of a CRLF ending, which
/// [`UserRecord::parse_line`] removes); a final LF does not start another line.
fn file_lines(text: &str) -> impl Iterator<Item = &str> {
    text.strip_suffix('\n')
        .unwrap_or(text)
        .split('\n')
        .filter(move |_| !text.is_empty())
}

/// Parses a whole users file's text. Lines that fail are errors (`line` is 1-based).
pub fn parse_users(text: &str) -> Result<Vec<UserRecord>, (usize, LineError)> {
    let mut out = Vec::new();
    for (i, line) in file_lines(text).enumerate() {
        if let Some(rec) = UserRecord::parse_line(line).map_err(|e| (i + 1, e))? {
            out.push(rec);
        }
    }
    Ok(out)
}

/// The user database the server reads: a users file, kept fresh.
///
/// Cheap to share (`Arc<UserDb>`); lookups take a read lock for a moment. [`lookup`]
/// first checks whether the file changed (one `stat`), so call it off async threads,
/// like the password verification that follows it.
///
/// [`lookup`]: UserDb::lookup
#[derive(Debug)]
pub struct UserDb {
    path: PathBuf,
    options: UserDbOptions,
    snapshot: RwLock<Arc<Snapshot>>,
    /// The version of the file that last failed to load: not re-parsed (and not
    /// re-logged) on every lookup until it changes again.
    failed: Mutex<Option<FileStamp>>,
    /// Bumped at every (re)load: caches of what the file said compare it.
    generation: std::sync::atomic::AtomicU64,
}

impl UserDb {
    /// Loads the file; fails if it is missing or does not parse.
    pub fn load(path: impl AsRef<Path>) -> Result<UserDb, UserDbError> {
        UserDb::load_with(path, UserDbOptions::default())
    }

    /// Loads the file with options; fails if it is missing or does not parse.
    pub fn load_with(
        path: impl AsRef<Path>,
        options: UserDbOptions,
    ) -> Result<UserDb, UserDbError> {
        let db = UserDb {
            path: path.as_ref().to_owned(),
            options,
            snapshot: RwLock::new(Arc::default()),
            failed: Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
        };
        db.reload()?;
        Ok(db)
    }

    /// Like [`load_with`](UserDb::load_with), but a missing file is an empty database
    /// that picks the file up once it appears (first runs, before `correio user add`).
    pub fn load_or_empty(
        path: impl AsRef<Path>,
        options: UserDbOptions,
    ) -> Result<UserDb, UserDbError> {
        let db = UserDb {
            path: path.as_ref().to_owned(),
            options,
            snapshot: RwLock::new(Arc::default()),
            failed: Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
        };
        match db.reload() {
            Err(UserDbError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(db)
            }
            Err(e) => Err(e),
            Ok(_) => Ok(db),
        }
    }

    /// Builds a database from records (tests, or other sources); it never reloads.
    pub fn from_records(records: Vec<UserRecord>, options: UserDbOptions) -> UserDb {
        let db = UserDb {
            path: PathBuf::new(),
            options,
            snapshot: RwLock::new(Arc::default()),
            failed: Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
        };
        *db.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(db.build(records, None));
        db
    }

    /// The file this database reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn key(&self, name: &str) -> String {
        if self.options.case_insensitive {
            name.to_ascii_lowercase()
        } else {
            name.to_owned()
        }
    }

    fn build(&self, records: Vec<UserRecord>, stamp: Option<FileStamp>) -> Snapshot {
        let mut snap = Snapshot {
            stamp,
            ..Snapshot::default()
        };
        for rec in records {
            let rec = Arc::new(rec);
            let key = self.key(&rec.name);
            if snap.users.contains_key(&key) {
                tracing::warn!(path = %self.path.display(), "users file: a user is listed more than once; the first line wins");
                continue;
            }
            snap.users.insert(key, rec.clone());
            snap.order.push(rec);
        }
        snap
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the file unconditionally. On error the previous version stays in use.
    pub fn reload(&self) -> Result<(), UserDbError> {
        let (records, stamp) = read_users_file(&self.path)?;
        let snap = self.build(records, Some(stamp));
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snap);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Which version of the file is loaded: a new number after every reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Re-reads the file if its inode, size or mtime changed. `Ok(true)` if it was
    /// reloaded. On error (including a parse error) the previous version stays in use,
    /// and that broken version is reported once: later calls return `Ok(false)` until
    /// the file changes again.
    pub fn reload_if_changed(&self) -> Result<bool, UserDbError> {
        if self.path.as_os_str().is_empty() {
            return Ok(false);
        }
        let stamp = match fs::metadata(&self.path) {
            Ok(m) => Some(FileStamp::of(&m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&self.path)(e)),
        };
        if stamp == self.current().stamp {
            return Ok(false);
        }
        if stamp.is_none() {
            // The file was removed: keep serving the last good version rather than
            // locking everybody out because of a half-done manual edit.
            return Ok(false);
        }
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if stamp == *failed {
            return Ok(false);
        }
        match self.reload() {
            Ok(()) => {
                *failed = None;
                Ok(true)
            }
            Err(e) => {
                *failed = stamp;
                Err(e)
            }
        }
    }

    /// Looks a user up, reloading the file first if it changed (a reload error is
    /// logged and the previous version answers).
    pub fn lookup(&self, name: &str) -> Option<UserRecord> {
        if let Err(e) = self.reload_if_changed() {
            tracing::error!(error = %e, "users file not reloaded; still using the previous version");
        }
        self.lookup_cached(name)
    }

    /// Looks a user up without checking the file.
    pub fn lookup_cached(&self, name: &str) -> Option<UserRecord> {
        self.current()
            .users
            .get(&self.key(name))
            .map(|r| (**r).clone())
    }

    /// Runs `f` on the current records (file order) without copying them.
    pub(crate) fn with_records<R>(&self, f: impl FnOnce(&[Arc<UserRecord>]) -> R) -> R {
        f(&self.current().order)
    }

    /// All records in file order.
    pub fn records(&self) -> Vec<UserRecord> {
        self.current().order.iter().map(|r| (**r).clone()).collect()
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.current().order.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn read_users_file(path: &Path) -> Result<(Vec<UserRecord>, FileStamp), UserDbError> {
    let file = fs::File::open(path).map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    if meta.len() > MAX_USERS_FILE_BYTES {
        return Err(UserDbError::TooLarge {
            path: path.to_owned(),
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    io::Read::read_to_end(
        &mut io::Read::take(&file, MAX_USERS_FILE_BYTES + 1),
        &mut bytes,
    )
    .map_err(io_err(path))?;
    if bytes.len() as u64 > MAX_USERS_FILE_BYTES {
        return Err(UserDbError::TooLarge {
            path: path.to_owned(),
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| UserDbError::NotUtf8 {
        path: path.to_owned(),
    })?;
    let records = parse_users(&text).map_err(|(line, error)| UserDbError::Line {
        path: path.to_owned(),
        line,
        error,
    })?;
    Ok((records, FileStamp::of(&meta)))
}

/// Holds `<file>.lock` exclusively; released on drop (closing the descriptor).
#[derive(Debug)]
struct EditLock {
    _file: fs::File,
}

fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

impl EditLock {
    fn acquire(path: &Path) -> Result<EditLock, UserDbError> {
        let lp = lock_path(path);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lp)
            .map_err(io_err(&lp))?;
        // Blocks until the other `correio user` run finishes; edits are quick.
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err(&lp)(io::Error::from(e)))?;
        Ok(EditLock { _file: file })
    }
}

/// Runs `edit` on the lines of the users file under the edit lock, then writes the
/// result atomically. `edit` gets each line (without newline) and returns a value or
/// an error; nothing is written on error.
fn edit_file<T>(
    path: &Path,
    edit: impl FnOnce(&mut Vec<String>) -> Result<T, UserDbError>,
) -> Result<T, UserDbError> {
    let _lock = EditLock::acquire(path)?;
    let meta = match fs::metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(path)(e)),
    };
    if meta
        .as_ref()
        .is_some_and(|m| m.len() > MAX_USERS_FILE_BYTES)
    {
        return Err(UserDbError::TooLarge {
            path: path.to_owned(),
        });
    }
    let (text, meta) = match fs::read(path) {
        Ok(bytes) => {
            if bytes.len() as u64 > MAX_USERS_FILE_BYTES {
                return Err(UserDbError::TooLarge {
                    path: path.to_owned(),
                });
            }
            (
                String::from_utf8(bytes).map_err(|_| UserDbError::NotUtf8 {
                    path: path.to_owned(),
                })?,
                meta,
            )
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (String::new(), None),
        Err(e) => return Err(io_err(path)(e)),
    };
    // Refuse to edit a file the server would refuse to load: the change would silently
    // not take effect. The admin fixes the named line first.
    parse_users(&text).map_err(|(line, error)| UserDbError::Line {
        path: path.to_owned(),
        line,
        error,
    })?;
    // Lines keep a CRLF ending's CR, so untouched lines are written back byte for byte.
    let mut lines: Vec<String> = file_lines(&text).map(str::to_owned).collect();
    let out = edit(&mut lines)?;
    let mut new_text = lines.join("\n");
    if !new_text.is_empty() {
        new_text.push('\n');
    }
    write_atomically(path, new_text.as_bytes(), meta.as_ref())?;
    Ok(out)
}

/// temp file in the same directory → fsync → rename → fsync the directory, so a crash
/// leaves the old file or the new one (`correio_fsutil`). Keeps the old file's mode and
/// owner (so a root edit does not take the file away from the server's user); new files
/// get 0600.
fn write_atomically(
    path: &Path,
    data: &[u8],
    old: Option<&fs::Metadata>,
) -> Result<(), UserDbError> {
    let mut options = AtomicWrite::new().mode(0o600);
    if let Some(m) = old {
        options = options.owner_and_mode_of(m);
    }
    options
        .write(path, data)
        .map_err(|e| io_err(path)(e.into()))
}

fn find_line(lines: &[String], name: &str) -> Option<(usize, UserRecord)> {
    lines
        .iter()
        .enumerate()
        .find_map(|(i, l)| match UserRecord::parse_line(l) {
            Ok(Some(r)) if r.name == name => Some((i, r)),
            _ => None,
        })
}

/// Appends a user. Fails with [`UserDbError::Exists`] if the name is taken. Creates the
/// file (mode 0600) if it does not exist; the directory must exist.
/// Names that differ only in ASCII case count as taken, since a server may match
/// names case-insensitively.
pub fn add_user(path: &Path, record: &UserRecord) -> Result<(), UserDbError> {
    validate_username(&record.name).map_err(UserDbError::BadName)?;
    check_record(record)?;
    edit_file(path, |lines| {
        let taken = lines.iter().find_map(|l| match UserRecord::parse_line(l) {
            Ok(Some(r)) if r.name.eq_ignore_ascii_case(&record.name) => Some(r.name),
            _ => None,
        });
        if let Some(existing) = taken {
            return Err(UserDbError::Exists(existing));
        }
        lines.push(record.to_line());
        Ok(())
    })
}

/// Refuses a record whose line would not read back as the same record (a `:` or a
/// newline in a field, a space in an extra field's value...).
fn check_record(record: &UserRecord) -> Result<(), UserDbError> {
    let line = record.to_line();
    if line.contains(['\n', '\r'])
        || UserRecord::parse_line(&line).ok().flatten().as_ref() != Some(record)
    {
        return Err(UserDbError::BadRecord(record.name.clone()));
    }
    Ok(())
}

/// Replaces a user's secret, keeping every other field of the line.
pub fn set_password(path: &Path, name: &str, secret: &StoredSecret) -> Result<(), UserDbError> {
    validate_username(name).map_err(UserDbError::BadName)?;
    edit_file(path, |lines| {
        let (i, mut rec) =
            find_line(lines, name).ok_or_else(|| UserDbError::NotFound(name.to_owned()))?;
        rec.password = Some(secret.clone());
        lines[i] = rec.to_line();
        Ok(())
    })
}

/// Applies `change` to a user's record (e.g. to set `userdb_mail=`) and writes it back.
pub fn update_user(
    path: &Path,
    name: &str,
    change: impl FnOnce(&mut UserRecord),
) -> Result<(), UserDbError> {
    validate_username(name).map_err(UserDbError::BadName)?;
    edit_file(path, |lines| {
        let (i, mut rec) =
            find_line(lines, name).ok_or_else(|| UserDbError::NotFound(name.to_owned()))?;
        change(&mut rec);
        rec.name = name.to_owned();
        check_record(&rec)?;
        lines[i] = rec.to_line();
        Ok(())
    })
}

/// Removes a user's line (every line for that name, if it was listed twice).
pub fn delete_user(path: &Path, name: &str) -> Result<(), UserDbError> {
    validate_username(name).map_err(UserDbError::BadName)?;
    edit_file(path, |lines| {
        let before = lines.len();
        lines.retain(|l| !matches!(UserRecord::parse_line(l), Ok(Some(r)) if r.name == name));
        if lines.len() == before {
            return Err(UserDbError::NotFound(name.to_owned()));
        }
        Ok(())
    })
}

#[cfg(test)]
#[path = "userdb_tests.rs"]
mod tests;
