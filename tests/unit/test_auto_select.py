"""model=auto's choice (auto_select.py): the budget rule, the accuracy floor, full queues, and the ceiling's hysteresis.

A clock and a queue wait the test sets stand in for time and load; the points, the metrics and the
errors are the real ones.
"""

from __future__ import annotations

import json

import pytest
from support import STORE, V1_SMALL, metric_value

from service.auto_ceiling import Ceiling, share_ms
from service.auto_load import MIN_ARRIVALS
from service.auto_select import AutoSelector, Point, Unavailable, build_selector
from service.calibration import Timing
from service.config import AutoConfig
from service.errors import ServiceError
from service.frontier import Profile
from service.metrics import Metrics
from service.queue_wait import Flow
from service.store import parse_variant
from service.tradeoffs import PROFILE_NAME

POINTS = [  # cheapest first, as on a frontier
    Point("small", 128, 55.0, 4.0),
    Point("medium", 160, 70.0, 6.0),
    Point("large", 192, 76.0, 9.0),
    Point("large", 224, 79.0, 13.0),
]
BUDGET = 100.0
CORES = 2
# The cores' use at which auto requests at 100/s leave no room to climb, with the default budget.
FULL = share_ms(100.0, CORES, BUDGET) * 100.0 / (CORES * 1000.0)


class Load:
    """The test's clock, queue wait and the server's CPU seconds."""

    def __init__(self) -> None:
        self.now = 0.0
        self.wait = 0.0  # ms: the backlog over the cores, as one image per core
        self.flows: list[Flow] | None = None  # or these images in flight
        self.ran: dict[tuple[str, int], tuple[float, float]] = {}  # points' recent ms per image, and its age
        self.cpu = 0.0
        self.full: set[str] = set()

    def selector(self, **config: float) -> AutoSelector:
        settings = AutoConfig(**{"default_budget_ms": BUDGET, **config})
        admits = lambda model, count: model not in self.full  # noqa: E731
        return AutoSelector(
            POINTS, settings, self.backlog, self.live, lambda: self.cpu, admits, CORES, Metrics(), lambda: self.now
        )

    def live(self, model: str, resolution: int) -> tuple[float, float] | None:
        return self.ran.get((model, resolution))

    def backlog(self) -> list[Flow]:
        return self.flows if self.flows is not None else [Flow(CORES, self.wait / 1000.0)]

    def run(self, selector: AutoSelector, seconds: float, wait: float, step: float = 0.01) -> list[Point]:
        """Requests every `step` seconds for `seconds` under a queue wait of `wait` ms; the points chosen.

        Their own budget is loose, so that only the ceiling (which follows the default budget) limits them.
        """
        self.wait = wait
        chosen = []
        end = self.now + seconds
        while self.now < end:
            self.now += step
            chosen.append(selector.choose(10 * BUDGET, None).point)
        return chosen


def test_an_idle_server_answers_with_the_most_accurate_point_and_says_why() -> None:
    choice = Load().selector().choose(BUDGET, None)
    assert choice.point == POINTS[-1] and choice.within_budget
    described = choice.describe()
    assert described["mode"] == "auto" and described["budget_ms"] == BUDGET
    assert described["predicted_ms"] == 13.0 and described["expected_top1"] == 79.0
    assert "within the budget" in described["reason"]


def test_the_most_accurate_point_that_fits_a_tight_budget_and_the_cheapest_when_none_does() -> None:
    selector = Load().selector()
    assert selector.choose(8.0, None).point == POINTS[1]
    # Four images on two cores: two rounds of each point's time.
    assert selector.choose(8.0, None, images=4).point == POINTS[0]
    choice = selector.choose(1.0, None)
    assert choice.point == POINTS[0] and not choice.within_budget
    assert "cheapest" in choice.describe()["reason"]


def test_a_cheap_point_is_not_predicted_to_wait_for_the_whole_backlog() -> None:
    load = Load()
    load.flows = [Flow(20, 0.013)]  # 260 ms of a core queued: 130 ms on two
    choice = load.selector().choose(BUDGET, None)
    # The cores are shared per image: while the 4 ms point gets its 4 ms, each of the 20 gets as much, and
    # a core comes free within one of their 13 ms. The 6 ms point's wait, 73 ms, counts 1.5 times: over.
    assert choice.point == POINTS[0] and choice.within_budget
    assert choice.predicted_ms == pytest.approx(20 * 4.0 / CORES + 13.0 + 4.0)


def test_min_top1_is_a_floor_and_an_unreachable_one_is_a_422() -> None:
    selector = Load().selector()
    assert selector.choose(5.0, 70.0).point == POINTS[1]  # over the budget rather than under the floor
    with pytest.raises(ServiceError) as raised:
        selector.choose(BUDGET, 90.0)
    assert raised.value.status == 422 and raised.value.code == "min_top1_unreachable"
    assert "79" in raised.value.message


def test_a_model_whose_queue_is_full_is_passed_over() -> None:
    load = Load()
    load.full.add("large")
    assert load.selector().choose(BUDGET, None).point == POINTS[1]
    load.full.update({"small", "medium"})
    assert load.selector().choose(BUDGET, None).point == POINTS[-1]  # every queue full: the batcher refuses


def test_the_ceiling_comes_down_under_load_and_climbs_back_a_mean_step_per_hold() -> None:
    load = Load()
    selector = load.selector(hold_seconds=1.0)
    assert load.run(selector, 0.5, wait=0.0)[-1] == POINTS[-1]
    under_load = load.run(selector, 2.0, wait=50.0)
    assert under_load[-1] == POINTS[0]
    # The ceiling follows the smoothed wait: the first request under load still gets the top point.
    assert under_load[0] == POINTS[-1]
    # 50/s, a rate at which the top point fits: at 100/s its 13 ms is over what a request may take (12.5 ms,
    # share_ms), and with no use fed every request reads as a load that jumps, which comes down to that.
    climbing = load.run(selector, 3.5, wait=0.0, step=0.02)
    # Between two points the requests are split between them. The frontier's mean step is 3 ms: the
    # choices' mean cost climbs at most that much each second, from the cheapest point's 4 ms.
    for second in range(3):
        costs = [point.service_ms for point in climbing[second * 50 : (second + 1) * 50]]
        assert sum(costs) / len(costs) <= 4.0 + 3.0 * (second + 1)
    assert len(set(climbing[:50])) > 1 and climbing[-20:] == [POINTS[-1]] * 20


def test_the_ceiling_follows_the_load_between_auto_requests() -> None:
    load = Load()
    selector = load.selector(hold_seconds=1.0)
    load.wait = 60.0  # other models' requests fill the queues; no auto request comes
    for _ in range(100):
        load.now += 0.01
        selector.follow()
    load.wait = 0.0
    assert selector.choose(10 * BUDGET, None).point == POINTS[0]


def _steady(load: Load, selector: AutoSelector, seconds: float, rate: float = 100.0) -> list[Point]:
    """Auto requests at `rate`, each costing the cores its point's own time and 4 ms besides (HTTP, decoding)."""
    chosen = []
    for _ in range(round(seconds * rate)):
        load.now += 1.0 / rate
        point = selector.choose(10 * BUDGET, None).point
        load.cpu += (point.service_ms + 4.0) / 1000.0
        chosen.append(point)
        selector.follow()
    return chosen


def _down_then_quiet(load: Load, selector: AutoSelector, quiet_seconds: float, busy: float = FULL) -> list[Point]:
    """5 s under a queue (down to the bottom), then `quiet_seconds` of quiet queues, auto requests at 100/s with the
    cores `busy`; the points chosen in the quiet."""
    chosen = []
    for wait, seconds in ((80.0, 5.0), (0.0, quiet_seconds)):
        load.wait = wait
        for _ in range(round(seconds / 0.01)):
            load.now += 0.01
            load.cpu += busy * CORES * 0.01
            chosen.append(selector.choose(10 * BUDGET, None).point)
            selector.follow()
    return chosen[500:]


@pytest.mark.parametrize(("busy", "climbs"), [(FULL, False), (FULL - 0.25, True)])
def test_a_climb_waits_for_room_on_the_cores(busy: float, climbs: bool) -> None:
    load = Load()
    selector = load.selector(hold_seconds=1.0)
    _down_then_quiet(load, selector, 10.0, busy)
    # A use that does not fall as it climbs: none at FULL, to the top under it.
    assert selector.choose(10 * BUDGET, None).point == (POINTS[-1] if climbs else POINTS[0])
    text = selector._metrics.render()[0].decode()
    assert metric_value(text, "mobilenet_auto_cpu_busy") == pytest.approx(busy, abs=0.01)


def test_a_climb_to_a_point_that_runs_no_costlier_is_free() -> None:
    load = Load()
    selector = load.selector(hold_seconds=1.0)
    # As calibrated, the 6 ms point costs 2 ms more than the 4 ms one; under load both took 8 ms an image.
    load.ran = {("small", 128): (8.0, 0.1), ("medium", 160): (8.0, 0.1)}
    _down_then_quiet(load, selector, 5.0)  # the cores at FULL: no room for anything costlier
    assert [selector.choose(10 * BUDGET, None).point for _ in range(10)] == [POINTS[1]] * 10


def test_points_that_run_at_the_same_cost_are_climbed_at_the_calibrated_pace() -> None:
    load = Load()
    selector = load.selector(hold_seconds=1.0)
    # Under load the three cheapest took 8 ms an image: at the calibration's scale (the median ratio, 8 / 6) all
    # three cost 6 ms, so climbing from the bottom to the third costs nothing more as they run now.
    load.ran = {("small", 128): (8.0, 0.1), ("medium", 160): (8.0, 0.1), ("large", 192): (8.0, 0.1)}
    quiet = _down_then_quiet(load, selector, 5.0)  # the cores at FULL: no room for anything costlier
    # The climb starts once the smoothed wait is down (0.16 s) and takes the calibrated mean step, 3 ms a second:
    # the third point, 5 ms above the bottom as calibrated, not before 0.8 s; the first climb reached it at once.
    assert POINTS[2] not in quiet[:70] and quiet[-100:].count(POINTS[2]) >= 98


@pytest.mark.parametrize(("budget", "lower"), [(BUDGET, 1), (BUDGET / 2, 0)])
def test_between_two_points_the_requests_are_split_to_use_the_cores_up_to_the_limit(budget: float, lower: int) -> None:
    load = Load()
    selector = load.selector(hold_seconds=1.0, default_budget_ms=budget)
    # At 100/s on two cores a request's every ms is 0.05 of the cores. What a request may take, its point's time
    # and 4 ms besides: 12.5 ms within 100 ms (0.625 of the cores), 9.1 ms within 50 ms (0.45): between 160
    # (6 + 4 ms) and 192 (9 + 4), or between 128 (4 + 4) and 160.
    allowed = share_ms(100.0, CORES, budget)
    low, high = (POINTS[lower].service_ms + 4.0, POINTS[lower + 1].service_ms + 4.0)
    assert low < allowed < high
    load.wait = 80.0  # down to the bottom first: the ceiling climbs on the use, and comes down on the queue
    _steady(load, selector, 5.0)
    load.wait = 0.0
    last = _steady(load, selector, 20.0)[-500:]
    assert set(last) == {POINTS[lower], POINTS[lower + 1]}  # the two neighbours of the limit, nothing else
    upper = sum(point == POINTS[lower + 1] for point in last) / len(last)
    # The use averaged over a hold lags the climb, so it may pass the limit.
    share = (allowed - low) / (high - low)
    assert share - 0.05 <= upper <= share + 0.1
    text = selector._metrics.render()[0].decode()
    use = allowed * 100.0 / (CORES * 1000.0)
    assert use - 0.02 <= metric_value(text, "mobilenet_auto_cpu_busy") <= use + 0.03
    # Consecutive requests go to the same point most of the time: the split is in proportion, not random.
    switches = sum(a != b for a, b in zip(last, last[1:], strict=False))
    assert switches <= 2 * min(upper, 1 - upper) * len(last) + 10


def test_a_load_that_jumps_brings_the_ceiling_down_before_a_queue_forms() -> None:
    load = Load()
    selector = load.selector(hold_seconds=1.0)
    _steady(load, selector, 3.0)  # 100/s: what a request costs besides its point is learned
    load.now += 5.0  # an idle spell
    # 300/s and the queues still empty: at the top point the cores would need 17 ms every 3.3 ms. Two cores
    # at 0.7 give a request 4.7 ms, 4 of them besides its point: the cheapest, from the fifth request on.
    jump = _steady(load, selector, 2.0, rate=300.0)
    assert jump[0] == POINTS[-1] and set(jump[MIN_ARRIVALS:]) == {POINTS[0]}


def test_what_other_models_ran_before_a_load_starts_is_not_counted_as_its_requests_cost() -> None:
    load = Load()
    selector = load.selector(hold_seconds=1.0)
    for _ in range(300):  # 3 s of fixed-model requests using 0.8 of the cores, then 0.5 s idle
        load.now += 0.01
        load.cpu += 0.8 * CORES * 0.01
        selector.follow()
    load.now += 0.5
    # Auto requests at 100/s, 4 ms each besides their point: the top point uses 0.85 of the cores. Before the
    # averaged rate caught up, the averaged use still held most of the fixed-model load: 10 ms and more a
    # request besides its point. Taken for the auto requests' own, it would send them to the cheapest point.
    assert set(_steady(load, selector, 1.0)) <= {POINTS[2], POINTS[3]}


def test_at_the_start_of_a_load_a_climb_is_judged_on_the_rate_as_it_is() -> None:
    ceiling = Ceiling([p.service_ms for p in POINTS], BUDGET, 1.0, CORES, now=0.0)
    ceiling.position = 0.0
    now, cpu = 0.0, 0.0
    ceiling.use(cpu, 0, now)
    for request in range(1, 301):  # 100/s, each taking 14 ms of the cores: 0.7 of two, no room to climb
        now += 0.01
        cpu += 0.014
        ceiling.arrive(now)
        ceiling.use(cpu, request, now)
        ceiling.update(0.0, now)
        if request == 100:
            # The averaged use is 0.42 after a second and the averaged rate 60/s: together they would make room
            # for a point and more. It moved a few hundredths, before the first MIN_ARRIVALS requests gave a rate.
            assert ceiling.position < 0.1
    # Three seconds in, the averaged rate is still a few percent short of the rate as it is: judged at it, a
    # request seems to have that much more of the cores' time than the load leaves it (at 0.8 of it, a point).
    assert ceiling.position < 0.1


def test_an_idle_spell_counts_as_quiet() -> None:
    load = Load()
    selector = load.selector(hold_seconds=1.0)
    load.run(selector, 2.0, wait=60.0)
    load.now += 10.0
    load.wait = 0.0
    assert selector.choose(10 * BUDGET, None).point == POINTS[-1]


def test_a_ceiling_between_points_costs_in_proportion() -> None:
    ceiling = Ceiling([p.service_ms for p in POINTS], BUDGET, 1.0, CORES, now=0.0)
    assert ceiling.cost(3.0) == 13.0 and ceiling.cost(1.5) == 7.5
    ceiling.position = 1.25
    picks = [ceiling.pick() for _ in range(8)]
    assert sorted(picks) == [1] * 6 + [2] * 2 and picks[:3] == [1, 1, 1]


def test_choices_are_counted_with_their_predictions() -> None:
    load = Load()
    selector = load.selector()
    metrics = selector._metrics
    choice = selector.choose(BUDGET, None)
    selector.observe(choice, 0.02)
    text = metrics.render()[0].decode()
    labels = {"model": "large", "resolution": "224"}
    assert metric_value(text, "mobilenet_auto_selections_total", budget="within", **labels) == 1
    assert metric_value(text, "mobilenet_auto_predicted_seconds_sum", **labels) == pytest.approx(0.013)
    assert metric_value(text, "mobilenet_auto_latency_seconds_sum", **labels) == pytest.approx(0.02)
    assert metric_value(text, "mobilenet_auto_ceiling_top1") == 79.0


def _build(config: AutoConfig, profile: Profile | None, timed: bool = True) -> AutoSelector | Unavailable:
    variant = parse_variant(STORE / V1_SMALL)
    timings = {(V1_SMALL, r): Timing(1.0 + r / 100, 1.0, 4, 2.0) for r in variant.resolutions} if timed else {}
    return build_selector(
        config, [variant], profile, timings, lambda: [], lambda m, r: None, lambda: 0.0, lambda m, c: True, 2, Metrics()
    )


def _profile() -> Profile:
    return Profile.model_validate_json((STORE / PROFILE_NAME).read_bytes())


def test_the_selector_is_built_over_the_frontier_of_the_candidates() -> None:
    selector = _build(AutoConfig(), _profile())
    assert isinstance(selector, AutoSelector)
    assert [p.resolution for p in selector.frontier] == [128, 160, 192]  # 224 is less accurate than 192
    one = _build(AutoConfig(candidates=[f"{V1_SMALL}@160"]), _profile())
    assert isinstance(one, AutoSelector) and [p.resolution for p in one.frontier] == [160]


@pytest.mark.parametrize(
    ("config", "profile", "timed", "status", "words"),
    [
        (AutoConfig(enabled=False), "committed", True, 404, "switched off"),
        (AutoConfig(), None, True, 503, "tradeoffs.json"),
        (AutoConfig(candidates=["mobilenet_v2_1.0_224"]), "committed", True, 503, "auto.candidates"),
        (AutoConfig(), "stale", True, 503, "other weights"),
        (AutoConfig(), "committed", False, 503, "calibration_seconds"),
    ],
)
def test_why_auto_is_unavailable(config: AutoConfig, profile: str | None, timed: bool, status: int, words: str) -> None:
    loaded = None if profile is None else _profile()
    if profile == "stale":
        document = json.loads((STORE / PROFILE_NAME).read_text())
        for point in document["points"]:
            point["sha256"] = "0" * 64
        loaded = Profile.model_validate(document)
    unavailable = _build(config, loaded, timed)
    assert isinstance(unavailable, Unavailable)
    error = unavailable.error()
    assert error.status == status and words in error.message


def test_auto_needs_an_imagenet_classifier() -> None:
    unavailable = build_selector(
        AutoConfig(), [], _profile(), {}, lambda: [], lambda m, r: None, lambda: 0.0, lambda m, c: True, 2, Metrics()
    )
    assert isinstance(unavailable, Unavailable) and "ImageNet classifier" in unavailable.reason
