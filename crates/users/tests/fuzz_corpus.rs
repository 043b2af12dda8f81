//! Replays fuzz/corpus/users_templates/ through the template fuzz body.

#[test]
fn users_templates_corpus() {
    correio_testkit::fuzz::replay("users_templates", correio_users::fuzzing::fuzz_templates);
}
