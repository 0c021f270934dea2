"""The official `openai` package pointed at a Dartmouth platform sidecar, unchanged: chat (whole
and streamed), transcription of a WAV, speech synthesis, embeddings, moderations.
Usage: openai_compat.py BASE_URL API_KEY SPEECH_WAV"""
import io
import sys
import wave

from openai import OpenAI

base, key, wav_path = sys.argv[1], sys.argv[2], sys.argv[3]
client = OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'ok' if ok else 'FAILED'}: {name} {detail}")


chat = client.chat.completions.create(
    model="dartmouth-embedded",
    messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
    max_tokens=16,
    temperature=0,
)
text = chat.choices[0].message.content or ""
check("chat", chat.object == "chat.completion" and len(text.strip()) > 0 and chat.usage.total_tokens > 0, repr(text))

stream = client.chat.completions.create(
    model="dartmouth-embedded",
    messages=[{"role": "user", "content": "Say hello."}],
    max_tokens=16,
    stream=True,
    stream_options={"include_usage": True},
)
pieces, usage = [], None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage
check("chat stream", len("".join(pieces).strip()) > 0 and usage is not None, repr("".join(pieces)))

with open(wav_path, "rb") as f:
    transcript = client.audio.transcriptions.create(model="whisper-1", file=f)
check("transcription", "weather" in transcript.text.lower(), repr(transcript.text))

speech = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello from Dartmouth.", response_format="wav")
audio = speech.read()
with wave.open(io.BytesIO(audio)) as w:
    seconds = w.getnframes() / w.getframerate()
check("speech", 0.5 < seconds < 10, f"{seconds:.2f} s")

emb = client.embeddings.create(model="text-embedding-3-small", input=["a cat", "a kitten", "tax law"])
v = [d.embedding for d in emb.data]
dot = lambda a, b: sum(x * y for x, y in zip(a, b))
check("embeddings", len(v[0]) == 384 and dot(v[0], v[1]) > dot(v[0], v[2]), f"{dot(v[0], v[1]):.2f} vs {dot(v[0], v[2]):.2f}")

mod = client.moderations.create(input="I am going to kill you")
check("moderations", mod.results[0].flagged)

print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
sys.exit(0 if all(results) else 1)
