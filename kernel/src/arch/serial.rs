//! COM1, a 16550 UART at I/O port 0x3f8: the kernel's console.
//!
//! Output waits on the transmit-holding-register-empty bit rather than
//! trusting a FIFO depth, so no byte is ever dropped. Input is polled (the
//! shell reads it between other work; no IRQ is needed at 115200 baud).

use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;
const DATA: u16 = 0; // receive / transmit buffer (DLAB = 0)
const INTERRUPT_ENABLE: u16 = 1;
const FIFO_CONTROL: u16 = 2;
const LINE_CONTROL: u16 = 3;
const MODEM_CONTROL: u16 = 4;
const LINE_STATUS: u16 = 5;

const LSR_DATA_READY: u8 = 1 << 0;
const LSR_TRANSMIT_EMPTY: u8 = 1 << 5;

fn outb(offset: u16, value: u8) {
    // SAFETY: COM1's registers are I/O ports with no memory side effects; the
    // kernel is the only user of them.
    unsafe { Port::new(COM1 + offset).write(value) }
}

fn inb(offset: u16) -> u8 {
    // SAFETY: as in `outb`; reading LSR or the data register has no effect
    // beyond the UART itself.
    unsafe { Port::new(COM1 + offset).read() }
}

/// Programs COM1 for 115200 baud, 8 data bits, no parity, one stop bit.
pub fn init() {
    outb(INTERRUPT_ENABLE, 0x00);
    outb(LINE_CONTROL, 0x80); // DLAB on: the next two registers are the divisor
    outb(DATA, 0x01); // divisor 1 = 115200 baud
    outb(INTERRUPT_ENABLE, 0x00);
    outb(LINE_CONTROL, 0x03); // DLAB off, 8N1
    outb(FIFO_CONTROL, 0xc7); // FIFOs on and cleared, 14-byte threshold
    outb(MODEM_CONTROL, 0x03); // DTR | RTS
}

/// Writes one byte, waiting until the transmitter can take it.
pub fn write_byte(byte: u8) {
    while inb(LINE_STATUS) & LSR_TRANSMIT_EMPTY == 0 {
        core::hint::spin_loop();
    }
    outb(DATA, byte);
}

/// Writes bytes, turning `\n` into `\r\n` for terminals.
pub fn write_bytes(bytes: &[u8]) {
    for &byte in bytes {
        if byte == b'\n' {
            write_byte(b'\r');
        }
        write_byte(byte);
    }
}

/// Returns a received byte, if one is waiting.
pub fn try_read_byte() -> Option<u8> {
    (inb(LINE_STATUS) & LSR_DATA_READY != 0).then(|| inb(DATA))
}

/// A `core::fmt::Write` sink straight to the UART, without any lock: for
/// panic and fault reports, which must get out even if a lock is held.
pub struct RawSerial;

impl core::fmt::Write for RawSerial {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        write_bytes(text.as_bytes());
        Ok(())
    }
}
