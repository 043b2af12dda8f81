//! A private MariaDB server on loopback (Debian packages `mariadb-server` and
//! `mariadb-client`), for tests of users kept in an SQL database.
//!
//! [`MariaDb::launch`] makes fresh system tables with `mariadb-install-db` in a
//! temporary directory and starts `mariadbd --no-defaults` in the foreground on
//! `127.0.0.1` and a port chosen at run time (another one if that port was taken in
//! the meantime), with its Unix socket in that directory and `--skip-name-resolve`
//! (accounts match on `127.0.0.1` or `%`, never on a name from DNS). It waits until
//! the server says it is ready for connections and accepts TCP connections — no fixed
//! sleep. Durability is relaxed (`innodb_flush_log_at_trx_commit=0`, no doublewrite):
//! data survive [`MariaDb::stop`] (a normal shutdown), not a crash of the machine.
//! Nothing from `/etc/mysql` is read, no binary log is written and no test database is
//! made; the server's character set is `utf8mb4`.
//!
//! The administrator is [`ROOT`] with no password
//! (`--auth-root-authentication-method=normal`), for [`MariaDb::sql`] over the Unix
//! socket (and allowed from 127.0.0.1). Users made by [`MariaDb::create_user`] are
//! `'NAME'@'%'` with a password.
//!
//! MariaDB refuses to run as root: when the test runs as root, `mariadb-install-db` and
//! the server run as `nobody` (the data belong to it) and the temporary directory is
//! made traversable (0755). As another user they run as that user.
//!
//! [`MariaDb::stop`] stops the server (SIGTERM, a normal shutdown that disconnects the
//! clients) by its PID and waits until it has exited; [`MariaDb::start`] starts it again
//! on the same data directory and port, so a test can take the database away in the
//! middle of a run and bring it back. Dropping the value stops the server the same way
//! (and removes the directory).
//!
//! Like [`crate::peers::require`], a missing program panics with the package to
//! install instead of skipping the test. These types are for tests: they panic (with
//! the server's log or the client's output) instead of returning errors.
//!
//! # Example
//!
//! ```no_run
//! use correio_testkit::mariadb::MariaDb;
//!
//! let mut db = MariaDb::launch();
//! db.create_user("correio", "s3cret");
//! db.create_database("mail", Some("correio"));
//! db.sql(
//!     "mail",
//!     "CREATE TABLE users (name VARCHAR(64) PRIMARY KEY, password TEXT NOT NULL);
//!      INSERT INTO users VALUES ('alice', 'pw');",
//! );
//! assert_eq!(db.sql("mail", "SELECT password FROM users WHERE name = 'alice'"), "pw\n");
//! // mysql://correio:s3cret@127.0.0.1:PORT/mail, for the server under test:
//! let url = db.url("mail", "correio", "s3cret");
//! # let _ = url;
//! db.stop(); // the database is gone: logins must fail temporarily
//! db.start(); // same data, same port: logins work again
//! ```

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::daemon::Daemon;
use crate::peers::{Run, require, run_bounded_input};
use crate::service::{Supervised, check_traversable, service_owner};

/// The administrator (no password; over the Unix socket or from 127.0.0.1).
pub const ROOT: &str = "root";

/// How long `mariadb-install-db`, or the server to become ready, may take.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long a shutdown may take before the server is killed.
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// How long one client run may take.
const CLIENT_LIMIT: Duration = Duration::from_secs(60);
/// How many ports to try when the chosen one was taken before the server bound it.
const PORT_TRIES: usize = 5;
/// What the server logs once it accepts connections.
const READY: &str = "ready for connections";

/// InnoDB settings for `mariadb-install-db` and the server alike: small and fast.
const INNODB: &[&str] = &[
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=16M",
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--innodb-use-native-aio=0",
    "--innodb-temp-data-file-path=ibtmp1:1M:autoextend",
];

/// A private MariaDB server. Stopped (by PID) on drop.
#[derive(Debug)]
pub struct MariaDb {
    dir: tempfile::TempDir,
    mariadbd: PathBuf,
    client: PathBuf,
    port: u16,
    /// The uid and gid the server runs as when the test runs as root.
    owner: Option<(u32, u32)>,
    proc: Supervised,
}

impl MariaDb {
    /// Makes the system tables in a new temporary directory and starts the server;
    /// returns once it accepts connections.
    ///
    /// # Panics
    /// When MariaDB is not installed, `mariadb-install-db` fails or the server does not
    /// start (with its log).
    pub fn launch() -> MariaDb {
        let mariadbd = require("mariadbd", "mariadb-server");
        let install_db = require("mariadb-install-db", "mariadb-server");
        let client = require("mariadb", "mariadb-client");
        let owner = service_owner();
        let dir = tempfile::Builder::new()
            .prefix("correio-mariadb-")
            .tempdir()
            .expect("temporary directory");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod 0755");
        if owner.is_some() {
            check_traversable(dir.path());
        }
        let mut db = MariaDb {
            dir,
            mariadbd,
            client,
            port: 0,
            owner,
            proc: Supervised::default(),
        };
        for (d, mode) in [
            (db.data_dir(), 0o700),
            (db.run_dir(), 0o755),
            (db.run_dir().join("tmp"), 0o700),
        ] {
            fs::create_dir(&d).expect("mkdir");
            fs::set_permissions(&d, fs::Permissions::from_mode(mode)).expect("chmod");
            if let Some((uid, gid)) = db.owner {
                crate::chown_tree(&d, uid, gid).expect("chown to the server's account");
            }
        }

        let mut install = db.as_owner(Command::new(install_db));
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", db.data_dir().display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg("--skip-name-resolve")
            .args(INNODB);
        let run = run_bounded_input(install, None, START_LIMIT, db.dir.path());
        assert!(run.ok(), "mariadb-install-db failed:\n{}", run.log());

        for _ in 0..PORT_TRIES {
            db.port = crate::free_port().expect("free port");
            if db.try_start() {
                return db;
            }
        }
        panic!(
            "MariaDB found each of {PORT_TRIES} ports taken:\n{}",
            db.log()
        );
    }

    /// Starts the server again (after [`MariaDb::stop`]) on the same data directory and
    /// port; returns once it accepts connections.
    ///
    /// # Panics
    /// When it is running, or does not start (the port may have been taken by another
    /// program while it was stopped).
    pub fn start(&mut self) {
        assert!(!self.proc.is_started(), "MariaDB is already running");
        assert!(
            self.try_start(),
            "MariaDB cannot listen on its port {} again (taken meanwhile):\n{}",
            self.port,
            self.log()
        );
    }

    /// Starts the server on `self.port` and waits until it is ready: true when it is,
    /// false when it exited because the port was in use.
    fn try_start(&mut self) -> bool {
        let run = self.run_dir();
        let mut cmd = self.as_owner(Command::new(&self.mariadbd));
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir().display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", run.join("mysqld.pid").display()))
            .arg(format!("--tmpdir={}", run.join("tmp").display()))
            .args(["--skip-name-resolve", "--skip-log-bin"])
            .args(["--performance-schema=OFF", "--max-connections=100"])
            .args(["--character-set-server=utf8mb4"])
            .args(["--collation-server=utf8mb4_general_ci"])
            .args(INNODB);
        let server = Daemon::start(cmd);
        let port = self.port;
        self.proc.adopt(server, START_LIMIT, "MariaDB", |log| {
            log.contains(READY) && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
    }

    /// Stops the server (SIGTERM: a normal shutdown, clients are disconnected) by its
    /// PID and waits until it has exited (killing it after 30 s). Nothing listens on
    /// [`MariaDb::port`] afterwards. Does nothing when it is not running.
    pub fn stop(&mut self) {
        self.proc.stop("TERM", STOP_LIMIT);
    }

    /// Is the server running (started and not stopped)?
    pub fn is_running(&self) -> bool {
        self.proc.is_running()
    }

    /// The server's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// The TCP port on 127.0.0.1 (the same after a restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A connection URL, `mysql://USER:PASSWORD@127.0.0.1:PORT/DB` (the parts are not
    /// percent-encoded: use plain names and passwords).
    pub fn url(&self, db: &str, user: &str, password: &str) -> String {
        format!("mysql://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// The data directory (`--datadir`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.run_dir().join("mysqld.sock")
    }

    /// The temporary directory holding everything.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the server logged, over all its starts.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Runs SQL as [`ROOT`] in database `db` (`mariadb --batch --skip-column-names`
    /// over the Unix socket, the text on standard input, stopping at the first error)
    /// and returns what the client printed: one line per row, columns separated by
    /// tabs, no header. Use `db` `"mysql"` for statements about the server as a whole.
    ///
    /// # Panics
    /// When the client fails (a statement failed, the server is down), with its output.
    pub fn sql(&self, db: &str, text: &str) -> String {
        let run = self.try_sql(db, text);
        assert!(
            run.ok(),
            "mariadb in {db} failed: {text}\n{}\nserver log:\n{}",
            run.log(),
            self.log()
        );
        run.stdout
    }

    /// As [`MariaDb::sql`], but returns the client's result, for a test that expects a
    /// failure.
    pub fn try_sql(&self, db: &str, text: &str) -> Run {
        let mut cmd = self.client(db);
        cmd.arg("--protocol=socket")
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--user={ROOT}"));
        run_bounded_input(cmd, Some(text.as_bytes()), CLIENT_LIMIT, self.dir.path())
    }

    /// Runs SQL in `db` as `user` with `password` over TCP to 127.0.0.1 (as a client
    /// would), with the options of [`MariaDb::sql`]; returns the client's result.
    pub fn sql_as(&self, db: &str, user: &str, password: &str, text: &str) -> Run {
        let mut cmd = self.client(db);
        cmd.args(["--protocol=tcp", "--host=127.0.0.1"])
            .arg(format!("--port={}", self.port))
            .arg(format!("--user={user}"))
            .arg(format!("--password={password}"));
        run_bounded_input(cmd, Some(text.as_bytes()), CLIENT_LIMIT, self.dir.path())
    }

    /// Creates the account `'NAME'@'%'` with `password` (it may connect from
    /// 127.0.0.1; it has no privileges until [`MariaDb::create_database`] names it
    /// owner or a `GRANT` gives some).
    ///
    /// # Panics
    /// When it exists already (or the client fails).
    pub fn create_user(&self, name: &str, password: &str) {
        self.sql(
            "mysql",
            &format!(
                "CREATE USER {}@'%' IDENTIFIED BY {};",
                quote_literal(name),
                quote_literal(password)
            ),
        );
    }

    /// Creates a database; when `owner` names an account made by
    /// [`MariaDb::create_user`], grants it all privileges on the database.
    ///
    /// # Panics
    /// When it exists already (or the client fails).
    pub fn create_database(&self, name: &str, owner: Option<&str>) {
        let mut q = format!("CREATE DATABASE {};", quote_ident(name));
        if let Some(o) = owner {
            q.push_str(&format!(
                "\nGRANT ALL PRIVILEGES ON {}.* TO {}@'%';",
                quote_ident(name),
                quote_literal(o)
            ));
        }
        self.sql("mysql", &q);
    }

    /// The client with the options every run shares.
    fn client(&self, db: &str) -> Command {
        let mut cmd = Command::new(&self.client);
        for var in [
            "MYSQL_PWD",
            "MYSQL_HOST",
            "MYSQL_TCP_PORT",
            "MYSQL_UNIX_PORT",
        ] {
            cmd.env_remove(var);
        }
        cmd.arg("--no-defaults")
            .args(["--batch", "--skip-column-names", "--connect-timeout=10"])
            .arg(format!("--database={db}"));
        cmd
    }

    /// `cmd` run as the owner of the data, from the temporary directory.
    fn as_owner(&self, mut cmd: Command) -> Command {
        cmd.stdin(Stdio::null())
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env("LC_ALL", "C")
            .env_remove("MYSQL_HOME")
            .env_remove("MYSQL_UNIX_PORT")
            .env_remove("MYSQL_TCP_PORT");
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// Where the socket, PID file and temporary files are.
    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `s` as an identifier, in backquotes.
fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// `s` as a string literal (backslashes and quotes escaped).
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port taken by another program is told apart from other start failures (so
    /// `launch` tries another one).
    #[test]
    fn taken_port_is_detected() {
        let mut db = MariaDb::launch();
        db.stop();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let free = db.port;
        db.port = taken.local_addr().expect("addr").port();
        assert!(!db.try_start(), "started on a taken port:\n{}", db.log());
        assert!(!db.proc.is_started());
        db.port = free;
        db.start();
        assert_eq!(db.sql("mysql", "SELECT 1;"), "1\n");
    }
}
