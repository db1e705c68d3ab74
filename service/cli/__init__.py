"""The ``metaml`` command: every command of the project under one root, in the outer layer (the libraries
``collector`` and ``metaml`` have no command line of their own).

``main(argv)`` returns the exit code instead of exiting, so it can be called from tests and scripts; usage errors
exit with 1, like every other error (the codes are in :mod:`service.cli._common`). ``python -m service.cli`` runs it.

Modules: :mod:`.collect` (ingest, formats, kb), :mod:`.harvest`, :mod:`.describe`, :mod:`.learn` (evaluate, train),
:mod:`.models`, :mod:`.bench`, :mod:`.serve`, :mod:`.keys`, :mod:`.quickstart`.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from service.cli._common import ExitCode
from service.cli.bench import bench
from service.cli.collect import COMMANDS as COLLECTOR_COMMANDS
from service.cli.describe import describe
from service.cli.harvest import harvest
from service.cli.keys import keys
from service.cli.learn import COMMANDS as METAML_COMMANDS
from service.cli.models import models
from service.cli.quickstart import quickstart
from service.cli.serve import serve


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


__all__ = ["cli", "main"]
