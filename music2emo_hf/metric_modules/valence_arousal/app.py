"""The metric Space's page: this folder's module, loaded from its own script."""

from pathlib import Path

import evaluate

from music2emo_hf.metrics import metric_demo

metric_demo(evaluate.load(str(Path(__file__).parent))).launch()
