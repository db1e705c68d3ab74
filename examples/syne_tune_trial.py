"""The training script Syne Tune's local backend runs for each trial of ``syne_tune_suggest.py``: the toy fine-tuning
outcome of ``toy_finetuning.py``, reported epoch by epoch (``epoch``, ``score``) so that ASHA / Hyperband can stop it
early. The trial's config comes as a JSON file (``LocalBackend(pass_args_as_json=True)``: method labels such as
``lora(lora_r=8)`` do not survive a command line). A diverging run raises: a failed trial."""

from __future__ import annotations

import argparse
import runpy
from pathlib import Path
from types import SimpleNamespace

from syne_tune import Reporter
from syne_tune.utils import add_config_json_to_argparse, load_config_json

from metaml_client.syne_tune import config_from_params

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    add_config_json_to_argparse(parser)
    args, _ = parser.parse_known_args()
    given = load_config_json(vars(args))
    toy = SimpleNamespace(**runpy.run_path(str(Path(__file__).resolve().with_name("toy_finetuning.py"))))
    space = toy.search_space()
    params = {name: given[name] for name in ("model", "method", *space.get("hparams", {}))}
    config = config_from_params(params, space)
    report = Reporter()
    for epoch, score in enumerate(toy.curve(config, int(given["epochs"])), start=1):
        report(epoch=epoch, score=score)
