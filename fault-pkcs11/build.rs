//! Links the module with `-z nodelete`: signetd unloads and reloads its PKCS#11 module
//! when it recovers from an outage, and the fault plan's counters (`count=1`) must
//! survive that, as a real device's state would.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
