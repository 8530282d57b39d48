"""The import-graph check of ``make lint`` (tests/import_graph.py): the code has no import
cycle and the diagram in docs/architecture.md is the one the code draws; the check fails
on a cycle and on a stale diagram."""

from __future__ import annotations

from pathlib import Path

from tests import import_graph


def test_the_code_has_no_cycle_and_the_drawing_is_fresh() -> None:
    graph = import_graph.module_graph()
    assert len(graph) > 100  # grimp followed the imports across the namespace packages
    assert "bertops.operator.runtime.argo_workflow" in graph["bertops.operator.runtime.argo"]
    assert import_graph.problems(graph) == []


def test_a_cycle_between_packages_is_reported(tmp_path: Path) -> None:
    graph = {
        "bertops.operator.kube": set(),
        "bertops.operator.deployment.local": {"bertops.operator.kube"},
        # runtime -> deployment -> runtime: a cycle between packages, not between modules.
        "bertops.operator.deployment.target": {"bertops.operator.runtime.base"},
        "bertops.operator.runtime.base": set(),
        "bertops.operator.runtime.local": {"bertops.operator.deployment.local"},
    }
    assert import_graph.cycle(graph) is None  # no module imports itself back
    doc = tmp_path / "architecture.md"
    drawing = import_graph.mermaid(graph)
    doc.write_text(f"x\n{import_graph.BEGIN}\n{drawing}\n{import_graph.END}\n")
    (found,) = [p for p in import_graph.problems(graph, doc) if "cycle" in p]
    assert "bertops.operator.deployment" in found
    assert "bertops.operator.runtime" in found


def test_a_stale_drawing_is_reported(tmp_path: Path) -> None:
    graph = {"bertops.api.kinds": set(), "bertops.cli.main": {"bertops.api.kinds"}}
    doc = tmp_path / "architecture.md"
    doc.write_text(f"# doc\n{import_graph.BEGIN}\nold\n{import_graph.END}\n")
    assert import_graph.problems(graph, doc) == [
        "architecture.md: the import graph is stale; run `make graph`"
    ]
    doc.write_text(import_graph.rendered_doc(doc.read_text(), _drawing(graph)))
    assert import_graph.problems(graph, doc) == []


def _drawing(graph: dict[str, set[str]]) -> str:
    return import_graph.mermaid(
        import_graph.collapse(graph, {m: import_graph.drawing_node(m) for m in graph})
    )
