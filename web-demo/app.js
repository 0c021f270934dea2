// Dartmouth browser demo: one WebRTC call to a voice agent through the gateway.
// Plain JavaScript, no build step. Wire messages are those of signaling/src/proto.rs (version 1).
'use strict';

(() => {
  const PROTOCOL_VERSION = 1;
  // Root-mean-square level (full scale = 1) above which audio counts as sound (about -40 dBFS).
  const SOUND_RMS = 0.01;
  const LEVEL_INTERVAL_MS = 20;
  const LEVEL_HISTORY = 3000; // 60 s of remote levels at 20 ms, for tests and debugging
  const ICE_GATHER_WAIT_MS = 1500;
  const JOIN_TIMEOUT_MS = 15000;
  const PING_INTERVAL_MS = 15000;
  const TURNS_SHOWN = 5;
  const STAGES = [
    ['end_of_turn_ms', 'End of turn'],
    ['stt_ms', 'STT'],
    ['llm_first_token_ms', 'LLM first token'],
    ['tts_first_audio_ms', 'TTS first audio'],
    ['first_packet_out_ms', 'First packet out'],
    ['network_ms', 'Network'],
  ];
  const STATE_LABELS = {
    offline: 'not connected',
    listening: 'listening',
    thinking: 'thinking',
    speaking: 'speaking',
    interrupted: 'interrupted',
  };

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $('status'), alert: $('alert'), form: $('call-form'), room: $('room'), agent: $('agent'),
    agentDescription: $('agent-description'), connect: $('connect'), mute: $('mute'),
    agentState: $('agent-state'), micLevel: $('mic-level'), agentLevel: $('agent-level'),
    transcript: $('transcript'), transcriptEmpty: $('transcript-empty'), announcer: $('announcer'),
    textForm: $('text-form'),
    textInput: $('text-input'), send: $('send'), latency: $('latency'), audio: $('remote-audio'),
  };

  // Everything a test (or a curious person in the console) may want to read.
  const stats = {
    state: 'idle',
    agentStates: [], // {state, at}
    events: {}, // message type -> count
    errors: [], // {code, message}
    interruptions: [], // {turn, heard, at}
    turns: {}, // turn -> {userFinalAt, speakingAt, audioAt, latency, networkMs}
    localMaxRms: 0,
    remoteMaxRms: 0,
    remoteLevels: [], // [performance.now(), rms]
  };
  let call = null;
  let lastLocal = 0;
  let lastRemote = 0;
  const agentDescriptions = new Map();

  // ---------- page state ----------

  function setPageState(state) {
    stats.state = state;
    document.body.dataset.state = state;
    const active = state === 'connecting' || state === 'connected';
    ui.connect.textContent = active ? 'Hang up' : 'Connect';
    ui.connect.dataset.action = active ? 'hangup' : 'connect';
    ui.connect.classList.toggle('danger', active);
    ui.room.disabled = active;
    ui.agent.disabled = active;
    ui.mute.disabled = state !== 'connected';
    ui.textInput.disabled = state !== 'connected';
    ui.send.disabled = state !== 'connected';
  }

  function setStatus(text) {
    ui.status.textContent = text;
  }

  function showAlert(text) {
    ui.alert.textContent = text;
    ui.alert.hidden = !text;
  }

  // `assumed`: shown before the gateway said so (not recorded in stats).
  function setAgentState(state, assumed) {
    ui.agentState.dataset.state = state;
    ui.agentState.querySelector('.text').textContent = STATE_LABELS[state] || state;
    if (state !== 'offline' && !assumed) stats.agentStates.push({ state, at: performance.now() });
  }

  // ---------- gateway HTTP ----------

  async function checkGateway() {
    try {
      const [health, ready] = await Promise.all([fetch('healthz'), fetch('readyz')]);
      const h = await health.json().catch(() => ({}));
      const r = await ready.json().catch(() => ({}));
      if (call) return;
      if (ready.ok) {
        setStatus(`Gateway ${h.version || ''} is ready. Press Connect and speak.`.replace('  ', ' '));
      } else {
        const missing = (r.missing_models || []).join(', ');
        setStatus(`The gateway is starting or missing models${missing ? ': ' + missing : ''}.`);
      }
    } catch (e) {
      setStatus('The gateway is not reachable.');
    }
  }

  async function loadAgents() {
    try {
      const res = await fetch('api/agents');
      if (!res.ok) return;
      const body = await res.json();
      const agents = Array.isArray(body.agents) ? body.agents : [];
      if (!agents.length) return;
      ui.agent.replaceChildren();
      for (const a of agents) {
        const option = new Option(a.name, a.name, false, a.name === body.default);
        ui.agent.append(option);
        agentDescriptions.set(a.name, a.description || '');
      }
      showAgentDescription();
    } catch (e) {
      // Keep the "Default agent" entry: the gateway picks the room's agent.
    }
  }

  function showAgentDescription() {
    ui.agentDescription.textContent = agentDescriptions.get(ui.agent.value) || '';
  }

  async function fetchToken(room, identity) {
    const res = await fetch('api/token', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ room, identity, ttl_secs: 3600 }),
    });
    if (!res.ok) {
      const reason = (await res.text().catch(() => '')).slice(0, 200);
      throw new UserError(`The gateway refused a token (${res.status}${reason ? ': ' + reason : ''}).`);
    }
    const body = await res.json();
    if (!body.token) throw new UserError('The gateway sent no token.');
    return body.token;
  }

  class UserError extends Error {}

  function micErrorMessage(e) {
    switch (e && e.name) {
      case 'NotAllowedError':
      case 'SecurityError':
        return 'Microphone access was denied. Allow the microphone for this page (the icon in the '
          + 'address bar) and press Connect again.';
      case 'NotFoundError':
      case 'OverconstrainedError':
        return 'No microphone was found. Plug one in and press Connect again.';
      case 'NotReadableError':
      case 'AbortError':
        return 'The microphone could not be opened; another application may be using it.';
      default:
        return `The microphone could not be opened: ${e && e.message ? e.message : e}`;
    }
  }

  // ---------- the call ----------

  async function connect() {
    if (call) return;
    showAlert('');
    const room = ui.room.value.trim() || 'demo';
    const agent = ui.agent.value;
    const identity = 'guest-' + Math.random().toString(36).slice(2, 8);
    const c = (call = {
      closing: false, ws: null, pc: null, dc: null, stream: null, ctx: null, timers: [], players: [],
      localAnalyser: null, remoteAnalyser: null, buf: null, trickle: false, joined: false,
      armedTurn: null, muted: false,
    });
    resetCallView();
    setPageState('connecting');
    setStatus('Opening the microphone…');
    try {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        throw new UserError('This page cannot use the microphone here: open it over https or at '
          + 'http://localhost.');
      }
      // Web Audio for both meters; created inside the click so it may start.
      c.ctx = new AudioContext();
      try {
        c.stream = await navigator.mediaDevices.getUserMedia({
          audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
        });
      } catch (e) {
        throw new UserError(micErrorMessage(e));
      }
      if (c.closing) return;
      c.localAnalyser = analyserFor(c.ctx, c.stream);
      c.timers.push(setInterval(sampleLevels, LEVEL_INTERVAL_MS));
      c.ctx.resume().catch(() => {});

      setStatus('Getting a token…');
      const token = await fetchToken(room, identity);
      if (c.closing) return;

      setStatus('Connecting…');
      const pc = (c.pc = new RTCPeerConnection({ iceServers: [] }));
      const [track] = c.stream.getAudioTracks();
      // One sendrecv transceiver: the agent's voice comes back on it.
      pc.addTransceiver(track, { direction: 'sendrecv', streams: [c.stream] });
      c.dc = pc.createDataChannel('chat');
      // The gateway copies transcripts to the data channel for chat-only clients; this page
      // reads everything from the WebSocket.
      c.dc.onmessage = (e) => { if (!c.ws || c.ws.readyState !== WebSocket.OPEN) onMessage(e.data); };
      pc.ontrack = onTrack;
      pc.onconnectionstatechange = onConnectionState;
      pc.onicecandidate = (e) => {
        if (c.trickle && c.ws && c.ws.readyState === WebSocket.OPEN) {
          send({ type: 'candidate', candidate: e.candidate ? e.candidate.candidate : '' });
        }
      };

      const wsOpen = openSocket(c);
      wsOpen.catch(() => {}); // handled where it is awaited
      await pc.setLocalDescription(await pc.createOffer());
      const gathered = await iceGathered(pc, ICE_GATHER_WAIT_MS);
      await wsOpen;
      if (c.closing) return;
      const join = { type: 'join', v: PROTOCOL_VERSION, token, sdp: pc.localDescription.sdp };
      if (agent) join.agent = agent;
      send(join);
      c.trickle = !gathered; // later candidates are trickled
      c.timers.push(setTimeout(() => {
        if (call === c && !c.joined) fail('The gateway did not answer the join in time.');
      }, JOIN_TIMEOUT_MS));
      c.timers.push(setInterval(() => send({ type: 'ping' }), PING_INTERVAL_MS));
    } catch (e) {
      if (call === c) fail(e instanceof UserError ? e.message : `Could not connect: ${e.message || e}`);
    }
  }

  function openSocket(c) {
    const url = new URL('ws', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = (c.ws = new WebSocket(url));
    ws.onmessage = (e) => { if (call === c) onMessage(e.data); };
    let opened = false;
    ws.onclose = (e) => {
      if (call !== c || c.closing) return;
      if (!opened) fail('Could not reach the gateway\'s signaling socket (/ws).');
      else lost(`Lost the connection to the gateway${e.code && e.code !== 1005 ? ` (code ${e.code})` : ''}.`);
    };
    return new Promise((resolve, reject) => {
      ws.addEventListener('open', () => { opened = true; resolve(); }, { once: true });
      ws.addEventListener('error', () => reject(new UserError('Could not reach the gateway\'s signaling socket (/ws).')), { once: true });
    });
  }

  function iceGathered(pc, ms) {
    if (pc.iceGatheringState === 'complete') return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (v) => {
        clearTimeout(timer);
        pc.removeEventListener('icegatheringstatechange', check);
        resolve(v);
      };
      const check = () => { if (pc.iceGatheringState === 'complete') done(true); };
      const timer = setTimeout(() => done(false), ms);
      pc.addEventListener('icegatheringstatechange', check);
    });
  }

  function send(msg) {
    const ws = call && call.ws;
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
  }

  function analyserFor(ctx, stream) {
    const source = ctx.createMediaStreamSource(stream);
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser); // not to the speakers: the <audio> element plays the agent
    return analyser;
  }

  // The gateway sends on several audio slots (the room's loudest speakers, the agent among
  // them), added by renegotiation: every one plays, and the level meter hears them all.
  function onTrack(e) {
    const c = call;
    if (!c || e.track.kind !== 'audio') return;
    const stream = new MediaStream([e.track]);
    // Web Audio sees a remote track only once a media element plays it.
    let player = ui.audio;
    if (ui.audio.srcObject) {
      player = new Audio();
      c.players.push(player);
    }
    player.srcObject = stream;
    player.play().catch(() => {});
    if (!c.remoteMix) {
      c.remoteMix = c.ctx.createGain();
      c.remoteAnalyser = c.ctx.createAnalyser();
      c.remoteAnalyser.fftSize = 1024;
      c.remoteMix.connect(c.remoteAnalyser); // not to the speakers: the players play it
    }
    c.ctx.createMediaStreamSource(stream).connect(c.remoteMix);
  }

  function onConnectionState() {
    const c = call;
    if (!c || !c.pc) return;
    const state = c.pc.connectionState;
    if (state === 'connected') {
      setPageState('connected');
      setStatus('Connected. Speak, or type below.');
      if (ui.agentState.dataset.state === 'offline') setAgentState('listening', true);
    } else if (state === 'disconnected') {
      setStatus('The media connection is interrupted; trying to recover…');
    } else if (state === 'failed') {
      lost('The media connection failed (ICE or DTLS). Check that UDP to the gateway is allowed.');
    }
  }

  function rms(analyser, c) {
    if (!analyser) return 0;
    if (!c.buf || c.buf.length !== analyser.fftSize) c.buf = new Float32Array(analyser.fftSize);
    analyser.getFloatTimeDomainData(c.buf);
    let sum = 0;
    for (let i = 0; i < c.buf.length; i++) sum += c.buf[i] * c.buf[i];
    return Math.sqrt(sum / c.buf.length);
  }

  function sampleLevels() {
    const c = call;
    if (!c) return;
    const now = performance.now();
    lastLocal = c.muted ? 0 : rms(c.localAnalyser, c);
    lastRemote = rms(c.remoteAnalyser, c);
    stats.localMaxRms = Math.max(stats.localMaxRms, lastLocal);
    stats.remoteMaxRms = Math.max(stats.remoteMaxRms, lastRemote);
    if (c.remoteAnalyser) {
      stats.remoteLevels.push([now, lastRemote]);
      if (stats.remoteLevels.length > LEVEL_HISTORY) stats.remoteLevels.splice(0, LEVEL_HISTORY / 10);
    }
    // Speech reads around 0.05-0.3 RMS; scale so the meters move visibly.
    ui.micLevel.value = Math.min(1, lastLocal * 4);
    ui.agentLevel.value = Math.min(1, lastRemote * 4);
    if (c.armedTurn != null && lastRemote > SOUND_RMS) {
      const t = turn(c.armedTurn);
      c.armedTurn = null;
      t.audioAt = now;
      updateLatency(t);
    }
  }

  // ---------- server messages ----------

  function onMessage(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (e) {
      return;
    }
    if (!msg || typeof msg.type !== 'string') return;
    stats.events[msg.type] = (stats.events[msg.type] || 0) + 1;
    const c = call;
    switch (msg.type) {
      case 'joined':
        if (!c || c.joined) return;
        c.joined = true;
        setStatus(`Joined room “${msg.room}” as ${msg.identity}${msg.agent ? ` with ${msg.agent}` : ''}; connecting media…`);
        c.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp })
          .catch((e) => fail(`The gateway's answer was not usable: ${e.message || e}`));
        break;
      case 'offer':
        renegotiate(msg.sdp);
        break;
      case 'transcript':
        onTranscript(msg);
        break;
      case 'agent_state':
        setAgentState(msg.state);
        if (msg.state === 'speaking' && c) {
          const t = lastTurn();
          if (t && t.speakingAt == null) t.speakingAt = performance.now();
        }
        break;
      case 'interrupted':
        stats.interruptions.push({ turn: msg.turn, heard: msg.heard, at: performance.now() });
        markInterrupted(msg.turn, msg.heard || '');
        break;
      case 'backchannel':
        showBackchannel(msg.text || '');
        break;
      case 'latency': {
        const t = turn(msg.turn);
        t.latency = msg;
        updateLatency(t);
        break;
      }
      case 'error':
        stats.errors.push({ code: msg.code, message: msg.message });
        // After the join an error is a notice; a `bye` follows when it ends the call.
        if (c && !c.joined) fail(`The gateway refused the call: ${msg.message} (${msg.code}).`);
        else showAlert(`The gateway reported: ${msg.message} (${msg.code}).`);
        break;
      case 'bye':
        if (!c) break;
        if (!msg.reason || msg.reason === 'left') end('The call ended.');
        else if (/media|ice|dtls|lost|timed? ?out/i.test(msg.reason)) lost(`The connection to the agent was lost: ${msg.reason}.`);
        else {
          end('The call ended.');
          showAlert(`The gateway ended the call: ${msg.reason}.`);
        }
        break;
      default:
        break; // pong, participant_joined/left: nothing to show
    }
  }

  async function renegotiate(sdp) {
    const c = call;
    if (!c || !c.pc) return;
    try {
      await c.pc.setRemoteDescription({ type: 'offer', sdp });
      await c.pc.setLocalDescription(await c.pc.createAnswer());
      send({ type: 'answer', sdp: c.pc.localDescription.sdp });
    } catch (e) {
      showAlert(`Could not apply the gateway's new offer: ${e.message || e}`);
    }
  }

  // ---------- transcript ----------

  const lines = new Map(); // "speaker:turn" -> <li>

  function onTranscript(msg) {
    const text = msg.text || '';
    if (msg.speaker === 'user' && msg.final) adoptTyped(msg.turn, text);
    const li = line(msg.speaker, msg.turn);
    const interrupted = li.dataset.interrupted === 'true';
    const settled = !!msg.final || interrupted;
    li.dataset.final = String(settled);
    li.classList.toggle('partial', !settled);
    // After a barge-in the final text is what was heard; keep the longer answer to strike through.
    if (!(interrupted && li._text.startsWith(text))) li._text = text;
    renderLine(li);
    // Screen readers hear finished lines only, not every partial.
    if (msg.final && text && !interrupted) announce(`${msg.speaker === 'user' ? 'You' : 'Agent'}: ${text}`);
    if (msg.speaker === 'user' && msg.final && call) {
      const t = turn(msg.turn);
      if (t.userFinalAt == null) {
        t.userFinalAt = performance.now();
        if (t.audioAt == null) call.armedTurn = msg.turn; // the agent's next sound answers it
      }
    }
  }

  // A typed message comes back as the user's final transcript of a new turn: reuse its line.
  const typedLines = [];
  function adoptTyped(turnNo, text) {
    if (lines.has(`user:${turnNo}`)) return;
    const i = typedLines.findIndex((li) => li._text === text.trim());
    if (i < 0) return;
    const [li] = typedLines.splice(i, 1);
    li.dataset.turn = String(turnNo);
    lines.set(`user:${turnNo}`, li);
  }

  function line(speaker, turnNo, typed) {
    const key = typed ? null : `${speaker}:${turnNo}`;
    let li = key && lines.get(key);
    if (li) return li;
    li = document.createElement('li');
    li.className = 'line';
    li.dataset.speaker = speaker;
    if (turnNo != null) li.dataset.turn = String(turnNo);
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = speaker === 'user' ? 'You' : 'Agent';
    const note = document.createElement('span');
    note.className = 'note';
    const words = document.createElement('span');
    words.className = 'words';
    const said = document.createElement('span');
    said.className = 'said';
    if (typed) {
      const badge = document.createElement('span');
      badge.className = 'badge';
      badge.textContent = 'typed';
      said.append(badge, ' ');
    }
    said.append(note, ' ', words);
    li.append(who, ' ', said);
    li._text = '';
    if (key) lines.set(key, li);
    const stick = ui.transcript.scrollHeight - ui.transcript.scrollTop - ui.transcript.clientHeight < 40;
    ui.transcript.append(li);
    ui.transcriptEmpty.hidden = true;
    if (stick) ui.transcript.scrollTop = ui.transcript.scrollHeight;
    return li;
  }

  function renderLine(li) {
    const words = li.querySelector('.words');
    const note = li.querySelector('.note');
    if (li.dataset.interrupted !== 'true') {
      words.textContent = li._text;
      note.textContent = '';
      return;
    }
    // What was played stays; what was generated but never heard is struck through.
    const heard = li._heard;
    const text = li._text;
    note.textContent = 'interrupted — heard:';
    words.replaceChildren();
    if (heard) words.append(document.createTextNode(heard));
    let rest = '';
    if (text.startsWith(heard)) rest = text.slice(heard.length);
    else if (text && text !== heard) rest = (heard ? ' ' : '') + text;
    if (!heard && !rest) words.append(document.createTextNode('(nothing)'));
    if (rest) {
      const del = document.createElement('del');
      del.title = 'not heard';
      del.textContent = rest;
      words.append(del);
    }
  }

  function announce(text) {
    ui.announcer.textContent = text;
  }

  // "uh-huh" over the agent: shown greyed, in place of the partial line it started; the agent
  // went on talking and no turn was taken.
  function showBackchannel(text) {
    for (const [key, li] of lines) {
      if (key.startsWith('user:') && li.dataset.final !== 'true') {
        li.remove();
        lines.delete(key);
      }
    }
    const li = line('user', null, false);
    lines.delete('user:null'); // one line per backchannel
    li.classList.add('backchannel');
    li.dataset.final = 'true';
    li._text = text;
    li.querySelector('.note').textContent = 'backchannel:';
    li.querySelector('.words').textContent = text;
  }

  function markInterrupted(turnNo, heard) {
    const li = line('agent', turnNo);
    li.dataset.interrupted = 'true';
    li.dataset.final = 'true';
    li.classList.remove('partial');
    li._heard = heard.trim();
    renderLine(li);
    announce(`Agent interrupted. It got as far as: ${li._heard || 'nothing'}`);
  }

  // ---------- latency waterfall ----------

  function turn(n) {
    return stats.turns[n] || (stats.turns[n] = {
      turn: n, userFinalAt: null, speakingAt: null, audioAt: null, latency: null, networkMs: null,
    });
  }

  function lastTurn() {
    const keys = Object.keys(stats.turns).map(Number);
    return keys.length ? stats.turns[Math.max(...keys)] : null;
  }

  // Network: from the gateway sending the first packet to this page hearing sound. The gateway's
  // numbers count from the end of speech on its clock, so the page anchors them to the moment the
  // user's final transcript (stamped stt_ms by the gateway) arrived here.
  function networkMs(t) {
    const l = t.latency;
    if (t.audioAt == null || !l || l.first_packet_out_ms == null) return null;
    let sentAt;
    if (t.userFinalAt != null && l.stt_ms != null) sentAt = t.userFinalAt + (l.first_packet_out_ms - l.stt_ms);
    else if (t.speakingAt != null) sentAt = t.speakingAt;
    else return null;
    return Math.max(0, t.audioAt - sentAt);
  }

  function updateLatency(t) {
    if (!t.latency) return;
    t.networkMs = networkMs(t);
    const l = t.latency;
    const values = STAGES.map(([key, label]) => {
      const v = key === 'network_ms' ? null : l[key];
      return { key, label, at: typeof v === 'number' ? v : null };
    });
    // Network is a duration added after the first packet out.
    const net = values[values.length - 1];
    if (t.networkMs != null && l.first_packet_out_ms != null) net.at = l.first_packet_out_ms + t.networkMs;
    const total = Math.max(1, ...values.map((v) => v.at || 0));

    let fig = ui.latency.querySelector(`figure[data-turn="${t.turn}"]`);
    if (!fig) {
      fig = document.createElement('figure');
      fig.className = 'turn';
      fig.dataset.turn = String(t.turn);
      ui.latency.prepend(fig);
      while (ui.latency.children.length > TURNS_SHOWN) ui.latency.lastElementChild.remove();
    }
    const caption = document.createElement('figcaption');
    const heardAt = net.at != null ? net.at : l.first_packet_out_ms;
    caption.textContent = `Turn ${t.turn}`
      + (heardAt != null ? ` — ${ms(heardAt)} to ${net.at != null ? 'first sound here' : 'first packet'}` : '')
      + (Array.isArray(l.providers) ? ` · ${l.providers.join(' / ')}` : '');
    const table = document.createElement('table');
    const body = table.createTBody();
    // A stage that ends before the one listed above it ran beside it (a speculative transcript
    // during the end-of-turn wait): its bar starts where that one started.
    let prev = 0;
    let prevStart = 0;
    for (const v of values) {
      const row = body.insertRow();
      row.dataset.stage = v.key.replace(/_ms$/, '');
      const th = document.createElement('th');
      th.scope = 'row';
      th.textContent = v.label;
      row.append(th);
      const barCell = row.insertCell();
      barCell.className = 'bar';
      const valueCell = row.insertCell();
      valueCell.className = 'ms';
      if (v.at == null) {
        valueCell.textContent = '—';
        row.dataset.ms = '';
        continue;
      }
      const start = v.at >= prev ? prev : Math.min(prevStart, v.at);
      const span = document.createElement('span');
      span.style.left = `${(100 * start) / total}%`;
      span.style.width = `${Math.max(0.5, (100 * (v.at - start)) / total)}%`;
      barCell.append(span);
      const duration = v.at - start;
      row.dataset.ms = String(Math.round(duration));
      valueCell.textContent = ms(duration);
      valueCell.title = `${ms(v.at)} after the end of speech`;
      prevStart = start;
      prev = v.at;
    }
    fig.replaceChildren(caption, table);
  }

  const ms = (v) => `${Math.round(v)} ms`;

  // ---------- ending ----------

  function resetCallView() {
    delete document.body.dataset.lost;
    lines.clear();
    typedLines.length = 0;
    ui.transcript.replaceChildren();
    ui.transcriptEmpty.hidden = false;
    ui.latency.replaceChildren();
    stats.turns = {};
    stats.agentStates = [];
    stats.interruptions = [];
    stats.errors = [];
    stats.events = {};
    stats.remoteLevels = [];
    stats.localMaxRms = 0;
    stats.remoteMaxRms = 0;
    ui.mute.setAttribute('aria-pressed', 'false');
    ui.mute.textContent = 'Mute';
  }

  function teardown() {
    const c = call;
    if (!c) return;
    c.closing = true;
    call = null;
    for (const t of c.timers) { clearInterval(t); clearTimeout(t); }
    if (c.ws) {
      if (c.ws.readyState === WebSocket.OPEN) {
        try { c.ws.send(JSON.stringify({ type: 'leave' })); } catch (e) { /* closing anyway */ }
      }
      c.ws.close();
    }
    if (c.dc) c.dc.close();
    if (c.pc) c.pc.close();
    if (c.stream) c.stream.getTracks().forEach((t) => t.stop());
    if (c.ctx) c.ctx.close().catch(() => {});
    ui.audio.srcObject = null;
    for (const player of c.players) player.srcObject = null;
    lastLocal = lastRemote = 0;
    ui.micLevel.value = 0;
    ui.agentLevel.value = 0;
    setAgentState('offline');
  }

  function hangup() {
    if (!call) return;
    teardown();
    setPageState('idle');
    setStatus('Call ended. Press Connect to talk again.');
  }

  function end(message) {
    teardown();
    setPageState('idle');
    setStatus(message);
  }

  function fail(message) {
    teardown();
    setPageState('failed');
    setStatus('Not connected.');
    showAlert(message);
  }

  function lost(message) {
    fail(message);
    document.body.dataset.lost = 'true';
  }

  // ---------- controls ----------

  ui.form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (call) hangup();
    else connect();
  });

  ui.agent.addEventListener('change', showAgentDescription);

  ui.mute.addEventListener('click', () => {
    const c = call;
    if (!c || !c.stream) return;
    c.muted = !c.muted;
    c.stream.getAudioTracks().forEach((t) => { t.enabled = !c.muted; });
    ui.mute.setAttribute('aria-pressed', String(c.muted));
    ui.mute.textContent = c.muted ? 'Unmute' : 'Mute';
    send({ type: 'mute', muted: c.muted });
  });

  function sendText(text) {
    const c = call;
    text = (text || '').trim();
    if (!c || !text) return false;
    const msg = JSON.stringify({ type: 'text', text });
    if (c.dc && c.dc.readyState === 'open') c.dc.send(msg);
    else if (c.ws && c.ws.readyState === WebSocket.OPEN) c.ws.send(msg);
    else return false;
    const li = line('user', null, true);
    li.dataset.final = 'true';
    li.dataset.typed = 'true';
    li._text = text;
    renderLine(li);
    typedLines.push(li);
    if (typedLines.length > 20) typedLines.shift();
    return true;
  }

  ui.textForm.addEventListener('submit', (e) => {
    e.preventDefault();
    if (sendText(ui.textInput.value)) ui.textInput.value = '';
  });

  window.addEventListener('pagehide', () => teardown());

  window.dartmouthDemo = {
    stats,
    remoteLevel: () => lastRemote,
    localLevel: () => lastLocal,
    connect,
    hangup,
    sendText,
  };

  setPageState('idle');
  setAgentState('offline');
  checkGateway();
  loadAgents();
})();
