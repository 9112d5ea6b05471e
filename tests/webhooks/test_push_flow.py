"""Push waiting as decisions, with no I/O: the flow yields WaitForSignal, reads once per wake,
keeps woken reads apart, and falls back to sparse reads that get denser while callbacks get
lost. Plus the polling schedule's goals against a fixed 1 s poller, on a fake clock."""

from __future__ import annotations

import itertools
import random
import statistics
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mai_tools import GenerateRequest, ImageResult, JobTimeoutError, PollPolicy
from mai_tools._actions import Flow, HTTPRequest, Notify, Sleep, WaitForSignal
from mai_tools._config import ClientOptions
from mai_tools._flow import FlowCore
from mai_tools._policies import CallbackStats, DurationStats, FakeClock
from tests.core.test_policies import _simulate
from tests.support.fakes import BASE, KEY, RID, ok, queued

BODY = GenerateRequest(prompt="a pushed cat")
WINDOW_SAMPLES = [4.5, 5.5, 6.5, 7.5, 8.5] * 4


@dataclass
class Script:
    """Drives a flow: ``wakes`` answers each WaitForSignal (True: the callback came; a float:
    it came after that many seconds; None: the time ran out); GETs answer from ``statuses``."""

    wakes: list[bool | float | None]
    statuses: list[httpx.Response]
    clock: FakeClock = field(default_factory=FakeClock)
    actions: list[Any] = field(default_factory=list)
    reads: list[float] = field(default_factory=list)

    def run(self, flow: Flow[Any]) -> Any:
        reply: Any = None
        while True:
            try:
                action = flow.send(reply)
            except StopIteration as stop:
                return stop.value
            reply = None
            self.actions.append(action)
            if isinstance(action, HTTPRequest):
                if action.method == "POST":
                    reply = queued()
                else:
                    self.reads.append(self.clock.monotonic())
                    reply = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            elif isinstance(action, Sleep):
                self.clock.advance(action.seconds)
            elif isinstance(action, WaitForSignal):
                wake = self.wakes.pop(0) if self.wakes else None
                if wake is True:
                    reply = True
                elif isinstance(wake, float) and wake < action.seconds:
                    self.clock.advance(wake)
                    reply = True
                else:
                    self.clock.advance(action.seconds)

    def waits(self) -> list[WaitForSignal]:
        return [a for a in self.actions if isinstance(a, WaitForSignal)]


def _core(clock: FakeClock, *, learned: bool = True) -> FlowCore:
    core = FlowCore(ClientOptions.resolve(KEY, base_url=BASE), clock=clock)
    if learned:
        core.durations.update({"generate": WINDOW_SAMPLES})
    return core


def test_a_callback_ends_the_wait_with_one_status_read() -> None:
    script = Script(wakes=[6.0], statuses=[ok("COMPLETED")])
    core = _core(script.clock)
    window = core.durations.window("generate", core.poll_policy)  # as the wait saw it
    assert window is not None
    result = script.run(
        core.run_flow(BODY, webhook_url="http://127.0.0.1/h/t", timeout=60, push=True)
    )
    assert isinstance(result, ImageResult)
    assert len(script.reads) == 1  # no early poll, no polls through the window
    assert script.reads[0] == pytest.approx(6.0)
    (wait,) = script.waits()
    # The only fallback read planned: the window's end plus the margin.
    assert wait.seconds == pytest.approx(window[1] + core.poll_policy.push_margin)
    assert wait.request_id == RID
    assert not core.callbacks.lossy()


def test_the_submit_carries_the_receivers_url() -> None:
    script = Script(wakes=[True], statuses=[ok("COMPLETED")])
    flow = _core(script.clock).run_flow(
        BODY, webhook_url="http://127.0.0.1:9/mai-tools/webhooks/tok", timeout=60, push=True
    )
    script.run(flow)
    post = script.actions[0]
    assert isinstance(post, HTTPRequest)
    assert post.headers["X-Webhook-URL"] == "http://127.0.0.1:9/mai-tools/webhooks/tok"


def test_a_forged_callback_costs_one_read_and_ends_nothing() -> None:
    # Woken at once (forged), then again at once (replayed), then the real callback.
    script = Script(
        wakes=[True, True, 6.0],
        statuses=[ok("PROCESSING"), ok("PROCESSING"), ok("COMPLETED")],
    )
    notes: list[str] = []
    flow = _core(script.clock).run_flow(
        BODY, webhook_url="http://127.0.0.1/h/t", timeout=60, push=True
    )
    result = script.run(flow)
    notes = [a.status.status.value for a in script.actions if isinstance(a, Notify)]
    assert isinstance(result, ImageResult)
    assert notes == ["QUEUED", "PROCESSING", "COMPLETED"]
    assert len(script.reads) == 3
    gaps = [b - a for a, b in itertools.pairwise(script.reads)]
    assert all(g >= PollPolicy().min_interval - 1e-9 for g in gaps)  # wakes never flood reads


def test_a_lost_callback_is_found_by_a_fallback_read_and_makes_the_next_waits_denser() -> None:
    clock = FakeClock()
    core = _core(clock)
    lost = Script(wakes=[None], statuses=[ok("COMPLETED")], clock=clock)
    lost.run(core.run_flow(BODY, webhook_url="http://127.0.0.1/h/t", timeout=60, push=True))
    assert len(lost.reads) == 1
    assert core.callbacks.lossy()
    nxt = Script(
        wakes=[None, None, None], statuses=[ok("PROCESSING")] * 2 + [ok("COMPLETED")], clock=clock
    )
    window = core.durations.window("generate", core.poll_policy)  # as the next wait sees it
    assert window is not None
    nxt.run(core.run_flow(BODY, webhook_url="http://127.0.0.1/h/t", timeout=60, push=True))
    first = nxt.waits()[0].seconds
    # Dense now: the first fallback read a lossy interval into the window, not past its end.
    assert first == pytest.approx(window[0] + core.poll_policy.push_lossy_interval)
    assert all(w.seconds <= core.poll_policy.push_lossy_interval + 1e-9 for w in nxt.waits()[1:])


def test_a_push_wait_that_hears_nothing_ends_at_its_deadline_as_still_running() -> None:
    script = Script(wakes=[], statuses=[ok("PROCESSING")])
    flow = _core(script.clock).run_flow(
        BODY, webhook_url="http://127.0.0.1/h/t", timeout=30, push=True
    )
    with pytest.raises(JobTimeoutError):
        script.run(flow)
    assert script.clock.monotonic() <= 30 + 1e-9
    # Sparse: one read past the window, then backing off (1.5, 2.25, 3.4, 5.1, 7.6 s).
    assert 2 <= len(script.reads) <= 8


def test_a_pushed_resume_reads_at_once_then_waits_for_the_callback() -> None:
    script = Script(wakes=[2.0], statuses=[ok("PROCESSING"), ok("COMPLETED")])
    flow = _core(script.clock).resume_flow(RID, None, timeout=60, push=True)
    assert isinstance(script.run(flow), ImageResult)
    assert script.reads == [0.0, pytest.approx(2.0)]


def test_without_push_the_flow_never_waits_for_a_signal() -> None:
    script = Script(wakes=[], statuses=[ok("PROCESSING")] * 3 + [ok("COMPLETED")])
    script.run(_core(script.clock).run_flow(BODY, webhook_url=None, timeout=60))
    assert script.waits() == []


# --------------------------------------------------------------------------- the schedules


def test_fallback_reads_are_sparse_then_back_off() -> None:
    policy = PollPolicy()
    window = (4.5, 8.5)
    t, last, reads = 0.0, None, []
    while t < 60:
        delay = policy.push_delay(elapsed=t, last_gap=last, window=window, lossy=False)
        t += delay
        last = delay
        reads.append(t)
    assert reads[0] == pytest.approx(8.5 + policy.push_margin)
    gaps = [b - a for a, b in itertools.pairwise(reads)]
    assert gaps == sorted(gaps)
    assert max(gaps) <= policy.push_max_interval
    assert len(reads) < 10  # a minute of waiting for a lost callback: a handful of reads


def test_cold_fallback_reads_need_no_learned_window() -> None:
    policy = PollPolicy()
    first = policy.push_delay(elapsed=0, last_gap=None, window=None, lossy=False)
    assert first == pytest.approx(policy.push_cold_delay)


@given(
    elapsed=st.floats(0, 10_000),
    last_gap=st.none() | st.floats(0, 10_000),
    low=st.floats(0, 1_000),
    width=st.floats(0, 1_000),
    lossy=st.booleans(),
)
def test_fallback_gaps_stay_bounded(
    elapsed: float, last_gap: float | None, low: float, width: float, lossy: bool
) -> None:
    policy = PollPolicy()
    window = (low, low + width)
    delay = policy.push_delay(elapsed=elapsed, last_gap=last_gap, window=window, lossy=lossy)
    assert delay >= policy.min_interval - 1e-9
    if lossy or elapsed >= low + width + policy.push_margin:
        assert delay <= max(policy.push_max_interval, policy.max_interval)
    else:  # the one long sleep: to the window's end plus the margin (never under the floor)
        to_window_end = low + width + policy.push_margin - elapsed
        assert delay <= max(to_window_end, policy.min_interval) + 1e-9


def test_callback_stats_forget_old_losses() -> None:
    stats = CallbackStats(history=3)
    assert not stats.lossy()
    stats.record(False)
    assert stats.lossy()
    assert stats.lost() == 1
    for _ in range(3):
        stats.record(True)
    assert not stats.lossy()


def test_adaptive_polling_beats_a_fixed_1s_poller_on_latency_and_reads() -> None:
    """On a fake clock (zero network time), 4.5-8.5 s jobs: status reads <= 0.8x those of a
    fixed 1 s poller, p95 no worse, median well under. (The goal, median <= 0.5x, is measured
    by benchmarks/push.py: there the fixed poller's reads cost time too, and it detects about
    0.1 s later than on this clock; here its median is 0.43 s, a lucky draw under 0.5 s.)"""
    median, p95, reads = _simulate(PollPolicy(), warmup=20, jobs=200)
    median_1s, p95_1s, reads_1s = _simulate(PollPolicy.fixed(1.0), warmup=0, jobs=200)
    assert median <= 0.6 * median_1s
    assert reads <= 0.8 * reads_1s
    assert p95 <= p95_1s


# ------------------------------------------------------- the push benchmark's polling model


def _crowd(
    policy: PollPolicy, warmup: list[float], jobs: list[float]
) -> tuple[float, float, float]:
    """(median detection, p95 detection, mean status reads) of ``jobs`` (durations) all
    submitted together after ``warmup`` jobs were learned, as in benchmarks/push.py: every job
    waits with the window learned from the warm-up (the crowd's own jobs end too late to
    change it). The real flow, on a fake clock with zero request cost."""
    options = ClientOptions.resolve(KEY, base_url=BASE)
    learned = DurationStats()
    learned.update({"generate": warmup})
    latencies, reads = [], []
    for duration in jobs:
        clock = FakeClock()
        durations = DurationStats()
        durations.update(learned.to_dict())
        core = FlowCore(options, poll_policy=policy, clock=clock, durations=durations)
        flow = core.run_flow(BODY, webhook_url=None, timeout=120)
        count, reply = 0, None
        while True:
            try:
                action = flow.send(reply)
            except StopIteration:
                break
            reply = None
            if isinstance(action, HTTPRequest):
                if action.method == "POST":
                    reply = queued()
                else:
                    count += 1
                    done = clock.monotonic() >= duration
                    reply = ok("COMPLETED" if done else "PROCESSING")
            elif isinstance(action, Sleep):
                clock.advance(action.seconds)
        latencies.append(clock.monotonic() - duration)
        reads.append(count)
    latencies.sort()
    return (
        statistics.median(latencies),
        latencies[int(0.95 * len(latencies)) - 1],
        statistics.mean(reads),
    )


def _uniform(seed: int, count: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(4.5, 8.5) for _ in range(count)]


def _warmups(count: int) -> list[list[float]]:
    return [_uniform(seed, 20) for seed in range(count)]


JOBS = _uniform(99, 200)


def test_the_push_benchmark_model_reads_at_most_0_8x_a_fixed_1s_poller() -> None:
    """benchmarks/push.py's adaptive-polling goal on a deterministic model: 200 concurrent
    4.5-8.5 s jobs after 20 warm-up jobs, for 12 different warm-ups. Status reads <= 0.8x
    those of a fixed 1 s poller for every warm-up; p95 no worse; median detection under 0.6x
    its median (the live goal, 0.5x, is measured by the benchmark: there the fixed poller's
    bursts of 200 reads detect later than on this clock)."""
    median_1s, p95_1s, reads_1s = _crowd(PollPolicy.fixed(1.0), [], JOBS)
    assert reads_1s == pytest.approx(7.055)  # the model: a read a second until the job is done
    runs = [_crowd(PollPolicy(), warmup, JOBS) for warmup in _warmups(12)]
    assert max(reads for _, _, reads in runs) <= 0.75 * reads_1s
    assert statistics.mean(reads for _, _, reads in runs) <= 0.7 * reads_1s
    assert all(median <= 0.6 * median_1s for median, _, _ in runs)
    assert all(p95 <= 0.75 * p95_1s for _, p95, _ in runs)


def test_the_small_sample_correction_keeps_a_short_warm_up_cheap() -> None:
    """The warm-up whose longest job took only 7.8 s (the true range ends at 8.5 s):
    uncorrected, the fifth of the jobs past the learned window pay every read of it, more
    than 0.8x the fixed poller's reads; corrected, well under."""
    short = min(_warmups(12), key=max)
    assert max(short) < 7.8
    _, _, reads_1s = _crowd(PollPolicy.fixed(1.0), [], JOBS)
    _, _, corrected = _crowd(PollPolicy(), short, JOBS)
    _, _, uncorrected = _crowd(PollPolicy(widen_low=0, widen_high=0), short, JOBS)
    assert corrected <= 0.75 * reads_1s
    assert uncorrected > 0.8 * reads_1s
