//! Ogg/Opus files (RFC 7845): an identification header, a comment header, then Opus packets in
//! Ogg pages (RFC 3533) with the granule position in 48 kHz samples. Used to record a room's or
//! a participant's audio without re-encoding a participant's packets.
//!
//! ```
//! use dartmouth_media::ogg::OggOpusWriter;
//!
//! let mut file = Vec::new();
//! let mut writer = OggOpusWriter::new(&mut file, 1, 0x1234).unwrap();
//! writer.write_packet(&[0xF8, 0xFF, 0xFE], 960).unwrap(); // one 20 ms silent Opus frame
//! writer.finish().unwrap();
//! assert!(file.starts_with(b"OggS"));
//! ```

use std::io::{self, Write};

/// Packets gathered in one page at most (one second of 20 ms frames).
const PACKETS_PER_PAGE: usize = 50;
/// Samples of encoder look-ahead signalled as pre-skip (libopus's default at 48 kHz).
const PRE_SKIP: u16 = 312;

/// Writes one Ogg/Opus logical stream.
pub struct OggOpusWriter<W: Write> {
    out: W,
    serial: u32,
    sequence: u32,
    granule: u64,
    /// Segment table and data of the page being filled.
    segments: Vec<u8>,
    body: Vec<u8>,
    packets: usize,
}

impl<W: Write> OggOpusWriter<W> {
    /// Starts a stream of `channels` (1 or 2) with `serial`, writing both headers.
    pub fn new(out: W, channels: u8, serial: u32) -> io::Result<Self> {
        let mut writer = Self {
            out,
            serial,
            sequence: 0,
            granule: 0,
            segments: Vec::new(),
            body: Vec::new(),
            packets: 0,
        };
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(channels);
        head.extend_from_slice(&PRE_SKIP.to_le_bytes());
        head.extend_from_slice(&48_000u32.to_le_bytes()); // input rate, informational
        head.extend_from_slice(&0u16.to_le_bytes()); // output gain
        head.push(0); // mapping family
        writer.page(&[&head], 0, 0x02)?;
        let vendor = b"dartmouth";
        let mut tags = Vec::new();
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes());
        writer.page(&[&tags], 0, 0)?;
        Ok(writer)
    }

    /// Adds one Opus packet that decodes to `samples` samples (48 kHz; 960 for 20 ms).
    pub fn write_packet(&mut self, packet: &[u8], samples: u32) -> io::Result<()> {
        let mut rest = packet.len();
        loop {
            let lace = rest.min(255);
            self.segments.push(lace as u8);
            rest -= lace;
            if lace < 255 {
                break;
            }
        }
        self.body.extend_from_slice(packet);
        self.granule += u64::from(samples);
        self.packets += 1;
        if self.packets >= PACKETS_PER_PAGE || self.segments.len() > 200 {
            self.flush_page(0)?;
        }
        Ok(())
    }

    /// Advances the time by `samples` without a packet (a gap the player fills with silence).
    pub fn skip(&mut self, samples: u32) {
        self.granule += u64::from(samples);
    }

    /// Writes the last page (end of stream) and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_page(0x04)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn flush_page(&mut self, flags: u8) -> io::Result<()> {
        let segments = std::mem::take(&mut self.segments);
        let body = std::mem::take(&mut self.body);
        self.packets = 0;
        self.write_raw_page(&segments, &body, self.granule, flags)
    }

    /// A page holding whole `packets` (headers).
    fn page(&mut self, packets: &[&[u8]], granule: u64, flags: u8) -> io::Result<()> {
        let mut segments = Vec::new();
        let mut body = Vec::new();
        for packet in packets {
            let mut rest = packet.len();
            loop {
                let lace = rest.min(255);
                segments.push(lace as u8);
                rest -= lace;
                if lace < 255 {
                    break;
                }
            }
            body.extend_from_slice(packet);
        }
        self.write_raw_page(&segments, &body, granule, flags)
    }

    fn write_raw_page(
        &mut self,
        segments: &[u8],
        body: &[u8],
        granule: u64,
        flags: u8,
    ) -> io::Result<()> {
        let mut page = Vec::with_capacity(27 + segments.len() + body.len());
        page.extend_from_slice(b"OggS");
        page.push(0); // version
        page.push(flags);
        page.extend_from_slice(&granule.to_le_bytes());
        page.extend_from_slice(&self.serial.to_le_bytes());
        page.extend_from_slice(&self.sequence.to_le_bytes());
        page.extend_from_slice(&0u32.to_le_bytes()); // checksum, filled below
        page.push(segments.len() as u8);
        page.extend_from_slice(segments);
        page.extend_from_slice(body);
        let crc = crc32(&page);
        page[22..26].copy_from_slice(&crc.to_le_bytes());
        self.sequence += 1;
        self.out.write_all(&page)
    }
}

/// The Ogg CRC-32 (polynomial 0x04C11DB7, no reflection, initial value 0).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0u32;
    for byte in data {
        crc ^= u32::from(*byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The Opus packets of an Ogg/Opus file (headers skipped), for checking recordings.
pub fn read_packets(file: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut packets = Vec::new();
    let mut partial = Vec::new();
    let mut at = 0;
    let mut page_no = 0;
    while at < file.len() {
        let header = file.get(at..at + 27).ok_or("truncated page header")?;
        if &header[..4] != b"OggS" {
            return Err(format!("no page at byte {at}"));
        }
        let count = usize::from(header[26]);
        let table = file
            .get(at + 27..at + 27 + count)
            .ok_or("truncated segment table")?;
        let size: usize = table.iter().map(|l| usize::from(*l)).sum();
        let body_start = at + 27 + count;
        let page = file.get(at..body_start + size).ok_or("truncated page")?;
        let mut check = page.to_vec();
        check[22..26].fill(0);
        let stored = u32::from_le_bytes(page[22..26].try_into().map_err(|_| "bad crc")?);
        if crc32(&check) != stored {
            return Err(format!("bad checksum on page {page_no}"));
        }
        let mut offset = body_start;
        for lace in table {
            partial.extend_from_slice(&file[offset..offset + usize::from(*lace)]);
            offset += usize::from(*lace);
            if *lace < 255 {
                if page_no >= 2 {
                    packets.push(std::mem::take(&mut partial));
                } else {
                    partial.clear();
                }
            }
        }
        at = body_start + size;
        page_no += 1;
    }
    Ok(packets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_ogg_reference() {
        // Files written with it are read by libogg-based demuxers (checked with FFmpeg's, via
        // PyAV); these pin the implementation.
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"a"), 0xA864_DB20);
    }

    #[test]
    fn packets_round_trip_including_long_ones() {
        let packets: Vec<Vec<u8>> = (0..120u32)
            .map(|i| vec![i as u8; (i as usize * 7) % 600 + 1])
            .collect();
        let mut writer = OggOpusWriter::new(Vec::new(), 1, 7).unwrap();
        for p in &packets {
            writer.write_packet(p, 960).unwrap();
        }
        let file = writer.finish().unwrap();
        assert_eq!(read_packets(&file).unwrap(), packets);
        assert!(file.windows(8).any(|w| w == b"OpusHead"));
        let mut corrupted = file.clone();
        let last = corrupted.len() - 1;
        corrupted[last] ^= 1;
        assert!(
            read_packets(&corrupted).is_err(),
            "a damaged page is detected"
        );
    }
}

#[cfg(test)]
mod file_check {
    /// Writes a real Opus recording for checking with an independent demuxer
    /// (`DARTMOUTH_OGG_SAMPLE=path cargo test -p dartmouth-media ogg`).
    #[test]
    fn writes_a_sample_file_when_asked() {
        let Ok(path) = std::env::var("DARTMOUTH_OGG_SAMPLE") else {
            return;
        };
        let mut encoder = crate::OpusEncoder::new(48_000, 1).unwrap();
        let mut writer =
            super::OggOpusWriter::new(std::fs::File::create(path).unwrap(), 1, 1).unwrap();
        let mut packet = [0u8; crate::opus_codec::MAX_PACKET_BYTES];
        for i in 0..100 {
            let pcm: Vec<i16> = (0..960)
                .map(|n| {
                    ((f64::from(i * 960 + n) * 440.0 * std::f64::consts::TAU / 48_000.0).sin()
                        * 8000.0) as i16
                })
                .collect();
            let len = encoder.encode(&pcm, &mut packet).unwrap();
            writer.write_packet(&packet[..len], 960).unwrap();
        }
        writer.finish().unwrap();
    }
}
