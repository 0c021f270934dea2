#!/usr/bin/env python3
"""Writes the committed seed corpus of every fuzz target into fuzz/corpus/<target>/.

Seeds are small valid (and a few nearly valid) inputs, so the fuzzer starts from deep inside
each parser. seeds/offer.sdp is a str0m client's audio offer (tests::gateway::audio_offer) and
seeds/opus-frame.bin one 20 ms Opus frame from the media crate's encoder.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    directory = os.path.join(HERE, "corpus", target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


offer = open(os.path.join(HERE, "seeds", "offer.sdp")).read()
opus = open(os.path.join(HERE, "seeds", "opus-frame.bin"), "rb").read()

# Signaling JSON.
join = {"type": "join", "v": 1, "token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.sig", "sdp": offer, "agent": "assistant"}
for name, message in {
    "join": join,
    "join-text": dict(join, output="text"),
    "candidate": {"type": "candidate", "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"},
    "text": {"type": "text", "text": "hello"},
    "mute": {"type": "mute", "muted": True},
    "answer": {"type": "answer", "sdp": offer},
    "ping": {"type": "ping"},
    "leave": {"type": "leave"},
}.items():
    put("signaling_json", name, json.dumps(message))
put("signaling_json", "not-json", "{\"type\":")

# SDP offers.
put("sdp_offer", "str0m-audio", offer)
put("sdp_offer", "pcmu-only", offer.replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:0 PCMU/8000"))
put("sdp_offer", "no-audio", offer.replace("m=audio", "m=video"))
put("sdp_offer", "crlf", offer.replace("\n", "\r\n"))


# Datagrams: [len u16 BE][bytes] ...
def datagrams(*packets):
    return b"".join(struct.pack(">H", len(p)) + p for p in packets)


ufrag = [l for l in offer.splitlines() if l.startswith("a=ice-ufrag:")][0].split(":", 1)[1].strip()
stun_user = f"gatewayfrag:{ufrag}".encode()
stun_attr = struct.pack(">HH", 0x0006, len(stun_user)) + stun_user + b"\0" * (-len(stun_user) % 4)
stun = struct.pack(">HHI", 0x0001, len(stun_attr), 0x2112A442) + b"\x01" * 12 + stun_attr
rtp = struct.pack(">BBHII", 0x80, 111, 1, 960, 0x1234) + opus
rtcp_sr = struct.pack(">BBHIIIIII", 0x80, 200, 6, 0x1234, 0, 0, 960, 1, 100)
dtls_hello = bytes([22, 0xFE, 0xFD]) + b"\0" * 8 + struct.pack(">H", 12) + bytes([1]) + b"\0" * 11
put("rtp_rtcp", "stun-rtp-rtcp", datagrams(stun, rtp, rtcp_sr))
put("rtp_rtcp", "dtls", datagrams(dtls_hello, rtp))
put("rtp_rtcp", "opus", datagrams(rtp, rtp))

# Platform bodies: first byte picks the route (see fuzz_targets/platform_json.rs).
bodies = [
    {"filter": {"kind": "note", "n": 3, "ok": True, "none": None}, "limit": 10},
    {"kind": "note", "text": "call me at +1 555 0100", "n": 3},
    {"text": "updated"},
    {"email": "admin@example.com", "password": "wrong-password"},
    {"email": "new@example.com", "password": "a-new-password"},
    {"refresh_token": "nope"},
    {"name": "k", "role": "agent", "agent_id": "a1", "scopes": ["db:read"]},
    {"room": "lobby", "can_publish": True},
    {"grantee_agent": "a2", "collection": "notes", "access": "read"},
    {"text": "mail me at a@example.com"},
    {"email": "dev@example.com", "password": "dev-password", "role": "developer"},
    {"ttl_secs": 60},
]
for route, body in enumerate(bodies):
    put("platform_json", f"route-{route}", bytes([route]) + json.dumps(body).encode())


# Whisper CT2 model.bin: version, spec name, revision, variables, aliases.
def string(text):
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def variable(name, shape, dtype, data):
    return string(name) + bytes([len(shape)]) + b"".join(struct.pack("<I", d) for d in shape) + bytes([dtype]) + struct.pack("<I", len(data)) + data


ct2 = (struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", 3)
       + variable("encoder/conv1/weight", [2, 2], 0, struct.pack("<4f", 1, 2, 3, 4))
       + variable("decoder/embeddings/weight", [2], 4, struct.pack("<2H", 0x3C00, 0xC000))
       + variable("num_heads", [], 3, struct.pack("<i", 6))
       + struct.pack("<I", 1) + string("decoder/projection/weight") + string("decoder/embeddings/weight"))
put("whisper_ct2", "tiny", ct2)
put("whisper_ct2", "version-5", struct.pack("<I", 5) + ct2[4:])


# ONNX: ModelProto{ir_version=1: 8, graph=7: GraphProto{node=1: NodeProto{op_type=4: "If",
# attribute=5: AttributeProto{name=1: "then_branch", g=6: GraphProto{...}}}, name=2: "main"}}.
def varint(n):
    out = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def field(number, payload):
    return varint(number << 3 | 2) + varint(len(payload)) + payload


inner = field(1, field(4, b"Identity") + field(1, b"x") + field(2, b"y"))
attribute = field(1, b"then_branch") + field(6, inner) + field(11, inner)
node = field(4, b"If") + field(1, b"cond") + field(5, attribute)
graph = field(1, node) + field(2, b"main")
model = varint(1 << 3) + varint(8) + field(7, graph)
put("onnx_subgraphs", "if-node", model)
put("onnx_subgraphs", "named", varint(1 << 3) + varint(8) + field(7, field(1, field(4, b"If") + field(5, field(1, b"b") + field(6, inner + field(2, b"kept")))) + field(2, b"main")))

# SIP: an INVITE with its SDP offer (PCMU, PCMA, G.722, telephone-event), and a bare PCMA offer
# with comfort noise.
put("sip_sdp_rtp", "invite.sip", open(os.path.join(HERE, "seeds", "invite.sip"), "rb").read())
put("sip_sdp_rtp", "pcma.sdp", open(os.path.join(HERE, "seeds", "pcma.sdp"), "rb").read())
