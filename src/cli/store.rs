//! `signetd store`: the state store's schema and backups, for operators. No command
//! needs the token or its PIN.

use clap::Subcommand;
use signetd::Config;
use signetd::config::StoreLocation;
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
    /// Write a consistent copy of the SQLite store to a new file (mode 0600) while the
    /// daemon runs. PostgreSQL stores are backed up with pg_dump (docs/operations.md).
    Backup {
        #[command(flatten)]
        config: ConfigArg,
        /// The file to write; it must not exist.
        #[arg(long, value_name = "FILE")]
        out: std::path::PathBuf,
    },
}

/// Runs a `store` command.
pub async fn run(command: StoreCommand) -> Result<(), String> {
    let (migrate, args) = match command {
        StoreCommand::Migrate(args) => (true, args),
        StoreCommand::Check(args) => (false, args),
        StoreCommand::Backup { config, out } => return backup(&config, &out).await,
    };
    let (location, store) = connect(&args).await?;
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

/// The store the config at `args` names, connected without touching its schema.
async fn connect(args: &ConfigArg) -> Result<(StoreLocation, SqlStore), String> {
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    let location = config
        .store
        .location(&config.audit.dir)
        .map_err(|e| e.to_string())?;
    let store = SqlStore::connect(&location)
        .await
        .map_err(|e| e.to_string())?;
    Ok((location, store))
}

/// `signetd store backup`.
async fn backup(args: &ConfigArg, out: &std::path::Path) -> Result<(), String> {
    let (location, store) = connect(args).await?;
    store.backup_to(out).await.map_err(|e| e.to_string())?;
    println!("store {location} copied to {}", out.display());
    Ok(())
}
