//! A QMP client on a unix socket QEMU listens on (`-qmp unix:PATH,
//! server=on,wait=off`): capabilities, `screendump`, `send-key`, and
//! commands that take an fd along (`getfd`).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A connected, negotiated monitor.
pub struct Monitor {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Monitor {
    /// Connects (retrying while QEMU starts) and leaves negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, String> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => return Err(format!("QMP {}: {e}", path.display())),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(20))).map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut monitor = Self { reader: BufReader::new(stream), writer };
        let mut greeting = String::new();
        monitor.reader.read_line(&mut greeting).map_err(|e| format!("QMP greeting: {e}"))?;
        monitor.execute(r#"{"execute":"qmp_capabilities"}"#)?;
        Ok(monitor)
    }

    /// Sends one command and returns its `return` line (events are skipped).
    pub fn execute(&mut self, command: &str) -> Result<String, String> {
        self.writer
            .write_all(command.as_bytes())
            .and_then(|()| self.writer.write_all(b"\n"))
            .map_err(|e| format!("QMP write: {e}"))?;
        self.answer()
    }

    /// Like [`Monitor::execute`], with `fd` passed along (QMP takes it from
    /// the ancillary data of the command's bytes).
    pub fn execute_with_fd(&mut self, command: &str, fd: BorrowedFd<'_>) -> Result<String, String> {
        super::fd_passing::send_with_fd(&self.writer, format!("{command}\n").as_bytes(), fd)
            .map_err(|e| format!("QMP {e}"))?;
        self.answer()
    }

    fn answer(&mut self) -> Result<String, String> {
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return Err("QMP closed".into()),
                Ok(_) if line.contains("\"return\"") => return Ok(line),
                Ok(_) if line.contains("\"error\"") => return Err(format!("QMP: {}", line.trim())),
                Ok(_) => {}
                Err(e) => return Err(format!("QMP read: {e}")),
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
            std::thread::sleep(Duration::from_millis(30));
        }
        Ok(())
    }
}
