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
//! - The files the registry refers to (certificates and keys of `secrets:`) are watched the
//!   same way: a change of one re-reads the whole registry, so a renewed certificate is
//!   served within two intervals, and a missing one that appears is noticed.

use std::fs::Metadata;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::registry::{Registry, RegistryError};

/// How often the file's metadata is checked.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How long after a file's mtime its content is re-read on every poll (see the module docs).
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// What identifies one version of a file without reading it.
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

    fn of_path(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|m| Self::of(&m))
    }
}

/// The fingerprints of the registry file and of every file it refers to (`None`: missing).
type Fingerprints = Vec<Option<Fingerprint>>;

/// What a poll found.
#[derive(Debug)]
pub enum FileEvent {
    /// The content changed: the new registry, or why it is rejected.
    Changed(Result<Registry, RegistryError>),
    /// The file cannot be found or its metadata read (reported once until it is back).
    Unavailable(io::Error),
}

/// Follows one registry file and the files it refers to (certificates and keys):
/// [`poll`](FileWatcher::poll) says when their content changed.
///
/// Synchronous and free of timers: the caller decides when to poll (see
/// [`crate::sidecar::Controller::run`]).
#[derive(Debug)]
pub struct FileWatcher {
    path: PathBuf,
    /// The files the last read of the registry referred to, resolved.
    referenced: Vec<PathBuf>,
    /// Metadata at the previous poll; `None` when the registry file was missing.
    seen: Option<Fingerprints>,
    /// Metadata when the content was last read.
    loaded: Option<Fingerprints>,
    /// When the content was last read (taken just before reading).
    read_at: SystemTime,
    /// Content hash of the last read (the registry and the files it refers to).
    hash: Option<String>,
    /// Whether the current unavailability was reported.
    reported_unavailable: bool,
}

impl FileWatcher {
    /// Starts following `path`; call [`load`](Self::load) for the initial content.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            referenced: Vec::new(),
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

    /// The files the registry referred to when it was last read (watched too).
    pub fn referenced(&self) -> &[PathBuf] {
        &self.referenced
    }

    /// Reads and validates the file now, whatever its metadata (the start-up load).
    pub fn load(&mut self) -> Result<Registry, RegistryError> {
        let (_, result) = self.read();
        result
    }

    fn fingerprints(&self) -> io::Result<Fingerprints> {
        let main = std::fs::metadata(&self.path)?;
        let mut all = Vec::with_capacity(1 + self.referenced.len());
        all.push(Some(Fingerprint::of(&main)));
        all.extend(self.referenced.iter().map(|p| Fingerprint::of_path(p)));
        Ok(all)
    }

    /// Checks the files once. Returns an event when their content changed (or the registry
    /// file disappeared) since the last event, `None` otherwise.
    pub fn poll(&mut self) -> Option<FileEvent> {
        let fingerprints = match self.fingerprints() {
            Ok(fingerprints) => fingerprints,
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
        if self.seen.as_ref() != Some(&fingerprints) {
            // Changed since the previous poll: wait one interval for the writer to finish.
            self.seen = Some(fingerprints);
            return None;
        }
        if self.loaded.as_ref() == Some(&fingerprints) && !self.racy(&fingerprints) {
            return None;
        }
        match self.read() {
            (true, result) => Some(FileEvent::Changed(result)),
            (false, _) => None,
        }
    }

    /// Whether a write in the same mtime tick as the last read could have gone unnoticed.
    fn racy(&self, fingerprints: &Fingerprints) -> bool {
        fingerprints.iter().flatten().any(|f| f.modified.is_none_or(|m| m + RACY_WINDOW >= self.read_at))
    }

    /// Reads the registry and the files it refers to; returns whether the content differs from
    /// the last read, and the result.
    fn read(&mut self) -> (bool, Result<Registry, RegistryError>) {
        self.read_at = SystemTime::now();
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(source) => {
                self.loaded = self.fingerprints().ok();
                self.seen = self.loaded.clone();
                // Report once; forgetting the hash makes the next readable content a change.
                let changed = self.hash.take().is_some();
                return (changed, Err(RegistryError::Read { path: self.path.clone(), source }));
            }
        };
        let parsed = Registry::parse_tracked(&text, crate::registry::base_dir(&self.path));
        let mut content = text.into_bytes();
        for file in &parsed.files {
            content.extend_from_slice(b"\n");
            content.extend_from_slice(file.path.as_os_str().as_encoded_bytes());
            content.extend_from_slice(b"\t");
            content.extend_from_slice(file.content_hash.as_deref().unwrap_or("missing").as_bytes());
        }
        self.referenced = parsed.files.into_iter().map(|f| f.path).collect();
        self.referenced.dedup();
        // Taken after reading: a write in between is caught by the racy-window rule.
        self.loaded = self.fingerprints().ok();
        self.seen = self.loaded.clone();
        let hash = xds_core::content_version(&content);
        let changed = self.hash.as_deref() != Some(hash.as_str());
        self.hash = Some(hash);
        let result = parsed.result.map_err(|error| RegistryError::Invalid { path: self.path.clone(), error });
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
                r.services.iter().map(|s| format!("{}={:?}", s.name, s.addresses().collect::<Vec<_>>())).collect()
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

    /// The certificate files a registry names are watched too: one that appears, or changes,
    /// reloads the registry.
    #[test]
    fn referenced_files_are_watched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.yaml");
        std::fs::write(&path, "services: []\nsecrets:\n  - {name: ca, validation_context: {trusted_ca: ca.pem}}\n")
            .expect("write");
        let mut w = FileWatcher::new(&path);
        let e = w.load().expect_err("ca.pem is missing");
        assert_eq!(e.line(), Some(3), "{e}");
        assert_eq!(w.referenced(), [dir.path().join("ca.pem")]);
        assert!(next_event(&mut w).is_none());

        let pem = |body: &str| format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n");
        std::fs::write(dir.path().join("ca.pem"), pem("AAAA")).expect("write");
        let pem_of = |event: Option<FileEvent>| match event {
            Some(FileEvent::Changed(Ok(r))) => match &r.secrets[0].kind {
                crate::registry::SecretKind::ValidationContext { trusted_ca } => trusted_ca.pem.clone(),
                other => panic!("unexpected {other:?}"),
            },
            other => panic!("expected a valid change, got {other:?}"),
        };
        assert!(pem_of(next_event(&mut w)).contains("AAAA"));
        assert!(next_event(&mut w).is_none(), "reported once");

        std::fs::write(dir.path().join("ca.pem"), pem("BBBB")).expect("write"); // same length
        assert!(pem_of(next_event(&mut w)).contains("BBBB"));
    }
}
