"""The worker loop: claim, weights, images, compute, upload, repeat; and when to stop.

Only orchestration lives here. HTTP is ``api_client``; what a unit computes is the
run's strategy (``shared.strategies``), which the loop never inspects; images come
from ``images``, weights from ``weights``.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from tqdm import tqdm

from shared.codec import DTYPE_NAMES, CodecError, encode_result
from shared.protocol import DatasetInfo, HardwareInfo, ResultResponse, WorkUnit
from shared.strategies import InnerOptimizer, strategy_for
from worker_client.api_client import CoordinatorClient
from worker_client.backoff import Backoff
from worker_client.errors import (
    ApiError,
    ConfigError,
    CoordinatorUnavailable,
    LeaseLost,
    NotFound,
    ResultRejected,
    ResultTooLarge,
    RunFinished,
    UnknownToken,
    WorkerError,
    WorkerFlagged,
    WorkerRevoked,
)
from worker_client.heartbeat import Heartbeat
from worker_client.identity import Identity, IdentityInUse, IdentityStore
from worker_client.images import ImageSource, open_image_source
from worker_client.report import Totals, duration, hardware_lines, megabytes, metrics_line
from worker_client.retry import Retrier
from worker_client.settings import WorkerSettings
from worker_client.stopping import ForceStop, StopSignal
from worker_client.weights import WeightsCache

log = logging.getLogger("worker_client")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_AUTH = 3
EXIT_FORCED = 130  # the shell's convention for "ended by Ctrl+C"
# How long a claim may wait at the coordinator for work: the next synchronous phase comes
# the moment it is published, and a stop request is honoured within this many seconds.
CLAIM_WAIT = 5.0


class Worker:
    """One student's worker: an identity, a device, and the loop."""

    def __init__(
        self,
        settings: WorkerSettings,
        client: CoordinatorClient,
        store: IdentityStore,
        stop: StopSignal,
        *,
        device: torch.device,
        hardware: HardwareInfo,
        new_identity: bool = False,
    ) -> None:
        self.settings = settings
        self.client = client
        self.store = store
        self.stop = stop
        self.device = device
        self.hardware = hardware
        self.new_identity = new_identity
        self.totals = Totals()
        self.weights = WeightsCache(client.weights, device)
        self.heartbeat = Heartbeat(client.heartbeat, settings.heartbeat_interval)
        self.current: WorkUnit | None = None
        self._source: tuple[DatasetInfo, ImageSource] | None = None
        # The inner Adam of a per_worker local-steps run, for this process's life (per run).
        self._inner: tuple[int, InnerOptimizer] | None = None
        # An asynchronous run's next unit, claimed (and its weights fetched) while the
        # current one computes, so that the compute never waits on the network.
        self._ahead: Future[WorkUnit | None] | None = None
        self._ahead_pool = ThreadPoolExecutor(1, thread_name_prefix="claim-ahead")
        self.retry = Retrier(
            settings.url,
            stop,
            initial=min(1.0, settings.poll_interval),
            maximum=settings.max_poll_interval,
        )
        self._reregistered = False

    # --- top level ---------------------------------------------------------------------

    def run(self) -> int:
        """Join (or rejoin) the class, then work until told to stop; returns the exit code."""
        log.info("Initializing gan-worker for %s", self.settings.url)
        for line in hardware_lines(self.hardware):
            log.info(line)
        try:
            with self.store.in_use(self.settings.url, self.settings.name):
                return self._join_and_work()
        except IdentityInUse as exc:
            raise ConfigError(
                f"another gan-worker (process {exc.pid}) is already running as "
                f"{self.settings.name!r} for {self.settings.url}; give this one its own "
                "--name (e.g. one name per GPU)"
            ) from None

    def _join_and_work(self) -> int:
        try:
            identity = self._join()
        except CoordinatorUnavailable:
            if not self.stop.requested:
                raise
            log.info("Stopped before joining the class.")
            return EXIT_OK
        log.info("Worker id %d, name %r", identity.worker_id, identity.name)
        self.heartbeat.start()
        try:
            return self._loop()
        except ForceStop:
            log.info("Stopped at once. %s", self.totals.line())
            return EXIT_FORCED
        finally:
            self._give_back_ahead()
            self._ahead_pool.shutdown()
            self.heartbeat.stop()

    def _join(self) -> Identity:
        url, name = self.settings.url, self.settings.name
        stored = None if self.new_identity else self.store.load(url, name)
        if stored is not None:
            self.client.token = stored.token
            log.info("Using the saved identity from %s", self.store.path)
            return stored
        if not self.settings.join_code:
            raise ConfigError(
                f"this worker has not joined the class at {url} yet: run it once with "
                "--join-code CODE (your instructor has the code)"
            )
        hardware, join_code = self.hardware, self.settings.join_code
        answer = self.retry.call(lambda: self.client.register(join_code, name, hardware))
        identity = Identity(url=url, name=name, worker_id=answer.worker_id, token=answer.token)
        self.store.save(identity)
        self.client.token = identity.token
        log.info("Joined the class as %r; identity saved in %s", answer.name, self.store.path)
        return identity

    def _loop(self) -> int:
        idle = Backoff(self.settings.poll_interval, self.settings.max_poll_interval)
        waiting = False
        while True:
            if self.stop.requested:
                log.info("Stopped. %s", self.totals.line())
                return EXIT_OK
            limit = self.settings.max_units
            if limit is not None and self.totals.units + self.totals.dropped >= limit:
                log.info("Done: reached --max-units %d. %s", limit, self.totals.line())
                return EXIT_OK
            try:
                asked = time.monotonic()
                unit = self._take_ahead() or self.retry.call(
                    lambda: self.client.claim(self._cached_shards(), wait=CLAIM_WAIT)
                )
                if unit is None:
                    if not waiting:
                        log.info("Waiting for work units...")
                        waiting = True
                    if time.monotonic() - asked < CLAIM_WAIT / 2:
                        self.stop.wait(idle.next())  # it answered at once: poll politely
                    continue
                waiting = False
                idle.reset()
                self._process(unit)
            except RunFinished:
                log.info(
                    "The training run is finished. Thank you for helping! %s", self.totals.line()
                )
                return EXIT_OK
            except UnknownToken as exc:
                if not self._rejoin(exc):
                    return EXIT_AUTH
            except WorkerFlagged as exc:
                log.error(
                    "The coordinator stopped this worker: other workers recomputed some of "
                    "its units and got different results (%s). This can be a broken GPU "
                    "driver or a modified worker; show this message to your instructor, "
                    "who can check and clear the flag.",
                    exc.detail,
                )
                return EXIT_AUTH
            except WorkerRevoked as exc:
                log.error(
                    "The coordinator refused this worker: the instructor removed it (%s). "
                    "Ask your instructor; to join again under a new name run with "
                    "--name NEW_NAME --join-code CODE.",
                    exc.detail,
                )
                return EXIT_AUTH
            except CoordinatorUnavailable:
                continue  # a stop request ended the wait; the top of the loop says goodbye
            except ApiError as exc:
                if isinstance(exc, NotFound) and exc.code == "no_run":
                    if not waiting:
                        log.info("No training run has started yet. Waiting for work units...")
                        waiting = True
                else:  # an answer we did not expect: say so, wait, go on
                    log.warning("The coordinator answered %s; trying again shortly", exc)
                self.stop.wait(idle.next())

    def _rejoin(self, exc: UnknownToken) -> bool:
        """401: the coordinator forgot this worker (e.g. a new class database)."""
        self.store.forget(self.settings.url, self.settings.name)
        if self._reregistered or not self.settings.join_code:
            log.error(
                "The coordinator does not know this worker's token (%s); it was probably "
                "reset for a new class. The saved identity was removed: run again with "
                "--join-code CODE to join again.",
                exc.detail,
            )
            return False
        log.warning("The coordinator does not know this worker any more; joining again")
        self._reregistered = True
        self.new_identity = True
        identity = self._join()
        log.info("Worker id %d, name %r", identity.worker_id, identity.name)
        return True

    # --- one unit ----------------------------------------------------------------------

    def _process(self, unit: WorkUnit) -> None:
        started = time.perf_counter()
        n = len(unit.image_indices)
        self.current = unit
        self.stop.busy = True
        self.heartbeat.hold(unit.lease_seconds_left)
        try:
            backup = " [backup copy]" if unit.is_backup else ""
            log.info(
                "Processing work unit %d (iteration %d)%s", unit.unit_id, unit.iteration, backup
            )
            steps = (  # H, when the unit trains local steps (its size sets it)
                f", H = {-(-n // unit.run.batch_size)} inner steps"
                if unit.run.local_steps else ""
            )
            log.info(
                "  %d images in micro-batches of %d%s (%s run)",
                n, unit.run.batch_size, steps, unit.run.result_kind.replace("_", " "),
            )  # fmt: skip
            body = self._compute(unit)
            answer = self._upload(unit, body)
        except LeaseLost as exc:
            self.totals.dropped += 1
            log.warning(
                "Work unit %d is not needed any more (%s); moving on", unit.unit_id, exc.detail
            )
            return
        except ForceStop:  # the second Ctrl+C: hand the unit back before quitting
            self._release_current()
            raise
        except CoordinatorUnavailable:
            self.totals.dropped += 1
            log.error(
                "Gave up on work unit %d: the coordinator stayed unreachable for %s (its "
                "lease will expire and someone will redo it)",
                unit.unit_id,
                duration(self.settings.upload_retry_seconds),
            )
            return
        except CodecError as exc:
            log.error("The weights for iteration %d are damaged (%s)", unit.iteration, exc)
            self._release_current()
            return
        except (ResultTooLarge, ResultRejected) as exc:
            self.totals.dropped += 1
            log.error("The coordinator refused the result of unit %d: %s", unit.unit_id, exc)
            self._release_current()
            return
        finally:
            self.heartbeat.drop()
            self.current = None
            self.stop.busy = False
        if not answer.accepted:
            self.totals.dropped += 1
            log.info("Work unit %d was not counted (another copy came first)", unit.unit_id)
            return
        if answer.duplicate:
            log.info("Work unit %d was already uploaded; counted once", unit.unit_id)
        else:
            log.info("Work unit %d completed successfully!", unit.unit_id)
        self.totals.add(answer.num_samples, time.perf_counter() - started)
        log.info(self.totals.line())

    def _compute(self, unit: WorkUnit) -> bytes:
        strategy = strategy_for(unit.run)
        generator, discriminator = self.retry.call(
            lambda: self.weights.networks_for(unit),
            holding_unit=True,
            give_up_after=self.settings.upload_retry_seconds,
        )
        download = self.weights.last_download
        if download is not None:
            part = f" ({' and '.join(download.networks)} only)" if download.networks else ""
            when = " while the last unit computed" if download.ahead else ""
            log.info(
                "  Downloaded weights of iteration %d%s: %s in %.2f s%s",
                download.iteration,
                part,
                megabytes(download.num_bytes),
                download.seconds,
                when,
            )
        images = None
        if strategy.needs_images(unit.iteration):
            images = self.retry.call(  # an imported dataset's shards may need downloading
                lambda: self._image_source(unit.run.dataset).load(unit.image_indices),
                holding_unit=True,
                give_up_after=self.settings.upload_retry_seconds,
            )
        self._claim_ahead(unit)  # the network's part of the next unit, while this one trains
        with tqdm(
            total=len(unit.image_indices), unit="img", desc="  Training",
            disable=not self.settings.progress, leave=False, dynamic_ncols=True,
        ) as bar:  # fmt: skip
            result = strategy.compute(
                generator, discriminator, images, unit.image_indices,
                version=unit.iteration, on_micro_batch=lambda done: _advance(bar, done),
                inner=self._inner_optimizer(unit.run.run_id),
            )  # fmt: skip
        log.info("  %s", metrics_line(result.metrics))
        return encode_result(result, DTYPE_NAMES[unit.run.result_dtype])

    # --- the next unit, ahead ------------------------------------------------------------

    def _claim_ahead(self, unit: WorkUnit) -> None:
        """In an asynchronous run, claim the next unit and fetch its weights in the
        background while this one computes (a run with a barrier has no next unit until
        the fold)."""
        if unit.run.max_staleness is None or self._ahead is not None or self.stop.requested:
            return
        limit = self.settings.max_units
        if limit is not None and self.totals.units + self.totals.dropped + 1 >= limit:
            return  # this unit is the last one asked for
        self._ahead = self._ahead_pool.submit(self._claim_and_fetch, self._cached_shards())

    def _claim_and_fetch(self, cached: list[int]) -> WorkUnit | None:
        """The background half: None whenever anything goes wrong (the loop then claims
        as usual; a unit leased here is handed back by whoever takes it)."""
        try:
            unit = self.client.claim(cached)
            if unit is not None:
                self.weights.fetch_ahead(unit)
            return unit
        except WorkerError as exc:
            log.debug("claiming ahead failed (%s); the loop claims as usual", exc)
            return None

    def _take_ahead(self) -> WorkUnit | None:
        """The unit claimed ahead, if there is one and it is still within the run's
        staleness bound: its weights must not be older than a result may be, or the
        compute would be for nothing. Otherwise it is handed back at once."""
        ahead, self._ahead = self._ahead, None
        unit = ahead.result() if ahead is not None else None
        if unit is None:
            return None
        assert unit.run.max_staleness is not None
        try:
            behind = self.client.current_version(unit.run.run_id) - unit.iteration
        except WorkerError as exc:
            log.debug("could not check how stale unit %d is (%s)", unit.unit_id, exc)
            behind = 0  # the upload will say; nothing is gained by dropping the unit
        if behind > unit.run.max_staleness:
            log.info(
                "Work unit %d, claimed ahead, is %d versions behind the class (at most %d): "
                "handing it back",
                unit.unit_id, behind, unit.run.max_staleness,
            )  # fmt: skip
            self._release(unit)
            return None
        return unit

    def _give_back_ahead(self) -> None:
        """Stopping: a unit claimed ahead goes back to the pool at once."""
        ahead, self._ahead = self._ahead, None
        unit = ahead.result() if ahead is not None else None
        if unit is not None:
            self._release(unit)

    def _inner_optimizer(self, run_id: int) -> InnerOptimizer:
        """This worker's inner optimizer state for the run: fresh for a new run."""
        if self._inner is None or self._inner[0] != run_id:
            self._inner = (run_id, InnerOptimizer())
        return self._inner[1]

    def _upload(self, unit: WorkUnit, body: bytes) -> ResultResponse:
        started = time.perf_counter()
        answer = self.retry.call(
            lambda: self.client.upload(unit.unit_id, unit.lease_id, body),
            holding_unit=True,
            give_up_after=self.settings.upload_retry_seconds,
        )
        log.info("  Uploaded %s in %.2f s", megabytes(len(body)), time.perf_counter() - started)
        return answer

    def _image_source(self, dataset: DatasetInfo) -> ImageSource:
        if self._source is None or self._source[0] != dataset:
            source = open_image_source(dataset, self.client, self.settings)
            log.info("Dataset: %s, %d images (%s)", dataset.dataset_id, len(source), dataset.kind)
            self._source = (dataset, source)
        return self._source[1]

    def _cached_shards(self) -> list[int]:
        return self._source[1].cached_shards() if self._source else []

    def _release_current(self) -> None:
        if self.current is not None:
            self._release(self.current)
        self.current = None

    def _release(self, unit: WorkUnit) -> None:
        try:
            self.client.release(unit.unit_id, unit.lease_id)
            log.info("Handed work unit %d back to the coordinator", unit.unit_id)
        except WorkerError as exc:
            log.info(
                "Could not hand work unit %d back (%s); its lease will expire", unit.unit_id, exc
            )


def _advance(bar: tqdm, images: int) -> None:
    bar.update(images)
