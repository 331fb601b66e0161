//! Reload when the config file or a shard map changes on disk (debounced).
//!
//! Directories are watched rather than files: editors and `mv`-based deploys replace
//! a file by renaming a new one over it, which a watch on the old inode would miss.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long to wait for a burst of writes to settle before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// Absolute form of `p` for comparison with event paths (the file itself may not
/// exist at this instant, so only its directory is canonicalized).
fn normalize(p: &Path) -> PathBuf {
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    match p.file_name() {
        Some(f) => dir.join(f),
        None => dir,
    }
}

/// Watch `files()` and call `reload()` after changes settle. `files` is asked again
/// after each reload, since a new config may name other shard maps. Runs until the
/// process exits; returns early only if no watcher can be created.
pub async fn run(
    files: impl Fn() -> Vec<PathBuf> + Send + 'static,
    reload: impl Fn() + Send + 'static,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            for p in ev.paths {
                let _ = tx.send(p);
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("cannot watch config files for changes: {e}; use SIGHUP or RELOAD");
            return;
        }
    };
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    let mut wanted: HashSet<PathBuf> = HashSet::new();
    let refresh = |watcher: &mut notify::RecommendedWatcher,
                   dirs: &mut HashSet<PathBuf>,
                   wanted: &mut HashSet<PathBuf>| {
        wanted.clear();
        for f in files() {
            let f = normalize(&f);
            if let Some(d) = f.parent() {
                if dirs.insert(d.to_path_buf()) {
                    use notify::Watcher;
                    if let Err(e) = watcher.watch(d, notify::RecursiveMode::NonRecursive) {
                        tracing::warn!("cannot watch {}: {e}", d.display());
                    }
                }
            }
            wanted.insert(f);
        }
    };
    refresh(&mut watcher, &mut dirs, &mut wanted);
    while let Some(p) = rx.recv().await {
        if !wanted.contains(&normalize(&p)) {
            continue;
        }
        // Debounce: let a burst of writes (truncate + write + rename) settle.
        let settle = tokio::time::sleep(DEBOUNCE);
        tokio::pin!(settle);
        loop {
            tokio::select! {
                _ = &mut settle => break,
                more = rx.recv() => if more.is_none() { return },
            }
        }
        reload();
        refresh(&mut watcher, &mut dirs, &mut wanted);
    }
}
