//! kryoptic as a PKCS#11 module for signetd's tests.
//!
//! The published `kryoptic` crate builds the same module, but its own static OpenSSL
//! build fails on the trimmed sources `openssl-src` ships, and Debian bookworm's system
//! OpenSSL (3.0) is older than the 3.2 kryoptic's EdDSA needs. This crate links
//! `kryoptic-lib` against `openssl-sys`'s vendored OpenSSL instead and exports the three
//! entry points a PKCS#11 consumer looks up by name; every other function is reached
//! through the tables they return.
//!
//! The token is configured by the file named in `KRYOPTIC_CONF` (one slot backed by a
//! SQLite file); `scripts/test.sh --pkcs11 kryoptic` builds this module and runs the
//! integration suite on it.

#![allow(non_snake_case)]

use kryoptic_lib::fns::general;
use kryoptic_lib::pkcs11::{
    CK_FLAGS, CK_FUNCTION_LIST_PTR_PTR, CK_INTERFACE_PTR, CK_INTERFACE_PTR_PTR, CK_RV,
    CK_ULONG_PTR, CK_UTF8CHAR_PTR, CK_VERSION_PTR,
};

/// PKCS#11 `C_GetFunctionList`: kryoptic's version 2.40 function table.
#[unsafe(no_mangle)]
pub extern "C" fn C_GetFunctionList(list: CK_FUNCTION_LIST_PTR_PTR) -> CK_RV {
    general::fn_get_function_list(list)
}

/// PKCS#11 3.0 `C_GetInterfaceList`: the interfaces (and versions) kryoptic offers.
#[unsafe(no_mangle)]
pub extern "C" fn C_GetInterfaceList(list: CK_INTERFACE_PTR, count: CK_ULONG_PTR) -> CK_RV {
    general::fn_get_interface_list(list, count)
}

/// PKCS#11 3.0 `C_GetInterface`: one interface by name and version.
#[unsafe(no_mangle)]
pub extern "C" fn C_GetInterface(
    name: CK_UTF8CHAR_PTR,
    version: CK_VERSION_PTR,
    interface: CK_INTERFACE_PTR_PTR,
    flags: CK_FLAGS,
) -> CK_RV {
    general::fn_get_interface(name, version, interface, flags)
}
