"""Writes this folder's files: a quarter second of a stereo tone encoded by FFmpeg (through PyAV) in the formats this
package does not decode, as a music library holds them. Recorded once and kept, so that the tests read real
encoders' files without depending on FFmpeg (PyAV's wheels bundle a GPL build):

    pip install av==14.0.0 && python tests/undecoded/make.py
"""

from pathlib import Path

import av
import numpy as np

RATE = 44100
FILES = {"tone.m4a": ("ipod", "aac"), "tone.aac": ("adts", "aac"), "tone.wma": ("asf", "wmav2"),
         "tone.wv": ("wv", "wavpack")}


def main() -> None:
    t = np.arange(RATE // 4) / RATE
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for name, (container, codec) in FILES.items():
        frame = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
        frame.sample_rate = RATE
        with av.open(str(Path(__file__).with_name(name)), "w", format=container) as output:
            stream = output.add_stream(codec, rate=RATE, layout="stereo")
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                output.mux(packet)
    print(f"wrote {', '.join(FILES)} with PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info})")


if __name__ == "__main__":
    main()
