"""`nmt serve` run for real: `python -m nmt_cli serve` on a free loopback port, over the trained
reversal Transformer (translated by its CTranslate2 export), spoken to over HTTP as clients do.

Answers are compared with what the `Translator` says for the same lines (the `reference`
fixture), never with fixed text. One server serves most of the module; the API key and queue
limits get a second, and the stop on SIGTERM a third, which it ends.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from conftest import LETTERS, assert_one_line_error, nmt, reversal_pairs, skip_or_fail

CHROMIUM = Path("/usr/bin/chromium")
# Raw input, as a user types it: upper case and extra spaces are normalised away.
LINES = ["a b c d", "J I H", "  C  a  f e  "]


@dataclass
class Served:
    url: str
    process: subprocess.Popen

    def call(self, method: str, path: str, body: bytes | str | dict | None = None, headers: dict | None = None):
        """(status, headers, decoded JSON) of one request on a fresh connection."""
        headers = dict(headers or {})
        if isinstance(body, dict):
            body, headers["Content-Type"] = json.dumps(body), headers.get("Content-Type", "application/json")
        address = urlsplit(self.url)
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=120)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        return response.status, response.headers, json.loads(payload)


@contextmanager
def serving(model_dir: Path, log: Path, *options: str, env: dict | None = None):
    """`nmt serve` on an OS-chosen loopback port, ready; stopped with SIGTERM after (exit 0 asserted)."""
    command = [sys.executable, "-m", "nmt_cli", "serve", "--model-dir", str(model_dir), "--port", "0", *options]
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env={**os.environ, **(env or {})}
        )
    try:
        line = process.stdout.readline()  # the listening line, printed once the port is bound
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        assert found, f"{line!r}\n{log.read_text()}"
        served = Served(found.group(1), process)
        deadline = time.monotonic() + 120
        while served.call("GET", "/health")[0] != 200:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
        process.stdout.close()


@pytest.fixture(scope="module")
def model(trained_model) -> Path:
    return trained_model("transformer")


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    with serving(model, tmp_path_factory.mktemp("serve") / "stderr.log", "--max-lines", "40") as served:
        yield served


@pytest.fixture(scope="module")
def guarded(model, tmp_path_factory):
    """A server that needs a key (from NMT_API_KEY) and lets one line wait."""
    log = tmp_path_factory.mktemp("guarded") / "stderr.log"
    options = ("--queue-lines", "1", "--max-lines", "400")
    with serving(model, log, *options, env={"NMT_API_KEY": "sesame"}) as served:
        yield served


# ----------------------------------------------------------------------------------------------
# Both APIs answer what `nmt translate` answers
# ----------------------------------------------------------------------------------------------


def test_libretranslate_json_string_and_list(server, model, reference):
    expected = reference(model, LINES)
    status, _, answer = server.call("POST", "/translate", {"q": LINES[0], "source": "en", "target": "ja"})
    assert status == 200 and answer == {"translatedText": expected[0]}
    status, _, answer = server.call("POST", "/translate", {"q": LINES, "source": "en", "target": "ja"})
    assert status == 200 and answer == {"translatedText": expected}


def test_libretranslate_form_with_auto_source_and_alternatives(server, model, reference):
    form = urlencode({"q": LINES[1], "source": "auto", "target": "ja", "format": "text", "alternatives": 2})
    status, _, answer = server.call("POST", "/translate", form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200, answer
    from nmt_cli.translation import Translator

    best = next(Translator.open(model).translate([LINES[1]], beam_size=5, n_best=3))
    assert answer["translatedText"] == best.text
    assert answer["alternatives"] == [candidate.text for candidate in best.candidates[1:]]
    assert answer["detectedLanguage"]["language"] == "en"


def test_libretranslate_multipart_form(server, model, reference):
    boundary = "nmt-test-boundary"
    parts = [("q", LINES[2]), ("source", "en"), ("target", "ja")]
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{n}"\r\n\r\n{v}\r\n' for n, v in parts)
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    status, _, answer = server.call("POST", "/translate", (body + f"--{boundary}--\r\n").encode(), headers)
    assert status == 200 and answer == {"translatedText": reference(model, [LINES[2]])[0]}


def test_a_text_of_several_lines_keeps_its_lines(server, model, reference):
    status, _, answer = server.call("POST", "/translate", {"q": "\n".join(LINES), "source": "en", "target": "ja"})
    assert status == 200 and answer["translatedText"] == "\n".join(reference(model, LINES))


def test_native_api_gives_n_best_with_scores(server, model):
    from nmt_cli.translation import Translator

    expected = list(Translator.open(model).translate(LINES, beam_size=4, n_best=3))
    status, _, answer = server.call("POST", "/v1/translate", {"text": LINES, "beam_size": 4, "n_best": 3})
    assert status == 200, answer
    assert answer["engine"].startswith("ctranslate2") and answer["checkpoint"] == "best"
    for got, want in zip(answer["translations"], expected, strict=True):
        assert got["text"] == want.text and got["attention"] is None
        assert [c["text"] for c in got["candidates"]] == [c.text for c in want.candidates]
        assert [c["score"] for c in got["candidates"]] == pytest.approx([c.score for c in want.candidates], abs=1e-5)


def test_attention_is_what_nmt_translate_gives(server, model):
    from nmt_cli.translation import Translator

    assert server.call("GET", "/health")[2]["attention"] is True  # a Transformer exported by this version
    status, _, answer = server.call("POST", "/v1/translate", {"text": LINES, "attention": True})
    assert status == 200, answer
    expected = Translator.open(model).translate(LINES, attention=True)
    for translation, want in zip(answer["translations"], expected, strict=True):
        got, wanted = translation["attention"], want.attention.to_json()
        assert (got["source"], got["target"]) == (wanted["source"], wanted["target"])
        # Rounded to 4 decimals on both sides; batches made up otherwise may move a weight by a rounding step.
        for row, wanted_row in zip(got["weights"], wanted["weights"], strict=True):
            assert row == pytest.approx(wanted_row, abs=2e-4) and sum(row) == pytest.approx(1, abs=1e-3)


def test_native_text_string_is_split_into_lines(server, model, reference):
    status, _, answer = server.call("POST", "/v1/translate", {"text": "\r\n".join(LINES)})
    assert status == 200 and [t["text"] for t in answer["translations"]] == reference(model, LINES)


def test_the_keras_engine_translates_on_the_worker_thread(trained_model, reference, tmp_path):
    model = trained_model("attention")
    with serving(model, tmp_path / "stderr.log", "--engine", "keras") as served:
        status, _, answer = served.call("POST", "/v1/translate", {"text": LINES})
    assert status == 200 and answer["engine"] == "keras"
    assert [t["text"] for t in answer["translations"]] == reference(model, LINES, engine="keras")


def test_languages_health_and_model(server, model):
    status, _, languages = server.call("GET", "/languages")
    assert status == 200 and languages[0] == {"code": "en", "name": "en", "targets": ["ja"]}
    status, _, health = server.call("GET", "/health")
    assert status == 200 and health["status"] == "ready" and health["model"] == str(model)
    assert health["engine"].startswith("ctranslate2") and health["checkpoint"] == "best"
    status, _, view = server.call("GET", "/v1/model")
    summary = nmt("summary", "--model-dir", model, "--json")
    # JSON has no NaN (a history's missing BLEU): the server writes null where `nmt summary` writes NaN.
    assert status == 200 and view == json.loads(summary.stdout, parse_constant=lambda _: None)


def test_32_concurrent_requests_get_their_own_answers_in_order(server, model, reference):
    requests = [[source for source, _ in reversal_pairs(3, seed)] for seed in range(32)]
    expected = reference(model, [line for lines in requests for line in lines])

    def ask(lines):
        return server.call("POST", "/v1/translate", {"text": lines})

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(ask, requests))
    got = []
    for status, _, answer in answers:
        assert status == 200, answer
        got += [t["text"] for t in answer["translations"]]
    assert got == expected


# ----------------------------------------------------------------------------------------------
# Every malformed request gets a 4xx and one line
# ----------------------------------------------------------------------------------------------

JSON = {"Content-Type": "application/json"}
MALFORMED = {
    "not JSON": ("/translate", b"{q: hello", JSON, 400),
    "not JSON, native": ("/v1/translate", b'{"text": [', JSON, 400),
    "a JSON list": ("/translate", b'["a b"]', JSON, 400),
    "q a number": ("/translate", b'{"q": 5, "source": "en", "target": "ja"}', JSON, 400),
    "q empty": ("/translate", b'{"q": "", "source": "en", "target": "ja"}', JSON, 400),
    "q missing": ("/translate", b'{"source": "en", "target": "ja"}', JSON, 400),
    "no target": ("/translate", b'{"q": "a b"}', JSON, 400),
    "a pair the model lacks": ("/translate", b'{"q": "a", "source": "en", "target": "fr"}', JSON, 400),
    "html": ("/translate", b'{"q": "a", "source": "en", "target": "ja", "format": "html"}', JSON, 400),
    "invalid UTF-8": ("/translate", b'{"q": "\xff\xfe", "source": "en", "target": "ja"}', JSON, 400),
    "invalid UTF-8 in a form": (
        "/translate",
        b"q=%FF&source=en&target=ja",
        {"Content-Type": "application/x-www-form-urlencoded"},
        400,
    ),
    "invalid UTF-8, native": ("/v1/translate", b'{"text": "\xff"}', JSON, 400),
    "plain text": ("/v1/translate", b"a b c", {"Content-Type": "text/plain"}, 415),
    "text a number": ("/v1/translate", b'{"text": 5}', JSON, 422),
    "text empty": ("/v1/translate", b'{"text": []}', JSON, 422),
    "beam size a string": ("/v1/translate", b'{"text": "a", "beam_size": "5"}', JSON, 422),
    "beam size 0": ("/v1/translate", b'{"text": "a", "beam_size": 0}', JSON, 422),
    "n-best above the beam": ("/v1/translate", b'{"text": "a", "beam_size": 2, "n_best": 3}', JSON, 422),
    "an unknown field": ("/v1/translate", b'{"text": "a", "beam": 5}', JSON, 422),
    "a line break in an item": ("/v1/translate", b'{"text": ["a\\nb"]}', JSON, 422),
    "an unknown path": ("/v2/translate", b"{}", JSON, 404),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_requests_get_a_4xx_and_one_line(server, case):
    path, body, headers, expected = MALFORMED[case]
    status, _, answer = server.call("POST", path, body, headers)
    assert status == expected, answer
    assert list(answer) == ["error"] and "\n" not in answer["error"] and "Traceback" not in answer["error"]


def test_requests_over_the_limits_get_413(server):
    status, _, answer = server.call("POST", "/v1/translate", {"text": ["a b"] * 41})
    assert status == 413 and "41 lines" in answer["error"] and "40" in answer["error"]
    status, _, answer = server.call("POST", "/translate", {"q": "a " * 10_001, "source": "en", "target": "ja"})
    assert status == 413 and "characters" in answer["error"]
    status, _, answer = server.call("POST", "/v1/translate", {"text": "a" * 200_000})
    assert status == 413 and "larger than" in answer["error"]


# ----------------------------------------------------------------------------------------------
# The key, the queue's bound, the stop
# ----------------------------------------------------------------------------------------------


def test_the_api_key_is_required_when_given(guarded):
    body = {"q": "a b", "source": "en", "target": "ja"}
    assert guarded.call("POST", "/translate", body)[0] == 403
    assert guarded.call("POST", "/translate", {**body, "api_key": "wrong"})[0] == 403
    assert guarded.call("POST", "/translate", {**body, "api_key": "sesame"})[0] == 200
    assert guarded.call("POST", "/v1/translate", {"text": "a b"})[0] == 403
    assert guarded.call("POST", "/v1/translate", {"text": "a b"}, {"X-API-Key": "sesame"})[0] == 200
    assert guarded.call("GET", "/v1/model")[0] == 403
    status, _, health = guarded.call("GET", "/health")
    assert status == 200 and health["api_key_required"] is True


def test_a_full_queue_answers_503_with_retry_after(guarded):
    lines = [source for source, _ in reversal_pairs(300, seed=5)]

    def ask(_):
        return guarded.call("POST", "/v1/translate", {"text": lines}, {"X-API-Key": "sesame"})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    statuses = [status for status, _, _ in answers]
    assert 200 in statuses and 503 in statuses, statuses
    for status, headers, answer in answers:
        assert status in (200, 503)
        if status == 503:
            assert int(headers["Retry-After"]) >= 1 and "retry" in answer["error"]


def test_sigterm_answers_the_request_under_way_then_exits_0(model, tmp_path):
    lines = [" ".join(LETTERS[i % 10 : i % 10 + 5]) for i in range(3000)]
    options = ("--max-lines", "3000", "--max-characters", "100000")
    with serving(model, tmp_path / "stderr.log", *options) as served:
        answered = {}
        asking = threading.Thread(
            target=lambda: answered.update(r=served.call("POST", "/v1/translate", {"text": lines}))
        )
        asking.start()
        deadline = time.monotonic() + 60
        while True:
            queue = served.call("GET", "/health")[2]["queue"]
            if queue["waiting"] or queue["translating"] or not asking.is_alive():
                break
            assert time.monotonic() < deadline
        served.process.send_signal(signal.SIGTERM)
        asking.join(timeout=120)
        assert served.process.wait(timeout=60) == 0
    status, _, answer = answered["r"]
    assert status == 200 and len(answer["translations"]) == len(lines)


# ----------------------------------------------------------------------------------------------
# The user's mistakes: one line, before TensorFlow loads
# ----------------------------------------------------------------------------------------------


def test_mistakes_are_one_line_before_tensorflow(tmp_path, model):
    missing = nmt("serve", "--model-dir", tmp_path / "nowhere", "--port", "0", before_tensorflow=True)
    assert_one_line_error(missing, "nowhere")
    assert_one_line_error(nmt("serve", "--port", "70000", before_tensorflow=True), "--port", "65535")
    unexported = shutil.copytree(model, tmp_path / "model", ignore=shutil.ignore_patterns("ctranslate2"))
    no_export = nmt("serve", "--model-dir", unexported, "--engine", "ctranslate2", before_tensorflow=True)
    assert_one_line_error(no_export, "no CTranslate2 export", "nmt export")
    with socket_in_use() as port:
        taken = nmt("serve", "--model-dir", model, "--port", port, before_tensorflow=True)
    assert_one_line_error(taken, f"127.0.0.1:{port}")


def test_another_address_without_a_key_is_warned_of(model):
    # 192.0.2.1 (TEST-NET-1, reserved for documentation) is no address of this machine: the server
    # cannot listen there, and nothing ever listens beyond loopback; the warning comes first.
    elsewhere = nmt("serve", "--model-dir", model, "--host", "192.0.2.1", "--port", "5000", before_tensorflow=True)
    warning, error = elsewhere.stderr.splitlines()
    assert warning.startswith("warning: --host 192.0.2.1") and "--api-key" in warning
    assert error.startswith("error: cannot listen on http://192.0.2.1:5000") and elsewhere.returncode == 2


@contextmanager
def socket_in_use():
    import socket

    with socket.create_server(("127.0.0.1", 0)) as held:
        yield held.getsockname()[1]


# ----------------------------------------------------------------------------------------------
# The page, in a real browser
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's package) driven by Playwright; no browser is downloaded."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("needs playwright: pip install -e '.[dev]'")
    if not CHROMIUM.exists():
        skip_or_fail(f"needs Chromium at {CHROMIUM}: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


def test_the_page_translates_and_shows_alternatives_and_attention(server, model, reference, browser):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 390, "height": 800})  # a phone's width
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(server.url + "/")
    page.get_by_label("Text to translate").fill(LINES[0])
    page.get_by_role("button", name="Translate").click()
    expect(page.locator("#translation")).to_have_text(reference(model, [LINES[0]])[0])
    expect(page.locator("#candidates li").first).to_be_visible()
    assert page.locator("#candidates li").count() >= 1
    assert all(url.startswith(server.url) for url in requested), requested  # nothing from elsewhere
    answer = server.call("POST", "/v1/translate", {"text": LINES[0], "attention": True})[2]
    attention = answer["translations"][0]["attention"]
    heatmap = page.locator("#heatmap")
    expect(heatmap).to_be_visible()
    assert heatmap.locator("tbody tr").count() == len(attention["target"])
    assert heatmap.locator("tbody tr").first.locator("td").count() == len(attention["source"])
    # The heat-map of whatever attention the server returns: a row per target piece, a column per
    # source piece, and hovering a cell names both pieces and the weight.
    drawn = {
        "text": "x",
        "candidates": [{"text": "x", "score": -0.5}],
        "attention": {"source": ["▁a", "▁b", "▁c"], "target": ["▁c", "▁b", "</s>"], "weights": [[0.1, 0.2, 0.7]] * 3},
    }
    answer = {"translations": [drawn], "engine": "keras", "checkpoint": "best"}
    page.route("**/v1/translate", lambda route: route.fulfill(json=answer))
    page.get_by_role("button", name="Translate").click()
    expect(page.locator("#heatmap tbody tr")).to_have_count(3)
    assert page.locator("#heatmap tbody tr").first.locator("td").count() == 3
    page.locator("#heatmap tbody tr").nth(2).locator("td").nth(2).hover()
    expect(page.locator("#cell")).to_have_text("</s> ← ▁c: 0.700")
    # Ctrl+Enter translates too, and a server's error shows as a message.
    busy = {"error": "busy: 9 lines are waiting to be translated, as many as allowed; retry shortly"}
    page.unroute("**/v1/translate")
    page.route("**/v1/translate", lambda route: route.fulfill(status=503, json=busy))
    page.get_by_label("Text to translate").press("Control+Enter")
    expect(page.get_by_role("alert")).to_have_text(busy["error"])
    page.close()
