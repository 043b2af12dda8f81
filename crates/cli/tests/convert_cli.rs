//! `correio convert` as a user runs it: Maildir → mbox → EML → Maildir byte-exact with
//! flags and dates, Python's `mailbox` module reading what we write (and writing what
//! we read), a run killed at a failpoint and started again, a 50 MB message in bounded
//! memory, a POP3 server as the source, and the errors a user sees.

mod fetch_support;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, UNIX_EPOCH};

use fetch_support::{correio, tempdir};

/// A test message: bytes, Maildir flag letters, whether in cur/, date (seconds).
#[derive(Debug, Clone)]
struct Msg {
    bytes: Vec<u8>,
    letters: &'static str,
    cur: bool,
    date: u64,
}

fn corpus() -> Vec<Msg> {
    let m = |bytes: &[u8], letters: &'static str, cur: bool| Msg {
        bytes: bytes.to_vec(),
        letters,
        cur,
        date: 0,
    };
    let mut v = vec![
        m(b"Subject: plain\n\nhello\n", "", false),
        m(
            b"Subject: from lines\n\nFrom here\n>From there\n>>From twice\nFrom\n",
            "S",
            true,
        ),
        m(b"Subject: dots\r\n\r\n.\r\n..\r\n.x\r\n", "RS", true),
        m(b"Subject: bare cr\n\na\rb\r\n\rc\n", "FS", true),
        m(b"Subject: no final newline\n\nthe end", "", true),
        m(
            b"Subject: 8-bit \xe9\n\n\x00\x80\xff caf\xc3\xa9\n",
            "T",
            true,
        ),
        m(b"Subject: seen, new\n\nx\n", "S", false),
        m(b"Status: RO\nSubject: own status\n\nx\n", "S", true),
        m(b"Subject: passed and keyword\n\nx\n", "PSa", true),
        m(b"", "", true),
        m(
            b"From someone Thu Jan  1 00:00:00 1970\nSubject: starts like an mbox\n\nx\n",
            "D",
            true,
        ),
    ];
    for (i, x) in v.iter_mut().enumerate() {
        x.date = 1_600_000_000 + i as u64 * 86_400 + 17;
    }
    v
}

fn make_maildir(root: &Path, msgs: &[Msg]) {
    for s in ["cur", "new", "tmp"] {
        fs::create_dir_all(root.join(s)).unwrap();
    }
    for (i, m) in msgs.iter().enumerate() {
        let info = if m.cur || !m.letters.is_empty() {
            format!(":2,{}", m.letters)
        } else {
            String::new()
        };
        let p = root
            .join(if m.cur { "cur" } else { "new" })
            .join(format!("{}.M{i}P7.test{info}", m.date));
        fs::write(&p, &m.bytes).unwrap();
        fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(UNIX_EPOCH + Duration::from_secs(m.date))
            .unwrap();
    }
}

/// Runs `correio` with `args`; panics with its output unless it exits 0.
fn ok(args: &[&str]) -> Output {
    let out = correio().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "correio {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = ok(&a);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// Runs a Python script with arguments; returns its JSON output.
fn python(script: &str, args: &[&str]) -> serde_json::Value {
    let py = correio_testkit::peers::require("python3", "python3");
    let out = Command::new(py)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "python output: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn hex(v: &serde_json::Value) -> Vec<u8> {
    let t = v.as_str().unwrap();
    (0..t.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&t[i..i + 2], 16).unwrap())
        .collect()
}

const READ_MBOX: &str = r#"
import json, mailbox, sys
mb = mailbox.mbox(sys.argv[1], create=False)
out = []
for key in mb.iterkeys():
    m = mb.get_message(key)
    md = mailbox.MaildirMessage(m)
    out.append({"from": m.get_from(), "flags": m.get_flags(), "raw": mb.get_bytes(key).hex(),
                "maildir_flags": md.get_flags(), "maildir_subdir": md.get_subdir(),
                "maildir_date": md.get_date()})
print(json.dumps(out))
"#;

const READ_MAILDIR: &str = r#"
import json, mailbox, sys
md = mailbox.Maildir(sys.argv[1], factory=None, create=False)
out = []
for key in md.iterkeys():
    m = md.get_message(key)
    out.append({"raw": md.get_bytes(key).hex(), "flags": m.get_flags(),
                "subdir": m.get_subdir(), "date": m.get_date()})
out.sort(key=lambda x: x["date"])
print(json.dumps(out))
"#;

/// mboxrd unquoting, for what Python hands back (it does not unquote).
fn unquote(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let gts = line.iter().take_while(|&&b| b == b'>').count();
        if gts > 0 && line[gts..].starts_with(b"From ") {
            out.extend_from_slice(&line[1..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

/// What every mbox reader sees for a message we wrote: the message with its flag
/// fields (`Status:`/`X-Status:`, and the marker where needed) at the end of the
/// header, and a final line end. (The format of the store's `convert` module, spelled
/// out independently.)
fn mbox_view(m: &Msg) -> Vec<u8> {
    let own_status = m.bytes.starts_with(b"Status:");
    let no_nl = !m.bytes.is_empty() && !m.bytes.ends_with(b"\n");
    let mut body = m.bytes.clone();
    if no_nl {
        body.push(b'\n');
    }
    // The header ends at the first empty line (LF or CRLF), else at the end.
    let mut end = body.len();
    let mut crlf = false;
    let mut at = 0;
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line == b"\n" || line == b"\r\n" {
            end = at;
            crlf = line.len() == 2;
            break;
        }
        at += line.len();
    }
    let eol = if crlf { "\r\n" } else { "\n" };
    let mut fields = String::new();
    let mut marker = String::new();
    let has = |c: char| m.letters.contains(c);
    let extra: String = m
        .letters
        .chars()
        .filter(|c| !"SRFDT".contains(*c))
        .collect();
    if own_status {
        marker = format!(" keep-status{}", if m.cur { " old" } else { "" });
        if !m.letters.is_empty() {
            marker += &format!(" flags={}", m.letters);
        }
    } else {
        let st: String = [(has('S'), 'R'), (m.cur, 'O')]
            .iter()
            .filter(|x| x.0)
            .map(|x| x.1)
            .collect();
        let xs: String = [
            (has('R'), 'A'),
            (has('F'), 'F'),
            (has('D'), 'T'),
            (has('T'), 'D'),
        ]
        .iter()
        .filter(|x| x.0)
        .map(|x| x.1)
        .collect();
        if !st.is_empty() {
            fields += &format!("Status: {st}{eol}");
        }
        if !xs.is_empty() {
            fields += &format!("X-Status: {xs}{eol}");
        }
        if !extra.is_empty() {
            marker = format!(" flags={extra}");
        }
    }
    if no_nl || !marker.is_empty() {
        let nfn = if no_nl { " no-final-newline" } else { "" };
        // Token order: no-final-newline, keep-status [old], flags=.
        fields += &format!("X-Correio-Convert: 1{nfn}{marker}{eol}");
    }
    let mut out = body[..end].to_vec();
    out.extend_from_slice(fields.as_bytes());
    out.extend_from_slice(&body[end..]);
    out
}

/// Reads a Maildir in name order: (bytes, flag letters, in cur/, mtime seconds).
fn read_maildir(root: &Path) -> Vec<(Vec<u8>, String, bool, u64)> {
    let mut v = Vec::new();
    for (sub, cur) in [("cur", true), ("new", false)] {
        for e in fs::read_dir(root.join(sub)).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().as_bytes().to_vec();
            let letters = name
                .windows(3)
                .position(|w| w == b":2,")
                .map(|i| String::from_utf8_lossy(&name[i + 3..]).into_owned())
                .unwrap_or_default();
            let mtime = fs::metadata(&p)
                .unwrap()
                .modified()
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            v.push((mtime, name, (fs::read(&p).unwrap(), letters, cur, mtime)));
        }
    }
    v.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    v.into_iter().map(|x| x.2).collect()
}

fn sorted_letters(s: &str) -> String {
    let mut v: Vec<char> = s.chars().collect();
    v.sort_unstable();
    v.into_iter().collect()
}

#[test]
fn round_trip_and_python_reads_what_we_write() {
    let d = tempdir();
    let msgs = corpus();
    let a = d.path().join("A");
    make_maildir(&a, &msgs);
    let b = d.path().join("B.mbox");
    let c = d.path().join("C");
    let e = d.path().join("D");

    let v = json(&[
        "convert",
        &format!("maildir:{}", s(&a)),
        &format!("mbox:{}", s(&b)),
    ]);
    assert_eq!(v["copied"], msgs.len(), "{v}");
    // A bare path is recognised: B is an mbox file, C will be an EML folder.
    let v = json(&["convert", &s(&b), &format!("eml:{}", s(&c))]);
    assert_eq!(v["copied"], msgs.len(), "{v}");
    let v = json(&["convert", &s(&c), &format!("maildir:{}", s(&e))]);
    assert_eq!(v["copied"], msgs.len(), "{v}");

    // Byte-exact, same order, same dates; EML keeps no flags.
    let back = read_maildir(&e);
    assert_eq!(back.len(), msgs.len());
    for (m, g) in msgs.iter().zip(&back) {
        assert!(
            g.0 == m.bytes,
            "{:?} came back as {:?}",
            String::from_utf8_lossy(&m.bytes),
            String::from_utf8_lossy(&g.0)
        );
        assert_eq!(g.3, m.date);
        assert_eq!((g.1.as_str(), g.2), ("", false));
    }

    // Python's mailbox.mbox reads our mbox: the same messages (with the flag fields
    // mbox readers expect), the flags as mutt would show them, the dates.
    let py = python(READ_MBOX, &[&s(&b)]);
    let py = py.as_array().unwrap();
    assert_eq!(py.len(), msgs.len());
    for (m, p) in msgs.iter().zip(py) {
        let raw = unquote(&hex(&p["raw"]));
        assert!(
            raw == mbox_view(m),
            "python read {:?}, expected {:?}",
            String::from_utf8_lossy(&raw),
            String::from_utf8_lossy(&mbox_view(m))
        );
        let from = p["from"].as_str().unwrap();
        assert!(from.starts_with("MAILER-DAEMON "), "{from}");
        assert_eq!(p["maildir_date"].as_f64().unwrap() as u64, m.date, "{from}");
        // Own Status fields are the flags other readers see; a message whose first
        // line is no header field has no header for Python's parser at all.
        if m.bytes.starts_with(b"Status:") || m.bytes.starts_with(b"From ") {
            continue;
        }
        // Python's own mbox → Maildir mapping gives back our flags (it has no draft).
        let want: String = sorted_letters(&m.letters.replace(['D', 'P', 'a'], ""));
        assert_eq!(
            sorted_letters(p["maildir_flags"].as_str().unwrap()),
            want,
            "{from}"
        );
        assert_eq!(p["maildir_subdir"], if m.cur { "cur" } else { "new" });
    }

    // Python's mailbox.Maildir reads a Maildir we write from the mbox: bytes, flags,
    // sub-directory and date.
    let f = d.path().join("F");
    ok(&[
        "convert",
        &format!("mbox:{}", s(&b)),
        &format!("maildir:{}", s(&f)),
    ]);
    let py = python(READ_MAILDIR, &[&s(&f)]);
    let py = py.as_array().unwrap();
    assert_eq!(py.len(), msgs.len());
    for (m, p) in msgs.iter().zip(py) {
        assert!(
            hex(&p["raw"]) == m.bytes,
            "{:?}",
            String::from_utf8_lossy(&m.bytes)
        );
        assert_eq!(p["flags"].as_str().unwrap(), sorted_letters(m.letters));
        assert_eq!(p["subdir"], if m.cur { "cur" } else { "new" });
        assert_eq!(p["date"].as_f64().unwrap() as u64, m.date);
    }

    // Run again: nothing to do.
    let v = json(&[
        "convert",
        &format!("mbox:{}", s(&b)),
        &format!("maildir:{}", s(&f)),
    ]);
    assert_eq!(
        (v["copied"].as_u64(), v["already_done"].as_u64()),
        (Some(0), Some(msgs.len() as u64))
    );
}

const WRITE_MBOX: &str = r#"
import json, mailbox, sys
mb = mailbox.mbox(sys.argv[1], create=True)
out = []
specs = [
    (b"Subject: one\n\nFrom the start\nplain\n", "RO", 1500000000),
    (b"Subject: two\nTo: x@example.org\n\nreplied and flagged\n", "ROAF", 1500000100),
    (b"Subject: three\n\nnew\n", "", 1500000200),
]
mb.lock()
for raw, flags, date in specs:
    m = mailbox.mboxMessage(raw)
    m.set_flags(flags)
    m.set_from("python@example.org", __import__("time").gmtime(date))
    mb.add(m)
mb.flush()
mb.unlock()
for key in mb.iterkeys():
    m = mb.get_message(key)
    md = mailbox.MaildirMessage(m)
    out.append({"maildir": md.as_bytes().hex(), "flags": md.get_flags(), "subdir": md.get_subdir()})
print(json.dumps(out))
"#;

#[test]
fn an_mbox_python_writes_converts_to_the_maildir_python_would_make() {
    let d = tempdir();
    let mbox = d.path().join("py.mbox");
    let py = python(WRITE_MBOX, &[&s(&mbox)]);
    let py = py.as_array().unwrap();
    let out = d.path().join("M");
    ok(&["convert", &s(&mbox), &format!("maildir:{}", s(&out))]);
    let got = read_maildir(&out);
    assert_eq!(got.len(), 3);
    for (p, g) in py.iter().zip(&got) {
        // Python drops Status/X-Status when making a Maildir message, as we do; it
        // unquotes nothing, but it quoted nothing either (mboxo: `From ` → `>From `).
        let want = hex(&p["maildir"]);
        let want = String::from_utf8_lossy(&want).replace(">From the start", "From the start");
        assert_eq!(String::from_utf8_lossy(&g.0), want);
        assert_eq!(g.1, sorted_letters(p["flags"].as_str().unwrap()));
        assert_eq!(g.2, p["subdir"] == "cur");
    }
    assert_eq!(
        got.iter().map(|g| g.3).collect::<Vec<_>>(),
        [1_500_000_000, 1_500_000_100, 1_500_000_200]
    );
}

#[test]
fn a_killed_run_started_again_copies_the_rest_once() {
    let d = tempdir();
    let msgs = corpus();
    let a = d.path().join("A");
    make_maildir(&a, &msgs);
    for (n, dest) in [
        ("mbox", d.path().join("out.mbox")),
        ("maildir", d.path().join("out")),
        ("eml", d.path().join("eml")),
    ] {
        let to = format!("{n}:{}", s(&dest));
        let out = correio()
            .args([
                "convert",
                &format!("maildir:{}", s(&a)),
                &to,
                "--batch-messages",
                "2",
            ])
            .env("CORREIO_FAILPOINT", "convert-after-write:5")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{n}: the failpoint did not stop it");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("failpoint convert-after-write:5 reached"),
            "{err}"
        );
        let v = json(&[
            "convert",
            &format!("maildir:{}", s(&a)),
            &to,
            "--batch-messages",
            "2",
        ]);
        // Two batches of 2 were done before the kill; the rest now.
        assert_eq!(v["already_done"], 4, "{n}: {v}");
        assert_eq!(v["copied"], msgs.len() - 4, "{n}: {v}");
        // Every message exactly once, in order.
        let check = d.path().join(format!("check-{n}"));
        ok(&["convert", &to, &format!("maildir:{}", s(&check))]);
        let got: Vec<Vec<u8>> = read_maildir(&check).into_iter().map(|g| g.0).collect();
        let want: Vec<Vec<u8>> = msgs.iter().map(|m| m.bytes.clone()).collect();
        assert!(got == want, "{n}: messages differ after the resumed run");
    }
}

const MAX_RSS: &str = r#"
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], capture_output=True)
if r.returncode != 0:
    sys.stderr.write(r.stderr.decode(errors="replace"))
    sys.exit(1)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"#;

/// Peak resident size of `correio ARGS` in KiB (Python measures its child).
fn peak_kib(args: &[&str]) -> u64 {
    let bin = env!("CARGO_BIN_EXE_correio");
    let mut a = vec![bin];
    a.extend_from_slice(args);
    python(MAX_RSS, &a).as_u64().unwrap()
}

#[test]
fn a_50_mb_message_is_copied_in_bounded_memory() {
    let d = tempdir();
    let mut big = b"Subject: big\n\n".to_vec();
    let lines: [&[u8]; 5] = [
        b"From a line\n",
        b">From quoted\n",
        b".\n",
        b"crlf\r\n",
        b"x\rbare cr\n",
    ];
    let mut i = 0;
    while big.len() < 50 * 1024 * 1024 {
        big.extend_from_slice(lines[i % lines.len()]);
        i += 1;
    }
    let a = d.path().join("A");
    make_maildir(
        &a,
        &[Msg {
            bytes: big.clone(),
            letters: "S",
            cur: true,
            date: 1_700_000_000,
        }],
    );
    let b = format!("mbox:{}", s(&d.path().join("B")));
    let c = format!("eml:{}", s(&d.path().join("C")));
    let e = format!("maildir:{}", s(&d.path().join("E")));
    for (from, to) in [
        (format!("maildir:{}", s(&a)), &b),
        (b.clone(), &c),
        (c.clone(), &e),
    ] {
        let kib = peak_kib(&["convert", "-q", &from, to]);
        assert!(
            kib < 24 * 1024,
            "{from} → {to}: peak resident size {kib} KiB for a 50 MB message"
        );
    }
    let got = read_maildir(&d.path().join("E"));
    assert!(
        got.len() == 1 && got[0].0 == big,
        "the 50 MB message changed"
    );
}

#[test]
fn a_pop3_server_as_the_source() {
    let work = tempdir();
    let data = work.path().join("data");
    let data_s = s(&data);
    let msgs = fetch_support::corpus(9);
    let mut c = correio()
        .args(["user", "add", "bob", "--data", &data_s, "--password-stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut c.stdin.take().unwrap(), b"b0b pass\n").unwrap();
    assert!(c.wait().unwrap().success());
    for m in &msgs {
        let mut c = correio()
            .args(["deliver", "--user", "bob", "--data", &data_s])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut c.stdin.take().unwrap(), m).unwrap();
        assert!(c.wait().unwrap().success());
    }
    // Port 0: the server reports the ports it bound.
    let mut server = correio_testkit::daemon::Daemon::start({
        let mut c = correio();
        c.args(["serve", "--data", &data_s]).args([
            "--pop3s",
            "127.0.0.1:0",
            "--pop3",
            "127.0.0.1:0",
        ]);
        c
    });
    let port = server
        .wait_listening("listening", " tls=true", Duration::from_secs(20))
        .port();
    let ca = s(&data.join("tls/cert.pem"));
    let dest = work.path().join("Mail");
    let run = || {
        json(&[
            "convert",
            &format!("pop3s://bob@localhost:{port}"),
            &format!("maildir:{}", s(&dest)),
            "--ca",
            &ca,
            "--password-command",
            "printf %s 'b0b pass'",
        ])
    };
    let v = run();
    assert_eq!(v["fetch"]["fetched"], 9, "{v}");
    assert_eq!(
        fetch_support::maildir_messages(&dest),
        fetch_support::sorted(&msgs)
    );
    // Started again: nothing twice (the fetch state lives with the destination).
    let v = run();
    assert_eq!(v["fetch"]["fetched"], 0, "{v}");
    assert!(fs::read_dir(&dest).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".correio-convert-state-pop3-bob@localhost_")
    }));
    // The messages stay on the server.
    assert_eq!(run()["fetch"]["on_server"], 9);
}

#[test]
fn what_a_user_sees_when_something_is_wrong() {
    let d = tempdir();
    let a = d.path().join("A");
    make_maildir(&a, &corpus()[..2]);
    let fail = |args: &[&str]| -> String {
        let out = correio().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = fail(&["convert", &s(&a), &s(&d.path().join("new-place"))]);
    assert!(
        e.contains("does not exist") && e.contains("maildir:PATH"),
        "{e}"
    );
    let e = fail(&["convert", &format!("maildir:{}", s(&a)), &s(&a)]);
    assert!(e.contains("same place"), "{e}");
    let e = fail(&["convert", &s(&d.path().join("missing")), "mbox:/dev/null/x"]);
    assert!(e.contains("SOURCE") && e.contains("does not exist"), "{e}");
    let e = fail(&[
        "convert",
        "pop3s://no-user-here",
        &format!("maildir:{}", s(&a)),
    ]);
    assert!(e.contains("needs a user"), "{e}");
    // Clap's usage errors exit 2.
    let out = correio().args(["convert", "only-one"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
