//! Token initialization (PKCS#11 §5.6: `C_InitToken`, `C_InitPIN`) for the init-token
//! ceremony. Runs once, before any config exists, so it takes the module path directly
//! and uses its own short-lived sessions instead of the pool.

use std::path::Path;

use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::session::UserType;
use secrecy::SecretString;

use super::context::{self, TokenIdentity};
use super::{HsmError, TokenSelector};

/// What the init-token ceremony did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenSetup {
    /// A blank token was initialized with the label, SO PIN and user PIN.
    Initialized,
    /// A token with the label already existed and the user PIN logs in to it.
    Verified,
}

/// Initializes the first uninitialized token as `label`, or verifies the existing token
/// with that label by logging in with the user PIN. With `sole`, a token of another
/// label already present is an error rather than a neighbour: a throwaway SoftHSM2
/// store keeps its PIN files beside it, so it must hold one token only.
pub fn init_or_verify(
    module: &Path,
    label: &str,
    so_pin: &SecretString,
    user_pin: &SecretString,
    sole: bool,
) -> Result<(TokenSetup, TokenIdentity), HsmError> {
    let ctx = context::load(module)?;
    let selector = TokenSelector {
        label: Some(label.to_string()),
        ..TokenSelector::default()
    };
    match context::select_token(&ctx, &selector) {
        Ok((slot, identity)) => {
            let session = ctx.open_ro_session(slot)?;
            match session.login(UserType::User, Some(user_pin)) {
                Ok(()) | Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                Err(e) => return Err(e.into()),
            }
            let _ = session.logout();
            return Ok((TokenSetup::Verified, identity));
        }
        Err(HsmError::TokenNotFound { present, .. }) if sole && present != "none" => {
            return Err(HsmError::TokenNotFound {
                selector: format!(
                    "{label:?} in a store that holds another token (use one per token)"
                ),
                present,
            });
        }
        Err(HsmError::TokenNotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    for slot in ctx.get_slots_with_token()? {
        if ctx.get_token_info(slot)?.token_initialized() {
            continue;
        }
        ctx.init_token(slot, so_pin, label)?;
        let session = ctx.open_rw_session(slot)?;
        session.login(UserType::So, Some(so_pin))?;
        session.init_pin(user_pin)?;
        let _ = session.logout();
        drop(session);
        // SoftHSM2 moves a freshly initialized token to a new slot: look it up again.
        let (_, identity) = context::select_token(&ctx, &selector)?;
        return Ok((TokenSetup::Initialized, identity));
    }
    Err(HsmError::TokenNotFound {
        selector: format!("an uninitialized token to label {label:?}"),
        present: "only initialized tokens".to_string(),
    })
}
