//! espeak-ng through `libespeak-ng`: IPA phonemes for Piper, and a fast robotic voice of its own.
//!
//! libespeak-ng keeps all of its state in globals (the selected voice, the synthesis callback,
//! a static phoneme buffer), so every call here goes through one process-wide [`Mutex`] and the
//! library is initialised once, in synchronous mode, with its data from the default location.
//!
//! ```no_run
//! use dartmouth_voice::tts::espeak::{EspeakTts, phonemize};
//! assert!(!phonemize("hello world", "en-us")?.is_empty());
//! let tts = EspeakTts::new("en-us")?;
//! let pcm = tts.synthesize("Hello there.")?;
//! # let _ = pcm;
//! # Ok::<(), dartmouth_voice::tts::espeak::EspeakError>(())
//! ```

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_short, c_void};
use std::sync::{Mutex, MutexGuard, PoisonError};

use espeakng_sys as sys;

/// espeak-ng's output rate with its standard voices.
pub const ESPEAK_SAMPLE_RATE: u32 = 22_050;
/// Length of the audio buffers espeak-ng hands to the callback, in milliseconds.
const BUFFER_MS: c_int = 100;
/// Punctuation that ends a clause and is kept in the phonemes, as Piper does.
const CLAUSE_PUNCTUATION: [char; 6] = ['.', ',', ';', ':', '!', '?'];
/// Punctuation that also ends a sentence.
const SENTENCE_PUNCTUATION: [char; 3] = ['.', '!', '?'];

/// What can go wrong talking to espeak-ng.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EspeakError {
    /// `espeak_Initialize` failed (usually: `espeak-ng-data` is not installed).
    #[error(
        "espeak-ng failed to initialise: is espeak-ng-data installed (Debian package espeak-ng-data)?"
    )]
    Init,
    /// The voice is unknown to espeak-ng.
    #[error("espeak-ng has no voice {0:?}")]
    Voice(String),
    /// Synthesis returned an error code.
    #[error("espeak-ng synthesis failed with code {0}")]
    Synth(i32),
}

/// The initialised library; only reachable through [`ENGINE`].
struct Engine {
    sample_rate: u32,
    voice: Option<String>,
}

/// espeak-ng's global state, initialised on first use.
static ENGINE: Mutex<Option<Engine>> = Mutex::new(None);

thread_local! {
    /// Where the synthesis callback appends samples. Only set while the calling thread holds
    /// [`ENGINE`] and is inside `espeak_Synth`, which runs the callback on that same thread.
    static SINK: RefCell<Option<Vec<i16>>> = const { RefCell::new(None) };
}

/// Locks espeak-ng, initialising it on first use, and selects `voice`.
fn engine(voice: &str) -> Result<MutexGuard<'static, Option<Engine>>, EspeakError> {
    // A panic while holding the lock cannot leave espeak-ng half-called: recover the guard.
    let mut guard = ENGINE.lock().unwrap_or_else(PoisonError::into_inner);
    if guard.is_none() {
        *guard = Some(Engine::init()?);
    }
    if let Some(engine) = guard.as_mut() {
        engine.select_voice(voice)?;
    }
    Ok(guard)
}

impl Engine {
    fn init() -> Result<Self, EspeakError> {
        // SAFETY: called once, under ENGINE's lock, before any other espeak-ng call. A null path
        // lets the library find its data; DONT_EXIT makes it return an error instead of calling
        // exit() when the data is missing.
        let rate = unsafe {
            sys::espeak_Initialize(
                sys::espeak_AUDIO_OUTPUT_AUDIO_OUTPUT_SYNCHRONOUS,
                BUFFER_MS,
                std::ptr::null(),
                sys::espeakINITIALIZE_DONT_EXIT as c_int,
            )
        };
        if rate <= 0 {
            return Err(EspeakError::Init);
        }
        // SAFETY: `synth_callback` has the signature espeak-ng expects and stays valid for the
        // life of the process; we hold ENGINE's lock.
        unsafe { sys::espeak_SetSynthCallback(Some(synth_callback)) };
        Ok(Self {
            sample_rate: rate as u32,
            voice: None,
        })
    }

    fn select_voice(&mut self, voice: &str) -> Result<(), EspeakError> {
        if self.voice.as_deref() == Some(voice) {
            return Ok(());
        }
        let name = CString::new(voice).map_err(|_| EspeakError::Voice(voice.to_string()))?;
        // SAFETY: `name` is a valid NUL-terminated string that outlives the call; espeak-ng copies
        // what it needs. We hold ENGINE's lock.
        let status = unsafe { sys::espeak_SetVoiceByName(name.as_ptr()) };
        if status != sys::espeak_ERROR_EE_OK {
            self.voice = None;
            return Err(EspeakError::Voice(voice.to_string()));
        }
        self.voice = Some(voice.to_string());
        Ok(())
    }
}

/// Receives synthesised audio; runs on the thread inside `espeak_Synth`.
unsafe extern "C" fn synth_callback(
    wav: *mut c_short,
    samples: c_int,
    _events: *mut sys::espeak_EVENT,
) -> c_int {
    if wav.is_null() || samples <= 0 {
        return 0;
    }
    // SAFETY: espeak-ng passes `samples` valid 16-bit samples at `wav` for the duration of the
    // callback; we only read them.
    let pcm = unsafe { std::slice::from_raw_parts(wav, samples as usize) };
    // Never panic across the FFI boundary: a busy or missing sink just drops the audio.
    SINK.with(|sink| {
        if let Ok(mut sink) = sink.try_borrow_mut()
            && let Some(buf) = sink.as_mut()
        {
            buf.extend_from_slice(pcm);
        }
    });
    0
}

/// Text to IPA phonemes the way Piper does it: clause by clause with espeak-ng's IPA mode, each
/// clause's punctuation kept (`,` `;` `:` followed by a space), sentences joined by a space.
/// `voice` is an espeak-ng voice such as `en-us`.
pub fn phonemize(text: &str, voice: &str) -> Result<String, EspeakError> {
    Ok(phonemize_sentences(text, voice)?.join(" "))
}

/// Like [`phonemize`], but one string per sentence (Piper synthesises sentence by sentence).
/// Empty or phoneme-less text gives no sentences.
pub fn phonemize_sentences(text: &str, voice: &str) -> Result<Vec<String>, EspeakError> {
    // espeak-ng reads up to a NUL; interior NULs would silently cut the text.
    let cleaned = text.replace('\0', " ");
    if cleaned.trim().is_empty() {
        return Ok(Vec::new());
    }
    let Ok(c_text) = CString::new(cleaned) else {
        return Ok(Vec::new());
    };
    let bytes = c_text.as_bytes();
    let start = c_text.as_ptr() as usize;

    let _guard = engine(voice)?;
    let mut sentences = Vec::new();
    let mut current = String::new();
    let mut cursor: *const c_void = c_text.as_ptr().cast();
    let mut consumed = 0usize;
    while !cursor.is_null() && consumed < bytes.len() {
        // SAFETY: `cursor` points into `c_text`, which is NUL-terminated and outlives the loop;
        // espeak-ng advances it (or nulls it at the end) and returns a pointer to its own static
        // buffer, which we copy before the next call. We hold ENGINE's lock throughout.
        let phonemes = unsafe {
            let out = sys::espeak_TextToPhonemes(
                &mut cursor,
                sys::espeakCHARS_UTF8 as c_int,
                sys::espeakPHONEMES_IPA as c_int,
            );
            if out.is_null() {
                String::new()
            } else {
                CStr::from_ptr(out as *const c_char)
                    .to_string_lossy()
                    .into_owned()
            }
        };
        // Pure address arithmetic: never dereferences, clamps anything outside the text.
        let next = if cursor.is_null() {
            bytes.len()
        } else {
            (cursor as usize).saturating_sub(start).min(bytes.len())
        };
        if next <= consumed && !cursor.is_null() {
            break; // no progress: stop rather than spin
        }
        let clause = String::from_utf8_lossy(&bytes[consumed..next.max(consumed)]);
        consumed = next.max(consumed);
        let at_end = cursor.is_null() || consumed >= bytes.len();
        let punctuation = clause_punctuation(&clause, at_end);

        let phonemes = strip_language_switches(phonemes.trim());
        if phonemes.is_empty() {
            if at_end {
                push_sentence(&mut sentences, &mut current);
            }
            continue;
        }
        if !current.is_empty() && !current.ends_with(' ') {
            current.push(' ');
        }
        current.push_str(&phonemes);
        match punctuation {
            Some(p) if SENTENCE_PUNCTUATION.contains(&p) => {
                current.push(p);
                push_sentence(&mut sentences, &mut current);
            }
            Some(p) => {
                current.push(p);
                current.push(' ');
            }
            None if at_end => push_sentence(&mut sentences, &mut current),
            None => current.push(' '),
        }
    }
    push_sentence(&mut sentences, &mut current);
    Ok(sentences)
}

/// The punctuation that ended a clause, from the text espeak-ng consumed for it. Before the end of
/// the text espeak-ng has also read the first character of the next clause (`"Hello, w"`), so
/// that character is ignored.
fn clause_punctuation(consumed: &str, at_end: bool) -> Option<char> {
    let mut chars = consumed.chars();
    if !at_end {
        chars.next_back();
    }
    chars
        .as_str()
        .trim_end()
        .chars()
        .next_back()
        .filter(|c| CLAUSE_PUNCTUATION.contains(c))
}

fn push_sentence(sentences: &mut Vec<String>, current: &mut String) {
    let sentence = current.trim();
    if !sentence.is_empty() {
        sentences.push(sentence.to_string());
    }
    current.clear();
}

/// Removes espeak-ng's language-switch markers such as `(fr)` … `(en)`, which are not phonemes.
fn strip_language_switches(phonemes: &str) -> String {
    let mut out = String::with_capacity(phonemes.len());
    let mut rest = phonemes;
    while let Some(open) = rest.find('(') {
        let Some(close) = rest[open..].find(')') else {
            break;
        };
        let inside = &rest[open + 1..open + close];
        out.push_str(&rest[..open]);
        if !inside
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            out.push_str(&rest[open..=open + close]);
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// espeak-ng's own formant voice: fast and robotic, with no model files. All instances share the
/// library's global state through one lock, so synthesis calls run one at a time.
#[derive(Debug, Clone)]
pub struct EspeakTts {
    voice: String,
    sample_rate: u32,
}

impl EspeakTts {
    /// Initialises espeak-ng (once per process) and checks that `voice` (e.g. `en-us`) exists.
    pub fn new(voice: &str) -> Result<Self, EspeakError> {
        let guard = engine(voice)?;
        let sample_rate = guard.as_ref().map_or(ESPEAK_SAMPLE_RATE, |e| e.sample_rate);
        Ok(Self {
            voice: voice.to_string(),
            sample_rate,
        })
    }

    /// Output sample rate in Hz (22,050 with the standard voices).
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Speaks `text` to mono 16-bit PCM at [`Self::sample_rate`]. Empty text gives no samples.
    pub fn synthesize(&self, text: &str) -> Result<Vec<i16>, EspeakError> {
        let cleaned = text.replace('\0', " ");
        if cleaned.trim().is_empty() {
            return Ok(Vec::new());
        }
        let Ok(c_text) = CString::new(cleaned) else {
            return Ok(Vec::new());
        };
        let _guard = engine(&self.voice)?;
        SINK.with(|sink| *sink.borrow_mut() = Some(Vec::new()));
        // SAFETY: `c_text` is NUL-terminated and outlives the call; in synchronous mode
        // espeak_Synth returns only after the last callback, which ran on this thread and wrote
        // into SINK. We hold ENGINE's lock, so no other thread drives espeak-ng meanwhile.
        let status = unsafe {
            sys::espeak_Synth(
                c_text.as_ptr().cast(),
                c_text.as_bytes_with_nul().len(),
                0,
                sys::espeak_POSITION_TYPE_POS_CHARACTER,
                0,
                sys::espeakCHARS_UTF8,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        let pcm = SINK
            .with(|sink| sink.borrow_mut().take())
            .unwrap_or_default();
        if status != sys::espeak_ERROR_EE_OK {
            return Err(EspeakError::Synth(status as i32));
        }
        Ok(pcm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_switch_markers_are_removed() {
        assert_eq!(
            strip_language_switches("(fr)bɔ̃ʒˈuʁ(en) wˈɜːld"),
            "bɔ̃ʒˈuʁ wˈɜːld"
        );
        assert_eq!(strip_language_switches("no markers"), "no markers");
        assert_eq!(strip_language_switches("open ( only"), "open ( only");
    }

    #[test]
    fn clause_punctuation_ignores_espeaks_lookahead_character() {
        assert_eq!(clause_punctuation("Hello, w", false), Some(','));
        assert_eq!(clause_punctuation("orld. H", false), Some('.'));
        assert_eq!(clause_punctuation("es!", true), Some('!'));
        assert_eq!(clause_punctuation("Bonjour", true), None);
        assert_eq!(clause_punctuation("a long clause w", false), None);
    }

    #[test]
    fn clause_punctuation_is_kept_and_sentences_split() {
        let sentences = phonemize_sentences("Hello, world. How are you?", "en-us").unwrap();
        assert_eq!(sentences.len(), 2, "{sentences:?}");
        assert!(sentences[0].contains(", "), "{sentences:?}");
        assert!(sentences[0].ends_with('.'), "{sentences:?}");
        assert!(sentences[1].ends_with('?'), "{sentences:?}");
    }

    #[test]
    fn blank_text_gives_nothing() {
        assert!(phonemize_sentences("  \n", "en-us").unwrap().is_empty());
        assert!(
            EspeakTts::new("en-us")
                .unwrap()
                .synthesize("")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn unknown_voice_is_an_error() {
        assert!(matches!(
            phonemize("hi", "no-such-voice-xx"),
            Err(EspeakError::Voice(_))
        ));
    }
}
