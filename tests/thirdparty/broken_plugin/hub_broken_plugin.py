"""A plugin whose framework is missing: importing it fails."""

import a_framework_that_does_not_exist  # noqa: F401
