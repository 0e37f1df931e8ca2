"""Click commands of the training package: ``audit``, ``train`` and ``evaluate``.

They parse arguments and delegate to plain functions; TensorFlow is imported only inside them,
so ``dermscreen --help`` stays fast.
"""

from __future__ import annotations

import json

import click


def _progress(label: str):
    def report(done: int, total: int) -> None:
        click.echo(f"{label}: {done}/{total}", err=True)
    return report


@click.command()
@click.argument("datasets", nargs=-1, required=True)
@click.option("--split", default=None, help="Keep only this split of each dataset (e.g. test).")
@click.option("--reference", type=click.Path(exists=True, dir_okay=False),
              help="Reference label CSV (image_id, label) to compare labels with.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the report.")
def audit(datasets, split, reference, as_json):
    """Audit labelled image sets: duplicates, label conflicts, split leaks, near-duplicates.

        dermscreen audit ../shared/data/isic9 ../shared/data/extra/labels.csv \\
            --reference ../shared/data/reference_labels.csv --json
    """
    from dermscreen.training.audit import format_report, read_reference, run_audit
    from dermscreen.training.datasets import read_datasets

    records = read_datasets(datasets, split)
    result = run_audit(records, read_reference(reference) if reference else None,
                       progress=None if as_json else _progress("hashing"))
    click.echo(json.dumps(result, indent=2) if as_json else format_report(result))
