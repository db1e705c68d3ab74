"""What the tuner integrations share: ask ``/v1/suggest`` for the next configuration of a search space that is not
already taken, given what the search has evaluated so far. Standard library and httpx only.

A tuner names a configuration by its flat parameters (``model``, ``method`` label, each varied hyperparameter; see
``metaml_client._space``). :class:`Proposer` turns the tuner's evaluated parameters into the request's history, asks
for enough suggestions to step around the ones the tuner has *taken* (running, stopped early, or evaluated but unknown
to the server), and returns the first free one, as parameters spelled as the space spells them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from metaml_client._client import Client, MetamlAPIError, Suggestion, SuggestResult
from metaml_client._space import config_from_params, params_from_config, params_key

__all__ = ["MAX_K", "Evaluated", "LazyProposer", "Pick", "Proposer"]

log = logging.getLogger("metaml_client")

#: The most suggestions one request may ask for.
MAX_K = 100


@dataclass
class Evaluated:
    """One finished evaluation of a search: its parameters, its normalized score (None: the run failed) and its
    training time in seconds (None: unknown)."""

    params: dict[str, Any]
    score: float | None
    runtime_s: float | None = None


@dataclass
class Pick:
    """The answer to :meth:`Proposer.next`: ``params`` to evaluate (None when there is none), with the
    ``suggestion`` it came from; ``done`` when the service has nothing left to propose (stop the search); the
    ``answer`` itself; the history entries the server did not count as candidates (``unknown``: their parameters'
    keys); ``free`` the other untaken suggestions of the answer, best first (for a tuner that must step around a
    concurrent claim)."""

    params: dict[str, Any] | None
    suggestion: Suggestion | None
    done: bool
    answer: SuggestResult
    unknown: list[str]
    free: list[tuple[dict[str, Any], Suggestion]]


def _history_rejects(error: MetamlAPIError) -> set[int] | None:
    """Positions of history entries a 422 answer says are no candidates; None when it says anything else."""
    if error.status != 422 or not isinstance(error.details, list) or not error.details:
        return None
    out = set()
    for d in error.details:
        loc = d.get("loc") if isinstance(d, Mapping) else None
        if not (isinstance(loc, list) and loc[:2] == ["body", "history"] and len(loc) >= 4 and loc[3] == "config"):
            return None
        out.add(int(loc[2]))
    return out


class Proposer:
    """Asks ``/v1/suggest`` for the next configuration of ``space`` on one task.

    Args:
        client: the client to ask with.
        task: the record's task part (None: accuracy).
        dataset: a dataset name or spec dict.
        space: the search space (as ``recommend`` takes it); the server enumerates its candidates with
            ``max_candidates``, ``samples_per_point`` and ``seed``, fixed for the whole search.
        source: the dataset source the server resolves ``dataset`` in.
        max_false_skip: the skip rule's budget per search (None: the server's default).

    Thread-safe: it keeps no state between calls.
    """

    def __init__(self, client: Client, task: Mapping[str, Any] | None, dataset: str | Mapping[str, Any],
                 space: Mapping[str, Any], *, source: str = "upload", max_false_skip: float | None = None,
                 max_candidates: int | None = None, samples_per_point: int | None = None, seed: int = 0) -> None:
        self.client = client
        self.task = dict(task) if task is not None else None
        self.dataset = dataset if isinstance(dataset, str) else dict(dataset)
        self.space = dict(space)
        self.source = source
        self.max_false_skip = max_false_skip
        self.enumeration = {k: v for k, v in {"max_candidates": max_candidates, "samples_per_point": samples_per_point,
                                              "seed": seed}.items() if v is not None}

    def history(self, evaluated: Sequence[Evaluated]) -> list[tuple[str, dict[str, Any]]]:
        """The request's history entries (with their parameters' keys) for ``evaluated``: each as its
        configuration in the space, the score when finite (else a failure), the runtime when known."""
        out = []
        for e in evaluated:
            score = e.score if e.score is not None and math.isfinite(e.score) else None
            item: dict[str, Any] = {"config": config_from_params(e.params, self.space), "score": score}
            if e.runtime_s is not None and math.isfinite(e.runtime_s) and e.runtime_s >= 0:
                item["runtime_s"] = float(e.runtime_s)
            out.append((params_key(e.params), item))
        return out

    def ask(self, evaluated: Sequence[Evaluated], k: int) -> tuple[SuggestResult, list[str]]:
        """The server's answer for ``k`` suggestions after ``evaluated``, and the keys of the evaluated parameters
        it did not count as candidates (a configuration outside its enumeration of the space: sampled by another
        sampler, enqueued by hand...): the request is sent again without them, asking for as many more suggestions
        (should the server propose them, the caller steps around them)."""
        entries = self.history(evaluated)
        unknown: list[str] = []
        while True:
            try:
                answer = self.client.suggest(self.task, self.dataset, space=self.space,
                                             history=[item for _, item in entries],
                                             k=max(1, min(MAX_K, k + len(unknown))),
                                             max_false_skip=self.max_false_skip, source=self.source,
                                             **self.enumeration)
                return answer, unknown
            except MetamlAPIError as e:
                rejected = _history_rejects(e)
                if not rejected:
                    raise
                unknown += [key for j, (key, _) in enumerate(entries) if j in rejected]
                entries = [entry for j, entry in enumerate(entries) if j not in rejected]
                log.debug("metaml: %d evaluated configuration(s) are no candidates of the space; left out of the "
                          "history", len(rejected))

    def next(self, evaluated: Sequence[Evaluated], taken: Collection[str] = (), *, skip: int = 0,
             spare: int = 0) -> Pick:
        """The next parameters to evaluate.

        Args:
            evaluated: the search's finished evaluations.
            taken: keys (:func:`~metaml_client._space.params_key`) of parameters that must not be proposed: running,
                stopped early, claimed by a concurrent worker.
            skip: free suggestions to pass over first (left to concurrent workers that ask at the same time).
            spare: extra suggestions to ask for beyond what stepping around ``taken`` and ``skip`` needs.

        Returns:
            a :class:`Pick`; ``params`` None when the answer holds nothing free (the service is ``done``, or every
            suggestion is taken: ask again once a running evaluation finishes).
        """
        taken = set(taken)
        answer, unknown = self.ask(evaluated, len(taken) + skip + spare + 1)
        taken |= set(unknown)
        free = []
        for s in answer.suggestions:
            params = params_from_config(s.config, self.space)
            if params_key(params) not in taken:
                free.append((params, s))
        chosen = free[skip] if len(free) > skip else (free[-1] if free and not answer.done else None)
        if chosen is None:
            return Pick(None, None, answer.done, answer, unknown, free)
        rest = [f for f in free if f is not chosen]
        return Pick(chosen[0], chosen[1], False, answer, unknown, rest)


class LazyProposer:
    """A :class:`Proposer` built on first use from the server's URL and key: what a searcher that is pickled with its
    tuner's state holds (the client, with its connections, does not travel; each copy builds its own).

    Call it for the proposer. The arguments are those of :class:`Proposer`, with ``url``, ``api_key`` and
    ``timeout`` for the client."""

    def __init__(self, url: str, api_key: str | None, timeout: float, task: Mapping[str, Any] | None,
                 dataset: str | Mapping[str, Any], space: Mapping[str, Any], **options: Any) -> None:
        self.url, self.api_key, self.timeout = url, api_key, timeout
        self.args = (dict(task) if task is not None else None, dataset if isinstance(dataset, str) else dict(dataset),
                     dict(space))
        self.options = options
        self._proposer: Proposer | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_proposer": None}

    def __call__(self) -> Proposer:
        if self._proposer is None:
            client = Client(self.url, api_key=self.api_key, timeout=self.timeout)
            self._proposer = Proposer(client, *self.args, **self.options)
        return self._proposer
