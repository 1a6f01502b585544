//! Why an attached QEMU stopped, from its QMP `SHUTDOWN` event.
//!
//! Status 0 is what QEMU returns for a guest reset under `-no-reboot` (a
//! triple fault: the kernel failed) and for a user's Ctrl-A X (a clean
//! quit). QEMU's machine protocol tells them apart: before exiting it sends
//! `{"event": "SHUTDOWN", "data": {"guest": ..., "reason": "guest-reset"}}`
//! (or `host-qmp-quit`, `host-signal`, ...; QAPI `ShutdownCause`). The runner
//! listens on a loopback port and QEMU connects to it as a client
//! (`server=off`) while it starts, before the guest runs, so no event can be
//! missed. The monitor is not a device: the guest sees the same machine.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A bound port QEMU will connect its monitor to.
pub struct QmpListener {
    listener: TcpListener,
    port: u16,
}

impl QmpListener {
    pub fn bind() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        Ok(Self { listener, port })
    }

    /// The QEMU arguments that connect its QMP monitor here.
    pub fn qemu_args(&self) -> [String; 4] {
        [
            "-chardev".into(),
            format!("socket,id=vireo-qmp,host=127.0.0.1,port={},server=off", self.port),
            "-mon".into(),
            "chardev=vireo-qmp,mode=control".into(),
        ]
    }

    /// Starts collecting events in a thread.
    pub fn watch(self) -> ShutdownWatch {
        let qemu_exited = Arc::new(AtomicBool::new(false));
        let exited = Arc::clone(&qemu_exited);
        let thread = thread::spawn(move || watch(&self.listener, &exited));
        ShutdownWatch { qemu_exited, thread }
    }
}

/// The thread reading QEMU's events.
pub struct ShutdownWatch {
    qemu_exited: Arc<AtomicBool>,
    thread: JoinHandle<Option<String>>,
}

impl ShutdownWatch {
    /// Call after QEMU has exited: the `reason` of its `SHUTDOWN` event,
    /// `None` if it sent none (gdb's `kill`, a crash, a fake QEMU).
    pub fn reason(self) -> Option<String> {
        self.qemu_exited.store(true, Ordering::SeqCst);
        self.thread.join().ok().flatten()
    }
}

/// How long to keep reading after QEMU exited, for a last event still in
/// flight on the socket.
const AFTER_EXIT: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(50);

fn watch(listener: &TcpListener, qemu_exited: &AtomicBool) -> Option<String> {
    listener.set_nonblocking(true).ok()?;
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if qemu_exited.load(Ordering::SeqCst) {
                    return None;
                }
                thread::sleep(POLL);
            }
            Err(_) => return None,
        }
    };
    read_events(stream, qemu_exited)
}

fn read_events(stream: TcpStream, qemu_exited: &AtomicBool) -> Option<String> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(POLL)).ok()?;
    let mut writer = stream.try_clone().ok()?;
    // Events flow only after capabilities negotiation (QMP spec, 2.2).
    writer.write_all(b"{\"execute\": \"qmp_capabilities\"}\n").ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut reason = None;
    let mut exited_at: Option<Instant> = None;
    loop {
        match reader.read_line(&mut line) {
            Ok(0) => return reason,
            Ok(_) => {
                if line.ends_with('\n') {
                    reason = shutdown_reason(&line).or(reason);
                    line.clear();
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if qemu_exited.load(Ordering::SeqCst) {
                    let since = *exited_at.get_or_insert_with(Instant::now);
                    if since.elapsed() >= AFTER_EXIT {
                        return reason;
                    }
                }
            }
            Err(_) => return reason,
        }
    }
}

/// The `reason` of a `SHUTDOWN` event line; QMP is JSON, but these lines are
/// flat enough to read without a JSON parser.
fn shutdown_reason(line: &str) -> Option<String> {
    let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    if !compact.contains("\"event\":\"SHUTDOWN\"") {
        return None;
    }
    let (_, rest) = compact.split_once("\"reason\":\"")?;
    let (reason, _) = rest.split_once('"')?;
    Some(reason.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_reason_of_shutdown_only() {
        let event = r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}"#;
        assert_eq!(shutdown_reason(event).as_deref(), Some("host-qmp-quit"));
        assert_eq!(
            shutdown_reason(r#"{"event": "RESET", "data": {"reason": "guest-reset"}}"#),
            None
        );
        assert_eq!(shutdown_reason(r#"{"return": {}}"#), None);
    }

    /// A QEMU stand-in on the other end of the socket.
    #[test]
    fn event_from_a_client_is_collected() {
        let listener = QmpListener::bind().unwrap();
        let port = listener.port;
        let watch = listener.watch();
        let mut qemu = TcpStream::connect(("127.0.0.1", port)).unwrap();
        qemu.write_all(b"{\"QMP\": {\"version\": {}}}\n").unwrap();
        let mut caps = String::new();
        BufReader::new(qemu.try_clone().unwrap()).read_line(&mut caps).unwrap();
        assert!(caps.contains("qmp_capabilities"));
        qemu.write_all(b"{\"return\": {}}\n{\"event\": \"SHUTDOWN\", \"data\": {\"guest\": true, \"reason\": \"guest-reset\"}}\n").unwrap();
        drop(qemu);
        assert_eq!(watch.reason().as_deref(), Some("guest-reset"));
    }

    #[test]
    fn no_client_means_no_reason() {
        let watch = QmpListener::bind().unwrap().watch();
        assert_eq!(watch.reason(), None);
    }
}
