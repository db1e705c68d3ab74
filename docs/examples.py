"""Regenerate the example requests and answers of docs/api.md from a real run of the service.

The script builds a small setup in a scratch directory (``service.testing.build_served_world``: a knowledge base of
the public TransferGraph and OPDA DeBERTa files, a 50-tree meta-model with its curve estimator, registered and
promoted in a fresh MLflow registry, API keys), starts the API in this process (``create_app`` behind FastAPI's
``TestClient``, with its lifespan), sends each example request, and writes the request, exactly as sent, and its
answer between the doc's markers::

    <!-- example: NAME -->
    ...
    <!-- /example -->

Answers are abridged the same way every time, so regenerating them is reproducible: floats to 3 significant digits
(hyperparameters inside a ``config`` kept exact), long lists and maps cut after a few items (``...``), hex ids
shortened to 8 characters, and the values that change from one run to the next (the MLflow run id, load and creation
times, ``model_ms``) written as ``...``. The LightGBM models are fit with fixed seeds on one thread, so everything else
is the same from run to run.

    python docs/examples.py            # rewrite docs/api.md
    python docs/examples.py --check    # exit 1, printing a diff, when docs/api.md is stale

``tests/test_docs_examples.py`` runs the check.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parent / "api.md"

#: The API keys of the setup: name -> scopes (``alice`` is the docs' ``$KEY``).
KEYS: dict[str, list[str]] = {"alice": ["write", "read"], "analyst": ["analyst"]}

#: Widest line of a generated block.
WIDTH = 118

#: Keys whose values change from one run to the next, wherever they are.
VOLATILE_KEYS = frozenset({"loaded_at", "created_at", "model_ms"})
#: Paths of other such values (``*``: any key or list index): the MLflow run that logged the served model.
VOLATILE_PATHS = ("model.run_id", "loaded.run_id", "versions.*.run_id")
#: Subtrees whose floats are kept exact (a configuration is copied back into a request as it is).
EXACT_KEYS = frozenset({"config"})

_MARKER = re.compile(r"(<!-- example: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /example -->)", re.DOTALL)
_HEX = re.compile(r"[0-9a-f]{32,}")


class Raw(str):
    """Text written into a rendered answer as it is: an elision (``...``, ``{...}``)."""


ELLIPSIS = Raw("...")


@dataclass(frozen=True)
class Example:
    """One documented request.

    Attributes:
        name: its marker in the doc.
        method, path: the operation.
        body: the JSON body sent (None: no body).
        key: the name of the key of :data:`KEYS` it sends (None: none).
        status: the status it must be answered with.
        elide: paths whose value is shown as ``{...}`` (``*`` matches any key or index).
        cap: path -> how many items of that list or map are shown.
        counts: paths of maps of counts, shown largest first and ties by name (the service does not order ties).
    """

    name: str
    method: str
    path: str
    body: Any = None
    key: str | None = None
    status: int = 200
    elide: tuple[str, ...] = ("model", "task")
    cap: dict[str, int] = field(default_factory=dict)
    counts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Exchange:
    """An example and the service's answer to it (the JSON as answered, not abridged)."""

    example: Example
    answer: Any


# -- the requests -------------------------------------------------------------------------------------------------


SPACE: dict[str, Any] = {"models": [{"id": "roberta-base"}, {"id": "microsoft/deberta-base"}],
                         "methods": [{"name": "full"}, {"name": "lora", "lora_r": 8}],
                         "hparams": {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}},
                         "fixed": {"epochs": 3}}

RECORD: dict[str, Any] = {"task": {"primary_metric": "accuracy"}, "dataset": {"name": "SST-2"},
                          "model": {"id": "roberta-base"}, "method": {"name": "lora", "lora_r": 8},
                          "hparams": {"learning_rate": 3e-4, "seed": 1}, "outcome": {"score": 0.931}}

#: The examples that read, in the order they are sent (the suggest example, built from an earlier answer, follows).
READS: tuple[Example, ...] = (
    Example("stats", "GET", "/v1/stats", cap={"by_method": 6, "by_model_family": 6},
            counts=("by_source", "by_task_type", "by_method", "by_model_family", "by_status")),
    Example("describe", "POST", "/v1/datasets/describe",
            {"texts": ["a fine movie", "a dull film", "great plot", "boring"], "labels": [1, 0, 1, 0]}),
    Example("sql", "POST", "/v1/sql",
            {"query": "SELECT method_name, count(*) AS n, avg(outcome_score) AS mean_accuracy FROM runs WHERE "
                      "task_primary_metric = 'accuracy' AND outcome_status = 'ok' GROUP BY 1 ORDER BY 3 DESC",
             "max_rows": 100}, key="analyst"),
    Example("predict", "POST", "/v1/predict",
            {"dataset": {"name": "glue/sst2"},
             "candidates": [{"model": {"id": "roberta-base"},
                             "hparams": {"learning_rate": 2e-5, "batch_size": 32, "epochs": 3}},
                            {"model": {"id": "bert-base-uncased"}, "method": {"name": "lora", "lora_r": 8},
                             "hparams": {"learning_rate": 3e-4}}]},
            elide=("task.meta",), cap={"predictions.*.support": 2}),
    Example("predict-columns", "POST", "/v1/predict",
            {"dataset": {"name": "glue/sst2"},
             "columns": {"model.id": ["roberta-base", "bert-base-uncased"], "method.name": [None, "lora"],
                         "method.lora_r": [None, 8], "hparams.learning_rate": [2e-5, 3e-4],
                         "hparams.batch_size": [32, None], "hparams.epochs": [3, None]},
             "support": 0, "outputs": []}),
    Example("recommend", "POST", "/v1/recommend",
            {"dataset": {"name": "glue/sst2"}, "budget": 5,
             "space": {**SPACE, "hparams": {**SPACE["hparams"], "batch_size": [16, 32]}}},
            elide=("model", "task", "priors.optuna.enqueue_trials", "priors.ray_tune", "priors.grammar"),
            cap={"ranked": 2}),
    Example("decide", "POST", "/v1/decide",
            {"dataset": {"name": "glue/mnli"}, "source": "opda",
             "candidate": {"model": {"id": "microsoft/deberta-base"},
                           "hparams": {"learning_rate": 9.5e-4, "batch_size": 32}},
             "incumbent": 0.89, "unit": "score", "tolerance": 0.0,
             "incumbent_config": {"model": {"id": "microsoft/deberta-base"},
                                  "hparams": {"learning_rate": 2e-5, "batch_size": 32}}}),
    Example("decide-curve", "POST", "/v1/decide/curve",
            {"dataset": {"name": "glue/mnli"}, "source": "opda", "unit": "score", "incumbent": 0.889,
             "curve": {"points": [{"step": 1000, "value": 0.72}, {"step": 2000, "value": 0.35},
                                  {"step": 3000, "value": 0.33}], "total_steps": 9818},
             "history": [{"curve": {"points": [{"step": 1000, "value": 0.84}, {"step": 2000, "value": 0.86},
                                               {"step": 6135, "value": 0.889}]}, "score": 0.889}]}),
    Example("models", "GET", "/v1/models"),
    Example("error", "POST", "/v1/predict",
            {"dataset": {"name": "glue/sst2"},
             "candidates": [{"model": {"id": "roberta-base"}, "hparams": {"learning_rate": -2e-5}}]}, status=422),
)
#: The examples that write, sent last (they change the knowledge base the others read).
WRITES: tuple[Example, ...] = (
    Example("upload", "POST", "/v1/runs", [RECORD, RECORD, {**RECORD, "outcome": {"score": 1.7}}], key="alice"),
)


def suggest_example(space_answer: dict[str, Any]) -> Example:
    """The suggest example: a search of :data:`SPACE` whose history is two of the candidates an earlier answer
    proposed (a history entry must be one of them): DeBERTa fully fine-tuned at the lowest learning rate drawn
    (scored), and at the highest (failed)."""
    configs = [s["config"] for s in space_answer["suggestions"]
               if s["config"]["model"]["id"] == "microsoft/deberta-base" and s["config"]["method"]["name"] == "full"]
    configs.sort(key=lambda c: c["hparams"]["learning_rate"])
    history = [{"config": configs[0], "score": 0.931, "runtime_s": 610},
               {"config": configs[-1], "score": None, "runtime_s": 95}]
    return Example("suggest", "POST", "/v1/suggest",
                   {"dataset": {"name": "glue/sst2"}, "k": 2, "samples_per_point": 4, "space": SPACE,
                    "history": history})


# -- running them -------------------------------------------------------------------------------------------------


def build(public_data: Path, work: Path) -> dict[str, Any]:
    """The setup the examples run against, built in ``work`` (:func:`service.testing.build_served_world`)."""
    from service.testing import build_served_world

    return build_served_world(public_data, work, KEYS, curve=True)


def collect(world: dict[str, Any]) -> list[Exchange]:
    """Start the API over ``world`` in this process (closing ``world["kb"]``: the app opens its own), send every
    example (:data:`READS`, the suggest example, :data:`WRITES`) and return the answers, each checked for its expected
    status."""
    from fastapi.testclient import TestClient

    from service.api.main import create_app
    from service.settings import Settings

    settings = Settings(kb=str(world["kb"].location), keys_db=world["work"] / "keys.db", tracking_uri=world["uri"],
                        model_path=None, read_requires_key=False, exclude_sources=(),
                        compile_trees=False)  # LightGBM's own trees throughout: answers do not change mid-run
    world["kb"].close()
    exchanges: list[Exchange] = []
    with TestClient(create_app(settings)) as client:

        def send(example: Example) -> Any:
            headers = {"Authorization": f"Bearer {world['keys'][example.key]}"} if example.key else {}
            r = client.request(example.method, example.path, json=example.body, headers=headers)
            if r.status_code != example.status:
                raise RuntimeError(f"example {example.name}: {r.status_code} instead of {example.status}: {r.text}")
            return r.json()

        exchanges += [Exchange(example, send(example)) for example in READS]
        space = Example("suggest-space", "POST", "/v1/suggest",
                        {"dataset": {"name": "glue/sst2"}, "k": 100, "samples_per_point": 4, "space": SPACE})
        suggest = suggest_example(send(space))
        exchanges.append(Exchange(suggest, send(suggest)))
        exchanges += [Exchange(example, send(example)) for example in WRITES]
    return exchanges


# -- abridging and rendering --------------------------------------------------------------------------------------


def _matches(path: tuple[str, ...], pattern: str) -> bool:
    parts = pattern.split(".")
    return len(parts) == len(path) and all(p in ("*", q) for p, q in zip(parts, path, strict=True))


def _round(x: float) -> float:
    """``x`` to 3 significant digits, and at least one decimal."""
    if x == 0 or not math.isfinite(x):
        return 0.0 if x == 0 else x
    return round(x, max(1, 2 - math.floor(math.log10(abs(x))))) or 0.0


def abridge(value: Any, example: Example, path: tuple[str, ...] = (), exact: bool = False) -> Any:
    """``value`` (the answer at ``path``) as the doc shows it: see the module docstring."""
    if path and (path[-1] in VOLATILE_KEYS or any(_matches(path, p) for p in VOLATILE_PATHS)):
        return ELLIPSIS
    if path and any(_matches(path, p) for p in example.elide):
        return Raw("{...}") if isinstance(value, dict) else ELLIPSIS
    cap = next((n for p, n in example.cap.items() if _matches(path, p)), None)
    if isinstance(value, dict):
        items = list(value.items())
        if any(_matches(path, p) for p in example.counts):
            items.sort(key=lambda kv: (-kv[1], kv[0]))
        out: dict[Any, Any] = {k: abridge(v, example, (*path, k), exact or k in EXACT_KEYS) for k, v in items[:cap]}
        if cap is not None and len(items) > cap:
            out[ELLIPSIS] = None
        return out
    if isinstance(value, list):
        kept = [abridge(v, example, (*path, str(i)), exact) for i, v in enumerate(value[:cap])]
        return [*kept, ELLIPSIS] if cap is not None and len(value) > cap else kept
    if isinstance(value, float) and not exact:
        return _round(value)
    if isinstance(value, str):
        return _HEX.sub(lambda m: m.group()[:8] + "...", value)
    return value


def _compact(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(k if isinstance(k, Raw) else f"{json.dumps(k)}: {_compact(v)}"
                               for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _pieces(value: dict[Any, Any] | list[Any]) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [(str(k), Raw("")) if isinstance(k, Raw) else (f"{json.dumps(k)}: ", v) for k, v in value.items()]
    return [("", v) for v in value]


def _layout(pieces: list[tuple[str, Any]], closer: str, indent: int, column: int) -> str:
    """``prefix value`` pieces separated by commas, packed into lines of :data:`WIDTH` characters: the first starts
    at ``column``, the next ones at ``indent``; a piece too long for a line of its own is laid out inside."""
    out, first = "", True
    for i, (prefix, value) in enumerate(pieces):
        tail = closer if i == len(pieces) - 1 else ","
        flat = prefix + _compact(value) + tail
        if not first and column + 1 + len(flat) <= WIDTH:
            out, column = out + " " + flat, column + 1 + len(flat)
            continue
        if not first:
            out, column = out + "\n" + " " * indent, indent
        text = flat if column + len(flat) <= WIDTH else prefix + render(value, column + len(prefix)) + tail
        out += text
        column = len(text.rsplit("\n", 1)[1]) if "\n" in text else column + len(text)
        first = False
    return out


def render(value: Any, column: int = 0) -> str:
    """``value`` as JSON text starting at ``column``: on one line when it fits in :data:`WIDTH`, else its items packed
    into lines indented one past its bracket (:class:`Raw` parts written as they are)."""
    flat = _compact(value)
    if column + len(flat) <= WIDTH or not isinstance(value, dict | list) or not value:
        return flat
    opener, closer = ("{", "}") if isinstance(value, dict) else ("[", "]")
    return opener + _layout(_pieces(value), closer, column + 1, column + 1)


def curl(example: Example) -> str:
    """The example's request as a curl command (``$KEY`` for alice's key, ``$<NAME>_KEY`` for the others)."""
    method = [] if example.method == "GET" else [f"-X {example.method}"]
    words = ["curl -s", *method, f"localhost:8000{example.path}"]
    if example.key:
        variable = "KEY" if example.key == "alice" else f"{example.key.upper()}_KEY"
        words.append(f'-H "Authorization: Bearer ${variable}"')
    line = " ".join(words)
    if example.body is None:
        return line
    line += " -H 'Content-Type: application/json' -d '"
    if len(line) + len(_compact(example.body)) + 1 <= WIDTH:
        body = _compact(example.body)
    else:
        opener, closer = ("{", "}") if isinstance(example.body, dict) else ("[", "]")
        body = opener + "\n  " + _layout(_pieces(example.body), closer, 2, 2)
    return line + body.replace("'", "'\"'\"'") + "'"


def block(exchange: Exchange) -> str:
    """The doc's text between an example's markers: the request, then the abridged answer."""
    answer = render(abridge(exchange.answer, exchange.example))
    return f"```bash\n{curl(exchange.example)}\n```\n\n```json\n{answer}\n```\n"


def update(text: str, exchanges: list[Exchange]) -> str:
    """``text`` (the doc) with every example's block between its markers.

    Raises:
        ValueError: a marker names no example, or an example has no marker (or two).
    """
    blocks = {e.example.name: block(e) for e in exchanges}
    names = [m["name"] for m in _MARKER.finditer(text)]
    if sorted(names) != sorted(blocks):
        raise ValueError(f"the doc's example markers {sorted(names)} are not the examples {sorted(blocks)}")
    return _MARKER.sub(lambda m: m.group(1) + blocks[m["name"]] + m.group(4), text)


def stale_diff(path: Path, exchanges: list[Exchange]) -> str:
    """A unified diff from the doc at ``path`` to the doc with current answers ('' when it is current)."""
    text = path.read_text(encoding="utf-8")
    lines = difflib.unified_diff(text.splitlines(keepends=True), update(text, exchanges).splitlines(keepends=True),
                                 f"{path} (committed)", f"{path} (the service now)")
    return "".join(lines)


# -- the command --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from collector.sources import public_data_root

    parser = argparse.ArgumentParser(
        prog="python docs/examples.py",
        description="Run the service on a small real setup, send docs/api.md's example requests, and write the "
                    "requests and answers between the doc's <!-- example: NAME --> markers.",
        epilog="Takes about half a minute: it builds a knowledge base and trains a small meta-model first.")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 and print a diff when the doc's examples are not current")
    parser.add_argument("--doc", type=Path, default=DOC, help="the doc to update (default: %(default)s)")
    parser.add_argument("--public-data", type=Path, default=None,
                        help="the public data folder (default: $METAML_PUBLIC_DATA, else ../shared/data)")
    parser.add_argument("--work", type=Path, default=None,
                        help="an empty folder to build the setup in, kept afterwards (default: a temporary one)")
    args = parser.parse_args(argv)
    public_data = args.public_data or public_data_root()
    if not (public_data / "metadatasets").is_dir():
        parser.error(f"no public data at {public_data} (set METAML_PUBLIC_DATA or --public-data)")
    with tempfile.TemporaryDirectory(prefix="metaml-doc-examples-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"building the setup in {work} ...", file=sys.stderr)
        exchanges = collect(build(public_data, work))
    diff = stale_diff(args.doc, exchanges)
    if args.check:
        if diff:
            print(diff, end="")
            print(f"{args.doc}: example answers are stale; run python docs/examples.py", file=sys.stderr)
            return 1
        print(f"{args.doc}: every example answer is current", file=sys.stderr)
        return 0
    if diff:
        text = args.doc.read_text(encoding="utf-8")
        args.doc.write_text(update(text, exchanges), encoding="utf-8")
    print(f"{args.doc}: {len(exchanges)} examples, {'updated' if diff else 'already current'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(DOC.parents[1]))  # the code of this checkout, whatever else is installed
    sys.exit(main())
