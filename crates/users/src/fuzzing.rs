//! Fuzz bodies (`fuzz/fuzz_targets/users_*.rs`), also replayed over
//! `fuzz/corpus/users_templates/` by this crate's tests.

use crate::config::SqlDriver;
use crate::template::{LdapTemplate, SqlTemplate, ldap_dn, ldap_filter};

/// The query and filter templates and the checkpassword environment parser. Input:
/// a template, a NUL, a login name (the rest also goes to the environment parser).
/// Never panics; a compiled SQL template has one placeholder per parameter and never
/// carries the name as text; an expanded LDAP filter holds the name's special
/// characters only escaped.
pub fn fuzz_templates(data: &[u8]) {
    let (template, name) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let _ = crate::checkpassword::record_from_env("user", name);
    let (Ok(template), Ok(name)) = (std::str::from_utf8(template), std::str::from_utf8(name))
    else {
        return;
    };
    for driver in [SqlDriver::Postgres, SqlDriver::MySql] {
        if let Ok(t) = SqlTemplate::compile(template, driver) {
            assert!(!t.params.is_empty());
            let placeholders = match driver {
                SqlDriver::MySql => t.sql.matches('?').count(),
                SqlDriver::Postgres => (1..=t.params.len())
                    .filter(|i| t.sql.contains(&format!("${i}")))
                    .count(),
            };
            assert!(placeholders >= t.params.len(), "{t:?}");
            assert_eq!(t.values(name).len(), t.params.len());
        }
    }
    if let Ok(t) = LdapTemplate::compile(template) {
        let f = ldap_filter(&t, name);
        let plain = ldap_filter(&t, "x");
        // The name's parentheses and stars never add structure: the expansion has as
        // many unescaped ( ) * as the template expanded with a harmless name.
        let structure = |s: &str| s.bytes().filter(|b| b"()*".contains(b)).count();
        assert_eq!(structure(&f), structure(&plain), "{f}");
        let _ = ldap_dn(&t, name);
    }
}
