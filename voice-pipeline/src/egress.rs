//! The egress queue: the agent's speech waiting to be played, paced out in fixed frames, with a
//! cursor that knows which text has actually been heard.
//!
//! Speech enters as chunks (samples at the track rate plus the text they speak); the media side
//! pulls one frame per 20 ms. Barge-in goes through the one interrupt contract of every stage,
//! [`Stage::on_interrupt`]: the interrupted turn's speech (and older) is dropped at once, and what
//! the listener heard of *that turn* — its chunks whose audio left the queue, minus the audio
//! still in the listener's buffer ([`Egress::set_listener_lag`]) — is kept for
//! [`Egress::take_heard`], so the conversation can be truncated to it.
//!
//! As a [`Stage`] it takes [`SpeechSegment`]s and gives 20 ms frames stamped with the track's
//! playback position.

use std::collections::VecDeque;
use std::time::Duration;

use crate::frame::{AudioFrame, FRAME_DURATION, FrameError, TurnId};
use crate::stage::{SpeechSegment, Stage};

/// Longest speech the queue holds, in seconds of audio; more is refused (the producer waits).
pub const EGRESS_CAPACITY_SECONDS: usize = 60;

/// A queued piece of speech.
#[derive(Debug, Clone, PartialEq)]
struct Segment {
    turn: TurnId,
    text: String,
    /// Position of the first sample in the stream of all samples ever queued.
    start: u64,
    /// One past the last sample.
    end: u64,
}

/// What the listener heard of an interrupted answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlayedText {
    /// The text of the chunks that played fully, and the words of the one cut short, in order.
    pub text: String,
    /// Chunks that played to the end.
    pub complete_chunks: usize,
    /// Whether a chunk was cut mid-way.
    pub cut_mid_chunk: bool,
}

/// Why speech could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EgressError {
    /// The queue holds [`EGRESS_CAPACITY_SECONDS`] already.
    #[error("egress queue full ({EGRESS_CAPACITY_SECONDS} s of audio queued)")]
    Full,
}

/// Paced speech output for one track.
#[derive(Debug)]
pub struct Egress {
    sample_rate: u32,
    frame_samples: usize,
    samples: VecDeque<i16>,
    segments: VecDeque<Segment>,
    /// Samples ever queued (the position of the next queued sample).
    queued: u64,
    /// Samples ever played (the cursor).
    played: u64,
    /// Segments of the latest turn to play that finished playing (older turns' are dropped:
    /// only the turn being played can be interrupted).
    finished: Vec<Segment>,
    /// Held (possible barge-in being judged): no frames leave, nothing is dropped.
    paused: bool,
    /// Turn of the last frame handed out.
    last_turn_out: Option<TurnId>,
    /// A turn whose first frame was handed out and not yet reported by `take_turn_started`.
    turn_started: Option<TurnId>,
    /// Turns interrupted (this one and older): late speech of theirs is refused.
    void_through: Option<TurnId>,
    /// Played audio that has not reached the listener's ear yet (their jitter buffer and the
    /// network): it counts as unheard.
    listener_lag: Duration,
    /// What the listener heard of the last interrupted turn.
    heard: Option<(TurnId, PlayedText)>,
}

impl Egress {
    /// A queue producing 20 ms frames at `sample_rate` (mono).
    pub fn new(sample_rate: u32) -> Self {
        Self {
            sample_rate,
            frame_samples: (sample_rate as u64 * FRAME_DURATION.as_millis() as u64 / 1000) as usize,
            // Grows with the speech queued (bounded by the capacity check in `push`): an idle
            // session holds no audio buffer.
            samples: VecDeque::new(),
            segments: VecDeque::new(),
            queued: 0,
            played: 0,
            finished: Vec::new(),
            paused: false,
            last_turn_out: None,
            turn_started: None,
            void_through: None,
            listener_lag: Duration::ZERO,
            heard: None,
        }
    }

    /// How much played audio has not reached the listener yet (see [`Stage::on_interrupt`]).
    pub fn set_listener_lag(&mut self, lag: Duration) {
        self.listener_lag = lag;
    }

    /// Output sample rate.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Whether speech is queued.
    pub fn is_speaking(&self) -> bool {
        !self.samples.is_empty()
    }

    /// Audio still queued.
    pub fn queued_duration(&self) -> Duration {
        Duration::from_secs_f64(self.samples.len() as f64 / f64::from(self.sample_rate))
    }

    /// Holds playback: frames stop at once, the queue is kept (a barge-in is being judged).
    pub fn pause(&mut self) {
        self.paused = true;
    }

    /// Resumes playback where it stopped (the "interruption" was a cough).
    pub fn resume(&mut self) {
        self.paused = false;
    }

    /// Whether playback is held.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Queues speech for `turn` (samples at the track rate) that speaks `text`; speech of an
    /// interrupted turn is dropped silently.
    pub fn push(&mut self, turn: TurnId, samples: &[i16], text: &str) -> Result<(), EgressError> {
        if self.void_through.is_some_and(|void| turn <= void) {
            return Ok(());
        }
        if self.samples.len() + samples.len() > self.sample_rate as usize * EGRESS_CAPACITY_SECONDS
        {
            return Err(EgressError::Full);
        }
        self.samples.extend(samples);
        let start = self.queued;
        self.queued += samples.len() as u64;
        self.segments.push_back(Segment {
            turn,
            text: text.to_string(),
            start,
            end: self.queued,
        });
        Ok(())
    }

    /// The next 20 ms of speech (the last frame of a run is padded with silence), or `None` when
    /// nothing is queued. `timestamp` stamps the frame.
    pub fn next_frame(&mut self, timestamp: Duration) -> Option<Result<AudioFrame, FrameError>> {
        if self.samples.is_empty() || self.paused {
            return None;
        }
        if let Some(turn) = self.segments.front().map(|s| s.turn)
            && self.last_turn_out != Some(turn)
        {
            self.last_turn_out = Some(turn);
            self.turn_started = Some(turn);
        }
        let mut buffer = [0i16; crate::frame::MAX_FRAME_SAMPLES];
        let take = self.frame_samples.min(self.samples.len());
        for (slot, sample) in buffer.iter_mut().zip(self.samples.drain(..take)) {
            *slot = sample;
        }
        self.played += take as u64;
        while let Some(front) = self.segments.front() {
            if front.end > self.played {
                break;
            }
            let done = self.segments.pop_front().expect("front exists");
            self.finished.retain(|s| s.turn >= done.turn);
            self.finished.push(done);
        }
        Some(AudioFrame::new(
            &buffer[..self.frame_samples],
            self.sample_rate,
            1,
            timestamp,
        ))
    }

    /// The turn whose first frame the last [`Egress::next_frame`] handed out, reported once:
    /// the caller stamps the moment its answer started to play.
    pub fn take_turn_started(&mut self) -> Option<TurnId> {
        self.turn_started.take()
    }

    /// What the listener heard of `turn` when it was interrupted ([`Stage::on_interrupt`]);
    /// empty if it was not.
    pub fn take_heard(&mut self, turn: TurnId) -> PlayedText {
        match self.heard.take() {
            Some((t, heard)) if t == turn => heard,
            other => {
                self.heard = other;
                PlayedText::default()
            }
        }
    }

    /// What the listener has heard of `turn` so far: its chunks that played out, and the words
    /// of the one playing, minus the listener's lag.
    fn heard_of(&self, turn: TurnId) -> PlayedText {
        let lag_samples = (self.listener_lag.as_secs_f64() * f64::from(self.sample_rate)) as u64;
        let heard_until = self.played.saturating_sub(lag_samples);
        let mut played = PlayedText::default();
        let mut parts: Vec<String> = Vec::new();
        let of_turn = self
            .finished
            .iter()
            .chain(&self.segments)
            .filter(|s| s.turn == turn);
        for segment in of_turn {
            if heard_until >= segment.end {
                parts.push(segment.text.clone());
                played.complete_chunks += 1;
            } else if heard_until > segment.start {
                let fraction =
                    (heard_until - segment.start) as f64 / (segment.end - segment.start) as f64;
                let prefix = word_prefix(&segment.text, fraction);
                if !prefix.is_empty() {
                    parts.push(prefix);
                }
                played.cut_mid_chunk = true;
            }
        }
        played.text = parts.join(" ");
        played
    }
}

impl Egress {
    /// Playback position of the track: audio handed out (or skipped by an interrupt) so far.
    pub fn position(&self) -> Duration {
        Duration::from_secs_f64(self.played as f64 / f64::from(self.sample_rate))
    }

    /// Drops the queued speech of `turn` and older turns, keeping newer turns' speech queued.
    fn drop_through(&mut self, turn: TurnId) {
        match self.segments.iter().position(|s| s.turn > turn) {
            None => {
                self.samples.clear();
                self.segments.clear();
                self.queued = self.played;
            }
            Some(keep) => {
                let cut = self.segments[keep].start.max(self.played);
                self.samples.drain(..(cut - self.played) as usize);
                self.played = cut;
                self.segments.drain(..keep);
            }
        }
        self.finished.retain(|s| s.turn > turn);
    }
}

impl Stage for Egress {
    type In = SpeechSegment;
    type Out = AudioFrame;
    type Error = EgressError;

    /// Queues the segment; speech of an interrupted turn is dropped silently.
    fn push(&mut self, _now: Duration, segment: SpeechSegment) -> Result<(), EgressError> {
        Egress::push(self, segment.turn, &segment.samples, &segment.text)
    }

    /// The next frame of speech, stamped with the playback position (`None` when held or empty).
    fn poll(&mut self) -> Option<AudioFrame> {
        let at = self.position();
        self.next_frame(at).and_then(Result::ok)
    }

    /// Barge-in on `turn`: remembers what the listener heard of it (for
    /// [`Egress::take_heard`]), drops its queued speech and that of older turns (newer turns'
    /// speech stays), refuses their late speech, and ends a pause.
    fn on_interrupt(&mut self, turn: TurnId) {
        self.heard = Some((turn, self.heard_of(turn)));
        self.void_through = self.void_through.max(Some(turn));
        self.drop_through(turn);
        self.paused = false;
    }
}

/// The first `fraction` of `text`'s words (rounded down): an estimate of what was heard of a
/// chunk whose audio stopped part-way, assuming words are spread evenly over the audio.
pub fn word_prefix(text: &str, fraction: f64) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let keep = ((words.len() as f64) * fraction.clamp(0.0, 1.0)).floor() as usize;
    words[..keep].join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::SystemFrame;
    use crate::stage::{StageInput, run_stage};

    const RATE: u32 = 16_000;
    const FRAME: usize = 320;

    fn drain_frames(egress: &mut Egress, n: usize) -> usize {
        (0..n)
            .filter_map(|_| egress.next_frame(Duration::ZERO))
            .count()
    }

    #[test]
    fn frames_are_paced_and_the_last_is_padded() {
        let mut egress = Egress::new(RATE);
        egress
            .push(TurnId(1), &[1000; FRAME * 2 + 10], "Hello there.")
            .unwrap();
        assert!(egress.is_speaking());
        assert_eq!(drain_frames(&mut egress, 10), 3);
        assert!(egress.next_frame(Duration::ZERO).is_none());
        assert!(!egress.is_speaking());
    }

    #[test]
    fn interrupt_reports_whole_chunks_and_the_heard_part_of_the_current_one() {
        let mut egress = Egress::new(RATE);
        egress
            .push(TurnId(1), &[1; FRAME * 2], "First sentence.")
            .unwrap();
        egress
            .push(TurnId(1), &[1; FRAME * 4], "one two three four")
            .unwrap();
        egress
            .push(TurnId(1), &[1; FRAME * 2], "Never heard.")
            .unwrap();
        drain_frames(&mut egress, 4); // chunk 1 fully, half of chunk 2
        egress.on_interrupt(TurnId(1));
        let played = egress.take_heard(TurnId(1));
        assert_eq!(played.text, "First sentence. one two");
        assert_eq!(played.complete_chunks, 1);
        assert!(played.cut_mid_chunk);
        assert!(!egress.is_speaking(), "the queue is flushed");
        assert!(egress.next_frame(Duration::ZERO).is_none());
    }

    #[test]
    fn audio_still_in_the_listeners_jitter_buffer_counts_as_unheard() {
        let mut egress = Egress::new(RATE);
        egress
            .push(TurnId(1), &[1; FRAME * 2], "Short one.")
            .unwrap();
        egress.push(TurnId(1), &[1; FRAME * 2], "Second.").unwrap();
        drain_frames(&mut egress, 2);
        // 40 ms played, but the listener is 40 ms behind: nothing heard yet.
        egress.set_listener_lag(Duration::from_millis(40));
        egress.on_interrupt(TurnId(1));
        assert_eq!(egress.take_heard(TurnId(1)).text, "");
    }

    #[test]
    fn an_interrupted_turn_hears_only_its_own_speech_not_earlier_answers() {
        let mut egress = Egress::new(RATE);
        egress
            .push(TurnId(1), &[1; FRAME * 2], "Answer one.")
            .unwrap();
        drain_frames(&mut egress, 5);
        egress
            .push(TurnId(2), &[1; FRAME * 2], "Answer two.")
            .unwrap();
        drain_frames(&mut egress, 5);
        egress
            .push(TurnId(3), &[1; FRAME * 2], "Three begins.")
            .unwrap();
        egress
            .push(TurnId(3), &[1; FRAME * 4], "and then goes on")
            .unwrap();
        drain_frames(&mut egress, 4); // all of the first chunk, half of the second
        egress.on_interrupt(TurnId(3));
        let heard = egress.take_heard(TurnId(3));
        assert_eq!(heard.text, "Three begins. and then");
        assert_eq!(heard.complete_chunks, 1);
        assert!(egress.finished.len() <= 1, "finished chunks do not pile up");
        assert_eq!(
            egress.take_heard(TurnId(3)),
            PlayedText::default(),
            "taken once"
        );
        // Late speech of the interrupted turn is refused; the next turn plays.
        egress.push(TurnId(3), &[1; FRAME], "late").unwrap();
        assert!(!egress.is_speaking());
        egress.push(TurnId(4), &[1; FRAME], "Four.").unwrap();
        assert!(egress.is_speaking());
    }

    #[test]
    fn the_first_frame_of_each_turn_is_reported_once() {
        let mut egress = Egress::new(RATE);
        assert_eq!(egress.take_turn_started(), None);
        egress.push(TurnId(1), &[1; FRAME * 2], "One.").unwrap();
        egress.push(TurnId(1), &[1; FRAME], "Two.").unwrap();
        egress.next_frame(Duration::ZERO);
        assert_eq!(egress.take_turn_started(), Some(TurnId(1)));
        drain_frames(&mut egress, 5);
        assert_eq!(egress.take_turn_started(), None, "same turn, later chunks");
        egress.push(TurnId(2), &[1; FRAME], "Three.").unwrap();
        egress.pause();
        egress.next_frame(Duration::ZERO);
        assert_eq!(egress.take_turn_started(), None, "held: nothing left");
        egress.resume();
        egress.next_frame(Duration::ZERO);
        assert_eq!(egress.take_turn_started(), Some(TurnId(2)));
    }

    #[test]
    fn as_a_stage_no_frame_of_an_interrupted_turn_comes_out() {
        let segment = |turn, level: i16, frames: usize| {
            StageInput::Data(SpeechSegment {
                turn: TurnId(turn),
                samples: vec![level; FRAME * frames],
                text: format!("turn {turn}"),
            })
        };
        let mut egress = Egress::new(RATE);
        let out = run_stage(
            &mut egress,
            [
                segment(1, 100, 3),
                segment(2, 200, 2),
                StageInput::System(SystemFrame::Interrupt { turn: TurnId(1) }),
                segment(1, 100, 3), // late speech of the interrupted turn
                segment(3, 300, 1),
            ],
        )
        .unwrap();
        let levels: Vec<i16> = out.iter().map(|f| f.samples()[0]).collect();
        // run_stage drains after each push: turn 1's first segment played fully before the
        // interrupt; nothing of turn 1 comes out after it.
        assert_eq!(levels, [100, 100, 100, 200, 200, 300]);
        assert_eq!(
            out[5].timestamp,
            FRAME_DURATION * 5,
            "stamped by playback position"
        );

        let mut egress = Egress::new(RATE);
        Stage::push(&mut egress, Duration::ZERO, segment_data(1, 5)).unwrap();
        Stage::push(&mut egress, Duration::ZERO, segment_data(2, 2)).unwrap();
        assert!(Stage::poll(&mut egress).is_some());
        egress.on_interrupt(TurnId(1));
        let rest: Vec<_> = std::iter::from_fn(|| Stage::poll(&mut egress)).collect();
        assert_eq!(rest.len(), 2, "the queued answer of turn 2 survives");
        assert!(rest.iter().all(|f| f.samples()[0] == 2));
    }

    fn segment_data(turn: u64, frames: usize) -> SpeechSegment {
        SpeechSegment {
            turn: TurnId(turn),
            samples: vec![turn as i16; FRAME * frames],
            text: String::new(),
        }
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut egress = Egress::new(8_000);
        let minute = vec![0i16; 8_000 * EGRESS_CAPACITY_SECONDS];
        egress.push(TurnId(1), &minute, "long").unwrap();
        assert_eq!(
            egress.push(TurnId(1), &[0; 1], "more"),
            Err(EgressError::Full)
        );
    }
}
