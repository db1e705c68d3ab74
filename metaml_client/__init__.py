"""A standalone client of the metaml HTTP API (httpx and the standard library only).

```python
from metaml_client import Client

with Client("http://127.0.0.1:8000", api_key="mk_...") as c:
    rec = c.recommend(None, "glue/sst2", {"models": [{"id": "roberta-base"}]}, budget=5)
```

Integrations, each importing its framework (this package itself does not): ``metaml_client.optuna`` (a sampler
that asks ``/v1/suggest``, warm start, skipping unpromising trials, reporting runs back), ``metaml_client.ray_tune``
(a searcher over ``/v1/suggest``, warm start, skipping, reporting back) and ``metaml_client.syne_tune`` (a searcher
over ``/v1/suggest`` for Syne Tune's FIFO and ASHA / Hyperband schedulers). The Hugging Face
``Trainer`` callback that records each run is ``collector.trainer_callback`` (it builds records with the collector
and posts them with a ``Client``).
"""

from metaml_client._client import (
    AsyncClient,
    Client,
    CurveDecision,
    Decision,
    DescribeResult,
    Health,
    MetamlAPIError,
    ModelList,
    ModelVersion,
    Prediction,
    PredictResult,
    PromoteResult,
    RankedConfig,
    Recommendation,
    RecordStatus,
    RunPage,
    SqlResult,
    Suggestion,
    SuggestResult,
    UploadResult,
    as_columns,
)

__all__ = [
    "AsyncClient",
    "Client",
    "CurveDecision",
    "Decision",
    "DescribeResult",
    "Health",
    "MetamlAPIError",
    "ModelList",
    "ModelVersion",
    "PredictResult",
    "Prediction",
    "PromoteResult",
    "RankedConfig",
    "Recommendation",
    "RecordStatus",
    "RunPage",
    "SqlResult",
    "SuggestResult",
    "Suggestion",
    "UploadResult",
    "as_columns",
]
