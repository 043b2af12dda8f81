use std::fs;
use std::os::unix::fs::PermissionsExt as _;

use super::*;
use crate::scheme::{Scheme, StoredSecret};

const DOVECOT_LINE: &str = "jane@example.org:{SHA512-CRYPT}$6$x$y:1000:1000:Jane Doe:/home/jane:/bin/false:userdb_mail=maildir:~/Maildir:LAYOUT=fs userdb_quota_rule=*:storage=1G nopassword=n";

#[test]
fn parses_a_full_dovecot_line() {
    let r = UserRecord::parse_line(DOVECOT_LINE).unwrap().unwrap();
    assert_eq!(r.name, "jane@example.org");
    assert_eq!(r.password.as_ref().unwrap().scheme(), &Scheme::Sha512Crypt);
    assert_eq!(
        (r.uid.as_str(), r.gid.as_str(), r.gecos.as_str()),
        ("1000", "1000", "Jane Doe")
    );
    assert_eq!(
        (r.home.as_str(), r.shell.as_str()),
        ("/home/jane", "/bin/false")
    );
    assert_eq!(r.mail_location(), Some("maildir:~/Maildir:LAYOUT=fs"));
    assert_eq!(r.field("userdb_quota_rule"), Some("*:storage=1G"));
    assert!(!r.flag("nopassword"));
    assert_eq!(r.home_dir(), Some("/home/jane"));
    assert_eq!(r.to_line(), DOVECOT_LINE);
}

#[test]
fn short_lines_comments_and_blank_lines() {
    assert_eq!(
        UserRecord::parse_line("# a comment: with colons").unwrap(),
        None
    );
    assert_eq!(UserRecord::parse_line("   ").unwrap(), None);
    assert_eq!(UserRecord::parse_line("").unwrap(), None);
    let r = UserRecord::parse_line("bob:{PLAIN}pw\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(r.password.unwrap().plaintext(), Some(&b"pw"[..]));
    let r = UserRecord::parse_line("carol").unwrap().unwrap();
    assert!(r.password.is_none() && r.extra.is_empty());
    let r = UserRecord::parse_line("dave:::::::nopassword userdb_home=/srv/d")
        .unwrap()
        .unwrap();
    assert!(r.nopassword());
    assert_eq!(r.home_dir(), Some("/srv/d"));
    let r = UserRecord::parse_line("eve:{PLAIN}x::::::nologin reason=bye")
        .unwrap()
        .unwrap();
    assert!(r.nologin());
    assert_eq!(r.field("reason"), Some("bye"));
    // nopassword only counts with an empty password field, as in Dovecot.
    assert!(
        !UserRecord::parse_line("f:{PLAIN}x::::::nopassword")
            .unwrap()
            .unwrap()
            .nopassword()
    );
    assert_eq!(UserRecord::parse_line(":pw"), Err(LineError::EmptyName));
    assert!(matches!(
        UserRecord::parse_line("../etc:pw"),
        Err(LineError::BadName(_))
    ));
    assert!(matches!(
        UserRecord::parse_line("a%d:pw"),
        Err(LineError::BadName(_))
    ));
}

#[test]
fn unknown_schemes_load_but_never_verify() {
    let r = UserRecord::parse_line("old:{DIGEST-MD5}abcdef")
        .unwrap()
        .unwrap();
    assert_eq!(
        r.password.as_ref().unwrap().scheme(),
        &Scheme::Unknown("DIGEST-MD5".into())
    );
    assert!(r.password.as_ref().unwrap().verify(b"x").is_err());
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
}

/// Makes the file look changed even within one mtime tick (some filesystems have
/// coarse timestamps): a rename gives a new inode.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

#[test]
fn load_lookup_and_case_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    write(
        &path,
        "# users\nAlice:{PLAIN}a\nbob:{PLAIN}b\nbob:{PLAIN}second\n\n",
    );
    let db = UserDb::load(&path).unwrap();
    assert_eq!(db.len(), 2);
    assert!(db.lookup("Alice").is_some());
    assert!(db.lookup("alice").is_none(), "exact by default");
    assert_eq!(
        db.lookup("bob").unwrap().password.unwrap().plaintext(),
        Some(&b"b"[..]),
        "first line wins"
    );
    let db = UserDb::load_with(
        &path,
        UserDbOptions {
            case_insensitive: true,
        },
    )
    .unwrap();
    assert_eq!(db.lookup("ALICE").unwrap().name, "Alice");
    assert_eq!(
        db.records()
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["Alice", "bob"]
    );
}

#[test]
fn reloads_on_change_and_keeps_the_old_version_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    write(&path, "a:{PLAIN}1\n");
    let db = UserDb::load(&path).unwrap();
    assert!(!db.reload_if_changed().unwrap());
    replace(&path, "a:{PLAIN}1\nb:{PLAIN}2\n");
    assert!(db.lookup("b").is_some(), "lookup reloads a changed file");
    replace(&path, "a:{PLAIN}1\n../x:{PLAIN}2\n");
    let err = db.reload_if_changed().unwrap_err();
    assert!(
        err.to_string().contains(":2:"),
        "error names the line: {err}"
    );
    assert!(
        db.lookup("b").is_some(),
        "the last good version stays in service"
    );
    assert!(
        !db.reload_if_changed().unwrap(),
        "a broken version is reported once, not re-parsed on every lookup"
    );
    fs::remove_file(&path).unwrap();
    assert!(
        db.lookup("a").is_some(),
        "a removed file keeps the last version"
    );
    replace(&path, "c:{PLAIN}3\n");
    assert!(db.lookup("c").is_some() && db.lookup("a").is_none());
    replace(&path, "c:\u{1}bad\n");
    // A control character inside a line is corruption: the old version stays.
    assert!(matches!(
        db.reload_if_changed(),
        Err(UserDbError::Line {
            error: LineError::ControlChar,
            ..
        })
    ));
    fs::write(&path, b"x:\xff\xfe\n").unwrap();
    assert!(matches!(db.reload(), Err(UserDbError::NotUtf8 { .. })));
    assert!(db.lookup_cached("c").is_some());
}

#[test]
fn missing_file_and_oversized_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    assert!(matches!(UserDb::load(&path), Err(UserDbError::Io { .. })));
    let db = UserDb::load_or_empty(&path, UserDbOptions::default()).unwrap();
    assert!(db.is_empty());
    write(&path, "late:{PLAIN}x\n");
    assert!(
        db.lookup("late").is_some(),
        "picks the file up once it appears"
    );
    let f = fs::File::create(&path).unwrap();
    f.set_len(MAX_USERS_FILE_BYTES + 1).unwrap();
    assert!(matches!(db.reload(), Err(UserDbError::TooLarge { .. })));
}

#[test]
fn edits_keep_other_lines_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    let original = format!(
        "# managed by hand\n{DOVECOT_LINE}\n\n   # indented comment\nzed:{{PLAIN}}z::::::userdb_mail=mbox:~/mail\n"
    );
    write(&path, &original);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    add_user(
        &path,
        &UserRecord::new("new@example.org", Some(StoredSecret::parse("{PLAIN}n"))),
    )
    .unwrap();
    let after_add = fs::read_to_string(&path).unwrap();
    assert_eq!(
        after_add,
        format!("{original}new@example.org:{{PLAIN}}n:::::\n")
    );
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640,
        "mode kept"
    );

    set_password(&path, "zed", &StoredSecret::parse("{PLAIN}changed")).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("zed:{PLAIN}changed::::::userdb_mail=mbox:~/mail\n"),
        "{text}"
    );
    assert!(text.starts_with(&format!(
        "# managed by hand\n{DOVECOT_LINE}\n\n   # indented comment\n"
    )));

    update_user(&path, "zed", |r| {
        r.set_field("userdb_home", Some("/srv/zed"))
    })
    .unwrap();
    let db = UserDb::load(&path).unwrap();
    assert_eq!(db.lookup("zed").unwrap().home_dir(), Some("/srv/zed"));
    assert_eq!(
        db.lookup("zed").unwrap().mail_location(),
        Some("mbox:~/mail")
    );

    delete_user(&path, "zed").unwrap();
    delete_user(&path, "new@example.org").unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        original.replace("zed:{PLAIN}z::::::userdb_mail=mbox:~/mail\n", "")
    );
    // No temp files left behind.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names.iter().all(|n| n == "users" || n == "users.lock"),
        "{names:?}"
    );
}

#[test]
fn edit_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    let rec = UserRecord::new("a", Some(StoredSecret::parse("{PLAIN}x")));
    add_user(&path, &rec).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600,
        "new file is 0600"
    );
    assert!(matches!(add_user(&path, &rec), Err(UserDbError::Exists(_))));
    assert!(matches!(
        set_password(&path, "b", &StoredSecret::parse("{PLAIN}y")),
        Err(UserDbError::NotFound(_))
    ));
    assert!(matches!(
        delete_user(&path, "b"),
        Err(UserDbError::NotFound(_))
    ));
    assert!(matches!(
        delete_user(&path, "a/b"),
        Err(UserDbError::BadName(_))
    ));
    let bad = UserRecord::new("x\ny", None);
    assert!(matches!(
        add_user(&path, &bad),
        Err(UserDbError::BadName(_))
    ));
    assert_eq!(fs::read_to_string(&path).unwrap(), "a:{PLAIN}x:::::\n");
}

#[test]
fn concurrent_edits_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    std::thread::scope(|s| {
        for t in 0..6 {
            let path = &path;
            s.spawn(move || {
                for i in 0..8 {
                    let rec = UserRecord::new(
                        &format!("u{t}-{i}"),
                        Some(StoredSecret::parse("{PLAIN}x")),
                    );
                    add_user(path, &rec).unwrap();
                }
            });
        }
    });
    let db = UserDb::load(&path).unwrap();
    assert_eq!(db.len(), 48);
}

#[test]
fn edits_refuse_broken_files_and_unwritable_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    write(&path, "ok:{PLAIN}x\n../bad:{PLAIN}y\n");
    let rec = UserRecord::new("new", Some(StoredSecret::parse("{PLAIN}n")));
    let err = add_user(&path, &rec).unwrap_err();
    assert!(matches!(err, UserDbError::Line { line: 2, .. }), "{err}");
    write(&path, "Bob:{PLAIN}x\n");
    assert!(
        matches!(add_user(&path, &UserRecord::new("bob", None)), Err(UserDbError::Exists(n)) if n == "Bob")
    );
    let mut r = UserRecord::new("carol", None);
    r.home = "/a:b".into();
    assert!(matches!(
        add_user(&path, &r),
        Err(UserDbError::BadRecord(_))
    ));
    let mut r = UserRecord::new("carol", None);
    r.set_field("userdb_mail", Some("maildir:/x y"));
    assert!(matches!(
        add_user(&path, &r),
        Err(UserDbError::BadRecord(_))
    ));
    let err = update_user(&path, "Bob", |r| r.gecos = "x\ny".into()).unwrap_err();
    assert!(matches!(err, UserDbError::BadRecord(_)));
    assert_eq!(fs::read_to_string(&path).unwrap(), "Bob:{PLAIN}x\n");
}

#[test]
fn crlf_files_and_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    write(&path, "# windows\r\na:{PLAIN}x\r\nb:{PLAIN}y\r\n");
    let db = UserDb::load(&path).unwrap();
    assert_eq!(
        db.lookup("a").unwrap().password.unwrap().plaintext(),
        Some(&b"x"[..])
    );
    add_user(
        &path,
        &UserRecord::new("c", Some(StoredSecret::parse("{PLAIN}z"))),
    )
    .unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "# windows\r\na:{PLAIN}x\r\nb:{PLAIN}y\r\nc:{PLAIN}z:::::\n",
        "untouched CRLF lines are kept byte for byte"
    );
    // Found by fuzzing: a field ending in CR cannot be written back unambiguously.
    assert_eq!(
        UserRecord::parse_line("a:x:::::sh\r\r"),
        Err(LineError::ControlChar)
    );
    assert_eq!(
        UserRecord::parse_line("a:x\0y"),
        Err(LineError::ControlChar)
    );
    assert!(
        UserRecord::parse_line("a:x::::::k=v\tflag")
            .unwrap()
            .unwrap()
            .flag("flag")
    );
    assert!(parse_users("a:x\n\nb:y").unwrap().len() == 2);
    assert!(parse_users("").unwrap().is_empty());
}
