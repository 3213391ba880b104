//! `signetd store`: the state store's schema, for operators. Neither command needs the
//! token or its PIN.

use clap::Subcommand;
use signetd::Config;
use signetd::store::SqlStore;

use super::ConfigArg;

/// `signetd store ...`
#[derive(Subcommand)]
pub enum StoreCommand {
    /// Create the store if missing and apply the migrations it lacks (the daemon also
    /// does this at start).
    Migrate(ConfigArg),
    /// Connect to the store and report its schema version against this build's and the
    /// rows it holds. Exits 0 if the schema is current, 1 if not.
    Check(ConfigArg),
}

/// Runs a `store` command.
pub async fn run(command: StoreCommand) -> Result<(), String> {
    let (migrate, args) = match command {
        StoreCommand::Migrate(args) => (true, args),
        StoreCommand::Check(args) => (false, args),
    };
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    let location = config
        .store
        .location(&config.audit.dir)
        .map_err(|e| e.to_string())?;
    let store = SqlStore::connect(&location)
        .await
        .map_err(|e| e.to_string())?;
    if migrate {
        let applied = store.migrate().await.map_err(|e| e.to_string())?;
        println!("store: {location}");
        println!("migrations applied: {applied:?}");
    }
    let status = store.status().await.map_err(|e| e.to_string())?;
    println!("store: {location}");
    println!(
        "schema version: {} (this build expects {})",
        status.schema_version, status.expected_version
    );
    println!("single-use jtis: {}", status.used_jtis);
    println!("token revocations: {}", status.revocations);
    println!("keys: {}", status.keys);
    if status.schema_version != status.expected_version {
        return Err(format!(
            "the store's schema is at version {}, this build expects {}: run `signetd store migrate`",
            status.schema_version, status.expected_version
        ));
    }
    Ok(())
}
