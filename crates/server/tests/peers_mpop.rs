//! mpop (Debian package `mpop`) against Correio's POP3 server on loopback: STLS and
//! implicit TLS with the server's self-signed certificate as `tls_trust_file`, delivery
//! into a Maildir and through an MDA, keep on/off, the UIDLs file (a second run fetches
//! nothing), and mpop's pipelining bringing every message exactly once. Every message of
//! the corpus (see `peers_fixtures`) must arrive byte-exact in LF form: mpop writes Maildir
//! files and feeds its MDA with LF line ends, and `received_header off` stops it from
//! prepending its own Received header.

mod common;
mod peers_fixtures;

use rustls::pki_types::pem::PemObject as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::TestServer;
use correio_testkit::peers::{
    Run, dir_files, maildir_messages, make_maildir, require, run_bounded, scratch, write_private,
};
use peers_fixtures::{Msg, assert_same_messages, corpus, deliver_corpus, server_count};
use sha2::Digest as _;

const LIMIT: Duration = Duration::from_secs(60);

struct Setup {
    srv: TestServer,
    corpus: Vec<Msg>,
    tmp: tempfile::TempDir,
}

fn setup() -> Setup {
    setup_with(TestServer::start())
}

fn setup_with(srv: TestServer) -> Setup {
    require("mpop", "mpop");
    srv.add_user("alice", "secret pw");
    // A hashed secret: only USER/PASS, PLAIN and LOGIN can work for bob.
    srv.add_user_scheme("bob", "secret pw", correio_auth::Scheme::Sha512Crypt);
    let corpus = corpus();
    deliver_corpus(&srv, "alice", &corpus);
    Setup {
        srv,
        corpus,
        tmp: scratch(),
    }
}

/// Writes the mpop config (0600) for one account and returns its path.
fn config(s: &Setup, implicit_tls: bool, delivery: &str, keep: bool, extra: &str) -> String {
    let port = if implicit_tls {
        s.srv.pop3s.port()
    } else {
        s.srv.pop3.port()
    };
    let path = s.tmp.path().join("mpoprc");
    let text = format!(
        "defaults\n\
         timeout 30\n\
         account test\n\
         host localhost\n\
         port {port}\n\
         user alice\n\
         password secret pw\n\
         tls on\n\
         tls_starttls {}\n\
         tls_trust_file {}\n\
         delivery {delivery}\n\
         keep {}\n\
         uidls_file {}\n\
         received_header off\n\
         {extra}\n",
        if implicit_tls { "off" } else { "on" },
        s.srv.cert_pem.display(),
        if keep { "on" } else { "off" },
        s.tmp.path().join("uidls").display(),
    );
    write_private(&path, &text);
    path.display().to_string()
}

/// Runs mpop once; it must succeed.
fn mpop(s: &Setup, rc: &str) -> Run {
    let r = mpop_run(s, rc);
    assert!(r.status.success(), "mpop failed\n{}", r.log());
    r
}

/// Runs mpop once with its protocol trace (`--debug`) in the output.
fn mpop_run(s: &Setup, rc: &str) -> Run {
    let mut cmd = Command::new("mpop");
    cmd.env("HOME", s.tmp.path())
        .env("LC_ALL", "C")
        .env("TMPDIR", s.tmp.path())
        .args(["-C", rc, "--debug", "test"]);
    run_bounded(cmd, LIMIT, s.tmp.path())
}

/// The commands mpop sent (its `--debug` prints them as `--> CMD`).
fn sent(r: &Run) -> Vec<&str> {
    r.stdout
        .lines()
        .chain(r.stderr.lines())
        .filter_map(|l| l.strip_prefix("--> "))
        .collect()
}

#[test]
fn mpop_stls_maildir_keep_then_uidls_fetch_nothing_new() {
    let s = setup();
    let md = s.tmp.path().join("Maildir");
    make_maildir(&md);
    let rc = config(&s, false, &format!("maildir {}", md.display()), true, "");
    let r = mpop(&s, &rc);
    assert!(
        sent(&r).contains(&"STLS"),
        "mpop did not use STLS\n{}",
        r.log()
    );
    assert_same_messages("mpop STLS maildir", &s.corpus, &maildir_messages(&md));
    // keep on: nothing deleted on the server.
    assert_eq!(server_count(&s.srv, "alice"), s.corpus.len());
    assert!(
        !sent(&r).iter().any(|c| c.starts_with("DELE")),
        "DELE with keep on"
    );

    // The UIDLs file makes the second run fetch nothing.
    let r = mpop(&s, &rc);
    assert!(
        !sent(&r).iter().any(|c| c.starts_with("RETR")),
        "second run retrieved again\n{}",
        r.log()
    );
    assert_eq!(maildir_messages(&md).len(), s.corpus.len());
    assert_eq!(server_count(&s.srv, "alice"), s.corpus.len());

    // A new message is the only one fetched next time.
    let extra = b"Subject: late arrival\nMessage-ID: <late@example.org>\n\nnew\n";
    s.srv.deliver("alice", extra);
    let r = mpop(&s, &rc);
    let retrs: Vec<_> = sent(&r)
        .into_iter()
        .filter(|c| c.starts_with("RETR"))
        .collect();
    assert_eq!(retrs.len(), 1, "{}", r.log());
    let all = maildir_messages(&md);
    assert_eq!(all.len(), s.corpus.len() + 1);
    assert!(
        all.iter().any(|(_, b)| b == extra),
        "late message not exact"
    );
}

#[test]
fn mpop_implicit_tls_mda_delete() {
    let s = setup();
    let out = s.tmp.path().join("mda-out");
    std::fs::create_dir(&out).expect("mkdir");
    // One file per message; $$ (the shell started for that message) keeps names unique.
    let mda = format!("mda \"cat > {}/msg-$$-$(date +%s%N)\"", out.display());
    let rc = config(&s, true, &mda, false, "");
    let r = mpop(&s, &rc);
    assert!(
        !sent(&r).contains(&"STLS"),
        "STLS on implicit TLS\n{}",
        r.log()
    );
    assert_same_messages("mpop implicit TLS mda", &s.corpus, &dir_files(&out));
    // keep off: everything was deleted at QUIT.
    assert_eq!(server_count(&s.srv, "alice"), 0, "{}", r.log());
    // A second run finds an empty maildrop and delivers nothing.
    mpop(&s, &rc);
    assert_eq!(dir_files(&out).len(), s.corpus.len());
}

#[test]
fn mpop_pipelines_and_gets_each_message_once() {
    let s = setup();
    let md = s.tmp.path().join("Maildir");
    make_maildir(&md);
    let rc = config(
        &s,
        false,
        &format!("maildir {}", md.display()),
        false,
        "pipelining on",
    );
    let r = mpop(&s, &rc);
    assert_same_messages("mpop pipelined", &s.corpus, &maildir_messages(&md));
    assert_eq!(server_count(&s.srv, "alice"), 0, "{}", r.log());
    let cmds = sent(&r);
    let retr = cmds.iter().filter(|c| c.starts_with("RETR")).count();
    let dele = cmds.iter().filter(|c| c.starts_with("DELE")).count();
    assert_eq!(
        retr,
        s.corpus.len(),
        "each message retrieved once\n{}",
        r.log()
    );
    assert_eq!(dele, s.corpus.len(), "each message deleted once");
    // Pipelining really happened: several commands went out before mpop read a reply.
    assert!(
        max_burst(&r) >= 2,
        "mpop never sent two commands in a row\n{}",
        r.log()
    );
}

/// Every mechanism mpop (through GNU SASL) and the server have in common logs alice in
/// and brings the corpus byte-exact (keep on, so each run sees all of it).
#[test]
fn mpop_each_auth_method() {
    let s = setup();
    for method in [
        "user",
        "apop",
        "plain",
        "login",
        "cram-md5",
        "scram-sha-256",
    ] {
        let md = s.tmp.path().join(format!("Maildir-{method}"));
        make_maildir(&md);
        let rc = config(
            &s,
            false,
            &format!("maildir {}", md.display()),
            true,
            &format!("auth {method}\nonly_new off"),
        );
        let r = mpop(&s, &rc);
        let cmds = sent(&r);
        let login = if method == "user" {
            "USER alice".to_string()
        } else if method == "apop" {
            "APOP alice ".to_string()
        } else {
            format!("AUTH {}", method.to_uppercase())
        };
        assert!(
            cmds.iter().any(|c| c.starts_with(&login)),
            "auth {method}: no {login:?}\n{}",
            r.log()
        );
        assert_same_messages(
            &format!("mpop auth {method}"),
            &s.corpus,
            &maildir_messages(&md),
        );
    }
    assert_eq!(server_count(&s.srv, "alice"), s.corpus.len());
}

/// A mechanism the user's secret cannot serve fails cleanly (nothing fetched or lost);
/// mpop's own choice over TLS logs the same user in.
#[test]
fn mpop_hashed_secret() {
    let s = setup();
    let md = s.tmp.path().join("Maildir");
    make_maildir(&md);
    let path = config(&s, false, &format!("maildir {}", md.display()), false, "");
    let text = std::fs::read_to_string(&path)
        .expect("rc")
        .replace("user alice", "user bob");
    write_private(
        Path::new(&path),
        &text.replace("\nkeep off", "\nkeep off\nauth cram-md5"),
    );
    s.srv.deliver("bob", b"Subject: for bob\n\nhello bob\n");
    let r = mpop_run(&s, &path);
    assert!(
        !r.status.success(),
        "CRAM-MD5 for a hashed secret succeeded?\n{}",
        r.log()
    );
    assert!(
        r.stdout.contains("<-- -ERR [AUTH] "),
        "no [AUTH] reply\n{}",
        r.log()
    );
    assert_eq!(server_count(&s.srv, "bob"), 1);
    assert!(maildir_messages(&md).is_empty());

    write_private(Path::new(&path), &text);
    mpop(&s, &path);
    let got = maildir_messages(&md);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, b"Subject: for bob\n\nhello bob\n");
    assert_eq!(server_count(&s.srv, "bob"), 0);
}

/// The longest run of commands mpop sent without reading a reply in between.
fn max_burst(r: &Run) -> usize {
    let (mut best, mut cur) = (0, 0);
    for l in r.stdout.lines().chain(r.stderr.lines()) {
        if l.starts_with("--> ") {
            cur += 1;
            best = best.max(cur);
        } else if l.starts_with("<-- ") {
            cur = 0;
        }
    }
    best
}

/// A second session for a locked maildrop: mpop gets `-ERR [IN-USE]`, fails, and
/// nothing is fetched or deleted; after the other session quits it gets everything.
#[test]
fn mpop_in_use_then_ok() {
    let s = setup();
    let md = s.tmp.path().join("Maildir");
    make_maildir(&md);
    let rc = config(&s, true, &format!("maildir {}", md.display()), false, "");
    let mut holder = s.srv.connect();
    holder.login("alice", "secret pw");
    let r = mpop_run(&s, &rc);
    assert!(!r.status.success(), "mpop got in twice\n{}", r.log());
    assert!(r.stdout.contains("<-- -ERR [IN-USE] "), "{}", r.log());
    assert!(maildir_messages(&md).is_empty());
    assert_eq!(server_count(&s.srv, "alice"), s.corpus.len());
    assert_eq!(
        holder.cmd("QUIT"),
        "+OK Correio POP3 server signing off\r\n"
    );
    // UPDATE releases the lock before QUIT is answered: mpop gets in right away.
    let r = mpop_run(&s, &rc);
    assert!(r.status.success(), "{}", r.log());
    assert_same_messages("mpop after IN-USE", &s.corpus, &maildir_messages(&md));
    assert_eq!(server_count(&s.srv, "alice"), 0);
}

/// `tls_fingerprint` instead of a trust file: the SHA-256 of the server's certificate.
#[test]
fn mpop_tls_fingerprint() {
    let s = setup();
    let md = s.tmp.path().join("Maildir");
    make_maildir(&md);
    let pem = std::fs::read(&s.srv.cert_pem).expect("cert");
    let der = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .next()
        .expect("a certificate")
        .expect("PEM");
    let fp: Vec<String> = sha2::Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let path = config(&s, true, &format!("maildir {}", md.display()), true, "");
    let text = std::fs::read_to_string(&path).expect("rc");
    let trust = format!("tls_trust_file {}\n", s.srv.cert_pem.display());
    assert!(text.contains(&trust));
    let text = text.replace(&trust, &format!("tls_fingerprint {}\n", fp.join(":")));
    write_private(Path::new(&path), &text);
    mpop(&s, &path);
    assert_same_messages("mpop tls_fingerprint", &s.corpus, &maildir_messages(&md));
}

/// With cleartext logins refused (loopback treated as remote), the CAPA before STLS
/// offers no USER/PLAIN; mpop upgrades, reads CAPA again and logs in. Without TLS it
/// can log in only by challenge-response (SCRAM-SHA-256 / CRAM-MD5), never USER/PASS.
#[test]
fn mpop_stls_when_cleartext_login_refused() {
    let s = setup_with(TestServer::builder().loopback_untrusted().start());
    let md = s.tmp.path().join("Maildir");
    make_maildir(&md);
    let rc = config(&s, false, &format!("maildir {}", md.display()), false, "");
    let r = mpop(&s, &rc);
    assert!(sent(&r).contains(&"STLS"), "{}", r.log());
    assert_same_messages(
        "mpop STLS, cleartext refused",
        &s.corpus,
        &maildir_messages(&md),
    );
    assert_eq!(server_count(&s.srv, "alice"), 0);

    // Without TLS only the challenge-response mechanisms are offered: mpop's own choice
    // logs in without the password on the wire...
    let text = std::fs::read_to_string(&rc)
        .expect("rc")
        .replace("tls on\n", "tls off\n");
    write_private(Path::new(&rc), &text);
    s.srv.deliver("alice", b"Subject: one\n\nx\n");
    let r = mpop(&s, &rc);
    let cmds = sent(&r);
    assert!(!cmds.contains(&"STLS"));
    assert!(
        cmds.iter()
            .any(|c| *c == "AUTH SCRAM-SHA-256" || *c == "AUTH CRAM-MD5"),
        "{}",
        r.log()
    );
    assert_eq!(server_count(&s.srv, "alice"), 0);
    // ...and USER/PASS does not work. (Forced to `auth user` although CAPA lists no
    // USER, mpop pipelines USER and PASS, so its password still crosses the wire: the
    // server refuses USER and then PASS, "-ERR USER first".)
    s.srv.deliver("alice", b"Subject: two\n\nx\n");
    write_private(Path::new(&rc), &format!("{text}auth user\n"));
    let r = mpop_run(&s, &rc);
    assert!(!r.status.success(), "USER/PASS over cleartext\n{}", r.log());
    assert!(
        r.stdout.contains("<-- -ERR [AUTH] "),
        "no [AUTH] refusal\n{}",
        r.log()
    );
    assert_eq!(server_count(&s.srv, "alice"), 1);
    assert_eq!(maildir_messages(&md).len(), s.corpus.len() + 1);
}

/// A client that asked for a big message and reads nothing, and one stuck mid-line,
/// do not hold up mpop's session on the same server.
#[test]
fn mpop_while_other_clients_stall() {
    let s = setup();
    s.srv.add_user("big", "pw");
    let line = b"a line of a big message that somebody requests and never reads\n";
    let big: Vec<u8> = line.iter().copied().cycle().take(8 << 20).collect();
    s.srv.deliver("big", &big);
    let mut slow = s.srv.connect();
    slow.login("big", "pw");
    slow.send(b"RETR 1\r\n");
    let mut half = s.srv.connect();
    half.line();
    half.send(b"USER al");
    let md = s.tmp.path().join("Maildir");
    make_maildir(&md);
    let rc = config(&s, true, &format!("maildir {}", md.display()), false, "");
    let t = std::time::Instant::now();
    mpop(&s, &rc);
    let took = t.elapsed();
    assert_same_messages(
        "mpop beside stalled clients",
        &s.corpus,
        &maildir_messages(&md),
    );
    assert!(took < Duration::from_secs(20), "mpop took {took:?}");
    drop((slow, half));
}

/// Degenerate stored messages (empty file, header only, no header) come out of mpop
/// exactly as the server sends them.
#[test]
fn mpop_degenerate_messages() {
    require("mpop", "mpop");
    let srv = TestServer::start();
    srv.add_user("alice", "secret pw");
    let corpus = peers_fixtures::degenerate_corpus();
    deliver_corpus(&srv, "alice", &corpus);
    let s = Setup {
        srv,
        corpus,
        tmp: scratch(),
    };
    let md = s.tmp.path().join("Maildir");
    make_maildir(&md);
    let rc = config(&s, true, &format!("maildir {}", md.display()), false, "");
    mpop(&s, &rc);
    assert_same_messages("mpop degenerate", &s.corpus, &maildir_messages(&md));
    assert_eq!(server_count(&s.srv, "alice"), 0);
}

/// The trust file is really checked: with a certificate that is not the server's, mpop
/// refuses the server (STLS and implicit TLS) and fetches nothing.
#[test]
fn mpop_rejects_wrong_certificate() {
    let s = setup();
    let md = s.tmp.path().join("Maildir");
    make_maildir(&md);
    let other = peers_fixtures::foreign_cert(s.tmp.path());
    for implicit in [false, true] {
        let rc = config(
            &s,
            implicit,
            &format!("maildir {}", md.display()),
            false,
            "",
        );
        let text = std::fs::read_to_string(&rc).expect("rc").replace(
            &s.srv.cert_pem.display().to_string(),
            &other.display().to_string(),
        );
        write_private(Path::new(&rc), &text);
        let r = mpop_run(&s, &rc);
        assert!(
            r.log().contains("TLS certificate verification failed"),
            "{}",
            r.log()
        );
        assert!(
            !r.status.success(),
            "accepted a foreign certificate\n{}",
            r.log()
        );
        assert!(
            !sent(&r)
                .iter()
                .any(|c| c.starts_with("AUTH") || c.starts_with("USER"))
        );
    }
    assert!(maildir_messages(&md).is_empty());
    assert_eq!(server_count(&s.srv, "alice"), s.corpus.len());
}

/// Four mpop processes at once, one per user, over both ports: every maildrop comes out
/// complete and byte-exact, nothing crosses between sessions.
#[test]
fn mpop_parallel_accounts() {
    let s = setup();
    let users = ["u0", "u1", "u2", "u3"];
    for u in users {
        s.srv.add_user(u, "secret pw");
        deliver_corpus(&s.srv, u, &s.corpus);
    }
    let jobs: Vec<(String, std::path::PathBuf)> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let md = s.tmp.path().join(format!("Maildir-{u}"));
            make_maildir(&md);
            let rc = config(
                &s,
                i % 2 == 0,
                &format!("maildir {}", md.display()),
                false,
                "",
            );
            let text = std::fs::read_to_string(&rc)
                .expect("rc")
                .replace("user alice\n", &format!("user {u}\n"))
                .replace("/uidls\n", &format!("/uidls-{u}\n"));
            let own = s.tmp.path().join(format!("mpoprc-{u}"));
            write_private(&own, &text);
            (own.display().to_string(), md)
        })
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .iter()
            .enumerate()
            .map(|(i, (rc, _))| {
                let dir = s.tmp.path().join(format!("run-{i}"));
                std::fs::create_dir(&dir).expect("mkdir");
                scope.spawn(move || {
                    let mut cmd = Command::new("mpop");
                    cmd.env("HOME", &dir)
                        .env("LC_ALL", "C")
                        .args(["-C", rc, "test"]);
                    run_bounded(cmd, LIMIT, &dir)
                })
            })
            .collect();
        for h in handles {
            let r = h.join().expect("thread");
            assert!(r.status.success(), "{}", r.log());
        }
    });
    for (u, (_, md)) in users.iter().zip(&jobs) {
        assert_same_messages(
            &format!("mpop parallel {u}"),
            &s.corpus,
            &maildir_messages(md),
        );
        assert_eq!(server_count(&s.srv, u), 0);
    }
    assert_eq!(server_count(&s.srv, "alice"), s.corpus.len());
}
