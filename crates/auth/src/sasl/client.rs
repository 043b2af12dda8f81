//! Client side of SASL, for the fetcher: PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-256,
//! XOAUTH2 and OAUTHBEARER (RFC 7628).
//!
//! # Driving contract
//! 1. [`ClientMechanism::new`]. If the server allows initial responses (SASL-IR; in POP3
//!    when the `AUTH` line stays within limits), send
//!    [`initial_response`](ClientMechanism::initial_response) with `AUTH`; otherwise send
//!    `AUTH <mech>` alone: the server answers with an empty challenge and
//!    [`step`](ClientMechanism::step)`(b"")` returns the initial response then. Tokens
//!    of any length work in the second form (the default for XOAUTH2/OAUTHBEARER).
//! 2. For every `+ challenge`, base64-decode it, call `step`, base64 the result and
//!    send it (an empty result is an empty line).
//! 3. On `+OK`, call [`finish`](ClientMechanism::finish): for SCRAM it fails unless the
//!    server proved it knows the password (server signature verified). On `-ERR`, if
//!    [`server_error`](ClientMechanism::server_error) is set it holds what the server
//!    explained (OAuth error JSON).

use std::fmt;

use md5::Md5;
use sha2::Digest as _;
use subtle::ConstantTimeEq as _;

use super::SaslError;
use super::scram::{self, MAX_SCRAM_MESSAGE};
use crate::scheme::{hex_lower, hmac_sha256, salted_password};

/// Which mechanism the client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientMechanismKind {
    /// PLAIN (RFC 4616).
    Plain,
    /// LOGIN.
    Login,
    /// CRAM-MD5 (RFC 2195).
    CramMd5,
    /// SCRAM-SHA-256 (RFC 7677), no channel binding.
    ScramSha256,
    /// Google/Microsoft XOAUTH2 (bearer token).
    XOAuth2,
    /// OAUTHBEARER (RFC 7628).
    OAuthBearer,
}

impl ClientMechanismKind {
    /// The SASL name.
    pub fn name(self) -> &'static str {
        match self {
            ClientMechanismKind::Plain => "PLAIN",
            ClientMechanismKind::Login => "LOGIN",
            ClientMechanismKind::CramMd5 => "CRAM-MD5",
            ClientMechanismKind::ScramSha256 => "SCRAM-SHA-256",
            ClientMechanismKind::XOAuth2 => "XOAUTH2",
            ClientMechanismKind::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// Parses a SASL name (case-insensitive).
    pub fn from_name(name: &str) -> Option<ClientMechanismKind> {
        use ClientMechanismKind::*;
        [Plain, Login, CramMd5, ScramSha256, XOAuth2, OAuthBearer]
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// Whether the mechanism sends a reusable secret (password or bearer token) that an
    /// eavesdropper could replay: only use these over TLS.
    pub fn exposes_secret(self) -> bool {
        !matches!(
            self,
            ClientMechanismKind::CramMd5 | ClientMechanismKind::ScramSha256
        )
    }

    /// Whether the client speaks first (has an initial response).
    pub fn client_first(self) -> bool {
        !matches!(
            self,
            ClientMechanismKind::Login | ClientMechanismKind::CramMd5
        )
    }
}

/// What the client authenticates with. `Debug` hides the secret.
#[derive(Clone)]
pub struct ClientCredentials {
    /// The login name (authentication identity).
    pub username: String,
    /// The password, or the OAuth2 access token for XOAUTH2/OAUTHBEARER.
    pub secret: String,
    /// An authorization identity, if different from `username` (rare).
    pub authzid: Option<String>,
    /// OAUTHBEARER's optional `host=` (the server's name).
    pub host: Option<String>,
    /// OAUTHBEARER's optional `port=`.
    pub port: Option<u16>,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("username", &self.username)
            .field("authzid", &self.authzid)
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl ClientCredentials {
    /// Username and password (or token), nothing else.
    pub fn new(username: &str, secret: &str) -> ClientCredentials {
        ClientCredentials {
            username: username.to_owned(),
            secret: secret.to_owned(),
            authzid: None,
            host: None,
            port: None,
        }
    }
}

enum State {
    /// Client-first mechanism whose initial response is not sent yet.
    Initial,
    LoginWaitUser,
    LoginWaitPass,
    CramWait,
    ScramWaitServerFirst {
        client_first_bare: String,
        gs2_header: String,
        cnonce: String,
    },
    ScramWaitServerFinal {
        expected_signature: [u8; 32],
    },
    /// Sent the last response; waiting for +OK/-ERR.
    Sent,
    /// SCRAM server signature verified.
    Verified,
    /// The server sent an OAuth error; we answered with the dummy response.
    OAuthErrorAnswered,
    Failed,
}

/// One client-side SASL exchange. See the module docs for the driving contract.
pub struct ClientMechanism {
    kind: ClientMechanismKind,
    creds: ClientCredentials,
    state: State,
    scram_nonce: Option<String>,
    server_error: Option<String>,
}

impl fmt::Debug for ClientMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientMechanism")
            .field("kind", &self.kind)
            .field("creds", &self.creds)
            .finish_non_exhaustive()
    }
}

/// Longest challenge we accept from a server.
const MAX_CHALLENGE: usize = 16 * 1024;

impl ClientMechanism {
    /// Prepares an exchange. Fails if the credentials cannot be expressed in the
    /// mechanism (a NUL in PLAIN fields, `\x01` in an OAuth token, a space in a
    /// CRAM-MD5 user...).
    pub fn new(
        kind: ClientMechanismKind,
        creds: ClientCredentials,
    ) -> Result<ClientMechanism, SaslError> {
        let bad = |what: &'static str| Err(SaslError::Malformed(what));
        let has = |s: &str, cs: &[char]| s.contains(cs);
        match kind {
            ClientMechanismKind::Plain => {
                if has(&creds.username, &['\0'])
                    || has(&creds.secret, &['\0'])
                    || creds.authzid.as_deref().is_some_and(|a| a.contains('\0'))
                {
                    return bad("PLAIN fields cannot contain NUL");
                }
            }
            ClientMechanismKind::Login => {
                if has(&creds.username, &['\r', '\n']) || has(&creds.secret, &['\r', '\n']) {
                    return bad("LOGIN fields cannot contain CR or LF");
                }
            }
            ClientMechanismKind::CramMd5 => {
                if has(&creds.username, &[' ', '\0', '\r', '\n']) {
                    return bad("CRAM-MD5 user name cannot contain spaces or control characters");
                }
            }
            ClientMechanismKind::ScramSha256 => {}
            ClientMechanismKind::XOAuth2 | ClientMechanismKind::OAuthBearer => {
                if has(&creds.username, &['\x01']) || has(&creds.secret, &['\x01', ' ']) {
                    return bad("OAuth user or token contains a forbidden character");
                }
                if creds.host.as_deref().is_some_and(|h| h.contains('\x01')) {
                    return bad("OAuth host contains a forbidden character");
                }
            }
        }
        let state = match kind {
            ClientMechanismKind::Login => State::LoginWaitUser,
            ClientMechanismKind::CramMd5 => State::CramWait,
            _ => State::Initial,
        };
        Ok(ClientMechanism {
            kind,
            creds,
            state,
            scram_nonce: None,
            server_error: None,
        })
    }

    /// Fixes the SCRAM client nonce (for RFC test vectors only).
    #[doc(hidden)]
    pub fn with_scram_nonce(mut self, nonce: &str) -> Self {
        self.scram_nonce = Some(nonce.to_owned());
        self
    }

    /// The mechanism.
    pub fn kind(&self) -> ClientMechanismKind {
        self.kind
    }

    /// The initial response for `AUTH <mech> <initial>`, or `None` if the mechanism has
    /// none (LOGIN, CRAM-MD5) or it was already produced.
    pub fn initial_response(&mut self) -> Option<Vec<u8>> {
        if !matches!(self.state, State::Initial) {
            return None;
        }
        let creds = &self.creds;
        let out = match self.kind {
            ClientMechanismKind::Plain => {
                let mut v = creds.authzid.clone().unwrap_or_default().into_bytes();
                v.push(0);
                v.extend_from_slice(creds.username.as_bytes());
                v.push(0);
                v.extend_from_slice(creds.secret.as_bytes());
                self.state = State::Sent;
                v
            }
            ClientMechanismKind::ScramSha256 => {
                let gs2_header = match &creds.authzid {
                    Some(a) => format!("n,a={},", scram::encode_saslname(a)),
                    None => "n,,".to_owned(),
                };
                let cnonce = self.scram_nonce.clone().unwrap_or_else(scram::new_nonce);
                let client_first_bare =
                    format!("n={},r={cnonce}", scram::encode_saslname(&creds.username));
                let msg = format!("{gs2_header}{client_first_bare}").into_bytes();
                self.state = State::ScramWaitServerFirst {
                    client_first_bare,
                    gs2_header,
                    cnonce,
                };
                msg
            }
            ClientMechanismKind::XOAuth2 => {
                self.state = State::Sent;
                format!(
                    "user={}\x01auth=Bearer {}\x01\x01",
                    creds.username, creds.secret
                )
                .into_bytes()
            }
            ClientMechanismKind::OAuthBearer => {
                let mut s = format!("n,a={},\x01", scram::encode_saslname(&creds.username));
                if let Some(h) = &creds.host {
                    s.push_str(&format!("host={h}\x01"));
                }
                if let Some(p) = creds.port {
                    s.push_str(&format!("port={p}\x01"));
                }
                s.push_str(&format!("auth=Bearer {}\x01\x01", creds.secret));
                self.state = State::Sent;
                s.into_bytes()
            }
            ClientMechanismKind::Login | ClientMechanismKind::CramMd5 => return None,
        };
        Some(out)
    }

    /// Answers one (decoded) server challenge.
    pub fn step(&mut self, challenge: &[u8]) -> Result<Vec<u8>, SaslError> {
        if challenge.len() > MAX_CHALLENGE {
            self.state = State::Failed;
            return Err(SaslError::Malformed("challenge too long"));
        }
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Initial => {
                // Two-step form: the server's empty challenge asks for the initial response.
                if !challenge.is_empty() {
                    return Err(SaslError::Malformed("expected an empty challenge"));
                }
                self.state = State::Initial;
                self.initial_response().ok_or(SaslError::UnexpectedStep)
            }
            State::LoginWaitUser => {
                let text = String::from_utf8_lossy(challenge).to_ascii_lowercase();
                if text.contains("pass") {
                    // A server that skips the username prompt.
                    self.state = State::Sent;
                    return Ok(self.creds.secret.clone().into_bytes());
                }
                self.state = State::LoginWaitPass;
                Ok(self.creds.username.clone().into_bytes())
            }
            State::LoginWaitPass => {
                self.state = State::Sent;
                Ok(self.creds.secret.clone().into_bytes())
            }
            State::CramWait => {
                if challenge.is_empty() {
                    return Err(SaslError::Malformed("empty CRAM-MD5 challenge"));
                }
                use hmac::Mac as _;
                let mut mac =
                    <hmac::Hmac<Md5> as hmac::Mac>::new_from_slice(self.creds.secret.as_bytes())
                        .map_err(|_| SaslError::Malformed("key"))?;
                mac.update(challenge);
                let digest = mac.finalize().into_bytes();
                self.state = State::Sent;
                Ok(format!("{} {}", self.creds.username, hex_lower(&digest)).into_bytes())
            }
            State::ScramWaitServerFirst {
                client_first_bare,
                gs2_header,
                cnonce,
            } => self.scram_client_final(challenge, &client_first_bare, &gs2_header, &cnonce),
            State::ScramWaitServerFinal { expected_signature } => {
                let msg = std::str::from_utf8(challenge)
                    .map_err(|_| SaslError::Malformed("server-final is not UTF-8"))?;
                let attrs = scram::attributes(msg)?;
                match attrs.first() {
                    Some(('e', err)) => Err(SaslError::ServerError((*err).to_owned())),
                    Some(('v', sig)) => {
                        let sig = scram::unb64(sig)
                            .ok_or(SaslError::Malformed("bad server signature"))?;
                        if bool::from(sig.as_slice().ct_eq(&expected_signature)) {
                            self.state = State::Verified;
                            Ok(Vec::new())
                        } else {
                            Err(SaslError::ServerSignatureMismatch)
                        }
                    }
                    _ => Err(SaslError::Malformed("server-final must be v= or e=")),
                }
            }
            State::Sent
                if matches!(
                    self.kind,
                    ClientMechanismKind::XOAuth2 | ClientMechanismKind::OAuthBearer
                ) =>
            {
                // RFC 7628 §3.2.3: an error JSON arrives as a challenge; answer with the
                // dummy response (OAUTHBEARER: %x01; XOAUTH2: empty) and expect -ERR.
                self.server_error = Some(String::from_utf8_lossy(challenge).into_owned());
                self.state = State::OAuthErrorAnswered;
                Ok(if self.kind == ClientMechanismKind::OAuthBearer {
                    vec![0x01]
                } else {
                    Vec::new()
                })
            }
            _ => Err(SaslError::UnexpectedStep),
        }
    }

    fn scram_client_final(
        &mut self,
        challenge: &[u8],
        client_first_bare: &str,
        gs2_header: &str,
        cnonce: &str,
    ) -> Result<Vec<u8>, SaslError> {
        if challenge.len() > MAX_SCRAM_MESSAGE {
            return Err(SaslError::Malformed("server-first too long"));
        }
        let server_first = std::str::from_utf8(challenge)
            .map_err(|_| SaslError::Malformed("server-first is not UTF-8"))?;
        let attrs = scram::attributes(server_first)?;
        if let Some(('e', err)) = attrs.first() {
            return Err(SaslError::ServerError((*err).to_owned()));
        }
        if attrs.first().map(|a| a.0) == Some('m') {
            return Err(SaslError::Malformed(
                "unsupported mandatory SCRAM extension",
            ));
        }
        let (Some(('r', nonce)), Some(('s', salt)), Some(('i', iters))) = (
            attrs.first().copied(),
            attrs.get(1).copied(),
            attrs.get(2).copied(),
        ) else {
            return Err(SaslError::Malformed("server-first must be r=,s=,i="));
        };
        if !nonce.starts_with(cnonce) || nonce.len() == cnonce.len() || !scram::valid_nonce(nonce) {
            return Err(SaslError::Malformed("server nonce does not extend ours"));
        }
        let salt = scram::unb64(salt).ok_or(SaslError::Malformed("bad salt"))?;
        let iterations: u32 = iters
            .parse()
            .map_err(|_| SaslError::Malformed("bad iteration count"))?;
        // A server could make us burn CPU for minutes; RFC 7677 asks for at least 4096.
        if !(4096..=10_000_000).contains(&iterations) {
            return Err(SaslError::Malformed(
                "iteration count out of range (4096..=10000000)",
            ));
        }
        let salted = salted_password(self.creds.secret.as_bytes(), &salt, iterations);
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored_key: [u8; 32] = sha2::Sha256::digest(client_key).into();
        let server_key = hmac_sha256(&salted, b"Server Key");
        let without_proof = format!("c={},r={nonce}", scram::b64(gs2_header.as_bytes()));
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac_sha256(&stored_key, auth_message.as_bytes());
        let proof = scram::xor32(&client_key, &client_signature);
        self.state = State::ScramWaitServerFinal {
            expected_signature: hmac_sha256(&server_key, auth_message.as_bytes()),
        };
        Ok(format!("{without_proof},p={}", scram::b64(&proof)).into_bytes())
    }

    /// Call on the server's final `+OK`. Fails for SCRAM unless the server's signature
    /// was verified, and for any mechanism that had not sent its last response.
    pub fn finish(&self) -> Result<(), SaslError> {
        match (&self.state, self.kind) {
            (State::Verified, ClientMechanismKind::ScramSha256) => Ok(()),
            (_, ClientMechanismKind::ScramSha256) => Err(SaslError::Incomplete),
            (State::Sent, _) => Ok(()),
            (State::OAuthErrorAnswered, _) => Err(SaslError::ServerError(
                self.server_error.clone().unwrap_or_default(),
            )),
            _ => Err(SaslError::Incomplete),
        }
    }

    /// The error text the server sent (OAuth error JSON), if any.
    pub fn server_error(&self) -> Option<&str> {
        self.server_error.as_deref()
    }
}
