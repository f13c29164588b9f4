/**
 * BotStream example bot (TypeScript): the smallest complete voice app.
 *
 * It answers inbound calls (or places one with --call), asks the switch to stream the call to
 * its own secure WebSocket server, plays a WAV to the caller, stops talking when the caller talks
 * (barge-in), reacts to key presses and to call progress analysis, and hands the caller to a
 * person with request_bridge_call.
 *
 *     node dist/bot.js                                  # answer calls to the switch
 *     node dist/bot.js --call 15550001111 --gateway carrier --cpa
 *     node dist/bot.js --agent-gateway agents --agent-number 2001   # press 1 to reach them
 *
 * The API is in docs/api.md: requests go to the switch over NATS (request/reply), events come on
 * the call's event subject, audio is 16-bit little-endian PCM in binary WebSocket frames.
 * Only two packages: nats and ws (package.json).
 */

import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as https from "node:https";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";

import { connect, Msg, NatsConnection } from "nats";
import { WebSocket, WebSocketServer } from "ws";

type Json = Record<string, any>;

const DEFAULT_WAV = path.join(__dirname, "..", "..", "audio", "hello.wav");

function log(call: string | null, text: string): void {
  console.log(`[${call ? call.slice(0, 8) : "bot"}] ${text}`);
}

function options() {
  const env = process.env;
  const { values } = parseArgs({
    options: {
      "nats-url": { type: "string", default: env.BOTSTREAM_NATS_URL ?? "nats://127.0.0.1:4222" },
      "api-subject": { type: "string", default: env.BOTSTREAM_API_SUBJECT ?? "botstream.api" },
      "inbound-subject": { type: "string", default: env.BOTSTREAM_INBOUND_SUBJECT ?? "botstream.inbound" },
      call: { type: "string" },
      gateway: { type: "string", default: "carrier" },
      from: { type: "string", default: "15550000000" },
      tenant: { type: "string", default: "default" },
      cpa: { type: "boolean", default: false },
      wav: { type: "string", default: DEFAULT_WAV },
      "agent-gateway": { type: "string" },
      "agent-number": { type: "string", default: "2001" },
      "ws-host": { type: "string", default: "127.0.0.1" },
      "ws-port": { type: "string", default: "0" },
      cert: { type: "string" },
      key: { type: "string" },
      record: { type: "boolean", default: false },
      "barge-rms": { type: "string", default: "800" },
      calls: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(`usage: node dist/bot.js [--call NUMBER --gateway G [--cpa]] [--from N] [--tenant T]
       [--wav FILE] [--agent-gateway G --agent-number N] [--record] [--calls N]
       [--nats-url URL] [--api-subject S] [--inbound-subject S] [--ws-host H] [--ws-port P]
       [--cert PEM --key PEM] [--barge-rms N]
Without --call it answers the calls that come on the inbound subject.`);
    process.exit(0);
  }
  return values;
}

/** A mono 16-bit WAV at 8 or 16 kHz: its rate and its PCM. */
function readWav(file: string): { rate: number; pcm: Buffer } {
  const b = fs.readFileSync(file);
  if (b.toString("ascii", 0, 4) !== "RIFF" || b.toString("ascii", 8, 12) !== "WAVE") {
    throw new Error(`${file}: not a WAV file`);
  }
  let pos = 12;
  let rate = 0;
  let channels = 0;
  let bits = 0;
  while (pos + 8 <= b.length) {
    const id = b.toString("ascii", pos, pos + 4);
    const size = b.readUInt32LE(pos + 4);
    const body = pos + 8;
    if (id === "fmt ") {
      channels = b.readUInt16LE(body + 2);
      rate = b.readUInt32LE(body + 4);
      bits = b.readUInt16LE(body + 14);
    } else if (id === "data") {
      if (channels !== 1 || bits !== 16 || (rate !== 8000 && rate !== 16000)) {
        throw new Error(`${file}: need a mono 16-bit WAV at 8000 or 16000 Hz`);
      }
      return { rate, pcm: b.subarray(body, Math.min(body + size, b.length)) };
    }
    pos = body + size + (size % 2);
  }
  throw new Error(`${file}: no audio data`);
}

/** Loudness of one frame of s16le PCM. */
function rms(frame: Buffer): number {
  const n = frame.length >> 1;
  if (n === 0) return 0;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const s = frame.readInt16LE(i * 2);
    sum += s * s;
  }
  return Math.sqrt(sum / n);
}

/** A throwaway certificate for the WSS server: the switch accepts self-signed ones. */
function selfSigned(): { cert: Buffer; key: Buffer } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "botstream-bot-"));
  const cert = path.join(dir, "cert.pem");
  const key = path.join(dir, "key.pem");
  execFileSync(
    "openssl",
    ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-days", "30", "-subj", "/CN=localhost", "-keyout", key, "-out", cert,
      "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
    { stdio: "ignore" },
  );
  const pair = { cert: fs.readFileSync(cert), key: fs.readFileSync(key) };
  fs.rmSync(dir, { recursive: true, force: true });
  return pair;
}

/** What the bot knows about one call. */
class Call {
  ws: WebSocket | null = null;
  mayTalk = false; // set when CPA (if any) says a person is there
  greeted = false;
  speaking = false; // our audio is queued at the switch
  mark: string | null = null; // the mark that ends what we are saying
  afterMark: "hangup" | null = null;
  loud = 0; // consecutive loud caller frames
  lastLoud = 0; // when the caller was last heard talking (ms)
  callerTalked = false;
  machine = false;
  messageLeft = false;
  bridged: string | null = null;
  constructor(readonly uuid: string) {}
}

class Bot {
  private nc!: NatsConnection;
  private calls = new Map<string, Call>();
  private done = 0;
  private wsPort = 0;
  private marks = 0;
  private readonly rate: number;
  private readonly prompt: Buffer;
  private readonly ourSubject = `bot.ts.${randomBytes(6).toString("hex")}`;
  private readonly limit: number | null;
  private finish!: () => void;
  private finished = new Promise<void>((resolve) => (this.finish = resolve));

  constructor(private readonly o: ReturnType<typeof options>) {
    ({ rate: this.rate, pcm: this.prompt } = readWav(o.wav));
    this.limit = o.calls !== undefined ? Number(o.calls) : o.call ? 1 : null;
  }

  // --- NATS: requests and events -----------------------------------------------------------------

  private async request(name: string, data: Json, call: string | null = null): Promise<Json> {
    const body = Buffer.from(JSON.stringify({ event_name: name, event_data: data }));
    try {
      const msg = await this.nc.request(this.o["api-subject"], body, { timeout: 5000 });
      const reply = JSON.parse(Buffer.from(msg.data).toString()) as Json;
      if (reply.status_code !== 0) log(call, `${name} failed: ${reply.status_code} ${reply.status}`);
      return reply;
    } catch (e) {
      log(call, `${name}: ${e}`); // no switch, timeout
      return { status_code: -1, status: String(e) };
    }
  }

  private async onEvent(msg: Msg): Promise<void> {
    let ev: Json;
    try {
      ev = JSON.parse(Buffer.from(msg.data).toString());
    } catch {
      return;
    }
    const name = String(ev.event_name ?? "").replace(/^botstream::/, "");
    const data: Json = ev.event_data ?? {};
    const uuid: string = data.call_uuid ?? "";
    let call = this.calls.get(uuid);
    if (data.bridged_call_uuid) {
      // The agent's leg of one of our calls (api.md §3.8).
      log(data.bridged_call_uuid, `agent leg ${name}`);
      return;
    }
    if (!call && msg.subject === this.ourSubject) {
      // Our own subject carries only the call we placed (its events may come before the reply
      // to request_make_call).
      call = new Call(uuid);
      this.calls.set(uuid, call);
    }
    if (name === "answered" && !call && data.call_type === "inbound") {
      call = new Call(uuid);
      call.mayTalk = true;
      this.calls.set(uuid, call);
      log(uuid, `inbound call from ${data.from_number} to ${data.to_number} answered`);
      await this.startStream(call);
      return;
    }
    if (!call) return;
    switch (name) {
      case "answered":
        log(uuid, "answered");
        if (!this.o.cpa) call.mayTalk = true;
        await this.startStream(call);
        break;
      case "stream_started":
        log(uuid, "stream started");
        break;
      case "stream_stopped":
        log(uuid, `stream stopped: ${data.reason}`);
        break;
      case "dtmf":
        await this.onDtmf(call, data.digit);
        break;
      case "cpa_detection":
        await this.onCpa(call, data);
        break;
      case "cpa_done":
        log(uuid, `cpa done: ${data.result} (${data.reason})`);
        if (call.machine && !call.messageLeft) await this.leaveMessage(call);
        break;
      case "originate":
        if (data.status_code !== 0) log(uuid, `call failed: ${data.status}`);
        break;
      case "hangup":
        log(uuid, `hangup: ${data.hangup_cause} (${data.disposition})`);
        this.calls.delete(uuid);
        this.done += 1;
        if (this.limit !== null && this.done >= this.limit) this.finish();
        break;
    }
  }

  private async startStream(call: Call): Promise<void> {
    const reply = await this.request("request_start_stream", {
      call_uuid: call.uuid,
      websocket_host: `wss://${this.o["ws-host"]}`,
      websocket_port: this.wsPort,
      sample_rate: this.rate,
      metadata: { bot: "typescript-example" },
    }, call.uuid);
    if (reply.status_code !== 0) {
      await this.request("request_drop_call", { call_uuid: call.uuid }, call.uuid);
      return;
    }
    if (this.o.record) {
      const r = await this.request("request_start_record", { call_uuid: call.uuid }, call.uuid);
      if (r.status_code === 0) log(call.uuid, "recording");
    }
  }

  private async onDtmf(call: Call, digit: string): Promise<void> {
    log(call.uuid, `dtmf ${digit}`);
    if (digit === "1") {
      if (!this.o["agent-gateway"]) {
        log(call.uuid, "no --agent-gateway: nobody to bridge to");
        return;
      }
      this.clear(call);
      const reply = await this.request("request_bridge_call", {
        call_uuid: call.uuid,
        gateway: this.o["agent-gateway"],
        to_number: this.o["agent-number"],
        from_number: this.o.from,
        stop_stream: true,
      }, call.uuid);
      if (reply.status_code === 0) {
        call.bridged = reply.bridge_call_uuid;
        log(call.uuid,
          `bridging to ${this.o["agent-gateway"]}/${this.o["agent-number"]}: agent leg ${call.bridged}`);
      }
    } else if (digit === "2") {
      log(call.uuid, "caller asked to hang up");
      await this.request("request_drop_call", { call_uuid: call.uuid }, call.uuid);
    } else if (digit === "#") {
      this.clear(call);
      this.play(call);
    }
  }

  private async onCpa(call: Call, data: Json): Promise<void> {
    const result: string = data.result;
    log(call.uuid, `cpa: ${result} after ${data.detection_ms} ms`);
    if (result === "FX") {
      log(call.uuid, "a fax machine: hanging up");
      await this.request("request_drop_call", { call_uuid: call.uuid }, call.uuid);
    } else if (result === "AM") {
      call.machine = true; // wait for the beep (or the end of CPA) to leave a message
    } else if (result === "BEEP") {
      await this.leaveMessage(call);
    } else if (["LV", "NS", "SIL"].includes(result) && !call.machine) {
      call.mayTalk = true;
      this.greet(call);
    }
  }

  // --- audio -------------------------------------------------------------------------------------

  private greet(call: Call): void {
    if (call.mayTalk && call.ws && !call.greeted) {
      call.greeted = true;
      this.play(call);
    }
  }

  private async leaveMessage(call: Call): Promise<void> {
    if (call.messageLeft || !call.ws) return;
    call.messageLeft = true;
    log(call.uuid, "leaving a message, then hanging up");
    this.play(call, "hangup");
  }

  /** Queues the prompt at the switch, followed by a mark that says when it has been heard. */
  private play(call: Call, after: "hangup" | null = null): void {
    const ws = call.ws;
    if (!ws) return;
    this.marks += 1;
    call.mark = `prompt-${this.marks}`;
    call.afterMark = after;
    call.speaking = true;
    log(call.uuid, `playing ${path.basename(this.o.wav)}`);
    const step = this.rate; // half a second per frame; the switch plays it at real time
    for (let i = 0; i < this.prompt.length; i += step) {
      ws.send(this.prompt.subarray(i, i + step));
    }
    ws.send(JSON.stringify({ event: "mark", name: call.mark }));
  }

  private clear(call: Call): void {
    if (call.ws && call.speaking) {
      call.speaking = false;
      call.mark = null;
      call.ws.send(JSON.stringify({ event: "clear" }));
    }
  }

  private onCallerAudio(call: Call, frame: Buffer): void {
    const loud = rms(frame) >= Number(this.o["barge-rms"]);
    call.loud = loud ? call.loud + 1 : 0;
    if (loud) call.lastLoud = Date.now();
    if (call.loud === 3) {
      // 60 ms of voice
      call.callerTalked = true;
      if (call.speaking && call.afterMark === null) {
        log(call.uuid, "barge-in: the caller talks, clearing");
        this.clear(call);
      }
    }
  }

  /** The caller said something and then stopped for a second: answer. By the clock, not by
   * frames: a phone may send nothing at all while its user is quiet. */
  private answerWhenQuiet(call: Call): void {
    if (call.callerTalked && Date.now() - call.lastLoud >= 1000 && !call.speaking && !call.bridged
      && call.mayTalk) {
      call.callerTalked = false;
      log(call.uuid, "the caller stopped talking: answering");
      this.play(call);
    }
  }

  private async onText(call: Call, text: string): Promise<void> {
    let m: Json;
    try {
      m = JSON.parse(text);
    } catch {
      return;
    }
    if (m.event === "cleared") {
      log(call.uuid, `cleared: caller heard ${m.played_ms} ms, ${m.dropped_ms} ms dropped`);
    } else if (m.event === "mark" && m.name === call.mark) {
      call.speaking = false;
      log(call.uuid, "finished speaking");
      if (call.afterMark === "hangup") {
        await this.request("request_drop_call", { call_uuid: call.uuid }, call.uuid);
      }
    }
  }

  /** One stream from the switch: the first text frame names the call. */
  private onStream(ws: WebSocket): void {
    let call: Call | null = null;
    const answering = setInterval(() => call && call.ws === ws && this.answerWhenQuiet(call), 100);
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      if (call === null) {
        let first: Json = {};
        try {
          first = JSON.parse(data.toString());
        } catch {
          /* not ours */
        }
        call = this.calls.get(first.call_uuid) ?? null;
        if (!call) {
          ws.close();
          return;
        }
        call.ws = ws;
        log(call.uuid, `stream connected (${first.sample_rate} Hz ${first.encoding})`);
        this.greet(call);
      } else if (isBinary) {
        this.onCallerAudio(call, data);
      } else {
        void this.onText(call, data.toString());
      }
    });
    ws.on("close", () => {
      clearInterval(answering);
      if (call && call.ws === ws) {
        call.ws = null;
        call.speaking = false;
      }
    });
    ws.on("error", () => undefined);
  }

  // --- main --------------------------------------------------------------------------------------

  async run(): Promise<void> {
    const o = this.o;
    const tls = o.cert && o.key
      ? { cert: fs.readFileSync(o.cert), key: fs.readFileSync(o.key) }
      : selfSigned();
    const server = https.createServer(tls);
    const wss = new WebSocketServer({ server });
    wss.on("connection", (ws) => this.onStream(ws));
    const bind = o["ws-host"] === "127.0.0.1" ? "127.0.0.1" : "0.0.0.0";
    await new Promise<void>((resolve) => server.listen(Number(o["ws-port"]), bind, resolve));
    this.wsPort = (server.address() as { port: number }).port;
    try {
      this.nc = await connect({ servers: o["nats-url"].split(","), timeout: 5000, maxReconnectAttempts: -1 });
    } catch (e) {
      console.error(`cannot connect to NATS at ${o["nats-url"]}: ${e}`);
      process.exit(1);
    }
    const subject = o.call ? this.ourSubject : o["inbound-subject"];
    const sub = this.nc.subscribe(subject);
    (async () => {
      for await (const m of sub) await this.onEvent(m); // one event at a time, in order
    })();
    await this.nc.flush();
    log(null, `ready: events on ${subject}, WSS on wss://${o["ws-host"]}:${this.wsPort}`);
    if (o.call) await this.placeCall();
    for (const sig of ["SIGINT", "SIGTERM"] as const) {
      process.on(sig, () => {
        log(null, "stopping");
        this.finish();
      });
    }
    await this.finished;
    // Stopped early: hang up the calls still going, not leave them to the switch.
    for (const uuid of [...this.calls.keys()]) {
      log(uuid, "hanging up: the bot is stopping");
      await this.request("request_drop_call", { call_uuid: uuid }, uuid);
    }
    await this.nc.drain();
    wss.clients.forEach((c) => c.terminate());
    server.close();
    log(null, `bye after ${this.done} call(s)`);
  }

  private async placeCall(): Promise<void> {
    const o = this.o;
    if (o.cpa) {
      await this.request("request_set_cpa_params", {
        va_config_name: "example-bot", tenant_id: o.tenant, analysis: "amd",
        // Stop at a decision, except for a machine: then wait for its beep.
        break_events: "LV,NS,SIL,FX,BEEP", log_voice: false,
      });
    }
    const data: Json = {
      gateway: o.gateway, tenant_id: o.tenant, to_number: o.call,
      from_number: o.from, event_subject: this.ourSubject,
    };
    if (o.cpa) data.cpa_config = "example-bot";
    const reply = await this.request("request_make_call", data);
    if (reply.status_code !== 0) {
      this.finish();
      return;
    }
    log(reply.call_uuid, `calling ${o.call} through ${o.gateway}`);
  }
}

new Bot(options()).run().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
