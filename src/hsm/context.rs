//! Loading the module, `C_Initialize`, and choosing the token (PKCS#11 §5.4–5.5).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
    keep_resident(module, &ctx);
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
        Err(e) => Err(e.into()),
    }
}

/// Keeps one handle to every module loaded, for the life of the process, so that no
/// `dlclose` (when the last `Pkcs11` handle drops, at exit or when recovery loads the
/// module again) ever unmaps it.
///
/// A module may leave thread-local destructors behind in the threads that called it:
/// kryoptic and the OpenSSL inside it do, in every tokio and worker thread that signed.
/// Unmapping the module before those threads end makes them jump into unmapped memory
/// as they exit: `signetd keys list` crashed at exit this way on kryoptic. A loaded
/// PKCS#11 module is process-wide state anyway (one `C_Initialize` per process), and
/// `C_Finalize`/`C_Initialize`, not reloading, is what recovery relies on. (`dlopen`'s
/// `RTLD_NODELETE` says the same, but would be this crate's only `unsafe` block.)
fn keep_resident(module: &Path, ctx: &Pkcs11) {
    static RESIDENT: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());
    let mut resident = RESIDENT.lock().unwrap_or_else(|p| p.into_inner());
    if !resident.iter().any(|(path, _)| path == module) {
        resident.push((module.to_path_buf(), ctx.clone()));
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
