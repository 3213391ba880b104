//! Loading the module, `C_Initialize`, and choosing the token (PKCS#11 §5.4–5.5).

use std::path::Path;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::slot::Slot;
use serde::Serialize;

use super::{HsmError, TokenSelector};

/// Who the token says it is; published with keys and, later, in attestation certificates.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TokenIdentity {
    /// `CK_TOKEN_INFO.label`, padding trimmed.
    pub label: String,
    /// `CK_TOKEN_INFO.serialNumber`.
    pub serial: String,
    /// `CK_TOKEN_INFO.manufacturerID`.
    pub manufacturer: String,
    /// `CK_TOKEN_INFO.model`.
    pub model: String,
}

/// Loads the module and initializes it for multi-threaded use.
///
/// "Already initialized" is success: another `Pkcs11` handle in this process (a test
/// harness, an embedding application) did it first, and the module is per process.
pub(crate) fn load(module: &Path) -> Result<Pkcs11, HsmError> {
    if !module.is_file() {
        return Err(HsmError::ModuleLoad {
            path: module.to_path_buf(),
            reason: "no such file".to_string(),
        });
    }
    let ctx = Pkcs11::new(module).map_err(|e| HsmError::ModuleLoad {
        path: module.to_path_buf(),
        reason: e.to_string(),
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
        Err(e) => Err(e.into()),
    }
}

/// Finds exactly one token that matches `selector`.
pub(crate) fn select_token(
    ctx: &Pkcs11,
    selector: &TokenSelector,
) -> Result<(Slot, TokenIdentity), HsmError> {
    let mut present = Vec::new();
    let mut matches = Vec::new();
    for slot in ctx.get_slots_with_initialized_token()? {
        let info = ctx.get_token_info(slot)?;
        let identity = TokenIdentity {
            label: info.label().trim_end().to_string(),
            serial: info.serial_number().trim_end().to_string(),
            manufacturer: info.manufacturer_id().trim_end().to_string(),
            model: info.model().trim_end().to_string(),
        };
        if selector.matches(
            &identity.label,
            &identity.serial,
            &identity.manufacturer,
            &identity.model,
        ) {
            matches.push((slot, identity.clone()));
        }
        present.push(format!("{:?} (serial {})", identity.label, identity.serial));
    }
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(HsmError::TokenNotFound {
            selector: selector.to_string(),
            present: if present.is_empty() {
                "none".to_string()
            } else {
                present.join(", ")
            },
        }),
        count => Err(HsmError::AmbiguousToken {
            selector: selector.to_string(),
            count,
        }),
    }
}
