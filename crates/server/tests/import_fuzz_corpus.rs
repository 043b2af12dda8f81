//! Replays fuzz/corpus/server_import_dovecot/ through the Dovecot configuration
//! importer's fuzz body: parse, translate, and a valid correio.toml out.

#[test]
fn server_import_dovecot_corpus() {
    correio_testkit::fuzz::replay(
        "server_import_dovecot",
        correio_server::import::fuzz_dovecot_config,
    );
}
