//! One module per subcommand.
pub mod admin;
pub mod bench;
pub mod cert;
pub mod check;
pub mod deliver;
pub mod fetch;
pub mod serve;
pub mod user;
