//! Where a user's mail lives: `maildir:/path` or `mbox:/path/file`, and the expansion of
//! Dovecot-style `mail_location` templates into such a location.
//!
//! Template syntax (a subset of Dovecot's, enough for `mail_location` and
//! `userdb_mail=`): `%u` / `%{user}` the full user name, `%n` / `%{username}` its local
//! part, `%d` / `%{domain}` its domain, `%h` / `%{home}` the home directory, `%%` a
//! percent sign; an `L` modifier lowercases (`%Lu`, `%Ln`, `%Ld`). A path starting with
//! `~` (as `~/Maildir` or just `~`) starts at the home directory. After the path,
//! Dovecot-style `:KEY=VALUE` options may follow; for mbox, `INBOX=` names the mbox
//! file (POP3 serves only the INBOX), every other option is ignored.
//!
//! User names are checked before they go into a path: a value with `/`, NUL, or equal
//! to `.` or `..` is refused, so a recipient address can never walk out of the mail
//! root.

use std::fmt;
use std::path::{Path, PathBuf};

/// A mailbox: its format and its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailLocation {
    /// A Maildir directory (with `tmp/`, `new/`, `cur/`; created on first use).
    Maildir(PathBuf),
    /// One mbox file (created on first delivery; a missing file is an empty mailbox).
    Mbox(PathBuf),
}

/// Why a mail location or template could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocationError {
    /// Neither `maildir:` nor `mbox:`.
    #[error("unknown mailbox format in {0:?} (expected maildir:PATH or mbox:PATH)")]
    UnknownFormat(String),
    /// The path is empty or not absolute after expansion.
    #[error("mail location path must be absolute: {0:?}")]
    NotAbsolute(String),
    /// A `%` sequence we do not know.
    #[error("unknown template variable {0:?} in mail location")]
    UnknownVariable(String),
    /// `%h` or `~` without a home directory for the user.
    #[error("mail location uses the home directory but the user has none")]
    NoHome,
    /// The user name would not be safe inside a path.
    #[error("user name {0:?} cannot be used in a mail path")]
    UnsafeName(String),
    /// The location exists but has the wrong type (e.g. a Maildir path that is a file).
    #[error("mail location {path:?} is not usable: {reason}")]
    Unusable {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The values a template is expanded with.
#[derive(Debug, Clone, Copy)]
pub struct TemplateVars<'a> {
    /// The full user name (`%u`), e.g. `alice` or `alice@example.org`.
    pub user: &'a str,
    /// The home directory (`%h`, `~`), if the user has one.
    pub home: Option<&'a Path>,
}

impl MailLocation {
    /// Parses a location that needs no expansion, e.g. `maildir:/var/mail/alice` or
    /// `mbox:/var/mail/alice`. Dovecot-style options after the path are accepted
    /// (see the module docs).
    pub fn parse(s: &str) -> Result<Self, LocationError> {
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| LocationError::UnknownFormat(s.to_string()))?;
        let mut parts = rest.split(':');
        let path = parts.next().unwrap_or("");
        let mut inbox = None;
        for opt in parts {
            if let Some(v) = opt.strip_prefix("INBOX=") {
                inbox = Some(v);
            }
        }
        let check = |p: &str| -> Result<PathBuf, LocationError> {
            let pb = PathBuf::from(p);
            if p.is_empty() || !pb.is_absolute() {
                return Err(LocationError::NotAbsolute(p.to_string()));
            }
            Ok(pb)
        };
        match kind.to_ascii_lowercase().as_str() {
            "maildir" => Ok(MailLocation::Maildir(check(path)?)),
            "mbox" => Ok(MailLocation::Mbox(check(inbox.unwrap_or(path))?)),
            _ => Err(LocationError::UnknownFormat(s.to_string())),
        }
    }

    /// Expands a Dovecot-style template (see the module docs) for one user and parses
    /// the result, e.g. `maildir:/srv/mail/%d/%n` or `maildir:~/Maildir`.
    pub fn from_template(template: &str, vars: &TemplateVars<'_>) -> Result<Self, LocationError> {
        Self::parse(&expand_template(template, vars)?)
    }

    /// The path of the Maildir directory or mbox file.
    pub fn path(&self) -> &Path {
        match self {
            MailLocation::Maildir(p) | MailLocation::Mbox(p) => p,
        }
    }
}

impl fmt::Display for MailLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailLocation::Maildir(p) => write!(f, "maildir:{}", p.display()),
            MailLocation::Mbox(p) => write!(f, "mbox:{}", p.display()),
        }
    }
}

fn safe_component(v: &str) -> Result<&str, LocationError> {
    if v.is_empty() || v == "." || v == ".." || v.contains('/') || v.contains('\0') {
        return Err(LocationError::UnsafeName(v.to_string()));
    }
    Ok(v)
}

/// Expands `%` variables and a leading `~` in `template` (see the module docs).
pub(crate) fn expand_template(
    template: &str,
    vars: &TemplateVars<'_>,
) -> Result<String, LocationError> {
    let user = vars.user;
    let (local, domain) = match user.rsplit_once('@') {
        Some((l, d)) => (l, d),
        None => (user, ""),
    };
    let home = || -> Result<String, LocationError> {
        let h = vars.home.ok_or(LocationError::NoHome)?;
        let s = h.to_str().ok_or(LocationError::NoHome)?;
        if s.is_empty() {
            return Err(LocationError::NoHome);
        }
        Ok(s.trim_end_matches('/').to_string())
    };
    let mut out = String::with_capacity(template.len() + 32);
    // A `~` right after the "format:" prefix (or at the very start) is the home.
    let mut rest = template;
    if let Some((kind, after)) = template.split_once(':') {
        out.push_str(kind);
        out.push(':');
        rest = after;
    }
    if rest == "~" || rest.starts_with("~/") || rest.starts_with("~:") {
        out.push_str(&home()?);
        rest = &rest[1..];
    }
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut lower = false;
        let mut name = String::new();
        match chars.next() {
            Some((_, '%')) => {
                out.push('%');
                continue;
            }
            Some((_, 'L')) => {
                lower = true;
                match chars.next() {
                    Some((_, ch)) => name.push(ch),
                    None => return Err(LocationError::UnknownVariable(rest[i..].to_string())),
                }
            }
            Some((_, '{')) => {
                for (_, ch) in chars.by_ref() {
                    if ch == '}' {
                        break;
                    }
                    name.push(ch);
                }
            }
            Some((_, ch)) => name.push(ch),
            None => return Err(LocationError::UnknownVariable("%".to_string())),
        }
        let value = match name.as_str() {
            "u" | "user" => safe_component(user)?.to_string(),
            "n" | "username" => safe_component(local)?.to_string(),
            "d" | "domain" => {
                if domain.is_empty() {
                    String::new()
                } else {
                    safe_component(domain)?.to_string()
                }
            }
            "h" | "home" => home()?,
            other => return Err(LocationError::UnknownVariable(format!("%{other}"))),
        };
        if lower {
            out.push_str(&value.to_lowercase());
        } else {
            out.push_str(&value);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(user: &'a str, home: Option<&'a Path>) -> TemplateVars<'a> {
        TemplateVars { user, home }
    }

    #[test]
    fn parses_plain_locations() {
        assert_eq!(
            MailLocation::parse("maildir:/var/mail/a").unwrap(),
            MailLocation::Maildir("/var/mail/a".into())
        );
        assert_eq!(
            MailLocation::parse("mbox:/var/mail/a").unwrap(),
            MailLocation::Mbox("/var/mail/a".into())
        );
        assert_eq!(
            MailLocation::parse("mbox:/home/a/mail:INBOX=/var/mail/a").unwrap(),
            MailLocation::Mbox("/var/mail/a".into())
        );
        assert_eq!(
            MailLocation::parse("maildir:/m:LAYOUT=fs").unwrap(),
            MailLocation::Maildir("/m".into())
        );
        assert!(matches!(
            MailLocation::parse("imap:/x"),
            Err(LocationError::UnknownFormat(_))
        ));
        assert!(matches!(
            MailLocation::parse("maildir:rel"),
            Err(LocationError::NotAbsolute(_))
        ));
        assert!(matches!(
            MailLocation::parse("/abs"),
            Err(LocationError::UnknownFormat(_))
        ));
    }

    #[test]
    fn expands_dovecot_variables() {
        let h = Path::new("/home/alice");
        let v = vars("Alice@Example.org", Some(h));
        assert_eq!(
            expand_template("maildir:/srv/%d/%n/%u", &v).unwrap(),
            "maildir:/srv/Example.org/Alice/Alice@Example.org"
        );
        assert_eq!(
            expand_template("maildir:/srv/%Ld/%Ln", &v).unwrap(),
            "maildir:/srv/example.org/alice"
        );
        assert_eq!(
            expand_template("maildir:~/Maildir", &v).unwrap(),
            "maildir:/home/alice/Maildir"
        );
        assert_eq!(
            expand_template("maildir:%h/M", &v).unwrap(),
            "maildir:/home/alice/M"
        );
        assert_eq!(
            expand_template("maildir:%{home}/%{username}%%", &v).unwrap(),
            "maildir:/home/alice/Alice%"
        );
        assert_eq!(
            MailLocation::from_template("maildir:/srv/%u", &vars("bob", None)).unwrap(),
            MailLocation::Maildir("/srv/bob".into())
        );
    }

    #[test]
    fn refuses_unsafe_or_unknown() {
        assert!(matches!(
            expand_template("maildir:/srv/%u", &vars("../etc", None)),
            Err(LocationError::UnsafeName(_))
        ));
        assert!(matches!(
            expand_template("maildir:/srv/%u", &vars("..", None)),
            Err(LocationError::UnsafeName(_))
        ));
        assert!(matches!(
            expand_template("maildir:~/M", &vars("a", None)),
            Err(LocationError::NoHome)
        ));
        assert!(matches!(
            expand_template("maildir:/x/%q", &vars("a", None)),
            Err(LocationError::UnknownVariable(_))
        ));
        assert!(matches!(
            expand_template("maildir:/x/%", &vars("a", None)),
            Err(LocationError::UnknownVariable(_))
        ));
    }
}
