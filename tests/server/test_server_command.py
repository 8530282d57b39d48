"""The contract between the operator and the model server's command line: the options
:func:`bertops.api.server_command.server_args` builds for a serving block are parsed by
the real ``bertops server serve`` command into those very values, and the server's
defaults are the serving block's, in one place."""

from __future__ import annotations

import dataclasses

import pytest
import typer
from typer.core import TyperGroup

from bertops.api.deployment import Serving
from bertops.api.server_command import server_args
from bertops.server.cli import app
from bertops.server.settings import ServerSettings

SHARED = ("max_batch_size", "max_batch_wait_ms", "max_texts_per_request", "max_chars")


def _parse(args: list[str]) -> dict[str, object]:
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    serve = group.commands["serve"]
    with serve.make_context("serve", args) as context:
        return dict(context.params)


@pytest.mark.parametrize(
    "serving",
    [
        Serving(),
        Serving(
            max_batch_size=8,
            max_batch_wait_ms=12.5,
            max_texts_per_request=3,
            max_chars=77,
            prediction_log="off",
        ),
    ],
)
def test_the_server_parses_what_the_operator_builds(serving: Serving) -> None:
    args = server_args(
        serving, model_uri="/artifacts/ml/models/v1", manifest_sha256="a" * 64, name="v1", threads=2
    )
    params = _parse(args)
    assert params["model"] == "/artifacts/ml/models/v1"
    assert params["expect_manifest_sha256"] == "a" * 64
    assert (params["name"], params["threads"]) == ("v1", 2)
    assert params["prediction_log"] == serving.prediction_log
    for field in SHARED:
        assert params[field] == getattr(serving, field), field


def test_the_server_defaults_are_the_serving_blocks() -> None:
    defaults = _parse(["--model", "/m"])
    settings = ServerSettings()
    for field in (*SHARED, "prediction_log"):
        assert defaults[field] == getattr(settings, field) == getattr(Serving(), field), field
    # The server-only knobs: the CLI's defaults are ServerSettings' too.
    fields = {f.name: f.default for f in dataclasses.fields(ServerSettings)}
    assert defaults["max_body_bytes"] == fields["max_body_bytes"]
    assert defaults["request_timeout"] == fields["request_timeout_seconds"]
    assert defaults["keep_alive_seconds"] == fields["keep_alive_seconds"]
    assert defaults["prediction_log_backups"] == fields["prediction_log_backups"]
