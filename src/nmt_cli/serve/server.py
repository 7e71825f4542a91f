"""Running the service: the listening socket, uvicorn, and a stop that finishes what is in flight.

The socket is bound before the model loads, so a port in use is the user's one-line mistake
at once. The model then loads on the translation worker while the server already answers
(`/health` says "loading"). SIGTERM or SIGINT stops accepting connections, lets the requests
under way be answered, translates what is queued, and returns: a stop asked for is a success.
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import uvicorn

from nmt_cli.errors import UserError
from nmt_cli.serve.app import create_app
from nmt_cli.serve.batching import TranslationQueue

if TYPE_CHECKING:
    from nmt_cli.config import ServeOptions
    from nmt_cli.trained import TrainedModel
    from nmt_cli.translation import Translator


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to `host`:`port` and listening; a user's mistake (address, port in use) is a `UserError`."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        server = socket.socket(family, kind, protocol)
    except (socket.gaierror, UnicodeError) as error:
        raise UserError(f"--host {host} is not an address of this machine ({error})") from None
    try:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(address)
        server.listen(2048)
    except OSError as error:
        server.close()
        raise UserError(f"cannot listen on {_url(host, port)}: {error.strerror or error}") from None
    return server


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_of(server: socket.socket) -> str:
    host, port = server.getsockname()[:2]
    return _url(host, port)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(
    model: TrainedModel,
    options: ServeOptions,
    server_socket: socket.socket,
    open_translator: Callable[[], Translator],
    on_listening: Callable[[], None],
    on_ready: Callable[[Translator], None],
) -> None:
    """Serve until SIGTERM or SIGINT; raises what kept the model from loading."""

    def stop_serving(error: BaseException) -> None:
        server.should_exit = True

    queue = TranslationQueue(open_translator, options.batch_lines, options.queue_lines, on_ready, stop_serving)
    app = create_app(model, queue, options)
    # uvicorn's own logging setup would print its start-up lines; ours is the CLI's listening line.
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=None)
    server = _Server(config, on_listening)
    server.run(sockets=[server_socket])
    if queue.failure is not None:
        raise queue.failure


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_listening: Callable[[], None]):
        super().__init__(config)
        self._on_listening = on_listening

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_listening()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn raises the signal again once it has stopped, which would end the process by
        # that signal; a stop asked for and done gracefully ends with status 0 instead.
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {number: signal.signal(number, self.handle_exit) for number in handled}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
