"""`score --workers N`: batches scored by N processes, written in input order.

The chunks go round-robin to `workers` processes (this one and forked children) that parse,
mask, score and format them; a reader thread counts each chunk's records on its bytes (to number
them) and hands it out at once, and the text comes back out in input order, so a line arriving on
a pipe is answered as it arrives.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import queue
import signal
import sys
import threading
from typing import BinaryIO

from detector.core import LogdistillError
from detector.runtime.bundle import Bundle
from detector.runtime.formats import InputFormat
from detector.runtime.onnx_session import new_session
from detector.runtime.output import Output, ScoreSummary
from detector.runtime.stream import BatchWork, byte_batches, count_records, decode_lines


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------------------- worker processes

_FORKED_JOB: tuple | None = None  # what a forked worker inherits: (bundle, fmt, threshold, output, only_anomalies)


def _worker_main(inbox, outbox, inherited) -> None:
    """A forked worker: batches (bytes, first position, scores other workers computed) in,
    (text, records, anomalous, scored, the (key, score) pairs it computed) out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    for conn in inherited:  # the other ends, so the parent's exit reads as end of input here
        conn.close()
    bundle, fmt, threshold, output, only_anomalies = _FORKED_JOB
    if bundle.model_bytes is not None:  # never run a session whose threads stayed in the parent
        bundle = dataclasses.replace(bundle, session=new_session(bundle.model_bytes, threads=1))
    work = BatchWork(bundle, fmt, threshold, output, only_anomalies)
    try:
        while True:
            task = inbox.recv()
            if task is None:
                outbox.send(("done", *work.counts()))
                return
            data, position, learned = task
            work.scorer.learn(learned)
            try:
                text, records, anomalous, scored = work.run(decode_lines(data), position)
                result = ("ok", text, records, anomalous, scored, work.scorer.new_scores())
            except LogdistillError as e:
                result = ("error", str(e))
            except Exception as e:  # reported by the parent as one line, like every other failure
                result = ("error", f"a scoring worker failed: {type(e).__name__}: {e}")
            outbox.send(result)
    except (EOFError, OSError):  # the parent has gone or stopped early
        return


def score_parallel(bundle: Bundle, stream: BinaryIO, writer: Output, fmt: InputFormat, threshold: float,
                    output: str, only_anomalies: bool, chunk_bytes: int, workers: int) -> ScoreSummary:
    """`workers` processes in all: this one scores every `workers`-th batch itself, forked
    children the others (so two workers are two processes, and their memory two copies at most).
    The scores each computes of texts new to it reach the others with their next batch, so a text
    is embedded by two workers only when both meet it before either's result is back."""
    global _FORKED_JOB
    context = multiprocessing.get_context("fork")
    children = workers - 1
    pipes = [(context.Pipe(duplex=False), context.Pipe(duplex=False)) for _ in range(children)]
    parent_ends = [end for (task_pipe, result_pipe) in pipes for end in (task_pipe[1], result_pipe[0])]
    _FORKED_JOB = (bundle, fmt, threshold, output, only_anomalies)
    for text_stream in (writer.out, sys.stdout, sys.stderr):  # a child flushes its copy of any buffered text at exit
        text_stream.flush()
    processes = []
    try:
        for (task_recv, _), (_, result_send) in pipes:
            process = context.Process(target=_worker_main, args=(task_recv, result_send, parent_ends), daemon=True)
            process.start()
            processes.append(process)
    finally:
        _FORKED_JOB = None
    for (task_recv, _), (_, result_send) in pipes:
        task_recv.close()
        result_send.close()
    task_ends = [task_pipe[1] for task_pipe, _ in pipes]
    result_ends = [result_pipe[0] for _, result_pipe in pipes]
    own = BatchWork(bundle, fmt, threshold, output, only_anomalies)
    # scores computed by one worker and not yet sent to each child; the reader thread sends them
    learned: list[list[tuple]] = [[] for _ in range(children)]
    learned_lock = threading.Lock()

    # A reader thread reads, numbers and hands out batches (batch k to worker k % workers;
    # worker 0 is this thread); this thread scores its own and writes every result in order.
    dispatched: queue.Queue = queue.Queue(maxsize=2 * workers)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                dispatched.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            position = 0
            for k, data in enumerate(byte_batches(stream, chunk_bytes)):
                worker, count = k % workers, count_records(data)
                if worker == 0:
                    if not put((0, count, data, position)):
                        return
                else:
                    if not put((worker, count, None, position)):
                        return
                    with learned_lock:
                        scores, learned[worker - 1] = learned[worker - 1], []
                    task_ends[worker - 1].send((data, position, scores))
                position += count
            put(None)
        except BaseException as e:  # handed to the writer, which raises it
            put(e)

    reader = threading.Thread(target=read, name="logdistill-score-reader", daemon=True)
    reader.start()
    seen: set = set()  # the keys scored by any worker
    try:
        while True:
            item = dispatched.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            worker, count, data, position = item
            if worker == 0:
                text, records, anomalous, scored = own.run(decode_lines(data), position)
                new = own.scorer.new_scores()
            else:
                try:
                    result = result_ends[worker - 1].recv()
                except EOFError:
                    raise LogdistillError("a scoring worker stopped unexpectedly") from None
                if result[0] == "error":
                    raise LogdistillError(result[1])
                _, text, records, anomalous, scored, new = result
            if records != count:  # the positions already handed out would be wrong
                raise LogdistillError(f"internal error: a batch of {count} records came back with {records}")
            writer.write(text, records, anomalous, scored)
            new = [pair for pair in new if pair[0] not in seen]
            seen.update(key for key, _ in new)
            if new:
                if worker != 0:
                    own.scorer.learn(new)
                with learned_lock:
                    for child in range(children):
                        if child != worker - 1:
                            learned[child].extend(new)
        summary = writer.finish()
        summary.mask_cache_hits, summary.mask_cache_misses, summary.embeddings = own.counts()
        for conn in task_ends:
            conn.send(None)
        for conn in result_ends:
            result = conn.recv()
            summary.mask_cache_hits += result[1]
            summary.mask_cache_misses += result[2]
            summary.embeddings += result[3]
    finally:
        stop.set()
        for conn in task_ends + result_ends:
            conn.close()
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join()
    summary.unique_texts = len(seen)
    return summary
