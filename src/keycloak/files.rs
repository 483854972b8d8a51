//! Finding the files of a realm export and reading their users one at a time.
//!
//! `kc.sh export --users same_file` writes `{realm}-realm.json` with the users inline (or one
//! file with `--file`); `--users different_files` writes `{realm}-realm.json` without users
//! plus `{realm}-users-0.json`, `-1`, … each `{"realm": …, "users": […]}`. A file is parsed
//! as a stream: users are handed on as they are read, so memory holds one user, not a file.

use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::representation::UserRepresentation;

/// Why an export cannot be read; each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a Keycloak realm export: {message}")]
    Malformed { path: PathBuf, message: String },
    #[error(
        "{path} is an export of realm `{found}`, but the broker serves realm `{expected}` (realm.name): export realm \
         `{expected}` from Keycloak (`kc.sh export --realm {expected}`), or set realm.name"
    )]
    WrongRealm { path: PathBuf, found: String, expected: String },
    #[error(
        "{dir} holds no `{expected}-realm.json`{found}: give the directory `kc.sh export --dir` wrote for realm `{expected}` (realm.name), or one realm file"
    )]
    NoRealmFile { dir: PathBuf, expected: String, found: String },
}

/// The files of one realm's export, the realm file first, then its users files in order.
pub fn export_files(path: &Path, realm: &str) -> Result<Vec<PathBuf>, ExportError> {
    let unreadable = |source| ExportError::Unreadable { path: path.to_owned(), source };
    let metadata = std::fs::metadata(path).map_err(unreadable)?;
    if !metadata.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut realm_files = Vec::new();
    let mut users_files = Vec::new();
    let users_prefix = format!("{realm}-users-");
    for entry in std::fs::read_dir(path).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(realm_name) = name.strip_suffix("-realm.json") {
            realm_files.push(realm_name.to_owned());
        } else if let Some(number) = name.strip_prefix(&users_prefix).and_then(|rest| rest.strip_suffix(".json"))
            && let Ok(number) = number.parse::<u64>()
        {
            users_files.push((number, entry.path()));
        }
    }
    if !realm_files.iter().any(|name| name == realm) {
        realm_files.sort();
        let found = if realm_files.is_empty() {
            String::new()
        } else {
            format!(
                " (it holds the export of {})",
                realm_files.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")
            )
        };
        return Err(ExportError::NoRealmFile { dir: path.to_owned(), expected: realm.to_owned(), found });
    }
    users_files.sort();
    let mut files = vec![path.join(format!("{realm}-realm.json"))];
    files.extend(users_files.into_iter().map(|(_, path)| path));
    Ok(files)
}

/// Reads one export file, calling `on_user` with each user as it is parsed, and returns the
/// realm it names (`None` when it names none). An error from `on_user` stops the reading.
pub fn read_users(
    path: &Path,
    on_user: &mut dyn FnMut(UserRepresentation) -> Result<(), String>,
) -> Result<Option<String>, ExportError> {
    let file = File::open(path).map_err(|source| ExportError::Unreadable { path: path.to_owned(), source })?;
    let mut deserializer = serde_json::Deserializer::from_reader(BufReader::with_capacity(256 * 1024, file));
    let realm = ExportFile { on_user }
        .deserialize(&mut deserializer)
        .and_then(|realm| deserializer.end().map(|()| realm))
        .map_err(|err| ExportError::Malformed { path: path.to_owned(), message: err.to_string() })?;
    Ok(realm)
}

/// The top-level object of an export file: `realm` is kept, `users` streamed, the rest skipped.
struct ExportFile<'a> {
    on_user: &'a mut dyn FnMut(UserRepresentation) -> Result<(), String>,
}

impl<'de> DeserializeSeed<'de> for ExportFile<'_> {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ExportFile<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with `realm` and `users`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut realm = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "realm" => realm = map.next_value::<Option<String>>()?,
                "users" => map.next_value_seed(Users { on_user: &mut *self.on_user })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(realm)
    }
}

struct Users<'a> {
    on_user: &'a mut dyn FnMut(UserRepresentation) -> Result<(), String>,
}

impl<'de> DeserializeSeed<'de> for Users<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Users<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`users` as a list of user objects")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(user) = seq.next_element::<UserRepresentation>()? {
            (self.on_user)(user).map_err(de::Error::custom)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ib_kc_files_{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn users_are_streamed_and_other_keys_skipped_whatever_their_order() {
        let dir = temp_dir();
        let path = write(
            &dir,
            "r.json",
            r#"{"id":"x","users":[{"id":"1","username":"a","credentials":[{"secretData":"{}"}]},{"id":"2","username":"b"}],
               "clients":[{"clientId":"c"}],"realm":"allhands","enabled":true}"#,
        );
        let mut seen = Vec::new();
        let realm = read_users(&path, &mut |user| {
            seen.push(user.id.unwrap_or_default());
            Ok(())
        })
        .unwrap();
        assert_eq!(realm.as_deref(), Some("allhands"));
        assert_eq!(seen, ["1", "2"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_directory_lists_the_realm_file_then_users_files_by_number() {
        let dir = temp_dir();
        for name in [
            "allhands-users-10.json",
            "allhands-users-2.json",
            "allhands-realm.json",
            "master-realm.json",
            "master-users-0.json",
        ] {
            write(&dir, name, "{}");
        }
        let files = export_files(&dir, "allhands").unwrap();
        let names: Vec<String> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["allhands-realm.json", "allhands-users-2.json", "allhands-users-10.json"]);
        let other = export_files(&dir, "other").unwrap_err().to_string();
        assert!(other.contains("`allhands`") && other.contains("`master`"), "{other}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
