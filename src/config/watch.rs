//! Reload when the config file or a shard map changes on disk (debounced).
//!
//! Directories are watched rather than files: editors and `mv`-based deploys replace
//! a file by renaming a new one over it, which a watch on the old inode would miss.
//! A file reached through symlinks (a Kubernetes ConfigMap mounts
//! `map.toml -> ..data/map.toml`, `..data -> ..2026_12_05_..`, and swaps
//! `..data` to publish) is watched where it resolves too, and a change to
//! where it resolves counts as a change of the file.
//!
//! The reload waits until the files have been quiet for [`DEBOUNCE`] and no
//! file written to has been left open (a writer that stops half way through
//! for a moment, with the file still open, is not read half written: probe H
//! saw a half map applied after a 0.3 s stall), at most [`MAX_WAIT`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the files must be quiet before a reload.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// The longest a reload waits for a file written to be closed (a writer
/// that keeps it open, or a platform that does not report closes).
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// How often the files to watch are looked up again.
const REFRESH: Duration = Duration::from_secs(2);

/// Absolute form of `p` for comparison with event paths (the file itself may not
/// exist at this instant, so only its directory is canonicalized).
pub fn normalize(p: &Path) -> PathBuf {
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

/// The file `p` names, for telling whether two paths name one file: its
/// canonical path (symlinks resolved, the file's own included: probe BB, a
/// map named through a link and through its target was read again for one
/// name only), or [`normalize`]'s when it does not exist.
pub fn file_identity(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| normalize(p))
}

/// What an event says about a file written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// Bytes written, the file perhaps still open.
    Open,
    /// Closed after writing, renamed or removed: nothing half way.
    Done,
    /// Neither (metadata, an open for reading, ...).
    Other,
}

fn write_of(kind: &notify::EventKind) -> Write {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    use notify::EventKind as E;
    match kind {
        E::Modify(ModifyKind::Data(_)) | E::Create(_) => Write::Open,
        E::Access(AccessKind::Close(AccessMode::Write))
        | E::Modify(ModifyKind::Name(_))
        | E::Remove(_) => Write::Done,
        E::Modify(ModifyKind::Any) => Write::Open,
        _ => Write::Other,
    }
}

/// The files to watch: each as named, and where it resolves.
#[derive(Default)]
struct Watched {
    dirs: HashSet<PathBuf>,
    /// Named paths and resolved targets.
    wanted: HashSet<PathBuf>,
    /// Each named path and where it resolved at the last look.
    resolved: HashMap<PathBuf, Option<PathBuf>>,
}

impl Watched {
    /// Look the files up again; whether one of them now resolves elsewhere
    /// than at the last look (a change to reload for).
    fn refresh(&mut self, watcher: &mut notify::RecommendedWatcher, files: Vec<PathBuf>) -> bool {
        let before = std::mem::take(&mut self.resolved);
        self.wanted.clear();
        for f in files {
            let f = normalize(&f);
            let target = f.canonicalize().ok();
            for p in std::iter::once(&f).chain(target.as_ref()) {
                self.watch_dir_of(watcher, p);
                self.wanted.insert(p.clone());
            }
            // Every link on the way: a swap may happen in any of their
            // directories (probe L: `map.toml -> ../shared/map.toml`,
            // `shared/map.toml -> ..data/map.toml`, `..data` swapped in
            // `shared`).
            let mut hop = f.clone();
            for _ in 0..40 {
                let Ok(next) = std::fs::read_link(&hop) else {
                    break;
                };
                let next = match hop.parent() {
                    Some(d) if next.is_relative() => d.join(next),
                    _ => next,
                };
                self.watch_dir_of(watcher, &next);
                hop = next;
            }
            self.resolved.insert(f, target);
        }
        self.resolved
            .iter()
            .any(|(f, now)| before.get(f).is_some_and(|was| was != now))
    }

    /// Follow which watched files are being written (see [`Write`]).
    fn note(&self, open: &mut HashSet<PathBuf>, p: &Path, w: Write) {
        let p = normalize(p);
        if !self.wanted.contains(&p) {
            return;
        }
        match w {
            Write::Open => {
                open.insert(p);
            }
            Write::Done => {
                open.remove(&p);
            }
            Write::Other => {}
        }
    }

    fn watch_dir_of(&mut self, watcher: &mut notify::RecommendedWatcher, p: &Path) {
        let Some(d) = p.parent() else { return };
        if self.dirs.insert(d.to_path_buf()) {
            use notify::Watcher;
            if let Err(e) = watcher.watch(d, notify::RecursiveMode::NonRecursive) {
                tracing::warn!("cannot watch {}: {e}", d.display());
            }
        }
    }

    /// Whether an event at `p` may change what a watched file reads: the file
    /// or its target, or a change of directory entries (`entries`) that
    /// moves where a file resolves (a symlink swapped in its directory).
    /// Writes to other files there (a log file) are none.
    fn concerns(&self, p: &Path, entries: bool) -> bool {
        self.wanted.contains(&normalize(p))
            || (entries
                && self
                    .resolved
                    .iter()
                    .any(|(f, was)| f.canonicalize().ok() != *was))
    }
}

/// Watch `files()` and call `reload(changed)` after changes settle, with the
/// paths whose events led to it (absolute; an empty one: a change seen
/// otherwise, such as a symlink that resolves elsewhere). `files` is asked
/// again after each reload, since a new config may name other shard maps.
/// Runs until the process exits; returns early only if no watcher can be
/// created.
pub async fn run(
    files: impl Fn() -> Vec<PathBuf> + Send + 'static,
    reload: impl Fn(&[PathBuf]) + Send + 'static,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(PathBuf, Write, bool)>();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            use notify::event::ModifyKind;
            use notify::EventKind as E;
            let w = write_of(&ev.kind);
            // Opens and reads (ours among them) change nothing.
            if w == Write::Other && matches!(ev.kind, E::Access(_)) {
                return;
            }
            let entries = matches!(
                ev.kind,
                E::Create(_) | E::Remove(_) | E::Modify(ModifyKind::Name(_))
            );
            for p in ev.paths {
                let _ = tx.send((p, w, entries));
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
    let mut watched = Watched::default();
    let _ = watched.refresh(&mut watcher, files());
    // Looked at again now and then: a RELOAD or SIGHUP may have taken a new
    // config (other maps) or followed a swapped link, and the files and
    // directories to watch follow it (probe L: after a console RELOAD the
    // new target's directory was never watched).
    let mut again = tokio::time::interval(REFRESH);
    again.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (p, w, entries) = tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => ev,
                None => return,
            },
            _ = again.tick() => {
                if !watched.refresh(&mut watcher, files()) {
                    continue;
                }
                // A link moved with no event seen for it: reload as for one.
                (PathBuf::new(), Write::Done, false)
            }
        };
        if !p.as_os_str().is_empty() && !watched.concerns(&p, entries) {
            continue;
        }
        // Files written to and not closed yet.
        let mut open: HashSet<PathBuf> = HashSet::new();
        watched.note(&mut open, &p, w);
        let mut changed = vec![if p.as_os_str().is_empty() {
            p.clone()
        } else {
            normalize(&p)
        }];
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        let quiet = tokio::time::sleep(DEBOUNCE);
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                _ = &mut quiet => {
                    if open.is_empty() || tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    quiet.as_mut().reset(tokio::time::Instant::now() + DEBOUNCE);
                }
                more = rx.recv() => match more {
                    None => return,
                    // An event of a watched file restarts the quiet period,
                    // and says whether the file is still being written.
                    Some((p, w, entries)) => {
                        if watched.concerns(&p, entries) {
                            let n = normalize(&p);
                            if !changed.contains(&n) {
                                changed.push(n);
                            }
                            watched.note(&mut open, &p, w);
                            let until = (tokio::time::Instant::now() + DEBOUNCE).min(deadline);
                            quiet.as_mut().reset(until);
                        }
                    }
                },
            }
        }
        reload(&changed);
        let _ = watched.refresh(&mut watcher, files());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RenameMode};
    use notify::EventKind as E;

    #[test]
    fn writes_are_open_until_closed_renamed_or_removed() {
        assert_eq!(
            write_of(&E::Modify(ModifyKind::Data(DataChange::Any))),
            Write::Open
        );
        assert_eq!(write_of(&E::Create(CreateKind::File)), Write::Open);
        assert_eq!(
            write_of(&E::Access(AccessKind::Close(AccessMode::Write))),
            Write::Done
        );
        assert_eq!(
            write_of(&E::Modify(ModifyKind::Name(RenameMode::To))),
            Write::Done
        );
        assert_eq!(
            write_of(&E::Access(AccessKind::Open(AccessMode::Any))),
            Write::Other
        );
    }
}
