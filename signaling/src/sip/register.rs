//! Registration with trunks (`register = true`): REGISTER with digest authentication, refreshed
//! at three quarters of the granted lifetime, retried with backoff after failures, and removed
//! (expires 0) is not attempted at shutdown: the registration simply lapses.

use std::sync::Arc;

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::registration::{RefreshOutcome, Registration};
use rsipstack::sip::Uri;

use super::config::TrunkSettings;
use super::ua::Shared;

/// One trunk's registration state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrationStatus {
    /// Successful registrations (1 after the first, then one per refresh).
    pub registered: u32,
    /// Refused or failed attempts.
    pub failures: u32,
    /// The last final status (0 for a transport failure).
    pub last_status: u16,
}

/// Keeps `trunk` registered until the bridge stops.
pub(crate) async fn keep_registered(shared: Arc<Shared>, name: String, trunk: TrunkSettings) {
    let server = match Uri::try_from(format!("sip:{}", trunk.address).as_str()) {
        Ok(uri) => uri,
        Err(e) => {
            tracing::warn!(trunk = %name, error = %e, "cannot register: bad trunk address");
            return;
        }
    };
    let password = std::env::var(&trunk.password_env).unwrap_or_default();
    if password.is_empty() {
        tracing::warn!(trunk = %name, variable = %trunk.password_env, "registering without a password (the variable is unset)");
    }
    let credential = Credential {
        username: trunk.username.clone(),
        password,
        realm: None,
        auth_username: None,
    };
    let mut registration = Registration::new(shared.endpoint.clone(), Some(credential));
    let token = shared.cancel.child_token();
    registration
        .keep_alive(server, trunk.register_expires, token, |outcome| {
            let mut all = shared.registrations.lock().unwrap_or_else(|p| p.into_inner());
            let status = all.entry(name.clone()).or_default();
            match outcome {
                RefreshOutcome::Registered(response) => {
                    status.registered += 1;
                    status.last_status = u16::from(response.status_code.clone());
                    tracing::info!(trunk = %name, count = status.registered, "registered");
                }
                RefreshOutcome::Rejected(response) => {
                    status.failures += 1;
                    status.last_status = u16::from(response.status_code.clone());
                    tracing::warn!(trunk = %name, status = status.last_status, "registration refused");
                }
                RefreshOutcome::Failed(error) => {
                    status.failures += 1;
                    status.last_status = 0;
                    tracing::warn!(trunk = %name, %error, "registration failed");
                }
            }
        })
        .await;
}
