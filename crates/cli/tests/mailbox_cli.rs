//! `correio mailbox check` as an administrator runs it: the built binary on damaged
//! mailboxes; exit status 0 clean, 1 problems, 2 cannot check; `--json`; `--repair`
//! keeping every intact message byte for byte.
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};

use correio_store::maildir::MaildirWriter;
use correio_store::{DeliverOptions, MailLocation, deliver, open_maildrop};

fn correio(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_correio"))
        .args(args)
        .output()
        .expect("run correio")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit status")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn served(loc: &MailLocation) -> Vec<(String, Vec<u8>)> {
    let md = open_maildrop(loc).unwrap();
    (0..md.messages().len())
        .map(|i| {
            let mut v = Vec::new();
            md.open_message(i).unwrap().read_to_end(&mut v).unwrap();
            (md.messages()[i].uidl.clone(), v)
        })
        .collect()
}

fn mbox(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("inbox");
    for i in 0..3 {
        deliver(
            &MailLocation::Mbox(path.clone()),
            format!("Subject: {i}\n\nbody {i}\n").as_bytes(),
            &DeliverOptions::default().envelope_sender(Some("a@example.org".into())),
        )
        .unwrap();
    }
    path
}

#[test]
fn clean_mbox_exits_0() {
    let d = tempfile::tempdir().unwrap();
    let path = mbox(d.path());
    let p = path.to_str().unwrap();
    let o = correio(&["mailbox", "check", p]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert_eq!(stdout(&o), format!("{p}: clean (mbox, 3 messages)\n"));
}

#[test]
fn damaged_mbox_is_named_and_repaired_beside_the_original() {
    let d = tempfile::tempdir().unwrap();
    let path = mbox(d.path());
    let p = path.to_str().unwrap();
    let raw = fs::read_to_string(&path).unwrap();
    // A body line that looks like a From_ line, and a cut last message.
    let bad = raw.replacen("body 1\n", "body 1\nFrom me Tue Feb  2 00:00:00 2024\n", 1);
    let bad = &bad[..bad.len() - 2];
    fs::write(&path, bad).unwrap();
    let line = bad[..bad.find("From me").unwrap()].matches('\n').count() + 1;
    let before = served(&MailLocation::Mbox(path.clone()));

    let o = correio(&["mailbox", "check", p]);
    assert_eq!(code(&o), 1);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "{p}:{line}: unquoted `From ` line in message 2: no empty line before it"
        )),
        "{out}"
    );
    assert!(lines[1].starts_with(&format!("{p}:")) && lines[1].contains("truncated last message"));
    assert_eq!(lines[2], format!("{p}: 2 problems (mbox, 3 messages)"));

    let o = correio(&["mailbox", "check", p, "--json"]);
    assert_eq!(code(&o), 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "mbox");
    assert_eq!(v["clean"], false);
    assert_eq!(v["findings"][0]["kind"], "unquoted-from-line");
    assert_eq!(v["findings"][0]["line"], line);
    assert_eq!(v["findings"][0]["message"], 2);
    assert_eq!(v["findings"][1]["kind"], "truncated-last-message");

    let o = correio(&["mailbox", "check", p, "--repair"]);
    assert_eq!(code(&o), 1, "problems were found");
    let out = stdout(&o);
    assert!(
        out.contains("repaired: quoted the `From ` line at line"),
        "{out}"
    );
    assert!(out.contains("repaired: added the final newline"), "{out}");
    let copy = format!("{p}.repaired");
    assert!(
        out.contains(&format!(
            "repaired copy written to {copy}; the original is kept unchanged at {p}"
        )),
        "{out}"
    );
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        bad,
        "original unchanged"
    );
    let fixed = served(&MailLocation::Mbox(copy.clone().into()));
    // Every message serves the same bytes (the cut one completed) with the same UIDLs
    // for the intact ones.
    assert_eq!(fixed[..2], before[..2]);
    assert_eq!(fixed[2].1, b"Subject: 2\n\nbody 2\n");
    let o = correio(&["mailbox", "check", &copy]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    // A second repair does not overwrite the copy.
    let o = correio(&["mailbox", "check", p, "--repair"]);
    assert_eq!(code(&o), 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("exists already"));
}

#[test]
fn maildir_wrong_sizes_repaired_in_place() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("Maildir");
    let w = MaildirWriter::open(&root).unwrap();
    for i in 0..2 {
        w.deliver(format!("Subject: {i}\n\nbody\n").as_bytes())
            .unwrap();
    }
    let before = served(&MailLocation::Maildir(root.clone()));
    let f = fs::read_dir(root.join("new"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let name = f.file_name().unwrap().to_str().unwrap().to_string();
    let base = name.split(',').next().unwrap();
    let wrong = root.join("new").join(format!("{base},S=1,W=1"));
    fs::rename(&f, &wrong).unwrap();
    let r = root.to_str().unwrap();

    let o = correio(&["mailbox", "check", r]);
    assert_eq!(code(&o), 1);
    let out = stdout(&o);
    assert!(
        out.contains(&format!("{}: wrong ,S=1 in the name", wrong.display())),
        "{out}"
    );
    assert!(
        out.ends_with(&format!("{r}: 2 problems (maildir, 2 messages)\n")),
        "{out}"
    );

    let o = correio(&["mailbox", "check", "--format", "maildir", "--repair", r]);
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains(&format!(
        "repaired: renamed {} to {}",
        wrong.display(),
        f.display()
    )));
    let o = correio(&["mailbox", "check", r]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let mut after = served(&MailLocation::Maildir(root.clone()));
    let mut before = before;
    after.sort();
    before.sort();
    assert_eq!(after, before);
}

#[test]
fn cannot_check_exits_2() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("missing");
    let o = correio(&["mailbox", "check", missing.to_str().unwrap()]);
    assert_eq!(code(&o), 2);
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "correio: mailbox check: {}: no such file or directory\n",
            missing.display()
        ),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A directory is not an mbox; an empty directory is not a Maildir.
    let dir = d.path().to_str().unwrap();
    let o = correio(&["mailbox", "check", "--format", "mbox", dir]);
    assert_eq!(code(&o), 2);
    let o = correio(&["mailbox", "check", dir, "--json"]);
    assert_eq!(code(&o), 2);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("not a Maildir"),
        "{v}"
    );
    // Bad usage is clap's 2 as well.
    assert_eq!(code(&correio(&["mailbox", "check"])), 2);
}
