// Drives the real livekit-client (npm, pinned in package-lock.json) in Debian's headless Chromium
// against a Consulta SFU, and prints one line `LIVEKIT_RESULT <json>` with what each page saw.
// Usage: node livekit.mjs <ws-url> <scenario.json>
// scenario.json: { "tokens": { "alice": "...", "bob": "...", "carol": "...", "stranger": "..." } }
// Never downloads a browser: it runs /usr/bin/chromium (or $CONSULTA_CHROMIUM) and fails without it.
import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch } from './chromium.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const [wsUrl, scenarioPath] = process.argv.slice(2);
if (!wsUrl || !scenarioPath) {
  console.error('usage: node livekit.mjs <ws-url> <scenario.json>');
  process.exit(2);
}
const { tokens, mode } = JSON.parse(readFileSync(scenarioPath, 'utf8'));

// The page: livekit-client's UMD build plus a few helpers the scenario calls.
const sdk = readFileSync(join(here, 'node_modules/livekit-client/dist/livekit-client.umd.js'));
const e2eeWorker = readFileSync(join(here, 'node_modules/livekit-client/dist/livekit-client.e2ee.worker.js'));
const page = `<!doctype html><html><head><meta charset="utf-8"><title>consulta livekit test</title>
<script src="/livekit-client.umd.js"></script></head><body><div id="tiles"></div><script>
const LK = window.LivekitClient;
const log = [];
let room;
const note = (kind, detail) => log.push({ at: Date.now(), kind, ...detail });
window.join = async (url, token, passphrase, hideCandidates) => {
  const options = { adaptiveStream: true, dynacast: true };
  if (passphrase) {
    // Element Call's per-participant E2EE: the SFU only ever sees ciphertext frames.
    const keyProvider = new LK.ExternalE2EEKeyProvider();
    await keyProvider.setKey(passphrase);
    options.e2ee = { keyProvider, worker: new Worker('/livekit-client.e2ee.worker.js') };
  }
  room = new LK.Room(options);
  // Behind the test's NAT: the SFU must know this page only by the address the NAT gives it.
  if (hideCandidates) room.engine.client.sendIceCandidate = async () => {};
  room.on(LK.RoomEvent.EncryptionError, (e) => note('encryption_error', { error: String(e) }));
  room.on(LK.RoomEvent.ParticipantEncryptionStatusChanged, (enabled, p) => note('encryption_status', { identity: p?.identity, enabled }));
  if (passphrase) await room.setE2EEEnabled(true);
  room.on(LK.RoomEvent.ParticipantConnected, (p) => note('participant_connected', { identity: p.identity }));
  room.on(LK.RoomEvent.ParticipantDisconnected, (p) => {
    note('participant_disconnected', { identity: p.identity });
    // Their tiles go, as in a real call: otherwise the next one's tile lands below the fold and
    // adaptive stream (rightly) asks the SFU to pause a video nobody can see.
    for (const el of document.querySelectorAll('[data-identity]')) if (el.dataset.identity === p.identity) el.remove();
  });
  room.on(LK.RoomEvent.Reconnecting, () => note('reconnecting', {}));
  room.on(LK.RoomEvent.Reconnected, () => note('reconnected', {}));
  room.on(LK.RoomEvent.Disconnected, (reason) => note('disconnected', { reason }));
  room.on(LK.RoomEvent.TrackMuted, (pub, p) => note('muted', { identity: p.identity, source: pub.source }));
  room.on(LK.RoomEvent.TrackUnmuted, (pub, p) => note('unmuted', { identity: p.identity, source: pub.source }));
  room.on(LK.RoomEvent.TrackUnpublished, (pub, p) => note('unpublished', { identity: p.identity, source: pub.source }));
  room.on(LK.RoomEvent.TrackStreamStateChanged, (pub, state, p) => note('stream_state', { identity: p.identity, source: pub.source, state }));
  room.on(LK.RoomEvent.TrackSubscriptionFailed, (sid, p) => note('subscription_failed', { identity: p.identity, sid }));
  room.on(LK.RoomEvent.TrackSubscriptionPermissionChanged, (pub, status, p) => note('permission', { identity: p.identity, source: pub.source, status }));
  room.on(LK.RoomEvent.TrackUnsubscribed, (track, pub, p) => note('unsubscribed', { identity: p.identity, source: pub.source }));
  room.on(LK.RoomEvent.ActiveSpeakersChanged, (speakers) => note('speakers', { identities: speakers.map((s) => s.identity) }));
  room.on(LK.RoomEvent.DataReceived, (payload, p) => note('data', { from: p?.identity, text: new TextDecoder().decode(payload) }));
  // A track that goes takes its tile with it, as in a real call (the next tile stays in view).
  room.on(LK.RoomEvent.TrackUnpublished, (pub) => {
    for (const el of document.querySelectorAll('[data-sid]')) if (el.dataset.sid === pub.trackSid) el.remove();
  });
  room.on(LK.RoomEvent.TrackSubscribed, (track, pub, p) => {
    note('subscribed', { identity: p.identity, track_kind: track.kind, source: pub.source });
    const element = track.attach();
    element.muted = true; // autoplay policy; decoding does not depend on it
    if (track.kind === 'video') { element.style.width = '640px'; element.style.height = '360px'; }
    element.dataset.identity = p.identity;
    element.dataset.source = pub.source;
    element.dataset.sid = pub.trackSid;
    document.getElementById('tiles').appendChild(element);
  });
  const started = performance.now();
  await room.connect(url, token);
  note('connected', { ms: Math.round(performance.now() - started) });
  // How a lost connection was mended: a resume keeps the session, a restart joins afresh.
  for (const kind of ['resuming', 'resumed', 'restarting', 'restarted']) room.engine.on(kind, () => note(kind, {}));
  return room.localParticipant.sid;
};
window.publish = async () => {
  await room.localParticipant.enableCameraAndMicrophone();
  return room.localParticipant.getTrackPublications().map((p) => ({ source: p.source, sid: p.trackSid, simulcast: p.simulcasted }));
};
window.setCamera = async (on) => { await room.localParticipant.setCameraEnabled(on); };
// Who may receive this participant's tracks: everyone, or the identities named, each to all its
// tracks (allowAll) or to the sids listed.
window.setPermissions = (everyone, entries) => room.localParticipant.setTrackSubscriptionPermissions(everyone, entries);
window.setMicrophone = async (on) => { await room.localParticipant.setMicrophoneEnabled(on); };
// The microphone's noise filter reported on, as livekit-client's Krisp filter reports itself (the
// filter is a paid plugin): the client sends update_audio_track with the track's features.
window.reportNoiseFilter = () => room.localParticipant.getTrackPublication(LK.Track.Source.Microphone).track.handleKrispNoiseFilterEnable();
// The features the microphone of the participant named has, as the server last said.
window.remoteMicFeatures = (identity) => room.remoteParticipants.get(identity)?.getTrackPublication(LK.Track.Source.Microphone)?.trackInfo?.audioFeatures ?? null;
window.shareScreen = async (withAudio) => {
  // A canvas stream published as a screen share (headless Chromium has no screen to capture).
  const canvas = document.createElement('canvas');
  canvas.width = 1280; canvas.height = 720;
  const ctx = canvas.getContext('2d');
  let frame = 0;
  setInterval(() => { ctx.fillStyle = 'hsl(' + (frame++ % 360) + ' 80% 50%)'; ctx.fillRect(0, 0, 1280, 720); }, 33);
  const [track] = canvas.captureStream(30).getVideoTracks();
  window.shareTrack = track;
  await room.localParticipant.publishTrack(track, { source: LK.Track.Source.ScreenShare, simulcast: false });
  if (withAudio) {
    // The shared tab's sound: a tone of its own (660 Hz), published as the share's audio.
    const context = new AudioContext();
    const tone = context.createOscillator();
    tone.frequency.value = 660;
    const sink = context.createMediaStreamDestination();
    tone.connect(sink);
    tone.start();
    await context.resume();
    [window.shareAudio] = sink.stream.getAudioTracks();
    await room.localParticipant.publishTrack(window.shareAudio, { source: LK.Track.Source.ScreenShareAudio });
  }
};
// What "stop sharing" does: livekit-client sends no signal message, it renegotiates without the tracks.
window.stopShare = async () => {
  await room.localParticipant.unpublishTrack(window.shareTrack);
  if (window.shareAudio) await room.localParticipant.unpublishTrack(window.shareAudio);
  window.shareAudio = undefined;
};
window.sendData = async (text) => {
  await room.localParticipant.publishData(new TextEncoder().encode(text), { reliable: true });
};
window.remoteStats = async () => {
  const out = [];
  for (const p of room.remoteParticipants.values()) {
    for (const pub of p.trackPublications.values()) {
      const entry = { identity: p.identity, source: pub.source, kind: pub.kind, subscribed: pub.isSubscribed, muted: pub.isMuted, encrypted: pub.isEncrypted, streamState: pub.track?.streamState };
      const receiver = pub.track?.receiver;
      if (receiver) {
        const stats = await receiver.getStats();
        stats.forEach((s) => {
          if (s.type === 'inbound-rtp') {
            entry.ssrc = s.ssrc;
            entry.packetsReceived = s.packetsReceived;
            entry.packetsLost = s.packetsLost;
            entry.nackCount = s.nackCount;
            entry.retransmittedPacketsReceived = s.retransmittedPacketsReceived;
            entry.framesDecoded = s.framesDecoded;
            // Where frames not decoded went (a failing test prints them): never complete
            // (framesReceived counts complete frames), or given up by the jitter buffer.
            entry.framesReceived = s.framesReceived;
            entry.framesDropped = s.framesDropped;
            entry.jitterBufferDelay = s.jitterBufferDelay;
            entry.jitterBufferEmittedCount = s.jitterBufferEmittedCount;
            entry.totalFreezesDuration = s.totalFreezesDuration;
            entry.keyFramesDecoded = s.keyFramesDecoded;
            entry.pliCount = s.pliCount;
            entry.freezeCount = s.freezeCount;
            entry.frameWidth = s.frameWidth;
            entry.totalSamplesReceived = s.totalSamplesReceived;
            entry.audioEnergy = s.totalAudioEnergy;
            entry.concealedSamples = s.concealedSamples;
          } else if (s.type === 'remote-outbound-rtp') {
            // Built from the sender reports the SFU sends (what lip sync needs).
            entry.senderReports = s.reportsSent;
          }
        });
      }
      out.push(entry);
    }
  }
  return out;
};
// The local camera's outbound streams (one per simulcast layer), summed.
window.cameraSent = async () => {
  const pub = room.localParticipant.getTrackPublication(LK.Track.Source.Camera);
  const total = { packetsSent: 0, nackCount: 0, retransmittedPacketsSent: 0, layers: 0, receiverReports: 0, framesEncoded: {} };
  const stats = await pub.track.sender.getStats();
  stats.forEach((s) => {
    if (s.type === 'remote-inbound-rtp') {
      // Built from the receiver reports the SFU sends about this layer.
      total.receiverReports += 1;
    } else if (s.type === 'outbound-rtp') {
      total.layers += 1;
      total.packetsSent += s.packetsSent ?? 0;
      total.nackCount += s.nackCount ?? 0;
      total.retransmittedPacketsSent += s.retransmittedPacketsSent ?? 0;
      total.framesEncoded[s.rid ?? s.ssrc] = s.framesEncoded ?? 0;
    }
  });
  return total;
};
// Receiver reports about the microphone, as the browser's remote-inbound statistics count them.
window.microphoneReports = async () => {
  const pub = room.localParticipant.getTrackPublication(LK.Track.Source.Microphone);
  let reports = 0;
  (await pub.track.sender.getStats()).forEach((s) => { if (s.type === 'remote-inbound-rtp') reports += 1; });
  return reports;
};
// Round trips the browser measured from the SFU's receiver reports about the microphone (their
// LSR and DLSR fields echo its sender reports): how many, and the last, in seconds.
window.microphoneRoundTrip = async () => {
  const pub = room.localParticipant.getTrackPublication(LK.Track.Source.Microphone);
  const out = { measurements: 0, rtt: null };
  (await pub.track.sender.getStats()).forEach((s) => {
    if (s.type === 'remote-inbound-rtp') {
      out.measurements += s.roundTripTimeMeasurements ?? 0;
      out.rtt = s.roundTripTime ?? out.rtt;
    }
  });
  return out;
};
// Which of the camera's simulcast encodings the browser is sending (dynacast pauses the others).
window.cameraLayers = () => {
  const pub = room.localParticipant.getTrackPublication(LK.Track.Source.Camera);
  return pub.track.sender.getParameters().encodings
    .filter((e) => e.active !== false)
    .map((e) => e.rid ?? '')
    .sort()
    .join(',');
};
// What each of the camera's encodings sends, in bits per second over ms milliseconds.
window.cameraRates = async (ms) => {
  const pub = room.localParticipant.getTrackPublication(LK.Track.Source.Camera);
  const bytes = async () => {
    const out = {};
    (await pub.track.sender.getStats()).forEach((s) => { if (s.type === 'outbound-rtp') out[s.rid ?? ''] = s.bytesSent ?? 0; });
    return out;
  };
  const before = await bytes();
  await new Promise((r) => setTimeout(r, ms));
  const after = await bytes();
  const rates = {};
  for (const rid of Object.keys(after)) rates[rid] = Math.round(((after[rid] - (before[rid] ?? 0)) * 8 * 1000) / ms);
  return rates;
};
// Everything about the local camera's sending, for a report when its video did not arrive:
// the track, the sender's encodings (dynacast's active flags), and each layer's outbound stats.
window.cameraDiag = async () => {
  const pub = room.localParticipant.getTrackPublication(LK.Track.Source.Camera);
  const track = pub?.track;
  const sender = track?.sender;
  const mst = track?.mediaStreamTrack;
  const out = { sid: pub?.trackSid, muted: pub?.isMuted, readyState: mst?.readyState, trackMuted: mst?.muted, enabled: mst?.enabled };
  if (!sender) return { ...out, sender: null };
  out.transport = sender.transport?.state;
  out.mine = room.engine.pcManager?.publisher.getTransceivers().some((t) => t.sender === sender);
  out.senderTrack = sender.track ? (sender.track === mst ? 'same' : sender.track.readyState) : null;
  out.encodings = sender.getParameters().encodings.map((e) => ({ rid: e.rid, active: e.active, maxBitrate: e.maxBitrate, scale: e.scaleResolutionDownBy }));
  out.outbound = [];
  (await sender.getStats()).forEach((s) => {
    if (s.type === 'outbound-rtp') out.outbound.push({ rid: s.rid, active: s.active, bytesSent: s.bytesSent, framesEncoded: s.framesEncoded, limitation: s.qualityLimitationReason, width: s.frameWidth });
    if (s.type === 'media-source') out.source = { frames: s.frames, fps: s.framesPerSecond, width: s.width, height: s.height };
  });
  // What the capture delivered to the track itself (Chromium's MediaStreamTrack statistics).
  const ts = mst?.stats;
  if (ts) out.captured = { delivered: ts.deliveredFrames, discarded: ts.discardedFrames, total: ts.totalFrames };
  out.settings = mst?.getSettings();
  return out;
};
// Frames a fresh capture of the camera delivers in 1.5 s (then stopped): tells a stalled capture
// device from a stalled track.
window.probeCamera = async () => {
  const [t] = (await navigator.mediaDevices.getUserMedia({ video: true })).getVideoTracks();
  await new Promise((r) => setTimeout(r, 1500));
  const frames = t.stats?.totalFrames;
  t.stop();
  const cam = room.localParticipant.getTrackPublication(LK.Track.Source.Camera)?.track?.mediaStreamTrack;
  return { fresh: frames, published: cam?.stats?.totalFrames };
};
// Records the local camera's capture in the event log whenever it changes (track, state, frames
// captured), four times a second: a camera that stops capturing shows as a count that stays.
window.watchCamera = () => {
  let last = '';
  setInterval(() => {
    const t = room.localParticipant.getTrackPublication(LK.Track.Source.Camera)?.track?.mediaStreamTrack;
    const now = t ? t.id.slice(0, 8) + ' ' + t.readyState + ' ' + t.stats?.totalFrames : 'none';
    if (now !== last) note('camera', { now });
    last = now;
  }, 250);
};
window.events = () => log;
// livekit-client's own simulation of a dropped signalling socket: it closes the WebSocket and
// reconnects.
window.dropSignalling = async () => { await room.simulateScenario('signal-reconnect'); };
// Sends the text reliably the moment the client starts resuming. livekit-client holds such a send
// back and delivers it after the resume, from where the SFU's reconnect response says its
// reliable data got to. Records how many sends were held back then.
window.sendWhenResuming = (text) => {
  room.engine.once('resuming', async () => {
    await window.sendData(text);
    window.heldBack = room.engine.dataChannels.reliable.messageBuffer.getUnsent().length;
  });
};
// The ICE ufrags of both PeerConnections' descriptions (they change when ICE restarts), and
// their connection states.
window.iceUfrags = () => {
  const manager = room.engine.pcManager;
  const ufrag = (description) => (description?.sdp.match(/a=ice-ufrag:([^\\s]+)/) ?? [])[1] ?? '';
  const of = (transport) => ({ local: ufrag(transport?.pc.localDescription), remote: ufrag(transport?.pc.remoteDescription), state: transport?.pc.connectionState });
  return { publisher: of(manager.publisher), subscriber: of(manager.subscriber) };
};
// Resizes the tiles of a participant's camera: adaptive stream tells the SFU, which picks a layer.
window.resizeTile = (identity, width, height) => {
  for (const el of document.querySelectorAll('video')) {
    if (el.dataset.identity === identity && el.dataset.source === 'camera') {
      el.style.width = width + 'px';
      el.style.height = height + 'px';
    }
  }
};
// The local ports of both connections' selected candidate pairs: behind a NAT, the NAT's ports for
// the page (the node's answers to its checks name them).
window.localPorts = async () => {
  const ports = [];
  for (const transport of [room.engine.pcManager.publisher, room.engine.pcManager.subscriber]) {
    const stats = await transport.pc.getStats();
    stats.forEach((s) => {
      const local = s.type === 'transport' && stats.get(stats.get(s.selectedCandidatePairId)?.localCandidateId);
      if (local) ports.push(local.port);
    });
  }
  return ports;
};
window.leave = async () => { await room.disconnect(); };
window.tryJoin = async (url, token) => {
  const r = new LK.Room();
  try { await r.connect(url, token); await r.disconnect(); return { joined: true }; }
  catch (e) { return { joined: false, error: String(e?.message ?? e), reason: e?.reason, status: e?.status }; }
};
</script></body></html>`;

const server = createServer((req, res) => {
  if (req.url === '/livekit-client.umd.js') {
    res.writeHead(200, { 'content-type': 'text/javascript' });
    res.end(sdk);
  } else if (req.url === '/livekit-client.e2ee.worker.js') {
    res.writeHead(200, { 'content-type': 'text/javascript' });
    res.end(e2eeWorker);
  } else {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(page);
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const pageUrl = `http://127.0.0.1:${server.address().port}/`;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const profile = mkdtempSync(join(tmpdir(), 'consulta-chromium-'));
// The fake microphone: Chromium's default only beeps briefly once a second, which no speaker
// detector (LiveKit's included) calls speech. A continuous tone is someone talking.
const tone = join(profile, 'tone.wav');
{
  const rate = 48000;
  const samples = rate * 2;
  const wav = Buffer.alloc(44 + samples * 2);
  wav.write('RIFF', 0); wav.writeUInt32LE(36 + samples * 2, 4); wav.write('WAVE', 8);
  wav.write('fmt ', 12); wav.writeUInt32LE(16, 16); wav.writeUInt16LE(1, 20); wav.writeUInt16LE(1, 22);
  wav.writeUInt32LE(rate, 24); wav.writeUInt32LE(rate * 2, 28); wav.writeUInt16LE(2, 32); wav.writeUInt16LE(16, 34);
  wav.write('data', 36); wav.writeUInt32LE(samples * 2, 40);
  for (let i = 0; i < samples; i++) {
    wav.writeInt16LE(Math.round(0.3 * 32767 * Math.sin((2 * Math.PI * 440 * i) / rate)), 44 + i * 2);
  }
  writeFileSync(tone, wav);
}
const result = { steps: [] };
const step = (name, data) => { result.steps.push(name); console.error(`[livekit.mjs] ${name}`); return data; };
const browserFlags = [`--use-file-for-fake-audio-capture=${tone}`, '--autoplay-policy=no-user-gesture-required'];
let context;
let ownBrowser;
let ownProfile;
try {
  context = await launch(profile, browserFlags);
  const open = async (name, browser = context) => {
    const p = await browser.newPage();
    p.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') console.error(`[${name} ${m.type()}] ${m.text()}`); });
    p.on('pageerror', (e) => console.error(`[${name} error] ${e.message}`));
    await p.goto(pageUrl);
    return p;
  };
  // Polls `fn` in the page until `ok(value)` or the deadline; returns the last value.
  const until = async (p, fn, ok, ms) => {
    const end = Date.now() + ms;
    let value;
    while (Date.now() < end) {
      value = await p.evaluate(fn);
      if (ok(value)) return value;
      await sleep(250);
    }
    return value;
  };
  const video = (stats, identity, source = 'camera') => stats.find((s) => s.identity === identity && s.source === source && s.kind === 'video');
  const audio = (stats, identity, source = 'microphone') => stats.find((s) => s.identity === identity && s.source === source && s.kind === 'audio');
  const frames = (s) => s?.framesDecoded ?? 0;
  // Frames a page's camera has encoded so far, per simulcast layer: over a window, its busiest
  // layer's are what the other side could decode at most (the test takes each layer's difference).
  // Chromium's camera makes fewer when the machine is loaded (≈11 a second measured, of 20), so a
  // window's decoded frames are weighed against these, not against a fixed rate.
  const encoded = async (p) => (await p.evaluate(() => window.cameraSent())).framesEncoded;

  const passphrase = mode === 'e2ee' ? 'consulta-test-shared-key' : undefined;
  const alice = await open('alice');
  // After a restart livekit-client stops each camera and captures it again. Pages of one Chromium
  // share its fake camera, which then stalled for good in about half the runs (a fresh capture in
  // either page got no frame either): Bob gets a browser of his own, as he would on his own device.
  if (mode === 'restart') {
    ownProfile = mkdtempSync(join(tmpdir(), 'consulta-chromium-'));
    ownBrowser = await launch(ownProfile, browserFlags);
  }
  const bob = await open('bob', ownBrowser);
  // Ends a scenario of its own: what both pages saw, then both leave.
  const finish = async () => {
    result.alice_events = await alice.evaluate(() => window.events());
    result.bob_events = await bob.evaluate(() => window.events());
    await alice.evaluate(() => window.leave());
    await bob.evaluate(() => window.leave());
    throw 'done';
  };
  const natted = mode === 'nat' || mode === 'hiccup';
  result.alice_sid = await alice.evaluate(([u, t, k, n]) => window.join(u, t, k, n), [wsUrl, tokens.alice, passphrase, natted]);
  result.bob_sid = await bob.evaluate(([u, t, k, n]) => window.join(u, t, k, n), [wsUrl, tokens.bob, passphrase, natted]);
  step('joined');
  result.alice_published = await alice.evaluate(() => window.publish());
  result.bob_published = await bob.evaluate(() => window.publish());
  step('published');
  if (mode === 'starved' || mode === 'starved_share' || mode === 'starved_muted' || mode === 'starved_lossy' || mode === 'starved_lossy_group') {
    // The SFU polices what it sends each subscriber to less than Alice's audio and her smallest
    // layer need together, for a while after each subscriber connection is made. Her video must
    // pause for Bob (and livekit-client be told) so that her voice gets through whole, then come
    // back once the link does. In a group, Carol publishes too, and Bob receives both cameras.
    const group = mode === 'starved_lossy_group';
    let carol;
    if (group) {
      carol = await open('carol');
      result.carol_sid = await carol.evaluate(([u, t]) => window.join(u, t), [wsUrl, tokens.carol]);
      await carol.evaluate(() => window.publish());
      step('carol published');
    }
    const samples = [];
    const started = Date.now();
    let sharing;
    while (Date.now() - started < (group ? 150000 : 80000)) {
      const s = await bob.evaluate(() => window.remoteStats());
      const v = video(s, 'alice');
      const a = audio(s, 'alice');
      const share = video(s, 'alice', 'screen_share');
      const c = video(s, 'carol');
      samples.push({
        at: Date.now() - started,
        wall: Date.now(),
        state: v?.streamState ?? '',
        share_state: share?.streamState ?? '',
        width: v?.frameWidth ?? 0,
        frames: frames(v),
        audio_received: a?.packetsReceived ?? 0,
        audio_lost: a?.packetsLost ?? 0,
        carol_state: c?.streamState ?? '',
        carol_frames: frames(c),
        made: await encoded(alice),
        carol_made: carol ? await encoded(carol) : {},
      });
      if (mode === 'starved_share') {
        // A track Bob subscribes to while starved starts paused, and his client must know it.
        if (sharing === undefined && v?.streamState === 'paused') {
          sharing = samples.length;
          await alice.evaluate(() => window.shareScreen());
        }
        if (sharing !== undefined && samples.length - sharing >= 10) break;
      } else {
        if (mode === 'starved_muted' && result.mic_muted_at === undefined && v?.streamState === 'paused') {
          // Alice mutes her microphone while her video is paused for Bob: he then receives
          // nothing from her, and the SFU must still find out when his link has recovered.
          result.mic_muted_at = samples.length - 1;
          await alice.evaluate(() => window.setMicrophone(false));
        }
        // Done once the video has been back for 8 s in a row after a pause (with the microphone
        // muted, and after the 20 s the link is policed; on a link that keeps losing a little,
        // not before 60 s, to see it stay).
        // In a group, once both cameras have been back for 20 s in a row.
        const paused = samples.findLastIndex((x) => (group ? x.state !== 'active' || x.carol_state !== 'active' : x.state === 'paused'));
        const late = { starved_muted: 32000, starved_lossy: 60000, starved_lossy_group: 60000 }[mode] ?? 0;
        if (paused >= 0 && samples.length - 1 - paused >= (group ? 20 : 8) && Date.now() - started >= late) break;
      }
      await sleep(1000);
    }
    result.starved_samples = samples;
    result.bob_events = await bob.evaluate(() => window.events());
    await alice.evaluate(() => window.leave());
    await bob.evaluate(() => window.leave());
    if (carol) await carol.evaluate(() => window.leave());
    throw 'done';
  }

  const both = (stats, other) => frames(video(stats, other)) >= 30 && (audio(stats, other)?.packetsReceived ?? 0) >= 50;
  const aliceStats = await until(alice, () => window.remoteStats(), (s) => both(s, 'bob'), 30000);
  const bobStats = await until(bob, () => window.remoteStats(), (s) => both(s, 'alice'), 30000);
  result.alice_sees_bob = { video: video(aliceStats, 'bob'), audio: audio(aliceStats, 'bob') };
  result.bob_sees_alice = { video: video(bobStats, 'alice'), audio: audio(bobStats, 'alice') };
  step('media flowing both ways');
  // RTCP reports from the SFU: receiver reports on Alice's publisher connection, sender reports on
  // Bob's subscriber connection.
  result.alice_microphone_reports = await until(alice, () => window.microphoneReports(), (n) => n > 0, 10000);
  // Libwebrtc sends audio's sender reports every few seconds; a round trip needs one answered.
  result.alice_microphone_round_trip = await until(alice, () => window.microphoneRoundTrip(), (r) => r.measurements > 0, 15000);
  result.alice_camera_reports = await alice.evaluate(() => window.cameraSent());
  result.bob_sender_reports = await until(bob, () => window.remoteStats(), (s) => (audio(s, 'alice')?.senderReports ?? 0) > 0, 10000)
    .then((s) => ({ audio: audio(s, 'alice')?.senderReports ?? 0, video: video(s, 'alice')?.senderReports ?? 0 }));
  if (mode === 'loss') {
    // The SFU drops every Nth RTP datagram each way. Bob's browser NACKs what the SFU dropped on
    // the way to him; the SFU NACKs what it dropped from Alice, and she resends it.
    const nacked = (s) => (video(s, 'alice')?.nackCount ?? 0) >= 5;
    await until(bob, () => window.remoteStats(), nacked, 20000);
    await until(alice, () => window.cameraSent(), (c) => c.retransmittedPacketsSent >= 5, 20000);
    const start = video(await bob.evaluate(() => window.remoteStats()), 'alice');
    result.alice_camera_sent_before = await alice.evaluate(() => window.cameraSent());
    await sleep(8000);
    result.loss_window = { start, end: video(await bob.evaluate(() => window.remoteStats()), 'alice') };
    result.alice_camera_sent = await alice.evaluate(() => window.cameraSent());
    await alice.evaluate(() => window.leave());
    await bob.evaluate(() => window.leave());
    throw 'done';
  }
  if (mode === 'downlink') {
    // The SFU polices what it sends each subscriber to less than Alice's top layer carries. Bob
    // shows her large, asking for that layer; the SFU's estimate of his downlink must bring him
    // down to a layer that fits, on which her video keeps decoding.
    result.alice_camera_rates = await alice.evaluate(() => window.cameraRates(2000));
    await bob.evaluate(() => window.resizeTile('alice', 1280, 720));
    const samples = [];
    const started = Date.now();
    while (Date.now() - started < 24000) {
      const v = video(await bob.evaluate(() => window.remoteStats()), 'alice');
      samples.push({ at: Date.now() - started, width: v?.frameWidth ?? 0, frames: frames(v), made: await encoded(alice), received: v?.packetsReceived ?? 0, lost: v?.packetsLost ?? 0 });
      await sleep(1000);
    }
    result.downlink_samples = samples;
    result.alice_camera_rates_after = await alice.evaluate(() => window.cameraRates(2000));
    await alice.evaluate(() => window.leave());
    await bob.evaluate(() => window.leave());
    throw 'done';
  }
  // Frames decoded so far each way.
  // With the frames each camera made: `alice_encoded` is what Bob could have decoded of hers.
  const seen = async () => ({
    alice_sees_bob: frames(video(await alice.evaluate(() => window.remoteStats()), 'bob')),
    bob_sees_alice: frames(video(await bob.evaluate(() => window.remoteStats()), 'alice')),
    alice_encoded: await encoded(alice),
    bob_encoded: await encoded(bob),
  });
  // Waits until video flows both ways again (10 more frames each way than now), up to 30 s after
  // `since`; returns the counts then, whether it flowed, and the time from `since`.
  const videoBothWaysAgain = async (since) => {
    const now = await seen();
    const flowing = (f) => f.alice_sees_bob >= now.alice_sees_bob + 10 && f.bob_sees_alice >= now.bob_sees_alice + 10;
    let start = now;
    while (!flowing(start) && Date.now() - since < 30000) {
      await sleep(250);
      start = await seen();
    }
    return { start, flowing: flowing(start), ms: Date.now() - since };
  };
  if (mode === 'hiccup') {
    // The network under one page goes for 2 s (a Wi-Fi hand-over, a lift's doors): nothing
    // crosses the NAT to or from it, too short for either side's ICE to call the path lost. First
    // Bob's, then Alice's. When it is back, the first reports count what was sent into the gap as
    // lost: the subscriber's own outage, or its publisher's that the SFU passed on. Neither is
    // congestion, and neither may hold the video down in the seconds after.
    const view = async () => {
      const [a, b] = [video(await alice.evaluate(() => window.remoteStats()), 'bob'), video(await bob.evaluate(() => window.remoteStats()), 'alice')];
      const [madeA, madeB] = [await encoded(alice), await encoded(bob)];
      return { at: Date.now(), alice_sees_bob: { frames: frames(a), width: a?.frameWidth ?? 0, made: madeB }, bob_sees_alice: { frames: frames(b), width: b?.frameWidth ?? 0, made: madeA } };
    };
    // Replies from the harness, one line each.
    const replies = [];
    process.stdin.on('data', (chunk) => replies.push(...chunk.toString().split('\n').filter((l) => l)));
    const ask = async (line) => {
      console.log(line);
      while (replies.length === 0) await sleep(20);
      return replies.shift();
    };
    // Samples 0.5 s apart over `ms`, and `least` of them at least (a loaded machine takes longer
    // over each).
    const samples = async (ms, least = 0) => {
      const out = [];
      const from = Date.now();
      while (Date.now() - from < ms || out.length < least) { out.push(await view()); await sleep(500); }
      return out.map((v) => ({ ...v, at: v.at - from }));
    };
    await until(alice, () => window.remoteStats(), (s) => frames(video(s, 'bob')) >= 30, 30000);
    await until(bob, () => window.remoteStats(), (s) => frames(video(s, 'alice')) >= 30, 30000);
    await sleep(5000); // both estimates up from their start
    result.hiccups = [];
    for (const [who, page] of [['bob', bob], ['alice', alice]]) {
      const before = await samples(3000, 6);
      const ports = await page.evaluate(() => window.localPorts());
      await ask(`LIVEKIT_NAT_CUT ${ports.join(',')}`);
      await sleep(2000);
      await ask('LIVEKIT_NAT_MEND');
      step(`${who}'s network back`);
      result.hiccups.push({ who, ports, before, after: await samples(10000) });
    }
    process.stdin.destroy(); // or it keeps this process alive after the scenario
    await finish();
  }
  if (mode === 'permission') {
    // Alice lets Bob receive only her microphone (livekit-client's setTrackSubscriptionPermissions),
    // then everyone again. Her camera leaves Bob's connection and comes back; her voice goes on.
    const bobSees = () => bob.evaluate(() => window.remoteStats());
    const heard = (s) => audio(s, 'alice')?.packetsReceived ?? 0;
    await until(bob, () => window.remoteStats(), (s) => frames(video(s, 'alice')) >= 15 && heard(s) >= 50, 20000);
    const mic = result.alice_published.find((p) => p.source === 'microphone').sid;
    await alice.evaluate(([m]) => window.setPermissions(false, [{ participantIdentity: 'bob', allowedTrackSids: [m] }]), [mic]);
    const revoked = await until(bob, () => window.remoteStats(), (s) => video(s, 'alice')?.subscribed === false, 10000);
    result.camera_revoked = video(revoked, 'alice');
    const heardBefore = heard(await bobSees());
    await sleep(3000);
    const after = await bobSees();
    result.heard_while_revoked = heard(after) - heardBefore;
    result.camera_while_revoked = video(after, 'alice');
    step('camera revoked');
    await alice.evaluate(() => window.setPermissions(true, []));
    const back = await until(bob, () => window.remoteStats(), (s) => frames(video(s, 'alice')) >= 15, 20000);
    result.camera_granted = video(back, 'alice');
    step('everyone allowed again');
    result.alice_sees_bob = video(await alice.evaluate(() => window.remoteStats()), 'bob');
    // Her microphone's processing changes: Bob's view of its features follows.
    result.mic_features_before = await bob.evaluate(() => window.remoteMicFeatures('alice'));
    await alice.evaluate(() => window.reportNoiseFilter());
    const noiseFilter = 5; // AudioTrackFeature.TF_ENHANCED_NOISE_CANCELLATION
    result.mic_features_after = await until(bob, () => window.remoteMicFeatures('alice'), (f) => f?.includes(noiseFilter), 5000);
    step('noise filter on');
    await finish();
  }
  if (mode === 'resume') {
    // Alice's signalling socket drops. Her client resumes the same session on a new socket: both
    // her PeerConnections restart ICE, and the call goes on without either side leaving.
    result.ufrags_before = await alice.evaluate(() => window.iceUfrags());
    result.frames_before = await seen();
    // Reliable data from before the drop and from during the resume reaches Bob once each. One
    // message goes before the drop: with none relayed yet, the SFU can only report 0 as the last,
    // and livekit-client then sends nothing it held back (a known limit, docs/SFU.md).
    const got = (text) => (e) => e.some((x) => x.kind === 'data' && x.text === text);
    await alice.evaluate(() => window.sendData('sent before the drop'));
    await until(bob, () => window.events(), got('sent before the drop'), 10000);
    await alice.evaluate(() => window.sendWhenResuming('sent while resuming'));
    await alice.evaluate(() => window.dropSignalling());
    await until(alice, () => window.events(), (e) => e.some((x) => x.kind === 'reconnected'), 20000);
    step('signalling dropped and mended');
    // The subscriber's restart is the SFU's new offer, which may land just after the resume.
    result.ufrags_after = await until(alice, () => window.iceUfrags(), (u) => u.subscriber.remote !== result.ufrags_before.subscriber.remote, 5000);
    // Video flowing again both ways after the restarts (10 frames each), then an 8 s window.
    const { start, flowing, ms } = await videoBothWaysAgain(Date.now());
    result.resume_to_video_ms = ms;
    result.resume_flowing = flowing;
    await sleep(8000);
    result.resume_window = { start, end: await seen() };
    result.alice_held_back = await alice.evaluate(() => window.heldBack ?? null);
    result.alice_sid_after = await alice.evaluate(() => room.localParticipant.sid);
    await finish();
  }
  if (mode === 'nat') {
    // The NAT in front of both pages gives each a new port. The SFU asks both clients to resume
    // (their publisher connections' ICE is theirs to restart) and restarts their subscriber
    // connections' ICE; the call goes on, and Carol, who comes afterwards, gets both cameras.
    result.ufrags_before = await alice.evaluate(() => window.iceUfrags());
    const bobWas = await bob.evaluate(() => window.iceUfrags());
    console.log('LIVEKIT_NAT_REBIND');
    await new Promise((resolve) => process.stdin.once('data', resolve));
    process.stdin.destroy(); // or it keeps this process alive after the scenario
    const rebound = Date.now();
    step('new ports');
    const resumed = (p) => until(p, () => window.events(), (e) => e.some((x) => x.kind === 'resumed'), 30000);
    await Promise.all([resumed(alice), resumed(bob)]);
    result.rebind_to_resume_ms = Date.now() - rebound;
    step('resumed');
    // Restarted, and connected on the new credentials.
    const restarted = (was) => (u) => ['publisher', 'subscriber'].every((pc) => u[pc].local !== was[pc].local && u[pc].remote !== was[pc].remote && u[pc].state === 'connected');
    result.ufrags_after = await until(alice, () => window.iceUfrags(), restarted(result.ufrags_before), 10000);
    await until(bob, () => window.iceUfrags(), restarted(bobWas), 10000);
    // Video flowing again both ways (10 frames each), then an 8 s window of it.
    const { start, flowing, ms } = await videoBothWaysAgain(rebound);
    result.rebind_to_video_ms = ms;
    result.rebind_flowing = flowing;
    await sleep(8000);
    result.rebind_window = { start, end: await seen() };
    const carol = await open('carol');
    await carol.evaluate(([u, t]) => window.join(u, t, undefined, true), [wsUrl, tokens.carol]);
    const bothCameras = (s) => frames(video(s, 'alice')) >= 30 && frames(video(s, 'bob')) >= 30;
    const carolStats = await until(carol, () => window.remoteStats(), bothCameras, 20000);
    result.carol_sees_alice = video(carolStats, 'alice') ?? null;
    result.carol_sees_bob = video(carolStats, 'bob') ?? null;
    await carol.evaluate(() => window.leave());
    await finish();
  }
  if (mode === 'restart') {
    await Promise.all([alice, bob].map((p) => p.evaluate(() => window.watchCamera())));
    // The SFU shuts down (a deploy) and a new node comes up on the same address, with the room:
    // both clients are told to join again, do so at once, and the call goes on in new sessions.
    const sees = (p, who, n) => until(p, () => window.remoteStats(), (s) => frames(video(s, who)) >= n, 40000);
    await Promise.all([sees(alice, 'bob', 15), sees(bob, 'alice', 15)]);
    step('call up');
    console.log('LIVEKIT_RESTART');
    await new Promise((resolve) => process.stdin.once('data', resolve));
    process.stdin.destroy(); // or it keeps this process alive after the scenario
    step('node restarted');
    const back = Date.now();
    const restarted = (p) => until(p, () => window.events(), (e) => e.some((x) => x.kind === 'restarted' || x.kind === 'disconnected'), 40000);
    await Promise.all([restarted(alice), restarted(bob)]);
    result.restart_ms = Date.now() - back;
    step('rejoined');
    // A new session's tracks are new subscriptions: their counts start again from 0.
    const hears = (p, who) => until(p, () => window.remoteStats(), (s) => (audio(s, who)?.packetsReceived ?? 0) >= 100, 20000);
    const [ha, hb] = await Promise.all([hears(alice, 'bob'), hears(bob, 'alice')]);
    result.restart_to_audio_ms = Date.now() - back;
    result.alice_hears_bob_after = audio(ha, 'bob') ?? null;
    result.bob_hears_alice_after = audio(hb, 'alice') ?? null;
    // livekit-client captures each camera again after a restart (its republish): in 17 runs
    // 2.9-4.4 s, once 8.2 and once 10.9 s; the long wait costs only when it fails.
    const [a, b] = await Promise.all([
      until(alice, () => window.remoteStats(), (s) => frames(video(s, 'bob')) >= 30, 45000),
      until(bob, () => window.remoteStats(), (s) => frames(video(s, 'alice')) >= 30, 45000),
    ]);
    result.restart_to_video_ms = Date.now() - back;
    result.alice_sees_bob_after = video(a, 'bob') ?? null;
    result.bob_sees_alice_after = video(b, 'alice') ?? null;
    if (frames(video(a, 'bob')) < 30 || frames(video(b, 'alice')) < 30) {
      result.alice_camera_probe = await alice.evaluate(() => window.probeCamera());
      result.bob_camera_probe = await bob.evaluate(() => window.probeCamera());
    }
    result.alice_camera_after = await alice.evaluate(() => window.cameraDiag());
    result.bob_camera_after = await bob.evaluate(() => window.cameraDiag());
    result.alice_sid_after = await alice.evaluate(() => room.localParticipant.sid);
    await finish();
  }
  if (mode === 'e2ee') {
    result.e2ee_enabled = await bob.evaluate(() => room.isE2EEEnabled);
    await finish();
  }

  // Simulcast layer selection follows the rendered size (adaptive stream → track_setting).
  const width = (s) => video(s, 'alice')?.frameWidth ?? 0;
  // With each width Bob sees, what Alice's layers send (Chromium lowers them on a loaded machine,
  // or leaves `f` out): the test weighs Bob's width against them.
  result.alice_sends = [];
  const sends = async () => result.alice_sends.push((await alice.evaluate(() => window.cameraDiag())).outbound);
  result.layer_widths = [width(await until(bob, () => window.remoteStats(), (s) => width(s) === 640, 20000))];
  await sends();
  await bob.evaluate(() => window.resizeTile('alice', 1280, 720));
  result.layer_widths.push(width(await until(bob, () => window.remoteStats(), (s) => width(s) === 1280, 20000)));
  await sends();
  result.alice_layers_large = await alice.evaluate(() => window.cameraLayers());
  await bob.evaluate(() => window.resizeTile('alice', 160, 90));
  result.layer_widths.push(width(await until(bob, () => window.remoteStats(), (s) => width(s) === 320, 20000)));
  await sends();
  // Dynacast: with Bob, her only viewer, showing her small, Alice's browser stops encoding the
  // two larger layers, a few seconds later (the SFU waits before pausing layers) ...
  result.alice_layers_small = await until(alice, () => window.cameraLayers(), (l) => l === 'q', 15000);
  await bob.evaluate(() => window.resizeTile('alice', 640, 360));
  const settled = await until(bob, () => window.remoteStats(), (s) => width(s) === 640, 20000);
  result.layer_widths.push(width(settled));
  await sends();
  result.bob_sees_alice_after_switches = video(settled, 'alice');
  // ... and encodes the middle one again as soon as he wants it.
  result.alice_layers_medium = await alice.evaluate(() => window.cameraLayers());
  step('simulcast layers follow the tile size');

  await alice.evaluate(() => window.setCamera(false));
  await until(bob, () => window.events(), (e) => e.some((x) => x.kind === 'muted' && x.identity === 'alice'), 10000);
  await alice.evaluate(() => window.setCamera(true));
  await until(bob, () => window.events(), (e) => e.some((x) => x.kind === 'unmuted' && x.identity === 'alice'), 10000);
  const before = frames(video(await bob.evaluate(() => window.remoteStats()), 'alice'));
  const after = await until(bob, () => window.remoteStats(), (s) => frames(video(s, 'alice')) >= before + 30, 15000);
  result.bob_frames_after_unmute = frames(video(after, 'alice')) - before;
  // The restarted camera sends only the layers Bob's 640 × 360 tile needs.
  result.alice_layers_after_unmute = await until(alice, () => window.cameraLayers(), (l) => l === 'h,q', 10000);
  step('mute and unmute');

  const carol = await open('carol');
  result.carol_sid = await carol.evaluate(([u, t]) => window.join(u, t), [wsUrl, tokens.carol]);
  await carol.evaluate(() => window.publish());
  const carolStats = await until(carol, () => window.remoteStats(), (s) => frames(video(s, 'alice')) >= 15 && frames(video(s, 'bob')) >= 15, 30000);
  result.carol_sees = { alice: video(carolStats, 'alice'), bob: video(carolStats, 'bob') };
  const aliceSeesCarol = await until(alice, () => window.remoteStats(), (s) => frames(video(s, 'carol')) >= 15, 30000);
  result.alice_sees_carol = video(aliceSeesCarol, 'carol');
  await carol.evaluate(() => window.leave());
  await until(alice, () => window.events(), (e) => e.some((x) => x.kind === 'participant_disconnected' && x.identity === 'carol'), 10000);
  await carol.close();
  step('third participant joined, published and left');

  // A fourth participant after her: the SFU sends Dave's tracks to Alice on the SSRCs Carol's had
  // (it reuses them rather than grow per-SSRC state), continuing their numbering.
  const dave = await open('dave');
  await dave.evaluate(([u, t]) => window.join(u, t), [wsUrl, tokens.dave]);
  await dave.evaluate(() => window.publish());
  const aliceSeesDave = await until(alice, () => window.remoteStats(), (s) => frames(video(s, 'dave')) >= 30 && (audio(s, 'dave')?.packetsReceived ?? 0) >= 50, 30000);
  result.alice_sees_dave = { video: video(aliceSeesDave, 'dave'), audio: audio(aliceSeesDave, 'dave') };
  await dave.evaluate(() => window.leave());
  await dave.close();
  step('a fourth participant after the third');

  await alice.evaluate(() => window.shareScreen(true));
  const shareHeard = (s) => (audio(s, 'alice', 'screen_share_audio')?.packetsReceived ?? 0) >= 100;
  const screen = await until(bob, () => window.remoteStats(), (s) => frames(video(s, 'alice', 'screen_share')) >= 15 && shareHeard(s), 20000);
  result.bob_sees_screen = video(screen, 'alice', 'screen_share');
  result.bob_hears_screen = audio(screen, 'alice', 'screen_share_audio') ?? null;
  result.bob_hears_alice_during_share = audio(screen, 'alice') ?? null;
  // Her camera goes on beside the share: the share renegotiated her publisher connection, long
  // after her camera's first packets.
  const cameraFrames = async () => frames(video(await bob.evaluate(() => window.remoteStats()), 'alice'));
  const cameraStart = await cameraFrames();
  const madeStart = await encoded(alice);
  await sleep(4000);
  result.bob_camera_frames_during_share = (await cameraFrames()) - cameraStart;
  result.alice_camera_made_during_share = { start: madeStart, end: await encoded(alice) };
  step('screen share');

  // Stopping the share removes it for Bob, and sharing again works.
  await alice.evaluate(() => window.stopShare());
  const ended = await until(bob, () => window.events(), (e) => e.some((x) => x.kind === 'unpublished' && x.identity === 'alice' && x.source === 'screen_share'), 10000);
  result.bob_saw_share_end = ended.some((x) => x.kind === 'unpublished' && x.source === 'screen_share');
  const audioEnded = await until(bob, () => window.events(), (e) => e.some((x) => x.kind === 'unpublished' && x.identity === 'alice' && x.source === 'screen_share_audio'), 10000);
  result.bob_saw_share_audio_end = audioEnded.some((x) => x.kind === 'unpublished' && x.source === 'screen_share_audio');
  result.bob_shares_after_end = (await bob.evaluate(() => window.remoteStats())).filter((s) => s.identity === 'alice' && s.source.startsWith('screen_share')).length;
  await alice.evaluate(() => window.shareScreen());
  const again = await until(bob, () => window.remoteStats(), (s) => frames(video(s, 'alice', 'screen_share')) >= 15, 20000);
  result.bob_sees_second_screen = video(again, 'alice', 'screen_share');
  step('screen share stopped and shared again');

  await alice.evaluate(() => window.sendData('hello from alice'));
  await until(bob, () => window.events(), (e) => e.some((x) => x.kind === 'data'), 10000);
  step('data');

  const stranger = await open('stranger');
  result.stranger = await stranger.evaluate(([u, t]) => window.tryJoin(u, t), [wsUrl, tokens.stranger]);
  step('wrong room refused');

  result.alice_events = await alice.evaluate(() => window.events());
  result.bob_events = await bob.evaluate(() => window.events());
  result.carol_events = await carol.evaluate(() => window.events()).catch(() => []);
  await alice.evaluate(() => window.leave());
  await bob.evaluate(() => window.leave());
} catch (error) {
  if (error !== 'done') result.error = String(error?.stack ?? error);
} finally {
  console.log(`LIVEKIT_RESULT ${JSON.stringify(result)}`);
  if (context) await context.close();
  if (ownBrowser) await ownBrowser.close();
  server.close();
  rmSync(profile, { recursive: true, force: true });
  if (ownProfile) rmSync(ownProfile, { recursive: true, force: true });
}
