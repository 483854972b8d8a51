//! The Python tools the suite drives (python-keycloak, schemathesis, helm-python-sdk,
//! kubernetes-validate, aiosmtpd), in a virtual environment of the suite's own under `target/`,
//! made on first use from `tests/python/requirements.txt`: the README's one test command is all
//! a fresh clone needs.
//!
//! Several test binaries (and several tests of one binary) may start at once: a file lock
//! lets one of them build the environment while the others wait, and a stamp holding the
//! requirements it was built from tells later runs it is ready, or that it must be rebuilt.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const REQUIREMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/requirements.txt");

/// The ready environment's executables.
#[derive(Debug)]
pub struct PythonEnv {
    bin: PathBuf,
}

impl PythonEnv {
    pub fn python(&self) -> PathBuf {
        self.bin.join("python")
    }

    /// An executable the requirements installed, such as `schemathesis`.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }
}

/// The environment, built or rebuilt first when it is missing or its requirements changed.
pub async fn python_env() -> &'static PythonEnv {
    static ENV: OnceLock<PythonEnv> = OnceLock::new();
    if let Some(env) = ENV.get() {
        return env;
    }
    let env = tokio::task::spawn_blocking(|| prepare(&target_dir().join("test-python")))
        .await
        .expect("the Python environment task ran");
    ENV.get_or_init(|| env)
}

/// `target/` of this build, whether or not `CARGO_TARGET_DIR` moved it: the test binary lives
/// in `<target>/<profile>/deps/`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors().nth(3).map(Path::to_path_buf).expect("the test binary lives under <target>/<profile>/deps")
}

fn prepare(venv: &Path) -> PythonEnv {
    let requirements = std::fs::read_to_string(REQUIREMENTS).expect("tests/python/requirements.txt is readable");
    std::fs::create_dir_all(venv.parent().expect("a parent directory")).expect("target/ is writable");
    let lock_path = venv.with_extension("lock");
    let lock: File =
        OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).expect("the lock file opens");
    lock.lock().expect("the Python environment's lock");
    let stamp = venv.join("requirements.stamp");
    let bin = venv.join("bin");
    let ready = bin.join("python").exists() && std::fs::read_to_string(&stamp).is_ok_and(|built| built == requirements);
    if !ready {
        eprintln!("tests: building the Python environment at {} (first run only)", venv.display());
        run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(venv), "python3 -m venv");
        run(
            Command::new(bin.join("python")).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                REQUIREMENTS,
            ]),
            "pip install -r tests/python/requirements.txt",
        );
        std::fs::write(&stamp, &requirements).expect("the stamp is written");
    }
    drop(lock);
    PythonEnv { bin }
}

fn run(command: &mut Command, what: &str) {
    let output = command.output().unwrap_or_else(|err| panic!("{what} could not start: {err} (is python3 installed?)"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
