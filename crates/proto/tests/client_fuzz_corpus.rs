//! Replays every seed of fuzz/corpus/client_session/ through the client fuzz body.

#[test]
fn client_session_seeds() {
    correio_testkit::fuzz::replay("client_session", correio_proto::client::fuzz_client_session);
}
