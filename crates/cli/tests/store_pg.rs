//! The shared PostgreSQL store as deployed: one real PostgreSQL (started by the test on
//! loopback, its own data directory, a port chosen at run time, stopped by PID) and
//! three `correio serve` frontends over it with one users file. Mail goes in by LMTP
//! to frontend A and by `correio deliver`; curl, mpop and `correio fetch` read it
//! byte-exact through B; a session on C while B holds the user gets `[IN-USE]`;
//! frontends killed at named failpoints of delivery and UPDATE (more than 50 rounds)
//! leave every message whole or absent and no lease past its time; PostgreSQL
//! restarted mid-run gives `[SYS/TEMP]` and LMTP 451, then everything works again.

mod userdb_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use correio_testkit::Pop3;
use correio_testkit::postgres::Postgres;
use correio_testkit::s3::S3Server;
use userdb_support::{
    BIN, Served, as_served, assert_messages, corpus, curl_fetch, lf, mpop_fetch, open_dir, raw,
};

/// The lease: short, so the tests that wait for one to run out stay short.
const LEASE: &str = "3s";

struct Cluster {
    pg: Postgres,
    /// Bodies in a real S3 server (s3s-fs) instead of PostgreSQL.
    s3: Option<S3Server>,
    dir: tempfile::TempDir,
    store_toml: String,
    users: PathBuf,
}

impl Cluster {
    fn new(bodies_in_s3: bool) -> Cluster {
        let pg = Postgres::launch();
        pg.create_user("correio", "s3cret");
        pg.create_database("mail", Some("correio"));
        let dir = open_dir();
        let users = dir.path().join("users");
        let mut store_toml = format!(
            "[store.pgsql]\nkind = \"postgresql\"\nurl = \"{}\"\nlease = \"{LEASE}\"\nquery_timeout = \"5s\"\nconnect_timeout = \"2s\"\n",
            pg.url("mail", "correio", "s3cret")
        );
        let s3 = bodies_in_s3.then(S3Server::launch);
        if let Some(s3) = &s3 {
            store_toml.push_str(&format!(
                "bodies = \"s3://{}/mail\"\ns3_endpoint = \"{}\"\ns3_allow_http = true\n\
                 s3_access_key_id = \"{}\"\ns3_secret_access_key = \"{}\"\n",
                s3.bucket(),
                s3.endpoint(),
                s3.access_key(),
                s3.secret_key()
            ));
        }
        let c = Cluster {
            pg,
            s3,
            dir,
            store_toml,
            users,
        };
        for (u, p) in [("alice", "pw-alice"), ("bob", "pw-bob")] {
            let cfg = c.config_file("admin");
            let mut cmd = Command::new(BIN);
            cmd.args(["user", "add", u, "--config"])
                .arg(&cfg)
                .arg("--password-stdin");
            let out = run_with_input(cmd, format!("{p}\n").as_bytes());
            assert!(
                out.status.success(),
                "user add: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        c
    }

    fn root(&self, name: &str) -> PathBuf {
        let r = self.dir.path().join(name);
        std::fs::create_dir_all(&r).unwrap();
        r
    }

    fn top(&self) -> String {
        format!("users_file = \"{}\"", self.users.display())
    }

    /// A configuration file for command-line tools (deliver, store, user).
    fn config_file(&self, name: &str) -> PathBuf {
        let root = self.root(name);
        let cfg = root.join("tool.toml");
        std::fs::write(
            &cfg,
            format!(
                "data_dir = \"{}\"\nmail_location = \"pgsql:%u\"\n{}\n{}",
                root.join("data").display(),
                self.top(),
                self.store_toml
            ),
        )
        .unwrap();
        cfg
    }

    fn frontend(&self, name: &str) -> Served {
        self.frontend_with(name, &[])
    }

    fn frontend_with(&self, name: &str, env: &[(&str, &str)]) -> Served {
        Served::start_located(
            &self.root(name),
            "pgsql:%u",
            &self.top(),
            &self.store_toml,
            env,
        )
    }
}

fn run_with_input(mut cmd: Command, input: &[u8]) -> std::process::Output {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn addr(s: &Served) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], s.pop3))
}

/// The reply to PASS on a fresh connection (the session is then ended with QUIT).
fn pass_reply(s: &Served, user: &str, pass: &str) -> String {
    let out = raw(s.pop3, &format!("USER {user}\r\nPASS {pass}\r\nQUIT\r\n"));
    out.lines().nth(2).unwrap_or("").to_owned()
}

/// Logs in until the mailbox is free (a lease running out): the session.
fn login_when_free(s: &Served, user: &str, pass: &str, limit: Duration) -> Pop3 {
    let deadline = Instant::now() + limit;
    loop {
        match Pop3::login(addr(s), user, pass) {
            Ok(p) => return p,
            Err(e) if Instant::now() < deadline => {
                let e = e.to_string();
                assert!(
                    e.contains("[IN-USE]") || e.contains("[SYS/TEMP]"),
                    "unexpected refusal: {e}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("{user} still refused after {limit:?}: {e}\n{}", s.log()),
        }
    }
}

/// Every message of `user` through `s`: (UIDL, message as sent on the wire, unstuffed).
fn all_messages(s: &Served, user: &str, pass: &str) -> Vec<(String, Vec<u8>)> {
    let mut p = login_when_free(s, user, pass, Duration::from_secs(30));
    let uidls = p.uidl().unwrap();
    let list = p.list().unwrap();
    let mut out = Vec::new();
    for ((n, u), (_, size)) in uidls.into_iter().zip(list) {
        let m = p.retr(n).unwrap();
        assert_eq!(
            m.len() as u64,
            size,
            "LIST size of {u} is the octets RETR sends"
        );
        out.push((u, m));
    }
    p.quit().unwrap();
    out
}

fn deliver_cmd(cfg: &Path, user: &str) -> Command {
    let mut c = Command::new(BIN);
    c.args(["deliver", "--config"])
        .arg(cfg)
        .args(["--user", user]);
    c
}

#[test]
fn three_frontends_over_one_postgresql_bodies_in_postgresql() {
    three_frontends(false);
}

#[test]
fn three_frontends_over_one_postgresql_bodies_in_s3() {
    three_frontends(true);
}

fn three_frontends(bodies_in_s3: bool) {
    let mut cl = Cluster::new(bodies_in_s3);
    let a = cl.frontend("a");
    let b = cl.frontend("b");
    let c = cl.frontend("c");

    // LMTP into A.
    let sent = corpus("pg");
    for m in &sent {
        let reply = a.lmtp("alice", m);
        assert!(reply.contains("250 2.0.0"), "{reply}\n{}", a.log());
    }
    let want: Vec<Vec<u8>> = sent.iter().map(|m| as_served(m)).collect();

    // curl and mpop through B, byte-exact; `correio fetch` through C.
    let got = curl_fetch(&b, "alice", "pw-alice").unwrap();
    assert_messages("curl via B", &want, &got);
    let got = mpop_fetch(&b, "alice", "pw-alice", "b").unwrap();
    let want_lf: Vec<Vec<u8>> = want.iter().map(|m| lf(m)).collect();
    assert_messages("mpop via B", &want_lf, &got);
    let fetched = cl.root("fetched");
    let md = fetched.join("Maildir");
    let out = Command::new(BIN)
        .args([
            "fetch",
            "--host",
            "localhost",
            "--port",
            &c.pop3.to_string(),
        ])
        .args([
            "--user",
            "alice",
            "--password-command",
            "printf %s pw-alice",
        ])
        .args(["--tls", "starttls", "--ca"])
        .arg(c.cert())
        .arg("--state-dir")
        .arg(&fetched)
        .arg("--to")
        .arg(format!("maildir:{}", md.display()))
        .env("HOME", &fetched)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files = correio_testkit::peers::maildir_messages(&md);
    files.sort_by(|x, y| x.0.cmp(&y.0));
    let mut got: Vec<Vec<u8>> = files.into_iter().map(|(_, m)| m).collect();
    let mut want_sorted = want_lf.clone();
    got.sort();
    want_sorted.sort();
    assert_eq!(got, want_sorted, "correio fetch via C");

    // The same UIDLs through every frontend.
    let uidls = |s: &Served| -> Vec<String> {
        all_messages(s, "alice", "pw-alice")
            .into_iter()
            .map(|x| x.0)
            .collect()
    };
    let ua = uidls(&a);
    assert_eq!(ua, uidls(&b));
    assert_eq!(ua, uidls(&c));

    // B holds alice: C says [IN-USE]; bob is free on C meanwhile.
    let held = Pop3::login(addr(&b), "alice", "pw-alice").unwrap();
    let r = pass_reply(&c, "alice", "pw-alice");
    assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
    assert!(pass_reply(&c, "bob", "pw-bob").starts_with("+OK"));
    held.quit().unwrap();
    assert!(pass_reply(&c, "alice", "pw-alice").starts_with("+OK"));

    // DELE through C is seen by A; the UIDLs of the rest do not change.
    let mut p = Pop3::login(addr(&c), "alice", "pw-alice").unwrap();
    p.cmd("DELE 1").unwrap();
    p.quit().unwrap();
    let left = all_messages(&a, "alice", "pw-alice");
    assert_eq!(
        left.iter().map(|x| x.0.clone()).collect::<Vec<_>>(),
        ua[1..].to_vec()
    );

    // PostgreSQL goes away: logins [SYS/TEMP], LMTP 451, deliver 75; nothing lost.
    cl.pg.stop();
    let r = pass_reply(&b, "alice", "pw-alice");
    assert!(r.starts_with("-ERR [SYS/TEMP]"), "{r}");
    let reply = a.lmtp("alice", b"Subject: while down\r\n\r\nlater\r\n");
    assert!(reply.contains("451 4."), "{reply}");
    let out = run_with_input(
        deliver_cmd(&cl.config_file("tool"), "alice"),
        b"Subject: x\n\nx\n",
    );
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cl.pg.start();
    let reply = a.lmtp("alice", b"Subject: after\r\n\r\nback\r\n");
    assert!(reply.contains("250 2.0.0"), "{reply}");
    let after = all_messages(&b, "alice", "pw-alice");
    assert_eq!(after.len(), left.len() + 1);
    assert_eq!(
        after.last().unwrap().1,
        as_served(b"Subject: after\r\n\r\nback\r\n")
    );

    // `correio store stat` and `check` see the same store.
    let out = Command::new(BIN)
        .args(["store", "stat", "--config"])
        .arg(cl.config_file("tool"))
        .arg("alice")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{} messages", after.len())),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(cl.config_file("tool"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("store pgsql answered"), "{text}");

    // The object store goes away: RETR fails temporarily, LMTP says 451; nothing is
    // lost, and all is back when it is.
    if let Some(s3) = cl.s3.as_mut() {
        s3.stop();
        let mut p = Pop3::login(addr(&c), "alice", "pw-alice").unwrap();
        let e = p.retr(1).unwrap_err().to_string();
        assert!(e.contains("-ERR"), "{e}");
        p.quit().unwrap();
        let reply = a.lmtp("alice", b"Subject: s3 down\r\n\r\nlater\r\n");
        assert!(reply.contains("451 4."), "{reply}");
        s3.start();
        let reply = a.lmtp("alice", b"Subject: s3 back\r\n\r\nback\r\n");
        assert!(reply.contains("250 2.0.0"), "{reply}");
        let all = all_messages(&b, "alice", "pw-alice");
        assert_eq!(all.len(), after.len() + 1);
        assert_eq!(all[..after.len()], after[..]);
    }
}

/// One delivery by `correio deliver` that dies at `point`; whether the message must be
/// there afterwards.
fn deliver_killed(cfg: &Path, point: &str, body: &[u8]) -> bool {
    let mut cmd = deliver_cmd(cfg, "alice");
    cmd.env("CORREIO_FAILPOINT", point);
    let out = run_with_input(cmd, body);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("failpoint"),
        "deliver should have died at {point}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    point == "pg-deliver-after-commit"
}

#[test]
fn frontends_killed_at_every_point_lose_nothing_and_hold_no_lease_bodies_in_postgresql() {
    killed_at_every_point(false);
}

#[test]
fn frontends_killed_at_every_point_lose_nothing_and_hold_no_lease_bodies_in_s3() {
    killed_at_every_point(true);
}

fn killed_at_every_point(bodies_in_s3: bool) {
    let cl = Cluster::new(bodies_in_s3);
    let cfg = cl.config_file("tool");
    let checker = cl.frontend("checker");
    let mut expected: Vec<Vec<u8>> = Vec::new();
    let mut rounds = 0;

    // Delivery, killed after the body, before and after the commit (correio deliver).
    let points = [
        "pg-deliver-after-body",
        "pg-deliver-before-commit",
        "pg-deliver-after-commit",
    ];
    for i in 0..12 {
        for p in points {
            let body = format!("Subject: round {i} {p}\n\n{}\n", "x".repeat(i * 1000)).into_bytes();
            if deliver_killed(&cfg, p, &body) {
                expected.push(body);
            }
            rounds += 1;
        }
    }
    // LMTP: the frontend itself dies before the commit; the MTA gets no 250 (it keeps
    // the message and retries) and nothing is stored.
    for i in 0..4 {
        let mut f = cl.frontend_with(
            "lmtp-killed",
            &[("CORREIO_FAILPOINT", "pg-deliver-before-commit")],
        );
        let reply = f.lmtp(
            "alice",
            format!("Subject: lmtp {i}\r\n\r\nbody\r\n").as_bytes(),
        );
        assert!(!reply.contains("250 2.0.0"), "{reply}");
        f.daemon.wait_exit(Duration::from_secs(30));
        rounds += 1;
    }
    let got = all_messages(&checker, "alice", "pw-alice");
    let got_bodies: Vec<Vec<u8>> = got.iter().map(|(_, m)| lf(m)).collect();
    assert_eq!(
        got_bodies.len(),
        expected.len(),
        "only committed deliveries are there"
    );
    for (g, w) in got_bodies.iter().zip(&expected) {
        assert!(
            g == w,
            "a message is whole: {}",
            correio_testkit::peers::show_diff(w, g)
        );
    }

    // UPDATE, killed before and after its commit, and a session killed right after
    // taking its lease. The lease of a killed frontend runs out; then the mailbox is
    // whole (before the commit) or has lost exactly the deleted message (after).
    let update_points = [
        "pg-update-before-commit",
        "pg-update-after-commit",
        "pg-open-after-lease",
    ];
    let mut present = got.len();
    for i in 0..6 {
        for p in update_points {
            let mut f = cl.frontend_with(&format!("upd-{i}-{p}"), &[("CORREIO_FAILPOINT", p)]);
            let session = Pop3::login(addr(&f), "alice", "pw-alice");
            if p == "pg-open-after-lease" {
                assert!(session.is_err(), "the frontend died while opening");
            } else {
                let mut s = session.unwrap();
                s.cmd("DELE 1").unwrap();
                let _ = s.cmd("QUIT");
            }
            f.daemon.wait_exit(Duration::from_secs(30));
            if p == "pg-update-after-commit" {
                present -= 1;
            }
            // The dead frontend's lease runs out: the checker gets in within the
            // lease (3 s) plus the renewal slack, never later.
            let now = all_messages(&checker, "alice", "pw-alice");
            assert_eq!(now.len(), present, "round {i} at {p}");
            rounds += 1;
        }
    }
    assert!(rounds >= 50, "{rounds} rounds");
    // No lease is left behind by anyone.
    assert_eq!(
        cl.pg.sql(
            "mail",
            "SELECT count(*) FROM correio_lease WHERE expires > now()"
        ),
        "0\n"
    );
}

/// mpop, keep on, with one uidls file and one Maildir across servers: how many
/// messages the Maildir holds afterwards.
fn mpop_keep(s: &Served, dir: &Path) -> usize {
    correio_testkit::peers::require("mpop", "mpop");
    let md = dir.join("Maildir");
    correio_testkit::peers::make_maildir(&md);
    let rc = dir.join("mpoprc");
    correio_testkit::peers::write_private(
        &rc,
        &format!(
            "defaults\ntimeout 30\naccount test\nhost localhost\nport {port}\n\
             user alice\npassword pw-alice\ntls on\ntls_starttls on\n\
             tls_trust_file {cert}\ndelivery maildir {md}\nkeep on\n\
             uidls_file {uidls}\nreceived_header off\n",
            port = s.pop3,
            cert = s.cert().display(),
            md = md.display(),
            uidls = dir.join("uidls").display(),
        ),
    );
    let mut c = Command::new("mpop");
    c.env("HOME", dir)
        .env("LC_ALL", "C")
        .arg("-C")
        .arg(&rc)
        .arg("test");
    let r = correio_testkit::peers::run_bounded(c, Duration::from_secs(60), dir);
    assert!(r.ok(), "mpop: {}", r.log());
    correio_testkit::peers::maildir_messages(&md).len()
}

#[test]
fn a_maildir_user_migrated_into_the_store_downloads_nothing_again() {
    let cl = Cluster::new(false);
    let mail = cl.root("files");
    let from = format!("maildir:{}/%u", mail.display());
    let client = cl.root("client");
    let uidls_before;
    {
        let m = Served::start_located(&cl.root("m"), &from, &cl.top(), &cl.store_toml, &[]);
        for msg in corpus("mig") {
            let reply = m.lmtp("alice", &msg);
            assert!(reply.contains("250 2.0.0"), "{reply}");
        }
        assert_eq!(mpop_keep(&m, &client), 3);
        uidls_before = all_messages(&m, "alice", "pw-alice");
    }
    let migrate = || {
        let out = Command::new(BIN)
            .args(["store", "migrate", "--config"])
            .arg(cl.config_file("tool"))
            .args(["--from", &from, "alice"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = migrate();
    assert!(first.contains("3 copied, 0 already there"), "{first}");
    let again = migrate();
    assert!(again.contains("0 copied, 3 already there"), "{again}");

    let p = cl.frontend("p");
    let after = all_messages(&p, "alice", "pw-alice");
    assert_eq!(after, uidls_before, "same UIDLs, same bytes");
    assert_eq!(mpop_keep(&p, &client), 3, "mpop downloads nothing again");
    let reply = p.lmtp("alice", b"Subject: new\r\n\r\nafter the move\r\n");
    assert!(reply.contains("250 2.0.0"), "{reply}");
    assert_eq!(mpop_keep(&p, &client), 4, "only the new message");
}
