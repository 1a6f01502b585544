//! The binary PPM (P6) images QEMU's `screendump` writes.

/// An RGB image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    /// R, G, B per pixel, row after row.
    pub rgb: Vec<u8>,
}

impl Image {
    /// The pixel at (x, y) as `0x00RRGGBB` (the guest's B8G8R8X8 value).
    pub fn pixel(&self, x: usize, y: usize) -> u32 {
        let at = (y * self.width + x) * 3;
        u32::from(self.rgb[at]) << 16
            | u32::from(self.rgb[at + 1]) << 8
            | u32::from(self.rgb[at + 2])
    }
}

/// Parses a P6 file with maxval 255.
pub fn parse(bytes: &[u8]) -> Result<Image, String> {
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        if bytes.get(at) == Some(&b'#') {
            while at < bytes.len() && bytes[at] != b'\n' {
                at += 1;
            }
            continue;
        }
        let start = at;
        while at < bytes.len() && !bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        if start == at {
            return Err("PPM header cut short".into());
        }
        fields.push(String::from_utf8_lossy(&bytes[start..at]).into_owned());
    }
    at += 1; // the single whitespace byte before the raster
    if fields[0] != "P6" || fields[3] != "255" {
        return Err(format!("not an 8-bit P6 PPM: {} maxval {}", fields[0], fields[3]));
    }
    let number = |s: &str| s.parse::<usize>().map_err(|e| format!("PPM size {s:?}: {e}"));
    let (width, height) = (number(&fields[1])?, number(&fields[2])?);
    let rgb = bytes.get(at..at + width * height * 3).ok_or("PPM raster cut short")?.to_vec();
    Ok(Image { width, height, rgb })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_tiny_image() {
        let image = parse(b"P6\n# c\n2 1\n255\n\x01\x02\x03\xff\x00\x10").unwrap();
        assert_eq!((image.width, image.height), (2, 1));
        assert_eq!(image.pixel(0, 0), 0x010203);
        assert_eq!(image.pixel(1, 0), 0xff0010);
        assert!(parse(b"P6\n2 1\n255\n\x01").is_err());
        assert!(parse(b"P5\n1 1\n255\n\x01").is_err());
    }
}
