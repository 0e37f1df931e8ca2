import json
import shutil

from click.testing import CliRunner

from dermscreen.training.audit import read_reference, run_audit
from dermscreen.training.commands import audit
from dermscreen.training.datasets import read_datasets
from tests.factories import BLUE, RED
from tests.training.conftest import recolour, textured_image, write_image


def planted(tmp_path):
    """A folder dataset and a CSV dataset with one of each problem the audit must find."""
    root = tmp_path / "planted"
    train, test = root / "Train", root / "Test"
    for index in range(4):
        write_image(train / "melanoma" / f"M{index}.jpg", RED)
        write_image(train / "nevus" / f"N{index}.jpg", BLUE)
    write_image(test / "nevus" / "T0.jpg", BLUE)
    # the same id under two classes (an exact copy, too)
    shutil.copy(train / "melanoma" / "M0.jpg", train / "nevus" / "M0.jpg")
    # a split leak: a Train id also in Test
    shutil.copy(train / "nevus" / "N1.jpg", test / "nevus" / "N1.jpg")
    # an exact duplicate under another id
    shutil.copy(train / "nevus" / "N2.jpg", train / "nevus" / "N2copy.jpg")
    # an unreadable file
    (train / "nevus" / "broken.jpg").write_bytes(b"not a jpeg at all")
    # a recoloured, resized copy of M3 in another source
    extra = tmp_path / "extra"
    original = textured_image(RED, seed=4242)
    write_image(train / "melanoma" / "M9.jpg", image=original)
    write_image(extra / "images" / "E1.jpg", image=recolour(original))
    write_image(extra / "images" / "E2.jpg", RED)
    (extra / "labels.csv").write_text(
        "image_id,diagnosis,source,split\nE1,melanoma,other,test\nE2,melanoma,other,test\n")
    # the reference disagrees about one image
    reference = tmp_path / "reference.csv"
    reference.write_text("image_id,truth\nM1,melanoma\nM2,nevus\nE2,melanoma\n")
    return root, extra / "labels.csv", reference


def test_audit_finds_every_planted_problem(tmp_path):
    root, csv, reference = planted(tmp_path)
    result = run_audit(read_datasets([root, csv]), read_reference(reference))
    assert result["images"] == 16
    assert result["distinct_ids"] == 14
    assert result["ids_in_several_classes"] == 1
    assert result["details"]["ids_in_several_classes"][0]["image_id"] == "M0"
    assert result["split_leaks"] == 1
    assert result["details"]["split_leaks"][0]["image_id"] == "N1"
    # M0 x2, N1 x2, N2 + N2copy
    assert sorted(len(group) for group in result["details"]["exact_duplicate_groups"]) == [2, 2, 2]
    assert result["unreadable"] == 1
    assert result["reference_disagreements"] == 1
    assert result["details"]["reference_disagreements"][0]["image_id"] == "M2"
    # near-duplicates: N2/N2copy (exact) and the recoloured M9/E1 across sources, nothing else
    groups = sorted(group["image_ids"] for group in result["details"]["near_duplicate_groups"])
    assert groups == [["E1", "M9"], ["N2", "N2copy"]]
    assert result["near_duplicate_cross_source_groups"] == 1
    assert result["near_duplicate_split_leaks"] == 1  # M9 (train) ~ E1 (test)


def test_audit_command_json_and_text(tmp_path):
    root, csv, reference = planted(tmp_path)
    runner = CliRunner()
    out = runner.invoke(audit, [str(root), str(csv), "--reference", str(reference), "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    for key in ("images", "distinct_ids", "ids_in_several_classes", "split_leaks",
                "near_duplicate_groups", "unreadable", "reference_disagreements"):
        assert isinstance(result[key], int)
    text = runner.invoke(audit, [str(root)])
    assert text.exit_code == 0 and "ids in several classes" in text.output
    assert "(no --reference given)" in text.output


def test_hashes_are_cached_and_refreshed_when_a_file_changes(tmp_path, monkeypatch):
    from dermscreen.training import hashing

    first = write_image(tmp_path / "a.jpg", RED)
    second = write_image(tmp_path / "b.jpg", BLUE)
    hashed = hashing.hash_files([str(first), str(second)], cache_dir=tmp_path / "cache")
    calls = []
    real = hashing.hash_file
    monkeypatch.setattr(hashing, "hash_file", lambda path: calls.append(path) or real(path))
    again = hashing.hash_files([str(first), str(second)], cache_dir=tmp_path / "cache")
    assert calls == [] and again.equals(hashed)
    write_image(second, RED, seed=5)  # new content, new size or mtime
    hashing.hash_files([str(first), str(second)], cache_dir=tmp_path / "cache")
    assert calls == [str(second)]
