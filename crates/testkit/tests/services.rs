//! The database harnesses themselves: each service starts on a loopback port chosen at
//! run time, keeps what was written in it across a stop and a start on the same data
//! directory and port, refuses connections while stopped, and answers the real client
//! as a user with a password. A missing server fails the test, naming the package
//! (as `peers::require` does), rather than skipping it.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use correio_testkit::mariadb::MariaDb;
use correio_testkit::postgres::Postgres;

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
