"""The HTTP API and the web page, on FastAPI.

    POST /translate      LibreTranslate's: q (a text or a list of texts), source, target, format, api_key
    GET  /languages      LibreTranslate's: the model's one pair
    POST /v1/translate   native: lines in; per line the best text, the n-best with scores, attention
    GET  /health         ready, loading or failed; model, engine, checkpoint, queue
    GET  /v1/model       what `nmt summary --json` says
    GET  /               the web page (static/)

Every line goes through the `Translator` (normalisation, long-line splitting, detokenisation, as
`nmt translate` does), on the translation queue's one worker. Every error is LibreTranslate's
shape, `{"error": "one line"}`: 4xx for what the client can change, 503 with Retry-After when
the queue is full or the model not ready, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartParser

from nmt_cli import __version__
from nmt_cli.errors import UserError
from nmt_cli.serve.batching import NotReady, QueueFull, Search

if TYPE_CHECKING:
    from nmt_cli.config import ServeOptions
    from nmt_cli.serve.batching import TranslationQueue
    from nmt_cli.trained import TrainedModel
    from nmt_cli.translation import Translation

STATIC = Path(__file__).parent / "static"
MAX_BEAM = 32  # the work of a line grows with the beam: a client may not ask for more
RETRY_AFTER = "1"  # seconds a client is asked to wait when the queue is full or the model loading


class ApiError(Exception):
    """An answer other than 200, as `{"error": message}`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class NativeRequest(BaseModel):
    """`POST /v1/translate`: `text` is one line per item, or a text split at its line breaks."""

    model_config = ConfigDict(extra="forbid", strict=True)
    text: str | list[str]
    beam_size: int = Field(5, ge=1, le=MAX_BEAM)
    n_best: int = Field(1, ge=1, le=MAX_BEAM)
    attention: bool = False


def attention_refusal(model: TrainedModel) -> str | None:
    """Why this server cannot return attention for `model`, or None when it can."""
    try:
        model.check_attention()
    except UserError as why:
        return str(why)
    return None


def create_app(model: TrainedModel, queue: TranslationQueue, options: ServeOptions) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI):
        queue.start()
        try:
            yield
        finally:
            await asyncio.to_thread(queue.stop)

    app = FastAPI(title="nmt", version=__version__, lifespan=lifespan)
    manifest = model.manifest
    source, target = manifest.source_lang, manifest.target_lang

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"error": error.message}, error.status, headers=error.headers)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def failed(_: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"error": f"the server failed: {type(error).__name__}: {error}"}, 500)

    def check_key(request: Request, given: Any = None) -> None:
        if options.api_key is None:
            return
        given = given if given is not None else request.headers.get("x-api-key")
        if not isinstance(given, str) or not secrets.compare_digest(given.encode(), options.api_key.encode()):
            raise ApiError(403, "Invalid API key: give it as api_key, or in an X-API-Key header")

    def check_size(lines: list[str]) -> None:
        if len(lines) > options.max_lines:
            raise ApiError(413, f"{len(lines)} lines; this server takes at most {options.max_lines} a request")
        characters = sum(len(line) for line in lines)
        if characters > options.max_characters:
            raise ApiError(
                413, f"{characters} characters; this server takes at most {options.max_characters} a request"
            )

    async def translate(lines: list[str], search: Search) -> list[Translation]:
        check_size(lines)
        try:
            waiting = queue.submit(lines, search)
        except QueueFull as full:
            raise ApiError(503, f"busy: {full}; retry shortly", {"Retry-After": RETRY_AFTER}) from None
        except NotReady as why:
            raise ApiError(503, str(why), {"Retry-After": RETRY_AFTER}) from None
        try:
            return await asyncio.wrap_future(waiting)
        except UserError as error:
            raise ApiError(400, str(error)) from None

    @app.post("/translate")
    async def libretranslate(request: Request) -> JSONResponse:
        """LibreTranslate's API: translate `q` (a text, or a list of texts) from `source` to `target`."""
        fields = await _fields(request, options.max_characters)
        check_key(request, fields.get("api_key"))
        texts = fields.get("q")
        if texts is None or texts == "" or texts == []:
            raise ApiError(400, "Invalid request: missing q parameter")
        if not (isinstance(texts, str) or (isinstance(texts, list) and all(isinstance(t, str) for t in texts))):
            raise ApiError(400, "Invalid request: q must be a text or a list of texts")
        asked_source, asked_target = fields.get("source", "auto"), fields.get("target")
        if asked_target is None:
            raise ApiError(400, "Invalid request: missing target parameter")
        if (asked_source not in ("auto", source)) or asked_target != target:
            raise ApiError(400, f"this server translates {source} to {target}, not {asked_source} to {asked_target}")
        if fields.get("format", "text") != "text":
            raise ApiError(400, f"format {fields['format']!r} is not supported: this server translates plain text")
        alternatives = _whole_number(fields.get("alternatives", 0), "alternatives", 0, MAX_BEAM - 1)
        n_best = alternatives + 1
        texts_asked = [texts] if isinstance(texts, str) else texts
        per_text = [text.split("\n") for text in texts_asked]
        results = iter(await translate([line for lines in per_text for line in lines], Search(max(5, n_best), n_best)))
        answers = []
        for lines in per_text:
            found = [next(results) for _ in lines]
            answer: dict[str, Any] = {"translatedText": "\n".join(result.text for result in found)}
            if alternatives:
                # Alternatives of a one-line text; a text of several lines has its best only.
                others = found[0].candidates[1:] if len(found) == 1 else []
                answer["alternatives"] = [candidate.text for candidate in others]
            answers.append(answer)
        if isinstance(texts, str):
            answer = answers[0]
        else:
            answer = {key: [one[key] for one in answers] for key in answers[0]}
        if asked_source == "auto":
            # LibreTranslate clients that let the server detect the language read this back.
            answer["detectedLanguage"] = {"language": source, "confidence": 100.0}
        return JSONResponse(answer)

    @app.get("/languages")
    async def languages() -> list[dict]:
        """LibreTranslate's list: the model's source language, which translates to its target."""
        return [{"code": source, "name": source, "targets": [target]}, {"code": target, "name": target, "targets": []}]

    @app.post("/v1/translate", openapi_extra=_json_body(NativeRequest))
    async def native(request: Request) -> JSONResponse:
        """Lines in; per line the best translation, the n-best candidates with scores, and on request
        the best one's attention over the source pieces."""
        check_key(request)
        try:
            body = NativeRequest.model_validate(await _fields(request, options.max_characters, forms=False))
        except ValidationError as error:
            raise ApiError(422, _validation_message(error)) from None
        lines = body.text.split("\n") if isinstance(body.text, str) else body.text
        if not lines or body.text == "":
            raise ApiError(422, "text is empty: give a line, or a list of lines")
        if isinstance(body.text, list) and (broken := [n for n, line in enumerate(lines) if "\n" in line]):
            raise ApiError(422, f"text[{broken[0]}] holds a line break: give one line per item")
        if body.n_best > body.beam_size:
            raise ApiError(422, f"n_best {body.n_best} needs beam_size {body.n_best} or more")
        if body.attention and (why := attention_refusal(model)):
            raise ApiError(400, why)
        results = await translate(
            [line.rstrip("\r") for line in lines], Search(body.beam_size, body.n_best, body.attention)
        )
        translator = queue.translator
        answer = {
            "translations": [
                {
                    "text": result.text,
                    "candidates": [{"text": c.text, "score": c.score} for c in result.candidates],
                    "attention": _attention_of(result),
                }
                for result in results
            ],
            "engine": translator.engine_label,
            "checkpoint": model.checkpoint_name,
        }
        return JSONResponse(answer)

    @app.get("/health")
    async def health() -> JSONResponse:
        """Ready, loading or failed; what translates; how full the queue is."""
        translator, refusal = queue.translator, attention_refusal(model)
        view = {
            "status": queue.state,
            "model": str(model.workspace.root),
            "engine": translator.engine_label if translator is not None else model.engine_name,
            "checkpoint": model.checkpoint_name,
            "source": source,
            "target": target,
            "attention": refusal is None,
            "no_attention_because": refusal,
            "api_key_required": options.api_key is not None,
            "queue": {
                "waiting": queue.waiting_lines,
                "translating": queue.translating,
                "limit": options.queue_lines,
                "batches": queue.batches,
                "lines_translated": queue.translated,
            },
            "limits": {"lines": options.max_lines, "characters": options.max_characters, "beam_size": MAX_BEAM},
        }
        return JSONResponse(view, 200 if queue.state == "ready" else 503)

    summary_lock, summary_view = threading.Lock(), {}

    def summarize() -> dict:
        with summary_lock:
            if not summary_view:
                from nmt_cli import backend

                backend.load_tensorflow()
                from nmt_cli.summary import summarize_model_dir

                summary_view.update(summarize_model_dir(model.workspace.root)[0])
        return summary_view

    @app.get("/v1/model")
    async def model_summary(request: Request) -> dict:
        """What `nmt summary --json` says of the model directory (it loads TensorFlow the first time)."""
        check_key(request)
        return await asyncio.to_thread(summarize)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _attention_of(result: Translation) -> dict | None:
    return result.attention.to_json() if result.attention is not None else None


def _whole_number(value: Any, name: str, least: int, most: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
        raise ApiError(400, f"Invalid request: {name} must be a whole number from {least} to {most}")
    return value


def _json_body(model: type[BaseModel]) -> dict:
    """What /docs shows of a body that the endpoint reads itself."""
    schema = {"schema": model.model_json_schema()}
    return {"requestBody": {"required": True, "content": {"application/json": schema}}}


async def _fields(request: Request, max_characters: int, forms: bool = True) -> dict[str, Any]:
    """The fields of a JSON object, or of a form (LibreTranslate clients send either)."""
    body = await _body(request, max_characters)
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if forms and kind == "multipart/form-data":
        form = await MultiPartParser(request.headers, _replayed(body)).parse()
        fields = {name: form.getlist(name) for name in form}
        if any(not isinstance(value, str) for values in fields.values() for value in values):
            raise ApiError(400, "Invalid request: send text fields, not files")
        return {name: values[0] if len(values) == 1 else values for name, values in fields.items()}
    try:
        text = body.decode("utf-8")
        if forms and kind == "application/x-www-form-urlencoded":
            fields = parse_qs(text, keep_blank_values=True, errors="strict")
            return {name: values[0] if len(values) == 1 else values for name, values in fields.items()}
    except UnicodeDecodeError:
        raise ApiError(400, "Invalid request: the body is not valid UTF-8") from None
    if kind != "application/json":
        raise ApiError(415, f"Invalid request: send JSON{' or a form' if forms else ''}, not {kind}")
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as error:
        raise ApiError(400, f"Invalid request: the body is not JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(fields, dict):
        raise ApiError(400, "Invalid request: send a JSON object of fields")
    return fields


async def _replayed(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _body(request: Request, max_characters: int) -> bytes:
    """The request's body, read no further than a request within the limits can reach."""
    # Room for every character written as a 6-byte \uXXXX escape, and for the rest of the request.
    most = 6 * max_characters + 65536
    too_large = ApiError(413, f"the request body is larger than {most} bytes (--max-characters {max_characters})")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > most:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > most:
            raise too_large
    return bytes(body)


def _validation_message(error: ValidationError) -> str:
    """The first problem pydantic found, in one line."""
    first = error.errors()[0]
    where = first["loc"][0] if first["loc"] else ""
    if where == "text" and first["type"] != "missing":
        return "text must be a line, or a list of lines"
    return f"{where}: {first['msg']}" if where else first["msg"]
