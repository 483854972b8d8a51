//! Command line: parse, load configuration, build, run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use identity_broker::commands;
use identity_broker::config::{Mode, Settings};
use secrecy::SecretString;

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
    /// Move users in from another identity server.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Write the broker's users out in another identity server's format.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ImportCommand {
    /// Keycloak's realm export (`kc.sh export --users same_file` or `different_files`): users keep
    /// their ids; linked accounts of configured providers become linked identities. Idempotent,
    /// and safe while the service runs.
    Keycloak {
        /// The realm file, or the directory `kc.sh export --dir` wrote.
        #[arg(value_name = "REALM-EXPORT.JSON | DIRECTORY")]
        source: PathBuf,
        /// Report what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Keycloak's Postgres database (postgres://user@host/db, without the password, which
        /// `ps` would show): seal the provider tokens it stored into the vault. The password comes
        /// from --tokens-from-password-file, else PGPASSWORD.
        #[arg(long, value_name = "KEYCLOAK DATABASE URL", value_parser = parse_secret)]
        tokens_from: Option<SecretString>,
        /// A file holding the password of --tokens-from's database (its final newline ignored).
        #[arg(long, value_name = "FILE", requires = "tokens_from")]
        tokens_from_password_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ExportCommand {
    /// Every user, in Keycloak's realm export format (`realm` and `users`), so a move can be undone.
    Keycloak {
        /// The file to write (replaced once complete).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// A command-line value that must never be printed, such as a database URL with its password.
fn parse_secret(text: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(text.to_owned()))
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
        // `import` and `export` work on start-dev's database unless another is configured, and
        // need neither a public hostname nor (without --tokens-from) vault keys.
        Command::StartDev | Command::Import { .. } | Command::Export { .. } => Mode::Development,
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
        Command::Import {
            command: ImportCommand::Keycloak { source, dry_run, tokens_from, tokens_from_password_file },
        } => {
            let tokens_from = tokens_from.map(|url| commands::TokensSource {
                url,
                password_file: tokens_from_password_file,
                environment_password: std::env::var("PGPASSWORD")
                    .ok()
                    .filter(|password| !password.is_empty())
                    .map(SecretString::from),
            });
            commands::import_keycloak(&settings, &source, dry_run, tokens_from.as_ref()).await
        }
        Command::Export { command: ExportCommand::Keycloak { file } } => {
            commands::export_keycloak(&settings, &file).await
        }
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

/// Resolves on SIGINT or SIGTERM. The handlers are installed here, before the listeners are
/// bound, not when the future is first polled: a SIGTERM that came between the first answered
/// request and that poll used to kill the process (status 143) instead of shutting it down.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    };
    async move {
        #[cfg(unix)]
        {
            let received = |signal: std::io::Result<tokio::signal::unix::Signal>| async move {
                match signal {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = received(interrupt) => {},
                () = received(terminate) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
