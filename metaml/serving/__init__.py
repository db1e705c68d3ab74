"""What the service needs from the meta-learner besides the model itself, as a library: candidate rows from
configurations and search spaces, the knowledge base's snapshot (dataset meta-features, the past runs that support a
prediction), and the search engine's proposals for a task."""

from metaml._features import PairCodes
from metaml._similarity import DATASET_SIMILARITY
from metaml.serving._candidates import (
    HPARAM_COLUMNS,
    PAIR_ROWS,
    CandidateColumns,
    PairRows,
    SpaceCandidates,
    as_frame,
    assemble,
    candidate_columns,
    candidate_rows,
    columnar_candidates,
    enumerate_space,
    method_config,
    method_label,
    model_registry,
    object_candidates,
    parse_candidates,
    task_row,
)
from metaml.serving._knowledge import (
    MAX_PAIR_RUNS,
    KnowledgeIndex,
    KnowledgeSnapshot,
    SampleFeatures,
    load_snapshot,
)

__all__ = [
    "DATASET_SIMILARITY",
    "HPARAM_COLUMNS",
    "MAX_PAIR_RUNS",
    "PAIR_ROWS",
    "CandidateColumns",
    "KnowledgeIndex",
    "KnowledgeSnapshot",
    "PairCodes",
    "PairRows",
    "SampleFeatures",
    "SpaceCandidates",
    "as_frame",
    "assemble",
    "candidate_columns",
    "candidate_rows",
    "columnar_candidates",
    "enumerate_space",
    "load_snapshot",
    "method_config",
    "method_label",
    "model_registry",
    "object_candidates",
    "parse_candidates",
    "task_row",
]
