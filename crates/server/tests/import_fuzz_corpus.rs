//! Replays fuzz/corpus/server_import_dovecot/ through the Dovecot configuration
//! importer's fuzz body: parse, translate, and a valid correio.toml out.

#[test]
fn server_import_dovecot_corpus() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus/server_import_dovecot");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| correio_server::import::fuzz_dovecot_config(&data)).is_err()
        {
            panic!(
                "server_import_dovecot fuzz body failed on {}",
                path.display()
            );
        }
        count += 1;
    }
    assert!(count >= 5, "seed files missing in {}", dir.display());
}
