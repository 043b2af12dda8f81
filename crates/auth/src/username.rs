//! Username validation: the gate every name passes before it reaches a path, a log or
//! the users file.
//!
//! Names are `user` or `user@domain`. We refuse anything that could escape a directory
//! template (`/`, `\`, `..`, a leading `.`), forge a log or protocol line (NUL, CR, LF,
//! TAB and every other control character), expand in a mail-location template (`%`),
//! break the passwd-file format (`:`, whitespace, a leading `#`), or read as a command-line option (leading `-`).

use std::fmt;

/// The longest accepted username, in bytes (Dovecot's default is 255 too).
pub const MAX_USERNAME_LEN: usize = 255;

/// Why a username was refused. The text never repeats the name itself, so it is
/// safe to log and to send to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsernameError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_USERNAME_LEN`] bytes.
    TooLong,
    /// The name contains a character we never accept (control, whitespace, `/`, `\`,
    /// `%`, `:`, or a leading `#`).
    ForbiddenChar,
    /// The name contains `..` or starts with `.`.
    DotDot,
    /// The name starts with `-`.
    LeadingDash,
    /// The name has more than one `@`, or an empty part around it.
    BadDomain,
}

impl fmt::Display for UsernameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UsernameError::Empty => "username is empty",
            UsernameError::TooLong => "username is too long",
            UsernameError::ForbiddenChar => "username contains a forbidden character",
            UsernameError::DotDot => "username contains '..' or starts with '.'",
            UsernameError::LeadingDash => "username starts with '-'",
            UsernameError::BadDomain => "username has a malformed '@domain' part",
        })
    }
}

impl std::error::Error for UsernameError {}

/// Checks that `name` is safe to use as a username (see the module docs for the rules).
pub fn validate_username(name: &str) -> Result<(), UsernameError> {
    if name.is_empty() {
        return Err(UsernameError::Empty);
    }
    if name.len() > MAX_USERNAME_LEN {
        return Err(UsernameError::TooLong);
    }
    if name
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '/' | '\\' | '%' | ':'))
    {
        return Err(UsernameError::ForbiddenChar);
    }
    if name.starts_with('#') {
        // It would read as a comment line in the users file.
        return Err(UsernameError::ForbiddenChar);
    }
    if name.contains("..") || name.starts_with('.') {
        return Err(UsernameError::DotDot);
    }
    if name.starts_with('-') {
        return Err(UsernameError::LeadingDash);
    }
    let mut parts = name.split('@');
    let local = parts.next().unwrap_or_default();
    if let Some(domain) = parts.next()
        && (local.is_empty()
            || domain.is_empty()
            || domain.starts_with('.')
            || parts.next().is_some())
    {
        return Err(UsernameError::BadDomain);
    }
    Ok(())
}

/// Splits `user@domain` into `("user", Some("domain"))`; a name without `@` has no domain.
/// These are Dovecot's `%n` and `%d`.
pub fn split_username(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((local, domain)) => (local, Some(domain)),
        None => (name, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in [
            "alice",
            "bob@example.org",
            "a.b-c_d+tag@mail.example.org",
            "ünïcode",
            "x",
        ] {
            assert_eq!(validate_username(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_dangerous_names() {
        let cases: &[(&str, UsernameError)] = &[
            ("", UsernameError::Empty),
            ("a/b", UsernameError::ForbiddenChar),
            ("a\\b", UsernameError::ForbiddenChar),
            ("a\0b", UsernameError::ForbiddenChar),
            ("a\rb", UsernameError::ForbiddenChar),
            ("a\nb", UsernameError::ForbiddenChar),
            ("a\tb", UsernameError::ForbiddenChar),
            ("a%d", UsernameError::ForbiddenChar),
            ("a:b", UsernameError::ForbiddenChar),
            ("a b", UsernameError::ForbiddenChar),
            ("a\u{7f}", UsernameError::ForbiddenChar),
            ("a\u{85}", UsernameError::ForbiddenChar),
            ("a\u{2003}b", UsernameError::ForbiddenChar),
            ("#comment", UsernameError::ForbiddenChar),
            ("..", UsernameError::DotDot),
            ("a..b", UsernameError::DotDot),
            (".hidden", UsernameError::DotDot),
            ("-rf", UsernameError::LeadingDash),
            ("@example.org", UsernameError::BadDomain),
            ("a@", UsernameError::BadDomain),
            ("a@b@c", UsernameError::BadDomain),
            ("a@.c", UsernameError::BadDomain),
        ];
        for (name, want) in cases {
            assert_eq!(validate_username(name), Err(*want), "{name:?}");
        }
        assert_eq!(
            validate_username(&"a".repeat(256)),
            Err(UsernameError::TooLong)
        );
        assert_eq!(validate_username(&"a".repeat(255)), Ok(()));
    }

    #[test]
    fn splits_domain() {
        assert_eq!(split_username("a@b.c"), ("a", Some("b.c")));
        assert_eq!(split_username("a"), ("a", None));
    }
}
