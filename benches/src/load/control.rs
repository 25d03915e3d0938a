//! Starting, updating and stopping the server of a run: in this process, as an
//! `xds-load-server` child driven over its standard input, or an external one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::{Options, ServerMode};
use crate::scenario::{Scenario, UpdateKind};
use crate::serve::LoadServer;

/// How long the child server gets to start and to answer a command.
const CHILD_WAIT: Duration = Duration::from_secs(120);

/// The server of a run.
// One value per run: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum ServerControl {
    /// In this process.
    InProcess(Box<LoadServer>),
    /// A child process speaking the `xds-load-server` line protocol.
    Child {
        /// The process.
        child: Child,
        /// Its standard input (commands).
        stdin: ChildStdin,
        /// Its standard output (answers).
        stdout: Lines<BufReader<ChildStdout>>,
        /// Where it listens.
        addr: SocketAddr,
        /// The generation it is at.
        generation: u32,
    },
    /// Already running elsewhere.
    External {
        /// Where it listens.
        addr: SocketAddr,
        /// Its process id, if known.
        pid: Option<u32>,
    },
}

impl std::fmt::Debug for ServerControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerControl").field("addr", &self.addr()).field("pid", &self.pid()).finish()
    }
}

fn default_server_bin() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current executable: {e}"))?;
    Ok(exe.with_file_name("xds-load-server"))
}

async fn answer(stdout: &mut Lines<BufReader<ChildStdout>>, what: &str) -> Result<String, String> {
    match tokio::time::timeout(CHILD_WAIT, stdout.next_line()).await {
        Err(_) => Err(format!("xds-load-server did not answer {what} in time")),
        Ok(Err(e)) => Err(format!("xds-load-server: {e}")),
        Ok(Ok(None)) => Err("xds-load-server exited".into()),
        Ok(Ok(Some(line))) => Ok(line),
    }
}

impl ServerControl {
    /// Starts (or finds) the server `o` describes.
    pub async fn start(o: &Options) -> Result<Self, String> {
        if (o.server_threads.is_some() || o.server_shards > 1) && o.server != ServerMode::Spawn {
            return Err(
                "--server-threads and --server-shards set the runtime of a spawned server (--server spawn) only".into(),
            );
        }
        match o.server {
            ServerMode::InProcess => {
                let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
                let server = LoadServer::start(addr, Scenario::new(o.clusters, o.endpoints), false)
                    .await
                    .map_err(|e| format!("start the in-process server: {e}"))?;
                Ok(Self::InProcess(Box::new(server)))
            }
            ServerMode::External => Ok(Self::External { addr: o.addr, pid: o.server_pid }),
            ServerMode::Spawn => {
                let bin = match &o.server_bin {
                    Some(b) => b.clone(),
                    None => default_server_bin()?,
                };
                let mut command = tokio::process::Command::new(&bin);
                command
                    .args(["--clusters", &o.clusters.to_string(), "--endpoints", &o.endpoints.to_string()])
                    .args(["--addr", "127.0.0.1:0"]);
                if let Some(n) = o.server_threads {
                    command.args(["--worker-threads", &n.to_string()]);
                }
                if o.server_shards > 1 {
                    command.args(["--shards", &o.server_shards.to_string()]);
                }
                let mut child = command
                    // The server runs with its allocator's defaults, not the generator's.
                    .env_remove(super::GENERATOR_PURGE_DELAY.0)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| {
                        format!("{}: {e} (build it with `cargo build --release -p xds-benches`)", bin.display())
                    })?;
                let stdin = child.stdin.take().ok_or("no stdin")?;
                let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
                let line = answer(&mut stdout, "start").await?;
                let addr = line
                    .strip_prefix("listening ")
                    .and_then(|a| a.trim().parse().ok())
                    .ok_or_else(|| format!("unexpected first line from xds-load-server: {line}"))?;
                Ok(Self::Child { child, stdin, stdout, addr, generation: 0 })
            }
        }
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Self::InProcess(s) => s.addr,
            Self::Child { addr, .. } | Self::External { addr, .. } => *addr,
        }
    }

    /// The server's process id, for `/proc` readings.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::InProcess(_) => Some(std::process::id()),
            Self::Child { child, .. } => child.id(),
            Self::External { pid, .. } => *pid,
        }
    }

    /// Whether this generator can trigger updates.
    pub fn can_update(&self) -> bool {
        !matches!(self, Self::External { .. })
    }

    /// The generation of the latest update.
    pub fn generation(&self) -> u32 {
        match self {
            Self::InProcess(s) => s.scenario.generation(),
            Self::Child { generation, .. } => *generation,
            Self::External { .. } => 0,
        }
    }

    /// Publishes the next update; returns its generation once the server has published it.
    pub async fn update(&mut self, kind: UpdateKind) -> Result<u32, String> {
        match self {
            Self::InProcess(s) => Ok(s.update(kind).0),
            Self::Child { stdin, stdout, generation, .. } => {
                let cmd = match kind {
                    UpdateKind::All => "all\n",
                    UpdateKind::One => "one\n",
                };
                stdin.write_all(cmd.as_bytes()).await.map_err(|e| format!("xds-load-server stdin: {e}"))?;
                stdin.flush().await.map_err(|e| format!("xds-load-server stdin: {e}"))?;
                let line = answer(stdout, "an update").await?;
                let g = line
                    .strip_prefix("updated ")
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|g| g.parse().ok())
                    .ok_or_else(|| format!("unexpected answer from xds-load-server: {line}"))?;
                *generation = g;
                Ok(g)
            }
            Self::External { .. } => Err("an external server is not updated by the generator".into()),
        }
    }

    /// How many endpoint responses of the latest update the server handed to HTTP/2 and how
    /// long after the change the last one was; `None` for an external server.
    pub async fn sent(&mut self) -> Result<Option<(u64, Duration)>, String> {
        match self {
            Self::InProcess(s) => Ok(Some(s.clock.sent())),
            Self::Child { stdin, stdout, .. } => {
                stdin.write_all(b"sent\n").await.map_err(|e| format!("xds-load-server stdin: {e}"))?;
                stdin.flush().await.map_err(|e| format!("xds-load-server stdin: {e}"))?;
                let line = answer(stdout, "the send clock").await?;
                let mut fields = line.strip_prefix("sent ").unwrap_or_default().split_whitespace();
                match (fields.next().and_then(|n| n.parse().ok()), fields.next().and_then(|u| u.parse().ok())) {
                    (Some(n), Some(us)) => Ok(Some((n, Duration::from_micros(us)))),
                    _ => Err(format!("unexpected answer from xds-load-server: {line}")),
                }
            }
            Self::External { .. } => Ok(None),
        }
    }

    /// Stops the server (the external one is left running).
    pub async fn stop(self) {
        match self {
            Self::InProcess(s) => s.stop().await,
            Self::Child { mut child, mut stdin, .. } => {
                let _ = stdin.write_all(b"quit\n").await;
                drop(stdin);
                if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
            }
            Self::External { .. } => {}
        }
    }
}
