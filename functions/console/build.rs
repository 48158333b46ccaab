//! Embeds the console's built assets (web/dist, from `npm run build` in web/): each
//! file with its content type, an ETag from its SHA-256, and a gzip copy made here
//! (at the best level, once, instead of on every request) when it is smaller.
//!
//! Without web/dist (a checkout where the front-end was never built) the table is
//! empty and the component answers 503 saying how to build it; scripts/build-wasm
//! and the component's build command in spin.toml always build web/ first.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    let dist = manifest.join("web/dist");
    println!("cargo:rerun-if-changed={}", dist.display());

    let mut files = Vec::new();
    if dist.is_dir() {
        collect(&dist, &dist, &mut files);
    } else {
        println!(
            "cargo:warning=functions/console/web/dist is missing: the console will answer 503 \
             (build it with `npm ci && npm run build` in functions/console/web, as scripts/build-wasm does)"
        );
    }
    files.sort();

    let mut table = String::from("&[\n");
    for (i, relative) in files.iter().enumerate() {
        let source = dist.join(relative);
        let body = std::fs::read(&source).expect("read an asset");
        let etag = format!("\"{}\"", &hex(&Sha256::digest(&body))[..32]);
        let gzip = gzip(&body);
        let gzip_expr = if gzip.len() + 64 < body.len() {
            let gz_path = out.join(format!("asset{i}.gz"));
            std::fs::write(&gz_path, &gzip).expect("write a gzip copy");
            format!("Some(include_bytes!({:?}))", gz_path.display().to_string())
        } else {
            "None".to_owned()
        };
        let path = relative.to_string_lossy().replace('\\', "/");
        writeln!(
            table,
            "    Asset {{ path: {path:?}, content_type: {:?}, etag: {etag:?}, body: include_bytes!({:?}), gzip: {gzip_expr} }},",
            content_type(&path),
            source.display().to_string(),
        )
        .expect("write to a string");
    }
    table.push(']');
    std::fs::write(out.join("assets.rs"), table).expect("write assets.rs");
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read web/dist") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            files.push(
                path.strip_prefix(root)
                    .expect("under the root")
                    .to_path_buf(),
            );
        }
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(body).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
