//! Users in SQL (issue #11): a real PostgreSQL (`initdb` + the server binary) and a
//! real MariaDB (`mariadb-install-db` + `mariadbd`), each started by the test on
//! loopback with its own data directory and a port chosen at run time, stopped by PID.
//! A Postfixadmin-style `mailbox` table holds the hashes the way panels store them:
//! bare `$6$` and `$1$` crypt strings (made by `openssl passwd`), a `$2y$` bcrypt
//! string, and a `{ARGON2ID}`-prefixed one.
//!
//! For each database: LMTP delivers through the recipient lookup (a per-user mail
//! location and quota from the row), curl and mpop log in and fetch byte-exact, every
//! scheme logs in, an inactive row does not, a wrong password and an unknown user get
//! the same answer, names built to break out of the query never log anyone in, the
//! database stopped mid-run gives `-ERR [SYS/TEMP]` and LMTP `451 4.3.0` (a login the
//! cache already holds still works), and everything recovers when it is back. No
//! password reaches the log.

mod userdb_support;

use std::process::Command;

use correio_testkit::mariadb::MariaDb;
use correio_testkit::postgres::Postgres;
use userdb_support::*;

/// What the scenario needs of a database server.
trait Db {
    fn run_sql(&self, text: &str);
    fn server_url(&self) -> String;
    fn halt(&mut self);
    fn resume(&mut self);
}

struct Pg(Postgres);

impl Db for Pg {
    fn run_sql(&self, text: &str) {
        self.0.sql(
            "mail",
            &format!("{text}\nGRANT SELECT ON ALL TABLES IN SCHEMA public TO correio;"),
        );
    }
    fn server_url(&self) -> String {
        self.0.url("mail", "correio", "db-secret-1")
    }
    fn halt(&mut self) {
        self.0.stop();
    }
    fn resume(&mut self) {
        self.0.start();
    }
}

struct Maria(MariaDb);

impl Db for Maria {
    fn run_sql(&self, text: &str) {
        self.0.sql("mail", text);
    }
    fn server_url(&self) -> String {
        self.0.url("mail", "correio", "db-secret-1")
    }
    fn halt(&mut self) {
        self.0.stop();
    }
    fn resume(&mut self) {
        self.0.start();
    }
}

fn openssl_passwd(flag: &str, pw: &str) -> String {
    let out = Command::new("openssl")
        .args(["passwd", flag, pw])
        .output()
        .expect("openssl passwd");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn hashed(scheme: correio_auth::Scheme, pw: &str) -> String {
    let params = correio_auth::HashParams {
        argon2_memory_kib: 8192,
        argon2_iterations: 1,
        ..correio_auth::HashParams::default()
    };
    correio_auth::hash_password(&scheme, pw.as_bytes(), &params)
        .unwrap()
        .as_stored()
        .to_owned()
}

fn scenario(db: &mut dyn Db, name: &str) {
    let dir = open_dir();
    let root = dir.path();
    let custom = root.join("mail").join("custom-alice");
    let sha512 = openssl_passwd("-6", "pw-alice");
    assert!(sha512.starts_with("$6$"), "{sha512}");
    let md5 = openssl_passwd("-1", "pw-dave");
    // Postfixadmin writes bcrypt as $2y$ (PHP); the same algorithm as $2b$.
    let bcrypt = hashed(correio_auth::Scheme::BlfCrypt, "pw-carol")
        .trim_start_matches("{BLF-CRYPT}")
        .replacen("$2b$", "$2y$", 1);
    let argon = hashed(correio_auth::Scheme::Argon2id, "pw-bob");
    assert!(argon.starts_with("{ARGON2ID}$argon2id$"), "{argon}");
    db.run_sql(&format!(
        "CREATE TABLE mailbox (username VARCHAR(255) PRIMARY KEY, password VARCHAR(255) NOT NULL, \
         maildir VARCHAR(255), quota BIGINT NOT NULL DEFAULT 0, active BOOLEAN NOT NULL DEFAULT TRUE);\n\
         INSERT INTO mailbox (username, password, maildir, quota, active) VALUES \
         ('alice@example.org', '{sha512}', 'maildir:{custom}', 0, TRUE), \
         ('bob@example.org', '{argon}', NULL, 0, TRUE), \
         ('carol@example.org', '{bcrypt}', NULL, 0, TRUE), \
         ('dave@example.org', '{md5}', NULL, 100, TRUE), \
         ('eve@example.org', '{sha512}', NULL, 0, FALSE);",
        custom = custom.display()
    ));
    let s = Served::start(
        root,
        &format!(
            "[auth]\nbackend = \"sql\"\n[auth.sql]\nurl = \"{url}\"\n\
             password_query = \"SELECT username AS user, password FROM mailbox WHERE username = '%u' AND active = TRUE\"\n\
             user_query = \"SELECT maildir AS mail, quota AS quota_bytes FROM mailbox WHERE username = '%u'\"\n\
             query_timeout = \"3s\"\nconnect_timeout = \"3s\"\n",
            url = db.server_url()
        ),
    );

    // Delivery through the recipient lookup: alice's own location, dave's quota.
    let alice_mail = corpus(&format!("{name} alice"));
    for m in &alice_mail {
        let r = s.lmtp("alice@example.org", m);
        assert!(r.contains("250 2.0.0"), "LMTP to alice: {r}\n{}", s.log());
    }
    let bob_mail = corpus(&format!("{name} bob"));
    for m in &bob_mail {
        let r = s.lmtp("bob@example.org", m);
        assert!(r.contains("250 2.0.0"), "LMTP to bob: {r}");
    }
    assert_eq!(
        std::fs::read_dir(custom.join("new")).unwrap().count(),
        3,
        "alice's mail is in the location her row names"
    );
    let r = s.lmtp("dave@example.org", &alice_mail[2]);
    assert!(r.contains("4.2.2"), "dave's 100-octet quota: {r}");
    assert!(s.rcpt("nobody@example.org").starts_with("550 5.1.1"));

    // `correio deliver` (an MTA's LDA) asks the same database.
    let deliver = |user: &str, msg: &[u8]| {
        use std::io::Write as _;
        let mut c = Command::new(BIN)
            .args(["deliver", "--config"])
            .arg(&s.config)
            .args(["-f", "sender@example.net", "--user", user])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // It may refuse before reading (unknown user).
        let _ = c.stdin.take().unwrap().write_all(msg);
        let out = c.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let extra = format!("Subject: {name} via deliver\r\n\r\nhello\r\n").into_bytes();
    let (code, err) = deliver("alice@example.org", &extra);
    assert_eq!(code, Some(0), "deliver to alice: {err}");
    assert_eq!(
        deliver("nobody@example.org", &extra).0,
        Some(67),
        "unknown: EX_NOUSER"
    );
    let (code, err) = deliver("dave@example.org", &alice_mail[2]);
    assert_eq!(code, Some(75), "dave's quota from the row: {err}");
    let alice_mail: Vec<Vec<u8>> = alice_mail.iter().cloned().chain([extra.clone()]).collect();

    // Third-party clients, byte-exact.
    let want: Vec<Vec<u8>> = alice_mail.iter().map(|m| as_served(m)).collect();
    let got = curl_fetch(&s, "alice@example.org", "pw-alice").unwrap();
    assert_messages("curl, alice ($6$)", &want, &got);
    let want: Vec<Vec<u8>> = bob_mail.iter().map(|m| lf(&as_served(m))).collect();
    let got = mpop_fetch(&s, "bob@example.org", "pw-bob", name).unwrap();
    assert_messages("mpop, bob ({ARGON2ID})", &want, &got);

    // Every scheme; an inactive row; the same answer for unknown and wrong.
    assert!(
        s.login_reply("carol@example.org", "pw-carol")
            .starts_with("+OK")
    );
    assert!(
        s.login_reply("dave@example.org", "pw-dave")
            .starts_with("+OK")
    );
    assert!(
        s.login_reply("eve@example.org", "pw-alice")
            .starts_with("-ERR [AUTH]")
    );
    let wrong = s.login_reply("alice@example.org", "nope");
    let unknown = s.login_reply("zed@example.org", "nope");
    assert!(wrong.starts_with("-ERR [AUTH]"), "{wrong}");
    assert_eq!(
        wrong, unknown,
        "wrong password and unknown user answer alike"
    );
    assert_eq!(
        s.plain_reply(b"alice@example.org", b"nope"),
        s.plain_reply(b"zed@example.org", b"nope")
    );
    assert_hostile_names_refused(&s, "pw-alice");

    // `correio check` asks the database.
    let check = |what: &str| {
        let out = Command::new(BIN)
            .args(["check", "--config"])
            .arg(&s.config)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text, what.to_owned())
    };
    let (ok, text, _) = check("up");
    assert!(
        ok && text.contains("user database (sql) answered"),
        "{text}"
    );
    assert!(!text.contains("db-secret-1"), "{text}");

    // The database goes away: temporary failures, never "wrong password".
    db.halt();
    let (ok, text, _) = check("down");
    assert!(!ok && text.contains("does not answer"), "{text}");
    assert!(
        !text.contains("db-secret-1"),
        "check printed the password: {text}"
    );
    let r = s.login_reply("alice@example.org", "not-tried-before");
    assert!(
        r.starts_with("-ERR [SYS/TEMP]"),
        "database down: {r}\n{}",
        s.log()
    );
    let r = s.login_reply("never-seen@example.org", "x");
    assert!(r.starts_with("-ERR [SYS/TEMP]"), "database down: {r}");
    let r = s.plain_reply(b"carol@example.org", b"not-tried-either");
    assert!(r.starts_with("-ERR [SYS/TEMP]"), "database down: {r}");
    assert!(
        s.rcpt("frank@example.org").starts_with("451 4.3.0"),
        "LMTP while the database is down"
    );
    let (code, err) = deliver("frank@example.org", &extra);
    assert_eq!(code, Some(75), "deliver while the database is down: {err}");
    // What the cache holds keeps working.
    assert!(
        s.login_reply("alice@example.org", "pw-alice")
            .starts_with("+OK")
    );

    // Back: the same questions get real answers.
    db.resume();
    let r = s.login_reply("alice@example.org", "not-tried-before");
    assert!(
        r.starts_with("-ERR [AUTH]"),
        "after recovery: {r}\n{}",
        s.log()
    );
    assert!(
        s.login_reply("carol@example.org", "pw-carol")
            .starts_with("+OK")
    );
    assert!(s.rcpt("frank@example.org").starts_with("550 5.1.1"));

    // The password changes in the database: the new one works at once (the cache is
    // keyed by the password given); the old one is answered from the cache until its
    // TTL or a reload, which empties it.
    let new_hash = openssl_passwd("-6", "pw-carol-2");
    db.run_sql(&format!(
        "UPDATE mailbox SET password = '{new_hash}' WHERE username = 'carol@example.org';"
    ));
    assert!(
        s.login_reply("carol@example.org", "pw-carol-2")
            .starts_with("+OK")
    );
    assert!(
        s.login_reply("carol@example.org", "pw-carol")
            .starts_with("+OK")
    );
    let mut s = s;
    s.daemon.signal("HUP");
    s.daemon.wait_log(
        &["SIGHUP: configuration reloaded"],
        std::time::Duration::from_secs(20),
    );
    assert!(
        s.login_reply("carol@example.org", "pw-carol")
            .starts_with("-ERR [AUTH]"),
        "a reload empties the cache"
    );
    assert!(
        s.login_reply("carol@example.org", "pw-carol-2")
            .starts_with("+OK")
    );

    let log = s.log();
    for secret in [
        "pw-alice",
        "pw-bob",
        "pw-carol",
        "pw-dave",
        "db-secret-1",
        "not-tried-before",
    ] {
        assert!(!log.contains(secret), "{secret} in the server log:\n{log}");
    }
}

#[test]
fn postgresql_users() {
    let pg = Postgres::launch();
    pg.create_user("correio", "db-secret-1");
    pg.create_database("mail", Some("correio"));
    let mut db = Pg(pg);
    scenario(&mut db, "pg");
}

#[test]
fn mariadb_users() {
    let maria = MariaDb::launch();
    maria.create_user("correio", "db-secret-1");
    maria.create_database("mail", Some("correio"));
    let mut db = Maria(maria);
    scenario(&mut db, "mariadb");
}
