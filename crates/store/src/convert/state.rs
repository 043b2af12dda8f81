//! The state file of a destination (`.correio-convert-state` in a Maildir or EML folder,
//! `.NAME.correio-convert-state` next to an mbox `NAME`): which source messages are
//! already copied, and what an interrupted run left to finish. It is locked (`flock`)
//! while a run uses it, so two runs into one destination cannot overlap.
//!
//! Format: text, append-only, one record per line; fields are separated by one space
//! and escaped (bytes outside `!`..`~`, and `%`, as `%XX`):
//!
//! ```text
//! correio-convert-state 1
//! source <id>                    the source the following records are about
//! move <key> <tmp> <final>       copied: the durable file <tmp> is to be renamed <final>
//! moved                          every rename above is done
//! undo <source> <key>            a recorded message was missing after all: copy it again
//! mbox-begin <offset> <inode> <n> a batch is appended to the mbox at <offset> ...
//! mbox-from <line>               ... with these n From_ lines, in order
//! done <key>                     ... containing this message
//! mbox-end <offset>              the batch is durable (the mbox was fsynced before)
//! mbox-undo                      the open batch was cut off the mbox again
//! ```
//!
//! Paths are relative to the destination folder (the mbox's folder for an mbox).
//! Records are fsynced at each commit point. A crash can leave a torn last line (or
//! garbage after the last fsync): loading stops at the first bad line and cuts the
//! file there, unless good lines follow, which means damage rather than a crash: then
//! loading fails and says where. `done` records of a batch without `mbox-end` do not
//! count.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::ConvertError;
use crate::lock::SessionLock;

const HEADER: &[u8] = b"correio-convert-state 1\n";
/// Longest record line accepted.
const MAX_LINE: usize = 64 * 1024;

/// A recorded rename.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Move {
    pub(crate) key: Vec<u8>,
    pub(crate) tmp: Vec<u8>,
    pub(crate) dest: Vec<u8>,
}

/// An mbox batch begun and not ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MboxBatch {
    pub(crate) start: u64,
    pub(crate) ino: u64,
    pub(crate) from_lines: Vec<Vec<u8>>,
    count: usize,
}

/// `%XX` escaping of bytes outside `!`..`~` and of `%`.
pub(crate) fn esc(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if (0x21..=0x7e).contains(&c) && c != b'%' {
            s.push(c as char);
        } else {
            s.push_str(&format!("%{c:02X}"));
        }
    }
    s
}

/// Reverses [`esc`]; None for anything [`esc`] cannot produce.
pub(crate) fn unesc(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == b'%' {
            let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
            if !hex
                .bytes()
                .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(&h))
            {
                return None;
            }
            let v = u8::from_str_radix(hex, 16).ok()?;
            if (0x21..=0x7e).contains(&v) && v != b'%' {
                return None;
            }
            out.push(v);
            i += 3;
        } else if (0x21..=0x7e).contains(&c) {
            out.push(c);
            i += 1;
        } else {
            return None;
        }
    }
    Some(out)
}

/// The records of a state file as they concern one source.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Parsed {
    /// Messages of the wanted source already copied.
    pub(crate) done: HashSet<Vec<u8>>,
    /// Renames recorded and not known to be done.
    pub(crate) moves: Vec<Move>,
    pub(crate) open_batch: Option<MboxBatch>,
    /// The source of the last `source` record.
    pub(crate) last_source: Option<Vec<u8>>,
    /// An mbox batch was ever recorded (the destination is an mbox that has had
    /// messages copied into it).
    pub(crate) mbox_used: bool,
    /// `done` records of the open batch (for the source current then).
    pending: Vec<Vec<u8>>,
    pending_wanted: bool,
}

/// Reads records line by line (a line includes its `\n`).
#[derive(Debug)]
pub(crate) struct Parser {
    want: Vec<u8>,
    pub(crate) out: Parsed,
    lines: usize,
}

impl Parser {
    pub(crate) fn new(want_source: &[u8]) -> Parser {
        Parser {
            want: want_source.to_vec(),
            out: Parsed::default(),
            lines: 0,
        }
    }

    fn current_is_wanted(&self) -> bool {
        self.out.last_source.as_deref() == Some(&self.want[..])
    }

    /// One complete line. `Err(())`: not a valid record here.
    pub(crate) fn line(&mut self, line: &[u8]) -> Result<(), ()> {
        let body = line.strip_suffix(b"\n").ok_or(())?;
        self.lines += 1;
        if self.lines == 1 {
            return if line == HEADER { Ok(()) } else { Err(()) };
        }
        let f: Vec<&[u8]> = body.split(|&b| b == b' ').collect();
        let num = |v: &[u8]| -> Result<u64, ()> {
            let s = std::str::from_utf8(v).map_err(|_| ())?;
            if s.is_empty()
                || !s.bytes().all(|b| b.is_ascii_digit())
                || (s.len() > 1 && s.starts_with('0'))
            {
                return Err(());
            }
            s.parse().map_err(|_| ())
        };
        let un = |v: &[u8]| unesc(v).ok_or(());
        let wanted = self.current_is_wanted();
        let o = &mut self.out;
        let in_batch = o.open_batch.is_some();
        match f[..] {
            [b"source", id] if !in_batch => o.last_source = Some(un(id)?),
            [b"move", k, t, d] if !in_batch && o.last_source.is_some() => {
                let m = Move {
                    key: un(k)?,
                    tmp: un(t)?,
                    dest: un(d)?,
                };
                if wanted {
                    o.done.insert(m.key.clone());
                }
                o.moves.push(m);
            }
            [b"moved"] if !in_batch => o.moves.clear(),
            [b"undo", s, k] if !in_batch => {
                let (s, k) = (un(s)?, un(k)?);
                if s == self.want {
                    o.done.remove(&k);
                }
            }
            [b"mbox-begin", start, ino, n] if !in_batch && o.last_source.is_some() => {
                let count = usize::try_from(num(n)?).map_err(|_| ())?;
                o.open_batch = Some(MboxBatch {
                    start: num(start)?,
                    ino: num(ino)?,
                    from_lines: Vec::new(),
                    count,
                });
                o.pending.clear();
                o.pending_wanted = wanted;
                o.mbox_used = true;
            }
            [b"mbox-from", l] => {
                let l = un(l)?;
                match &mut o.open_batch {
                    Some(b) if b.from_lines.len() < b.count && o.pending.is_empty() => {
                        b.from_lines.push(l)
                    }
                    _ => return Err(()),
                }
            }
            [b"done", k] => match &o.open_batch {
                Some(b) if b.from_lines.len() == b.count && o.pending.len() < b.count => {
                    o.pending.push(un(k)?)
                }
                _ => return Err(()),
            },
            [b"mbox-end", end] => {
                num(end)?;
                match &o.open_batch {
                    Some(b) if b.from_lines.len() == b.count => {}
                    _ => return Err(()),
                }
                o.open_batch = None;
                let pending = std::mem::take(&mut o.pending);
                if o.pending_wanted {
                    o.done.extend(pending);
                }
            }
            [b"mbox-undo"] if in_batch => {
                o.open_batch = None;
                o.pending.clear();
            }
            _ => return Err(()),
        }
        Ok(())
    }
}

/// Reads state records from `rd` for `want_source`: the records and how many bytes
/// are valid (the rest is a torn tail to cut), or (inner error) why the file cannot be
/// used: not a state file, or a damaged record followed by good ones.
pub(crate) fn load(
    mut rd: impl BufRead,
    want_source: &[u8],
) -> io::Result<Result<(Parsed, u64), String>> {
    let mut p = Parser::new(want_source);
    let mut line = Vec::new();
    let mut valid = 0u64;
    let mut bad: Option<usize> = None;
    let mut n = 0usize;
    loop {
        line.clear();
        let got = io::Read::take(&mut rd, MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
        if got == 0 {
            break;
        }
        n += 1;
        if let Some(b) = bad {
            if line.ends_with(b"\n") && p.line(&line).is_ok() {
                return Ok(Err(format!("damaged record at line {b}")));
            }
            continue;
        }
        if p.line(&line).is_err() {
            if n == 1 && !HEADER.starts_with(&line) {
                return Ok(Err("not a correio convert state file".into()));
            }
            bad = Some(n);
            continue;
        }
        valid += got as u64;
    }
    Ok(Ok((p.out, valid)))
}

/// [`load`] on bytes in memory (tests, fuzzing).
pub(crate) fn parse(data: &[u8], want_source: &[u8]) -> Result<(Parsed, u64), String> {
    load(data, want_source).unwrap_or_else(|e| Err(e.to_string()))
}

/// The open state file of one destination, for one source.
#[derive(Debug)]
pub(crate) struct State {
    path: PathBuf,
    file: File,
    source: Vec<u8>,
    parsed: Parsed,
    _lock: SessionLock,
}

impl State {
    /// Locks and loads the state file at `path` for `source` (creating it), cutting a
    /// torn tail.
    pub(crate) fn open(path: &Path, source: &[u8]) -> Result<State, ConvertError> {
        let lock = SessionLock::acquire(path).map_err(|e| match e {
            crate::StoreError::InUse => ConvertError::Usage(format!(
                "another correio convert is writing to this destination ({} is locked)",
                path.display()
            )),
            e => e.into(),
        })?;
        let err = |e: io::Error| super::io_err("cannot use the state file", path, e);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        // Streamed: the file can list millions of messages; only the keys of this
        // source are kept.
        let (parsed, valid) = load(BufReader::new(&file), source)
            .map_err(err)?
            .map_err(|why| {
                ConvertError::State(format!(
                    "{}: {why}; move it away to start over (messages already copied would then be copied again)",
                    path.display()
                ))
            })?;
        let len = file.metadata().map_err(err)?.len();
        if valid < len {
            tracing::warn!(path = %path.display(), valid, len, "cutting an incomplete record off the state file");
            file.set_len(valid).map_err(err)?;
            file.sync_all().map_err(err)?;
        }
        file.seek(SeekFrom::End(0)).map_err(err)?;
        let mut st = State {
            path: path.to_path_buf(),
            file,
            source: source.to_vec(),
            parsed,
            _lock: lock,
        };
        if valid == 0 {
            st.append(HEADER, true).map_err(err)?;
        }
        Ok(st)
    }

    /// Wraps an I/O error on the state file.
    pub(crate) fn err(&self, e: io::Error) -> ConvertError {
        super::io_err("cannot write the state file", &self.path, e)
    }

    fn append(&mut self, text: &[u8], sync: bool) -> io::Result<()> {
        self.file.write_all(text)?;
        if sync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Makes the following records about our source.
    fn ensure_source(&mut self, text: &mut String) {
        if self.parsed.last_source.as_deref() != Some(&self.source[..]) {
            text.push_str(&format!("source {}\n", esc(&self.source)));
            self.parsed.last_source = Some(self.source.clone());
        }
    }

    /// Whether the message `key` of our source was copied by an earlier run.
    pub(crate) fn is_done(&self, key: &[u8]) -> bool {
        self.parsed.done.contains(key)
    }

    pub(crate) fn pending_moves(&self) -> &[Move] {
        &self.parsed.moves
    }

    /// Whether messages were ever copied into the mbox this state belongs to.
    pub(crate) fn mbox_used(&self) -> bool {
        self.parsed.mbox_used
    }

    /// The state file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn open_mbox_batch(&self) -> Option<&MboxBatch> {
        self.parsed.open_batch.as_ref()
    }

    /// Records copied messages with their renames still to do (fsynced).
    pub(crate) fn record_moves(&mut self, moves: &[Move]) -> io::Result<()> {
        let mut t = String::new();
        self.ensure_source(&mut t);
        for m in moves {
            t.push_str(&format!(
                "move {} {} {}\n",
                esc(&m.key),
                esc(&m.tmp),
                esc(&m.dest)
            ));
            self.parsed.done.insert(m.key.clone());
        }
        self.parsed.moves.extend_from_slice(moves);
        self.append(t.as_bytes(), true)
    }

    /// The recorded renames are done (no fsync needed: redoing them is harmless).
    pub(crate) fn moved(&mut self) -> io::Result<()> {
        self.parsed.moves.clear();
        self.append(b"moved\n", false)
    }

    /// A recorded message of the pending renames turned out missing.
    pub(crate) fn undo(&mut self, key: &[u8]) -> io::Result<()> {
        // The move may belong to another source; `undo` names ours only if it is ours,
        // and the other source's runs re-check their own files the same way.
        let line = format!("undo {} {}\n", esc(&self.source), esc(key));
        self.parsed.done.remove(key);
        self.append(line.as_bytes(), true)
    }

    /// Starts an mbox batch at `start` (fsynced before anything is appended).
    pub(crate) fn mbox_begin(
        &mut self,
        start: u64,
        ino: u64,
        from_lines: &[Vec<u8>],
    ) -> io::Result<()> {
        let mut t = String::new();
        self.ensure_source(&mut t);
        t.push_str(&format!("mbox-begin {start} {ino} {}\n", from_lines.len()));
        for l in from_lines {
            t.push_str(&format!("mbox-from {}\n", esc(l)));
        }
        self.parsed.mbox_used = true;
        self.parsed.open_batch = Some(MboxBatch {
            start,
            ino,
            from_lines: from_lines.to_vec(),
            count: from_lines.len(),
        });
        self.append(t.as_bytes(), true)
    }

    /// Ends the open mbox batch: these messages (as many as planned, or fewer if some
    /// vanished from the source meanwhile) are durable in the mbox.
    pub(crate) fn mbox_end(&mut self, keys: &[Vec<u8>], end: u64) -> io::Result<()> {
        let mut t = String::new();
        for k in keys {
            t.push_str(&format!("done {}\n", esc(k)));
            self.parsed.done.insert(k.clone());
        }
        t.push_str(&format!("mbox-end {end}\n"));
        self.parsed.open_batch = None;
        self.append(t.as_bytes(), true)
    }

    /// The open mbox batch was cut off the mbox.
    pub(crate) fn mbox_undo(&mut self) -> io::Result<()> {
        self.parsed.open_batch = None;
        self.append(b"mbox-undo\n", true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips() {
        for b in [&b""[..], b"abc", b"a b%c\n\xff", b"%41"] {
            assert_eq!(unesc(esc(b).as_bytes()).unwrap(), b);
        }
        assert_eq!(unesc(b"%41"), None);
        assert_eq!(unesc(b"%0a"), None);
        assert_eq!(unesc(b"%+0"), None);
        assert_eq!(unesc(b"a b"), None);
    }

    #[test]
    fn records_and_torn_tail() {
        let text = b"correio-convert-state 1\nsource s1\nmove a tmp/a cur/a\nmoved\nsource s2\nmove b tmp/b cur/b\nmbox-begin 10 7 1\nmbox-from From%20x\ndone c\nmbox-end 20\nmbox-begin 20 7 1\nmbox-from From%20y\ndone d\nmbo";
        let (p, valid) = parse(text, b"s2").unwrap();
        assert_eq!(valid as usize, text.len() - 3);
        assert!(p.done.contains(&b"b"[..]) && p.done.contains(&b"c"[..]));
        assert!(!p.done.contains(&b"d"[..]) && !p.done.contains(&b"a"[..]));
        assert_eq!(p.moves.len(), 1);
        let b = p.open_batch.unwrap();
        assert_eq!((b.start, b.from_lines), (20, vec![b"From y".to_vec()]));
        let (p1, _) = parse(text, b"s1").unwrap();
        assert!(p1.done.contains(&b"a"[..]) && p1.done.len() == 1);
        // A bad line followed by good ones is damage, not a crash.
        let damaged = b"correio-convert-state 1\nsource s\nbogus\nmoved\n";
        assert!(parse(damaged, b"s").is_err());
        assert_eq!(parse(b"correio-conv", b"s").unwrap().1, 0);
        assert!(parse(b"something else\n", b"s").is_err());
    }
}
