"""The compress step refuses an impossible recipe before any work starts: rules that hold
whatever the parent is fail parsing (the API's rules), rules that depend on the parent
(its heads and layers) are refused by the recipe planner before any weights load.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from bertops.api.steps import CompressStep
from tests.compress.conftest import compress_spec, manifest_of


# Rules that hold whatever the parent is are API rules (CEL + pydantic, bertops.api.model):
# the step spec does not even parse.
@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (
            [
                {"method": "quantize", "backend": "torch"},
                {"method": "magnitudePrune", "sparsity": 0.5},
            ],
            "nothing can follow quantize",
        ),
        (
            [{"method": "onnxExport"}, {"method": "headPrune", "headsToPrune": 1}],
            "must come before onnxExport",
        ),
        (
            [{"method": "onnxExport"}, {"method": "quantize", "backend": "torch"}],
            "quantized with backend onnxruntime",
        ),
        (
            [{"method": "headPrune", "headsToPrune": 1}, {"method": "distill", "studentLayers": 1}],
            "distill must come before headPrune",
        ),
        (
            [{"method": "quantize", "sparsity": 0.5}],
            "sparsity only applies to method magnitudePrune",
        ),
        ([{"method": "magnitudePrune"}], "magnitudePrune needs sparsity"),
        ([{"method": "headPrune"}], "headPrune needs headsToPrune"),
    ],
)
def test_recipe_breaking_an_api_rule_fails_parsing(
    steps: list[dict[str, Any]], expected: str, tmp_path: Path
) -> None:
    from bertops.trainer.errors import BadInputError
    from bertops.trainer.steps import parse_spec

    spec = compress_spec(tmp_path, tmp_path, tmp_path / "out", steps)
    with pytest.raises(BadInputError, match=expected):
        parse_spec(spec)


# Rules that depend on the parent (its heads and layers) are the recipe planner's.
@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([{"method": "headPrune", "headsToPrune": 3}], "at most 2 can be removed"),
        ([{"method": "distill", "studentLayers": 2}], "studentLayers must be between 1 and 1"),
    ],
)
def test_impossible_recipe_is_refused_before_work(
    steps: list[dict[str, Any]],
    expected: str,
    trained: tuple[Path, Any],
    prepared: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bertops.trainer.compress import artifact, run_compress
    from bertops.trainer.errors import BadInputError
    from bertops.trainer.progress import Progress

    def no_loading(*_: Any, **__: Any) -> Any:
        raise AssertionError("weights were loaded before the recipe was validated")

    monkeypatch.setattr(artifact, "load_torch", no_loading)
    spec = CompressStep.model_validate(compress_spec(trained[0], prepared, tmp_path / "out", steps))
    started = time.monotonic()
    with pytest.raises(BadInputError, match=expected) as error:
        run_compress(spec, Progress(bar=False))
    assert error.value.exit_code == 2
    # Generous on purpose: it only has to tell a refusal (no weights loaded, see
    # no_loading above) from a compression run (minutes), also on a loaded 2-core machine.
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "step",
    [
        {"method": "lowRankFactorize"},
        {"method": "magnitudePrune", "sparsity": 1.5},
        {"method": "headPrune", "headsToPrune": 0},
    ],
)
def test_unknown_method_or_target_fails_parsing(step: dict[str, Any], tmp_path: Path) -> None:
    from bertops.trainer.errors import BadInputError
    from bertops.trainer.steps import parse_spec

    spec = compress_spec(tmp_path, tmp_path, tmp_path / "out", [step])
    with pytest.raises(BadInputError, match="invalid step spec"):
        parse_spec(spec)


def test_plan_refuses_an_unknown_method_that_bypassed_validation(trained: tuple[Path, Any]) -> None:
    from bertops.api.model import Compression, CompressionStep
    from bertops.trainer.compress import recipe
    from bertops.trainer.errors import BadInputError

    manifest = manifest_of(trained[0])
    config = json.loads((trained[0] / "config.json").read_text())
    # Built without validation on purpose: a method the API does not have, no parentRef.
    bogus = CompressionStep.model_construct(method="lowRank", fine_tune_epochs=0)  # type: ignore[arg-type]
    compression = Compression.model_construct(steps=[bogus])  # type: ignore[call-arg]
    with pytest.raises(BadInputError, match="unknown method"):
        recipe.plan(compression, manifest, config, train_rows=10)
