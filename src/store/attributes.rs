//! A user's attributes as Keycloak keeps them: each name holds a list of values in order,
//! stored one row per value with its position. Sign-in and the admin API write through
//! [`write_attributes`]; an import chunk writes all its users' values in one statement
//! (`ImportBatch::write`), numbering positions the same way.

use sqlx::AnyConnection;

use super::{Backend, StoreError};

/// Which of the user's stored attributes the values written replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Replace {
    /// Every attribute of the user (the admin API's update).
    All,
    /// Only the names written: a sign-in's mapped attributes leave an administrator's alone.
    SameNames,
}

/// One value as the statements' JSON parameter carries it.
#[derive(serde::Serialize)]
struct Row<'a> {
    name: &'a str,
    position: i64,
    value: &'a str,
}

/// Writes `values` (`(name, value)`, each name's values together and in order) as the user's
/// attributes, replacing what `replace` says, in at most two statements whatever their
/// number: the list travels as one JSON parameter, unpacked by each database's own JSON
/// functions (as audit batches do).
pub(super) async fn write_attributes<'a>(
    conn: &mut AnyConnection,
    backend: Backend,
    user_id: &str,
    values: impl IntoIterator<Item = (&'a str, &'a str)>,
    replace: Replace,
) -> Result<(), StoreError> {
    let mut rows: Vec<Row<'a>> = Vec::new();
    for (name, value) in values {
        let position = match rows.last() {
            Some(previous) if previous.name == name => previous.position + 1,
            _ => 0,
        };
        rows.push(Row { name, position, value });
    }
    match replace {
        Replace::All => {
            sqlx::query("DELETE FROM user_attributes WHERE user_id = $1").bind(user_id).execute(&mut *conn).await?;
        }
        Replace::SameNames if rows.is_empty() => {}
        Replace::SameNames => {
            let mut names: Vec<&str> = rows.iter().map(|row| row.name).collect();
            names.dedup();
            let sql = match backend {
                Backend::Postgres => {
                    "DELETE FROM user_attributes WHERE user_id = $1 AND name IN (SELECT json_array_elements_text($2::json))"
                }
                Backend::Sqlite => {
                    "DELETE FROM user_attributes WHERE user_id = $1 AND name IN (SELECT value FROM json_each($2))"
                }
            };
            sqlx::query(sql).bind(user_id).bind(serde_json::to_string(&names)?).execute(&mut *conn).await?;
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let sql = match backend {
        Backend::Postgres => {
            "INSERT INTO user_attributes (user_id, name, position, value)
             SELECT $1, a.name, a.position, a.value
             FROM json_to_recordset($2::json) AS a(name TEXT, position BIGINT, value TEXT)"
        }
        Backend::Sqlite => {
            "INSERT INTO user_attributes (user_id, name, position, value)
             SELECT $1, value ->> 'name', value ->> 'position', value ->> 'value' FROM json_each($2)"
        }
    };
    sqlx::query(sql).bind(user_id).bind(serde_json::to_string(&rows)?).execute(&mut *conn).await?;
    Ok(())
}
