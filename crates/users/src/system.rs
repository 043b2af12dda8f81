//! The system's own accounts: passwords checked through PAM, records from the passwd
//! database (`getpwnam`), mail in `/var/mail/<user>` (Debian's spool: mode 0660,
//! group `mail`, dot-locked in the group-writable `/var/mail`) unless
//! `[auth.system] mail_location` says otherwise (`maildir:%h/Maildir`).
//!
//! Checking a system password needs root (`/etc/shadow`), and the server's sessions run
//! as the service user, so the PAM conversation runs in the privileged helper
//! (`correio serve`'s root process): the server hands it a [`PamCheck`]. A
//! command-line tool running as root can use [`LocalPam`].
//!
//! Accounts below `first_valid_uid` (root, daemons) are refused *without* asking PAM,
//! so POP3 can never be used to test root's password.

use std::sync::Arc;

use correio_auth::{FailureReason, SaslError, UserRecord};

use crate::config::SystemConfig;
use crate::{Temporary, refused};

/// Checks a password with PAM: `Ok(true)` accepted (authentication and account
/// checks), `Ok(false)` refused, `Err` when PAM cannot answer now.
pub trait PamCheck: std::fmt::Debug + Send + Sync {
    /// Runs the conversation for `user` with `password` under PAM service `service`.
    fn check(&self, service: &str, user: &str, password: &[u8]) -> Result<bool, Temporary>;
}

/// PAM in this process (it must be root to check other users' passwords).
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalPam;

impl PamCheck for LocalPam {
    fn check(&self, service: &str, user: &str, password: &[u8]) -> Result<bool, Temporary> {
        pam_authenticate(service, user, password)
    }
}

/// One PAM conversation: `pam_authenticate` then `pam_acct_mgmt` (expired or locked
/// accounts are refused). Blocking: PAM may sleep seconds after a failure.
pub fn pam_authenticate(service: &str, user: &str, password: &[u8]) -> Result<bool, Temporary> {
    let Ok(password) = std::str::from_utf8(password) else {
        return Ok(false);
    };
    if password.contains('\0') || user.contains('\0') || service.contains('\0') {
        return Ok(false);
    }
    let mut auth = pam::Authenticator::with_password(service)
        .map_err(|e| Temporary(format!("PAM service {service:?} cannot start: {e:?}")))?;
    auth.get_handler().set_credentials(user, password);
    match auth.authenticate() {
        Ok(()) => Ok(true),
        Err(e) => {
            let code = format!("{e:?}");
            // PAM's "cannot answer now" codes (the rest are refusals).
            if [
                "AUTHINFO_UNAVAIL",
                "SYSTEM_ERR",
                "BUF_ERR",
                "TRY_AGAIN",
                "SERVICE_ERR",
            ]
            .iter()
            .any(|c| code.contains(c))
            {
                Err(Temporary(format!("PAM: {code}")))
            } else {
                tracing::debug!(target: "correio::auth", user, code, "PAM refused");
                Ok(false)
            }
        }
    }
}

/// The system user database.
#[derive(Debug)]
pub struct SystemDb {
    config: SystemConfig,
    pam: Option<Arc<dyn PamCheck>>,
}

impl SystemDb {
    /// `pam`: how passwords are checked (none: logins fail temporarily, logged — the
    /// server always gives one).
    pub fn new(config: SystemConfig, pam: Option<Arc<dyn PamCheck>>) -> SystemDb {
        SystemDb { config, pam }
    }

    /// The passwd entry, if the account exists (whatever its uid).
    fn account(&self, user: &str) -> Result<Option<(UserRecord, u32)>, Temporary> {
        let u = nix::unistd::User::from_name(user)
            .map_err(|e| Temporary(format!("passwd database: {e}")))?;
        Ok(u.map(|u| {
            let mut r = UserRecord::new(&u.name, None);
            r.uid = u.uid.to_string();
            r.gid = u.gid.to_string();
            r.home = u.dir.to_string_lossy().into_owned();
            r.shell = u.shell.to_string_lossy().into_owned();
            r.set_field("userdb_mail", Some(&self.config.mail_location()));
            (r, u.uid.as_raw())
        }))
    }

    /// The record of a system account that may log in (uid ≥ `first_valid_uid`).
    pub fn lookup(&self, user: &str) -> Result<Option<UserRecord>, Temporary> {
        Ok(self
            .account(user)?
            .filter(|(_, uid)| *uid >= self.config.first_valid_uid())
            .map(|(r, _)| r))
    }

    /// Checks the password through PAM.
    pub fn verify_plain(&self, user: &str, password: &[u8]) -> Result<UserRecord, SaslError> {
        let Some(pam) = &self.pam else {
            tracing::error!(target: "correio::auth", "system users: no PAM checker (the privileged helper is not running)");
            return Err(SaslError::Temporary("PAM is not available".into()));
        };
        let service = self.config.pam_service();
        match self.account(user)? {
            Some((_, uid)) if uid < self.config.first_valid_uid() => {
                Err(refused(user, FailureReason::Disabled))
            }
            Some((record, _)) => match pam.check(&service, user, password)? {
                true => Ok(record),
                false => Err(refused(user, FailureReason::Rejected)),
            },
            None => {
                // PAM takes the same path (and its failure delay) for unknown users.
                let _ = pam.check(&service, user, password)?;
                Err(refused(user, FailureReason::UnknownUser))
            }
        }
    }
}
