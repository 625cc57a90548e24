"""Train a single-corpus teacher: one head (MTG-Jamendo's moods, CAL500's or Emotify's tags, or valence/arousal)
on the feature cache of a prepared dataset folder.

    accelerate launch training/train_teacher.py --config faithful --dataset DATA --model INIT_DIR --corpus deam \\
        --output-dir runs/teacher-deam [--features NAME] [--set max_epochs=50 lr=3e-4] [--finetune-backbone]

INIT_DIR is the model the features were extracted with (`music2emo init --config hub_configs/... --backbone
m-a-p/MERT-v1-95M INIT_DIR`); its backbone is saved with the teacher, so runs/teacher-deam/best loads in the
pipeline. Rerunning the same command resumes from the last checkpoint. See training/engine.py for the loop and
training/configs/ for the recipes.
"""

import sys

from engine import exit_with, run_script

if __name__ == "__main__":
    exit_with(lambda: run_script(sys.argv[1:], __doc__, distill=False))
