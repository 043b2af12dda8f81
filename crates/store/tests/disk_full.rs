//! A full disk: delivery into a 1 MiB tmpfs mounted by the test (needs root, as the
//! suite runs; `mount -t tmpfs`). Failures must be temporary (4.3.1, exit 75) and leave
//! nothing half-written; earlier messages stay intact.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use correio_store::{DeliverErrorKind, DeliverOptions, MailLocation, deliver, open_maildrop};

struct Tmpfs {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl Tmpfs {
    fn mount() -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "this test needs root to mount a 1 MiB tmpfs (mount -t tmpfs)"
        );
        Tmpfs { _dir: dir, mnt }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn message(i: usize) -> Vec<u8> {
    let mut m = format!("Subject: {i}\n\n").into_bytes();
    m.extend(
        std::iter::repeat_n(b'x', 99)
            .chain([b'\n'])
            .cycle()
            .take(150_000),
    );
    m
}

fn all(loc: &MailLocation) -> Vec<Vec<u8>> {
    let md = open_maildrop(loc).unwrap();
    (0..md.messages().len())
        .map(|i| {
            let mut v = Vec::new();
            md.open_message(i).unwrap().read_to_end(&mut v).unwrap();
            v
        })
        .collect()
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|r| r.count()).unwrap_or(0)
}

#[test]
fn maildir_and_mbox_on_a_full_disk() {
    let t = Tmpfs::mount();
    // Maildir: fill it up.
    let loc = MailLocation::Maildir(t.mnt.join("Maildir"));
    let mut ok = 0;
    let err = loop {
        match deliver(&loc, &message(ok)[..], &DeliverOptions::default()) {
            Ok(_) => ok += 1,
            Err(e) => break e,
        }
        assert!(ok < 20, "1 MiB cannot hold 20 messages of 150 KB");
    };
    assert!(ok >= 1);
    assert_eq!(err.kind(), DeliverErrorKind::DiskFull, "{err}");
    assert!(err.is_temporary());
    assert_eq!(
        (err.reply_code(), err.enhanced_status(), err.exit_code()),
        (452, "4.3.1", 75)
    );
    assert_eq!(
        count(&t.mnt.join("Maildir/tmp")),
        0,
        "the partial file was removed"
    );
    let msgs = all(&loc);
    assert_eq!(msgs.len(), ok);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m, &message(i), "message {i} intact and in order");
    }

    // Free the space, then fill it with an mbox.
    fs::remove_dir_all(t.mnt.join("Maildir")).unwrap();
    let path = t.mnt.join("inbox");
    let loc = MailLocation::Mbox(path.clone());
    let mut ok = 0;
    let mut before: Vec<u8>;
    let err = loop {
        before = fs::read(&path).unwrap_or_default();
        match deliver(&loc, &message(ok)[..], &DeliverOptions::default()) {
            Ok(_) => ok += 1,
            Err(e) => break e,
        }
        assert!(ok < 20);
    };
    assert_eq!(err.kind(), DeliverErrorKind::DiskFull, "{err}");
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "the mbox was truncated back"
    );
    assert!(!correio_store::mbox::journal_path(&path).exists());
    assert!(!correio_store::lock::dotlock_path(&path).exists());
    let msgs = all(&loc);
    assert_eq!(msgs.len(), ok);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m, &message(i));
    }
}
