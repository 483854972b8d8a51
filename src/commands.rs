//! The one-shot commands and `start`: what each subcommand does once its settings are loaded.

use std::time::{Duration, Instant};

use crate::app::{Application, BuildError};
use crate::clock::Clock;
use crate::config::{ConfigError, Settings};
use crate::crypto::{Cipher, CipherError};
use crate::doctor::{self, Report};
use crate::oidc::keys::{self, KeyError};
use crate::store::{Store, StoreError};
use crate::vault::rekey::{RekeyCounts, rekey};

/// Why a command failed; `main` prints it with its causes.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("database")]
    Store(#[from] StoreError),
    #[error("signing keys")]
    Keys(#[from] KeyError),
    #[error(
        "vault.encryption_keys is empty: this command needs the configured vault keys (env BROKER_ENCRYPTION_KEYS); \
         a `start-dev` database keeps its generated key in the database, which this command does not use"
    )]
    NoVaultKeys(#[source] CipherError),
    #[error("{0}")]
    Unfinished(String),
    #[error("serving failed")]
    Serve(#[source] std::io::Error),
    #[error("doctor: {0} of its checks failed")]
    ChecksFailed(usize),
}

/// A failed command's message with its chain of causes, for the terminal and the log.
pub fn describe(err: &CommandError) -> String {
    crate::telemetry::Chain(err).to_string()
}

/// Installs the log subscriber in the configured format.
pub fn init_logging(settings: &Settings) {
    crate::telemetry::init_tracing(settings.log_format);
}

pub async fn migrate(settings: &Settings) -> Result<(), CommandError> {
    let store = Store::connect(&settings.database.url, 1).await?;
    store.migrate().await?;
    store.close().await;
    tracing::info!("migrations applied");
    Ok(())
}

/// The store for a one-shot command, migrated as `start` would.
async fn open_store(settings: &Settings) -> Result<Store, CommandError> {
    let store = Store::connect(&settings.database.url, 2).await?;
    if settings.database.migrate {
        store.migrate().await?;
    }
    Ok(store)
}

fn configured_cipher(settings: &Settings) -> Result<Cipher, CommandError> {
    Cipher::new(&settings.vault.encryption_keys).map_err(CommandError::NoVaultKeys)
}

pub async fn rotate_keys(settings: &Settings, activate_after: i64) -> Result<(), CommandError> {
    let cipher = configured_cipher(settings)?;
    let store = open_store(settings).await?;
    let now = Clock::default().now();
    let lifetime = keys::max_token_lifetime(&settings.realm);
    let algorithm = settings.realm.signature_algorithm;
    let rotation = keys::rotate(&store, &cipher, algorithm, now, activate_after, lifetime).await;
    store.close().await;
    let rotation = rotation?;
    for (algorithm, kid) in &rotation.new_kids {
        let role = if algorithm.is_public() { "access and ID tokens" } else { "refresh and offline tokens" };
        if rotation.active_from <= now {
            println!(
                "new signing key: {kid} ({algorithm}, for {role}; signs now; running servers switch at their next key reload)"
            );
        } else {
            println!(
                "new signing key: {kid} ({algorithm}, for {role}; known to servers now, signs from {} in Unix seconds, {} s from now)",
                rotation.active_from,
                rotation.active_from - now
            );
        }
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

pub async fn rekey_vault(settings: &Settings, batch_size: i64) -> Result<(), CommandError> {
    let cipher = configured_cipher(settings)?;
    let store = open_store(settings).await?;
    let report = rekey(&store, &cipher, batch_size).await;
    store.close().await;
    let report = report?;
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
        return Err(CommandError::Unfinished(hint));
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

/// `doctor`: every check of `settings` against Entra, Azure DevOps and the database, printed
/// as lines or as JSON; fails when any check does.
pub async fn doctor(settings: &Settings, json: bool, timeout: Duration) -> Result<(), CommandError> {
    print_report(&doctor::examine(settings, timeout).await, json)
}

/// `doctor` with a configuration that does not load: what validation refused, as its report.
pub fn doctor_refused(err: &ConfigError, json: bool) -> Result<(), CommandError> {
    print_report(&doctor::refused_configuration(err), json)
}

fn print_report(report: &Report, json: bool) -> Result<(), CommandError> {
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    match report.failures() {
        0 => Ok(()),
        failed => Err(CommandError::ChecksFailed(failed)),
    }
}

/// `start` and `start-dev`: serves until `shutdown` resolves.
pub async fn serve(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), CommandError> {
    let started = Instant::now();
    let realm = settings.realm.name.clone();
    let providers: Vec<String> = settings.providers.iter().map(|p| p.alias.clone()).collect();
    let app = Application::build(settings).await?;
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
    println!("  public      {}  (start page: {}/)", app.public_addr, app.public_url);
    println!("              discovery: {}/realms/{realm}/.well-known/openid-configuration", app.public_url);
    println!("  internal    {}", app.internal_addr);
    println!("  management  {}  (health: http://{}/health)", app.management_addr, app.management_addr);
    if app.runs_development_provider() {
        println!("  DEVELOPMENT SIGN-IN: no identity provider is configured, so the built-in development");
        println!("  provider `dev` signs anyone in as anyone (open {}/ and try a sign-in).", app.public_url);
        println!(
            "  For Azure DevOps set AZURE_DEVOPS_ENABLED=true, AZURE_DEVOPS_TENANT_ID, AZURE_DEVOPS_CLIENT_ID and AZURE_DEVOPS_CLIENT_SECRET."
        );
    } else if providers.is_empty() {
        println!(
            "  no identity provider is enabled: set AZURE_DEVOPS_ENABLED=true, AZURE_DEVOPS_TENANT_ID, AZURE_DEVOPS_CLIENT_ID and AZURE_DEVOPS_CLIENT_SECRET"
        );
    }
    app.run_until_stopped(shutdown).await.map_err(CommandError::Serve)
}
