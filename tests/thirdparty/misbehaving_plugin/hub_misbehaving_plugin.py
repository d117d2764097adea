"""A plugin that imports fine but registers something that is not a format."""

import hub


@hub.hookimpl
def hub_register_formats(register):
    register("nir")  # a name, not a hub.Format instance
