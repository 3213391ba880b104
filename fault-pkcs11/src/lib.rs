//! A PKCS#11 module for tests that forwards every call to a real module (SoftHSM2) and,
//! on command, makes chosen calls fail, slow down or hang.
//!
//! The real module is the file named by `SIGNETD_FAULT_TARGET` (default
//! `/usr/lib/softhsm/libsofthsm2.so`); the faults come from the plan file named by
//! `SIGNETD_FAULT_PLAN` (see [`plan`]). [`C_GetFunctionList`] returns a copy of the real
//! module's function list in which the functions signetd uses are replaced by wrappers
//! that first ask the plan what to do. Everything else is the real module's own entry.

#![allow(non_snake_case)]

pub mod plan;

use std::sync::OnceLock;

use cryptoki_sys::*;
use libloading::Library;

/// Where the real module is looked for when `SIGNETD_FAULT_TARGET` is not set.
const DEFAULT_TARGET: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The real module: the library (kept loaded for the life of the process), its function
/// list, and the list handed out, with wrappers in place.
struct Modules {
    _library: Library,
    real: CK_FUNCTION_LIST,
    wrapped: CK_FUNCTION_LIST,
}

// SAFETY: the function lists are plain tables of function pointers and a version, never
// written after they are built; PKCS#11 modules loaded with CKF_OS_LOCKING_OK (as
// signetd does) may be called from any thread.
unsafe impl Send for Modules {}
// SAFETY: as above, shared read-only.
unsafe impl Sync for Modules {}

static MODULES: OnceLock<Result<Modules, String>> = OnceLock::new();

fn load() -> Result<Modules, String> {
    let path = std::env::var("SIGNETD_FAULT_TARGET").unwrap_or_else(|_| DEFAULT_TARGET.into());
    // SAFETY: loading a PKCS#11 module runs its initializers; the target is a PKCS#11
    // module by configuration (SoftHSM2), whose initializers are safe to run once.
    let library = unsafe { Library::new(&path) }.map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: `C_GetFunctionList` has this exact signature in every PKCS#11 module.
    let get: libloading::Symbol<unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV> =
        unsafe { library.get(b"C_GetFunctionList\0") }.map_err(|e| format!("{path}: {e}"))?;
    let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
    // SAFETY: `list` is a valid place for the module to write its list pointer to.
    let rv = unsafe { get(&mut list) };
    if rv != CKR_OK || list.is_null() {
        return Err(format!("{path}: C_GetFunctionList returned {rv:#x}"));
    }
    // SAFETY: on CKR_OK the module points `list` at its static function list, which
    // lives as long as the library, which `Modules` keeps loaded.
    let real = unsafe { *list };
    let mut wrapped = real;
    install(&mut wrapped);
    Ok(Modules {
        _library: library,
        real,
        wrapped,
    })
}

fn modules() -> Option<&'static Modules> {
    match MODULES.get_or_init(load) {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("fault-pkcs11: cannot load the real module: {e}");
            None
        }
    }
}

/// The module's entry point: the real module's function list with wrappers in place.
///
/// # Safety
///
/// `list` must be null or valid for writing one pointer, as PKCS#11 requires.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    if list.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    let Some(m) = modules() else {
        return CKR_GENERAL_ERROR;
    };
    // SAFETY: `list` is non-null and, by the caller's contract, writable. The list it
    // receives is never written through: PKCS#11 declares it constant (the C type lacks
    // the `const`, hence the cast).
    unsafe { *list = &m.wrapped as *const CK_FUNCTION_LIST as *mut CK_FUNCTION_LIST };
    CKR_OK
}

/// Defines one wrapper per listed function, and `install`, which puts each wrapper in a
/// function list where the real module has that function.
macro_rules! wrap {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            unsafe extern "C" fn $name($($arg: $ty),*) -> CK_RV {
                if let plan::Action::Fail(rv) = plan::decide(stringify!($name)) {
                    return rv;
                }
                match modules().and_then(|m| m.real.$name) {
                    // SAFETY: the caller's arguments go unchanged to the real module's
                    // function of the same name and signature, so they satisfy its
                    // contract exactly as they satisfy ours.
                    Some(real) => unsafe { real($($arg),*) },
                    None => CKR_FUNCTION_NOT_SUPPORTED,
                }
            }
        )*

        fn install(list: &mut CK_FUNCTION_LIST) {
            $(
                if list.$name.is_some() {
                    list.$name = Some($name);
                }
            )*
        }
    };
}

wrap! {
    C_Initialize(args: *mut std::ffi::c_void);
    C_Finalize(reserved: *mut std::ffi::c_void);
    C_GetSlotList(present: CK_BBOOL, slots: *mut CK_SLOT_ID, count: *mut CK_ULONG);
    C_GetTokenInfo(slot: CK_SLOT_ID, info: *mut CK_TOKEN_INFO);
    C_OpenSession(slot: CK_SLOT_ID, flags: CK_FLAGS, app: *mut std::ffi::c_void, notify: CK_NOTIFY, session: *mut CK_SESSION_HANDLE);
    C_CloseSession(session: CK_SESSION_HANDLE);
    C_GetSessionInfo(session: CK_SESSION_HANDLE, info: *mut CK_SESSION_INFO);
    C_Login(session: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: *mut CK_UTF8CHAR, len: CK_ULONG);
    C_CreateObject(session: CK_SESSION_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG, object: *mut CK_OBJECT_HANDLE);
    C_DestroyObject(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE);
    C_CopyObject(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG, copy: *mut CK_OBJECT_HANDLE);
    C_GetAttributeValue(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG);
    C_FindObjectsInit(session: CK_SESSION_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG);
    C_FindObjects(session: CK_SESSION_HANDLE, objects: *mut CK_OBJECT_HANDLE, max: CK_ULONG, found: *mut CK_ULONG);
    C_FindObjectsFinal(session: CK_SESSION_HANDLE);
    C_GenerateKeyPair(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, public: *mut CK_ATTRIBUTE, public_count: CK_ULONG, private: *mut CK_ATTRIBUTE, private_count: CK_ULONG, public_key: *mut CK_OBJECT_HANDLE, private_key: *mut CK_OBJECT_HANDLE);
    C_SignInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE);
    C_Sign(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG, signature: *mut CK_BYTE, signature_len: *mut CK_ULONG);
}
