//! A real browser for the tests: Debian's chromium, driven by playwright-core under Node, both
//! provisioned by the suite itself on first use, as `python.rs` provisions Python.
//!
//! playwright-core comes from `tests/browser/package.json` and its committed lock file, installed
//! with `npm ci` into `target/test-node`; a stamp of both files tells later runs it is ready, or
//! that it must be installed again. Playwright's own browser downloads are never used: the
//! browser is Debian's `/usr/bin/chromium`, installed with apt-get when it is missing (the
//! suite runs as root here and in CI). Each step holds a file lock under `target/`, so that
//! tests and test binaries starting at once wait for the one that installs.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use crate::python::target_dir;

const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
/// Where Debian's chromium package puts the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The ready Node environment.
#[derive(Debug)]
pub struct NodeEnv {
    dir: PathBuf,
}

impl NodeEnv {
    /// The directory whose `node_modules` holds playwright-core (the scripts resolve it from here).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A script of `tests/browser/`, such as `start_page.mjs`.
    pub fn script(&self, name: &str) -> PathBuf {
        Path::new(BROWSER_DIR).join(name)
    }
}

/// The Node environment, installed first when it is missing or its package files changed.
pub async fn node_env() -> &'static NodeEnv {
    static ENV: OnceLock<NodeEnv> = OnceLock::new();
    if let Some(env) = ENV.get() {
        return env;
    }
    let env = tokio::task::spawn_blocking(|| prepare_node(&target_dir().join("test-node")))
        .await
        .expect("the Node environment task ran");
    ENV.get_or_init(|| env)
}

/// Debian's chromium, installed first with apt-get when it is missing.
pub async fn chromium() -> &'static Path {
    static READY: OnceLock<()> = OnceLock::new();
    if READY.get().is_none() {
        tokio::task::spawn_blocking(|| ensure_chromium(&target_dir().join("chromium.lock")))
            .await
            .expect("the chromium task ran");
        let _ = READY.set(());
    }
    Path::new(CHROMIUM)
}

/// Holds an exclusive lock on `path` until dropped.
fn lock(path: &Path) -> File {
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(path).expect("the lock file opens");
    file.lock().expect("the lock is taken");
    file
}

fn prepare_node(dir: &Path) -> NodeEnv {
    let read = |name: &str| {
        std::fs::read_to_string(Path::new(BROWSER_DIR).join(name))
            .unwrap_or_else(|err| panic!("tests/browser/{name}: {err}"))
    };
    let (package, lockfile) = (read("package.json"), read("package-lock.json"));
    let wanted = format!("{package}\n{lockfile}");
    std::fs::create_dir_all(dir).expect("target/ is writable");
    let _lock = lock(&dir.with_extension("lock"));
    let stamp = dir.join("packages.stamp");
    let installed = dir.join("node_modules/playwright-core/package.json").exists();
    if !(installed && std::fs::read_to_string(&stamp).is_ok_and(|built| built == wanted)) {
        eprintln!("tests: installing playwright-core into {} (first run only)", dir.display());
        let started = Instant::now();
        std::fs::write(dir.join("package.json"), &package).expect("package.json is copied");
        std::fs::write(dir.join("package-lock.json"), &lockfile).expect("package-lock.json is copied");
        run(
            Command::new("npm")
                .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(dir)
                // playwright-core downloads nothing itself; this makes sure of it.
                .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1"),
            "npm ci (tests/browser/package-lock.json)",
            "install Node.js 18 or later with npm (Debian: apt-get install nodejs npm)",
        );
        std::fs::write(&stamp, &wanted).expect("the stamp is written");
        eprintln!("tests: playwright-core installed in {:.1} s", started.elapsed().as_secs_f64());
    }
    NodeEnv { dir: dir.to_path_buf() }
}

fn ensure_chromium(lock_path: &Path) {
    if Path::new(CHROMIUM).exists() {
        return;
    }
    std::fs::create_dir_all(lock_path.parent().expect("a parent directory")).expect("target/ is writable");
    let _lock = lock(lock_path);
    if Path::new(CHROMIUM).exists() {
        return;
    }
    eprintln!("tests: {CHROMIUM} is missing; installing Debian's chromium with apt-get (first run only)");
    let started = Instant::now();
    run(
        Command::new("sh")
            .args([
                "-c",
                "apt-get update -o DPkg::Lock::Timeout=300 && \
                 apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=300 chromium",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install chromium",
        "install Debian's chromium package as root (apt-get install chromium), so that /usr/bin/chromium exists",
    );
    assert!(Path::new(CHROMIUM).exists(), "apt-get installed chromium, yet {CHROMIUM} is missing");
    eprintln!("tests: chromium installed in {:.1} s", started.elapsed().as_secs_f64());
}

fn run(command: &mut Command, what: &str, remedy: &str) {
    let output = command.output().unwrap_or_else(|err| panic!("{what} could not start: {err}; {remedy}"));
    assert!(
        output.status.success(),
        "{what} failed ({}); {remedy}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
