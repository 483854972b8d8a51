//! `import keycloak`: a realm export's users into the broker, ids kept, a chunk per transaction.
//!
//! The export is read twice. The first pass parses every file and checks it (JSON, realm,
//! each user's id and username, no id given twice) and counts the users, writing nothing, so a
//! malformed file, the wrong realm or two users with one id stop the import before any row
//! changes. The second pass streams the users (one file open, one chunk in memory) and decides
//! for each one, against what the database holds, whether to create, update, leave or skip it
//! (a user over the admin API's attribute limits is skipped). Deciding is pure (`plan`); the reads
//! and writes of a chunk share one transaction, a few statements for the whole chunk.
//!
//! A user written by an import gets a digest of what the import took from the export
//! (`user_import_digests`, kept only while no one else changes the user: see migration 0014).
//! A later run that computes the same digest leaves the user without reading more of it: a
//! re-run of an unchanged export reads a digest per user and writes nothing.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::files::{ExportError, export_files, read_users};
use super::progress::Progress;
use super::representation::UserRepresentation;
use crate::config::ProviderSettings;
use crate::directory::{
    MAX_ATTRIBUTE_NAME_LENGTH, MAX_ATTRIBUTE_NAMES, MAX_ATTRIBUTE_VALUE_LENGTH, MAX_ATTRIBUTE_VALUES,
};
use crate::store::{AttributeRow, ChunkWrites, ImportBatch, LinkRow, Store, StoreError, StoredUsers, UserRow};

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
    /// The user's id was seen before, at `first`, by the user named `first_username`.
    Duplicate {
        id: String,
        username: String,
        first: Place,
        first_username: String,
    },
}

/// Checks every file of the export at `path` and counts its users; writes nothing.
pub async fn check_export(path: &Path, realm: &str) -> Result<(Vec<PathBuf>, u64), ImportError> {
    let path = path.to_owned();
    let realm = realm.to_owned();
    tokio::task::spawn_blocking(move || {
        let files = export_files(&path, &realm)?;
        let mut users = 0_u64;
        // Ids by 64 bits of their SHA-256, not as strings: 9 bytes a slot in the set (1.1 MiB
        // for 100,000 users, 18 MiB for a million). With where each was seen beside it, a slot
        // took 33, and a million users took the import to 112 MiB.
        let mut seen: HashSet<u64> = HashSet::new();
        for (number, file) in files.iter().enumerate() {
            let mut index = 0_u64;
            let mut refusal = None;
            let named = read_users(file, &mut |user| {
                index += 1;
                refusal = match user_problem(&user) {
                    Some(message) => Some(Refusal::Invalid(message)),
                    None => seen_before(&mut seen, &files, &user, Place { file: number, index }),
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
                Some(Refusal::Duplicate { id, username, first, first_username }) => {
                    let first_file = files.get(first.file).unwrap_or(file);
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

/// The refusal of a user whose id was seen before, naming where. The set keeps 64 bits of each
/// id's digest, so a hit is confirmed by reading the export again up to this user: only a
/// duplicate (or two ids sharing those bits, a chance of one in 10^8 for a million users) makes
/// that happen.
fn seen_before(seen: &mut HashSet<u64>, files: &[PathBuf], user: &UserRepresentation, place: Place) -> Option<Refusal> {
    let id = user.id.as_deref().unwrap_or_default();
    let digest = crate::crypto::sha256(id.as_bytes());
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    if seen.insert(u64::from_le_bytes(key)) {
        return None;
    }
    let (first, first_username) = first_place(files, id, place)?;
    Some(Refusal::Duplicate {
        id: id.to_owned(),
        username: user.username.clone().unwrap_or_default(),
        first,
        first_username,
    })
}

/// Where user `id` first occurs in `files` before `before`, and that user's username.
fn first_place(files: &[PathBuf], id: &str, before: Place) -> Option<(Place, String)> {
    for (number, file) in files.iter().enumerate().take(before.file + 1) {
        let mut index = 0_u64;
        let mut found = None;
        // The reading is stopped on purpose once the user is found or `before` is reached; the
        // error that says so is not one.
        let _stopped = read_users(file, &mut |user| {
            index += 1;
            if number == before.file && index >= before.index {
                return Err("reached".to_owned());
            }
            if user.id.as_deref() != Some(id) {
                return Ok(());
            }
            found = Some((Place { file: number, index }, user.username.unwrap_or_default()));
            Err("found".to_owned())
        });
        if found.is_some() {
            return found;
        }
    }
    None
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

/// What a run has decided but the next chunk's reads would not see: in a dry run every decision
/// (nothing is written), in a real run the current chunk's (earlier chunks are committed, and
/// the database answers for them). Later users of the run must see it, as they would see it
/// written.
#[derive(Debug, Default)]
struct Claims {
    /// A lower-cased e-mail → the user written with it.
    emails: HashMap<String, String>,
    /// A user written → its lower-cased e-mail: whatever e-mail it held before is free.
    written_emails: HashMap<String, Option<String>>,
    /// `(alias, subject)` → the user linked to that upstream account.
    subjects: HashMap<(String, String), String>,
    links: PlannedLinks,
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
        // A real run's claims last one attempt at one chunk; a dry run's, the whole run.
        let mut chunk_claims = Claims::default();
        let claims = if target.dry_run { &mut *claims } else { &mut chunk_claims };
        let outcome = decide_and_write(batch.as_mut(), users, target, claims).await;
        match (outcome, batch) {
            (Ok(report), Some(batch)) if !target.dry_run => {
                batch.commit().await?;
                return Ok(report);
            }
            // A dry run's transaction only read; dropping it rolls it back.
            (Ok(report), _) => return Ok(report),
            (Err(StoreError::Conflict(_)), _) if attempt < ATTEMPTS => continue,
            (Err(err), _) => return Err(err.into()),
        }
    }
}

/// One attempt at a chunk: what the database holds of its users, read a set at a time, the
/// decisions (pure, [`plan`]), then the chunk's writes.
async fn decide_and_write(
    mut batch: Option<&mut ImportBatch>,
    users: &[UserRepresentation],
    target: &ImportTarget<'_>,
    claims: &mut Claims,
) -> Result<UsersReport, StoreError> {
    let candidates: Vec<Candidate> = users.iter().map(|user| candidate(user, target)).collect();
    let snapshot = match batch.as_deref_mut() {
        Some(batch) => read_snapshot(batch, &candidates).await?,
        None => Snapshot::default(),
    };
    let (report, writes) = plan(candidates, &snapshot, claims, target.dry_run);
    if let Some(batch) = batch.filter(|_| !target.dry_run) {
        batch.write(&writes, target.now).await?;
    }
    Ok(report)
}

/// A user of the export, read and checked before the database is asked.
#[derive(Debug)]
enum Candidate {
    /// Left out whatever the database holds: a service account, attributes over the limits.
    Skipped(Skipped),
    Wanted(Desired),
}

fn candidate(user: &UserRepresentation, target: &ImportTarget<'_>) -> Candidate {
    let want = desired(user, target.providers, target.now);
    let skip = |reason: String| {
        Candidate::Skipped(Skipped { user_id: want.user.id.clone(), username: want.user.username.clone(), reason })
    };
    if let Some(client) = &user.service_account_client_id {
        return skip(format!("the service account of client `{client}`, not a person"));
    }
    if let Some(problem) = attributes_problem(&want.attributes) {
        return skip(problem);
    }
    Candidate::Wanted(want)
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
    /// What `user_import_digests` keeps once the user is written as above.
    digest: String,
}

/// Bumped when what the import takes of a user changes: every stored digest then differs, and
/// the next run compares each user field by field.
const DIGEST_VERSION: u32 = 1;

/// What an import takes of a user, as its digest covers it: `created_at` only when the export
/// gives it (otherwise a stored user keeps its own), and the full name not (it follows the names).
#[derive(serde::Serialize)]
struct Imported<'a> {
    version: u32,
    username: &'a str,
    email: Option<&'a str>,
    email_verified: bool,
    first_name: Option<&'a str>,
    last_name: Option<&'a str>,
    enabled: bool,
    created_at: Option<i64>,
    attributes: &'a [(String, String)],
    links: Vec<(&'a str, &'a str, Option<&'a str>)>,
}

/// 128 bits of the SHA-256 of the user's imported fields as JSON, in base64url: two different
/// sets of fields cannot be met with one digest by chance.
fn digest(user: &UserRow, created_given: bool, attributes: &[(String, String)], links: &[LinkRow]) -> String {
    use base64::Engine as _;
    let imported = Imported {
        version: DIGEST_VERSION,
        username: &user.username,
        email: user.email.as_deref(),
        email_verified: user.email_verified,
        first_name: user.first_name.as_deref(),
        last_name: user.last_name.as_deref(),
        enabled: user.enabled,
        created_at: created_given.then_some(user.created_at),
        attributes,
        links: links.iter().map(|l| (l.alias.as_str(), l.subject.as_str(), l.username.as_deref())).collect(),
    };
    // Strings, numbers and flags only: serializing cannot fail.
    let text = serde_json::to_vec(&imported).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&crate::crypto::sha256(&text)[..16])
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
    let row = UserRow {
        id,
        username: user.username.clone().unwrap_or_default(),
        email: user.email.clone().filter(|s| !s.is_empty()),
        email_verified: user.email_verified.unwrap_or(false),
        first_name,
        last_name,
        full_name,
        enabled: user.enabled.unwrap_or(true),
        created_at: user.created_timestamp.map_or(now, |ms| ms.div_euclid(1000)),
    };
    let created_given = user.created_timestamp.is_some();
    let digest = digest(&row, created_given, &attributes, &links);
    Desired { user: row, created_given, attributes, links, unknown_aliases, digest }
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

/// What the database held, when a chunk began, of the chunk's users and of what they claim.
#[derive(Debug, Default)]
struct Snapshot {
    /// `user_id → digest`: what the last import wrote of each user, while no one changed it since.
    digests: HashMap<String, String>,
    /// An e-mail as the export gives it → the users holding it (ignoring case).
    email_holders: HashMap<String, Vec<String>>,
    /// `(alias, subject)` → the user linked to that upstream account.
    subject_holders: HashMap<(String, String), String>,
    /// The users whose digest is missing or differs, as stored (absent: not stored).
    stored: HashMap<String, Stored>,
}

/// Reads what deciding the chunk needs, a statement per kind: the digests first, then only the
/// users they do not vouch for. The upstream accounts are read before the stored users, whose
/// read waits for any writer holding them: a sign-in that completes meanwhile is then met at the
/// chunk's write, which starts the chunk again.
async fn read_snapshot(batch: &mut ImportBatch, candidates: &[Candidate]) -> Result<Snapshot, StoreError> {
    let wanted: Vec<&Desired> = candidates
        .iter()
        .filter_map(|candidate| match candidate {
            Candidate::Wanted(want) => Some(want),
            Candidate::Skipped(_) => None,
        })
        .collect();
    if wanted.is_empty() {
        return Ok(Snapshot::default());
    }
    let ids: Vec<&str> = wanted.iter().map(|want| want.user.id.as_str()).collect();
    let digests: HashMap<String, String> = batch.digests(&ids).await?.into_iter().collect();
    let unvouched: Vec<&Desired> =
        wanted.iter().copied().filter(|want| digests.get(&want.user.id) != Some(&want.digest)).collect();
    let accounts: Vec<(&str, &str)> = unvouched
        .iter()
        .flat_map(|want| want.links.iter().map(|link| (link.alias.as_str(), link.subject.as_str())))
        .collect();
    let subject_holders = if accounts.is_empty() {
        HashMap::new()
    } else {
        batch
            .subject_holders(&accounts)
            .await?
            .into_iter()
            .map(|(alias, subject, user_id)| ((alias, subject), user_id))
            .collect()
    };
    let mut emails: Vec<&str> = wanted.iter().filter_map(|want| want.user.email.as_deref()).collect();
    emails.sort_unstable();
    emails.dedup();
    let mut email_holders: HashMap<String, Vec<String>> = HashMap::new();
    if !emails.is_empty() {
        for (email, holder) in batch.email_holders(&emails).await? {
            email_holders.entry(email).or_default().push(holder);
        }
    }
    let unvouched_ids: Vec<&str> = unvouched.iter().map(|want| want.user.id.as_str()).collect();
    let stored =
        if unvouched_ids.is_empty() { HashMap::new() } else { stored_by_id(batch.stored_users(&unvouched_ids).await?) };
    Ok(Snapshot { digests, email_holders, subject_holders, stored })
}

/// The stored rows (each list by user) grouped into one `Stored` per user.
fn stored_by_id(rows: StoredUsers) -> HashMap<String, Stored> {
    let mut stored: HashMap<String, Stored> = rows
        .users
        .into_iter()
        .map(|user| (user.id.clone(), Stored { user, attributes: Vec::new(), links: Vec::new() }))
        .collect();
    for row in rows.attributes {
        if let Some(user) = stored.get_mut(&row.user_id) {
            user.attributes.push((row.name, row.value));
        }
    }
    for link in rows.links {
        if let Some(user) = stored.get_mut(&link.user_id) {
            user.links.push(link);
        }
    }
    stored
}

/// Decides each user of a chunk in the export's order against what the database held and what
/// the run claimed before it: skip, leave, create or update, and what to write. Pure.
fn plan(
    candidates: Vec<Candidate>,
    snapshot: &Snapshot,
    claims: &mut Claims,
    dry_run: bool,
) -> (UsersReport, ChunkWrites) {
    let mut report = UsersReport::default();
    let mut writes = ChunkWrites::default();
    for candidate in candidates {
        match candidate {
            Candidate::Skipped(skipped) => report.skipped.push(skipped),
            Candidate::Wanted(want) => plan_user(want, snapshot, claims, dry_run, &mut report, &mut writes),
        }
    }
    (report, writes)
}

fn plan_user(
    mut want: Desired,
    snapshot: &Snapshot,
    claims: &mut Claims,
    dry_run: bool,
    report: &mut UsersReport,
    writes: &mut ChunkWrites,
) {
    let id = want.user.id.clone();
    let skip = |reason: String| Skipped { user_id: id.clone(), username: want.user.username.clone(), reason };
    // The upstream account first: when one person signed in before the import, that says more.
    for link in &want.links {
        if let Some(holder) = claims.subject_holder(snapshot, link, &id) {
            report.skipped.push(skip(format!(
                "its {} account {} is already linked to user {holder} (who signed in through the broker before the \
                 import?): unlink it there first (DELETE /internal/v1/users/{holder}/tokens/{}) and import again",
                link.alias, link.subject, link.alias
            )));
            return;
        }
    }
    if let Some(email) = &want.user.email
        && let Some(holder) = claims.email_holder(snapshot, email, &id)
    {
        report.skipped.push(skip(format!("its e-mail {email} belongs to user {holder}")));
        return;
    }
    for alias in &want.unknown_aliases {
        report.not_linked.push(skip(format!(
            "`{alias}` is not an enabled provider of the broker (providers.{alias}); the rest of the user is imported"
        )));
    }
    if snapshot.digests.get(&id) == Some(&want.digest) {
        report.unchanged += 1;
        return;
    }
    let stored = snapshot.stored.get(&id);
    if let (Some(stored), false) = (stored, want.created_given) {
        want.user.created_at = stored.user.created_at;
    }
    let user_changed = stored.is_none_or(|s| s.user != want.user);
    let attributes_changed = stored.map_or(!want.attributes.is_empty(), |s| s.attributes != want.attributes);
    let link_changes: Vec<(&LinkRow, bool)> = want
        .links
        .iter()
        .filter_map(|link| match stored.and_then(|s| s.links.iter().find(|l| l.alias == link.alias)) {
            Some(held) if held == link => None,
            Some(held) => Some((link, held.subject != link.subject)),
            None => Some((link, false)),
        })
        .collect();
    if stored.is_some() && !user_changed && !attributes_changed && link_changes.is_empty() {
        // Equal, but without a digest that says so (one written before digests were, or a change
        // undone since): the digest alone is written, so that the next run reads nothing.
        report.unchanged += 1;
        writes.digests.push((id, want.digest));
        return;
    }
    if stored.is_some() {
        report.updated += 1;
    } else {
        report.created += 1;
    }
    claims.claim(&want);
    if dry_run {
        return;
    }
    for (link, relink) in link_changes {
        if relink {
            writes.relinked.push((id.clone(), link.alias.clone()));
        }
        writes.links.push(link.clone());
    }
    if stored.is_some_and(|s| s.user.enabled) && !want.user.enabled {
        writes.disabled.push(id.clone());
    }
    if attributes_changed {
        if stored.is_some() {
            writes.replaced_attributes.push(id.clone());
        }
        writes.attributes.extend(want.attributes.into_iter().map(|(name, value)| AttributeRow {
            user_id: id.clone(),
            name,
            value,
        }));
    }
    if user_changed || attributes_changed {
        writes.users.push(want.user);
    }
    writes.digests.push((id, want.digest));
}

impl Claims {
    /// Another user than `id` holding the upstream account of `link`: one this run linked it
    /// to, or the stored one unless this run moved that user's identity to another account.
    fn subject_holder(&self, snapshot: &Snapshot, link: &LinkRow, id: &str) -> Option<String> {
        let account = (link.alias.clone(), link.subject.clone());
        if let Some(holder) = self.subjects.get(&account).filter(|holder| *holder != id) {
            return Some(holder.clone());
        }
        let holder = snapshot.subject_holders.get(&account).filter(|holder| *holder != id)?;
        let moved = self.links.get(&(holder.clone(), link.alias.clone())).is_some_and(|now| *now != link.subject);
        (!moved).then(|| holder.clone())
    }

    /// Another user than `id` holding `email`: one this run gave it to, or a stored one unless
    /// this run gave that user another e-mail.
    fn email_holder(&self, snapshot: &Snapshot, email: &str, id: &str) -> Option<String> {
        let lower = email.to_lowercase();
        if let Some(holder) = self.emails.get(&lower).filter(|holder| *holder != id) {
            return Some(holder.clone());
        }
        let holders = snapshot.email_holders.get(email)?;
        holders
            .iter()
            .find(|holder| {
                *holder != id
                    && self.written_emails.get(*holder).is_none_or(|written| written.as_deref() == Some(&lower))
            })
            .cloned()
    }

    /// Records what a user created or updated now holds, for the users after it.
    fn claim(&mut self, want: &Desired) {
        let id = &want.user.id;
        let email = want.user.email.as_ref().map(|email| email.to_lowercase());
        if let Some(email) = &email {
            self.emails.insert(email.clone(), id.clone());
        }
        self.written_emails.insert(id.clone(), email);
        for link in &want.links {
            self.subjects.insert((link.alias.clone(), link.subject.clone()), id.clone());
            self.links.insert((id.clone(), link.alias.clone()), link.subject.clone());
        }
    }
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

    /// The chunk of `users` (JSON representations) planned against `snapshot`, in a real run.
    fn plan_of(users: &[&str], snapshot: &Snapshot) -> (UsersReport, ChunkWrites) {
        let providers = providers();
        let target = ImportTarget { realm: "allhands", providers: &providers, now: 5, dry_run: false };
        let candidates = users
            .iter()
            .map(|json| candidate(&serde_json::from_str::<UserRepresentation>(json).unwrap(), &target))
            .collect();
        plan(candidates, snapshot, &mut Claims::default(), false)
    }

    /// What the database holds once `json` is imported, as a snapshot's stored user.
    fn stored(json: &str) -> (Stored, String) {
        let user: UserRepresentation = serde_json::from_str(json).unwrap();
        let want = desired(&user, &providers(), 5);
        (Stored { user: want.user, attributes: want.attributes, links: want.links }, want.digest)
    }

    #[test]
    fn a_user_is_left_unread_when_its_digest_matches_and_gets_only_a_digest_when_equal_without_one() {
        let alice = r#"{"id":"a","username":"alice","attributes":{"t":["1"]},
                        "federatedIdentities":[{"identityProvider":"azure_devops","userId":"s"}]}"#;
        let (held, digest) = stored(alice);
        let vouched = Snapshot { digests: [("a".to_owned(), digest.clone())].into(), ..Snapshot::default() };
        let equal = Snapshot { stored: [("a".to_owned(), held)].into(), ..Snapshot::default() };

        let (report, writes) = plan_of(&[alice], &vouched);
        assert_eq!((report.unchanged, report.created, report.updated), (1, 0, 0));
        assert!(writes.digests.is_empty() && writes.users.is_empty() && writes.links.is_empty(), "{writes:?}");

        let (report, writes) = plan_of(&[alice], &equal);
        assert_eq!(report.unchanged, 1, "equal field by field");
        assert_eq!(writes.digests, [("a".to_owned(), digest)], "the digest alone is written");
        assert!(writes.users.is_empty() && writes.attributes.is_empty() && writes.links.is_empty(), "{writes:?}");

        let (report, writes) = plan_of(&[&alice.replace("alice", "alicia")], &equal);
        assert_eq!(report.updated, 1);
        assert_eq!(writes.users.len(), 1, "the user's row");
        assert!(writes.attributes.is_empty() && writes.links.is_empty(), "its attributes and link kept: {writes:?}");
        assert_eq!(writes.digests.len(), 1);
    }

    #[test]
    fn a_chunk_sees_its_own_earlier_users_as_if_they_were_written() {
        // Stored: `a` holds x@y and the upstream account `s`.
        let (held, _) = stored(
            r#"{"id":"a","username":"a","email":"x@y","federatedIdentities":[{"identityProvider":"azure_devops","userId":"s"}]}"#,
        );
        let snapshot = Snapshot {
            email_holders: [("X@y".to_owned(), vec!["a".to_owned()])].into(),
            subject_holders: [(("azure_devops".to_owned(), "s".to_owned()), "a".to_owned())].into(),
            stored: [("a".to_owned(), held)].into(),
            ..Snapshot::default()
        };
        let gives_up = r#"{"id":"a","username":"a","email":"z@y","federatedIdentities":[{"identityProvider":"azure_devops","userId":"t"}]}"#;
        let takes = r#"{"id":"b","username":"b","email":"X@y","federatedIdentities":[{"identityProvider":"azure_devops","userId":"s"}]}"#;
        let cases = [
            (vec![gives_up, takes], 1, 0, "`a` lets go of both before `b` asks"),
            (vec![takes, gives_up], 0, 1, "`b` asks while `a` still holds them"),
        ];
        for (users, created, skipped, case) in cases {
            let (report, writes) = plan_of(&users, &snapshot);
            assert_eq!((report.created, report.skipped.len(), report.updated), (created, skipped, 1), "{case}");
            assert_eq!(writes.relinked, [("a".to_owned(), "azure_devops".to_owned())], "{case}: `a` moves to `t`");
        }
        let twice = r#"{"id":"c","username":"c","email":"z@Y"}"#;
        let (report, _) = plan_of(&[gives_up, twice], &snapshot);
        let reason = report.skipped.first().map(|s| s.reason.as_str()).unwrap_or_default();
        assert_eq!(reason, "its e-mail z@Y belongs to user a", "a claim of this chunk, ignoring case");
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
