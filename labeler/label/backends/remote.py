"""What every backend that talks to a server shares: retries with backoff, a thread pool, the API key,
and a pool of endpoints.

Transient failures (rate limits, 5xx, dropped connections, timeouts) are retried with
exponential backoff and full jitter through tenacity; anything else fails at once. When the
retries run out the last error becomes one LogdistillError line naming the endpoint.

An EndpointPool spreads requests over several servers of the same model, each with its own
number of requests in flight. A server that stops answering (a refused or dropped connection
at once, 5xx and timeouts once its retries run out) is set aside for a cool-down and the
request goes to another; after the cool-down it is tried again. When every server is set
aside the request fails with one line naming each server's last error.
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from detector.core import LogdistillError

T = TypeVar("T")
R = TypeVar("R")

# Local servers (llama.cpp, vLLM, TGI) ignore the key, but the openai client insists on one.
PLACEHOLDER_API_KEY = "no-key-needed"


def api_key_from_env(env_var: str) -> str:
    """The key named by `env_var`, or a placeholder for servers that need none. Never stored."""
    return os.environ.get(env_var) or PLACEHOLDER_API_KEY


@dataclass(frozen=True)
class Retries:
    """How transient failures are retried: `attempts` tries in all, with exponential backoff and
    full jitter, each wait at most `max_wait` seconds."""

    attempts: int = 5
    max_wait: float = 30.0


def call_with_retries(call: Callable[[], R], is_transient: Callable[[BaseException], bool], retries: Retries, *,
                      describe: Callable[[BaseException], str]) -> R:
    """Run `call`, retrying transient errors; the final failure is a LogdistillError from `describe`."""
    retrying = Retrying(retry=retry_if_exception(is_transient), stop=stop_after_attempt(retries.attempts),
                        wait=wait_random_exponential(multiplier=0.5, max=retries.max_wait), reraise=True)
    try:
        return retrying(call)
    except LogdistillError:
        raise
    except Exception as error:  # every server-side failure ends here as one line
        message = describe(error)
        if is_transient(error):
            message += f" (gave up after {retries.attempts} attempts)"
        raise LogdistillError(message) from error


class RemoteBackend:
    """What every backend that talks to a server is configured with beside its model: the name of
    the API key's environment variable, requests in flight (per server), timeout, retries, and
    the answer length of a classification."""

    def __init__(self, *, api_key_env: str, concurrency: int, timeout: float, attempts: int, max_wait: float,
                 max_tokens: int):
        self.api_key_env = api_key_env  # the variable's name, never its value
        self.concurrency = max(1, concurrency)
        self.timeout = timeout
        self.retries = Retries(attempts, max_wait)
        self.max_tokens = max_tokens

    def api_key(self) -> str:
        """The key (or a placeholder) for the client; read now, never kept on the backend."""
        return api_key_from_env(self.api_key_env)


def map_concurrently(function: Callable[[T], R], items: list[T], concurrency: int) -> list[R]:
    """`[function(x) for x in items]` on `concurrency` threads, in order; the first error cancels the rest."""
    if concurrency <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    pool = ThreadPoolExecutor(max_workers=concurrency)
    try:
        return list(pool.map(function, items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def parse_base_urls(base_url: str | list[str] | tuple[str, ...] | None) -> list[str | None]:
    """The endpoints of `--base-url`: a URL, a comma list, or a list of either; [None]: the client's default.

    Each must be an http(s) URL with a host (and a valid port); none may repeat.
    """
    if base_url is None:
        return [None]
    given = [base_url] if isinstance(base_url, str) else list(base_url)
    urls = [u.strip() for item in given for u in str(item).split(",") if u.strip()]
    if not urls:
        return [None]
    for url in urls:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (raises ValueError for a port that is not a number in range)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise LogdistillError(f"--base-url {url!r} is not an http(s) URL with a host, "
                                  f"e.g. http://gpu1:8000/v1 (several: repeat --base-url or separate them by commas)")
    normalized = [u.rstrip("/") for u in urls]
    twice = sorted({u for u in normalized if normalized.count(u) > 1})
    if twice:
        raise LogdistillError(f"--base-url lists {', '.join(twice)} more than once")
    return normalized


@dataclass(eq=False)
class Endpoint:
    """One server of a pool: its URL, its client, and how many requests it may have in flight."""

    url: str
    client: Any
    slots: int
    in_flight: int = 0
    served: int = 0  # requests given to it so far (spreads ties evenly)
    down_until: float = 0.0  # time.monotonic() before which it is set aside
    failure: str | None = None  # why it was last set aside
    checked: bool = False  # `prepare` has run on it
    lock: threading.Lock = field(default_factory=threading.Lock)


class EndpointPool:
    """Requests spread over endpoints; one that stops answering is set aside for `cool_down` seconds."""

    def __init__(self, endpoints: list[Endpoint], cool_down: float = 30.0):
        self.endpoints = endpoints
        self.cool_down = cool_down
        self._changed = threading.Condition()

    @property
    def slots(self) -> int:
        return sum(e.slots for e in self.endpoints)

    def call(self, request: Callable[[Endpoint], R], *, is_transient: Callable[[BaseException], bool],
             is_unreachable: Callable[[BaseException], bool], retries: Retries,
             describe: Callable[[BaseException, Endpoint], str],
             prepare: Callable[[Endpoint], bool] | None = None) -> tuple[R, Endpoint]:
        """(result, the endpoint that gave it) of `request` on the first endpoint that answers.

        On one endpoint this is `call_with_retries` (transient errors retried, then one line).
        In a pool an unreachable endpoint is set aside at once (another can take the request),
        one failing with 5xx or timeouts once its retries run out. A request that
        fails for good on a live server (401, 404, a bad reply) fails here at once: another
        server of the same model would fail it too. `prepare(endpoint)` runs before an
        endpoint's first request (e.g. a check of the model it serves); it returns False to be
        asked again next time, raises LogdistillError to stop.
        """
        alone = len(self.endpoints) == 1
        retry = is_transient if alone else (lambda error: is_transient(error) and not is_unreachable(error))
        while True:
            endpoint = self._acquire()
            failure = None
            try:
                if prepare is not None and not endpoint.checked:
                    with endpoint.lock:
                        if not endpoint.checked:
                            endpoint.checked = prepare(endpoint)
                result = call_with_retries(lambda: request(endpoint), retry, retries,
                                           describe=lambda error: describe(error, endpoint))
                return result, endpoint
            except LogdistillError as error:
                if alone or error.__cause__ is None or not is_transient(error.__cause__):
                    raise  # alone: nowhere else to go, and a later call may find the server back
                failure = str(error)
            finally:
                self._release(endpoint, failure)

    def _acquire(self) -> Endpoint:
        with self._changed:
            while True:
                now = time.monotonic()
                up = [e for e in self.endpoints if e.down_until <= now]
                if not up:
                    raise LogdistillError(self._all_down())
                free = [e for e in up if e.in_flight < e.slots]
                if free:
                    endpoint = min(free, key=lambda e: (e.in_flight / e.slots, e.served))
                    endpoint.in_flight += 1
                    endpoint.served += 1
                    return endpoint
                self._changed.wait(timeout=0.5)

    def _release(self, endpoint: Endpoint, failure: str | None) -> None:
        with self._changed:
            endpoint.in_flight -= 1
            if failure is not None:
                endpoint.failure = failure
                endpoint.down_until = time.monotonic() + self.cool_down
            self._changed.notify_all()

    def _all_down(self) -> str:
        return ("every server of the pool is down (answers so far are cached: run again to continue): "
                + "; ".join(e.failure or f"{e.url} is down" for e in self.endpoints))

    def close(self) -> None:
        for endpoint in self.endpoints:
            endpoint.client.close()
