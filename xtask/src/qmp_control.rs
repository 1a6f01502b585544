//! A QMP client that sends commands (qmp.rs only listens for QEMU's
//! `SHUTDOWN` event): QEMU serves `-qmp unix:<path>,server=on,wait=off`
//! and the runner connects once the socket exists. Commands go one at a
//! time; events that arrive in between are skipped. The blk checks resize
//! and throttle drives with it; the pixel checks take screendumps, type
//! keys and hand QEMU a socket for its D-Bus display (`getfd`).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// How long QEMU gets to answer a command.
const ANSWER: Duration = Duration::from_secs(10);

pub struct QmpControl {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl QmpControl {
    /// The QEMU arguments serving QMP on `socket`.
    pub fn qemu_args(socket: &Path) -> [String; 2] {
        ["-qmp".into(), format!("unix:{},server=on,wait=off", socket.display())]
    }

    /// Connects (waiting up to `timeout` for QEMU to create the socket)
    /// and leaves capabilities negotiation mode (QMP spec, 2.2).
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Self, String> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(stream) => break stream,
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(format!("no QMP socket at {}: {e}", socket.display())),
            }
        };
        stream.set_read_timeout(Some(ANSWER)).map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut qmp = Self { reader: BufReader::new(stream), writer };
        let greeting = qmp.line()?;
        if !greeting.contains("\"QMP\"") {
            return Err(format!("not a QMP greeting: {greeting}"));
        }
        qmp.execute(r#"{"execute": "qmp_capabilities"}"#)?;
        Ok(qmp)
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("QEMU closed the QMP socket".into()),
            Ok(_) => Ok(line),
            Err(e) => Err(format!("no answer on QMP: {e}")),
        }
    }

    /// Sends one command (a JSON object) and returns QEMU's `return` line;
    /// an `error` answer is an `Err` with QEMU's words.
    pub fn execute(&mut self, command: &str) -> Result<String, String> {
        self.writer
            .write_all(format!("{command}\n").as_bytes())
            .map_err(|e| format!("QMP write: {e}"))?;
        self.answer(command)
    }

    /// Like [`QmpControl::execute`], with `fd` passed along (QMP takes it
    /// from the ancillary data of the command's bytes).
    pub fn execute_with_fd(&mut self, command: &str, fd: BorrowedFd<'_>) -> Result<String, String> {
        crate::pixels::send_with_fd(&self.writer, format!("{command}\n").as_bytes(), fd)
            .map_err(|e| format!("QMP {e}"))?;
        self.answer(command)
    }

    /// QEMU's answer to `command`, events skipped.
    fn answer(&mut self, command: &str) -> Result<String, String> {
        loop {
            let line = self.line()?;
            if line.contains("\"return\"") {
                return Ok(line.trim().to_string());
            }
            if line.contains("\"error\"") {
                return Err(format!("QEMU refused {command}: {}", line.trim()));
            }
        }
    }

    /// Writes the guest's screen to `path` (PPM).
    pub fn screendump(&mut self, path: &Path) -> Result<(), String> {
        let path = path.display().to_string().replace('\\', "\\\\").replace('"', "\\\"");
        self.execute(&format!(r#"{{"execute":"screendump","arguments":{{"filename":"{path}"}}}}"#))
            .map(drop)
    }

    /// Presses and releases each key (QEMU `QKeyCode` names) in turn.
    pub fn type_keys(&mut self, keys: &[&str]) -> Result<(), String> {
        for key in keys {
            self.execute(&format!(
                r#"{{"execute":"send-key","arguments":{{"keys":[{{"type":"qcode","data":"{key}"}}]}}}}"#
            ))?;
            thread::sleep(Duration::from_millis(30));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A QEMU stand-in: greets, acknowledges capabilities, sends an event
    /// before the next answer, then refuses a command.
    #[test]
    fn commands_skip_events_and_report_errors() {
        let dir = std::env::temp_dir().join(format!("vireo-qmp-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let socket = dir.join("q.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).unwrap();
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut out = stream.try_clone().unwrap();
            let mut lines = BufReader::new(stream).lines();
            out.write_all(b"{\"QMP\": {\"version\": {}}}\n").unwrap();
            assert!(lines.next().unwrap().unwrap().contains("qmp_capabilities"));
            out.write_all(b"{\"return\": {}}\n").unwrap();
            assert!(lines.next().unwrap().unwrap().contains("block_resize"));
            out.write_all(b"{\"event\": \"X\"}\n{\"return\": {\"ok\": 1}}\n").unwrap();
            lines.next();
            out.write_all(b"{\"error\": {\"desc\": \"no such device\"}}\n").unwrap();
        });
        let mut qmp = QmpControl::connect(&socket, Duration::from_secs(5)).unwrap();
        assert!(qmp.execute(r#"{"execute": "block_resize"}"#).unwrap().contains("ok"));
        let refused = qmp.execute(r#"{"execute": "nope"}"#).unwrap_err();
        assert!(refused.contains("no such device"), "{refused}");
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
