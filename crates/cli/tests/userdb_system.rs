//! System users through PAM (issue #11), as an admin sets it up: run as root, `user =`
//! a service account (in the group `mail`), `[auth] backend = "system"`. A real account
//! made with `useradd` and `chpasswd` logs in through PAM — which runs in the
//! privileged helper, since checking `/etc/shadow` needs root and the sessions do not
//! have it — and gets the mbox in a spool directory laid out as Debian's `/var/mail`
//! (2775 root:mail, the mbox 0660 user:mail), into which LMTP appends with dot-locking.
//! curl and mpop fetch byte-exact; a wrong password and an unknown user answer alike;
//! accounts below `first_valid_uid` (root, the service account) are refused; hostile
//! names never log in; the helper gone gives `-ERR [SYS/TEMP]`, never "wrong
//! password". Root only (creates accounts); skipped otherwise with a message.

mod userdb_support;

use std::os::unix::fs::PermissionsExt as _;

use correio_testkit::sys::TempAccount;
use userdb_support::*;

#[test]
fn system_users_through_pam_in_the_privileged_helper() {
    if !correio_testkit::daemon::is_root() {
        eprintln!("skipped: needs root (creates accounts with useradd)");
        return;
    }
    let dir = open_dir();
    let root = dir.path();
    let service = TempAccount::create("cr-svc-", true, &["--groups", "mail"]);
    let user = TempAccount::create("cr-u", false, &["--no-create-home"]);
    user.set_password("Pam-pw-1");
    let mail_gid = nix::unistd::Group::from_name("mail")
        .unwrap()
        .expect("group mail")
        .gid;
    // The spool as Debian keeps /var/mail.
    let spool = root.join("spool");
    std::fs::create_dir(&spool).unwrap();
    nix::unistd::chown(&spool, Some(nix::unistd::Uid::from_raw(0)), Some(mail_gid)).unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o2775)).unwrap();
    let mbox = spool.join(&user.name);
    std::fs::write(&mbox, b"").unwrap();
    nix::unistd::chown(
        &mbox,
        Some(nix::unistd::Uid::from_raw(user.uid)),
        Some(mail_gid),
    )
    .unwrap();
    std::fs::set_permissions(&mbox, std::fs::Permissions::from_mode(0o660)).unwrap();

    let s = Served::start_with(
        root,
        &format!("user = \"{}\"", service.name),
        &format!(
            "[auth]\nbackend = \"system\"\n[auth.system]\nmail_location = \"mbox:{}/%u\"\n",
            spool.display()
        ),
    );
    let name = user.name.as_str();
    let mail = corpus("pam");
    for m in &mail {
        let r = s.lmtp(name, m);
        assert!(r.contains("250 2.0.0"), "LMTP to {name}: {r}\n{}", s.log());
    }
    assert!(s.rcpt("no-such-account-here").starts_with("550 5.1.1"));
    let meta = std::fs::metadata(&mbox).unwrap();
    assert!(meta.len() > 0, "the mbox got the mail");
    {
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(meta.uid(), user.uid, "still the user's mbox");
        assert_eq!(meta.mode() & 0o777, 0o660);
    }
    let want: Vec<Vec<u8>> = mail.iter().map(|m| as_served(m)).collect();
    let got = curl_fetch(&s, name, "Pam-pw-1").unwrap_or_else(|e| panic!("{e}\n{}", s.log()));
    assert_messages("curl through PAM", &want, &got);
    let want: Vec<Vec<u8>> = mail.iter().map(|m| lf(&as_served(m))).collect();
    assert_messages(
        "mpop through PAM",
        &want,
        &mpop_fetch(&s, name, "Pam-pw-1", "pam").unwrap(),
    );

    let wrong = s.login_reply(name, "nope");
    assert!(wrong.starts_with("-ERR [AUTH]"), "{wrong}");
    assert_eq!(wrong, s.login_reply("no-such-account-here", "nope"));
    // Below first_valid_uid: refused without asking PAM (no oracle for root's
    // password), the same answer as any failure.
    assert_eq!(wrong, s.login_reply("root", "nope"));
    assert_eq!(wrong, s.login_reply(&service.name, "nope"));
    assert_hostile_names_refused(&s, "Pam-pw-1");
    // The challenge mechanisms are not offered with PAM.
    let capa = raw(s.pop3, "CAPA\r\nQUIT\r\n");
    let sasl = capa.lines().find(|l| l.starts_with("SASL")).unwrap_or("");
    assert!(sasl.contains("PLAIN") && !sasl.contains("CRAM"), "{capa}");

    // Every session process runs as the service account; the helper stays root.
    let server = s.daemon.pid();
    let mut helper = None;
    for pid in correio_testkit::sys::descendants(server) {
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.contains("--privileged-helper") {
            helper = Some(pid);
        }
    }
    let helper = helper.expect("the privileged helper runs");
    // Without the helper, PAM cannot answer: a temporary failure, not a wrong password.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Ready when the helper has exited (its socket is then closed: a request fails at
    // once, whether or not the reply thread has seen the end yet).
    let gone = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while correio_testkit::sys::alive(helper) {
        assert!(std::time::Instant::now() < gone, "the helper did not exit");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let r = s.login_reply(name, "another-password");
    assert!(
        r.starts_with("-ERR [SYS/TEMP]"),
        "helper gone: {r}\n{}",
        s.log()
    );
    let log = s.log();
    assert!(!log.contains("Pam-pw-1"), "password in the log:\n{log}");
}
