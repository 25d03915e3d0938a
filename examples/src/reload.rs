//! Hot reload of the registry file by polling.
//!
//! Polling `stat` every [`DEFAULT_POLL_INTERVAL`] is portable, needs no OS watch API, and
//! catches every way a file gets updated: edits in place (mtime, size), replacement by rename
//! as editors and `kubectl` ConfigMap updates do (inode), deletion and re-creation. The rules:
//!
//! - A change is acted on once the file's metadata has stayed the same for one poll, so a
//!   file caught half-written is not reported as broken. Worst-case delay: two intervals.
//! - File systems store mtime in coarse ticks (up to a second or two), so a second write in
//!   the same tick with the same size is invisible to `stat`. While the file's mtime is less
//!   than [`RACY_WINDOW`] older than our last read, it is re-read on every poll (the "racily
//!   clean" rule of git's index).
//! - The content is hashed: a change of metadata alone (`touch`) reloads nothing.
//! - A missing or unreadable file is reported once; the last good configuration stays.

use std::fs::Metadata;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::registry::{Registry, RegistryError};

/// How often the file's metadata is checked.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How long after a file's mtime its content is re-read on every poll (see the module docs).
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    dev: u64,
    ino: u64,
}

impl Fingerprint {
    fn of(meta: &Metadata) -> Self {
        #[cfg(unix)]
        let (dev, ino) = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let (dev, ino) = (0, 0);
        Self { modified: meta.modified().ok(), len: meta.len(), dev, ino }
    }
}

/// What a poll found.
#[derive(Debug)]
pub enum FileEvent {
    /// The content changed: the new registry, or why it is rejected.
    Changed(Result<Registry, RegistryError>),
    /// The file cannot be found or its metadata read (reported once until it is back).
    Unavailable(io::Error),
}

/// Follows one registry file: [`poll`](FileWatcher::poll) says when its content changed.
///
/// Synchronous and free of timers: the caller decides when to poll (see
/// [`crate::sidecar::run_reloader`]).
#[derive(Debug)]
pub struct FileWatcher {
    path: PathBuf,
    /// Metadata at the previous poll; `None` when missing.
    seen: Option<Fingerprint>,
    /// Metadata when the content was last read.
    loaded: Option<Fingerprint>,
    /// When the content was last read (taken just before reading).
    read_at: SystemTime,
    /// Content hash of the last read.
    hash: Option<String>,
    /// Whether the current unavailability was reported.
    reported_unavailable: bool,
}

impl FileWatcher {
    /// Starts following `path`; call [`load`](Self::load) for the initial content.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            seen: None,
            loaded: None,
            read_at: SystemTime::UNIX_EPOCH,
            hash: None,
            reported_unavailable: false,
        }
    }

    /// The file followed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and validates the file now, whatever its metadata (the start-up load).
    pub fn load(&mut self) -> Result<Registry, RegistryError> {
        let fingerprint = std::fs::metadata(&self.path).ok().map(|m| Fingerprint::of(&m));
        self.seen = fingerprint;
        let (_, result) = self.read(fingerprint);
        result
    }

    /// Checks the file once. Returns an event when its content changed (or it disappeared)
    /// since the last event, `None` otherwise.
    pub fn poll(&mut self) -> Option<FileEvent> {
        let fingerprint = match std::fs::metadata(&self.path) {
            Ok(meta) => Fingerprint::of(&meta),
            Err(err) => {
                self.seen = None;
                if self.reported_unavailable {
                    return None;
                }
                self.reported_unavailable = true;
                return Some(FileEvent::Unavailable(err));
            }
        };
        self.reported_unavailable = false;
        if self.seen != Some(fingerprint) {
            // Changed since the previous poll: wait one interval for the writer to finish.
            self.seen = Some(fingerprint);
            return None;
        }
        if self.loaded == Some(fingerprint) && !self.racy(fingerprint) {
            return None;
        }
        match self.read(Some(fingerprint)) {
            (true, result) => Some(FileEvent::Changed(result)),
            (false, _) => None,
        }
    }

    /// Whether a write in the same mtime tick as the last read could have gone unnoticed.
    fn racy(&self, fingerprint: Fingerprint) -> bool {
        fingerprint.modified.is_none_or(|m| m + RACY_WINDOW >= self.read_at)
    }

    /// Reads the file; returns whether the content differs from the last read, and the result.
    fn read(&mut self, fingerprint: Option<Fingerprint>) -> (bool, Result<Registry, RegistryError>) {
        self.read_at = SystemTime::now();
        self.loaded = fingerprint;
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(source) => {
                // Report once; forgetting the hash makes the next readable content a change.
                let changed = self.hash.take().is_some();
                return (changed, Err(RegistryError::Read { path: self.path.clone(), source }));
            }
        };
        let hash = xds_core::content_version(text.as_bytes());
        let changed = self.hash.as_deref() != Some(hash.as_str());
        self.hash = Some(hash);
        let result = Registry::parse(&text).map_err(|error| RegistryError::Invalid { path: self.path.clone(), error });
        (changed, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "services:\n  - name: a\n    endpoints: [127.0.0.1:1]\n";
    const B: &str = "services:\n  - name: a\n    endpoints: [127.0.0.1:2]\n"; // same length as A

    fn names(event: Option<FileEvent>) -> Vec<String> {
        match event {
            Some(FileEvent::Changed(Ok(r))) => {
                r.services.iter().map(|s| format!("{}={:?}", s.name, s.endpoints)).collect()
            }
            other => panic!("expected a valid change, got {other:?}"),
        }
    }

    /// Polls until an event comes (each change needs two polls: detect, then settle).
    fn next_event(w: &mut FileWatcher) -> Option<FileEvent> {
        (0..3).find_map(|_| w.poll())
    }

    #[test]
    fn detects_same_length_in_place_edits_and_ignores_touch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.yaml");
        std::fs::write(&path, A).expect("write");
        let mut w = FileWatcher::new(&path);
        assert!(w.load().is_ok());
        assert!(next_event(&mut w).is_none(), "nothing changed");

        std::fs::write(&path, B).expect("write"); // likely within the same mtime tick
        assert_eq!(names(next_event(&mut w)), vec!["a=[127.0.0.1:2]"]);
        assert!(next_event(&mut w).is_none(), "reported once");

        // Same content rewritten: metadata changes, content does not.
        std::fs::write(&path, B).expect("write");
        assert!(next_event(&mut w).is_none());
    }

    #[test]
    fn detects_replacement_by_rename_and_reports_invalid_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.yaml");
        std::fs::write(&path, A).expect("write");
        let mut w = FileWatcher::new(&path);
        assert!(w.load().is_ok());

        let tmp = dir.path().join("r.yaml.tmp");
        std::fs::write(&tmp, "services:\n  - name: a\n    endpoints: [bad]\n").expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        match next_event(&mut w) {
            Some(FileEvent::Changed(Err(e))) => assert_eq!(e.line(), Some(3), "{e}"),
            other => panic!("expected an invalid change, got {other:?}"),
        }
        assert!(next_event(&mut w).is_none(), "an invalid file is reported once");

        std::fs::write(&tmp, B).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        assert_eq!(names(next_event(&mut w)), vec!["a=[127.0.0.1:2]"]);
    }

    #[test]
    fn missing_file_is_reported_once_and_its_return_is_noticed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.yaml");
        std::fs::write(&path, A).expect("write");
        let mut w = FileWatcher::new(&path);
        assert!(w.load().is_ok());

        std::fs::remove_file(&path).expect("remove");
        assert!(matches!(w.poll(), Some(FileEvent::Unavailable(_))));
        assert!(next_event(&mut w).is_none());

        std::fs::write(&path, B).expect("write");
        assert_eq!(names(next_event(&mut w)), vec!["a=[127.0.0.1:2]"]);
    }

    #[test]
    fn start_up_load_reports_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = FileWatcher::new(dir.path().join("absent.yaml"));
        assert!(matches!(w.load(), Err(RegistryError::Read { .. })));
    }
}
