"""``bertops ui`` in headless Chromium (Debian's, driven by Playwright; no browser is
downloaded) on loopback, against the real API server: the catalogue lists the models, a
model page shows its plots, deleting a served model is refused with the reason, a
download is the artifact with matching checksums, and the rollout page follows the
canary weight as status changes. Screenshots of the main pages go to a temporary folder
whose path is printed."""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bertops.api.artifacts import MODEL_MANIFEST, ModelManifest
from bertops.cluster import browser as chromium
from tests.ui.conftest import TOKEN, LiveUI, World

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not chromium.available():
        pytest.skip(chromium.INSTALL_HINT)
    with chromium.launch() as launched:  # the demo's report screenshots launch it alike
        yield launched


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ui-screenshots")
    print(f"\nbertops ui screenshots: {folder}")
    return folder


def signed_in(browser: Any, ui: LiveUI) -> Any:
    """A page signed in through the login form (the cookie a person gets)."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{ui.url}/")
    assert page.url.endswith("/login")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{ui.url}/")
    return page


def test_catalogue_model_page_and_verified_download(
    world: World, serve_ui: Any, browser: Any, shots: Path, tmp_path: Path
) -> None:
    page = signed_in(browser, serve_ui())
    rows = page.locator("table#models tbody tr")
    assert rows.count() == 3
    text = page.locator("table#models").inner_text()
    for name in ("run-1", "run-1-int8", "broken", "VerificationFailed", "sentiment"):
        assert name in text
    page.screenshot(path=str(shots / "catalogue.png"), full_page=True)

    page.click("a[href='/models/run-1']")
    chart = page.locator("svg.chart")
    chart.wait_for()
    assert chart.locator("polyline.series").count() == 4  # train/val loss, accuracy, F1
    assert page.locator("svg.confusion rect.cell").count() == 9
    assert "dataset" in page.locator("ol.lineage").inner_text()
    page.screenshot(path=str(shots / "model.png"), full_page=True)

    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_download() as started:
        page.click("button[data-action=download]")
    saved = tmp_path / "run-1.tar"
    started.value.save_as(saved)
    with tarfile.open(saved) as tar:
        tar.extractall(tmp_path / "out", filter="data")
    folder = tmp_path / "out" / "run-1"
    raw = (folder / MODEL_MANIFEST).read_bytes()
    assert hashlib.sha256(raw).hexdigest() == world.manifest_sha256
    for entry in ModelManifest.model_validate_json(raw).files:
        assert hashlib.sha256((folder / entry.path).read_bytes()).hexdigest() == entry.sha256
    page.context.close()


def test_deleting_a_served_model_is_refused_with_the_reason(
    world: World, serve_ui: Any, browser: Any, shots: Path
) -> None:
    page = signed_in(browser, serve_ui(allow_writes=True))
    page.goto(page.url + "models/run-1-int8")
    prompts: list[str] = []

    def accept(dialog: Any) -> None:
        prompts.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.click("button[data-action=delete]")
    message = page.locator("#message.error")
    message.wait_for()
    assert "Delete model run-1-int8?" in prompts[0]
    assert "409" in message.inner_text()
    assert "served by BertDeployment sentiment" in message.inner_text()
    page.screenshot(path=str(shots / "delete-refused.png"), full_page=True)
    assert world.objects.get("BertModel", "run-1-int8") is not None
    page.context.close()


def test_rollout_page_follows_the_canary_weight(
    world: World, serve_ui: Any, browser: Any, shots: Path
) -> None:
    page = signed_in(browser, serve_ui())
    page.goto(page.url + "deployments/sentiment")
    weight = page.locator("#canary-weight")
    assert weight.inner_text() == "10"
    assert page.locator("a.report").get_attribute("href") == (
        "https://reports.example/sentiment/1.html"
    )
    assert "run-0" in page.locator("table#history").inner_text()
    assert page.locator("svg.drift circle").count() == 1
    page.screenshot(path=str(shots / "rollout-10.png"), full_page=True)
    world.objects.status("BertDeployment", "sentiment", {"canaryWeight": 50, "rolloutStep": 1})
    page.wait_for_function(
        "document.getElementById('canary-weight').textContent === '50'", timeout=15_000
    )
    assert page.locator("svg.weight rect.canary").get_attribute("width") == "150"
    page.screenshot(path=str(shots / "rollout-50.png"), full_page=True)
    page.context.close()


def test_compare_datasets_trainings_and_deployments_pages(
    world: World, serve_ui: Any, browser: Any, shots: Path
) -> None:
    page = signed_in(browser, serve_ui())
    base = page.url
    page.goto(base + "compare?a=run-1&b=run-1-int8")
    assert page.locator("span.best").count() >= 3  # accuracy for a; size, latency for b
    page.screenshot(path=str(shots / "compare.png"), full_page=True)
    for path, table, expected in (
        ("datasets", "datasets", "abababababab"),
        ("trainings", "trainings", "run-2"),
        ("deployments", "deployments", "run-1-int8"),
    ):
        page.goto(base + path)
        assert expected in page.locator(f"table#{table}").inner_text()
        page.screenshot(path=str(shots / f"{path}.png"), full_page=True)
    # Read-only: the changing actions are disabled up front (the server refuses them too).
    page.goto(base + "deployments/sentiment")
    assert page.locator("button[data-action=post]").first.is_disabled()
    page.context.close()
