//! Streaming byte transforms shared by the writers and readers: CRLF → LF
//! normalization, mboxrd `From ` quoting and unquoting. Each works on arbitrary
//! chunks, keeps O(1) state (no line buffering), and gives the same output however the
//! input is split.

const FROM: &[u8; 5] = b"From ";

/// Turns CRLF into LF; every other byte (a lone CR included) passes unchanged.
#[derive(Debug, Default)]
pub(crate) struct CrlfToLf {
    pending_cr: bool,
}

impl CrlfToLf {
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    out.push(b'\n');
                    continue;
                }
                out.push(b'\r');
            }
            if b == b'\r' {
                self.pending_cr = true;
            } else {
                out.push(b);
            }
        }
    }

    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.push(b'\r');
        }
    }
}

/// Turns every LF not preceded by CR into CRLF (the wire's line ends); CRLF and a lone
/// CR pass unchanged. Runs between line ends are copied in bulk.
#[derive(Debug, Default)]
pub(crate) struct LfToCrlf {
    /// The last byte fed was a CR.
    after_cr: bool,
}

impl LfToCrlf {
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut from = 0;
        for lf in memchr::memchr_iter(b'\n', input) {
            let cr_before = if lf == 0 {
                self.after_cr
            } else {
                input[lf - 1] == b'\r'
            };
            out.extend_from_slice(&input[from..lf]);
            if !cr_before {
                out.push(b'\r');
            }
            from = lf;
        }
        out.extend_from_slice(&input[from..]);
        if let Some(&last) = input.last() {
            self.after_cr = last == b'\r';
        }
    }
}

/// Counts the lines that start with `.` (those POP3 stuffs) in bytes given in chunks of
/// any size.
#[derive(Debug, Default)]
pub(crate) struct DotLines {
    count: u64,
    /// The last byte seen ended no line (the next one does not start a line).
    mid_line: bool,
}

impl DotLines {
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        let Some(&last) = bytes.last() else {
            return;
        };
        self.count += u64::from(!self.mid_line && bytes[0] == b'.')
            + memchr::memmem::find_iter(bytes, b"\n.").count() as u64;
        self.mid_line = last != b'\n';
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }
}

/// Which way [`FromQuoting`] works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuoteDir {
    /// mboxrd writing: a line `>*From ` gets one more `>`.
    Quote,
    /// mboxrd reading: a line `>+From ` loses one `>`.
    Unquote,
}

/// mboxrd `From ` quoting or unquoting at line starts.
#[derive(Debug)]
pub(crate) struct FromQuoting {
    dir: QuoteDir,
    at_line_start: bool,
    /// `>` seen at the start of the current line, not yet written.
    gts: u64,
    /// How many bytes of "From " matched after the `>`s, not yet written.
    matched: usize,
}

impl FromQuoting {
    pub(crate) fn new(dir: QuoteDir) -> Self {
        FromQuoting {
            dir,
            at_line_start: true,
            gts: 0,
            matched: 0,
        }
    }

    fn flush_prefix(&mut self, out: &mut Vec<u8>) {
        for _ in 0..self.gts {
            out.push(b'>');
        }
        out.extend_from_slice(&FROM[..self.matched]);
        self.gts = 0;
        self.matched = 0;
    }

    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if !self.at_line_start {
                out.push(b);
                if b == b'\n' {
                    self.at_line_start = true;
                }
                continue;
            }
            if self.matched == 0 && b == b'>' {
                self.gts += 1;
                continue;
            }
            if b == FROM[self.matched] {
                self.matched += 1;
                if self.matched == FROM.len() {
                    match self.dir {
                        QuoteDir::Quote => out.push(b'>'),
                        QuoteDir::Unquote => self.gts = self.gts.saturating_sub(1),
                    }
                    self.flush_prefix(out);
                    self.at_line_start = false;
                }
                continue;
            }
            self.flush_prefix(out);
            out.push(b);
            self.at_line_start = b == b'\n';
        }
    }

    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        self.flush_prefix(out);
        self.at_line_start = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_quote(dir: QuoteDir, input: &[u8], split: usize) -> Vec<u8> {
        let mut q = FromQuoting::new(dir);
        let mut out = Vec::new();
        q.feed(&input[..split], &mut out);
        q.feed(&input[split..], &mut out);
        q.finish(&mut out);
        out
    }

    #[test]
    fn mboxrd_quote_and_unquote_roundtrip_in_every_split() {
        let orig: &[u8] = b"From me\nFrom x\n>From y\n>>From z\n>Fro\nFromage\n From q\n>\nFrom";
        let quoted: &[u8] =
            b">From me\n>From x\n>>From y\n>>>From z\n>Fro\nFromage\n From q\n>\nFrom";
        for split in 0..=orig.len() {
            assert_eq!(
                run_quote(QuoteDir::Quote, orig, split),
                quoted,
                "split {split}"
            );
        }
        for split in 0..=quoted.len() {
            assert_eq!(
                run_quote(QuoteDir::Unquote, quoted, split),
                orig,
                "split {split}"
            );
        }
    }

    #[test]
    fn crlf_normalization_in_every_split() {
        let input: &[u8] = b"a\r\nb\rc\r\r\nd\r";
        for split in 0..=input.len() {
            let mut n = CrlfToLf::default();
            let mut out = Vec::new();
            n.feed(&input[..split], &mut out);
            n.feed(&input[split..], &mut out);
            n.finish(&mut out);
            assert_eq!(out, b"a\nb\rc\r\nd\r", "split {split}");
        }
    }

    #[test]
    fn lf_to_crlf_in_every_split() {
        let input: &[u8] = b"\na\r\nb\rc\r\r\nd\n\ne\r";
        let want: &[u8] = b"\r\na\r\nb\rc\r\r\nd\r\n\r\ne\r";
        for split in 0..=input.len() {
            for split2 in split..=input.len() {
                let mut n = LfToCrlf::default();
                let mut out = Vec::new();
                n.feed(&input[..split], &mut out);
                n.feed(&input[split..split2], &mut out);
                n.feed(&input[split2..], &mut out);
                assert_eq!(out, want, "splits {split}, {split2}");
            }
        }
    }
}
