//! The qmail checkpassword interface (issue #11): the escape hatch for user databases
//! nothing else speaks. The program here is a shell script written by the test that
//! follows the interface (descriptor 3: `user NUL password NUL timestamp NUL`; exit 0
//! after running its argument with `HOME` set, 1 refused, 111 temporary), so the test
//! can also make it fail temporarily and hang.

mod userdb_support;

use std::os::unix::fs::PermissionsExt as _;

use userdb_support::*;

#[test]
fn checkpassword_program() {
    let dir = open_dir();
    let root = dir.path();
    let down = root.join("down");
    let hang = root.join("hang");
    let prog = root.join("checkpassword");
    std::fs::write(
        &prog,
        format!(
            "#!/bin/sh\n\
             [ -e {down} ] && exit 111\n\
             [ -e {hang} ] && exec sleep 30\n\
             input=$(head -c 1024 <&3 | tr '\\000' '\\n')\n\
             user=$(printf '%s\\n' \"$input\" | sed -n 1p)\n\
             pass=$(printf '%s\\n' \"$input\" | sed -n 2p)\n\
             if [ \"$user\" = alice ] && [ \"$pass\" = 'pw alice' ]; then\n\
               HOME=/home/alice; userdb_quota_bytes=12345; export HOME userdb_quota_bytes\n\
               exec \"$@\"\n\
             fi\n\
             exit 1\n",
            down = down.display(),
            hang = hang.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Mail arrives some other way (checkpassword cannot look recipients up).
    let mail = corpus("checkpassword");
    let md = root.join("mail").join("alice");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(md.join(sub)).unwrap();
    }
    for (i, m) in mail.iter().enumerate() {
        std::fs::write(md.join("new").join(format!("100{i}.x.host")), lf(m)).unwrap();
    }
    let s = Served::start(
        root,
        &format!(
            "[auth]\nbackend = \"checkpassword\"\ncache_size = 0\n[auth.checkpassword]\n\
             program = \"{}\"\ntimeout = \"2s\"\n",
            prog.display()
        ),
    );
    assert_messages(
        "curl through checkpassword",
        &mail,
        &curl_fetch(&s, "alice", "pw alice").unwrap_or_else(|e| panic!("{e}\n{}", s.log())),
    );
    let wrong = s.login_reply("alice", "nope");
    assert!(wrong.starts_with("-ERR [AUTH]"), "{wrong}");
    assert_eq!(wrong, s.login_reply("bob", "nope"));
    assert_hostile_names_refused(&s, "pw alice");
    assert!(
        s.rcpt("alice").starts_with("550 5.1.1"),
        "no recipient lookup"
    );

    // Exit 111: temporary; a program over its time limit: killed, temporary.
    std::fs::write(&down, b"").unwrap();
    let r = s.plain_reply(b"alice", b"pw alice");
    assert!(r.starts_with("-ERR [SYS/TEMP]"), "exit 111: {r}");
    std::fs::remove_file(&down).unwrap();
    std::fs::write(&hang, b"").unwrap();
    let r = s.login_reply("alice", "pw alice");
    assert!(
        r.starts_with("-ERR [SYS/TEMP]"),
        "hung program: {r}\n{}",
        s.log()
    );
    std::fs::remove_file(&hang).unwrap();
    assert!(s.login_reply("alice", "pw alice").starts_with("+OK"));
    assert!(!s.log().contains("pw alice"));
}
