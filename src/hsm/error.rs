//! Errors of the PKCS#11 layer.
//!
//! Every failed call records which PKCS#11 function failed and the return value, so the
//! log says exactly what the token refused. None of these messages ever contains a PIN:
//! the PIN only ever travels inside a `SecretString` straight into `C_Login`.

use std::path::PathBuf;
use std::time::Duration;

use cryptoki::context::Function;
use cryptoki::error::{Error as CryptokiError, RvError};

use crate::signer::SignError;

/// What went wrong talking to the PKCS#11 module or token.
#[derive(Clone, Debug, thiserror::Error)]
pub enum HsmError {
    /// The module (shared library) could not be loaded.
    #[error("cannot load PKCS#11 module {}: {reason}", path.display())]
    ModuleLoad {
        /// The configured module path.
        path: PathBuf,
        /// Why the loader refused it.
        reason: String,
    },
    /// No token matched the configured selector.
    #[error("no token matches {selector}; tokens present: {present}")]
    TokenNotFound {
        /// The selector, as configured (label, serial or URI attributes).
        selector: String,
        /// Labels and serials of the tokens that are present, to help the operator.
        present: String,
    },
    /// More than one token matched the configured selector.
    #[error("{selector} matches {count} tokens; select the token by serial or a PKCS#11 URI")]
    AmbiguousToken {
        /// The selector, as configured.
        selector: String,
        /// How many tokens matched.
        count: usize,
    },
    /// `C_Login` rejected the user PIN.
    #[error("the token rejected the user PIN (C_Login returned CKR_PIN_INCORRECT)")]
    PinIncorrect,
    /// The user PIN is locked after too many wrong attempts.
    #[error(
        "the user PIN is locked on the token (CKR_PIN_LOCKED); the security officer must reset it"
    )]
    PinLocked,
    /// A PKCS#11 function returned an error.
    #[error("C_{function:?} failed: {rv:?}")]
    Call {
        /// The PKCS#11 function that failed.
        function: Function,
        /// Its return value.
        rv: RvError,
    },
    /// The cryptoki layer failed outside a PKCS#11 call (conversion, missing symbol).
    #[error("PKCS#11 library error: {0}")]
    Library(String),
    /// The token returned something signetd cannot interpret.
    #[error("unexpected data from the token: {0}")]
    Malformed(String),
    /// The token does not support what was asked (an algorithm, a mechanism).
    #[error("not supported by this token: {0}")]
    Unsupported(String),
    /// A worker has no session: it was lost and could not yet be reopened.
    #[error("no PKCS#11 session: {0}")]
    NoSession(String),
    /// The worker pool is gone (the daemon is shutting down).
    #[error("the PKCS#11 session pool has shut down")]
    PoolClosed,
    /// The token did not answer in time.
    #[error("the token did not answer within {0:?}")]
    Timeout(Duration),
    /// The queue to the workers is full: the token is busy with as much as it may be.
    #[error("every PKCS#11 worker is busy and the queue is full")]
    Overloaded,
    /// The token had a device or token error; a background task is re-initializing the
    /// library, and requests are refused until it succeeds.
    #[error("the token is recovering from an outage ({0})")]
    Outage(String),
}

impl HsmError {
    /// A stable, coarse code for operators and start-up messages.
    pub fn code(&self) -> &'static str {
        match self {
            HsmError::ModuleLoad { .. } => "pkcs11_module_unavailable",
            HsmError::TokenNotFound { .. } => "token_not_found",
            HsmError::AmbiguousToken { .. } => "token_ambiguous",
            HsmError::PinIncorrect => "pin_incorrect",
            HsmError::PinLocked => "pin_locked",
            HsmError::Unsupported(_) => "hsm_unsupported",
            HsmError::Timeout(_) => "hsm_timeout",
            HsmError::Overloaded => "overloaded",
            HsmError::Call { .. }
            | HsmError::Library(_)
            | HsmError::Malformed(_)
            | HsmError::NoSession(_)
            | HsmError::PoolClosed
            | HsmError::Outage(_) => "hsm_unavailable",
        }
    }

    /// True when the session that saw this error can no longer be used and a worker
    /// should open (and log in) a fresh one before its next job; an operation that is
    /// safe to repeat is then tried once more, on a fresh session.
    pub fn session_lost(&self) -> bool {
        matches!(
            self,
            HsmError::Call {
                rv: RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::UserNotLoggedIn,
                ..
            }
        )
    }

    /// True when the device, the token or the library failed as a whole: no new session
    /// helps, the library must be re-initialized and the token found again (see
    /// `recovery`).
    pub fn device_fault(&self) -> bool {
        matches!(
            self,
            HsmError::Call {
                rv: RvError::DeviceError
                    | RvError::DeviceMemory
                    | RvError::DeviceRemoved
                    | RvError::TokenNotPresent
                    | RvError::TokenNotRecognized
                    | RvError::GeneralError
                    | RvError::FunctionFailed
                    | RvError::CryptokiNotInitialized,
                ..
            }
        )
    }
}

impl HsmError {
    /// True when an object handle no longer names an object: the key must be looked up
    /// again by its id.
    pub fn stale_handle(&self) -> bool {
        matches!(
            self,
            HsmError::Call {
                rv: RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid,
                ..
            }
        )
    }
}

impl From<HsmError> for SignError {
    fn from(e: HsmError) -> Self {
        match e {
            HsmError::Timeout(limit) => SignError::Timeout(limit),
            HsmError::Overloaded => SignError::Overloaded,
            other => SignError::Unavailable(other.to_string()),
        }
    }
}

impl From<CryptokiError> for HsmError {
    fn from(err: CryptokiError) -> Self {
        // Every failed call's error passes through here once: the place to count it.
        if let CryptokiError::Pkcs11(rv, function) = &err {
            crate::telemetry::hsm_error(format!("C_{function:?}"), ckr_name(rv));
        }
        match err {
            CryptokiError::Pkcs11(RvError::PinIncorrect, Function::Login) => HsmError::PinIncorrect,
            CryptokiError::Pkcs11(RvError::PinLocked, Function::Login) => HsmError::PinLocked,
            CryptokiError::Pkcs11(rv, function) => HsmError::Call { function, rv },
            other => HsmError::Library(other.to_string()),
        }
    }
}

impl HsmError {
    /// "C_Sign returned CKR_DEVICE_ERROR" for a failed call, else the error's text: what
    /// an outage's log line and audit record name.
    pub fn call_summary(&self) -> String {
        match self {
            HsmError::Call { function, rv } => {
                format!("C_{function:?} returned {}", ckr_name(rv))
            }
            other => other.to_string(),
        }
    }
}

/// The specification's name of a return value (`DeviceError` → `CKR_DEVICE_ERROR`).
fn ckr_name(rv: &RvError) -> String {
    let mut name = String::from("CKR");
    for c in format!("{rv:?}").chars() {
        if c.is_ascii_uppercase() {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_summarized_with_the_specification_names() {
        let e = HsmError::Call {
            function: Function::Sign,
            rv: RvError::SessionHandleInvalid,
        };
        assert_eq!(
            e.call_summary(),
            "C_Sign returned CKR_SESSION_HANDLE_INVALID"
        );
        assert!(e.session_lost() && !e.device_fault());
        let e = HsmError::Call {
            function: Function::FindObjects,
            rv: RvError::DeviceError,
        };
        assert!(e.device_fault() && !e.session_lost());
    }
}
