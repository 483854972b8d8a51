//! The one-shot commands and `start`: what each subcommand does once its settings are loaded.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::app::{Application, BuildError};
use crate::audit::Event;
use crate::clock::Clock;
use crate::config::{ConfigError, Settings};
use crate::crypto::{Cipher, CipherError};
use crate::doctor::{self, Report};
use crate::http::paths;
use crate::keycloak::export::{ExportFileError, export_users};
use crate::keycloak::import::{ImportError, ImportTarget, Skipped, UsersReport, check_export, import_users};
pub use crate::keycloak::tokens::TokensSource;
use crate::keycloak::tokens::{TokensError, TokensReport, connect_keycloak, import_tokens};
use crate::oidc::keys::{self, KeyError};
use crate::store::{KeycloakDatabase, Store, StoreError};
use crate::urls::management_url;
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
    #[error("import keycloak")]
    Import(#[from] ImportError),
    #[error("import keycloak --tokens-from")]
    Tokens(#[from] TokensError),
    #[error("export keycloak")]
    Export(#[from] ExportFileError),
    #[error(
        "import keycloak --dry-run: the database lacks {0} migrations, and a dry run changes nothing, not even the \
         schema: run `identity-broker migrate` first, or import without --dry-run"
    )]
    DryRunNeedsMigrations(usize),
    #[error(
        "import keycloak --tokens-from: vault.encryption_keys is empty (env BROKER_ENCRYPTION_KEYS), and this \
         database's tokens are sealed under configured keys ({0}): give the keys its servers use"
    )]
    ImportNeedsVaultKeys(String),
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
    let providers: Vec<String> = settings.providers.iter().map(|p| p.alias.clone()).collect();
    let app = Application::build(settings).await?;
    tracing::info!(
        public = %app.public_addr,
        internal = %app.internal_addr,
        management = %app.management_addr,
        issuer = %app.urls().issuer(),
        providers = ?providers,
        startup_ms = started.elapsed().as_millis() as u64,
        "identity-broker is ready"
    );
    println!("identity-broker listening:");
    let start_page = app.urls().public(paths::START);
    println!("  public      {}  (start page: {start_page})", app.public_addr);
    println!("              discovery: {}", app.urls().discovery());
    println!("  internal    {}", app.internal_addr);
    println!("  management  {}  (health: {})", app.management_addr, management_url(app.management_addr, paths::HEALTH));
    if app.runs_development_provider() {
        println!("  DEVELOPMENT SIGN-IN: no identity provider is configured, so the built-in development");
        println!("  provider `dev` signs anyone in as anyone (open {start_page} and try a sign-in).");
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

/// `import keycloak`: a realm export's users (and, with `tokens_from`, the tokens Keycloak's
/// database kept) into the configured database; prints what it did, or would do.
pub async fn import_keycloak(
    settings: &Settings,
    source: &Path,
    dry_run: bool,
    tokens_from: Option<&TokensSource>,
) -> Result<(), CommandError> {
    let realm = settings.realm.name.as_str();
    let (files, total) = check_export(source, realm).await?;
    if tokens_from.is_some_and(TokensSource::url_has_password) {
        eprintln!(
            "identity-broker: warning: the --tokens-from URL holds a password, which every user of this machine can \
             see in `ps` (and the shell keeps in its history): give the URL without it, and the password in PGPASSWORD \
             or in a file named by --tokens-from-password-file"
        );
    }
    let keycloak = match tokens_from {
        Some(source) => Some(connect_keycloak(source).await?),
        None => None,
    };
    let store = import_store(settings, dry_run).await?;
    let now = Clock::default().now();
    let target = ImportTarget { realm, providers: &settings.providers, now, dry_run };
    let outcome = run_import(settings, store.as_ref(), keycloak.as_ref(), files, total, &target).await;
    if let Some(store) = &store {
        store.close().await;
    }
    if let Some(keycloak) = &keycloak {
        keycloak.close().await;
    }
    let (users, tokens) = outcome?;
    print_import_report(&users, tokens.as_ref(), store.as_ref().map_or("an empty database", Store::kind), dry_run);
    Ok(())
}

async fn run_import(
    settings: &Settings,
    store: Option<&Store>,
    keycloak: Option<&KeycloakDatabase>,
    files: Vec<std::path::PathBuf>,
    total: u64,
    target: &ImportTarget<'_>,
) -> Result<(UsersReport, Option<TokensReport>), CommandError> {
    let (users, planned) = import_users(store, files, total, target).await?;
    let Some(keycloak) = keycloak else {
        audit_import(store, target, &users, None).await;
        return Ok((users, None));
    };
    let cipher = match (store, target.dry_run) {
        (Some(store), false) => Some(import_cipher(settings, store, target.now).await?),
        _ => None,
    };
    let tokens =
        import_tokens(store, keycloak, target.realm, target.providers, cipher.as_ref(), &planned, target.now).await?;
    audit_import(store, target, &users, Some(&tokens)).await;
    Ok((users, Some(tokens)))
}

/// The database an import writes to, migrated; a dry run migrates nothing, and plans against
/// an empty database (`None`) when the schema does not exist yet.
async fn import_store(settings: &Settings, dry_run: bool) -> Result<Option<Store>, CommandError> {
    if !dry_run {
        return Ok(Some(open_store(settings).await?));
    }
    let store = Store::connect(&settings.database.url, 2).await?;
    let records = store.migration_records().await?;
    let Some(applied) = records.applied else {
        store.close().await;
        return Ok(None);
    };
    let missing =
        records.embedded.iter().filter(|m| !applied.iter().any(|a| a.version == m.version && a.success)).count();
    if missing > 0 {
        store.close().await;
        return Err(CommandError::DryRunNeedsMigrations(missing));
    }
    Ok(Some(store))
}

/// The vault key tokens are sealed under: the configured one, or else the one `start-dev`
/// generated and keeps in the database, unless servers with configured keys use the database.
async fn import_cipher(settings: &Settings, store: &Store, now: i64) -> Result<Cipher, CommandError> {
    if !settings.vault.encryption_keys.is_empty() {
        return configured_cipher(settings);
    }
    let sealed = store.sealed_rows().await?;
    let others: Vec<String> = sealed
        .vault_tokens
        .iter()
        .chain(&sealed.signing_keys)
        .map(|(key_id, _)| key_id.clone())
        .filter(|key_id| key_id != crate::app::DEVELOPMENT_VAULT_KEY_ID)
        .collect();
    if !others.is_empty() {
        return Err(CommandError::ImportNeedsVaultKeys(others.join(", ")));
    }
    println!(
        "vault.encryption_keys is empty: tokens are sealed under start-dev's generated key `dev`, kept in this database"
    );
    Ok(crate::app::development_vault_cipher(store, now).await?)
}

/// One audit event for the whole import, with its counts.
async fn audit_import(
    store: Option<&Store>,
    target: &ImportTarget<'_>,
    users: &UsersReport,
    tokens: Option<&TokensReport>,
) {
    let (Some(store), false) = (store, target.dry_run) else { return };
    let audit = crate::audit::AuditLog::start(store.clone(), std::sync::Arc::new(crate::telemetry::Metrics::new()));
    let event = Event::KeycloakImport {
        created: users.created,
        updated: users.updated,
        unchanged: users.unchanged,
        skipped: users.skipped.len(),
        tokens_sealed: tokens.map(|t| t.sealed),
    };
    audit.event(target.now, event).await;
    audit.flush().await;
}

fn print_import_report(users: &UsersReport, tokens: Option<&TokensReport>, database: &str, dry_run: bool) {
    let (verb, prefix) = if dry_run { ("would be", "dry run: ") } else { ("", "") };
    println!("{prefix}import keycloak: {} users in {} files into {database}", users.users, users.files);
    let verb = |done: &str| if verb.is_empty() { done.to_owned() } else { format!("{verb} {done}") };
    println!(
        "  {} {}, {} {}, {} unchanged, {} skipped",
        users.created,
        verb("created"),
        users.updated,
        verb("updated"),
        users.unchanged,
        users.skipped.len()
    );
    let line = |kind: &str, skipped: &Skipped| {
        println!("  {kind} {} ({}): {}", skipped.user_id, skipped.username, skipped.reason)
    };
    for skipped in &users.skipped {
        line("skipped user", skipped);
    }
    for skipped in &users.not_linked {
        line("not linked: user", skipped);
    }
    if let Some(tokens) = tokens {
        println!(
            "  tokens: {} {}, {} already held by the broker, {} skipped",
            tokens.sealed,
            verb("sealed into the vault"),
            tokens.already_held,
            tokens.skipped.len()
        );
        for skipped in &tokens.skipped {
            println!("  token of user {} for {} skipped: {}", skipped.user_id, skipped.username, skipped.reason);
        }
    }
    if dry_run {
        println!("dry run: nothing was written");
    }
}

/// `export keycloak`: every user, in Keycloak's realm export format, to `path`.
pub async fn export_keycloak(settings: &Settings, path: &Path) -> Result<(), CommandError> {
    let store = open_store(settings).await?;
    let exported = export_users(&store, &settings.realm.name, path).await;
    store.close().await;
    let count = exported?;
    println!("export keycloak: {count} users of realm `{}` written to {}", settings.realm.name, path.display());
    Ok(())
}
