//! A client of QEMU's D-Bus display (`-display dbus,p2p=yes`; QEMU's
//! ui/dbus-display1.xml): what a window on the guest is told — the cursor's
//! image, hot spot and position, the scanout's size — and `SetUIInfo`, the
//! call by which a window asks for another resolution (virtio-gpu turns it
//! into a preferred mode and `VIRTIO_GPU_EVENT_DISPLAY`).
//!
//! Peer to peer, not on a bus: the runner hands QEMU one end of a socket
//! pair through QMP (`getfd`, then `add_client` with protocol
//! `@dbus-display`), so no `dbus-daemon` has to run (QEMU's packages do not
//! depend on one) and nothing else can reach the display. On that
//! connection `RegisterListener` passes the end of a second pair, on which
//! QEMU, as the authenticating server, calls our
//! `org.qemu.Display1.Listener` at `/org/qemu/Display1/Listener`; a thread
//! answers each call and records what it said.

use std::io::{BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::dbus_wire::{self, FIXED_HEADER, METHOD_CALL, Message, NO_REPLY_EXPECTED, Writer};
use super::fd_passing::send_with_fd;
use crate::qmp_control::QmpControl;

const CONSOLE_PATH: &str = "/org/qemu/Display1/Console_0";
const CONSOLE: &str = "org.qemu.Display1.Console";
const LISTENER: &str = "org.qemu.Display1.Listener";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
const PEER: &str = "org.freedesktop.DBus.Peer";
/// How long a call on QEMU's console may take to be answered.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// A cursor image as `CursorDefine` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub width: i32,
    pub height: i32,
    pub hot_x: i32,
    pub hot_y: i32,
    /// `0xAARRGGBB` per pixel, row after row.
    pub argb: Vec<u32>,
}

/// One listener call, in the order QEMU made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new or wholly redrawn scanout of this size (its pixels are not
    /// kept: the screendump is the picture).
    Scanout {
        width: u32,
        height: u32,
    },
    Update {
        x: i32,
        y: i32,
        width: i32,
        height: i32,
    },
    CursorDefine(Cursor),
    /// The cursor's hot spot is at (x, y); `on` is whether it is shown.
    MouseSet {
        x: i32,
        y: i32,
        on: i32,
    },
    Disable,
}

impl Event {
    fn line(&self) -> String {
        match self {
            Event::CursorDefine(c) => format!(
                "CursorDefine {}x{} hot ({},{}), {} pixels not transparent",
                c.width,
                c.height,
                c.hot_x,
                c.hot_y,
                c.argb.iter().filter(|&&p| p >> 24 != 0).count()
            ),
            other => format!("{other:?}"),
        }
    }
}

/// One D-Bus connection to QEMU, after authentication.
struct Connection {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    serial: u32,
}

impl Connection {
    /// Authenticates as the client; `unix_fds` if fds will be sent.
    fn open(stream: UnixStream, unix_fds: bool) -> Result<Self, String> {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        dbus_wire::authenticate(&mut &stream, uid, unix_fds)?;
        let reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        Ok(Self { stream, reader, serial: 0 })
    }

    /// Sends `message` (with `fd` when it carries one); returns its serial.
    fn send(&mut self, mut message: Message, fd: Option<BorrowedFd<'_>>) -> Result<u32, String> {
        self.serial += 1;
        message.serial = self.serial;
        let bytes = message.encode();
        match fd {
            Some(fd) => send_with_fd(&self.stream, &bytes, fd)?,
            None => (&self.stream).write_all(&bytes).map_err(|e| format!("D-Bus write: {e}"))?,
        }
        Ok(self.serial)
    }

    fn receive(&mut self) -> Result<Message, String> {
        let mut fixed = [0u8; FIXED_HEADER];
        self.reader.read_exact(&mut fixed).map_err(|e| format!("D-Bus read: {e}"))?;
        let mut bytes = vec![0u8; Message::total_len(&fixed)?];
        bytes[..FIXED_HEADER].copy_from_slice(&fixed);
        self.reader
            .read_exact(&mut bytes[FIXED_HEADER..])
            .map_err(|e| format!("D-Bus read: {e}"))?;
        Message::parse(&bytes)
    }

    /// Calls a method and waits for its reply (skipping signals such as
    /// the console's `PropertiesChanged`).
    fn call(&mut self, message: Message, fd: Option<BorrowedFd<'_>>) -> Result<Message, String> {
        let member = message.member.clone().unwrap_or_default();
        let serial = self.send(message, fd)?;
        loop {
            let reply = self.receive()?;
            if reply.reply_serial != Some(serial) {
                continue;
            }
            if let Some(name) = &reply.error_name {
                let text = reply.body_as("s").and_then(|mut r| r.string()).unwrap_or_default();
                return Err(format!("D-Bus {member}: {name}: {text}"));
            }
            return Ok(reply);
        }
    }
}

/// The runner's connection to QEMU's display objects.
pub struct Display {
    console: Connection,
}

impl Display {
    /// Hands QEMU a fresh socket through `monitor` and connects on it.
    pub fn connect(monitor: &mut QmpControl) -> Result<Self, String> {
        let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        monitor.execute_with_fd(
            r#"{"execute":"getfd","arguments":{"fdname":"dbus-display"}}"#,
            theirs.as_fd(),
        )?;
        drop(theirs);
        monitor.execute(
            r#"{"execute":"add_client","arguments":{"protocol":"@dbus-display","fdname":"dbus-display"}}"#,
        )?;
        ours.set_read_timeout(Some(CALL_TIMEOUT)).map_err(|e| e.to_string())?;
        Ok(Self { console: Connection::open(ours, true)? })
    }

    /// What a window of `width` x `height` pixels (at 96 dpi) tells QEMU.
    pub fn set_ui_info(&mut self, width: u32, height: u32) -> Result<(), String> {
        let mm = |pixels: u32| (pixels * 254 / 960) as u16;
        let body =
            Writer::default().u16(mm(width)).u16(mm(height)).i32(0).i32(0).u32(width).u32(height);
        let call = Message::method_call(CONSOLE_PATH, CONSOLE, "SetUIInfo", body);
        self.console.call(call, None).map(drop)
    }

    /// Registers a listener; it records until dropped.
    pub fn listen(&mut self) -> Result<Listener, String> {
        let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        let record = Arc::new(Record::default());
        let thread = {
            let stream = ours.try_clone().map_err(|e| e.to_string())?;
            let record = Arc::clone(&record);
            std::thread::spawn(move || serve(stream, &record))
        };
        let listener = Listener { stream: ours, record, thread: Some(thread) };
        let mut call = Message::method_call(
            CONSOLE_PATH,
            CONSOLE,
            "RegisterListener",
            Writer::default().handle(0),
        );
        call.unix_fds = 1;
        self.console.call(call, Some(theirs.as_fd()))?;
        Ok(listener)
    }
}

/// What the listener thread saw, shared with the checks.
#[derive(Default)]
struct Record {
    seen: Mutex<Seen>,
    changed: Condvar,
}

#[derive(Default)]
struct Seen {
    events: Vec<Event>,
    /// Why the connection ended, once it has.
    ended: Option<String>,
}

/// A registered listener: the calls QEMU made on it so far.
pub struct Listener {
    stream: UnixStream,
    record: Arc<Record>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// How many calls have been recorded (a mark for [`Listener::wait_for`]).
    pub fn count(&self) -> usize {
        self.record.seen.lock().unwrap_or_else(|e| e.into_inner()).events.len()
    }

    /// The calls so far, one line each (the cursor's pixels summed up).
    pub fn log(&self) -> String {
        let seen = self.record.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut log: String =
            seen.events.iter().map(|event| format!("{}\n", event.line())).collect();
        if let Some(why) = &seen.ended {
            log.push_str(&format!("ended: {why}\n"));
        }
        log
    }

    /// Waits until `find`, given the calls recorded since mark `from`,
    /// finds something.
    pub fn wait_for<T>(
        &self,
        from: usize,
        timeout: Duration,
        what: &str,
        mut find: impl FnMut(&[Event]) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        let mut seen = self.record.seen.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(found) = find(seen.events.get(from..).unwrap_or_default()) {
                return Ok(found);
            }
            if let Some(why) = &seen.ended {
                return Err(format!("no {what}: the D-Bus listener ended ({why})"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no {what} from the D-Bus display within {timeout:?}"));
            }
            seen =
                self.record.changed.wait_timeout(seen, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

impl Drop for Listener {
    /// Closing the socket unregisters the listener in QEMU and ends the
    /// thread.
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The listener thread: authenticate, then answer every call until the
/// connection ends.
fn serve(stream: UnixStream, record: &Record) {
    let why = match Connection::open(stream, false) {
        Ok(mut connection) => loop {
            let answered =
                connection.receive().and_then(|call| answer(&mut connection, &call, record));
            if let Err(why) = answered {
                break why;
            }
        },
        Err(why) => why,
    };
    record.seen.lock().unwrap_or_else(|e| e.into_inner()).ended = Some(why);
    record.changed.notify_all();
}

/// Records and answers one incoming message.
fn answer(connection: &mut Connection, call: &Message, record: &Record) -> Result<(), String> {
    if call.kind != METHOD_CALL {
        return Ok(());
    }
    let reply = match (call.interface.as_deref(), call.member.as_deref()) {
        (Some(LISTENER), Some(member)) => {
            let event = listener_event(member, call)?;
            record.seen.lock().unwrap_or_else(|e| e.into_inner()).events.push(event);
            record.changed.notify_all();
            Message::reply_to(call, Writer::default())
        }
        // QEMU's proxy reads our properties once: there are none.
        (Some(PROPERTIES), Some("GetAll")) => {
            Message::reply_to(call, Writer::default().empty_properties())
        }
        (Some(PEER), Some("Ping")) => Message::reply_to(call, Writer::default()),
        (interface, member) => Message::error_to(
            call,
            "org.freedesktop.DBus.Error.UnknownMethod",
            &format!("no {}.{}", interface.unwrap_or("?"), member.unwrap_or("?")),
        ),
    };
    if call.flags & NO_REPLY_EXPECTED == 0 {
        connection.send(reply, None)?;
    }
    Ok(())
}

/// Decodes a `org.qemu.Display1.Listener` call (signatures as in QEMU
/// 7.2's ui/dbus-display1.xml).
fn listener_event(member: &str, call: &Message) -> Result<Event, String> {
    Ok(match member {
        "Scanout" => {
            let mut r = call.body_as("uuuuay")?;
            Event::Scanout { width: r.u32()?, height: r.u32()? }
        }
        "Update" => {
            let mut r = call.body_as("iiiiuuay")?;
            Event::Update { x: r.i32()?, y: r.i32()?, width: r.i32()?, height: r.i32()? }
        }
        "CursorDefine" => {
            let mut r = call.body_as("iiiiay")?;
            let (width, height, hot_x, hot_y) = (r.i32()?, r.i32()?, r.i32()?, r.i32()?);
            let data = r.byte_array()?;
            if i64::from(width) * i64::from(height) * 4 != data.len() as i64 {
                return Err(format!("CursorDefine: {width}x{height} with {} bytes", data.len()));
            }
            // QEMU's cursor is host-endian u32 ARGB; QEMU runs on this host.
            let argb = data.chunks_exact(4).map(|p| u32::from_ne_bytes([p[0], p[1], p[2], p[3]]));
            Event::CursorDefine(Cursor { width, height, hot_x, hot_y, argb: argb.collect() })
        }
        "MouseSet" => {
            let mut r = call.body_as("iii")?;
            Event::MouseSet { x: r.i32()?, y: r.i32()?, on: r.i32()? }
        }
        "Disable" => Event::Disable,
        other => return Err(format!("unknown listener call {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener_call(member: &str, body: Writer) -> Message {
        Message::method_call("/org/qemu/Display1/Listener", LISTENER, member, body)
    }

    #[test]
    fn listener_calls_decode() {
        let mut data = Writer::default().i32(2).i32(1).i32(1).i32(0);
        data.signature.push_str("ay");
        data.bytes.extend_from_slice(&8u32.to_le_bytes());
        data.bytes.extend_from_slice(&[0x00, 0xff, 0xff, 0xff, 1, 2, 3, 4]);
        let define = listener_event("CursorDefine", &listener_call("CursorDefine", data)).unwrap();
        let argb = vec![0xffff_ff00, 0x0403_0201];
        assert_eq!(
            define,
            Event::CursorDefine(Cursor { width: 2, height: 1, hot_x: 1, hot_y: 0, argb })
        );
        let set = listener_call("MouseSet", Writer::default().i32(200).i32(150).i32(1));
        assert_eq!(listener_event("MouseSet", &set), Ok(Event::MouseSet { x: 200, y: 150, on: 1 }));
        let wrong = listener_call("MouseSet", Writer::default().i32(200).i32(150));
        assert!(listener_event("MouseSet", &wrong).is_err());
        let mut short = Writer::default().i32(2).i32(2).i32(0).i32(0);
        short.signature.push_str("ay");
        short.bytes.extend_from_slice(&4u32.to_le_bytes());
        short.bytes.extend_from_slice(&[0; 4]);
        assert!(listener_event("CursorDefine", &listener_call("CursorDefine", short)).is_err());
    }
}
