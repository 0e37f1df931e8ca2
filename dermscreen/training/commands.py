"""Click commands of the training package: ``audit``, ``train``, ``calibrate``, ``evaluate``,
``compare``, ``fit-gate`` and ``evaluate-gate``.

They parse arguments and delegate to plain functions; TensorFlow is imported only inside them,
so ``dermscreen --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from dermscreen.measured import span


def _progress(label: str):
    def report(done: int, total: int) -> None:
        click.echo(f"{label}: {done}/{total}", err=True)
    return report


def _data_label(dataset: str, split: str | None) -> str:
    """How reports name a dataset: its path, and the split in brackets when one was kept."""
    return f"{dataset}" + (f" [{split}]" if split else "")


@click.command()
@click.argument("datasets", nargs=-1, required=True)
@click.option("--split", default=None, help="Keep only this split of each dataset (e.g. test).")
@click.option("--reference", type=click.Path(exists=True, dir_okay=False),
              help="Reference label CSV (image_id, label) to compare labels with.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the report.")
def audit(datasets, split, reference, as_json):
    """Audit labelled image sets: duplicates, label conflicts, split leaks, near-duplicates.

    \b
        dermscreen audit ../shared/data/isic9 ../shared/data/extra/labels.csv \\
            --reference ../shared/data/reference_labels.csv --json
    """
    from dermscreen.training.audit import format_report, read_reference, run_audit
    from dermscreen.training.datasets import read_datasets

    records = read_datasets(datasets, split)
    result = run_audit(records, read_reference(reference) if reference else None,
                       progress=None if as_json else _progress("hashing"))
    click.echo(json.dumps(result, indent=2) if as_json else format_report(result))


@click.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="YAML preset (see dermscreen/training/presets/).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one config field; repeatable.")
@click.option("--resume", is_flag=True, help="Continue from the run folder's last checkpoint.")
def train(config_path, overrides, resume):
    """Train a model and export a bundle; the preset's ``trainer`` picks how.

    \b
        dermscreen train --config dermscreen/training/presets/seed-plain.yaml --set epochs=3
        dermscreen train --config dermscreen/training/presets/efficientnet_lite0.yaml --resume
    """
    import yaml

    from dermscreen.training.trainers import TRAINERS, resolve

    preset = (yaml.safe_load(Path(config_path).read_text()) or {}) if config_path else {}
    trainer = preset.get("trainer", "seed-cnn")
    if trainer not in TRAINERS:
        raise click.UsageError(f"unknown trainer {trainer!r}; known: {sorted(TRAINERS)}")
    load_config, run = resolve(TRAINERS[trainer].load_config), resolve(TRAINERS[trainer].run)
    bundle = run(load_config(config_path, list(overrides)), resume=resume,
                 log=lambda line: click.echo(line, err=True))
    click.echo(str(bundle))


@click.command()
@click.argument("model", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="New bundle folder.")
@click.option("--version", required=True, help="Version of the new bundle.")
@click.option("--changelog", required=True, help="Changelog line of the new bundle.")
def calibrate(model, out, version, changelog):
    """Copy a fine-tuned bundle and fit its operating point again (test-time views, temperature
    and class biases, alert threshold) on the validation fold of its own training config, then
    measure it on its test sets; the weights are unchanged.

    \b
        dermscreen calibrate dermscreen/bundles/default --out /tmp/b --version 1.3.1 \\
            --changelog "1.3.0 re-calibrated"
    """
    from dermscreen.training.backbone.finetune import recalibrate

    click.echo(str(recalibrate(model, out, version, changelog,
                               log=lambda line: click.echo(line, err=True))))


@click.command()
@click.option("--model", "model_path", type=click.Path(exists=True, file_okay=False),
              help="Bundle directory (default: the shipped default bundle).")
@click.option("--data", "dataset", required=True, help="Class folder or labels CSV.")
@click.option("--split", default=None, help="Keep only this split (e.g. test).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False),
              help="Write report.md, figures and ISIC-format predictions here.")
@click.option("--record", "record_as", metavar="NAME",
              help="Also store the metrics in the bundle's metadata and model card as NAME.")
def evaluate(model_path, dataset, split, as_json, report_dir, record_as):
    """Evaluate a bundle on a labelled dataset (training images are dropped first).

    \b
        dermscreen evaluate --model runs/seed-plain/bundle \\
            --data ../shared/data/extra/labels.csv --split test --json --report reports/plain-isic2017
    """
    from dermscreen.bundle import load_bundle
    from dermscreen.training.datasets import read_dataset
    from dermscreen.training.evaluate import evaluate as run_evaluation
    from dermscreen.training.evaluate import record_metrics
    from dermscreen.training.report import write_report

    bundle = load_bundle(model_path)
    records = read_dataset(dataset, split)
    data = _data_label(dataset, split)
    result, predictions = run_evaluation(bundle, records, data,
                                         progress=None if as_json else _progress("predicting"))
    if report_dir:
        result["report"] = str(write_report(report_dir, result, predictions, bundle))
    if record_as:
        record_metrics(bundle, record_as, result)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{result['model']['name']} {result['model']['version']} on {data}: "
               f"{result['n']} images ({result['dropped_training_ids']} dropped as training ids, "
               f"{result['dropped_near_duplicates']} as near-duplicates), {result['melanomas']} melanomas")
    for key in ("accuracy", "balanced_accuracy", "melanoma_auc", "threshold", "sensitivity",
                "specificity", "missed_melanomas", "ece"):
        interval = result["ci95"].get(key)
        click.echo(f"  {key:18s} {result[key]}" + (f"  (95% interval {span(interval)})" if interval else ""))
    gate = result["gate"]
    click.echo(f"  gate               stopped {gate['stopped']} of {gate['n']} ({span(gate['ci95'])}),"
               f" {gate['melanomas_stopped']} melanomas among them: {gate['by_reason']}")
    for name, tier in result["tiers"].items():
        click.echo(f"  {name + ' tier':18s} threshold {tier['threshold']:.4f}: sensitivity"
                   f" {tier['sensitivity']:.3f} ({span(tier['ci95']['sensitivity'])}), specificity"
                   f" {tier['specificity']:.3f} ({span(tier['ci95']['specificity'])}), per 1,000"
                   f" images {tier['per_1000_images']}")
    if report_dir:
        click.echo(f"  report             {result['report']}")


@click.command()
@click.argument("models", nargs=2, type=click.Path(exists=True, file_okay=False))
@click.option("--data", "dataset", help="Class folder or labels CSV.")
@click.option("--split", default=None, help="Keep only this split (e.g. test).")
@click.option("--validation", "run", type=click.Path(exists=True, file_okay=False),
              help="Compare on the validation fold of this training run (its folds.csv) instead.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def compare(models, dataset, split, run, as_json):
    """Compare two bundles' melanoma AUC on the same images (those neither was trained on, or a
    run's validation fold): the difference and its 95% interval, paired, over all images, within
    each image collection and within each source of a collection.

    \b
        dermscreen compare dermscreen/bundles/default RUN/bundle \\
            --data ../shared/data/extra/labels.csv --split test
        dermscreen compare dermscreen/bundles/default RUN/bundle --validation RUN
    """
    import pandas as pd

    from dermscreen.bundle import load_bundle
    from dermscreen.training.datasets import read_dataset
    from dermscreen.training.evaluate import compare as run_comparison

    if (dataset is None) == (run is None):
        raise click.UsageError("give either --data or --validation")
    if run:
        folds = pd.read_csv(Path(run) / "folds.csv", dtype=str, keep_default_na=False)
        records, data = folds[folds["fold"] == "val"].reset_index(drop=True), f"validation fold of {run}"
    else:
        records, data = read_dataset(dataset, split), _data_label(dataset, split)
    result = run_comparison(*(load_bundle(path) for path in models), records, data,
                            progress=None if as_json else _progress("predicting"), drop_training=not run)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    a, b = result["models"]
    click.echo(f"{data}: {result['n']} images, {result['melanomas']} melanomas; melanoma AUC {a} - {b}")
    for name, part in {"all images": result, **result["by_collection"], **result["by_source"]}.items():
        (auc_a, auc_b), (low, high) = part["melanoma_auc"], part["difference_ci95"]
        click.echo(f"  {name} ({part['melanomas']} of {part['n']} melanomas): {auc_a:.4f} - {auc_b:.4f}"
                   f" = {part['difference']:+.4f} (95% interval {low:+.4f} to {high:+.4f})")
    for kind in ("collection", "source"):
        if result[f"within_{kind}_mean_difference"] is not None:
            click.echo(f"  mean of the within-{kind} differences: {result[f'within_{kind}_mean_difference']:+.4f}")


@click.command("fit-gate")
@click.argument("model", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="New bundle folder.")
@click.option("--version", required=True, help="Version of the new bundle.")
@click.option("--ood", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of images that are not dermoscopy, with labels.csv (image_id, kind, group).")
def fit_gate(model, out, version, ood):
    """Copy a bundle, give its model a pooled-features output and fit its gate (quality checks
    and a dermoscopy detector) on its training images against OOD's; measure it on held-back
    groups.

    \b
        dermscreen fit-gate RUN/bundle --out /tmp/gated --version 2.0.0 --ood ../shared/data/ood
    """
    from dermscreen.training.gate import fit_gate as run_fit

    run_fit(model, out, version, ood, log=lambda line: click.echo(line, err=True))
    click.echo(str(out))


@click.command("evaluate-gate")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "model_path", type=click.Path(exists=True, file_okay=False),
              help="Bundle directory (default: the shipped default bundle).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate_gate(folder, model_path, as_json):
    """What the bundle's gate stops among the images in FOLDER (searched recursively): how many,
    their share with its 95% interval, and how many for each reason.

    \b
        dermscreen evaluate-gate ../shared/data/ood
    """
    from dermscreen.bundle import load_bundle
    from dermscreen.training.gate import gate_report

    result = gate_report(load_bundle(model_path), folder)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{result['model']} on {folder}: {result['stopped']} of {result['n']} images stopped"
               f" ({result['share']:.1%}, 95% interval {span(result['ci95'])}); {result['unreadable']}"
               f" unreadable")
    for reason, count in result["by_reason"].items():
        click.echo(f"  {count:6d}  {reason}")
