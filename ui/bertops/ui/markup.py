"""Markup helpers shared by the HTML pages (:mod:`bertops.ui.pages`,
:mod:`bertops.ui.deployment_html`): the page layout, tables, badges, links and action
buttons. Every value that comes from the cluster goes through :func:`e` (HTML escaping);
links are built from quoted names only.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse

NAV = (
    ("/", "Models"),
    ("/compare", "Compare"),
    ("/datasets", "Datasets"),
    ("/trainings", "Trainings"),
    ("/deployments", "Deployments"),
)


def e(value: Any) -> str:
    return "" if value is None else escape(str(value))


def num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else e(value)


def link(kind: str, name: Any) -> str:
    where = {"BertModel": "/models/", "BertDeployment": "/deployments/"}.get(kind)
    if where is None or not name:
        return e(name)
    return f'<a href="{where}{quote(str(name))}">{e(name)}</a>'


def layout(request: Request, title: str, body: str, status: int = 200) -> HTMLResponse:
    settings = request.app.state.settings
    mode = "writes enabled" if settings.allow_writes else "read-only"
    nav = "".join(f'<a href="{href}">{label}</a>' for href, label in NAV)
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)} · bertops</title>"
        '<link rel="stylesheet" href="/static/bertops.css">'
        '<script src="/static/bertops.js" defer></script></head>'
        f'<body data-writes="{str(settings.allow_writes).lower()}"><header><b>bertops</b>'
        f'<nav>{nav}</nav><span class="mode">{e(settings.namespace)} · {mode}</span></header>'
        f'<main><h1>{e(title)}</h1><p id="message" role="status"></p>{body}</main></body></html>'
    )
    return HTMLResponse(html, status_code=status)


def table(headers: list[str], rows: list[list[str]], table_id: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def ready_badge(condition: dict[str, Any]) -> str:
    state = {"True": "ok", "False": "bad"}.get(condition.get("status", ""), "wait")
    return (
        f'<span class="badge {state}" title="{e(condition.get("message"))}">'
        f"{e(condition.get('reason') or condition.get('status'))}</span>"
    )


def lineage_html(chain: list[dict[str, Any]]) -> str:
    items = "".join(
        f'<li><span class="label">{e(step["label"])}</span> {link(step["kind"], step["value"])}'
        f" <small>{e(step['detail'])}</small></li>"
        for step in chain
    )
    return f'<ol class="lineage">{items}</ol>'


def button(label: str, action: str, url: str, confirm: str, danger: bool = False) -> str:
    return (
        f'<button class="{"danger" if danger else ""}" data-action="{e(action)}" '
        f'data-url="{e(url)}" data-confirm="{e(confirm)}">{e(label)}</button>'
    )
