//! The syntax of Dovecot 2.3's configuration files (`dovecot.conf` and what it
//! includes), and of `doveconf -n`'s output, which is the same syntax.
//!
//! - `key = value` (spaces optional); a value in `"..."` or `'...'` has its quotes
//!   removed and `\x` read as `x`. An empty value is allowed.
//! - `#` outside quotes starts a comment; a line ending in `\` continues on the next.
//! - `kind {` or `kind name {` opens a section (`passdb {`, `service pop3-login {`,
//!   `inet_listener pop3s {`, `protocol pop3 {`), `}` closes it.
//! - `!include PATH` and `!include_try PATH` read other files, relative to the
//!   directory of the including file; a `*`/`?` pattern in the file name reads every
//!   match, in name order. `!include` of nothing is an error, `!include_try` is not.
//! - `$name` in a value is the value a top-level setting `name` had at that point
//!   (empty if unset): `protocols = $protocols pop3`.
//! - `key = <PATH` (as in `ssl_cert = </etc/ssl/certs/mail.pem`) is kept as written;
//!   the translator reads it as a path.
//!
//! Errors name the file and line. Files are read through [`Source`], so tests and the
//! fuzzer parse in memory.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Where something was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: PathBuf,
    /// The line (1-based).
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One `key = value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The key.
    pub key: String,
    /// The value, quotes removed and `$` variables expanded.
    pub value: String,
    /// Where it was written.
    pub at: Location,
}

/// One `kind [name] { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// `passdb`, `service`, `inet_listener`, `protocol`, ...
    pub kind: String,
    /// `pop3-login`, `pop3s`, ...; `None` for `passdb {`.
    pub name: Option<String>,
    /// Where it was opened.
    pub at: Location,
    /// Its settings and subsections, in file order.
    pub items: Vec<Item>,
}

/// A setting or a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `key = value`.
    Setting(Setting),
    /// `kind [name] { ... }`.
    Section(Section),
}

impl Section {
    /// The settings directly in this section.
    pub fn settings(&self) -> impl Iterator<Item = &Setting> {
        self.items.iter().filter_map(|i| match i {
            Item::Setting(s) => Some(s),
            Item::Section(_) => None,
        })
    }

    /// The subsections directly in this section.
    pub fn sections(&self) -> impl Iterator<Item = &Section> {
        self.items.iter().filter_map(|i| match i {
            Item::Section(s) => Some(s),
            Item::Setting(_) => None,
        })
    }

    /// The last value of `key` directly in this section.
    pub fn get(&self, key: &str) -> Option<&Setting> {
        self.settings().filter(|s| s.key == key).last()
    }
}

/// A file that cannot be read or parsed: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Where (the line is 0 when the whole file is meant).
    pub at: Location,
    /// Why.
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.line == 0 {
            write!(f, "{}: {}", self.at.file.display(), self.reason)
        } else {
            write!(f, "{}: {}", self.at, self.reason)
        }
    }
}

impl std::error::Error for ParseError {}

/// Where the parser reads files from.
pub trait Source {
    /// The text of a file.
    fn read(&mut self, path: &Path) -> io::Result<String>;
    /// The files matching `pattern` (a path whose last component may hold `*` and
    /// `?`), sorted.
    fn glob(&mut self, pattern: &Path) -> io::Result<Vec<PathBuf>>;
}

/// Largest file read (Dovecot configurations are a few KiB).
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Deepest `!include` nesting (a loop stops here).
const MAX_INCLUDE_DEPTH: usize = 16;
/// Deepest section nesting.
const MAX_SECTION_DEPTH: usize = 32;
/// Most files read in one parse.
const MAX_FILES: usize = 1000;
/// Longest value after `$variable` expansion (a value may name another twice, and
/// that one another twice: without a bound, 30 lines take gigabytes; a found fuzz case).
const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most octets all settings together may take (a file included many times over).
const MAX_SETTINGS_BYTES: usize = 16 * 1024 * 1024;

/// The file system.
#[derive(Debug, Default)]
pub struct FsSource;

impl Source for FsSource {
    fn read(&mut self, path: &Path) -> io::Result<String> {
        let meta = std::fs::metadata(path)?;
        if meta.is_dir() {
            return Err(io::Error::other("is a directory"));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(io::Error::other(format!(
                "larger than {MAX_FILE_BYTES} bytes"
            )));
        }
        let bytes = std::fs::read(path)?;
        String::from_utf8(bytes).map_err(|_| io::Error::other("not UTF-8 text"))
    }

    fn glob(&mut self, pattern: &Path) -> io::Result<Vec<PathBuf>> {
        let dir = pattern.parent().unwrap_or(Path::new("."));
        let Some(pat) = pattern.file_name().and_then(|p| p.to_str()) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if let Some(name) = e.file_name().to_str()
                && !name.starts_with('.')
                && wildcard_match(pat.as_bytes(), name.as_bytes())
            {
                out.push(dir.join(name));
            }
        }
        out.sort();
        Ok(out)
    }
}

/// `*` and `?` matching, as glob(3) does for one path component.
pub fn wildcard_match(pat: &[u8], s: &[u8]) -> bool {
    // Iterative with one backtrack point: linear in practice, never exponential.
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

fn has_wildcard(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains(['*', '?']))
}

struct Parser<'a> {
    source: &'a mut dyn Source,
    /// Open sections; the first is the file's top level.
    stack: Vec<Section>,
    vars: HashMap<String, String>,
    files: usize,
    /// Octets of every setting's name and value so far (bounded by
    /// [`MAX_SETTINGS_BYTES`]).
    settings_bytes: usize,
}

/// Parses the file at `path` and everything it includes.
pub fn parse_file(path: &Path, source: &mut dyn Source) -> Result<Vec<Item>, ParseError> {
    let text = source.read(path).map_err(|e| ParseError {
        at: Location {
            file: path.to_owned(),
            line: 0,
        },
        reason: format!("cannot read: {e}"),
    })?;
    parse_str(&text, path, source)
}

/// Parses `text` as the file `path` (includes are read through `source`).
pub fn parse_str(
    text: &str,
    path: &Path,
    source: &mut dyn Source,
) -> Result<Vec<Item>, ParseError> {
    let mut p = Parser {
        source,
        stack: vec![Section {
            kind: String::new(),
            name: None,
            at: Location {
                file: path.to_owned(),
                line: 0,
            },
            items: Vec::new(),
        }],
        vars: HashMap::new(),
        files: 1,
        settings_bytes: 0,
    };
    p.parse_text(text, path, 0)?;
    if p.stack.len() > 1 {
        let open = p.stack.last().map(|s| s.at.clone());
        return Err(ParseError {
            at: Location {
                file: path.to_owned(),
                line: 0,
            },
            reason: match open {
                Some(at) => format!("missing '}}' (the section opened at {at} is not closed)"),
                None => "missing '}'".into(),
            },
        });
    }
    Ok(p.stack.pop().map(|s| s.items).unwrap_or_default())
}

/// Strips a comment (a `#` outside quotes) from a line.
fn strip_comment(line: &str) -> &str {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= b.len() {
                    return line;
                }
            }
            b'#' => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

/// Removes the quotes of a quoted value and reads its `\` escapes.
fn unquote(v: &str) -> String {
    let b = v.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        let inner = &v[1..v.len() - 1];
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else {
                out.push(c);
            }
        }
        out
    } else {
        v.to_owned()
    }
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')
}

impl Parser<'_> {
    fn err(file: &Path, line: usize, reason: impl Into<String>) -> ParseError {
        ParseError {
            at: Location {
                file: file.to_owned(),
                line,
            },
            reason: reason.into(),
        }
    }

    /// `$name` → the value of the top-level setting `name` so far. `None`: the result
    /// would be longer than [`MAX_VALUE_BYTES`].
    fn expand(&self, value: &str) -> Option<String> {
        if !value.contains('$') {
            return Some(value.to_owned());
        }
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        let push = |out: &mut String, s: &str| {
            (out.len() + s.len() <= MAX_VALUE_BYTES).then(|| out.push_str(s))
        };
        while let Some(pos) = rest.find('$') {
            push(&mut out, &rest[..pos])?;
            let after = &rest[pos + 1..];
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 {
                push(&mut out, "$")?;
            } else if let Some(v) = self.vars.get(&after[..len]) {
                push(&mut out, v)?;
            }
            rest = &after[len..];
        }
        push(&mut out, rest)?;
        Some(out)
    }

    fn push(&mut self, item: Item) {
        if let Some(top) = self.stack.last_mut() {
            top.items.push(item);
        }
    }

    fn parse_text(&mut self, text: &str, file: &Path, depth: usize) -> Result<(), ParseError> {
        let base_depth = self.stack.len();
        let mut lines = text.split('\n').enumerate();
        while let Some((n, raw)) = lines.next() {
            let line_no = n + 1;
            let mut line = strip_comment(raw.trim_start()).trim_end().to_owned();
            // Continuation: a trailing backslash joins the next line.
            while line.ends_with('\\') {
                line.pop();
                match lines.next() {
                    Some((_, next)) => line.push_str(strip_comment(next.trim_start()).trim_end()),
                    None => break,
                }
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if line == "}" {
                if self.stack.len() <= base_depth {
                    return Err(Self::err(file, line_no, "unexpected '}'"));
                }
                if let Some(done) = self.stack.pop() {
                    self.push(Item::Section(done));
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix('!') {
                let (cmd, arg) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
                let arg = unquote(arg.trim());
                let must = match cmd {
                    "include" => true,
                    "include_try" => false,
                    _ => return Err(Self::err(file, line_no, format!("unknown command !{cmd}"))),
                };
                if arg.is_empty() {
                    return Err(Self::err(file, line_no, format!("!{cmd} needs a file")));
                }
                self.include(file, line_no, &arg, must, depth)?;
                continue;
            }
            if let Some(head) = line.strip_suffix('{') {
                let head = head.trim_end();
                let (kind, name) = match head.split_once([' ', '\t']) {
                    Some((k, n)) => (k, Some(unquote(n.trim()))),
                    None => (head, None),
                };
                if kind.is_empty() || !kind.chars().all(is_key_char) || kind.contains('=') {
                    return Err(Self::err(
                        file,
                        line_no,
                        format!("bad section header {line:?}"),
                    ));
                }
                if self.stack.len() > MAX_SECTION_DEPTH {
                    return Err(Self::err(file, line_no, "sections nested too deep"));
                }
                self.stack.push(Section {
                    kind: kind.to_owned(),
                    name,
                    at: Location {
                        file: file.to_owned(),
                        line: line_no,
                    },
                    items: Vec::new(),
                });
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(Self::err(
                    file,
                    line_no,
                    format!("expecting '=' (or a section's '{{') in {line:?}"),
                ));
            };
            let key = key.trim();
            if key.is_empty() || !key.chars().all(is_key_char) {
                return Err(Self::err(
                    file,
                    line_no,
                    format!("bad setting name {key:?}"),
                ));
            }
            let value = value.trim();
            let value = if value.starts_with('"') || value.starts_with('\'') {
                unquote(value)
            } else {
                self.expand(value).ok_or_else(|| {
                    Self::err(
                        file,
                        line_no,
                        format!(
                            "the value of {key} is longer than {MAX_VALUE_BYTES} bytes once its $variables are expanded"
                        ),
                    )
                })?
            };
            self.settings_bytes += key.len() + value.len();
            if self.settings_bytes > MAX_SETTINGS_BYTES {
                return Err(Self::err(
                    file,
                    line_no,
                    format!("the settings take more than {MAX_SETTINGS_BYTES} bytes"),
                ));
            }
            if self.stack.len() == 1 {
                self.vars.insert(key.to_owned(), value.clone());
            }
            self.push(Item::Setting(Setting {
                key: key.to_owned(),
                value,
                at: Location {
                    file: file.to_owned(),
                    line: line_no,
                },
            }));
        }
        if self.stack.len() > base_depth {
            let at = self
                .stack
                .last()
                .map(|s| s.at.to_string())
                .unwrap_or_default();
            return Err(Self::err(
                file,
                0,
                format!("missing '}}' (the section opened at {at} is not closed in this file)"),
            ));
        }
        Ok(())
    }

    fn include(
        &mut self,
        file: &Path,
        line_no: usize,
        arg: &str,
        must: bool,
        depth: usize,
    ) -> Result<(), ParseError> {
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(Self::err(
                file,
                line_no,
                "includes nested too deep (an include loop?)",
            ));
        }
        let dir = file.parent().unwrap_or(Path::new(""));
        let target = dir.join(arg);
        let paths = if has_wildcard(&target) {
            match self.source.glob(&target) {
                Ok(p) => p,
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(e) => {
                    return Err(Self::err(
                        file,
                        line_no,
                        format!("cannot list {}: {e}", target.display()),
                    ));
                }
            }
        } else {
            vec![target.clone()]
        };
        if paths.is_empty() {
            if must {
                return Err(Self::err(
                    file,
                    line_no,
                    format!("!include {}: no file matches", target.display()),
                ));
            }
            return Ok(());
        }
        for p in paths {
            self.files += 1;
            if self.files > MAX_FILES {
                return Err(Self::err(file, line_no, "too many included files"));
            }
            let text = match self.source.read(&p) {
                Ok(t) => t,
                Err(e) if !must && e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(Self::err(
                        file,
                        line_no,
                        format!("!include {}: cannot read: {e}", p.display()),
                    ));
                }
            };
            self.parse_text(&text, &p, depth + 1)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files in memory.
    #[derive(Default)]
    pub(crate) struct MemSource(pub(crate) Vec<(PathBuf, String)>);

    impl Source for MemSource {
        fn read(&mut self, path: &Path) -> io::Result<String> {
            self.0
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
        fn glob(&mut self, pattern: &Path) -> io::Result<Vec<PathBuf>> {
            let dir = pattern.parent().unwrap_or(Path::new(""));
            let pat = pattern.file_name().and_then(|p| p.to_str()).unwrap_or("");
            let mut v: Vec<PathBuf> = self
                .0
                .iter()
                .map(|(p, _)| p.clone())
                .filter(|p| {
                    p.parent() == Some(dir)
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| wildcard_match(pat.as_bytes(), n.as_bytes()))
                })
                .collect();
            v.sort();
            Ok(v)
        }
    }

    fn parse(files: &[(&str, &str)]) -> Result<Vec<Item>, ParseError> {
        let mut src = MemSource(
            files
                .iter()
                .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
                .collect(),
        );
        parse_file(Path::new(files[0].0), &mut src)
    }

    fn setting(items: &[Item], key: &str) -> Option<Setting> {
        items.iter().rev().find_map(|i| match i {
            Item::Setting(s) if s.key == key => Some(s.clone()),
            _ => None,
        })
    }

    /// Found by the `server_import_dovecot` fuzz target: a variable that names itself
    /// twice doubles with every line, and 30 lines took gigabytes. Now every expanded
    /// value is bounded, and the parse says where it stopped.
    #[test]
    fn variables_that_double_stop_at_the_value_bound() {
        let mut text = String::from("protocols = pop3\n");
        for _ in 0..40 {
            text.push_str("protocols = $protocols $protocols\n");
        }
        let e = parse(&[("/etc/dovecot/dovecot.conf", &text)]).unwrap_err();
        assert!(
            e.reason.contains("once its $variables are expanded"),
            "{e:?}"
        );
        assert!(e.at.line > 10 && e.at.line < 20, "{e:?}");
        // Short of the bound, expansion works as before.
        let ok = parse(&[(
            "/etc/dovecot/dovecot.conf",
            "protocols = imap\nprotocols = $protocols pop3\n",
        )])
        .unwrap();
        assert_eq!(setting(&ok, "protocols").unwrap().value, "imap pop3");
    }

    #[test]
    fn settings_sections_comments_quotes() {
        let items = parse(&[(
            "/etc/dovecot/dovecot.conf",
            "# comment\n\
             protocols = pop3 # trailing comment\n\
             login_greeting = \"Mail # here\"\n\
             empty =\n\
             auth_mechanisms=plain \\\n   login\n\
             service pop3-login {\n  inet_listener pop3s {\n    port = 995\n    ssl = yes\n  }\n}\n\
             passdb {\n  driver = passwd-file\n  args = scheme=PLAIN /etc/dovecot/users\n}\n",
        )])
        .unwrap();
        assert_eq!(setting(&items, "protocols").unwrap().value, "pop3");
        assert_eq!(
            setting(&items, "login_greeting").unwrap().value,
            "Mail # here"
        );
        assert_eq!(setting(&items, "empty").unwrap().value, "");
        assert_eq!(
            setting(&items, "auth_mechanisms").unwrap().value,
            "plain login"
        );
        assert_eq!(setting(&items, "auth_mechanisms").unwrap().at.line, 5);
        let Item::Section(svc) = &items[4] else {
            panic!("{items:?}")
        };
        assert_eq!(
            (svc.kind.as_str(), svc.name.as_deref()),
            ("service", Some("pop3-login"))
        );
        let l = svc.sections().next().unwrap();
        assert_eq!(l.name.as_deref(), Some("pop3s"));
        assert_eq!(l.get("port").unwrap().value, "995");
        assert_eq!(l.get("port").unwrap().at.line, 9);
        let Item::Section(pdb) = &items[5] else {
            panic!()
        };
        assert_eq!(pdb.name, None);
        assert_eq!(
            pdb.get("args").unwrap().value,
            "scheme=PLAIN /etc/dovecot/users"
        );
    }

    #[test]
    fn includes_globs_and_variables() {
        let items = parse(&[
            (
                "/etc/dovecot/dovecot.conf",
                "protocols = imap\n!include conf.d/*.conf\n!include_try missing.conf\n\
                 !include_try /usr/share/dovecot/protocols.d/*.protocol\n",
            ),
            (
                "/etc/dovecot/conf.d/10-ssl.conf",
                "ssl_cert = </etc/ssl/a.pem\n",
            ),
            (
                "/etc/dovecot/conf.d/20-pop3.conf",
                "protocol pop3 {\n  pop3_uidl_format = %08Xu%08Xv\n}\n",
            ),
            (
                "/usr/share/dovecot/protocols.d/pop3d.protocol",
                "protocols = $protocols pop3\n",
            ),
        ])
        .unwrap();
        assert_eq!(setting(&items, "protocols").unwrap().value, "imap pop3");
        let cert = setting(&items, "ssl_cert").unwrap();
        assert_eq!(cert.value, "</etc/ssl/a.pem");
        assert_eq!(cert.at.to_string(), "/etc/dovecot/conf.d/10-ssl.conf:1");
        assert!(matches!(&items[2], Item::Section(s) if s.kind == "protocol"));
        // An unset variable is empty.
        let items = parse(&[("/a.conf", "protocols = $protocols lmtp\n")]).unwrap();
        assert_eq!(setting(&items, "protocols").unwrap().value, " lmtp");
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse(&[("/d.conf", "a = 1\n}\n")]).unwrap_err();
        assert_eq!(e.to_string(), "/d.conf:2: unexpected '}'");
        let e = parse(&[("/d.conf", "a = 1\njunk here\n")]).unwrap_err();
        assert!(e.to_string().starts_with("/d.conf:2: expecting '='"), "{e}");
        let e = parse(&[("/d.conf", "passdb {\n  driver = x\n")]).unwrap_err();
        assert!(e.to_string().contains("/d.conf:1 is not closed"), "{e}");
        let e = parse(&[("/d.conf", "x = 1\n!include nothere.conf\n")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/d.conf:2: !include /nothere.conf: cannot read"),
            "{e}"
        );
        let e = parse(&[("/d.conf", "!include conf.d/*.conf\n")]).unwrap_err();
        assert!(e.to_string().contains("no file matches"), "{e}");
        let e = parse(&[("/d.conf", "!include /d.conf\n")]).unwrap_err();
        assert!(e.to_string().contains("nested too deep"), "{e}");
        let e = parse(&[("/d.conf", "bad key = 1\n")]).unwrap_err();
        assert_eq!(e.to_string(), "/d.conf:1: bad setting name \"bad key\"");
        let e = parse(&[("/d.conf", "!frobnicate x\n")]).unwrap_err();
        assert_eq!(e.to_string(), "/d.conf:1: unknown command !frobnicate");
        // A section must close in the file that opened it.
        let e = parse(&[
            ("/d.conf", "passdb {\n!include b.conf\n}\n"),
            ("/b.conf", "}\n"),
        ])
        .unwrap_err();
        assert_eq!(e.to_string(), "/b.conf:1: unexpected '}'");
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"*.conf", b"10-auth.conf"));
        assert!(!wildcard_match(b"*.conf", b"10-auth.conf.ext"));
        assert!(wildcard_match(b"*.conf.ext", b"auth-passwdfile.conf.ext"));
        assert!(wildcard_match(b"1?-*", b"10-x"));
        assert!(!wildcard_match(b"?", b""));
        assert!(wildcard_match(b"**a*", b"bbba"));
    }
}
