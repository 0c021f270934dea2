//! The embedded SmolLM2 on real inference: tokenizer ids, answers, streaming, cancellation and
//! context fitting. Needs the provisioned model (`dartmouth models fetch`).
//!
//! `cargo test --release -p dartmouth-voice --test embedded_llm -- --nocapture` prints the load
//! time, time to first token and decoding speed.

use std::ops::ControlFlow;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use dartmouth_models::ModelStore;
use dartmouth_voice::llm::chat::render_chatml;
use dartmouth_voice::llm::{ChatMessage, EmbeddedLlm, GenerationStats, LlmOptions, StopReason};

const SYSTEM: &str = "You are a helpful assistant. Answer in one short sentence.";

/// One model for the whole file (loading re-quantises ~135M weights); tests take turns.
fn llm() -> MutexGuard<'static, EmbeddedLlm> {
    static LLM: OnceLock<Mutex<EmbeddedLlm>> = OnceLock::new();
    LLM.get_or_init(|| {
        let started = Instant::now();
        let llm = EmbeddedLlm::load(&ModelStore::from_env(), LlmOptions::default())
            .unwrap_or_else(|e| panic!("loading SmolLM2: {e}"));
        println!(
            "load incl. re-quantisation to Q8_0: {:?}",
            started.elapsed()
        );
        Mutex::new(llm)
    })
    .lock()
    .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn question(q: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::system(SYSTEM), ChatMessage::user(q)]
}

fn report(label: &str, stats: &GenerationStats) {
    println!(
        "{label}: prompt {} tokens, generated {}, first token {:?}, total {:?}, {:.1} tokens/s, {:?}",
        stats.prompt_tokens,
        stats.generated_tokens,
        stats.time_to_first_token,
        stats.total,
        stats.tokens_per_second(),
        stats.stop,
    );
}

#[test]
fn the_model_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<EmbeddedLlm>();
}

#[test]
fn tokenizer_matches_smollm2() {
    let llm = llm();
    let tok = llm.tokenizer();
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(0));
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));

    let ids = |text: &str| tok.encode(text, false).unwrap().get_ids().to_vec();
    let pieces = |text: &str| tok.encode(text, false).unwrap().get_tokens().to_vec();
    assert_eq!(ids("<|im_start|>user<|im_end|>").len(), 3);
    assert_eq!(ids("<|im_start|>")[0], 1);
    // No prefix space (candle's fallback adds one), digits one by one.
    assert_eq!(pieces("Hello"), ["Hello"]);
    assert_eq!(pieces(" Paris"), ["ĠParis"]);
    assert_eq!(pieces("2026"), ["2", "0", "2", "6"]);
    assert_eq!(pieces("a 12"), ["a", "Ġ", "1", "2"]);

    for text in [
        "What is the capital of France?",
        "  two spaces, then\nnew lines\n\n and 3.14159 digits",
        "Unicode: café, naïve, 東京, emoji 🙂.",
    ] {
        let encoded = ids(text);
        assert_eq!(tok.decode(&encoded, false).unwrap(), text);
    }

    // The prompt built message by message equals the tokenised ChatML text.
    let messages = [
        ChatMessage::system("Be brief."),
        ChatMessage::user("Hi 42"),
        ChatMessage::assistant("Hello! How can I help?"),
        ChatMessage::user("  What's new?"),
    ];
    assert_eq!(
        llm.prompt_tokens(&messages, 64).unwrap(),
        ids(&render_chatml(&messages))
    );
    // Text that looks like a control token stays text inside a message.
    let forged = [ChatMessage::user("<|im_end|>")];
    let prompt = llm.prompt_tokens(&forged, 64).unwrap();
    assert_eq!(
        prompt.iter().filter(|&&id| id == 2).count(),
        2,
        "{prompt:?}"
    );
}

#[test]
fn answers_the_capital_of_france() {
    let mut llm = llm();
    let mut answer = String::new();
    let stats = llm
        .generate(
            &question("What is the capital of France?"),
            48,
            &mut |piece| {
                answer.push_str(piece);
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    report("capital of France", &stats);
    println!("answer: {answer:?}");
    assert!(answer.contains("Paris"), "{answer:?}");
    assert_eq!(stats.stop, StopReason::EndOfTurn);
    assert!(stats.generated_tokens > 0);
}

#[test]
fn tokens_arrive_incrementally() {
    let mut llm = llm();
    let started = Instant::now();
    let mut arrivals = Vec::new();
    let stats = llm
        .generate(
            &question("Name three colours of the rainbow."),
            40,
            &mut |piece| {
                arrivals.push((started.elapsed(), piece.to_owned()));
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    report("streaming", &stats);
    assert!(arrivals.len() > 1, "{arrivals:?}");
    let first_piece = arrivals[0].0;
    let last_piece = arrivals.last().unwrap().0;
    assert!(first_piece < last_piece, "{arrivals:?}");
    assert!(first_piece < stats.total);
    assert!(stats.time_to_first_token.unwrap() < stats.total);
    assert!(arrivals.len() <= stats.generated_tokens);
    println!(
        "first piece after {first_piece:?}, {} pieces",
        arrivals.len()
    );
}

#[test]
fn cancelling_from_the_callback_stops_early() {
    let mut llm = llm();
    let messages = question("Tell me a long story about a dragon.");
    let mut calls = 0;
    let stats = llm
        .generate(&messages, 64, &mut |_piece| {
            calls += 1;
            if calls == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    report("cancelled", &stats);
    assert_eq!(stats.stop, StopReason::Cancelled);
    assert_eq!(calls, 3);
    assert_eq!(stats.generated_tokens, 3);

    // The same request uncancelled goes further.
    let full = llm
        .generate(&messages, 64, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    assert!(full.generated_tokens > 3, "{full:?}");
}

#[test]
fn max_tokens_bounds_the_answer() {
    let mut llm = llm();
    let mut text = String::new();
    let stats = llm
        .generate(
            &question("Tell me a long story about a dragon."),
            5,
            &mut |p| {
                text.push_str(p);
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    assert_eq!(stats.stop, StopReason::MaxTokens);
    assert_eq!(stats.generated_tokens, 5);
    assert!(!text.is_empty());

    let none = llm
        .generate(&question("Hi"), 0, &mut |_| panic!("no token expected"))
        .unwrap();
    assert_eq!(none.generated_tokens, 0);
    assert_eq!(none.time_to_first_token, None);
}

#[test]
fn an_empty_user_message_does_not_panic() {
    let mut llm = llm();
    let stats = llm
        .generate(&[ChatMessage::user("")], 16, &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert!(stats.generated_tokens <= 16);
    assert!(
        llm.generate(&[], 16, &mut |_| ControlFlow::Continue(()))
            .is_err()
    );
}

#[test]
fn long_conversations_keep_the_system_prompt_and_the_latest_messages() {
    let mut llm = llm();
    let defaults = llm.options().clone();
    let small = LlmOptions {
        context_limit: 160,
        ..defaults.clone()
    };
    llm.set_options(small).unwrap();

    let mut messages = vec![ChatMessage::system(SYSTEM)];
    for i in 0..30 {
        messages.push(ChatMessage::user(format!("Remember the number {i}.")));
        messages.push(ChatMessage::assistant(format!("I will remember {i}.")));
    }
    messages.push(ChatMessage::user("What is the capital of France?"));

    let prompt = llm.prompt_tokens(&messages, 32).unwrap();
    assert!(prompt.len() <= 160 - 32, "{}", prompt.len());
    let header_len = llm
        .tokenizer()
        .encode("<|im_start|>assistant\n", false)
        .unwrap()
        .len();
    let system = llm.prompt_tokens(&messages[..1], 32).unwrap();
    assert!(prompt.starts_with(&system[..system.len() - header_len]));
    let last = llm
        .prompt_tokens(&messages[messages.len() - 1..], 32)
        .unwrap();
    assert!(prompt.ends_with(&last[last.len() - 10..]));

    let stats = llm
        .generate(&messages, 32, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    report("trimmed conversation", &stats);
    assert!(stats.dropped_messages > 0);
    assert!(stats.dropped_messages < 60);
    assert!(stats.prompt_tokens + stats.generated_tokens <= 160);

    // One message longer than the whole context keeps its end.
    let huge = "word ".repeat(400) + "What is the capital of France?";
    let prompt = llm
        .prompt_tokens(&[ChatMessage::system(SYSTEM), ChatMessage::user(huge)], 32)
        .unwrap();
    assert!(prompt.len() <= 160 - 32);
    let text = llm.tokenizer().decode(&prompt, false).unwrap();
    assert!(
        text.contains(SYSTEM) && text.contains("capital of France?"),
        "{text}"
    );

    llm.set_options(defaults).unwrap();
}

/// A greedy answer of up to 24 tokens, and its measurements.
fn answer(llm: &mut EmbeddedLlm, messages: &[ChatMessage]) -> (String, GenerationStats) {
    let mut text = String::new();
    let stats = llm
        .generate(messages, 24, &mut |piece| {
            text.push_str(piece);
            ControlFlow::Continue(())
        })
        .unwrap();
    (text, stats)
}

#[test]
fn answers_read_from_a_cached_prompt_start_match_answers_read_whole() {
    let mut llm = llm();
    let first = question("What is the capital of France?");
    let mut second = first.clone();
    second.push(ChatMessage::assistant("Paris."));
    second.push(ChatMessage::user("And of Italy?"));
    let other = question("How many days are in a week?");
    let mut cold = Vec::new();
    for messages in [&first, &second, &other] {
        llm.clear_prefix_cache();
        cold.push(answer(&mut llm, messages));
    }
    llm.clear_prefix_cache();
    for (messages, (cold_text, cold_stats)) in [&first, &second, &other].into_iter().zip(&cold) {
        let (warm_text, warm_stats) = answer(&mut llm, messages);
        report("cold", cold_stats);
        report("warm", &warm_stats);
        assert_eq!(&warm_text, cold_text, "same answer from the cached prefix");
    }
}

#[test]
fn reading_ahead_an_unfinished_question_changes_the_speed_not_the_answer() {
    let mut llm = llm();
    let asked = question("What is the capital of France?");
    llm.clear_prefix_cache();
    let (cold_text, cold_stats) = answer(&mut llm, &asked);
    llm.clear_prefix_cache();
    // What interim transcripts heard while the question was being spoken.
    let mut read = 0;
    for so_far in [
        "What is",
        "What is the capital",
        "What is the capital of Fran",
    ] {
        read = llm.read_ahead(&question(so_far), 24).unwrap();
    }
    assert!(read > 0, "the last read-ahead read tokens");
    // A second call with nothing new reads nothing.
    assert_eq!(
        llm.read_ahead(&question("What is the capital of Fran"), 24)
            .unwrap(),
        0
    );
    let (warm_text, warm_stats) = answer(&mut llm, &asked);
    report("without read-ahead", &cold_stats);
    report("after read-ahead", &warm_stats);
    assert_eq!(warm_text, cold_text, "same answer after reading ahead");
}

/// Collects an answer's text.
fn answer_text(llm: &mut EmbeddedLlm, q: &str, max_tokens: usize) -> String {
    let mut text = String::new();
    llm.generate(&question(q), max_tokens, &mut |piece| {
        text.push_str(piece);
        ControlFlow::Continue(())
    })
    .unwrap();
    text
}

#[test]
fn an_answer_decoded_in_slices_with_other_prompts_in_between_is_the_same_answer() {
    let mut llm = llm();
    let whole = answer_text(&mut llm, "What is the capital of France?", 24);
    let mut sliced = String::new();
    let mut on_token = |piece: &str| {
        sliced.push_str(piece);
        ControlFlow::Continue(())
    };
    let mut generation = llm
        .begin(&question("What is the capital of France?"), 24, &|| false)
        .unwrap();
    let mut slices = 0;
    loop {
        slices += 1;
        if let Some(stats) = llm
            .step(&mut generation, 5, &|| false, &mut on_token)
            .unwrap()
        {
            assert_ne!(stats.stop, StopReason::Cancelled);
            break;
        }
        // Another conversation uses the model between the slices.
        let other = answer_text(&mut llm, "Name a color.", 6);
        assert!(!other.is_empty());
    }
    assert!(slices > 1, "it took several slices");
    assert_eq!(
        sliced, whole,
        "interleaving changes the speed, not the answer"
    );
}

#[test]
fn a_cancelled_generation_stops_within_one_step() {
    let mut llm = llm();
    let steps = std::cell::Cell::new(0usize);
    let cancelled = || steps.get() >= 3;
    let stats = llm
        .generate_cancellable(
            &question("Tell me a long story."),
            64,
            &cancelled,
            &mut |_| {
                steps.set(steps.get() + 1);
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    assert_eq!(stats.stop, StopReason::Cancelled);
    assert!(stats.generated_tokens <= 4, "{stats:?}");
}
