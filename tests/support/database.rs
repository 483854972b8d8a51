//! A database that exists for one test or benchmark run and is dropped after it.

use sqlx::Connection as _;
use uuid::Uuid;

/// The loopback Postgres every test and benchmark creates its databases in.
pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A fresh, empty database; dropping it removes it.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    backend: Backend,
    name: String,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let name = format!("ib_test_{}", Uuid::new_v4().simple());
        let url = match backend {
            Backend::Postgres => {
                let mut admin = sqlx::PgConnection::connect(ADMIN_URL).await.expect("Postgres at 127.0.0.1:5432");
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create database");
                format!("postgres://postgres@127.0.0.1:5432/{name}")
            }
            Backend::Sqlite => {
                format!("sqlite://{}?mode=rwc", std::env::temp_dir().join(format!("{name}.db")).display())
            }
        };
        TestDb { url, backend, name }
    }

    /// A database the test runs itself (a private cluster it may stop): used, never dropped.
    pub fn external(url: String) -> TestDb {
        TestDb { url, backend: Backend::Postgres, name: String::new() }
    }

    /// The database's name, as Postgres shows it in its backends' process titles.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return;
        }
        match self.backend {
            Backend::Postgres => {
                let name = self.name.clone();
                // Drop runs inside the caller's runtime; a thread with its own runtime may block.
                let _ = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                    runtime.block_on(async {
                        if let Ok(mut admin) = sqlx::PgConnection::connect(ADMIN_URL).await {
                            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut admin)
                                .await;
                        }
                    });
                })
                .join();
            }
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("{}.db", self.name));
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
        }
    }
}
