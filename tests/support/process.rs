//! The built `identity-broker` binary as a process of its own: free ports, a configuration
//! file, waiting until it is ready, and no process or file left behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::http::{install_crypto_provider, paths};

/// The binary Cargo built for these tests and benchmarks.
pub const BINARY: &str = env!("CARGO_BIN_EXE_identity-broker");

/// How long a starting broker may take until `/health/ready` answers 200.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How often readiness is asked: often, since the benchmarks report the time to ready.
const READY_POLL: Duration = Duration::from_millis(1);

/// A port nothing listens on at the moment of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The ports of a broker's three listeners.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub public: u16,
    pub internal: u16,
    pub management: u16,
}

impl Ports {
    pub fn free() -> Ports {
        Ports { public: free_port(), internal: free_port(), management: free_port() }
    }
}

/// A broker configuration file in a directory of its own, removed with it when dropped.
#[derive(Debug)]
pub struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigFile {
    pub fn write(text: &str) -> ConfigFile {
        let dir = std::env::temp_dir().join(format!("ib_process_{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("broker.toml");
        std::fs::write(&path, text).expect("config file");
        ConfigFile { dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory beside the file, for the process's working directory and its log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where a started broker's standard error goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// A log file beside its configuration, shown if it does not become ready.
    LogFile,
    /// This process's own, for whoever watches a benchmark.
    #[allow(dead_code, reason = "the benchmarks' alone")]
    Inherit,
}

/// `identity-broker start-dev` from the built binary; killed when dropped, so that a test or
/// benchmark that panics leaves no server running.
#[derive(Debug)]
pub struct BrokerProcess {
    child: Child,
    pub public: String,
    pub internal: String,
    pub management: String,
    /// From spawning the process to `/health/ready` answering 200.
    #[allow(dead_code, reason = "the benchmarks report it; the tests do not")]
    pub ready_after: Duration,
    _config: ConfigFile,
}

impl BrokerProcess {
    /// Starts the binary with `config`, whose listeners must bind `ports`, and `env` on top of
    /// this process's environment, and waits until it is ready.
    pub async fn start(config: &str, ports: Ports, env: &[(&str, &str)], stderr: Stderr) -> BrokerProcess {
        Self::try_start(config, ports, env, stderr).await.unwrap_or_else(|why| panic!("{why}"))
    }

    /// As [`BrokerProcess::start`], saying why when the process does not become ready.
    pub async fn try_start(
        config: &str,
        ports: Ports,
        env: &[(&str, &str)],
        stderr: Stderr,
    ) -> Result<BrokerProcess, String> {
        let config = ConfigFile::write(config);
        let log_path = config.dir().join("broker.log");
        let stderr = match stderr {
            Stderr::LogFile => Stdio::from(std::fs::File::create(&log_path).expect("log file")),
            Stderr::Inherit => Stdio::inherit(),
        };
        let started = Instant::now();
        let child = Command::new(BINARY)
            .args(["start-dev", "--config"])
            .arg(config.path())
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .current_dir(config.dir())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("the broker binary starts");
        let mut process = BrokerProcess {
            child,
            public: format!("http://127.0.0.1:{}", ports.public),
            internal: format!("http://127.0.0.1:{}", ports.internal),
            management: format!("http://127.0.0.1:{}", ports.management),
            ready_after: Duration::ZERO,
            _config: config,
        };
        install_crypto_provider();
        let probe = reqwest::Client::new();
        let ready = format!("{}{}", process.management, paths::HEALTH_READY);
        loop {
            if let Ok(response) = probe.get(&ready).send().await
                && response.status() == reqwest::StatusCode::OK
            {
                break;
            }
            let exited = process.child.try_wait().expect("the broker process can be waited for");
            if exited.is_some() || started.elapsed() >= READY_DEADLINE {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let how = exited.map_or(format!("within {READY_DEADLINE:?}"), |status| format!("({status})"));
                return Err(format!("the broker process did not become ready {how}:\n{log}"));
            }
            tokio::time::sleep(READY_POLL).await;
        }
        process.ready_after = started.elapsed();
        Ok(process)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to end; graceful shutdown should exit 0.
    pub fn terminate(&mut self) -> ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        self.child.wait().expect("the broker process ends")
    }
}

impl BrokerProcess {
    /// SIGKILL, as the OOM killer or a lost node ends a process: nothing of its shutdown runs.
    #[allow(dead_code, reason = "the tests' alone")]
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("the killed process is reaped");
    }

    /// Sends SIGTERM and waits, without blocking the caller's runtime (which may serve what the
    /// process is talking to), for at most `limit`; `None` when it is still running then.
    #[allow(dead_code, reason = "the tests' alone")]
    pub async fn terminate_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("the broker process can be waited for") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// What the process wrote to its log file so far (with [`Stderr::LogFile`]).
    #[allow(dead_code, reason = "the tests' alone")]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._config.dir().join("broker.log")).unwrap_or_default()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
