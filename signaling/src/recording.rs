//! Recording a room's or one participant's audio to an Ogg/Opus file.
//!
//! A recorder is an in-process listener of the room (it never speaks). A participant's packets
//! are written as they came (no re-encoding; gaps filled with Opus silence so the timeline
//! stays true); a room recording decodes every voice, mixes them every 20 ms and encodes the
//! mix once (the only transcoding, and only for the file).
//!
//! A finished file stays in the recordings directory unless the gateway has a
//! [`RecordingStore`] (the platform sidecar's file storage): then it is handed over when the
//! recording stops and the local copy is removed; if the hand-over fails, the file stays where it
//! is and the API answer says why.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use dartmouth_media::ogg::OggOpusWriter;
use dartmouth_media::opus_codec::MAX_PACKET_BYTES;
use dartmouth_media::{Listen, MediaHandle, OpusDecoder, OpusEncoder, PeerId, TapPacket};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

/// Packets queued to a recorder (two seconds of audio from eight voices).
pub const RECORDER_CAPACITY: usize = 800;
/// Samples per 20 ms frame at 48 kHz.
const FRAME: usize = 960;
/// Decoded frames held per voice for the mix.
const MIX_DEPTH: usize = 4;

/// What a finished recording is.
#[derive(Debug, Clone, Serialize)]
pub struct RecordingInfo {
    /// Its id.
    pub id: String,
    /// The room.
    pub room: String,
    /// The participant recorded, or `None` for the whole room.
    pub participant: Option<String>,
    /// The file.
    pub file: PathBuf,
    /// Seconds of audio written.
    pub seconds: f64,
    /// Where the finished file was stored instead of `file` (the platform's file path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored: Option<String>,
    /// Why storing it failed (the file is still at `file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
}

/// Keeps finished recordings somewhere other than the gateway's disk.
pub trait RecordingStore: Send + Sync {
    /// Stores the finished file of `info` (Ogg/Opus); returns where it is now, or why it failed.
    fn store<'a>(
        &'a self,
        info: &'a RecordingInfo,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;
}

/// Hands a finished recording to `store`, if any: on success the local file is removed and
/// `stored` says where it went; on failure the file stays and `store_error` says why.
pub async fn hand_over(
    mut info: RecordingInfo,
    store: Option<&dyn RecordingStore>,
) -> RecordingInfo {
    let Some(store) = store else {
        return info;
    };
    match store.store(&info).await {
        Ok(location) => {
            if let Err(e) = tokio::fs::remove_file(&info.file).await {
                tracing::warn!(file = %info.file.display(), error = %e, "stored recording's local copy stays");
            }
            info.stored = Some(location);
        }
        Err(e) => {
            tracing::warn!(id = %info.id, error = %e, "recording kept on local disk: storing it failed");
            info.store_error = Some(e);
        }
    }
    info
}

/// A running recording; [`Recording::stop`] finishes the file.
pub struct Recording {
    info: RecordingInfo,
    listener: PeerId,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<u64>>,
}

impl Recording {
    /// Starts recording `room` (everyone, mixed) or one `participant` into `dir/<id>.opus`.
    pub async fn start(
        media: &MediaHandle,
        dir: &Path,
        id: String,
        room: &str,
        participant: Option<(String, PeerId)>,
    ) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let file = dir.join(format!("{id}.opus"));
        let out = std::fs::File::create(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let listener = media.add_agent(room).await.map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel(RECORDER_CAPACITY);
        let mode = match &participant {
            Some((_, peer)) => Listen::Participant(*peer),
            None => Listen::Everyone,
        };
        if let Err(e) = media.listen(listener, Some((mode, tx))).await {
            media.remove(listener).await;
            return Err(e.to_string());
        }
        let (stop, stopped) = watch::channel(false);
        let serial = id
            .bytes()
            .fold(0u32, |h, b| h.rotate_left(5) ^ u32::from(b));
        let mixed = participant.is_none();
        let task = tokio::task::spawn(record(out, serial, rx, stopped, mixed));
        Ok(Self {
            info: RecordingInfo {
                id,
                room: room.to_string(),
                participant: participant.map(|(name, _)| name),
                file,
                seconds: 0.0,
                stored: None,
                store_error: None,
            },
            listener,
            stop,
            task,
        })
    }

    /// What is being recorded.
    pub fn info(&self) -> &RecordingInfo {
        &self.info
    }

    /// Stops and finishes the file.
    pub async fn stop(self, media: &MediaHandle) -> Result<RecordingInfo, String> {
        let _ = self.stop.send(true);
        media.remove(self.listener).await;
        let frames = self
            .task
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let mut info = self.info;
        info.seconds = frames as f64 * 0.02;
        Ok(info)
    }
}

/// The recorder task; returns the 20 ms frames written.
async fn record(
    out: std::fs::File,
    serial: u32,
    mut packets: mpsc::Receiver<TapPacket>,
    mut stopped: watch::Receiver<bool>,
    mixed: bool,
) -> std::io::Result<u64> {
    let mut writer = OggOpusWriter::new(BufWriter::new(out), 1, serial)?;
    let mut encoder = OpusEncoder::new(48_000, 1).map_err(std::io::Error::other)?;
    let mut packet = [0u8; MAX_PACKET_BYTES];
    let silence_len = encoder
        .encode(&[0; FRAME], &mut packet)
        .map_err(std::io::Error::other)?;
    let silence = packet[..silence_len].to_vec();
    let mut voices: HashMap<PeerId, (OpusDecoder, VecDeque<[i16; FRAME]>)> = HashMap::new();
    let mut pcm = [0i16; FRAME];
    let mut frames: u64 = 0;
    // A participant's packets, written one per 20 ms (arrival jitter absorbed, gaps silent).
    let mut queued: VecDeque<std::sync::Arc<[u8]>> = VecDeque::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            received = packets.recv() => {
                let Some(p) = received else { break };
                if mixed {
                    if !voices.contains_key(&p.source) && voices.len() < 16 {
                        let decoder = OpusDecoder::new(48_000, 1).map_err(std::io::Error::other)?;
                        voices.insert(p.source, (decoder, VecDeque::new()));
                    }
                    if let Some((decoder, queue)) = voices.get_mut(&p.source)
                        && let Ok(FRAME) = decoder.decode(&p.payload, &mut pcm)
                    {
                        if queue.len() >= MIX_DEPTH {
                            queue.pop_front();
                        }
                        queue.push_back(pcm);
                    }
                } else {
                    if queued.len() >= MIX_DEPTH * 4 {
                        queued.pop_front();
                    }
                    queued.push_back(p.payload);
                }
            }
            _ = ticker.tick() => {
                if mixed {
                    let mut mix = [0i32; FRAME];
                    let mut any = false;
                    for (_, queue) in voices.values_mut() {
                        if let Some(frame) = queue.pop_front() {
                            any = true;
                            for (m, s) in mix.iter_mut().zip(frame) {
                                *m += i32::from(s);
                            }
                        }
                    }
                    if any {
                        for (p, m) in pcm.iter_mut().zip(mix) {
                            *p = m.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
                        }
                        let n = encoder.encode(&pcm, &mut packet).map_err(std::io::Error::other)?;
                        writer.write_packet(&packet[..n], FRAME as u32)?;
                    } else {
                        writer.write_packet(&silence, FRAME as u32)?;
                    }
                    frames += 1;
                } else {
                    // The participant's own packet, as it came.
                    let next = queued.pop_front();
                    writer.write_packet(next.as_deref().unwrap_or(&silence), FRAME as u32)?;
                    frames += 1;
                }
            }
        }
    }
    writer.finish()?;
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that keeps the bytes it is given, or refuses.
    struct MemoryStore {
        refuse: bool,
        kept: std::sync::Mutex<Vec<(String, Vec<u8>)>>,
    }

    impl RecordingStore for MemoryStore {
        fn store<'a>(
            &'a self,
            info: &'a RecordingInfo,
        ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
            Box::pin(async move {
                if self.refuse {
                    return Err("storage is full".to_string());
                }
                let bytes = tokio::fs::read(&info.file)
                    .await
                    .map_err(|e| e.to_string())?;
                self.kept.lock().unwrap().push((info.id.clone(), bytes));
                Ok(format!("memory/{}", info.id))
            })
        }
    }

    fn finished(dir: &Path, id: &str) -> RecordingInfo {
        let file = dir.join(format!("{id}.opus"));
        std::fs::write(&file, b"OggS-not-really").unwrap();
        RecordingInfo {
            id: id.into(),
            room: "demo".into(),
            participant: None,
            file,
            seconds: 1.0,
            stored: None,
            store_error: None,
        }
    }

    #[tokio::test]
    async fn a_stored_recording_leaves_no_local_copy_and_a_failed_store_keeps_it() {
        let dir = std::env::temp_dir().join(format!("dartmouth-rec-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        let info = hand_over(finished(&dir, "a"), None).await;
        assert!(info.file.exists() && info.stored.is_none() && info.store_error.is_none());

        let store = MemoryStore {
            refuse: false,
            kept: Default::default(),
        };
        let info = hand_over(finished(&dir, "b"), Some(&store)).await;
        assert_eq!(info.stored.as_deref(), Some("memory/b"));
        assert!(!info.file.exists(), "the local copy is gone");
        assert_eq!(store.kept.lock().unwrap()[0].1, b"OggS-not-really");

        let refusing = MemoryStore {
            refuse: true,
            kept: Default::default(),
        };
        let info = hand_over(finished(&dir, "c"), Some(&refusing)).await;
        assert_eq!(info.store_error.as_deref(), Some("storage is full"));
        assert!(info.file.exists(), "nothing is lost when storing fails");
        let shown = serde_json::to_value(&info).unwrap();
        assert!(shown.get("stored").is_none() && shown["store_error"] == "storage is full");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
