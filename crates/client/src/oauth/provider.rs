//! Provider presets: endpoints and scopes of Google and Microsoft, and how to tell an
//! account belongs to one of them from its address or its server.

use serde::Serialize;

use super::{Flow, Use};

/// An OAuth2 provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Provider {
    /// Google (Gmail, Google Workspace).
    Google,
    /// Microsoft (outlook.com, hotmail.com, Microsoft 365).
    Microsoft,
    /// Anything else: every endpoint and scope comes from the settings.
    Custom,
}

/// A provider's endpoints (`None`: none known).
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    /// Authorization endpoint.
    pub authorization: Option<String>,
    /// Token endpoint.
    pub token: Option<String>,
    /// Device authorization endpoint.
    pub device: Option<String>,
}

/// Google's full mail scope (POP3, IMAP and SMTP).
pub const GOOGLE_MAIL_SCOPE: &str = "https://mail.google.com/";
/// Microsoft's delegated POP3 scope.
pub const MICROSOFT_POP_SCOPE: &str = "https://outlook.office.com/POP.AccessAsUser.All";
/// Microsoft's delegated IMAP scope.
pub const MICROSOFT_IMAP_SCOPE: &str = "https://outlook.office.com/IMAP.AccessAsUser.All";
/// Microsoft's delegated SMTP submission scope.
pub const MICROSOFT_SMTP_SCOPE: &str = "https://outlook.office.com/SMTP.Send";
/// Microsoft's application scope for client credentials (POP3/IMAP app access).
pub const MICROSOFT_APP_SCOPE: &str = "https://outlook.office365.com/.default";

impl Provider {
    /// The provider's name for people.
    pub fn label(self) -> &'static str {
        match self {
            Provider::Google => "Google",
            Provider::Microsoft => "Microsoft",
            Provider::Custom => "the provider",
        }
    }

    /// The name used in the account file.
    pub fn key(self) -> &'static str {
        match self {
            Provider::Google => "google",
            Provider::Microsoft => "microsoft",
            Provider::Custom => "custom",
        }
    }

    /// Endpoints; `tenant` is Microsoft's (`common`, `organizations`, a tenant ID).
    /// Google's device flow does not allow mail scopes, so it has none here.
    pub fn endpoints(self, tenant: &str) -> Endpoints {
        match self {
            Provider::Google => Endpoints {
                authorization: Some("https://accounts.google.com/o/oauth2/v2/auth".into()),
                token: Some("https://oauth2.googleapis.com/token".into()),
                device: None,
            },
            Provider::Microsoft => {
                let base = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0");
                Endpoints {
                    authorization: Some(format!("{base}/authorize")),
                    token: Some(format!("{base}/token")),
                    device: Some(format!("{base}/devicecode")),
                }
            }
            Provider::Custom => Endpoints::default(),
        }
    }

    /// The scopes for `flow` covering `uses`.
    pub fn scopes(self, flow: Flow, uses: &[Use]) -> Vec<String> {
        match self {
            Provider::Google => vec![GOOGLE_MAIL_SCOPE.into()],
            Provider::Microsoft if flow == Flow::ClientCredentials => {
                vec![MICROSOFT_APP_SCOPE.into()]
            }
            Provider::Microsoft => {
                let mut v = vec![MICROSOFT_POP_SCOPE.to_owned()];
                if uses.contains(&Use::Imap) {
                    v.push(MICROSOFT_IMAP_SCOPE.into());
                }
                if uses.contains(&Use::Smtp) {
                    v.push(MICROSOFT_SMTP_SCOPE.into());
                }
                v.push("offline_access".into());
                v
            }
            Provider::Custom => vec!["mail".into(), "offline_access".into()],
        }
    }

    /// Extra authorization request parameters: Google issues a refresh token only
    /// with `access_type=offline` (and again only with `prompt=consent`).
    pub fn extra_authorization_params(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Provider::Google => &[("access_type", "offline"), ("prompt", "consent")],
            _ => &[],
        }
    }

    /// The provider of an address's domain or of its (discovered) server host.
    pub fn detect(address: &str, host: Option<&str>) -> Option<Provider> {
        let domain = address
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or(address)
            .to_ascii_lowercase();
        let host = host.unwrap_or_default().to_ascii_lowercase();
        let google = ["gmail.com", "googlemail.com"];
        let microsoft = [
            "outlook.com",
            "hotmail.com",
            "live.com",
            "msn.com",
            "outlook.de",
            "hotmail.co.uk",
            "hotmail.fr",
        ];
        if google.contains(&domain.as_str())
            || host == "pop.gmail.com"
            || host.ends_with(".google.com")
        {
            Some(Provider::Google)
        } else if microsoft.contains(&domain.as_str())
            || host.ends_with("outlook.office365.com")
            || host.ends_with(".office365.com")
            || host.ends_with("outlook.live.com")
            || host.ends_with(".outlook.com")
        {
            Some(Provider::Microsoft)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_by_domain_and_server() {
        assert_eq!(
            Provider::detect("you@gmail.com", None),
            Some(Provider::Google)
        );
        assert_eq!(
            Provider::detect("you@Outlook.com", None),
            Some(Provider::Microsoft)
        );
        // A Microsoft 365 custom domain, found by its discovered server.
        assert_eq!(
            Provider::detect("me@contoso.example", Some("outlook.office365.com")),
            Some(Provider::Microsoft)
        );
        assert_eq!(
            Provider::detect("me@example.org", Some("pop.example.org")),
            None
        );
    }
}
