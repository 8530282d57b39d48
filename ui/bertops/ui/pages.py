"""The HTML pages of ``bertops ui``: model catalogue, model page (curves, confusion
matrix, actions), comparison, datasets, trainings, deployments (stable/canary, live
weight, history, drift over time).

Each page renders the same data the JSON API answers (functions of
:mod:`bertops.ui.service`, run in a worker thread) as server-side HTML with inline SVG
(:mod:`bertops.ui.svg`). The pinned ``static/bertops.js`` asks for confirmation before
each action, calls the JSON API for it, and polls a deployment page's data. Every value
from the cluster is escaped. Mounted by :mod:`bertops.ui.app`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bertops.ui import service, svg
from bertops.ui.api import catalog
from bertops.ui.catalog import CatalogError
from bertops.ui.deployment_html import render as render_deployment
from bertops.ui.markup import button, e, layout, lineage_html, link, num, ready_badge, table


async def _page(
    request: Request,
    title: str,
    render: Callable[[dict[str, Any]], str],
    function: Callable[..., dict[str, Any]],
    *args: Any,
) -> Response:
    try:
        data = await run_in_threadpool(function, catalog(request), *args)
    except CatalogError as error:
        return layout(request, title, f'<p class="error">{e(error.message)}</p>', error.status)
    return layout(request, title, render(data))


def _catalogue(data: dict[str, Any]) -> str:
    rows = [
        [
            link("BertModel", m["name"]),
            e(m["family"]),
            e(m["format"]),
            ready_badge(m["ready"]),
            num(m["metrics"].get("accuracy")),
            num(m["metrics"].get("macroF1")),
            e(m["size"].get("display")),
            num(m["latency"].get("p50Batch1Ms"), 3),
            " → ".join(e(step["value"]) for step in m["lineage"][:-1]) or "-",
            ", ".join(link("BertDeployment", d) for d in m["servedBy"]) or "-",
        ]
        for m in data["items"]
    ]
    headers = [
        "model",
        "family",
        "format",
        "ready",
        "accuracy",
        "macro F1",
        "size",
        "p50 ms (b1)",
        "lineage",
        "served by",
    ]
    return table(headers, rows, "models") if rows else "<p>No models yet.</p>"


async def catalogue_page(request: Request) -> Response:
    return await _page(request, "Model catalogue", _catalogue, service.models)


def _model(data: dict[str, Any]) -> str:
    name, plots = data["name"], data["plots"]
    metrics = table(["metric", "value"], [[e(k), num(v)] for k, v in data["metrics"].items()])
    size = {**data["size"], **data["latency"]}
    measured = table(["measure", "value"], [[e(k), num(v)] for k, v in size.items()])
    charts = svg.line_chart(plots["curves"], title="Training curves")
    matrix = plots["confusion"]
    confusion = (
        svg.confusion_matrix(matrix["labels"], matrix["matrix"], f"Confusion ({matrix['split']})")
        if matrix
        else '<p class="empty">No confusion matrix stored.</p>'
    )
    missing = f'<p class="empty">{e(plots["unavailable"])}</p>' if plots["unavailable"] else ""
    url = f"/api/models/{quote(name)}"
    served = ", ".join(link("BertDeployment", d) for d in data["servedBy"]) or "no deployment"
    actions = button(
        "Download", "download", f"{url}/download", f"Download {name} (verified)?"
    ) + button("Delete", "delete", url, f"Delete model {name}? This cannot be undone.", True)
    return (
        f'<section class="actions">{actions}</section>'
        f"<p>{ready_badge(data['ready'])} {e(data['ready']['message'])}</p>"
        f"<p>Served by: {served}</p><h2>Lineage</h2>{lineage_html(data['lineage'])}"
        f'<div class="grid"><div><h2>Metrics</h2>{metrics}</div>'
        f"<div><h2>Size and latency</h2>{measured}</div></div>"
        f'<h2>Plots</h2>{missing}<div class="plots">{charts}{confusion}</div>'
        f"<h2>Artifact</h2><p><code>{e(data['artifactUri'])}</code><br>manifest sha256 "
        f"<code>{e(data['manifestSha256'])}</code></p>"
    )


async def model_page(request: Request) -> Response:
    name = str(request.path_params["name"])
    return await _page(request, f"Model {name}", _model, service.model, name)


def _compare(data: dict[str, Any]) -> str:
    rows = [
        [
            e(r["metric"]),
            f'<span class="{"best" if r["better"] == "a" else ""}">{num(r["a"])}</span>',
            f'<span class="{"best" if r["better"] == "b" else ""}">{num(r["b"])}</span>',
            num(r["delta"]),
        ]
        for r in data["rows"]
    ]
    return table(["", link("BertModel", data["a"]), link("BertModel", data["b"]), "b - a"], rows)


async def compare_page(request: Request) -> Response:
    a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
    form = (
        '<form method="get" action="/compare"><input name="a" placeholder="model A" '
        f'value="{e(a)}"> <input name="b" placeholder="model B" value="{e(b)}"> '
        "<button>Compare</button></form>"
    )
    if not a or not b:
        return layout(request, "Compare models", form)
    response = await _page(
        request, "Compare models", lambda d: form + _compare(d), service.compare, a, b
    )
    return response


def _datasets(data: dict[str, Any]) -> str:
    rows = [
        [
            e(d["name"]),
            e(d["source"]),
            e(d["rows"].get("total")),
            e(", ".join(d["labels"])),
            f"<code>{e((d['checksum'] or '')[:12])}</code>",
            ready_badge(d["ready"]),
        ]
        for d in data["items"]
    ]
    return table(["dataset", "source", "rows", "labels", "checksum", "ready"], rows, "datasets")


async def datasets_page(request: Request) -> Response:
    return await _page(request, "Datasets", _datasets, service.datasets)


def _trainings(data: dict[str, Any]) -> str:
    rows = []
    for t in data["items"]:
        p = t["progress"]
        bar = (
            f'<progress max="{e(p.get("totalSteps") or 1)}" value="{e(p.get("step") or 0)}">'
            f"</progress> {e(p.get('display'))}"
        )
        rows.append(
            [
                e(t["name"]),
                e(t["dataset"]),
                e(t["replicas"]),
                bar,
                num(p.get("loss")),
                num(t["testMetrics"].get("accuracy")),
                link("BertModel", t["model"]),
                ready_badge(t["succeeded"]),
            ]
        )
    headers = [
        "training",
        "dataset",
        "ranks",
        "progress",
        "loss",
        "test accuracy",
        "model",
        "succeeded",
    ]
    return table(headers, rows, "trainings")


async def trainings_page(request: Request) -> Response:
    return await _page(request, "Trainings", _trainings, service.trainings)


def _deployments(data: dict[str, Any]) -> str:
    rows = [
        [
            link("BertDeployment", d["name"]),
            link("BertModel", d["stableModel"]),
            link("BertModel", d["canaryModel"]),
            f"{e(d['canaryWeight'])}%",
            num(d["drift"].get("score")),
            ready_badge(d["ready"]),
        ]
        for d in data["items"]
    ]
    return table(
        ["deployment", "stable", "canary", "weight", "drift", "ready"], rows, "deployments"
    )


async def deployments_page(request: Request) -> Response:
    drift_log = request.app.state.drift_log
    return await _page(request, "Deployments", _deployments, service.deployments, drift_log)


async def deployment_page(request: Request) -> Response:
    name = str(request.path_params["name"])
    drift_log = request.app.state.drift_log
    return await _page(
        request, f"Deployment {name}", render_deployment, service.deployment, name, drift_log
    )


ROUTES = [
    Route("/", catalogue_page, methods=["GET"]),
    Route("/models/{name}", model_page, methods=["GET"]),
    Route("/compare", compare_page, methods=["GET"]),
    Route("/datasets", datasets_page, methods=["GET"]),
    Route("/trainings", trainings_page, methods=["GET"]),
    Route("/deployments", deployments_page, methods=["GET"]),
    Route("/deployments/{name}", deployment_page, methods=["GET"]),
]
