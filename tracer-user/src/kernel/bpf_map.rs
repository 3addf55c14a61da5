//! Another program's pinned BPF map, read by key: lookups and key iteration
//! of any key and value size (per-CPU values for every possible CPU).

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use aya::maps::MapData;

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

/// `union bpf_attr` as the element commands use it.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// A pinned map opened for reading.
pub struct PinnedMap {
    data: MapData,
    pub key_size: usize,
    pub value_size: usize,
    /// Bytes one lookup returns: per-CPU maps hold a value, padded to 8
    /// bytes, for every possible CPU.
    lookup_size: usize,
    pub per_cpu: bool,
}

impl PinnedMap {
    pub fn open(path: &Path) -> io::Result<PinnedMap> {
        let data = MapData::from_pin(path).map_err(io::Error::other)?;
        let info = data.info().map_err(io::Error::other)?;
        let per_cpu = matches!(
            info.map_type(),
            Ok(aya::maps::MapType::PerCpuHash
                | aya::maps::MapType::PerCpuArray
                | aya::maps::MapType::LruPerCpuHash)
        );
        let value_size = info.value_size() as usize;
        let cpus = if per_cpu {
            aya::util::nr_cpus().map_err(|(_, e)| e)?
        } else {
            1
        };
        Ok(PinnedMap {
            data,
            key_size: info.key_size() as usize,
            value_size,
            lookup_size: if per_cpu {
                value_size.div_ceil(8) * 8 * cpus
            } else {
                value_size
            },
            per_cpu,
        })
    }

    fn call(&self, cmd: libc::c_long, key: Option<&[u8]>, out: &mut [u8]) -> io::Result<bool> {
        let mut attr = ElemAttr {
            map_fd: self.data.fd().as_fd().as_raw_fd() as u32,
            key: key.map_or(0, |k| k.as_ptr() as u64),
            value: out.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: attr points at buffers of the map's key size and of the
        // size a lookup writes (checked by the callers), alive for the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                &mut attr as *mut ElemAttr,
                std::mem::size_of::<ElemAttr>(),
            )
        };
        if rc == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOENT) {
            return Ok(false);
        }
        Err(e)
    }

    /// The value of `key` as 8-byte little-endian words, one row per CPU
    /// (per-CPU counters); `None` where the map has no such key.
    pub fn lookup_u64s(&self, key: &[u8]) -> io::Result<Option<Vec<Vec<u64>>>> {
        let Some(buf) = self.lookup_raw(key)? else {
            return Ok(None);
        };
        let stride = self.stride();
        Ok(Some(
            buf.chunks(stride)
                .map(|c| {
                    c[..self.value_size]
                        .chunks_exact(8)
                        .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
                        .collect()
                })
                .collect(),
        ))
    }

    fn lookup_raw(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        if key.len() != self.key_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "key of {} bytes, the map's are {}",
                    key.len(),
                    self.key_size
                ),
            ));
        }
        let mut buf = vec![0u8; self.lookup_size];
        Ok(self
            .call(BPF_MAP_LOOKUP_ELEM, Some(key), &mut buf)?
            .then_some(buf))
    }

    /// Bytes between two CPUs' values in a lookup's buffer.
    fn stride(&self) -> usize {
        if self.per_cpu {
            self.value_size.div_ceil(8) * 8
        } else {
            self.value_size
        }
    }

    /// Every key in the map.
    pub fn keys(&self) -> io::Result<Vec<Vec<u8>>> {
        let mut keys = Vec::new();
        let mut next = vec![0u8; self.key_size];
        let mut prev: Option<Vec<u8>> = None;
        while self.call(BPF_MAP_GET_NEXT_KEY, prev.as_deref(), &mut next)? {
            keys.push(next.clone());
            prev = Some(next.clone());
        }
        Ok(keys)
    }
}
