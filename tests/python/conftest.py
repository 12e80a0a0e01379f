"""pytest configuration for tests/python: the markers the tests use."""


def pytest_configure(config):  # type: ignore[no-untyped-def]
    """Register the ``slow`` marker (the long cluster histories), so
    ``-m "not slow"`` can leave them out without a warning."""
    config.addinivalue_line("markers", "slow: a long run (minutes); -m 'not slow' skips it")
