use super::*;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn creates_and_replaces_content() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f");
    write_atomic(&p, b"one").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"one");
    write_atomic(&p, b"two, longer").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"two, longer");
    write_atomic(&p, b"").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"");
    assert_eq!(names(d.path()), ["f"]);
}

#[test]
fn streams_through_the_callback() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("big");
    fs::write(&p, b"old").unwrap();
    replace_with(&p, &AtomicWrite::new(), |f| {
        let mut w = io::BufWriter::new(f);
        for i in 0..10_000u32 {
            writeln!(w, "line {i}")?;
        }
        w.flush()
    })
    .unwrap();
    let text = fs::read_to_string(&p).unwrap();
    assert_eq!(text.lines().count(), 10_000);
    assert!(text.ends_with("line 9999\n"));
    assert_eq!(names(d.path()), ["big"]);
}

#[test]
fn mode_is_applied_and_the_temp_has_it_from_the_start() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("secret");
    // An existing world-readable file is replaced by a private one (no keeping asked).
    fs::write(&p, b"old").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    AtomicWrite::new()
        .mode(0o600)
        .write_with(&p, |f| {
            assert_eq!(f.metadata()?.permissions().mode() & 0o7777, 0o600);
            f.write_all(b"token")
        })
        .unwrap();
    assert_eq!(mode_of(&p), 0o600);
    assert_eq!(fs::read(&p).unwrap(), b"token");
}

#[test]
fn keeps_the_old_mode_when_asked() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("users");
    fs::write(&p, b"old").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
    AtomicWrite::new()
        .mode(0o600)
        .keep_owner_and_mode()
        .write(&p, b"new")
        .unwrap();
    assert_eq!(mode_of(&p), 0o640);
    assert_eq!(fs::read(&p).unwrap(), b"new");
    let meta = fs::metadata(&p).unwrap();
    // Owner kept (trivially: ours); the uid is compared, not assumed.
    let me = fs::metadata(d.path()).unwrap().uid();
    assert_eq!(meta.uid(), me);

    // From metadata read by the caller.
    let other = d.path().join("other");
    fs::write(&other, b"x").unwrap();
    fs::set_permissions(&other, fs::Permissions::from_mode(0o604)).unwrap();
    let m = fs::metadata(&other).unwrap();
    AtomicWrite::new()
        .owner_and_mode_of(&m)
        .write(&p, b"newer")
        .unwrap();
    assert_eq!(mode_of(&p), 0o604);
    assert_eq!(names(d.path()), ["other", "users"]);
}

#[test]
fn keep_without_an_old_file_uses_the_mode() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("new");
    AtomicWrite::new()
        .mode(0o600)
        .keep_owner_and_mode()
        .write(&p, b"x")
        .unwrap();
    assert_eq!(mode_of(&p), 0o600);
}

#[test]
fn a_failing_callback_leaves_the_old_file_and_no_temp() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f");
    let old = b"old content\x00\xff".to_vec();
    fs::write(&p, &old).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
    for opts in [
        AtomicWrite::new(),
        AtomicWrite::new().keep_owner_and_mode(),
        AtomicWrite::new().temp_name(TempName::PidSuffixed(".f.correio-tmp.".into())),
        AtomicWrite::new().temp_name(TempName::Fixed("f.tmp".into())),
    ] {
        let err = opts
            .write_with(&p, |f| {
                f.write_all(b"partial new content")?;
                Err(io::Error::new(io::ErrorKind::InvalidData, "boom"))
            })
            .unwrap_err();
        assert_eq!(err.step(), Step::Write);
        assert_eq!(err.to_string(), "boom");
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::InvalidData);
        assert_eq!(fs::read(&p).unwrap(), old);
        assert_eq!(mode_of(&p), 0o640);
        assert_eq!(names(d.path()), ["f"]);
    }
}

#[test]
fn a_missing_directory_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("no").join("such").join("f");
    let err = AtomicWrite::new().write(&p, b"x").unwrap_err();
    assert_eq!(err.step(), Step::Create);
    assert_eq!(err.io().kind(), io::ErrorKind::NotFound);
    assert!(write_atomic(&p, b"x").is_err());
    assert_eq!(names(d.path()), Vec::<String>::new());
    // Not a file name at all.
    assert!(write_atomic(Path::new("/"), b"x").is_err());
}

#[test]
fn named_temporaries_are_used_and_leftovers_replaced() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("mbox");
    let pid_name = format!(".mbox.correio-tmp.{}", std::process::id());
    // A leftover of a killed process that had our pid.
    fs::write(d.path().join(&pid_name), b"stale").unwrap();
    AtomicWrite::new()
        .temp_name(TempName::PidSuffixed(".mbox.correio-tmp.".into()))
        .write_with(&p, |f| {
            assert!(names(d.path()).contains(&pid_name));
            f.write_all(b"new")
        })
        .unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"new");
    assert_eq!(names(d.path()), ["mbox"]);

    fs::write(d.path().join("mbox.tmp"), b"stale").unwrap();
    AtomicWrite::new()
        .temp_name(TempName::Fixed("mbox.tmp".into()))
        .write_with(&p, |f| {
            assert_eq!(fs::read(d.path().join("mbox.tmp"))?, b"");
            f.write_all(b"newer")
        })
        .unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"newer");
    assert_eq!(names(d.path()), ["mbox"]);
}

#[test]
fn unique_temporaries_let_writers_race() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state");
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let p = &p;
            s.spawn(move || {
                for _ in 0..25 {
                    write_atomic(p, &[t; 100]).unwrap();
                }
            });
        }
    });
    let got = fs::read(&p).unwrap();
    assert_eq!(got.len(), 100);
    assert!(got.iter().all(|&b| b == got[0]));
    assert_eq!(names(d.path()), ["state"]);
}

#[test]
fn a_bare_file_name_is_in_the_current_directory() {
    assert_eq!(parent_dir(Path::new("f")), Path::new("."));
    assert_eq!(parent_dir(Path::new("/a/f")), Path::new("/a"));
    let d = tempfile::tempdir().unwrap();
    sync_dir(d.path()).unwrap();
    assert!(sync_dir(&d.path().join("none")).is_err());
}
