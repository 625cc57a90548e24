"""Train one student on several corpora at once, optionally distilling frozen single-corpus teachers into it.

    accelerate launch training/distill.py --config improved --dataset DATA --model INIT_DIR \\
        --corpus mtg_jamendo deam emomusic pmemo \\
        --teacher mtg_jamendo=runs/teacher-mtg/best --teacher deam=runs/teacher-deam/best ... \\
        --output-dir runs/student [--features NAME] [--set kd_weight=0.5 pseudo_label_weight=0.1]

Each step sees a batch of every corpus (`epoch_mode`), each corpus trains its own head, and a corpus with a teacher
mixes its task loss with the teacher's outputs (`kd_mode`, `kd_weight`). Without --teacher it is plain multi-corpus
training. The selected model is written to OUTPUT/best (one unified model; with the faithful recipe also
OUTPUT/best-<corpus>, as Music2Emo's four released students). Rerunning the same command resumes.
"""

import sys

from engine import exit_with, run_script

if __name__ == "__main__":
    exit_with(lambda: run_script(sys.argv[1:], __doc__, distill=True))
