//! A newc ("070701") cpio archive, the format the kernel unpacks as an
//! initramfs, written here: no root and no `cpio` tool needed, and it can
//! hold device nodes (`/dev/console`, which the kernel opens for init before
//! anything is mounted). Uncompressed: decompressing under TCG is slow.
use std::{
    borrow::Cow,
    collections::BTreeMap,
    fs,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

/// What goes into the archive at one path.
enum Node {
    Dir,
    File { src: Source, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32, perm: u32 },
}

pub enum Source {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

/// A newc ("070701") cpio archive, built in memory as a path → node map.
/// BTreeMap order puts every directory before its contents.
#[derive(Default)]
pub struct Cpio {
    nodes: BTreeMap<String, Node>,
}

impl Cpio {
    fn norm(path: &str) -> String {
        path.trim_start_matches('/')
            .trim_end_matches('/')
            .to_string()
    }

    pub fn dir(&mut self, path: &str) {
        let path = Self::norm(path);
        let mut at = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            self.nodes.entry(at.clone()).or_insert(Node::Dir);
        }
    }

    fn parent(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
    }

    pub fn file(&mut self, path: &str, src: Source, mode: u32) {
        let path = Self::norm(path);
        self.parent(&path);
        self.nodes.insert(path, Node::File { src, mode });
    }

    /// A host file at the same path, unless it is already there.
    pub fn host_file(&mut self, host: &Path, mode: u32) {
        let path = Self::norm(&host.to_string_lossy());
        if !self.nodes.contains_key(&path) {
            self.file(&path, Source::Path(host.to_path_buf()), mode);
        }
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = Self::norm(path);
        self.parent(&path);
        self.nodes.insert(path, Node::Symlink(target.to_string()));
    }

    pub fn chardev(&mut self, path: &str, major: u32, minor: u32, perm: u32) {
        let path = Self::norm(path);
        self.parent(&path);
        self.nodes
            .insert(path, Node::CharDev { major, minor, perm });
    }

    /// Writes the archive; returns its size in bytes.
    pub fn write(&self, out: &Path) -> Result<u64> {
        let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut w = CountingWriter {
            inner: BufWriter::new(file),
            written: 0,
        };
        for (ino, (path, node)) in self.nodes.iter().enumerate() {
            let (mode, data, rdev): (u32, Cow<'_, [u8]>, (u32, u32)) = match node {
                Node::Dir => (0o040_755, (&[][..]).into(), (0, 0)),
                Node::File { src, mode } => {
                    let data = match src {
                        Source::Bytes(b) => b.as_slice().into(),
                        Source::Path(p) => fs::read(p)
                            .with_context(|| format!("reading {}", p.display()))?
                            .into(),
                    };
                    (0o100_000 | mode, data, (0, 0))
                }
                Node::Symlink(target) => (0o120_777, target.as_bytes().into(), (0, 0)),
                Node::CharDev { major, minor, perm } => {
                    (0o020_000 | perm, (&[][..]).into(), (*major, *minor))
                }
            };
            let nlink = if matches!(node, Node::Dir) { 2 } else { 1 };
            write_entry(&mut w, ino as u32 + 1, mode, nlink, rdev, path, &data)?;
        }
        write_entry(&mut w, 0, 0, 1, (0, 0), "TRAILER!!!", &[])?;
        w.inner.flush()?;
        Ok(w.written)
    }
}

struct CountingWriter<W> {
    inner: W,
    written: u64,
}

impl<W: Write> CountingWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.inner.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad4(&mut self) -> Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }
}

fn write_entry<W: Write>(
    w: &mut CountingWriter<W>,
    ino: u32,
    mode: u32,
    nlink: u32,
    (rmajor, rminor): (u32, u32),
    name: &str,
    data: &[u8],
) -> Result<()> {
    let size = u32::try_from(data.len()).context("file too large for newc cpio")?;
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size,
        0,
        0,
        rmajor,
        rminor,
        name.len() as u32 + 1,
        0,
    ];
    let mut header = String::from("070701");
    for f in fields {
        header.push_str(&format!("{f:08x}"));
    }
    w.put(header.as_bytes())?;
    w.put(name.as_bytes())?;
    w.put(&[0])?;
    w.pad4()?;
    w.put(data)?;
    w.pad4()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_is_newc_and_aligned() {
        let mut c = Cpio::default();
        c.file("/bin/x", Source::Bytes(b"hello".to_vec()), 0o755);
        c.symlink("sbin", "bin");
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        let size = c.write(&dir).unwrap();
        let data = fs::read(&dir).unwrap();
        let _ = fs::remove_file(&dir);
        assert_eq!(size as usize, data.len());
        assert_eq!(size % 4, 0);
        assert!(data.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&data);
        assert!(text.contains("bin\0"));
        assert!(text.contains("bin/x\0"));
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!\0"));
        // "bin" comes before "bin/x".
        assert!(text.find("bin\0").unwrap() < text.find("bin/x\0").unwrap());
    }
}
