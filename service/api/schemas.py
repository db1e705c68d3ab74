"""Request and answer models of the HTTP API. Runs are the collector's :class:`~collector.schema.RunRecord` itself;
dataset meta-features are its :class:`~collector.schema.DatasetMeta`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SkipValidation, field_validator, model_validator

from collector.schema import SOURCE_PATTERN, DatasetMeta, Hyperparameters, Method, Model, Name, RunRecord, Task

Label = str | int | float | bool | None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorInfo(_Model):
    code: str = Field(description="Stable machine-readable code, e.g. unauthorized, batch_too_large, query_refused.")
    message: str = Field(description="What went wrong, for a person.")
    details: Any = Field(None, description="Structured details (validation errors, limits), when any.")


class ErrorBody(_Model):
    """The body of every error answer."""

    error: ErrorInfo


class RecordStatus(_Model):
    """What happened to one uploaded record."""

    index: int = Field(description="Position of the item in the upload (0-based, in reading order).")
    locator: str = Field(description="Where it was: 'item 3' (JSON array), 'line 4' (NDJSON, files), 'row 2 ...'.")
    status: Literal["accepted", "duplicate", "rejected"]
    run_id: str | None = Field(None, description="The run's content-derived id (not for rejected records).")
    uri: str | None = Field(None, description="The uploaded file (or archive member) it came from.")
    field: str | None = Field(None, description="The first offending field of a rejected record.")
    reason: str | None = Field(None, description="Why it was rejected, or why it is a duplicate.")


class UploadResult(_Model):
    """Per-record statuses of an upload and their totals. Every accepted record is committed."""

    total: int
    accepted: int
    duplicates: int
    rejected: int
    uploader: str = Field(description="The API key name recorded as provenance.uploader.")
    source: str | None = Field(None, description="provenance.source of the records the key's upload names none "
                                                 "for: upload:<holder> (the only one a non-admin key's runs get).")
    records: list[RecordStatus]


class RunPage(_Model):
    """One page of runs in their nested record shape."""

    runs: list[RunRecord]
    count: int = Field(description="Runs on this page.")
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last page.")


class DescribeRequest(_Model):
    """A labelled text dataset, sent inline."""

    texts: list[str] = Field(min_length=1, description="One text per row.")
    labels: list[Label] | None = Field(None, description="One label per row (null entries are unlabelled rows).")
    text_pairs: list[str] | None = Field(None, description="Second text of each row, for sentence-pair datasets.")
    name: Name | None = Field(None, min_length=1, max_length=200,
                             description="Dataset name (canonicalized, e.g. SST-2 -> glue/sst2); needed to store.")
    store: bool = Field(False, description="Store the features under `name` in the knowledge base (write scope).")
    domain: Name | None = Field(None, max_length=100, description="news, reviews, social...; never guessed.")
    landmark_sample: int = Field(2000, ge=0, le=10_000, description="Rows of the TF-IDF landmark (0 skips it).")
    seed: int = Field(0, ge=0, le=2**31 - 1)


class DescribeResult(_Model):
    """Dataset meta-features, and whether they were stored."""

    name: str | None = Field(None, description="The canonical dataset name, when one was given.")
    n_rows: int
    meta: DatasetMeta
    stored: bool


class SqlRequest(_Model):
    """One read-only statement (SELECT / WITH / EXPLAIN) in DuckDB SQL over the tables runs, datasets, models."""

    query: str = Field(min_length=1, max_length=100_000)
    max_rows: int | None = Field(None, ge=1, description="At most this many rows (capped by the server's limit).")


class SqlColumn(_Model):
    name: str
    type: str = Field(description="Arrow type of the column.")


class SqlResult(_Model):
    """Rows of a query. Values are JSON: timestamps as ISO 8601, NaN and infinities as null, bytes as base64."""

    columns: list[SqlColumn]
    rows: list[list[Any]]
    row_count: int
    truncated: bool = Field(description="True when the query had more rows than were returned.")


class KbStats(_Model):
    """Counts of the knowledge base."""

    schema_version: str | None
    runs: int
    datasets: int
    models: int
    by_source: dict[str, int]
    by_task_type: dict[str, int]
    by_method: dict[str, int]
    by_model_family: dict[str, int]
    by_status: dict[str, int]
    coverage: dict[str, float]
    described_datasets: int
    registered_models: int


class Health(_Model):
    status: Literal["ok"]


class Readiness(_Model):
    status: Literal["ready", "unavailable"]
    reason: str | None = None
    model: Literal["loaded", "absent"] | None = Field(
        None, description="Whether a meta-model is loaded (the prediction endpoints answer 503 while it is absent).")
    model_version: int | None = Field(None, description="The registered version served, when one is.")


# -- the meta-learner: predict, recommend, decide, models ------------------------------------------------------------

#: Hyperparameters a search space may vary: those the meta-model reads (the runs table's ``hparams_*`` columns).
SEARCHABLE_HPARAMS: tuple[str, ...] = (
    "learning_rate", "batch_size", "epochs", "max_steps", "warmup_ratio", "warmup_steps", "weight_decay",
    "lr_scheduler", "optimizer", "max_seq_length", "dropout", "label_smoothing", "precision",
)


class DatasetSample(_Model):
    """Texts (and labels) of the new task's training data; its meta-features are computed from them."""

    texts: list[str] = Field(min_length=1, description="One text per row (a sample of the training split is enough).")
    labels: list[Label] | None = Field(None, description="One label per row (null entries are unlabelled rows).")
    text_pairs: list[str] | None = Field(None, description="Second text of each row, for sentence-pair datasets.")
    domain: Name | None = Field(None, max_length=100, description="news, reviews, social...; never guessed.")
    landmark_sample: int = Field(2000, ge=0, le=10_000, description="Rows of the TF-IDF landmark (0 skips it).")
    seed: int = Field(0, ge=0, le=2**31 - 1)


class DatasetSpec(_Model):
    """The new task's dataset: a name whose meta-features the knowledge base holds, explicit meta-features, or a
    sample of its texts and labels (at least one). Explicit `meta` fields win over a sample's, which win over the
    knowledge base's."""

    name: Name | None = Field(None, min_length=1, max_length=200,
                             description="Dataset name (canonicalized, e.g. SST-2 -> glue/sst2).")
    meta: DatasetMeta | None = Field(None, description="Meta-features, as `POST /v1/datasets/describe` returns them.")
    sample: DatasetSample | None = Field(None, description="Texts and labels to compute the meta-features from.")
    n_train_used: int | None = Field(None, ge=0, description="Training examples the runs will use (subsample).")
    examples_per_class: int | None = Field(None, ge=1, description="Few-shot regime: labelled examples per class.")

    @model_validator(mode="after")
    def _something_given(self) -> DatasetSpec:
        if self.name is None and self.meta is None and self.sample is None:
            raise ValueError("describe the dataset: give its `name` (known to the knowledge base), its `meta`, or a "
                             "`sample` of texts and labels")
        return self


def _default_task() -> Task:
    return Task(primary_metric="accuracy")


def _full() -> Method:
    return Method(name="full")


class Candidate(_Model):
    """One configuration to try, in the run record's own parts (validated and normalized as on ingest)."""

    model: Model
    method: Method = Field(default_factory=_full, description="Default: full fine-tuning.")
    hparams: Hyperparameters = Field(default_factory=Hyperparameters)


class _TaskRequest(_Model):
    task: Task = Field(default_factory=_default_task, description="Task type and primary metric (default accuracy).")
    dataset: DatasetSpec
    source: str = Field("upload", pattern=SOURCE_PATTERN, max_length=100,
                        description="Whose evaluation protocol the scores follow: a knowledge-base source "
                                    "(transfergraph, opda...) or `upload` (default) for a new task.")


#: A value of a columnar candidate field.
CandidateValue = str | int | float | bool | dict[str, Any] | None


class PredictRequest(_TaskRequest):
    """A task and a batch of candidate configurations to score."""

    candidates: list[Annotated[Candidate, SkipValidation]] | None = Field(
        None, min_length=1, description="The candidates as objects; at most the server's max_predict_candidates. "
                                        "Send these or `columns`. Validated as `Candidate`s once per distinct part "
                                        "when scored (`metaml.serving.object_candidates`).")
    columns: dict[str, list[CandidateValue]] | None = Field(
        None, max_length=64,
        description="The same candidates as one array per field, all of one length: `model.id` (required), other "
                    "`model.*` and `method.*` fields (`method.name` missing or null: full fine-tuning), "
                    "`hparams.*`; null where a candidate leaves a field unset. Each distinct value is validated once, "
                    "so large batches cost less than as objects. Send these or `candidates`.",
        examples=[{"model.id": ["roberta-base", "bert-base-uncased"], "method.name": ["lora", "full"],
                   "method.lora_r": [8, None], "hparams.learning_rate": [3e-4, 2e-5]}])
    support: int = Field(3, ge=0, le=20, description="Past runs shown per candidate (0: none).")
    outputs: list[Literal["rank_score", "runtime_s", "p_fail"]] = Field(
        default_factory=lambda: ["rank_score", "runtime_s", "p_fail"], max_length=3,
        description="Predictions to make besides the points and their interval (each runs its own model; those "
                    "left out are null in the answer and cost nothing).")

    @model_validator(mode="after")
    def _one_form(self) -> PredictRequest:
        if (self.candidates is None) == (self.columns is None):
            raise ValueError("send the candidates either as `candidates` (objects) or as `columns` (arrays), "
                             "one of the two")
        return self

    @property
    def n_candidates(self) -> int:
        if self.candidates is not None:
            return len(self.candidates)
        return max((len(v) for v in (self.columns or {}).values()), default=0)


class ServedModel(_Model):
    """The meta-model that answered."""

    version: int | None = Field(description="Registered version (null for a local artifact).")
    run_id: str | None
    source: Literal["registry", "path"]
    loaded_at: str
    created_at: str | None = None
    n_train_runs: int | None = None
    kb_snapshot: str | None = None
    interval_level: float = Field(description="Coverage of the predicted intervals (0.8: 80% intervals).")
    compiled_trees: bool = Field(False, description="Whether its trees run as compiled code (same answers, faster); "
                                                    "false while they compile after a load, or without the compiler.")


class TaskInfo(_Model):
    """The task as the model saw it."""

    dataset: str | None = Field(description="Canonical dataset name, when given.")
    meta_from: list[Literal["knowledge_base", "sample", "request"]] = Field(
        description="Where the meta-features came from, in increasing precedence.")
    meta: DatasetMeta


class SupportRun(_Model):
    """A past run by the same model and method, near the candidate (see docs/api.md for the rule)."""

    run_id: str
    dataset: str
    source: str
    metric: str
    score: float | None = Field(description="Its primary metric, normalized.")
    learning_rate: float | None
    batch_size: float | None
    epochs: float | None
    distance: float


class CandidatePrediction(_Model):
    """What the meta-model predicts for one candidate."""

    index: int = Field(description="Position of the candidate in the request.")
    points: float = Field(description="Predicted primary metric in points (100 x the normalized score).")
    score: float = Field(description="Predicted primary metric, normalized (points / 100).")
    points_lo: float = Field(description="Lower bound of the interval, in points.")
    points_hi: float = Field(description="Upper bound of the interval, in points.")
    rank_score: float | None = Field(description="Ranking view: higher is better within a task.")
    runtime_s: float | None = Field(description="Predicted training time in seconds (null without cost data).")
    p_fail: float | None = Field(description="Probability the run fails or diverges.")
    support: list[SupportRun]


class PredictResult(_Model):
    """Predictions for every candidate, in request order."""

    model: ServedModel
    model_ms: float = Field(description="Milliseconds spent featurizing and predicting (one vectorized call).")
    n_candidates: int
    task: TaskInfo
    predictions: list[CandidatePrediction]


class Range(_Model):
    """A numeric range sampled uniformly, or log-uniformly with `log`."""

    low: float = Field(allow_inf_nan=False)
    high: float = Field(allow_inf_nan=False)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) is below low ({self.low})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


HparamChoice = list[float | int | str] | Range


class SearchSpace(_Model):
    """Models x methods x hyperparameters. Lists are enumerated as a grid; ranges are sampled (seeded) for each
    grid point."""

    models: list[Model] = Field(min_length=1, max_length=1000)
    methods: list[Method] = Field(default_factory=lambda: [_full()], min_length=1, max_length=1000,
                                  description="Each with its own parameters, e.g. {name: lora, lora_r: 8}.")
    hparams: dict[str, HparamChoice] = Field(
        default_factory=dict, description="Hyperparameter -> a list of values or a range, e.g. "
        "{learning_rate: {low: 1e-5, high: 1e-3, log: true}, batch_size: [16, 32], epochs: [3, 5]}.")
    fixed: Hyperparameters = Field(default_factory=Hyperparameters,
                                   description="Hyperparameters every candidate gets (unless `hparams` varies them).")

    @field_validator("hparams")
    @classmethod
    def _known(cls, v: dict[str, HparamChoice]) -> dict[str, HparamChoice]:
        unknown = sorted(set(v) - set(SEARCHABLE_HPARAMS))
        if unknown:
            raise ValueError(f"unknown or unsearchable hyperparameter(s) {', '.join(unknown)}; searchable: "
                             f"{', '.join(SEARCHABLE_HPARAMS)}")
        for name, choice in v.items():
            if isinstance(choice, list) and not choice:
                raise ValueError(f"{name}: an empty list of values")
        return v


class RecommendRequest(_TaskRequest):
    """A task, a search space and a budget."""

    space: SearchSpace
    budget: int = Field(10, ge=1, le=1000, description="How many configurations to return, best first.")
    max_candidates: int = Field(2000, ge=1, description="Candidates enumerated from the space at most (capped by "
                                                        "the server's max_recommend_candidates).")
    samples_per_point: int = Field(16, ge=1, le=1000, description="Draws of the numeric ranges per grid point.")
    enqueue: int = Field(5, ge=0, le=100, description="Top configurations the Optuna / Ray Tune priors enqueue.")
    temperature: float = Field(1.0, gt=0, le=100, description="Softmax temperature of the priors (lower: sharper).")
    seed: int = Field(0, ge=0, le=2**31 - 1)


class RankedConfig(_Model):
    """One recommended configuration and its prediction."""

    rank: int
    config: Candidate
    points: float
    score: float
    points_lo: float
    points_hi: float
    runtime_s: float | None
    p_fail: float
    utility: float = Field(description="Ranking view discounted by the failure probability (what is ranked).")


class Priors(_Model):
    """Priors over each choice of the space, in the shapes three searchers take (from the same ranking)."""

    optuna: dict[str, Any] = Field(description="`enqueue_trials` (parameter dicts) and per-parameter distributions.")
    ray_tune: dict[str, Any] = Field(description="`points_to_evaluate` and a weighted `param_space`.")
    grammar: dict[str, Any] = Field(description="One distribution per production of a probabilistic grammar.")


class RecommendResult(_Model):
    """The configurations to try first and priors over the space."""

    model: ServedModel
    model_ms: float
    n_candidates: int = Field(description="Candidates enumerated and scored.")
    truncated: bool = Field(description="True when the grid was larger than max_candidates and was sampled.")
    task: TaskInfo
    params: dict[str, str] = Field(description="Search parameter -> what it sets (model, method, hparams.<name>).")
    ranked: list[RankedConfig]
    priors: Priors


class Evaluated(_Model):
    """A configuration already evaluated on the task, and what it scored."""

    config: Candidate
    score: float | None = Field(allow_inf_nan=False, description="In the request's `unit`; null for a failed run.")


class DecideRequest(_TaskRequest):
    """Evaluate or skip one candidate, given the best score so far."""

    candidate: Candidate
    incumbent: float = Field(allow_inf_nan=False, description="The best score so far on this task, in `unit`.")
    unit: Literal["points", "score"] = Field(
        description="Unit of `incumbent` and `tolerance`: `score` (normalized, e.g. 0.91) or `points` (91.0).")
    tolerance: float = Field(0.0, ge=0, allow_inf_nan=False,
                             description="Evaluate candidates that may come within this much of the incumbent.")
    incumbent_config: Candidate | None = Field(
        None, description="The incumbent's configuration: the comparison then uses within-task differences.")
    max_false_skip: float = Field(0.05, gt=0, lt=1, description="Skip only when P(beat) is below this.")
    history: list[Evaluated] = Field(
        default_factory=list, max_length=1000,
        description="Configurations already evaluated on this task (the incumbent's among them): with at least 3 "
                    "scored, the residuals are recalibrated to this task's bias and spread.")


class DecideResult(_Model):
    """The decision and the probability behind it (from metaml._decision.decide)."""

    model: ServedModel
    action: Literal["evaluate", "skip"]
    p_beat: float = Field(description="P(candidate > incumbent - tolerance) under calibrated residuals.")
    predicted_points: float
    predicted_score: float
    incumbent_points: float
    tolerance_points: float
    threshold: float
    stated_false_skip_rate: float = Field(description="Among skipped candidates, the share that would have won.")
    basis: str = Field(description="task-recalibrated (with `history`), within-task difference to the incumbent's "
                                   "configuration, or absolute prediction.")


class Trial(_Model):
    """A configuration already evaluated on the task: its score (null for a failed run) and training time."""

    config: Candidate
    score: float | None = Field(allow_inf_nan=False, description="In the request's `unit`; null for a failed run.")
    runtime_s: float | None = Field(None, ge=0, allow_inf_nan=False, description="Training time in seconds.")


class SuggestRequest(_TaskRequest):
    """A task, its candidates (a list, or a space enumerated as `/v1/recommend` does) and what was evaluated so far:
    which configurations to evaluate next. Stateless: send the whole history every time."""

    candidates: list[Candidate] | None = Field(None, min_length=1,
                                               description="The configurations to choose from (at most the server's "
                                                           "max_suggest_candidates). Give this or `space`.")
    space: SearchSpace | None = Field(None, description="A space to enumerate the candidates from (as "
                                                        "/v1/recommend, with `max_candidates`, `samples_per_point` "
                                                        "and `seed`; keep them fixed during a search).")
    max_candidates: int = Field(2000, ge=1, description="Candidates enumerated from `space` at most.")
    samples_per_point: int = Field(16, ge=1, le=1000, description="Draws of the space's ranges per grid point.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the space's enumeration.")
    history: list[Trial] = Field(default_factory=list, max_length=10_000,
                                 description="Every configuration evaluated so far on this task (each must be one "
                                             "of the candidates).")
    unit: Literal["points", "score"] = Field("score", description="Unit of the history's scores.")
    k: int = Field(1, ge=1, le=100, description="How many configurations to propose.")
    max_false_skip: float = Field(0.05, ge=0, lt=1,
                                  description="Per-search budget of the skip rule: candidates whose summed probability "
                                              "of beating the best so far stays within it are never proposed (0: "
                                              "skip nothing).")

    @model_validator(mode="after")
    def _one_candidate_source(self) -> SuggestRequest:
        if (self.candidates is None) == (self.space is None):
            raise ValueError("give the candidates either as `candidates` (a list) or as a `space`, not both")
        return self


class SuggestionItem(_Model):
    """One proposed configuration and why."""

    index: int = Field(description="Its position among the candidates (the request's list, or the enumerated space).")
    config: Candidate
    points: float = Field(description="The meta-model's predicted primary metric, in points.")
    points_lo: float
    points_hi: float
    belief_points: float = Field(description="The engine's expected score after learning from the history (points).")
    belief_sd: float = Field(description="The spread of one evaluation around it (points).")
    p_beat: float = Field(description="Probability it beats the best score so far (or the best prediction).")
    expected_improvement: float = Field(description="Expected improvement over the best so far, in points.")
    acquisition: float = Field(description="Expected improvement x (1 - p_fail) / runtime^cost_exponent: what is "
                                           "maximized.")
    runtime_s: float | None = Field(description="Predicted training time, rescaled by the history's runtimes.")
    p_fail: float = Field(description="Failure probability, updated with the history's failures.")


class SuggestResult(_Model):
    """What to evaluate next."""

    model: ServedModel
    model_ms: float = Field(description="Milliseconds spent predicting the candidates and choosing.")
    n_candidates: int
    truncated: bool = Field(description="True when a space's grid was larger than max_candidates and was sampled.")
    task: TaskInfo
    suggestions: list[SuggestionItem] = Field(description="Best first; empty when nothing is left to propose.")
    excluded: list[int] = Field(description="Candidates the skip rule excludes now (never proposed while excluded).")
    skip_budget_spent: float = Field(description="Their summed probability of beating the best so far.")
    done: bool = Field(description="True when every remaining candidate is evaluated or excluded: stop the search.")
    basis: dict[str, Any] = Field(description="What the belief rests on: mechanism (experts' prior, meta-model, "
                                              "experts, +gp), history size, past tasks weighed and the heaviest ones.")

# -- stopping a run from its partial learning curve ---------------------------------------------------------------


class CurveValue(_Model):
    """One evaluation of the run's primary metric: at a training step, an epoch, or both."""

    step: int | None = Field(None, ge=0, description="Training step of the evaluation.")
    epoch: float | None = Field(None, ge=0, allow_inf_nan=False, description="Epoch of the evaluation.")
    value: float = Field(ge=-1e4, le=1e4, description="The primary metric, in the request's `unit`.")

    @model_validator(mode="after")
    def _placed(self) -> CurveValue:
        if self.step is None and self.epoch is None:
            raise ValueError("give the evaluation's `step` or `epoch`")
        return self


class LearningCurve(_Model):
    """A run's evaluations of its primary metric, and how long it is planned to train (the progress axis: steps
    when every point has one, else epochs)."""

    points: list[CurveValue] = Field(min_length=1, max_length=10_000)
    total_steps: int | None = Field(None, gt=0, description="Planned training steps (max_steps).")
    total_epochs: float | None = Field(None, gt=0, allow_inf_nan=False, description="Planned epochs.")

    @model_validator(mode="after")
    def _axis(self) -> LearningCurve:
        if not all(p.step is not None for p in self.points) and not all(p.epoch is not None for p in self.points):
            raise ValueError("every point needs a `step`, or every point an `epoch`")
        return self


class FinishedRun(_Model):
    """A run of the same search that trained to the end: its whole curve and final score."""

    curve: LearningCurve = Field(description="Its evaluations; without a planned total, its last point is its end.")
    score: float = Field(ge=-1e4, le=1e4, description="Its final score, in the request's `unit`.")
    config: Candidate | None = Field(None, description="Its configuration (used when the curve model reads the "
                                                       "meta-model's prior).")


class CurveDecideRequest(_TaskRequest):
    """Continue or stop a training run, from its partial learning curve and the best final score so far."""

    curve: LearningCurve = Field(description="The run's evaluations so far, with its planned total steps (when the "
                                             "points have steps) or epochs.")
    incumbent: float = Field(ge=-1e4, le=1e4, description="The best final score so far on this task, in `unit`.")
    unit: Literal["points", "score"] = Field(
        "score", description="Unit of the curve values, scores, `incumbent` and `tolerance`: `score` (normalized, "
                             "e.g. 0.91) or `points` (91.0).")
    config: Candidate | None = Field(None, description="The run's configuration (the meta-model's prior for it is "
                                                       "read when the curve model uses priors).")
    tolerance: float = Field(0.0, ge=0, le=1e4,
                             description="Continue only runs that may finish this much above the incumbent.")
    history: list[FinishedRun] = Field(
        default_factory=list, max_length=500,
        description="Runs of this search that trained to the end: features, and (from 2) the recalibration of the "
                    "error distribution to this task.")
    max_false_stop: float = Field(0.05, gt=0, lt=1, description="Stop only when P(final > incumbent + tolerance) "
                                                                "is below this: the stated error rate.")
    min_progress: float = Field(0.0, ge=0, le=1, description="Never stop before this share of the planned training.")
    min_history: int = Field(1, ge=0, le=1000, description="Never stop while fewer runs have finished.")

    @model_validator(mode="after")
    def _planned(self) -> CurveDecideRequest:
        by_step = all(p.step is not None for p in self.curve.points)
        if by_step and self.curve.total_steps is None and self.curve.total_epochs is None:
            raise ValueError("curve: give the run's planned `total_steps` (or `total_epochs` with epochs on every "
                             "point): progress is measured against the plan")
        if not by_step and self.curve.total_epochs is None:
            raise ValueError("curve: give the run's planned `total_epochs`: progress is measured against the plan")
        return self


class CurveModelInfo(_Model):
    """The curve estimator that answered (trained with the served meta-model)."""

    n_train_rows: int = Field(description="Curve cuts (run x progress level) it learned from.")
    n_train_datasets: int
    calibration: str = Field(description="How its error distribution was calibrated.")
    uses_prior: bool = Field(description="Whether it reads the meta-model's prior for the configuration.")
    interval_level: float = Field(description="Coverage of the interval (0.8: 80%).")


class CurveDecideResult(_Model):
    """The decision and the probability behind it (from metaml._curves.decide_curve)."""

    model: ServedModel
    curve_model: CurveModelInfo
    action: Literal["continue", "stop"]
    p_above: float = Field(description="P(the run's final score > incumbent + tolerance).")
    predicted_points: float = Field(description="The run's predicted final score, in points (median).")
    predicted_score: float
    points_lo: float = Field(description="Lower end of the interval of its final score, in points.")
    points_hi: float
    incumbent_points: float
    tolerance_points: float
    progress: float = Field(description="Share of its planned training the run has done.")
    n_history: int = Field(description="Finished runs the answer used.")
    threshold: float
    stated_error_rate: float = Field(description="Per decision, the chance of stopping a run that would have "
                                                 "finished above the incumbent + tolerance.")
    basis: str


class ModelVersion(_Model):
    """One registered version of the meta-model."""

    version: int
    run_id: str | None
    created_at: str | None
    aliases: list[str]
    status: str | None
    kb_snapshot: str | None
    metrics: dict[str, float] = Field(description="Key evaluation metrics logged with it.")
    loaded: bool = Field(description="This server process serves it.")


class ModelList(_Model):
    """The registered versions and the served model."""

    registered_name: str
    loaded: ServedModel | None
    versions: list[ModelVersion]


class PromoteResult(_Model):
    """The promoted version, now served by this process."""

    version: int
    aliases: list[str]
    loaded: ServedModel
    previous: ServedModel | None
