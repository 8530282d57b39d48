"""Bad input: each case ends with a clear message, exit code 2 (permanent) and no
artifact or temporary folder left behind; the CLI prints the result as its last line."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bertops.api.dataset import Split
from bertops.api.results import PrepareDetails
from bertops.api.steps import ExitCode, StepResult
from bertops.trainer import run_step
from bertops.trainer.prepare import split_indices
from tests.trainer.conftest import prepare_spec, train_spec, tweet_slice


def assert_bad_input(result: StepResult, output: Path, pattern: str) -> None:
    assert not result.succeeded
    assert result.exit_code == ExitCode.BAD_INPUT
    assert result.reason == "InvalidInput"
    assert re.search(pattern, result.message), result.message
    assert not output.exists()
    leftovers = [p.name for p in output.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.fixture
def tweets(corpus: pd.DataFrame) -> pd.DataFrame:
    return tweet_slice(corpus, 20)


def test_missing_file(minilm: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_step(prepare_spec(tmp_path / "nowhere.csv", out))
    assert_bad_input(result, out, r"data source .*nowhere\.csv does not exist")


def test_missing_columns(tweets: pd.DataFrame, minilm: Path, tmp_path: Path) -> None:
    source = tmp_path / "t.csv"
    tweets.rename(columns={"text": "tweet"}).to_csv(source, index=False)
    out = tmp_path / "out"
    result = run_step(prepare_spec(source, out))
    assert_bad_input(result, out, r"column\(s\) text not found \(columns: tweet, label\)")
    fixed = run_step(prepare_spec(source, out, source={"textColumn": "tweet"}))
    assert fixed.succeeded, fixed.message


def test_empty_after_cleaning(tweets: pd.DataFrame, minilm: Path, tmp_path: Path) -> None:
    source = tmp_path / "t.jsonl"
    tweets.to_json(source, orient="records", lines=True)
    out = tmp_path / "out"
    result = run_step(prepare_spec(source, out, cleaning={"minChars": 5000, "maxChars": 9000}))
    assert_bad_input(result, out, r"no rows left after cleaning .*tooShort=60")


def test_split_leaving_a_class_empty(tweets: pd.DataFrame, minilm: Path, tmp_path: Path) -> None:
    source = tmp_path / "t.csv"
    rare = pd.DataFrame({"text": ["spam one here", "spam two here"], "label": ["spam"] * 2})
    pd.concat([tweets, rare]).to_csv(source, index=False)
    out = tmp_path / "out"
    result = run_step(prepare_spec(source, out))
    assert_bad_input(result, out, r"class 'spam' has 2 row\(s\).*would leave it empty")


def test_label_in_test_not_in_train(tweets: pd.DataFrame, minilm: Path, tmp_path: Path) -> None:
    frame = pd.concat(
        [tweets, pd.DataFrame({"text": ["a lonely spam row"], "label": ["spam"]})],
        ignore_index=True,
    )
    labels = frame["label"].tolist()
    # A seed whose unstratified split puts the only 'spam' row into test.
    seed = next(
        seed
        for seed in range(200)
        if len(frame) - 1
        in split_indices(
            labels, Split(train=0.7, validation=0.15, test=0.15, stratify=False, seed=seed)
        )["test"]
    )
    source = tmp_path / "t.csv"
    frame.to_csv(source, index=False)
    out = tmp_path / "out"
    result = run_step(prepare_spec(source, out, split={"stratify": False, "seed": seed}))
    assert_bad_input(result, out, r"label\(s\) 'spam' in test but not in train")


def test_non_utf8_bytes_follow_encoding_errors(
    tweets: pd.DataFrame, minilm: Path, tmp_path: Path
) -> None:
    source = tmp_path / "t.csv"
    frame = tweets.copy()
    frame.loc[:2, "text"] = frame.loc[:2, "text"] + " MARK"
    data = frame.to_csv(index=False).encode()
    source.write_bytes(data.replace(b"MARK", b"caf\xe9 \xff"))  # latin-1 bytes in 3 rows
    out = tmp_path / "out"
    strict = run_step(prepare_spec(source, out))
    assert_bad_input(
        result=strict,
        output=out,
        pattern=r"bytes e9 20 ff .. at offset \d+ are not valid utf-8.*encodingErrors",
    )
    replaced = run_step(prepare_spec(source, out, source={"encodingErrors": "replace"}))
    assert replaced.succeeded, replaced.message
    assert isinstance(replaced.details, PrepareDetails)
    assert replaced.details.invalid_byte_sequences == 6
    ignored = run_step(prepare_spec(source, tmp_path / "out2", source={"encodingErrors": "ignore"}))
    assert ignored.succeeded, ignored.message
    latin = run_step(prepare_spec(source, tmp_path / "out3", source={"encoding": "latin-1"}))
    assert latin.succeeded
    assert isinstance(latin.details, PrepareDetails)
    assert latin.details.invalid_byte_sequences == 0


def test_base_model_folder_without_weights(prepared: Path, minilm: Path, tmp_path: Path) -> None:
    folder = tmp_path / "no-weights"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "vocab.txt"):
        shutil.copy(minilm / name, folder / name)
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    spec = train_spec(prepared, tmp_path / "model")
    spec["training"]["baseModel"] = {"path": str(folder)}
    result = run_step(spec)
    assert_bad_input(
        result,
        tmp_path / "model",
        r"no model\.safetensors weights \(found pytorch_model\.bin: pickle",
    )
    assert not (tmp_path / "model.ckpt").exists()


def test_invalid_spec_is_bad_input(tmp_path: Path) -> None:
    result = run_step(
        {
            "kind": "prepare",
            "name": "x",
            "outputUri": str(tmp_path / "o"),
            "dataset": {"source": {"uri": "a.csv"}, "tokenizer": {}, "split": {"train": 2}},
        }
    )
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "dataset.split.train: Input should be less than 1" in result.message


@pytest.mark.slow
def test_cli_exit_code_and_last_line(tweets: pd.DataFrame, minilm: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    spec = prepare_spec(tmp_path / "missing.parquet", out)
    spec["resultUri"] = str(tmp_path / "result.json")
    proc = subprocess.run(
        [sys.executable, "-m", "bertops.trainer.cli", "prepare", "--spec", "-"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["succeeded"] is False and last["exitCode"] == 2
    assert "missing.parquet does not exist" in last["message"]
    assert json.loads((tmp_path / "result.json").read_text()) == last
    assert not out.exists()
    missing_spec = subprocess.run(
        [sys.executable, "-m", "bertops.trainer.cli", "train", "--spec", str(tmp_path / "no.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert missing_spec.returncode == ExitCode.BAD_INPUT
    assert "cannot read step spec" in json.loads(missing_spec.stdout.splitlines()[-1])["message"]


def test_cli_module_does_not_import_torch() -> None:
    code = (
        "import sys, bertops.trainer.cli, bertops.trainer; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_result_goes_to_the_termination_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Kubernetes the Job sets BERTOPS_TERMINATION_LOG; the operator reads it back."""
    from bertops.api.steps import StepResult
    from bertops.trainer import run_step

    log = tmp_path / "termination-log"
    monkeypatch.setenv("BERTOPS_TERMINATION_LOG", str(log))
    spec = {
        "kind": "prepare",
        "name": "missing",
        "outputUri": str(tmp_path / "out"),
        "dataset": {
            "source": {"uri": str(tmp_path / "nope.csv")},
            "tokenizer": {"trainWordPiece": {}},
        },
    }
    result = run_step(spec)
    assert result.exit_code == 2
    written = StepResult.model_validate_json(log.read_text())
    assert (written.succeeded, written.exit_code, written.name) == (False, 2, "missing")
