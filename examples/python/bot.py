#!/usr/bin/env python3
"""BotStream example bot (Python): the smallest complete voice app.

It answers inbound calls (or places one with --call), asks the switch to stream the call to its
own secure WebSocket server, plays a WAV to the caller, stops talking when the caller talks
(barge-in), reacts to key presses and to call progress analysis, and hands the caller to a
person with request_bridge_call.

    python bot.py                                  # answer calls to the switch
    python bot.py --call 15550001111 --gateway carrier --cpa
    python bot.py --agent-gateway agents --agent-number 2001   # press 1 to reach them

The API is in docs/api.md: requests go to the switch over NATS (request/reply), events come on
the call's event subject, audio is 16-bit little-endian PCM in binary WebSocket frames.
Only two packages: nats-py and websockets (requirements.txt).
"""

import argparse
import array
import asyncio
import json
import math
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import uuid as uuidlib
import wave

import nats
from websockets.asyncio.server import serve

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_WAV = os.path.join(HERE, "..", "audio", "hello.wav")


def log(call, text):
    tag = call[:8] if call else "bot"
    print(f"[{tag}] {text}", flush=True)


def parse_args(argv=None):
    env = os.environ.get
    p = argparse.ArgumentParser(description="BotStream example bot (Python)")
    p.add_argument("--nats-url", default=env("BOTSTREAM_NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--api-subject", default=env("BOTSTREAM_API_SUBJECT", "botstream.api"))
    p.add_argument("--inbound-subject", default=env("BOTSTREAM_INBOUND_SUBJECT", "botstream.inbound"),
                   help="event subject of inbound calls (the switch's inbound.subject)")
    p.add_argument("--call", metavar="NUMBER", help="place a call to NUMBER instead of waiting for calls")
    p.add_argument("--gateway", default="carrier", help="gateway for --call")
    p.add_argument("--from", dest="from_number", default="15550000000", help="caller id for --call and the bridge")
    p.add_argument("--tenant", default="default")
    p.add_argument("--cpa", action="store_true", help="run answering-machine detection on --call")
    p.add_argument("--wav", default=DEFAULT_WAV, help="what the bot says: a mono 16-bit WAV, 8 or 16 kHz")
    p.add_argument("--agent-gateway", help="gateway of the people the caller reaches by pressing 1")
    p.add_argument("--agent-number", default="2001")
    p.add_argument("--ws-host", default="127.0.0.1", help="address at which the switch reaches this bot")
    p.add_argument("--ws-port", type=int, default=0, help="port of the bot's WSS server (0: any free port)")
    p.add_argument("--cert", help="PEM certificate for the WSS server (default: a fresh self-signed one)")
    p.add_argument("--key", help="PEM key for --cert")
    p.add_argument("--record", action="store_true", help="record each call (a WAV in the switch's data dir)")
    p.add_argument("--barge-rms", type=float, default=800.0,
                   help="caller loudness (RMS of 16-bit samples) that counts as talking")
    p.add_argument("--calls", type=int, help="exit after this many calls (default: 1 with --call, else never)")
    return p.parse_args(argv)


def read_wav(path):
    with wave.open(path, "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2 or w.getframerate() not in (8000, 16000):
            sys.exit(f"{path}: need a mono 16-bit WAV at 8000 or 16000 Hz")
        return w.getframerate(), w.readframes(w.getnframes())


def rms(frame):
    """Loudness of one frame of s16le PCM."""
    samples = array.array("h", frame[: len(frame) // 2 * 2])
    if sys.byteorder == "big":
        samples.byteswap()
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def self_signed(directory):
    """A throwaway certificate for the WSS server: the switch accepts self-signed ones."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "30", "-subj", "/CN=localhost", "-keyout", key, "-out", cert,
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


class Call:
    """What the bot knows about one call."""

    def __init__(self, uuid, subject, outbound):
        self.uuid = uuid
        self.subject = subject
        self.outbound = outbound
        self.ws = None
        self.may_talk = False     # set when CPA (if any) says a person is there
        self.greeted = False
        self.speaking = False     # our audio is queued at the switch
        self.mark = None          # the mark that ends what we are saying
        self.after_mark = None    # what to do when it is reached ("hangup")
        self.loud = 0             # consecutive loud caller frames
        self.last_loud = 0.0      # when the caller was last heard talking
        self.caller_talked = False
        self.machine = False
        self.message_left = False
        self.bridged = None


class Bot:
    def __init__(self, args):
        self.args = args
        self.rate, self.prompt = read_wav(args.wav)
        self.calls = {}
        self.done = 0
        self.finished = asyncio.Event()
        self.nc = None
        self.ws_port = None
        self.marks = 0
        self.our_subject = f"bot.py.{uuidlib.uuid4().hex[:12]}"
        limit = args.calls if args.calls is not None else (1 if args.call else None)
        self.limit = limit

    # --- NATS: requests and events -------------------------------------------------------------

    async def request(self, name, data, call=None):
        body = json.dumps({"event_name": name, "event_data": data}).encode()
        try:
            msg = await self.nc.request(self.args.api_subject, body, timeout=5)
        except Exception as e:  # no switch, timeout
            log(call, f"{name}: {e!r}")
            return {"status_code": -1, "status": repr(e)}
        reply = json.loads(msg.data)
        if reply.get("status_code") != 0:
            log(call, f"{name} failed: {reply.get('status_code')} {reply.get('status')}")
        return reply

    async def on_event(self, msg):
        try:
            ev = json.loads(msg.data)
        except ValueError:
            return
        name = ev.get("event_name", "").removeprefix("botstream::")
        data = ev.get("event_data", {})
        uuid = data.get("call_uuid", "")
        call = self.calls.get(uuid)
        if data.get("bridged_call_uuid"):
            # The agent's leg of one of our calls (api.md §3.8).
            log(data["bridged_call_uuid"], f"agent leg {name}")
            return
        if call is None and msg.subject == self.our_subject:
            # Our own subject carries only the call we placed (its events may come before the
            # reply to request_make_call).
            call = self.calls[uuid] = Call(uuid, msg.subject, outbound=True)
        if name == "answered" and call is None and data.get("call_type") == "inbound":
            call = Call(uuid, msg.subject, outbound=False)
            call.may_talk = True
            self.calls[uuid] = call
            log(uuid, f"inbound call from {data.get('from_number')} to {data.get('to_number')} answered")
            await self.start_stream(call)
            return
        if call is None:
            return
        if name == "answered":
            log(uuid, "answered")
            if not self.args.cpa:
                call.may_talk = True
            await self.start_stream(call)
        elif name == "stream_started":
            log(uuid, "stream started")
        elif name == "stream_stopped":
            log(uuid, f"stream stopped: {data.get('reason')}")
        elif name == "dtmf":
            await self.on_dtmf(call, data.get("digit"))
        elif name == "cpa_detection":
            await self.on_cpa(call, data)
        elif name == "cpa_done":
            log(uuid, f"cpa done: {data.get('result')} ({data.get('reason')})")
            if call.machine and not call.message_left:
                await self.leave_message(call)
        elif name == "originate" and data.get("status_code") != 0:
            log(uuid, f"call failed: {data.get('status')}")
        elif name == "hangup":
            log(uuid, f"hangup: {data.get('hangup_cause')} ({data.get('disposition')})")
            self.calls.pop(uuid, None)
            self.done += 1
            if self.limit is not None and self.done >= self.limit:
                self.finished.set()

    async def start_stream(self, call):
        reply = await self.request("request_start_stream", {
            "call_uuid": call.uuid,
            "websocket_host": f"wss://{self.args.ws_host}",
            "websocket_port": self.ws_port,
            "sample_rate": self.rate,
            "metadata": {"bot": "python-example"},
        }, call.uuid)
        if reply.get("status_code") != 0:
            await self.request("request_drop_call", {"call_uuid": call.uuid}, call.uuid)
            return
        if self.args.record:
            r = await self.request("request_start_record", {"call_uuid": call.uuid}, call.uuid)
            if r.get("status_code") == 0:
                log(call.uuid, "recording")

    async def on_dtmf(self, call, digit):
        log(call.uuid, f"dtmf {digit}")
        if digit == "1":
            if not self.args.agent_gateway:
                log(call.uuid, "no --agent-gateway: nobody to bridge to")
                return
            await self.clear(call)
            reply = await self.request("request_bridge_call", {
                "call_uuid": call.uuid,
                "gateway": self.args.agent_gateway,
                "to_number": self.args.agent_number,
                "from_number": self.args.from_number,
                "stop_stream": True,
            }, call.uuid)
            if reply.get("status_code") == 0:
                call.bridged = reply.get("bridge_call_uuid")
                log(call.uuid, f"bridging to {self.args.agent_gateway}/{self.args.agent_number}: "
                               f"agent leg {call.bridged}")
        elif digit == "2":
            log(call.uuid, "caller asked to hang up")
            await self.request("request_drop_call", {"call_uuid": call.uuid}, call.uuid)
        elif digit == "#":
            await self.clear(call)
            await self.play(call)

    async def on_cpa(self, call, data):
        result = data.get("result")
        log(call.uuid, f"cpa: {result} after {data.get('detection_ms')} ms")
        if result == "FX":
            log(call.uuid, "a fax machine: hanging up")
            await self.request("request_drop_call", {"call_uuid": call.uuid}, call.uuid)
        elif result == "AM":
            call.machine = True  # wait for the beep (or the end of CPA) to leave a message
        elif result == "BEEP":
            await self.leave_message(call)
        elif result in ("LV", "NS", "SIL") and not call.machine:
            call.may_talk = True
            await self.greet(call)

    # --- audio ---------------------------------------------------------------------------------

    async def greet(self, call):
        if call.may_talk and call.ws is not None and not call.greeted:
            call.greeted = True
            await self.play(call)

    async def leave_message(self, call):
        if call.message_left or call.ws is None:
            return
        call.message_left = True
        log(call.uuid, "leaving a message, then hanging up")
        await self.play(call, after="hangup")

    async def play(self, call, after=None):
        """Queues the prompt at the switch, followed by a mark that says when it has been heard."""
        ws = call.ws
        if ws is None:
            return
        self.marks += 1
        call.mark, call.after_mark, call.speaking = f"prompt-{self.marks}", after, True
        log(call.uuid, f"playing {os.path.basename(self.args.wav)}")
        step = self.rate * 2 // 2  # half a second per frame; the switch plays it at real time
        for i in range(0, len(self.prompt), step):
            await ws.send(self.prompt[i:i + step])
        await ws.send(json.dumps({"event": "mark", "name": call.mark}))

    async def clear(self, call):
        if call.ws is not None and call.speaking:
            call.speaking = False
            call.mark = None
            await call.ws.send(json.dumps({"event": "clear"}))

    async def on_caller_audio(self, call, frame):
        loud = rms(frame) >= self.args.barge_rms
        call.loud = call.loud + 1 if loud else 0
        if loud:
            call.last_loud = asyncio.get_running_loop().time()
        if call.loud == 3:  # 60 ms of voice
            call.caller_talked = True
            if call.speaking and call.after_mark is None:
                log(call.uuid, "barge-in: the caller talks, clearing")
                await self.clear(call)

    async def answer_when_quiet(self, call, ws):
        """The caller said something and then stopped for a second: answer. By the clock, not
        by frames: a phone may send nothing at all while its user is quiet."""
        loop = asyncio.get_running_loop()
        while call.ws is ws:
            await asyncio.sleep(0.1)
            if call.caller_talked and loop.time() - call.last_loud >= 1.0 and not call.speaking \
                    and call.bridged is None and call.may_talk:
                call.caller_talked = False
                log(call.uuid, "the caller stopped talking: answering")
                await self.play(call)

    async def on_text(self, call, text):
        try:
            m = json.loads(text)
        except ValueError:
            return
        if m.get("event") == "cleared":
            log(call.uuid, f"cleared: caller heard {m.get('played_ms')} ms, {m.get('dropped_ms')} ms dropped")
        elif m.get("event") == "mark" and m.get("name") == call.mark:
            call.speaking = False
            log(call.uuid, "finished speaking")
            if call.after_mark == "hangup":
                await self.request("request_drop_call", {"call_uuid": call.uuid}, call.uuid)

    async def ws_handler(self, ws):
        """One stream from the switch: the first text frame names the call."""
        try:
            first = json.loads(await ws.recv())
        except Exception:
            return
        call = self.calls.get(first.get("call_uuid"))
        if call is None:
            await ws.close()
            return
        call.ws = ws
        log(call.uuid, f"stream connected ({first.get('sample_rate')} Hz {first.get('encoding')})")
        await self.greet(call)
        answering = asyncio.create_task(self.answer_when_quiet(call, ws))
        try:
            async for frame in ws:
                if isinstance(frame, bytes):
                    await self.on_caller_audio(call, frame)
                else:
                    await self.on_text(call, frame)
        except Exception:
            pass
        finally:
            if call.ws is ws:
                call.ws, call.speaking = None, False
            answering.cancel()

    # --- main ----------------------------------------------------------------------------------

    async def run(self):
        a = self.args
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = (a.cert, a.key) if a.cert else self_signed(tmp)
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(cert, key)
            async with serve(self.ws_handler, "0.0.0.0" if a.ws_host != "127.0.0.1" else "127.0.0.1",
                             a.ws_port, ssl=tls, max_size=None) as server:
                self.ws_port = server.sockets[0].getsockname()[1]
                try:
                    self.nc = await nats.connect(a.nats_url, connect_timeout=5, max_reconnect_attempts=-1)
                except Exception as e:
                    sys.exit(f"cannot connect to NATS at {a.nats_url}: {e!r}")
                subject = self.our_subject if a.call else a.inbound_subject
                await self.nc.subscribe(subject, cb=self.on_event)
                await self.nc.flush()
                log(None, f"ready: events on {subject}, WSS on wss://{a.ws_host}:{self.ws_port}")
                if a.call:
                    await self.place_call()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, self.stop)
                await self.finished.wait()
                # Stopped early: hang up the calls still going, not leave them to the switch.
                for uuid in list(self.calls):
                    log(uuid, "hanging up: the bot is stopping")
                    await self.request("request_drop_call", {"call_uuid": uuid}, uuid)
                await self.nc.drain()
        log(None, f"bye after {self.done} call(s)")

    def stop(self):
        log(None, "stopping")
        self.finished.set()

    async def place_call(self):
        a = self.args
        if a.cpa:
            await self.request("request_set_cpa_params", {
                "va_config_name": "example-bot", "tenant_id": a.tenant, "analysis": "amd",
                # Stop at a decision, except for a machine: then wait for its beep.
                "break_events": "LV,NS,SIL,FX,BEEP", "log_voice": False,
            })
        data = {"gateway": a.gateway, "tenant_id": a.tenant, "to_number": a.call,
                "from_number": a.from_number, "event_subject": self.our_subject}
        if a.cpa:
            data["cpa_config"] = "example-bot"
        reply = await self.request("request_make_call", data)
        if reply.get("status_code") != 0:
            self.finished.set()
            return
        log(reply["call_uuid"], f"calling {a.call} through {a.gateway}")


def main():
    args = parse_args()
    try:
        asyncio.run(Bot(args).run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
