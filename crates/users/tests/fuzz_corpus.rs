//! Replays fuzz/corpus/users_templates/ through the template fuzz body.

#[test]
fn users_templates_corpus() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus/users_templates");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| correio_users::fuzzing::fuzz_templates(&data)).is_err() {
            panic!("users_templates fuzz body failed on {}", path.display());
        }
        count += 1;
    }
    assert!(count >= 5, "seed files missing in {}", dir.display());
}
