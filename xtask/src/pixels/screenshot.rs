//! `make screenshot`: boot the shell, run `help`, and write what QEMU
//! shows to target/screenshot.png (PNG by the pure-Rust `png` crate).

use std::path::Path;

use super::Session;
use super::ppm::Image;
use crate::cmds::Ctx;

/// Boots, takes the picture, writes the PNG; returns its path.
pub fn screenshot(ctx: &Ctx) -> Result<String, String> {
    ctx.build_kernel()?;
    let dir = ctx.target.join("pixels");
    let mut session = Session::boot(ctx, &dir)?;
    session.send_and_wait("help\n", crate::hostile::session::PROMPT)?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let image = session.screen()?;
    let path = ctx.target.join("screenshot.png");
    write_png(&image, &path)?;
    Ok(format!("wrote {} ({}x{})", path.display(), image.width, image.height))
}

pub(super) fn write_png(image: &Image, path: &Path) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut encoder =
        png::Encoder::new(std::io::BufWriter::new(file), image.width as u32, image.height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(&image.rgb).map_err(|e| e.to_string())
}
