"""The ``metaml`` command: every layer's commands under one root.

``main(argv)`` returns the exit code instead of exiting, so it can be called from tests and scripts; usage errors
exit with 1, like every other error (see ``collector.cli`` for the codes).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from collector.cli import COMMANDS as COLLECTOR_COMMANDS
from collector.cli import ExitCode
from collector.features._describe_cli import describe
from collector.importers._harvest_cli import harvest
from metaml._bench_cli import bench
from metaml._models_cli import models
from metaml.cli import COMMANDS as METAML_COMMANDS
from service.keys_cli import keys
from service.quickstart import quickstart
from service.serve_cli import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="metaml")
def cli() -> None:
    """metaml: a knowledge base of fine-tuning runs, and the meta-learner that predicts new ones.

    \b
    Start:    metaml quickstart          build the knowledge base, train and promote a model, serve the API
    Collect:  metaml ingest PATH         read logs (Trainer output, MLflow, CSV/JSONL/Parquet, public meta-datasets)
              metaml formats             list the formats ingest reads
              metaml harvest hub         fetch Hub model cards (resumable) and ingest their runs
              metaml describe PATH       dataset meta-features of a text dataset (CSV/JSONL/Parquet/HF folder)
    Inspect:  metaml kb stats | sql | export | import | schema | compact
    Learn:    metaml evaluate --protocol lodo|lomo|lofo|loso|gkfold   report against the baselines
              metaml train                 fit, save and register a meta-model version; metaml models list|promote
              metaml bench automl          replay AutoML searches on held-out tasks: compute saved by the knowledge
    Serve:    metaml serve                 the HTTP API (docs/api.md); metaml keys create|list|revoke
    Set METAML_KB (or pass --kb) to choose the knowledge base: a DuckDB file (default ./metaml-data/kb.duckdb) or
    a lakehouse 'ducklake:postgres:dbname=DB host=HOST ... data=DIR' (docs/lakehouse.md).
    """


for _command in [*COLLECTOR_COMMANDS, harvest, describe, *METAML_COMMANDS, models, bench, serve, keys, quickstart]:
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``) and return its exit code."""
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="metaml", standalone_mode=False)
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.UsageError as e:
        e.show()
        return int(ExitCode.ERROR)
    except click.Abort:
        click.echo("aborted", err=True)
        return int(ExitCode.ERROR)
    except click.ClickException as e:
        e.show()
        return int(ExitCode.ERROR)
    return rv if isinstance(rv, int) else int(ExitCode.OK)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
