//! A Postgres cluster of a test's own, on a free port, that the test may stop and start again:
//! faults are injected here, never on the shared server at 127.0.0.1:5432.

use std::path::PathBuf;
use std::process::{Command, Output};

use super::process::free_port;

/// Debian's Postgres 15 programs.
const BIN: &str = "/usr/lib/postgresql/15/bin";
/// util-linux's `runuser`, by its full path: a root shell's PATH may lack the sbin folders.
const RUNUSER: &str = "/usr/sbin/runuser";

/// A running private cluster; dropping it stops it and removes its files.
#[derive(Debug)]
pub struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    /// Creates and starts a cluster with trust authentication for `postgres` on loopback.
    pub fn start() -> PrivatePostgres {
        let dir = std::env::temp_dir().join(format!("ib_pg_{}", uuid::Uuid::new_v4().simple()));
        let cluster = PrivatePostgres { dir, port: free_port() };
        let data = cluster.data();
        cluster.run("initdb", &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"]);
        cluster.start_again();
        cluster
    }

    /// `postgres://` URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `postgres://` URL of `database` for `role`, without a password.
    pub fn url_for(&self, role: &str, database: &str) -> String {
        format!("postgres://{role}@127.0.0.1:{}/{database}", self.port)
    }

    /// From now on TCP connections must give their role's password (SCRAM-SHA-256), as on a
    /// production server; restarts the server so that no connection sees the old rules. Roles
    /// that are to sign in need a password set before.
    pub fn require_passwords(&self) {
        let rules = "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n";
        std::fs::write(self.dir.join("pg_hba.conf"), rules).expect("write pg_hba.conf");
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
        self.start_again();
    }

    /// Stops the server at once, as a crash or a failover does: connections break mid-stream.
    pub fn stop_immediately(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }

    /// Starts the (stopped) server on the same port and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.data());
        let log = format!("{}/server.log", self.data());
        self.run("pg_ctl", &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "-t", "60", "start"]);
    }

    fn data(&self) -> String {
        self.dir.display().to_string()
    }

    /// Runs one of Postgres' programs, as the `postgres` user when this process is root
    /// (initdb and the server refuse root).
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let path = format!("{BIN}/{program}");
        let output = if is_root() {
            Command::new(RUNUSER).args(["-u", "postgres", "--", &path]).args(args).output()
        } else {
            Command::new(&path).args(args).output()
        }
        .unwrap_or_else(|err| panic!("cannot run {path}: {err}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let stop = [format!("{BIN}/pg_ctl"), "-D".into(), data, "-m".into(), "immediate".into(), "stop".into()];
        let _ = if is_root() {
            Command::new(RUNUSER).args(["-u", "postgres", "--"]).args(&stop).output()
        } else {
            Command::new(&stop[0]).args(&stop[1..]).output()
        };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}
