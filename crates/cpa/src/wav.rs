//! Minimal RIFF/WAVE reader for the offline analyser and the corpus tools.

/// Reads a PCM 16-bit WAV file; multi-channel input is reduced to its first channel.
///
/// Returns the sample rate and the samples. Unknown chunks (LIST, fact, ...) are skipped;
/// a truncated data chunk yields the samples that are present, since recorders that are
/// killed mid-call leave exactly that.
pub fn read_wav_mono16(bytes: &[u8]) -> Result<(u32, Vec<i16>), String> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let mut pos = 12usize;
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32::from_le_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]) as usize;
        let body_start = pos + 8;
        let body_end = body_start.saturating_add(len).min(bytes.len());
        let body = &bytes[body_start..body_end];
        match id {
            b"fmt " => {
                if body.len() < 16 {
                    return Err("fmt chunk too short".into());
                }
                let format = u16::from_le_bytes([body[0], body[1]]);
                let channels = u16::from_le_bytes([body[2], body[3]]);
                let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
                let bits = u16::from_le_bytes([body[14], body[15]]);
                fmt = Some((format, channels, rate, bits));
            }
            b"data" => {
                let (format, channels, rate, bits) = fmt.ok_or("data chunk before fmt chunk")?;
                // 0xFFFE is WAVE_FORMAT_EXTENSIBLE, which tools use for plain PCM too.
                if format != 1 && format != 0xFFFE {
                    return Err(format!("unsupported WAV format tag {format} (need PCM)"));
                }
                if bits != 16 {
                    return Err(format!("unsupported sample size {bits} bits (need 16)"));
                }
                if channels == 0 {
                    return Err("WAV has zero channels".into());
                }
                let frame = 2 * channels as usize;
                let samples = body
                    .chunks_exact(frame)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]))
                    .collect();
                return Ok((rate, samples));
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        pos = body_start.saturating_add(len).saturating_add(len & 1);
    }
    Err("no data chunk".into())
}

/// The 44-byte header of an 8 kHz 16-bit PCM WAV with `channels` channels and `data_len` bytes
/// of samples: the form `read_wav_mono16` reads, for writers that produce it (the live switch's
/// `log_voice`, tests).
pub fn pcm16_header(channels: u16, data_len: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    h[..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&data_len.saturating_add(36).to_le_bytes());
    h[8..16].copy_from_slice(b"WAVEfmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&8000u32.to_le_bytes());
    h[28..32].copy_from_slice(&(16000 * channels as u32).to_le_bytes());
    h[32..34].copy_from_slice(&(2 * channels).to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(samples: &[i16], channels: u16) -> Vec<u8> {
        let mut v = pcm16_header(channels, (samples.len() * 2) as u32).to_vec();
        for s in samples {
            v.extend_from_slice(&s.to_le_bytes());
        }
        v
    }

    #[test]
    fn reads_mono_and_first_channel_of_stereo() {
        let (rate, s) = read_wav_mono16(&wav(&[1, -2, i16::MIN, i16::MAX], 1)).unwrap();
        assert_eq!((rate, s), (8000, vec![1, -2, i16::MIN, i16::MAX]));
        let (_, s) = read_wav_mono16(&wav(&[1, 9, 2, 9], 2)).unwrap();
        assert_eq!(s, vec![1, 2]);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(read_wav_mono16(b"").is_err());
        assert!(read_wav_mono16(b"RIFF\0\0\0\0WAVE").is_err());
        let mut w = wav(&[1, 2, 3], 1);
        w.truncate(w.len() - 3);
        assert_eq!(read_wav_mono16(&w).unwrap().1, vec![1]);
        let mut w = wav(&[1], 1);
        w[20] = 3; // IEEE float
        assert!(read_wav_mono16(&w).is_err());
    }
}
