"""Faults for the job tests, put into a real `music2emo` process by PYTHONPATH (Python imports `sitecustomize` at
start): analysing a file whose name contains $MUSIC2EMO_TEST_KILL_ON (or one of its comma-separated parts) kills the
process (as a crash or the OOM killer would), and one whose name contains $MUSIC2EMO_TEST_HANG_ON waits, so that a test can kill it there (having written its pid to
$MUSIC2EMO_TEST_HANG_FLAG, when set, so the test knows it waits). Each process started adds a line to
$MUSIC2EMO_TEST_STARTS, when set."""

import os

if os.environ.get("MUSIC2EMO_TEST_STARTS"):
    with open(os.environ["MUSIC2EMO_TEST_STARTS"], "a") as starts:
        starts.write(f"{os.getpid()}\n")

_KILL, _HANG = os.environ.get("MUSIC2EMO_TEST_KILL_ON"), os.environ.get("MUSIC2EMO_TEST_HANG_ON")

if _KILL or _HANG:
    import signal
    import time

    from music2emo_hf import pipeline_music2emo

    _preprocess = pipeline_music2emo.MusicEmotionPipeline.preprocess

    def preprocess(self, inputs, *args, **kwargs):
        name = os.path.basename(str(inputs))
        if _KILL and any(part and part in name for part in _KILL.split(",")):
            os.kill(os.getpid(), signal.SIGKILL)
        if _HANG and _HANG in name:
            if os.environ.get("MUSIC2EMO_TEST_HANG_FLAG"):
                with open(os.environ["MUSIC2EMO_TEST_HANG_FLAG"], "w") as flag:
                    flag.write(str(os.getpid()))
            time.sleep(600)
        return _preprocess(self, inputs, *args, **kwargs)

    pipeline_music2emo.MusicEmotionPipeline.preprocess = preprocess
