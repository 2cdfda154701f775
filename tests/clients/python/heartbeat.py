"""python-socketio against a Switchboard channel for a number of heartbeats.

Usage: heartbeat.py <origin> <socket.io path> <seconds>

Connects over WebSocket only, stays connected for <seconds> while the server pings, then emits an
event that asks for an acknowledgement. Prints one JSON line: how long it stayed connected, every
disconnect and error it saw, and whether the acknowledgement came back.
"""

import json
import sys
import threading
import time

import socketio

origin, path, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
report = {"client": "python-socketio", "disconnects": [], "errors": [], "ack": None}
acked = threading.Event()

sio = socketio.Client(reconnection=False)


@sio.event
def disconnect(reason=None):
    report["disconnects"].append(str(reason))


@sio.event
def connect_error(data):
    report["errors"].append(str(data))


def on_ack(*args):
    report["ack"] = list(args)
    acked.set()


started = time.monotonic()
try:
    sio.connect(origin, socketio_path=path, transports=["websocket"], wait_timeout=5)
    report["sid"] = sio.sid
    deadline = started + seconds
    while time.monotonic() < deadline and sio.connected:
        time.sleep(0.05)
    report["connected_for_ms"] = round((time.monotonic() - started) * 1000)
    if sio.connected:
        sio.emit("still here", {"from": "python"}, callback=on_ack)
        acked.wait(5)
        # Our own disconnect is reported too; only the ones before it count.
        unexpected = list(report["disconnects"])
        sio.disconnect()
        report["disconnects"] = unexpected
except Exception as error:  # reported, never hidden
    report["errors"].append(f"{type(error).__name__}: {error}")
print(json.dumps(report), flush=True)
