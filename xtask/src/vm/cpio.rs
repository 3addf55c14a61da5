//! The initramfs: a newc cpio archive, collected as a list of entries and written in
//! one go (no cpio tool and no root needed, device nodes included).

use std::collections::BTreeMap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// One archive member, keyed by its absolute path in the guest.
enum Entry {
    Dir,
    /// A host file, copied as is.
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
    /// Adds host file `src` as `guest`, with its permissions.
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
        );
        Ok(())
    }

    pub fn add_data(&mut self, guest: &Path, bytes: Vec<u8>, mode: u32) {
        self.insert(guest, Entry::Data { bytes, mode });
    }

    pub fn add_dir(&mut self, guest: &Path) {
        self.insert(guest, Entry::Dir);
    }

    pub fn add_char_dev(&mut self, guest: &Path, major: u32, minor: u32) {
        self.insert(guest, Entry::CharDev { major, minor });
    }

    /// Stable hash of everything that would be written: paths, generated contents, and
    /// size + mtime of host files.
    pub fn fingerprint(&self) -> Result<u64> {
        let mut h = Fnv::default();
        for (path, entry) in &self.entries {
            path.hash(&mut h);
            match entry {
                Entry::Dir => 0u8.hash(&mut h),
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

    /// Writes the archive (uncompressed newc: the kernel unpacks it fastest).
    pub fn write(&self, out: &Path) -> Result<()> {
        let tmp = out.with_extension("partial");
        let mut w = BufWriter::new(File::create(&tmp)?);
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            write_entry(&mut w, ino as u32 + 1, path, entry)
                .with_context(|| format!("writing {} to the initramfs", path.display()))?;
        }
        write_header(&mut w, &Header::default(), "TRAILER!!!")?;
        w.into_inner()?.sync_all()?;
        std::fs::rename(&tmp, out)?;
        Ok(())
    }

    /// Inserts `entry`, and a directory for each parent not yet there.
    fn insert(&mut self, guest: &Path, entry: Entry) {
        for parent in guest.ancestors().skip(1) {
            if parent != Path::new("/") {
                self.entries
                    .entry(parent.to_path_buf())
                    .or_insert(Entry::Dir);
            }
        }
        self.entries.insert(guest.to_path_buf(), entry);
    }
}

/// The fields of a newc header that vary here.
#[derive(Default)]
struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    size: usize,
    rdev: (u32, u32),
}

fn write_entry(w: &mut impl Write, ino: u32, path: &Path, entry: &Entry) -> Result<()> {
    let name = path
        .to_str()
        .context("non-UTF-8 path")?
        .trim_start_matches('/');
    let h = |mode, size| Header {
        ino,
        mode,
        nlink: 1,
        size,
        rdev: (0, 0),
    };
    match entry {
        Entry::Dir => write_header(w, &h(0o040755, 0), name),
        Entry::CharDev { major, minor } => {
            let header = Header {
                rdev: (*major, *minor),
                ..h(0o020600, 0)
            };
            write_header(w, &header, name)
        }
        Entry::Data { bytes, mode } => {
            write_header(w, &h(0o100000 | mode, bytes.len()), name)?;
            w.write_all(bytes)?;
            pad(w, bytes.len())
        }
        Entry::File { src, mode } => {
            let mut f = File::open(src)?;
            let len = f.metadata()?.len() as usize;
            write_header(w, &h(0o100000 | mode, len), name)?;
            if std::io::copy(&mut f, w)? as usize != len {
                bail!("{} changed while being copied", src.display());
            }
            pad(w, len)
        }
    }
}

fn write_header(w: &mut impl Write, h: &Header, name: &str) -> Result<()> {
    // newc: magic, 13 eight-digit hex fields (ino, mode, uid, gid, nlink, mtime,
    // filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check), the
    // NUL-terminated name, padding to 4 bytes.
    let fields = [
        h.ino,
        h.mode,
        0,
        0,
        h.nlink,
        0,
        h.size as u32,
        0,
        0,
        h.rdev.0,
        h.rdev.1,
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

fn pad(w: &mut impl Write, len: usize) -> Result<()> {
    w.write_all(&[0u8; 3][..(4 - len % 4) % 4])?;
    Ok(())
}

/// FNV-1a: a hash that stays the same across Rust versions (cache keys use it).
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
