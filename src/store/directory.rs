//! The user directory as Keycloak's admin API reads and changes it: user searches with their
//! attributes, a page at a time, and the admin's writes to users.
//!
//! Which index serves each search:
//! - one attribute (`q=azure_devops_id:…`, OpenHands' lookup): `user_attributes_value`
//!   `(name, lower(value))`, then the users' primary key;
//! - one whole e-mail (`q=email:…`): `users_email` `(lower(email))`;
//! - no condition at all (OpenHands walking every user, `first`/`max` a page at a time): its own
//!   queries on `users_username_id` `(username, id)`, the listing's order. A page starts after
//!   the last user of the page before it, where this process served that page and no user was
//!   inserted, deleted or renamed since (`user_counts.changes`, migration 0013), so a deep page
//!   costs what the first does; otherwise (another replica served it, or users changed) the
//!   offset is counted on the index alone, then remembered for the next page;
//! - anything else: the general query, whose conditions are all optional; Postgres plans it
//!   with the values at hand (`idpAlias` + `idpUserId` use `federated_identities`' unique
//!   `(alias, subject)`, attributes `user_attributes_value`), and a page walks
//!   `users_username_id` in order. Substring conditions (`%x%`) scan, bounded by the page.
//!
//! Counting every user reads `user_counts`, which triggers keep exact (migration 0013); counts
//! with conditions run the search's conditions on the same indexes.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::attributes::{Replace, write_attributes};
use super::{Backend, IdentityKey, Store, StoreError, UserRow};

/// The most attribute conditions one search may carry (`q` pairs beyond the user's fields).
pub(crate) const MAX_ATTRIBUTE_FILTERS: usize = 4;

/// Page ends remembered, the newest: a walk needs only where its next page starts, so a thousand
/// walks at once keep theirs.
const PAGE_ENDS: usize = 1024;

/// One value of a user's attribute; a name's values come in their stored order.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AttributeValue {
    pub name: String,
    pub value: String,
}

/// A user with attributes, as a search page or a read returns it.
#[derive(Debug, Clone)]
pub struct DirectoryUser {
    pub user: UserRow,
    pub attributes: Vec<AttributeValue>,
}

/// What a search asks for; every field given must hold (AND). Patterns are SQL `LIKE`
/// patterns with `\` as the escape character, matched ignoring case.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct UserCriteria {
    pub(crate) id: Option<String>,
    /// Username, e-mail, first or last name: any one matching.
    pub(crate) search: Option<String>,
    pub(crate) username: Option<String>,
    pub(crate) email: Option<String>,
    /// The whole e-mail, ignoring case.
    pub(crate) email_exact: Option<String>,
    pub(crate) first_name: Option<String>,
    pub(crate) last_name: Option<String>,
    pub(crate) email_verified: Option<bool>,
    pub(crate) enabled: Option<bool>,
    pub(crate) idp_alias: Option<String>,
    pub(crate) idp_user_id: Option<String>,
    /// Attribute name (exact) and value (exact, ignoring case); at most [`MAX_ATTRIBUTE_FILTERS`].
    pub(crate) attributes: Vec<(String, String)>,
}

impl UserCriteria {
    /// The search is one attribute and nothing else: the lookup by provider user id.
    fn only_attribute(&self) -> Option<&(String, String)> {
        let rest = UserCriteria { attributes: Vec::new(), ..self.clone() };
        (self.attributes.len() == 1 && rest == UserCriteria::default()).then(|| &self.attributes[0])
    }

    /// The search asks for every user: no condition, or Keycloak's `search=*` alone (a username
    /// is never NULL, so `LIKE '%'` holds for all).
    fn is_everyone(&self) -> bool {
        let rest = UserCriteria { search: None, ..self.clone() };
        rest == UserCriteria::default() && self.search.as_deref().is_none_or(|search| search == "%")
    }

    /// The search is one whole e-mail and nothing else.
    fn only_email(&self) -> Option<&str> {
        let rest = UserCriteria { email_exact: None, ..self.clone() };
        (rest == UserCriteria::default()).then_some(self.email_exact.as_deref()).flatten()
    }

    fn attribute(&self, index: usize) -> (Option<&str>, Option<&str>) {
        match self.attributes.get(index) {
            Some((name, value)) => (Some(name), Some(value)),
            None => (None, None),
        }
    }
}

/// The admin's changes to a user, already merged with what is stored.
#[derive(Debug, Clone)]
pub(crate) struct UserChanges {
    pub(crate) email: Option<String>,
    pub(crate) email_verified: bool,
    pub(crate) first_name: Option<String>,
    pub(crate) last_name: Option<String>,
    pub(crate) full_name: Option<String>,
    pub(crate) enabled: bool,
    /// `None` keeps the attributes; `Some` replaces them all.
    pub(crate) attributes: Option<Vec<AttributeValue>>,
}

/// What a change to a user came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChangeWrite {
    Done,
    NotFound,
    /// Another user has that e-mail.
    EmailTaken,
}

/// What a deleted user left behind in this process's memory: their identities and sessions.
#[derive(Debug, Default)]
pub(crate) struct DeletedUser {
    pub(crate) aliases: Vec<String>,
    pub(crate) session_ids: Vec<String>,
}

/// Where pages of the listing of every user ended, by the position that follows each
/// (`first + users served`), so that a walk's next page begins after the last user shown instead
/// of counting its way past every user before it. In this process only: a page served by another
/// replica is read by offset once. The oldest end goes first: a cache that keeps what is read
/// twice (`quick_cache`'s) dropped each walk's newest end, read once, before the walk came back
/// for it, and 32 walks of a million users fell back to counting every time.
#[derive(Debug, Default)]
pub(crate) struct PageEnds(Mutex<Remembered>);

#[derive(Debug, Default)]
struct Remembered {
    ends: HashMap<i64, PageEnd>,
    /// Positions in the order their ends were remembered.
    order: VecDeque<i64>,
}

impl PageEnds {
    fn get(&self, position: i64) -> Option<PageEnd> {
        self.0.lock().ok()?.ends.get(&position).cloned()
    }

    fn insert(&self, position: i64, end: PageEnd) {
        let Ok(mut remembered) = self.0.lock() else { return };
        if remembered.ends.insert(position, end).is_none() {
            remembered.order.push_back(position);
        }
        while remembered.order.len() > PAGE_ENDS {
            if let Some(oldest) = remembered.order.pop_front() {
                remembered.ends.remove(&oldest);
            }
        }
    }
}

/// The last user of a page, and `user_counts.changes` when it was read: while it is the same, no
/// user was inserted, deleted or renamed, so the users after this one are exactly those after
/// the page's position.
#[derive(Debug, Clone)]
struct PageEnd {
    changes: i64,
    username: String,
    id: String,
}

macro_rules! directory_columns {
    () => {
        "u.id, u.username, u.email, u.email_verified, u.first_name, u.last_name, u.full_name, u.enabled, u.created_at"
    };
}

/// The page's users with their attributes, one row per value (users without any: one row of
/// NULLs), in the page's order.
macro_rules! page_with_attributes {
    ($where:expr, $limit:literal, $offset:literal) => {
        concat!(
            "SELECT p.id, p.username, p.email, p.email_verified, p.first_name, p.last_name, p.full_name, p.enabled,
                    p.created_at,
                    a.name AS attribute_name, a.value AS attribute_value
             FROM (SELECT ",
            directory_columns!(),
            " FROM users u WHERE ",
            $where,
            " ORDER BY u.username, u.id LIMIT ",
            $limit,
            " OFFSET ",
            $offset,
            ") p LEFT JOIN user_attributes a ON a.user_id = p.id
             ORDER BY p.username, p.id, a.name, a.position"
        )
    };
}

/// A page of every user from `$where` on (`u.username`, `u.id` against `$2`, `$3`), `$1` of them,
/// with the `changes` of `user_counts` read in the same statement, so from the same snapshot.
/// `$attributes` joins each user's attribute values.
macro_rules! everyone_page {
    ($where:expr, $attributes:expr) => {
        concat!(
            "SELECT p.id, p.username, p.email, p.email_verified, p.first_name, p.last_name, p.full_name, p.enabled,
                    p.created_at,
                    a.name AS attribute_name, a.value AS attribute_value,
                    (SELECT CAST(COALESCE(SUM(c.changes), 0) AS BIGINT) FROM user_counts c) AS changes
             FROM (SELECT ",
            directory_columns!(),
            " FROM users u WHERE ",
            $where,
            " ORDER BY u.username, u.id LIMIT $1) p ",
            $attributes,
            " ORDER BY p.username, p.id, a.name, a.position"
        )
    };
}

/// A page's attribute values, on Postgres fetched for each user of the page by the primary key
/// (a `LATERAL` join fenced by `OFFSET 0`): the plan Postgres keeps for the statement cannot
/// know `max`, guesses a tenth of the table, and would otherwise hash-join every attribute of
/// every user (25 ms at 100,000 users instead of 1). SQLite has no `LATERAL`, nor the need.
macro_rules! page_attributes_postgres {
    () => {
        "LEFT JOIN LATERAL (SELECT a.name, a.value, a.position FROM user_attributes a
                            WHERE a.user_id = p.id OFFSET 0) a ON true"
    };
}
macro_rules! page_attributes_sqlite {
    () => {
        "LEFT JOIN user_attributes a ON a.user_id = p.id"
    };
}

/// From the `$2`th user on, counted on the index `(username, id)` alone.
macro_rules! counted {
    () => {
        "(u.username, u.id) >= (SELECT s.username, s.id FROM users s ORDER BY s.username, s.id LIMIT 1 OFFSET $2)"
    };
}

macro_rules! attribute_where {
    () => {
        "u.id IN (SELECT a.user_id FROM user_attributes a WHERE a.name = $1 AND lower(a.value) = lower($2))"
    };
}

macro_rules! email_where {
    () => {
        "lower(u.email) = lower($1)"
    };
}

macro_rules! general_where {
    () => {
        r"($1 IS NULL OR u.id = $1)
          AND ($2 IS NULL OR lower(u.username) LIKE lower($2) ESCAPE '\' OR lower(u.email) LIKE lower($2) ESCAPE '\'
               OR lower(u.first_name) LIKE lower($2) ESCAPE '\' OR lower(u.last_name) LIKE lower($2) ESCAPE '\')
          AND ($3 IS NULL OR lower(u.username) LIKE lower($3) ESCAPE '\')
          AND ($4 IS NULL OR lower(u.email) LIKE lower($4) ESCAPE '\')
          AND ($5 IS NULL OR lower(u.email) = lower($5))
          AND ($6 IS NULL OR lower(u.first_name) LIKE lower($6) ESCAPE '\')
          AND ($7 IS NULL OR lower(u.last_name) LIKE lower($7) ESCAPE '\')
          AND ($8 IS NULL OR u.email_verified = $8)
          AND ($9 IS NULL OR u.enabled = $9)
          AND ($10 IS NULL OR u.id IN (SELECT f.user_id FROM federated_identities f
                                       WHERE f.alias = $10 AND ($11 IS NULL OR f.subject = $11)))
          AND ($11 IS NULL OR u.id IN (SELECT f.user_id FROM federated_identities f WHERE f.subject = $11))
          AND ($12 IS NULL OR u.id IN (SELECT a.user_id FROM user_attributes a WHERE a.name = $12 AND lower(a.value) = lower($13)))
          AND ($14 IS NULL OR u.id IN (SELECT a.user_id FROM user_attributes a WHERE a.name = $14 AND lower(a.value) = lower($15)))
          AND ($16 IS NULL OR u.id IN (SELECT a.user_id FROM user_attributes a WHERE a.name = $16 AND lower(a.value) = lower($17)))
          AND ($18 IS NULL OR u.id IN (SELECT a.user_id FROM user_attributes a WHERE a.name = $18 AND lower(a.value) = lower($19)))"
    };
}

/// A row of a page: the user's columns and one attribute value, if any.
#[derive(sqlx::FromRow)]
struct PageRow {
    #[sqlx(flatten)]
    user: UserRow,
    attribute_name: Option<String>,
    attribute_value: Option<String>,
}

/// A row of a page of every user, with the `changes` it was read at.
#[derive(sqlx::FromRow)]
struct EveryonePageRow {
    #[sqlx(flatten)]
    row: PageRow,
    changes: i64,
}

/// Folds a page's rows (one per attribute value, in page order) into users.
fn fold_page(rows: Vec<PageRow>) -> Vec<DirectoryUser> {
    let mut users: Vec<DirectoryUser> = Vec::new();
    for row in rows {
        let attribute = match (row.attribute_name, row.attribute_value) {
            (Some(name), Some(value)) => Some(AttributeValue { name, value }),
            _ => None,
        };
        match users.last_mut() {
            Some(last) if last.user.id == row.user.id => last.attributes.extend(attribute),
            _ => users.push(DirectoryUser { user: row.user, attributes: attribute.into_iter().collect() }),
        }
    }
    users
}

type GeneralQuery<'q, O> = sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>;
type GeneralScalar<'q> = sqlx::query::QueryScalar<'q, sqlx::Any, i64, sqlx::any::AnyArguments<'q>>;

/// Binds the general query's nineteen conditions in order.
macro_rules! bind_criteria {
    ($query:expr, $criteria:expr) => {{
        let c = $criteria;
        let (n1, v1) = c.attribute(0);
        let (n2, v2) = c.attribute(1);
        let (n3, v3) = c.attribute(2);
        let (n4, v4) = c.attribute(3);
        $query
            .bind(c.id.as_deref())
            .bind(c.search.as_deref())
            .bind(c.username.as_deref())
            .bind(c.email.as_deref())
            .bind(c.email_exact.as_deref())
            .bind(c.first_name.as_deref())
            .bind(c.last_name.as_deref())
            .bind(c.email_verified.map(i64::from))
            .bind(c.enabled.map(i64::from))
            .bind(c.idp_alias.as_deref())
            .bind(c.idp_user_id.as_deref())
            .bind(n1)
            .bind(v1)
            .bind(n2)
            .bind(v2)
            .bind(n3)
            .bind(v3)
            .bind(n4)
            .bind(v4)
    }};
}

impl Store {
    /// Users matching `criteria`, ordered by username, `max` of them from the `first`th.
    pub(crate) async fn search_users(
        &self,
        criteria: &UserCriteria,
        first: i64,
        max: i64,
    ) -> Result<Vec<DirectoryUser>, StoreError> {
        if criteria.is_everyone() {
            return self.everyone(first, max).await;
        }
        let rows: Vec<PageRow> = if let Some((name, value)) = criteria.only_attribute() {
            sqlx::query_as(page_with_attributes!(attribute_where!(), "$3", "$4"))
                .bind(name)
                .bind(value)
                .bind(max)
                .bind(first)
                .fetch_all(&self.pool)
                .await?
        } else if let Some(email) = criteria.only_email() {
            sqlx::query_as(page_with_attributes!(email_where!(), "$2", "$3"))
                .bind(email)
                .bind(max)
                .bind(first)
                .fetch_all(&self.pool)
                .await?
        } else {
            let query: GeneralQuery<'_, PageRow> =
                sqlx::query_as(page_with_attributes!(general_where!(), "$20", "$21"));
            bind_criteria!(query, criteria).bind(max).bind(first).fetch_all(&self.pool).await?
        };
        Ok(fold_page(rows))
    }

    /// How many users match `criteria`.
    pub(crate) async fn count_users(&self, criteria: &UserCriteria) -> Result<i64, StoreError> {
        let count = if criteria.is_everyone() {
            sqlx::query_scalar("SELECT CAST(COALESCE(SUM(users), 0) AS BIGINT) FROM user_counts")
                .fetch_one(&self.pool)
                .await?
        } else if let Some((name, value)) = criteria.only_attribute() {
            // The attribute's index alone: each value's row has its user (a foreign key), so the
            // users' table need not be joined (a third of the time at 100,000 users).
            let sql = "SELECT COUNT(DISTINCT a.user_id) FROM user_attributes a
                       WHERE a.name = $1 AND lower(a.value) = lower($2)";
            sqlx::query_scalar(sql).bind(name).bind(value).fetch_one(&self.pool).await?
        } else if let Some(email) = criteria.only_email() {
            sqlx::query_scalar(concat!("SELECT COUNT(*) FROM users u WHERE ", email_where!()))
                .bind(email)
                .fetch_one(&self.pool)
                .await?
        } else {
            let query: GeneralScalar<'_> =
                sqlx::query_scalar(concat!("SELECT COUNT(*) FROM users u WHERE ", general_where!()));
            bind_criteria!(query, criteria).fetch_one(&self.pool).await?
        };
        Ok(count)
    }

    /// Every user, ordered by username then id, `max` of them from the `first`th: after the end
    /// of the page before when this process remembers it and no user moved since, otherwise
    /// from the `first`th user counted on the index alone.
    async fn everyone(&self, first: i64, max: i64) -> Result<Vec<DirectoryUser>, StoreError> {
        let after_sql = match self.backend {
            Backend::Postgres => everyone_page!("(u.username, u.id) > ($2, $3)", page_attributes_postgres!()),
            Backend::Sqlite => everyone_page!("(u.username, u.id) > ($2, $3)", page_attributes_sqlite!()),
        };
        let mut rows: Vec<EveryonePageRow> = Vec::new();
        if let Some(end) = self.pages.get(first) {
            rows = sqlx::query_as(after_sql).bind(max).bind(&end.username).bind(&end.id).fetch_all(&self.pool).await?;
            // Users moved since: the page must be counted again. An empty page may be one too.
            if rows.first().is_none_or(|row| row.changes != end.changes) {
                rows.clear();
            }
        }
        if rows.is_empty() {
            let from_sql = match self.backend {
                Backend::Postgres => everyone_page!(counted!(), page_attributes_postgres!()),
                Backend::Sqlite => everyone_page!(counted!(), page_attributes_sqlite!()),
            };
            rows = sqlx::query_as(from_sql).bind(max).bind(first).fetch_all(&self.pool).await?;
        }
        let changes = rows.first().map(|row| row.changes);
        let users = fold_page(rows.into_iter().map(|row| row.row).collect());
        if let (Some(changes), Some(last)) = (changes, users.last()) {
            let end = PageEnd { changes, username: last.user.username.clone(), id: last.user.id.clone() };
            self.pages.insert(first.saturating_add(users.len() as i64), end);
        }
        Ok(users)
    }

    /// One user with their attributes.
    pub(crate) async fn find_directory_user(&self, user_id: &str) -> Result<Option<DirectoryUser>, StoreError> {
        let user: Option<UserRow> =
            sqlx::query_as(concat!("SELECT ", directory_columns!(), " FROM users u WHERE u.id = $1"))
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        let Some(user) = user else {
            return Ok(None);
        };
        let attributes =
            sqlx::query_as("SELECT name, value FROM user_attributes WHERE user_id = $1 ORDER BY name, position")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(Some(DirectoryUser { user, attributes }))
    }

    /// Writes the admin's changes to a user in one transaction; an e-mail another user has
    /// (ignoring case) is refused and nothing changes.
    pub(crate) async fn update_directory_user(
        &self,
        user_id: &str,
        changes: &UserChanges,
        now: i64,
    ) -> Result<ChangeWrite, StoreError> {
        let mut tx = self.begin_write().await?;
        if let Some(email) = &changes.email {
            let holder: Option<String> =
                sqlx::query_scalar("SELECT id FROM users WHERE lower(email) = lower($1) AND id <> $2 LIMIT 1")
                    .bind(email)
                    .bind(user_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if holder.is_some() {
                return Ok(ChangeWrite::EmailTaken);
            }
        }
        let updated = sqlx::query(
            "UPDATE users SET email = $2, email_verified = $3, first_name = $4, last_name = $5, full_name = $6,
                 enabled = $7, updated_at = $8
             WHERE id = $1",
        )
        .bind(user_id)
        .bind(&changes.email)
        .bind(i64::from(changes.email_verified))
        .bind(&changes.first_name)
        .bind(&changes.last_name)
        .bind(&changes.full_name)
        .bind(i64::from(changes.enabled))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(ChangeWrite::NotFound);
        }
        if let Some(attributes) = &changes.attributes {
            let values = attributes.iter().map(|a| (a.name.as_str(), a.value.as_str()));
            write_attributes(&mut tx, self.backend, user_id, values, Replace::All).await?;
        }
        tx.commit().await?;
        self.forget_user(user_id).await?;
        Ok(ChangeWrite::Done)
    }

    /// Deletes a user; their identities, sealed tokens, sessions, codes and attributes go with
    /// them (the schema's cascades). `None` when there was no such user.
    pub(crate) async fn delete_directory_user(&self, user_id: &str) -> Result<Option<DeletedUser>, StoreError> {
        let mut tx = self.begin_write().await?;
        let aliases: Vec<String> = sqlx::query_scalar("SELECT alias FROM federated_identities WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?;
        let session_ids: Vec<String> = sqlx::query_scalar("SELECT id FROM sso_sessions WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM users WHERE id = $1").bind(user_id).execute(&mut *tx).await?;
        tx.commit().await?;
        if deleted.rows_affected() == 0 {
            return Ok(None);
        }
        self.forget_user_row(user_id);
        for alias in &aliases {
            self.forget_identity(IdentityKey { user_id, alias });
        }
        if let Some(cache) = &self.cache {
            for id in &session_ids {
                cache.forget_session(id);
            }
        }
        Ok(Some(DeletedUser { aliases, session_ids }))
    }

    /// The ids of a user's sessions not yet ended, browser and offline alike.
    pub(crate) async fn open_session_ids(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT id FROM sso_sessions WHERE user_id = $1 AND ended_at IS NULL")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Replaces a user's attributes; for tests that set up what sign-in would write.
    #[cfg(feature = "testing")]
    pub async fn set_user_attributes(&self, user_id: &str, attributes: &[AttributeValue]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let values = attributes.iter().map(|a| (a.name.as_str(), a.value.as_str()));
        write_attributes(&mut tx, self.backend, user_id, values, Replace::All).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Inserts users `from..=to` in one statement, for tests and benchmarks that need many:
    /// id `00000000-0000-4000-8000-1{i:011}`, username `{prefix}{i}`, e-mail
    /// `{prefix}{i}@example.test`, and the attributes OpenHands' realm maps,
    /// `identity_provider = azure_devops` and `azure_devops_id = {prefix}-sub-{i}`.
    #[cfg(feature = "testing")]
    pub async fn seed_users(&self, from: i64, to: i64, prefix: &str, now: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(concat!(
            "WITH RECURSIVE seq(i) AS (SELECT CAST($1 AS BIGINT) UNION ALL SELECT i + 1 FROM seq WHERE i < $2) ",
            "INSERT INTO users (id, username, email, email_verified, first_name, last_name, full_name, created_at, updated_at) ",
            "SELECT format('00000000-0000-4000-8000-%s', 100000000000 + i), format('%s%s', $3, i), ",
            "format('%s%s@example.test', $3, i), 1, 'Seed', format('User %s', i), NULL, $4, $4 FROM seq"
        ))
        .bind(from)
        .bind(to)
        .bind(prefix)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(concat!(
            "WITH RECURSIVE seq(i) AS (SELECT CAST($1 AS BIGINT) UNION ALL SELECT i + 1 FROM seq WHERE i < $2) ",
            "INSERT INTO user_attributes (user_id, name, position, value) ",
            "SELECT format('00000000-0000-4000-8000-%s', 100000000000 + i), 'azure_devops_id', 0, format('%s-sub-%s', $3, i) FROM seq ",
            "UNION ALL ",
            "SELECT format('00000000-0000-4000-8000-%s', 100000000000 + i), 'identity_provider', 0, 'azure_devops' FROM seq"
        ))
        .bind(from)
        .bind(to)
        .bind(prefix)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
