//! The peer the refresh benchmark holds the broker to: node `oidc-provider` 9 (RS256 JWT access
//! tokens, one client, its memory adapter, refresh tokens not rotated), run from
//! `benches/node/peer.mjs`.
//!
//! oidc-provider comes from `benches/node/package.json` and its committed lock file, installed
//! with `npm ci` into `target/bench-node` (as the tests install playwright-core into
//! `target/test-node`); a stamp of the files tells later runs it is ready. The script is copied
//! beside `node_modules`, where Node resolves its import from.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const NODE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/node");
const FILES: [&str; 3] = ["package.json", "package-lock.json", "peer.mjs"];

/// The running peer: its token endpoint, client and refresh tokens.
pub struct Peer {
    child: tokio::process::Child,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_tokens: Vec<String>,
}

impl Peer {
    /// Installs oidc-provider when needed and starts the peer with `refresh_tokens` tokens minted.
    pub async fn start(refresh_tokens: usize) -> Peer {
        let dir = tokio::task::spawn_blocking(|| prepare(&target_dir().join("bench-node"))).await.unwrap();
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("peer.mjs"))
            .arg(refresh_tokens.to_string())
            .current_dir(&dir)
            .env("NODE_ENV", "production")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts (install Node.js 20 or later with npm)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Ok(ready) = serde_json::from_str::<Value>(&line) {
                    return ready;
                }
            }
            panic!("the peer exited before it was ready");
        })
        .await
        .expect("the peer is ready within 60 s");
        // oidc-provider writes notices to stdout on its first requests (`console.log`): keep
        // reading, or its write to a closed pipe throws EPIPE and the peer dies.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let text = |key: &str| ready[key].as_str().unwrap().to_owned();
        Peer {
            token_url: format!("http://127.0.0.1:{}/token", ready["port"]),
            client_id: text("client_id"),
            client_secret: text("client_secret"),
            refresh_tokens: ready["refresh_tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// `target/` of this build: the bench binary lives in `<target>/<profile>/deps/`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).map(Path::to_path_buf).unwrap()
}

fn prepare(dir: &Path) -> PathBuf {
    let contents: Vec<String> =
        FILES.iter().map(|name| std::fs::read_to_string(Path::new(NODE_DIR).join(name)).unwrap()).collect();
    let wanted = contents.join("\n");
    std::fs::create_dir_all(dir).unwrap();
    let stamp = dir.join("packages.stamp");
    let installed = dir.join("node_modules/oidc-provider/package.json").exists();
    if !(installed && std::fs::read_to_string(&stamp).is_ok_and(|built| built == wanted)) {
        println!("refresh benchmark: installing oidc-provider into {} (first run only)", dir.display());
        for (name, text) in FILES.iter().zip(&contents) {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let output = Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir)
            .output()
            .expect("npm runs (install Node.js 20 or later with npm)");
        assert!(output.status.success(), "npm ci failed: {}", String::from_utf8_lossy(&output.stderr));
        std::fs::write(&stamp, &wanted).unwrap();
    }
    dir.to_path_buf()
}
