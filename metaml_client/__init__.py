"""A standalone client of the metaml HTTP API (httpx and the standard library only).

```python
from metaml_client import Client

with Client("http://127.0.0.1:8000", api_key="mk_...") as c:
    rec = c.recommend(None, "glue/sst2", {"models": [{"id": "roberta-base"}]}, budget=5)
```

Optuna helpers (warm start, skipping unpromising trials, reporting runs back) are in ``metaml_client.optuna``, which
imports optuna; this package itself does not.
"""

from metaml_client._client import (
    AsyncClient,
    Client,
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
    UploadResult,
)

__all__ = [
    "AsyncClient",
    "Client",
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
    "UploadResult",
]
