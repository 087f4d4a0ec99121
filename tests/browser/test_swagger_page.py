"""The Swagger page in a real browser: Debian's chromium (headless, driven by playwright,
no browser download) loads /swagger/ from the app served under uvicorn on loopback, with
the UI's assets from node_modules, lists the 12 operations, and one "Try it out" ->
Execute of /batchCount is answered 200 from a real redis-server. Without chromium the test
is skipped, except under CI=true, where that is a failure (.ci/run installs it)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from anyio.from_thread import start_blocking_portal

from seqcollector.api.app import build_app
from seqcollector.api.endpoints import ENDPOINTS
from seqcollector.api.server import serve
from seqcollector.config import Settings
from seqcollector.runtime.executor import redis_client

pytestmark = pytest.mark.redis
CHROMIUM = Path("/usr/bin/chromium")
MARKET = "0x0C2E22fe7526fAeF28E7A58c84f8723dEFcE200c"
TOKEN = "browser-token"


def need_chromium() -> None:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} missing: apt-get install -y chromium (.ci/run does)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def base_url(redis_url: str) -> Iterator[str]:
    with redis.Redis.from_url(redis_url) as r:
        r.set(f"BatchCountKey.{MARKET.lower()}.42", "7")
    settings = Settings(
        data_market_addresses=(MARKET,), auth_read_token=TOKEN, redis_url_override=redis_url
    )
    with start_blocking_portal() as portal:
        client = redis_client(redis_url)
        future, port = portal.start_task(serve, build_app(settings, client), "127.0.0.1", 0)
        yield f"http://127.0.0.1:{port}"
        future.cancel()
        portal.call(client.aclose)


def test_swagger_page_lists_and_runs_an_operation(base_url: str) -> None:
    need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page()
            failed: list[str] = []
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(base_url + "/swagger/", wait_until="networkidle")
            page.wait_for_selector(".opblock", timeout=30_000)
            paths = page.locator(".opblock .opblock-summary-path").all_inner_texts()
            shown = sorted(p.replace("\u200b", "").strip() for p in paths)
            assert shown == sorted(ep.path for ep in ENDPOINTS), shown
            assert not failed, failed  # every asset came from the app itself

            block = page.locator("#operations-Batch_Count-batchCount")
            block.locator(".opblock-summary").click()
            block.locator("button.try-out__btn").click()
            body = {"token": TOKEN, "epochID": 42, "dataMarketAddress": MARKET}
            block.locator("textarea.body-param__text").fill(json.dumps(body))
            block.locator("button.execute").click()
            status = block.locator(".live-responses-table .response .response-col_status")
            status.first.wait_for(timeout=30_000)
            assert status.first.inner_text().strip() == "200"
            answer = block.locator(".live-responses-table .response-col_description pre").first
            assert '"totalBatches": 7' in answer.inner_text()
            if shot := os.environ.get("SEQ_SWAGGER_SCREENSHOT"):
                page.screenshot(path=shot, full_page=True)
        finally:
            browser.close()
