//! `blk-shell`: the shell's `blk` commands typed at the serial console,
//! each answer checked, and checked against the image: text the runner
//! put at sector 9 before boot must show in `blk read 9`, and what
//! `blk write 7 ...` wrote must be in the image's sector 7 on the host.

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use super::{Env, raw_drive};
use crate::hostile::judge::Step;
use crate::hostile::session::PROMPT;

const IMAGE_BYTES: u64 = 16 << 20;
const HOST_SECTOR: u64 = 9;
const HOST_TEXT: &str = "written by the host, read by vireo";
const GUEST_SECTOR: u64 = 7;
const GUEST_TEXT: &str = "hello from the vireo shell";
const ANSWER: Duration = Duration::from_secs(30);

/// The line `blk read` prints for 16 bytes at disk byte `offset` (xxd).
fn xxd_line(offset: u64, bytes: &[u8]) -> String {
    let mut hex = String::new();
    for (at, byte) in bytes.iter().enumerate() {
        hex.push_str(&format!("{byte:02x}"));
        if at % 2 == 1 {
            hex.push(' ');
        }
    }
    let ascii: String = bytes
        .iter()
        .map(|&b| if b.is_ascii_graphic() || b == b' ' { char::from(b) } else { '.' })
        .collect();
    format!("{offset:08x}: {hex:<40} {ascii}")
}

/// The first dump line of a sector holding `text`, zero-padded.
fn first_line_of(sector: u64, text: &str) -> String {
    let mut bytes = [0u8; 16];
    let len = text.len().min(16);
    bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
    xxd_line(sector * 512, &bytes)
}

pub fn run(env: &mut Env) -> Result<String, String> {
    let image = env.path("img");
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&image)
        .map_err(|e| format!("cannot create {}: {e}", image.display()))?;
    file.set_len(IMAGE_BYTES).map_err(|e| e.to_string())?;
    file.seek(SeekFrom::Start(HOST_SECTOR * 512)).map_err(|e| e.to_string())?;
    file.write_all(HOST_TEXT.as_bytes()).map_err(|e| e.to_string())?;
    drop(file);
    let mut guest = env.boot("", &raw_drive(&image, ""), false)?;
    if !matches!(guest.shell.wait_for(0, PROMPT, Duration::from_secs(60)), Step::Answered(_)) {
        return Err(format!("no shell prompt{}", guest.panic()));
    }
    let mut asked = 0;
    let mut say = |line: &str, want: &[&str]| -> Result<String, String> {
        asked += 1;
        match guest.shell.command(line, ANSWER) {
            Step::Answered(out) => match want.iter().find(|text| !out.contains(*text)) {
                None => Ok(out),
                Some(missing) => Err(format!("`{line}` answered {out:?}, without {missing:?}")),
            },
            other => Err(format!("`{line}`: {other:?}")),
        }
    };
    let info =
        say("blk", &["capacity:   32768 sectors of 512 bytes (16 MiB)", "queues:", "serial:"])?;
    say(&format!("blk read {HOST_SECTOR}"), &[&first_line_of(HOST_SECTOR, HOST_TEXT), "\n*"])?;
    say(&format!("blk write {GUEST_SECTOR} {GUEST_TEXT}"), &["wrote 26 bytes to sector 7"])?;
    let data = fs::read(&image).map_err(|e| format!("cannot read {}: {e}", image.display()))?;
    let sector = |n: u64| &data[n as usize * 512..(n as usize + 1) * 512];
    let mut want = [0u8; 512];
    want[..GUEST_TEXT.len()].copy_from_slice(GUEST_TEXT.as_bytes());
    if sector(GUEST_SECTOR) != want {
        return Err(format!(
            "after `blk write` the image's sector {GUEST_SECTOR} holds {:?}",
            String::from_utf8_lossy(&sector(GUEST_SECTOR)[..40])
        ));
    }
    if sector(GUEST_SECTOR - 1).iter().chain(sector(GUEST_SECTOR + 1)).any(|&b| b != 0) {
        return Err("`blk write` touched a neighbouring sector in the image".into());
    }
    say(
        &format!("blk read {GUEST_SECTOR} 2"),
        &[&first_line_of(GUEST_SECTOR, GUEST_TEXT), "000011f0: "],
    )?;
    say("blk flush", &["flushed"])?;
    let usage = "usage: blk [read <sector> [count] | write";
    for bad in ["blk read", "blk write 7", "blk flush now", "blk frobnicate", "blk read 1 2 3"] {
        say(bad, &[usage])?;
    }
    say("blk read x", &["sector 'x' is not a number"])?;
    say("blk read 32768", &["past the end (capacity 32768 sectors)"])?;
    say("blk read 0 65", &["count must be 1 to 64"])?;
    let queues: usize = info
        .lines()
        .find_map(|l| l.strip_prefix("queues:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or("`blk` printed no queue count")?;
    let table = say("virtio", &["queue", "completions"])?;
    let rows = table
        .lines()
        .skip_while(|l| !l.contains("completions"))
        .skip(1)
        .take_while(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .count();
    if rows != queues {
        return Err(format!("`virtio` shows {rows} blk queue rows, `blk` says {queues} queues"));
    }
    let bench = say("blk bench 2 1", &["4 KiB random reads, qd 2: ", "IOPS"])?;
    let _ = guest.shell.command("exit", Duration::from_secs(10));
    guest.finish(Duration::from_secs(10))?;
    let _ = fs::remove_file(&image);
    let iops = bench.split(", ").find(|part| part.ends_with("IOPS")).unwrap_or("?").to_string();
    Ok(format!(
        "{asked} commands answered, sectors {HOST_SECTOR} and {GUEST_SECTOR} agree with the image, {queues} queue rows, bench {iops}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxd_lines_look_like_xxd() {
        assert_eq!(
            first_line_of(7, "hello"),
            "00000e00: 6865 6c6c 6f00 0000 0000 0000 0000 0000  hello..........."
        );
    }
}
