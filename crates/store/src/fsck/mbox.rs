//! mbox: check and repair (see the module docs of [`super`]).
//!
//! The repair is planned without I/O ([`plan`]: insertions at offsets, computed from a
//! [`Scan`]), applied as a stream ([`apply`]) and verified by scanning the result
//! ([`verify`]), so the fuzzer runs the same code on bytes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::{Action, Finding, FsckError, Problem, RepairReport, Report};
use crate::error::StoreError;
use crate::lock::{DEFAULT_LOCK_TIMEOUT, MboxLock, dotlock_path};
use crate::mbox::scan::Source;
use crate::mbox::{
    Encoding, NoteKind, Scan, ScannedMessage, clean_leftovers, journal_path, parent_dir,
    recover_interrupted_append, scan,
};
use crate::transform::{FromQuoting, QuoteDir};

fn open_mbox(path: &Path) -> Result<File, FsckError> {
    let file = File::open(path).map_err(|e| FsckError::io("cannot open", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| FsckError::io("cannot stat", path, e))?;
    if !meta.is_file() {
        return Err(FsckError::NotAMailbox {
            path: path.to_path_buf(),
            reason: "not a file, so not an mbox".into(),
        });
    }
    Ok(file)
}

/// Takes shared `fcntl` and `flock` locks on `file` (released when it is closed), so
/// no writer that locks is half-way through while we read. Waits up to the store's
/// default lock timeout.
fn lock_shared(file: &File, path: &Path) -> Result<(), FsckError> {
    use rustix::fs::{FlockOperation, fcntl_lock, flock};
    let deadline = Instant::now() + DEFAULT_LOCK_TIMEOUT;
    for op in 0..2 {
        loop {
            let r = if op == 0 {
                fcntl_lock(file, FlockOperation::NonBlockingLockShared)
            } else {
                flock(file, FlockOperation::NonBlockingLockShared)
            };
            match r {
                Ok(()) => break,
                Err(e)
                    if e == rustix::io::Errno::WOULDBLOCK
                        || e == rustix::io::Errno::AGAIN
                        || e == rustix::io::Errno::ACCESS =>
                {
                    if Instant::now() >= deadline {
                        return Err(StoreError::LockTimeout(path.to_path_buf()).into());
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                // A file system without locks: read anyway.
                Err(e) if e == rustix::io::Errno::NOLCK || e == rustix::io::Errno::OPNOTSUPP => {
                    break;
                }
                Err(e) => return Err(FsckError::io("cannot lock", path, e.into())),
            }
        }
    }
    Ok(())
}

/// The files beside an mbox that tell of trouble: an append journal, a stale dotlock,
/// temporaries of killed processes.
fn side_files(path: &Path, len: u64) -> Vec<Finding> {
    let mut out = Vec::new();
    let jpath = journal_path(path);
    if let Ok(text) = fs::read_to_string(&jpath) {
        let at = text
            .strip_prefix("correio-append ")
            .and_then(|t| t.trim().parse::<u64>().ok());
        out.push(match at {
            Some(at) if len > at => Finding::new(&jpath, Problem::InterruptedAppend { at }),
            _ => Finding::new(&jpath, Problem::LeftoverTempFile),
        });
    }
    let lock = dotlock_path(path);
    if lock.exists() && super::dotlock_is_stale(&lock) {
        out.push(Finding::new(&lock, Problem::StaleLock));
    }
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return out;
    };
    let Ok(rd) = fs::read_dir(parent_dir(path)) else {
        return out;
    };
    let prefixes = [
        format!(".{name}.correio-tmp."),
        format!("{name}.lock."),
        format!(".{name}.repaired.tmp."),
    ];
    let mut names: Vec<(PathBuf, String)> = rd
        .flatten()
        .filter_map(|e| Some((e.path(), e.file_name().into_string().ok()?)))
        .collect();
    names.sort();
    for (p, f) in names {
        if prefixes
            .iter()
            .any(|pre| f.strip_prefix(pre.as_str()).is_some_and(super::pid_is_gone))
        {
            out.push(Finding::new(&p, Problem::LeftoverTempFile));
        }
    }
    out
}

/// The findings of a scan, in file order.
pub(crate) fn scan_findings(path: &Path, s: &Scan) -> Vec<Finding> {
    let mut out = Vec::new();
    let at = |line: u64, offset: u64| (Some(line), Some(offset));
    let malformed_first = s
        .notes
        .first()
        .is_some_and(|n| n.offset == 0 && matches!(n.kind, NoteKind::MalformedFrom { .. }));
    if s.preamble_has_text && !malformed_first {
        let (l, o) = at(1, 0);
        out.push(
            Finding::new(
                path,
                Problem::MissingFromLine {
                    bytes: s.preamble_len,
                },
            )
            .at(l, o),
        );
    }
    for n in &s.notes {
        let message = n.message.map(|i| i + 1);
        let problem = match n.kind {
            NoteKind::FromWithoutBlank => Problem::UnquotedFromLine { message },
            NoteKind::MalformedFrom { after_blank, why } => Problem::MalformedFromLine {
                why: why.describe(),
                after_blank,
                message,
            },
            NoteKind::ContentLengthMismatch { declared } => Problem::ContentLengthMismatch {
                message: message.unwrap_or(0),
                declared,
            },
            NoteKind::ContentLengthWithoutBlank => Problem::ContentLengthWithoutBlank {
                message: message.unwrap_or(0) + 1,
            },
        };
        let (l, o) = at(n.line, n.offset);
        out.push(Finding::new(path, problem).at(l, o));
    }
    if s.notes_dropped > 0 {
        out.push(Finding::new(
            path,
            Problem::TooManyFindings {
                dropped: s.notes_dropped,
            },
        ));
    }
    if !s.final_newline {
        let (l, o) = at(s.lines, s.len);
        out.push(Finding::new(path, Problem::TruncatedLastMessage).at(l, o));
    }
    let e = s.line_ends;
    if e.lf > 0 && e.crlf > 0 {
        // Point at the first line of the rarer kind.
        let line = if e.crlf <= e.lf {
            e.first_crlf
        } else {
            e.first_lf
        };
        out.push(
            Finding::new(
                path,
                Problem::MixedLineEnds {
                    lf: e.lf,
                    crlf: e.crlf,
                },
            )
            .at(line, None),
        );
    }
    out
}

pub(super) fn check(path: &Path) -> Result<Report, FsckError> {
    let file = open_mbox(path)?;
    lock_shared(&file, path)?;
    let len = file
        .metadata()
        .map_err(|e| FsckError::io("cannot stat", path, e))?
        .len();
    let mut findings = side_files(path, len);
    let s = scan(&file, len).map_err(|e| FsckError::io("cannot read", path, e))?;
    findings.extend(scan_findings(path, &s));
    Ok(Report {
        path: path.to_path_buf(),
        format: super::Format::Mbox,
        messages: s.messages.len(),
        findings,
    })
}

/// A repair: bytes to insert at offsets of the original (sorted; at one offset in the
/// order given).
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) edits: Vec<(u64, Vec<u8>)>,
    pub(crate) actions: Vec<Action>,
    pub(crate) not_repaired: Vec<(Finding, &'static str)>,
    /// A From_ line was put in front of the preamble: one message more, first.
    pub(crate) prepends_message: bool,
    /// The newline (LF or CRLF) added at the end, if one was.
    pub(crate) final_newline: Option<&'static [u8]>,
}

/// Whether the bytes just before `at` end with an empty line.
fn blank_before<S: Source>(src: &S, at: u64) -> io::Result<bool> {
    let mut tail = [0u8; 3];
    let k = at.min(3) as usize;
    let got = src.read_at(&mut tail[3 - k..], at - k as u64)?;
    Ok(got == k && (tail[1..] == *b"\n\n" || tail == *b"\n\r\n" || (at == 1 && tail[2] == b'\n')))
}

/// Why the preamble is left as it is by a plan without it.
const PREAMBLE_LEFT: &str = "as a message its header would reach past it (a Content-Length): \
                             left as it is, before the first message";

/// Plans the repair of an mbox from its scan (`findings` are [`scan_findings`] of it;
/// `date` goes into a From_ line put in front of data that has none). Without
/// `with_preamble`, data before the first message is left as it is (the fallback when
/// making it a message would change another one, see [`repair`]).
pub(crate) fn plan<S: Source>(
    src: &S,
    s: &Scan,
    findings: &[Finding],
    date: SystemTime,
    with_preamble: bool,
) -> io::Result<Plan> {
    let mut p = Plan::default();
    let eol: &'static [u8] = if s.line_ends.crlf > s.line_ends.lf {
        b"\r\n"
    } else {
        b"\n"
    };
    if s.preamble_has_text && with_preamble {
        let line = crate::mbox::from_line(None, date);
        let line = line.trim_end_matches('\n');
        p.edits.push((0, [line.as_bytes(), eol].concat()));
        p.actions.push(Action::AddedFromLine {
            from_line: line.to_string(),
        });
        p.prepends_message = true;
        if !s.messages.is_empty() && !blank_before(src, s.preamble_len)? {
            p.edits.push((s.preamble_len, eol.to_vec()));
            p.actions.push(Action::AddedEmptyLine {
                offset: s.preamble_len,
            });
        }
    }
    for f in findings {
        let (Some(line), Some(offset)) = (f.line, f.offset) else {
            if let Problem::MixedLineEnds { .. } = f.problem {
                p.not_repaired
                    .push((f.clone(), "line ends are message data: kept as they are"));
            } else if let Problem::TooManyFindings { .. } = f.problem {
                p.not_repaired.push((
                    f.clone(),
                    "beyond what one pass repairs: run the repair again on the repaired copy",
                ));
            }
            continue;
        };
        match &f.problem {
            Problem::MissingFromLine { .. }
            | Problem::UnquotedFromLine { message: None }
            | Problem::MalformedFromLine { message: None, .. }
                if !with_preamble =>
            {
                p.not_repaired.push((f.clone(), PREAMBLE_LEFT));
            }
            Problem::UnquotedFromLine { message } | Problem::MalformedFromLine { message, .. } => {
                let quoted = match message {
                    Some(m) => s
                        .messages
                        .get(m - 1)
                        .is_some_and(|m| m.encoding == Encoding::Quoted),
                    None => true,
                };
                if quoted {
                    p.edits.push((offset, b">".to_vec()));
                    p.actions.push(Action::QuotedFromLine { line, offset });
                } else {
                    p.not_repaired.push((
                        f.clone(),
                        "inside a message read by its Content-Length: quoting would change it",
                    ));
                }
            }
            Problem::ContentLengthWithoutBlank { .. } => {
                p.edits.push((offset, eol.to_vec()));
                p.actions.push(Action::AddedEmptyLine { offset });
            }
            Problem::ContentLengthMismatch { .. } => p.not_repaired.push((
                f.clone(),
                "the header is message data and readers ignore it: kept",
            )),
            Problem::TruncatedLastMessage => {
                // A cut line that is a lone CR would become an empty line, which at the
                // end is the separator, not content: one more newline keeps it content.
                let mut tail = [0u8; 2];
                let k = s.len.min(2) as usize;
                let got = src.read_at(&mut tail[2 - k..], s.len - k as u64)?;
                let lone_cr = got == k && tail[1] == b'\r' && (k == 1 || tail[0] == b'\n');
                // A cut From_ line that ends in CR is completed with LF alone: with a
                // whole CRLF after its CR it would end in CR, no date would parse, and
                // its message would join the one before (a found fuzz case).
                let cut_from_line = s.messages.last().is_some_and(|m| m.content_start >= s.len);
                let add = if lone_cr && eol == b"\n" {
                    b"\n\n".to_vec()
                } else if cut_from_line && got == k && k > 0 && tail[1] == b'\r' {
                    b"\n".to_vec()
                } else {
                    eol.to_vec()
                };
                p.edits.push((s.len, add));
                p.actions.push(Action::AddedFinalNewline);
                p.final_newline = Some(eol);
            }
            _ => {}
        }
    }
    // Stable: at one offset the From_ line comes before the quote of the line there.
    p.edits.sort_by_key(|e| e.0);
    Ok(p)
}

/// Writes `src[..len]` with the insertions of `edits` to `out`.
pub(crate) fn apply<S: Source, W: Write>(
    src: &S,
    len: u64,
    edits: &[(u64, Vec<u8>)],
    out: &mut W,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = 0u64;
    let mut copy_to = |out: &mut W, pos: &mut u64, to: u64| -> io::Result<()> {
        while *pos < to {
            let n = buf
                .len()
                .min(usize::try_from(to - *pos).unwrap_or(usize::MAX));
            let got = src.read_at(&mut buf[..n], *pos)?;
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "mbox shrank under the lock",
                ));
            }
            out.write_all(&buf[..got])?;
            *pos += got as u64;
        }
        Ok(())
    };
    for (at, insert) in edits {
        copy_to(out, &mut pos, (*at).min(len))?;
        out.write_all(insert)?;
    }
    copy_to(out, &mut pos, len)
}

/// SHA-256 of what POP3 serves for `m` (unquoted content), followed by `extra`.
fn served_digest<S: Source>(src: &S, m: &ScannedMessage, extra: &[u8]) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut q = FromQuoting::new(QuoteDir::Unquote);
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(64 * 1024 + 64);
    let mut pos = m.content_start;
    while pos < m.content_end {
        let n = buf
            .len()
            .min(usize::try_from(m.content_end - pos).unwrap_or(usize::MAX));
        let got = src.read_at(&mut buf[..n], pos)?;
        if got == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
        }
        match m.encoding {
            Encoding::Verbatim => h.update(&buf[..got]),
            Encoding::Quoted => {
                out.clear();
                q.feed(&buf[..got], &mut out);
                h.update(&out);
            }
        }
        pos += got as u64;
    }
    out.clear();
    q.finish(&mut out);
    h.update(&out);
    h.update(extra);
    Ok(h.finalize().into())
}

/// Scans the repaired bytes and checks that every message of the original serves the
/// same bytes (the last one plus its newline when one was added), in order, after the
/// message made of the preamble if there is one. `Err(n)`: message `n` (1-based, of
/// the original; 0 for the count) differs.
pub(crate) fn verify<S: Source, T: Source>(
    orig: &S,
    s: &Scan,
    repaired: &T,
    repaired_len: u64,
    p: &Plan,
) -> io::Result<Result<Scan, usize>> {
    let ns = scan(repaired, repaired_len)?;
    let skip = usize::from(p.prepends_message);
    if ns.messages.len() != s.messages.len() + skip {
        return Ok(Err(0));
    }
    for (i, m) in s.messages.iter().enumerate() {
        // The added newline ends the last message's content, unless the cut line is
        // its From_ line.
        let extra = match p.final_newline {
            Some(eol) if i + 1 == s.messages.len() && m.content_start < s.len => eol,
            _ => b"",
        };
        if served_digest(orig, m, extra)? != served_digest(repaired, &ns.messages[i + skip], b"")? {
            return Ok(Err(i + 1));
        }
    }
    Ok(Ok(ns))
}

pub(super) fn repair(path: &Path) -> Result<RepairReport, FsckError> {
    drop(open_mbox(path)?);
    let len0 = fs::metadata(path)
        .map_err(|e| FsckError::io("cannot stat", path, e))?
        .len();
    // What is beside the mbox before locking (locking cleans some of it).
    let before = side_files(path, len0);
    // Taking the locks removes a stale dotlock (then ours takes its place).
    let lock = MboxLock::acquire(path, false, DEFAULT_LOCK_TIMEOUT)?;
    let mut actions = Vec::new();
    // What every locker does: undo an interrupted append (its delivery was never
    // acknowledged; the journal goes too), remove temporaries of killed processes.
    recover_interrupted_append(path, &lock)?;
    clean_leftovers(path);
    for f in &before {
        match f.problem {
            Problem::InterruptedAppend { .. } => actions.push(Action::UndidInterruptedAppend),
            Problem::StaleLock | Problem::LeftoverTempFile => {
                // Our own repair temporaries are ours to remove (the dotlock is ours
                // now, the journal and the others are gone already).
                if f.path != dotlock_path(path) && f.path.exists() {
                    fs::remove_file(&f.path)
                        .map_err(|e| FsckError::io("cannot remove", &f.path, e))?;
                }
                actions.push(Action::Removed {
                    path: f.path.clone(),
                });
            }
            _ => {}
        }
    }
    let file = lock.file();
    let meta = file
        .metadata()
        .map_err(|e| FsckError::io("cannot stat", path, e))?;
    let len = meta.len();
    let s = scan(file, len).map_err(|e| FsckError::io("cannot read", path, e))?;
    let scanned = scan_findings(path, &s);
    let mut found = before.clone();
    found.extend(scanned.iter().cloned());
    let report = Report {
        path: path.to_path_buf(),
        format: super::Format::Mbox,
        messages: s.messages.len(),
        findings: found,
    };
    let date = meta.modified().unwrap_or(UNIX_EPOCH);
    let read_err = |e| FsckError::io("cannot read", path, e);
    let mut p = plan(file, &s, &scanned, date, true).map_err(read_err)?;
    let mut out = RepairReport {
        found: report,
        actions,
        not_repaired: Vec::new(),
        repaired_copy: None,
        original: path.to_path_buf(),
    };
    let target = super::repaired_path(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = parent_dir(path);
    let tmp = dir.join(format!(".{name}.repaired.tmp.{}", std::process::id()));
    if !p.edits.is_empty() && fs::symlink_metadata(&target).is_ok() {
        return Err(FsckError::RepairedExists(target));
    }
    let mut result = if p.edits.is_empty() {
        Ok(())
    } else {
        write_verified(path, file, &s, &p, &tmp, &meta)
    };
    if matches!(result, Err(FsckError::VerifyFailed { .. })) && p.prepends_message {
        // The data before the first message, made a message, reaches past its end
        // (its header has a Content-Length): leave it, repair the rest.
        let _ = fs::remove_file(&tmp);
        p = plan(file, &s, &scanned, date, false).map_err(read_err)?;
        result = if p.edits.is_empty() {
            Ok(())
        } else {
            write_verified(path, file, &s, &p, &tmp, &meta)
        };
    }
    out.actions.extend(p.actions.iter().cloned());
    out.not_repaired = p.not_repaired.clone();
    if p.edits.is_empty() && result.is_ok() {
        return Ok(out);
    }
    let result = result.and_then(|()| {
        super::rename_noreplace(&tmp, &target).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                FsckError::RepairedExists(target.clone())
            } else {
                FsckError::io("cannot rename to", &target, e)
            }
        })?;
        correio_fsutil::sync_dir(dir).map_err(|e| FsckError::io("cannot sync", dir, e))
    });
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    drop(lock);
    out.repaired_copy = Some(target);
    Ok(out)
}

/// Writes the repaired copy to `tmp` (same mode and, as root, owner as the mbox),
/// fsyncs it, and verifies it.
fn write_verified(
    path: &Path,
    file: &File,
    s: &Scan,
    p: &Plan,
    tmp: &Path,
    meta: &fs::Metadata,
) -> Result<(), FsckError> {
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| FsckError::io("cannot create", tmp, e))?;
    let _ = std::os::unix::fs::fchown(&out, Some(meta.uid()), Some(meta.gid()));
    let io_err = |e| FsckError::io("cannot write", tmp, e);
    out.set_permissions(fs::Permissions::from_mode(
        meta.permissions().mode() & 0o7777,
    ))
    .map_err(io_err)?;
    let mut w = BufWriter::with_capacity(256 * 1024, out);
    apply(file, s.len, &p.edits, &mut w).map_err(io_err)?;
    let out = w.into_inner().map_err(|e| io_err(e.into_error()))?;
    out.sync_all().map_err(io_err)?;
    drop(out);
    let copy = File::open(tmp).map_err(|e| FsckError::io("cannot open", tmp, e))?;
    let copy_len = copy.metadata().map_err(io_err)?.len();
    match verify(file, s, &copy, copy_len, p).map_err(io_err)? {
        Ok(_) => Ok(()),
        Err(message) => Err(FsckError::VerifyFailed {
            path: path.to_path_buf(),
            message,
        }),
    }
}

/// The fuzz body: see [`super::fuzzing::mbox_repair`].
pub(crate) fn fuzz_repair(data: &[u8]) {
    let Ok(s) = scan(&data, data.len() as u64) else {
        return;
    };
    // A rewrite keeps every byte: the scan covers the input end to end.
    crate::mbox::check_tiling(&s, Path::new("fuzz")).expect("scan covers the input");
    let findings = scan_findings(Path::new("fuzz"), &s);
    let p = plan(&data, &s, &findings, UNIX_EPOCH, true).expect("in-memory plan");
    let mut out = Vec::new();
    apply(&data, s.len, &p.edits, &mut out).expect("in-memory apply");
    let verdict = verify(&data, &s, &out.as_slice(), out.len() as u64, &p).expect("in-memory");
    // The repair's fallback: the same without making the preamble a message.
    let (p, out) = if verdict.is_err() && p.prepends_message {
        let p = plan(&data, &s, &findings, UNIX_EPOCH, false).expect("in-memory plan");
        let mut out = Vec::new();
        apply(&data, s.len, &p.edits, &mut out).expect("in-memory apply");
        (p, out)
    } else {
        (p, out)
    };
    // Only insertions: taking them out again gives the input.
    let mut back = Vec::with_capacity(data.len());
    let mut from = 0usize;
    let mut at_out = 0usize;
    for (at, ins) in &p.edits {
        let at = usize::try_from(*at).unwrap_or(usize::MAX).min(data.len());
        back.extend_from_slice(&out[at_out..at_out + (at - from)]);
        at_out += at - from;
        assert_eq!(
            &out[at_out..at_out + ins.len()],
            &ins[..],
            "insertion in place"
        );
        at_out += ins.len();
        from = at;
    }
    back.extend_from_slice(&out[at_out..]);
    assert_eq!(back, data, "the repair only inserts");
    let verdict = verify(&data, &s, &out.as_slice(), out.len() as u64, &p).expect("in-memory");
    let ns = match verdict {
        Ok(ns) => ns,
        Err(_) => {
            // Only a Content-Length that the insertions make true can change a message.
            assert!(
                s.notes
                    .iter()
                    .any(|n| matches!(n.kind, NoteKind::ContentLengthMismatch { .. })),
                "repair changed a message"
            );
            return;
        }
    };
    if s.notes_dropped > 0 {
        return;
    }
    assert!(
        !ns.preamble_has_text || !p.prepends_message && s.preamble_has_text,
        "data left outside messages"
    );
    assert!(ns.final_newline, "no final newline after repair");
    for n in &ns.notes {
        match n.kind {
            NoteKind::FromWithoutBlank | NoteKind::MalformedFrom { .. } => {
                let m = n.message.and_then(|i| ns.messages.get(i));
                let left_preamble = n.message.is_none() && !p.prepends_message;
                assert!(
                    left_preamble || m.is_some_and(|m| m.encoding == Encoding::Verbatim),
                    "From_ line problem left at {}",
                    n.offset
                );
            }
            NoteKind::ContentLengthWithoutBlank => panic!("no empty line after repair"),
            NoteKind::ContentLengthMismatch { .. } => {}
        }
    }
}
