"""``pestalk live``: speech from a microphone, a file or a socket → 52 ARKit blendshapes in real time →
Unreal Live Link (Live Link Face packets), VMC apps (OSC), WebSocket clients and a three.js page, and a
recording.

Optional dependencies (``pip install 'pestalk-hf[live]'``): ``sounddevice`` (microphone; needs the PortAudio
library, Debian ``libportaudio2``), ``python-osc`` (VMC), ``websockets`` (WebSocket / ``--web``). Each is
imported only by the source or output that needs it; ``pipeline()`` never imports this package.

Modules: :mod:`.sources` (audio in), :mod:`.protocols` (wire formats), :mod:`.outputs` (senders),
:mod:`.session` (threads, queues, the audio clock), :mod:`.cli` (the subcommand).
"""

from .outputs import Frame, LiveLinkOutput, Output, OutputError, VmcOutput, WebSocketOutput
from .protocols import VMC_MAPPINGS, VmcMapping, encode_livelink_packet, encode_vmc_bundle, livelink_values
from .session import (STREAMING_MODES, EmotionMeter, LiveSession, SessionResult, default_model, make_animator,
                      open_outputs)
from .sources import AudioSource, FileSource, MicrophoneSource, SourceError, TcpPcmSource

__all__ = [
    "AudioSource", "EmotionMeter", "FileSource", "Frame", "LiveLinkOutput", "LiveSession", "MicrophoneSource",
    "Output", "OutputError", "STREAMING_MODES", "SessionResult", "SourceError", "TcpPcmSource", "VMC_MAPPINGS",
    "VmcMapping", "VmcOutput", "WebSocketOutput", "encode_livelink_packet", "encode_vmc_bundle",
    "default_model", "livelink_values", "make_animator", "open_outputs",
]
