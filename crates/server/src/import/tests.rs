//! The translator on configurations an admin has: each mapping of the table in the
//! module docs, and the warnings for what cannot be translated.

use super::*;

/// Users file text and a few accounts, like a Debian system.
struct TestEnv(Option<&'static str>);

impl Env for TestEnv {
    fn read_users(&self, _: &Path) -> Result<String, String> {
        self.0
            .map(str::to_owned)
            .ok_or_else(|| "No such file".into())
    }
    fn user_by_uid(&self, uid: u32) -> Option<(String, u32)> {
        match uid {
            65534 => Some(("nobody".into(), 65534)),
            5000 => Some(("vmail".into(), 5000)),
            0 => Some(("root".into(), 0)),
            _ => None,
        }
    }
    fn user_by_name(&self, name: &str) -> Option<(u32, u32)> {
        match name {
            "vmail" => Some((5000, 5000)),
            "nobody" => Some((65534, 65534)),
            _ => None,
        }
    }
    fn group_by_gid(&self, gid: u32) -> Option<String> {
        match gid {
            8 => Some("mail".into()),
            65534 => Some("nogroup".into()),
            _ => None,
        }
    }
}

fn run(conf: &str, users: Option<&'static str>) -> (Translation, Config) {
    let path = Path::new("/etc/dovecot/dovecot.conf");
    let mut src = doveconf::FsSource;
    let items = doveconf::parse_str(conf, path, &mut src).expect("parses");
    let t = translate(
        &items,
        path,
        Path::new("/var/lib/correio"),
        &TestEnv(users),
        "test",
    );
    let c = Config::from_toml(&t.toml, &Overrides::default())
        .unwrap_or_else(|e| panic!("{e}\n{}", t.toml));
    (t, c)
}

fn warned(t: &Translation, needle: &str) -> bool {
    t.warnings.iter().any(|w| w.contains(needle))
}

/// The configuration testkit's Dovecot harness writes (a passwd-file of `{PLAIN}`
/// users owned by nobody, Maildirs per user, POP3 and POP3S on loopback).
const HARNESS: &str = "base_dir = /tmp/d/run
state_dir = /tmp/d/state
log_path = /tmp/d/dovecot.log
protocols = pop3
listen = 127.0.0.1
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:/tmp/d/mail/%u
pop3_lock_session = yes
first_valid_uid = 1
mail_privileged_group =
default_login_user = dovenull
default_internal_user = dovecot
passdb {
  driver = passwd-file
  args = scheme=PLAIN /tmp/d/users
}
userdb {
  driver = passwd-file
  args = /tmp/d/users
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = 40110
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = 40995
    ssl = yes
  }
}
ssl = yes
ssl_cert = </tmp/d/cert.pem
ssl_key = </tmp/d/key.pem
pop3_uidl_format = %08Xu%08Xv
";

const HARNESS_USERS: &str = "alice:{PLAIN}pw:65534:65534::/tmp/d/home/alice::\n\
                             bob:{PLAIN}pw2:65534:65534::/tmp/d/home/bob::\n";

#[test]
fn the_test_harness_configuration_translates_completely() {
    let (t, c) = run(HARNESS, Some(HARNESS_USERS));
    assert!(t.warnings.is_empty(), "{:#?}", t.warnings);
    assert_eq!(c.users_file, Path::new("/tmp/d/users"));
    assert_eq!(c.mail_location, "maildir:/tmp/d/mail/%u");
    assert_eq!(c.tls_cert, Path::new("/tmp/d/cert.pem"));
    assert_eq!(c.tls_key, Path::new("/tmp/d/key.pem"));
    assert!(c.tls_explicit);
    assert_eq!(c.pop3, ["127.0.0.1:40110".parse().unwrap()]);
    assert_eq!(c.pop3s, ["127.0.0.1:40995".parse().unwrap()]);
    assert_eq!(c.mechanisms, ["PLAIN", "LOGIN"]);
    assert!(c.allow_cleartext_login);
    assert_eq!(c.username.format(), "%Lu");
    assert_eq!(c.run_as_user.as_deref(), Some("nobody"));
    assert_eq!(c.run_as_group, None, "nogroup is nobody's own group");
    assert_eq!(c.data_dir, Path::new("/var/lib/correio"));
    // Every value says where it came from.
    assert!(
        t.toml.contains("# from passdb { driver = passwd-file  args = scheme=PLAIN /tmp/d/users } (/etc/dovecot/dovecot.conf:14)\nusers_file = \"/tmp/d/users\""),
        "{}",
        t.toml
    );
    assert!(
        t.toml
            .contains("ssl_cert = </tmp/d/cert.pem (/etc/dovecot/dovecot.conf:34)")
    );
    assert!(
        t.notes.iter().any(|n| n.contains("dovecot-uidlist")),
        "{:#?}",
        t.notes
    );
    assert!(
        t.notes
            .iter()
            .any(|n| n.contains("scheme=PLAIN: every password"))
    );
}

/// Debian's own dovecot.conf as installed: system users through PAM, mbox.
#[test]
fn debian_default_warns_about_pam_system_users_and_mbox() {
    let conf = "mail_location = mbox:~/mail:INBOX=/var/mail/%u
mail_privileged_group = mail
namespace inbox {
  inbox = yes
  location =
  mailbox Trash {
    special_use = \\Trash
  }
  prefix =
}
passdb {
  driver = pam
}
protocols = \" imap lmtp pop3\"
ssl_cert = </etc/dovecot/private/dovecot.pem
ssl_client_ca_dir = /etc/ssl/certs
ssl_dh = </usr/share/dovecot/dh.pem
ssl_key = </etc/dovecot/private/dovecot.key
userdb {
  driver = passwd
}
";
    let (t, c) = run(conf, None);
    assert!(
        warned(
            &t,
            "/etc/dovecot/dovecot.conf:11: passdb { driver = pam }: passdb driver pam is not supported"
        ),
        "{:#?}",
        t.warnings
    );
    assert!(warned(
        &t,
        "system accounts are not a Correio user database"
    ));
    assert!(warned(&t, "mbox UIDLs differ"));
    assert!(t.toml.contains("# NOT TRANSLATED: passdb { driver = pam }"));
    assert_eq!(c.mail_location, "mbox:~/mail:INBOX=/var/mail/%u");
    // Dovecot's defaults: 110 and 995 on every address, plaintext only over TLS.
    assert_eq!(
        c.pop3,
        ["0.0.0.0:110".parse().unwrap(), "[::]:110".parse().unwrap()]
    );
    assert_eq!(
        c.pop3s,
        ["0.0.0.0:995".parse().unwrap(), "[::]:995".parse().unwrap()]
    );
    assert!(!c.allow_cleartext_login);
    assert_eq!(c.mechanisms, ["PLAIN"]);
    assert_eq!(c.tls_key, Path::new("/etc/dovecot/private/dovecot.key"));
    // Nothing irrelevant is reported.
    assert!(!warned(&t, "ssl_dh") && !warned(&t, "mail_privileged_group"));
    assert!(t.notes.iter().any(|n| n.contains("LMTP")), "{:#?}", t.notes);
}

/// The usual virtual-user setup: one vmail owner, homes from a template.
#[test]
fn virtual_users_with_a_static_userdb() {
    let conf = "passdb {
  driver = passwd-file
  args = scheme=SHA512-CRYPT username_format=%n /etc/dovecot/users
}
userdb {
  driver = static
  args = uid=vmail gid=mail home=/var/vmail/%d/%n
}
mail_location = maildir:~/Maildir
auth_default_realm = example.org
login_trusted_networks = 10.0.0.0/8 192.0.2.7
auth_failure_delay = 3 secs
login_greeting = Mail ready.
hostname = mail.example.org
";
    let users = "alice:$6$salt$hash::::::\nbob:{PLAIN}x::::::\ncarol:$6$s$h::::::\n";
    let (t, c) = run(conf, Some(users));
    assert_eq!(c.mail_location, "maildir:/var/vmail/%d/%n/Maildir");
    assert_eq!(c.run_as_user.as_deref(), Some("vmail"));
    assert_eq!(c.run_as_group.as_deref(), Some("mail"));
    assert_eq!(c.username.format(), "%Ln", "%Lu then the file's %n");
    assert_eq!(c.username.default_domain.as_deref(), Some("example.org"));
    assert_eq!(c.trusted_networks.len(), 2);
    assert_eq!(c.throttle.failure_delay, std::time::Duration::from_secs(3));
    assert_eq!(c.greeting, "Mail ready.");
    assert_eq!(c.hostname, "mail.example.org");
    // SHA512-CRYPT strings without a prefix are crypt(3) strings: read the same way.
    assert!(t.warnings.is_empty(), "{:#?}", t.warnings);
}

#[test]
fn sql_passdb_is_a_warning_and_a_comment_not_silence() {
    let conf = "passdb {\n  driver = sql\n  args = /etc/dovecot/dovecot-sql.conf.ext\n}\n\
                userdb {\n  driver = sql\n  args = /etc/dovecot/dovecot-sql.conf.ext\n}\n\
                mail_location = maildir:/var/vmail/%d/%n\n";
    let (t, c) = run(conf, None);
    assert!(
        warned(&t, "no SQL user database yet (issue #11)"),
        "{:#?}",
        t.warnings
    );
    assert!(warned(&t, "userdb driver sql is not supported"));
    assert!(
        t.toml.contains("# NOT TRANSLATED: passdb { driver = sql  args = /etc/dovecot/dovecot-sql.conf.ext } (/etc/dovecot/dovecot.conf:1): no SQL backend in Correio yet (issue #11)"),
        "{}",
        t.toml
    );
    // The header repeats the warnings.
    assert!(t.toml.contains("# Not translated (check these by hand):"));
    assert_eq!(c.mail_location, "maildir:/var/vmail/%d/%n");
}

#[test]
fn plaintext_policy_from_ssl_and_disable_plaintext_auth() {
    let (_, c) = run("disable_plaintext_auth = no\nssl = required\n", None);
    assert!(!c.allow_cleartext_login, "ssl = required wins");
    let (_, c) = run("disable_plaintext_auth = no\n", None);
    assert!(c.allow_cleartext_login);
    let (_, c) = run("disable_plaintext_auth = yes\n", None);
    assert!(!c.allow_cleartext_login);
    let (t, _) = run("ssl = required\nauth_mechanisms = plain cram-md5\n", None);
    assert!(
        warned(&t, "ssl = required also refused CRAM-MD5"),
        "{:#?}",
        t.warnings
    );
}

#[test]
fn listeners_disabled_moved_and_added() {
    let conf = "listen = *, ::
service pop3-login {
  inet_listener pop3 {
    port = 0
  }
  inet_listener pop3s {
    address = 192.0.2.1
    port = 9995
  }
  inet_listener extra {
    port = 1110
  }
  process_min_avail = 4
}
";
    let (t, c) = run(conf, None);
    assert_eq!(
        c.pop3,
        [
            "0.0.0.0:1110".parse().unwrap(),
            "[::]:1110".parse().unwrap()
        ]
    );
    assert_eq!(c.pop3s, ["192.0.2.1:9995".parse().unwrap()]);
    assert!(t.notes.iter().any(|n| n.contains("process_min_avail")));
    // ssl = no: no POP3S.
    let (_, c) = run("ssl = no\n", None);
    assert!(c.pop3s.is_empty());
    assert_eq!(c.pop3.len(), 2);
}

/// Listeners behind HAProxy become Correio's PROXY protocol listeners, trusted from
/// haproxy_trusted_networks; without that list they are left out (with a warning).
#[test]
fn haproxy_listeners() {
    let listeners = "service pop3-login {
  inet_listener pop3 {
    address = 10.0.0.2
    port = 10110
    haproxy = yes
  }
  inet_listener pop3s {
    address = 10.0.0.2
    port = 10995
    ssl = yes
    haproxy = yes
  }
}
";
    let (t, c) = run(
        &format!("haproxy_trusted_networks = 10.0.0.5 10.1.0.0/16\n{listeners}"),
        None,
    );
    assert!(!warned(&t, "haproxy"), "{:#?}", t.warnings);
    assert!(c.pop3.is_empty() && c.pop3s.is_empty());
    assert_eq!(c.pop3_proxy, ["10.0.0.2:10110".parse().unwrap()]);
    assert_eq!(c.pop3s_proxy, ["10.0.0.2:10995".parse().unwrap()]);
    assert_eq!(c.trusted_proxies.len(), 2);
    let (t, c) = run(listeners, None);
    assert!(
        warned(&t, "no haproxy_trusted_networks"),
        "{:#?}",
        t.warnings
    );
    assert!(c.pop3_proxy.is_empty() && c.pop3s_proxy.is_empty());
}

#[test]
fn lmtp_socket_for_postfix() {
    let conf = "protocols = pop3 lmtp
service lmtp {
  unix_listener /var/spool/postfix/private/dovecot-lmtp {
    mode = 0600
    user = postfix
  }
}
";
    let (_, c) = run(conf, None);
    assert_eq!(
        c.lmtp,
        Some(crate::config::LmtpAddr::Unix(
            "/var/spool/postfix/private/dovecot-lmtp".into()
        ))
    );
    let conf = "protocols = pop3 lmtp\nservice lmtp {\n  inet_listener lmtp {\n    address = 127.0.0.1\n    port = 24\n  }\n}\n";
    let (_, c) = run(conf, None);
    assert_eq!(
        c.lmtp,
        Some(crate::config::LmtpAddr::Tcp(
            "127.0.0.1:24".parse().unwrap()
        ))
    );
}

#[test]
fn uidl_formats() {
    let (t, _) = run("pop3_uidl_format = %08Xu%08Xv\n", None);
    assert!(!warned(&t, "pop3_uidl_format"), "{:#?}", t.warnings);
    let (t, _) = run("", None);
    assert!(
        t.notes
            .iter()
            .any(|n| n.contains("Dovecot's default") && n.contains("dovecot-uidlist"))
    );
    for f in ["%g", "%v.%u", "%f", "%m", "%u"] {
        let (t, _) = run(&format!("pop3_uidl_format = {f}\n"), None);
        assert!(
            warned(&t, "downloads every message once more"),
            "{f}: {:#?}",
            t.warnings
        );
    }
    let (t, _) = run(
        "mail_location = maildir:~/Maildir:CONTROL=/var/dovecot/%u\n",
        None,
    );
    assert!(
        warned(&t, "CONTROL=/var/dovecot/%u keeps dovecot-uidlist there"),
        "{:#?}",
        t.warnings
    );
    let (t, _) = run("protocol pop3 {\n  pop3_uidl_format = %g\n}\n", None);
    assert!(
        warned(&t, "pop3_uidl_format = %g"),
        "protocol pop3 applies: {:#?}",
        t.warnings
    );
    let (t, _) = run("protocol imap {\n  pop3_uidl_format = %g\n}\n", None);
    assert!(
        !warned(&t, "pop3_uidl_format"),
        "protocol imap does not: {:#?}",
        t.warnings
    );
}

#[test]
fn mechanisms_and_apop() {
    let (t, c) = run(
        "auth_mechanisms = plain login cram-md5 digest-md5 apop scram-sha-256\n",
        None,
    );
    assert_eq!(
        c.mechanisms,
        ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"]
    );
    assert!(c.apop);
    assert!(warned(&t, "digest-md5 is not supported"));
}

#[test]
fn mail_locations_correio_cannot_expand_or_read() {
    let (t, c) = run("mail_location = maildir:/srv/%r/%u\n", None);
    assert!(warned(&t, "cannot be translated"), "{:#?}", t.warnings);
    assert!(
        c.mail_location
            .starts_with("maildir:/var/lib/correio/mail/")
    );
    let (t, _) = run("mail_location = mdbox:~/mdbox\n", None);
    assert!(warned(&t, "the mdbox storage format is not supported"));
    let (t, _) = run("", None);
    assert!(warned(&t, "mail_location is not set"));
    let (t, c) = run(
        "mail_location = maildir:/var/mail/%d/%n:INBOX=/var/mail/%d/%n/inbox:LAYOUT=fs\n",
        None,
    );
    assert_eq!(c.mail_location, "maildir:/var/mail/%d/%n/inbox");
    assert!(!warned(&t, "mail_location"), "{:#?}", t.warnings);
    // ~ with users that have no home.
    let conf =
        "passdb {\n driver = passwd-file\n args = /u\n}\nmail_location = maildir:~/Maildir\n";
    let (t, _) = run(
        conf,
        Some("alice:{PLAIN}x::::/home/alice::\nbob:{PLAIN}x::::::\n"),
    );
    assert!(
        warned(
            &t,
            "no home in the users file, so their mailbox cannot be found: bob"
        ),
        "{:#?}",
        t.warnings
    );
}

#[test]
fn users_file_checks() {
    // scheme=PLAIN with bare passwords: Correio would read them as crypt strings.
    let conf = "passdb {\n driver = passwd-file\n args = scheme=PLAIN users\n}\n";
    let (t, c) = run(
        conf,
        Some("# users\nalice:secret::::::\nbob:{PLAIN}x::::::\n"),
    );
    assert_eq!(
        c.users_file,
        Path::new("/etc/dovecot/users"),
        "relative to the conf"
    );
    assert!(
        warned(
            &t,
            "1 password(s) without a {SCHEME} prefix (line 2): Dovecot read them as {PLAIN}"
        ),
        "{:#?}",
        t.warnings
    );
    // Per-user uids.
    let (t, c) = run(
        conf,
        Some("alice:{PLAIN}x:1000:1000::/home/alice::\nbob:{PLAIN}x:1001:1001::/home/bob::\n"),
    );
    assert!(warned(&t, "users have different uids"), "{:#?}", t.warnings);
    assert_eq!(c.run_as_user, None);
    // Unreadable.
    let (t, _) = run(conf, None);
    assert!(warned(
        &t,
        "cannot read the users file /etc/dovecot/users (No such file)"
    ));
    // A users file per domain.
    let conf = "passdb {\n driver = passwd-file\n args = /etc/dovecot/users.%d\n}\n";
    let (t, _) = run(conf, None);
    assert!(warned(
        &t,
        "a users file per user or domain (/etc/dovecot/users.%d) is not supported"
    ));
}

#[test]
fn unknown_settings_and_sections_are_warnings_with_file_and_line() {
    let conf = "mail_location = maildir:/m/%u\nfrobnicate = 1\nlocal 10.0.0.1 {\n  ssl_cert = </x\n}\nimap_idle_notify_interval = 2 mins\n";
    let (t, _) = run(conf, None);
    assert!(
        t.warnings
            .contains(&"/etc/dovecot/dovecot.conf:2: frobnicate = 1: not translated".to_owned()),
        "{:#?}",
        t.warnings
    );
    assert!(warned(
        &t,
        "/etc/dovecot/dovecot.conf:3: local 10.0.0.1: settings per address"
    ));
    assert!(!warned(&t, "imap_idle"));
    // Secrets are never printed.
    let (t, _) = run(
        "ssl_cert = </c\nssl_key = </k\nssl_key_password = hunter2\n",
        None,
    );
    assert!(
        warned(&t, "ssl_key_password = (hidden)"),
        "{:#?}",
        t.warnings
    );
    assert!(!t.toml.contains("hunter2"));
    let conf = "passdb {\n  driver = static\n  args = user=u password=hunter2\n}\n\
                mail_crypt_private_password = hunter2\nsecret_thing = hunter2\n";
    let (t, _) = run(conf, None);
    assert!(
        t.warnings.iter().all(|w| !w.contains("hunter2")),
        "{:#?}",
        t.warnings
    );
    assert!(!t.toml.contains("hunter2"), "{}", t.toml);
    assert!(
        warned(&t, "args = user=u password=(hidden)"),
        "{:#?}",
        t.warnings
    );
}

#[test]
fn toml_values_are_quoted() {
    let conf = "mail_location = maildir:/srv/\"q\"\\x/%u\nlogin_greeting = 'It''s \"ready\"'\n";
    let (_, c) = run(conf, None);
    assert_eq!(c.mail_location, "maildir:/srv/\"q\"\\x/%u");
}

#[test]
fn durations() {
    assert_eq!(dovecot_duration("2 secs"), Some(2000));
    assert_eq!(dovecot_duration("500ms"), Some(500));
    assert_eq!(dovecot_duration("1 min"), Some(60_000));
    assert_eq!(dovecot_duration("5"), Some(5000));
    assert_eq!(dovecot_duration("x"), None);
    let (_, c) = run("auth_failure_delay = 10 secs\n", None);
    assert_eq!(
        c.throttle.failure_delay_max,
        std::time::Duration::from_secs(10)
    );
}
