// The Vantum call console: talk to the agent by voice or text and hear it answer while the
// model is still writing. Speaks the protocol of shared/PROTOCOL.md over /ws.
import { decode, encode } from "./msgpack.js";

const $ = (id) => document.getElementById(id);
const els = {
  connect: $("connect"), hangup: $("hangup"), status: $("status"), session: $("session-id"),
  transcript: $("transcript"), form: $("text-form"), text: $("text-input"), send: $("send"),
  talk: $("talk"), level: $("level"), errors: $("errors"), voice: $("voice"),
  name: $("prospect-name"), company: $("prospect-company"), industry: $("prospect-industry"),
  timings: $("timings"),
};

// Read-only counters for tests and curious humans.
const hook = {
  state: "idle", sessionId: "", framesDecoded: 0, framesScheduled: 0, chunksShown: 0,
  repliesCompleted: 0, repliesStopped: 0, errors: [], lastTimings: null, connects: 0, endedReason: "",
};
window.vantumConsole = hook;

let socket = null;
let wantConnected = false;
let retryDelay = 500;
let endedBy = null; // {reason, message} once the server ended the call on purpose
let playback = null; // AudioContext for the agent's voice
let playhead = 0;
let sources = [];
let currentUtterance = null;
let replies = new Map(); // utteranceId -> {row, chunks}
let turn = null; // {sentAt, firstText, firstAudio}
let mic = null;
let pressing = false; // the talk button is held (the microphone may still be starting)

function setState(state, label) {
  hook.state = state;
  els.status.textContent = label || state;
  els.status.dataset.state = state;
  const open = state === "connected";
  els.connect.disabled = open || state === "connecting";
  els.hangup.disabled = !open && state !== "connecting" && state !== "reconnecting";
  els.send.disabled = !open;
  els.talk.disabled = !open;
}

function showError(message) {
  hook.errors.push(message);
  const item = document.createElement("li");
  item.textContent = message;
  els.errors.prepend(item);
  while (els.errors.children.length > 5) els.errors.lastChild.remove();
}

function send(eventType, payload = {}) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  socket.send(encode({ eventType, eventId: crypto.randomUUID(), sessionId: hook.sessionId, payload }));
}

const END_REASONS = {
  agent_ended: "The agent ended the call.",
  staff_ended: "The call was ended by staff.",
  idle_timeout: "The call was ended after a long silence.",
  max_duration: "The call reached its maximum length.",
  server_shutdown: "The server is restarting.",
};

function connect() {
  wantConnected = true;
  endedBy = null;
  hook.connects += 1;
  setState("connecting", "Connecting…");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // With VANTUM_CALL_TOKENS set, open the console as /?token=... and the call carries it.
  const token = new URLSearchParams(location.search).get("token");
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  socket = new WebSocket(`${scheme}://${location.host}/ws${query}`);
  socket.binaryType = "arraybuffer";
  socket.onmessage = (message) => {
    if (typeof message.data === "string") return; // the protocol is binary only
    handle(decode(new Uint8Array(message.data)));
  };
  socket.onclose = () => {
    socket = null;
    stopRecording(false);
    if (endedBy) {
      // A deliberate end (protocol: voicechat.call.ended): never redial on our own.
      wantConnected = false;
      const text = endedBy.message || END_REASONS[endedBy.reason] || `The call ended (${endedBy.reason}).`;
      setState("ended", `${text} Press Connect to call again.`);
    } else if (wantConnected) {
      setState("reconnecting", `Connection lost, reconnecting in ${Math.round(retryDelay / 100) / 10}s…`);
      setTimeout(() => wantConnected && connect(), retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    } else {
      setState("idle", "Not connected");
    }
  };
}

function hangUp() {
  wantConnected = false;
  stopPlayback();
  if (socket) socket.close(1000);
  setState("idle", "Not connected");
}

function sendSessionUpdate() {
  send("voicechat.session.update", {
    prospect: { name: els.name.value.trim(), company: els.company.value.trim(), industry: els.industry.value.trim() },
    voiceId: els.voice.value || undefined,
  });
}

// ------------------------------------------------------------------ server events
function handle(event) {
  const p = event.payload || {};
  switch (event.eventType) {
    case "connection.ack":
      hook.sessionId = event.sessionId;
      els.session.textContent = event.sessionId;
      retryDelay = 500;
      setState("connected", "Connected");
      sendSessionUpdate();
      break;
    case "voicechat.transcript.user":
      addRow("user", p.text);
      break;
    case "voicechat.response.start":
      startReply(p.utteranceId);
      break;
    case "voicechat.response.text":
      addChunk(p.utteranceId, p.index, p.text);
      break;
    case "voicechat.response.chunk":
      playChunk(p.utteranceId, p.audio, p.sampleRate);
      break;
    case "voicechat.response.complete":
      finishReply(p.utteranceId, p.metrics || {});
      break;
    case "voicechat.response.stop":
      stopReply(p.utteranceId);
      break;
    case "voicechat.error":
      showError(p.message);
      break;
    case "voicechat.call.ended":
      endedBy = { reason: p.reason || "", message: p.message || "" };
      hook.endedReason = endedBy.reason;
      wantConnected = false;
      break;
    default:
      if (event.eventType.endsWith(".error")) showError(p.message || "Unknown error");
  }
}

function addRow(role, text) {
  const row = document.createElement("div");
  row.className = `row ${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Agent";
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = text || "";
  row.append(who, body);
  els.transcript.append(row);
  els.transcript.scrollTop = els.transcript.scrollHeight;
  return row;
}

function startReply(utteranceId) {
  if (currentUtterance && currentUtterance !== utteranceId) stopPlayback();
  currentUtterance = utteranceId;
  const row = addRow("agent", "");
  row.dataset.utterance = utteranceId;
  replies.set(utteranceId, { row, body: row.querySelector(".body") });
}

function addChunk(utteranceId, index, text) {
  if (!replies.has(utteranceId)) startReply(utteranceId);
  const reply = replies.get(utteranceId);
  const span = document.createElement("span");
  span.className = "chunk";
  span.dataset.index = index;
  span.textContent = text;
  reply.body.append(span);
  hook.chunksShown += 1;
  if (turn && turn.firstText === null) {
    turn.firstText = performance.now() - turn.sentAt;
    showTimings();
  }
}

function badge(row, label, kind) {
  const b = document.createElement("span");
  b.className = `badge ${kind}`;
  b.textContent = label;
  row.querySelector(".who").append(b);
}

function finishReply(utteranceId, metrics) {
  const reply = replies.get(utteranceId);
  hook.repliesCompleted += 1;
  if (reply && metrics.fallbackTier) badge(reply.row, `fallback ${metrics.fallbackTier}`, "fallback");
}

function stopReply(utteranceId) {
  hook.repliesStopped += 1;
  if (utteranceId === currentUtterance) stopPlayback();
  const reply = replies.get(utteranceId);
  if (reply && !reply.row.querySelector(".badge.interrupted")) badge(reply.row, "interrupted", "interrupted");
}

// ------------------------------------------------------------------ playback
function ensurePlayback() {
  if (!playback) playback = new AudioContext();
  if (playback.state === "suspended") playback.resume();
  return playback;
}

function playChunk(utteranceId, audio, sampleRate) {
  if (utteranceId !== currentUtterance) {
    stopPlayback();
    currentUtterance = utteranceId;
  }
  const samples = new Int16Array(audio.buffer, audio.byteOffset, Math.floor(audio.byteLength / 2));
  hook.framesDecoded += 1;
  if (turn && turn.firstAudio === null) {
    turn.firstAudio = performance.now() - turn.sentAt;
    showTimings();
  }
  const ctx = ensurePlayback();
  const buffer = ctx.createBuffer(1, samples.length, sampleRate);
  const channel = buffer.getChannelData(0);
  for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 32768;
  const source = ctx.createBufferSource();
  source.buffer = buffer;
  source.connect(ctx.destination);
  // Back to back on the audio clock: no gaps between frames or chunks.
  playhead = Math.max(playhead, ctx.currentTime + 0.02);
  source.start(playhead);
  playhead += buffer.duration;
  sources.push(source);
  source.onended = () => { sources = sources.filter((s) => s !== source); };
  hook.framesScheduled += 1;
}

function stopPlayback() {
  for (const source of sources) {
    try { source.stop(); } catch { /* already stopped */ }
  }
  sources = [];
  playhead = 0;
}

// ------------------------------------------------------------------ turns
function beginTurn() {
  stopPlayback(); // barge-in: the server stops the reply too
  turn = { sentAt: performance.now(), firstText: null, firstAudio: null };
}

function showTimings() {
  const fmt = (v) => (v === null ? "…" : `${Math.round(v)} ms`);
  hook.lastTimings = { firstChunkMs: turn.firstText, firstAudioMs: turn.firstAudio };
  els.timings.textContent = `first chunk ${fmt(turn.firstText)} · first audio ${fmt(turn.firstAudio)}`;
}

els.form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = els.text.value.trim();
  if (!text) return;
  ensurePlayback();
  beginTurn();
  send("voicechat.text.input", { text });
  els.text.value = "";
});

async function startRecording() {
  if (mic || pressing || !socket) return;
  pressing = true;
  ensurePlayback();
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
    const ctx = new AudioContext();
    await ctx.audioWorklet.addModule(els.talk.dataset.worklet);
    const node = new AudioWorkletNode(ctx, "vantum-recorder");
    const input = ctx.createMediaStreamSource(stream);
    input.connect(node);
    mic = { stream, ctx, node };
    stopPlayback();
    send("voicechat.audio.start", { samplingRate: ctx.sampleRate, voiceId: els.voice.value || undefined });
    node.port.onmessage = ({ data }) => {
      const pcm = new Int16Array(data.length);
      let energy = 0;
      for (let i = 0; i < data.length; i++) {
        const s = Math.max(-1, Math.min(1, data[i]));
        pcm[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
        energy += s * s;
      }
      els.level.value = Math.min(1, Math.sqrt(energy / data.length) * 4);
      send("voicechat.audio.chunk", { audio: new Uint8Array(pcm.buffer) });
    };
    els.talk.classList.add("recording");
    els.talk.textContent = "Release to send";
    if (!pressing) stopRecording(); // released while the microphone was starting
  } catch (error) {
    pressing = false;
    showError(`Microphone unavailable: ${error.message}`);
  }
}

function stopRecording(sendEnd = true) {
  pressing = false;
  if (!mic) return;
  mic.node.port.onmessage = null;
  mic.stream.getTracks().forEach((t) => t.stop());
  mic.ctx.close();
  mic = null;
  els.level.value = 0;
  els.talk.classList.remove("recording");
  els.talk.textContent = "Hold to talk";
  if (sendEnd) {
    beginTurn();
    send("voicechat.audio.end", {});
  }
}

els.talk.addEventListener("pointerdown", startRecording);
els.talk.addEventListener("pointerup", () => stopRecording());
els.talk.addEventListener("pointerleave", () => stopRecording());
document.addEventListener("keydown", (e) => {
  if (e.code === "Space" && e.target === document.body && !e.repeat) { e.preventDefault(); startRecording(); }
});
document.addEventListener("keyup", (e) => {
  if (e.code === "Space" && e.target === document.body) { e.preventDefault(); stopRecording(); }
});
els.connect.addEventListener("click", () => { ensurePlayback(); connect(); });
els.hangup.addEventListener("click", hangUp);
for (const field of [els.voice, els.name, els.company, els.industry]) field.addEventListener("change", sendSessionUpdate);

setState("idle", "Not connected");
