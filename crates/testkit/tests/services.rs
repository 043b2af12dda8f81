//! The database harnesses themselves: each service starts on a loopback port chosen at
//! run time, keeps what was written in it across a stop and a start on the same data
//! directory and port, refuses connections while stopped, and answers the real client
//! as a user with a password. A missing server fails the test, naming the package
//! (as `peers::require` does), rather than skipping it.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use correio_testkit::mariadb::MariaDb;
use correio_testkit::postgres::Postgres;
use correio_testkit::slapd::{self, Slapd};

/// Does something accept TCP connections on 127.0.0.1:`port`?
fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

#[test]
fn postgres_user_survives_stop_and_start() {
    let t = Instant::now();
    let mut pg = Postgres::launch();
    eprintln!("PostgreSQL launched in {:?}", t.elapsed());
    pg.create_user("correio", "s3cr'et");
    pg.create_database("mail", Some("correio"));
    pg.sql(
        "mail",
        "CREATE TABLE users (name text PRIMARY KEY, password text NOT NULL);
         INSERT INTO users VALUES ('alice', 'pw1');
         GRANT SELECT ON users TO correio;",
    );
    let query = "SELECT name, password FROM users ORDER BY name;";
    let as_user = |pg: &Postgres| {
        let run = pg.sql_as("mail", "correio", "s3cr'et", query);
        assert!(run.ok(), "{}", run.log());
        run.stdout
    };
    assert_eq!(as_user(&pg), "alice|pw1\n");
    let wrong = pg.sql_as("mail", "correio", "wrong", query);
    assert!(
        !wrong.ok() && wrong.stderr.contains("password authentication failed"),
        "{}",
        wrong.log()
    );
    let failed = pg.try_sql("mail", "SELECT * FROM nothing_here; SELECT 1;");
    assert!(!failed.ok() && failed.stdout.is_empty(), "{}", failed.log());

    let port = pg.port();
    pg.stop();
    assert!(!pg.is_running());
    assert!(!listening(port), "PostgreSQL still listens after stop");
    assert!(!pg.sql_as("mail", "correio", "s3cr'et", query).ok());

    let t = Instant::now();
    pg.start();
    eprintln!("PostgreSQL restarted in {:?}", t.elapsed());
    assert_eq!(pg.port(), port);
    assert_eq!(as_user(&pg), "alice|pw1\n");
    pg.sql("mail", "INSERT INTO users VALUES ('bob', 'pw2');");
    assert_eq!(as_user(&pg), "alice|pw1\nbob|pw2\n");

    let pid = pg.pid().expect("running");
    drop(pg);
    assert!(!correio_testkit::sys::alive(pid), "stopped on drop");
    assert!(!listening(port), "PostgreSQL still listens after drop");
}

#[test]
fn mariadb_user_survives_stop_and_start() {
    let t = Instant::now();
    let mut db = MariaDb::launch();
    eprintln!("MariaDB launched in {:?}", t.elapsed());
    db.create_user("correio", "s3cr'et\\x");
    db.create_database("mail", Some("correio"));
    db.sql(
        "mail",
        "CREATE TABLE users (name VARCHAR(64) PRIMARY KEY, password TEXT NOT NULL);
         INSERT INTO users VALUES ('alice', 'pw1');",
    );
    let query = "SELECT name, password FROM users ORDER BY name;";
    let as_user = |db: &MariaDb| {
        let run = db.sql_as("mail", "correio", "s3cr'et\\x", query);
        assert!(run.ok(), "{}", run.log());
        run.stdout
    };
    assert_eq!(as_user(&db), "alice\tpw1\n");
    let wrong = db.sql_as("mail", "correio", "wrong", query);
    assert!(
        !wrong.ok() && wrong.stderr.contains("Access denied"),
        "{}",
        wrong.log()
    );
    let failed = db.try_sql("mail", "SELECT * FROM nothing_here; SELECT 1;");
    assert!(!failed.ok() && failed.stdout.is_empty(), "{}", failed.log());

    let port = db.port();
    db.stop();
    assert!(!db.is_running());
    assert!(!listening(port), "MariaDB still listens after stop");
    assert!(!db.sql_as("mail", "correio", "s3cr'et\\x", query).ok());

    let t = Instant::now();
    db.start();
    eprintln!("MariaDB restarted in {:?}", t.elapsed());
    assert_eq!(db.port(), port);
    assert_eq!(as_user(&db), "alice\tpw1\n");
    db.sql("mail", "INSERT INTO users VALUES ('bob', 'pw2');");
    assert_eq!(as_user(&db), "alice\tpw1\nbob\tpw2\n");

    let pid = db.pid().expect("running");
    drop(db);
    assert!(!correio_testkit::sys::alive(pid), "stopped on drop");
    assert!(!listening(port), "MariaDB still listens after drop");
}

#[test]
fn slapd_user_survives_stop_and_start() {
    let t = Instant::now();
    let mut ldap = Slapd::launch();
    eprintln!("slapd launched in {:?}", t.elapsed());
    let people = slapd::PEOPLE;
    for (uid, pw) in [("alice", "pw1"), ("bob", "pw2")] {
        ldap.add_ldif(&format!(
            "dn: uid={uid},{people}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\nuserPassword: {pw}\n"
        ));
    }
    let alice = format!("uid=alice,{people}");
    let service = ["-D", slapd::SERVICE_DN, "-w", slapd::SERVICE_PASSWORD];
    // Search then compare: the service account finds alice and reads her password,
    // over plain LDAP, StartTLS and LDAPS.
    let ldaps = ldap.ldaps_url();
    for tls in [&[][..], &["-ZZ"][..], &["-H", ldaps.as_str()][..]] {
        let mut args = service.to_vec();
        args.extend_from_slice(tls);
        args.extend_from_slice(&["-b", people, "(uid=alice)", "userPassword"]);
        let run = ldap.ldapsearch(&args);
        assert!(run.ok(), "{tls:?}: {}", run.log());
        assert_eq!(
            run.stdout.trim_end(),
            format!("dn: {alice}\nuserPassword:: {}", "cHcx"), // base64 of pw1
            "{tls:?}"
        );
    }
    // Search then bind: alice binds with her password (an anonymous connection may)
    // and reads her own entry, not bob's.
    let as_alice = |ldap: &Slapd, base: &str, pw: &str| {
        ldap.ldapsearch(&[
            "-D",
            &alice,
            "-w",
            pw,
            "-b",
            base,
            "-s",
            "base",
            "(objectClass=*)",
            "uid",
        ])
    };
    let own = as_alice(&ldap, &alice, "pw1");
    assert!(
        own.ok() && own.stdout.contains("uid: alice"),
        "{}",
        own.log()
    );
    let other = as_alice(&ldap, &format!("uid=bob,{people}"), "pw1");
    assert!(
        !other.ok() && other.stderr.contains("No such object"),
        "{}",
        other.log()
    );
    let wrong = as_alice(&ldap, &alice, "wrong");
    assert!(
        !wrong.ok() && wrong.stderr.contains("Invalid credentials"),
        "{}",
        wrong.log()
    );
    // Anonymous: no search.
    let anon = ldap.ldapsearch(&["-b", people, "(uid=alice)", "uid"]);
    assert!(
        !anon.ok() && anon.stderr.contains("No such object"),
        "{}",
        anon.log()
    );
    // A TLS client that does not trust the test CA (here: trusts nothing) cannot
    // connect, the same search that succeeded above with the CA.
    let mut untrusted = std::process::Command::new("ldapsearch");
    untrusted
        .env("LDAPTLS_CACERT", "/dev/null")
        .args(["-x", "-H", &ldaps, "-b", "", "-s", "base"]);
    let run = correio_testkit::peers::run_bounded(untrusted, Duration::from_secs(30), ldap.root());
    assert!(!run.ok(), "{}", run.log());

    let ports = [ldap.ldap_port(), ldap.ldaps_port()];
    ldap.stop();
    assert!(!ldap.is_running());
    for p in ports {
        assert!(!listening(p), "slapd still listens on {p} after stop");
    }
    assert!(!as_alice(&ldap, &alice, "pw1").ok());

    let t = Instant::now();
    ldap.start();
    eprintln!("slapd restarted in {:?}", t.elapsed());
    assert_eq!([ldap.ldap_port(), ldap.ldaps_port()], ports);
    let own = as_alice(&ldap, &alice, "pw1");
    assert!(
        own.ok() && own.stdout.contains("uid: alice"),
        "{}",
        own.log()
    );
    assert!(ldap.search("(uid=bob)", &["cn"]).contains("cn: bob"));

    let pid = ldap.pid().expect("running");
    drop(ldap);
    assert!(!correio_testkit::sys::alive(pid), "stopped on drop");
    for p in ports {
        assert!(!listening(p), "slapd still listens on {p} after drop");
    }
}
