//! Dovecot-style `%u`, `%n`, `%d` in queries, made safe.
//!
//! - SQL: each variable becomes a bound parameter (`$1` for PostgreSQL, `?` for
//!   MariaDB/MySQL). Dovecot's habit of quoting them (`'%u'`) is accepted: the quotes go
//!   with the variable. A variable inside a longer string literal (`'%n@example.org'`)
//!   is refused when the query is compiled, because it could only be spliced in as
//!   text; write `CONCAT(%n, '@example.org')` or `%n || '@example.org'` instead. `%%` is
//!   a literal `%` (for `LIKE`).
//! - LDAP: values are escaped for a filter (RFC 4515) or a DN (RFC 4514).
//!
//! The name given has passed the server's username check (no controls, no spaces,
//! bounded length); escaping does not rely on that.

use crate::config::SqlDriver;

/// A value a template refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `%u`: the whole name.
    User,
    /// `%n`: the part before the last `@` (the whole name without one).
    Local,
    /// `%d`: the part after the last `@` (empty without one).
    Domain,
}

impl Var {
    /// This variable's value for `user`.
    pub fn value(self, user: &str) -> &str {
        match (self, user.rsplit_once('@')) {
            (Var::User, _) => user,
            (Var::Local, Some((l, _))) => l,
            (Var::Local, None) => user,
            (Var::Domain, Some((_, d))) => d,
            (Var::Domain, None) => "",
        }
    }

    fn from_letter(c: char) -> Option<Var> {
        match c {
            'u' => Some(Var::User),
            'n' => Some(Var::Local),
            'd' => Some(Var::Domain),
            _ => None,
        }
    }
}

/// A compiled SQL query: the text with placeholders, and which value goes where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlTemplate {
    /// The query as sent to the server.
    pub sql: String,
    /// The parameters, in order.
    pub params: Vec<Var>,
}

impl SqlTemplate {
    /// Compiles `query` for `driver`.
    pub fn compile(query: &str, driver: SqlDriver) -> Result<SqlTemplate, String> {
        let mut sql = String::with_capacity(query.len());
        let mut params = Vec::new();
        let chars: Vec<char> = query.chars().collect();
        let mut i = 0;
        // Inside a string literal ('...', with '' as an escaped quote)?
        let mut in_string = false;
        let placeholder = |params: &Vec<Var>| match driver {
            SqlDriver::Postgres => format!("${}", params.len()),
            SqlDriver::MySql => "?".to_owned(),
        };
        while i < chars.len() {
            let c = chars[i];
            if c == '%' {
                let next = chars.get(i + 1).copied();
                if next == Some('%') {
                    sql.push('%');
                    i += 2;
                    continue;
                }
                let Some(var) = next.and_then(Var::from_letter) else {
                    return Err(format!(
                        "unknown variable %{} (use %u, %n, %d, or %% for a literal %)",
                        next.map(String::from).unwrap_or_default()
                    ));
                };
                if in_string {
                    // Only '%u' exactly: the opening quote is already written.
                    if sql.ends_with('\'') && chars.get(i + 2) == Some(&'\'') {
                        sql.pop();
                        params.push(var);
                        sql.push_str(&placeholder(&params));
                        in_string = false;
                        i += 3;
                        continue;
                    }
                    return Err(format!(
                        "%{} inside a longer string literal could only be spliced in as \
                         text; use it on its own (CONCAT(%{0}, '...') or %{0} || '...')",
                        next.unwrap_or('?')
                    ));
                }
                params.push(var);
                sql.push_str(&placeholder(&params));
                i += 2;
                continue;
            }
            if c == '\'' {
                in_string = !in_string;
            }
            sql.push(c);
            i += 1;
        }
        if in_string {
            return Err("unterminated string literal".into());
        }
        if params.is_empty() {
            return Err("names no user (%u, %n or %d): it would match every row".into());
        }
        Ok(SqlTemplate { sql, params })
    }

    /// The parameter values for `user`, in order.
    pub fn values<'a>(&self, user: &'a str) -> Vec<&'a str> {
        self.params.iter().map(|v| v.value(user)).collect()
    }
}

/// A compiled LDAP filter or DN template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

impl LdapTemplate {
    /// Compiles `template` (`%u`, `%n`, `%d`, `%%`).
    pub fn compile(template: &str) -> Result<LdapTemplate, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = template.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => text.push('%'),
                Some(l) if Var::from_letter(l).is_some() => {
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Var(Var::from_letter(l).unwrap_or(Var::User)));
                }
                other => {
                    return Err(format!(
                        "unknown variable %{} (use %u, %n, %d, or %% for a literal %)",
                        other.map(String::from).unwrap_or_default()
                    ));
                }
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        if !parts.iter().any(|p| matches!(p, Part::Var(_))) {
            return Err("names no user (%u, %n or %d)".into());
        }
        Ok(LdapTemplate { parts })
    }

    fn expand(&self, user: &str, escape: impl Fn(&str) -> String) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Var(v) => escape(v.value(user)),
            })
            .collect()
    }
}

/// The filter for `user`, values escaped per RFC 4515.
pub fn ldap_filter(template: &LdapTemplate, user: &str) -> String {
    template.expand(user, |v| ldap3::ldap_escape(v).into_owned())
}

/// The DN for `user`, values escaped per RFC 4514.
pub fn ldap_dn(template: &LdapTemplate, user: &str) -> String {
    template.expand(user, |v| ldap3::dn_escape(v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_and_bare_variables_become_parameters() {
        let t = SqlTemplate::compile(
            "SELECT password FROM users WHERE name = '%n' AND domain = %d AND x LIKE 'a%%'",
            SqlDriver::Postgres,
        )
        .unwrap();
        assert_eq!(
            t.sql,
            "SELECT password FROM users WHERE name = $1 AND domain = $2 AND x LIKE 'a%'"
        );
        assert_eq!(t.values("bob@example.org"), vec!["bob", "example.org"]);
        let m = SqlTemplate::compile("SELECT 1 FROM t WHERE u = '%u'", SqlDriver::MySql).unwrap();
        assert_eq!(m.sql, "SELECT 1 FROM t WHERE u = ?");
    }

    #[test]
    fn a_variable_spliced_into_a_literal_is_refused() {
        let e = SqlTemplate::compile("SELECT 1 WHERE u = '%n@example.org'", SqlDriver::MySql)
            .unwrap_err();
        assert!(e.contains("spliced"), "{e}");
        assert!(SqlTemplate::compile("SELECT 1 WHERE u = %x", SqlDriver::MySql).is_err());
        assert!(SqlTemplate::compile("SELECT 1 FROM t", SqlDriver::MySql).is_err());
        assert!(SqlTemplate::compile("SELECT 'x FROM t WHERE %u", SqlDriver::MySql).is_err());
    }

    #[test]
    fn quotes_in_the_name_stay_in_the_parameter() {
        // The name is a parameter: whatever it holds never becomes SQL text.
        let t =
            SqlTemplate::compile("SELECT 1 FROM t WHERE u = '%u'", SqlDriver::Postgres).unwrap();
        let name = "x' OR '1'='1";
        assert_eq!(t.values(name), vec![name]);
        assert!(!t.sql.contains("OR"));
    }

    #[test]
    fn ldap_values_are_escaped() {
        let f = LdapTemplate::compile("(&(objectClass=posixAccount)(uid=%n))").unwrap();
        assert_eq!(
            ldap_filter(&f, "*)(uid=*"),
            "(&(objectClass=posixAccount)(uid=\\2a\\29\\28uid=\\2a))"
        );
        let d = LdapTemplate::compile("uid=%n,ou=people,dc=example,dc=org").unwrap();
        assert_eq!(
            ldap_dn(&d, "a,b+c@x"),
            "uid=a\\2cb\\2bc,ou=people,dc=example,dc=org"
        );
        assert!(LdapTemplate::compile("(uid=%q)").is_err());
        assert!(LdapTemplate::compile("(uid=bob)").is_err());
    }
}
