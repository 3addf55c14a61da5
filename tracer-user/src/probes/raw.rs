//! Raw bpf(2) loading for the programs aya 0.14 cannot load itself: BPF
//! netfilter programs (no program type in aya) and fexit programs on functions
//! of kernel modules (aya looks the target up in vmlinux's BTF only and cannot
//! pass `attach_btf_obj_fd`).
//!
//! The programs stay in calitrace's one eBPF object. [`Relocated`] parses the
//! same bytes aya loaded with `aya-obj` (the crate aya parses and relocates
//! with, same version) and points their map references at the maps aya
//! created, so events reach the same ring buffer and the same filter applies.
//! Every descriptor becomes an [`OwnedFd`] as soon as the kernel returns it, so
//! programs and links close on drop, on every error path and when the process
//! dies (nothing is pinned).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, Result, anyhow};
use aya::Ebpf;
use aya::maps::{Map, MapData};
use aya_obj::generated::{
    bpf_attach_type, bpf_attr, bpf_btf_info, bpf_cmd, bpf_insn, bpf_prog_type,
};

/// calitrace's eBPF object, relocated against the maps aya created for it.
/// Valid while those maps are open.
pub struct Relocated {
    obj: aya_obj::Object,
    /// (map name, fd of aya's map) for every map of the object.
    map_fds: Vec<(String, RawFd)>,
}

impl Relocated {
    /// Parses `object` (the bytes aya loaded into `ebpf`) and relocates every
    /// program's map references and calls. Call before any map is taken out of
    /// `ebpf`.
    pub fn new(object: &[u8], ebpf: &Ebpf) -> Result<Relocated> {
        let mut obj = aya_obj::Object::parse(object).context("parsing the eBPF object")?;
        let defs = std::mem::take(&mut obj.maps);
        let mut fds = Vec::new();
        for (name, def) in &defs {
            let map = ebpf
                .map(name)
                .with_context(|| format!("map {name} is not loaded"))?;
            fds.push((name.as_str(), map_data(map).fd().as_fd().as_raw_fd(), def));
        }
        let map_fds = fds.iter().map(|(n, fd, _)| (n.to_string(), *fd)).collect();
        let text_sections = obj.functions.keys().map(|(section, _)| *section).collect();
        obj.relocate_maps(fds.into_iter(), &text_sections)
            .map_err(|e| anyhow!("relocating maps: {e}"))?;
        obj.relocate_calls(&text_sections)
            .map_err(|e| anyhow!("relocating calls: {e}"))?;
        Ok(Relocated { obj, map_fds })
    }

    /// The instructions of program `name`, subprograms included.
    pub fn program(&self, name: &str) -> Result<Vec<bpf_insn>> {
        let prog = self
            .obj
            .programs
            .get(name)
            .with_context(|| format!("no program {name} in the eBPF object"))?;
        Ok(self
            .obj
            .functions
            .get(&prog.function_key())
            .with_context(|| format!("program {name} has no code"))?
            .instructions
            .clone())
    }

    pub fn license(&self) -> &CString {
        &self.obj.license
    }

    /// The fd of aya's map `name`, as it appears in relocated instructions.
    pub fn map_fd(&self, name: &str) -> Option<RawFd> {
        self.map_fds
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, fd)| *fd)
    }
}

/// What BPF_PROG_LOAD is asked to load.
pub struct ProgSpec<'a> {
    pub prog_type: bpf_prog_type,
    pub attach_type: bpf_attach_type,
    /// BTF id of the traced function (tracing programs), else 0.
    pub attach_btf_id: u32,
    /// The module's BTF object when the traced function is in a module.
    pub attach_btf_obj: Option<&'a OwnedFd>,
    /// Shown by `bpftool prog` (at most 15 bytes are kept).
    pub name: &'a str,
    pub insns: &'a [bpf_insn],
    pub license: &'a CString,
}

/// Why a program did not load.
#[derive(Debug)]
pub enum LoadError {
    /// BPF_PROG_LOAD failed: errno and the verifier log's last line.
    Kernel(io::Error, Option<String>),
    Other(anyhow::Error),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Kernel(e, Some(log)) => write!(f, "BPF_PROG_LOAD: {e} (verifier: {log})"),
            LoadError::Kernel(e, None) => write!(f, "BPF_PROG_LOAD: {e}"),
            LoadError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

pub fn prog_load(spec: &ProgSpec<'_>) -> Result<OwnedFd, LoadError> {
    let attempt = |log: Option<&mut Vec<u8>>| -> io::Result<OwnedFd> {
        // SAFETY: all-zero is a valid bpf_attr (plain integers).
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: writing the BPF_PROG_LOAD member of the union.
        let a = unsafe { &mut attr.__bindgen_anon_3 };
        a.prog_type = spec.prog_type as u32;
        a.expected_attach_type = spec.attach_type as u32;
        a.attach_btf_id = spec.attach_btf_id;
        if let Some(fd) = spec.attach_btf_obj {
            a.__bindgen_anon_1.attach_btf_obj_fd = fd.as_raw_fd() as u32;
        }
        a.insns = spec.insns.as_ptr() as u64;
        a.insn_cnt = spec.insns.len() as u32;
        a.license = spec.license.as_ptr() as u64;
        for (dst, src) in a.prog_name.iter_mut().take(15).zip(spec.name.bytes()) {
            *dst = src as libc::c_char;
        }
        if let Some(buf) = log {
            a.log_level = 1;
            a.log_buf = buf.as_mut_ptr() as u64;
            a.log_size = buf.len() as u32;
        }
        sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr).map(owned)
    };
    match attempt(None) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            // Again with a log, for the verifier's reason. Since 6.4 a full
            // log buffer keeps the end, which is the part that says why.
            let mut buf = vec![0u8; 1 << 20];
            match attempt(Some(&mut buf)) {
                Ok(fd) => Ok(fd),
                Err(_) => Err(LoadError::Kernel(e, last_log_line(&buf))),
            }
        }
    }
}

/// Attaches a loaded fentry/fexit program where its BTF id says
/// (BPF_RAW_TRACEPOINT_OPEN without a name: kernel 5.5 and later).
pub fn tracing_attach(prog: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: all-zero is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.raw_tracepoint.name = 0;
    attr.raw_tracepoint.prog_fd = prog.as_raw_fd() as u32;
    sys_bpf(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN, &mut attr).map(owned)
}

/// The kernel's BTF object of module `module` (e.g. `nf_tables`), needed to
/// trace a function of that module. The name of a BTF object is reported
/// since kernel 5.11, which also added module BTF.
pub fn module_btf(module: &str) -> io::Result<OwnedFd> {
    let mut id = 0u32;
    loop {
        // SAFETY: all-zero is a valid bpf_attr.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.__bindgen_anon_6.__bindgen_anon_1.start_id = id;
        sys_bpf(bpf_cmd::BPF_BTF_GET_NEXT_ID, &mut attr).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOENT) {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("the kernel has no BTF object named {module}"),
                )
            } else {
                e
            }
        })?;
        // SAFETY: the kernel filled the GET_NEXT_ID member.
        id = unsafe { attr.__bindgen_anon_6.next_id };
        // SAFETY: all-zero is a valid bpf_attr.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.__bindgen_anon_6.__bindgen_anon_1.btf_id = id;
        let fd = match sys_bpf(bpf_cmd::BPF_BTF_GET_FD_BY_ID, &mut attr) {
            Ok(fd) => owned(fd),
            // Gone in between (a module unloaded).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        if btf_name(&fd)?.as_deref() == Some(module) {
            return Ok(fd);
        }
    }
}

fn btf_name(fd: &OwnedFd) -> io::Result<Option<String>> {
    let mut name = [0u8; 64];
    // SAFETY: all-zero is a valid bpf_btf_info.
    let mut info: bpf_btf_info = unsafe { std::mem::zeroed() };
    info.name = name.as_mut_ptr() as u64;
    info.name_len = name.len() as u32;
    // SAFETY: all-zero is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = size_of::<bpf_btf_info>() as u32;
    attr.info.info = &mut info as *mut bpf_btf_info as u64;
    sys_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let end = name.iter().position(|&b| b == 0).unwrap_or(0);
    Ok((end > 0).then(|| String::from_utf8_lossy(&name[..end]).into_owned()))
}

pub fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<RawFd> {
    // SAFETY: `attr` is a valid, fully initialised bpf_attr of the size passed;
    // pointers inside it point at live buffers of the sizes given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            size_of::<bpf_attr>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as RawFd)
    }
}

/// A new fd from the kernel, owned from here on (closed on drop).
pub fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: the kernel just returned this fd and nothing else holds it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The verifier log's last non-empty line.
pub fn last_log_line(buf: &[u8]) -> Option<String> {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end])
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(str::to_string)
}

/// The `MapData` inside any kind of aya map.
pub fn map_data(map: &Map) -> &MapData {
    match map {
        Map::Array(m)
        | Map::ArrayOfMaps(m)
        | Map::BloomFilter(m)
        | Map::CgroupArray(m)
        | Map::CgroupStorage(m)
        | Map::CgrpStorage(m)
        | Map::CpuMap(m)
        | Map::DevMap(m)
        | Map::DevMapHash(m)
        | Map::HashMap(m)
        | Map::HashOfMaps(m)
        | Map::InodeStorage(m)
        | Map::LpmTrie(m)
        | Map::LruHashMap(m)
        | Map::PerCpuArray(m)
        | Map::PerCpuCgroupStorage(m)
        | Map::PerCpuHashMap(m)
        | Map::PerCpuLruHashMap(m)
        | Map::PerfEventArray(m)
        | Map::ProgramArray(m)
        | Map::Queue(m)
        | Map::ReusePortSockArray(m)
        | Map::RingBuf(m)
        | Map::SockHash(m)
        | Map::SockMap(m)
        | Map::SkStorage(m)
        | Map::Stack(m)
        | Map::StackTraceMap(m)
        | Map::Unsupported(m)
        | Map::XskMap(m) => m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_log_tail() {
        let log = b"0: R1=ctx\n1: (85) call bpf_foo#1\ninvalid func unknown#1\n\n\0junk";
        assert_eq!(
            last_log_line(log).as_deref(),
            Some("invalid func unknown#1")
        );
        assert_eq!(last_log_line(b"\0"), None);
    }
}
