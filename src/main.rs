//! Command line: parse, load configuration, build, run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use identity_broker::app::Application;
use identity_broker::config::{Mode, Settings};
use identity_broker::store::Store;
use identity_broker::telemetry;

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
}

/// `start-dev` reads `config/dev.toml` when no file is named and it exists.
const DEV_CONFIG: &str = "config/dev.toml";

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mode = match cli.command {
        Command::StartDev => Mode::Development,
        Command::Start | Command::Migrate => Mode::Production,
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
