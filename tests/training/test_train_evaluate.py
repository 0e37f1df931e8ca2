"""A tiny ``dermscreen train`` run end to end, then ``dermscreen evaluate`` on its bundle."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from dermscreen.bundle import load_bundle, validate_bundle
from dermscreen.training.commands import compare, evaluate, train
from tests.factories import make_tiny_bundle
from tests.training.conftest import recolour, write_image

TINY = ["image_size=32", "epochs=2", "steps_per_epoch=2", "batch_size=4", "reference=",
        "val_fraction=0.34", "data_split=train"]


def run_train(dataset, output, *extra, resume=False):
    args = ["--resume"] if resume else []
    for item in [f"data=[{dataset}]", f"output={output}", *TINY, *extra]:
        args += ["--set", item]
    return CliRunner().invoke(train, args, catch_exceptions=False)


def test_resume_continues_from_the_checkpoint(folder_dataset, tmp_path):
    output = tmp_path / "resumed"
    assert run_train(folder_dataset, output).exit_code == 0
    first = json.loads((output / "checkpoints" / "state.json").read_text())
    result = run_train(folder_dataset, output, "epochs=3", resume=True)
    assert "resuming from epoch 2" in result.output
    state = json.loads((output / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 3
    assert state["history"]["loss"][:2] == first["history"]["loss"]
    assert len(state["history"]["loss"]) == 3
    with pytest.raises(ValueError, match="config differs"):
        run_train(folder_dataset, output, "epochs=4", "learning_rate=0.1", resume=True)


def test_train_then_evaluate(folder_dataset, csv_dataset, tmp_path):
    run = tmp_path / "run"
    result = run_train(folder_dataset, run)
    assert result.exit_code == 0, result.output
    bundle = load_bundle(run / "bundle")
    validate_bundle(bundle)
    assert bundle.metadata["training"]["image_size"] == 32
    assert bundle.metadata["training_data"]["ids_count"] == 12
    assert bundle.metadata["metrics"]["validation"]["n"] > 0
    assert 0 < bundle.threshold < 1 and bundle.temperature > 0
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 2 and state["config"]["epochs"] == 2
    assert (run / "training_curves.png").stat().st_size > 0
    # the bundle holds no optimizer slots (Adam's two per weight sit in the checkpoint only)
    bundle_bytes = (run / "bundle" / "model.keras").stat().st_size
    assert bundle_bytes < 0.5 * (run / "checkpoints" / "last.keras").stat().st_size
    with warnings.catch_warnings():  # serving calls the model with a bare array, no warning
        warnings.simplefilter("error")
        assert bundle.predict(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 9)
    assert (run / "bundle" / "README.md").read_text().startswith("# Model card")

    # a recoloured copy of a training image under a new id must be dropped as a near-duplicate
    source = folder_dataset / "Train" / "melanoma" / "Train_mel_0.jpg"
    write_image(folder_dataset / "Test" / "melanoma" / "copy_of_mel_0.jpg",
                image=recolour(Image.open(source).convert("RGB")))
    out = CliRunner().invoke(evaluate, ["--model", str(run / "bundle"), "--data",
                                        str(folder_dataset), "--json", "--report", str(tmp_path / "rep")])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["dropped_training_ids"] == 12 and result["dropped_near_duplicates"] == 1
    assert result["n"] == 4 and result["melanomas"] == 2
    for key in ("melanoma_auc", "sensitivity", "specificity", "balanced_accuracy", "ece"):
        assert key in result
    for key in ("sensitivity", "specificity"):  # 2 images each: intervals of Wilson's width
        low, high = result["ci95"][key]
        assert low <= result[key] <= high and high - low > 0.5
    report = (tmp_path / "rep" / "report.md").read_text()
    low, high = result["ci95"]["sensitivity"]
    assert f"| sensitivity | {result['sensitivity']:.4f} | {low:.3f}-{high:.3f} |" in report
    alert = result["tiers"]["alert"]
    assert f"| alert | {alert['threshold']:.4f} | {alert['sensitivity']:.3f} (" in report
    assert f"Stopped as unassessable before scoring: {result['gate']['stopped']} of {result['gate']['n']}" in report
    for figure in ("roc.png", "thresholds.png", "calibration.png", "confusion_matrix.png",
                   "training_curves.png"):
        assert figure in report and (tmp_path / "rep" / figure).exists()
    header = (tmp_path / "rep" / "predictions.csv").read_text().splitlines()[0]
    assert header == "image,AK,BCC,DF,MEL,NV,BKL,SK,SCC,VASC"

    # against a model that never saw these images: the same 4 images, each model's own AUC
    tiny = make_tiny_bundle(tmp_path / "tiny")
    out = CliRunner().invoke(compare, [str(run / "bundle"), str(tiny), "--data", str(folder_dataset), "--json"])
    assert out.exit_code == 0, out.output
    compared = json.loads(out.output)
    assert compared["n"] == 4 and compared["melanomas"] == 2
    assert compared["melanoma_auc"][0] == pytest.approx(result["melanoma_auc"])
    assert compared["difference"] == pytest.approx(compared["melanoma_auc"][0] - compared["melanoma_auc"][1])
    low, high = compared["difference_ci95"]
    assert low <= compared["difference"] <= high
    assert compared["by_collection"].keys() == {"seed9"}  # one collection: the class folder tree
    assert compared["by_collection"]["seed9"]["difference"] == pytest.approx(compared["difference"])
    assert compared["by_source"].keys() == {"seed9/seed9"}
    assert compared["within_source_mean_difference"] == pytest.approx(compared["difference"])
    itself = CliRunner().invoke(compare, [str(tiny), str(tiny), "--data", str(folder_dataset)])
    assert "all images (9 of 17 melanomas): " in itself.output  # the tiny bundle saw none
    assert "= +0.0000 (95% interval +0.0000 to +0.0000)" in itself.output

    # on the run's validation fold, which the run's own training ids list but it never trained on
    folds = pd.read_csv(run / "folds.csv", dtype=str, keep_default_na=False)
    out = CliRunner().invoke(compare, [str(run / "bundle"), str(tiny), "--validation", str(run), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["n"] == (folds["fold"] == "val").sum()
    both = CliRunner().invoke(compare, [str(run / "bundle"), str(tiny), "--validation", str(run),
                                        "--data", str(folder_dataset)])
    assert both.exit_code == 2 and "give either --data or --validation" in both.output

    csv_out = CliRunner().invoke(evaluate, ["--model", str(run / "bundle"), "--data",
                                            str(csv_dataset), "--split", "test", "--json",
                                            "--record", "extra-test"])
    assert csv_out.exit_code == 0, csv_out.output
    assert json.loads(csv_out.output)["n"] == 4
    recorded = load_bundle(run / "bundle")
    validate_bundle(recorded)
    assert recorded.metadata["metrics"]["extra-test"]["n"] == 4
    assert "[test]" in recorded.metadata["metrics"]["extra-test"]["data"]
    assert "[test]" in (run / "bundle" / "README.md").read_text()
