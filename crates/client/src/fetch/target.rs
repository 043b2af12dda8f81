//! Where fetched messages go: Maildir, mbox (mboxrd, locked), a folder of `.eml`
//! files, an MDA command, or an LMTP server.
//!
//! Contract (group commit): [`Target::begin`], [`Target::write`]* and
//! [`Target::finish`] stream one message in; a finished message is complete but not
//! yet durable. [`Target::sync`] makes every finished message durable at once (one
//! fsync per file plus one per directory, or one fsync of the mbox) and returns the
//! [`Pending`] steps that publish them. The fetcher records the batch's UIDLs in its
//! state file together with those steps, then calls [`Target::publish`]; only after
//! that does it send DELE. [`Target::abort`] drops a message in progress.
//!
//! Maildir and EML publish by renaming fsynced files from a temporary name; the state
//! file keeps the renames until they are done, so a crash at any point neither loses a
//! message nor shows it twice (see `state.rs`). mbox, MDA and LMTP deliver in place:
//! a crash between their durable write and the state file's rename can, in that narrow
//! window, lead to the message being fetched again on the next run (never lost).
//!
//! Message bytes arrive with CRLF line ends (the wire form). Maildir, mbox and MDA
//! receive LF line ends, as local mail tools expect; EML files keep CRLF (the
//! canonical RFC 5322 form); LMTP sends CRLF on the wire.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use correio_store::DeliverError;
use correio_store::DeliverOptions;
use correio_store::maildir::{MaildirBatch, MaildirWriter};
use correio_store::mbox::{MboxBatch, MboxWriter};
use serde::{Deserialize, Serialize};

/// Where to deliver, as given by `--to` or `to = "..."` in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetSpec {
    /// `maildir:DIR`
    Maildir(PathBuf),
    /// `mbox:FILE`
    Mbox(PathBuf),
    /// `eml:DIR`
    Eml(PathBuf),
    /// `mda:COMMAND` (run by `sh -c`, message on stdin; exit 0 means delivered).
    Mda(String),
    /// `lmtp:HOST:PORT:RECIPIENT` or `lmtp:unix:PATH:RECIPIENT`.
    Lmtp {
        /// `HOST:PORT` or `unix:PATH`.
        addr: String,
        /// The RCPT TO address.
        recipient: String,
    },
    /// `imaps://USER@HOST/FOLDER`, `imap://…` (STARTTLS), `smtp://HOST`, `smtps://HOST`:
    /// see `fetch/imap.rs`, `fetch/smtp.rs`.
    Remote(Box<super::remote::RemoteSpec>),
}

impl TargetSpec {
    /// Parses `maildir:DIR`, `mbox:FILE`, `eml:DIR`, `mda:CMD`,
    /// `lmtp:HOST:PORT:RCPT` or `lmtp:unix:PATH:RCPT`. `~/` is expanded.
    pub fn parse(s: &str) -> Result<TargetSpec, String> {
        if ["imap://", "imaps://", "smtp://", "smtps://"]
            .iter()
            .any(|p| s.starts_with(p))
        {
            return super::remote::RemoteSpec::parse(s).map(|r| TargetSpec::Remote(Box::new(r)));
        }
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("target {s:?}: expected KIND:WHERE (maildir:DIR, mbox:FILE, eml:DIR, mda:CMD, lmtp:...)"))?;
        if rest.is_empty() {
            return Err(format!("target {s:?}: empty location"));
        }
        Ok(match kind {
            "maildir" => TargetSpec::Maildir(expand_home(rest)),
            "mbox" => TargetSpec::Mbox(expand_home(rest)),
            "eml" => TargetSpec::Eml(expand_home(rest)),
            "mda" => TargetSpec::Mda(rest.to_owned()),
            "lmtp" => {
                let (addr, rcpt) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| format!("target {s:?}: expected lmtp:HOST:PORT:RECIPIENT"))?;
                if !rcpt.contains('@') && rcpt.is_empty() {
                    return Err(format!("target {s:?}: missing recipient"));
                }
                TargetSpec::Lmtp {
                    addr: addr.to_owned(),
                    recipient: rcpt.to_owned(),
                }
            }
            other => return Err(format!("unknown target kind {other:?}")),
        })
    }

    /// Whether a crash can neither lose nor duplicate (publish by rename).
    pub fn exactly_once(&self) -> bool {
        matches!(self, TargetSpec::Maildir(_) | TargetSpec::Eml(_))
    }
}

impl std::fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetSpec::Maildir(p) => write!(f, "maildir:{}", p.display()),
            TargetSpec::Mbox(p) => write!(f, "mbox:{}", p.display()),
            TargetSpec::Eml(p) => write!(f, "eml:{}", p.display()),
            TargetSpec::Mda(c) => write!(f, "mda:{c}"),
            TargetSpec::Lmtp { addr, recipient } => write!(f, "lmtp:{addr}:{recipient}"),
            TargetSpec::Remote(r) => write!(f, "{}", r.url()),
        }
    }
}

/// `~/x` → `$HOME/x`.
pub fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// A rename that publishes a durable file: done after the state file records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The fsynced temporary file.
    pub from: PathBuf,
    /// Its final name.
    pub to: PathBuf,
}

impl Pending {
    /// Does the rename if it is not done yet, then fsyncs the directory. Idempotent,
    /// so recovery after a crash can run it again.
    pub fn apply(&self) -> io::Result<()> {
        if self.from.exists() {
            fs::rename(&self.from, &self.to)?;
        }
        Ok(())
    }
}

/// A delivery target. See the module docs for the contract.
pub trait Target: Send {
    /// A new message begins.
    fn begin(&mut self) -> io::Result<()>;
    /// Message bytes (CRLF line ends).
    fn write(&mut self, data: &[u8]) -> io::Result<()>;
    /// The message is complete (not yet durable).
    fn finish(&mut self) -> io::Result<()>;
    /// Drops the message in progress, if any.
    fn abort(&mut self);
    /// Makes every finished message durable; returns the renames still to do.
    fn sync(&mut self) -> io::Result<Vec<Pending>>;
    /// Publishes: applies the renames and fsyncs the directories involved.
    fn publish(&mut self, pending: &[Pending]) -> io::Result<()> {
        publish(pending)
    }
    /// After [`Target::sync`]: the finished messages of the batch (by their index in
    /// finish order) the destination refused, with why. They are not recorded, so they
    /// stay on the server. Only the remote destinations refuse single messages.
    fn take_refused(&mut self) -> Vec<(usize, String)> {
        Vec::new()
    }
}

/// Applies renames and fsyncs each target directory once.
pub fn publish(pending: &[Pending]) -> io::Result<()> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for p in pending {
        p.apply()?;
        if let Some(d) = p.to.parent()
            && !dirs.iter().any(|x| x == d)
        {
            dirs.push(d.to_owned());
        }
    }
    for d in dirs {
        fsync_dir(&d)?;
    }
    Ok(())
}

/// fsync of a directory, so a rename or a new file in it survives a crash.
pub use correio_fsutil::sync_dir as fsync_dir;

/// Opens the target.
pub fn open(spec: &TargetSpec) -> io::Result<Box<dyn Target>> {
    Ok(match spec {
        TargetSpec::Maildir(dir) => Box::new(Maildir::open(dir)?),
        TargetSpec::Mbox(path) => Box::new(Mbox::open(path)?),
        TargetSpec::Eml(dir) => Box::new(EmlDir::open(dir)?),
        TargetSpec::Mda(cmd) => Box::new(Mda::new(cmd.clone())),
        TargetSpec::Lmtp { addr, recipient } => Box::new(Lmtp::new(addr, recipient)),
        TargetSpec::Remote(r) => super::remote::open(r)?,
    })
}

/// Turns CRLF into LF in a stream, across chunk boundaries.
#[derive(Debug, Default)]
struct CrlfToLf {
    pending_cr: bool,
}

impl CrlfToLf {
    fn convert(&mut self, data: &[u8], out: &mut Vec<u8>) {
        for &b in data {
            if self.pending_cr {
                self.pending_cr = false;
                if b != b'\n' {
                    out.push(b'\r');
                }
            }
            if b == b'\r' {
                self.pending_cr = true;
            } else {
                out.push(b);
            }
        }
    }
    fn end(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.push(b'\r');
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A Maildir-style unique name: time, pid, counter, host.
fn unique_name() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let host = hostname();
    format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        host
    )
}

fn hostname() -> String {
    let h = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .unwrap_or_else(|_| "localhost".into());
    // '/' and ':' would break Maildir names.
    h.trim()
        .chars()
        .map(|c| match c {
            '/' => '\\',
            ':' => '-',
            c if c.is_control() => '_',
            c => c,
        })
        .collect()
}

/// Files written under a temporary name, fsynced, then renamed into place.
#[derive(Debug)]
struct RenameWriter {
    current: Option<(BufWriter<File>, PathBuf, u64)>,
    finished: Vec<(File, PathBuf, u64)>,
    lf: Option<CrlfToLf>,
    buf: Vec<u8>,
}

impl RenameWriter {
    fn new(to_lf: bool) -> Self {
        RenameWriter {
            current: None,
            finished: Vec::new(),
            lf: to_lf.then(CrlfToLf::default),
            buf: Vec::new(),
        }
    }

    fn begin(&mut self, tmp: PathBuf) -> io::Result<()> {
        self.abort();
        let f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        self.current = Some((BufWriter::with_capacity(64 * 1024, f), tmp, 0));
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let Some((w, _, size)) = self.current.as_mut() else {
            return Err(io::Error::other("write without begin"));
        };
        match &mut self.lf {
            Some(conv) => {
                self.buf.clear();
                conv.convert(data, &mut self.buf);
                w.write_all(&self.buf)?;
                *size += self.buf.len() as u64;
            }
            None => {
                w.write_all(data)?;
                *size += data.len() as u64;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        let Some((mut w, tmp, mut size)) = self.current.take() else {
            return Err(io::Error::other("finish without begin"));
        };
        if let Some(conv) = &mut self.lf {
            self.buf.clear();
            conv.end(&mut self.buf);
            w.write_all(&self.buf)?;
            size += self.buf.len() as u64;
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        self.finished.push((f, tmp, size));
        Ok(())
    }

    fn abort(&mut self) {
        if let Some((_, tmp, _)) = self.current.take() {
            let _ = fs::remove_file(tmp);
        }
        if let Some(conv) = &mut self.lf {
            conv.pending_cr = false;
        }
    }

    /// fsyncs every finished file; `name` gives each one's final path from its size.
    fn sync(&mut self, mut name: impl FnMut(&Path, u64) -> PathBuf) -> io::Result<Vec<Pending>> {
        let files: Vec<(File, PathBuf, u64)> = self.finished.drain(..).collect();
        sync_all_parallel(files.iter().map(|(f, _, _)| f))?;
        Ok(files
            .into_iter()
            .map(|(_, tmp, size)| Pending {
                to: name(&tmp, size),
                from: tmp,
            })
            .collect())
    }
}

/// How old a temporary file must be before it counts as left over by a crash (the
/// Maildir convention: 36 hours, far longer than any delivery takes).
const STALE_TMP: Duration = Duration::from_secs(36 * 3600);

/// Removes temporary files a crashed delivery left behind (best effort: another
/// program's files in tmp/ follow the same convention).
fn remove_stale_tmp(dir: &Path, ours: impl Fn(&str) -> bool) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let old = e
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TMP);
        if old && ours(&name) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// fsyncs files from several threads at once: the file system then commits them in
/// a few journal transactions instead of one each, which is most of what group commit
/// saves on ext4/xfs. Every file is synced (or an error returned) before this returns.
fn sync_all_parallel<'a>(files: impl Iterator<Item = &'a File>) -> io::Result<()> {
    let files: Vec<&File> = files.collect();
    if files.len() <= 1 {
        return files.iter().try_for_each(|f| f.sync_all());
    }
    const THREADS: usize = 8;
    let per = files.len().div_ceil(THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(per)
            .map(|chunk| scope.spawn(move || chunk.iter().try_for_each(|f| f.sync_all())))
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(io::Error::other("fsync thread panicked")))
        })
    })
}

/// A Maildir (created if missing), written by correio-store's [`MaildirBatch`] (the
/// same writer as `correio deliver` and LMTP): tmp/ → fsync → new/, with the
/// `,S=`/`,W=` sizes in the name.
#[derive(Debug)]
pub struct Maildir {
    batch: MaildirBatch<'static>,
}

impl Maildir {
    /// Opens (creating `cur`, `new`, `tmp` if needed).
    pub fn open(root: &Path) -> io::Result<Maildir> {
        let writer = MaildirWriter::open(root).map_err(|e| {
            io::Error::other(format!("cannot open the Maildir {}: {e}", root.display()))
        })?;
        remove_stale_tmp(&root.join("tmp"), |_| true);
        Ok(Maildir {
            batch: writer.into_batch(),
        })
    }
}

/// A store error as an I/O error (its message names the file).
fn store_err(e: DeliverError) -> io::Error {
    io::Error::other(e.to_string())
}

impl Target for Maildir {
    fn begin(&mut self) -> io::Result<()> {
        self.batch
            .begin(&DeliverOptions::default())
            .map_err(store_err)
    }
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.batch.write(data).map_err(store_err)
    }
    fn finish(&mut self) -> io::Result<()> {
        self.batch.finish().map_err(store_err)
    }
    fn abort(&mut self) {
        self.batch.abort()
    }
    fn sync(&mut self) -> io::Result<Vec<Pending>> {
        // The files and tmp/ are durable; the state file records the renames before
        // publish() makes them.
        Ok(self
            .batch
            .prepare()
            .map_err(store_err)?
            .into_iter()
            .map(|(from, to)| Pending { from, to })
            .collect())
    }
    fn publish(&mut self, pending: &[Pending]) -> io::Result<()> {
        let fresh = self.batch_owner().into_batch();
        let batch = std::mem::replace(&mut self.batch, fresh);
        if batch.is_empty() {
            drop(batch);
            return publish(pending);
        }
        batch.commit().map_err(store_err)?;
        Ok(())
    }
}

impl Maildir {
    fn batch_owner(&self) -> MaildirWriter {
        self.batch.writer().clone()
    }
}

/// A folder of `name.eml` files (CRLF), written as `.name.eml.tmp` then renamed.
#[derive(Debug)]
pub struct EmlDir {
    dir: PathBuf,
    w: RenameWriter,
}

impl EmlDir {
    /// Opens (creating the folder if needed).
    pub fn open(dir: &Path) -> io::Result<EmlDir> {
        fs::create_dir_all(dir)?;
        remove_stale_tmp(dir, |name| {
            name.starts_with('.') && name.ends_with(".eml.tmp")
        });
        Ok(EmlDir {
            dir: dir.to_owned(),
            w: RenameWriter::new(false),
        })
    }
}

impl Target for EmlDir {
    fn begin(&mut self) -> io::Result<()> {
        let tmp = self.dir.join(format!(".{}.eml.tmp", unique_name()));
        self.w.begin(tmp)
    }
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.w.write(data)
    }
    fn finish(&mut self) -> io::Result<()> {
        self.w.finish()
    }
    fn abort(&mut self) {
        self.w.abort()
    }
    fn sync(&mut self) -> io::Result<Vec<Pending>> {
        let pending = self.w.sync(|tmp, _| {
            let n = tmp
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let n = n
                .trim_start_matches('.')
                .trim_end_matches(".tmp")
                .to_owned();
            tmp.with_file_name(n)
        })?;
        if !pending.is_empty() {
            fsync_dir(&self.dir)?;
        }
        Ok(pending)
    }
}

/// An mbox file in mboxrd format, written by correio-store's [`MboxBatch`] (the same
/// writer as `correio deliver` and LMTP): the mail locks (dotlock, `flock`) are taken
/// at the first message of a batch and released at sync, and an interrupted append is
/// taken back by the next writer (the store's append journal).
#[derive(Debug)]
pub struct Mbox {
    writer: MboxWriter,
    batch: Option<MboxBatch>,
}

impl Mbox {
    /// Opens (the file is created at the first message).
    pub fn open(path: &Path) -> io::Result<Mbox> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            fs::create_dir_all(parent).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        Ok(Mbox {
            writer: MboxWriter::new(path, DeliverOptions::default()),
            batch: None,
        })
    }

    fn batch(&mut self) -> io::Result<&mut MboxBatch> {
        if self.batch.is_none() {
            self.batch = Some(self.writer.batch().map_err(store_err)?);
        }
        self.batch
            .as_mut()
            .ok_or_else(|| io::Error::other("mbox batch"))
    }
}

impl Target for Mbox {
    fn begin(&mut self) -> io::Result<()> {
        self.batch()?.begin().map_err(store_err)
    }
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.batch()?.write(data).map_err(store_err)
    }
    fn finish(&mut self) -> io::Result<()> {
        self.batch()?.finish().map_err(store_err)
    }
    fn abort(&mut self) {
        if let Some(b) = self.batch.as_mut() {
            b.abort();
        }
    }
    fn sync(&mut self) -> io::Result<Vec<Pending>> {
        if let Some(b) = self.batch.take() {
            b.commit().map_err(store_err)?;
        }
        Ok(Vec::new())
    }
}

/// An MDA command: `sh -c CMD`, the message (LF line ends) on stdin; exit status 0
/// means the MDA has stored it.
#[derive(Debug)]
pub struct Mda {
    cmd: String,
    child: Option<Child>,
    lf: CrlfToLf,
    buf: Vec<u8>,
}

impl Mda {
    /// An MDA target for `cmd`.
    pub fn new(cmd: String) -> Mda {
        Mda {
            cmd,
            child: None,
            lf: CrlfToLf::default(),
            buf: Vec::new(),
        }
    }
}

impl Target for Mda {
    fn begin(&mut self) -> io::Result<()> {
        self.abort();
        let child = Command::new("sh")
            .arg("-c")
            .arg(&self.cmd)
            .stdin(Stdio::piped())
            .spawn()?;
        self.child = Some(child);
        self.lf = CrlfToLf::default();
        Ok(())
    }
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.buf.clear();
        self.lf.convert(data, &mut self.buf);
        let stdin = self
            .child
            .as_mut()
            .and_then(|c| c.stdin.as_mut())
            .ok_or_else(|| io::Error::other("MDA not running"))?;
        stdin.write_all(&self.buf)
    }
    fn finish(&mut self) -> io::Result<()> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| io::Error::other("MDA not running"))?;
        self.buf.clear();
        self.lf.end(&mut self.buf);
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&self.buf)?;
        }
        let status = child.wait()?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "MDA {:?} failed: {status}",
                self.cmd
            )));
        }
        Ok(())
    }
    fn abort(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    fn sync(&mut self) -> io::Result<Vec<Pending>> {
        Ok(Vec::new())
    }
}

/// An LMTP client (RFC 2033): one transaction per message, `250` after the final dot
/// means the server stored it durably.
#[derive(Debug)]
pub struct Lmtp {
    addr: String,
    recipient: String,
    conn: Option<LmtpConn>,
    body: Vec<u8>,
    at_line_start: bool,
}

#[derive(Debug)]
enum LmtpStream {
    Tcp(TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Read for LmtpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            LmtpStream::Tcp(s) => s.read(buf),
            LmtpStream::Unix(s) => s.read(buf),
        }
    }
}
impl Write for LmtpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LmtpStream::Tcp(s) => s.write(buf),
            LmtpStream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            LmtpStream::Tcp(s) => s.flush(),
            LmtpStream::Unix(s) => s.flush(),
        }
    }
}

#[derive(Debug)]
struct LmtpConn {
    r: BufReader<LmtpStream>,
    w: BufWriter<LmtpStream>,
}

impl LmtpConn {
    fn connect(addr: &str) -> io::Result<LmtpConn> {
        let timeout = Some(Duration::from_secs(60));
        let (a, b) = match addr.strip_prefix("unix:") {
            Some(path) => {
                let s = std::os::unix::net::UnixStream::connect(path)?;
                s.set_read_timeout(timeout)?;
                (LmtpStream::Unix(s.try_clone()?), LmtpStream::Unix(s))
            }
            None => {
                let s = TcpStream::connect(addr)?;
                s.set_read_timeout(timeout)?;
                (LmtpStream::Tcp(s.try_clone()?), LmtpStream::Tcp(s))
            }
        };
        let mut c = LmtpConn {
            r: BufReader::new(a),
            w: BufWriter::new(b),
        };
        c.expect(220)?;
        c.command("LHLO localhost")?;
        c.expect(250)?;
        Ok(c)
    }

    fn command(&mut self, line: &str) -> io::Result<()> {
        self.w.write_all(line.as_bytes())?;
        self.w.write_all(b"\r\n")?;
        self.w.flush()
    }

    /// Reads one (possibly multi-line) reply and checks its code.
    fn expect(&mut self, code: u16) -> io::Result<()> {
        loop {
            let mut line = Vec::new();
            let n = (&mut self.r).take(4096).read_until(b'\n', &mut line)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "LMTP server closed",
                ));
            }
            let text = String::from_utf8_lossy(&line);
            let got: u16 = text.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            if text.as_bytes().get(3) == Some(&b'-') {
                continue;
            }
            if got != code {
                return Err(io::Error::other(format!("LMTP: {}", text.trim_end())));
            }
            return Ok(());
        }
    }
}

impl Lmtp {
    /// An LMTP target.
    pub fn new(addr: &str, recipient: &str) -> Lmtp {
        Lmtp {
            addr: addr.to_owned(),
            recipient: recipient.to_owned(),
            conn: None,
            body: Vec::new(),
            at_line_start: true,
        }
    }
}

impl Target for Lmtp {
    fn begin(&mut self) -> io::Result<()> {
        if self.conn.is_none() {
            self.conn = Some(LmtpConn::connect(&self.addr)?);
        }
        let rcpt = self.recipient.clone();
        let c = self.conn.as_mut().ok_or_else(|| io::Error::other("LMTP"))?;
        let r = (|| {
            c.command("MAIL FROM:<>")?;
            c.expect(250)?;
            c.command(&format!("RCPT TO:<{rcpt}>"))?;
            c.expect(250)?;
            c.command("DATA")?;
            c.expect(354)
        })();
        if r.is_err() {
            self.conn = None;
        }
        self.at_line_start = true;
        r
    }
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.body.clear();
        for &b in data {
            if self.at_line_start && b == b'.' {
                self.body.push(b'.');
            }
            self.body.push(b);
            self.at_line_start = b == b'\n';
        }
        let c = self
            .conn
            .as_mut()
            .ok_or_else(|| io::Error::other("LMTP not connected"))?;
        c.w.write_all(&self.body)
    }
    fn finish(&mut self) -> io::Result<()> {
        let c = self
            .conn
            .as_mut()
            .ok_or_else(|| io::Error::other("LMTP not connected"))?;
        if !self.at_line_start {
            c.w.write_all(b"\r\n")?;
        }
        c.w.write_all(b".\r\n")?;
        c.w.flush()?;
        let r = c.expect(250);
        if r.is_err() {
            self.conn = None;
        }
        r
    }
    fn abort(&mut self) {
        // The transaction cannot be cancelled mid-DATA: drop the connection, which
        // makes the server discard it.
        self.conn = None;
    }
    fn sync(&mut self) -> io::Result<Vec<Pending>> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_to_lf_across_chunks() {
        let mut c = CrlfToLf::default();
        let mut out = Vec::new();
        for chunk in [&b"a\r"[..], b"\nb\r", b"x\r", b"\n"] {
            c.convert(chunk, &mut out);
        }
        c.end(&mut out);
        assert_eq!(out, b"a\nb\rx\n");
    }

    #[test]
    fn mbox_quotes_from_lines_mboxrd() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mb");
        let mut m = Mbox::open(&path).unwrap();
        for msg in [
            &b"Subject: a\r\n\r\nFrom me\r\n>From you\r\nFro\r\n"[..],
            b"Subject: b\r\n\r\nno end",
        ] {
            m.begin().unwrap();
            for c in msg.chunks(3) {
                m.write(c).unwrap();
            }
            m.finish().unwrap();
        }
        m.sync().unwrap();
        let got = fs::read_to_string(&path).unwrap();
        let body: Vec<&str> = got
            .lines()
            .filter(|l| !l.starts_with("From MAILER-DAEMON"))
            .collect();
        assert_eq!(
            body,
            vec![
                "Subject: a",
                "",
                ">From me",
                ">>From you",
                "Fro",
                "",
                "Subject: b",
                "",
                "no end",
                ""
            ]
        );
        assert!(!path.with_file_name("mb.lock").exists());
    }

    #[test]
    fn maildir_publishes_only_after_sync() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Maildir::open(dir.path()).unwrap();
        m.begin().unwrap();
        m.write(b"A: b\r\n\r\nbody\r\n").unwrap();
        m.finish().unwrap();
        assert_eq!(fs::read_dir(dir.path().join("new")).unwrap().count(), 0);
        let p = m.sync().unwrap();
        assert_eq!(p.len(), 1);
        m.publish(&p).unwrap();
        let files: Vec<_> = fs::read_dir(dir.path().join("new")).unwrap().collect();
        assert_eq!(files.len(), 1);
        let path = files[0].as_ref().unwrap().path();
        assert!(path.to_string_lossy().ends_with(",S=11,W=14"));
        assert_eq!(fs::read(path).unwrap(), b"A: b\n\nbody\n");
        // Publishing again (crash recovery) is harmless.
        m.publish(&p).unwrap();
    }

    #[test]
    fn target_specs_parse() {
        assert_eq!(
            TargetSpec::parse("maildir:/x").unwrap(),
            TargetSpec::Maildir("/x".into())
        );
        assert_eq!(
            TargetSpec::parse("lmtp:127.0.0.1:24:bob@example.org").unwrap(),
            TargetSpec::Lmtp {
                addr: "127.0.0.1:24".into(),
                recipient: "bob@example.org".into()
            }
        );
        assert!(TargetSpec::parse("nope").is_err());
        assert!(TargetSpec::parse("ftp:/x").is_err());
    }
}
