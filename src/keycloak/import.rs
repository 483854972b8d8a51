//! `import keycloak`: a realm export's users into the broker, ids kept, a chunk per transaction.
//!
//! The export is read twice. The first pass parses every file and checks it (JSON, realm,
//! each user's id and username, no id given twice) and counts the users, writing nothing, so a
//! malformed file, the wrong realm or two users with one id stop the import before any row
//! changes. The second pass streams the users (one file open, one chunk in memory) and decides
//! for each one, against what the database holds, whether to create, update, leave or skip it
//! (a user over the admin API's attribute limits is skipped). Deciding is pure (`plan`); the reads
//! and writes of a chunk share one transaction.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::files::{ExportError, export_files, read_users};
use super::progress::Progress;
use super::representation::UserRepresentation;
use crate::config::ProviderSettings;
use crate::directory::{
    MAX_ATTRIBUTE_NAME_LENGTH, MAX_ATTRIBUTE_NAMES, MAX_ATTRIBUTE_VALUE_LENGTH, MAX_ATTRIBUTE_VALUES,
};
use crate::store::{ImportBatch, LinkRow, Store, StoreError, UserRow, UserWrite};

/// Users decided and written per transaction.
const CHUNK: usize = 500;
/// How often a chunk is tried again when a sign-in raced it for the same upstream account.
const ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("{path}: user #{index} {problem}")]
    InvalidUser { path: PathBuf, index: u64, problem: String },
    #[error(
        "two users have the id `{id}`: {first} and {second}; the broker keeps Keycloak's ids, so each user needs its \
         own: remove or correct one of them and import again (nothing was imported)"
    )]
    DuplicateId { id: String, first: String, second: String },
    #[error("database")]
    Store(#[from] StoreError),
    #[error("the export reader stopped unexpectedly")]
    Reader,
}

/// One user the import left alone, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub user_id: String,
    pub username: String,
    pub reason: String,
}

/// What an import did (or, in a dry run, would do).
#[derive(Debug, Default)]
pub struct UsersReport {
    pub files: usize,
    pub users: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub skipped: Vec<Skipped>,
    /// Users imported without one of their linked accounts, and why.
    pub not_linked: Vec<Skipped>,
}

impl UsersReport {
    fn add(&mut self, other: UsersReport) {
        self.created += other.created;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.skipped.extend(other.skipped);
        self.not_linked.extend(other.not_linked);
    }
}

/// Upstream accounts a dry run would have linked, `(user_id, alias) → subject`, so that the
/// token pass of a dry run sees them; empty in a real run, where the database has them.
pub type PlannedLinks = HashMap<(String, String), String>;

/// What the import needs to know of the configuration.
#[derive(Debug)]
pub(crate) struct ImportTarget<'a> {
    pub realm: &'a str,
    pub providers: &'a [ProviderSettings],
    pub now: i64,
    pub dry_run: bool,
}

/// Where a user stands in an export: the file's number in the list and the user's there (from 1).
#[derive(Debug, Clone, Copy)]
struct Place {
    file: usize,
    index: u64,
}

/// Why the first pass stopped at a user.
enum Refusal {
    Invalid(String),
    /// The user's id was seen before, at `first`.
    Duplicate {
        id: String,
        username: String,
        first: Place,
    },
}

/// Checks every file of the export at `path` and counts its users; writes nothing.
pub async fn check_export(path: &Path, realm: &str) -> Result<(Vec<PathBuf>, u64), ImportError> {
    let path = path.to_owned();
    let realm = realm.to_owned();
    tokio::task::spawn_blocking(move || {
        let files = export_files(&path, &realm)?;
        let mut users = 0_u64;
        // Ids by a 128-bit prefix of their SHA-256, not as strings: about 4 MiB for 100,000
        // users instead of 10, next to an import's 21 MiB; two ids sharing a prefix cannot be
        // met by chance.
        let mut seen: HashMap<[u8; 16], Place> = HashMap::new();
        for (number, file) in files.iter().enumerate() {
            let mut index = 0_u64;
            let mut refusal = None;
            let named = read_users(file, &mut |user| {
                index += 1;
                refusal = match user_problem(&user) {
                    Some(message) => Some(Refusal::Invalid(message)),
                    None => first_place(&mut seen, &user, Place { file: number, index }),
                };
                match refusal {
                    Some(_) => Err("refused user".to_owned()),
                    None => Ok(()),
                }
            });
            match refusal {
                Some(Refusal::Invalid(problem)) => {
                    return Err(ImportError::InvalidUser { path: file.clone(), index, problem });
                }
                Some(Refusal::Duplicate { id, username, first }) => {
                    let first_file = files.get(first.file).unwrap_or(file);
                    let first_username = username_at(first_file, first.index).unwrap_or_default();
                    return Err(ImportError::DuplicateId {
                        id,
                        first: describe_place(first_file, first.index, &first_username),
                        second: describe_place(file, index, &username),
                    });
                }
                None => {}
            }
            match named? {
                Some(found) if found == realm => {}
                found => {
                    return Err(ExportError::WrongRealm {
                        path: file.clone(),
                        found: found.unwrap_or_else(|| "(none: the file has no `realm`)".to_owned()),
                        expected: realm.clone(),
                    }
                    .into());
                }
            }
            users += index;
        }
        Ok((files, users))
    })
    .await
    .map_err(|_| ImportError::Reader)?
}

/// Records where the user's id is first seen; when it was seen before, the refusal naming that place.
fn first_place(seen: &mut HashMap<[u8; 16], Place>, user: &UserRepresentation, place: Place) -> Option<Refusal> {
    let id = user.id.as_deref().unwrap_or_default();
    let digest = crate::crypto::sha256(id.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    match seen.entry(key) {
        std::collections::hash_map::Entry::Occupied(first) => Some(Refusal::Duplicate {
            id: id.to_owned(),
            username: user.username.clone().unwrap_or_default(),
            first: *first.get(),
        }),
        std::collections::hash_map::Entry::Vacant(slot) => {
            slot.insert(place);
            None
        }
    }
}

/// The username of user #`index` of `path` (read again: only an export refused for a
/// duplicate id needs it, so the first pass keeps no usernames).
fn username_at(path: &Path, index: u64) -> Option<String> {
    let mut at = 0_u64;
    let mut username = None;
    // The reading is stopped on purpose once the user is found; the error that says so is not one.
    let _stopped = read_users(path, &mut |user| {
        at += 1;
        if at < index {
            return Ok(());
        }
        username = user.username;
        Err("found".to_owned())
    });
    username
}

fn describe_place(path: &Path, index: u64, username: &str) -> String {
    format!("{} user #{index} (username `{username}`)", path.display())
}

/// What makes a user unusable, said for the operator.
fn user_problem(user: &UserRepresentation) -> Option<String> {
    let id = user.id.as_deref().unwrap_or_default();
    if id.trim().is_empty() {
        return Some("has no `id`: the broker keeps Keycloak's user ids, so each user needs one".to_owned());
    }
    if user.username.as_deref().unwrap_or_default().trim().is_empty() {
        return Some(format!("(id {id}) has no `username`"));
    }
    for link in user.federated_identities.iter().flatten() {
        if link.identity_provider.as_deref().unwrap_or_default().is_empty()
            || link.user_id.as_deref().unwrap_or_default().is_empty()
        {
            return Some(format!("(id {id}) has a federated identity without `identityProvider` or `userId`"));
        }
    }
    None
}

/// Imports the users of `files` (already checked) into `store`; `None` stands for a database
/// that has no schema yet, which a dry run plans against as empty.
pub(crate) async fn import_users(
    store: Option<&Store>,
    files: Vec<PathBuf>,
    total: u64,
    target: &ImportTarget<'_>,
) -> Result<(UsersReport, PlannedLinks), ImportError> {
    let (sender, mut receiver) = mpsc::channel::<UserRepresentation>(CHUNK * 2);
    let file_count = files.len();
    let reader = tokio::task::spawn_blocking(move || -> Result<(), ExportError> {
        for file in &files {
            read_users(file, &mut |user| sender.blocking_send(user).map_err(|_| "import stopped".to_owned()))?;
        }
        Ok(())
    });
    let mut report = UsersReport { files: file_count, ..UsersReport::default() };
    let mut planned = PlannedLinks::new();
    let mut claims = Claims::default();
    let mut progress = Progress::new(total, if target.dry_run { "checked" } else { "imported" });
    let mut chunk = Vec::with_capacity(CHUNK);
    loop {
        let room = CHUNK - chunk.len();
        let received = receiver.recv_many(&mut chunk, room).await;
        if chunk.len() < CHUNK && received > 0 {
            continue;
        }
        if chunk.is_empty() {
            break;
        }
        let done = import_chunk(store, &chunk, target, &mut claims).await?;
        report.users += chunk.len() as u64;
        progress.advance(chunk.len() as u64);
        report.add(done);
        chunk.clear();
    }
    progress.finish();
    reader.await.map_err(|_| ImportError::Reader)??;
    if let Some(store) = store.filter(|_| !target.dry_run && report.created + report.updated > 0) {
        store.analyze_imported().await?;
    }
    if target.dry_run {
        planned = claims.links;
    }
    Ok((report, planned))
}

/// What a dry run would have written so far: later users of the same run must see it.
#[derive(Debug, Default)]
struct Claims {
    emails: HashMap<String, String>,
    links: PlannedLinks,
    subjects: HashMap<(String, String), String>,
}

async fn import_chunk(
    store: Option<&Store>,
    users: &[UserRepresentation],
    target: &ImportTarget<'_>,
    claims: &mut Claims,
) -> Result<UsersReport, ImportError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut batch = match store {
            Some(store) => Some(store.begin_import(!target.dry_run).await?),
            None => None,
        };
        let mut report = UsersReport::default();
        let mut outcome = Ok(());
        for user in users {
            outcome = import_user(batch.as_mut(), user, target, claims, &mut report).await;
            if outcome.is_err() {
                break;
            }
        }
        match (outcome, batch) {
            (Ok(()), Some(batch)) if !target.dry_run => {
                batch.commit().await?;
                return Ok(report);
            }
            // A dry run's transaction only read; dropping it rolls it back.
            (Ok(()), _) => return Ok(report),
            (Err(StoreError::Conflict(_)), _) if attempt < ATTEMPTS => continue,
            (Err(err), _) => return Err(err.into()),
        }
    }
}

/// A user as the broker will keep it, from its representation.
#[derive(Debug)]
struct Desired {
    user: UserRow,
    /// False when the export gave no `createdTimestamp`: a stored user keeps its own.
    created_given: bool,
    /// `(name, value)`, by name, each name's values in the export's order.
    attributes: Vec<(String, String)>,
    links: Vec<LinkRow>,
    unknown_aliases: Vec<String>,
}

fn desired(user: &UserRepresentation, providers: &[ProviderSettings], now: i64) -> Desired {
    let id = user.id.clone().unwrap_or_default();
    let first_name = user.first_name.clone().filter(|s| !s.is_empty());
    let last_name = user.last_name.clone().filter(|s| !s.is_empty());
    let full_name = match (&first_name, &last_name) {
        (Some(first), Some(last)) => Some(format!("{first} {last}")),
        (name, None) | (None, name) => name.clone(),
    };
    // The representation's map iterates by name, so each name's values stay together in order.
    let mut attributes = Vec::new();
    for (name, values) in user.attributes.iter().flatten() {
        attributes.extend(values.iter().flatten().flatten().map(|value| (name.clone(), value.clone())));
    }
    let mut links: Vec<LinkRow> = Vec::new();
    let mut unknown_aliases = Vec::new();
    for link in user.federated_identities.iter().flatten() {
        let alias = link.identity_provider.clone().unwrap_or_default();
        if !providers.iter().any(|p| p.alias == alias) {
            unknown_aliases.push(alias);
        } else if !links.iter().any(|l| l.alias == alias) {
            links.push(LinkRow {
                user_id: id.clone(),
                alias,
                subject: link.user_id.clone().unwrap_or_default(),
                username: link.user_name.clone(),
            });
        }
    }
    Desired {
        user: UserRow {
            id,
            username: user.username.clone().unwrap_or_default(),
            email: user.email.clone().filter(|s| !s.is_empty()),
            email_verified: user.email_verified.unwrap_or(false),
            first_name,
            last_name,
            full_name,
            enabled: user.enabled.unwrap_or(true),
            created_at: user.created_timestamp.map_or(now, |ms| ms.div_euclid(1000)),
        },
        created_given: user.created_timestamp.is_some(),
        attributes,
        links,
        unknown_aliases,
    }
}

/// Why a user's attributes exceed what the admin API lets an administrator store, if they do:
/// an import must not store what the API would refuse. `attributes` are grouped by name.
fn attributes_problem(attributes: &[(String, String)]) -> Option<String> {
    let mut names = 0_usize;
    let mut previous: Option<&str> = None;
    for (name, value) in attributes {
        if previous != Some(name.as_str()) {
            names += 1;
            previous = Some(name);
            if name.trim().is_empty() || name.len() > MAX_ATTRIBUTE_NAME_LENGTH || name.chars().any(char::is_control) {
                return Some(format!(
                    "an attribute name is empty, over {MAX_ATTRIBUTE_NAME_LENGTH} bytes or holds control characters \
                     (the admin API's limits)"
                ));
            }
        }
        if value.len() > MAX_ATTRIBUTE_VALUE_LENGTH || value.contains('\0') {
            return Some(format!(
                "its attribute `{name}` has a value over {MAX_ATTRIBUTE_VALUE_LENGTH} bytes or with a NUL character \
                 (the admin API's limit)"
            ));
        }
    }
    if names > MAX_ATTRIBUTE_NAMES {
        return Some(format!("it has {names} attributes, over the admin API's limit of {MAX_ATTRIBUTE_NAMES}"));
    }
    if attributes.len() > MAX_ATTRIBUTE_VALUES {
        return Some(format!(
            "it has {} attribute values, over the admin API's limit of {MAX_ATTRIBUTE_VALUES} in all",
            attributes.len()
        ));
    }
    None
}

/// What the database holds of a user.
#[derive(Debug)]
struct Stored {
    user: UserRow,
    attributes: Vec<(String, String)>,
    links: Vec<LinkRow>,
}

async fn import_user(
    mut batch: Option<&mut ImportBatch>,
    representation: &UserRepresentation,
    target: &ImportTarget<'_>,
    claims: &mut Claims,
    report: &mut UsersReport,
) -> Result<(), StoreError> {
    let mut want = desired(representation, target.providers, target.now);
    let id = want.user.id.clone();
    let skip = |reason: String| Skipped { user_id: id.clone(), username: want.user.username.clone(), reason };
    if let Some(client) = &representation.service_account_client_id {
        report.skipped.push(skip(format!("the service account of client `{client}`, not a person")));
        return Ok(());
    }
    if let Some(problem) = attributes_problem(&want.attributes) {
        report.skipped.push(skip(problem));
        return Ok(());
    }
    // The upstream account first: when one person signed in before the import, that says more.
    for link in &want.links {
        let key = (link.alias.clone(), link.subject.clone());
        let claimed = claims.subjects.get(&key).filter(|holder| **holder != id).cloned();
        let holder = match (claimed, batch.as_deref_mut()) {
            (Some(holder), _) => Some(holder),
            (None, Some(batch)) => batch.subject_holder(&link.alias, &link.subject).await?.filter(|h| *h != id),
            (None, None) => None,
        };
        if let Some(holder) = holder {
            report.skipped.push(skip(format!(
                "its {} account {} is already linked to user {holder} (who signed in through the broker before the \
                 import?): unlink it there first (DELETE /internal/v1/users/{holder}/tokens/{}) and import again",
                link.alias, link.subject, link.alias
            )));
            return Ok(());
        }
    }
    if let Some(email) = &want.user.email {
        let claimed = claims.emails.get(&email.to_lowercase()).filter(|holder| **holder != id).cloned();
        let holder = match (claimed, batch.as_deref_mut()) {
            (Some(holder), _) => Some(holder),
            (None, Some(batch)) => batch.email_holder(email, &id).await?,
            (None, None) => None,
        };
        if let Some(holder) = holder {
            report.skipped.push(skip(format!("its e-mail {email} belongs to user {holder}")));
            return Ok(());
        }
    }
    for alias in &want.unknown_aliases {
        report.not_linked.push(skip(format!(
            "`{alias}` is not an enabled provider of the broker (providers.{alias}); the rest of the user is imported"
        )));
    }
    let stored = match batch.as_deref_mut() {
        Some(batch) => match batch.find_user(&id).await? {
            Some(user) => {
                Some(Stored { user, attributes: batch.attributes(&id).await?, links: batch.links(&id).await? })
            }
            None => None,
        },
        None => None,
    };
    if let (Some(stored), false) = (&stored, want.created_given) {
        want.user.created_at = stored.user.created_at;
    }
    let user_changed = stored.as_ref().is_none_or(|s| s.user != want.user);
    let attributes_changed = stored.as_ref().map_or(!want.attributes.is_empty(), |s| s.attributes != want.attributes);
    let link_changes: Vec<(&LinkRow, bool)> = want
        .links
        .iter()
        .filter_map(|link| match stored.as_ref().and_then(|s| s.links.iter().find(|l| l.alias == link.alias)) {
            Some(held) if held == link => None,
            Some(held) => Some((link, held.subject != link.subject)),
            None => Some((link, false)),
        })
        .collect();
    if stored.is_some() && !user_changed && !attributes_changed && link_changes.is_empty() {
        report.unchanged += 1;
        return Ok(());
    }
    if stored.is_some() {
        report.updated += 1
    } else {
        report.created += 1
    }
    if target.dry_run {
        if let Some(email) = &want.user.email {
            claims.emails.insert(email.to_lowercase(), id.clone());
        }
        for link in &want.links {
            claims.subjects.insert((link.alias.clone(), link.subject.clone()), id.clone());
            claims.links.insert((id.clone(), link.alias.clone()), link.subject.clone());
        }
        return Ok(());
    }
    let Some(batch) = batch else { return Ok(()) };
    if user_changed || attributes_changed {
        let write = UserWrite {
            user: &want.user,
            existing: stored.is_some(),
            attributes: attributes_changed.then_some(want.attributes.as_slice()),
        };
        batch.save_user(&write, target.now).await?;
    }
    for (link, relink) in link_changes {
        batch.link(link, relink, target.now).await?;
    }
    if stored.as_ref().is_some_and(|s| s.user.enabled) && !want.user.enabled {
        batch.end_sessions(&id, target.now).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Mode, Settings};

    fn providers() -> Vec<ProviderSettings> {
        let text = r#"
[providers.azure_devops]
tenant_id = "organizations"
client_id = "c"
client_secret = "s"
"#;
        Settings::from_toml(Mode::Development, text, |_| None).unwrap().providers
    }

    #[test]
    fn a_representation_becomes_the_user_kept_with_names_attributes_and_configured_links() {
        let user: UserRepresentation = serde_json::from_str(
            r#"{"id":"u1","username":"alice","email":"Alice@X.com","firstName":"Alice","lastName":"",
                "emailVerified":true,"enabled":false,"createdTimestamp":1700000000999,
                "attributes":{"b":["2","1"],"a":["x",null]},
                "federatedIdentities":[{"identityProvider":"azure_devops","userId":"sub","userName":"alice@x.com"},
                                       {"identityProvider":"github","userId":"42"}]}"#,
        )
        .unwrap();
        let want = desired(&user, &providers(), 5);
        assert_eq!(want.user.created_at, 1_700_000_000, "milliseconds become the seconds the store keeps");
        assert_eq!(want.user.full_name.as_deref(), Some("Alice"), "an empty last name is no name");
        assert_eq!(want.user.last_name, None);
        assert!(!want.user.enabled && want.user.email_verified);
        let attributes: Vec<(&str, &str)> = want.attributes.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(attributes, [("a", "x"), ("b", "2"), ("b", "1")], "by name, values in their order, nulls dropped");
        assert_eq!(want.links.len(), 1);
        assert_eq!(want.links[0].subject, "sub");
        assert_eq!(want.unknown_aliases, ["github"]);
        let missing = desired(&UserRepresentation { id: Some("u".into()), ..Default::default() }, &[], 5);
        assert!(missing.user.enabled, "Keycloak's users are enabled unless the export says otherwise");
        assert_eq!(missing.user.created_at, 5, "no timestamp: now");
    }

    #[test]
    fn attributes_over_the_admin_apis_limits_are_named() {
        let values = |name: &str, count: usize, value: &str| -> Vec<(String, String)> {
            (0..count).map(|_| (name.to_owned(), value.to_owned())).collect()
        };
        let many_names: Vec<(String, String)> =
            (0..=MAX_ATTRIBUTE_NAMES).map(|i| (format!("a{i:03}"), "v".to_owned())).collect();
        let limit_names: Vec<(String, String)> =
            (0..MAX_ATTRIBUTE_NAMES).map(|i| (format!("a{i:03}"), "v".to_owned())).collect();
        type Attributes = Vec<(String, String)>;
        let cases: [(Attributes, Option<&str>, &str); 9] = [
            (Vec::new(), None, "no attributes"),
            (limit_names, None, "as many names as allowed"),
            (many_names, Some("attributes, over the admin API's limit of 64"), "one name too many"),
            (values("a", MAX_ATTRIBUTE_VALUES, "v"), None, "as many values as allowed"),
            (values("a", MAX_ATTRIBUTE_VALUES + 1, "v"), Some("257 attribute values"), "one value too many"),
            (values("a", 1, &"x".repeat(MAX_ATTRIBUTE_VALUE_LENGTH)), None, "the longest value allowed"),
            (values("a", 1, &"x".repeat(MAX_ATTRIBUTE_VALUE_LENGTH + 1)), Some("over 2048 bytes"), "a value too long"),
            (values("a", 1, "x\0y"), Some("NUL"), "a NUL, which Postgres cannot store"),
            (values(&"n".repeat(MAX_ATTRIBUTE_NAME_LENGTH + 1), 1, "v"), Some("attribute name"), "a name too long"),
        ];
        for (attributes, expected, case) in cases {
            let problem = attributes_problem(&attributes);
            match expected {
                None => assert_eq!(problem, None, "{case}"),
                Some(words) => assert!(problem.as_deref().is_some_and(|p| p.contains(words)), "{case}: {problem:?}"),
            }
        }
    }

    #[tokio::test]
    async fn an_id_given_twice_stops_the_check_naming_both_places() {
        let dir = std::env::temp_dir().join(format!("ib_kc_dup_{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("allhands-realm.json"), r#"{"realm":"allhands"}"#).unwrap();
        std::fs::write(
            dir.join("allhands-users-0.json"),
            r#"{"realm":"allhands","users":[{"id":"1","username":"ann"},{"id":"2","username":"bea"}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("allhands-users-1.json"),
            r#"{"realm":"allhands","users":[{"id":"3","username":"cid"},{"id":"2","username":"dan"}]}"#,
        )
        .unwrap();

        let message = check_export(&dir, "allhands").await.map(|_| ()).unwrap_err().to_string();

        assert!(message.contains("two users have the id `2`"), "{message}");
        assert!(message.contains("allhands-users-0.json user #2 (username `bea`)"), "{message}");
        assert!(message.contains("allhands-users-1.json user #2 (username `dan`)"), "{message}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn users_without_an_id_username_or_link_subject_are_refused_with_a_reason() {
        let cases = [
            (r#"{"username":"a"}"#, "no `id`"),
            (r#"{"id":" ","username":"a"}"#, "no `id`"),
            (r#"{"id":"1"}"#, "no `username`"),
            (r#"{"id":"1","username":"a","federatedIdentities":[{"identityProvider":"x"}]}"#, "without"),
        ];
        for (json, expected) in cases {
            let user: UserRepresentation = serde_json::from_str(json).unwrap();
            let problem = user_problem(&user).unwrap_or_default();
            assert!(problem.contains(expected), "{json}: {problem}");
        }
        let good: UserRepresentation = serde_json::from_str(r#"{"id":"1","username":"a"}"#).unwrap();
        assert_eq!(user_problem(&good), None);
    }
}
