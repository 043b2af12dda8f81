//! Replays fuzz/corpus/server_config/ through the config fuzz body.

#[test]
fn server_config_corpus() {
    correio_testkit::fuzz::replay("server_config", correio_server::config::fuzz_config);
}

/// Replays fuzz/corpus/privsep_reply/ through the privileged helper's reply decoder.
#[test]
fn privsep_reply_corpus() {
    correio_testkit::fuzz::replay("privsep_reply", correio_server::privsep::fuzz_reply);
}

/// Replays fuzz/corpus/server_proxy_header/ through the PROXY header fuzz body.
#[test]
fn proxy_header_corpus() {
    correio_testkit::fuzz::replay("server_proxy_header", correio_server::proxy::fuzz_header);
}
