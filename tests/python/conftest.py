"""pytest configuration for tests/python: the markers the tests use, and
sharding (JOBQ_TEST_SHARD=I/N keeps the Ith of N even shares of the tests),
which tests/CMakeLists.txt uses to run a long file as several ctest
entries side by side under ctest -j."""
import os


def pytest_configure(config):  # type: ignore[no-untyped-def]
    """Register the ``slow`` marker (the long cluster histories), so
    ``-m "not slow"`` can leave them out without a warning."""
    config.addinivalue_line("markers", "slow: a long run (minutes); -m 'not slow' skips it")


def shard_of_env():  # type: ignore[no-untyped-def]
    """(index, count) from JOBQ_TEST_SHARD="I/N", or None when unset."""
    spec = os.environ.get("JOBQ_TEST_SHARD", "")
    if not spec:
        return None
    index, _, count = spec.partition("/")
    i, n = int(index), int(count)
    if n < 1 or not 0 <= i < n:
        raise ValueError("JOBQ_TEST_SHARD=%s: want I/N with 0 <= I < N" % spec)
    return i, n


#: A test marked slow counts as this many others when tests are dealt.
SLOW_WEIGHT = 10


def deal(items, n):  # type: ignore[no-untyped-def]
    """The shard of each item: the heaviest first, each to the lightest
    shard so far (the first on a tie), so a slow test is not dealt a
    share of the rest besides. The same items always deal the same way."""
    weight = [SLOW_WEIGHT if t.get_closest_marker("slow") else 1 for t in items]
    load = [0] * n
    shard = [0] * len(items)
    for k in sorted(range(len(items)), key=lambda k: -weight[k]):
        s = load.index(min(load))
        shard[k] = s
        load[s] += weight[k]
    return shard


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    """Keep this shard's tests; the others are reported as deselected."""
    shard = shard_of_env()
    if shard is None:
        return
    i, n = shard
    dealt = deal(items, n)
    kept = [t for k, t in enumerate(items) if dealt[k] == i]
    dropped = [t for k, t in enumerate(items) if dealt[k] != i]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
