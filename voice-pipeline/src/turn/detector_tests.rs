//! Unit tests of the end-of-turn step machine, with a scripted model.

use super::*;

/// Answers from a script (the last answer repeats) and records what it was asked.
struct Scripted {
    answers: Vec<Result<f32, ()>>,
    asked: Vec<usize>,
}

impl Scripted {
    fn new(answers: &[Result<f32, ()>]) -> Self {
        Self {
            answers: answers.to_vec(),
            asked: Vec::new(),
        }
    }

    fn always(probability: f32) -> Self {
        Self::new(&[Ok(probability)])
    }
}

impl TurnModel for Scripted {
    fn predict(&mut self, audio_16k: &[f32]) -> Result<f32, TurnError> {
        let answer = self.answers[self.asked.len().min(self.answers.len() - 1)];
        self.asked.push(audio_16k.len());
        answer.map_err(|()| TurnError::Inference("scripted failure".into()))
    }
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// Feeds audio in 20 ms frames whose samples equal their stream position (exact in f32 up to
/// 2^24), polling after each, like a pipeline would; returns the turns that came out.
struct Driver {
    turns: EndOfTurn,
    fed: u64,
}

impl Driver {
    fn new(config: TurnConfig) -> Self {
        Self {
            turns: EndOfTurn::new(config),
            fed: 0,
        }
    }

    fn now(&self) -> Duration {
        Duration::from_nanos(self.fed * 62_500)
    }

    fn feed_ms(&mut self, millis: u64, model: &mut dyn TurnModel) -> Vec<TurnEnd> {
        let mut out = Vec::new();
        for _ in 0..millis / 20 {
            let frame: Vec<f32> = (self.fed..self.fed + 320).map(|p| p as f32).collect();
            self.fed += 320;
            self.turns.push_audio(self.now(), &frame);
            assert!(self.turns.buffered_samples() <= self.turns.capacity());
            out.extend(self.poll(model));
        }
        out
    }

    fn vad(&mut self, event: VadEvent) {
        self.turns.push_vad(self.now(), event);
    }

    fn poll(&mut self, model: &mut dyn TurnModel) -> Option<TurnEnd> {
        self.turns.poll(self.now(), model)
    }
}

#[test]
fn a_complete_utterance_ends_at_the_first_poll_after_speech_end() {
    let mut model = Scripted::always(0.9);
    let mut d = Driver::new(TurnConfig::default().without_transcripts());
    assert!(d.feed_ms(1000, &mut model).is_empty());
    d.vad(VadEvent::SpeechStart { at_sample: 12_000 });
    assert!(d.feed_ms(2000, &mut model).is_empty());
    assert!(model.asked.is_empty(), "no verdict while speaking");
    d.vad(VadEvent::SpeechEnd { at_sample: 43_200 }); // 2.7 s
    let turn = d.poll(&mut model).expect("complete");
    assert_eq!(turn.reason, TurnEndReason::Complete { probability: 0.9 });
    assert_eq!(turn.speech_end, ms(2700));
    assert_eq!(turn.decided_at, ms(3000));
    // 200 ms of pre-roll before the onset, then everything up to the decision.
    assert_eq!(turn.audio.first(), Some(&8_800.0));
    assert_eq!(turn.audio.last(), Some(&47_999.0));
    assert_eq!(turn.audio.len(), 48_000 - 8_800);
    assert_eq!(model.asked, vec![turn.audio.len()]);
    assert!(!d.turns.in_turn());
    assert!(d.feed_ms(3000, &mut model).is_empty());
}

#[test]
fn an_incomplete_utterance_waits_for_max_silence_asking_again_as_silence_grows() {
    let mut model = Scripted::always(0.1);
    let mut d = Driver::new(TurnConfig::default().without_transcripts());
    d.feed_ms(500, &mut model);
    d.vad(VadEvent::SpeechStart { at_sample: 4_000 });
    d.feed_ms(1000, &mut model);
    d.vad(VadEvent::SpeechEnd { at_sample: 19_200 }); // 1.2 s, reported at 1.5 s
    assert!(d.poll(&mut model).is_none());
    // Silence timing counts from the speech end, not from the event: 1.2 + 1.5 = 2.7 s.
    let turns = d.feed_ms(1500, &mut model);
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0].reason, TurnEndReason::SilenceTimeout);
    assert_eq!(turns[0].speech_end, ms(1200));
    assert_eq!(turns[0].decided_at, ms(2700));
    // Asked at 0.3 s of silence, then every 200 ms while the silence lasts.
    assert_eq!(model.asked.len(), 7, "one verdict per 200 ms of silence");
    assert_eq!(turns[0].signals.asks, 7);
    assert_eq!(turns[0].signals.probability, Some(0.1));
}

#[test]
fn an_unsure_model_ends_the_turn_as_its_threshold_falls_with_the_silence() {
    let mut model = Scripted::always(0.3);
    let mut d = Driver::new(TurnConfig::default().without_transcripts());
    d.vad(VadEvent::SpeechStart { at_sample: 0 });
    d.feed_ms(1000, &mut model);
    d.vad(VadEvent::SpeechEnd { at_sample: 16_000 });
    let turns = d.feed_ms(1500, &mut model);
    assert_eq!(turns.len(), 1);
    assert_eq!(
        turns[0].reason,
        TurnEndReason::Complete { probability: 0.3 }
    );
    // 0.5 falls to 0.15 over 1.5 s: 0.3 is reached after 6/7 s of silence.
    let silence = turns[0].decided_at - turns[0].speech_end;
    assert!(
        silence >= ms(857) && silence <= ms(880),
        "decided after {silence:?} of silence"
    );
    assert!(turns[0].signals.threshold <= 0.3);
}

#[test]
fn a_question_ends_an_unsure_turn_at_the_question_limit() {
    let mut model = Scripted::always(0.05);
    let mut d = Driver::new(TurnConfig::default().without_transcripts());
    d.vad(VadEvent::SpeechStart { at_sample: 0 });
    d.feed_ms(1000, &mut model);
    d.turns.on_transcript(ms(1000), TranscriptForm::Question);
    d.vad(VadEvent::SpeechEnd { at_sample: 16_000 });
    let turns = d.feed_ms(1500, &mut model);
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0].reason, TurnEndReason::TranscriptComplete);
    assert_eq!(turns[0].decided_at - turns[0].speech_end, ms(500));
    assert_eq!(turns[0].signals.form, TranscriptForm::Question);

    // A model that leans "finished" is enough at once after a question.
    let mut model = Scripted::always(0.3);
    let mut d = Driver::new(TurnConfig::default().without_transcripts());
    d.vad(VadEvent::SpeechStart { at_sample: 0 });
    d.feed_ms(1000, &mut model);
    d.turns.on_transcript(ms(1000), TranscriptForm::Question);
    d.vad(VadEvent::SpeechEnd { at_sample: 16_000 });
    let turn = d.poll(&mut model).expect("ended at the first verdict");
    assert_eq!(turn.reason, TurnEndReason::Complete { probability: 0.3 });
}

#[test]
fn a_transcript_that_needs_more_words_holds_the_turn_to_the_silence_limit() {
    // "My number is 555 …": the model leans "finished", the words say otherwise.
    let mut model = Scripted::always(0.6);
    let mut d = Driver::new(TurnConfig::default().without_transcripts());
    d.vad(VadEvent::SpeechStart { at_sample: 0 });
    d.feed_ms(1000, &mut model);
    d.vad(VadEvent::SpeechEnd { at_sample: 16_000 });
    d.turns.on_transcript(ms(1000), TranscriptForm::Incomplete);
    assert!(d.feed_ms(1400, &mut model).is_empty(), "a 1.4 s pause");
    d.vad(VadEvent::SpeechStart { at_sample: 38_400 });
    d.feed_ms(600, &mut model);
    d.vad(VadEvent::SpeechEnd { at_sample: 48_000 });
    let turn = d.poll(&mut model).expect("the rest of the number ends it");
    assert_eq!(turn.reason, TurnEndReason::Complete { probability: 0.6 });
    assert_eq!(
        turn.audio.len(),
        48_000,
        "one turn: both parts and the pause"
    );

    // Without more speech, it ends at the silence limit whatever the model says.
    let mut d = Driver::new(TurnConfig::default().without_transcripts());
    d.vad(VadEvent::SpeechStart { at_sample: 0 });
    d.feed_ms(1000, &mut model);
    d.turns.on_transcript(ms(1000), TranscriptForm::Incomplete);
    d.vad(VadEvent::SpeechEnd { at_sample: 16_000 });
    let turns = d.feed_ms(2500, &mut model);
    assert_eq!(turns[0].reason, TurnEndReason::SilenceTimeout);
    assert_eq!(turns[0].decided_at - turns[0].speech_end, ms(1500));
}

#[test]
fn a_transcript_of_another_pause_is_not_applied() {
    let mut model = Scripted::always(0.05);
    let mut d = Driver::new(TurnConfig::default().without_transcripts());
    d.vad(VadEvent::SpeechStart { at_sample: 0 });
    d.feed_ms(1000, &mut model);
    d.turns.on_transcript(ms(400), TranscriptForm::Question);
    d.vad(VadEvent::SpeechEnd { at_sample: 16_000 });
    let turns = d.feed_ms(1500, &mut model);
    assert_eq!(turns[0].reason, TurnEndReason::SilenceTimeout);
    assert_eq!(turns[0].signals.form, TranscriptForm::Unclear);
}

#[test]
fn eagerness_presets_order_thresholds_and_limits() {
    let [low, normal, high] =
        [Eagerness::Low, Eagerness::Normal, Eagerness::High].map(TurnConfig::with_eagerness);
    assert_eq!(normal, TurnConfig::default());
    assert!(low.complete_threshold > normal.complete_threshold);
    assert!(normal.complete_threshold > high.complete_threshold);
    assert!(low.max_silence_ms > normal.max_silence_ms);
    assert!(normal.max_silence_ms > high.max_silence_ms);
    assert!(low.question_silence_ms > high.question_silence_ms);
    let config: TurnConfig =
        serde_json::from_str(r#"{ "eagerness": "high", "max_silence_ms": 1200 }"#).unwrap();
    assert_eq!(
        config,
        TurnConfig {
            max_silence_ms: 1200,
            ..high
        }
    );
    assert!(serde_json::from_str::<TurnConfig>(r#"{ "eagerness": "hasty" }"#).is_err());
    assert!(serde_json::from_str::<TurnConfig>(r#"{ "max_silense_ms": 1 }"#).is_err());
}

#[test]
fn speech_resuming_in_the_pause_continues_the_same_turn() {
    // Four verdicts in the 700 ms pause (at 0.3, 0.5, 0.7 and 0.9 s of silence), then one
    // at the second.
    let mut model = Scripted::new(&[Ok(0.1), Ok(0.1), Ok(0.1), Ok(0.1), Ok(0.8)]);
    let mut d = Driver::new(TurnConfig::default().without_transcripts());
    d.feed_ms(400, &mut model);
    d.vad(VadEvent::SpeechStart { at_sample: 3_200 });
    d.feed_ms(1000, &mut model);
    d.vad(VadEvent::SpeechEnd { at_sample: 17_600 });
    assert!(d.feed_ms(700, &mut model).is_empty(), "mid-sentence pause");
    d.vad(VadEvent::SpeechStart { at_sample: 33_600 });
    assert!(d.feed_ms(1000, &mut model).is_empty());
    d.vad(VadEvent::SpeechEnd { at_sample: 44_800 });
    let turn = d.poll(&mut model).expect("complete at the second pause");
    assert_eq!(turn.reason, TurnEndReason::Complete { probability: 0.8 });
    assert_eq!(model.asked.len(), 5);
    assert_eq!(turn.audio.first(), Some(&0.0));
    assert_eq!(
        turn.audio.len() as u64,
        d.fed,
        "both parts and the pause, in order"
    );
    assert!(turn.audio.windows(2).all(|w| w[1] == w[0] + 1.0));
}

#[test]
fn a_monologue_is_split_every_max_turn_without_growing_the_buffer() {
    let config = TurnConfig {
        max_turn_ms: 2_000,
        ..TurnConfig::default()
    };
    let mut model = Scripted::always(0.9);
    let mut d = Driver::new(config);
    let allocated = d.turns.buffer.capacity();
    d.feed_ms(300, &mut model);
    d.vad(VadEvent::SpeechStart { at_sample: 3_200 });
    let turns = d.feed_ms(7_000, &mut model);
    assert_eq!(d.turns.buffer.capacity(), allocated, "no reallocation");
    assert_eq!(turns.len(), 3);
    let mut next = 3_200.0 - 200.0 * 16.0;
    for turn in &turns {
        assert_eq!(turn.reason, TurnEndReason::MaxDuration);
        assert_eq!(turn.audio.len(), 32_000);
        assert_eq!(turn.audio[0], next, "turns are contiguous");
        next += 32_000.0;
        assert_eq!(
            turn.decided_at, turn.speech_end,
            "split on a frame boundary"
        );
    }
    assert_eq!(turns[0].speech_end, ms(2_000));
    // Speech goes on as a new turn, which ends normally.
    d.vad(VadEvent::SpeechEnd {
        at_sample: d.fed - 3_200,
    });
    let last = d.poll(&mut model).expect("the remainder is a turn");
    assert_eq!(last.audio[0], next);
    assert_eq!(model.asked.len(), 1);
}

#[test]
fn speech_ending_just_before_a_split_leaves_no_empty_turn() {
    let config = TurnConfig {
        max_turn_ms: 1_000,
        ..TurnConfig::default()
    };
    let mut model = Scripted::always(0.9);
    let mut d = Driver::new(config);
    d.vad(VadEvent::SpeechStart { at_sample: 0 });
    let turns = d.feed_ms(1_300, &mut model);
    assert_eq!(turns.len(), 1);
    // The VAD confirms, 300 ms late, that speech ended at the split point.
    d.vad(VadEvent::SpeechEnd { at_sample: 16_000 });
    assert!(!d.turns.in_turn());
    assert!(d.poll(&mut model).is_none());
    assert!(model.asked.is_empty());
}

#[test]
fn unpolled_splits_are_bounded_and_drop_the_oldest() {
    let config = TurnConfig {
        max_turn_ms: 1_000,
        ..TurnConfig::default()
    };
    let mut turns = EndOfTurn::new(config);
    turns.push_vad(ms(0), VadEvent::SpeechStart { at_sample: 0 });
    let second: Vec<f32> = (0..16_000).map(|p| p as f32).collect();
    for s in 1..=6u64 {
        turns.push_audio(ms(s * 1000), &second);
    }
    assert!(turns.buffered_samples() <= turns.capacity());
    let mut model = Scripted::always(0.1);
    let out: Vec<TurnEnd> = std::iter::from_fn(|| turns.poll(ms(6000), &mut model)).collect();
    assert_eq!(out.len(), MAX_PENDING_TURNS);
    assert_eq!(
        out[0].speech_end,
        ms(3000),
        "the two oldest splits were dropped"
    );
}

#[test]
fn model_errors_are_reported_and_fall_back_to_silence_timing() {
    let mut model = Scripted::new(&[Err(())]);
    let mut d = Driver::new(TurnConfig::default().without_transcripts());
    d.vad(VadEvent::SpeechStart { at_sample: 0 });
    d.feed_ms(1000, &mut model);
    d.vad(VadEvent::SpeechEnd { at_sample: 16_000 });
    assert!(d.poll(&mut model).is_none());
    assert!(matches!(
        d.turns.take_model_error(),
        Some(TurnError::Inference(_))
    ));
    assert!(d.turns.take_model_error().is_none());
    let turns = d.feed_ms(1500, &mut model);
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0].reason, TurnEndReason::SilenceTimeout);
}

#[test]
fn the_pre_roll_never_reaches_into_the_previous_turn() {
    let mut model = Scripted::always(0.9);
    let mut d = Driver::new(TurnConfig::default().without_transcripts());
    d.vad(VadEvent::SpeechStart { at_sample: 0 });
    d.feed_ms(1000, &mut model);
    d.vad(VadEvent::SpeechEnd { at_sample: 11_200 });
    let first = d.poll(&mut model).expect("complete");
    assert_eq!(first.audio.len(), 16_000);
    d.vad(VadEvent::SpeechStart { at_sample: 16_000 });
    d.feed_ms(500, &mut model);
    d.vad(VadEvent::SpeechEnd { at_sample: 22_400 });
    let second = d.poll(&mut model).expect("complete");
    assert_eq!(
        second.audio[0], 16_000.0,
        "pre-roll clipped at the previous turn's end"
    );
}

#[test]
fn clear_drops_the_turn_and_reset_restarts_the_stream() {
    let mut model = Scripted::always(0.9);
    let mut d = Driver::new(TurnConfig::default().without_transcripts());
    d.vad(VadEvent::SpeechStart { at_sample: 0 });
    d.feed_ms(1000, &mut model);
    d.turns.clear();
    assert!(
        d.turns.in_turn(),
        "the user is still speaking: a new turn starts"
    );
    d.feed_ms(500, &mut model);
    d.vad(VadEvent::SpeechEnd { at_sample: 24_000 });
    let turn = d.poll(&mut model).expect("complete");
    assert_eq!(turn.audio[0], 16_000.0, "audio before clear() is gone");

    d.turns.reset();
    assert_eq!(d.turns.position(), 0);
    assert_eq!(d.turns.buffered_samples(), 0);
    assert!(!d.turns.in_turn());
}

#[test]
fn a_long_silence_keeps_only_recent_audio() {
    let config = TurnConfig {
        max_turn_ms: 2_000,
        ..TurnConfig::default()
    };
    let mut model = Scripted::always(0.9);
    let mut d = Driver::new(config);
    let allocated = d.turns.buffer.capacity();
    d.feed_ms(10_000, &mut model);
    assert_eq!(d.turns.buffer.capacity(), allocated);
    let onset = d.fed - 1_600;
    d.vad(VadEvent::SpeechStart { at_sample: onset });
    d.feed_ms(500, &mut model);
    d.vad(VadEvent::SpeechEnd { at_sample: d.fed });
    let turn = d.poll(&mut model).expect("complete");
    assert_eq!(
        turn.audio[0],
        (onset - 3_200) as f32,
        "pre-roll survived compaction"
    );
}

#[test]
fn config_defaults_fill_missing_keys() {
    let config: TurnConfig = serde_json::from_str(r#"{ "max_silence_ms": 900 }"#).unwrap();
    assert_eq!(
        config,
        TurnConfig {
            max_silence_ms: 900,
            ..TurnConfig::default()
        }
    );
    let round_trip: TurnConfig =
        serde_json::from_str(&serde_json::to_string(&TurnConfig::default()).unwrap()).unwrap();
    assert_eq!(round_trip, TurnConfig::default());
}

#[test]
fn an_unsure_verdict_waits_for_the_pauses_transcript() {
    // "My account number is …": the model leans "finished", the transcript is on its way.
    let mut model = Scripted::always(0.7);
    let mut d = Driver::new(TurnConfig::default());
    d.vad(VadEvent::SpeechStart { at_sample: 0 });
    d.feed_ms(1000, &mut model);
    d.vad(VadEvent::SpeechEnd { at_sample: 16_000 });
    assert!(
        d.feed_ms(200, &mut model).is_empty(),
        "waiting for the words"
    );
    d.turns.on_transcript(ms(1000), TranscriptForm::Incomplete);
    assert!(
        d.feed_ms(1000, &mut model).is_empty(),
        "the words need more"
    );

    // The words read complete: the verdict stands at once.
    let mut d = Driver::new(TurnConfig::default());
    d.vad(VadEvent::SpeechStart { at_sample: 0 });
    d.feed_ms(1000, &mut model);
    d.vad(VadEvent::SpeechEnd { at_sample: 16_000 });
    assert!(d.feed_ms(200, &mut model).is_empty());
    d.turns.on_transcript(ms(1000), TranscriptForm::Statement);
    let turn = d.poll(&mut model).expect("ended on the verdict");
    assert_eq!(turn.reason, TurnEndReason::Complete { probability: 0.7 });

    // No transcript at all: the verdict stands once the wait is over.
    let mut d = Driver::new(TurnConfig::default());
    d.vad(VadEvent::SpeechStart { at_sample: 0 });
    d.feed_ms(1000, &mut model);
    d.vad(VadEvent::SpeechEnd { at_sample: 16_000 });
    let turns = d.feed_ms(1000, &mut model);
    assert_eq!(turns[0].decided_at - turns[0].speech_end, ms(600));

    // A sure verdict does not wait.
    let mut sure = Scripted::always(0.95);
    let mut d = Driver::new(TurnConfig::default());
    d.vad(VadEvent::SpeechStart { at_sample: 0 });
    d.feed_ms(1000, &mut sure);
    d.vad(VadEvent::SpeechEnd { at_sample: 16_000 });
    assert!(d.poll(&mut sure).is_some());
}
