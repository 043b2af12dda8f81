//! SASL mechanisms for [`Client::auth`](crate::Client::auth), from `correio-auth`,
//! adapted to the protocol crate's [`SaslMechanism`] trait.

use correio_auth::{ClientCredentials, ClientMechanism, ClientMechanismKind};
use correio_proto::client::SaslMechanism;

/// A client mechanism by SASL name (`PLAIN`, `LOGIN`, `CRAM-MD5`, `SCRAM-SHA-256`,
/// `XOAUTH2`, `OAUTHBEARER`), or `None` if unknown or the credentials cannot be
/// expressed in it. XOAUTH2 and OAUTHBEARER send their token after an empty
/// challenge (two steps), so tokens of any length work.
pub fn mechanism(name: &str, user: &str, secret: &[u8]) -> Option<Box<dyn SaslMechanism>> {
    let kind = ClientMechanismKind::from_name(name)?;
    let secret = String::from_utf8(secret.to_vec()).ok()?;
    let mech = ClientMechanism::new(kind, ClientCredentials::new(user, &secret)).ok()?;
    Some(Box::new(Adapter {
        mech,
        name: kind.name(),
    }))
}

/// The [`crate::fetch::MechanismFactory`] that uses [`mechanism`].
pub fn factory(name: &str, user: &str, secret: &[u8]) -> Option<Box<dyn SaslMechanism>> {
    mechanism(name, user, secret)
}

struct Adapter {
    mech: ClientMechanism,
    name: &'static str,
}

impl SaslMechanism for Adapter {
    fn name(&self) -> &str {
        self.name
    }

    fn initial_response(&mut self) -> Option<Vec<u8>> {
        match self.mech.kind() {
            ClientMechanismKind::XOAuth2 | ClientMechanismKind::OAuthBearer => None,
            _ => self.mech.initial_response(),
        }
    }

    fn step(&mut self, challenge: &[u8]) -> Result<Vec<u8>, String> {
        self.mech
            .step(challenge)
            .map_err(|e| match self.mech.server_error() {
                Some(detail) => format!("{e}: {detail}"),
                None => e.to_string(),
            })
    }

    fn finish(&mut self) -> Result<(), String> {
        self.mech.finish().map_err(|e| e.to_string())
    }
}
