//! Command line: parse, load configuration, build, run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use identity_broker::commands;
use identity_broker::config::{Mode, Settings};

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
    /// Check the configuration against Entra, Azure DevOps and the database: one line per
    /// check with what was found and the fix; exit status 1 if any check fails.
    Doctor {
        /// Print a JSON array of {"check", "status", "found", "fix"} instead of lines.
        #[arg(long)]
        json: bool,
        /// Seconds each network or database step may take before its check fails.
        #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
        timeout: u64,
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
        Command::Start | Command::Migrate | Command::Keys { .. } | Command::Vault { .. } | Command::Doctor { .. } => {
            Mode::Production
        }
    };
    let config_path = cli
        .config
        .clone()
        .or_else(|| (mode == Mode::Development && Path::new(DEV_CONFIG).exists()).then(|| PathBuf::from(DEV_CONFIG)));
    let settings = match Settings::load(mode, config_path.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            if let Command::Doctor { json, .. } = cli.command {
                return exit_code(commands::doctor_refused(&err, json));
            }
            eprintln!("identity-broker: {err}");
            return ExitCode::from(2);
        }
    };
    // doctor's standard output is its report (or JSON), with no log lines among it.
    if !matches!(cli.command, Command::Doctor { .. }) {
        commands::init_logging(&settings);
    }
    let result = match cli.command {
        Command::Migrate => commands::migrate(&settings).await,
        Command::Keys { command: KeysCommand::Rotate { activate_after } } => {
            commands::rotate_keys(&settings, i64::from(activate_after)).await
        }
        Command::Vault { command: VaultCommand::Rekey { batch_size } } => {
            commands::rekey_vault(&settings, i64::from(batch_size)).await
        }
        Command::Doctor { json, timeout } => commands::doctor(&settings, json, Duration::from_secs(timeout)).await,
        Command::Start | Command::StartDev => commands::serve(settings, shutdown_signal()).await,
    };
    exit_code(result)
}

fn exit_code(result: Result<(), commands::CommandError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let message = commands::describe(&err);
            tracing::error!("{message}");
            eprintln!("identity-broker: {message}");
            ExitCode::FAILURE
        }
    }
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
