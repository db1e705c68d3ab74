"""Hugging Face: the Trainer's output directories (``hf_trainer``, TaskWeb), model cards from the Hub (``hf_cards``,
``hub_samples``), the harvester that fetches cards, and the one mapping of a Trainer run to the record that these
importers and :mod:`collector.trainer_callback` share.

* :mod:`~collector.importers.hf.card` — the one model-card parser (:func:`parse_card`), and the Trainer's card as a
  view over its parts (:class:`TrainerCard`);
* :mod:`~collector.importers.hf.run_mapping` — Trainer results, state and arguments -> record fields;
* :mod:`~collector.importers.hf.taskweb` — TaskWeb's tables and run names;
* :mod:`~collector.importers.hf.trainer_output` — the ``hf_trainer`` format (directories and archives of them);
* :mod:`~collector.importers.hf.model_cards` — the ``hf_cards`` and ``hub_samples`` formats;
* :mod:`~collector.importers.hf.harvest` — resumable download of Hub cards (``metaml harvest hub``).
"""

from collector.importers.hf.card import CardParts, TrainerCard, parse_card, parse_trainer_card
from collector.importers.hf.model_cards import CardContext, HubSamples, ModelCards, card_to_record
from collector.importers.hf.trainer_output import TrainerOutput

__all__ = [
    "CardContext",
    "CardParts",
    "HubSamples",
    "ModelCards",
    "TrainerCard",
    "TrainerOutput",
    "card_to_record",
    "parse_card",
    "parse_trainer_card",
]
