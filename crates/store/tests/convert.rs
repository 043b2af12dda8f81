//! `correio convert` as a library: round trips Maildir → mbox → EML → Maildir byte-exact
//! on a corpus with every awkward line (and a 50 MB message), flags, dates and UIDLs,
//! reading mboxo/mboxrd/mboxcl/mboxcl2, resuming after a kill at each failpoint (the
//! killed run is a child process), bounded memory, and the fuzz corpus.

use correio_testkit::fuzz::replay;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use correio_store::convert::{self, ConvertError, Flags, Mailbox, Options, Report};
use correio_store::{MailLocation, open_maildrop};

/// One test message: its bytes, flags and date.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    bytes: Vec<u8>,
    flags: Flags,
    date: SystemTime,
}

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A message of about `size` bytes made of every awkward line, repeated.
fn big_message(size: usize) -> Vec<u8> {
    let mut m = b"Subject: big\r\nX-Kind: every awkward line\r\n\r\n".to_vec();
    let lines: [&[u8]; 10] = [
        b"From the start of a line\n",
        b">From quoted once\n",
        b">>From quoted twice\n",
        b".\n",
        b"..two dots\r\n",
        b"bare\rcarriage return\r\n",
        b"8-bit \xe9\xe8\xff\x00 bytes\n",
        b"\n",
        b"From \n",
        b"a longer ordinary line of text that goes on for a while, like mail does\n",
    ];
    let mut i = 0;
    while m.len() < size {
        m.extend_from_slice(lines[i % lines.len()]);
        i += 1;
    }
    m.extend_from_slice(b"the last line has no line end");
    m
}

/// The corpus: every awkward case, each with flags and a date; `big` adds the 50 MB
/// message.
fn corpus(big: bool) -> Vec<Msg> {
    let bodies: Vec<&[u8]> = vec![
        b"Subject: from lines\n\nFrom here\nFrom: looks like a header\nFrom \nFrom\n",
        b"Subject: quoted\n\n>From a\n>>From b\n>>>From c\n> From d\n",
        b"Subject: dots\n\n.\n..\n.hidden\n.\n",
        b"Subject: crlf\r\nTo: x@example.org\r\n\r\nline one\r\nline two\r\n",
        b"Subject: bare cr\n\na\rb\r\n\rc\r",
        b"Subject: no final newline\n\nthe end",
        b"Subject: header only, no newline",
        b"Subject: 8-bit \xe9t\xe9\n\n\x00\x01\x7f\x80\xfe\xff\ncaf\xc3\xa9\n",
        b"Status: RO\nX-Status: F\nSubject: own status fields\n\nbody\n",
        b"Subject: fake marker\nX-Correio-Convert: 1 no-final-newline\n\nbody\n",
        b"",
        b"\n",
        b"\r\n",
        b"\n\nno header at all\n",
        b"From someone@example.org Thu Jan  1 00:00:00 1970\nSubject: saved with a From_ line\n\nx\n",
        b"Content-Length: 7\n\nFrom x\n",
        b"Content-Length: 6\nSubject: cl matches\n\nhello\n",
        b"Subject: trailing blank lines\n\n\n\n\n",
        b"Return-Path: <bounce@example.org>\nSubject: sender\n\nx\n",
    ];
    let flags = [
        Flags::default(),
        Flags::new(true, b""),
        Flags::new(true, b"S"),
        Flags::new(true, b"RS"),
        Flags::new(true, b"FS"),
        Flags::new(false, b"S"),
        Flags::new(true, b"DT"),
        Flags::new(true, b"Pab"),
    ];
    let mut out: Vec<Msg> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| Msg {
            bytes: b.to_vec(),
            flags: flags[i % flags.len()].clone(),
            date: t(1_000_000_000 + i as u64 * 3600),
        })
        .collect();
    let mut long = b"Subject: one long line\n\n".to_vec();
    long.extend(std::iter::repeat_n(b'x', 200_000));
    long.push(b'\n');
    out.push(Msg {
        bytes: long,
        flags: Flags::new(true, b"S"),
        date: t(1_100_000_000),
    });
    if big {
        out.push(Msg {
            bytes: big_message(50 * 1024 * 1024),
            flags: Flags::new(true, b"FRS"),
            date: t(1_200_000_000),
        });
    }
    out
}

/// Writes `msgs` into a new Maildir, as a mail program would (names with the
/// date, flags in the name, mtime = date).
fn make_maildir(root: &Path, msgs: &[Msg]) {
    for s in ["cur", "new", "tmp"] {
        fs::create_dir_all(root.join(s)).unwrap();
    }
    for (i, m) in msgs.iter().enumerate() {
        let secs = m.date.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let sub = if m.flags.old { "cur" } else { "new" };
        let name = format!(
            "{secs}.M{i}P1.corpus{}",
            m.flags.maildir_info().unwrap_or_default()
        );
        let p = root.join(sub).join(name);
        fs::write(&p, &m.bytes).unwrap();
        let f = fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(m.date).unwrap();
    }
}

/// The base of a Maildir name.
fn base(name: &[u8]) -> &[u8] {
    let end = name
        .iter()
        .position(|&b| b == b',' || b == b':')
        .unwrap_or(name.len());
    &name[..end]
}

/// The leading seconds and `.M` number of a base, as the POP3 server orders.
fn order_key(name: &[u8]) -> (u64, u64, Vec<u8>) {
    let b = base(name);
    let num = |s: &[u8]| -> u64 {
        let d = s.iter().take_while(|c| c.is_ascii_digit()).count();
        std::str::from_utf8(&s[..d]).unwrap().parse().unwrap_or(0)
    };
    let secs = num(b);
    let rest = b
        .strip_prefix(format!("{secs}.M").as_bytes())
        .map_or(0, num);
    (secs, rest, b.to_vec())
}

/// Reads a Maildir in the POP3 server's order: each message's bytes, flags, mtime.
fn read_maildir(root: &Path) -> Vec<Msg> {
    let mut files = Vec::new();
    for (sub, cur) in [("cur", true), ("new", false)] {
        for e in fs::read_dir(root.join(sub)).unwrap() {
            let e = e.unwrap();
            files.push((order_key(e.file_name().as_bytes()), e.path(), cur));
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|(_, p, cur)| Msg {
            bytes: fs::read(&p).unwrap(),
            flags: Flags::from_maildir_name(p.file_name().unwrap().as_bytes(), cur),
            date: fs::metadata(&p).unwrap().modified().unwrap(),
        })
        .collect()
}

/// Reads an EML folder by mtime then name: bytes and mtime.
fn read_eml(dir: &Path) -> Vec<(Vec<u8>, SystemTime)> {
    let mut v: Vec<(SystemTime, PathBuf)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| (fs::metadata(&p).unwrap().modified().unwrap(), p))
        .collect();
    v.sort();
    v.into_iter()
        .map(|(t, p)| (fs::read(p).unwrap(), t))
        .collect()
}

fn run(from: &Mailbox, to: &Mailbox) -> Report {
    run_with(from, to, &Options::default())
}

fn run_with(from: &Mailbox, to: &Mailbox, opts: &Options) -> Report {
    convert::convert(from, to, opts, &mut |_| {})
        .unwrap_or_else(|e| panic!("convert {from} → {to}: {e}"))
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Compares message lists with a readable message (the 50 MB one is not printed).
fn assert_same_bytes(want: &[Vec<u8>], got: &[Vec<u8>], what: &str) {
    assert_eq!(want.len(), got.len(), "{what}: message count");
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        if w != g {
            let at = w
                .iter()
                .zip(g)
                .position(|(a, b)| a != b)
                .unwrap_or(w.len().min(g.len()));
            let show = |v: &[u8]| {
                String::from_utf8_lossy(&v[at.saturating_sub(40)..(at + 40).min(v.len())])
                    .into_owned()
            };
            panic!(
                "{what}: message {i} differs at byte {at} (lengths {} and {}):\nwant …{:?}…\ngot  …{:?}…",
                w.len(),
                g.len(),
                show(w),
                show(g)
            );
        }
    }
}

fn bytes_of(v: &[Msg]) -> Vec<Vec<u8>> {
    v.iter().map(|m| m.bytes.clone()).collect()
}

#[test]
fn maildir_mbox_eml_maildir_round_trip_is_byte_exact() {
    let d = tempfile::tempdir().unwrap();
    let msgs = corpus(true);
    let a = Mailbox::Maildir(d.path().join("A"));
    make_maildir(a.path(), &msgs);
    let b = Mailbox::Mbox(d.path().join("B.mbox"));
    let c = Mailbox::Eml(d.path().join("C"));
    let dd = Mailbox::Maildir(d.path().join("D"));

    let r = run(&a, &b);
    assert_eq!(
        (r.copied, r.source_messages),
        (msgs.len() as u64, msgs.len() as u64)
    );
    let r = run(&b, &c);
    assert_eq!(r.copied, msgs.len() as u64);
    let r = run(&c, &dd);
    assert_eq!(r.copied, msgs.len() as u64);

    let want = bytes_of(&msgs);
    // EML: the messages, dates to the second (they went through a From_ line).
    let eml = read_eml(c.path());
    assert_same_bytes(
        &want,
        &eml.iter().map(|e| e.0.clone()).collect::<Vec<_>>(),
        "EML",
    );
    for (m, e) in msgs.iter().zip(&eml) {
        assert_eq!(secs(m.date), secs(e.1));
    }
    let back = read_maildir(dd.path());
    assert_same_bytes(&want, &bytes_of(&back), "Maildir after mbox and EML");
    for (m, g) in msgs.iter().zip(&back) {
        assert_eq!(m.date, g.date, "date");
        // EML holds no flags: everything arrives new.
        assert_eq!(g.flags, Flags::default());
    }

    // Maildir → mbox → Maildir keeps flags too.
    let e = Mailbox::Maildir(d.path().join("E"));
    run(&b, &e);
    assert_eq!(read_maildir(e.path()), msgs);

    // Maildir → EML → Maildir keeps dates to the nanosecond.
    let c2 = Mailbox::Eml(d.path().join("C2"));
    let f = Mailbox::Maildir(d.path().join("F"));
    run(&a, &c2);
    run(&c2, &f);
    let got = read_maildir(f.path());
    assert_same_bytes(&want, &bytes_of(&got), "Maildir after EML");
    let mtimes: Vec<SystemTime> = read_maildir(a.path()).iter().map(|m| m.date).collect();
    assert_eq!(got.iter().map(|m| m.date).collect::<Vec<_>>(), mtimes);

    // Maildir → Maildir keeps everything, names included.
    let g = Mailbox::Maildir(d.path().join("G"));
    run(&a, &g);
    assert_eq!(read_maildir(g.path()), msgs);
    let names = |p: &Path| {
        let mut v: Vec<Vec<u8>> = ["cur", "new"]
            .iter()
            .flat_map(|s| fs::read_dir(p.join(s)).unwrap())
            .map(|e| base(e.unwrap().file_name().as_bytes()).to_vec())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(g.path()), names(a.path()));

    // mbox → mbox is exact as well (From_ lines kept).
    let b2 = Mailbox::Mbox(d.path().join("B2.mbox"));
    run(&b, &b2);
    assert_eq!(fs::read(b.path()).unwrap(), fs::read(b2.path()).unwrap());
}

#[test]
fn mbox_text_has_flags_dates_and_the_marker_only_where_needed() {
    let d = tempfile::tempdir().unwrap();
    let msgs = corpus(false);
    let a = Mailbox::Maildir(d.path().join("A"));
    make_maildir(a.path(), &msgs);
    let b = Mailbox::Mbox(d.path().join("B"));
    run(&a, &b);
    let text = fs::read(b.path()).unwrap();
    let s = String::from_utf8_lossy(&text);
    // Message 3 (flags RS, cur): mutt's fields; its date in the From_ line.
    assert!(
        s.contains("From MAILER-DAEMON Sun Sep  9 04:46:40 2001\nSubject: crlf\r\nTo: x@example.org\r\nStatus: RO\r\nX-Status: A\r\n\r\n"),
        "{s}"
    );
    // Body From lines quoted mboxrd-style.
    assert!(s.contains("\n>From here\nFrom: looks like a header\n>From \nFrom\n"));
    assert!(s.contains("\n>>From a\n>>>From b\n>>>>From c\n> From d\n"));
    // No final newline: one added, and the marker says so.
    assert!(s.contains(
        "Subject: no final newline\nStatus: R\nX-Correio-Convert: 1 no-final-newline\n\nthe end\n\n"
    ));
    // Own Status fields are kept; the marker carries the flags.
    assert!(s.contains(
        "Status: RO\nX-Status: F\nSubject: own status fields\nX-Correio-Convert: 1 keep-status\n\n"
    ));
    // Flags Status cannot carry.
    assert!(s.contains("X-Correio-Convert: 1 flags=Pab\n"));
    // The envelope sender from Return-Path.
    assert!(s.contains("From bounce@example.org "));
    // Plain messages get nothing but their flags: 7 markers, and message 9's own field.
    assert_eq!(s.matches("X-Correio-Convert").count(), 8, "{s}");

    // Correio's POP3 server reads the same mbox as that many messages.
    let md = open_maildrop(&MailLocation::Mbox(b.path().to_path_buf())).unwrap();
    assert_eq!(md.messages().len(), msgs.len());
}

#[test]
fn reads_mboxo_mboxrd_mboxcl_and_mboxcl2() {
    let d = tempfile::tempdir().unwrap();
    let mbox = d.path().join("in");
    fs::write(
        &mbox,
        concat!(
            "From mutt@example.org Mon Nov 24 18:22:48 1986\n",
            "Subject: mboxo or mboxrd\n",
            "Status: RO\n",
            "X-Status: AF\n",
            "\n",
            ">From quoted\n",
            ">>From twice\n",
            "\n",
            "From cl2@example.org Mon Nov 24 18:22:49 1986 -0100\n",
            "Subject: mboxcl2\n",
            "Content-Length: 12\n",
            "\n",
            "From inside\n",
            "\n",
            "From cl@example.org Mon Nov 24 20:00:00 1986\n",
            "Subject: mboxcl\n",
            "Content-Length: 13\n",
            "Status: O\n",
            "\n",
            ">From inside\n",
            "\n",
        ),
    )
    .unwrap();
    let out = Mailbox::Maildir(d.path().join("M"));
    run(&Mailbox::Mbox(mbox.clone()), &out);
    let got = read_maildir(out.path());
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[0].bytes,
        b"Subject: mboxo or mboxrd\n\nFrom quoted\n>From twice\n"
    );
    assert_eq!(got[0].flags, Flags::new(true, b"SRF"));
    assert_eq!(secs(got[0].date), 533_240_568);
    assert_eq!(
        got[1].bytes,
        b"Subject: mboxcl2\nContent-Length: 12\n\nFrom inside\n"
    );
    assert_eq!(secs(got[1].date), 533_240_569 + 3600);
    assert_eq!(got[1].flags, Flags::default());
    // Without --mboxcl the Content-Length body is verbatim (mboxcl2)...
    assert_eq!(
        got[2].bytes,
        b"Subject: mboxcl\nContent-Length: 13\n\n>From inside\n"
    );
    assert_eq!(got[2].flags, Flags::new(true, b""));
    // ... with it, mboxo-unquoted (mboxcl, as mutt writes).
    let out2 = Mailbox::Maildir(d.path().join("M2"));
    run_with(
        &Mailbox::Mbox(mbox),
        &out2,
        &Options::default().mboxcl(true),
    );
    let got = read_maildir(out2.path());
    assert_eq!(
        got[2].bytes,
        b"Subject: mboxcl\nContent-Length: 13\n\nFrom inside\n"
    );
    assert_eq!(
        got[1].bytes,
        b"Subject: mboxcl2\nContent-Length: 12\n\nFrom inside\n"
    );
}

/// UIDLs as the POP3 server shows them, in order.
fn pop3_uidls(loc: MailLocation) -> Vec<String> {
    let md = open_maildrop(&loc).unwrap();
    md.messages().iter().map(|m| m.uidl.clone()).collect()
}

fn pop3_contents(loc: MailLocation) -> Vec<Vec<u8>> {
    let md = open_maildrop(&loc).unwrap();
    (0..md.messages().len())
        .map(|i| {
            let mut v = Vec::new();
            md.open_message(i).unwrap().read_to_end(&mut v).unwrap();
            v
        })
        .collect()
}

#[test]
fn uidls_are_kept_where_a_maildir_can_hold_them() {
    let d = tempfile::tempdir().unwrap();
    let msgs: Vec<Msg> = corpus(false).into_iter().take(6).collect();
    let a = d.path().join("A");
    make_maildir(&a, &msgs);
    // Dovecot served this Maildir before (its UIDL for message 0), and Correio's index
    // holds two more UIDLs (one with ':', which a uidlist record cannot hold).
    let mut names: Vec<_> = fs::read_dir(a.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    fs::write(
        a.join("dovecot-uidlist"),
        format!("3 V1234 N9 Gabc\n7 :{}\n", names[0].to_string_lossy()),
    )
    .unwrap();
    let hex = |n: &std::ffi::OsString| -> String {
        base(n.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    fs::write(
        a.join("correio-index"),
        format!(
            "correio-maildir-index 1\n{} custom:uidl - - -\n{} custom-uidl-2 - - -\nend 2\n",
            hex(&names[1]),
            hex(&names[2])
        ),
    )
    .unwrap();
    let before = pop3_uidls(MailLocation::Maildir(a.clone()));
    for u in ["00000007000004d2", "custom:uidl", "custom-uidl-2"] {
        assert!(before.contains(&u.to_string()), "{before:?}");
    }

    // Maildir → Maildir: every UIDL the server showed is shown again (base names are
    // kept, so only the others need records), except the one with ':'.
    let b = d.path().join("B");
    let r = run(&Mailbox::Maildir(a.clone()), &Mailbox::Maildir(b.clone()));
    assert_eq!((r.uidls_kept, r.uidls_not_kept), (5, 1), "{r:?}");
    let after = pop3_uidls(MailLocation::Maildir(b.clone()));
    let lost: Vec<_> = before.iter().zip(&after).filter(|(x, y)| x != y).collect();
    assert_eq!(lost.len(), 1, "{before:?}\n{after:?}");
    assert_eq!(lost[0].0, "custom:uidl");
    assert!(after.contains(&"00000007000004d2".to_string()));
    assert!(after.contains(&"custom-uidl-2".to_string()));

    // mbox → Maildir: the mbox's UIDLs (digests) come along as dovecot-uidlist records.
    let m = d.path().join("M");
    run(&Mailbox::Maildir(a.clone()), &Mailbox::Mbox(m.clone()));
    let mbox_uidls = pop3_uidls(MailLocation::Mbox(m.clone()));
    let c = d.path().join("C");
    let r = run(&Mailbox::Mbox(m.clone()), &Mailbox::Maildir(c.clone()));
    assert_eq!((r.uidls_kept, r.uidls_not_kept), (6, 0));
    assert_eq!(pop3_uidls(MailLocation::Maildir(c.clone())), mbox_uidls);
    // And the POP3 server serves the same messages from both.
    assert_eq!(
        pop3_contents(MailLocation::Maildir(c)),
        pop3_contents(MailLocation::Maildir(a))
    );

    // An mbox cannot hold UIDLs: said so in the report.
    let r = run(&Mailbox::Maildir(b), &Mailbox::Mbox(d.path().join("M2")));
    assert_eq!(r.uidls_not_kept, 6);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("mbox cannot hold UIDLs")),
        "{r:?}"
    );
}

#[test]
fn errors_name_the_problem() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("A");
    make_maildir(&a, &corpus(false)[..2]);
    let same = convert::convert(
        &Mailbox::Maildir(a.clone()),
        &Mailbox::Maildir(a.clone()),
        &Options::default(),
        &mut |_| {},
    );
    assert!(matches!(same, Err(ConvertError::Usage(ref m)) if m.contains("same place")));
    assert_eq!(
        Mailbox::parse(a.to_str().unwrap()).unwrap(),
        Mailbox::Maildir(a.clone())
    );
    let missing = Mailbox::parse(d.path().join("nope").to_str().unwrap()).unwrap_err();
    assert!(missing.to_string().contains("does not exist"), "{missing}");
    fs::create_dir(d.path().join("empty")).unwrap();
    let e = Mailbox::parse(d.path().join("empty").to_str().unwrap()).unwrap_err();
    assert!(e.to_string().contains("cannot tell"), "{e}");
    fs::write(d.path().join("x.eml"), "Subject: x\n\n").unwrap();
    let e = Mailbox::parse(d.path().join("x.eml").to_str().unwrap()).unwrap_err();
    assert!(e.to_string().contains("not an mbox"), "{e}");
    assert_eq!(
        Mailbox::parse(d.path().to_str().unwrap()).unwrap(),
        Mailbox::Eml(d.path().to_path_buf())
    );
    // A destination mbox deleted without its state file: said so, not "all done".
    let mbox = Mailbox::Mbox(d.path().join("out.mbox"));
    run(&Mailbox::Maildir(a.clone()), &mbox);
    fs::remove_file(mbox.path()).unwrap();
    let gone = convert::convert(
        &Mailbox::Maildir(a.clone()),
        &mbox,
        &Options::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(gone.to_string().contains("is gone"), "{gone}");
    fs::remove_file(mbox.state_path()).unwrap();
    assert_eq!(run(&Mailbox::Maildir(a.clone()), &mbox).copied, 2);
    // A second run at the same time is refused.
    let to = Mailbox::Eml(d.path().join("out"));
    fs::create_dir(to.path()).unwrap();
    let _lock = correio_store::lock::SessionLock::acquire(&to.state_path()).unwrap();
    let busy =
        convert::convert(&Mailbox::Maildir(a), &to, &Options::default(), &mut |_| {}).unwrap_err();
    assert!(
        busy.to_string().contains("another correio convert"),
        "{busy}"
    );
}

// ---------------------------------------------------------------------------------
// Interruptions: a child process runs the conversion and is killed at a failpoint.

/// Run by the child (see [`kill_child_at`]): converts as told by the environment.
#[test]
fn child_convert() {
    let Ok(spec) = std::env::var("CORREIO_TEST_CONVERT") else {
        return;
    };
    let mut it = spec.split('\n');
    let from = Mailbox::parse(it.next().unwrap()).unwrap();
    let to_spec = it.next().unwrap();
    let to = Mailbox::parse(to_spec).unwrap();
    let batch: usize = it.next().unwrap().parse().unwrap();
    let opts = Options::default().batch_messages(batch);
    convert::convert(&from, &to, &opts, &mut |_| {}).unwrap();
    if let Some(out) = it.next() {
        // Memory test: report the peak resident size.
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let hwm = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        fs::write(out, hwm).unwrap();
    }
}

/// Runs [`child_convert`] in a child process with `failpoint` set; returns whether it
/// finished (false: it aborted at the failpoint).
fn kill_child_at(
    from: &str,
    to: &str,
    batch: usize,
    failpoint: Option<&str>,
    extra: Option<&Path>,
) -> bool {
    let mut spec = format!("{from}\n{to}\n{batch}");
    if let Some(p) = extra {
        spec.push('\n');
        spec.push_str(p.to_str().unwrap());
    }
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "child_convert",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("CORREIO_TEST_CONVERT", spec)
    .env_remove("CORREIO_FAILPOINT");
    if let Some(f) = failpoint {
        c.env("CORREIO_FAILPOINT", f);
    }
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(f) = failpoint {
        if !out.status.success() {
            assert!(
                stderr.contains(&format!("failpoint {f} reached")),
                "{stderr}"
            );
        }
    } else {
        assert!(out.status.success(), "child failed: {stderr}");
    }
    out.status.success()
}

fn spec(m: &Mailbox) -> String {
    m.to_string()
}

/// Messages of any destination, in order.
fn read_any(m: &Mailbox) -> Vec<Vec<u8>> {
    match m {
        Mailbox::Maildir(p) => bytes_of(&read_maildir(p)),
        Mailbox::Eml(p) => read_eml(p).into_iter().map(|e| e.0).collect(),
        Mailbox::Mbox(p) => {
            let d = tempfile::tempdir().unwrap();
            let out = Mailbox::Maildir(d.path().join("x"));
            run(&Mailbox::Mbox(p.clone()), &out);
            bytes_of(&read_maildir(out.path()))
        }
    }
}

#[test]
fn a_killed_run_resumes_without_loss_or_duplicates() {
    let d = tempfile::tempdir().unwrap();
    let msgs = corpus(false);
    let n = msgs.len() as u64;
    let src = Mailbox::Maildir(d.path().join("src"));
    make_maildir(src.path(), &msgs);
    let mbox_src = Mailbox::Mbox(d.path().join("src.mbox"));
    run(&src, &mbox_src);
    let want = bytes_of(&msgs);
    let mut case = 0;
    for from in [&src, &mbox_src] {
        for point in [
            "convert-after-write:5",
            "convert-after-write:1",
            "convert-after-commit:7",
        ] {
            for kind in ["maildir", "mbox", "eml"] {
                case += 1;
                let to =
                    Mailbox::parse(&format!("{kind}:{}/out{case}", d.path().display())).unwrap();
                // Batches of 3: the kill lands inside a batch, after others committed.
                let finished = kill_child_at(&spec(from), &spec(&to), 3, Some(point), None);
                assert!(!finished, "{point} was not reached");
                let r = run_with(from, &to, &Options::default().batch_messages(3));
                assert_eq!(
                    r.copied + r.already_done,
                    n,
                    "{from} → {to} after {point}: {r:?}"
                );
                assert!(r.already_done > 0 || point.ends_with(":1"), "{r:?}");
                assert_same_bytes(
                    &want,
                    &read_any(&to),
                    &format!("{from} → {to} after {point}"),
                );
                // Nothing left behind, nothing more to do.
                let r = run(from, &to);
                assert_eq!((r.copied, r.already_done), (0, n));
                if let Mailbox::Maildir(p) = &to {
                    assert_eq!(fs::read_dir(p.join("tmp")).unwrap().count(), 0);
                }
            }
        }
    }
}

#[test]
fn a_torn_state_file_is_cut_and_a_foreign_append_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let msgs = corpus(false);
    let src = Mailbox::Maildir(d.path().join("src"));
    make_maildir(src.path(), &msgs);
    // Torn last record (a crash while appending to the state file).
    let to = Mailbox::Maildir(d.path().join("out"));
    let first = Mailbox::Maildir(d.path().join("first"));
    make_maildir(first.path(), &msgs[..4]);
    run(&first, &to);
    let mut st = fs::OpenOptions::new()
        .append(true)
        .open(to.state_path())
        .unwrap();
    std::io::Write::write_all(&mut st, b"move abc tmp/x cu").unwrap();
    let r = run(&src, &to);
    assert_eq!(r.copied, msgs.len() as u64);
    assert!(!fs::read(to.state_path()).unwrap().ends_with(b"cu"));
    // A damaged record in the middle is not guessed at.
    let mut text = fs::read(to.state_path()).unwrap();
    let at = text.windows(5).position(|w| w == b"move ").unwrap();
    text[at] = b'X';
    fs::write(to.state_path(), &text).unwrap();
    let e = convert::convert(&src, &to, &Options::default(), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("damaged record"), "{e}");

    // mbox: killed mid-batch, then another program appends: refused, nothing cut.
    let mbox = Mailbox::Mbox(d.path().join("out.mbox"));
    assert!(!kill_child_at(
        &spec(&src),
        &spec(&mbox),
        100,
        Some("convert-after-write:3"),
        None
    ));
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(mbox.path())
        .unwrap();
    std::io::Write::write_all(
        &mut f,
        b"\n\nFrom other@example.org Mon Nov 24 18:22:48 2025\nSubject: x\n\n",
    )
    .unwrap();
    let len = fs::metadata(mbox.path()).unwrap().len();
    let e = convert::convert(&src, &mbox, &Options::default(), &mut |_| {}).unwrap_err();
    assert!(matches!(e, ConvertError::Recovery(_)), "{e}");
    assert!(e.to_string().contains("another program appended"), "{e}");
    assert_eq!(fs::metadata(mbox.path()).unwrap().len(), len);
}

#[test]
fn memory_does_not_grow_with_message_size() {
    let d = tempfile::tempdir().unwrap();
    let msgs = vec![Msg {
        bytes: big_message(50 * 1024 * 1024),
        flags: Flags::new(true, b"S"),
        date: t(1_300_000_000),
    }];
    let a = Mailbox::Maildir(d.path().join("A"));
    make_maildir(a.path(), &msgs);
    drop(msgs);
    let b = Mailbox::Mbox(d.path().join("B"));
    let c = Mailbox::Eml(d.path().join("C"));
    let e = Mailbox::Maildir(d.path().join("E"));
    for (from, to) in [
        (&a, &b),
        (&b, &c),
        (&c, &e),
        (&b, &Mailbox::Mbox(d.path().join("B2"))),
    ] {
        let hwm = d.path().join("hwm");
        assert!(kill_child_at(&spec(from), &spec(to), 256, None, Some(&hwm)));
        let line = fs::read_to_string(&hwm).unwrap();
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        // The test harness itself takes a few MB; the message is 50 MB.
        assert!(kb < 20 * 1024, "{from} → {to}: peak resident size {line}");
    }
    let got = read_maildir(e.path());
    assert_eq!(got.len(), 1);
    assert!(
        got[0].bytes == big_message(50 * 1024 * 1024),
        "the 50 MB message changed"
    );
}

// ---------------------------------------------------------------------------------
// The fuzz targets' seed corpus, replayed.

#[test]
fn store_convert_message_corpus() {
    replay("store_convert_message", convert::fuzz_message);
}

#[test]
fn store_convert_mbox_corpus() {
    replay("store_convert_mbox", convert::fuzz_mbox);
}

#[test]
fn store_convert_state_corpus() {
    replay("store_convert_state", convert::fuzz_state);
}

/// The message body on every corpus message with every flag combination.
#[test]
fn fuzz_message_on_the_corpus() {
    for m in corpus(false) {
        for bits in 0..=255u8 {
            let mut data = vec![bits];
            data.extend_from_slice(&m.bytes);
            convert::fuzz_message(&data);
        }
    }
}
