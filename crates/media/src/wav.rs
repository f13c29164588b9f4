//! Stereo call recording (api.md §3.16): a 16-bit PCM WAV file whose left
//! channel is the caller and whose right channel is the audio played to the
//! caller.
//!
//! The header goes out first with zero sizes and is patched when the writer
//! is finished, so recording streams to disk without knowing its length.
//!
//! What survives if `finish` is never called:
//! * the writer is dropped (early return, panic unwinding): `Drop` flushes
//!   and patches the header on a best-effort basis, so the file is complete;
//!   errors are lost, which is why `finish` exists;
//! * the process dies: the header still says size 0 and up to one buffer
//!   (8 KiB) of the newest audio is lost, but everything flushed before is
//!   on disk. [`read_stereo`] reads such a file to its end, as do many
//!   players that treat a zero data size as "streamed".

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

const HEADER_LEN: u32 = 44;
const CHANNELS: u16 = 2;
const BITS: u16 = 16;
const FRAME_BYTES: u32 = 4;
/// The RIFF size field is 32 bits and counts 36 header bytes besides the
/// data; whole frames only.
const MAX_DATA_BYTES: u64 = ((u32::MAX - 36) / FRAME_BYTES * FRAME_BYTES) as u64;

pub struct StereoWavWriter {
    out: BufWriter<File>,
    sample_rate: u32,
    frames: u64,
    /// Interleaved bytes of one `write`, kept to avoid reallocating.
    scratch: Vec<u8>,
    finished: bool,
}

/// `None`: the provisional header of an unfinished file, sizes zero.
impl std::fmt::Debug for StereoWavWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StereoWavWriter")
            .field("sample_rate", &self.sample_rate)
            .field("frames", &self.frames)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

fn header(sample_rate: u32, data_bytes: Option<u32>) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    let riff = data_bytes.map_or(0, |d| d.saturating_add(36));
    let data_bytes = data_bytes.unwrap_or(0);
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&riff.to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&CHANNELS.to_le_bytes());
    h[24..28].copy_from_slice(&sample_rate.to_le_bytes());
    h[28..32].copy_from_slice(&sample_rate.saturating_mul(FRAME_BYTES).to_le_bytes());
    h[32..34].copy_from_slice(&(FRAME_BYTES as u16).to_le_bytes());
    h[34..36].copy_from_slice(&BITS.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_bytes.to_le_bytes());
    h
}

impl StereoWavWriter {
    /// Creates (truncates) the file and writes a header with zero sizes.
    pub fn create(path: &Path, sample_rate: u32) -> io::Result<Self> {
        if sample_rate == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "sample rate must not be zero",
            ));
        }
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(&header(sample_rate, None))?;
        Ok(Self {
            out,
            sample_rate,
            frames: 0,
            scratch: Vec::new(),
            finished: false,
        })
    }

    /// Interleaves; the shorter side is padded with silence. Fails without
    /// writing anything if the file would outgrow the 4 GiB WAV limit
    /// (about 37 hours at 8 kHz).
    pub fn write(&mut self, left: &[i16], right: &[i16]) -> io::Result<()> {
        let frames = left.len().max(right.len());
        let total = (self.frames + frames as u64) * u64::from(FRAME_BYTES);
        if total > MAX_DATA_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "recording exceeds the 4 GiB WAV size limit",
            ));
        }
        self.scratch.clear();
        self.scratch.reserve(frames * FRAME_BYTES as usize);
        for i in 0..frames {
            let l = left.get(i).copied().unwrap_or(0);
            let r = right.get(i).copied().unwrap_or(0);
            self.scratch.extend_from_slice(&l.to_le_bytes());
            self.scratch.extend_from_slice(&r.to_le_bytes());
        }
        self.out.write_all(&self.scratch)?;
        self.frames += frames as u64;
        Ok(())
    }

    /// Pushes buffered audio to the file (the header stays unpatched).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Length of the audio written so far.
    pub fn duration_ms(&self) -> u64 {
        self.frames * 1000 / u64::from(self.sample_rate)
    }

    /// Patches RIFF and data sizes; returns the duration in ms.
    pub fn finish(mut self) -> io::Result<u64> {
        self.finalize()?;
        Ok(self.duration_ms())
    }

    fn finalize(&mut self) -> io::Result<()> {
        // Whatever happens next, Drop must not try again.
        self.finished = true;
        self.out.flush()?;
        let data_bytes = u32::try_from(self.frames * u64::from(FRAME_BYTES)).unwrap_or(u32::MAX);
        let file = self.out.get_mut();
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&header(self.sample_rate, Some(data_bytes)))?;
        file.seek(SeekFrom::End(0))?;
        file.flush()
    }
}

impl Drop for StereoWavWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.finalize();
        }
    }
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// For tests: rate, left, right of a 16-bit stereo PCM WAV.
///
/// A data size of zero or past the end of the bytes (a writer that never
/// finished) means "to the end"; a trailing partial frame is ignored.
pub fn read_stereo(bytes: &[u8]) -> Result<(u32, Vec<i16>, Vec<i16>), String> {
    if bytes.get(0..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err("not a RIFF/WAVE file".into());
    }
    let mut rate = None;
    let mut at = 12usize;
    while let (Some(id), Some(size)) = (bytes.get(at..at + 4), le32(bytes, at + 4)) {
        let body_at = at + 8;
        let size = size as usize;
        match id {
            b"fmt " => {
                let fmt = bytes
                    .get(body_at..body_at.saturating_add(size))
                    .filter(|f| f.len() >= 16)
                    .ok_or("truncated fmt chunk")?;
                let format = le16(fmt, 0).unwrap_or(0);
                let channels = le16(fmt, 2).unwrap_or(0);
                let bits = le16(fmt, 14).unwrap_or(0);
                // 0xFFFE is WAVE_FORMAT_EXTENSIBLE, used by some tools for
                // plain PCM too.
                if format != 1 && format != 0xFFFE {
                    return Err(format!("not PCM (format {format})"));
                }
                if channels != CHANNELS || bits != BITS {
                    return Err(format!(
                        "{channels} channels of {bits} bits, not 16-bit stereo"
                    ));
                }
                rate = le32(fmt, 4);
            }
            b"data" => {
                let rate = rate.ok_or("data chunk before fmt chunk")?;
                let rest = bytes.get(body_at..).unwrap_or(&[]);
                let data = if size == 0 || size > rest.len() {
                    rest
                } else {
                    &rest[..size]
                };
                let (left, right) = data
                    .chunks_exact(FRAME_BYTES as usize)
                    .map(|f| {
                        (
                            i16::from_le_bytes([f[0], f[1]]),
                            i16::from_le_bytes([f[2], f[3]]),
                        )
                    })
                    .unzip();
                return Ok((rate, left, right));
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        at = body_at.saturating_add(size).saturating_add(size & 1);
    }
    Err("no data chunk".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A file under the temp dir, removed when the test ends.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir()
                .join(format!("botstream-wav-{}-{name}.wav", std::process::id()));
            Self(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn ramp(n: usize, scale: i32) -> Vec<i16> {
        (0..n)
            .map(|i| ((i as i32 * scale) % 65_536 - 32_768) as i16)
            .collect()
    }

    #[test]
    fn round_trip() {
        let tmp = TempFile::new("round-trip");
        let mut w = StereoWavWriter::create(&tmp.0, 8000).unwrap();
        let (l, r) = (ramp(8000, 7), ramp(8000, 13));
        for (lc, rc) in l.chunks(160).zip(r.chunks(160)) {
            w.write(lc, rc).unwrap();
        }
        assert_eq!(w.duration_ms(), 1000);
        assert_eq!(w.finish().unwrap(), 1000);
        let bytes = std::fs::read(&tmp.0).unwrap();
        assert_eq!(bytes.len(), 44 + 8000 * 4);
        assert_eq!(le32(&bytes, 4), Some(36 + 32_000));
        assert_eq!(le32(&bytes, 40), Some(32_000));
        assert_eq!(le32(&bytes, 28), Some(32_000)); // byte rate
        let (rate, left, right) = read_stereo(&bytes).unwrap();
        assert_eq!((rate, left, right), (8000, l, r));
    }

    #[test]
    fn shorter_side_is_padded_with_silence() {
        let tmp = TempFile::new("pad");
        let mut w = StereoWavWriter::create(&tmp.0, 16_000).unwrap();
        w.write(&[1, 2, 3], &[9]).unwrap();
        w.write(&[], &[7, 8]).unwrap();
        w.write(&[], &[]).unwrap();
        assert_eq!(w.finish().unwrap(), 0); // 5 frames at 16 kHz
        let (rate, left, right) = read_stereo(&std::fs::read(&tmp.0).unwrap()).unwrap();
        assert_eq!(rate, 16_000);
        assert_eq!(left, vec![1, 2, 3, 0, 0]);
        assert_eq!(right, vec![9, 0, 0, 7, 8]);
    }

    #[test]
    fn empty_recording_is_a_valid_file() {
        let tmp = TempFile::new("empty");
        let w = StereoWavWriter::create(&tmp.0, 8000).unwrap();
        assert_eq!(w.finish().unwrap(), 0);
        let bytes = std::fs::read(&tmp.0).unwrap();
        assert_eq!(bytes.len(), 44);
        assert_eq!(le32(&bytes, 4), Some(36));
        assert_eq!(read_stereo(&bytes).unwrap(), (8000, vec![], vec![]));
    }

    #[test]
    fn zero_rate_is_refused() {
        let tmp = TempFile::new("zero-rate");
        assert!(StereoWavWriter::create(&tmp.0, 0).is_err());
    }

    #[test]
    fn dropped_writer_leaves_a_complete_file() {
        let tmp = TempFile::new("dropped");
        {
            let mut w = StereoWavWriter::create(&tmp.0, 8000).unwrap();
            w.write(&[5; 800], &[-5; 800]).unwrap();
        }
        let bytes = std::fs::read(&tmp.0).unwrap();
        assert_eq!(le32(&bytes, 40), Some(3200));
        let (_, left, right) = read_stereo(&bytes).unwrap();
        assert_eq!((left.len(), right.len()), (800, 800));
    }

    #[test]
    fn crashed_writer_is_readable_up_to_the_last_flush() {
        let tmp = TempFile::new("crashed");
        let (l, r) = (ramp(10_000, 3), ramp(10_000, 5));
        let mut w = StereoWavWriter::create(&tmp.0, 8000).unwrap();
        w.write(&l, &r).unwrap();
        // Neither finish nor Drop: what a killed process leaves behind.
        std::mem::forget(w);
        let bytes = std::fs::read(&tmp.0).unwrap();
        assert_eq!(le32(&bytes, 40), Some(0));
        let (_, left, right) = read_stereo(&bytes).unwrap();
        assert!(left.len() > 9_000, "{} frames recovered", left.len());
        assert_eq!(left[..], l[..left.len()]);
        assert_eq!(right[..], r[..right.len()]);
    }

    #[test]
    fn read_stereo_rejects_and_never_panics() {
        assert!(read_stereo(b"").is_err());
        assert!(read_stereo(b"RIFF\0\0\0\0WAVE").is_err());
        let mut mono = header(8000, None).to_vec();
        mono[22] = 1;
        assert!(read_stereo(&mono).is_err());
        let mut no_fmt = b"RIFF\0\0\0\0WAVEdata\x04\0\0\0\x01\0\x02\0".to_vec();
        assert!(read_stereo(&no_fmt).is_err());
        no_fmt.truncate(14);
        assert!(read_stereo(&no_fmt).is_err());
        // A file with an extra chunk of odd length before data.
        let mut extra = header(8000, Some(4)).to_vec();
        let data = extra.split_off(36);
        extra.extend_from_slice(b"LIST\x03\0\0\0abc\0");
        extra.extend_from_slice(&data);
        extra.extend_from_slice(&[1, 0, 2, 0]);
        assert_eq!(read_stereo(&extra).unwrap(), (8000, vec![1], vec![2]));
        let mut x: u32 = 99;
        for len in 0..600 {
            let mut b = header(8000, Some(8)).to_vec();
            b.truncate(len.min(44));
            for _ in 0..len / 3 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                b.push(x as u8);
            }
            if len % 5 == 0 && b.len() > 20 {
                let i = x as usize % b.len();
                b[i] = (x >> 8) as u8;
            }
            let _ = read_stereo(&b);
        }
    }
}
