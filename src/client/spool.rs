//! The spool file of one session: where a client message larger than
//! `[limits] spool_threshold` waits on disk until it is whole, so that a client
//! that stops half-way through a huge message holds a file, not memory (why the
//! message is kept whole at all: see `session::inbound`).

use crate::app::App;
use bytes::BytesMut;
use std::io::SeekFrom;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// An open spool file with no name: it is unlinked as soon as it is created,
/// so it goes away with the session however the process ends. What it holds
/// counts against `[limits] max_spooled` until it is dropped.
pub(crate) struct Spool {
    file: tokio::fs::File,
    /// Bytes written (and counted).
    len: usize,
    app: Arc<App>,
}

/// Why a spool could not take more.
pub(crate) enum SpoolError {
    /// All spools together would pass `[limits] max_spooled` (the cap).
    Full(usize),
    /// The file could not be created or written.
    Io(std::io::Error),
}

impl Spool {
    /// Create an empty spool file in `[limits] spool_dir` for client `client`.
    pub async fn create(app: &Arc<App>, client: i32) -> std::io::Result<Spool> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = app.snapshot.load().config.spool_dir();
        let path = dir.join(format!(
            "shardbouncer-spool-{}-{client}-{seq}",
            std::process::id()
        ));
        // Readable by this user only, and never an existing file or a symlink
        // planted under the name (create_new is O_EXCL): the file holds a
        // client's query text, in a directory other users may share.
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .await?;
        tokio::fs::remove_file(&path).await?;
        Ok(Spool {
            file,
            len: 0,
            app: app.clone(),
        })
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Append `b`, within `[limits] max_spooled`.
    pub async fn append(&mut self, b: &[u8]) -> Result<(), SpoolError> {
        let cap = self.app.snapshot.load().config.limits.max_spooled;
        if !self.app.clients.spool(b.len(), cap) {
            return Err(SpoolError::Full(cap));
        }
        if let Err(e) = self.file.write_all(b).await {
            self.app.clients.unspool(b.len());
            return Err(SpoolError::Io(e));
        }
        self.len += b.len();
        Ok(())
    }

    /// Everything written, read back into a buffer with room for `room`
    /// bytes (the whole message: its rest is appended without moving it).
    /// The spool is then dropped by the caller.
    pub async fn read_all(&mut self, room: usize) -> std::io::Result<BytesMut> {
        self.file.flush().await?;
        self.file.seek(SeekFrom::Start(0)).await?;
        let mut buf = BytesMut::with_capacity(room.max(self.len));
        buf.resize(self.len, 0);
        self.file.read_exact(&mut buf).await?;
        Ok(buf)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.app.clients.unspool(self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app_with_cap(dir: &std::path::Path, cap: usize) -> Arc<App> {
        let cfg = crate::config::Config::parse(&format!(
            "[limits]\nspool_dir = {:?}\nmax_spooled = {cap}\n\
             [databases.app]\nshards = [ {{ name = \"s0\", host = \"127.0.0.1\" }} ]\n",
            dir.display().to_string()
        ))
        .unwrap();
        App::new(cfg, None).unwrap()
    }

    #[tokio::test]
    async fn what_is_appended_reads_back_is_counted_and_leaves_no_file() {
        let dir = std::env::temp_dir().join(format!("sb-spool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let app = app_with_cap(&dir, 400_000);
        let mut s = Spool::create(&app, 7).await.unwrap();
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "unlinked at once"
        );
        let a: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        assert!(s.append(&a).await.is_ok());
        assert!(s.append(b"tail").await.is_ok());
        assert_eq!((s.len(), app.clients.spooled()), (a.len() + 4, a.len() + 4));
        // Past the cap: refused, and nothing more is counted.
        assert!(matches!(s.append(&a).await, Err(SpoolError::Full(400_000))));
        assert_eq!(app.clients.spooled(), a.len() + 4);
        let back = s.read_all(0).await.unwrap();
        assert_eq!(&back[..a.len()], &a[..]);
        assert_eq!(&back[a.len()..], b"tail");
        drop(s);
        assert_eq!(app.clients.spooled(), 0, "given back when dropped");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
