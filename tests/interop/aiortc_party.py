#!/usr/bin/env python3
"""One person in a room, on aiortc (an independent WebRTC stack): publishes a WAV over WHIP with a
`sendrecv` audio transceiver, records what the room sends back on it for a fixed time, then ends
the session with DELETE. Used by the gateway's three-party test (tests/tests/three_party.rs), which
checks what this party heard and what the others heard from it.

Usage: aiortc_party.py --url http://127.0.0.1:PORT --room ROOM --token JWT --play in.wav
       --record out.wav --seconds 30 [--agent none]

Prints one JSON line ({"frames", "delete_status"}) and exits 0; exits 1 with the reason on a
protocol failure (no answer, ICE/DTLS failure, no Location).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from aiortc_whip import http, log  # noqa: E402


async def take_part(args: argparse.Namespace) -> dict:
    import aioice.ice
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer, MediaRecorder, MediaRelay
    from aiortc.mediastreams import MediaStreamError

    # aioice never offers loopback addresses; the gateway listens on loopback only.
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    player = MediaPlayer(args.play)
    relay = MediaRelay()
    recorder = MediaRecorder(args.record)
    remote = asyncio.get_running_loop().create_future()
    result: dict = {"frames": 0}

    @pc.on("track")
    def on_track(track):  # noqa: ANN001
        if track.kind == "audio" and not remote.done():
            remote.set_result(track)

    pc.addTransceiver(player.audio, direction="sendrecv")
    query = urllib.parse.urlencode({"agent": args.agent}) if args.agent else ""
    url = f"{args.url}/whip/{urllib.parse.quote(args.room)}" + (f"?{query}" if query else "")
    location = None
    try:
        await pc.setLocalDescription(await pc.createOffer())
        status, headers, body = await asyncio.to_thread(
            http, "POST", url, pc.localDescription.sdp.encode(),
            {"Authorization": f"Bearer {args.token}", "Content-Type": "application/sdp"})
        assert status == 201, f"POST {url} → {status}: {body[:300]!r}"
        location = {k.lower(): v for k, v in headers.items()}.get("location")
        assert location, "201 without a Location header"
        location = urllib.parse.urljoin(args.url + "/", location)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body.decode(), type="answer"))
        track = await asyncio.wait_for(remote, timeout=5)
        recorder.addTrack(relay.subscribe(track))
        await recorder.start()
        counted = relay.subscribe(track)
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            if pc.connectionState == "failed":
                raise AssertionError("the peer connection failed (ICE or DTLS)")
            try:
                await asyncio.wait_for(counted.recv(), timeout=0.5)
                result["frames"] += 1
            except asyncio.TimeoutError:
                pass  # no packets now: the room is quiet
            except MediaStreamError:
                raise AssertionError("the gateway's track ended")
    finally:
        await recorder.stop()
        if location:
            status, _, _ = await asyncio.to_thread(
                http, "DELETE", location, None, {"Authorization": f"Bearer {args.token}"})
            result["delete_status"] = status
        await pc.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the gateway's HTTP base URL")
    parser.add_argument("--room", required=True)
    parser.add_argument("--token", required=True, help="a room token naming this person")
    parser.add_argument("--play", required=True, help="WAV this person says")
    parser.add_argument("--record", required=True, help="WAV of what this person hears")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to stay")
    parser.add_argument("--agent", default="", help="?agent= of the WHIP request (none: no agent)")
    args = parser.parse_args()
    try:
        result = asyncio.run(take_part(args))
    except (AssertionError, asyncio.TimeoutError) as e:
        log(f"FAILED: {e or 'timed out waiting for the remote track'}")
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
