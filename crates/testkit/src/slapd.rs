//! A private OpenLDAP server on loopback (Debian packages `slapd` and `ldap-utils`),
//! for tests of users kept in an LDAP directory.
//!
//! [`Slapd::launch`] writes a `slapd.conf` in a temporary directory and starts
//! `slapd -d stats -f slapd.conf -h "ldap://127.0.0.1:PORT/ ldaps://127.0.0.1:PORT2/"`
//! in the foreground (its log on standard error, one line per operation), on two ports
//! chosen at run time (others if one was taken in the meantime). It waits until both
//! accept connections — no fixed sleep — and adds the base entries.
//!
//! The directory: the `mdb` backend (`dbnosync`), schemas `core`, `cosine`, `nis` and
//! `inetorgperson`, suffix [`SUFFIX`], administrator [`ADMIN_DN`] (the rootdn, password
//! [`ADMIN_PASSWORD`]). Present from the start:
//!
//! - `dc=example,dc=org` (`dcObject`, `organization`);
//! - [`PEOPLE`], `ou=people,dc=example,dc=org`, for the users a test adds;
//! - [`SERVICE_DN`], `cn=correio,dc=example,dc=org` (`organizationalRole`,
//!   `simpleSecurityObject`, password [`SERVICE_PASSWORD`]): the account a server
//!   binds as to look users up.
//!
//! Access (the rootdn bypasses it):
//!
//! ```text
//! access to attrs=userPassword
//!     by self read
//!     by dn.exact="cn=correio,dc=example,dc=org" read
//!     by anonymous auth
//!     by * none
//! access to *
//!     by self read
//!     by dn.exact="cn=correio,dc=example,dc=org" read
//!     by * none
//! ```
//!
//! so the service account can search for a user and read or compare its
//! `userPassword` ("search then compare") or search and then bind as the user ("search
//! then bind"); an anonymous client can bind as a user (simple bind) and nothing else; a
//! user sees only its own entry.
//!
//! TLS: a test CA and a server certificate it signed (for `localhost` and the IP address
//! `127.0.0.1`) are generated with rcgen; `ldaps://` serves it and `ldap://` offers
//! StartTLS. A client trusts [`Slapd::ca_pem`] (for the OpenLDAP tools:
//! `LDAPTLS_CACERT`, which [`Slapd::ldapsearch`] sets).
//!
//! slapd runs as the test's user (root or not: it needs no privilege for ports above
//! 1023). [`Slapd::stop`] stops it (SIGINT) by its PID and waits until it has exited;
//! [`Slapd::start`] starts it again on the same data, configuration and ports, so a
//! test can take the directory away in the middle of a run and bring it back. Dropping
//! the value stops it the same way (and removes the directory).
//!
//! Like [`crate::peers::require`], a missing program panics with the package to
//! install instead of skipping the test. These types are for tests: they panic (with
//! slapd's log or the tool's output) instead of returning errors.
//!
//! # Example
//!
//! ```no_run
//! use correio_testkit::slapd::{PEOPLE, SERVICE_DN, SERVICE_PASSWORD, Slapd};
//!
//! let mut ldap = Slapd::launch();
//! ldap.add_ldif(&format!(
//!     "dn: uid=alice,{PEOPLE}\n\
//!      objectClass: inetOrgPerson\n\
//!      uid: alice\ncn: Alice\nsn: A\n\
//!      userPassword: pw\n"
//! ));
//! // The server under test binds as SERVICE_DN / SERVICE_PASSWORD at
//! // ldap.ldap_url() (or ldap.ldaps_url(), trusting ldap.ca_pem()) and looks for
//! // (uid=alice) under PEOPLE.
//! let found = ldap.ldapsearch(&["-D", SERVICE_DN, "-w", SERVICE_PASSWORD, "-b", PEOPLE, "(uid=alice)", "cn"]);
//! assert!(found.ok() && found.stdout.contains("cn: Alice"));
//! ldap.stop(); // the directory is gone: logins must fail temporarily
//! ldap.start(); // same data, same ports: logins work again
//! ```

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::daemon::Daemon;
use crate::peers::{Run, require, run_bounded_input};
use crate::service::Supervised;

/// The suffix of the one database.
pub const SUFFIX: &str = "dc=example,dc=org";
/// The administrator (rootdn): may do everything, bypassing the access rules.
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
/// [`ADMIN_DN`]'s password.
pub const ADMIN_PASSWORD: &str = "admin-secret";
/// The service account, which may search every entry and read `userPassword`.
pub const SERVICE_DN: &str = "cn=correio,dc=example,dc=org";
/// [`SERVICE_DN`]'s password.
pub const SERVICE_PASSWORD: &str = "correio-secret";
/// Where users go (`ou=people`), present from the start.
pub const PEOPLE: &str = "ou=people,dc=example,dc=org";

/// Where the schemas are.
const SCHEMA_DIR: &str = "/etc/ldap/schema";
/// Where the backend modules are.
const MODULE_DIR: &str = "/usr/lib/ldap";
/// How long slapd may take to listen.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long a shutdown may take before slapd is killed.
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// How long one tool run may take.
const TOOL_LIMIT: Duration = Duration::from_secs(30);
/// How many port pairs to try when one was taken before slapd bound it.
const PORT_TRIES: usize = 5;

/// A private slapd. Stopped (by PID) on drop.
#[derive(Debug)]
pub struct Slapd {
    dir: tempfile::TempDir,
    slapd: PathBuf,
    ldap_port: u16,
    ldaps_port: u16,
    proc: Supervised,
}

impl Slapd {
    /// Writes the configuration and certificates in a new temporary directory, starts
    /// slapd, waits until it listens and adds the base entries (see the module
    /// documentation).
    ///
    /// # Panics
    /// When slapd or ldap-utils is not installed or slapd does not start (with its
    /// log).
    pub fn launch() -> Slapd {
        let slapd = require("slapd", "slapd");
        require("ldapadd", "ldap-utils");
        require("ldapsearch", "ldap-utils");
        assert!(
            Path::new(MODULE_DIR).join("back_mdb.la").exists()
                || Path::new(MODULE_DIR).join("back_mdb.so").exists(),
            "{MODULE_DIR}/back_mdb is missing: this test needs it (apt-get install -y slapd)"
        );
        let dir = tempfile::Builder::new()
            .prefix("correio-slapd-")
            .tempdir()
            .expect("temporary directory");
        let mut ldap = Slapd {
            dir,
            slapd,
            ldap_port: 0,
            ldaps_port: 0,
            proc: Supervised::default(),
        };
        fs::create_dir(ldap.data_dir()).expect("mkdir data");
        ldap.write_certificates();
        ldap.write_config();

        let mut started = false;
        for _ in 0..PORT_TRIES {
            ldap.ldap_port = crate::free_port().expect("free port");
            ldap.ldaps_port = crate::free_port().expect("free port");
            if ldap.ldaps_port != ldap.ldap_port && ldap.try_start() {
                started = true;
                break;
            }
        }
        assert!(
            started,
            "slapd found one of its ports taken {PORT_TRIES} times:\n{}",
            ldap.log()
        );
        ldap.add_ldif(&format!(
            "dn: {SUFFIX}\n\
             objectClass: dcObject\n\
             objectClass: organization\n\
             dc: example\n\
             o: Example\n\
             \n\
             dn: {PEOPLE}\n\
             objectClass: organizationalUnit\n\
             ou: people\n\
             \n\
             dn: {SERVICE_DN}\n\
             objectClass: organizationalRole\n\
             objectClass: simpleSecurityObject\n\
             cn: correio\n\
             userPassword: {SERVICE_PASSWORD}\n"
        ));
        ldap
    }

    /// A test CA and a server certificate it signed, for `localhost` and 127.0.0.1.
    fn write_certificates(&self) {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca.distinguished_name
            .push(DnType::CommonName, "Correio test CA (slapd)");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let mut leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("server certificate parameters");
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.use_authority_key_identifier_extension = true;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = leaf
            .signed_by(&key, &ca_cert, &ca_key)
            .expect("server certificate");
        fs::write(self.ca_pem(), ca_cert.pem()).expect("write CA");
        fs::write(self.cert_pem(), cert.pem()).expect("write certificate");
        fs::write(self.key_pem(), key.serialize_pem()).expect("write key");
        fs::set_permissions(self.key_pem(), fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    /// slapd.conf (mode 0600: it holds the rootdn's password).
    fn write_config(&self) {
        let root = self.dir.path().display();
        let schemas: String = ["core", "cosine", "nis", "inetorgperson"]
            .iter()
            .map(|s| format!("include {SCHEMA_DIR}/{s}.schema\n"))
            .collect();
        let conf = format!(
            "# written by correio-testkit\n\
             {schemas}\
             pidfile {root}/slapd.pid\n\
             argsfile {root}/slapd.args\n\
             modulepath {MODULE_DIR}\n\
             moduleload back_mdb\n\
             TLSCACertificateFile {ca}\n\
             TLSCertificateFile {cert}\n\
             TLSCertificateKeyFile {key}\n\
             \n\
             database mdb\n\
             suffix \"{SUFFIX}\"\n\
             rootdn \"{ADMIN_DN}\"\n\
             rootpw {ADMIN_PASSWORD}\n\
             directory {data}\n\
             maxsize 104857600\n\
             dbnosync\n\
             index objectClass eq\n\
             index uid,cn,mail eq\n\
             \n\
             access to attrs=userPassword\n\
             \tby self read\n\
             \tby dn.exact=\"{SERVICE_DN}\" read\n\
             \tby anonymous auth\n\
             \tby * none\n\
             access to *\n\
             \tby self read\n\
             \tby dn.exact=\"{SERVICE_DN}\" read\n\
             \tby * none\n",
            ca = self.ca_pem().display(),
            cert = self.cert_pem().display(),
            key = self.key_pem().display(),
            data = self.data_dir().display(),
        );
        let path = self.config_path();
        fs::write(&path, conf).expect("write slapd.conf");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    /// Starts slapd again (after [`Slapd::stop`]) on the same data, configuration and
    /// ports; returns once it accepts connections.
    ///
    /// # Panics
    /// When it is running, or does not start (a port may have been taken by another
    /// program while it was stopped).
    pub fn start(&mut self) {
        assert!(!self.proc.is_started(), "slapd is already running");
        assert!(
            self.try_start(),
            "slapd cannot listen on its ports {} and {} again (taken meanwhile):\n{}",
            self.ldap_port,
            self.ldaps_port,
            self.log()
        );
    }

    /// Starts slapd on the chosen ports and waits until both accept connections: true
    /// then, false when it exited because a port was in use.
    fn try_start(&mut self) -> bool {
        let mut cmd = Command::new(&self.slapd);
        cmd.stdin(Stdio::null())
            .current_dir(self.dir.path())
            .args(["-d", "stats", "-f"])
            .arg(self.config_path())
            .arg("-h")
            .arg(format!("{} {}", self.ldap_url(), self.ldaps_url()));
        let server = Daemon::start(cmd);
        let ports = [self.ldap_port, self.ldaps_port];
        // slapd listen()s once its backends are up, so a connection is served.
        self.proc.adopt(server, START_LIMIT, "slapd", |_| {
            ports
                .iter()
                .all(|&p| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok())
        })
    }

    /// Stops slapd (SIGINT) by its PID and waits until it has exited (killing it after
    /// 30 s). Nothing listens on its ports afterwards. Does nothing when it is not
    /// running.
    pub fn stop(&mut self) {
        self.proc.stop("INT", STOP_LIMIT);
    }

    /// Is slapd running (started and not stopped)?
    pub fn is_running(&self) -> bool {
        self.proc.is_running()
    }

    /// slapd's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// The port of `ldap://` (plain, with StartTLS) on 127.0.0.1.
    pub fn ldap_port(&self) -> u16 {
        self.ldap_port
    }

    /// The port of `ldaps://` (implicit TLS) on 127.0.0.1.
    pub fn ldaps_port(&self) -> u16 {
        self.ldaps_port
    }

    /// `ldap://127.0.0.1:PORT/`.
    pub fn ldap_url(&self) -> String {
        format!("ldap://127.0.0.1:{}/", self.ldap_port)
    }

    /// `ldaps://127.0.0.1:PORT/`.
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}/", self.ldaps_port)
    }

    /// The test CA's certificate (PEM), which signed the server's: what a client
    /// trusts.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server's certificate (PEM; for `localhost` and 127.0.0.1).
    pub fn cert_pem(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// The server's private key (PEM).
    pub fn key_pem(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// slapd.conf.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("slapd.conf")
    }

    /// The mdb database's directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The temporary directory holding everything.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Everything slapd logged, over all its starts.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Adds entries (or applies changes given with `changetype:`) as the administrator:
    /// `ldapadd -x -H ldap://… -D ADMIN_DN -w ADMIN_PASSWORD` with `ldif` on its input.
    ///
    /// # Panics
    /// When ldapadd fails, with its output.
    pub fn add_ldif(&self, ldif: &str) {
        self.admin_tool("ldapadd", ldif);
    }

    /// Applies changes (`changetype: modify`, `delete`, …; plain records modify) as
    /// the administrator with `ldapmodify`.
    ///
    /// # Panics
    /// When ldapmodify fails, with its output.
    pub fn modify_ldif(&self, ldif: &str) {
        self.admin_tool("ldapmodify", ldif);
    }

    fn admin_tool(&self, program: &str, ldif: &str) {
        let mut cmd = self.tool(program);
        cmd.arg("-H")
            .arg(self.ldap_url())
            .args(["-D", ADMIN_DN, "-w", ADMIN_PASSWORD]);
        let run = run_bounded_input(cmd, Some(ldif.as_bytes()), TOOL_LIMIT, self.dir.path());
        assert!(
            run.ok(),
            "{program} failed:\n{ldif}\n{}\nslapd's log:\n{}",
            run.log(),
            self.log()
        );
    }

    /// Runs `ldapsearch -x -LLL -o ldif_wrap=no` with `args` (add `-D DN -w PASSWORD`
    /// to bind, `-b BASE`, a filter and attributes, `-ZZ` for StartTLS), against
    /// [`Slapd::ldap_url`] unless `args` has a `-H`, trusting [`Slapd::ca_pem`];
    /// returns its result. Output is LDIF without the version line.
    pub fn ldapsearch(&self, args: &[&str]) -> Run {
        let mut cmd = self.tool("ldapsearch");
        cmd.args(["-LLL", "-o", "ldif_wrap=no"]);
        if !args.contains(&"-H") {
            cmd.arg("-H").arg(self.ldap_url());
        }
        cmd.args(args);
        run_bounded_input(cmd, None, TOOL_LIMIT, self.dir.path())
    }

    /// Searches the whole directory as the administrator for `filter`, returning the
    /// attributes `attrs` (all when empty) as LDIF.
    ///
    /// # Panics
    /// When ldapsearch fails (no match is not a failure), with its output.
    pub fn search(&self, filter: &str, attrs: &[&str]) -> String {
        let mut args = vec!["-D", ADMIN_DN, "-w", ADMIN_PASSWORD, "-b", SUFFIX, filter];
        args.extend_from_slice(attrs);
        let run = self.ldapsearch(&args);
        assert!(
            run.ok(),
            "ldapsearch {filter} failed:\n{}\nslapd's log:\n{}",
            run.log(),
            self.log()
        );
        run.stdout
    }

    /// An OpenLDAP tool with simple authentication, trusting the test CA (and nothing
    /// else).
    fn tool(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for var in ["LDAPURI", "LDAPBASE", "LDAPBINDDN", "LDAPRC", "LDAPCONF"] {
            cmd.env_remove(var);
        }
        cmd.env("LDAPTLS_CACERT", self.ca_pem())
            .env("LDAPTLS_REQCERT", "demand")
            .arg("-x");
        cmd
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port taken by another program is told apart from other start failures (so
    /// `launch` tries other ones).
    #[test]
    fn taken_port_is_detected() {
        let mut ldap = Slapd::launch();
        ldap.stop();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let free = ldap.ldaps_port;
        ldap.ldaps_port = taken.local_addr().expect("addr").port();
        assert!(
            !ldap.try_start(),
            "started on a taken port:\n{}",
            ldap.log()
        );
        assert!(!ldap.proc.is_started());
        ldap.ldaps_port = free;
        ldap.start();
        assert!(ldap.search("(cn=correio)", &["cn"]).contains("cn: correio"));
    }
}
