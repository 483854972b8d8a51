//! Command line: parse, load configuration, build, run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use identity_broker::app::Application;
use identity_broker::clock::Clock;
use identity_broker::config::{Mode, Settings};
use identity_broker::oidc::keys;
use identity_broker::store::Store;
use identity_broker::telemetry;
use identity_broker::vault::Cipher;
use identity_broker::vault::rekey::{RekeyCounts, rekey};

/// A Keycloak-compatible identity broker for Azure DevOps sign-in through Microsoft Entra ID.
#[derive(Debug, Parser)]
#[command(name = "identity-broker", version, about)]
struct Cli {
    /// TOML configuration file; environment variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Development mode: SQLite, loopback listeners, generated keys; no setup needed.
    StartDev,
    /// Production mode: every essential setting must be configured.
    Start,
    /// Apply pending database migrations and exit.
    Migrate,
    /// The realm's signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The encrypted vault of upstream tokens.
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a new signing key and make it the active one; the previous keys stay published
    /// and keep verifying until every token they signed has expired.
    Rotate {
        /// Publish the new key now but sign with it only this many seconds later, so that every
        /// replica knows it before any uses it (servers reload keys every minute).
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        activate_after: u32,
    },
}

#[derive(Debug, Subcommand)]
enum VaultCommand {
    /// Re-encrypt every stored upstream token and signing key under the first key of
    /// `vault.encryption_keys`. Resumable, and safe while the service runs.
    Rekey {
        /// Upstream token rows read and re-encrypted at a time.
        #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch_size: u32,
    },
}

/// `start-dev` reads `config/dev.toml` when no file is named and it exists.
const DEV_CONFIG: &str = "config/dev.toml";

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mode = match cli.command {
        Command::StartDev => Mode::Development,
        Command::Start | Command::Migrate | Command::Keys { .. } | Command::Vault { .. } => Mode::Production,
    };
    let config_path = cli
        .config
        .clone()
        .or_else(|| (mode == Mode::Development && Path::new(DEV_CONFIG).exists()).then(|| PathBuf::from(DEV_CONFIG)));
    let settings = match Settings::load(mode, config_path.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("identity-broker: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_tracing(settings.log_format);
    let result = match cli.command {
        Command::Migrate => migrate(&settings).await,
        Command::Keys { command: KeysCommand::Rotate { activate_after } } => {
            rotate_keys(&settings, i64::from(activate_after)).await
        }
        Command::Vault { command: VaultCommand::Rekey { batch_size } } => {
            rekey_vault(&settings, i64::from(batch_size)).await
        }
        Command::Start | Command::StartDev => serve(settings).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("identity-broker: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(settings: &Settings) -> Result<(), String> {
    let store = Store::connect(&settings.database.url, 1).await.map_err(|err| err.to_string())?;
    store.migrate().await.map_err(|err| err.to_string())?;
    store.close().await;
    tracing::info!("migrations applied");
    Ok(())
}

/// The store for a one-shot command, migrated as `start` would.
async fn open_store(settings: &Settings) -> Result<Store, String> {
    let store = Store::connect(&settings.database.url, 2).await.map_err(|err| err.to_string())?;
    if settings.database.migrate {
        store.migrate().await.map_err(|err| err.to_string())?;
    }
    Ok(store)
}

fn configured_cipher(settings: &Settings) -> Result<Cipher, String> {
    Cipher::new(&settings.vault.encryption_keys).map_err(|_| {
        "vault.encryption_keys is empty: this command needs the configured vault keys (env BROKER_ENCRYPTION_KEYS); \
         a `start-dev` database keeps its generated key in the database, which this command does not use"
            .to_owned()
    })
}

async fn rotate_keys(settings: &Settings, activate_after: i64) -> Result<(), String> {
    let cipher = configured_cipher(settings)?;
    let store = open_store(settings).await?;
    let now = Clock::default().now();
    let lifetime = keys::max_token_lifetime(&settings.realm);
    let rotation = keys::rotate(&store, &cipher, now, activate_after, lifetime).await;
    store.close().await;
    let rotation = rotation.map_err(|err| err.to_string())?;
    if rotation.active_from <= now {
        println!("new signing key: {} (signs now; running servers switch at their next key reload)", rotation.new_kid);
    } else {
        println!(
            "new signing key: {} (published now, signs from {} in Unix seconds, {} s from now)",
            rotation.new_kid,
            rotation.active_from,
            rotation.active_from - now
        );
    }
    for kid in &rotation.retired {
        println!(
            "retired signing key: {kid} (published and verifying until {} in Unix seconds, {} days from now)",
            rotation.verify_until,
            (rotation.verify_until - now) / 86_400
        );
    }
    Ok(())
}

async fn rekey_vault(settings: &Settings, batch_size: i64) -> Result<(), String> {
    let cipher = configured_cipher(settings)?;
    let store = open_store(settings).await?;
    let report = rekey(&store, &cipher, batch_size).await;
    store.close().await;
    let report = report.map_err(|err| err.to_string())?;
    let line = |counts: &RekeyCounts| {
        format!(
            "{} rekeyed, {} skipped because they changed meanwhile, {} already current",
            counts.rekeyed, counts.changed, counts.already_current
        )
    };
    println!("vault rekey under key `{}`:", report.key_id);
    println!("  upstream tokens: {}", line(&report.tokens));
    println!("  signing keys: {}", line(&report.signing_keys));
    for problem in &report.problems {
        println!("  cannot open {problem}");
    }
    if report.tokens.unreadable + report.signing_keys.unreadable > 0 {
        let mut hint = format!(
            "{} upstream token rows and {} signing keys could not be opened; add the keys they name to \
             vault.encryption_keys (after `{}`) and run `vault rekey` again",
            report.tokens.unreadable, report.signing_keys.unreadable, report.key_id
        );
        if report.problems.iter().any(|p| p.contains("`dev`")) {
            hint.push_str("; key `dev` is the one `start-dev` generated and keeps in the database");
        }
        return Err(hint);
    }
    if !report.complete() {
        println!(
            "  {} upstream token rows and {} signing keys are still under other keys: they changed during the run. \
             Run `vault rekey` again; if rows keep changing, give every server `{}` as its first vault key",
            report.tokens.remaining, report.signing_keys.remaining, report.key_id
        );
    }
    Ok(())
}

async fn serve(settings: Settings) -> Result<(), String> {
    let started = std::time::Instant::now();
    let realm = settings.realm.name.clone();
    let providers: Vec<String> = settings.providers.iter().map(|p| p.alias.clone()).collect();
    let app = Application::build(settings).await.map_err(|err| err.to_string())?;
    tracing::info!(
        public = %app.public_addr,
        internal = %app.internal_addr,
        management = %app.management_addr,
        issuer = %format!("{}/realms/{realm}", app.public_url),
        providers = ?providers,
        startup_ms = started.elapsed().as_millis() as u64,
        "identity-broker is ready"
    );
    println!("identity-broker listening:");
    println!(
        "  public      {}  (open {}/realms/{realm}/.well-known/openid-configuration)",
        app.public_addr, app.public_url
    );
    println!("  internal    {}", app.internal_addr);
    println!("  management  {}  (health: http://{}/health)", app.management_addr, app.management_addr);
    if providers.is_empty() {
        println!(
            "  no identity provider is enabled: set AZURE_DEVOPS_ENABLED=true, AZURE_DEVOPS_TENANT_ID, AZURE_DEVOPS_CLIENT_ID and AZURE_DEVOPS_CLIENT_SECRET"
        );
    }
    app.run_until_stopped(shutdown_signal()).await.map_err(|err| err.to_string())
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
