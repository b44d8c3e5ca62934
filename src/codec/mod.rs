//! Compression as plain `Write` adapters, so the pipeline can stack stages
//! (compress, later encrypt) without caring which codec is in use.
//!
//! Output is always a standard stream (`zstd -dc` / `gunzip` read it): the
//! no-lock-in invariant. Parallel gzip writes independent deflate blocks in
//! one gzip member, the way pigz does.

pub mod adapt;
mod config;

pub use config::{Algorithm, CompressionConfig, Level};
use std::io::{self, Write};

/// A writer that must be told when the stream ends (to write trailers).
pub trait FinishWrite: Write + Send {
    fn finish(self: Box<Self>) -> io::Result<()>;

    /// For a decoder, after its last input: whether the compressed stream
    /// ended whole (gzip's CRC and length), without passing anything on.
    fn check_end(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Change the compression level mid-stream (zstd with workers: from
    /// its next job on); other writers ignore it.
    fn set_level(&mut self, _level: i32) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    pub algorithm: Algorithm,
    /// The level (with `adapt`: the level it starts at).
    pub level: i32,
    pub threads: usize,
    /// `level = "auto"`: the bounds the level adapts within.
    pub adapt: Option<(i32, i32)>,
}

impl Codec {
    pub fn from_config(c: &CompressionConfig) -> Codec {
        let adapt = c.adaptive().then(|| c.auto_bounds());
        let level = match (c.level, adapt) {
            (Some(Level::Fixed(l)), _) => l,
            // Start fast; the level rises while the compressor waits.
            (_, Some((min, _))) => min,
            _ => match c.algorithm {
                Algorithm::Zstd => 3,
                Algorithm::Gzip => 6,
                Algorithm::None => 0,
            },
        };
        let threads = if c.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            c.threads
        };
        Codec {
            algorithm: c.algorithm,
            level,
            threads,
            adapt,
        }
    }

    pub fn none() -> Codec {
        Codec {
            algorithm: Algorithm::None,
            level: 0,
            threads: 1,
            adapt: None,
        }
    }

    /// File-name extension added after the dump's own (`.zst`, `.gz`).
    pub fn extension(&self) -> Option<&'static str> {
        extension_of(self.algorithm)
    }

    /// A writer that compresses into `out`; finishing it finishes `out`.
    pub fn encoder<W: FinishWrite + 'static>(&self, out: W) -> io::Result<Box<dyn FinishWrite>> {
        match self.algorithm {
            Algorithm::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(out, self.level)?;
                // The level can change mid-frame only with workers.
                if self.threads > 1 || self.adapt.is_some() {
                    enc.multithread(self.threads.max(1) as u32)?;
                }
                let highest = self.adapt.map_or(self.level, |(_, max)| max);
                if highest > HIGH_LEVEL {
                    // High levels size their window and match tables for
                    // the best ratio on huge inputs: 200–340 MiB with two
                    // workers. Capping them keeps memory bounded at a small
                    // cost in ratio (measured in README, Memory).
                    use zstd::zstd_safe::CParameter;
                    enc.set_parameter(CParameter::WindowLog(HIGH_LEVEL_WINDOW_LOG))?;
                    enc.set_parameter(CParameter::HashLog(HIGH_LEVEL_WINDOW_LOG - 1))?;
                    enc.set_parameter(CParameter::ChainLog(HIGH_LEVEL_WINDOW_LOG))?;
                    enc.set_parameter(CParameter::JobSize(4 << HIGH_LEVEL_WINDOW_LOG))?;
                }
                // The frame checksum lets `zstd -t` catch corruption without
                // the manifest.
                enc.include_checksum(true)?;
                Ok(Box::new(ZstdEncoder(enc)))
            }
            Algorithm::Gzip => {
                use gzp::deflate::Gzip;
                use gzp::par::compress::{ParCompress, ParCompressBuilder};
                let enc: ParCompress<'static, Gzip, W> = ParCompressBuilder::new()
                    .num_threads(self.threads.max(1))
                    .map_err(io::Error::other)?
                    .compression_level(gzp::Compression::new(self.level as u32))
                    .from_writer(out);
                Ok(Box::new(GzipEncoder(enc)))
            }
            Algorithm::None => Ok(Box::new(out)),
        }
    }
}

/// zstd levels above this get their window and match tables capped.
const HIGH_LEVEL: i32 = 9;
/// 1 MiB windows: memory stays under 100 MiB at every level (README).
const HIGH_LEVEL_WINDOW_LOG: u32 = 20;

pub fn extension_of(algorithm: Algorithm) -> Option<&'static str> {
    match algorithm {
        Algorithm::Zstd => Some("zst"),
        Algorithm::Gzip => Some("gz"),
        Algorithm::None => None,
    }
}

/// The codec of a stored object, from its first bytes: zstd and gzip by
/// their magic numbers, anything else as uncompressed.
pub fn sniff(head: &[u8]) -> Algorithm {
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Algorithm::Zstd
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Algorithm::Gzip
    } else {
        Algorithm::None
    }
}

pub fn describe(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::Zstd => "zstd",
        Algorithm::Gzip => "gzip",
        Algorithm::None => "no compression",
    }
}

/// Up to `limit` decompressed bytes from the start of a stream, from its
/// first chunk (what decodes of it; errors past the chunk's end are expected).
pub fn decode_prefix(algorithm: Algorithm, head: &[u8], limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let reader: Box<dyn io::Read + '_> = match algorithm {
        Algorithm::Zstd => match zstd::stream::read::Decoder::new(head) {
            Ok(d) => Box::new(d),
            Err(_) => return out,
        },
        Algorithm::Gzip => Box::new(flate2::read::MultiGzDecoder::new(head)),
        Algorithm::None => Box::new(head),
    };
    let mut buf = [0u8; 8192];
    let mut reader = reader;
    while out.len() < limit {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n.min(limit - out.len())]),
        }
    }
    out
}

/// Decompress a small whole object (a globals script) in memory.
pub fn decode_all(algorithm: Algorithm, data: &[u8]) -> io::Result<Vec<u8>> {
    match algorithm {
        Algorithm::Zstd => zstd::decode_all(data),
        Algorithm::Gzip => {
            let mut out = Vec::new();
            io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(data), &mut out)?;
            Ok(out)
        }
        Algorithm::None => Ok(data.to_vec()),
    }
}

/// A writer that decompresses what is written to it into `out`.
pub fn decoder<W: Write + Send + 'static>(
    algorithm: Algorithm,
    out: W,
) -> io::Result<Box<dyn FinishWrite>> {
    match algorithm {
        Algorithm::Zstd => Ok(Box::new(ZstdDecoder(zstd::stream::write::Decoder::new(
            out,
        )?))),
        Algorithm::Gzip => Ok(Box::new(GzipDecoder(flate2::write::MultiGzDecoder::new(
            out,
        )))),
        Algorithm::None => Ok(Box::new(Passthrough(out))),
    }
}

struct ZstdEncoder<W: Write>(zstd::stream::write::Encoder<'static, W>);
struct GzipEncoder<W: Write + Send + 'static>(
    gzp::par::compress::ParCompress<'static, gzp::deflate::Gzip, W>,
);
struct ZstdDecoder<W: Write>(zstd::stream::write::Decoder<'static, W>);
struct GzipDecoder<W: Write>(flate2::write::MultiGzDecoder<W>);
struct Passthrough<W: Write>(W);

macro_rules! forward_write {
    ($t:ty) => {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.write(buf)
        }
        fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
            self.0.write_all(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.flush()
        }
    };
}

impl<W: Write + Send> Write for ZstdEncoder<W> {
    forward_write!(ZstdEncoder<W>);
}
impl<W: FinishWrite + 'static> FinishWrite for ZstdEncoder<W> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        Box::new(self.0.finish()?).finish()
    }

    fn set_level(&mut self, level: i32) -> io::Result<()> {
        self.0
            .set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(level))
    }
}

impl<W: Write + Send + 'static> Write for GzipEncoder<W> {
    forward_write!(GzipEncoder<W>);
}
impl<W: FinishWrite + 'static> FinishWrite for GzipEncoder<W> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        use gzp::ZWriter;
        // After a failed finish gzp does not retry (or panic) in Drop.
        Box::new(self.0.finish().map_err(io::Error::other)?).finish()
    }
}

impl<W: Write + Send> Write for ZstdDecoder<W> {
    forward_write!(ZstdDecoder<W>);
}
impl<W: Write + Send> FinishWrite for ZstdDecoder<W> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()?;
        self.0.get_mut().flush()
    }
}

impl<W: Write + Send> Write for GzipDecoder<W> {
    forward_write!(GzipDecoder<W>);
}
impl<W: Write + Send> FinishWrite for GzipDecoder<W> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.0.try_finish()?;
        self.0.get_mut().flush()
    }

    fn check_end(&mut self) -> io::Result<()> {
        self.0.try_finish()
    }
}

impl<W: Write + Send> Write for Passthrough<W> {
    forward_write!(Passthrough<W>);
}
impl<W: Write + Send> FinishWrite for Passthrough<W> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl FinishWrite for Shared {
        fn finish(self: Box<Self>) -> io::Result<()> {
            Ok(())
        }
    }

    fn sample() -> Vec<u8> {
        // Several MiB so parallel codecs really split the work.
        (0..3_000_000u32)
            .flat_map(|i| format!("{i},row {}\n", i % 977).into_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips_and_standard_decoders_agree() {
        let input = sample();
        for algorithm in [Algorithm::Zstd, Algorithm::Gzip, Algorithm::None] {
            let codec = Codec {
                algorithm,
                level: if algorithm == Algorithm::None { 0 } else { 3 },
                threads: 2,
                adapt: None,
            };
            let compressed = Shared::default();
            let mut enc = codec.encoder(compressed.clone()).unwrap();
            for part in input.chunks(100_000) {
                enc.write_all(part).unwrap();
            }
            enc.finish().unwrap();
            let stored = compressed.0.lock().unwrap().clone();

            let restored = Shared::default();
            let mut dec = decoder(algorithm, restored.clone()).unwrap();
            dec.write_all(&stored).unwrap();
            dec.finish().unwrap();
            assert_eq!(*restored.0.lock().unwrap(), input, "{algorithm:?}");

            // Independent decoders read the stream too (no private framing).
            let independent = match algorithm {
                Algorithm::Zstd => zstd::decode_all(&stored[..]).unwrap(),
                Algorithm::Gzip => {
                    let mut out = Vec::new();
                    io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&stored[..]), &mut out)
                        .unwrap();
                    out
                }
                Algorithm::None => stored.clone(),
            };
            assert_eq!(independent, input, "{algorithm:?} via independent decoder");
            if algorithm != Algorithm::None {
                assert!(stored.len() < input.len() / 3, "{algorithm:?} compresses");
            }
        }
    }

    /// High levels run with capped windows (memory bound); what they write
    /// is still a standard stream that any zstd decoder reads.
    #[test]
    fn capped_high_levels_still_round_trip_through_standard_zstd() {
        let input: Vec<u8> = sample().into_iter().take(1_500_000).collect();
        for level in [HIGH_LEVEL + 1, 19] {
            let codec = Codec {
                algorithm: Algorithm::Zstd,
                level,
                threads: 2,
                adapt: None,
            };
            let compressed = Shared::default();
            let mut enc = codec.encoder(compressed.clone()).unwrap();
            enc.write_all(&input).unwrap();
            enc.finish().unwrap();
            let stored = compressed.0.lock().unwrap().clone();
            assert_eq!(
                zstd::decode_all(&stored[..]).unwrap(),
                input,
                "level {level}"
            );
            assert!(stored.len() < input.len() / 4, "level {level} compresses");
        }
    }
}
