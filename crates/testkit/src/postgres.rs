//! A private PostgreSQL server on loopback (Debian package `postgresql`), for tests of
//! users kept in an SQL database.
//!
//! [`Postgres::launch`] makes a fresh cluster with `initdb` in a temporary directory
//! and starts `postgres` in the foreground on `127.0.0.1` and a port chosen at run
//! time (another one if that port was taken in the meantime), with its Unix socket in
//! that directory. It waits until the server says it is ready and accepts TCP
//! connections — no fixed sleep. Durability is off (`initdb --no-sync`, `fsync=off`,
//! no synchronous commit): data survive [`Postgres::stop`] (a fast shutdown) but not a
//! crash of the machine, which is all a test needs.
//!
//! Authentication (`pg_hba.conf`): the superuser [`ADMIN`] is trusted over the Unix
//! socket (that is how [`Postgres::sql`] runs `psql`); every other role logs in with a
//! password (`scram-sha-256`), over TCP from 127.0.0.1 or over the socket.
//!
//! PostgreSQL refuses to run as root: when the test runs as root, `initdb` and the
//! server run as `nobody` (the data belong to it), and the temporary directory is made
//! traversable (0755). As another user they run as that user.
//!
//! [`Postgres::stop`] stops the server (SIGINT, a fast shutdown that disconnects the
//! clients) by its PID and waits until it has exited; [`Postgres::start`] starts it again
//! on the same data directory and port, so a test can take the database away in the
//! middle of a run and bring it back. Dropping the value stops the server the same way
//! (and removes the directory).
//!
//! The binaries come from the highest version in `/usr/lib/postgresql/VERSION/bin`
//! (they are not on `PATH` on Debian). Like [`crate::peers::require`], a missing
//! server panics with the package to install instead of skipping the test.
//!
//! These types are for tests: they panic (with the server's log or psql's output)
//! instead of returning errors.
//!
//! # Example
//!
//! ```no_run
//! use correio_testkit::postgres::Postgres;
//!
//! let mut pg = Postgres::launch();
//! pg.create_user("correio", "s3cret");
//! pg.create_database("mail", Some("correio"));
//! pg.sql(
//!     "mail",
//!     "CREATE TABLE users (name text PRIMARY KEY, password text NOT NULL);
//!      INSERT INTO users VALUES ('alice', 'pw');
//!      GRANT SELECT ON users TO correio;",
//! );
//! assert_eq!(pg.sql("mail", "SELECT password FROM users WHERE name = 'alice'"), "pw\n");
//! // postgres://correio:s3cret@127.0.0.1:PORT/mail, for the server under test:
//! let url = pg.url("mail", "correio", "s3cret");
//! # let _ = url;
//! pg.stop(); // the database is gone: logins must fail temporarily
//! pg.start(); // same data, same port: logins work again
//! ```

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::daemon::Daemon;
use crate::peers::{Run, run_bounded_input};
use crate::service::{Supervised, check_traversable, service_owner};

/// The superuser (trusted over the Unix socket only).
pub const ADMIN: &str = "postgres";

/// How long the server may take to become ready (initdb is separate).
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long a shutdown may take before the server is killed.
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// How long one psql run may take.
const PSQL_LIMIT: Duration = Duration::from_secs(60);
/// How many ports to try when the chosen one was taken before the server bound it.
const PORT_TRIES: usize = 5;
/// What the server logs once it accepts connections.
const READY: &str = "database system is ready to accept connections";

/// A private PostgreSQL server. Stopped (by PID) on drop.
#[derive(Debug)]
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The uid and gid the server runs as when the test runs as root.
    owner: Option<(u32, u32)>,
    proc: Supervised,
}

impl Postgres {
    /// Creates a cluster in a new temporary directory and starts the server; returns
    /// once it accepts connections.
    ///
    /// # Panics
    /// When PostgreSQL is not installed, `initdb` fails or the server does not
    /// start (with its log).
    pub fn launch() -> Postgres {
        let bin = bin_dir();
        let owner = service_owner();
        let dir = tempfile::Builder::new()
            .prefix("correio-pg-")
            .tempdir()
            .expect("temporary directory");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod 0755");
        if owner.is_some() {
            check_traversable(dir.path());
        }
        let mut pg = Postgres {
            dir,
            bin,
            port: 0,
            owner,
            proc: Supervised::default(),
        };
        for d in [pg.data_dir(), pg.socket_dir()] {
            fs::create_dir(&d).expect("mkdir");
            fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).expect("chmod");
            pg.give(&d);
        }
        fs::set_permissions(pg.socket_dir(), fs::Permissions::from_mode(0o755)).expect("chmod");

        let mut initdb = pg.command("initdb");
        initdb
            .arg("--pgdata")
            .arg(pg.data_dir())
            .args(["--username", ADMIN, "--auth=trust", "--encoding=UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions"]);
        let run = run_bounded_input(initdb, None, START_LIMIT, pg.dir.path());
        assert!(run.ok(), "initdb failed:\n{}", run.log());
        let hba = pg.data_dir().join("pg_hba.conf");
        fs::write(
            &hba,
            format!(
                "# written by correio-testkit\n\
                 local all {ADMIN} trust\n\
                 local all all scram-sha-256\n\
                 host all all 127.0.0.1/32 scram-sha-256\n"
            ),
        )
        .expect("write pg_hba.conf");
        pg.give(&hba);

        for _ in 0..PORT_TRIES {
            pg.port = crate::free_port().expect("free port");
            if pg.try_start() {
                return pg;
            }
        }
        panic!(
            "PostgreSQL found each of {PORT_TRIES} ports taken:\n{}",
            pg.log()
        );
    }

    /// Starts the server again (after [`Postgres::stop`]) on the same data directory
    /// and port; returns once it accepts connections.
    ///
    /// # Panics
    /// When it is running, or does not start (the port may have been taken by
    /// another program while it was stopped).
    pub fn start(&mut self) {
        assert!(!self.proc.is_started(), "PostgreSQL is already running");
        assert!(
            self.try_start(),
            "PostgreSQL cannot listen on its port {} again (taken meanwhile):\n{}",
            self.port,
            self.log()
        );
    }

    /// Starts the server on `self.port` and waits until it is ready: true when it is,
    /// false when it exited because the port was in use.
    fn try_start(&mut self) -> bool {
        let mut cmd = self.command("postgres");
        cmd.arg("-D").arg(self.data_dir());
        cmd.args(["-p", &self.port.to_string()]);
        for setting in [
            "listen_addresses=127.0.0.1".to_string(),
            format!("unix_socket_directories={}", self.socket_dir().display()),
            "unix_socket_permissions=0777".to_string(),
            "fsync=off".to_string(),
            "synchronous_commit=off".to_string(),
            "full_page_writes=off".to_string(),
            "shared_buffers=16MB".to_string(),
            "max_connections=50".to_string(),
            "dynamic_shared_memory_type=mmap".to_string(),
            "logging_collector=off".to_string(),
            "log_destination=stderr".to_string(),
            "lc_messages=C".to_string(),
            "ssl=off".to_string(),
            "password_encryption=scram-sha-256".to_string(),
        ] {
            cmd.arg("-c").arg(setting);
        }
        let server = Daemon::start(cmd);
        let port = self.port;
        self.proc.adopt(server, START_LIMIT, "PostgreSQL", |log| {
            log.contains(READY) && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
    }

    /// Stops the server (SIGINT: a fast shutdown, clients are disconnected) by its PID
    /// and waits until it has exited (killing it after 30 s). Nothing listens on
    /// [`Postgres::port`] afterwards. Does nothing when it is not running.
    pub fn stop(&mut self) {
        self.proc.stop("INT", STOP_LIMIT);
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

    /// A connection URL, `postgres://USER:PASSWORD@127.0.0.1:PORT/DB` (the parts are
    /// not percent-encoded: use plain names and passwords).
    pub fn url(&self, db: &str, user: &str, password: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory of the Unix socket (`.s.PGSQL.PORT`).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// The temporary directory holding everything.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the server logged, over all its starts.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Runs SQL as [`ADMIN`] in database `db` (`psql -X -q -A -t -v ON_ERROR_STOP=1`
    /// over the Unix socket, the text on standard input) and returns what psql
    /// printed: one line per row, columns separated by `|`, no header.
    ///
    /// # Panics
    /// When psql fails (a statement failed, the server is down), with its output.
    pub fn sql(&self, db: &str, text: &str) -> String {
        let run = self.try_sql(db, text);
        assert!(
            run.ok(),
            "psql in {db} failed: {text}\n{}\nserver log:\n{}",
            run.log(),
            self.log()
        );
        run.stdout
    }

    /// As [`Postgres::sql`], but returns psql's result, for a test that expects a
    /// failure.
    pub fn try_sql(&self, db: &str, text: &str) -> Run {
        let mut cmd = self.psql(db);
        cmd.arg("--host").arg(self.socket_dir());
        cmd.args(["--username", ADMIN]);
        run_bounded_input(cmd, Some(text.as_bytes()), PSQL_LIMIT, self.dir.path())
    }

    /// Runs SQL in `db` as `user` with `password` over TCP to 127.0.0.1 (password
    /// authentication, as a client would), with the options of [`Postgres::sql`];
    /// returns psql's result.
    pub fn sql_as(&self, db: &str, user: &str, password: &str, text: &str) -> Run {
        let mut cmd = self.psql(db);
        cmd.args(["--host", "127.0.0.1", "--username", user, "--no-password"]);
        cmd.env("PGPASSWORD", password);
        run_bounded_input(cmd, Some(text.as_bytes()), PSQL_LIMIT, self.dir.path())
    }

    /// Creates a role that can log in with `password`.
    ///
    /// # Panics
    /// When it exists already (or psql fails).
    pub fn create_user(&self, name: &str, password: &str) {
        self.sql(
            "postgres",
            &format!(
                "CREATE ROLE {} LOGIN PASSWORD {};",
                quote_ident(name),
                quote_literal(password)
            ),
        );
    }

    /// Creates a database (UTF-8), owned by the role `owner` if given (the owner may
    /// create tables in its `public` schema).
    ///
    /// # Panics
    /// When it exists already (or psql fails).
    pub fn create_database(&self, name: &str, owner: Option<&str>) {
        let mut q = format!("CREATE DATABASE {}", quote_ident(name));
        if let Some(o) = owner {
            q.push_str(&format!(" OWNER {}", quote_ident(o)));
        }
        q.push(';');
        self.sql("postgres", &q);
    }

    /// psql with the options every run shares.
    fn psql(&self, db: &str) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        for var in [
            "PGHOST",
            "PGHOSTADDR",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGPASSWORD",
            "PGPASSFILE",
            "PGSERVICE",
            "PGSERVICEFILE",
            "PGOPTIONS",
            "PGSSLMODE",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("PGCONNECT_TIMEOUT", "10")
            .env("LC_ALL", "C")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["--port", &self.port.to_string(), "--dbname", db]);
        cmd
    }

    /// A server program (initdb, postgres) run as the owner of the data.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.stdin(Stdio::null())
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .env_remove("PGHOST");
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// Gives a file or directory to the owner of the data (when running as root).
    fn give(&self, path: &Path) {
        if let Some((uid, gid)) = self.owner {
            crate::chown_tree(path, uid, gid).expect("chown to the server's account");
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `/usr/lib/postgresql/VERSION/bin` of the highest VERSION with a server.
///
/// # Panics
/// When there is none.
fn bin_dir() -> PathBuf {
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    if let Ok(rd) = fs::read_dir("/usr/lib/postgresql") {
        for e in rd.flatten() {
            let bin = e.path().join("bin");
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(version) = name
                .split('.')
                .map(str::parse::<u32>)
                .collect::<Result<Vec<_>, _>>()
            else {
                continue;
            };
            if bin.join("postgres").is_file()
                && bin.join("initdb").is_file()
                && best.as_ref().is_none_or(|(v, _)| version > *v)
            {
                best = Some((version, bin));
            }
        }
    }
    match best {
        Some((_, bin)) if bin.join("psql").is_file() => bin,
        Some((_, bin)) => panic!(
            "{} has no psql: this test needs it (apt-get install -y postgresql-client)",
            bin.display()
        ),
        None => panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/VERSION/bin/postgres): \
             this test needs it (apt-get install -y postgresql)"
        ),
    }
}

/// `s` as an SQL identifier, in double quotes.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `s` as an SQL string literal.
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port taken by another program is told apart from other start failures (so
    /// `launch` tries another one).
    #[test]
    fn taken_port_is_detected() {
        let mut pg = Postgres::launch();
        pg.stop();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let free = pg.port;
        pg.port = taken.local_addr().expect("addr").port();
        assert!(!pg.try_start(), "started on a taken port:\n{}", pg.log());
        assert!(!pg.proc.is_started());
        pg.port = free;
        pg.start();
        assert_eq!(pg.sql("postgres", "SELECT 1;"), "1\n");
    }
}
