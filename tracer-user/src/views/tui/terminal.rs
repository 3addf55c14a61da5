//! Taking the terminal over and always giving it back: raw mode, alternate
//! screen and hidden cursor on entry; restored on quit, error, panic (a panic
//! hook) and when the sink is dropped after a signal ended the session.
//!
//! Keys are read here too ([`Keys`]), not by crossterm's event reader.
//!
//! While the TUI is up, stderr (when it is the terminal too) goes to a pipe:
//! warnings printed by the session would otherwise scribble over the screen.
//! The view shows them as messages, and the last ones are printed again once
//! the terminal is back.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Stdout, Write};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, Once};

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::cursor::{Hide, Show};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};

pub type Term = Terminal<CrosstermBackend<Stdout>>;

static ACTIVE: AtomicBool = AtomicBool::new(false);
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);
/// Lines written to stderr while the TUI was up (the last few).
static CAPTURED: Mutex<Captured> = Mutex::new(Captured {
    lines: VecDeque::new(),
    unseen: 0,
});
const KEEP_LINES: usize = 20;
static READER: Mutex<Option<std::thread::JoinHandle<()>>> = Mutex::new(None);

struct Captured {
    lines: VecDeque<String>,
    /// How many of the last lines the view has not shown yet.
    unseen: usize,
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// Raw mode, alternate screen, hidden cursor; stderr captured.
pub fn enter() -> io::Result<Term> {
    install_panic_hook();
    enable_raw_mode()?;
    ACTIVE.store(true, Ordering::SeqCst);
    let setup = (|| {
        execute!(io::stdout(), EnterAlternateScreen, Hide)?;
        let mut term = Terminal::new(CrosstermBackend::new(io::stdout()))?;
        term.clear()?;
        Ok(term)
    })();
    match setup {
        Ok(term) => {
            capture_stderr();
            Ok(term)
        }
        Err(e) => {
            restore();
            Err(e)
        }
    }
}

/// Gives the terminal back; safe to call any number of times, from anywhere.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
        let _ = io::stdout().flush();
    }
    let fd = SAVED_STDERR.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: plain fd syscalls on descriptors this module owns.
        unsafe {
            libc::dup2(fd, 2);
            libc::close(fd);
        }
    }
}

fn capture_stderr() {
    // SAFETY: isatty/dup/pipe2/dup2/close on small integers; no memory involved.
    unsafe {
        if libc::isatty(2) != 1 {
            return;
        }
        let saved = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3);
        if saved < 0 {
            return;
        }
        let mut fds = [0; 2];
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            libc::close(saved);
            return;
        }
        if libc::dup2(fds[1], 2) < 0 {
            libc::close(saved);
            libc::close(fds[0]);
            libc::close(fds[1]);
            return;
        }
        libc::close(fds[1]);
        SAVED_STDERR.store(saved, Ordering::SeqCst);
        let read_end = std::fs::File::from_raw_fd(fds[0]);
        let spawned = std::thread::Builder::new()
            .name("calitrace-stderr".into())
            .spawn(move || {
                for line in BufReader::new(read_end).lines().map_while(Result::ok) {
                    let mut c = CAPTURED.lock().unwrap_or_else(|e| e.into_inner());
                    c.lines.push_back(line);
                    c.unseen = (c.unseen + 1).min(KEEP_LINES);
                    while c.lines.len() > KEEP_LINES {
                        c.lines.pop_front();
                    }
                }
            });
        match spawned {
            Ok(h) => *READER.lock().unwrap_or_else(|e| e.into_inner()) = Some(h),
            // Nobody would read the pipe: put stderr back.
            Err(_) => restore_stderr_only(),
        }
    }
}

fn restore_stderr_only() {
    let fd = SAVED_STDERR.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: see restore().
        unsafe {
            libc::dup2(fd, 2);
            libc::close(fd);
        }
    }
}

/// The newest captured line the view has not shown yet.
pub fn newest_unseen() -> Option<String> {
    let mut c = CAPTURED.lock().unwrap_or_else(|e| e.into_inner());
    if c.unseen == 0 {
        return None;
    }
    c.unseen = 0;
    c.lines.back().cloned()
}

/// Everything captured, for printing once the terminal is back (after
/// [`restore`]; waits briefly for the reader to see the end of the pipe).
pub fn take_captured() -> Vec<String> {
    let reader = READER.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(h) = reader {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
        while !h.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if h.is_finished() {
            let _ = h.join();
        }
    }
    let mut c = CAPTURED.lock().unwrap_or_else(|e| e.into_inner());
    c.unseen = 0;
    c.lines.drain(..).collect()
}

/// Keys from the terminal, read and parsed here rather than by crossterm's
/// event reader: that one spins forever on a terminal that hung up, and can
/// leave a key unread when a resize signal comes with it.
pub struct Keys {
    fd: i32,
    _tty: Option<std::fs::File>,
    /// An escape sequence cut in two by a read.
    pending: Vec<u8>,
}

impl Keys {
    /// Stdin when it is the terminal, else `/dev/tty`.
    pub fn open() -> io::Result<Keys> {
        // SAFETY: isatty on fd 0.
        if unsafe { libc::isatty(0) } == 1 {
            return Ok(Keys {
                fd: 0,
                _tty: None,
                pending: Vec::new(),
            });
        }
        let tty = std::fs::File::open("/dev/tty")?;
        Ok(Keys {
            fd: std::os::fd::AsRawFd::as_raw_fd(&tty),
            _tty: Some(tty),
            pending: Vec::new(),
        })
    }

    /// Waits up to `wait` for keys. An error when the terminal went away.
    pub fn wait(&mut self, wait: std::time::Duration) -> io::Result<Vec<KeyEvent>> {
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd that we own.
        let n = unsafe { libc::poll(&mut pfd, 1, wait.as_millis().min(1000) as i32) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::Interrupted => Ok(Vec::new()),
                _ => Err(e),
            };
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        if pfd.revents & libc::POLLIN == 0 {
            return Err(io::Error::other("the terminal went away"));
        }
        let mut buf = [0u8; 1024];
        // SAFETY: reads into a buffer of that length.
        let got = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => Ok(Vec::new()),
                _ => Err(e),
            };
        }
        if got == 0 {
            return Err(io::Error::other("the terminal went away"));
        }
        self.pending.extend_from_slice(&buf[..got as usize]);
        let (keys, used) = parse_keys(&self.pending);
        self.pending.drain(..used);
        if self.pending.len() > 64 {
            self.pending.clear(); // not a sequence we know
        }
        Ok(keys)
    }
}

/// The terminal's size in columns and rows, when it has one.
pub fn size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize we pass.
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some((ws.ws_col, ws.ws_row))
}

/// Keys in `bytes`, and how many bytes they used: an escape sequence cut off
/// at the end is left for the next read (a lone ESC at the end is Esc).
pub fn parse_keys(bytes: &[u8]) -> (Vec<KeyEvent>, usize) {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        // Incomplete: the rest comes with the next read.
        let Some((k, len)) = next_key(&bytes[i..]) else {
            break;
        };
        out.extend(k);
        i += len;
    }
    (out, i)
}

fn plain(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

/// The key at the start of `bytes` (none for bytes that are no key) and how
/// many bytes it took; `None` when the bytes end inside it.
fn next_key(bytes: &[u8]) -> Option<(Option<KeyEvent>, usize)> {
    let b = bytes[0];
    let one = |c| Some((Some(plain(c)), 1));
    match b {
        0x1b => match bytes.get(1) {
            None => one(KeyCode::Esc),
            Some(b'[') => csi(bytes),
            Some(b'O') => {
                let f = *bytes.get(2)?;
                Some((ss3(f).map(plain), 3))
            }
            // Esc, then whatever follows (Alt+x reads as Esc, x).
            Some(_) => one(KeyCode::Esc),
        },
        b'\r' | b'\n' => one(KeyCode::Enter),
        b'\t' => one(KeyCode::Tab),
        0x7f | 0x08 => one(KeyCode::Backspace),
        0x01..=0x1a => Some((
            Some(KeyEvent::new(
                KeyCode::Char((b'a' + b - 1) as char),
                KeyModifiers::CONTROL,
            )),
            1,
        )),
        0x00..=0x1f => Some((None, 1)),
        _ => utf8_char(bytes),
    }
}

/// `ESC [ params final`: cursor, editing and function keys.
fn csi(bytes: &[u8]) -> Option<(Option<KeyEvent>, usize)> {
    let end = 2 + bytes[2..].iter().position(|b| !(0x30..=0x3f).contains(b))?;
    let params = std::str::from_utf8(&bytes[2..end]).unwrap_or("");
    let first = params.split(';').next().unwrap_or("");
    let code = match (bytes[end], first) {
        (b'~', "1" | "7") => Some(KeyCode::Home),
        (b'~', "4" | "8") => Some(KeyCode::End),
        (b'Z', _) => Some(KeyCode::BackTab),
        (b'~', "3") => Some(KeyCode::Delete),
        (b'~', "5") => Some(KeyCode::PageUp),
        (b'~', "6") => Some(KeyCode::PageDown),
        (b'~', "11") => Some(KeyCode::F(1)),
        (f, _) => ss3(f).filter(|c| *c != KeyCode::F(1)),
    };
    Some((code.map(plain), end + 1))
}

/// The final byte of `ESC O x` (and of the cursor keys' CSI form).
fn ss3(f: u8) -> Option<KeyCode> {
    match f {
        b'A' => Some(KeyCode::Up),
        b'B' => Some(KeyCode::Down),
        b'C' => Some(KeyCode::Right),
        b'D' => Some(KeyCode::Left),
        b'H' => Some(KeyCode::Home),
        b'F' => Some(KeyCode::End),
        b'P' => Some(KeyCode::F(1)),
        _ => None,
    }
}

/// One UTF-8 encoded character.
fn utf8_char(bytes: &[u8]) -> Option<(Option<KeyEvent>, usize)> {
    let len = match bytes[0] {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    };
    let c = std::str::from_utf8(bytes.get(..len)?)
        .ok()
        .and_then(|s| s.chars().next());
    Some((c.map(|c| plain(KeyCode::Char(c))), len))
}
