"""``bertops trainer``: the trainer steps as commands (prepare, train, evaluate, compress,
challenge, the drift monitor's reference and drift, run) and a local launcher for distributed
training (launch).

Added to the top-level ``bertops`` CLI by :mod:`bertops.cli.main`; also runnable as
``python -m bertops.trainer.cli`` (how the launcher starts ranks). Every step command
reads a step spec (``--spec FILE`` or ``--spec -`` for stdin), prints progress JSON lines
and, as the last stdout line, the StepResult; the exit code is the result's
(0 ok, 1 unexpected, 2 bad input, 3 transient). torch and transformers are imported only
inside commands, so ``bertops --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(
    help="Trainer steps: prepare data, train (distributed), evaluate.",
    no_args_is_help=True,
    add_completion=False,
)

SpecOption = typer.Option(
    ..., "--spec", "-s", help="Step spec JSON file, or - to read it from stdin."
)


def _read_spec(spec: str) -> str:
    if spec == "-":
        return sys.stdin.read()
    return Path(spec).read_text(encoding="utf-8")


def _run(kind: str | None, spec: str) -> None:
    import json

    from bertops.trainer.steps import failed, result_json, run_step

    try:
        text = _read_spec(spec)
    except (OSError, UnicodeDecodeError) as error:
        result = failed(kind or "prepare", f"cannot read step spec {spec}: {error}")
    else:
        data: Any = text
        if kind is not None:
            try:
                loaded = json.loads(text)
            except ValueError:
                loaded = None
            # The command names the kind; a spec without one gets it, a different one fails.
            if isinstance(loaded, dict):
                loaded.setdefault("kind", kind)
                data = loaded
                if loaded["kind"] != kind:
                    result = failed(
                        kind,
                        f"spec kind {loaded['kind']!r} given to `{kind}`",
                        str(loaded.get("name", "unknown")),
                    )
                    typer.echo(result_json(result))
                    raise typer.Exit(result.exit_code)
        result = run_step(data)
    typer.echo(result_json(result))
    raise typer.Exit(result.exit_code)


@app.command()
def prepare(spec: str = SpecOption) -> None:
    """Prepare a dataset: read, clean, split, tokenize; write a versioned artifact."""
    _run("prepare", spec)


@app.command()
def train(spec: str = SpecOption) -> None:
    """Fine-tune a model on a prepared dataset (one rank, or one of N under the env)."""
    _run("train", spec)


@app.command()
def evaluate(spec: str = SpecOption) -> None:
    """Score a model artifact on a split of a prepared dataset."""
    _run("evaluate", spec)


@app.command()
def compress(spec: str = SpecOption) -> None:
    """Compress a model artifact (prune, distill, quantize, ONNX) behind a quality gate."""
    _run("compress", spec)


@app.command()
def challenge(spec: str = SpecOption) -> None:
    """Score the stable model and a candidate on the same frozen rows (its test split, the
    held-back feedback); write the report."""
    _run("challenge", spec)


@app.command()
def reference(spec: str = SpecOption) -> None:
    """Run a model over a sample of its dataset; keep the drift monitor's reference rows."""
    _run("reference", spec)


@app.command()
def drift(spec: str = SpecOption) -> None:
    """Compare the newest logged predictions with the reference (Evidently); write the report."""
    _run("drift", spec)


@app.command()
def run(spec: str = SpecOption) -> None:
    """Run any step; its kind comes from the spec's `kind` field."""
    _run(None, spec)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def launch(
    ctx: typer.Context,
    nproc: int = typer.Option(2, "--nproc", "-n", min=1, help="Number of ranks."),
    threads: int = typer.Option(None, help="OMP threads per rank (default: cores / nproc)."),
) -> None:
    """Run a trainer command as N torch.distributed ranks on loopback, e.g.
    `bertops trainer launch --nproc 2 train --spec train.json`."""
    import tempfile

    from bertops.trainer.launcher import launch as run_ranks

    args = list(ctx.args)
    if not args:
        typer.echo("launch needs a command, e.g. `launch --nproc 2 train --spec FILE`", err=True)
        raise typer.Exit(2)
    with tempfile.TemporaryDirectory(prefix="bertops-launch-") as scratch:
        # Every rank reads the spec: stdin can be read only once, so it goes to a file.
        for flag in ("--spec", "-s"):
            if (
                flag in args
                and args.index(flag) + 1 < len(args)
                and args[args.index(flag) + 1] == "-"
            ):
                path = Path(scratch) / "spec.json"
                path.write_text(sys.stdin.read(), encoding="utf-8")
                args[args.index(flag) + 1] = str(path)
        code = run_ranks(args, nproc, threads=threads)
    raise typer.Exit(code)


def main() -> None:
    app(prog_name="bertops trainer")


if __name__ == "__main__":
    main()
