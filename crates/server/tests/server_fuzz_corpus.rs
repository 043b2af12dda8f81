//! Replays fuzz/corpus/server_config/ through the config fuzz body.

#[test]
fn server_config_corpus() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus/server_config");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| correio_server::config::fuzz_config(&data)).is_err() {
            panic!("server_config fuzz body failed on {}", path.display());
        }
        count += 1;
    }
    assert!(count >= 5, "seed files missing in {}", dir.display());
}

/// Replays fuzz/corpus/privsep_reply/ through the privileged helper's reply decoder.
#[test]
fn privsep_reply_corpus() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus/privsep_reply");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| correio_server::privsep::fuzz_reply(&data)).is_err() {
            panic!("privsep_reply fuzz body failed on {}", path.display());
        }
        count += 1;
    }
    assert!(count >= 5, "seed files missing in {}", dir.display());
}

/// Replays fuzz/corpus/server_proxy_header/ through the PROXY header fuzz body.
#[test]
fn proxy_header_corpus() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus/server_proxy_header");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| correio_server::proxy::fuzz_header(&data)).is_err() {
            panic!("server_proxy_header fuzz body failed on {}", path.display());
        }
        count += 1;
    }
    assert!(count >= 5, "seed files missing in {}", dir.display());
}
