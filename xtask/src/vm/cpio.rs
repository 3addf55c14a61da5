//! The initramfs: a newc cpio archive, collected as a list of entries and written in
//! one go. Host paths are copied together with every symlink on the way to them, so
//! that merged-usr links (`/lib -> usr/lib`) and alternatives
//! (`/usr/sbin/iptables -> /etc/alternatives/iptables -> ...`) look the same in the
//! guest as on the host.

use std::collections::BTreeMap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

/// One archive member, keyed by its absolute path in the guest.
enum Entry {
    Dir,
    Symlink(PathBuf),
    /// A host file copied as is.
    File {
        src: PathBuf,
        mode: u32,
    },
    /// Generated content.
    Data {
        bytes: Vec<u8>,
        mode: u32,
    },
    CharDev {
        major: u32,
        minor: u32,
    },
}

#[derive(Default)]
pub struct Archive {
    entries: BTreeMap<PathBuf, Entry>,
}

impl Archive {
    /// Adds a host path at the same place in the guest: its parent directories, every
    /// symlink met on the way (and what it points to), and finally the file or (empty)
    /// directory itself. Returns the path with all symlinks resolved.
    pub fn add_host_path(&mut self, path: &Path) -> Result<PathBuf> {
        if path == Path::new("/") {
            return Ok(PathBuf::from("/"));
        }
        let parent = self.add_host_path(path.parent().context("relative path")?)?;
        let name = path.file_name().context("path ends in ..")?;
        let here = parent.join(name);
        let meta = std::fs::symlink_metadata(&here)
            .with_context(|| format!("{} (for the guest image)", here.display()))?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&here)?;
            let resolved = normalize(&parent.join(&target));
            self.entries.insert(here, Entry::Symlink(target));
            return self.add_host_path(&resolved);
        }
        if !self.entries.contains_key(&here) {
            let entry = if meta.is_dir() {
                Entry::Dir
            } else if meta.is_file() {
                Entry::File {
                    src: here.clone(),
                    mode: meta.permissions().mode() & 0o7777,
                }
            } else {
                bail!("{}: neither file, directory nor symlink", here.display());
            };
            self.entries.insert(here.clone(), entry);
        }
        Ok(here)
    }

    /// Adds a host directory with everything below it.
    pub fn add_host_tree(&mut self, dir: &Path) -> Result<()> {
        let real = self.add_host_path(dir)?;
        if !real.is_dir() {
            return Ok(());
        }
        for entry in std::fs::read_dir(&real)? {
            self.add_host_tree(&entry?.path())?;
        }
        Ok(())
    }

    /// Adds host file `src` as `guest` (whose parents must not be symlinks).
    pub fn add_file_as(&mut self, guest: &Path, src: &Path) -> Result<()> {
        let mode = std::fs::metadata(src)
            .with_context(|| src.display().to_string())?
            .permissions()
            .mode()
            & 0o7777;
        self.insert(
            guest,
            Entry::File {
                src: src.to_path_buf(),
                mode,
            },
        )
    }

    pub fn add_data(&mut self, guest: &Path, bytes: Vec<u8>, mode: u32) -> Result<()> {
        self.insert(guest, Entry::Data { bytes, mode })
    }

    pub fn add_symlink(&mut self, guest: &Path, target: &Path) -> Result<()> {
        self.insert(guest, Entry::Symlink(target.to_path_buf()))
    }

    pub fn add_dir(&mut self, guest: &Path) -> Result<()> {
        self.insert(guest, Entry::Dir)
    }

    pub fn add_char_dev(&mut self, guest: &Path, major: u32, minor: u32) -> Result<()> {
        self.insert(guest, Entry::CharDev { major, minor })
    }

    /// `guest` with the archive's own symlinks resolved (like `realpath` in the guest).
    pub fn resolve(&self, guest: &Path) -> PathBuf {
        self.resolve_at_depth(guest, 0)
    }

    fn resolve_at_depth(&self, guest: &Path, depth: u32) -> PathBuf {
        let mut cur = PathBuf::from("/");
        for comp in guest.components() {
            let Component::Normal(name) = comp else {
                continue;
            };
            let next = cur.join(name);
            cur = match self.entries.get(&next) {
                Some(Entry::Symlink(t)) if depth < 40 => {
                    self.resolve_at_depth(&normalize(&cur.join(t)), depth + 1)
                }
                _ => next,
            };
        }
        cur
    }

    /// Whether `guest` (after resolving symlinks) exists in the archive.
    pub fn exists(&self, guest: &Path) -> bool {
        let real = self.resolve(guest);
        real == Path::new("/") || self.entries.contains_key(&real)
    }

    /// Stable hash of everything that would be written: paths, link targets, generated
    /// contents, and size + mtime of host files.
    pub fn fingerprint(&self) -> Result<u64> {
        let mut h = Fnv::default();
        for (path, entry) in &self.entries {
            path.hash(&mut h);
            match entry {
                Entry::Dir => 0u8.hash(&mut h),
                Entry::Symlink(t) => t.hash(&mut h),
                Entry::File { src, mode } => {
                    let m = std::fs::metadata(src).with_context(|| src.display().to_string())?;
                    (src, mode, m.len(), m.mtime(), m.mtime_nsec()).hash(&mut h);
                }
                Entry::Data { bytes, mode } => (bytes, mode).hash(&mut h),
                Entry::CharDev { major, minor } => (major, minor).hash(&mut h),
            }
        }
        Ok(h.finish())
    }

    /// Writes the archive (uncompressed newc, as the kernel unpacks it fastest).
    pub fn write(&self, out: &Path) -> Result<()> {
        let tmp = out.with_extension("partial");
        let mut w = BufWriter::new(File::create(&tmp)?);
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            write_entry(&mut w, ino as u32 + 1, path, entry)
                .with_context(|| format!("writing {} to the image", path.display()))?;
        }
        write_header(&mut w, 0, 0, 0, 0, (0, 0), "TRAILER!!!")?;
        w.into_inner()?.sync_all()?;
        std::fs::rename(&tmp, out)?;
        Ok(())
    }

    fn insert(&mut self, guest: &Path, entry: Entry) -> Result<()> {
        let mut cur = PathBuf::from("/");
        let parent = guest.parent().context("no parent")?;
        for comp in parent.components().skip(1) {
            cur.push(comp);
            match self.entries.get(&cur) {
                None => {
                    self.entries.insert(cur.clone(), Entry::Dir);
                }
                Some(Entry::Dir) => {}
                Some(_) => bail!(
                    "{}: {} is not a directory in the image (use the resolved path)",
                    guest.display(),
                    cur.display()
                ),
            }
        }
        self.entries.insert(guest.to_path_buf(), entry);
        Ok(())
    }
}

fn write_entry(w: &mut impl Write, ino: u32, path: &Path, entry: &Entry) -> Result<()> {
    let name = path
        .to_str()
        .context("non-UTF-8 path")?
        .trim_start_matches('/');
    match entry {
        Entry::Dir => write_header(w, ino, 0o040755, 2, 0, (0, 0), name),
        Entry::CharDev { major, minor } => {
            write_header(w, ino, 0o020600, 1, 0, (*major, *minor), name)
        }
        Entry::Symlink(t) => {
            let t = t.to_str().context("non-UTF-8 link")?.as_bytes();
            write_header(w, ino, 0o120777, 1, t.len(), (0, 0), name)?;
            write_padded(w, t)
        }
        Entry::Data { bytes, mode } => {
            write_header(w, ino, 0o100000 | mode, 1, bytes.len(), (0, 0), name)?;
            write_padded(w, bytes)
        }
        Entry::File { src, mode } => {
            let mut f = File::open(src)?;
            let len = f.metadata()?.len() as usize;
            write_header(w, ino, 0o100000 | mode, 1, len, (0, 0), name)?;
            let copied = std::io::copy(&mut f, w)? as usize;
            if copied != len {
                bail!("{} changed while being copied", src.display());
            }
            pad(w, len)
        }
    }
}

fn write_header(
    w: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: usize,
    rdev: (u32, u32),
    name: &str,
) -> Result<()> {
    // newc: magic, then 13 eight-digit hex fields, then the NUL-terminated name.
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    let mut header = String::from("070701");
    for f in fields {
        header.push_str(&format!("{f:08x}"));
    }
    w.write_all(header.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad(w, header.len() + name.len() + 1)
}

fn write_padded(w: &mut impl Write, bytes: &[u8]) -> Result<()> {
    w.write_all(bytes)?;
    pad(w, bytes.len())
}

fn pad(w: &mut impl Write, len: usize) -> Result<()> {
    w.write_all(&[0u8; 3][..(4 - len % 4) % 4])?;
    Ok(())
}

/// Removes `.` and `..` lexically (the path's directories have no symlinks left).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for comp in path.components() {
        match comp {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// FNV-1a: a hash that stays the same across Rust versions (the cache keys use it).
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
