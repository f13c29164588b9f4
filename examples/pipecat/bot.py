"""A Pipecat phone bot written for Twilio Media Streams, run against BotStream unchanged.

BotStream opens the bot's WebSocket (request_start_stream with "protocol": "twilio") exactly as
Twilio would: `connected`, `start`, then `media` every 20 ms. The bot is plain Pipecat: its
TwilioFrameSerializer and FastAPI WebSocket transport, served over TLS by uvicorn.

What it does, so a test (or you, on the phone) can check each part of the protocol:
  - greets the caller with a tone, then sends a mark ("greeting") that BotStream echoes when the
    caller has heard everything before it, then keeps talking (a long tone);
  - reports the caller's audio once it hears some, and every key press (Pipecat DTMF frames);
  - on key 9 it is interrupted: Pipecat's InterruptionFrame becomes Twilio's `clear`, and
    BotStream stops playing at once.

Each of these is printed to stdout as one JSON line.

Run: python bot.py --port 8443 --cert cert.pem --key key.pem
Then: request_start_stream {"call_uuid": ..., "websocket_host": "wss://HOST/ws",
      "websocket_port": 8443, "protocol": "twilio"}
"""

import argparse
import json
import math
import struct

import uvicorn
from fastapi import FastAPI, WebSocket
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    StartFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)

RATE = 8000


def report(**fields):
    print(json.dumps(fields), flush=True)


def tone(freq: float, seconds: float) -> bytes:
    n = int(RATE * seconds)
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i / RATE)))
        for i in range(n)
    )


def rms(pcm: bytes) -> float:
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    return math.sqrt(sum(s * s for s in samples) / max(len(samples), 1))


class Bot(FrameProcessor):
    def __init__(self, stream_sid: str):
        super().__init__()
        self._sid = stream_sid
        self._heard = False

    async def say(self, pcm: bytes):
        await self.push_frame(OutputAudioRawFrame(audio=pcm, sample_rate=RATE, num_channels=1))

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.say(tone(1000, 1.0))
            mark = {"event": "mark", "streamSid": self._sid, "mark": {"name": "greeting"}}
            await self.push_frame(OutputTransportMessageFrame(message=mark))
            await self.say(tone(1000, 10.0))
        elif isinstance(frame, InputAudioRawFrame):
            if not self._heard and rms(frame.audio) > 1000:
                self._heard = True
                report(event="caller_audio", sample_rate=frame.sample_rate)
        elif isinstance(frame, InputDTMFFrame):
            digit = frame.button.value
            report(event="dtmf", digit=digit)
            if digit == "9":
                await self.broadcast_interruption()
                report(event="interrupted")


app = FastAPI()


@app.websocket("/ws")
async def media_stream(websocket: WebSocket):
    await websocket.accept()
    _, call = await parse_telephony_websocket(websocket)
    report(event="start", stream_id=call["stream_id"], call_id=call["call_id"], body=call["body"])
    serializer = TwilioFrameSerializer(
        stream_sid=call["stream_id"],
        call_sid=call["call_id"],
        # BotStream ends calls through its own API (request_drop_call), not Twilio's REST API.
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
        ),
    )
    pipeline = Pipeline([transport.input(), Bot(call["stream_id"]), transport.output()])
    task = PipelineTask(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
    )

    @transport.event_handler("on_client_disconnected")
    async def on_disconnected(_transport, _client):
        report(event="disconnected")
        await task.cancel()

    await PipelineRunner(handle_sigint=False).run(task)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8443)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    a = p.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=a.port,
        ssl_certfile=a.cert,
        ssl_keyfile=a.key,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
