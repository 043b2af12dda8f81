//! One module per subcommand.
pub mod admin;
pub mod bench;
pub mod cert;
pub mod check;
pub mod convert;
pub mod deliver;
pub mod fetch;
pub mod r#gen;
pub mod import;
pub mod mailbox;
pub mod probe;
pub mod serve;
pub mod store;
pub mod user;
