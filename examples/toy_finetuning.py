"""What the examples share: a search space, a toy fine-tuning outcome to stand in for training, and their command
line (options, the server check, and :func:`run`, which every example that talks to the server runs its ``main``
through: a missing or refused key is a message naming the key to create, and an exit code, never a traceback).

The outcome is a made-up but deterministic function of the configuration, so the examples run anywhere in seconds:
each model has a ceiling, LoRA its own learning-rate optimum, the score falls off quadratically in log learning rate
around it, full fine-tuning diverges above 5e-4 (a failed run), and the runtime grows with the model and the epochs.
Replace :func:`outcome` (or :func:`curve`) with real training to use the examples for real.

Standard library and the client only (the examples load this file by its path).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from metaml_client import Client, MetamlAPIError, SuggestResult

MODELS = ("roberta-base", "bert-base-uncased", "microsoft/deberta-base")
METHODS = ({"name": "full"}, {"name": "lora", "lora_r": 8})
LR_LOW, LR_HIGH = 1e-5, 1e-3
EPOCHS = 3

#: Each model's best score, the method's learning-rate optimum, and relative cost.
CEILING = {"roberta-base": 0.935, "bert-base-uncased": 0.92, "microsoft/deberta-base": 0.95}
BEST_LR = {"full": 3e-5, "lora": 4e-4}
COST = {"roberta-base": 1.0, "bert-base-uncased": 1.0, "microsoft/deberta-base": 1.6}
LORA_GAP = 0.006  # LoRA's best score below full fine-tuning's


class Diverged(RuntimeError):
    """The toy run diverged (full fine-tuning above a learning rate of 5e-4): a failed evaluation."""


def search_space() -> dict[str, Any]:
    """Three models x full fine-tuning / LoRA r=8 x a learning-rate range, 3 epochs (``/v1/suggest``'s ``space``)."""
    return {"models": [{"id": m} for m in MODELS], "methods": [dict(m) for m in METHODS],
            "hparams": {"learning_rate": {"low": LR_LOW, "high": LR_HIGH, "log": True}}, "fixed": {"epochs": EPOCHS}}


def outcome(config: Mapping[str, Any]) -> tuple[float, float]:
    """The toy run's final score (normalized accuracy) and runtime in seconds.

    Raises:
        Diverged: full fine-tuning above a learning rate of 5e-4.
    """
    model = str(config["model"]["id"])
    model = model if model in CEILING else model.rsplit("/", 1)[-1]
    method = str((config.get("method") or {"name": "full"})["name"])
    hparams = config.get("hparams") or {}
    lr = float(hparams.get("learning_rate", 2e-5))
    epochs = float(hparams.get("epochs", EPOCHS))
    if method == "full" and lr > 5e-4:
        raise Diverged(f"full fine-tuning of {model} diverged at learning rate {lr:.2g}")
    score = CEILING.get(model, 0.9) - (LORA_GAP if method == "lora" else 0.0)
    score -= 0.03 * (math.log10(lr) - math.log10(BEST_LR.get(method, 3e-5))) ** 2
    runtime = 200.0 * COST.get(model, 1.0) * (0.6 if method == "lora" else 1.0) * epochs
    return max(0.5, min(1.0, score)), runtime


def curve(config: Mapping[str, Any], epochs: int) -> list[float]:
    """The toy run's score after each of ``epochs`` epochs: rising toward :func:`outcome`'s score, reached at the
    space's epoch count (later epochs keep it)."""
    final, _ = outcome(config)
    return [0.5 + (final - 0.5) * min(1.0, (1 - 0.45 ** e) / (1 - 0.45 ** EPOCHS)) for e in range(1, epochs + 1)]


def argument_parser(description: str) -> argparse.ArgumentParser:
    """The options every suggest example takes: server, key, trials, dataset, seed."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", default=None, help="an API key with the read scope (when the server asks for one)")
    parser.add_argument("--trials", type=int, default=20, help="evaluations at most")
    parser.add_argument("--dataset", default="glue/sst2")
    parser.add_argument("--seed", type=int, default=0, help="seed of the space's enumeration and the tuner")
    return parser


def check_server(url: str, key: str | None, dataset: str, space: Mapping[str, Any], seed: int) -> SuggestResult:
    """Ask ``/v1/suggest`` once before starting the tuner, so that a missing key or an unknown dataset is reported
    before any worker starts; prints the first suggestion."""
    with Client(url, api_key=key, retries=1) as client:
        first = client.suggest(None, dataset, space=space, k=1, seed=seed)
    if first.suggestions:
        s = first.suggestions[0]
        print(f"{first.n_candidates} candidates; the service proposes first {s.config['model']['id']} "
              f"{s.config['method']['name']} lr={s.config['hparams'].get('learning_rate', 0):.2g} "
              f"(predicted {s.points:.1f} points)", file=sys.stderr)
    return first


def summary(trials: int, completed: int, failed: int, done: bool, best: float | None, best_params: Any,
            stopped: int = 0) -> None:
    """One line on what the search did (to stderr)."""
    parts = [f"{trials} trials: {completed} completed, {failed} failed"]
    if stopped:
        parts.append(f"{stopped} stopped early")
    text = ", ".join(parts)
    if done:
        text += "; the service had nothing left to propose"
    if best is not None:
        text += f"; best {best:.4f} with {best_params}"
    print(text, file=sys.stderr)


def run(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None, *,
        scopes: Sequence[str] = ("read",)) -> int:
    """Run an example's ``main``; a refused key or an unreachable server is one message and exit code 2 or 1, no
    traceback.

    Args:
        main: the example's ``main(argv)``.
        argv: its arguments (``sys.argv[1:]`` when None).
        scopes: every scope the example's key needs on a server that requires keys for reads; when it needs more
            than the one the server named, the message also gives the command creating a key with all of them.

    Returns:
        0 when ``main`` returned, 2 for a missing, invalid or under-scoped key (401, 403), 1 for an unreachable
        server. Other errors propagate.
    """
    try:
        main(argv)
    except MetamlAPIError as e:
        hint = e.key_hint(scopes[0])
        if hint is None:
            raise
        print(f"error: {hint}", file=sys.stderr)
        if len(scopes) > 1:
            print(f"This example needs a key with the scopes {', '.join(scopes)} (an admin key holds them all):\n"
                  f"    metaml keys create --name NAME {' '.join(f'--scope {s}' for s in scopes)}", file=sys.stderr)
        return 2
    except httpx.TransportError as e:
        print(f"error: cannot reach the metaml server ({type(e).__name__}: {e}); start it with `metaml serve` or "
              "pass its address with --url", file=sys.stderr)
        return 1
    return 0
