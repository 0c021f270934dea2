//! Finished room recordings kept in the platform sidecar's file storage (local disk or S3,
//! whichever the sidecar uses) instead of the gateway's disk.

use std::future::Future;
use std::pin::Pin;

use dartmouth_platform::client::PlatformClient;
use dartmouth_signaling::recording::{RecordingInfo, RecordingStore};

/// The platform agent id whose files hold the recordings, unless configured otherwise.
pub const DEFAULT_RECORDINGS_OWNER: &str = "recordings";

/// Uploads each finished recording as `recordings/<room>/<id>.opus` (`audio/ogg`) under one
/// platform agent id.
pub struct PlatformRecordings {
    client: PlatformClient,
    owner: String,
}

impl PlatformRecordings {
    /// Recordings go to `owner`'s files (the gateway's credential must be allowed to write them).
    pub fn new(client: PlatformClient, owner: &str) -> Self {
        Self {
            client,
            owner: owner.to_string(),
        }
    }
}

/// The file key of a recording; characters the platform's keys refuse become `_`.
fn file_key(info: &RecordingInfo) -> String {
    let clean = |s: &str| -> String {
        let kept: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(120)
            .collect();
        if kept.is_empty() { "_".into() } else { kept }
    };
    format!("recordings/{}/{}.opus", clean(&info.room), clean(&info.id))
}

impl RecordingStore for PlatformRecordings {
    fn store<'a>(
        &'a self,
        info: &'a RecordingInfo,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
        Box::pin(async move {
            let bytes = tokio::fs::read(&info.file)
                .await
                .map_err(|e| format!("reading {}: {e}", info.file.display()))?;
            let key = file_key(info);
            let stored = self
                .client
                .upload(&self.owner, &key, "audio/ogg", bytes)
                .await
                .map_err(|e| format!("uploading to the platform: {e}"))?;
            Ok(format!(
                "/v1/agents/{}/files/{}",
                stored.agent_id, stored.key
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_sidecar::TestSidecar;
    use dartmouth_signaling::recording::hand_over;

    fn finished(dir: &std::path::Path, room: &str, bytes: &[u8]) -> RecordingInfo {
        std::fs::create_dir_all(dir).unwrap();
        let file = dir.join("rec-1.opus");
        std::fs::write(&file, bytes).unwrap();
        RecordingInfo {
            id: "rec-1".into(),
            room: room.into(),
            participant: None,
            file,
            seconds: 2.0,
            stored: None,
            store_error: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_finished_recording_lands_in_the_platform_and_leaves_the_disk() {
        let sidecar = TestSidecar::start("recordings").await;
        let dir = std::env::temp_dir().join(format!("dartmouth-recs-{}", std::process::id()));
        // A real Ogg/Opus file: one second of silence from the media crate's writer.
        let mut ogg = Vec::new();
        {
            let mut writer =
                dartmouth_media::ogg::OggOpusWriter::new(&mut ogg, 1, 7).expect("ogg header");
            let mut encoder = dartmouth_media::OpusEncoder::new(48_000, 1).unwrap();
            let mut packet = [0u8; dartmouth_media::opus_codec::MAX_PACKET_BYTES];
            for _ in 0..50 {
                let n = encoder.encode(&[0i16; 960], &mut packet).unwrap();
                writer.write_packet(&packet[..n], 960).unwrap();
            }
            writer.finish().unwrap();
        }
        let store = PlatformRecordings::new(sidecar.client.clone(), DEFAULT_RECORDINGS_OWNER);
        let info = hand_over(finished(&dir, "board room/1", &ogg), Some(&store)).await;
        assert_eq!(
            info.stored.as_deref(),
            Some("/v1/agents/recordings/files/recordings/board_room_1/rec-1.opus"),
            "{info:?}"
        );
        assert!(!info.file.exists(), "the local copy is removed");
        let (content_type, bytes) = sidecar
            .client
            .download(
                DEFAULT_RECORDINGS_OWNER,
                "recordings/board_room_1/rec-1.opus",
            )
            .await
            .expect("the recording is in the platform's storage");
        assert_eq!(content_type, "audio/ogg");
        assert_eq!(bytes, ogg, "byte for byte what was recorded");

        // A store the credential may not write: the file stays, and the answer says why.
        let foreign = PlatformRecordings::new(
            PlatformClient::new(sidecar.client.base_url()).unwrap(),
            DEFAULT_RECORDINGS_OWNER,
        );
        let info = hand_over(finished(&dir, "demo", b"OggS"), Some(&foreign)).await;
        assert!(info.stored.is_none());
        assert!(
            info.store_error
                .as_deref()
                .is_some_and(|e| e.contains("uploading")),
            "{info:?}"
        );
        assert!(info.file.exists(), "nothing is lost");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
