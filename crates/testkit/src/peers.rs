//! Running third-party programs (POP3 clients, MTAs, admin tools) from a test, and
//! comparing the messages they stored with the messages expected, byte for byte.
//!
//! - [`require`] finds a program or fails naming the Debian package to install.
//! - [`run_bounded`] / [`run_bounded_input`] run a program in its own process group
//!   with a time limit, output into files (a chatty program cannot block on a pipe),
//!   and kill that group, and only it, on overrun.
//! - [`message_problems`] says how a set of stored messages differs from the set
//!   expected (each exactly once, byte-exact, nothing else), with [`show_diff`] for the
//!   first differing octet; [`crlf_to_lf`] and [`lf_to_crlf`] convert between a POP3
//!   client's CRLF and a Unix file's LF form.
//! - [`maildir_messages`], [`dir_files`], [`make_maildir`], [`write_private`] and
//!   [`scratch`] handle the files a peer reads and writes.
//!
//! These functions are for tests: they panic (with what went wrong) instead of
//! returning errors.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Finds `program` on PATH (then in /usr/sbin, /usr/local/sbin and /sbin, which a
/// non-root PATH may lack) or fails loudly, naming the Debian package.
///
/// # Panics
/// When the program is not installed.
pub fn require(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    for dir in dirs {
        let p = dir.join(program);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{program}` is not installed: this test needs it \
         (apt-get install -y {package})"
    );
}

/// The result of a bounded run.
#[derive(Debug)]
pub struct Run {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Did the program exit with status 0?
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    /// Everything the program printed, for failure messages.
    pub fn log(&self) -> String {
        format!(
            "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` without input in its own process group, killing that group (and only
/// it) if it is not done within `limit`. Output goes to files in `scratch` (removed
/// again) so a chatty peer cannot block on a pipe.
///
/// # Panics
/// When the program cannot be started or does not finish in time (with what it
/// printed so far).
pub fn run_bounded(cmd: Command, limit: Duration, scratch: &Path) -> Run {
    run_bounded_input(cmd, None, limit, scratch)
}

/// As [`run_bounded`], with `stdin` (or nothing) as the program's input.
///
/// # Panics
/// As [`run_bounded`].
pub fn run_bounded_input(
    cmd: Command,
    stdin: Option<&[u8]>,
    limit: Duration,
    scratch: &Path,
) -> Run {
    try_run_bounded(cmd, stdin, limit, scratch).unwrap_or_else(|overrun| panic!("{overrun}"))
}

/// The work of [`run_bounded_input`]; an overrun (the group is killed) is an error
/// naming the command, with what it printed, instead of a panic.
pub(crate) fn try_run_bounded(
    mut cmd: Command,
    stdin: Option<&[u8]>,
    limit: Duration,
    scratch: &Path,
) -> Result<Run, String> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let base = scratch.join(format!("correio-run-{}-{n}", std::process::id()));
    let out_path = base.with_extension("stdout");
    let err_path = base.with_extension("stderr");
    let input = match stdin {
        Some(bytes) => {
            let p = base.with_extension("stdin");
            fs::write(&p, bytes).expect("write stdin file");
            let f = fs::File::open(&p).expect("open stdin file");
            let _ = fs::remove_file(&p);
            Stdio::from(f)
        }
        None => Stdio::null(),
    };
    cmd.stdin(input)
        .stdout(fs::File::create(&out_path).expect("stdout file"))
        .stderr(fs::File::create(&err_path).expect("stderr file"))
        .process_group(0);
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
    let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            let overrun = format!(
                "{desc} did not finish within {limit:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                read(&out_path),
                read(&err_path)
            );
            let _ = fs::remove_file(&out_path);
            let _ = fs::remove_file(&err_path);
            return Err(overrun);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = Run {
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
    };
    let _ = fs::remove_file(&out_path);
    let _ = fs::remove_file(&err_path);
    Ok(run)
}

/// A private temp dir (0700) for a peer's config and state; removed on drop.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Writes a config file with mode 0600 (fetchmail and mpop refuse looser modes).
pub fn write_private(path: &Path, text: &str) {
    fs::write(path, text).expect("write config");
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod 0600");
}

/// Makes an empty Maildir (tmp, new, cur) at `dir`.
pub fn make_maildir(dir: &Path) {
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(dir.join(sub)).expect("mkdir maildir");
    }
}

/// Every message file in a Maildir's `new/` and `cur/`, by file name. A missing
/// `new/` or `cur/` holds nothing.
pub fn maildir_messages(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(rd) = fs::read_dir(dir.join(sub)) {
            push_files(rd, &mut out);
        }
    }
    out.sort();
    out
}

/// Every regular file directly in `dir`, by file name.
pub fn dir_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    push_files(fs::read_dir(dir).expect("read_dir"), &mut out);
    out.sort();
    out
}

/// Adds each regular file of a directory listing, with its contents, to `out`.
fn push_files(rd: fs::ReadDir, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for e in rd {
        let p = e.expect("read_dir entry").path();
        if p.is_file() {
            let b = fs::read(&p).expect("read file");
            out.push((p, b));
        }
    }
}

/// `b` with every CRLF turned into LF (a lone CR stays).
pub fn crlf_to_lf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    for (i, &c) in b.iter().enumerate() {
        if !(c == b'\r' && b.get(i + 1) == Some(&b'\n')) {
            out.push(c);
        }
    }
    out
}

/// `b` with a CR put before every LF: a message with LF line ends as a POP3 client
/// receives it.
pub fn lf_to_crlf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + b.len() / 20);
    for &c in b {
        if c == b'\n' {
            out.push(b'\r');
        }
        out.push(c);
    }
    out
}

/// The value of the first `Subject: ` line of the header (up to the first empty LF
/// line), trailing white space (a CR) removed; `<no Subject>` when there is none.
pub fn subject(b: &[u8]) -> String {
    let end = b.windows(2).position(|w| w == b"\n\n").unwrap_or(b.len());
    for line in b[..end].split(|&c| c == b'\n') {
        if let Some(s) = line.strip_prefix(b"Subject: ") {
            return String::from_utf8_lossy(s).trim_end().to_owned();
        }
    }
    String::from("<no Subject>")
}

/// Where `got` first differs from `want`, with 60 octets of context on each side.
pub fn show_diff(want: &[u8], got: &[u8]) -> String {
    let at = want
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(got.len()));
    let ctx = |b: &[u8]| {
        let lo = at.saturating_sub(60);
        let hi = (at + 60).min(b.len());
        format!("{:?}", String::from_utf8_lossy(&b[lo..hi.max(lo)]))
    };
    format!(
        "want {} octets, got {} octets, first difference at offset {at}\n  want: …{}…\n  got:  …{}…",
        want.len(),
        got.len(),
        ctx(want),
        ctx(got)
    )
}

/// How the messages `got` differ from the messages `want`: one line per problem, none
/// when each wanted message is in `got` exactly once, byte for byte, and nothing else
/// is.
///
/// `want` pairs a name for the report with the exact bytes; `got` pairs a label
/// saying where a message was found (e.g. `file PATH`) with its bytes. A wanted message
/// not found byte-exact is shown against a message of `got` whose [`subject`] is its
/// name (the first difference); a message of `got` that is not wanted is reported as
/// unexpected unless its [`subject`] names a wanted message (then that message's line
/// says it). A message of `got` that equals no wanted message but carries the
/// Subject of one that is also there byte-exact is not reported: a caller that must
/// rule that out compares the counts as well.
pub fn message_problems(want: &[(&str, &[u8])], got: &[(&str, &[u8])]) -> Vec<String> {
    let mut by_content: BTreeMap<&[u8], usize> = BTreeMap::new();
    for (_, b) in got {
        *by_content.entry(b).or_default() += 1;
    }
    let mut problems = Vec::new();
    for (name, w) in want {
        match by_content.get(w) {
            Some(1) => {}
            Some(k) => problems.push(format!("{name}: fetched {k} times")),
            None => match got.iter().find(|(_, b)| subject(b) == *name) {
                Some((at, b)) => problems.push(format!(
                    "{name}: not byte-exact in {at}: {}",
                    show_diff(w, b)
                )),
                None => problems.push(format!("{name}: missing")),
            },
        }
    }
    for (at, b) in got {
        if !want.iter().any(|(_, w)| w == b) && !want.iter().any(|(name, _)| subject(b) == *name) {
            problems.push(format!(
                "unexpected {at} ({} octets, Subject {:?})",
                b.len(),
                subject(b)
            ));
        }
    }
    problems
}
