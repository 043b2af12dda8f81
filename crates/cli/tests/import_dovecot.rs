//! `correio import dovecot` as an admin moving a server uses it, and the promise behind
//! it: the same POP3 clients see the same UIDLs after the switch, so nothing is
//! downloaded again.
//!
//! The continuity test starts a private Dovecot (testkit's harness: passwd-file users,
//! a Maildir per user, POP3 with STLS and POP3S, `pop3_uidl_format = %08Xu%08Xv`),
//! delivers a corpus with Dovecot's own LDA, and lets mpop and fetchmail fetch it in keep
//! mode (their UIDL state files record every message). Then Dovecot is stopped as an
//! admin would (SIGTERM to its master), `correio import dovecot --from <its
//! dovecot.conf>` writes correio.toml (same users file, Maildirs, certificate and
//! addresses: the clients' accounts stay as they are), `correio check` accepts it and
//! `correio serve` runs on it. The same clients, with the same state, download nothing;
//! one message delivered after the switch (`correio deliver`) is the one they fetch.
//! Needs Dovecot (dovecot-core, dovecot-pop3d), mpop and fetchmail; runs as root (the
//! harness hands the mail to `nobody`, as Dovecot requires).

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use correio_testkit::peers::{
    Run, dir_files, maildir_messages, make_maildir, require, run_bounded, scratch, write_private,
};
use correio_testkit::{Dovecot, DovecotConfig, Pop3};

const BIN: &str = env!("CARGO_BIN_EXE_correio");
const USER: &str = "alice";
const PASS: &str = "s3cret word";
const LIMIT: Duration = Duration::from_secs(90);

/// Kills the server on every exit path (by its pid only).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn correio(args: &[&str], stdin: &[u8]) -> Output {
    let mut c = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run correio");
    c.stdin.take().unwrap().write_all(stdin).unwrap();
    c.wait_with_output().unwrap()
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// The corpus: 20 messages, so Dovecot's UIDs reach two hex digits (0a..14).
fn corpus() -> Vec<Vec<u8>> {
    (1..=20)
        .map(|n| {
            let body = match n % 4 {
                0 => ".starts with a dot\n..two dots\n.\nend\n".to_string(),
                1 => "x".repeat(900) + "\n",
                2 => String::new(),
                _ => "caf\u{e9} 8-bit body\n\nsecond paragraph\n".into(),
            };
            format!(
                "From: sender@example.org\nTo: alice@example.org\nSubject: corpus {n}\n\
                 Message-ID: <import-{n}@example.org>\n\n{body}"
            )
            .into_bytes()
        })
        .collect()
}

/// Dovecot's master pid, from its base_dir (the harness puts base_dir under its root).
fn stop_dovecot(d: &Dovecot) {
    let pid_file = d.root().join("run/master.pid");
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
    let pid = pid.trim().to_owned();
    let st = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(st.success(), "kill -TERM {pid}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
    {
        assert!(Instant::now() < deadline, "dovecot {pid} did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    for addr in [Some(d.pop3_addr()), d.pop3s_addr()].into_iter().flatten() {
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            assert!(Instant::now() < deadline, "{addr} still answers");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Waits until a POP3 server greets on `addr`.
fn wait_greeting(addr: SocketAddr, log: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut l = String::new();
            if BufReader::new(s).read_line(&mut l).is_ok() && l.starts_with("+OK") {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no greeting on {addr}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// UIDL listing of the maildrop at `addr`, as sent.
fn uidls(addr: SocketAddr) -> Vec<(usize, String)> {
    let mut p = Pop3::login(addr, USER, PASS).expect("login");
    let u = p.uidl().expect("UIDL");
    p.quit().expect("QUIT");
    u
}

/// The clients and their state: one directory that outlives the server switch.
struct Clients {
    tmp: tempfile::TempDir,
    mpoprc: PathBuf,
    fetchmailrc: PathBuf,
}

impl Clients {
    fn new(pop3: SocketAddr, cert: &Path) -> Clients {
        require("mpop", "mpop");
        require("fetchmail", "fetchmail");
        let tmp = scratch();
        let md = tmp.path().join("mpop-Maildir");
        make_maildir(&md);
        std::fs::create_dir(tmp.path().join("fetchmail-out")).unwrap();
        let mpoprc = tmp.path().join("mpoprc");
        write_private(
            &mpoprc,
            &format!(
                "defaults\ntimeout 30\naccount test\nhost localhost\nport {port}\n\
                 user {USER}\npassword {PASS}\ntls on\ntls_starttls on\ntls_trust_file {cert}\n\
                 delivery maildir {md}\nkeep on\nuidls_file {uidls}\nreceived_header off\n",
                port = pop3.port(),
                cert = cert.display(),
                md = md.display(),
                uidls = tmp.path().join("mpop-uidls").display(),
            ),
        );
        let fetchmailrc = tmp.path().join("fetchmailrc");
        write_private(
            &fetchmailrc,
            &format!(
                "set no syslog\nset no bouncemail\nset invisible\n\
                 poll localhost with proto POP3 port {port} timeout 30 uidl\n\
                 \tuser \"{USER}\" there with password \"{PASS}\"\n\
                 \tsslproto 'TLS1.2+' sslcertck sslcertfile \"{cert}\"\n\
                 \tno rewrite\n\tmda \"cat > $(mktemp {out}/msg.XXXXXXXXXX)\"\n\tkeep\n",
                port = pop3.port(),
                cert = cert.display(),
                out = tmp.path().join("fetchmail-out").display(),
            ),
        );
        Clients {
            tmp,
            mpoprc,
            fetchmailrc,
        }
    }

    /// mpop once; returns the RETRs it sent.
    fn mpop(&self) -> (usize, Run) {
        let mut cmd = Command::new("mpop");
        cmd.env("HOME", self.tmp.path())
            .env("LC_ALL", "C")
            .env("TMPDIR", self.tmp.path())
            .arg("-C")
            .arg(&self.mpoprc)
            .args(["--debug", "test"]);
        let r = run_bounded(cmd, LIMIT, self.tmp.path());
        assert!(r.ok(), "mpop failed\n{}", r.log());
        let retrs = r
            .stdout
            .lines()
            .chain(r.stderr.lines())
            .filter_map(|l| l.strip_prefix("--> "))
            .filter(|c| c.starts_with("RETR"))
            .count();
        (retrs, r)
    }

    /// fetchmail once; returns its downloads (RETR, or TOP in keep mode).
    fn fetchmail(&self) -> (usize, Run) {
        let mut cmd = Command::new("fetchmail");
        cmd.env_remove("FETCHMAILUSER")
            .env_remove("LOGNAME")
            .env_remove("USER")
            .env("HOME", self.tmp.path())
            .env("LC_ALL", "C")
            .env("FETCHMAILHOME", self.tmp.path())
            .env("TMPDIR", self.tmp.path())
            .arg("-f")
            .arg(&self.fetchmailrc)
            .arg("--pidfile")
            .arg(self.tmp.path().join("fetchmail.pid"))
            .arg("--idfile")
            .arg(self.tmp.path().join("fetchids"))
            .args(["--nodetach", "-v", "-v", "localhost"]);
        let r = run_bounded(cmd, LIMIT, self.tmp.path());
        // 0: mail fetched, 1: no new mail.
        assert!(
            matches!(r.status.code(), Some(0 | 1)),
            "fetchmail failed\n{}",
            r.log()
        );
        let downloads = r
            .stdout
            .lines()
            .chain(r.stderr.lines())
            .filter_map(|l| l.split_once("POP3> ").map(|(_, c)| c))
            .filter(|c| c.starts_with("RETR ") || c.starts_with("TOP "))
            .count();
        (downloads, r)
    }

    fn mpop_store(&self) -> Vec<(PathBuf, Vec<u8>)> {
        maildir_messages(&self.tmp.path().join("mpop-Maildir"))
    }

    fn fetchmail_store(&self) -> Vec<(PathBuf, Vec<u8>)> {
        dir_files(&self.tmp.path().join("fetchmail-out"))
    }
}

fn contents(v: &[(PathBuf, Vec<u8>)]) -> Vec<Vec<u8>> {
    let mut c: Vec<Vec<u8>> = v.iter().map(|(_, b)| b.clone()).collect();
    c.sort();
    c
}

#[test]
fn switching_from_dovecot_downloads_nothing_again() {
    let mut cfg = DovecotConfig::with_user(USER, PASS);
    cfg.tls = true;
    cfg.extra_config = "pop3_uidl_format = %08Xu%08Xv\n".into();
    let dovecot = Dovecot::start(&cfg).expect("start dovecot");
    let msgs = corpus();
    for m in &msgs {
        dovecot.deliver_with_lda(USER, m).expect("dovecot-lda");
    }
    let pop3 = dovecot.pop3_addr();
    let cert = dovecot.cert_pem().expect("harness certificate");
    let dovecot_uidls = uidls(pop3);
    assert_eq!(dovecot_uidls.len(), msgs.len(), "{}", dovecot.log());

    // The clients fetch everything from Dovecot and remember it by UIDL.
    let clients = Clients::new(pop3, &cert);
    let (n, r) = clients.mpop();
    assert_eq!(n, msgs.len(), "mpop from Dovecot\n{}", r.log());
    let (n, r) = clients.fetchmail();
    assert_eq!(n, msgs.len(), "fetchmail from Dovecot\n{}", r.log());
    let mpop_before = contents(&clients.mpop_store());
    let fetchmail_before = contents(&clients.fetchmail_store());
    assert_eq!(mpop_before.len(), msgs.len());
    assert_eq!(fetchmail_before.len(), msgs.len());
    eprintln!(
        "from Dovecot: mpop downloaded {}, fetchmail {}",
        mpop_before.len(),
        fetchmail_before.len()
    );

    // The switch.
    stop_dovecot(&dovecot);
    let conf = dovecot.root().join("dovecot.conf");
    let work = tempfile::tempdir().unwrap();
    // The service user (nobody, from the users file's uid) must reach data_dir.
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let toml_path = work.path().join("correio.toml");
    let data = work.path().join("data");
    let o = correio(
        &[
            "import",
            "dovecot",
            "--from",
            conf.to_str().unwrap(),
            "--out",
            toml_path.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        b"",
    );
    let stderr = text(&o.stderr);
    assert!(o.status.success(), "import: {stderr}");
    assert!(
        !stderr.contains("warning:"),
        "the harness configuration translates completely: {stderr}"
    );
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    for want in [
        format!(
            "users_file = \"{}\"",
            dovecot.root().join("users").display()
        ),
        format!(
            "mail_location = \"maildir:{}/%u\"",
            dovecot.root().join("mail").display()
        ),
        format!("pop3 = [\"{pop3}\"]"),
        format!("cert = \"{}\"", cert.display()),
        "user = \"nobody\"".to_owned(),
        "pop3_uidl_format = %08Xu%08Xv".to_owned(),
    ] {
        assert!(toml.contains(&want), "{want:?} missing in\n{toml}");
    }
    let o = correio(&["check", "--config", toml_path.to_str().unwrap()], b"");
    assert!(
        o.status.success(),
        "check refused the translation: {}{}\n{toml}",
        text(&o.stdout),
        text(&o.stderr)
    );

    let child = Command::new(BIN)
        .args(["serve", "--config", toml_path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("correio serve");
    let mut server = Guard(child);
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let log = log.clone();
        let err = server.0.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let mut g = log.lock().unwrap();
                g.push_str(&l);
                g.push('\n');
            }
        });
    }
    let show = || log.lock().unwrap().clone();
    wait_greeting(pop3, &show);

    // Same Maildir, same UIDLs, octet for octet.
    let correio_uidls = uidls(pop3);
    assert_eq!(correio_uidls, dovecot_uidls, "UIDLs changed\n{}", show());
    assert!(
        correio_uidls
            .iter()
            .all(|(_, u)| u.len() == 16 && u.bytes().all(|b| b.is_ascii_hexdigit())),
        "{correio_uidls:?}"
    );

    // Nothing is downloaded again.
    let (n, r) = clients.mpop();
    assert_eq!(
        n,
        0,
        "mpop downloaded again from Correio\n{}\n{}",
        r.log(),
        show()
    );
    let (n, r) = clients.fetchmail();
    assert_eq!(n, 0, "fetchmail downloaded again\n{}\n{}", r.log(), show());
    assert_eq!(contents(&clients.mpop_store()), mpop_before);
    assert_eq!(contents(&clients.fetchmail_store()), fetchmail_before);
    eprintln!("from Correio after the switch: mpop downloaded 0, fetchmail 0");

    // A message delivered after the switch is the one they fetch.
    let late = b"From: sender@example.org\nSubject: after the switch\n\nnew\n";
    let o = correio(
        &[
            "deliver",
            "--config",
            toml_path.to_str().unwrap(),
            "--user",
            USER,
        ],
        late,
    );
    assert!(o.status.success(), "deliver: {}", text(&o.stderr));
    let (n, r) = clients.mpop();
    assert_eq!(n, 1, "mpop\n{}", r.log());
    let (n, r) = clients.fetchmail();
    assert_eq!(n, 1, "fetchmail\n{}", r.log());
    for store in [clients.mpop_store(), clients.fetchmail_store()] {
        assert_eq!(store.len(), msgs.len() + 1);
        assert_eq!(
            store
                .iter()
                .filter(|(_, b)| b.ends_with(b"\n\nnew\n"))
                .count(),
            1
        );
    }
    eprintln!("one message delivered after the switch: mpop downloaded 1, fetchmail 1");
    // The old UIDLs are still listed as before, the new one after them.
    let after = uidls(pop3);
    assert_eq!(after[..msgs.len()], dovecot_uidls[..]);
    assert_eq!(after.len(), msgs.len() + 1);
}

/// A configuration Dovecot itself rejects, or that cannot be read: exit status 1, the
/// file and line in the message, nothing written.
#[test]
fn unreadable_or_broken_configuration_exits_1_with_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let conf = d.path().join("dovecot.conf");
    let out = d.path().join("correio.toml");
    std::fs::write(
        &conf,
        "mail_location = maildir:~/Maildir\npassdb {\n  driver = passwd-file\n}\n}\n",
    )
    .unwrap();
    for extra in [&[][..], &["--no-doveconf"][..]] {
        let mut args = vec!["import", "dovecot", "--from", conf.to_str().unwrap()];
        args.extend(["--out", out.to_str().unwrap()]);
        args.extend(extra);
        let o = correio(&args, b"");
        assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains(&format!("{}:5: unexpected '}}'", conf.display())),
            "{}",
            text(&o.stderr)
        );
        assert!(!out.exists());
    }
    let missing = d.path().join("nothere.conf");
    let o = correio(
        &["import", "dovecot", "--from", missing.to_str().unwrap()],
        b"",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains(&format!("{}: cannot read", missing.display())),
        "{}",
        text(&o.stderr)
    );
    std::fs::write(&conf, "!include conf.d/*.conf\n").unwrap();
    let o = correio(
        &[
            "import",
            "dovecot",
            "--no-doveconf",
            "--from",
            conf.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains(&format!("{}:1: !include", conf.display())),
        "{}",
        text(&o.stderr)
    );
}

/// A typical virtual-mail server: SQL users, a static userdb, options Correio lacks.
/// Each one is a warning on stderr naming file and line, the exit status is 0, and
/// `correio check` accepts the translation.
const VIRTUAL: &str = "protocols = imap pop3 lmtp
listen = *
!include conf.d/*.conf
ssl = required
ssl_cert = <certs/mail.pem
ssl_key = <certs/mail.key
auth_mechanisms = plain login digest-md5
auth_default_realm = example.org
login_trusted_networks = 10.0.0.0/8
mail_location = maildir:~/Maildir
protocol pop3 {
  pop3_uidl_format = %08Xu%08Xv
  mail_max_userip_connections = 10
}
service pop3-login {
  inet_listener pop3 {
    port = 1110
  }
  inet_listener pop3s {
    port = 1995
    ssl = yes
  }
}
service lmtp {
  unix_listener /var/spool/postfix/private/dovecot-lmtp {
    mode = 0600
  }
}
";

fn write_virtual(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("conf.d")).unwrap();
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    std::fs::write(
        dir.join("conf.d/10-auth.conf"),
        "passdb {\n  driver = sql\n  args = /etc/dovecot/dovecot-sql.conf.ext\n}\n\
         passdb {\n  driver = passwd-file\n  args = scheme=SHA512-CRYPT username_format=%n users\n}\n\
         userdb {\n  driver = static\n  args = uid=nobody gid=nogroup home=/var/vmail/%d/%n\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("conf.d/90-misc.conf"),
        "pop3_enable_last = yes\nmail_plugins = $mail_plugins zlib\n",
    )
    .unwrap();
    // A real pair, so `correio check` can load it.
    let o = correio(
        &["cert", "--data", dir.join("certdata").to_str().unwrap()],
        b"",
    );
    assert!(o.status.success(), "cert: {}", text(&o.stderr));
    std::fs::copy(
        dir.join("certdata/tls/cert.pem"),
        dir.join("certs/mail.pem"),
    )
    .unwrap();
    std::fs::copy(dir.join("certdata/tls/key.pem"), dir.join("certs/mail.key")).unwrap();
    std::fs::write(dir.join("users"), "alice:{PLAIN}pw::::::\n").unwrap();
    let conf = dir.join("dovecot.conf");
    std::fs::write(&conf, VIRTUAL).unwrap();
    conf
}

#[test]
fn unsupported_settings_are_warnings_and_check_accepts_the_result() {
    let d = tempfile::tempdir().unwrap();
    let conf = write_virtual(d.path());
    let c = conf.display().to_string();
    let dir = d.path().display().to_string();
    for mode in ["--no-doveconf", "--quiet"] {
        let out = d.path().join(format!("correio{mode}.toml"));
        let mut args = vec![
            "import",
            "dovecot",
            "--from",
            &c,
            "--out",
            out.to_str().unwrap(),
        ];
        if mode == "--no-doveconf" {
            args.push(mode);
        }
        let o = correio(&args, b"");
        let stderr = text(&o.stderr);
        assert!(o.status.success(), "{stderr}");
        if mode == "--no-doveconf" {
            for want in [
                format!(
                    "warning: {dir}/conf.d/10-auth.conf:1: passdb {{ driver = sql  args = /etc/dovecot/dovecot-sql.conf.ext }}: Correio has no SQL user database yet (issue #11)",
                ),
                format!(
                    "warning: {dir}/dovecot.conf:7: auth_mechanisms: digest-md5 is not supported"
                ),
                format!(
                    "warning: {dir}/conf.d/90-misc.conf:1: pop3_enable_last = yes: not supported"
                ),
                "mail_plugins =  zlib".to_owned(),
                "zlib: Correio reads mail files as they are".to_owned(),
            ] {
                assert!(stderr.contains(&want), "{want:?} not in\n{stderr}");
            }
        }
        let toml = std::fs::read_to_string(&out).unwrap();
        assert!(
            toml.contains("# NOT TRANSLATED: passdb { driver = sql"),
            "{toml}"
        );
        for want in [
            "mail_location = \"maildir:/var/vmail/%d/%n/Maildir\"",
            "user = \"nobody\"",
            "allow_cleartext_login = false",
            "pop3 = [\"0.0.0.0:1110\"]",
            "pop3s = [\"0.0.0.0:1995\"]",
            "lmtp = \"unix:/var/spool/postfix/private/dovecot-lmtp\"",
            "mechanisms = [\"PLAIN\", \"LOGIN\"]",
            "username_format = \"%Ln\"",
            "default_domain = \"example.org\"",
            "trusted_networks = [\"10.0.0.0/8\"]",
        ] {
            assert!(toml.contains(want), "{want:?} not in\n{toml}");
        }
        assert!(
            toml.contains(&format!("users_file = \"{dir}/conf.d/users\""))
                || toml.contains(&format!("users_file = \"{dir}/users\"")),
            "{toml}"
        );
        let o = correio(&["check", "--config", out.to_str().unwrap()], b"");
        assert!(
            o.status.success(),
            "check: {}{}\n{toml}",
            text(&o.stdout),
            text(&o.stderr)
        );
    }
}

/// Dovecot's own reading (`doveconf -n`) and this parser's give the same translation:
/// the parser is checked against Dovecot on includes, `$variables`, protocol blocks,
/// quoting and continuation lines.
#[test]
fn doveconf_and_the_parser_agree() {
    require("doveconf", "dovecot-core");
    let d = tempfile::tempdir().unwrap();
    let conf = write_virtual(d.path());
    let mut conf_text = std::fs::read_to_string(&conf).unwrap();
    conf_text.push_str(
        "login_greeting = \"POP3 # ready\" # a comment\n\
         login_trusted_networks = 10.0.0.0/8 \\\n  192.0.2.0/24\n",
    );
    std::fs::write(&conf, conf_text).unwrap();
    let mut tables = Vec::new();
    for mode in ["--no-doveconf", "--doveconf=doveconf"] {
        let o = correio(
            &["import", "dovecot", "--from", conf.to_str().unwrap(), mode],
            b"",
        );
        assert!(o.status.success(), "{}", text(&o.stderr));
        let t: toml::Table = text(&o.stdout).parse().unwrap();
        tables.push(t);
    }
    assert_eq!(tables[0], tables[1]);
    let pop3 = tables[0]["pop3"].as_table().unwrap();
    assert_eq!(pop3["greeting"].as_str(), Some("POP3 # ready"));
    assert_eq!(
        tables[0]["trusted_networks"].as_array().unwrap().len(),
        2,
        "{:?}",
        tables[0]
    );
    // The header says which reading it was.
    let o = correio(
        &["import", "dovecot", "--from", conf.to_str().unwrap()],
        b"",
    );
    assert!(text(&o.stdout).contains("read through `doveconf -n -c"));
}

#[test]
fn out_file_is_not_replaced_without_force() {
    let d = tempfile::tempdir().unwrap();
    let conf = d.path().join("dovecot.conf");
    std::fs::write(&conf, "mail_location = maildir:/var/mail/%u\n").unwrap();
    let out = d.path().join("correio.toml");
    std::fs::write(&out, "# mine\n").unwrap();
    let args = [
        "import",
        "dovecot",
        "--no-doveconf",
        "--from",
        conf.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let o = correio(&args, b"");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("exists: not replaced"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "# mine\n");
    let mut forced = args.to_vec();
    forced.push("--force");
    let o = correio(&forced, b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .contains("mail_location = \"maildir:/var/mail/%u\"")
    );
}
