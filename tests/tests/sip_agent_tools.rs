//! The agent's phone tools over real SIP: a phone (sipp for signaling, [`RtpPhone`] for RTP)
//! calls an agent whose language model is the OpenAI-compatible mock, scripted to call
//! functions. `send_digits` reaches the phone as RFC 4733 telephone-events (exactly the digits
//! asked for; digits the tool refuses are never sent, and the model reads why), and
//! `transfer_call` sends the phone a REFER; once the phone accepts (202) and reports the
//! transfer done (NOTIFY 200), the bridge hangs up its leg (RFC 3515). The phone triggers each
//! answer by pressing a key. Skips (with the reason) when sipp or the listening models are
//! missing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dartmouth_media::PhoneCodec;
use dartmouth_models::ModelStore;
use dartmouth_signaling::sip::SipSettings;
use dartmouth_signaling::sip::call::CallNotice;
use dartmouth_signaling::sip::tools::{SEND_DIGITS, TRANSFER_CALL};
use dartmouth_signaling::{AgentFactory, AgentInfo, AgentRefusal, AgentRequest};
use dartmouth_tests::TestGateway;
use dartmouth_tests::mock_openai::{MOCK_TTS_RATE, MockOpenAi, MockReplies, MockTurn};
use dartmouth_tests::sip::{
    RtpPhone, expect, expect_request, notify_refer, offer_sdp, pause, request, respond_in_dialog,
    run_sipp, scenario, sipp_available, start_bridge,
};
use dartmouth_voice::agent::{AgentConfig, AgentSession, Providers};
use dartmouth_voice::http::HttpProviderConfig;
use dartmouth_voice::http::openai_llm::OpenAiLlm;
use dartmouth_voice::http::openai_stt::OpenAiStt;
use dartmouth_voice::http::openai_tts::OpenAiTts;
use dartmouth_voice::knowledge::AgentTools;
use dartmouth_voice::listening::ListeningService;
use dartmouth_voice::provider::{Llm, Stt, Tts};

const PCMU: [(u8, &str); 2] = [(0, "PCMU/8000"), (101, "telephone-event/8000")];

/// An agent on the mock's speech, language and voice services, given the tools of the SIP call
/// it answers; remembers the Call-ID of each session's tools.
struct ToolAgents {
    listening: ListeningService,
    stt: Arc<dyn Stt>,
    llm: Arc<dyn Llm>,
    tts: Arc<dyn Tts>,
    tools_of: Mutex<Vec<Option<String>>>,
}

impl ToolAgents {
    fn new(base_url: &str) -> Result<Self, String> {
        let config = |model: &str| HttpProviderConfig::new(base_url, model).with_api_key("test");
        let client =
            dartmouth_voice::http::http_client(&config("any")).map_err(|e| e.to_string())?;
        Ok(Self {
            listening: ListeningService::start(&ModelStore::from_env())
                .map_err(|e| format!("listening models: {e}"))?,
            stt: Arc::new(OpenAiStt::with_client(config("whisper-1"), client.clone())),
            llm: Arc::new(OpenAiLlm::with_client(
                config("gpt-4o-mini"),
                client.clone(),
            )),
            tts: Arc::new(OpenAiTts::with_client(config("tts-1"), client)),
            tools_of: Mutex::new(Vec::new()),
        })
    }
}

impl AgentFactory for ToolAgents {
    fn agents(&self) -> Vec<AgentInfo> {
        vec![AgentInfo {
            name: "operator".into(),
            description: "presses keys and transfers calls".into(),
        }]
    }
    fn default_agent(&self, _room: &str) -> Option<String> {
        Some("operator".into())
    }
    fn start(&self, request: &AgentRequest) -> Result<AgentSession, AgentRefusal> {
        let config = AgentConfig {
            system_prompt: "You operate phone calls.".into(),
            max_tokens: 40,
            output_rate: request.output_rate,
            onset_hold: !request.echo_path,
            speculative_stt: false,
            interim_transcripts: false,
            preemptive_answer: false,
            ..AgentConfig::default()
        };
        let mut providers = Providers::new(self.stt.clone(), self.llm.clone(), self.tts.clone());
        let tools = request.phone.clone();
        self.tools_of
            .lock()
            .unwrap()
            .push(tools.as_ref().map(|t| t.call_id().to_string()));
        providers.tools = tools.map(|t| Arc::new(t) as Arc<dyn AgentTools>);
        Ok(AgentSession::start(config, providers, &self.listening))
    }
}

fn call(name: &str, arguments: serde_json::Value) -> MockTurn {
    MockTurn::Call {
        name: name.into(),
        arguments: arguments.to_string(),
    }
}

/// The results of tool calls the model was given, in the last request that carried them.
fn tool_results(requests: &[serde_json::Value]) -> Vec<String> {
    requests
        .iter()
        .rev()
        .map(|r| {
            r["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["role"] == "tool")
                .filter_map(|m| m["content"].as_str().map(String::from))
                .collect::<Vec<_>>()
        })
        .find(|results| !results.is_empty())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_presses_keys_and_transfers_the_call_through_its_tools() {
    if !sipp_available() {
        eprintln!("SKIPPED: sipp is not installed (Debian sip-tester)");
        return;
    }
    dartmouth_voice::http::ensure_crypto_provider();
    // What the model does, answer by answer: digits it may not send, then good ones, then it
    // says it is done; on the second call a target that is no phone address, then a good one.
    let script = vec![
        call(SEND_DIGITS, serde_json::json!({ "digits": "12x" })),
        call(SEND_DIGITS, serde_json::json!({ "digits": "123#" })),
        MockTurn::Answer,
        call(
            TRANSFER_CALL,
            serde_json::json!({ "target": "mailto:desk@example.com" }),
        ),
        call(
            TRANSFER_CALL,
            serde_json::json!({ "target": "sip:desk@example.com" }),
        ),
        MockTurn::Answer,
    ];
    let tone: Vec<i16> = (0..MOCK_TTS_RATE as usize * 3 / 10)
        .map(|i| {
            let t = i as f32 / MOCK_TTS_RATE as f32;
            (6_000.0 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()) as i16
        })
        .collect();
    let replies = MockReplies {
        stt_delay: Duration::ZERO,
        llm_delay: Duration::from_millis(20),
        tts_delay: Duration::from_millis(20),
        transcript: String::new(),
        answer: "Done.".into(),
        speech: tone,
    };
    let mock = MockOpenAi::start_scripted(replies, script)
        .await
        .expect("the mock starts");
    let agents = match ToolAgents::new(&mock.url()) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("SKIPPED: {e}; run `dartmouth models fetch`");
            return;
        }
    };
    let gateway = TestGateway::start(agents.clone()).await;
    let settings = SipSettings {
        ring_ms: 200,
        ..SipSettings::default()
    };
    let bridge = start_bridge(&gateway, settings, 16_700).await;
    let target = bridge.local_addr();
    let mut events = bridge.handle().subscribe();

    // 1. Digits: the phone presses 5; the model first asks for "12x" (refused, nothing sent),
    //    then "123#", which the phone receives as telephone-events.
    let phone = RtpPhone::bind().await;
    let sdp = offer_sdp(phone.addr, &PCMU, "");
    let xml = scenario(&[
        request("INVITE", 1, "", &sdp),
        expect(100, true, &[]),
        expect(180, false, &[]),
        expect(200, false, &[]),
        request("ACK", 1, "", ""),
        pause(7_000),
        request("BYE", 2, "", ""),
        expect(200, false, &[]),
    ]);
    let (sipp, heard) = tokio::join!(
        run_sipp(&xml, target, &["-s", "menu"], Duration::from_secs(30)),
        phone.converse(PhoneCodec::Pcmu, 0, &[], "5", Duration::from_secs(7)),
    );
    assert!(sipp.success, "digits call: {}", sipp.output);
    let requests = mock.chat_requests();
    let offered: Vec<&str> = requests
        .first()
        .and_then(|r| r["tools"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert_eq!(offered, [SEND_DIGITS, TRANSFER_CALL], "the tools on offer");
    let results = tool_results(&requests);
    eprintln!(
        "tool results: {results:?}; the phone received {:?}",
        heard.digits
    );
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(
        results[0].starts_with("error:") && results[0].contains("\"12x\""),
        "the model reads why \"12x\" was refused: {:?}",
        results[0]
    );
    assert_eq!(results[1], "sent 123#");
    assert_eq!(
        heard.digits, "123#",
        "exactly the good digits reached the phone as RFC 4733 events"
    );

    // 2. Transfer: the phone presses 5; the model first names a target that is no phone
    //    address (refused), then sip:desk@example.com: REFER, 202, NOTIFY 200, and the bridge
    //    hangs up.
    let phone = RtpPhone::bind().await;
    let sdp = offer_sdp(phone.addr, &PCMU, "");
    let xml = scenario(&[
        request("INVITE", 1, "", &sdp),
        expect(100, true, &[]),
        expect(180, false, &[]),
        expect(200, false, &[]),
        request("ACK", 1, "", ""),
        expect_request("REFER", false, &["Refer-To: .sip:desk@example.com."]),
        respond_in_dialog(202, "Accepted"),
        // The transfer target answers a moment later.
        pause(1_500),
        notify_refer(2, "SIP/2.0 200 OK", true),
        // The NOTIFY's 200 and the bridge's BYE may cross.
        expect(200, true, &[]),
        expect_request("BYE", false, &[]),
        respond_in_dialog(200, "OK"),
    ]);
    let (sipp, _heard) = tokio::join!(
        run_sipp(&xml, target, &["-s", "desk"], Duration::from_secs(30)),
        phone.converse(PhoneCodec::Pcmu, 0, &[], "5", Duration::from_secs(6)),
    );
    assert!(sipp.success, "transfer call: {}", sipp.output);
    let results = tool_results(&mock.chat_requests());
    eprintln!("tool results: {results:?}");
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(
        results[0].starts_with("error:") && results[0].contains("mailto:desk@example.com"),
        "the model reads why the target was refused: {:?}",
        results[0]
    );
    assert!(
        results[1].contains("transferring the caller to sip:desk@example.com"),
        "{:?}",
        results[1]
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while bridge.calls() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bridge.calls(), 0, "the transferred call ended");

    // The same events as a transfer over the API, and each agent had its own call's tools.
    let (mut call_ids, mut progress) = (Vec::new(), Vec::new());
    while let Ok(event) = events.try_recv() {
        if !call_ids.contains(&event.call_id) {
            call_ids.push(event.call_id.clone());
        }
        if let CallNotice::Progress(p) = event.notice {
            progress.push(p);
        }
    }
    assert_eq!(progress, ["transfer 202", "transfer 200"]);
    let tools_of: Vec<String> = agents
        .tools_of
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .cloned()
        .collect();
    assert_eq!(tools_of, call_ids, "each call's agent acts on its own call");

    bridge.stop().await;
    gateway.stop().await;
}
