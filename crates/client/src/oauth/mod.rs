//! OAuth2 for `correio fetch`: the account settings, the token file, refresh before
//! expiry, and the three ways to get a first token ([`flows`]): authorization code
//! with PKCE and a loopback redirect (RFC 6749 §4.1, RFC 7636, RFC 8252), the device
//! authorization grant (RFC 8628) and client credentials (RFC 6749 §4.4).
//!
//! Contract: [`access_token`] returns a token valid for at least
//! [`REFRESH_MARGIN`], refreshing (and saving) it first when needed. A refresh the
//! provider refuses with `invalid_grant` (consent revoked, a Google test-mode
//! project's 7-day limit, a password change) is [`OAuthError::Reauthorize`], whose
//! message names the exact command that fixes it. Tokens live in one JSON file per
//! account in the state directory, mode 0600, replaced atomically; they never reach a
//! log (the types holding them print `<redacted>`).
//!
//! The endpoints of [`provider`] presets can be overridden per account; the tests
//! point them at a local stand-in authorization server.

pub mod flows;
pub mod provider;

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use correio_fsutil::AtomicWrite;
use serde::{Deserialize, Serialize};

pub use provider::Provider;

/// A token is refreshed when it expires within this margin.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// The `[account.NAME.oauth2]` table (every key optional; the provider preset fills
/// in the rest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSettings {
    /// `google`, `microsoft` or `custom` (then the endpoints must be given).
    pub provider: Option<String>,
    /// The OAuth2 client ID of the application registered with the provider.
    pub client_id: Option<String>,
    /// The client secret, when the provider issued one (Google desktop clients;
    /// Microsoft confidential clients for client credentials).
    pub client_secret: Option<String>,
    /// A command whose first output line is the client secret.
    pub client_secret_command: Option<String>,
    /// Microsoft: the tenant (`common`, `consumers`, `organizations` or a tenant ID).
    pub tenant: Option<String>,
    /// How to get the first token: `browser` (PKCE with a loopback redirect, the
    /// default), `device` (RFC 8628) or `client-credentials`.
    pub flow: Option<String>,
    /// Overrides the authorization endpoint.
    pub authorization_url: Option<String>,
    /// Overrides the token endpoint.
    pub token_url: Option<String>,
    /// Overrides the device authorization endpoint.
    pub device_url: Option<String>,
    /// Overrides the scopes requested.
    pub scopes: Option<Vec<String>>,
}

/// How the first token is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Flow {
    /// Authorization code with PKCE, redirect to `http://127.0.0.1:PORT/`.
    Browser,
    /// Device authorization grant (RFC 8628).
    Device,
    /// Client credentials (unattended Microsoft 365 tenants).
    ClientCredentials,
}

/// What the token is for: each adds its scope where the provider needs one per protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// POP3 (always).
    Pop3,
    /// An IMAP destination.
    Imap,
    /// An SMTP destination.
    Smtp,
}

/// An account's resolved OAuth2 settings.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuth {
    /// The account's name (for messages).
    pub account: String,
    /// The provider preset.
    pub provider: Provider,
    /// Client ID.
    pub client_id: String,
    /// Client secret, if any.
    pub client_secret: Option<String>,
    /// A command printing the client secret.
    pub client_secret_command: Option<String>,
    /// The first-token flow.
    pub flow: Flow,
    /// Authorization endpoint.
    pub authorization_url: String,
    /// Token endpoint.
    pub token_url: String,
    /// Device authorization endpoint, where the provider has one.
    pub device_url: Option<String>,
    /// Scopes requested.
    pub scopes: Vec<String>,
    /// The token file.
    pub token_file: PathBuf,
    /// The command that (re)authorises this account, for messages.
    pub reauthorize_command: String,
}

impl std::fmt::Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth")
            .field("account", &self.account)
            .field("provider", &self.provider)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("flow", &self.flow)
            .field("token_url", &self.token_url)
            .field("scopes", &self.scopes)
            .field("token_file", &self.token_file)
            .finish()
    }
}

impl OAuth {
    /// Resolves `s` for account `account` (login `user`), keeping tokens in
    /// `token_file`; `uses` lists what the token must open (adds per-protocol scopes).
    pub fn resolve(
        account: &str,
        s: &OAuthSettings,
        token_file: PathBuf,
        uses: &[Use],
    ) -> Result<OAuth, String> {
        let provider = match s.provider.as_deref().unwrap_or("custom") {
            "google" | "gmail" => Provider::Google,
            "microsoft" | "outlook" | "office365" | "microsoft365" => Provider::Microsoft,
            "custom" => Provider::Custom,
            other => {
                return Err(format!(
                    "oauth2.provider must be google, microsoft or custom, not {other:?}"
                ));
            }
        };
        let flow = match s.flow.as_deref().unwrap_or("browser") {
            "browser" | "pkce" | "authorization-code" => Flow::Browser,
            "device" | "device-code" => Flow::Device,
            "client-credentials" | "client_credentials" => Flow::ClientCredentials,
            other => {
                return Err(format!(
                    "oauth2.flow must be browser, device or client-credentials, not {other:?}"
                ));
            }
        };
        let client_id = s.client_id.clone().ok_or_else(|| {
            format!(
                "oauth2: no client_id; register an application with {} (see README, \"Registering an OAuth2 client\") and set oauth2.client_id or --oauth2-client-id",
                provider.label()
            )
        })?;
        let tenant = s.tenant.as_deref().unwrap_or("common");
        let preset = provider.endpoints(tenant);
        let pick = |o: &Option<String>, p: Option<String>, what: &str| {
            o.clone().or(p).ok_or_else(|| {
                format!(
                    "oauth2: provider custom needs {what} (oauth2.{what} or --oauth2-{})",
                    what.replace('_', "-")
                )
            })
        };
        let authorization_url = pick(
            &s.authorization_url,
            preset.authorization,
            "authorization_url",
        )?;
        let token_url = pick(&s.token_url, preset.token, "token_url")?;
        let device_url = s.device_url.clone().or(preset.device);
        if flow == Flow::Device && device_url.is_none() {
            return Err(format!(
                "oauth2: {} offers no device flow for mail scopes; use flow = \"browser\"",
                provider.label()
            ));
        }
        if flow == Flow::ClientCredentials
            && s.client_secret.is_none()
            && s.client_secret_command.is_none()
        {
            return Err(
                "oauth2: client credentials need client_secret or client_secret_command".into(),
            );
        }
        let scopes = match &s.scopes {
            Some(v) => v.clone(),
            None => provider.scopes(flow, uses),
        };
        Ok(OAuth {
            account: account.to_owned(),
            provider,
            client_id,
            client_secret: s.client_secret.clone(),
            client_secret_command: s.client_secret_command.clone(),
            flow,
            authorization_url,
            token_url,
            device_url,
            scopes,
            token_file,
            reauthorize_command: format!("correio fetch --authorize --account {account}"),
        })
    }

    /// The client secret: from the settings, else from its command.
    pub fn secret(&self) -> Result<Option<String>, OAuthError> {
        if let Some(s) = &self.client_secret {
            return Ok(Some(s.clone()));
        }
        let Some(cmd) = &self.client_secret_command else {
            return Ok(None);
        };
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| OAuthError::Config(format!("client_secret_command: {e}")))?;
        if !out.status.success() {
            return Err(OAuthError::Config(format!(
                "client_secret_command failed ({})",
                out.status
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(Some(text.lines().next().unwrap_or_default().to_owned()))
    }
}

/// Errors of the OAuth2 layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OAuthError {
    /// No token yet.
    #[error("account {account}: not authorised for OAuth2 yet; run `{command}`")]
    NotAuthorized {
        /// The account.
        account: String,
        /// What fixes it.
        command: String,
    },
    /// The provider refused the refresh token: only a new authorisation helps.
    #[error(
        "account {account}: the OAuth2 provider refused to refresh the token ({error}{}): the consent was revoked or has expired (a Google project in test mode expires it after 7 days); run `{command}` to authorise again",
        description.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
    )]
    Reauthorize {
        /// The account.
        account: String,
        /// The OAuth2 error code (`invalid_grant`).
        error: String,
        /// The provider's `error_description`.
        description: Option<String>,
        /// What fixes it.
        command: String,
    },
    /// The provider answered with another OAuth2 error.
    #[error("OAuth2 {endpoint} endpoint: {error}{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Provider {
        /// Which endpoint.
        endpoint: &'static str,
        /// The OAuth2 error code.
        error: String,
        /// The provider's `error_description`.
        description: Option<String>,
    },
    /// HTTP or network failure.
    #[error("OAuth2 {0}")]
    Http(String),
    /// The settings cannot work.
    #[error("OAuth2: {0}")]
    Config(String),
    /// Reading or writing the token file.
    #[error("OAuth2 token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// The tokens of one account, as stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSet {
    /// The access token.
    pub access_token: String,
    /// The refresh token, when the provider issued one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Expiry, seconds since the epoch (0: unknown, treated as expired).
    pub expires_at: u64,
    /// The scopes granted, as the provider reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish()
    }
}

impl TokenSet {
    /// Whether the access token is good for at least [`REFRESH_MARGIN`] at `now`.
    pub fn fresh_at(&self, now: u64) -> bool {
        self.expires_at > now.saturating_add(REFRESH_MARGIN.as_secs())
    }

    /// Reads a token file (`None` when there is none).
    pub fn load(path: &Path) -> Result<Option<TokenSet>, OAuthError> {
        let io_err = |source| OAuthError::Io {
            path: path.to_owned(),
            source,
        };
        match fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| io_err(io::Error::new(io::ErrorKind::InvalidData, e))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(e)),
        }
    }

    /// Writes the token file atomically with mode 0600 (temporary file, fsync,
    /// rename, fsync of the directory); the directory is created with mode 0700.
    pub fn save(&self, path: &Path) -> Result<(), OAuthError> {
        let io_err = |source| OAuthError::Io {
            path: path.to_owned(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err)?;
        let text = serde_json::to_vec_pretty(self).map_err(|e| io_err(io::Error::other(e)))?;
        AtomicWrite::new()
            .mode(0o600)
            .write(path, &text)
            .map_err(|e| io_err(e.into()))
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A valid access token for `o`: the stored one while it is fresh, else refreshed
/// (or, for client credentials, requested again) and saved first.
pub async fn access_token(o: &OAuth) -> Result<String, OAuthError> {
    token(o, false).await.map(|(t, _)| t)
}

/// Like [`access_token`]; with `force` the stored token is refreshed even while it
/// looks fresh (the server refused it: revoked early, or the clock is wrong). Also
/// says whether the token was just obtained.
pub async fn token(o: &OAuth, force: bool) -> Result<(String, bool), OAuthError> {
    let stored = TokenSet::load(&o.token_file)?;
    let now = now_secs();
    if let Some(t) = &stored
        && t.fresh_at(now)
        && !force
    {
        return Ok((t.access_token.clone(), false));
    }
    let new = match (stored, o.flow) {
        (Some(old), _) if old.refresh_token.is_some() => {
            let rt = old.refresh_token.clone().unwrap_or_default();
            let mut t = flows::refresh(o, &rt).await?;
            if t.refresh_token.is_none() {
                // RFC 6749 §6: the old refresh token stays valid unless a new one is
                // issued.
                t.refresh_token = old.refresh_token;
            }
            t
        }
        (_, Flow::ClientCredentials) => flows::client_credentials(o).await?,
        _ => {
            return Err(OAuthError::NotAuthorized {
                account: o.account.clone(),
                command: o.reauthorize_command.clone(),
            });
        }
    };
    new.save(&o.token_file)?;
    tracing::info!(account = %o.account, expires_at = new.expires_at, "OAuth2 token refreshed");
    Ok((new.access_token, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_private_and_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("st/a.oauth2.json");
        let t = TokenSet {
            access_token: "at".into(),
            refresh_token: Some("rt".into()),
            expires_at: 10,
            scope: None,
        };
        t.save(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(TokenSet::load(&path).unwrap(), Some(t.clone()));
        assert!(!format!("{t:?}").contains("rt\""));
        assert!(!format!("{t:?}").contains("\"at\""));
        // Only the file itself is left in the directory.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn freshness_uses_the_margin() {
        let t = TokenSet {
            access_token: "a".into(),
            refresh_token: None,
            expires_at: 1000,
            scope: None,
        };
        assert!(t.fresh_at(1000 - REFRESH_MARGIN.as_secs() - 1));
        assert!(!t.fresh_at(1000 - REFRESH_MARGIN.as_secs()));
    }

    #[test]
    fn presets_and_errors() {
        let s = OAuthSettings {
            provider: Some("microsoft".into()),
            client_id: Some("id".into()),
            ..Default::default()
        };
        let o = OAuth::resolve("a", &s, "/t".into(), &[Use::Pop3, Use::Imap]).unwrap();
        assert!(o.token_url.contains("/common/oauth2/v2.0/token"));
        assert!(o.scopes.contains(&"offline_access".to_owned()));
        assert!(
            o.scopes
                .contains(&"https://outlook.office.com/IMAP.AccessAsUser.All".to_owned())
        );
        let g = OAuthSettings {
            provider: Some("google".into()),
            client_id: Some("id".into()),
            flow: Some("device".into()),
            ..Default::default()
        };
        assert!(OAuth::resolve("a", &g, "/t".into(), &[Use::Pop3]).is_err());
        let none = OAuthSettings {
            provider: Some("google".into()),
            ..Default::default()
        };
        let e = OAuth::resolve("a", &none, "/t".into(), &[Use::Pop3]).unwrap_err();
        assert!(e.contains("client_id"), "{e}");
        let custom = OAuthSettings {
            client_id: Some("id".into()),
            ..Default::default()
        };
        assert!(OAuth::resolve("a", &custom, "/t".into(), &[Use::Pop3]).is_err());
    }
}
