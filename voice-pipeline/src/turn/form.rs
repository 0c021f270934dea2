//! What the words of a pause say about the turn: a speculative transcript that ends a question
//! or a whole statement makes "finished" more likely; one that stops on "and", "the" or in the
//! middle of a number makes it less likely, whatever the voice sounds like.

/// The form of the transcript of the speech before a pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TranscriptForm {
    /// No transcript yet, or nothing to tell from it.
    #[default]
    Unclear,
    /// Ends with a question mark after at least two words.
    Question,
    /// Ends with a full stop or an exclamation mark after a whole clause (at least three words,
    /// not ending on a word that needs another).
    Statement,
    /// Stops where more must follow: a conjunction, an article, a preposition, a filler, a
    /// comma, or digits being dictated.
    Incomplete,
}

/// Words after which a sentence cannot end (English; lower case).
const CONTINUATION_WORDS: &[&str] = &[
    "and", "but", "or", "so", "because", "if", "then", "than", "that", "which", "who", "whose",
    "when", "where", "while", "the", "a", "an", "my", "your", "his", "her", "our", "their", "its",
    "to", "of", "in", "on", "at", "for", "from", "with", "about", "into", "by", "is", "are", "was",
    "were", "be", "am", "um", "uh", "er", "erm", "hmm", "like", "plus", "minus", "times",
    "between", "some", "this", "these", "those", "very", "really", "i", "we", "you", "they",
];

/// Number words: a dictated number goes on after a pause.
const NUMBER_WORDS: &[&str] = &[
    "zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "hundred", "thousand", "double", "triple",
];

impl TranscriptForm {
    /// Reads the form of `text`, a transcript of the speech up to a pause.
    pub fn of(text: &str) -> Self {
        let text = text.trim();
        let words: Vec<String> = text
            .split_whitespace()
            .map(|w| {
                w.trim_matches(|c: char| !c.is_alphanumeric())
                    .to_lowercase()
            })
            .filter(|w| !w.is_empty())
            .collect();
        // Digits, possibly grouped ("079-400-4000", "555.0199").
        let is_number = |w: &str| {
            w.chars().any(|c| c.is_ascii_digit())
                && w.chars().all(|c| c.is_ascii_digit() || "-.,/".contains(c))
        };
        let Some(last) = words.last() else {
            return Self::Unclear;
        };
        let question = text.ends_with('?');
        if text.ends_with(',')
            || text.ends_with("...")
            || text.ends_with('…')
            || text.ends_with('-')
            || CONTINUATION_WORDS.contains(&last.as_str())
        {
            return Self::Incomplete;
        }
        let digits = is_number(last);
        let spoken_number = words.len() >= 2
            && words[words.len() - 2..]
                .iter()
                .all(|w| NUMBER_WORDS.contains(&w.as_str()) || is_number(w));
        if !question && (digits || spoken_number) {
            return Self::Incomplete;
        }
        if question && words.len() >= 2 {
            return Self::Question;
        }
        if (text.ends_with('.') || text.ends_with('!')) && words.len() >= 3 {
            return Self::Statement;
        }
        Self::Unclear
    }
}

#[cfg(test)]
mod tests {
    use super::TranscriptForm::{self, *};

    #[test]
    fn questions_and_statements_read_complete() {
        assert_eq!(TranscriptForm::of("What time is it in Tokyo?"), Question);
        assert_eq!(TranscriptForm::of(" How much is two plus two? "), Question);
        assert_eq!(
            TranscriptForm::of("Please book a table for four."),
            Statement
        );
        assert_eq!(TranscriptForm::of("Tell me a joke!"), Statement);
    }

    #[test]
    fn a_sentence_cut_at_a_word_that_needs_another_reads_incomplete() {
        assert_eq!(
            TranscriptForm::of("I want to fly to Boston and"),
            Incomplete
        );
        assert_eq!(TranscriptForm::of("I'd like the."), Incomplete);
        assert_eq!(TranscriptForm::of("Book a flight for,"), Incomplete);
        assert_eq!(TranscriptForm::of("So I was thinking, um"), Incomplete);
        assert_eq!(TranscriptForm::of("Let me think..."), Incomplete);
    }

    #[test]
    fn a_number_being_dictated_reads_incomplete_unless_asked() {
        assert_eq!(TranscriptForm::of("My number is 555."), Incomplete);
        assert_eq!(
            TranscriptForm::of("My number is five five five."),
            Incomplete
        );
        assert_eq!(
            TranscriptForm::of("My phone number is 079-400-4000"),
            Incomplete
        );
        assert_eq!(TranscriptForm::of("What is two plus two?"), Question);
    }

    #[test]
    fn too_little_to_tell_is_unclear() {
        assert_eq!(TranscriptForm::of(""), Unclear);
        assert_eq!(TranscriptForm::of("Okay."), Unclear);
        assert_eq!(TranscriptForm::of("Paris"), Unclear);
    }
}
