//! The spool file of one session: where a client message larger than
//! `[limits] spool_threshold` waits on disk until it is whole, so that a client
//! that stops half-way through a huge message holds a file, not memory (why the
//! message is kept whole at all: see `session::inbound`).

use bytes::BytesMut;
use std::io::SeekFrom;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// An open spool file with no name: it is unlinked as soon as it is created,
/// so it goes away with the session however the process ends.
pub(crate) struct Spool {
    file: tokio::fs::File,
    /// Bytes written.
    len: usize,
}

impl Spool {
    /// Create an empty spool file in `dir` for client `client`.
    pub async fn create(dir: &Path, client: i32) -> std::io::Result<Spool> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!(
            "shardbouncer-spool-{}-{client}-{seq}",
            std::process::id()
        ));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await?;
        tokio::fs::remove_file(&path).await?;
        Ok(Spool { file, len: 0 })
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Append `b`.
    pub async fn append(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.file.write_all(b).await?;
        self.len += b.len();
        Ok(())
    }

    /// Everything written, read back (the file is then dropped by the caller).
    pub async fn read_all(&mut self) -> std::io::Result<BytesMut> {
        self.file.flush().await?;
        self.file.seek(SeekFrom::Start(0)).await?;
        let mut buf = BytesMut::zeroed(self.len);
        self.file.read_exact(&mut buf).await?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn what_is_appended_reads_back_and_leaves_no_file() {
        let dir = std::env::temp_dir().join(format!("sb-spool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Spool::create(&dir, 7).await.unwrap();
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "unlinked at once"
        );
        let a: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        s.append(&a).await.unwrap();
        s.append(b"tail").await.unwrap();
        assert_eq!(s.len(), a.len() + 4);
        let back = s.read_all().await.unwrap();
        assert_eq!(&back[..a.len()], &a[..]);
        assert_eq!(&back[a.len()..], b"tail");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
