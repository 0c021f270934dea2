#!/usr/bin/env python3
"""Interop with an independent WebRTC stack: aiortc publishes a spoken question over WHIP and
records the agent's spoken answer, which the gateway's own STT must find words in.

Steps: start `dartmouth serve` on free loopback ports (or use $DARTMOUTH_GATEWAY_URL), get a token,
POST a non-trickle SDP offer (one sendrecv audio transceiver fed by question.wav) to /whip/{room},
record the agent's audio on the same transceiver until it has spoken and gone quiet (at most
--max-seconds), DELETE the session, then `dartmouth transcribe --in answer.wav`.

Exit status: 0 passed, 1 failed, 0 with a "SKIP: reason" line when aiortc, the gateway binary,
espeak-ng or sox is missing. Run it with the interop venv's Python (tests/interop/run.sh does).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOUND_RMS = 0.02  # full scale = 1.0; the agent's voice is far above, Opus silence far below
QUIET_AFTER_SPEECH_S = 3.0  # the answer has ended after this much quiet
MIN_SPEECH_S = 0.5


def skip(reason: str) -> "NoReturn":  # noqa: F821
    print(f"SKIP: {reason}")
    sys.exit(0)


def log(message: str) -> None:
    print(f"[interop {time.strftime('%H:%M:%S')}] {message}", flush=True)


def gateway_binary() -> Path:
    if os.environ.get("DARTMOUTH_BIN"):
        return Path(os.environ["DARTMOUTH_BIN"]).resolve()
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    return target / "release" / "dartmouth"


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 10.0) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class Gateway:
    """`dartmouth serve` on free loopback ports; stopped with SIGTERM, then SIGKILL after 5 s."""

    def __init__(self, binary: Path, out: Path):
        self.http_port = free_port(socket.SOCK_STREAM)
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.log_path = out / "gateway.log"
        env = dict(os.environ, DARTMOUTH_PLATFORM__HTTP="127.0.0.1:0")
        with open(self.log_path, "wb") as log_file:
            self.proc = subprocess.Popen(
                [str(binary), "serve", "--http", f"127.0.0.1:{self.http_port}",
                 "--media-udp", f"127.0.0.1:{self.udp_port}"],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
            )

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited with {self.proc.returncode} before it was "
                                   f"ready:\n{self.log_tail()}")
            try:
                status, _, body = http("GET", f"{self.url}/readyz", timeout=2)
                if status == 200:
                    return
                last = f"{status} {body[:200]!r}"
            except OSError as e:
                last = str(e)
            time.sleep(0.25)
        raise RuntimeError(f"the gateway was not ready within {timeout:.0f} s (last /readyz: {last})"
                           f":\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def speech_wav(path: Path, text: str, lead_s: float, tail_s: float) -> None:
    """A 48 kHz mono WAV: lead silence, espeak-ng speaking `text`, trailing silence. The trailing
    silence keeps RTP flowing so the gateway's end-of-turn detector sees the speech end."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, speech = Path(tmp) / "raw.wav", Path(tmp) / "speech.wav"
        lead, tail = Path(tmp) / "lead.wav", Path(tmp) / "tail.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
        fmt = ["-r", "48000", "-c", "1", "-b", "16"]
        subprocess.run(["sox", str(raw), *fmt, str(speech)], check=True)
        subprocess.run(["sox", "-n", *fmt, str(lead), "trim", "0", str(lead_s)], check=True)
        subprocess.run(["sox", "-n", *fmt, str(tail), "trim", "0", str(tail_s)], check=True)
        subprocess.run(["sox", str(lead), str(speech), str(tail), str(path)], check=True)


def frame_rms(frame) -> float:  # noqa: ANN001
    """RMS (full scale 1.0) of a decoded aiortc audio frame (packed signed 16-bit)."""
    if frame.format.name != "s16":
        return 0.0
    channels = len(frame.layout.channels)
    samples = array.array("h", bytes(frame.planes[0])[: frame.samples * channels * 2])
    if not samples:
        return 0.0
    return math.sqrt(sum(x * x for x in samples) / len(samples)) / 32768.0


async def exchange(base_url: str, room: str, question: Path, answer: Path, max_seconds: float) -> dict:
    """One WHIP session; returns what it measured. Raises AssertionError on a protocol failure."""
    import aioice.ice
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer, MediaRecorder, MediaRelay
    from aiortc.mediastreams import MediaStreamError

    # aioice never offers loopback addresses; the gateway listens on 127.0.0.1 only.
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

    status, _, body = await asyncio.to_thread(
        http, "POST", f"{base_url}/api/token",
        json.dumps({"room": room, "identity": "aiortc", "ttl_secs": 600}).encode(),
        {"Content-Type": "application/json"})
    assert status == 200, f"POST /api/token → {status}: {body[:300]!r}"
    token = json.loads(body)["token"]

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    player = MediaPlayer(str(question))
    relay = MediaRelay()
    recorder = MediaRecorder(str(answer))
    remote = asyncio.get_running_loop().create_future()
    result: dict = {"sound_s": 0.0, "first_sound_after_s": None, "frames": 0}

    @pc.on("track")
    def on_track(track):  # noqa: ANN001
        if track.kind == "audio" and not remote.done():
            remote.set_result(track)

    @pc.on("connectionstatechange")
    def on_state() -> None:
        log(f"peer connection {pc.connectionState}")

    pc.addTransceiver(player.audio, direction="sendrecv")
    location = None
    try:
        await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers fully here
        offer = pc.localDescription.sdp
        assert "a=candidate:" in offer and "127.0.0.1" in offer, "the offer has no loopback candidate"
        status, headers, body = await asyncio.to_thread(
            http, "POST", f"{base_url}/whip/{urllib.parse.quote(room)}", offer.encode(),
            {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"})
        assert status == 201, f"POST /whip/{room} → {status}: {body[:300]!r}"
        content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
        assert content_type.startswith("application/sdp"), f"answer Content-Type {content_type!r}"
        location = {k.lower(): v for k, v in headers.items()}.get("location")
        assert location, "201 without a Location header"
        location = urllib.parse.urljoin(base_url + "/", location)
        log(f"WHIP session {location}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body.decode(), type="answer"))

        track = await asyncio.wait_for(remote, timeout=5)
        recorder.addTrack(relay.subscribe(track))
        await recorder.start()
        monitored = relay.subscribe(track)

        start = time.monotonic()
        last_sound = None
        while True:
            elapsed = time.monotonic() - start
            if elapsed > max_seconds:
                log(f"stopping after {max_seconds:.0f} s")
                break
            if pc.connectionState == "failed":
                raise AssertionError("the peer connection failed (ICE or DTLS)")
            try:
                frame = await asyncio.wait_for(monitored.recv(), timeout=0.5)
            except asyncio.TimeoutError:
                frame = None  # no packets: as good as silence
            except MediaStreamError:
                raise AssertionError("the gateway's track ended")
            if frame is not None:
                result["frames"] += 1
                rms = frame_rms(frame)
                if rms > SOUND_RMS:
                    if result["first_sound_after_s"] is None:
                        result["first_sound_after_s"] = round(elapsed, 2)
                        log(f"agent audio after {elapsed:.1f} s")
                    result["sound_s"] += frame.samples / frame.sample_rate
                    last_sound = time.monotonic()
            if (last_sound is not None and result["sound_s"] >= MIN_SPEECH_S
                    and time.monotonic() - last_sound >= QUIET_AFTER_SPEECH_S):
                log(f"the answer ended ({result['sound_s']:.1f} s of sound)")
                break
    finally:
        await recorder.stop()
        if location:
            status, _, body = await asyncio.to_thread(
                http, "DELETE", location, None, {"Authorization": f"Bearer {token}"})
            result["delete_status"] = status
            log(f"DELETE {location} → {status}")
        await pc.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-seconds", type=float, default=40.0,
                        help="longest time to record the answer (default 40)")
    parser.add_argument("--question", default="What is the capital of France?")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the WAVs and the gateway log go (default target/interop)")
    args = parser.parse_args()

    try:
        import aiortc  # noqa: F401
    except ImportError as e:
        skip(f"aiortc is not importable ({e}); run scripts/interop-venv.sh and use its Python")
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            skip(f"{tool} is not installed (apt-get install espeak-ng sox)")
    binary = gateway_binary()
    external = os.environ.get("DARTMOUTH_GATEWAY_URL")
    if not binary.is_file():
        skip(f"no gateway binary at {binary} (cargo build --release -p dartmouth)")

    out = args.out or Path(os.environ.get("DARTMOUTH_INTEROP_OUT") or REPO / "target" / "interop")
    out.mkdir(parents=True, exist_ok=True)
    question, answer = out / "question.wav", out / "answer.wav"
    answer.unlink(missing_ok=True)
    speech_wav(question, args.question, lead_s=1.0, tail_s=30.0)

    gateway = None
    try:
        if external:
            base_url = external.rstrip("/")
            log(f"using the gateway at {base_url}")
        else:
            gateway = Gateway(binary, out)
            log(f"starting {binary} serve on {gateway.url} (media udp {gateway.udp_port})")
            gateway.wait_ready()
            base_url = gateway.url
        room = f"interop-{os.getpid()}"
        result = asyncio.run(asyncio.wait_for(
            exchange(base_url, room, question, answer, args.max_seconds),
            timeout=args.max_seconds + 30))
        log(f"measured: {json.dumps(result)}")

        failures = []
        if result.get("delete_status") != 200:
            failures.append(f"DELETE of the WHIP session answered {result.get('delete_status')}, not 200")
        if result["first_sound_after_s"] is None:
            failures.append(f"no agent audio above RMS {SOUND_RMS} within {args.max_seconds:.0f} s "
                            f"({result['frames']} frames received)")
        if not answer.is_file() or answer.stat().st_size <= 44:
            failures.append("the recorder wrote no audio")
        else:
            done = subprocess.run([str(binary), "transcribe", "--in", str(answer)],
                                  capture_output=True, text=True, timeout=180)
            transcript = done.stdout.strip()
            log(f"transcript of the agent's answer: {transcript!r}")
            if done.returncode != 0:
                failures.append(f"`dartmouth transcribe` exited {done.returncode}: "
                                f"{done.stderr.strip()[-500:]}")
            elif not transcript:
                failures.append("the transcript of the agent's answer is empty")
        if failures:
            for f in failures:
                print(f"FAIL: {f}")
            if gateway:
                print(f"gateway log (tail):\n{gateway.log_tail()}")
            print("0 passed, 1 failed")
            return 1
        print("PASS: aiortc ⇄ WHIP: the agent answered and its answer transcribes to words")
        print("1 passed, 0 failed")
        return 0
    except (AssertionError, RuntimeError, asyncio.TimeoutError, OSError) as e:
        print(f"FAIL: {type(e).__name__}: {e}")
        if gateway:
            print(f"gateway log (tail):\n{gateway.log_tail()}")
        print("0 passed, 1 failed")
        return 1
    finally:
        if gateway:
            gateway.stop()


if __name__ == "__main__":
    sys.exit(main())
