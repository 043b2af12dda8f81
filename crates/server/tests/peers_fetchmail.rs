//! fetchmail (Debian package `fetchmail`) against Correio's POP3 server on loopback.
//!
//! fetchmail has no Maildir writer of its own; it hands each message to an MDA, here
//! `cat > $(mktemp DIR/msg.XXXXXXXXXX)`, one file per message. With an MDA fetchmail
//! strips CRs (`stripcr` is its default there), so the files hold LF line ends; the
//! corpus has no CR of its own, so comparing with the LF form of each delivered message
//! is exact. `set invisible` stops fetchmail from prepending a Received header and
//! `no rewrite` from editing address headers; nothing else is normalised.
//!
//! Covered: STLS (`sslproto TLS1.2+`, which makes TLS mandatory) and implicit TLS
//! (`ssl`), both with `sslcertck` against the server's self-signed certificate given as
//! `sslcertfile` (no `--nosslcertck` anywhere); `keep` and `no keep`; `uidl` with an
//! `--idfile` (a second run fetches nothing new, a third only the new message). The rc
//! file is a 0600 temp file, `FETCHMAILHOME`/`HOME` point at a temp dir, and fetchmail
//! runs with `--nodetach`, so it never leaves a daemon behind.

mod common;
mod peers_fixtures;

use std::process::Command;
use std::time::Duration;

use common::TestServer;
use correio_auth::Scheme;
use correio_testkit::peers::{Run, dir_files, require, run_bounded, scratch, write_private};
use peers_fixtures::{Msg, assert_same_messages, corpus, deliver_corpus, server_count};

const LIMIT: Duration = Duration::from_secs(90);

struct Setup {
    srv: TestServer,
    user: &'static str,
    corpus: Vec<Msg>,
    tmp: tempfile::TempDir,
}

impl Setup {
    fn out(&self) -> std::path::PathBuf {
        self.tmp.path().join("mda-out")
    }
}

fn setup() -> Setup {
    setup_on(TestServer::start(), "alice")
}

/// Users `alice` (PLAIN secret: every mechanism and APOP work) and `bob`
/// (SHA512-CRYPT: only USER/PASS, PLAIN and LOGIN can work) on `srv`, with the corpus
/// in `user`'s maildrop; fetchmail logs in as `user`.
fn setup_on(srv: TestServer, user: &'static str) -> Setup {
    require("fetchmail", "fetchmail");
    srv.add_user("alice", "secret pw");
    srv.add_user_scheme("bob", "secret pw", Scheme::Sha512Crypt);
    let corpus = corpus();
    deliver_corpus(&srv, user, &corpus);
    let tmp = scratch();
    std::fs::create_dir(tmp.path().join("mda-out")).expect("mkdir");
    Setup {
        srv,
        user,
        corpus,
        tmp,
    }
}

enum Tls {
    /// Cleartext port, STLS required.
    Stls,
    /// The implicit TLS port.
    Implicit,
}

/// Writes the 0600 rc file and returns its path. `server` holds server options (they
/// must come before the user part), `user` user options.
fn rc(s: &Setup, tls: Tls, server: &str, user: &str) -> String {
    let (port, tls_opts) = match tls {
        Tls::Stls => (s.srv.pop3.port(), "sslproto 'TLS1.2+'"),
        Tls::Implicit => (s.srv.pop3s.port(), "ssl"),
    };
    let path = s.tmp.path().join("fetchmailrc");
    let text = format!(
        "set no syslog\n\
         set no bouncemail\n\
         set invisible\n\
         poll localhost with {proto} port {port} timeout 30 {server}\n\
         \tuser \"{login}\" there with password \"secret pw\"\n\
         \t{tls_opts} sslcertck sslcertfile \"{cert}\"\n\
         \tno rewrite\n\
         \tmda \"cat > $(mktemp {out}/msg.XXXXXXXXXX)\"\n\
         \t{user}\n",
        cert = s.srv.cert_pem.display(),
        out = s.out().display(),
        login = s.user,
        proto = if server.contains("proto ") {
            ""
        } else {
            "proto POP3"
        },
    );
    write_private(&path, &text);
    path.display().to_string()
}

/// Runs fetchmail once and checks its exit status: 0 means mail was fetched, 1 that
/// there was none, 9 that the server said the maildrop is locked.
fn fetchmail(s: &Setup, rc: &str, want_status: i32) -> Run {
    let r = fetchmail_run(s, rc);
    assert_eq!(
        r.status.code(),
        Some(want_status),
        "fetchmail exit status\n{}",
        r.log()
    );
    r
}

/// Runs fetchmail once.
fn fetchmail_run(s: &Setup, rc: &str) -> Run {
    let mut cmd = Command::new("fetchmail");
    // As root, fetchmail's default lock is /var/run/fetchmail.pid, shared by every
    // test: --pidfile keeps each run on its own.
    // As root, fetchmail would switch the MDA to the user named in these variables;
    // without them it keeps the uid it was started with.
    cmd.env_remove("FETCHMAILUSER")
        .env_remove("LOGNAME")
        .env_remove("USER")
        .env("HOME", s.tmp.path())
        .env("LC_ALL", "C")
        .env("FETCHMAILHOME", s.tmp.path())
        .env("TMPDIR", s.tmp.path())
        .arg("-f")
        .arg(rc)
        .arg("--pidfile")
        .arg(s.tmp.path().join("fetchmail.pid"))
        .arg("--idfile")
        .arg(s.tmp.path().join("fetchids"))
        .args(["--nodetach", "-v", "-v", "localhost"]);
    let r = run_bounded(cmd, LIMIT, s.tmp.path());
    // fetchmail counts what RETR/TOP brought and compares it with LIST (PROTOCOL.md:
    // the size is exactly what RETR sends).
    assert!(
        !r.stdout.contains("was not the expected length"),
        "LIST size differs from the message fetchmail received\n{}",
        r.log()
    );
    r
}

/// The POP3 commands fetchmail sent (`-v -v` logs them as `POP3> CMD`).
fn sent(r: &Run) -> Vec<String> {
    r.stdout
        .lines()
        .chain(r.stderr.lines())
        .filter_map(|l| l.split_once("POP3> ").map(|(_, c)| c.to_string()))
        .collect()
}

fn count(cmds: &[String], prefix: &str) -> usize {
    cmds.iter().filter(|c| c.starts_with(prefix)).count()
}

/// Message downloads: fetchmail uses `RETR n`, or `TOP n 99999999` in keep mode (so
/// servers that set a "seen" flag on RETR do not).
fn downloads(cmds: &[String]) -> usize {
    count(cmds, "RETR ") + count(cmds, "TOP ")
}

#[test]
fn fetchmail_stls_keep_uidl() {
    let s = setup();
    let rc = rc(&s, Tls::Stls, "uidl", "keep");
    let r = fetchmail(&s, &rc, 0);
    let cmds = sent(&r);
    assert!(cmds.iter().any(|c| c == "STLS"), "no STLS\n{}", r.log());
    assert_same_messages("fetchmail STLS keep", &s.corpus, &dir_files(&s.out()));
    assert_eq!(count(&cmds, "DELE"), 0, "DELE with keep\n{}", r.log());
    assert_eq!(server_count(&s.srv, s.user), s.corpus.len());

    // Second run: every UIDL is in the idfile, nothing is fetched (exit 1: no mail).
    let r = fetchmail(&s, &rc, 1);
    assert_eq!(downloads(&sent(&r)), 0, "fetched again\n{}", r.log());
    assert_eq!(dir_files(&s.out()).len(), s.corpus.len());

    // Third run: only the new message.
    let extra = b"Subject: late arrival\nMessage-ID: <late@example.org>\n\nnew\n";
    s.srv.deliver("alice", extra);
    let r = fetchmail(&s, &rc, 0);
    assert_eq!(downloads(&sent(&r)), 1, "{}", r.log());
    let files = dir_files(&s.out());
    assert_eq!(files.len(), s.corpus.len() + 1);
    assert!(
        files.iter().any(|(_, b)| b == extra),
        "late message not exact"
    );
}

#[test]
fn fetchmail_stls_nokeep_deletes() {
    let s = setup();
    let rc = rc(&s, Tls::Stls, "", "no keep");
    let r = fetchmail(&s, &rc, 0);
    assert!(sent(&r).iter().any(|c| c == "STLS"), "no STLS\n{}", r.log());
    assert_same_messages("fetchmail STLS no keep", &s.corpus, &dir_files(&s.out()));
    assert_eq!(count(&sent(&r), "DELE"), s.corpus.len(), "{}", r.log());
    assert_eq!(server_count(&s.srv, s.user), 0, "{}", r.log());
    fetchmail(&s, &rc, 1);
    assert_eq!(dir_files(&s.out()).len(), s.corpus.len());
}

#[test]
fn fetchmail_implicit_tls_keep_uidl() {
    let s = setup();
    let rc = rc(&s, Tls::Implicit, "uidl", "keep");
    let r = fetchmail(&s, &rc, 0);
    assert!(
        !sent(&r).iter().any(|c| c == "STLS"),
        "STLS inside TLS\n{}",
        r.log()
    );
    assert_same_messages(
        "fetchmail implicit TLS keep",
        &s.corpus,
        &dir_files(&s.out()),
    );
    assert_eq!(server_count(&s.srv, s.user), s.corpus.len());
    let r = fetchmail(&s, &rc, 1);
    assert_eq!(downloads(&sent(&r)), 0, "fetched again\n{}", r.log());
}

#[test]
fn fetchmail_implicit_tls_nokeep_user_pass() {
    let s = setup();
    let rc = rc(&s, Tls::Implicit, "auth password", "no keep");
    let r = fetchmail(&s, &rc, 0);
    let cmds = sent(&r);
    assert!(
        cmds.iter().any(|c| c == "USER alice"),
        "auth password should use USER/PASS\n{}",
        r.log()
    );
    assert_same_messages(
        "fetchmail implicit TLS no keep",
        &s.corpus,
        &dir_files(&s.out()),
    );
    assert_eq!(server_count(&s.srv, s.user), 0, "{}", r.log());
}

#[test]
fn fetchmail_apop() {
    let s = setup();
    let rc = rc(&s, Tls::Stls, "proto APOP", "no keep");
    let r = fetchmail(&s, &rc, 0);
    let cmds = sent(&r);
    assert!(
        cmds.iter().any(|c| c.starts_with("APOP alice ")),
        "no APOP\n{}",
        r.log()
    );
    assert_same_messages("fetchmail APOP", &s.corpus, &dir_files(&s.out()));
    assert_eq!(server_count(&s.srv, s.user), 0);
}

/// The server offers CRAM-MD5 because alice's secret allows it; bob's hashed secret does
/// not. fetchmail 6.4's `auth any` tries CRAM-MD5 first, gets `-ERR [AUTH]` and must
/// still be able to fall back to USER/PASS in the same session.
#[test]
fn fetchmail_hashed_secret_default_auth() {
    let s = setup_on(TestServer::start(), "bob");
    let rc = rc(&s, Tls::Implicit, "", "no keep");
    let r = fetchmail(&s, &rc, 0);
    assert!(
        sent(&r).iter().any(|c| c == "USER bob"),
        "no USER/PASS login\n{}",
        r.log()
    );
    assert_same_messages("fetchmail hashed secret", &s.corpus, &dir_files(&s.out()));
    assert_eq!(server_count(&s.srv, s.user), 0, "{}", r.log());
}

/// A second session for a locked maildrop: fetchmail gets `-ERR [IN-USE]`, reports the
/// lock (exit 9, PS_LOCKBUSY), fetches and deletes nothing; once the other session has
/// quit it fetches everything.
#[test]
fn fetchmail_in_use_then_ok() {
    let s = setup();
    let rc = rc(&s, Tls::Implicit, "", "no keep");
    let mut holder = s.srv.connect();
    holder.login("alice", "secret pw");
    let r = fetchmail(&s, &rc, 9);
    assert!(
        r.stdout.contains("-ERR [IN-USE]"),
        "no [IN-USE] reply\n{}",
        r.log()
    );
    assert!(dir_files(&s.out()).is_empty());
    assert_eq!(server_count(&s.srv, s.user), s.corpus.len());
    assert_eq!(
        holder.cmd("QUIT"),
        "+OK Correio POP3 server signing off\r\n"
    );
    // UPDATE releases the lock before QUIT is answered: fetchmail gets in right away.
    let r = fetchmail_run(&s, &rc);
    assert_eq!(r.status.code(), Some(0), "{}", r.log());
    assert_same_messages("fetchmail after IN-USE", &s.corpus, &dir_files(&s.out()));
    assert_eq!(server_count(&s.srv, s.user), 0);
}

/// With cleartext logins refused (loopback treated as remote), the CAPA before STLS
/// offers no USER/PLAIN; fetchmail upgrades, asks CAPA again and logs in with USER/PASS
/// (bob's hashed secret allows nothing else).
#[test]
fn fetchmail_stls_when_cleartext_login_refused() {
    let s = setup_on(TestServer::builder().loopback_untrusted().start(), "bob");
    let rc = rc(&s, Tls::Stls, "", "no keep");
    let r = fetchmail(&s, &rc, 0);
    let cmds = sent(&r);
    let stls = cmds.iter().position(|c| c == "STLS").expect("STLS");
    let user = cmds.iter().position(|c| c == "USER bob").expect("USER");
    assert!(stls < user, "{}", r.log());
    assert_same_messages(
        "fetchmail STLS, cleartext refused",
        &s.corpus,
        &dir_files(&s.out()),
    );
    assert_eq!(server_count(&s.srv, s.user), 0);
}

/// `sslcertck` really checks: with a certificate that is not the server's as
/// `sslcertfile`, fetchmail refuses the server (STLS and implicit TLS), sends no
/// credentials and fetches nothing.
#[test]
fn fetchmail_rejects_wrong_certificate() {
    let s = setup();
    let other = peers_fixtures::foreign_cert(s.tmp.path());
    for tls in [Tls::Stls, Tls::Implicit] {
        let rc = rc(&s, tls, "", "no keep");
        let text = std::fs::read_to_string(&rc).expect("rc").replace(
            &s.srv.cert_pem.display().to_string(),
            &other.display().to_string(),
        );
        write_private(std::path::Path::new(&rc), &text);
        let r = fetchmail_run(&s, &rc);
        assert!(
            r.log().contains("Server certificate verification error"),
            "{}",
            r.log()
        );
        assert_ne!(
            r.status.code(),
            Some(0),
            "accepted a foreign certificate\n{}",
            r.log()
        );
        assert!(
            !sent(&r)
                .iter()
                .any(|c| c.starts_with("AUTH") || c.starts_with("USER") || c.starts_with("APOP")),
            "{}",
            r.log()
        );
    }
    assert!(dir_files(&s.out()).is_empty());
    assert_eq!(server_count(&s.srv, s.user), s.corpus.len());
}
