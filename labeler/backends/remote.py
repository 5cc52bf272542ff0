"""What every backend that talks to a server shares: retries with backoff, a thread pool, the API key.

Transient failures (rate limits, 5xx, dropped connections, timeouts) are retried with
exponential backoff and full jitter through tenacity; anything else fails at once. When the
retries run out the last error becomes one LogdistillError line naming the endpoint.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from detector.errors import LogdistillError

T = TypeVar("T")
R = TypeVar("R")

# Local servers (llama.cpp, vLLM, TGI) ignore the key, but the openai client insists on one.
PLACEHOLDER_API_KEY = "no-key-needed"


def api_key_from_env(env_var: str) -> str:
    """The key named by `env_var`, or a placeholder for servers that need none. Never stored."""
    return os.environ.get(env_var) or PLACEHOLDER_API_KEY


def call_with_retries(call: Callable[[], R], is_transient: Callable[[BaseException], bool], *,
                      attempts: int, max_wait: float, describe: Callable[[BaseException], str]) -> R:
    """Run `call`, retrying transient errors; the final failure is a LogdistillError from `describe`."""
    retrying = Retrying(retry=retry_if_exception(is_transient), stop=stop_after_attempt(attempts),
                        wait=wait_random_exponential(multiplier=0.5, max=max_wait), reraise=True)
    try:
        return retrying(call)
    except LogdistillError:
        raise
    except Exception as error:  # every server-side failure ends here as one line
        message = describe(error)
        if is_transient(error):
            message += f" (gave up after {attempts} attempts)"
        raise LogdistillError(message) from error


def map_concurrently(function: Callable[[T], R], items: list[T], concurrency: int) -> list[R]:
    """`[function(x) for x in items]` on `concurrency` threads, in order; the first error cancels the rest."""
    if concurrency <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    pool = ThreadPoolExecutor(max_workers=concurrency)
    try:
        return list(pool.map(function, items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
