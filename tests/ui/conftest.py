"""The window keeps the settings as they change (last-config.toml in the user data folder): a window of one test
must not hand its settings to the next test's "first launch"."""

import pytest


@pytest.fixture(autouse=True)
def no_settings_left_behind():
    """Set up before a test's windows and torn down after them (their close writes any pending settings)."""
    yield
    from studio.ui.main_window import last_config_path

    last_config_path().unlink(missing_ok=True)
