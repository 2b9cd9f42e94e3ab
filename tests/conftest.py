"""pytest configuration shared by the test modules."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "heavy: large-model tests (CI runs them; deselect locally with -m 'not heavy')",
    )
