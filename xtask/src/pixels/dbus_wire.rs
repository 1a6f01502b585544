//! The D-Bus wire format (D-Bus Specification, "Message Protocol" and
//! "Authentication Protocol"), as much of it as a peer-to-peer talk with
//! QEMU's D-Bus display needs: a message's fixed header and header fields,
//! bodies of basic types and byte arrays, and the client side of SASL
//! `EXTERNAL`.
//!
//! Why by hand and not the `zbus` crate: `zbus` 5 with its blocking API
//! brings about 45 crates (an async executor, `tracing`, five proc-macro
//! crates) into a runner that has 32, for what is here a few hundred lines
//! of fixed signatures on one socket. The other end is GLib's GDBus, which
//! checks every message it reads and drops the connection on a malformed
//! one, so a mistake here fails a pixel check loudly instead of passing.

use std::io::{Read, Write};

/// Message types (§ "Message Format").
pub const METHOD_CALL: u8 = 1;
pub const METHOD_RETURN: u8 = 2;
pub const ERROR: u8 = 3;
/// Flag: the sender wants no reply.
pub const NO_REPLY_EXPECTED: u8 = 1;

/// Header field codes.
const PATH: u8 = 1;
const INTERFACE: u8 = 2;
const MEMBER: u8 = 3;
const ERROR_NAME: u8 = 4;
const REPLY_SERIAL: u8 = 5;
const SIGNATURE: u8 = 8;
const UNIX_FDS: u8 = 9;

/// The fixed part of a header: endianness, type, flags, version, body
/// length, serial, and the header fields' array length.
pub const FIXED_HEADER: usize = 16;
/// A message may be at most 2^27 bytes long.
pub const MAX_MESSAGE: usize = 1 << 27;

/// One message. Only the header fields this peer reads or writes are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub kind: u8,
    pub flags: u8,
    pub serial: u32,
    pub path: Option<String>,
    pub interface: Option<String>,
    pub member: Option<String>,
    pub error_name: Option<String>,
    pub reply_serial: Option<u32>,
    /// The body's signature, "" for none.
    pub signature: String,
    /// Unix fds sent along (passed out of band).
    pub unix_fds: u32,
    pub body: Vec<u8>,
    /// The sender's byte order (`B` instead of `l`).
    pub big_endian: bool,
}

impl Message {
    /// A method call on `path`, `interface`.`member`; no destination (a
    /// peer-to-peer connection has no bus to route by).
    pub fn method_call(path: &str, interface: &str, member: &str, body: Writer) -> Self {
        Self {
            kind: METHOD_CALL,
            path: Some(path.into()),
            interface: Some(interface.into()),
            member: Some(member.into()),
            signature: body.signature,
            body: body.bytes,
            ..Self::default()
        }
    }

    /// The reply to `call`.
    pub fn reply_to(call: &Message, body: Writer) -> Self {
        Self {
            kind: METHOD_RETURN,
            flags: NO_REPLY_EXPECTED,
            reply_serial: Some(call.serial),
            signature: body.signature,
            body: body.bytes,
            ..Self::default()
        }
    }

    /// An error reply to `call`.
    pub fn error_to(call: &Message, name: &str, text: &str) -> Self {
        let body = Writer::default().string(text);
        Self {
            kind: ERROR,
            flags: NO_REPLY_EXPECTED,
            error_name: Some(name.into()),
            reply_serial: Some(call.serial),
            signature: body.signature,
            body: body.bytes,
            ..Self::default()
        }
    }

    /// The whole message, little-endian, as sent.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default()
            .u8(b'l')
            .u8(self.kind)
            .u8(self.flags)
            .u8(1)
            .u32(self.body.len() as u32)
            .u32(self.serial)
            .u32(0); // the fields' length, patched below
        let start = w.bytes.len();
        let string = |w: Writer, code: u8, sig: &str, value: &str| {
            w.align(8).u8(code).raw_signature(sig).string(value)
        };
        if let Some(path) = &self.path {
            w = string(w, PATH, "o", path);
        }
        if let Some(interface) = &self.interface {
            w = string(w, INTERFACE, "s", interface);
        }
        if let Some(member) = &self.member {
            w = string(w, MEMBER, "s", member);
        }
        if let Some(name) = &self.error_name {
            w = string(w, ERROR_NAME, "s", name);
        }
        if let Some(serial) = self.reply_serial {
            w = w.align(8).u8(REPLY_SERIAL).raw_signature("u").u32(serial);
        }
        if !self.signature.is_empty() {
            w = w.align(8).u8(SIGNATURE).raw_signature("g").raw_signature(&self.signature);
        }
        if self.unix_fds > 0 {
            w = w.align(8).u8(UNIX_FDS).raw_signature("u").u32(self.unix_fds);
        }
        let fields = (w.bytes.len() - start) as u32;
        w.bytes[12..16].copy_from_slice(&fields.to_le_bytes());
        let mut bytes = w.align(8).bytes;
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// How long the message whose first [`FIXED_HEADER`] bytes are `fixed`
    /// is in all.
    pub fn total_len(fixed: &[u8; FIXED_HEADER]) -> Result<usize, String> {
        let mut r = Reader::new(fixed, byte_order(fixed[0])?);
        r.skip(4)?;
        let body = r.u32()? as usize;
        r.skip(4)?;
        let fields = r.u32()? as usize;
        let total = (FIXED_HEADER + fields).next_multiple_of(8) + body;
        if total > MAX_MESSAGE {
            return Err(format!("D-Bus message of {total} bytes (at most {MAX_MESSAGE})"));
        }
        Ok(total)
    }

    /// Parses one whole message.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let big_endian = byte_order(*bytes.first().ok_or("empty D-Bus message")?)?;
        let mut r = Reader::new(bytes, big_endian);
        r.skip(1)?;
        let (kind, flags, version) = (r.u8()?, r.u8()?, r.u8()?);
        if version != 1 {
            return Err(format!("D-Bus protocol version {version}"));
        }
        let body_len = r.u32()? as usize;
        let serial = r.u32()?;
        let fields_end = r.u32()? as usize + FIXED_HEADER;
        let mut message = Self { kind, flags, serial, big_endian, ..Self::default() };
        while r.at < fields_end {
            r.align(8)?;
            let code = r.u8()?;
            let signature = r.signature()?;
            match (code, signature.as_str()) {
                (PATH, "o") => message.path = Some(r.string()?),
                (INTERFACE, "s") => message.interface = Some(r.string()?),
                (MEMBER, "s") => message.member = Some(r.string()?),
                (ERROR_NAME, "s") => message.error_name = Some(r.string()?),
                (REPLY_SERIAL, "u") => message.reply_serial = Some(r.u32()?),
                (SIGNATURE, "g") => message.signature = r.signature()?,
                (UNIX_FDS, "u") => message.unix_fds = r.u32()?,
                (_, basic) => r.skip_basic(basic)?,
            }
        }
        if r.at != fields_end {
            return Err("D-Bus header fields overrun their array".into());
        }
        let body_at = fields_end.next_multiple_of(8);
        let body = bytes.get(body_at..body_at + body_len).ok_or("D-Bus body cut short")?;
        message.body = body.to_vec();
        if body_at + body_len != bytes.len() {
            return Err("D-Bus message longer than its header says".into());
        }
        Ok(message)
    }

    /// A reader over the body, after checking its signature is `expected`.
    pub fn body_as(&self, expected: &str) -> Result<Reader<'_>, String> {
        if self.signature != expected {
            return Err(format!(
                "{}: body ({}) is not ({expected})",
                self.member.as_deref().unwrap_or("reply"),
                self.signature
            ));
        }
        Ok(Reader::new(&self.body, self.big_endian))
    }
}

fn byte_order(mark: u8) -> Result<bool, String> {
    match mark {
        b'l' => Ok(false),
        b'B' => Ok(true),
        other => Err(format!("not a D-Bus message (byte order mark {other:#04x})")),
    }
}

/// Builds a body (or a header), little-endian, aligned from its start, and
/// the body's signature as it goes.
#[derive(Debug, Default)]
pub struct Writer {
    pub bytes: Vec<u8>,
    pub signature: String,
}

impl Writer {
    fn align(mut self, to: usize) -> Self {
        self.bytes.resize(self.bytes.len().next_multiple_of(to), 0);
        self
    }

    fn raw_signature(mut self, signature: &str) -> Self {
        self.bytes.push(signature.len() as u8);
        self.bytes.extend_from_slice(signature.as_bytes());
        self.bytes.push(0);
        self
    }

    fn u8(mut self, value: u8) -> Self {
        self.bytes.push(value);
        self
    }

    pub fn u16(mut self, value: u16) -> Self {
        self = self.align(2);
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self.signature.push('q');
        self
    }

    pub fn u32(mut self, value: u32) -> Self {
        self = self.align(4);
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self.signature.push('u');
        self
    }

    pub fn i32(self, value: i32) -> Self {
        let mut w = self.u32(value as u32);
        w.signature.pop();
        w.signature.push('i');
        w
    }

    /// A Unix fd, by its index among the fds sent with the message.
    pub fn handle(self, index: u32) -> Self {
        let mut w = self.u32(index);
        w.signature.pop();
        w.signature.push('h');
        w
    }

    pub fn string(mut self, value: &str) -> Self {
        self = self.align(4);
        self.bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(value.as_bytes());
        self.bytes.push(0);
        self.signature.push('s');
        self
    }

    /// An empty `a{sv}` (what `Properties.GetAll` answers for no
    /// properties): the length, then padding to the entries' 8-byte
    /// alignment even though there are none.
    pub fn empty_properties(mut self) -> Self {
        self = self.u32(0).align(8);
        self.signature.pop();
        self.signature.push_str("a{sv}");
        self
    }
}

/// Reads a body (or a header) in the sender's byte order. Alignment is
/// from the start of the slice: a body starts 8-aligned in its message.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    big_endian: bool,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], big_endian: bool) -> Self {
        Self { bytes, at: 0, big_endian }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(len).filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| format!("D-Bus data cut short at byte {}", self.at))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn skip(&mut self, len: usize) -> Result<(), String> {
        self.take(len).map(drop)
    }

    fn align(&mut self, to: usize) -> Result<(), String> {
        self.skip(self.at.next_multiple_of(to) - self.at)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], String> {
        self.align(N)?;
        let mut bytes = [0; N];
        bytes.copy_from_slice(self.take(N)?);
        if self.big_endian {
            bytes.reverse();
        }
        Ok(bytes)
    }

    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, String> {
        self.fixed().map(u16::from_le_bytes)
    }

    pub fn u32(&mut self) -> Result<u32, String> {
        self.fixed().map(u32::from_le_bytes)
    }

    pub fn i32(&mut self) -> Result<i32, String> {
        self.fixed().map(i32::from_le_bytes)
    }

    /// An `s` or `o`.
    pub fn string(&mut self) -> Result<String, String> {
        let len = self.u32()? as usize;
        let text = self.take(len)?;
        if self.take(1)? != [0] {
            return Err("D-Bus string without its nul".into());
        }
        String::from_utf8(text.to_vec()).map_err(|_| "D-Bus string not UTF-8".into())
    }

    /// A `g`.
    pub fn signature(&mut self) -> Result<String, String> {
        let len = usize::from(self.u8()?);
        let text = self.take(len)?;
        if self.take(1)? != [0] {
            return Err("D-Bus signature without its nul".into());
        }
        String::from_utf8(text.to_vec()).map_err(|_| "D-Bus signature not ASCII".into())
    }

    /// An `ay`.
    pub fn byte_array(&mut self) -> Result<&'a [u8], String> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// Skips a value of basic type `signature` (a header field this peer
    /// does not read, e.g. DESTINATION or SENDER).
    fn skip_basic(&mut self, signature: &str) -> Result<(), String> {
        match signature {
            "y" => self.skip(1),
            "n" | "q" => self.u16().map(drop),
            "b" | "i" | "u" | "h" => self.u32().map(drop),
            "x" | "t" | "d" => self.fixed::<8>().map(drop),
            "s" | "o" => self.string().map(drop),
            "g" => self.signature().map(drop),
            other => Err(format!("D-Bus header field of type {other:?}")),
        }
    }
}

/// The client side of the authentication (§ "Authentication Protocol"):
/// the nul byte, `AUTH EXTERNAL` with our uid, `NEGOTIATE_UNIX_FD` when
/// fds will be sent, `BEGIN`. Returns the server's GUID.
pub fn authenticate(
    stream: &mut (impl Read + Write),
    uid: u32,
    unix_fds: bool,
) -> Result<String, String> {
    let hex: String = uid.to_string().bytes().map(|b| format!("{b:02x}")).collect();
    let write = |stream: &mut dyn Write, line: &str| {
        stream.write_all(line.as_bytes()).map_err(|e| format!("D-Bus auth write: {e}"))
    };
    write(stream, &format!("\0AUTH EXTERNAL {hex}\r\n"))?;
    let answer = read_line(stream)?;
    let guid = answer
        .strip_prefix("OK ")
        .ok_or_else(|| format!("D-Bus auth: server said {answer:?} to AUTH EXTERNAL"))?
        .to_string();
    if unix_fds {
        write(stream, "NEGOTIATE_UNIX_FD\r\n")?;
        let answer = read_line(stream)?;
        if answer != "AGREE_UNIX_FD" {
            return Err(format!("D-Bus auth: server said {answer:?} to NEGOTIATE_UNIX_FD"));
        }
    }
    write(stream, "BEGIN\r\n")?;
    Ok(guid)
}

/// One `\r\n`-terminated line, read byte by byte so nothing after it is
/// consumed.
fn read_line(stream: &mut impl Read) -> Result<String, String> {
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        if line.len() > 1024 {
            return Err("D-Bus auth: line too long".into());
        }
        let mut byte = [0u8];
        match stream.read(&mut byte) {
            Ok(0) => return Err("D-Bus auth: connection closed".into()),
            Ok(_) => line.push(byte[0]),
            Err(e) => return Err(format!("D-Bus auth read: {e}")),
        }
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| "D-Bus auth: line not ASCII".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> Message {
        let body = Writer::default().u16(300).u16(200).i32(-5).i32(0).u32(1024).u32(768);
        let mut call = Message::method_call(
            "/org/qemu/Display1/Console_0",
            "org.qemu.Display1.Console",
            "SetUIInfo",
            body,
        );
        call.serial = 7;
        call
    }

    #[test]
    fn a_call_survives_encoding_and_parsing() {
        let call = call();
        let bytes = call.encode();
        assert_eq!(&bytes[..4], b"l\x01\x00\x01");
        let fixed: [u8; FIXED_HEADER] = bytes[..FIXED_HEADER].try_into().unwrap();
        assert_eq!(Message::total_len(&fixed), Ok(bytes.len()));
        let parsed = Message::parse(&bytes).unwrap();
        assert_eq!(parsed, call);
        let mut r = parsed.body_as("qqiiuu").unwrap();
        assert_eq!((r.u16(), r.u16(), r.i32(), r.i32()), (Ok(300), Ok(200), Ok(-5), Ok(0)));
        assert_eq!((r.u32(), r.u32()), (Ok(1024), Ok(768)));
        assert!(r.u8().is_err(), "the body ends there");
        assert!(parsed.body_as("qqiiu").is_err());
    }

    #[test]
    fn the_header_is_laid_out_as_the_spec_says() {
        let mut reply = Message::reply_to(&call(), Writer::default());
        reply.serial = 9;
        let bytes = reply.encode();
        // l, METHOD_RETURN, NO_REPLY_EXPECTED, version 1, body 0, serial 9,
        // fields 8 bytes: REPLY_SERIAL, "u", padding, 7.
        assert_eq!(
            bytes,
            b"l\x02\x01\x01\0\0\0\0\x09\0\0\0\x08\0\0\0\x05\x01u\0\x07\0\0\0".to_vec()
        );
    }

    #[test]
    fn big_endian_messages_and_unknown_basic_fields_parse() {
        // MouseSet(iii) 200, 150, 1 from a big-endian sender, with a
        // SENDER field (7, "s") this peer skips.
        let mut bytes = b"B\x01\x00\x01\0\0\0\x0c\0\0\0\x2a\0\0\0\x31".to_vec();
        bytes.extend_from_slice(b"\x03\x01s\0\0\0\0\x08MouseSet\0\0\0\0\0\0\0\0");
        bytes.extend_from_slice(b"\x07\x01s\0\0\0\0\x02:1\0\0\0\0\0\0");
        bytes.extend_from_slice(b"\x08\x01g\0\x03iii\0");
        bytes.resize(bytes.len().next_multiple_of(8), 0);
        assert_eq!(bytes.len(), 72, "the fields array, padded to the body");
        bytes.extend_from_slice(b"\0\0\0\xc8\0\0\0\x96\0\0\0\x01");
        let parsed = Message::parse(&bytes).unwrap();
        assert_eq!(parsed.serial, 42);
        assert_eq!(parsed.member.as_deref(), Some("MouseSet"));
        let mut r = parsed.body_as("iii").unwrap();
        assert_eq!((r.i32(), r.i32(), r.i32()), (Ok(200), Ok(150), Ok(1)));
    }

    #[test]
    fn broken_messages_are_refused() {
        let bytes = call().encode();
        assert!(Message::parse(&bytes[..bytes.len() - 1]).is_err(), "body cut short");
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Message::parse(&longer).is_err(), "trailing bytes");
        let mut version = bytes.clone();
        version[3] = 2;
        assert!(Message::parse(&version).is_err());
        let mut mark = bytes.clone();
        mark[0] = b'x';
        assert!(Message::parse(&mark).is_err());
        let mut huge: [u8; FIXED_HEADER] = bytes[..FIXED_HEADER].try_into().unwrap();
        huge[4..8].copy_from_slice(&(MAX_MESSAGE as u32).to_le_bytes());
        assert!(Message::total_len(&huge).is_err());
        let mut r = Reader::new(b"\x05\0\0\0abc", false);
        assert!(r.string().is_err(), "string longer than the data");
        let mut r = Reader::new(b"\x03\0\0\0\x01\x02\x03", false);
        assert_eq!(r.byte_array(), Ok(&[1u8, 2, 3][..]));
    }

    #[test]
    fn empty_properties_pad_to_the_entries_alignment() {
        let w = Writer::default().empty_properties();
        assert_eq!(w.signature, "a{sv}");
        assert_eq!(w.bytes, [0u8; 8]);
    }

    /// A fake server: canned input, recorded output.
    struct Fake {
        input: std::io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Fake {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn fake(input: &[u8]) -> Fake {
        Fake { input: std::io::Cursor::new(input.to_vec()), output: Vec::new() }
    }

    #[test]
    fn authentication_sends_the_uid_in_hex_and_stops_after_its_lines() {
        let mut server = fake(b"OK 1234abcd\r\nAGREE_UNIX_FD\r\nl\x01");
        assert_eq!(authenticate(&mut server, 1000, true), Ok("1234abcd".into()));
        assert_eq!(
            server.output,
            b"\0AUTH EXTERNAL 31303030\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\n".to_vec()
        );
        assert_eq!(server.input.position(), 28, "the message after BEGIN is left unread");
        let mut server = fake(b"OK 1234abcd\r\n");
        assert!(authenticate(&mut server, 0, false).is_ok());
        assert!(server.output.ends_with(b"EXTERNAL 30\r\nBEGIN\r\n"));
        let mut server = fake(b"REJECTED EXTERNAL\r\n");
        assert!(authenticate(&mut server, 0, false).is_err());
        let mut server = fake(b"OK 1234abcd\r\nERROR\r\n");
        assert!(authenticate(&mut server, 0, true).is_err());
        let mut server = fake(b"OK 12");
        assert!(authenticate(&mut server, 0, false).is_err(), "closed mid-line");
    }
}
