"""Pure policies: Retry-After parsing, backoff, the adaptive poll schedule, learned durations."""

from __future__ import annotations

import itertools
import random
import statistics
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from mai_tools import FakeClock, MAIImageClient, PollPolicy, RetryPolicy
from mai_tools._policies import DurationStats, parse_retry_after
from tests.support.fakes import BASE, KEY


def test_parse_retry_after() -> None:
    now = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("5", now=now) == 5
    assert parse_retry_after(" 2.5 ", now=now) == 2.5
    assert parse_retry_after("-3", now=now) == 0
    later = format_datetime(now + timedelta(seconds=42), usegmt=True)
    assert parse_retry_after(later, now=now) == pytest.approx(42)
    earlier = format_datetime(now - timedelta(seconds=42), usegmt=True)
    assert parse_retry_after(earlier, now=now) == 0
    for junk in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(junk, now=now) is None


def test_backoff_grows_caps_and_respects_retry_after() -> None:
    policy = RetryPolicy(initial_backoff=0.5, max_backoff=4, jitter=0)
    assert [policy.backoff(n) for n in range(1, 6)] == [0.5, 1, 2, 4, 4]
    assert policy.backoff(1, retry_after=9) == 9
    assert policy.backoff(3, retry_after=0.1) == 2


def test_backoff_jitter_stays_in_band() -> None:
    policy = RetryPolicy(initial_backoff=1, max_backoff=8, jitter=0.25)
    rng = random.Random(1)
    values = [policy.backoff(2, rng=rng) for _ in range(500)]
    assert min(values) >= 1.5
    assert max(values) <= 2.5
    assert len(set(values)) > 100


def test_cold_schedule_starts_soon_and_backs_off() -> None:
    policy = PollPolicy()
    t, gap, times = 0.0, None, []
    for _ in range(8):
        delay = policy.next_delay(elapsed=t, last_gap=gap, window=None)
        t += delay
        gap = delay
        times.append(t)
    assert times[0] == policy.first_delay
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(gaps))
    assert max(gaps) <= policy.cold_max_interval + 1e-9


def _schedule(policy: PollPolicy, window: tuple[float, float], until: float) -> list[float]:
    t, gap, times = 0.0, None, []
    while t < until:
        delay = policy.next_delay(elapsed=t, last_gap=gap, window=window)
        t += delay
        gap = delay
        times.append(t)
    return times


def test_learned_schedule_is_dense_inside_the_window_and_densest_at_its_end() -> None:
    policy = PollPolicy()
    times = _schedule(policy, (4.5, 8.5), 12)
    assert times[0] == pytest.approx(policy.first_delay)
    # One sleep into the window: no read at its very start, which nearly every job would pay
    # for and few would need.
    assert 4.5 < times[1] <= 4.5 + policy.max_dense_interval
    inside = [b - a for a, b in itertools.pairwise(times[1:]) if b <= 8.5 + 1e-9]
    assert len(inside) >= policy.window_polls / 2
    # Reads crowd toward the end of the window, where each one is paid by fewer jobs.
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(inside))
    assert inside[0] > 1.5 * inside[-1]
    assert all(policy.min_interval - 1e-9 <= g <= policy.max_dense_interval for g in inside)
    # The window's end is read (at most min_interval late: reads never come closer).
    assert any(8.5 - 1e-9 <= t <= 8.5 + policy.min_interval for t in times)
    after = [b - a for a, b in itertools.pairwise(times) if a >= 8.5 - 1e-9]
    assert after == sorted(after)
    # Just past the window the reads keep its mean gap for tail_hold gaps, then back off.
    dense = 4.0 / policy.window_polls
    assert after[: int(policy.tail_hold)] == pytest.approx([dense] * int(policy.tail_hold))
    assert after[-1] > 2 * dense
    assert max(after) <= policy.max_interval


def test_an_untapered_window_is_read_evenly() -> None:
    policy = PollPolicy(window_taper=1.0, window_polls=8)
    times = _schedule(policy, (4.5, 8.5), 8.5)
    assert times[1:] == pytest.approx([4.5 + 0.5 * k for k in range(1, 9)])


def test_fast_jobs_are_polled_when_they_usually_finish() -> None:
    policy = PollPolicy()
    assert policy.next_delay(elapsed=0, last_gap=None, window=(0.2, 0.4)) == pytest.approx(0.2)


def test_fixed_policy() -> None:
    policy = PollPolicy.fixed(5)
    assert policy.next_delay(elapsed=0, last_gap=None, window=None) == 5
    assert policy.next_delay(elapsed=5, last_gap=5, window=(4, 8)) == 5
    assert PollPolicy.immediate().next_delay(elapsed=0, last_gap=None, window=None) == 0


def test_duration_stats_quantiles() -> None:
    stats = DurationStats(history=10)
    policy = PollPolicy(
        min_samples=3, low_quantile=0.0, high_quantile=1.0, widen_low=0, widen_high=0
    )
    assert stats.window("generate", policy) is None
    for value in [5, 1, 3, float("nan"), -1]:
        stats.record("generate", value)
    assert stats.count("generate") == 3
    assert stats.window("generate", policy) == (1, 5)
    for value in range(100, 110):
        stats.record("generate", value)
    assert stats.window("generate", policy) == (100, 109)  # only recent history counts


def test_a_window_learned_from_few_jobs_is_widened_less_as_more_are_known() -> None:
    policy = PollPolicy()
    rng = random.Random(3)
    few, many = DurationStats(), DurationStats()
    few.update({"generate": [rng.uniform(4.5, 8.5) for _ in range(20)]})
    many.update({"generate": [rng.uniform(4.5, 8.5) for _ in range(100)]})
    for stats, n in ((few, 20), (many, 100)):
        raw = PollPolicy(widen_low=0, widen_high=0)
        low0, high0 = stats.window("generate", raw) or (0.0, 0.0)
        low, high = stats.window("generate", policy) or (0.0, 0.0)
        step = (high0 - low0) / n
        assert low == pytest.approx(low0 - policy.widen_low * step)
        assert high == pytest.approx(high0 + policy.widen_high * step)
    # The correction shrinks with the number of samples: from 20 samples of a uniform
    # 4.5-8.5 s the window reaches about the true 5%-95% range; from 100, a few percent more.
    low20, high20 = few.window("generate", policy) or (0.0, 0.0)
    assert low20 < 4.8
    assert high20 > 8.2
    assert (high20 - low20) / 4.0 > 0.9
    # A window never starts below zero.
    tiny = DurationStats()
    tiny.update({"generate": [0.1, 0.1, 0.1, 0.1, 3.0]})
    assert (tiny.window("generate", policy) or (-1.0, 0.0))[0] == 0.0


def test_a_window_that_stops_matching_follows_the_recent_jobs() -> None:
    policy = PollPolicy()
    stats = DurationStats()
    for _ in range(95):
        stats.record("generate", 40.0)  # a slow period (or an edited cache)
    assert stats.window("generate", policy) == (40.0, 40.0)
    for _ in range(2):
        stats.record("generate", 0.6)
    assert stats.window("generate", policy) == (40.0, 40.0)  # two odd jobs are noise
    stats.record("generate", 0.6)
    low, high = stats.window("generate", policy) or (0.0, 0.0)
    assert low == pytest.approx(0.6)  # three in a row: the pace changed, follow it
    assert high < 40.0
    assert stats.window("edit", policy) is None


def test_duration_stats_round_trip_and_sanitise() -> None:
    stats = DurationStats(history=3)
    mess = [1.0, 2, True, "3", float("inf"), -1, 10**400, 4.5, 5.5]
    stats.update({"generate": mess, 7: [1.0], "edit": 5})  # type: ignore[dict-item]
    assert stats.to_dict() == {"generate": [2.0, 4.5, 5.5]}  # sane seconds, recent history only
    copy = DurationStats()
    copy.update(stats.to_dict())
    assert copy.to_dict() == stats.to_dict()


@pytest.mark.parametrize(
    ("server", "observed", "learned"),
    [
        (5.0, 5.4, [5.0]),  # the gateway's own figure, when it is sane
        (6.2, 5.4, [6.2]),  # up to 1 s of clock skew beyond what was observed
        (7.0, 5.4, [5.4]),  # longer than observed: wrong, the observed time counts
        (-1.0, 5.4, [5.4]),  # negative: wrong
        (None, 5.4, [5.4]),  # the gateway gave no times
        (5.0, None, [5.0]),  # a job found finished by a resumed wait: only the gateway knows
        (None, None, []),
    ],
)
def test_a_finished_job_is_learned_by_the_gateway_time_when_sane(
    server: float | None, observed: float | None, learned: list[float]
) -> None:
    stats = DurationStats()
    stats.learn("generate", server=server, observed=observed)
    assert stats.to_dict().get("generate", []) == learned


def test_clients_can_share_and_restore_learned_durations() -> None:
    shared = DurationStats()
    shared.update({"generate": [6.0] * 5})
    with MAIImageClient(KEY, base_url=BASE, durations=shared) as one:
        assert one.durations is shared
        window = one.durations.window("generate", one.poll_policy)
        assert window == (6.0, 6.0)
        # Learned: after the early poll, sleep until jobs usually finish (not the cold 0.75 s),
        # in gaps of at most max_interval (5 s): 0.5 s -> 5.5 s -> 6 s.
        policy = one.poll_policy
        assert policy.next_delay(elapsed=0.5, last_gap=0.5, window=window) == 5.0
        assert policy.next_delay(elapsed=5.5, last_gap=5.0, window=window) == 0.5
        assert policy.next_delay(elapsed=0.5, last_gap=0.5, window=None) == 0.75
    with MAIImageClient(KEY, base_url=BASE) as fresh:
        assert fresh.durations is not shared
        assert fresh.durations.to_dict() == {}


class _TimedGateway:
    """Jobs with known durations on the fake clock; counts polls and detection latency."""

    def __init__(self, clock: FakeClock, durations: list[float]) -> None:
        self.clock = clock
        self.durations = durations
        self.jobs: dict[str, tuple[float, float]] = {}
        self.polls: dict[str, int] = {}
        self.epoch = datetime(2026, 1, 1, tzinfo=UTC)

    def _iso(self, t: float) -> str:
        return (self.epoch + timedelta(seconds=t)).isoformat().replace("+00:00", "Z")

    def handler(self, request: httpx.Request) -> httpx.Response:
        now = self.clock.monotonic()
        if request.method == "POST":
            rid = f"microsoft-mai-image-2-5_{len(self.jobs):06d}"
            self.jobs[rid] = (now, now + self.durations[len(self.jobs)])
            return httpx.Response(202, json={"request_id": rid, "status": "QUEUED"})
        rid = request.url.path.rsplit("/", 1)[-1]
        self.polls[rid] = self.polls.get(rid, 0) + 1
        created, done = self.jobs[rid]
        if now < done:
            return httpx.Response(200, json={"request_id": rid, "status": "PROCESSING"})
        return httpx.Response(
            200,
            json={
                "request_id": rid,
                "status": "COMPLETED",
                "output": {"media_url": ["https://cdn.example.com/x.png"]},
                "created_at": self._iso(created),
                "completed_at": self._iso(done),
            },
        )


def _simulate(policy: PollPolicy, *, warmup: int, jobs: int) -> tuple[float, float, float]:
    """(median latency, p95 latency, mean polls) over jobs uniform in 4.5-8.5 s."""
    rng = random.Random(7)
    durations = [rng.uniform(4.5, 8.5) for _ in range(warmup + jobs)]
    clock = FakeClock()
    gw = _TimedGateway(clock, durations)
    client = MAIImageClient(
        KEY,
        base_url=BASE,
        clock=clock,
        poll_policy=policy,
        http_client=httpx.Client(transport=httpx.MockTransport(gw.handler)),
    )
    latencies: list[float] = []
    polls: list[int] = []
    for i in range(warmup + jobs):
        result = client.generate("a benchmark prompt")
        if i >= warmup:
            latencies.append(clock.monotonic() - gw.jobs[result.request_id][1])
            polls.append(gw.polls[result.request_id])
    latencies.sort()
    return (
        statistics.median(latencies),
        latencies[int(0.95 * len(latencies)) - 1],
        statistics.mean(polls),
    )


def test_adaptive_polling_meets_the_design_target_in_simulation() -> None:
    """On the fake clock (zero network time), the default policy meets the benchmark goals:
    median detection <= 0.3 s, p95 <= 0.6 s, <= 6.5 status requests per job."""
    median, p95, polls = _simulate(PollPolicy(), warmup=20, jobs=200)
    assert median <= 0.3
    assert p95 <= 0.6
    assert polls <= 6.5
    # ...where a fixed 1 s poller needs more polls for worse latency, and the vendor's 5 s
    # loop is far slower.
    median_1s, _, polls_1s = _simulate(PollPolicy.fixed(1.0), warmup=0, jobs=200)
    assert median_1s > median
    assert polls_1s > polls
    median_5s, _, _ = _simulate(PollPolicy.fixed(5.0), warmup=0, jobs=200)
    assert median_5s > 1.5
