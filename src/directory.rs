//! The users and the identities linked to them: the lookups of the APIs for other services,
//! and Keycloak's user search, creation (with a password) and changes as its admin REST API
//! defines them.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::is_role_name;
use crate::crypto::{PasswordError, hash_password, new_id};
use crate::store::{
    AttributeValue, ChangeWrite, Creation, DirectoryUser, MAX_ATTRIBUTE_FILTERS, NewUser, Store, StoreError,
    UPDATE_PASSWORD, UserChanges, UserCriteria, UserRow,
};

/// Keycloak's page size when `max` is not given.
pub(crate) const DEFAULT_PAGE: i64 = 100;
/// The largest page served: a larger `max` is served as this many, so that no request loads
/// the whole table at once.
pub(crate) const MAX_PAGE: i64 = 1000;
/// Bounds on what an administrator may store as attributes.
pub(crate) const MAX_ATTRIBUTE_NAMES: usize = 64;
pub(crate) const MAX_ATTRIBUTE_VALUES: usize = 256;
pub(crate) const MAX_ATTRIBUTE_NAME_LENGTH: usize = 255;
pub(crate) const MAX_ATTRIBUTE_VALUE_LENGTH: usize = 2048;
/// Keycloak's limit for names; e-mail addresses follow RFC 5321's.
const MAX_NAME_LENGTH: usize = 255;
const MAX_EMAIL_LENGTH: usize = 254;
/// Longer passwords are refused: hashing cost grows with them, and nobody types more.
const MAX_PASSWORD_BYTES: usize = 1024;
/// Keycloak's built-in required actions, by the aliases its API takes.
const REQUIRED_ACTIONS: [&str; 9] = [
    "CONFIGURE_TOTP",
    "TERMS_AND_CONDITIONS",
    UPDATE_PASSWORD,
    "UPDATE_PROFILE",
    "VERIFY_EMAIL",
    "VERIFY_PROFILE",
    "UPDATE_EMAIL",
    "CONFIGURE_RECOVERY_AUTHN_CODES",
    "delete_account",
];
/// The user's own fields, which Keycloak keeps out of `attributes`.
const PROFILE_FIELDS: [&str; 4] = ["username", "email", "firstName", "lastName"];

/// Lookups over the users; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Directory {
    store: Store,
}

/// A request the admin API refuses; `Display` is the message for the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub(crate) struct Invalid(pub(crate) String);

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid(message.into())
}

/// `GET …/users` and `…/users/count` parameters, as given (Keycloak's names).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SearchParams {
    search: Option<String>,
    last_name: Option<String>,
    first_name: Option<String>,
    email: Option<String>,
    username: Option<String>,
    email_verified: Option<String>,
    idp_alias: Option<String>,
    idp_user_id: Option<String>,
    first: Option<String>,
    max: Option<String>,
    enabled: Option<String>,
    brief_representation: Option<String>,
    exact: Option<String>,
    q: Option<String>,
}

/// A search read from its parameters with Keycloak's semantics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserSearch {
    pub(crate) criteria: UserCriteria,
    pub(crate) first: i64,
    pub(crate) max: i64,
    pub(crate) brief: bool,
}

/// A boolean as either client writes it: `requests` sends `False`, `httpx` sends `false`.
fn parse_bool(name: &str, value: Option<&str>) -> Result<Option<bool>, Invalid> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(invalid(format!("`{name}` must be true or false"))),
    }
}

fn parse_count(name: &str, value: Option<&str>, default: i64) -> Result<i64, Invalid> {
    match value {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| invalid(format!("`{name}` must be a whole number from 0"))),
    }
}

/// `value` as a `LIKE` pattern that matches it literally: `%`, `_` and `\` escaped.
fn literal_pattern(value: &str) -> String {
    let mut pattern = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}

/// Keycloak's matching of the plain name and e-mail parameters: a substring unless `exact`.
fn field_pattern(value: &str, exact: bool) -> String {
    if exact { literal_pattern(value) } else { format!("%{}%", literal_pattern(value)) }
}

/// Keycloak's `search`: `"foo"` exact, `*` a wildcard (`*foo*` a substring), otherwise a prefix.
fn search_pattern(value: &str) -> String {
    let value = value.trim();
    if let Some(inner) = value.strip_prefix('"').and_then(|rest| rest.strip_suffix('"')) {
        return literal_pattern(inner);
    }
    if value.contains('*') {
        return value.split('*').map(literal_pattern).collect::<Vec<_>>().join("%");
    }
    format!("{}%", literal_pattern(value))
}

/// Reads a quoted run (`"…"`, `\` escaping the next character) after its opening quote.
fn quoted(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, Invalid> {
    let mut text = String::new();
    loop {
        match chars.next() {
            Some('"') => return Ok(text),
            Some('\\') => text.push(chars.next().ok_or_else(|| invalid("`q` ends inside a quoted value"))?),
            Some(c) => text.push(c),
            None => return Err(invalid("`q` has a quote that is not closed")),
        }
    }
}

/// Keycloak's `q`: space-separated `key:value` pairs, either half in double quotes to hold
/// spaces; a token without `:` is ignored; a repeated key keeps its last value. An empty value
/// is refused: ignoring it would widen the search to every user.
fn parse_q(q: &str) -> Result<BTreeMap<String, String>, Invalid> {
    let mut pairs = BTreeMap::new();
    let mut chars = q.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&start) = chars.peek() else {
            return Ok(pairs);
        };
        let name = if start == '"' {
            chars.next();
            quoted(&mut chars)?
        } else {
            let mut name = String::new();
            while let Some(c) = chars.next_if(|c| *c != ':' && !c.is_whitespace()) {
                name.push(c);
            }
            name
        };
        if chars.next_if_eq(&':').is_none() {
            // No `:`: not a pair; skip the rest of the token.
            while chars.next_if(|c| !c.is_whitespace()).is_some() {}
            continue;
        }
        let value = if chars.next_if_eq(&'"').is_some() {
            quoted(&mut chars)?
        } else {
            let mut value = String::new();
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
            value
        };
        if name.is_empty() {
            return Err(invalid("`q` has a pair without a name"));
        }
        if value.is_empty() {
            return Err(invalid(format!("`q` gives `{name}` no value")));
        }
        pairs.insert(name, value);
    }
}

impl SearchParams {
    /// The search these parameters ask for, with Keycloak's semantics: `search` wins over every
    /// other filter; otherwise all are ANDed and `q`'s keys override the plain parameters.
    /// Deliberately unlike Keycloak, `q=email:` matches the whole e-mail (ignoring case), not a
    /// substring: OpenHands acts on the first user found.
    pub(crate) fn read(&self) -> Result<UserSearch, Invalid> {
        let first = parse_count("first", self.first.as_deref(), 0)?;
        let max = parse_count("max", self.max.as_deref(), DEFAULT_PAGE)?.min(MAX_PAGE);
        let brief = parse_bool("briefRepresentation", self.brief_representation.as_deref())?.unwrap_or(false);
        let criteria = self.criteria()?;
        Ok(UserSearch { criteria, first, max, brief })
    }

    /// The filters alone, as `…/users/count` reads them.
    pub(crate) fn criteria(&self) -> Result<UserCriteria, Invalid> {
        if let Some(search) = &self.search {
            let search = search.trim();
            if let Some(id) = search.strip_prefix("id:") {
                return Ok(UserCriteria { id: Some(id.trim().to_owned()), ..UserCriteria::default() });
            }
            return Ok(UserCriteria { search: Some(search_pattern(search)), ..UserCriteria::default() });
        }
        let mut q = match &self.q {
            Some(q) => parse_q(q)?,
            None => BTreeMap::new(),
        };
        let exact = parse_bool("exact", self.exact.as_deref())?.unwrap_or(false);
        let mut field = |key: &str, plain: &Option<String>| q.remove(key).or_else(|| plain.clone());
        let username = field("username", &self.username);
        let first_name = field("firstName", &self.first_name);
        let last_name = field("lastName", &self.last_name);
        let email_verified = field("emailVerified", &self.email_verified);
        let enabled = field("enabled", &self.enabled);
        let email_exact = q.remove("email");
        let email = if email_exact.is_some() { None } else { self.email.as_deref().map(|e| field_pattern(e, exact)) };
        if q.len() > MAX_ATTRIBUTE_FILTERS {
            return Err(invalid(format!("`q` may name at most {MAX_ATTRIBUTE_FILTERS} attributes")));
        }
        Ok(UserCriteria {
            id: None,
            search: None,
            username: username.map(|v| field_pattern(&v, exact)),
            email,
            email_exact,
            first_name: first_name.map(|v| field_pattern(&v, exact)),
            last_name: last_name.map(|v| field_pattern(&v, exact)),
            email_verified: parse_bool("emailVerified", email_verified.as_deref())?,
            enabled: parse_bool("enabled", enabled.as_deref())?,
            idp_alias: self.idp_alias.clone(),
            idp_user_id: self.idp_user_id.clone(),
            attributes: q.into_iter().collect(),
        })
    }
}

/// `PUT …/users/{id}`'s body: Keycloak's user representation, of which only these fields
/// change anything; absent or null fields keep what is stored, other fields are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserUpdate {
    pub(crate) username: Option<String>,
    pub(crate) email: Option<String>,
    pub(crate) email_verified: Option<bool>,
    pub(crate) first_name: Option<String>,
    pub(crate) last_name: Option<String>,
    pub(crate) enabled: Option<bool>,
    pub(crate) attributes: Option<BTreeMap<String, Vec<String>>>,
}

/// The most roles one role-mapping request may name.
const MAX_ROLES_PER_REQUEST: usize = 100;

/// Keycloak's `RoleRepresentation` as role-mapping requests name a realm role: by `name`, or by
/// `id`, which for the broker is the name too (`GET …/roles` gives both alike).
#[derive(Debug, Deserialize)]
pub(crate) struct RoleRequest {
    id: Option<String>,
    name: Option<String>,
}

/// The role names of a role-mapping request, once each; unlike Keycloak, a name the realm has
/// not seen yet is taken as a new role (the broker has no `POST …/roles`).
pub(crate) fn role_names(requests: Vec<RoleRequest>) -> Result<Vec<String>, Invalid> {
    if requests.len() > MAX_ROLES_PER_REQUEST {
        return Err(invalid(format!("at most {MAX_ROLES_PER_REQUEST} roles at once")));
    }
    let mut names = Vec::with_capacity(requests.len());
    for request in requests {
        let name = match (request.name, request.id) {
            (Some(name), Some(id)) if name != id => {
                return Err(invalid(format!("role `{name}` has id `{id}`: a realm role's id is its name")));
            }
            (Some(name), _) | (None, Some(name)) => name,
            (None, None) => return Err(invalid("a role needs its `name`")),
        };
        if !is_role_name(&name) {
            return Err(invalid("a role name is 1 to 255 characters, without control characters"));
        }
        names.push(name);
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// `first` and `max` of a list that pages (`GET …/roles/{role}/users`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PageParams {
    first: Option<String>,
    max: Option<String>,
}

impl PageParams {
    /// `(first, max)`, `max` 100 by default and at most [`MAX_PAGE`].
    pub(crate) fn read(&self) -> Result<(i64, i64), Invalid> {
        let first = parse_count("first", self.first.as_deref(), 0)?;
        let max = parse_count("max", self.max.as_deref(), DEFAULT_PAGE)?.min(MAX_PAGE);
        Ok((first, max))
    }
}

/// Keycloak's `CredentialRepresentation`, as `POST …/users` and `PUT …/reset-password` take
/// it; `Debug` leaves the value out.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CredentialRequest {
    #[serde(rename = "type")]
    kind: Option<String>,
    value: Option<SecretString>,
    temporary: Option<bool>,
}

impl std::fmt::Debug for CredentialRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialRequest")
            .field("type", &self.kind)
            .field("has_value", &self.value.is_some())
            .field("temporary", &self.temporary)
            .finish()
    }
}

/// A password to set, read from a credential: only the `password` type, with a value.
#[derive(Debug)]
pub(crate) struct NewPassword {
    password: SecretString,
    temporary: bool,
}

impl CredentialRequest {
    /// The password this credential sets; `temporary` when the representation leaves it out.
    fn password(self, temporary_by_default: bool) -> Result<NewPassword, Invalid> {
        match self.kind.as_deref() {
            None | Some("password") => {}
            Some(other) => return Err(invalid(format!("unsupported credential type `{other}`: only `password`"))),
        }
        let Some(password) = self.value else {
            return Err(invalid("No password provided"));
        };
        let text = password.expose_secret();
        if text.trim().is_empty() {
            return Err(invalid("Empty password"));
        }
        if text.len() > MAX_PASSWORD_BYTES || text.contains('\0') {
            return Err(invalid(format!("a password is at most {MAX_PASSWORD_BYTES} bytes, without NUL characters")));
        }
        Ok(NewPassword { password, temporary: self.temporary.unwrap_or(temporary_by_default) })
    }

    /// `PUT …/users/{id}/reset-password`'s body: a permanent password unless `temporary`.
    pub(crate) fn reset(self) -> Result<NewPassword, Invalid> {
        self.password(false)
    }
}

impl NewPassword {
    pub(crate) fn temporary(&self) -> bool {
        self.temporary
    }
}

/// `POST …/users`'s body: Keycloak's user representation. Fields Keycloak ignores on creation
/// (`id`, `createdTimestamp`, `access`, `realmRoles`, …) are ignored; those it would act on and
/// the broker cannot are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserCreation {
    username: Option<String>,
    email: Option<String>,
    email_verified: Option<bool>,
    first_name: Option<String>,
    last_name: Option<String>,
    enabled: Option<bool>,
    attributes: Option<BTreeMap<String, Vec<String>>>,
    credentials: Option<Vec<CredentialRequest>>,
    required_actions: Option<Vec<String>>,
    groups: Option<Vec<String>>,
    federated_identities: Option<Vec<serde_json::Value>>,
}

/// A creation read and checked, before its password is hashed.
#[derive(Debug)]
pub(crate) struct CheckedCreation {
    user: NewUser,
    password: Option<SecretString>,
}

impl UserCreation {
    /// The user to create, or why the representation is refused. As in Keycloak, the username
    /// is kept in lower case, `enabled` and `emailVerified` are false unless given, and a
    /// temporary password adds `UPDATE_PASSWORD` to the required actions.
    pub(crate) fn checked(self) -> Result<CheckedCreation, Invalid> {
        let username = self.username.as_deref().map(str::trim).unwrap_or_default().to_lowercase();
        if username.is_empty() {
            return Err(invalid("error-user-attribute-required: username"));
        }
        if username.chars().count() > MAX_NAME_LENGTH || username.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid(format!(
                "error-invalid-length-or-characters: username must be 1 to {MAX_NAME_LENGTH} characters, without spaces"
            )));
        }
        let email = match self.email {
            None => None,
            Some(email) if email.is_empty() => None,
            Some(email) if is_email(&email) => Some(email),
            Some(_) => return Err(invalid("invalid-email")),
        };
        check_name("firstName", &self.first_name)?;
        check_name("lastName", &self.last_name)?;
        if self.groups.is_some_and(|groups| !groups.is_empty()) {
            return Err(invalid("groups are not supported by this broker; create the user without `groups`"));
        }
        if self.federated_identities.is_some_and(|links| !links.is_empty()) {
            return Err(invalid(
                "create the user without `federatedIdentities`, then link with POST …/users/{id}/federated-identity/{alias}",
            ));
        }
        let attributes = self.attributes.as_ref().map(checked_attributes).transpose()?.unwrap_or_default();
        let mut required_actions = Vec::new();
        for action in self.required_actions.unwrap_or_default() {
            if !REQUIRED_ACTIONS.contains(&action.as_str()) {
                return Err(invalid(format!("Unknown required action: {action}")));
            }
            if !required_actions.contains(&action) {
                required_actions.push(action);
            }
        }
        let mut credentials = self.credentials.unwrap_or_default().into_iter();
        let password = credentials.next().map(|credential| credential.password(false)).transpose()?;
        if credentials.next().is_some() {
            return Err(invalid("at most one credential, of type `password`"));
        }
        if password.as_ref().is_some_and(NewPassword::temporary)
            && !required_actions.iter().any(|a| a == UPDATE_PASSWORD)
        {
            required_actions.push(UPDATE_PASSWORD.to_owned());
        }
        let user = NewUser {
            id: new_id(),
            username,
            email,
            email_verified: self.email_verified.unwrap_or(false),
            full_name: full_name(&self.first_name, &self.last_name),
            first_name: self.first_name,
            last_name: self.last_name,
            enabled: self.enabled.unwrap_or(false),
            attributes,
            password_hash: None,
            required_actions,
        };
        Ok(CheckedCreation { user, password: password.map(|p| p.password) })
    }
}

impl CheckedCreation {
    pub(crate) fn has_password(&self) -> bool {
        self.password.is_some()
    }

    pub(crate) fn required_actions(&self) -> &[String] {
        &self.user.required_actions
    }
}

/// A directory write that could not be done: the database, or the hashing of a password.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Password(#[from] PasswordError),
}

/// A plausible e-mail address: one `@` between a local part and a domain, no spaces.
fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    text.len() <= MAX_EMAIL_LENGTH
        && !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn check_name(field: &str, value: &Option<String>) -> Result<(), Invalid> {
    match value {
        Some(v) if v.chars().count() > MAX_NAME_LENGTH || v.chars().any(char::is_control) => {
            Err(invalid(format!("`{field}` must be at most {MAX_NAME_LENGTH} characters, without control characters")))
        }
        _ => Ok(()),
    }
}

/// The attributes to store, in name order, within the bounds; the user's own fields are
/// kept out as Keycloak keeps them out.
fn checked_attributes(attributes: &BTreeMap<String, Vec<String>>) -> Result<Vec<AttributeValue>, Invalid> {
    let kept: Vec<(&String, &Vec<String>)> =
        attributes.iter().filter(|(name, _)| !PROFILE_FIELDS.contains(&name.as_str())).collect();
    if kept.len() > MAX_ATTRIBUTE_NAMES {
        return Err(invalid(format!("at most {MAX_ATTRIBUTE_NAMES} attributes")));
    }
    let mut values = Vec::new();
    for (name, list) in kept {
        if name.trim().is_empty() || name.len() > MAX_ATTRIBUTE_NAME_LENGTH || name.chars().any(char::is_control) {
            return Err(invalid(format!(
                "attribute names must be 1 to {MAX_ATTRIBUTE_NAME_LENGTH} bytes, without control characters"
            )));
        }
        for value in list {
            if value.len() > MAX_ATTRIBUTE_VALUE_LENGTH || value.contains('\0') {
                return Err(invalid(format!(
                    "attribute `{name}` has a value over {MAX_ATTRIBUTE_VALUE_LENGTH} bytes or with a NUL character"
                )));
            }
            values.push(AttributeValue { name: name.clone(), value: value.clone() });
        }
    }
    if values.len() > MAX_ATTRIBUTE_VALUES {
        return Err(invalid(format!("at most {MAX_ATTRIBUTE_VALUES} attribute values in all")));
    }
    Ok(values)
}

/// `first last`, as Keycloak forms the `name` claim.
fn full_name(first: &Option<String>, last: &Option<String>) -> Option<String> {
    let parts: Vec<&str> = [first, last].into_iter().flatten().map(String::as_str).filter(|s| !s.is_empty()).collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

impl UserUpdate {
    /// The update merged over the stored user, or why it is refused. The username is Keycloak's
    /// read-only attribute (sign-in writes it from the provider); the same one is accepted.
    pub(crate) fn merged(self, stored: &DirectoryUser) -> Result<UserChanges, Invalid> {
        let user = &stored.user;
        if let Some(username) = &self.username
            && !username.eq_ignore_ascii_case(&user.username)
        {
            return Err(invalid("error-user-attribute-read-only: username cannot be changed"));
        }
        let email = match self.email {
            None => user.email.clone(),
            Some(email) if email.is_empty() => None,
            Some(email) if is_email(&email) => Some(email),
            Some(_) => return Err(invalid("invalid-email")),
        };
        check_name("firstName", &self.first_name)?;
        check_name("lastName", &self.last_name)?;
        let names_changed = self.first_name.is_some() || self.last_name.is_some();
        let first_name = self.first_name.or_else(|| user.first_name.clone());
        let last_name = self.last_name.or_else(|| user.last_name.clone());
        let full_name = if names_changed { full_name(&first_name, &last_name) } else { user.full_name.clone() };
        let attributes = self.attributes.as_ref().map(checked_attributes).transpose()?;
        Ok(UserChanges {
            email,
            email_verified: self.email_verified.unwrap_or(user.email_verified),
            first_name,
            last_name,
            full_name,
            enabled: self.enabled.unwrap_or(user.enabled),
            attributes,
        })
    }
}

impl Directory {
    pub(crate) fn new(store: Store) -> Self {
        Directory { store }
    }

    /// The user who signed in through `alias` as upstream `subject`, if any.
    pub(crate) async fn find_by_identity(&self, alias: &str, subject: &str) -> Result<Option<UserRow>, StoreError> {
        match self.store.find_identity_by_subject(alias, subject).await? {
            Some(identity) => self.store.find_user(&identity.user_id).await,
            None => Ok(None),
        }
    }

    /// Creates a checked user, hashing their password first; the new user's id, or which of
    /// username and e-mail another user holds.
    pub(crate) async fn create(&self, checked: CheckedCreation, now: i64) -> Result<(String, Creation), WriteError> {
        let CheckedCreation { mut user, password } = checked;
        if let Some(password) = password {
            user.password_hash = Some(hash_password(password).await?);
        }
        let created = self.store.create_user(&user, now).await?;
        Ok((user.id, created))
    }

    /// Sets a user's password; false when there is no such user.
    pub(crate) async fn reset_password(&self, user_id: &str, new: NewPassword, now: i64) -> Result<bool, WriteError> {
        let hash = hash_password(new.password).await?;
        Ok(self.store.set_password(user_id, &hash, new.temporary, now).await?)
    }

    /// Applies an administrator's partial update.
    pub(crate) async fn update(
        &self,
        user_id: &str,
        update: UserUpdate,
        now: i64,
    ) -> Result<Result<ChangeWrite, Invalid>, StoreError> {
        let Some(stored) = self.store.find_directory_user(user_id).await? else {
            return Ok(Ok(ChangeWrite::NotFound));
        };
        let changes = match update.merged(&stored) {
            Ok(changes) => changes,
            Err(refused) => return Ok(Err(refused)),
        };
        Ok(Ok(self.store.update_directory_user(user_id, &changes, now).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> SearchParams {
        serde_urlencoded::from_str(query).expect("parameters parse")
    }

    /// The pairs a `q` reads as, or words of the refusal.
    type Expected = Result<&'static [(&'static str, &'static str)], &'static str>;

    #[test]
    fn q_pairs_are_read_as_keycloak_reads_them() {
        let cases: [(&str, Expected); 8] = [
            ("github_id:583231", Ok(&[("github_id", "583231")])),
            ("a:1 b:2", Ok(&[("a", "1"), ("b", "2")])),
            ("a:1 a:2", Ok(&[("a", "2")])),
            ("\"full name\":\"Ann Lee\"", Ok(&[("full name", "Ann Lee")])),
            ("loose a:1", Ok(&[("a", "1")])),
            ("a:\"x\\\"y\"", Ok(&[("a", "x\"y")])),
            ("a:", Err("no value")),
            ("a:\"open", Err("not closed")),
        ];
        for (q, expected) in cases {
            let parsed = parse_q(q);
            match expected {
                Ok(pairs) => {
                    let want: BTreeMap<String, String> =
                        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
                    assert_eq!(parsed, Ok(want), "q={q}");
                }
                Err(message) => assert!(parsed.is_err_and(|e| e.0.contains(message)), "q={q} must say {message}"),
            }
        }
    }

    #[test]
    fn search_wins_and_q_overrides_plain_parameters() {
        let search = params("search=bob&q=email:a@b.c&username=zed").read().expect("valid");
        assert_eq!(search.criteria, UserCriteria { search: Some("bob%".into()), ..UserCriteria::default() });
        let q = params("q=username:ann email:Ann@X.com&username=zed&email=other").read().expect("valid");
        assert_eq!(q.criteria.username.as_deref(), Some("%ann%"), "q's username wins over the plain one");
        assert_eq!(q.criteria.email_exact.as_deref(), Some("Ann@X.com"), "q=email: is the whole e-mail");
        assert_eq!(q.criteria.email, None, "and replaces the plain substring");
    }

    #[test]
    fn wildcards_are_escaped_and_exact_turns_substrings_off() {
        let criteria = params("username=a%25_b%5C&exact=TRUE").criteria().expect("valid");
        assert_eq!(criteria.username.as_deref(), Some("a\\%\\_b\\\\"));
        let criteria = params("firstName=a%25").criteria().expect("valid");
        assert_eq!(criteria.first_name.as_deref(), Some("%a\\%%"));
        assert_eq!(search_pattern("\"exact\""), "exact");
        assert_eq!(search_pattern("*mid*"), "%mid%");
        assert_eq!(search_pattern("pre"), "pre%");
    }

    #[test]
    fn bad_numbers_and_booleans_are_refused_and_large_pages_bounded() {
        for (query, message) in [
            ("max=-1", "`max`"),
            ("first=x", "`first`"),
            ("first=99999999999999999999", "`first`"),
            ("enabled=yes", "`enabled`"),
            ("briefRepresentation=1", "`briefRepresentation`"),
            ("q=a:1 b:2 c:3 d:4 e:5", "at most"),
        ] {
            let refused = params(query).read().expect_err(query);
            assert!(refused.0.contains(message), "{query}: {refused}");
        }
        let search = params("max=1000000&first=5&enabled=False&emailVerified=false").read().expect("valid");
        assert_eq!((search.max, search.first), (MAX_PAGE, 5));
        assert_eq!((search.criteria.enabled, search.criteria.email_verified), (Some(false), Some(false)));
        assert_eq!(params("").read().expect("valid").max, DEFAULT_PAGE);
    }

    #[test]
    fn attributes_are_bounded() {
        let many: BTreeMap<String, Vec<String>> =
            (0..=MAX_ATTRIBUTE_NAMES).map(|i| (format!("a{i}"), vec!["v".to_owned()])).collect();
        assert!(checked_attributes(&many).is_err(), "too many names");
        let long = BTreeMap::from([("a".to_owned(), vec!["x".repeat(MAX_ATTRIBUTE_VALUE_LENGTH + 1)])]);
        assert!(checked_attributes(&long).is_err(), "too long a value");
        let own = BTreeMap::from([("email".to_owned(), vec!["x".to_owned()]), ("b".to_owned(), vec!["1".to_owned()])]);
        assert_eq!(
            checked_attributes(&own).expect("valid"),
            vec![AttributeValue { name: "b".into(), value: "1".into() }]
        );
    }
}
